//! Model configuration: encoder shapes (ViT, or BERT with a [`TextStem`]),
//! presets, LoRA settings, FLOP and parameter counts.

use serde::{Deserialize, Serialize};

use crate::error::{LoraError, Result};

/// Shapes of the transformer encoder backbone (no head: the classifier is the
/// client's, sized at model construction).
///
/// By default the encoder is a vision transformer (patch embedding, class
/// token, pre-norm blocks, final LayerNorm, head on the class token). With
/// [`VitConfig::text`] set it is a BERT text encoder instead: token,
/// position and segment embeddings with a LayerNorm, post-norm blocks
/// (`x = LN(x + attn(x))`, `x = LN(x + mlp(x))`), no final LayerNorm, and the
/// head on the mean of the tokens (sentence-transformers' mean pooling). The
/// block weights, their names (`blocks.N.attn.q`, …) and the LoRA targets are
/// the same in both, so everything that exchanges adapters works unchanged;
/// the image fields are then unused and must be 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Side of the square input image in pixels.
    pub image_size: usize,
    /// Input channels (1 for grey images, 3 for RGB).
    pub in_channels: usize,
    /// Side of the square patches (the patch embedding is a linear map over
    /// each flattened `in_channels × patch_size × patch_size` patch).
    pub patch_size: usize,
    /// Token width `D`.
    pub width: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads (`width` must be divisible by it).
    pub heads: usize,
    /// Hidden width of the GELU MLP.
    pub mlp_dim: usize,
    /// LayerScale (DINOv2): `Some(init)` multiplies each residual branch by a
    /// learned per-channel vector initialised to `init`; `None` disables it.
    pub layer_scale: Option<f64>,
    /// LayerNorm epsilon (1e-12 for ViT-Base and BERT, 1e-6 for DINOv2).
    pub ln_eps: f64,
    /// `Some` for a BERT text encoder (see the type's documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextStem>,
}

/// The input side of a BERT text encoder: inputs are token ids, every
/// sequence `seq_len` long (no padding: the attention has no mask), segment
/// (token type) 0 throughout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextStem {
    /// Vocabulary size (rows of the word embedding).
    pub vocab_size: usize,
    /// Rows of the learned position embedding (the longest sequence).
    pub max_positions: usize,
    /// Rows of the segment embedding (2 for BERT).
    pub type_vocab_size: usize,
    /// Tokens per input sequence (used for FLOP counts and input checks).
    pub seq_len: usize,
}

/// Names of the built-in presets, for [`VitConfig::preset`].
pub const PRESET_NAMES: [&str; 4] = ["tiny", "vit-s14", "vit-b16", "minilm-l6"];

