//! A DINOv2 backbone read out of an ONNX export (feature `onnx`).
//!
//! Exporters such as `torch.onnx.export` keep the names of the parameters
//! that the graph reads directly (biases, LayerNorm, LayerScale, the class
//! token: `backbone.encoder.layer.0.attention.attention.query.bias`), but the
//! weight of every linear layer becomes an anonymous, transposed `MatMul`
//! initialiser (`onnx::MatMul_1966`, shape `(in, out)`). Its module is in the
//! name of the node that reads it
//! (`/backbone/encoder/layer.0/attention/attention/key/MatMul`). The
//! position embeddings are split into two anonymous initialisers, the class
//! token's `(1, 1, D)` (read by a `Concat`) and the patch grid's `(1, N, D)`
//! (read by a `Reshape` before the bicubic `Resize` to the input's grid).
//!
//! [`dinov2_hf_tensors`] recovers the Hugging Face `Dinov2Model` names from
//! those patterns, [`backbone_from_onnx`] turns them into a [`Backbone`] at
//! the export's native grid, and [`check_against_onnx`] evaluates the ONNX
//! graph itself (candle-onnx) on the same images as our forward pass and
//! reports the largest difference of the final LayerNorm's output.
//!
//! The graph's own `Resize` is cubic, which candle-onnx cannot evaluate; the
//! check replaces that one node by its result computed with
//! [`crate::interpolate_pos_embed_bicubic`] (itself tested against PyTorch),
//! so every other operation of the graph is compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_onnx::onnx::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

use crate::config::VitConfig;
use crate::error::{LoraError, Result};
use crate::hf::{HfLayout, load_hf_backbone_tensors};
use crate::{Backbone, FineTuneMode, VitModel};

/// The model prefix of the backbone's parameters and nodes in the export.
const PREFIX: &str = "backbone";

/// The name the check gives to the replaced `Resize` node's result.
const RESIZED_POS: &str = "wflora.resized_position_embeddings";

fn bad(source_name: &str, reason: impl Into<String>) -> LoraError {
    LoraError::WeightFile {
        source_name: source_name.to_owned(),
        reason: reason.into(),
    }
}

/// Reads an ONNX model file.
///
/// # Errors
/// [`LoraError::Io`] naming the path, [`LoraError::WeightFile`] if it is not
/// a valid ONNX protobuf (truncated or corrupt).
pub fn read_onnx(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode_onnx(&bytes, &path.display().to_string())
}

/// Parses ONNX protobuf bytes; `source_name` labels errors.
///
/// # Errors
/// [`LoraError::WeightFile`] if the bytes are not an ONNX model with a graph.
pub fn decode_onnx(bytes: &[u8], source_name: &str) -> Result<ModelProto> {
    use prost::Message as _;
    let model = ModelProto::decode(bytes)
        .map_err(|e| bad(source_name, format!("not a valid ONNX protobuf ({e})")))?;
    if model.graph.is_none() {
        return Err(bad(source_name, "the ONNX model has no graph"));
    }
    Ok(model)
}

fn graph<'a>(model: &'a ModelProto, source_name: &str) -> Result<&'a GraphProto> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| bad(source_name, "the ONNX model has no graph"))
}

