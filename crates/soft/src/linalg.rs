//! The SVD and QR wrapper: the only place that talks to `faer`.
//!
//! Everything is computed in `f64`, whatever the input precision; inputs are
//! `ndarray` matrices of `f32` or `f64`, outputs `ndarray` matrices of `f64`.
//! Swapping the backend is a change to this file alone.

use crate::SoftError;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use ndarray::{Array1, Array2, ArrayRef2, Axis};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A real scalar the SVD accepts (`f32` or `f64`); computations run in `f64`.
pub trait Real: Copy + sealed::Sealed {
    /// The value as `f64` (exact for both implementors).
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// A singular value decomposition `M = U·diag(s)·Vᵀ`, singular values
/// non-negative and non-increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct Svd {
    /// Left singular vectors, one per column.
    pub u: Array2<f64>,
    /// Singular values, non-increasing.
    pub s: Array1<f64>,
    /// Right singular vectors, one per row (`Vᵀ`).
    pub vt: Array2<f64>,
}

/// Full SVD of an `n×p` matrix: `U` is `n×n`, `s` has `min(n, p)` entries,
/// `Vᵀ` is `p×p`.
///
/// # Errors
/// [`SoftError::Empty`] for a matrix with a zero dimension,
/// [`SoftError::NonFinite`] for NaN/inf entries, [`SoftError::SvdNoConvergence`].
pub fn svd<T: Real>(a: &ArrayRef2<T>) -> Result<Svd, SoftError> {
    let m = checked_mat(a, "svd input")?;
    let dec = m.as_ref().svd().map_err(|_| SoftError::SvdNoConvergence {
        context: "svd input",
    })?;
    Ok(Svd {
        u: to_array(dec.U()),
        s: dec.S().column_vector().iter().copied().collect(),
        vt: to_array(dec.V().transpose()),
    })
}

/// Thin SVD of an `n×p` matrix: with `k = min(n, p)`, `U` is `n×k`, `s` has
/// `k` entries, `Vᵀ` is `k×p`.
///
/// # Errors
/// As [`svd`].
pub fn thin_svd<T: Real>(a: &ArrayRef2<T>) -> Result<Svd, SoftError> {
    let m = checked_mat(a, "svd input")?;
    let (u, s, v) = thin_svd_mat(m.as_ref(), "svd input")?;
    Ok(Svd {
        u: to_array(u.as_ref()),
        s: Array1::from(s),
        vt: to_array(v.as_ref().transpose()),
    })
}

/// The leading `rank` triplets of the thin SVD (fewer if the matrix has fewer
/// than `rank` singular values): the best rank-`rank` approximation
/// (Eckart–Young) is `U·diag(s)·Vᵀ` of the result.
///
/// # Errors
/// As [`svd`].
pub fn truncated_svd<T: Real>(a: &ArrayRef2<T>, rank: usize) -> Result<Svd, SoftError> {
    let full = thin_svd(a)?;
    let k = rank.min(full.s.len());
    Ok(Svd {
        u: full.u.slice_axis(Axis(1), (..k).into()).to_owned(),
        s: full.s.slice_axis(Axis(0), (..k).into()).to_owned(),
        vt: full.vt.slice_axis(Axis(0), (..k).into()).to_owned(),
    })
}

/// The `r` singular values of the product `B·A` (`B` is `d×r`, `A` is `r×l`)
/// without forming it: thin QR of `B` and of `Aᵀ`, then the SVD of the small
/// core `R_B·R_Aᵀ`. Cost `O((d+l)r² + r³)` instead of `O(dlr + dl·min(d,l))`.
/// Padded with zeros to length `r` when `min(d, l) < r` (the product has at
/// most `min(d, l, r)` non-zero singular values).
///
/// # Errors
/// [`SoftError::Shape`] if `A` does not have `B.ncols()` rows, and as [`svd`].
pub fn product_singular_values(
    b: &ArrayRef2<f32>,
    a: &ArrayRef2<f32>,
) -> Result<Vec<f64>, SoftError> {
    let r = b.ncols();
    if a.nrows() != r {
        return Err(SoftError::Shape {
            field: "a",
            got: a.dim(),
            expected: (r, a.ncols()),
        });
    }
    let bm = checked_mat(b, "b")?;
    let am = checked_mat(a, "a")?;
    let (_, mut s, _) = lowrank_svd(bm.as_ref(), am.as_ref().transpose())?;
    s.resize(r.max(s.len()), 0.0);
    s.truncate(r);
    Ok(s)
}

/// Converts after checking non-emptiness and finiteness.
fn checked_mat<T: Real>(a: &ArrayRef2<T>, field: &'static str) -> Result<Mat<f64>, SoftError> {
    let (n, p) = a.dim();
    if n == 0 || p == 0 {
        return Err(SoftError::Empty { field, got: (n, p) });
    }
    if let Some(((row, col), v)) = a.indexed_iter().find(|(_, v)| !v.to_f64().is_finite()) {
        return Err(SoftError::NonFinite {
            field,
            row,
            col,
            value: v.to_f64(),
        });
    }
    Ok(Mat::from_fn(n, p, |i, j| a[[i, j]].to_f64()))
}

/// A thin SVD as `faer` matrices: `(U, s, V)`.
pub(crate) type MatSvd = (Mat<f64>, Vec<f64>, Mat<f64>);

/// `faer` matrix to `ndarray`.
pub(crate) fn to_array(m: MatRef<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// Thin SVD `(U, s, V)` of a `faer` matrix.
pub(crate) fn thin_svd_mat(m: MatRef<'_, f64>, context: &'static str) -> Result<MatSvd, SoftError> {
    let dec = m
        .thin_svd()
        .map_err(|_| SoftError::SvdNoConvergence { context })?;
    let s = dec.S().column_vector().iter().copied().collect();
    Ok((dec.U().to_owned(), s, dec.V().to_owned()))
}

/// Thin SVD `(U, s, V)` of the product `L·Rtᵀ` (`L` is `n×q`, `Rt` is `p×q`)
/// through two thin QRs and the SVD of the `≤q×≤q` core. `s` has
/// `min(n, p, q)` entries.
pub(crate) fn lowrank_svd(l: MatRef<'_, f64>, rt: MatRef<'_, f64>) -> Result<MatSvd, SoftError> {
    let par = faer::get_global_parallelism();
    let ql = l.qr();
    let qr = rt.qr();
    let (r_l, r_r) = (ql.thin_R(), qr.thin_R());
    let mut core = Mat::<f64>::zeros(r_l.nrows(), r_r.nrows());
    matmul(
        core.as_mut(),
        Accum::Replace,
        r_l,
        r_r.transpose(),
        1.0,
        par,
    );
    let (uc, s, vc) = thin_svd_mat(core.as_ref(), "low-rank core")?;
    let q_l = ql.compute_thin_Q();
    let q_r = qr.compute_thin_Q();
    let mut u = Mat::<f64>::zeros(q_l.nrows(), uc.ncols());
    matmul(
        u.as_mut(),
        Accum::Replace,
        q_l.as_ref(),
        uc.as_ref(),
        1.0,
        par,
    );
    let mut v = Mat::<f64>::zeros(q_r.nrows(), vc.ncols());
    matmul(
        v.as_mut(),
        Accum::Replace,
        q_r.as_ref(),
        vc.as_ref(),
        1.0,
        par,
    );
    Ok((u, s, v))
}
