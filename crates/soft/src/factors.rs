//! LoRA factor pairs, the error-feedback residual, and input validation.

use crate::SoftError;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Dimensions of one adapted matrix: `B` is `d×r`, `A` is `r×l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dims {
    /// Rows of `B` (output dimension of the adapted weight).
    pub d: usize,
    /// Columns of `A` (input dimension of the adapted weight).
    pub l: usize,
    /// LoRA rank.
    pub r: usize,
}

impl Dims {
    /// `(d, l, r)`.
    #[must_use]
    pub fn tuple(self) -> (usize, usize, usize) {
        (self.d, self.l, self.r)
    }
}

/// A borrowed factor pair `(B, A)` (base factors, an update, or a residual).
#[derive(Debug, Clone, Copy)]
pub struct FactorsView<'a> {
    /// `B`, `d×r`.
    pub b: ArrayView2<'a, f32>,
    /// `A`, `r×l`.
    pub a: ArrayView2<'a, f32>,
}

impl<'a> FactorsView<'a> {
    /// Pairs two views (shapes are checked where they are used).
    #[must_use]
    pub fn new(b: ArrayView2<'a, f32>, a: ArrayView2<'a, f32>) -> Self {
        Self { b, a }
    }
}

/// An owned factor pair `(B, A)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    /// `B`, `d×r`.
    pub b: Array2<f32>,
    /// `A`, `r×l`.
    pub a: Array2<f32>,
}

impl Factors {
    /// Pairs two matrices (shapes are checked where they are used).
    #[must_use]
    pub fn new(b: Array2<f32>, a: Array2<f32>) -> Self {
        Self { b, a }
    }

    /// Zero factors of the given dimensions.
    #[must_use]
    pub fn zeros(dims: Dims) -> Self {
        Self {
            b: Array2::zeros((dims.d, dims.r)),
            a: Array2::zeros((dims.r, dims.l)),
        }
    }

    /// Borrows both factors.
    #[must_use]
    pub fn view(&self) -> FactorsView<'_> {
        FactorsView::new(self.b.view(), self.a.view())
    }
}

/// A client's error-feedback state for one adapted matrix: what it computed
/// but has not sent yet.
///
/// The factor methods (SOFT, SOFT-Δ, TLoRA, RLoRA, ILoRA) keep a residual
/// shaped like the factors; SLoRA keeps a dense `d×l` one. [`Residual::Zero`]
/// is the initial state of every method, and what every method returns with
/// error feedback switched off.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Residual {
    /// All-zero residual (no shape needed).
    #[default]
    Zero,
    /// `(e_B, e_A)`, shaped like `(B, A)`.
    Factors(Factors),
    /// `E`, dense `d×l` (SLoRA).
    Dense(Array2<f32>),
}

impl Residual {
    /// A short name of the variant, for error messages.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Factors(_) => "factor",
            Self::Dense(_) => "dense",
        }
    }
}

/// Checks the base factors and returns their dimensions.
pub(crate) fn base_dims(base: &FactorsView<'_>) -> Result<Dims, SoftError> {
    let (d, r) = base.b.dim();
    if d == 0 || r == 0 {
        return Err(SoftError::Empty {
            field: "base.b",
            got: (d, r),
        });
    }
    let (ra, l) = base.a.dim();
    if l == 0 {
        return Err(SoftError::Empty {
            field: "base.a",
            got: (ra, l),
        });
    }
    expect_shape("base.a", base.a.dim(), (r, l))?;
    Ok(Dims { d, l, r })
}

/// Checks a factor pair against `dims`.
pub(crate) fn check_pair(
    pair: &FactorsView<'_>,
    dims: Dims,
    field_b: &'static str,
    field_a: &'static str,
) -> Result<(), SoftError> {
    expect_shape(field_b, pair.b.dim(), (dims.d, dims.r))?;
    expect_shape(field_a, pair.a.dim(), (dims.r, dims.l))
}

