//! Estimators of the bound's constants from pilot data, each a function on
//! plain numbers the engine hands in.
//!
//! What pilot rounds can estimate: `F0 − F*` ([`objective_gap`]), `σ²`
//! ([`gradient_variance`], [`gradient_variance_from_batch_variance`]) and
//! `L` ([`secant_ratio`], [`smoothness`]); `Γ(r)` and `C(r)` have their own
//! modules. What they cannot: the weights `c_Γ`, `c_C`, `c_S`, which scale
//! terms whose constants the (unavailable) paper body fixes; and `η`, `E`,
//! `T`, `b`, which are settings, not estimates.

use serde::{Deserialize, Serialize};

use crate::error::{BoundError, finite, finite_elements, non_negative_elements};

/// The floor `F*` subtracted from the initial loss in [`objective_gap`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossFloor {
    /// A known lower bound of the objective, e.g. `0` for cross-entropy.
    /// Gives an upper estimate of `F0 − F*` (safe for a bound).
    Known(f64),
    /// The lowest pilot loss: an optimistic floor (the true `F*` can only be
    /// lower), so it gives a lower estimate of `F0 − F*`.
    PilotMinimum,
}

/// `F0 − F*` estimated as the first pilot loss (the loss at the initial
/// point, before any update) minus a floor.
///
/// # Errors
/// [`BoundError::TooFew`] (`pilot_losses` empty);
/// [`BoundError::InvalidElement`] (`pilot_losses` non-finite);
/// [`BoundError::InvalidValue`] (`floor` non-finite, or above the initial
/// loss).
pub fn objective_gap(pilot_losses: &[f64], floor: LossFloor) -> Result<f64, BoundError> {
    let Some(&initial) = pilot_losses.first() else {
        return Err(BoundError::TooFew {
            field: "pilot_losses",
            len: 0,
            min: 1,
        });
    };
    finite_elements("pilot_losses", pilot_losses)?;
    let floor = match floor {
        LossFloor::Known(f) => finite("floor", f)?,
        LossFloor::PilotMinimum => pilot_losses.iter().copied().fold(initial, f64::min),
    };
    if floor > initial {
        return Err(BoundError::InvalidValue {
            field: "floor",
            value: floor,
            expected: "a floor <= the initial pilot loss `pilot_losses[0]`",
        });
    }
    Ok(initial - floor)
}

/// Checks a batch size argument.
fn batch(batch_size: u32) -> Result<f64, BoundError> {
    if batch_size == 0 {
        Err(BoundError::InvalidValue {
            field: "batch_size",
            value: 0.0,
            expected: "an integer >= 1",
        })
    } else {
        Ok(f64::from(batch_size))
    }
}

/// Per-sample gradient variance `σ²` from `n >= 2` mini-batch gradients
/// `g_1 … g_n` taken at one point (same parameters), each the mean over
/// `batch_size` independently drawn samples:
/// `σ² = b · Σ_j ‖g_j − ḡ‖² / (n − 1)`, the unbiased variance of a batch
/// gradient scaled back to one sample (a batch mean of `b` samples has
/// variance `σ²/b`). Computed in two passes (mean, then deviations).
///
/// # Errors
/// [`BoundError::TooFew`] (`batch_gradients`: fewer than 2 batches, or
/// empty gradients); [`BoundError::RowLength`] (gradients of different
/// lengths); [`BoundError::InvalidElement`] (non-finite entry);
/// [`BoundError::InvalidValue`] (`batch_size` 0).
pub fn gradient_variance<S: AsRef<[f64]>>(
    batch_gradients: &[S],
    batch_size: u32,
) -> Result<f64, BoundError> {
    let b = batch(batch_size)?;
    let n = batch_gradients.len();
    if n < 2 {
        return Err(BoundError::TooFew {
            field: "batch_gradients",
            len: n,
            min: 2,
        });
    }
    let dim = batch_gradients[0].as_ref().len();
    if dim == 0 {
        return Err(BoundError::TooFew {
            field: "batch_gradients[0]",
            len: 0,
            min: 1,
        });
    }
    let mut mean = vec![0.0; dim];
    for (row, g) in batch_gradients.iter().enumerate() {
        let g = g.as_ref();
        if g.len() != dim {
            return Err(BoundError::RowLength {
                field: "batch_gradients",
                row,
                len: g.len(),
                expected_len: dim,
            });
        }
        if let Some(col) = g.iter().position(|x| !x.is_finite()) {
            return Err(BoundError::InvalidElement {
                field: "batch_gradients (flattened row-major: row·len + column)",
                index: row * dim + col,
                value: g[col],
                expected: "a finite number",
            });
        }
        for (m, &x) in mean.iter_mut().zip(g) {
            *m += x;
        }
    }
    let inv_n = 1.0 / n as f64;
    mean.iter_mut().for_each(|m| *m *= inv_n);
    let ss: f64 = batch_gradients
        .iter()
        .map(|g| {
            g.as_ref()
                .iter()
                .zip(&mean)
                .map(|(x, m)| (x - m) * (x - m))
                .sum::<f64>()
        })
        .sum();
    Ok(b * ss / (n - 1) as f64)
}