impl TextStem {
    /// Checks every field: all positive, `seq_len ≤ max_positions`.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("text.vocab_size", self.vocab_size),
            ("text.max_positions", self.max_positions),
            ("text.type_vocab_size", self.type_vocab_size),
            ("text.seq_len", self.seq_len),
        ] {
            if v == 0 {
                return Err(LoraError::InvalidConfig {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.seq_len > self.max_positions {
            return Err(LoraError::InvalidConfig {
                field: "text.seq_len",
                reason: format!(
                    "{} tokens exceed the {} learned positions",
                    self.seq_len, self.max_positions
                ),
            });
        }
        Ok(())
    }
}

impl VitConfig {
    /// The embedded default backbone: 28×28 grey input, patch 7 (16 patches +
    /// the class token = 17 tokens), width 64, depth 4, 4 heads, MLP 128, no
    /// LayerScale (138,368 backbone parameters). Chosen so that one local step
    /// (batch 32, LoRA r = 16 on q and v, AdamW) costs about 15 ms of CPU
    /// time in release, about 2,000 images per CPU-second, so two clients
    /// trained in parallel on 2 cores exceed 3,000 images/s (see the crate's
    /// bench), while keeping 4 blocks for the adapters to act on.
    #[must_use]
    pub fn tiny() -> Self {
        Self {
            image_size: 28,
            in_channels: 1,
            patch_size: 7,
            width: 64,
            depth: 4,
            heads: 4,
            mlp_dim: 128,
            layer_scale: None,
            ln_eps: 1e-6,
            text: None,
        }
    }

    /// DINOv2-small shapes (ViT-S/14): 12 layers, width 384, 6 heads, MLP
    /// 1536, patch 14, LayerScale (init 1.0), 3 channels, 224×224 input.
    #[must_use]
    pub fn vit_s14() -> Self {
        Self {
            image_size: 224,
            in_channels: 3,
            patch_size: 14,
            width: 384,
            depth: 12,
            heads: 6,
            mlp_dim: 1536,
            layer_scale: Some(1.0),
            ln_eps: 1e-6,
            text: None,
        }
    }

    /// ViT-Base/16 shapes: 12 layers, width 768, 12 heads, MLP 3072, patch 16,
    /// no LayerScale, 3 channels, 224×224 input, LayerNorm eps 1e-12.
    #[must_use]
    pub fn vit_b16() -> Self {
        Self {
            image_size: 224,
            in_channels: 3,
            patch_size: 16,
            width: 768,
            depth: 12,
            heads: 12,
            mlp_dim: 3072,
            layer_scale: None,
            ln_eps: 1e-12,
            text: None,
        }
    }

    /// all-MiniLM-L6-v2 shapes (a 6-layer BERT): width 384, 12 heads, MLP
    /// 1536, vocabulary 30,522, 512 positions, 2 segments, LayerNorm eps
    /// 1e-12, sequences of `seq_len` tokens.
    #[must_use]
    pub fn minilm_l6(seq_len: usize) -> Self {
        Self::bert(
            TextStem {
                vocab_size: 30_522,
                max_positions: 512,
                type_vocab_size: 2,
                seq_len,
            },
            384,
            6,
            12,
            1536,
        )
    }

    /// A BERT text encoder of the given shapes (LayerNorm eps 1e-12; the
    /// image fields set to 1).
    #[must_use]
    pub fn bert(stem: TextStem, width: usize, depth: usize, heads: usize, mlp_dim: usize) -> Self {
        Self {
            image_size: 1,
            in_channels: 1,
            patch_size: 1,
            width,
            depth,
            heads,
            mlp_dim,
            layer_scale: None,
            ln_eps: 1e-12,
            text: Some(stem),
        }
    }

    /// Whether this is a BERT text encoder.
    #[must_use]
    pub fn is_text(&self) -> bool {
        self.text.is_some()
    }

    /// A preset by name (`tiny`, `vit-s14`, `vit-b16`, `minilm-l6` at 128
    /// tokens).
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] for an unknown name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "vit-s14" => Ok(Self::vit_s14()),
            "vit-b16" => Ok(Self::vit_b16()),
            "minilm-l6" => Ok(Self::minilm_l6(128)),
            other => Err(LoraError::InvalidConfig {
                field: "preset",
                reason: format!("unknown preset `{other}`, expected one of {PRESET_NAMES:?}"),
            }),
        }
    }

    /// The same configuration at another input resolution (position
    /// embeddings are interpolated when weights are loaded).
    #[must_use]
    pub fn with_image_size(mut self, image_size: usize) -> Self {
        self.image_size = image_size;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("image_size", self.image_size),
            ("in_channels", self.in_channels),
            ("patch_size", self.patch_size),
            ("width", self.width),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp_dim", self.mlp_dim),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(LoraError::InvalidConfig {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(LoraError::InvalidConfig {
                field: "image_size",
                reason: format!(
                    "{} is not divisible by patch_size {}",
                    self.image_size, self.patch_size
                ),
            });
        }
        if self.text.is_none() {
            let grid = self.image_size / self.patch_size;
            if grid
                .checked_mul(grid)
                .and_then(|n| n.checked_add(1))
                .is_none()
            {
                return Err(LoraError::InvalidConfig {
                    field: "image_size",
                    reason: format!(
                        "{} with patch_size {} gives {grid}² patches, more than can be counted",
                        self.image_size, self.patch_size
                    ),
                });
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(LoraError::InvalidConfig {
                field: "width",
                reason: format!("{} is not divisible by heads {}", self.width, self.heads),
            });
        }
        if let Some(init) = self.layer_scale
            && !init.is_finite()
        {
            return Err(LoraError::InvalidConfig {
                field: "layer_scale",
                reason: format!("initial value {init} is not finite"),
            });
        }
        if !(self.ln_eps.is_finite() && self.ln_eps > 0.0) {
            return Err(LoraError::InvalidConfig {
                field: "ln_eps",
                reason: format!("{} must be finite and > 0", self.ln_eps),
            });
        }
        if let Some(stem) = &self.text {
            stem.validate()?;
            let image = [self.image_size, self.in_channels, self.patch_size];
            if image != [1, 1, 1] || self.layer_scale.is_some() {
                return Err(LoraError::InvalidConfig {
                    field: "text",
                    reason: format!(
                        "a text encoder has no image fields or LayerScale: got image_size, \
                         in_channels, patch_size = {image:?}, layer_scale {:?} (expected 1, 1, 1, \
                         none)",
                        self.layer_scale
                    ),
                });
            }
        }
        Ok(())
    }

    /// Patches per side.
    #[must_use]
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patches `N = grid²`.
    #[must_use]
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Tokens per input: `T = N + 1` (patches and the class token) for a
    /// ViT, `seq_len` for a text encoder.
    #[must_use]
    pub fn num_tokens(&self) -> usize {
        match &self.text {
            Some(stem) => stem.seq_len,
            None => self.num_patches() + 1,
        }
    }

    /// Length of one flattened patch, `C·p²`.
    #[must_use]
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.patch_size * self.patch_size
    }

    /// Pixels per image, `C·H·W`.
    #[must_use]
    pub fn pixels(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }

    /// `(out_features, in_features)` of a LoRA target matrix.
    #[must_use]
    pub fn target_shape(&self, target: LoraTarget) -> (usize, usize) {
        match target {
            LoraTarget::Q | LoraTarget::K | LoraTarget::V | LoraTarget::O => {
                (self.width, self.width)
            }
            LoraTarget::Fc1 => (self.mlp_dim, self.width),
            LoraTarget::Fc2 => (self.width, self.mlp_dim),
        }
    }

    /// Number of backbone parameters (everything but the head).
    #[must_use]
    pub fn backbone_params(&self) -> usize {
        let d = self.width;
        let m = self.mlp_dim;
        let (embed, final_norm) = match &self.text {
            Some(s) => (
                (s.vocab_size + s.max_positions + s.type_vocab_size) * d + 2 * d,
                0,
            ),
            None => (d * self.patch_dim() + d + d + self.num_tokens() * d, 2 * d),
        };
        let ls = if self.layer_scale.is_some() { 2 * d } else { 0 };
        let block = 2 * d + 4 * (d * d + d) + 2 * d + (m * d + m) + (d * m + d) + ls;
        embed + self.depth * block + final_norm
    }

    /// Trainable parameters of a client model in `mode` with a
    /// `num_classes`-way head: the head (`K·D + K`) plus `r·(in + out)` per
    /// adapted matrix (LoRA), nothing else (head-only), or every backbone
    /// parameter (full fine-tuning).
    #[must_use]
    pub fn trainable_params(&self, mode: &FineTuneMode, num_classes: usize) -> usize {
        let head = num_classes * self.width + num_classes;
        match mode {
            FineTuneMode::HeadOnly => head,
            FineTuneMode::Full => head + self.backbone_params(),
            FineTuneMode::Lora(lora) => {
                let per_block: usize = lora
                    .targets
                    .iter()
                    .map(|&t| {
                        let (o, i) = self.target_shape(t);
                        lora.rank * (o + i)
                    })
                    .sum();
                head + self.depth * per_block
            }
        }
    }

    /// Estimated floating-point operations of one training step per sample
    /// (forward + backward), counting matrix products only (2 FLOPs per
    /// multiply-add; norms, softmax, GELU and the optimizer are ignored).
    ///
    /// With `T` tokens, `N` patches, width `D`, MLP width `M`, patch length
    /// `P = C·p²`, `K` classes and rank `r`, the forward pass costs
    /// * patch embedding `2·N·P·D`,
    /// * per block: q, k, v, o `4·2·T·D²`, MLP `2·2·T·D·M`, attention scores
    ///   and weighted sum `2·2·T²·D`, LoRA `2·T·r·(in + out)` per target,
    /// * head `2·D·K` (class token only).
    ///
    /// A text encoder has no patch embedding (its embeddings are look-ups,
    /// counted as 0).
    ///
    /// The backward pass costs, relative to each product's forward cost: 2×
    /// for trainable weights (gradient of the input and of the weight), 1× for
    /// frozen weights that gradients flow through (input gradient only), 2×
    /// for the attention products (both operands are activations), and 0×
    /// where nothing upstream trains (the frozen patch embedding; the whole
    /// backbone in head-only mode). In full fine-tuning the patch embedding
    /// costs 1× (weight gradient only).
    #[must_use]
    pub fn flops_per_sample(&self, mode: &FineTuneMode, num_classes: usize) -> f64 {
        let t = self.num_tokens() as f64;
        let n = self.num_patches() as f64;
        let d = self.width as f64;
        let m = self.mlp_dim as f64;
        let p = self.patch_dim() as f64;
        let k = num_classes as f64;
        let depth = self.depth as f64;
        let patch = if self.is_text() { 0.0 } else { 2.0 * n * p * d };
        let linears = 4.0 * 2.0 * t * d * d + 2.0 * 2.0 * t * d * m;
        let attention = 2.0 * 2.0 * t * t * d;
        let head = 2.0 * d * k;
        let fwd_backbone = patch + depth * (linears + attention);
        match mode {
            FineTuneMode::HeadOnly => fwd_backbone + 3.0 * head,
            FineTuneMode::Full => {
                // fwd 1× + bwd 2× everywhere except the patch embedding (bwd 1×).
                2.0 * patch + depth * 3.0 * (linears + attention) + 3.0 * head
            }
            FineTuneMode::Lora(lora) => {
                let lora_fwd: f64 = lora
                    .targets
                    .iter()
                    .map(|&tg| {
                        let (o, i) = self.target_shape(tg);
                        2.0 * t * lora.rank as f64 * (o + i) as f64
                    })
                    .sum();
                let blocks = depth * (2.0 * linears + 3.0 * attention + 3.0 * lora_fwd);
                patch + blocks + 3.0 * head
            }
        }
    }
}

