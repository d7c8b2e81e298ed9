//! The orthogonality regulariser of docs/method.md §1 (SOFT's only change to training).

use candle_core::{D, Tensor};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, check_shape};

/// Guard added to squared norms before normalising in the scale-invariant
/// variant: a column `b_i` is divided by `sqrt(‖b_i‖² + ε²)`, so an all-zero
/// column (e.g. `B` at its zero init) stays zero and contributes nothing
/// instead of producing `0/0`.
pub const NORM_EPS: f64 = 1e-8;

/// Which form of the penalty to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegulariserKind {
    /// `‖BᵀB − diag(BᵀB)‖_F² + ‖AAᵀ − diag(AAᵀ)‖_F²` as written in the paper;
    /// it scales with `‖B‖⁴` and `‖A‖⁴`.
    #[default]
    Plain,
    /// The same on the column-normalised `B` and row-normalised `A` (the
    /// off-diagonal of the cosine Gram matrices); invariant to rescaling a
    /// column of `B` or a row of `A`. Its gradient grows like `1/‖b_i‖` as a
    /// column shrinks (see [`NORM_EPS`]), so a fixed `ζ` pushes hardest on
    /// small factors.
    ScaleInvariant,
}

/// `Σ_{i≠j} G_ij²` for the Gram matrix `G` of `x`'s columns (`cols = true`)
/// or rows, with the diagonal masked out exactly (no `‖G‖² − Σ G_ii²`
/// cancellation when the factors are nearly orthogonal).
fn off_diagonal_sq(x: &Tensor, cols: bool) -> Result<Tensor> {
    let g = if cols {
        x.t()?.matmul(x)?
    } else {
        x.matmul(&x.t()?)?
    };
    let r = g.dim(0)?;
    let eye = Tensor::eye(r, g.dtype(), g.device())?;
    let mask = (Tensor::ones_like(&eye)? - eye)?;
    Ok((g * mask)?.sqr()?.sum_all()?)
}

/// The penalty for one adapted matrix with factors `b` (`d × r`) and `a`
/// (`r × l`), as a differentiable scalar tensor (dtype of the inputs).
///
/// # Errors
/// [`crate::LoraError::Shape`] if the ranks of `b` and `a` differ or a factor
/// is not 2-D.
pub fn orthogonality_penalty(b: &Tensor, a: &Tensor, kind: RegulariserKind) -> Result<Tensor> {
    let (_, rb) = b.dims2()?;
    let (ra, _) = a.dims2()?;
    check_shape("A rows (rank of B)", &[rb], &[ra])?;
    let (bn, an) = match kind {
        RegulariserKind::Plain => (b.clone(), a.clone()),
        RegulariserKind::ScaleInvariant => {
            let eps2 = NORM_EPS * NORM_EPS;
            let cn = (b.sqr()?.sum_keepdim(0)? + eps2)?.sqrt()?;
            let rn = (a.sqr()?.sum_keepdim(D::Minus1)? + eps2)?.sqrt()?;
            (b.broadcast_div(&cn)?, a.broadcast_div(&rn)?)
        }
    };
    Ok((off_diagonal_sq(&bn, true)? + off_diagonal_sq(&an, false)?)?)
}

/// The same penalty computed on plain matrices in `f64` with explicit loops
/// (for reporting, e.g. the `ζ` ablation, and as an independent check of
/// [`orthogonality_penalty`]).
///
/// # Errors
/// [`crate::LoraError::Shape`] if the ranks differ.
pub fn orthogonality_value(b: &Array2<f32>, a: &Array2<f32>, kind: RegulariserKind) -> Result<f64> {
    let r = b.ncols();
    check_shape("A rows (rank of B)", &[r], &[a.nrows()])?;
    let eps2 = NORM_EPS * NORM_EPS;
    let col = |i: usize| -> Vec<f64> { b.column(i).iter().map(|&v| f64::from(v)).collect() };
    let row = |i: usize| -> Vec<f64> { a.row(i).iter().map(|&v| f64::from(v)).collect() };
    let normalise = |v: Vec<f64>| -> Vec<f64> {
        match kind {
            RegulariserKind::Plain => v,
            RegulariserKind::ScaleInvariant => {
                let n = (v.iter().map(|x| x * x).sum::<f64>() + eps2).sqrt();
                v.into_iter().map(|x| x / n).collect()
            }
        }
    };
    let bs: Vec<Vec<f64>> = (0..r).map(|i| normalise(col(i))).collect();
    let as_: Vec<Vec<f64>> = (0..r).map(|i| normalise(row(i))).collect();
    let dot = |x: &[f64], y: &[f64]| -> f64 { x.iter().zip(y).map(|(p, q)| p * q).sum() };
    let mut total = 0.0;
    for i in 0..r {
        for j in 0..r {
            if i != j {
                total += dot(&bs[i], &bs[j]).powi(2) + dot(&as_[i], &as_[j]).powi(2);
            }
        }
    }
    Ok(total)
}
