//! The crate's error type: every variant names the offending field.

/// Everything that can go wrong in this crate. Each variant names the field
/// (or argument) at fault and what was expected, so a configuration error can
/// be fixed from the message alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundError {
    /// A scalar parameter or argument is out of its domain (this includes
    /// non-finite values).
    #[error("`{field}` = {value} is invalid: expected {expected}")]
    InvalidValue {
        /// Name of the field or argument.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The domain that was expected, in words.
        expected: &'static str,
    },
    /// One element of a slice argument is out of its domain.
    #[error("`{field}[{index}]` = {value} is invalid: expected {expected}")]
    InvalidElement {
        /// Name of the slice argument.
        field: &'static str,
        /// Position of the offending element.
        index: usize,
        /// The value given.
        value: f64,
        /// The domain that was expected, in words.
        expected: &'static str,
    },
    /// A slice argument has too few elements.
    #[error("`{field}` has {len} elements: expected at least {min}")]
    TooFew {
        /// Name of the slice argument.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The least length accepted.
        min: usize,
    },
    /// Two slice arguments that must match in length do not.
    #[error("`{field}` has {len} elements but `{other}` has {other_len}: expected equal lengths")]
    LengthMismatch {
        /// Name of the first slice argument.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Name of the second slice argument.
        other: &'static str,
        /// Its length.
        other_len: usize,
    },
    /// A row of a ragged slice-of-slices argument has the wrong length.
    #[error("`{field}[{row}]` has {len} elements: expected {expected_len} like `{field}[0]`")]
    RowLength {
        /// Name of the argument.
        field: &'static str,
        /// Position of the offending row.
        row: usize,
        /// Its length.
        len: usize,
        /// The length of the first row.
        expected_len: usize,
    },
    /// A bound term came out non-finite (e.g. the covariance model overflows
    /// at a very large rank).
    #[error(
        "bound term `{term}` at rank {rank}, ratio {ratio} is {value}: expected a finite value"
    )]
    NonFiniteTerm {
        /// Name of the term.
        term: &'static str,
        /// Rank at which it was evaluated.
        rank: usize,
        /// Sparsification ratio at which it was evaluated.
        ratio: f64,
        /// The value it took.
        value: f64,
    },
    /// The caller's latency model returned NaN or a negative latency.
    #[error(
        "latency model returned {value} s at rank {rank}, ratio {ratio}: expected a number >= 0 (+inf allowed)"
    )]
    InvalidLatency {
        /// Rank at which the model was called.
        rank: usize,
        /// Ratio at which the model was called.
        ratio: f64,
        /// The value it returned.
        value: f64,
    },
    /// No candidate rank has any ratio whose expected latency meets the budget.
    #[error(
        "no candidate rank meets the latency budget {budget_s} s: the least achievable expected latency is {least_latency_s} s (rank {rank}, ratio {ratio})"
    )]
    NoFeasibleRank {
        /// The budget `T̄` in seconds.
        budget_s: f64,
        /// The least expected latency over every (rank, ratio) checked.
        least_latency_s: f64,
        /// The rank at which it was reached.
        rank: usize,
        /// The ratio at which it was reached.
        ratio: f64,
    },
}

/// Checks that `value` is finite and `> 0`.
pub(crate) fn positive(field: &'static str, value: f64) -> Result<f64, BoundError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(BoundError::InvalidValue {
            field,
            value,
            expected: "a finite number > 0",
        })
    }
}

/// Checks that `value` is finite and `>= 0`.
pub(crate) fn non_negative(field: &'static str, value: f64) -> Result<f64, BoundError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(BoundError::InvalidValue {
            field,
            value,
            expected: "a finite number >= 0",
        })
    }
}

/// Checks that `value` is finite.
pub(crate) fn finite(field: &'static str, value: f64) -> Result<f64, BoundError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(BoundError::InvalidValue {
            field,
            value,
            expected: "a finite number",
        })
    }
}

/// Checks that every element of `values` is finite and `>= 0`.
pub(crate) fn non_negative_elements(field: &'static str, values: &[f64]) -> Result<(), BoundError> {
    match values.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        Some(index) => Err(BoundError::InvalidElement {
            field,
            index,
            value: values[index],
            expected: "a finite number >= 0",
        }),
        None => Ok(()),
    }
}

/// Checks that every element of `values` is finite.
pub(crate) fn finite_elements(field: &'static str, values: &[f64]) -> Result<(), BoundError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(BoundError::InvalidElement {
            field,
            index,
            value: values[index],
            expected: "a finite number",
        }),
        None => Ok(()),
    }
}