/// The product of sizes, saturating at `u64::MAX` (an estimate of an absurd
/// size must not overflow).
fn product(sizes: &[usize]) -> u64 {
    sizes
        .iter()
        .fold(1_u64, |acc, &s| acc.saturating_mul(s as u64))
}

/// The sum of sizes, saturating at `u64::MAX`.
fn total(sizes: &[u64]) -> u64 {
    sizes.iter().fold(0_u64, |acc, &s| acc.saturating_add(s))
}

/// What a model of a given shape holds in memory, in `f32` values, from its
/// configuration alone ([`VitConfig::footprint`]): for checks made before
/// anything is allocated. Every count saturates at `u64::MAX` instead of
/// overflowing, so an absurd shape gives a huge count, never a panic.
///
/// The counts are lower estimates: what the model certainly needs, not all
/// that candle allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFootprint {
    /// The backbone's weights (shared by every client model).
    pub backbone: u64,
    /// The trainable parameters of one client model: the head, plus the
    /// adapters (LoRA) or every backbone weight (full fine-tuning).
    pub trainable: u64,
    /// The error-feedback residual of one client: `r·(out + in)` per
    /// adapted matrix (the factors `B`, `A`; 0 outside LoRA).
    pub factor_residual: u64,
    /// A dense residual of one client, `out·in` per adapted matrix (SLoRA's
    /// dense sum; 0 outside LoRA).
    pub dense_residual: u64,
    /// What one training step keeps per input for the backward pass: per
    /// block the LayerNorm output, `q`, `k`, `v`, the attention output and
    /// probabilities (`heads·T²`) and the MLP's hidden layer; in head-only
    /// mode one block's worth (the forward pass frees each block's
    /// activations before the next).
    pub activations_per_input: u64,
    /// One input at the model's resolution: `C·H·W` pixels, or `L` token ids.
    pub input: u64,
}

