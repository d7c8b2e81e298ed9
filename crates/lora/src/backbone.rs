//! The frozen ViT weights: canonical names, random init, safetensors I/O and
//! position-embedding interpolation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::config::VitConfig;
use crate::error::{LoraError, Result, check_shape};

/// Metadata key under which our files record the backbone configuration.
pub const META_CONFIG: &str = "wflora.config";

/// The weights of a ViT backbone under canonical names, all `f32`.
///
/// Canonical names: `patch_embed.weight` (`D × C·p·p`, the flattened
/// convolution kernel in `(c, y, x)` order), `patch_embed.bias`, `cls_token`
/// (`D`), `pos_embed` (`T × D`, class token first), per block `i`
/// `blocks.i.norm1.{weight,bias}`, `blocks.i.attn.{q,k,v,o}.{weight,bias}`,
/// `blocks.i.norm2.{weight,bias}`, `blocks.i.mlp.{fc1,fc2}.{weight,bias}`,
/// `blocks.i.ls1`, `blocks.i.ls2` (LayerScale only), and `norm.{weight,bias}`.
/// Linear weights are `out × in` as in PyTorch.
///
/// Tensors are reference-counted: cloning a backbone or building any number
/// of client models from an `Arc<Backbone>` shares the storage.
#[derive(Clone, Debug)]
pub struct Backbone {
    config: VitConfig,
    tensors: BTreeMap<String, Tensor>,
}

/// Every canonical tensor name of `config` with its shape.
#[must_use]
pub fn expected_shapes(config: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.width;
    let m = config.mlp_dim;
    let mut v = match &config.text {
        Some(stem) => vec![
            ("embed.word".to_owned(), vec![stem.vocab_size, d]),
            ("embed.pos".to_owned(), vec![stem.max_positions, d]),
            ("embed.type".to_owned(), vec![stem.type_vocab_size, d]),
            ("embed.norm.weight".to_owned(), vec![d]),
            ("embed.norm.bias".to_owned(), vec![d]),
        ],
        None => vec![
            ("patch_embed.weight".to_owned(), vec![d, config.patch_dim()]),
            ("patch_embed.bias".to_owned(), vec![d]),
            ("cls_token".to_owned(), vec![d]),
            ("pos_embed".to_owned(), vec![config.num_tokens(), d]),
        ],
    };
    for i in 0..config.depth {
        let p = format!("blocks.{i}");
        v.push((format!("{p}.norm1.weight"), vec![d]));
        v.push((format!("{p}.norm1.bias"), vec![d]));
        for t in ["q", "k", "v", "o"] {
            v.push((format!("{p}.attn.{t}.weight"), vec![d, d]));
            v.push((format!("{p}.attn.{t}.bias"), vec![d]));
        }
        v.push((format!("{p}.norm2.weight"), vec![d]));
        v.push((format!("{p}.norm2.bias"), vec![d]));
        v.push((format!("{p}.mlp.fc1.weight"), vec![m, d]));
        v.push((format!("{p}.mlp.fc1.bias"), vec![m]));
        v.push((format!("{p}.mlp.fc2.weight"), vec![d, m]));
        v.push((format!("{p}.mlp.fc2.bias"), vec![d]));
        if config.layer_scale.is_some() {
            v.push((format!("{p}.ls1"), vec![d]));
            v.push((format!("{p}.ls2"), vec![d]));
        }
    }
    if !config.is_text() {
        v.push(("norm.weight".to_owned(), vec![d]));
        v.push(("norm.bias".to_owned(), vec![d]));
    }
    v
}

