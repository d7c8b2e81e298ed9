//! The covariance effect of separate aggregation (docs/method.md §1).
//!
//! Averaging the factors separately is not averaging the products:
//! `Σ_k p_k B_k A_k = B̄Ā + Σ_k p_k (B_k − B̄)(A_k − Ā)` with `B̄ = Σ p_k B_k`,
//! `Ā = Σ p_k A_k` (weights summing to one). The second term is what the server
//! loses by aggregating `A` and `B` one by one; its Frobenius norm, absolute and
//! relative to `‖Σ_k p_k B_k A_k‖_F`, is reported per round and per layer.

use ndarray::Array2;

/// Errors of the covariance metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CovarianceError {
    /// No clients were given.
    #[error("covariance needs at least one client")]
    Empty,
    /// A client's factors do not match the first client's shapes.
    #[error("client {client}: {what} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Index of the offending client.
        client: usize,
        /// Which factor (`B` or `A`).
        what: &'static str,
        /// Its shape.
        got: (usize, usize),
        /// The expected shape.
        expected: (usize, usize),
    },
    /// The weights are negative, non-finite or do not sum to a positive number.
    #[error("client weights must be finite, non-negative and not all zero")]
    Weights,
}

/// The covariance norm and the norm of the exact aggregate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Covariance {
    /// `‖Σ_k p_k (B_k − B̄)(A_k − Ā)‖_F`.
    pub norm: f64,
    /// `‖Σ_k p_k B_k A_k‖_F`.
    pub exact_norm: f64,
    /// `norm / exact_norm` (0 when both are 0).
    pub relative: f64,
}

/// Computes the covariance term for clients `(p_k, B_k, A_k)`; the weights are
/// normalised to sum to one. `B_k` is `d×r`, `A_k` is `r×l`.
pub fn covariance(
    clients: &[(f64, &Array2<f32>, &Array2<f32>)],
) -> Result<Covariance, CovarianceError> {
    let (_, b0, a0) = clients.first().ok_or(CovarianceError::Empty)?;
    let (bd, ad) = (b0.dim(), a0.dim());
    let mut total = 0.0;
    for (k, (p, b, a)) in clients.iter().enumerate() {
        if !p.is_finite() || *p < 0.0 {
            return Err(CovarianceError::Weights);
        }
        total += p;
        if b.dim() != bd {
            return Err(CovarianceError::Shape {
                client: k,
                what: "B",
                got: b.dim(),
                expected: bd,
            });
        }
        if a.dim() != ad {
            return Err(CovarianceError::Shape {
                client: k,
                what: "A",
                got: a.dim(),
                expected: ad,
            });
        }
    }
    if bd.1 != ad.0 {
        return Err(CovarianceError::Shape {
            client: 0,
            what: "A",
            got: ad,
            expected: (bd.1, ad.1),
        });
    }
    if total <= 0.0 {
        return Err(CovarianceError::Weights);
    }
    let mut b_bar = Array2::<f64>::zeros(bd);
    let mut a_bar = Array2::<f64>::zeros(ad);
    for (p, b, a) in clients {
        let w = p / total;
        b_bar.scaled_add(w, &b.mapv(f64::from));
        a_bar.scaled_add(w, &a.mapv(f64::from));
    }
    let mut cov = Array2::<f64>::zeros((bd.0, ad.1));
    let mut exact = Array2::<f64>::zeros((bd.0, ad.1));
    for (p, b, a) in clients {
        let w = p / total;
        let b = b.mapv(f64::from);
        let a = a.mapv(f64::from);
        exact.scaled_add(w, &b.dot(&a));
        cov.scaled_add(w, &(&b - &b_bar).dot(&(&a - &a_bar)));
    }
    let norm = frobenius(&cov);
    let exact_norm = frobenius(&exact);
    let relative = if exact_norm > 0.0 {
        norm / exact_norm
    } else {
        0.0
    };
    Ok(Covariance {
        norm,
        exact_norm,
        relative,
    })
}

