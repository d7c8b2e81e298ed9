//! # wflora-soft: SOFT and its baselines on plain LoRA factors
//!
//! A LoRA-adapted weight is `W0 + (α/r)·B·A` with `B ∈ R^{d×r}` (columns
//! `b_i`) and `A ∈ R^{r×l}` (rows `a_i`), so `B·A = Σ_i b_i a_iᵀ`. In each
//! federated round a client turns its update of `(B, A)` into a message that
//! fits a bit budget; the server decodes the messages and moves the factors.
//! This crate is that step for **one client and one adapted matrix**, and its
//! server-side counterpart (docs/method.md §1–§2):
//!
//! - [`Sparsifier`]: broadcast factors `(Bᵗ, Aᵗ)` + update `(ΔB, ΔA)` +
//!   residual + the number `m ∈ 1..=r` of kept rank components →
//!   [`Message`] + new [`Residual`]. One type per method: [`Soft`],
//!   [`SoftDelta`], [`SLora`], [`TLora`], [`RLora`], [`ILora`]; error
//!   feedback on by default in each.
//! - Ratios: [`components_for_ratio`] is the one place where a ratio
//!   `ρ ∈ (0, 1]` becomes `m` (the smallest `m` with `m/r ≥ ρ`).
//! - Exact bit accounting: [`Message::size`] (values × 32 + index bits), the
//!   shared [`budget`] of `m` components (SOFT's: `m(d+l)` values plus
//!   `m⌈log2 r⌉` index bits), which every method fits.
//! - [`Message::from_parts`]: a checked message from its parts, for messages
//!   that arrive from outside.
//! - [`aggregate`]: factor-wise for the factor methods, dense sum and rank-`r`
//!   refactoring for SLoRA.
//! - What the allocator needs from a client: [`importances`] and the
//!   dropped-energy share [`dropped_energy`].
//! - The fig8 diagnostic [`orthogonality_report`], and the [`svd`] wrapper
//!   (the only place that knows `faer`).
//!
//! **Why SOFT works.** `s_i = ‖b̃_i‖·‖ã_i‖` is the norm estimate of the `i`-th
//! singular value of the client's adapter `B̃Ã`. When the columns of `B̃` and
//! the rows of `Ã` are each mutually orthogonal, the `s_i` *are* the singular
//! values, and keeping the top `m` is the best rank-`m` choice
//! (Eckart–Young), at cost `O(r(d+l))` instead of a product and an SVD.
//!
//! **What it deliberately knows nothing about:** tensors and autograd
//! (candle), the wireless channel, the allocator, how many clients or layers
//! there are, and training. Matrices are `ndarray::Array2<f32>`; norms, inner
//! products and aggregation sums are accumulated in `f64`. Everything that
//! can be wrong in the input is a [`SoftError`] naming the field; nothing
//! panics on user input.
//!
//! ```
//! use ndarray::array;
//! use wflora_soft::{aggregate, budget, components_for_ratio, FactorsView, Residual, Soft, Sparsifier};
//!
//! // d = 3, l = 2, r = 2; broadcast factors and one client's update.
//! let b = array![[1.0f32, 0.0], [0.0, 0.1], [0.0, 0.0]];
//! let a = array![[1.0f32, 0.0], [0.0, 0.1]];
//! let db = array![[0.5f32, 0.0], [0.0, 0.1], [0.0, 0.0]];
//! let da = array![[0.0f32, 0.0], [0.0, 0.2]];
//! let base = FactorsView::new(b.view(), a.view());
//! let update = FactorsView::new(db.view(), da.view());
//!
//! // Keep m = 1 of the r = 2 components: component 0 (s_0 = 1.5 > s_1 = 0.06).
//! let (msg, residual) = Soft::default().compress(base, update, &Residual::Zero, 1)?;
//! assert_eq!(msg.value_count(), 3 + 2); // one column of U_B, one row of U_A
//! assert_eq!(msg.index_bits(), 1); // ⌈log2 2⌉ = 1 bit for the index
//! assert!(msg.bits() <= budget(msg.dims(), 1)?.total());
//! // A ratio ρ = 0.5 is the same m = 1 of r = 2.
//! assert_eq!(components_for_ratio(0.5, 2)?, 1);
//!
//! // The server moves the factors by p·C(U); component 1 waits in the residual.
//! let new = aggregate(base, &[(1.0, &msg)])?;
//! assert_eq!(new.b[[0, 0]], 1.5);
//! assert_eq!(new.a[[1, 1]], 0.1);
//! assert!(matches!(residual, Residual::Factors(ref e) if e.a[[1, 1]] == 0.2));
//! # Ok::<(), wflora_soft::SoftError>(())
//! ```

/// The `ndarray` this crate's API takes and returns (`Array2<f32>`,
/// `ArrayView2<f32>`), re-exported so that callers build matrices with the
/// same version.
pub use ndarray;

mod component;
mod elements;
mod error;
mod factors;
mod importance;
mod linalg;
mod message;
mod server;
mod slora;
mod sparsifier;

pub use elements::element_counts;
pub use error::SoftError;
pub use factors::{Dims, Factors, FactorsView, Residual, components_for_ratio};
pub use importance::{
    OrthogonalityReport, delta_importances, dropped_energy, factor_importances, importances,
    orthogonality_report,
};
pub use linalg::{Real, Svd, product_singular_values, svd, thin_svd, truncated_svd};
pub use message::{
    Bits, Decoded, Message, Payload, SparseValues, Support, VALUE_BITS, budget, index_bits_for,
};
pub use server::aggregate;
pub use slora::slora_triplets;
pub use sparsifier::{ILora, MethodKind, RLora, SLora, Soft, SoftDelta, Sparsifier, TLora};