impl VitConfig {
    /// The memory of a model of this shape in `mode` with a
    /// `num_classes`-way head, with saturating arithmetic (see
    /// [`ModelFootprint`]). Meaningful for any shape, validated or not.
    #[must_use]
    pub fn footprint(&self, mode: &FineTuneMode, num_classes: usize) -> ModelFootprint {
        let d = self.width;
        let m = self.mlp_dim;
        let (tokens, input, embed) = match &self.text {
            Some(s) => (
                s.seq_len as u64,
                s.seq_len as u64,
                product(&[s.vocab_size + s.max_positions + s.type_vocab_size, d]),
            ),
            None => {
                let grid = self.image_size / self.patch_size.max(1);
                let tokens = product(&[grid, grid]).saturating_add(1);
                let patch = product(&[self.in_channels, self.patch_size, self.patch_size, d]);
                (
                    tokens,
                    product(&[self.in_channels, self.image_size, self.image_size]),
                    total(&[patch, tokens.saturating_mul(d as u64)]),
                )
            }
        };
        let block = total(&[product(&[4, d, d]), product(&[2, d, m])]);
        let backbone = total(&[embed, product(&[self.depth]).saturating_mul(block)]);
        let head = total(&[product(&[num_classes, d]), num_classes as u64]);
        let adapted = |per: &dyn Fn(usize, usize) -> u64| -> u64 {
            match mode {
                FineTuneMode::Lora(lora) => {
                    let per_block = total(
                        &lora
                            .targets
                            .iter()
                            .map(|&t| {
                                let (o, i) = self.target_shape(t);
                                per(o, i)
                            })
                            .collect::<Vec<_>>(),
                    );
                    per_block.saturating_mul(self.depth as u64)
                }
                FineTuneMode::HeadOnly | FineTuneMode::Full => 0,
            }
        };
        let rank = mode.lora().map_or(0, |l| l.rank);
        let factor_residual = adapted(&|o, i| product(&[rank, o + i]));
        let dense_residual = adapted(&|o, i| product(&[o, i]));
        let trainable = match mode {
            FineTuneMode::HeadOnly => head,
            FineTuneMode::Full => total(&[head, backbone]),
            FineTuneMode::Lora(_) => total(&[head, factor_residual]),
        };
        let per_block = total(&[
            tokens.saturating_mul(product(&[5, d])),
            tokens.saturating_mul(m as u64),
            tokens
                .saturating_mul(tokens)
                .saturating_mul(self.heads as u64),
        ]);
        let blocks = match mode {
            FineTuneMode::HeadOnly => 1,
            FineTuneMode::Lora(_) | FineTuneMode::Full => self.depth as u64,
        };
        ModelFootprint {
            backbone,
            trainable,
            factor_residual,
            dense_residual,
            activations_per_input: total(&[input, per_block.saturating_mul(blocks)]),
            input,
        }
    }
}

