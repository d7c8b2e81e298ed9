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

/// Keeps SOFT's ratio handling in one place: checks `ρ ∈ (0, 1]`.
pub(crate) fn check_rho(rho: f64) -> Result<(), SoftError> {
    if rho.is_finite() && rho > 0.0 && rho <= 1.0 {
        Ok(())
    } else {
        Err(SoftError::Ratio { rho })
    }
}

/// `m = ⌈ρ·r⌉`, computed as `⌈ρ·r − 1e−9⌉` so that e.g. `ρ = 0.3, r = 10`
/// gives 3 despite `0.3·10 = 3.0000000000000004` in floating point; clamped
/// to `[1, r]`.
pub(crate) fn kept_components(rho: f64, r: usize) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let m = (rho * r as f64 - 1e-9).ceil().max(1.0) as usize;
    m.min(r)
}
