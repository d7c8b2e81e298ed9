//! The LoRA vision transformer and its factor exchange.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backbone::Backbone;
use crate::config::{FineTuneMode, LoraTarget, VitConfig};
use crate::convert::{array_from_tensor, tensor_from_array};
use crate::error::{LoraError, Result, check_shape};
use crate::lora_linear::LoraLinear;
use crate::regularizer::{RegulariserKind, orthogonality_penalty};

/// The LoRA factors of one adapted matrix, as plain row-major matrices.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterFactors {
    /// Stable name of the adapted matrix, e.g. `blocks.3.attn.q`.
    pub name: String,
    /// `B` (`d × r`, `d` = output features).
    pub b: Array2<f32>,
    /// `A` (`r × l`, `l` = input features).
    pub a: Array2<f32>,
}

/// The classifier head, sent densely.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadParams {
    /// Weight, `num_classes × width`.
    pub weight: Array2<f32>,
    /// Bias, length `num_classes`.
    pub bias: Vec<f32>,
}

impl HeadParams {
    /// Number of scalars (`K·D + K`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// Whether the head has no parameters.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
struct Norm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl Norm {
    /// LayerNorm over the last dimension (fused kernel with its own backward
    /// pass; candle-nn's fused layer norm has none).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::fused::layer_norm(x, &self.w, &self.b, self.eps)?)
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: Norm,
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    norm2: Norm,
    fc1: LoraLinear,
    fc2: LoraLinear,
    ls1: Option<Tensor>,
    ls2: Option<Tensor>,
}

impl Block {
    fn linear(&self, t: LoraTarget) -> &LoraLinear {
        match t {
            LoraTarget::Q => &self.q,
            LoraTarget::K => &self.k,
            LoraTarget::V => &self.v,
            LoraTarget::O => &self.o,
            LoraTarget::Fc1 => &self.fc1,
            LoraTarget::Fc2 => &self.fc2,
        }
    }

    fn linear_mut(&mut self, t: LoraTarget) -> &mut LoraLinear {
        match t {
            LoraTarget::Q => &mut self.q,
            LoraTarget::K => &mut self.k,
            LoraTarget::V => &mut self.v,
            LoraTarget::O => &mut self.o,
            LoraTarget::Fc1 => &mut self.fc1,
            LoraTarget::Fc2 => &mut self.fc2,
        }
    }

