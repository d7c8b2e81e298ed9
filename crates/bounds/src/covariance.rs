//! The covariance term `C(r)`: a model of the separate-aggregation
//! covariance norm as a function of rank, fitted to pilot measurements.

use serde::{Deserialize, Serialize};

use crate::error::{BoundError, finite, non_negative, non_negative_elements};

/// A model of `C(r)`, the covariance norm of separate aggregation
/// (docs/method.md §1: `‖Σ_k p_k (B_k − B̄)(A_k − Ā)‖_F`, relative or absolute, as
/// the engine measures it) at rank `r`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum CovarianceModel {
    /// `C(r) = scale · r^exponent` (the default model; `scale >= 0`).
    PowerLaw {
        /// `c`, the value at `r = 1`.
        scale: f64,
        /// `γ`, the log-log slope.
        exponent: f64,
    },
    /// `C(r) = max(intercept + slope · r, 0)` (the fallback; clamped at 0
    /// because a norm cannot be negative).
    Linear {
        /// Value of the line at `r = 0`.
        intercept: f64,
        /// Increase per unit of rank.
        slope: f64,
    },
}

impl CovarianceModel {
    /// `C(r)` under this model. May be non-finite for an extreme model at a
    /// huge rank; [`crate::BoundModel::evaluate`] reports that as an error.
    #[must_use]
    pub fn predict(&self, rank: usize) -> f64 {
        let r = rank as f64;
        match *self {
            Self::PowerLaw { scale, exponent } => scale * r.powf(exponent),
            Self::Linear { intercept, slope } => (intercept + slope * r).max(0.0),
        }
    }

    /// Checks the model's numbers: finite, and `scale >= 0` for a power law.
    ///
    /// # Errors
    /// [`BoundError::InvalidValue`] naming the field.
    pub fn validate(&self) -> Result<(), BoundError> {
        match *self {
            Self::PowerLaw { scale, exponent } => {
                non_negative("scale", scale)?;
                finite("exponent", exponent)?;
            }
            Self::Linear { intercept, slope } => {
                finite("intercept", intercept)?;
                finite("slope", slope)?;
            }
        }
        Ok(())
    }
}

/// Why [`fit_covariance`] fell back from the power law to a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitFallback {
    /// A measured value is `0`: its logarithm is undefined.
    ZeroValue {
        /// Position of the first zero value.
        index: usize,
    },
    /// All measurements are at one rank: no slope can be fitted, so the
    /// model is the constant mean (a line of slope `0`).
    SingleRank,
}

/// A fitted [`CovarianceModel`] and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CovarianceFit {
    /// The fitted model.
    pub model: CovarianceModel,
    /// Root-mean-square of `predict(r_j) − C_j` over the points, in the
    /// units of `C` (comparable across models).
    pub rms_residual: f64,
    /// Root-mean-square of `ln predict(r_j) − ln C_j` (the residual the
    /// power law minimises); `None` for a line.
    pub rms_log_residual: Option<f64>,
    /// Number of measurements used.
    pub points: usize,
    /// `Some` when [`fit_covariance`] fell back to a line, with the reason.
    pub fallback: Option<FitFallback>,
}

/// Checks the pilot measurements; returns the number of distinct ranks.
fn check_points(ranks: &[usize], values: &[f64]) -> Result<usize, BoundError> {
    if ranks.len() != values.len() {
        return Err(BoundError::LengthMismatch {
            field: "ranks",
            len: ranks.len(),
            other: "values",
            other_len: values.len(),
        });
    }
    if ranks.is_empty() {
        return Err(BoundError::TooFew {
            field: "ranks",
            len: 0,
            min: 1,
        });
    }
    if let Some(index) = ranks.iter().position(|&r| r == 0) {
        return Err(BoundError::InvalidElement {
            field: "ranks",
            index,
            value: 0.0,
            expected: "a rank >= 1",
        });
    }
    non_negative_elements("values", values)?;
    let mut distinct = ranks.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    Ok(distinct.len())
}

/// Ordinary least squares `y ≈ a + s·x` (centred, for accuracy); requires
/// at least two distinct `x`.
fn least_squares(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (&xi, &yi) in x.iter().zip(y) {
        sxy += (xi - mx) * (yi - my);
        sxx += (xi - mx) * (xi - mx);
    }
    let slope = sxy / sxx;
    (my - slope * mx, slope)
}