impl Backbone {
    /// Random weights for pre-training from scratch: linear weights, class
    /// token and position embeddings `N(0, 0.02²)`, biases 0, LayerNorm
    /// weights 1, LayerScale at its configured initial value.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] for an invalid configuration.
    pub fn random(config: &VitConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 0.02).map_err(|e| LoraError::InvalidConfig {
            field: "init",
            reason: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in expected_shapes(config) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.starts_with("norm") || name.contains(".norm") {
                vec![1.0; n]
            } else if name.ends_with(".ls1") || name.ends_with(".ls2") {
                vec![config.layer_scale.unwrap_or(1.0) as f32; n]
            } else {
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
        Ok(Self {
            config: config.clone(),
            tensors,
        })
    }

    /// A backbone from named tensors; every canonical name must be present
    /// with its shape (converted to `f32`), and no other name.
    ///
    /// # Errors
    /// [`LoraError::MissingTensor`], [`LoraError::Shape`], or
    /// [`LoraError::WeightFile`] for an unexpected name.
    pub fn from_tensors(config: &VitConfig, mut tensors: BTreeMap<String, Tensor>) -> Result<Self> {
        config.validate()?;
        let mut out = BTreeMap::new();
        for (name, shape) in expected_shapes(config) {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| LoraError::MissingTensor {
                    name: name.clone(),
                    expected: shape.clone(),
                    source_name: "tensor map".into(),
                })?;
            check_shape(&name, &shape, t.dims())?;
            out.insert(name, t.to_dtype(DType::F32)?.contiguous()?);
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(LoraError::WeightFile {
                source_name: "tensor map".into(),
                reason: format!("unexpected tensor `{extra}`"),
            });
        }
        Ok(Self {
            config: config.clone(),
            tensors: out,
        })
    }

    /// The configuration the weights belong to.
    #[must_use]
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// The tensor under a canonical name.
    ///
    /// # Errors
    /// [`LoraError::MissingTensor`] for an unknown name.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| LoraError::MissingTensor {
                name: name.to_owned(),
                expected: vec![],
                source_name: "backbone".into(),
            })
    }

    /// All `(name, tensor)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The device the weights live on: the CPU unless moved with [`Self::to`].
    #[must_use]
    pub fn device(&self) -> Device {
        self.tensors
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone())
    }

    /// The weights' dtype, which models built on this backbone compute in
    /// (`f32` unless converted with [`Self::to`]).
    #[must_use]
    pub fn dtype(&self) -> DType {
        self.tensors
            .values()
            .next()
            .map_or(DType::F32, Tensor::dtype)
    }

    /// A copy of the weights on `device` in `dtype` (`f32`, `bf16` or
    /// `f16`). Models built on the copy compute on that device and in that
    /// dtype; their trainable LoRA factors and head stay `f32` (master
    /// weights, cast in the forward pass), and LayerNorm, softmax and the
    /// loss are computed in `f32`. The CPU kernels are `f32` only; a CUDA
    /// device needs the crate feature `cuda`.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming `dtype` for another dtype or a
    /// reduced dtype on the CPU; a candle error if the copy fails.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(LoraError::InvalidConfig {
                field: "dtype",
                reason: format!("{dtype:?}: expected f32, bf16 or f16"),
            });
        }
        if device.is_cpu() && dtype != DType::F32 {
            return Err(LoraError::InvalidConfig {
                field: "dtype",
                reason: format!("{dtype:?} on the cpu: the cpu kernels are f32 only"),
            });
        }
        let tensors = self
            .tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_device(device)?.to_dtype(dtype)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Self {
            config: self.config.clone(),
            tensors,
        })
    }

    /// A copy with plain-matrix deltas added to named linear weights:
    /// `W ← W + Δ` for every `(name, Δ)`, where `name` is a linear layer
    /// (`blocks.3.attn.q`) and `Δ` has its weight's shape `(out, in)`.
    /// Used to merge frozen adapter components (a neighbour's `s·B·A`) into
    /// the weights a model builds on; the other tensors are shared, not
    /// copied.
    ///
    /// # Errors
    /// [`LoraError::MissingTensor`] for an unknown layer name,
    /// [`LoraError::Shape`] naming the layer for a wrong shape, or a
    /// non-finite delta ([`LoraError::InvalidInput`]); nothing is built then.
    pub fn with_added(&self, deltas: &[(String, ndarray::Array2<f32>)]) -> Result<Self> {
        let mut tensors = self.tensors.clone();
        for (name, delta) in deltas {
            let key = format!("{name}.weight");
            let w = tensors.get(&key).ok_or_else(|| LoraError::MissingTensor {
                name: key.clone(),
                expected: vec![delta.nrows(), delta.ncols()],
                source_name: "backbone (with_added)".into(),
            })?;
            check_shape(&key, w.dims(), &[delta.nrows(), delta.ncols()])?;
            if delta.iter().any(|v| !v.is_finite()) {
                return Err(LoraError::InvalidInput {
                    what: "delta",
                    reason: format!("the delta for `{name}` has a non-finite entry"),
                });
            }
            let d = crate::convert::tensor_from_array(delta, w.device())?.to_dtype(w.dtype())?;
            let sum = (w + d)?;
            tensors.insert(key, sum);
        }
        Ok(Self {
            config: self.config.clone(),
            tensors,
        })
    }

    /// Number of scalar parameters.
    #[must_use]
    pub fn num_params(&self) -> usize {
        self.tensors.values().map(Tensor::elem_count).sum()
    }

    /// Serialises to safetensors bytes (canonical names, `F32`), recording the
    /// configuration and `metadata` in the header.
    ///
    /// # Errors
    /// Candle or serialisation errors.
    pub fn to_safetensors_bytes(&self, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
        let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            raw.push((name.clone(), t.dims().to_vec(), bytes));
        }
        let mut views = Vec::with_capacity(raw.len());
        for (name, shape, bytes) in &raw {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| {
                LoraError::WeightFile {
                    source_name: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            views.push((name.as_str(), view));
        }
        let mut meta = metadata.clone();
        let cfg = serde_json::to_string(&self.config).map_err(|e| LoraError::WeightFile {
            source_name: "config".into(),
            reason: e.to_string(),
        })?;
        meta.insert(META_CONFIG.to_owned(), cfg);
        safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::WeightFile {
            source_name: "serialised backbone".into(),
            reason: e.to_string(),
        })
    }

    /// Parses safetensors bytes in canonical naming. A `pos_embed` for
    /// another patch grid is interpolated (see [`interpolate_pos_embed`]).
    /// Returns the backbone and the header metadata.
    ///
    /// # Errors
    /// [`LoraError::WeightFile`] if the bytes do not parse,
    /// [`LoraError::MissingTensor`] / [`LoraError::Shape`] naming the tensor.
    pub fn from_safetensors_bytes(
        config: &VitConfig,
        bytes: &[u8],
        source_name: &str,
    ) -> Result<(Self, HashMap<String, String>)> {
        config.validate()?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| LoraError::WeightFile {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(bytes).map_err(|e| LoraError::WeightFile {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
        let mut map = BTreeMap::new();
        for (name, shape) in expected_shapes(config) {
            let t = read_tensor(&st, &name, &shape, source_name)?;
            let t = if name == "pos_embed" {
                fit_pos_embed(&name, &t, config)?
            } else {
                check_shape(&name, &shape, t.dims())?;
                t
            };
            map.insert(name, t);
        }
        Ok((
            Self {
                config: config.clone(),
                tensors: map,
            },
            metadata,
        ))
    }

    /// Writes the backbone as a safetensors file (see [`Self::to_safetensors_bytes`]).
    ///
    /// # Errors
    /// [`LoraError::Io`] naming the path.
    pub fn save(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        let bytes = self.to_safetensors_bytes(metadata)?;
        std::fs::write(path, bytes).map_err(|source| LoraError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a safetensors file in canonical naming.
    ///
    /// # Errors
    /// [`LoraError::Io`] naming the path, else as [`Self::from_safetensors_bytes`].
    pub fn load(config: &VitConfig, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_safetensors_bytes(config, &bytes, &path.display().to_string())?.0)
    }
}

/// Reads tensor `name` as `f32` from a parsed safetensors file.
pub(crate) fn read_tensor(
    st: &SafeTensors<'_>,
    name: &str,
    expected: &[usize],
    source_name: &str,
) -> Result<Tensor> {
    let view = st.tensor(name).map_err(|_| LoraError::MissingTensor {
        name: name.to_owned(),
        expected: expected.to_vec(),
        source_name: source_name.to_owned(),
    })?;
    let dtype = match view.dtype() {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => {
            return Err(LoraError::WeightFile {
                source_name: source_name.to_owned(),
                reason: format!("tensor `{name}` has dtype {other:?}, expected a float type"),
            });
        }
    };
    let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
    Ok(t.to_dtype(DType::F32)?)
}

/// Checks a `(T', D)` position embedding and interpolates it to the patch
/// grid of `config` if `T' − 1` is another square, bicubically as Hugging
/// Face's ViT and DINOv2 do (`interpolate_pos_encoding`).
pub(crate) fn fit_pos_embed(name: &str, t: &Tensor, config: &VitConfig) -> Result<Tensor> {
    let d = config.width;
    let expected = [config.num_tokens(), d];
    let dims = t.dims();
    if dims == expected {
        return Ok(t.clone());
    }
    let bad = || LoraError::Shape {
        what: format!("{name} (any square patch grid plus the class token)"),
        expected: expected.to_vec(),
        got: dims.to_vec(),
    };
    if dims.len() != 2 || dims[1] != d || dims[0] < 2 {
        return Err(bad());
    }
    let n_old = dims[0] - 1;
    let g_old = (n_old as f64).sqrt().round() as usize;
    if g_old * g_old != n_old {
        return Err(bad());
    }
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    let out = interpolate_pos_embed_bicubic(&data, g_old, config.grid(), d)?;
    Ok(Tensor::from_vec(
        out,
        (config.num_tokens(), d),
        &Device::Cpu,
    )?)
}

/// Resizes position embeddings `(1 + g_old², d)` (class token first, patches
/// in row-major grid order) to `(1 + g_new², d)`: the class token's row is
/// kept, the patch rows are resampled bilinearly with PyTorch's
/// `align_corners = false` convention (sample points at pixel centres,
/// coordinates clamped at the border).
///
/// # Errors
/// [`LoraError::Shape`] if `pos.len() ≠ (1 + g_old²)·d` or a grid or `d` is 0.
pub fn interpolate_pos_embed(
    pos: &[f32],
    g_old: usize,
    g_new: usize,
    d: usize,
) -> Result<Vec<f32>> {
    check_pos_len(pos, g_old, g_new, d)?;
    let mut out = Vec::with_capacity((1 + g_new * g_new) * d);
    out.extend_from_slice(&pos[..d]);
    let grid = &pos[d..];
    let coord = |i: usize| -> (usize, usize, f32) {
        let src = ((i as f32 + 0.5) * g_old as f32 / g_new as f32 - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(g_old - 1);
        let i1 = (i0 + 1).min(g_old - 1);
        (i0, i1, src - i0 as f32)
    };
    for y in 0..g_new {
        let (y0, y1, wy) = coord(y);
        for x in 0..g_new {
            let (x0, x1, wx) = coord(x);
            for c in 0..d {
                let at = |yy: usize, xx: usize| grid[(yy * g_old + xx) * d + c];
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bot = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                out.push(top * (1.0 - wy) + bot * wy);
            }
        }
    }
    Ok(out)
}

/// Resizes position embeddings `(1 + g_old², d)` like
/// [`interpolate_pos_embed`], but bicubically: PyTorch's
/// `F.interpolate(mode="bicubic", align_corners=False)` (Keys' kernel with
/// `a = −0.75`, sample points at pixel centres and not clamped, neighbour
/// indices clamped at the border), which is also ONNX `Resize` in cubic mode
/// with `half_pixel` coordinates and `exclude_outside = 0`. Hugging Face's
/// ViT and DINOv2 resample their position embeddings this way.
///
/// # Errors
/// [`LoraError::Shape`] if `pos.len() ≠ (1 + g_old²)·d` or a grid or `d` is 0.
pub fn interpolate_pos_embed_bicubic(
    pos: &[f32],
    g_old: usize,
    g_new: usize,
    d: usize,
) -> Result<Vec<f32>> {
    check_pos_len(pos, g_old, g_new, d)?;
    if g_old == g_new {
        return Ok(pos.to_vec());
    }
    // Per output index: four clamped source indices and their weights.
    let taps: Vec<([usize; 4], [f64; 4])> = (0..g_new)
        .map(|i| {
            let src = (i as f64 + 0.5) * g_old as f64 / g_new as f64 - 0.5;
            let f = src.floor();
            let t = src - f;
            let w = cubic_weights(t);
            let idx =
                [-1.0, 0.0, 1.0, 2.0].map(|o: f64| (f + o).clamp(0.0, (g_old - 1) as f64) as usize);
            (idx, w)
        })
        .collect();
    let grid = &pos[d..];
    let mut out = Vec::with_capacity((1 + g_new * g_new) * d);
    out.extend_from_slice(&pos[..d]);
    let mut acc = vec![0f64; d];
    for (yi, yw) in &taps {
        for (xi, xw) in &taps {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (&yy, &wy) in yi.iter().zip(yw) {
                for (&xx, &wx) in xi.iter().zip(xw) {
                    let row = &grid[(yy * g_old + xx) * d..(yy * g_old + xx + 1) * d];
                    let w = wy * wx;
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += w * f64::from(v);
                    }
                }
            }
            out.extend(acc.iter().map(|&a| a as f32));
        }
    }
    Ok(out)
}

/// The argument check both resamplers share.
fn check_pos_len(pos: &[f32], g_old: usize, g_new: usize, d: usize) -> Result<()> {
    if g_old == 0 || g_new == 0 || d == 0 || pos.len() != (1 + g_old * g_old) * d {
        return Err(LoraError::Shape {
            what: "position embeddings (grid sizes and width must be ≥ 1)".into(),
            expected: vec![1 + g_old * g_old, d],
            got: vec![pos.len()],
        });
    }
    Ok(())
}

/// Keys' cubic convolution weights (`a = −0.75`, PyTorch's and ONNX's
/// default) for the four taps at offsets −1, 0, 1, 2 from `floor(src)`,
/// `t = src − floor(src)`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_keeps_cpu_f32_and_names_bad_dtypes() {
        let b = Backbone::random(&VitConfig::tiny(), 3).unwrap();
        assert!(b.device().is_cpu());
        assert_eq!(b.dtype(), DType::F32);
        let same = b.to(&Device::Cpu, DType::F32).unwrap();
        for ((n1, t1), (n2, t2)) in b.iter().zip(same.iter()) {
            assert_eq!(n1, n2);
            let (v1, v2) = (
                t1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                t2.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(v1, v2, "{n1}");
        }
        for (dtype, needle) in [(DType::BF16, "cpu kernels"), (DType::U32, "expected f32")] {
            match b.to(&Device::Cpu, dtype) {
                Err(LoraError::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "dtype");
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{dtype:?}: {other:?}"),
            }
        }
        // Without the `cuda` feature (CI) a CUDA device cannot be made: the
        // error comes from candle, before any backbone is touched.
        #[cfg(not(feature = "cuda"))]
        assert!(Device::new_cuda(0).is_err());
    }

    #[test]
    fn interpolation_identity_and_constants() {
        let d = 2;
        let pos: Vec<f32> = (0..(1 + 9) * d).map(|v| v as f32 * 0.37).collect();
        assert_eq!(interpolate_pos_embed(&pos, 3, 3, d).unwrap(), pos);
        assert!(interpolate_pos_embed(&pos, 2, 3, d).is_err());
        let mut constant = vec![5.0f32; (1 + 4) * d];
        constant[0] = -1.0;
        let up = interpolate_pos_embed(&constant, 2, 5, d).unwrap();
        assert_eq!(up.len(), (1 + 25) * d);
        assert_eq!(up[0], -1.0);
        assert!(up[d..].iter().all(|&v| (v - 5.0).abs() < 1e-6));
    }

    #[test]
    fn interpolation_two_to_four_by_hand() {
        // One channel, grid [[0, 1], [2, 3]] → 4×4, align_corners=false:
        // source coordinate of output i is (i + 0.5)/2 − 0.5 = -0.25, 0.25, 0.75, 1.25,
        // clamped to 0, 0.25, 0.75, 1 (weights toward index 1: 0, .25, .75, 1).
        // Value = 2·wy + wx, so row 1 (wy = .25) is [0.5, 0.75, 1.25, 1.5].
        let pos = vec![9.0, 0.0, 1.0, 2.0, 3.0];
        let up = interpolate_pos_embed(&pos, 2, 4, 1).unwrap();
        assert_eq!(up[0], 9.0);
        let row1 = &up[1 + 4..1 + 8];
        for (a, b) in row1.iter().zip([0.5, 0.75, 1.25, 1.5]) {
            assert!((a - b).abs() < 1e-6, "{row1:?}");
        }
        assert!((up[16] - 3.0).abs() < 1e-6);
    }

    #[test]
    fn bicubic_matches_pytorch() {
        // Reference: PyTorch 2.11, F.interpolate(x, size, mode="bicubic",
        // align_corners=False) on x = [[0, 1, 4], [2, -1, 3], [5, 0.5, -2]].
        let grid = [0.0, 1.0, 4.0, 2.0, -1.0, 3.0, 5.0, 0.5, -2.0];
        let mut pos = vec![7.0f32];
        pos.extend(grid.iter().map(|&v: &f64| v as f32));
        let up: [f64; 25] = [
            -0.324_863_88,
            0.135_905_01,
            1.192,
            3.068_896_3,
            4.374_785,
            0.602_625_3,
            0.110_097_37,
            0.115_999_76,
            2.443_903_2,
            4.342_175,
            2.288,
            0.548,
            -1.0,
            1.232_000_9,
            3.384,
            4.383_776_7,
            2.341_302_9,
            -0.225_999_53,
            -0.471_302_9,
            -0.122_976_09,
            5.733_825,
            3.711_054_3,
            0.644,
            -1.602_255_5,
            -2.779_904_4,
        ];
        let got = interpolate_pos_embed_bicubic(&pos, 3, 5, 1).unwrap();
        assert_eq!(got[0], 7.0);
        for (a, b) in got[1..].iter().zip(up) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{got:?}");
        }
        let down = [0.259_376_53, 3.171_577_5, 3.451_110_8, -0.828_750_6];
        let got = interpolate_pos_embed_bicubic(&pos, 3, 2, 1).unwrap();
        for (a, b) in got[1..].iter().zip(down) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{got:?}");
        }
    }

    proptest::proptest! {
        /// Keys' kernel reproduces constants (its weights sum to one, the
        /// class token is kept), and the grid is unchanged at the same size.
        #[test]
        fn bicubic_keeps_constants_and_identity(
            c in -3.0f32..3.0, g_old in 1usize..6, g_new in 1usize..9, d in 1usize..3,
        ) {
            let mut pos = vec![c; (1 + g_old * g_old) * d];
            pos[0] = 1.5;
            let up = interpolate_pos_embed_bicubic(&pos, g_old, g_new, d).unwrap();
            proptest::prop_assert_eq!(up.len(), (1 + g_new * g_new) * d);
            for v in &up[d..] {
                proptest::prop_assert!((v - c).abs() < 1e-5);
            }
            let ramp: Vec<f32> = (0..(1 + g_old * g_old) * d).map(|i| i as f32 * 0.1).collect();
            proptest::prop_assert_eq!(
                interpolate_pos_embed_bicubic(&ramp, g_old, g_old, d).unwrap(), ramp
            );
        }
    }

    #[test]
    fn safetensors_round_trip_is_exact() {
        let cfg = VitConfig {
            image_size: 8,
            in_channels: 1,
            patch_size: 4,
            width: 8,
            depth: 1,
            heads: 2,
            mlp_dim: 16,
            layer_scale: Some(0.5),
            ln_eps: 1e-6,
            text: None,
        };
        let bb = Backbone::random(&cfg, 3).unwrap();
        let bytes = bb.to_safetensors_bytes(&HashMap::new()).unwrap();
        let (back, meta) = Backbone::from_safetensors_bytes(&cfg, &bytes, "mem").unwrap();
        assert!(meta.contains_key(META_CONFIG));
        for ((n1, t1), (n2, t2)) in bb.iter().zip(back.iter()) {
            assert_eq!(n1, n2);
            assert_eq!(
                t1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                t2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        assert_eq!(bb.num_params(), cfg.backbone_params());
    }
}
