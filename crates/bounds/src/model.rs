//! [`BoundModel`]: the bound as a function of `(r, ρ)`, from its constants
//! and the two pilot-fitted rank profiles.

use serde::Serialize;

use crate::covariance::CovarianceModel;
use crate::error::BoundError;
use crate::params::{BoundParams, BoundTerms};
use crate::structural::EnergyProfile;

/// `Bound(r, ρ)` ready to evaluate: validated constants, the structural
/// profile `Γ(r)` and the covariance model `C(r)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoundModel {
    params: BoundParams,
    structural: EnergyProfile,
    covariance: CovarianceModel,
}

impl BoundModel {
    /// Builds the model, validating `params` and `covariance`.
    ///
    /// # Errors
    /// [`BoundError::InvalidValue`] naming the first bad field.
    pub fn new(
        params: BoundParams,
        structural: EnergyProfile,
        covariance: CovarianceModel,
    ) -> Result<Self, BoundError> {
        params.validate()?;
        covariance.validate()?;
        Ok(Self {
            params,
            structural,
            covariance,
        })
    }

    /// The bound at rank `rank >= 1` and ratio `ratio ∈ (0, 1]`, term by term.
    ///
    /// # Errors
    /// [`BoundError::InvalidValue`] (`rank` 0, `ratio` outside `(0, 1]`);
    /// [`BoundError::NonFiniteTerm`] when `C(r)` or a term overflows.
    pub fn evaluate(&self, rank: usize, ratio: f64) -> Result<BoundTerms, BoundError> {
        if rank == 0 {
            return Err(BoundError::InvalidValue {
                field: "rank",
                value: 0.0,
                expected: "a rank >= 1",
            });
        }
        let covariance = self.covariance.predict(rank);
        if !covariance.is_finite() {
            return Err(BoundError::NonFiniteTerm {
                term: "covariance",
                rank,
                ratio,
                value: covariance,
            });
        }
        self.params
            .terms(rank, self.structural.gamma(rank), covariance, ratio)
    }

    /// The constants.
    #[must_use]
    pub fn params(&self) -> &BoundParams {
        &self.params
    }

    /// The structural profile `Γ(r)`.
    #[must_use]
    pub fn structural(&self) -> &EnergyProfile {
        &self.structural
    }

    /// The covariance model `C(r)`.
    #[must_use]
    pub fn covariance(&self) -> &CovarianceModel {
        &self.covariance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluate_combines_profiles() {
        // Γ from σ = (3, 2, 1): Γ(2) = 1/14; C = 0.5·r² → C(2) = 2.
        let params = BoundParams::default();
        let model = BoundModel::new(
            params,
            EnergyProfile::from_singular_values(&[3.0, 2.0, 1.0]).unwrap(),
            CovarianceModel::PowerLaw {
                scale: 0.5,
                exponent: 2.0,
            },
        )
        .unwrap();
        let t = model.evaluate(2, 0.5).unwrap();
        let want = params.terms(2, 1.0 / 14.0, 2.0, 0.5).unwrap();
        approx::assert_relative_eq!(t.total, want.total, max_relative = 1e-15);
        approx::assert_relative_eq!(t.covariance, 2.0, max_relative = 1e-15);
        assert!(matches!(
            model.evaluate(0, 0.5),
            Err(BoundError::InvalidValue { field: "rank", .. })
        ));
        let huge = BoundModel::new(
            params,
            EnergyProfile::from_singular_values(&[1.0]).unwrap(),
            CovarianceModel::PowerLaw {
                scale: 1.0,
                exponent: 400.0,
            },
        )
        .unwrap();
        assert!(matches!(
            huge.evaluate(16, 1.0),
            Err(BoundError::NonFiniteTerm {
                term: "covariance",
                rank: 16,
                ..
            })
        ));
        assert!(matches!(
            BoundModel::new(
                BoundParams {
                    learning_rate: 0.0,
                    ..params
                },
                EnergyProfile::from_singular_values(&[1.0]).unwrap(),
                CovarianceModel::Linear {
                    intercept: 0.0,
                    slope: 0.0
                },
            ),
            Err(BoundError::InvalidValue {
                field: "learning_rate",
                ..
            })
        ));
    }
}
