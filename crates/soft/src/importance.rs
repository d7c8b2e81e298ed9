//! What a client reports to the allocator (its importances and the
//! dropped-energy share), and the orthogonality diagnostic of fig8.

use crate::component::{Inputs, Rule};
use crate::factors::base_dims;
use crate::linalg::product_singular_values;
use crate::{Factors, FactorsView, MethodKind, Residual, SoftError};
use serde::{Deserialize, Serialize};

/// The `r` SOFT importances `s_i = ‖B̃[:, i]‖·‖Ã[i, :]‖` of a client, on the
/// error-compensated factors `B̃ = Bᵗ + ΔB + e_B`, `Ã = Aᵗ + ΔA + e_A`
/// (pass [`Residual::Zero`] for no error feedback). These are the numbers a
/// client reports to the allocator.
///
/// # Errors
/// As [`crate::Sparsifier::compress`] for SOFT (shapes, NaN/inf, a dense
/// residual).
pub fn importances(
    base: FactorsView<'_>,
    update: FactorsView<'_>,
    residual: &Residual,
) -> Result<Vec<f64>, SoftError> {
    Inputs::new(MethodKind::Soft, &base, &update, residual, true)?.importances(Rule::Soft)
}

/// The `r` SOFT-Δ importances `‖b̃_iã_iᵀ − b_ia_iᵀ‖_F`, from inner products
/// in `O(d+l)` per component (see [`crate::SoftDelta`]).
///
/// # Errors
/// As [`importances`].
pub fn delta_importances(
    base: FactorsView<'_>,
    update: FactorsView<'_>,
    residual: &Residual,
) -> Result<Vec<f64>, SoftError> {
    Inputs::new(MethodKind::SoftDelta, &base, &update, residual, true)?.importances(Rule::Delta)
}

/// `‖b_i‖·‖a_i‖` of plain factors (no update).
///
/// # Errors
/// Shapes and NaN/inf as [`importances`].
pub fn factor_importances(factors: FactorsView<'_>) -> Result<Vec<f64>, SoftError> {
    let zero = Factors::zeros(base_dims(&factors)?);
    importances(factors, zero.view(), &Residual::Zero)
}

/// The dropped-energy share `D(m) = Σ_{i∉top m} s_i² / Σ_i s_i²` for every
/// `m = 0, 1, …, r` (index `m` of the result), from importances `s`.
///
/// `D` is non-increasing, `D(0) = 1`, `D(r) = 0` and `0 ≤ D ≤ 1`. When every
/// `s_i` is zero nothing can be lost, so `D(m) = 0` for every `m`, including
/// `m = 0` (a client with nothing to send sits out at no penalty).
///
/// # Errors
/// [`SoftError::Importance`] for a negative or non-finite entry.
pub fn dropped_energy(s: &[f64]) -> Result<Vec<f64>, SoftError> {
    if let Some((index, &value)) = s
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(SoftError::Importance { index, value });
    }
    let mut sq: Vec<f64> = s.iter().map(|x| x * x).collect();
    sq.sort_by(|a, b| b.total_cmp(a));
    // tail[m] = Σ_{i ≥ m} sq[i] (sorted descending), summed from the small end.
    let mut tail = vec![0.0f64; sq.len() + 1];
    for m in (0..sq.len()).rev() {
        tail[m] = tail[m + 1] + sq[m];
    }
    let total = tail[0];
    if total == 0.0 || !total.is_finite() {
        // all zero (or squares overflowed: scale down and retry).
        if total == 0.0 {
            return Ok(vec![0.0; s.len() + 1]);
        }
        let max = s.iter().copied().fold(0.0f64, f64::max);
        let scaled: Vec<f64> = s.iter().map(|x| x / max).collect();
        return dropped_energy(&scaled);
    }
    Ok(tail.iter().map(|t| (t / total).clamp(0.0, 1.0)).collect())
}

/// How far SOFT's importances are from the singular values they estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrthogonalityReport {
    /// `‖b_i‖·‖a_i‖`, sorted non-increasing.
    pub importances: Vec<f64>,
    /// The `r` singular values of `B·A`, non-increasing.
    pub singular_values: Vec<f64>,
    /// `‖importances − singular_values‖₂ / ‖singular_values‖₂`, with `0/0 = 0`
    /// and `x/0 = +∞` for `x > 0`.
    pub relative_error: f64,
}

/// Compares SOFT's importances of `(B, A)` (sorted) with the singular values
/// of `B·A`, computed without forming the product (thin QR of `B` and `Aᵀ`,
/// SVD of the `r×r` core). They agree exactly when the columns of `B` are
/// mutually orthogonal and so are the rows of `A`.
///
/// # Errors
/// Shapes and NaN/inf as [`importances`]; [`SoftError::SvdNoConvergence`].
pub fn orthogonality_report(factors: FactorsView<'_>) -> Result<OrthogonalityReport, SoftError> {
    let mut imp = factor_importances(factors)?;
    imp.sort_by(|a, b| b.total_cmp(a));
    let sv = product_singular_values(&factors.b, &factors.a)?;
    let diff = imp
        .iter()
        .zip(&sv)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let norm = sv.iter().map(|x| x * x).sum::<f64>().sqrt();
    let relative_error = if norm > 0.0 {
        diff / norm
    } else if diff == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    Ok(OrthogonalityReport {
        importances: imp,
        singular_values: sv,
        relative_error,
    })
}
