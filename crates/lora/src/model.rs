//! The LoRA transformer encoder (ViT, or BERT for text) and its factor exchange.

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

#[cfg(test)]
thread_local! {
    /// Tests compare the one-node block with the composed one.
    static COMPOSED_BLOCKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// How many times the narrowed last block ran (tests check the path).
    static NARROWED_BLOCKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether a test asked for the composed blocks.
fn composed_blocks_forced() -> bool {
    #[cfg(test)]
    {
        COMPOSED_BLOCKS.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        false
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

    /// The block's tensors for the one-node CPU block (`fused_block`).
    fn parts(&self) -> crate::fused_block::Block<'_> {
        fn linear(l: &LoraLinear) -> crate::fused_block::Linear<'_> {
            crate::fused_block::Linear {
                w: l.weight(),
                b: l.bias(),
                adapter: l
                    .adapter()
                    .map(|ad| (ad.a_var().as_tensor(), ad.b_var().as_tensor(), ad.scale())),
            }
        }
        crate::fused_block::Block {
            norm1: (&self.norm1.w, &self.norm1.b, self.norm1.eps),
            linear: [
                linear(&self.q),
                linear(&self.k),
                linear(&self.v),
                linear(&self.o),
                linear(&self.fc1),
                linear(&self.fc2),
            ],
            norm2: (&self.norm2.w, &self.norm2.b, self.norm2.eps),
            ls1: self.ls1.as_ref(),
            ls2: self.ls2.as_ref(),
        }
    }

    /// `x`: `(B·T, D)` tokens of `batch` inputs with `tokens` tokens each.
    /// Pre-norm (ViT) unless `post_norm` (BERT); a pre-norm block on the CPU
    /// runs as one autograd node (`fused_block`), with the floats of the
    /// composed version below.
    fn forward(
        &self,
        x: &Tensor,
        batch: usize,
        tokens: usize,
        heads: usize,
        post_norm: bool,
    ) -> Result<Tensor> {
        if post_norm {
            let ctx = crate::fused::attention(
                &self.q.forward(x)?,
                &self.k.forward(x)?,
                &self.v.forward(x)?,
                batch,
                tokens,
                heads,
            )?;
            let x = self.norm1.forward(&(x + self.o.forward(&ctx)?)?)?;
            let m = self
                .fc2
                .forward(&crate::fused::gelu(&self.fc1.forward(&x)?)?)?;
            return self.norm2.forward(&(x + m)?);
        }
        if !composed_blocks_forced()
            && let Some(y) = crate::fused_block::forward(x, &self.parts(), (batch, tokens, heads))?
        {
            return Ok(y);
        }
        let ctx = self.attention_context(x, batch, tokens, heads)?;
        self.finish_pre_norm(x, &ctx)
    }

    /// A pre-norm block's attention context `(B·T, D)`: the first
    /// LayerNorm, q, k, v and the attention over every token.
    fn attention_context(
        &self,
        x: &Tensor,
        batch: usize,
        tokens: usize,
        heads: usize,
    ) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        Ok(crate::fused::attention(
            &self.q.forward(&h)?,
            &self.k.forward(&h)?,
            &self.v.forward(&h)?,
            batch,
            tokens,
            heads,
        )?)
    }

    /// A pre-norm block's output for each input's first token only, `(B, D)`
    /// from `x` `(B·T, D)`: the first LayerNorm, q, k, v and the attention
    /// for every token as in [`Block::forward`], then the output projection,
    /// the second LayerNorm and the MLP for the class token alone (three
    /// quarters of the block's matmul work).
    ///
    /// The floats are the full block's first rows, values and gradients
    /// alike (signed zeros aside), under two conditions; where either fails
    /// the full block runs and its first rows are kept.
    /// - Everything after the attention is frozen (LoRA on q, k, v only, or
    ///   the head alone): a trained weight there would get its gradient as a
    ///   sum over `B` rows instead of `B·T`, which gemm groups differently.
    /// - gemm computes each row of the `B`-row products with the same
    ///   operations as in the `B·T`-row ones ([`gemm_rows_match`]).
    fn forward_first(
        &self,
        x: &Tensor,
        batch: usize,
        tokens: usize,
        heads: usize,
    ) -> Result<Tensor> {
        let first = |t: &Tensor| first_tokens(t, batch, tokens);
        let after_attention_frozen = [&self.o, &self.fc1, &self.fc2].iter().all(|l| {
            l.adapter().is_none()
                && !l.weight().track_op()
                && l.bias().is_none_or(|b| !b.track_op())
        }) && [&self.norm2.w, &self.norm2.b]
            .into_iter()
            .chain(&self.ls1)
            .chain(&self.ls2)
            .all(|t| !t.track_op());
        let mlp = self.fc1.weight().dim(0)?;
        if !after_attention_frozen || !gemm_rows_match(batch, x.dim(1)?, mlp) {
            return first(&self.forward(x, batch, tokens, heads, false)?);
        }
        #[cfg(test)]
        NARROWED_BLOCKS.with(|c| c.set(c.get() + 1));
        let ctx = self.attention_context(x, batch, tokens, heads)?;
        self.finish_pre_norm(&first(x)?, &first(&ctx)?)
    }

    /// The rest of a pre-norm block after the attention context:
    /// `x + ls₁·o(ctx)`, then `+ ls₂·fc2(GELU(fc1(LN₂(·))))`.
    fn finish_pre_norm(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let mut a = self.o.forward(ctx)?;
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

/// Each input's first token, `(B, D)`, from `x` `(B·T, D)`.
fn first_tokens(x: &Tensor, batch: usize, tokens: usize) -> Result<Tensor> {
    let d = x.dim(1)?;
    Ok(x.reshape((batch, tokens, d))?
        .narrow(1, 0, 1)?
        .reshape((batch, d))?)
}

/// Whether gemm (0.19, candle's CPU matmul) computes every row of the
/// narrowed last block's products (`batch` rows: `x·Woᵀ`, `·Wfc1ᵀ`, `·Wfc2ᵀ`
/// and their input gradients) with the same operations, so the same floats,
/// as in the full block's `batch·T`-row ones. gemm reduces each output
/// element over `k` in the same order whatever the row count, except on its
/// small-matrix paths: dot-product kernels when `m·n ≤ 256`, matrix-vector
/// ones when `m ≤ 1`, and a `k` block of `min(k, 512)` instead of its cache
/// model's when `m` and `n` are both at most 64 (the same when `k ≤ 512`).
/// Checked by `first_token_last_block_equals_the_full_block` on both sides
/// of each threshold it can reach.
fn gemm_rows_match(batch: usize, width: usize, mlp: usize) -> bool {
    let (narrow, wide) = (width.min(mlp), width.max(mlp));
    batch >= 2 && batch * narrow > 256 && (narrow > 64 || wide <= 512)
}

/// The input side of the encoder.
#[derive(Clone, Debug)]
enum Stem {
    /// ViT: linear patch embedding, class token, position embeddings.
    Patch {
        patch: LoraLinear,
        cls: Tensor,
        pos: Tensor,
    },
    /// BERT: word, position and segment-0 embeddings, then a LayerNorm.
    Text {
        word: Tensor,
        pos: Tensor,
        segment: Tensor,
        norm: Norm,
    },
}

/// A client's transformer classifier: a shared frozen [`Backbone`], LoRA
/// adapters (or none, or a trainable copy of the backbone) and a dense
/// classifier head, on the class token of a ViT or the mean token of a BERT
/// text encoder ([`VitConfig::text`]).
///
/// Building a LoRA or head-only model from an `Arc<Backbone>` copies no
/// backbone weight: the layers hold clones of the backbone's reference-counted
/// tensors. Full fine-tuning copies the backbone into trainable variables.
#[derive(Debug)]
pub struct VitModel {
    backbone: Arc<Backbone>,
    mode: FineTuneMode,
    num_classes: usize,
    stem: Stem,
    blocks: Vec<Block>,
    norm: Option<Norm>,
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
    /// [`LoraError::InvalidConfig`] for an invalid mode (a LoRA rank above
    /// an adapted matrix's smaller side included) or `num_classes = 0`.
    pub fn new(
        backbone: Arc<Backbone>,
        mode: FineTuneMode,
        num_classes: usize,
        seed: u64,
    ) -> Result<Self> {
        mode.validate_for(backbone.config())?;
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
        let stem = match &config.text {
            None => Stem::Patch {
                patch: lin(&mut get, "patch_embed")?,
                cls: get("cls_token")?.reshape((1, 1, d))?,
                pos: get("pos_embed")?.reshape((1, config.num_tokens(), d))?,
            },
            Some(_) => Stem::Text {
                word: get("embed.word")?,
                pos: get("embed.pos")?,
                segment: get("embed.type")?.narrow(0, 0, 1)?,
                norm: norm(&mut get, "embed.norm")?,
            },
        };
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
        let final_norm = if config.is_text() {
            None
        } else {
            Some(norm(&mut get, "norm")?)
        };
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
            stem,
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

    /// Logits `(B, K)` for inputs: images `(B, C, H, W)` (`f32`) for a ViT,
    /// token ids `(B, L)` (`u32`) for a text encoder.
    ///
    /// # Errors
    /// [`LoraError::Shape`] if the input shape does not match the configuration.
    pub fn forward(&self, inputs: &Tensor) -> Result<Tensor> {
        let f = self.pooled(inputs)?;
        Ok(f.matmul(&self.head_w.as_tensor().t()?)?
            .broadcast_add(self.head_b.as_tensor())?)
    }

    /// What the head reads, `(B, D)` in `f32`: the class token after the
    /// final LayerNorm (ViT), or the mean of the tokens (text encoder,
    /// sentence-transformers' mean pooling); adapters included.
    ///
    /// # Errors
    /// As [`VitModel::forward`].
    pub fn pooled(&self, inputs: &Tensor) -> Result<Tensor> {
        // The head and the loss are f32 whatever the compute dtype.
        Ok(match &self.norm {
            // Only the class token is read: the last block computes it alone.
            Some(norm) => {
                let (x, _, _, _) = self.encode(inputs, true)?;
                norm.forward(&x)?.to_dtype(DType::F32)?
            }
            None => {
                let (x, b, t, d) = self.encode(inputs, false)?;
                x.reshape((b, t, d))?.to_dtype(DType::F32)?.mean(1)?
            }
        })
    }

    /// Every token at the backbone's output, `(B, T, D)` (Hugging Face's
    /// `last_hidden_state`), adapters included: after the final LayerNorm
    /// with the class token first (ViT), or after the last block (text).
    ///
    /// # Errors
    /// As [`VitModel::forward`].
    pub fn tokens(&self, inputs: &Tensor) -> Result<Tensor> {
        let (x, b, t, d) = self.encode(inputs, false)?;
        let x = match &self.norm {
            Some(norm) => norm.forward(&x)?,
            None => x,
        };
        Ok(x.reshape((b, t, d))?)
    }

    /// The embeddings and the blocks: `(B·T, D)` before any final
    /// LayerNorm, with `B`, `T` and `D`; with `first_only` (pre-norm ViT
    /// only) the first token of each input, `(B, D)`, the last block
    /// computing nothing else ([`Block::forward_first`]).
    fn encode(&self, inputs: &Tensor, first_only: bool) -> Result<(Tensor, usize, usize, usize)> {
        let cfg = self.config();
        let dims = inputs.dims();
        let b = dims.first().copied().unwrap_or(0);
        let d = cfg.width;
        let (x, t) = match &self.stem {
            Stem::Patch { patch, cls, pos } => {
                check_shape(
                    "images (B, C, H, W)",
                    &[b, cfg.in_channels, cfg.image_size, cfg.image_size],
                    dims,
                )?;
                let (p, g, t) = (cfg.patch_size, cfg.grid(), cfg.num_tokens());
                let patches = inputs
                    .to_device(cls.device())?
                    .to_dtype(cls.dtype())?
                    .reshape((b, cfg.in_channels, g, p, g, p))?
                    .permute((0, 2, 4, 1, 3, 5))?
                    .contiguous()?
                    .reshape((b * g * g, cfg.patch_dim()))?;
                let tok = patch.forward(&patches)?.reshape((b, g * g, d))?;
                let cls = cls.broadcast_as((b, 1, d))?;
                let x = Tensor::cat(&[&cls, &tok], 1)?.broadcast_add(pos)?;
                (x.reshape((b * t, d))?, t)
            }
            Stem::Text {
                word,
                pos,
                segment,
                norm,
            } => {
                let max = pos.dims()[0];
                let t = match dims {
                    [_, t] if *t >= 1 && *t <= max && inputs.dtype() == DType::U32 => *t,
                    _ => {
                        return Err(LoraError::InvalidInput {
                            what: "token ids",
                            reason: format!(
                                "expected u32 ids of shape (B, L) with 1 ≤ L ≤ {max}, got {:?} \
                                 {dims:?}",
                                inputs.dtype()
                            ),
                        });
                    }
                };
                let vocab = word.dims()[0];
                let ids = inputs.flatten_all()?.to_device(&Device::Cpu)?;
                if let Some(bad) = ids.to_vec1::<u32>()?.iter().find(|&&i| i as usize >= vocab) {
                    return Err(LoraError::InvalidInput {
                        what: "token ids",
                        reason: format!("id {bad} is not below the vocabulary size {vocab}"),
                    });
                }
                let ids = ids.to_device(word.device())?;
                let x = word
                    .index_select(&ids, 0)?
                    .reshape((b, t, d))?
                    .broadcast_add(&pos.narrow(0, 0, t)?)?
                    .broadcast_add(segment)?;
                (norm.forward(&x.reshape((b * t, d))?)?, t)
            }
        };
        let post_norm = cfg.is_text();
        let first_only = first_only && !post_norm;
        let full = if first_only {
            self.blocks.len().saturating_sub(1)
        } else {
            self.blocks.len()
        };
        let mut x = x;
        for block in &self.blocks[..full] {
            x = block.forward(&x, b, t, cfg.heads, post_norm)?;
        }
        if first_only {
            x = match self.blocks.last() {
                Some(last) => last.forward_first(&x, b, t, cfg.heads)?,
                None => first_tokens(&x, b, t)?,
            };
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

    /// A linear layer by stable name (`patch_embed` (ViT only),
    /// `blocks.N.attn.q`, …, `blocks.N.mlp.fc2`).
    #[must_use]
    pub fn linear(&self, name: &str) -> Option<&LoraLinear> {
        if name == "patch_embed" {
            return match &self.stem {
                Stem::Patch { patch, .. } => Some(patch),
                Stem::Text { .. } => None,
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoraConfig;
    use crate::train::{Batch, objective};

    /// The logits, the objective and every trainable gradient of one batch,
    /// as bits, with the one-node blocks or (`composed`) the composed ones.
    fn step_bits(
        model: &VitModel,
        batch: &Batch<'_>,
        composed: bool,
        zeta: f64,
        kind: RegulariserKind,
    ) -> (Vec<u32>, Vec<Vec<u32>>) {
        COMPOSED_BLOCKS.with(|c| c.set(composed));
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let (x, _) = batch.tensors(model.num_classes(), &model.device()).unwrap();
        let mut values = bits(&model.forward(&x).unwrap());
        let (total, _) = objective(model, batch, zeta, kind).unwrap();
        values.extend(bits(&total));
        let grads = total.backward().unwrap();
        COMPOSED_BLOCKS.with(|c| c.set(false));
        let grads = model
            .trainable_vars()
            .iter()
            .map(|v| {
                bits(
                    grads
                        .get(v.as_tensor())
                        .expect("a trainable variable has a gradient"),
                )
            })
            .collect();
        (values, grads)
    }

    fn tiny(layer_scale: Option<f64>) -> Arc<Backbone> {
        let cfg = VitConfig {
            layer_scale,
            depth: 3,
            ..VitConfig::tiny()
        };
        Arc::new(Backbone::random(&cfg, 11).unwrap())
    }

    /// Random `B` factors (they start at zero, which hides most of the
    /// adapters' gradients).
    fn randomise_b(model: &VitModel, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let factors: Vec<AdapterFactors> = model
            .factors()
            .unwrap()
            .into_iter()
            .map(|mut f| {
                f.b.mapv_inplace(|_| rng.random_range(-0.3f32..0.3));
                f
            })
            .collect();
        model.set_factors(&factors).unwrap();
    }

    fn batch_data(cfg: &VitConfig, n: usize, seed: u64) -> (Vec<f32>, Vec<u32>, [usize; 4]) {
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = [n, cfg.in_channels, cfg.image_size, cfg.image_size];
        let images = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let labels = (0..n).map(|_| rng.random_range(0..5u32)).collect();
        (images, labels, shape)
    }

    #[test]
    fn block_node_equals_composed_to_the_bit() {
        use LoraTarget::*;
        // Targets, LayerScale, random `B`, ζ, regulariser.
        type Case = (
            &'static [LoraTarget],
            Option<f64>,
            bool,
            f64,
            RegulariserKind,
        );
        let cases: [Case; 7] = [
            (&[Q, V], None, true, 0.0, RegulariserKind::Plain),
            (&[Q, V], Some(0.7), true, 0.3, RegulariserKind::Plain),
            (&[Q, V], None, false, 0.2, RegulariserKind::ScaleInvariant),
            (
                &LoraTarget::ALL,
                Some(1.3),
                true,
                0.5,
                RegulariserKind::Plain,
            ),
            (&[K, Fc2], None, true, 0.1, RegulariserKind::ScaleInvariant),
            (&[Fc2], Some(0.5), true, 0.0, RegulariserKind::Plain),
            (&[O, Fc1], None, true, 0.0, RegulariserKind::Plain),
        ];
        for (i, (targets, ls, random_b, zeta, kind)) in cases.into_iter().enumerate() {
            let backbone = tiny(ls);
            let lora = LoraConfig {
                rank: 4,
                // α/r = 1.7: not a power of two, so a scale moved to another
                // operand changes the floats.
                alpha: 6.8,
                targets: targets.to_vec(),
            };
            let model = VitModel::new(backbone.clone(), FineTuneMode::Lora(lora), 5, 3).unwrap();
            if random_b {
                randomise_b(&model, 17 + i as u64);
            }
            let (images, labels, shape) = batch_data(backbone.config(), 6, 5 + i as u64);
            let batch = Batch::new(&images, &labels, shape).unwrap();
            let fused = step_bits(&model, &batch, false, zeta, kind);
            let composed = step_bits(&model, &batch, true, zeta, kind);
            assert_eq!(fused.0, composed.0, "case {i}: logits or objective differ");
            assert_eq!(fused.1.len(), composed.1.len());
            for (j, (f, c)) in fused.1.iter().zip(&composed.1).enumerate() {
                let differ = f.iter().zip(c).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ, 0,
                    "case {i}: gradient {j} differs in {differ} values"
                );
            }
            assert!(
                fused.1.iter().flatten().any(|&b| f32::from_bits(b) != 0.0),
                "case {i}: every gradient is zero"
            );
            // The node really runs: every block of this model takes it.
            let x = Tensor::randn(0f32, 1.0, (2 * 17, 64), &Device::Cpu).unwrap();
            let parts = model.blocks[1].parts();
            assert!(
                crate::fused_block::forward(&x, &parts, (2, 17, 4))
                    .unwrap()
                    .is_some()
            );
        }
    }

    /// The class-token-only last block against the full one: logits from
    /// [`VitModel::forward`] against the head applied to the first row of
    /// [`VitModel::tokens`] (every block in full), and the gradients of every
    /// trainable tensor under a fixed linear functional of the logits, equal
    /// as floats (`==`: signed zeros aside). At width 64 batches up to 4
    /// (gemm's dot-product path: 4·64 ≤ 256) and targets after the attention
    /// take the full block; the others the narrowed one.
    #[test]
    fn first_token_last_block_equals_the_full_block() {
        use LoraTarget::*;
        let lora = |targets: &[LoraTarget]| {
            FineTuneMode::Lora(LoraConfig {
                rank: 4,
                alpha: 6.8,
                targets: targets.to_vec(),
            })
        };
        // (LayerScale, mode, batch, whether the narrowed block applies)
        let cases = [
            (None, lora(&[Q, V]), 6, true),
            (Some(0.7), lora(&[Q, V]), 6, true),
            (None, lora(&[Q, V]), 5, true),
            (None, lora(&[Q, V]), 8, true),
            (None, lora(&[Q, V]), 9, true),
            (Some(0.7), lora(&[Q, K, V]), 16, true),
            (None, lora(&[Q, V]), 4, false),
            (None, lora(&[Q, V]), 3, false),
            (None, FineTuneMode::HeadOnly, 5, true),
            (Some(0.7), lora(&LoraTarget::ALL), 6, false),
            (None, lora(&[V, Fc2]), 6, false),
            (Some(1.1), FineTuneMode::Full, 6, false),
        ];
        for (i, (ls, mode, n, narrowed)) in cases.into_iter().enumerate() {
            check_first_token(&tiny(ls), &mode, n, narrowed, i);
        }
        // ViT-S/14 widths (384, MLP 1536): from batch 2 up.
        let cfg = VitConfig {
            width: 384,
            mlp_dim: 1536,
            heads: 6,
            depth: 2,
            layer_scale: Some(0.3),
            ..VitConfig::tiny()
        };
        let wide = Arc::new(Backbone::random(&cfg, 5).unwrap());
        for (i, n) in [1, 2, 16].into_iter().enumerate() {
            check_first_token(&wide, &lora(&[Q, V]), n, n >= 2, 100 + i);
        }
    }

    /// One case of [`first_token_last_block_equals_the_full_block`].
    fn check_first_token(
        backbone: &Arc<Backbone>,
        mode: &FineTuneMode,
        n: usize,
        narrowed: bool,
        i: usize,
    ) {
        let model = VitModel::new(backbone.clone(), mode.clone(), 5, 3).unwrap();
        if matches!(mode, FineTuneMode::Lora(_)) {
            randomise_b(&model, 40 + i as u64);
        }
        let (images, labels, shape) = batch_data(backbone.config(), n, 9 + i as u64);
        let batch = Batch::new(&images, &labels, shape).unwrap();
        let (x, _) = batch.tensors(model.num_classes(), &model.device()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (n, 5), &Device::Cpu).unwrap();
        let full = |x: &Tensor| -> Tensor {
            let t = model.tokens(x).unwrap();
            let (b, _, d) = t.dims3().unwrap();
            let cls = t.narrow(1, 0, 1).unwrap().reshape((b, d)).unwrap();
            cls.matmul(&model.head_w.as_tensor().t().unwrap())
                .unwrap()
                .broadcast_add(model.head_b.as_tensor())
                .unwrap()
        };
        let run = |logits: Tensor| -> (Vec<f32>, Vec<Vec<f32>>) {
            let grads = (&logits * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let g = model
                .trainable_vars()
                .iter()
                .map(|v| flat(grads.get(v.as_tensor()).expect("a gradient")))
                .collect();
            (flat(&logits), g)
        };
        let (got, got_g) = run(model.forward(&x).unwrap());
        let (want, want_g) = run(full(&x));
        assert_eq!(got, want, "case {i}: logits");
        assert_eq!(got_g, want_g, "case {i}: gradients");
        assert!(
            got_g.iter().flatten().any(|&v| v != 0.0),
            "case {i}: every gradient is zero"
        );
        NARROWED_BLOCKS.with(|c| c.set(0));
        model.forward(&x).unwrap();
        assert_eq!(
            NARROWED_BLOCKS.with(std::cell::Cell::get),
            usize::from(narrowed),
            "case {i}: path"
        );
    }

    #[test]
    fn block_node_serves_head_only_and_leaves_full_fine_tuning_composed() {
        let backbone = tiny(Some(0.9));
        let (images, labels, shape) = batch_data(backbone.config(), 4, 2);
        let batch = Batch::new(&images, &labels, shape).unwrap();
        for mode in [FineTuneMode::HeadOnly, FineTuneMode::Full] {
            let model = VitModel::new(backbone.clone(), mode.clone(), 5, 3).unwrap();
            let fused = step_bits(&model, &batch, false, 0.0, RegulariserKind::Plain);
            let composed = step_bits(&model, &batch, true, 0.0, RegulariserKind::Plain);
            assert_eq!(fused, composed, "{mode:?}");
        }
        // Full fine-tuning trains the backbone's tensors: no node.
        let model = VitModel::new(backbone, FineTuneMode::Full, 5, 3).unwrap();
        let x = Tensor::randn(0f32, 1.0, (17, 64), &Device::Cpu).unwrap();
        let parts = model.blocks[0].parts();
        assert!(
            crate::fused_block::forward(&x, &parts, (1, 17, 4))
                .unwrap()
                .is_none()
        );
    }
}