/// Per-sample gradient variance `σ² = b · v` from `v`, the variance of a
/// mini-batch gradient (`E‖g_batch − ∇F‖²`) as the engine measured it, and
/// the batch size `b` it was measured at.
///
/// # Errors
/// [`BoundError::InvalidValue`] (`batch_variance` negative or non-finite;
/// `batch_size` 0).
pub fn gradient_variance_from_batch_variance(
    batch_variance: f64,
    batch_size: u32,
) -> Result<f64, BoundError> {
    let b = batch(batch_size)?;
    Ok(b * crate::error::non_negative("batch_variance", batch_variance)?)
}

/// One secant estimate of the smoothness constant,
/// `‖∇F(x1) − ∇F(x2)‖ / ‖x1 − x2‖`, from two points and the (full or
/// large-batch) gradients there, all flattened to slices of one length.
///
/// # Errors
/// [`BoundError::LengthMismatch`] (slices of different lengths);
/// [`BoundError::InvalidElement`] (non-finite entry);
/// [`BoundError::InvalidValue`] (`point distance` 0: the points coincide,
/// or infinite; `gradient distance`: the ratio overflows).
pub fn secant_ratio(
    point_a: &[f64],
    point_b: &[f64],
    grad_a: &[f64],
    grad_b: &[f64],
) -> Result<f64, BoundError> {
    let n = point_a.len();
    for (field, len) in [
        ("point_b", point_b.len()),
        ("grad_a", grad_a.len()),
        ("grad_b", grad_b.len()),
    ] {
        if len != n {
            return Err(BoundError::LengthMismatch {
                field,
                len,
                other: "point_a",
                other_len: n,
            });
        }
    }
    for (field, v) in [
        ("point_a", point_a),
        ("point_b", point_b),
        ("grad_a", grad_a),
        ("grad_b", grad_b),
    ] {
        finite_elements(field, v)?;
    }
    let dist = diff_norm(point_a, point_b);
    if dist == 0.0 || !dist.is_finite() {
        return Err(BoundError::InvalidValue {
            field: "point distance",
            value: dist,
            expected: "distinct points at a finite distance (0 < ‖x1 − x2‖ < ∞)",
        });
    }
    let ratio = diff_norm(grad_a, grad_b) / dist;
    if ratio.is_finite() {
        Ok(ratio)
    } else {
        Err(BoundError::InvalidValue {
            field: "gradient distance",
            value: ratio,
            expected: "a finite ‖∇F(x1) − ∇F(x2)‖ / ‖x1 − x2‖",
        })
    }
}

/// `‖a − b‖₂`, scaled to avoid overflow and underflow.
fn diff_norm(a: &[f64], b: &[f64]) -> f64 {
    let scale = a
        .iter()
        .zip(b)
        .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    let ss: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) / scale).powi(2))
        .sum();
    scale * ss.sqrt()
}

