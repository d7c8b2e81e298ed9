//! The structural-rank term `Γ(r)`: the share of a high-rank reference
//! update's energy beyond rank `r`.

use serde::Serialize;

use crate::error::{BoundError, non_negative_elements};

/// `Γ(r) = Σ_{i>r} σ_i² / Σ_i σ_i²` as a function of `r`, from the singular
/// values `σ_i` of one or more layers' high-rank reference updates (e.g. the
/// dense update `ΔW` of a short pilot at rank `r_max`, or a full fine-tune).
///
/// Conventions:
/// - the singular values need not be sorted (they are sorted descending
///   here); any that are `0` are allowed;
/// - `Γ(0) = 1`, `Γ(r) = 0` for `r >=` the number of singular values;
/// - all-zero input (no energy at all): `Γ(r) = 0` for every `r`, `Γ(0)`
///   included. A zero update is represented exactly at any rank, so no
///   energy is missed;
/// - several layers: each layer is truncated at rank `r` separately, and the
///   energies they miss are pooled, `Γ(r) = Σ_l Σ_{i>r} σ_{l,i}² / Σ_l Σ_i σ_{l,i}²`.
///   This is the energy-weighted mean of the per-layer `Γ_l(r)` (weights
///   `E_l = Σ_i σ_{l,i}²`): a layer with a large update counts more. Layers
///   with no energy contribute nothing.
///
/// Numerically, singular values are divided by the largest of them before
/// squaring (no overflow for huge values) and tail sums run from the smallest
/// up, so `Γ` is exactly nonincreasing in `r` in floating point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyProfile {
    /// `gamma[r]` for `r = 0..=n`, `n` the largest layer's count.
    gamma: Vec<f64>,
    /// Number of layers pooled.
    layers: usize,
}

impl EnergyProfile {
    /// The profile of a single layer from its singular values.
    ///
    /// # Errors
    /// [`BoundError::TooFew`] (field `singular_values`) when empty;
    /// [`BoundError::InvalidElement`] for a negative or non-finite value.
    pub fn from_singular_values(singular_values: &[f64]) -> Result<Self, BoundError> {
        Self::from_layers(&[singular_values])
    }

    /// The pooled (energy-weighted) profile of several layers, each given by
    /// its singular values.
    ///
    /// # Errors
    /// [`BoundError::TooFew`] (field `layers`) when there is no layer, or
    /// (field `singular_values`) when a layer is empty;
    /// [`BoundError::InvalidElement`] (field `singular_values`) for a
    /// negative or non-finite value.
    pub fn from_layers<S: AsRef<[f64]>>(layers: &[S]) -> Result<Self, BoundError> {
        if layers.is_empty() {
            return Err(BoundError::TooFew {
                field: "layers",
                len: 0,
                min: 1,
            });
        }
        let mut scale = 0.0_f64;
        let mut longest = 0;
        for layer in layers {
            let sv = layer.as_ref();
            if sv.is_empty() {
                return Err(BoundError::TooFew {
                    field: "singular_values",
                    len: 0,
                    min: 1,
                });
            }
            non_negative_elements("singular_values", sv)?;
            longest = longest.max(sv.len());
            scale = sv.iter().fold(scale, |m, &v| m.max(v));
        }
        // tails[r] = Σ_l Σ_{i>r} (σ_{l,i}/scale)², i counted from 1 in
        // descending order; accumulated from the smallest term upwards.
        let mut tails = vec![0.0_f64; longest + 1];
        if scale > 0.0 {
            for layer in layers {
                let mut energies: Vec<f64> = layer
                    .as_ref()
                    .iter()
                    .map(|&v| {
                        let x = v / scale;
                        x * x
                    })
                    .collect();
                energies.sort_by(|a, b| b.total_cmp(a));
                let mut tail = 0.0;
                for r in (0..energies.len()).rev() {
                    tail += energies[r];
                    tails[r] += tail;
                }
            }
        }
        let total = tails[0];
        let gamma = if total > 0.0 {
            tails.iter().map(|t| (t / total).min(1.0)).collect()
        } else {
            vec![0.0; longest + 1]
        };
        Ok(Self {
            gamma,
            layers: layers.len(),
        })
    }