    /// `x`: `(B·T, D)` tokens of `batch` images with `tokens` tokens each.
    fn forward(&self, x: &Tensor, batch: usize, tokens: usize, heads: usize) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let ctx = crate::fused::attention(
            &self.q.forward(&h)?,
            &self.k.forward(&h)?,
            &self.v.forward(&h)?,
            batch,
            tokens,
            heads,
        )?;
        let mut a = self.o.forward(&ctx)?;
        if let Some(ls) = &self.ls1 {
            a = a.broadcast_mul(ls)?;
        }
        let x = (x + a)?;
        let m = crate::fused::gelu(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        let mut m = self.fc2.forward(&m)?;
        if let Some(ls) = &self.ls2 {
            m = m.broadcast_mul(ls)?;
        }
        Ok((x + m)?)
    }
}

/// A client's vision transformer: a shared frozen [`Backbone`], LoRA adapters
/// (or none, or a trainable copy of the backbone) and a dense classifier head
/// on the class token.
///
/// Building a LoRA or head-only model from an `Arc<Backbone>` copies no
/// backbone weight: the layers hold clones of the backbone's reference-counted
/// tensors. Full fine-tuning copies the backbone into trainable variables.
#[derive(Debug)]
pub struct VitModel {
    backbone: Arc<Backbone>,
    mode: FineTuneMode,
    num_classes: usize,
    patch: LoraLinear,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    head_w: Var,
    head_b: Var,
    full_vars: Vec<(String, Var)>,
    train_a: bool,
}

impl VitModel {
    /// A model on `backbone` training per `mode`, with a `num_classes`-way
    /// head. `seed` draws the LoRA `A` factors (blocks in order, targets in
    /// [`LoraTarget::ALL`] order) and then the head weight, uniform in
    /// `±1/√D` (PyTorch's default for `nn.Linear`); the head bias starts at 0.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] for an invalid mode or `num_classes = 0`.
    pub fn new(
        backbone: Arc<Backbone>,
        mode: FineTuneMode,
        num_classes: usize,
        seed: u64,
    ) -> Result<Self> {
        mode.validate()?;
        if num_classes == 0 {
            return Err(LoraError::InvalidConfig {
                field: "num_classes",
                reason: "must be at least 1".into(),
            });
        }
        let config = backbone.config().clone();
        let mut full_vars = Vec::new();
        let mut get = |name: &str| -> Result<Tensor> {
            let t = backbone.get(name)?;
            if matches!(mode, FineTuneMode::Full) {
                // A fresh variable: copies the frozen tensor's values.
                let v = Var::from_tensor(&t.copy()?)?;
                let out = v.as_tensor().clone();
                full_vars.push((name.to_owned(), v));
                Ok(out)
            } else {
                Ok(t.clone())
            }
        };
        let d = config.width;
        let lin = |get: &mut dyn FnMut(&str) -> Result<Tensor>, p: &str| -> Result<LoraLinear> {
            LoraLinear::new(
                get(&format!("{p}.weight"))?,
                Some(get(&format!("{p}.bias"))?),
            )
        };
        let norm = |get: &mut dyn FnMut(&str) -> Result<Tensor>, p: &str| -> Result<Norm> {
            Ok(Norm {
                w: get(&format!("{p}.weight"))?,
                b: get(&format!("{p}.bias"))?,
                eps: config.ln_eps,
            })
        };
        let patch = lin(&mut get, "patch_embed")?;
        let cls = get("cls_token")?.reshape((1, 1, d))?;
        let pos = get("pos_embed")?.reshape((1, config.num_tokens(), d))?;
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let p = format!("blocks.{i}");
            let (ls1, ls2) = if config.layer_scale.is_some() {
                (
                    Some(get(&format!("{p}.ls1"))?),
                    Some(get(&format!("{p}.ls2"))?),
                )
            } else {
                (None, None)
            };
            blocks.push(Block {
                norm1: norm(&mut get, &format!("{p}.norm1"))?,
                q: lin(&mut get, &format!("{p}.attn.q"))?,
                k: lin(&mut get, &format!("{p}.attn.k"))?,
                v: lin(&mut get, &format!("{p}.attn.v"))?,
                o: lin(&mut get, &format!("{p}.attn.o"))?,
                norm2: norm(&mut get, &format!("{p}.norm2"))?,
                fc1: lin(&mut get, &format!("{p}.mlp.fc1"))?,
                fc2: lin(&mut get, &format!("{p}.mlp.fc2"))?,
                ls1,
                ls2,
            });
        }
        let final_norm = norm(&mut get, "norm")?;
        let mut rng = StdRng::seed_from_u64(seed);
        if let FineTuneMode::Lora(lora) = &mode {
            for block in &mut blocks {
                for t in LoraTarget::ALL {
                    if lora.targets.contains(&t) {
                        let l = block.linear_mut(t);
                        *l = l.clone().with_adapter(lora.rank, lora.alpha, &mut rng)?;
                    }
                }
            }
        }
        let bound = 1.0 / (d as f32).sqrt();
        let hw: Vec<f32> = (0..num_classes * d)
            .map(|_| rng.random_range(-bound..=bound))
            .collect();
        let device = backbone.device();
        let head_w = Var::from_vec(hw, (num_classes, d), &device)?;
        let head_b = Var::zeros(num_classes, DType::F32, &device)?;
        Ok(Self {
            backbone,
            mode,
            num_classes,
            patch,
            cls,
            pos,
            blocks,
            norm: final_norm,
            head_w,
            head_b,
            full_vars,
            train_a: true,
        })
    }

    /// The backbone configuration.
    #[must_use]
    pub fn config(&self) -> &VitConfig {
        self.backbone.config()
    }

    /// The device the model computes on (its backbone's; see
    /// [`Backbone::to`]). Batches are copied there.
    #[must_use]
    pub fn device(&self) -> Device {
        self.backbone.device()
    }

    /// The shared frozen backbone the model was built on.
    #[must_use]
    pub fn backbone(&self) -> &Arc<Backbone> {
        &self.backbone
    }

    /// What the model trains.
    #[must_use]
    pub fn mode(&self) -> &FineTuneMode {
        &self.mode
    }

