//! The bound's constants ([`BoundParams`]) and its term-by-term value
//! ([`BoundTerms`]).

use serde::{Deserialize, Serialize};

use crate::error::{BoundError, non_negative, positive};

/// Every constant of
/// `Bound(r, ρ) = 2(F0 − F*)/(η E T) + η L σ²/b + c_Γ·Γ(r) + c_C·C(r) + c_S·(1−ρ)/ρ²`.
///
/// The fields are public so an engine can fill them from pilot estimates
/// (see [`crate::estimate`]); [`BoundParams::validate`] checks them, and
/// deserialisation validates too (a bad value is a deserialisation error
/// naming the field). Missing fields take the [`Default`] values, listed on
/// each field. The defaults of `learning_rate`, `local_steps`, `rounds` and
/// `batch_size` are the project's first trial profile (docs/method.md §6b); the
/// others are placeholders meant to be replaced by pilot estimates
/// (`objective_gap`, `smoothness`, `gradient_variance`) or by a calibration
/// (the three weights `c_Γ`, `c_C`, `c_S`, which no pilot can estimate: see
/// the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedParams")]
pub struct BoundParams {
    /// `F0 − F*`: initial objective minus its infimum (finite, `>= 0`).
    /// Estimator: [`crate::estimate::objective_gap`]. Default `ln 10 ≈ 2.302585`,
    /// the cross-entropy of a uniform prediction over 10 classes against the
    /// floor 0.
    pub objective_gap: f64,
    /// `η`: the local step size (finite, `> 0`). Default `5e-3` (docs/method.md §6b).
    pub learning_rate: f64,
    /// `E`: local steps per round (`>= 1`). Default `10` (docs/method.md §6b).
    pub local_steps: u32,
    /// `T`: number of rounds (`>= 1`). Default `40` (docs/method.md §6b).
    pub rounds: u32,
    /// `L`: smoothness constant of the objective (finite, `>= 0`).
    /// Estimator: [`crate::estimate::smoothness`]. Default `1` (placeholder).
    pub smoothness: f64,
    /// `σ²`: per-sample stochastic-gradient variance (finite, `>= 0`); the
    /// bound divides it by the batch size. Estimator:
    /// [`crate::estimate::gradient_variance`]. Default `1` (placeholder).
    pub gradient_variance: f64,
    /// `b`: mini-batch size (`>= 1`). Default `32` (docs/method.md §6b).
    pub batch_size: u32,
    /// `c_Γ`: weight of the structural-rank term (finite, `>= 0`).
    /// Default `1` (uncalibrated: unit weight).
    pub structural_weight: f64,
    /// `c_C`: weight of the covariance term (finite, `>= 0`).
    /// Default `1` (uncalibrated: unit weight).
    pub covariance_weight: f64,
    /// `c_S`: weight of the error-feedback sparsification term (finite,
    /// `>= 0`). Default `1` (uncalibrated: unit weight).
    pub sparsification_weight: f64,
}

impl Default for BoundParams {
    fn default() -> Self {
        Self {
            objective_gap: std::f64::consts::LN_10,
            learning_rate: 5e-3,
            local_steps: 10,
            rounds: 40,
            smoothness: 1.0,
            gradient_variance: 1.0,
            batch_size: 32,
            structural_weight: 1.0,
            covariance_weight: 1.0,
            sparsification_weight: 1.0,
        }
    }
}

/// The serde shadow of [`BoundParams`]: parsed first, then validated.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UncheckedParams {
    objective_gap: f64,
    learning_rate: f64,
    local_steps: u32,
    rounds: u32,
    smoothness: f64,
    gradient_variance: f64,
    batch_size: u32,
    structural_weight: f64,
    covariance_weight: f64,
    sparsification_weight: f64,
}

impl Default for UncheckedParams {
    fn default() -> Self {
        let d = BoundParams::default();
        Self {
            objective_gap: d.objective_gap,
            learning_rate: d.learning_rate,
            local_steps: d.local_steps,
            rounds: d.rounds,
            smoothness: d.smoothness,
            gradient_variance: d.gradient_variance,
            batch_size: d.batch_size,
            structural_weight: d.structural_weight,
            covariance_weight: d.covariance_weight,
            sparsification_weight: d.sparsification_weight,
        }
    }
}

impl TryFrom<UncheckedParams> for BoundParams {
    type Error = BoundError;

    fn try_from(u: UncheckedParams) -> Result<Self, BoundError> {
        let p = Self {
            objective_gap: u.objective_gap,
            learning_rate: u.learning_rate,
            local_steps: u.local_steps,
            rounds: u.rounds,
            smoothness: u.smoothness,
            gradient_variance: u.gradient_variance,
            batch_size: u.batch_size,
            structural_weight: u.structural_weight,
            covariance_weight: u.covariance_weight,
            sparsification_weight: u.sparsification_weight,
        };
        p.validate()?;
        Ok(p)
    }
}

/// Checks that an integer count is at least 1.
fn at_least_one(field: &'static str, value: u32) -> Result<(), BoundError> {
    if value >= 1 {
        Ok(())
    } else {
        Err(BoundError::InvalidValue {
            field,
            value: f64::from(value),
            expected: "an integer >= 1",
        })
    }
}