/// The fit summary of `model` on the points.
fn summarise(
    model: CovarianceModel,
    ranks: &[usize],
    values: &[f64],
    fallback: Option<FitFallback>,
) -> CovarianceFit {
    let n = values.len() as f64;
    let sq: f64 = ranks
        .iter()
        .zip(values)
        .map(|(&r, &v)| (model.predict(r) - v).powi(2))
        .sum();
    let rms_log_residual = match model {
        CovarianceModel::PowerLaw { .. } => {
            let sq: f64 = ranks
                .iter()
                .zip(values)
                .map(|(&r, &v)| (model.predict(r).ln() - v.ln()).powi(2))
                .sum();
            Some((sq / n).sqrt())
        }
        CovarianceModel::Linear { .. } => None,
    };
    CovarianceFit {
        model,
        rms_residual: (sq / n).sqrt(),
        rms_log_residual,
        points: values.len(),
        fallback,
    }
}

/// Fits `C(r) = c·r^γ` by least squares on `ln C = ln c + γ ln r`.
/// Repeated ranks (several pilot rounds at one rank) are fine.
///
/// # Errors
/// [`BoundError::LengthMismatch`], [`BoundError::TooFew`] (`ranks`: no
/// point, or `distinct ranks`: fewer than 2), [`BoundError::InvalidElement`]
/// (`ranks` containing 0; `values` negative, non-finite, or 0: the logarithm
/// needs `C > 0`).
pub fn fit_power_law(ranks: &[usize], values: &[f64]) -> Result<CovarianceFit, BoundError> {
    let distinct = check_points(ranks, values)?;
    if let Some(index) = values.iter().position(|&v| v <= 0.0) {
        return Err(BoundError::InvalidElement {
            field: "values",
            index,
            value: values[index],
            expected: "a value > 0 for the log-log fit",
        });
    }
    if distinct < 2 {
        return Err(BoundError::TooFew {
            field: "distinct ranks",
            len: distinct,
            min: 2,
        });
    }
    let x: Vec<f64> = ranks.iter().map(|&r| (r as f64).ln()).collect();
    let y: Vec<f64> = values.iter().map(|v| v.ln()).collect();
    let (intercept, slope) = least_squares(&x, &y);
    let model = CovarianceModel::PowerLaw {
        scale: intercept.exp(),
        exponent: slope,
    };
    Ok(summarise(model, ranks, values, None))
}

/// Fits `C(r) = max(a + s·r, 0)` by least squares on the values themselves
/// (zeros allowed). With a single distinct rank the slope is `0` and the
/// line is the mean value.
///
/// # Errors
/// [`BoundError::LengthMismatch`], [`BoundError::TooFew`] (no point),
/// [`BoundError::InvalidElement`] (`ranks` containing 0; `values` negative
/// or non-finite).
pub fn fit_linear(ranks: &[usize], values: &[f64]) -> Result<CovarianceFit, BoundError> {
    let distinct = check_points(ranks, values)?;
    let model = if distinct < 2 {
        CovarianceModel::Linear {
            intercept: values.iter().sum::<f64>() / values.len() as f64,
            slope: 0.0,
        }
    } else {
        let x: Vec<f64> = ranks.iter().map(|&r| r as f64).collect();
        let (intercept, slope) = least_squares(&x, values);
        CovarianceModel::Linear { intercept, slope }
    };
    Ok(summarise(model, ranks, values, None))
}

