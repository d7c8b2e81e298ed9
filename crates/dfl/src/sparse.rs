//! SO-LoRA's plain-matrix pieces: frozen random Gaussian projections `A`,
//! their near-orthogonality across devices, the layer-wise sparsity budget
//! of `B` and the collision rate of two sparse `B`s. `ndarray` only.
//!
//! Near-orthogonality: for independent `A_i, A_j ∈ R^{r×l}` with
//! i.i.d. `N(0, 1/l)` entries, `E‖A_i A_jᵀ‖_F² = r²/l` while
//! `E‖A_i‖_F² = r`, so the normalised cross-Gram norm
//! ([`cross_coherence`]) is about `1/√l`: different devices' adapters read
//! nearly orthogonal input subspaces once `l ≫ r²`.

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// Errors of the sparse pieces.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SparseError {
    /// An argument is out of its range.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SparseError {
    SparseError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A `rows × cols` matrix with i.i.d. `N(0, 1/cols)` entries from `seed`:
/// a random projection whose rows have unit expected squared norm.
///
/// # Errors
/// [`SparseError::Invalid`] naming `shape` for a zero dimension.
pub fn gaussian_projection(
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<Array2<f32>, SparseError> {
    if rows == 0 || cols == 0 {
        return Err(invalid(
            "shape",
            format!("{rows}×{cols} has a zero dimension"),
        ));
    }
    let normal = Normal::new(0.0f64, (1.0 / cols as f64).sqrt())
        .map_err(|e| invalid("shape", e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(Array2::from_shape_fn((rows, cols), |_| {
        normal.sample(&mut rng) as f32
    }))
}

/// `‖A_i A_jᵀ‖_F / (‖A_i‖_F·‖A_j‖_F)`: 1 for identical rank-1 projections,
/// 0 for row spaces at right angles; about `1/√l` for independent Gaussian
/// projections of width `l`.
///
/// # Errors
/// [`SparseError::Invalid`] naming `a` for unequal widths or a zero matrix.
pub fn cross_coherence(ai: &Array2<f32>, aj: &Array2<f32>) -> Result<f64, SparseError> {
    if ai.ncols() != aj.ncols() {
        return Err(invalid(
            "a",
            format!("widths {} and {} differ", ai.ncols(), aj.ncols()),
        ));
    }
    let f = |m: &Array2<f32>| m.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    let (ni, nj) = (f(ai), f(aj));
    if !(ni > 0.0 && nj > 0.0) {
        return Err(invalid("a", "a zero projection has no direction"));
    }
    let ai64 = ai.mapv(f64::from);
    let aj64 = aj.mapv(f64::from);
    let g = ai64.dot(&aj64.t());
    Ok(g.iter().map(|v| v * v).sum::<f64>().sqrt() / (ni * nj))
}

/// The expected squared cross-Gram norm `E‖A_i A_jᵀ‖_F² = r_i·r_j·l·σ⁴`
/// of independent projections with i.i.d. `N(0, σ²)` entries (`σ² = 1/l`
/// for [`gaussian_projection`]: `r_i·r_j/l`).
#[must_use]
pub fn expected_cross_gram_sq(ri: usize, rj: usize, l: usize, sigma2: f64) -> f64 {
    ri as f64 * rj as f64 * l as f64 * sigma2 * sigma2
}

/// A sparse matrix as sorted row-major positions and their values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SparseMatrix {
    /// Rows of the dense matrix.
    pub rows: usize,
    /// Columns of the dense matrix.
    pub cols: usize,
    /// Row-major positions of the kept entries, ascending.
    pub positions: Vec<u32>,
    /// Their values.
    pub values: Vec<f32>,
}

impl SparseMatrix {
    /// Kept entries.
    #[must_use]
    pub fn nnz(&self) -> usize {
        self.positions.len()
    }

    /// The dense matrix (zeros elsewhere).
    #[must_use]
    pub fn to_dense(&self) -> Array2<f32> {
        let mut m = Array2::zeros((self.rows, self.cols));
        if let Some(s) = m.as_slice_mut() {
            for (&p, &v) in self.positions.iter().zip(&self.values) {
                s[p as usize] = v;
            }
        }
        m
    }

    /// Bits to send it: each kept entry as a `bits_per_value` value plus
    /// its position in `⌈log2(rows·cols)⌉` bits.
    #[must_use]
    pub fn payload_bits(&self, bits_per_value: u32) -> f64 {
        self.nnz() as f64 * f64::from(bits_per_value + index_bits(self.rows * self.cols))
    }
}

impl SparseMatrix {
    /// The non-zero entries of a dense matrix, positions ascending (no
    /// ranking: what a support comparison needs).
    #[must_use]
    pub fn from_dense(m: &Array2<f32>) -> Self {
        let (rows, cols) = m.dim();
        let (positions, values) = m
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(p, &v)| (p as u32, v))
            .unzip();
        Self {
            rows,
            cols,
            positions,
            values,
        }
    }
}

/// Bits of a position among `len` entries, `⌈log2(len)⌉` (0 for `len ≤ 1`).
#[must_use]
pub fn index_bits(len: usize) -> u32 {
    if len <= 1 {
        0
    } else {
        usize::BITS - (len - 1).leading_zeros()
    }
}

/// The layer-wise budget: `⌈density·len⌉` entries, at least 1.
///
/// # Errors
/// [`SparseError::Invalid`] naming `density` outside `(0, 1]`.
pub fn budget(len: usize, density: f64) -> Result<usize, SparseError> {
    if !(density > 0.0 && density <= 1.0) {
        return Err(invalid("density", format!("{density} must lie in (0, 1]")));
    }
    Ok(((density * len as f64).ceil() as usize).clamp(1.min(len), len))
}

/// The `k` entries of largest magnitude of `m` (ties: the lower position),
/// as a [`SparseMatrix`] with ascending positions.
///
/// # Errors
/// [`SparseError::Invalid`] naming `k` above the entry count, or `m` for a
/// non-finite entry.
pub fn top_k(m: &Array2<f32>, k: usize) -> Result<SparseMatrix, SparseError> {
    let (rows, cols) = m.dim();
    let len = rows * cols;
    if k > len {
        return Err(invalid("k", format!("{k} of {len} entries")));
    }
    let flat: Vec<f32> = m.iter().copied().collect();
    if flat.iter().any(|v| !v.is_finite()) {
        return Err(invalid("m", "a non-finite entry cannot be ranked"));
    }
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| flat[b].abs().total_cmp(&flat[a].abs()).then(a.cmp(&b)));
    let mut keep: Vec<usize> = order[..k].to_vec();
    keep.sort_unstable();
    Ok(SparseMatrix {
        rows,
        cols,
        positions: keep.iter().map(|&p| p as u32).collect(),
        values: keep.iter().map(|&p| flat[p]).collect(),
    })
}

