//! # wflora-dfl: decentralized multi-task LoRA over D2D links (SO-LoRA)
//!
//! Devices with different tasks fine-tune one frozen backbone without a
//! server, exchanging with their graph neighbours over device-to-device
//! links (docs/method.md §6; Yang et al., arXiv:2602.20492, reconstructed from its
//! abstract: the paper's body was not available, so the choices below are
//! ours and are listed in `docs/so-lora.md`).
//!
//! * **Graphs** ([`graph`]): ring, random geometric (raised to connect),
//!   complete, and clusters by task similarity and link quality
//!   (average-linkage on a mixed distance), with Metropolis–Hastings
//!   mixing weights. Plain `f64`.
//! * **SO-LoRA's pieces** ([`sparse`]): frozen Gaussian projections `A_k`,
//!   their cross-device coherence (about `1/√l`), the layer-wise budget of
//!   `B_k` and the collision rate of two `B` supports. Plain `ndarray`.
//! * **Routing** ([`route`]): task codes (mean frozen feature direction)
//!   and nearest-code routing, the implicit mixture of experts.
//! * **The engine** ([`Simulation`]): SO-LoRA (each device trains a sparse
//!   `B_k` on its own frozen `A_k`; neighbours' `s·w_kj·B_j·A_j` are
//!   merged into its frozen weights, so aggregation is exact in the product
//!   space), plain decentralized LoRA (gossip on `A` and `B` separately),
//!   FFA-LoRA (one shared frozen `A`, gossip on `B`) and local-only; bits and
//!   D2D air time per round from `wflora-channel`; per-device evaluation;
//!   the three inference rules ([`Simulation::inference`]); resumable runs.
//!
//! What it deliberately knows nothing about: the server-based engine's
//! sampling, sparsifiers and allocator (`wflora-fed`, of which it uses the
//! backbone task and the seed streams only), how a rate is computed, or
//! how a ViT is built.
//!
//! ```
//! use wflora_dfl::graph::Graph;
//! let g = Graph::ring(6);
//! let w = g.metropolis_weights();
//! assert!((w.row(0).sum() - 1.0).abs() < 1e-12);
//! assert_eq!(g.neighbours(0), &[1, 5]);
//! ```

pub mod config;
mod engine;
mod error;
pub mod graph;
pub mod route;
pub mod sparse;
pub mod tasks;

pub use config::{
    DflConfig, Method, TaskSpec, TextCorpusKind, TextSetup, TextTask, Topology, Transform,
};
pub use engine::{
    DeviceState, DflCheckpoint, DflRecord, InferenceReport, Simulation, StoredMatrix, Structure,
};
pub use error::DflError;
pub use tasks::{MultiTask, Samples, TaskData};