/// The documented default fit of `C(r)` from pilot measurements
/// `(ranks[j], values[j])`: the power law [`fit_power_law`] when every value
/// is `> 0` and there are at least two distinct ranks; otherwise the line
/// [`fit_linear`], with [`CovarianceFit::fallback`] saying why.
///
/// # Errors
/// As [`fit_linear`].
pub fn fit_covariance(ranks: &[usize], values: &[f64]) -> Result<CovarianceFit, BoundError> {
    let distinct = check_points(ranks, values)?;
    let fallback = if distinct < 2 {
        Some(FitFallback::SingleRank)
    } else {
        values
            .iter()
            .position(|&v| v == 0.0)
            .map(|index| FitFallback::ZeroValue { index })
    };
    match fallback {
        None => fit_power_law(ranks, values),
        Some(reason) => Ok(CovarianceFit {
            fallback: Some(reason),
            ..fit_linear(ranks, values)?
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn power_law_hand_example() {
        // C = 0.005·r exactly at r = 2, 8, 32: c = 0.005, γ = 1, residual 0.
        let fit = fit_covariance(&[2, 8, 32], &[0.01, 0.04, 0.16]).unwrap();
        let CovarianceModel::PowerLaw { scale, exponent } = fit.model else {
            panic!("expected a power law, got {fit:?}");
        };
        assert_relative_eq!(scale, 0.005, max_relative = 1e-12);
        assert_relative_eq!(exponent, 1.0, max_relative = 1e-12);
        assert!(fit.rms_residual < 1e-15);
        assert!(fit.rms_log_residual.unwrap() < 1e-12);
        assert_eq!(fit.fallback, None);
        assert_relative_eq!(fit.model.predict(16), 0.08, max_relative = 1e-12);
    }

    #[test]
    fn power_law_residual_hand_example() {
        // Ranks 1, 1, 4, 4 with ln C = ±0.1 around ln c + γ ln r at c = 1, γ = 0.5:
        // C = e^{0.1}, e^{-0.1}, 2e^{0.1}, 2e^{-0.1}. The fit averages the
        // pairs, so c = 1, γ = 0.5 and the log residual RMS is 0.1.
        let e = 0.1_f64.exp();
        let fit = fit_power_law(&[1, 1, 4, 4], &[e, 1.0 / e, 2.0 * e, 2.0 / e]).unwrap();
        let CovarianceModel::PowerLaw { scale, exponent } = fit.model else {
            panic!("expected a power law");
        };
        assert_relative_eq!(scale, 1.0, max_relative = 1e-12);
        assert_relative_eq!(exponent, 0.5, max_relative = 1e-12);
        assert_relative_eq!(fit.rms_log_residual.unwrap(), 0.1, max_relative = 1e-12);
        // value residuals: |1 − e^{±0.1}|, |2 − 2e^{±0.1}|
        let want = (((1.0 - e).powi(2) + (1.0 - 1.0 / e).powi(2)) * 5.0 / 4.0).sqrt();
        assert_relative_eq!(fit.rms_residual, want, max_relative = 1e-12);
    }

    #[test]
    fn zero_value_falls_back_to_a_line() {
        // Exactly linear data through a zero: C = 0.1·(r − 1).
        let fit = fit_covariance(&[1, 2, 4, 8], &[0.0, 0.1, 0.3, 0.7]).unwrap();
        assert_eq!(fit.fallback, Some(FitFallback::ZeroValue { index: 0 }));
        let CovarianceModel::Linear { intercept, slope } = fit.model else {
            panic!("expected a line");
        };
        assert_relative_eq!(intercept, -0.1, max_relative = 1e-12);
        assert_relative_eq!(slope, 0.1, max_relative = 1e-12);
        assert!(fit.rms_residual < 1e-15);
        assert_eq!(fit.rms_log_residual, None);
        // clamped below the root at r = 1 − … : predict(0) would be −0.1 → 0
        assert_eq!(fit.model.predict(0), 0.0);
    }

    #[test]
    fn all_zero_and_single_rank() {
        let fit = fit_covariance(&[1, 4], &[0.0, 0.0]).unwrap();
        assert_eq!(fit.model.predict(16), 0.0);
        let fit = fit_covariance(&[4, 4, 4], &[0.1, 0.2, 0.3]).unwrap();
        assert_eq!(fit.fallback, Some(FitFallback::SingleRank));
        assert_relative_eq!(fit.model.predict(64), 0.2, max_relative = 1e-12);
        assert!(matches!(
            fit_power_law(&[4, 4], &[0.1, 0.2]),
            Err(BoundError::TooFew {
                field: "distinct ranks",
                len: 1,
                min: 2
            })
        ));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            fit_covariance(&[1, 2], &[0.1]),
            Err(BoundError::LengthMismatch {
                field: "ranks",
                len: 2,
                other: "values",
                other_len: 1
            })
        ));
        assert!(matches!(
            fit_covariance(&[], &[]),
            Err(BoundError::TooFew { field: "ranks", .. })
        ));
        assert!(matches!(
            fit_covariance(&[0, 2], &[0.1, 0.2]),
            Err(BoundError::InvalidElement {
                field: "ranks",
                index: 0,
                ..
            })
        ));
        assert!(matches!(
            fit_covariance(&[1, 2], &[0.1, f64::NAN]),
            Err(BoundError::InvalidElement {
                field: "values",
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            fit_power_law(&[1, 2], &[0.1, 0.0]),
            Err(BoundError::InvalidElement {
                field: "values",
                index: 1,
                ..
            })
        ));
        let bad = CovarianceModel::PowerLaw {
            scale: -1.0,
            exponent: 1.0,
        };
        assert!(matches!(
            bad.validate(),
            Err(BoundError::InvalidValue { field: "scale", .. })
        ));
        let bad = CovarianceModel::Linear {
            intercept: 0.0,
            slope: f64::NAN,
        };
        assert!(matches!(
            bad.validate(),
            Err(BoundError::InvalidValue { field: "slope", .. })
        ));
    }

    #[test]
    fn model_serde_round_trip() {
        let m = CovarianceModel::PowerLaw {
            scale: 0.5,
            exponent: 1.5,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"model":"power_law","scale":0.5,"exponent":1.5}"#);
        assert_eq!(serde_json::from_str::<CovarianceModel>(&s).unwrap(), m);
    }
}