/// A weight matrix of a transformer block that can carry a LoRA adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// Attention query projection (`blocks.N.attn.q`).
    Q,
    /// Attention key projection (`blocks.N.attn.k`).
    K,
    /// Attention value projection (`blocks.N.attn.v`).
    V,
    /// Attention output projection (`blocks.N.attn.o`).
    O,
    /// First MLP layer (`blocks.N.mlp.fc1`).
    Fc1,
    /// Second MLP layer (`blocks.N.mlp.fc2`).
    Fc2,
}

impl LoraTarget {
    /// All targets in the canonical order used for naming and exchange.
    pub const ALL: [Self; 6] = [Self::Q, Self::K, Self::V, Self::O, Self::Fc1, Self::Fc2];

    /// Path of the matrix inside a block (`attn.q`, …, `mlp.fc2`).
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Self::Q => "attn.q",
            Self::K => "attn.k",
            Self::V => "attn.v",
            Self::O => "attn.o",
            Self::Fc1 => "mlp.fc1",
            Self::Fc2 => "mlp.fc2",
        }
    }

    /// Stable name of the adapted matrix in block `block`, e.g. `blocks.3.attn.q`.
    #[must_use]
    pub fn name(self, block: usize) -> String {
        format!("blocks.{block}.{}", self.path())
    }
}