    /// Classes of the head.
    #[must_use]
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Logits `(B, K)` for images `(B, C, H, W)`.
    ///
    /// # Errors
    /// [`LoraError::Shape`] if the image shape does not match the configuration.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let (x, b, t, d) = self.encode(images)?;
        let cls_out = x.reshape((b, t, d))?.narrow(1, 0, 1)?.reshape((b, d))?;
        // The head and the loss are f32 whatever the compute dtype.
        let f = self.norm.forward(&cls_out)?.to_dtype(DType::F32)?;
        Ok(f.matmul(&self.head_w.as_tensor().t()?)?
            .broadcast_add(self.head_b.as_tensor())?)
    }

    /// Every token after the final LayerNorm, `(B, T, D)` with the class
    /// token first: the backbone's output (Hugging Face's
    /// `last_hidden_state`), adapters included.
    ///
    /// # Errors
    /// [`LoraError::Shape`] if the image shape does not match the configuration.
    pub fn tokens(&self, images: &Tensor) -> Result<Tensor> {
        let (x, b, t, d) = self.encode(images)?;
        Ok(self.norm.forward(&x)?.reshape((b, t, d))?)
    }

    /// Patch embedding, class token, positions and the blocks: `(B·T, D)`
    /// before the final LayerNorm, with `B`, `T` and `D`.
    fn encode(&self, images: &Tensor) -> Result<(Tensor, usize, usize, usize)> {
        let cfg = self.config();
        let dims = images.dims();
        let b = dims.first().copied().unwrap_or(0);
        check_shape(
            "images (B, C, H, W)",
            &[b, cfg.in_channels, cfg.image_size, cfg.image_size],
            dims,
        )?;
        let (p, g, d, t) = (cfg.patch_size, cfg.grid(), cfg.width, cfg.num_tokens());
        let patches = images
            .to_device(self.cls.device())?
            .to_dtype(self.cls.dtype())?
            .reshape((b, cfg.in_channels, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, cfg.patch_dim()))?;
        let tok = self.patch.forward(&patches)?.reshape((b, g * g, d))?;
        let cls = self.cls.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &tok], 1)?.broadcast_add(&self.pos)?;
        let mut x = x.reshape((b * t, d))?;
        for block in &self.blocks {
            x = block.forward(&x, b, t, cfg.heads)?;
        }
        Ok((x, b, t, d))
    }

    /// Stable names of the adapted matrices, blocks in order and targets in
    /// [`LoraTarget::ALL`] order (empty unless in LoRA mode).
    #[must_use]
    pub fn adapter_names(&self) -> Vec<String> {
        self.adapted().map(|(n, _)| n).collect()
    }

    fn adapted(&self) -> impl Iterator<Item = (String, &LoraLinear)> {
        self.blocks.iter().enumerate().flat_map(|(i, block)| {
            LoraTarget::ALL.into_iter().filter_map(move |t| {
                let l = block.linear(t);
                l.adapter().map(|_| (t.name(i), l))
            })
        })
    }

    /// A linear layer by stable name (`patch_embed`, `blocks.N.attn.q`, …,
    /// `blocks.N.mlp.fc2`).
    #[must_use]
    pub fn linear(&self, name: &str) -> Option<&LoraLinear> {
        if name == "patch_embed" {
            return Some(&self.patch);
        }
        let rest = name.strip_prefix("blocks.")?;
        let (idx, path) = rest.split_once('.')?;
        let block = self.blocks.get(idx.parse::<usize>().ok()?)?;
        LoraTarget::ALL
            .into_iter()
            .find(|t| t.path() == path)
            .map(|t| block.linear(t))
    }

    /// All LoRA factors in [`Self::adapter_names`] order.
    ///
    /// # Errors
    /// Candle errors only.
    pub fn factors(&self) -> Result<Vec<AdapterFactors>> {
        self.adapted()
            .map(|(name, l)| {
                Ok(AdapterFactors {
                    b: l.b()?,
                    a: l.a()?,
                    name,
                })
            })
            .collect()
    }

    /// Overwrites LoRA factors by name (any subset, any order); the variables
    /// keep their identity.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] for an unknown name, [`LoraError::Shape`]
    /// naming the factor for a wrong shape (nothing is written then).
    pub fn set_factors(&self, factors: &[AdapterFactors]) -> Result<()> {
        let layers: BTreeMap<String, &LoraLinear> = self.adapted().collect();
        let mut plan = Vec::with_capacity(factors.len());
        for f in factors {
            let l = layers.get(&f.name).ok_or_else(|| LoraError::InvalidInput {
                what: "adapter name",
                reason: format!("no adapted matrix named `{}`", f.name),
            })?;
            let r = l.adapter().map_or(0, |a| a.rank());
            check_shape(
                &format!("{}.B", f.name),
                &[l.out_features(), r],
                &[f.b.nrows(), f.b.ncols()],
            )?;
            check_shape(
                &format!("{}.A", f.name),
                &[r, l.in_features()],
                &[f.a.nrows(), f.a.ncols()],
            )?;
            plan.push((l, f));
        }
        for (l, f) in plan {
            l.set_b(&f.b)?;
            l.set_a(&f.a)?;
        }
        Ok(())
    }

    /// The head as plain arrays.
    ///
    /// # Errors
    /// Candle errors only.
    pub fn head(&self) -> Result<HeadParams> {
        Ok(HeadParams {
            weight: array_from_tensor("head.weight", self.head_w.as_tensor())?,
            bias: self.head_b.as_tensor().to_vec1::<f32>()?,
        })
    }

    /// Overwrites the head.
    ///
    /// # Errors
    /// [`LoraError::Shape`] naming `head.weight` or `head.bias`.
    pub fn set_head(&self, head: &HeadParams) -> Result<()> {
        check_shape(
            "head.weight",
            self.head_w.dims(),
            &[head.weight.nrows(), head.weight.ncols()],
        )?;
        check_shape("head.bias", self.head_b.dims(), &[head.bias.len()])?;
        let device = self.head_w.device();
        self.head_w.set(&tensor_from_array(&head.weight, device)?)?;
        self.head_b
            .set(&Tensor::from_slice(&head.bias, head.bias.len(), device)?)?;
        Ok(())
    }

    /// Whether the optimizer updates the LoRA `A` factors (the default).
    /// With `false`, `A` stays at whatever [`Self::set_factors`] wrote:
    /// frozen random projections, as FFA-LoRA and SO-LoRA train them.
    pub fn set_train_a(&mut self, train: bool) {
        self.train_a = train;
    }

    /// Whether the optimizer updates the LoRA `A` factors.
    #[must_use]
    pub fn trains_a(&self) -> bool {
        self.train_a
    }

    /// The variables an optimizer updates: LoRA `A` (unless frozen with
    /// [`Self::set_train_a`]) and `B` per adapted matrix (LoRA mode), every
    /// backbone weight (full mode), then the head weight and bias.
    #[must_use]
    pub fn trainable_vars(&self) -> Vec<Var> {
        let mut vars = Vec::new();
        for (_, l) in self.adapted() {
            if let Some(ad) = l.adapter() {
                if self.train_a {
                    vars.push(ad.a_var().clone());
                }
                vars.push(ad.b_var().clone());
            }
        }
        vars.extend(self.full_vars.iter().map(|(_, v)| v.clone()));
        vars.push(self.head_w.clone());
        vars.push(self.head_b.clone());
        vars
    }

    /// Number of trainable scalars.
    #[must_use]
    pub fn num_trainable(&self) -> usize {
        self.trainable_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// The orthogonality regulariser summed over the adapted matrices (a
    /// scalar tensor in the autograd graph; 0 without adapters).
    ///
    /// # Errors
    /// Candle errors only.
    pub fn regulariser(&self, kind: RegulariserKind) -> Result<Tensor> {
        let mut total = Tensor::zeros((), DType::F32, self.head_w.device())?;
        for (_, l) in self.adapted() {
            if let Some(ad) = l.adapter() {
                total = (total + orthogonality_penalty(ad.b_var(), ad.a_var(), kind)?)?;
            }
        }
        Ok(total)
    }

    /// The backbone this model currently computes with: the trained copy in
    /// full mode, `W0 + (α/r)·B·A` merged into the adapted weights in LoRA
    /// mode, the shared frozen weights in head-only mode. Always a fresh,
    /// detached copy in full and LoRA mode.
    ///
    /// # Errors
    /// Candle errors only.
    pub fn current_backbone(&self) -> Result<Backbone> {
        let cfg = self.config().clone();
        match &self.mode {
            FineTuneMode::HeadOnly => Ok((*self.backbone).clone()),
            FineTuneMode::Full => {
                let map = self
                    .full_vars
                    .iter()
                    .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
                    .collect::<Result<BTreeMap<_, _>>>()?;
                Backbone::from_tensors(&cfg, map)
            }
            FineTuneMode::Lora(_) => {
                let mut map: BTreeMap<String, Tensor> = self
                    .backbone
                    .iter()
                    .map(|(n, t)| (n.to_owned(), t.clone()))
                    .collect();
                for (name, l) in self.adapted() {
                    map.insert(format!("{name}.weight"), l.merged_weight()?.detach());
                }
                Backbone::from_tensors(&cfg, map)
            }
        }
    }
}