/// Checks that a sparsification ratio lies in `(0, 1]`.
pub(crate) fn check_ratio(ratio: f64) -> Result<f64, BoundError> {
    if ratio.is_finite() && ratio > 0.0 && ratio <= 1.0 {
        Ok(ratio)
    } else {
        Err(BoundError::InvalidValue {
            field: "ratio",
            value: ratio,
            expected: "a sparsification ratio in (0, 1]",
        })
    }
}

/// The error-feedback compression factor `(1 − ρ)/ρ²` for `ρ ∈ (0, 1]`:
/// `0` at `ρ = 1` (no compression), strictly decreasing in `ρ`, unbounded as
/// `ρ → 0`.
///
/// # Errors
/// [`BoundError::InvalidValue`] (field `ratio`) when `ρ` is outside `(0, 1]`
/// or not finite.
pub fn sparsification_factor(ratio: f64) -> Result<f64, BoundError> {
    let rho = check_ratio(ratio)?;
    Ok((1.0 - rho) / (rho * rho))
}

impl BoundParams {
    /// Checks every field: `η > 0`; `F0 − F*`, `L`, `σ²` and the three
    /// weights finite and `>= 0`; `E`, `T`, `b >= 1`.
    ///
    /// # Errors
    /// [`BoundError::InvalidValue`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), BoundError> {
        non_negative("objective_gap", self.objective_gap)?;
        positive("learning_rate", self.learning_rate)?;
        at_least_one("local_steps", self.local_steps)?;
        at_least_one("rounds", self.rounds)?;
        non_negative("smoothness", self.smoothness)?;
        non_negative("gradient_variance", self.gradient_variance)?;
        at_least_one("batch_size", self.batch_size)?;
        non_negative("structural_weight", self.structural_weight)?;
        non_negative("covariance_weight", self.covariance_weight)?;
        non_negative("sparsification_weight", self.sparsification_weight)?;
        Ok(())
    }

    /// The optimisation term `2(F0 − F*)/(η E T)` (independent of `r`, `ρ`).
    #[must_use]
    pub fn optimisation_term(&self) -> f64 {
        2.0 * self.objective_gap
            / (self.learning_rate * f64::from(self.local_steps) * f64::from(self.rounds))
    }

    /// The stochastic-noise term `η L σ²/b` (independent of `r`, `ρ`).
    #[must_use]
    pub fn noise_term(&self) -> f64 {
        self.learning_rate * self.smoothness * self.gradient_variance / f64::from(self.batch_size)
    }

    /// The bound, term by term, from the raw values `Γ(r)` (`gamma`, in
    /// `[0, 1]`), `C(r)` (`covariance`, finite, `>= 0`) and `ρ` (`ratio`, in
    /// `(0, 1]`). `rank` only labels error messages. Use
    /// [`crate::BoundModel::evaluate`] to get `Γ` and `C` from pilot data.
    ///
    /// # Errors
    /// [`BoundError::InvalidValue`] for a bad parameter, `gamma`,
    /// `covariance` or `ratio`; [`BoundError::NonFiniteTerm`] if a term
    /// overflows.
    pub fn terms(
        &self,
        rank: usize,
        gamma: f64,
        covariance: f64,
        ratio: f64,
    ) -> Result<BoundTerms, BoundError> {
        self.validate()?;
        if !(gamma.is_finite() && (0.0..=1.0).contains(&gamma)) {
            return Err(BoundError::InvalidValue {
                field: "gamma",
                value: gamma,
                expected: "an energy share in [0, 1]",
            });
        }
        non_negative("covariance", covariance)?;
        let factor = sparsification_factor(ratio)?;
        let terms = BoundTerms {
            optimisation: self.optimisation_term(),
            noise: self.noise_term(),
            structural: self.structural_weight * gamma,
            covariance: self.covariance_weight * covariance,
            sparsification: self.sparsification_weight * factor,
            total: 0.0,
        };
        let total = terms.optimisation
            + terms.noise
            + terms.structural
            + terms.covariance
            + terms.sparsification;
        let named = [
            ("optimisation", terms.optimisation),
            ("noise", terms.noise),
            ("structural", terms.structural),
            ("covariance", terms.covariance),
            ("sparsification", terms.sparsification),
            ("total", total),
        ];
        if let Some(&(term, value)) = named.iter().find(|(_, v)| !v.is_finite()) {
            return Err(BoundError::NonFiniteTerm {
                term,
                rank,
                ratio,
                value,
            });
        }
        Ok(BoundTerms { total, ..terms })
    }
}