/// LoRA settings: rank, scaling and which matrices are adapted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r ≥ 1`.
    pub rank: usize,
    /// Scaling numerator: the adapter is `(alpha / rank)·B·A`.
    pub alpha: f64,
    /// Adapted matrices in every block (default: q and v).
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    /// Rank 8, `alpha = 16`, targets q and v.
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: vec![LoraTarget::Q, LoraTarget::V],
        }
    }
}

impl LoraConfig {
    /// A configuration with the given rank, `alpha = 2·rank` and targets q, v.
    #[must_use]
    pub fn with_rank(rank: usize) -> Self {
        Self {
            rank,
            alpha: 2.0 * rank as f64,
            targets: vec![LoraTarget::Q, LoraTarget::V],
        }
    }

    /// The scale `alpha / rank` applied to `B·A`.
    #[must_use]
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks rank, alpha and targets.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming `lora.rank`, `lora.alpha` or
    /// `lora.targets`.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(LoraError::InvalidConfig {
                field: "lora.rank",
                reason: "must be at least 1 (use FineTuneMode::HeadOnly for no adapters)".into(),
            });
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(LoraError::InvalidConfig {
                field: "lora.alpha",
                reason: format!("{} must be finite and > 0", self.alpha),
            });
        }
        if self.targets.is_empty() {
            return Err(LoraError::InvalidConfig {
                field: "lora.targets",
                reason: "at least one target is needed".into(),
            });
        }
        let mut sorted = self.targets.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.targets.len() {
            return Err(LoraError::InvalidConfig {
                field: "lora.targets",
                reason: format!("duplicate target in {:?}", self.targets),
            });
        }
        Ok(())
    }
}

impl LoraConfig {
    /// [`LoraConfig::validate`], and the rank against the matrices it
    /// adapts in `vit`: a rank-`r` adapter `B·A` of an `out × in` matrix
    /// needs `r ≤ min(out, in)` (a larger rank adds parameters, not rank).
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming `lora.rank` with the smallest
    /// adapted matrix, or as [`LoraConfig::validate`].
    pub fn validate_for(&self, vit: &VitConfig) -> Result<()> {
        self.validate()?;
        let smallest = self
            .targets
            .iter()
            .map(|&t| (t, vit.target_shape(t)))
            .min_by_key(|(_, (o, i))| (*o).min(*i));
        if let Some((t, (o, i))) = smallest
            && self.rank > o.min(i)
        {
            return Err(LoraError::InvalidConfig {
                field: "lora.rank",
                reason: format!(
                    "{} exceeds {}, the smaller side of the adapted matrix `{}` ({o}×{i}, out×in); \
                     the rank must lie in 1..={}",
                    self.rank,
                    o.min(i),
                    t.path(),
                    o.min(i)
                ),
            });
        }
        Ok(())
    }
}

