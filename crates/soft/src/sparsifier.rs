//! The [`Sparsifier`] trait, the method names, and one type per method.

use crate::component::{self, Rule};
use crate::elements::{self, Pick};
use crate::{FactorsView, Message, Residual, SoftError, slora};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One compression method (docs/method.md §2): for one client and one adapted
/// matrix, turns the broadcast factors `(Bᵗ, Aᵗ)`, the client's factor update
/// `(ΔB, ΔA)` and its residual into a message and the new residual.
///
/// With error feedback on (the default of every method), the
/// error-compensated update is `U = Δ + e` and the new residual is what was
/// not sent, so `decode(message) + new residual = Δ + old residual` (exactly
/// for the factor methods). With it off, `residual` is ignored (taken as zero)
/// and [`Residual::Zero`] is returned. The caller's residual is only
/// borrowed, so on error it is untouched.
pub trait Sparsifier {
    /// Which method this is.
    fn kind(&self) -> MethodKind;

    /// Compresses one client's update of one adapted matrix into the bit
    /// budget of `m` kept rank components, `1 ≤ m ≤ r` with `r` the rank of
    /// the factors ([`crate::budget`]; a ratio `ρ` becomes `m` through
    /// [`crate::components_for_ratio`]); returns the message and the new
    /// residual.
    ///
    /// # Errors
    /// [`SoftError::Empty`], [`SoftError::Shape`] (between `base.b` and
    /// `base.a`, and of `update`/`residual` against `base`),
    /// [`SoftError::ResidualKind`], [`SoftError::Components`] for
    /// `m ∉ 1..=r` (checked after the shapes), [`SoftError::NonFinite`], and
    /// for SLoRA [`SoftError::SvdNoConvergence`].
    fn compress(
        &self,
        base: FactorsView<'_>,
        update: FactorsView<'_>,
        residual: &Residual,
        m: usize,
    ) -> Result<(Message, Residual), SoftError>;
}

/// The methods of docs/method.md §2, by name (serialised in snake case:
/// `"soft"`, `"soft_delta"`, `"slora"`, `"tlora"`, `"rlora"`, `"ilora"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MethodKind {
    /// SOFT: top-`m` rank components by `‖b̃_i‖·‖ã_i‖`.
    #[serde(rename = "soft")]
    Soft,
    /// SOFT-Δ: top-`m` rank components by `‖b̃_iã_iᵀ − b_ia_iᵀ‖_F`.
    #[serde(rename = "soft_delta")]
    SoftDelta,
    /// SLoRA: dense update, SVD, top triplets.
    #[serde(rename = "slora")]
    SLora,
    /// TLoRA: element-wise magnitude top-k.
    #[serde(rename = "tlora")]
    TLora,
    /// RLoRA: element-wise random-k (seeded).
    #[serde(rename = "rlora")]
    RLora,
    /// ILoRA: everything, uncompressed.
    #[serde(rename = "ilora")]
    ILora,
}

impl MethodKind {
    /// Every method, in the order of docs/method.md §2.
    pub const ALL: [Self; 6] = [
        Self::Soft,
        Self::SoftDelta,
        Self::SLora,
        Self::TLora,
        Self::RLora,
        Self::ILora,
    ];

    /// The method as a boxed sparsifier (`seed` is used by RLoRA only).
    #[must_use]
    pub fn sparsifier(self, error_feedback: bool, seed: u64) -> Box<dyn Sparsifier + Send + Sync> {
        match self {
            Self::Soft => Box::new(Soft { error_feedback }),
            Self::SoftDelta => Box::new(SoftDelta { error_feedback }),
            Self::SLora => Box::new(SLora { error_feedback }),
            Self::TLora => Box::new(TLora { error_feedback }),
            Self::RLora => Box::new(RLora {
                error_feedback,
                seed,
            }),
            Self::ILora => Box::new(ILora { error_feedback }),
        }
    }

    /// Whether the server aggregates it factor-wise (all but SLoRA).
    #[must_use]
    pub fn is_factor_wise(self) -> bool {
        self != Self::SLora
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Soft => "SOFT",
            Self::SoftDelta => "SOFT-Δ",
            Self::SLora => "SLoRA",
            Self::TLora => "TLoRA",
            Self::RLora => "RLoRA",
            Self::ILora => "ILoRA",
        })
    }
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $kind:expr, |$s:ident, $base:ident, $upd:ident, $res:ident, $m:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// Error feedback (default on): keep what is not sent for the
            /// next round.
            pub error_feedback: bool,
        }

        impl Default for $name {
            fn default() -> Self {
                Self { error_feedback: true }
            }
        }

        impl Sparsifier for $name {
            fn kind(&self) -> MethodKind {
                $kind
            }

            fn compress(
                &self,
                $base: FactorsView<'_>,
                $upd: FactorsView<'_>,
                $res: &Residual,
                $m: usize,
            ) -> Result<(Message, Residual), SoftError> {
                let $s = self;
                $body
            }
        }
    };
}

