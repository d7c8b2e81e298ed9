//! # wflora
//!
//! Facade of the wflora workspace: wireless federated LoRA fine-tuning after
//! Kim & Choi, arXiv:2505.00333 (SOFT and TSFA). Each part is its own crate,
//! usable alone; this crate only re-exports them under short names, so that
//! cross-crate tests (in `tests/`) and users who want everything have one
//! name to depend on.
//!
//! | module | crate | concern |
//! |---|---|---|
//! | [`lora`] | `wflora-lora` | LoRA ViT on candle, trainer, pre-training |
//! | [`data`] | `wflora-data` | datasets, readers, partitioners |
//! | [`soft`] | `wflora-soft` | SOFT and the baseline sparsifiers |
//! | [`channel`] | `wflora-channel` | wireless uplink and latency |
//! | [`bounds`] | `wflora-bounds` | convergence bound, offline rank choice |
//! | [`alloc`] | `wflora-alloc` | Lyapunov drift-plus-penalty allocator |
//! | [`fed`] | `wflora-fed` | federated engine |
//! | [`dfl`] | `wflora-dfl` | decentralized multi-task LoRA (SO-LoRA) |
//!
//! ```
//! // SOFT's budget for a 64×64 matrix at rank 8 keeping a quarter of the rank:
//! let dims = wflora::soft::Dims { d: 64, r: 8, l: 64 };
//! let m = wflora::soft::components_for_ratio(0.25, dims.r).unwrap();
//! let bits = wflora::soft::budget(dims, m).unwrap();
//! assert_eq!((m, bits.values), (2, 2 * (64 + 64)));
//! ```

pub use wflora_alloc as alloc;
pub use wflora_bounds as bounds;
pub use wflora_channel as channel;
pub use wflora_data as data;
pub use wflora_dfl as dfl;
pub use wflora_fed as fed;
pub use wflora_lora as lora;
pub use wflora_soft as soft;

/// The README's code blocks, compiled and run as doctests
/// (`cargo test --workspace --doc`), so that its library snippet stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