/// What a client model trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FineTuneMode {
    /// LoRA adapters on the configured targets plus the head; the backbone is frozen.
    Lora(LoraConfig),
    /// Only the head trains (the frozen-backbone baseline).
    HeadOnly,
    /// Every backbone weight and the head train (full fine-tuning).
    Full,
}

impl FineTuneMode {
    /// The LoRA configuration, if this is LoRA mode.
    #[must_use]
    pub fn lora(&self) -> Option<&LoraConfig> {
        match self {
            Self::Lora(l) => Some(l),
            _ => None,
        }
    }

    /// Validates the LoRA configuration in LoRA mode.
    ///
    /// # Errors
    /// See [`LoraConfig::validate`].
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Lora(l) => l.validate(),
            _ => Ok(()),
        }
    }

    /// Validates the LoRA configuration against the backbone `vit` (see
    /// [`LoraConfig::validate_for`]).
    ///
    /// # Errors
    /// See [`LoraConfig::validate_for`].
    pub fn validate_for(&self, vit: &VitConfig) -> Result<()> {
        match self {
            Self::Lora(l) => l.validate_for(vit),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora(rank: usize, targets: Vec<LoraTarget>) -> LoraConfig {
        LoraConfig {
            rank,
            alpha: 16.0,
            targets,
        }
    }

    #[test]
    fn rank_at_most_the_smaller_side_of_every_adapted_matrix() {
        let tiny = VitConfig::tiny(); // width 64, MLP 128
        lora(64, vec![LoraTarget::Q, LoraTarget::V])
            .validate_for(&tiny)
            .expect("rank 64 on width 64");
        for (rank, targets) in [
            (100, vec![LoraTarget::Q, LoraTarget::V]),
            (100_000, vec![LoraTarget::Q]),
            // fc1 is 128×64: its smaller side is 64 too
            (65, vec![LoraTarget::Fc1]),
        ] {
            match FineTuneMode::Lora(lora(rank, targets)).validate_for(&tiny) {
                Err(LoraError::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "lora.rank");
                    assert!(
                        reason.contains(&rank.to_string()) && reason.contains("1..=64"),
                        "{reason}"
                    );
                }
                other => panic!("rank {rank}: {other:?}"),
            }
        }
        // the check without a backbone stays as it was
        lora(100, vec![LoraTarget::Q]).validate().expect("no shape");
        FineTuneMode::HeadOnly
            .validate_for(&tiny)
            .expect("head only");
    }

    #[test]
    fn a_token_count_beyond_usize_is_an_error_not_an_overflow() {
        let huge = VitConfig::tiny().with_image_size(7 << 40);
        match huge.validate() {
            Err(LoraError::InvalidConfig { field, .. }) => assert_eq!(field, "image_size"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn footprints_are_exact_for_small_shapes_and_saturate_for_absurd_ones() {
        let tiny = VitConfig::tiny();
        let mode = FineTuneMode::Lora(LoraConfig::default());
        let f = tiny.footprint(&mode, 5);
        // the backbone count leaves out biases and norms: a lower estimate
        assert!(f.backbone <= tiny.backbone_params() as u64);
        assert!(f.backbone * 10 >= tiny.backbone_params() as u64 * 9);
        assert_eq!(f.trainable, tiny.trainable_params(&mode, 5) as u64);
        assert_eq!(f.factor_residual, 4 * 2 * 8 * (64 + 64));
        assert_eq!(f.dense_residual, 4 * 2 * 64 * 64);
        assert_eq!(f.input, 28 * 28);
        assert!(f.activations_per_input > 4 * 17 * 64);
        let absurd = VitConfig::vit_b16().with_image_size(1 << 32);
        let f = absurd.footprint(&mode, 100);
        assert_eq!(f.activations_per_input, u64::MAX);
        assert_eq!(f.input, u64::MAX);
        assert_eq!(f.backbone, u64::MAX);
    }
}