/// The bound at one `(r, ρ)`, term by term (each already multiplied by its
/// weight), and their sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundTerms {
    /// `2(F0 − F*)/(η E T)`.
    pub optimisation: f64,
    /// `η L σ²/b`.
    pub noise: f64,
    /// `c_Γ·Γ(r)`.
    pub structural: f64,
    /// `c_C·C(r)`.
    pub covariance: f64,
    /// `c_S·(1−ρ)/ρ²`.
    pub sparsification: f64,
    /// The sum of the five terms above.
    pub total: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_hand_computation() {
        // Hand-worked: gap 3, η 0.1, E 5, T 20 → 2·3/(0.1·5·20) = 6/10 = 0.6;
        // L 2, σ² 8, b 4 → 0.1·2·8/4 = 0.4; c_Γ 2 · Γ 0.25 = 0.5;
        // c_C 3 · C 0.1 = 0.3; c_S 0.5 · (1 − 0.5)/0.25 = 0.5·2 = 1.
        let p = BoundParams {
            objective_gap: 3.0,
            learning_rate: 0.1,
            local_steps: 5,
            rounds: 20,
            smoothness: 2.0,
            gradient_variance: 8.0,
            batch_size: 4,
            structural_weight: 2.0,
            covariance_weight: 3.0,
            sparsification_weight: 0.5,
        };
        let t = p.terms(4, 0.25, 0.1, 0.5).unwrap();
        approx::assert_relative_eq!(t.optimisation, 0.6, max_relative = 1e-14);
        approx::assert_relative_eq!(t.noise, 0.4, max_relative = 1e-14);
        approx::assert_relative_eq!(t.structural, 0.5, max_relative = 1e-14);
        approx::assert_relative_eq!(t.covariance, 0.3, max_relative = 1e-14);
        approx::assert_relative_eq!(t.sparsification, 1.0, max_relative = 1e-14);
        approx::assert_relative_eq!(t.total, 2.8, max_relative = 1e-14);
    }

    #[test]
    fn sparsification_factor_hand_values() {
        assert_eq!(sparsification_factor(1.0).unwrap(), 0.0);
        // (1 − 0.25)/0.0625 = 12
        approx::assert_relative_eq!(sparsification_factor(0.25).unwrap(), 12.0);
        for bad in [0.0, -0.1, 1.0 + 1e-12, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                sparsification_factor(bad),
                Err(BoundError::InvalidValue { field: "ratio", .. })
            ));
        }
    }

    #[test]
    fn validation_names_the_field() {
        let cases: [(&str, BoundParams); 8] = [
            (
                "learning_rate",
                BoundParams {
                    learning_rate: 0.0,
                    ..Default::default()
                },
            ),
            (
                "learning_rate",
                BoundParams {
                    learning_rate: -1.0,
                    ..Default::default()
                },
            ),
            (
                "objective_gap",
                BoundParams {
                    objective_gap: -0.5,
                    ..Default::default()
                },
            ),
            (
                "smoothness",
                BoundParams {
                    smoothness: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "gradient_variance",
                BoundParams {
                    gradient_variance: f64::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "local_steps",
                BoundParams {
                    local_steps: 0,
                    ..Default::default()
                },
            ),
            (
                "batch_size",
                BoundParams {
                    batch_size: 0,
                    ..Default::default()
                },
            ),
            (
                "sparsification_weight",
                BoundParams {
                    sparsification_weight: -1.0,
                    ..Default::default()
                },
            ),
        ];
        for (name, p) in cases {
            match p.validate() {
                Err(BoundError::InvalidValue { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: expected an error, got {other:?}"),
            }
        }
        assert!(BoundParams::default().validate().is_ok());
    }

    #[test]
    fn terms_reject_bad_gamma_and_covariance() {
        let p = BoundParams::default();
        assert!(matches!(
            p.terms(1, 1.5, 0.0, 1.0),
            Err(BoundError::InvalidValue { field: "gamma", .. })
        ));
        assert!(matches!(
            p.terms(1, 0.5, -1.0, 1.0),
            Err(BoundError::InvalidValue {
                field: "covariance",
                ..
            })
        ));
        let big = BoundParams {
            covariance_weight: f64::MAX,
            ..Default::default()
        };
        assert!(matches!(
            big.terms(3, 0.5, 10.0, 1.0),
            Err(BoundError::NonFiniteTerm {
                term: "covariance",
                rank: 3,
                ..
            })
        ));
    }

    #[test]
    fn serde_fills_defaults_and_validates() {
        let p: BoundParams = serde_json::from_str(r#"{"learning_rate": 0.01}"#).unwrap();
        assert_eq!(
            p,
            BoundParams {
                learning_rate: 0.01,
                ..Default::default()
            }
        );
        let err = serde_json::from_str::<BoundParams>(r#"{"learning_rate": -0.01}"#).unwrap_err();
        assert!(err.to_string().contains("learning_rate"), "{err}");
        let err = serde_json::from_str::<BoundParams>(r#"{"rounds": 0}"#).unwrap_err();
        assert!(err.to_string().contains("rounds"), "{err}");
        let err = serde_json::from_str::<BoundParams>(r#"{"learnig_rate": 1}"#).unwrap_err();
        assert!(err.to_string().contains("learnig_rate"), "{err}");
        let round: BoundParams =
            serde_json::from_str(&serde_json::to_string(&BoundParams::default()).unwrap()).unwrap();
        assert_eq!(round, BoundParams::default());
    }
}