fn frobenius(m: &Array2<f64>) -> f64 {
    m.iter().map(|v| v * v).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mat(rows: usize, cols: usize, v: &[f32]) -> Array2<f32> {
        Array2::from_shape_vec((rows, cols), v.to_vec()).unwrap()
    }

    /// Hand-worked: two clients, scalars (1×1 factors), p = (1/2, 1/2),
    /// B = (1, 3), A = (2, 0): B̄ = 2, Ā = 1, Σ p B A = 1, covariance
    /// = ½(−1)(1) + ½(1)(−1) = −1, so norm 1, exact norm 1, relative 1.
    #[test]
    fn hand_worked_scalars() {
        let b1 = mat(1, 1, &[1.0]);
        let a1 = mat(1, 1, &[2.0]);
        let b2 = mat(1, 1, &[3.0]);
        let a2 = mat(1, 1, &[0.0]);
        let c = covariance(&[(0.5, &b1, &a1), (0.5, &b2, &a2)]).unwrap();
        assert!((c.norm - 1.0).abs() < 1e-12);
        assert!((c.exact_norm - 1.0).abs() < 1e-12);
        assert!((c.relative - 1.0).abs() < 1e-12);
    }

    #[test]
    fn identical_clients_have_no_covariance() {
        let b = mat(2, 1, &[1.0, 2.0]);
        let a = mat(1, 3, &[1.0, -1.0, 0.5]);
        let c = covariance(&[(0.3, &b, &a), (0.7, &b, &a)]).unwrap();
        assert!(c.norm < 1e-12 && c.exact_norm > 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let b = mat(2, 1, &[1.0, 2.0]);
        let a = mat(1, 3, &[1.0, -1.0, 0.5]);
        let a_bad = mat(2, 3, &[0.0; 6]);
        assert_eq!(covariance(&[]), Err(CovarianceError::Empty));
        assert!(matches!(
            covariance(&[(0.5, &b, &a), (0.5, &b, &a_bad)]),
            Err(CovarianceError::Shape {
                client: 1,
                what: "A",
                ..
            })
        ));
        assert_eq!(covariance(&[(-1.0, &b, &a)]), Err(CovarianceError::Weights));
        assert_eq!(covariance(&[(0.0, &b, &a)]), Err(CovarianceError::Weights));
    }

    proptest! {
        /// The decomposition identity: ‖Σ p B A − B̄Ā‖_F equals the covariance norm.
        #[test]
        fn decomposition_identity(
            seed in prop::collection::vec(-2.0f32..2.0, 3 * (4 * 2 + 2 * 3)),
            w in prop::collection::vec(0.1f64..1.0, 3),
        ) {
            let (d, r, l) = (4, 2, 3);
            let mut clients = Vec::new();
            for (k, &wk) in w.iter().enumerate() {
                let off = k * (d * r + r * l);
                let b = mat(d, r, &seed[off..off + d * r]);
                let a = mat(r, l, &seed[off + d * r..off + d * r + r * l]);
                clients.push((wk, b, a));
            }
            let refs: Vec<_> = clients.iter().map(|(p, b, a)| (*p, b, a)).collect();
            let c = covariance(&refs).unwrap();
            let total: f64 = w.iter().sum();
            let mut exact = Array2::<f64>::zeros((d, l));
            let mut b_bar = Array2::<f64>::zeros((d, r));
            let mut a_bar = Array2::<f64>::zeros((r, l));
            for (p, b, a) in &clients {
                let b = b.mapv(f64::from);
                let a = a.mapv(f64::from);
                exact.scaled_add(p / total, &b.dot(&a));
                b_bar.scaled_add(p / total, &b);
                a_bar.scaled_add(p / total, &a);
            }
            let gap = frobenius(&(&exact - &b_bar.dot(&a_bar)));
            prop_assert!((gap - c.norm).abs() <= 1e-9 * (1.0 + gap));
            prop_assert!((frobenius(&exact) - c.exact_norm).abs() <= 1e-9 * (1.0 + c.exact_norm));
        }
    }
}