/// The smoothness estimate `L` from secant ratios (see [`secant_ratio`]):
/// their maximum. `L` is a supremum of such ratios, so every secant is a
/// lower bound of the true `L` and the largest is the tightest; more pairs,
/// spread along the pilot trajectory, can only raise it.
///
/// # Errors
/// [`BoundError::TooFew`] (`secants` empty); [`BoundError::InvalidElement`]
/// (a negative or non-finite ratio).
pub fn smoothness(secants: &[f64]) -> Result<f64, BoundError> {
    if secants.is_empty() {
        return Err(BoundError::TooFew {
            field: "secants",
            len: 0,
            min: 1,
        });
    }
    non_negative_elements("secants", secants)?;
    Ok(secants.iter().copied().fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn objective_gap_hand_values() {
        let losses = [2.3, 1.9, 1.2, 1.4];
        assert_relative_eq!(objective_gap(&losses, LossFloor::Known(0.0)).unwrap(), 2.3);
        assert_relative_eq!(
            objective_gap(&losses, LossFloor::PilotMinimum).unwrap(),
            1.1,
            max_relative = 1e-12
        );
        assert!(matches!(
            objective_gap(&losses, LossFloor::Known(3.0)),
            Err(BoundError::InvalidValue { field: "floor", .. })
        ));
        assert!(matches!(
            objective_gap(&[], LossFloor::Known(0.0)),
            Err(BoundError::TooFew { .. })
        ));
        assert!(matches!(
            objective_gap(&[1.0, f64::NAN], LossFloor::Known(0.0)),
            Err(BoundError::InvalidElement {
                field: "pilot_losses",
                index: 1,
                ..
            })
        ));
    }

    #[test]
    fn gradient_variance_hand_values() {
        // g = (1, 0), (3, 0), (2, 3): mean (2, 1); squared deviations
        // 1 + 1 = 2, 1 + 1 = 2, 0 + 4 = 4 → 8/(3 − 1) = 4; b = 8 → σ² = 32.
        let g = [vec![1.0, 0.0], vec![3.0, 0.0], vec![2.0, 3.0]];
        assert_relative_eq!(
            gradient_variance(&g, 8).unwrap(),
            32.0,
            max_relative = 1e-14
        );
        assert_relative_eq!(gradient_variance_from_batch_variance(4.0, 8).unwrap(), 32.0);
        assert!(matches!(
            gradient_variance(&g[..1], 8),
            Err(BoundError::TooFew { .. })
        ));
        assert!(matches!(
            gradient_variance(&[vec![1.0], vec![1.0, 2.0]], 8),
            Err(BoundError::RowLength {
                row: 1,
                len: 2,
                expected_len: 1,
                ..
            })
        ));
        assert!(matches!(
            gradient_variance(&g, 0),
            Err(BoundError::InvalidValue {
                field: "batch_size",
                ..
            })
        ));
        assert!(matches!(
            gradient_variance_from_batch_variance(-1.0, 8),
            Err(BoundError::InvalidValue {
                field: "batch_variance",
                ..
            })
        ));
    }

    #[test]
    fn secant_of_a_quadratic() {
        // F(x) = ½ xᵀ diag(1, 4) x, ∇F = diag(1, 4) x. Along e2 the secant
        // is exactly 4 = L; along e1 it is 1.
        let (x1, x2) = ([0.0, 1.0], [0.0, -0.5]);
        let (g1, g2) = ([0.0, 4.0], [0.0, -2.0]);
        assert_relative_eq!(
            secant_ratio(&x1, &x2, &g1, &g2).unwrap(),
            4.0,
            max_relative = 1e-15
        );
        let s1 = secant_ratio(&[1.0, 0.0], &[3.0, 0.0], &[1.0, 0.0], &[3.0, 0.0]).unwrap();
        assert_relative_eq!(s1, 1.0, max_relative = 1e-15);
        assert_eq!(smoothness(&[s1, 4.0, 2.5]).unwrap(), 4.0);
        assert!(matches!(
            secant_ratio(&x1, &x1, &g1, &g2),
            Err(BoundError::InvalidValue {
                field: "point distance",
                ..
            })
        ));
        assert!(matches!(
            secant_ratio(&x1, &x2, &g1, &[1.0]),
            Err(BoundError::LengthMismatch {
                field: "grad_b",
                ..
            })
        ));
        assert!(matches!(smoothness(&[]), Err(BoundError::TooFew { .. })));
        assert!(matches!(
            smoothness(&[1.0, -2.0]),
            Err(BoundError::InvalidElement { index: 1, .. })
        ));
    }
}