/// A shape check.
pub(crate) fn expect_shape(
    field: &'static str,
    got: (usize, usize),
    expected: (usize, usize),
) -> Result<(), SoftError> {
    if got == expected {
        Ok(())
    } else {
        Err(SoftError::Shape {
            field,
            got,
            expected,
        })
    }
}

/// The first NaN/inf entry as an error.
pub(crate) fn check_finite(field: &'static str, m: &ArrayView2<'_, f32>) -> Result<(), SoftError> {
    match m.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), v)) => Err(SoftError::NonFinite {
            field,
            row,
            col,
            value: f64::from(*v),
        }),
        None => Ok(()),
    }
}

/// The matrix in row-major order: borrowed when it already is, copied
/// otherwise.
pub(crate) fn row_major<'a>(m: &ArrayView2<'a, f32>) -> Cow<'a, [f32]> {
    match m.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(m.iter().copied().collect()),
    }
}

/// Builds a `rows×cols` matrix from a row-major vector that has exactly
/// `rows·cols` entries.
pub(crate) fn from_row_major(
    field: &'static str,
    rows: usize,
    cols: usize,
    v: Vec<f32>,
) -> Result<Array2<f32>, SoftError> {
    let len = v.len();
    Array2::from_shape_vec((rows, cols), v).map_err(|_| SoftError::Shape {
        field,
        got: (len, 1),
        expected: (rows, cols),
    })
}

/// Checks a ratio `ρ ∈ (0, 1]` (finite).
pub(crate) fn check_rho(rho: f64) -> Result<(), SoftError> {
    if rho.is_finite() && rho > 0.0 && rho <= 1.0 {
        Ok(())
    } else {
        Err(SoftError::Ratio { rho })
    }
}

/// Checks a kept-component count against the rank: `1 ≤ m ≤ r`.
pub(crate) fn check_components(m: usize, r: usize) -> Result<(), SoftError> {
    if (1..=r).contains(&m) {
        Ok(())
    } else {
        Err(SoftError::Components { m, r })
    }
}

/// The number of rank components kept at ratio `ρ` and rank `r`: the
/// smallest `m ∈ 1..=r` with `m/r ≥ ρ`, comparing the correctly rounded
/// quotient `m as f64 / r as f64` with `ρ` (no tolerance). So every ratio
/// written as `m/r` gives back `m` (`0.3` at `r = 10` gives 3, because
/// `3.0 / 10.0 == 0.3`), `ρ = 1` gives `r`, and any `ρ ≤ 1/r` gives 1.
///
/// This is the one place where a ratio becomes a count; the sparsifiers and
/// [`crate::budget`] take the count.
///
/// ```
/// use wflora_soft::components_for_ratio;
/// assert_eq!(components_for_ratio(0.25, 8)?, 2);
/// assert_eq!(components_for_ratio(0.3, 10)?, 3);
/// assert_eq!(components_for_ratio(1.0 / 3.0, 8)?, 3);
/// assert_eq!(components_for_ratio(0.01, 8)?, 1);
/// assert_eq!(components_for_ratio(1.0, 8)?, 8);
/// # Ok::<(), wflora_soft::SoftError>(())
/// ```
///
/// # Errors
/// [`SoftError::Ratio`] for `ρ` not finite or outside `(0, 1]`;
/// [`SoftError::Rank`] for `r = 0`.
#[allow(clippy::cast_precision_loss)]
pub fn components_for_ratio(rho: f64, r: usize) -> Result<usize, SoftError> {
    check_rho(rho)?;
    if r == 0 {
        return Err(SoftError::Rank { r });
    }
    // `m ↦ m as f64 / r as f64` is non-decreasing (rounding is monotone) and
    // is exactly 1 ≥ ρ at m = r: binary search for the first m that reaches ρ.
    let reaches = |m: usize| m as f64 / r as f64 >= rho;
    let (mut lo, mut hi) = (1usize, r);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if reaches(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}
