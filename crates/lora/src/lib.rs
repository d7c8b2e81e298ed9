//! LoRA transformers (vision, and BERT for text) on candle for the wflora
//! simulations.
//!
//! This crate is the only part of the workspace that touches tensors and
//! autograd. It provides a small, self-contained ViT (patch embedding, class
//! token, learned position embeddings, pre-norm blocks with multi-head
//! self-attention and a GELU MLP, optional LayerScale, final LayerNorm, a
//! linear head on the class token) whose q/k/v/o and MLP weights can carry
//! LoRA adapters `W0 + (α/r)·B·A` ([`LoraLinear`], applied unmerged; `W0` is
//! never scaled). The same model reads text when its configuration has a
//! [`TextStem`]: token, position and segment embeddings, post-norm blocks
//! and a head on the mean token — BERT, loaded from Hugging Face checkpoints
//! such as all-MiniLM-L6-v2 by [`load_hf_bert`] and checked against a
//! NumPy implementation (`tests/reference/bert_reference.py`); its inputs
//! are `u32` token ids ([`Batch::tokens`]). Around it: the orthogonality regulariser of docs/method.md §1
//! ([`orthogonality_penalty`], plain and scale-invariant), a client's local
//! trainer ([`LocalTrainer`]: `E` steps of AdamW or SGD on caller-supplied
//! mini-batches, cross-entropy + `ζ`·regulariser) and evaluation
//! ([`evaluate`]), pre-training of the default backbone with a content-keyed
//! safetensors cache ([`cached_pretrain`]), loading of Hugging Face ViT
//! and DINOv2 checkpoints ([`load_hf_backbone`]), and, with the feature
//! `onnx`, a DINOv2 backbone read out of an ONNX export and checked against
//! the graph evaluated by candle-onnx (`onnx` module).
//!
//! The exchange with the rest of the workspace is plain data: LoRA factors
//! and the head go in and out as `ndarray` matrices under stable names such as
//! `blocks.3.attn.q` ([`VitModel::factors`], [`VitModel::set_factors`]), and
//! images come in as `&[f32]` NCHW slices, token ids as `&[u32]` ([`Batch`]). One frozen
//! [`Backbone`] behind an `Arc` serves any number of client models without
//! copying its weights.
//!
//! What the crate deliberately knows nothing about: federated rounds,
//! aggregation, sparsification, channels, latency and data sets. It does not
//! decide which client trains when or what is sent; it only trains what it is
//! given and reports FLOP counts ([`VitConfig::flops_per_sample`]) for the
//! latency model to use.
//!
//! Performance notes (CPU, candle 0.11): the frozen linear maps, LayerNorm,
//! the attention softmax and GELU run as fused kernels with hand-written
//! backward passes (candle's matmul backward would otherwise also compute
//! the unused gradient of every frozen weight), and the whole attention, and
//! on a frozen backbone the whole pre-norm block, are one autograd node each
//! whose backward repeats the composed version's floats (candle gives every
//! node a zero-filled gradient buffer and a pass of additions). candle's
//! element-wise thread pool spins while waiting, which wastes most of the
//! CPU on a shared or oversubscribed machine: simulations with many
//! clients do better with `RAYON_NUM_THREADS=1` and clients trained in
//! parallel threads; one model on several cores does better with its batch
//! split over threads ([`TrainOptions::shards`]) than with candle's pool. The GELU's `erf` is
//! vectorised with the bits of candle's scalar one, and the `expf` of the
//! GELU's backward pass and of the softmax with the bits of glibc's (both
//! compiled for AVX2 + FMA at run time where the CPU has them). Large
//! per-step allocations are returned to the OS by glibc and faulted in again
//! every step; `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824`
//! removed that (+5 % for `tiny`, +20 % for ViT-S/14 at 56×56 in the crate's bench).
//! The workspace's `.cargo/config.toml` sets that for every program cargo
//! runs, and the `wflora` binary sets the same thresholds (and
//! `RAYON_NUM_THREADS=1`) itself where the environment does not; a program
//! of your own using this crate chooses for itself. Threads other than the main one get heaps of their own from glibc,
//! which unmaps each heap as soon as it is empty, so a shard's thread
//! faulted its activations in again every step. For one large model split
//! into [`TrainOptions::shards`], adding `:glibc.malloc.arena_max=1` keeps
//! them in the main heap (ViT-S/14 with two shards: 56 → 74 images/s;
//! `bench-peer` sets it). It is not the default: with the engine's small
//! clients training in parallel, one arena costs about 10% in lock
//! contention.
//!
//! GPU (feature `cuda`, never on in the tests): [`Backbone::to`] moves a
//! backbone to a CUDA device, in `f32` or `bf16`, and every model built on it
//! computes there (LoRA factors and head stay `f32`). LayerNorm, softmax and
//! GELU run as CUDA kernels compiled by NVRTC, and an adapted linear layer
//! and the attention are single autograd nodes with written-out backward
//! passes, because candle's backward spends a full pass per node on adding
//! gradients. `just build-cuda` builds without a local CUDA toolkit; the peer
//! bench checks a GPU training run against the CPU one (`PEER_CHECK=1`).
//!
//! Presets: [`VitConfig::tiny`] (the embedded default, 28×28 grey input),
//! [`VitConfig::vit_s14`] (DINOv2-small shapes) and [`VitConfig::vit_b16`]
//! (ViT-Base/16 shapes).
//!
//! ```
//! use std::sync::Arc;
//! use wflora_lora::{
//!     Backbone, Batch, FineTuneMode, LocalTrainer, LoraConfig, TrainOptions, VitConfig,
//!     VitModel,
//! };
//!
//! # fn main() -> wflora_lora::Result<()> {
//! let config = VitConfig::tiny();
//! let backbone = Arc::new(Backbone::random(&config, 0)?);
//! let mut client = VitModel::new(
//!     backbone.clone(),
//!     FineTuneMode::Lora(LoraConfig::with_rank(4)),
//!     10,
//!     1,
//! )?;
//! // B starts at zero: the adapters do not change the backbone's output yet.
//! assert!(client.factors()?.iter().all(|f| f.b.iter().all(|&v| v == 0.0)));
//!
//! let images = vec![0.5f32; 2 * 28 * 28];
//! let labels = [3u32, 7];
//! let batch = Batch::new(&images, &labels, [2, 1, 28, 28])?;
//! let mut trainer = LocalTrainer::new(TrainOptions::default())?;
//! let update = trainer.train(&mut client, &[batch, batch])?;
//! assert_eq!(update.steps, 2);
//! assert_eq!(update.factors[0].name, "blocks.0.attn.q");
//! assert_eq!(update.factors[0].b.dim(), (64, 4));
//! # Ok(())
//! # }
//! ```
mod backbone;
mod bert;
mod config;
mod convert;
mod erf;
mod error;
mod expf;
mod fused;
mod fused_block;
#[cfg(feature = "cuda")]
mod fused_cuda;
mod hf;
mod lora_linear;
mod model;
#[cfg(feature = "onnx")]
pub mod onnx;
mod pretrain;
mod regularizer;
mod train;