/// The collision rate of two sparse matrices of one shape:
/// `|S_a ∩ S_b| / min(|S_a|, |S_b|)` over their non-zero positions (0 when
/// either is empty). Independent uniform supports of sizes `k_a ≤ k_b` out
/// of `N` collide at `k_b/N` in expectation.
///
/// # Errors
/// [`SparseError::Invalid`] naming `shape` when the shapes differ.
pub fn collision_rate(a: &SparseMatrix, b: &SparseMatrix) -> Result<f64, SparseError> {
    if (a.rows, a.cols) != (b.rows, b.cols) {
        return Err(invalid(
            "shape",
            format!("{}×{} against {}×{}", a.rows, a.cols, b.rows, b.cols),
        ));
    }
    let support = |s: &SparseMatrix| -> Vec<u32> {
        s.positions
            .iter()
            .zip(&s.values)
            .filter(|(_, v)| **v != 0.0)
            .map(|(p, _)| *p)
            .collect()
    };
    let (sa, sb) = (support(a), support(b));
    let m = sa.len().min(sb.len());
    if m == 0 {
        return Ok(0.0);
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < sa.len() && j < sb.len() {
        match sa[i].cmp(&sb[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(both as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn index_bits_and_budget_by_hand() {
        assert_eq!(
            [
                index_bits(1),
                index_bits(2),
                index_bits(3),
                index_bits(4),
                index_bits(5),
                index_bits(1024),
                index_bits(1025)
            ],
            [0, 1, 2, 2, 3, 10, 11]
        );
        assert_eq!(budget(512, 0.25).expect("ok"), 128);
        assert_eq!(budget(10, 0.01).expect("ok"), 1);
        assert_eq!(budget(10, 1.0).expect("ok"), 10);
        assert!(
            budget(10, 0.0).is_err() && budget(10, 1.5).is_err() && budget(10, f64::NAN).is_err()
        );
    }

    #[test]
    fn top_k_by_hand() {
        let m = ndarray::arr2(&[[0.5f32, -3.0], [2.0, 0.5]]);
        let s = top_k(&m, 3).expect("ok");
        // |−3| > 2 > 0.5 = 0.5: the tie goes to the lower position (0).
        assert_eq!(s.positions, vec![0, 1, 2]);
        assert_eq!(s.values, vec![0.5, -3.0, 2.0]);
        assert_eq!(s.to_dense(), ndarray::arr2(&[[0.5f32, -3.0], [2.0, 0.0]]));
        assert_eq!(s.payload_bits(32), 3.0 * 34.0);
        assert!(top_k(&m, 5).is_err());
        assert!(top_k(&ndarray::arr2(&[[f32::NAN]]), 1).is_err());
    }

    #[test]
    fn cross_gram_matches_its_expectation() {
        // Monte Carlo against the closed form r_i·r_j/l (σ² = 1/l).
        let (r, l) = (4, 64);
        let trials = 400;
        let mut sum = 0.0;
        for t in 0..trials {
            let ai = gaussian_projection(r, l, 2 * t)
                .expect("shape")
                .mapv(f64::from);
            let aj = gaussian_projection(r, l, 2 * t + 1)
                .expect("shape")
                .mapv(f64::from);
            sum += ai.dot(&aj.t()).iter().map(|v| v * v).sum::<f64>();
        }
        let mc = sum / trials as f64;
        let want = expected_cross_gram_sq(r, r, l, 1.0 / l as f64);
        // The estimate's relative standard error is about sqrt(2/(r²·trials)) ≈ 1.8%.
        assert!((mc / want - 1.0).abs() < 0.08, "{mc} vs {want}");
        let a = gaussian_projection(r, l, 99).expect("shape");
        assert!((cross_coherence(&a, &a).expect("ok") - 1.0).abs() < 0.5);
        let b = gaussian_projection(r, l, 100).expect("shape");
        let c = cross_coherence(&a, &b).expect("ok");
        assert!(c < 3.0 / (l as f64).sqrt(), "{c}");
    }

    #[test]
    fn coherence_of_parallel_and_orthogonal_rows() {
        let a = ndarray::arr2(&[[1.0f32, 0.0, 0.0]]);
        let b = ndarray::arr2(&[[0.0f32, 2.0, 0.0]]);
        assert_eq!(cross_coherence(&a, &b).expect("ok"), 0.0);
        assert!((cross_coherence(&a, &(a.clone() * 3.0)).expect("ok") - 1.0).abs() < 1e-12);
        assert!(cross_coherence(&a, &ndarray::arr2(&[[1.0f32, 0.0]])).is_err());
        assert!(cross_coherence(&a, &ndarray::arr2(&[[0.0f32, 0.0, 0.0]])).is_err());
    }

    #[test]
    fn collision_of_random_supports_matches_its_expectation() {
        use rand::seq::index::sample;
        let (n, ka, kb) = (400usize, 40usize, 100usize);
        let mut rng = StdRng::seed_from_u64(5);
        let mut total = 0.0;
        let trials = 500;
        let make = |idx: Vec<usize>| {
            let mut p: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            p.sort_unstable();
            SparseMatrix {
                rows: 20,
                cols: 20,
                values: vec![1.0; p.len()],
                positions: p,
            }
        };
        for _ in 0..trials {
            let a = make(sample(&mut rng, n, ka).into_vec());
            let b = make(sample(&mut rng, n, kb).into_vec());
            total += collision_rate(&a, &b).expect("shapes");
        }
        let mean = total / trials as f64;
        assert!((mean - kb as f64 / n as f64).abs() < 0.02, "{mean}");
    }

    proptest! {
        #[test]
        fn top_k_keeps_the_largest_and_roundtrips(
            vals in proptest::collection::vec(-10.0f32..10.0, 1..60),
            k_raw in 0usize..60,
        ) {
            let n = vals.len();
            let k = k_raw % (n + 1);
            let m = Array2::from_shape_vec((1, n), vals.clone()).expect("shape");
            let s = top_k(&m, k).expect("valid");
            prop_assert_eq!(s.nnz(), k);
            let kept_min = s.values.iter().map(|v| v.abs()).fold(f32::INFINITY, f32::min);
            let dense = s.to_dense();
            for (i, &v) in vals.iter().enumerate() {
                if s.positions.contains(&(i as u32)) {
                    prop_assert_eq!(dense[[0, i]], v);
                } else {
                    prop_assert!(v.abs() <= kept_min);
                    prop_assert_eq!(dense[[0, i]], 0.0);
                }
            }
        }

        #[test]
        fn collision_is_symmetric_in_unit_interval_and_brute_force(
            a in proptest::collection::btree_set(0u32..50, 0..30),
            b in proptest::collection::btree_set(0u32..50, 0..30),
        ) {
            let mk = |s: &std::collections::BTreeSet<u32>| SparseMatrix {
                rows: 5, cols: 10, positions: s.iter().copied().collect(), values: vec![1.0; s.len()],
            };
            let (sa, sb) = (mk(&a), mk(&b));
            let c = collision_rate(&sa, &sb).expect("shapes");
            prop_assert!((0.0..=1.0).contains(&c));
            prop_assert_eq!(c, collision_rate(&sb, &sa).expect("shapes"));
            let both = a.intersection(&b).count();
            let m = a.len().min(b.len());
            let want = if m == 0 { 0.0 } else { both as f64 / m as f64 };
            prop_assert_eq!(c, want);
        }
    }
}