/// The backbone's tensors under their Hugging Face `Dinov2Model` names
/// (without a model prefix): the named initialisers under `backbone.`, the
/// linear weights recovered from their `MatMul` nodes (transposed to
/// `(out, in)`), and `embeddings.position_embeddings` `(1, 1 + N, D)`
/// rebuilt from its two anonymous parts.
///
/// # Errors
/// [`LoraError::WeightFile`] naming what is missing or ambiguous (a linear
/// layer read by two nodes, position embeddings not found), or a tensor
/// candle-onnx cannot read.
pub fn dinov2_hf_tensors(
    model: &ModelProto,
    source_name: &str,
) -> Result<BTreeMap<String, Tensor>> {
    let g = graph(model, source_name)?;
    let inits: HashMap<&str, &candle_onnx::onnx::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let read = |name: &str| -> Result<Tensor> {
        let t = inits
            .get(name)
            .ok_or_else(|| bad(source_name, format!("initialiser `{name}` not found")))?;
        candle_onnx::eval::get_tensor(t, name)
            .map_err(|e| bad(source_name, format!("initialiser `{name}`: {e}")))
    };
    let named = format!("{PREFIX}.");
    let mut out = BTreeMap::new();
    for t in &g.initializer {
        if let Some(hf) = t.name.strip_prefix(&named)
            && (hf.starts_with("embeddings.")
                || hf.starts_with("encoder.")
                || hf.starts_with("layernorm."))
        {
            out.insert(hf.to_owned(), read(&t.name)?);
        }
    }
    let node_prefix = format!("/{PREFIX}/");
    let anonymous = |name: &str| inits.contains_key(name) && !name.starts_with(&named);
    let mut cls_pos = None;
    let mut patch_pos = None;
    for node in &g.node {
        let Some(path) = node.name.strip_prefix(&node_prefix) else {
            continue;
        };
        match node.op_type.as_str() {
            "MatMul" => {
                let Some(w) = node.input.get(1).filter(|w| anonymous(w)) else {
                    continue;
                };
                let module = path.strip_suffix("/MatMul").ok_or_else(|| {
                    bad(
                        source_name,
                        format!("MatMul node `{}` does not end in /MatMul", node.name),
                    )
                })?;
                let hf = format!("{}.weight", module.replace('/', "."));
                let t = read(w)?.t()?.contiguous()?;
                if out.insert(hf.clone(), t).is_some() {
                    return Err(bad(source_name, format!("`{hf}` is read by two nodes")));
                }
            }
            "Concat" if path.starts_with("embeddings/") => {
                if let Some(i) = node.input.first().filter(|i| anonymous(i)) {
                    cls_pos = Some(read(i)?);
                }
            }
            "Reshape" if path.starts_with("embeddings/") => {
                if let Some(i) = node.input.first().filter(|i| anonymous(i)) {
                    patch_pos = Some(read(i)?);
                }
            }
            _ => {}
        }
    }
    let (Some(cls_pos), Some(patch_pos)) = (cls_pos, patch_pos) else {
        return Err(bad(
            source_name,
            "position embeddings not found: expected an anonymous (1, 1, D) initialiser read \
             by a Concat and a (1, N, D) one read by a Reshape under /backbone/embeddings/",
        ));
    };
    out.insert(
        "embeddings.position_embeddings".into(),
        Tensor::cat(&[&cls_pos, &patch_pos], 1)?,
    );
    Ok(out)
}

/// The side of the square patch grid the export's position embeddings were
/// trained at (37 for DINOv2's 518×518 pre-training).
///
/// # Errors
/// [`LoraError::Shape`] if the patch rows do not form a square grid.
pub fn native_grid(tensors: &BTreeMap<String, Tensor>) -> Result<usize> {
    let name = "embeddings.position_embeddings";
    let pos = tensors.get(name).ok_or_else(|| LoraError::MissingTensor {
        name: name.into(),
        expected: vec![1, 0, 0],
        source_name: "ONNX export".into(),
    })?;
    let n = pos.dims().get(1).copied().unwrap_or(0).saturating_sub(1);
    let g = (n as f64).sqrt().round() as usize;
    if g == 0 || g * g != n {
        return Err(LoraError::Shape {
            what: format!("{name} (a square patch grid plus the class token)"),
            expected: vec![1, g * g + 1, 0],
            got: pos.dims().to_vec(),
        });
    }
    Ok(g)
}

/// Reads the DINOv2 backbone of an ONNX export into `config`'s shapes at the
/// export's native resolution (`config.image_size` is replaced by
/// `patch_size × native grid`, so that no interpolation happens here; a
/// model at another resolution interpolates when the saved backbone is
/// loaded). Returns the backbone.
///
/// # Errors
/// As [`dinov2_hf_tensors`], then as [`load_hf_backbone_tensors`] (a missing
/// tensor or a shape that does not match `config`, named).
pub fn backbone_from_onnx(
    model: &ModelProto,
    config: &VitConfig,
    source_name: &str,
) -> Result<Backbone> {
    let tensors = dinov2_hf_tensors(model, source_name)?;
    let grid = native_grid(&tensors)?;
    let native = config.clone().with_image_size(grid * config.patch_size);
    load_hf_backbone_tensors(&tensors, &native, HfLayout::Dinov2, source_name)
}

/// The outcome of [`check_against_onnx`].
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxCheck {
    /// Largest absolute difference between the two `(B, T, D)` outputs.
    pub max_abs_diff: f64,
    /// Largest absolute value of the ONNX graph's output (for scale).
    pub max_abs_reference: f64,
    /// The ONNX value compared (the final LayerNorm's output).
    pub output: String,
    /// Shape of the compared outputs.
    pub shape: Vec<usize>,
}