pub use backbone::{
    Backbone, META_CONFIG, expected_shapes, interpolate_pos_embed, interpolate_pos_embed_bicubic,
};
pub use bert::{bert_config_from_hf, load_hf_bert, load_hf_bert_bytes};
pub use config::{
    FineTuneMode, LoraConfig, LoraTarget, ModelFootprint, PRESET_NAMES, TextStem, VitConfig,
};
pub use error::{LoraError, Result};
pub use hf::{HfLayout, load_hf_backbone, load_hf_backbone_bytes, load_hf_backbone_tensors};
pub use lora_linear::{LoraAdapter, LoraLinear};
pub use model::{AdapterFactors, HeadParams, VitModel};
pub use pretrain::{
    CachedBackbone, KIND_PRETRAINED, META_FINAL_LOSS, META_KEY, META_KIND, META_SHA256,
    PretrainOutcome, PretrainProgress, PretrainSchedule, cache_checksum, cached_pretrain,
    cached_pretrain_with_progress, pretrain, pretrain_cache_key, pretrain_with_progress,
};
pub use regularizer::{NORM_EPS, RegulariserKind, orthogonality_penalty, orthogonality_value};
pub use train::{
    AdamWParams, Batch, EvalResult, EvalSums, LocalTrainer, LocalUpdate, OptimizerKind,
    TrainOptions, evaluate, evaluate_sums, features, predict,
};
