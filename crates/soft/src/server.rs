//! Server-side aggregation of one adapted matrix.

use crate::factors::{base_dims, check_finite, from_row_major};
use crate::{Factors, FactorsView, Message, MethodKind, SoftError, slora};

/// Aggregates the messages of one round for one adapted matrix and returns
/// the new factors `(Bᵗ⁺¹, Aᵗ⁺¹)`.
///
/// - Factor methods (SOFT, SOFT-Δ, TLoRA, RLoRA, ILoRA): factor-wise,
///   `Bᵗ⁺¹ = Bᵗ + Σ_k p_k·C(U_B^k)` and `Aᵗ⁺¹ = Aᵗ + Σ_k p_k·C(U_A^k)`,
///   accumulated in `f64`.
/// - SLoRA: `W = BᵗAᵗ + Σ_k p_k·Ŵ_k`, refactored into rank `r` by a
///   truncated SVD, `B = U_rΣ_r^{1/2}`, `A = Σ_r^{1/2}V_rᵀ` (computed from the
///   low-rank form of `W`, never the dense `d×l` matrix).
///
/// The weights `p_k` are used as given (the caller decides whether they sum
/// to one over the clients that sent). With no messages the base factors are
/// returned unchanged (no SLoRA refactoring either).
///
/// # Errors
/// [`SoftError::MixedMethods`] if the messages come from different methods,
/// [`SoftError::MessageDims`] if one was made for other dimensions,
/// [`SoftError::Weight`] for a negative or non-finite `p_k`,
/// [`SoftError::MalformedMessage`], shape/NaN errors on `base`, and
/// [`SoftError::SvdNoConvergence`] (SLoRA).
pub fn aggregate(
    base: FactorsView<'_>,
    messages: &[(f64, &Message)],
) -> Result<Factors, SoftError> {
    let dims = base_dims(&base)?;
    check_finite("base.b", &base.b)?;
    check_finite("base.a", &base.a)?;
    let Some((_, first)) = messages.first() else {
        return Ok(Factors::new(base.b.to_owned(), base.a.to_owned()));
    };
    let method: MethodKind = first.method();
    for (index, (p, m)) in messages.iter().enumerate() {
        if !(p.is_finite() && *p >= 0.0) {
            return Err(SoftError::Weight { index, value: *p });
        }
        if m.method() != method {
            return Err(SoftError::MixedMethods {
                index,
                expected: method,
                got: m.method(),
            });
        }
        if m.dims() != dims {
            return Err(SoftError::MessageDims {
                index,
                expected: dims.tuple(),
                got: m.dims().tuple(),
            });
        }
        m.validate()?;
    }
    if !method.is_factor_wise() {
        return slora::aggregate(base, dims, messages);
    }
    let mut b: Vec<f64> = base.b.iter().map(|&x| f64::from(x)).collect();
    let mut a: Vec<f64> = base.a.iter().map(|&x| f64::from(x)).collect();
    for (p, m) in messages {
        m.add_scaled(*p, &mut b, &mut a);
    }
    #[allow(clippy::cast_possible_truncation)]
    let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    Ok(Factors::new(
        from_row_major("aggregated.b", dims.d, dims.r, to32(b))?,
        from_row_major("aggregated.a", dims.r, dims.l, to32(a))?,
    ))
}