    /// `Γ(r)`, in `[0, 1]`, nonincreasing in `r`.
    #[must_use]
    pub fn gamma(&self, rank: usize) -> f64 {
        self.gamma.get(rank).copied().unwrap_or(0.0)
    }

    /// The largest number of singular values of any layer: `Γ(r) = 0` from
    /// there on.
    #[must_use]
    pub fn len(&self) -> usize {
        self.gamma.len() - 1
    }

    /// Always `false`: a profile holds at least one singular value (kept for
    /// the `len`/`is_empty` convention).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of layers pooled into this profile.
    #[must_use]
    pub fn layers(&self) -> usize {
        self.layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn hand_worked_single_layer() {
        // σ = (3, 2, 1), given unsorted: energies 9, 4, 1, total 14.
        // Γ(0) = 1, Γ(1) = 5/14, Γ(2) = 1/14, Γ(3) = Γ(10) = 0.
        let p = EnergyProfile::from_singular_values(&[1.0, 3.0, 2.0]).unwrap();
        assert_eq!(p.gamma(0), 1.0);
        assert_relative_eq!(p.gamma(1), 5.0 / 14.0, max_relative = 1e-15);
        assert_relative_eq!(p.gamma(2), 1.0 / 14.0, max_relative = 1e-15);
        assert_eq!(p.gamma(3), 0.0);
        assert_eq!(p.gamma(10), 0.0);
        assert_eq!(p.len(), 3);
        assert!(!p.is_empty());
        assert_eq!(p.layers(), 1);
    }

    #[test]
    fn hand_worked_two_layers() {
        // Layer 1: σ = (3, 2, 1), energy 14, tail beyond 1: 5.
        // Layer 2: σ = (1, 1), energy 2, tail beyond 1: 1.
        // Γ(1) = (5 + 1)/16 = 0.375; Γ(2) = (1 + 0)/16 = 0.0625.
        let p = EnergyProfile::from_layers(&[vec![3.0, 2.0, 1.0], vec![1.0, 1.0]]).unwrap();
        assert_relative_eq!(p.gamma(1), 0.375, max_relative = 1e-15);
        assert_relative_eq!(p.gamma(2), 0.0625, max_relative = 1e-15);
        assert_eq!(p.gamma(3), 0.0);
        assert_eq!(p.layers(), 2);
    }

    #[test]
    fn all_zero_is_zero_everywhere() {
        let p = EnergyProfile::from_singular_values(&[0.0, 0.0]).unwrap();
        for r in 0..4 {
            assert_eq!(p.gamma(r), 0.0);
        }
        // A zero layer beside a nonzero one contributes nothing.
        let q = EnergyProfile::from_layers(&[vec![0.0; 5], vec![3.0, 2.0, 1.0]]).unwrap();
        assert_relative_eq!(q.gamma(1), 5.0 / 14.0, max_relative = 1e-15);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        // Scale invariance: (3, 2, 1)·1e200 gives the same profile.
        let p = EnergyProfile::from_singular_values(&[3e200, 2e200, 1e200]).unwrap();
        assert_relative_eq!(p.gamma(1), 5.0 / 14.0, max_relative = 1e-14);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert_eq!(
            EnergyProfile::from_singular_values(&[]),
            Err(BoundError::TooFew {
                field: "singular_values",
                len: 0,
                min: 1
            })
        );
        let none: [Vec<f64>; 0] = [];
        assert!(matches!(
            EnergyProfile::from_layers(&none),
            Err(BoundError::TooFew {
                field: "layers",
                ..
            })
        ));
        assert!(matches!(
            EnergyProfile::from_singular_values(&[1.0, -1.0]),
            Err(BoundError::InvalidElement {
                field: "singular_values",
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            EnergyProfile::from_singular_values(&[f64::NAN]),
            Err(BoundError::InvalidElement {
                field: "singular_values",
                index: 0,
                ..
            })
        ));
    }
}