method!(
    /// SOFT: keeps the `m` rank components with the largest
    /// `s_i = ‖B̃[:, i]‖·‖Ã[i, :]‖` on the error-compensated factors
    /// `B̃ = Bᵗ + U_B`, `Ã = Aᵗ + U_A`, and sends their `(U_B[:, i], U_A[i, :])`
    /// with their indices (none when `m = r`). Cost `O(r(d+l))`.
    Soft,
    MethodKind::Soft,
    |s, base, update, residual, m| component::compress(
        MethodKind::Soft, Rule::Soft, s.error_feedback, base, update, residual, m
    )
);

method!(
    /// SOFT-Δ (ours, for the ablation): as SOFT, ranking by the change of the
    /// rank-1 term, `‖b̃_iã_iᵀ − b_ia_iᵀ‖_F`, computed in `O(d+l)` from
    /// `‖b̃‖²‖ã‖² + ‖b‖²‖a‖² − 2(b̃·b)(ã·a)` (clamped at 0 against rounding).
    SoftDelta,
    MethodKind::SoftDelta,
    |s, base, update, residual, m| component::compress(
        MethodKind::SoftDelta, Rule::Delta, s.error_feedback, base, update, residual, m
    )
);

method!(
    /// ILoRA: sends the whole error-compensated update, no indices, whatever
    /// `m` (which is still validated, `1 ≤ m ≤ r`): the uncompressed upper
    /// line, whose message is the `m = r` budget.
    ILora,
    MethodKind::ILora,
    |s, base, update, residual, m| component::compress(
        MethodKind::ILora, Rule::All, s.error_feedback, base, update, residual, m
    )
);

method!(
    /// TLoRA: element-wise magnitude top-k on `U_B` and on `U_A` separately,
    /// counts from [`crate::element_counts`] (split in proportion to the
    /// sizes, per-element index bits), so fewer values fit the budget than
    /// SOFT's. It breaks the pairing of `b_i` with `a_i`.
    TLora,
    MethodKind::TLora,
    |s, base, update, residual, m| elements::compress(
        MethodKind::TLora, Pick::Top, s.error_feedback, base, update, residual, m
    )
);

method!(
    /// SLoRA: forms the dense `ΔW = B̃Ã − BᵗAᵗ + E` (`E`: dense `d×l`
    /// residual, [`Residual::Dense`]), takes its thin SVD and sends the top
    /// [`crate::slora_triplets`] triplets with `σ` folded into `u`
    /// (`d + l` values and no index per triplet); `E` keeps the rest.
    ///
    /// At `m = r` it sends `r` triplets while `ΔW = ΔB·Ã + Bᵗ·ΔA (+ E)` can
    /// have rank up to `2r` (or more with `E`), so unlike the factor methods
    /// it is lossless at `m = r` only when `rank(ΔW) ≤ r`.
    SLora,
    MethodKind::SLora,
    |s, base, update, residual, m| slora::compress(
        s.error_feedback, base, update, residual, m
    )
);

/// RLoRA: element-wise random-k on `U_B` and `U_A`, the counts of TLoRA,
/// drawn uniformly without replacement from `StdRng::seed_from_u64(seed)`
/// (first `U_B`'s positions, then `U_A`'s): the same seed gives the same
/// message. Values are sent as they are (no `n/k` rescaling: with error
/// feedback the unsent part stays in the residual). The caller derives a
/// fresh seed per client, round and matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RLora {
    /// Error feedback (default on).
    pub error_feedback: bool,
    /// Seed of this call's draw.
    pub seed: u64,
}

impl RLora {
    /// RLoRA with error feedback and this seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            error_feedback: true,
            seed,
        }
    }
}

impl Sparsifier for RLora {
    fn kind(&self) -> MethodKind {
        MethodKind::RLora
    }

    fn compress(
        &self,
        base: FactorsView<'_>,
        update: FactorsView<'_>,
        residual: &Residual,
        m: usize,
    ) -> Result<(Message, Residual), SoftError> {
        elements::compress(
            MethodKind::RLora,
            Pick::Random(self.seed),
            self.error_feedback,
            base,
            update,
            residual,
            m,
        )
    }
}
