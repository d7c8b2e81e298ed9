//! The crate's one error type.

use crate::MethodKind;
use thiserror::Error;

/// Everything that can go wrong in this crate, each variant naming the field
/// (or message) at fault and what was expected.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SoftError {
    /// A matrix has the wrong shape.
    #[error("{field}: shape ({}, {}), expected ({}, {})", got.0, got.1, expected.0, expected.1)]
    Shape {
        /// Which matrix, e.g. `"update.a"`.
        field: &'static str,
        /// Its shape (rows, columns).
        got: (usize, usize),
        /// The shape it must have.
        expected: (usize, usize),
    },
    /// A matrix has a zero dimension (`d`, `l` and `r` must all be at least 1).
    #[error("{field}: shape ({}, {}), expected both dimensions >= 1", got.0, got.1)]
    Empty {
        /// Which matrix.
        field: &'static str,
        /// Its shape (rows, columns).
        got: (usize, usize),
    },
    /// A matrix holds a NaN or an infinity.
    #[error("{field}[{row}, {col}] = {value}: expected a finite value")]
    NonFinite {
        /// Which matrix.
        field: &'static str,
        /// Row of the first offending entry.
        row: usize,
        /// Column of the first offending entry.
        col: usize,
        /// The offending value.
        value: f64,
    },
    /// A sparsification ratio that is not finite or outside `(0, 1]`
    /// ([`crate::components_for_ratio`]).
    #[error("rho = {rho}: expected a ratio in (0, 1]")]
    Ratio {
        /// The ratio given.
        rho: f64,
    },
    /// A kept-component count outside `1..=r`.
    #[error("kept components m = {m} must be in 1..=r (r = {r})")]
    Components {
        /// The count given.
        m: usize,
        /// The rank of the factors.
        r: usize,
    },
    /// A rank of zero where a ratio is turned into a component count
    /// ([`crate::components_for_ratio`]).
    #[error("rank r = {r}: expected r >= 1")]
    Rank {
        /// The rank given.
        r: usize,
    },
    /// A residual of the wrong kind for the method (e.g. a dense residual
    /// passed to SOFT).
    #[error(
        "residual: got a {got} residual, {method} expects a {expected} one (or Residual::Zero)"
    )]
    ResidualKind {
        /// The method that was called.
        method: MethodKind,
        /// The kind of residual passed.
        got: &'static str,
        /// The kind the method keeps.
        expected: &'static str,
    },
    /// Messages of different methods were passed to one aggregation.
    #[error(
        "messages[{index}]: made by {got}, expected {expected} like messages[0] (one aggregation, one method)"
    )]
    MixedMethods {
        /// Position of the first message that differs from `messages[0]`.
        index: usize,
        /// The method of `messages[0]`.
        expected: MethodKind,
        /// The method of `messages[index]`.
        got: MethodKind,
    },
    /// A message was made for other dimensions than the base factors.
    #[error(
        "messages[{index}]: made for (d, l, r) = {got:?}, expected {expected:?} from the base factors"
    )]
    MessageDims {
        /// Position of the message.
        index: usize,
        /// `(d, l, r)` of the base factors.
        expected: (usize, usize, usize),
        /// `(d, l, r)` the message declares.
        got: (usize, usize, usize),
    },
    /// An aggregation weight `p_k` is negative or not finite.
    #[error("messages[{index}]: weight p = {value}, expected a finite number >= 0")]
    Weight {
        /// Position of the message.
        index: usize,
        /// The weight given.
        value: f64,
    },
    /// An importance value is negative or not finite.
    #[error("importances[{index}] = {value}: expected a finite number >= 0")]
    Importance {
        /// Position in the slice.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// A message whose fields contradict each other or hold a non-finite
    /// value (one deserialised from corrupt bytes, or built from parts that
    /// do not fit, [`crate::Message::from_parts`]); the reason names the
    /// field.
    #[error("malformed message: {reason}")]
    MalformedMessage {
        /// What is inconsistent.
        reason: String,
    },
    /// The SVD did not converge.
    #[error("SVD of {context}: no convergence")]
    SvdNoConvergence {
        /// Which matrix was being decomposed.
        context: &'static str,
    },
}