/// Evaluates the export's backbone (up to its final LayerNorm) with
/// candle-onnx on `batch` deterministic standard-normal images
/// `(batch, 3, side, side)` (the scale of ImageNet-normalised pixels; the
/// graph's input size must be `side`) and our [`VitModel::tokens`] on the
/// same images, with `backbone` interpolated to `side`, and compares them.
///
/// # Errors
/// [`LoraError::WeightFile`] if the graph lacks the nodes the check relies
/// on or candle-onnx fails to evaluate it; shape errors from our model.
pub fn check_against_onnx(
    model: &ModelProto,
    backbone: &Backbone,
    batch: usize,
    side: usize,
    source_name: &str,
) -> Result<OnnxCheck> {
    let g = graph(model, source_name)?;
    let images = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(250_500_333);
        let c = backbone.config().in_channels;
        let data: Vec<f32> = (0..batch * c * side * side)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect();
        Tensor::from_vec(data, (batch, c, side, side), &Device::Cpu)?
    };
    let images = &images;
    let config = backbone.config().clone().with_image_size(side);
    config.validate()?;
    // Our side: the backbone at the images' resolution, no adapters.
    let resized = Backbone::from_tensors(
        &config,
        backbone
            .iter()
            .map(|(n, t)| {
                let t = if n == "pos_embed" {
                    crate::backbone::fit_pos_embed(n, t, &config)?
                } else {
                    t.clone()
                };
                Ok((n.to_owned(), t))
            })
            .collect::<Result<BTreeMap<_, _>>>()?,
    )?;
    let pos = resized.get("pos_embed")?.clone();
    let ours = VitModel::new(Arc::new(resized), FineTuneMode::HeadOnly, 1, 0)?.tokens(images)?;

    // Their side: the graph pruned to the backbone, Resize replaced.
    let norm_prefix = format!("/{PREFIX}/layernorm/");
    let output = g
        .node
        .iter()
        .rev()
        .find(|n| n.name.starts_with(&norm_prefix))
        .and_then(|n| n.output.first().cloned())
        .ok_or_else(|| bad(source_name, format!("no node under {norm_prefix}")))?;
    let emb_prefix = format!("/{PREFIX}/embeddings/");
    let resize = g
        .node
        .iter()
        .position(|n| n.op_type == "Resize" && n.name.starts_with(&emb_prefix))
        .ok_or_else(|| bad(source_name, format!("no Resize node under {emb_prefix}")))?;
    let mut nodes = g.node.clone();
    let resize_out = nodes[resize].output.first().cloned().unwrap_or_default();
    nodes[resize] = NodeProto {
        input: vec![RESIZED_POS.into()],
        output: vec![resize_out],
        name: "wflora/replaced_resize".into(),
        op_type: "Identity".into(),
        ..NodeProto::default()
    };
    let mut pruned = g.clone();
    pruned.node = needed_nodes(nodes, &output);
    pruned.output = vec![ValueInfoProto {
        name: output.clone(),
        ..ValueInfoProto::default()
    }];
    let input_name = g
        .input
        .first()
        .map(|i| i.name.clone())
        .ok_or_else(|| bad(source_name, "the graph has no input"))?;
    let (t, d) = (config.num_tokens(), config.width);
    let grid = config.grid();
    let patch_pos = pos
        .narrow(0, 1, t - 1)?
        .t()?
        .reshape((1, d, grid, grid))?
        .contiguous()?;
    let mut inputs = HashMap::new();
    inputs.insert(input_name, images.clone());
    inputs.insert(RESIZED_POS.to_owned(), patch_pos);
    let pruned_model = ModelProto {
        graph: Some(pruned),
        ..model.clone()
    };
    let mut outs = candle_onnx::simple_eval(&pruned_model, inputs)
        .map_err(|e| bad(source_name, format!("candle-onnx evaluation failed: {e}")))?;
    let theirs = outs
        .remove(&output)
        .ok_or_else(|| bad(source_name, format!("output `{output}` not produced")))?;
    crate::error::check_shape(&output, ours.dims(), theirs.dims())?;
    let diff = (&ours - &theirs)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let scale = theirs.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(OnnxCheck {
        max_abs_diff: f64::from(diff),
        max_abs_reference: f64::from(scale),
        output,
        shape: theirs.dims().to_vec(),
    })
}

/// The nodes `output` depends on, in their original order.
fn needed_nodes(nodes: Vec<NodeProto>, output: &str) -> Vec<NodeProto> {
    let mut needed: HashSet<String> = HashSet::from([output.to_owned()]);
    let mut keep = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    nodes
        .into_iter()
        .zip(keep)
        .filter_map(|(n, k)| k.then_some(n))
        .collect()
}
