//! Typed errors of the allocator.

use thiserror::Error;

/// What can go wrong when building or solving a round's allocation.
///
/// A client that cannot meet *any* latency (zero rate cap, e.g. a deep fade)
/// is not an error: it sits out and is listed in
/// [`crate::Allocation::unreachable`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AllocError {
    /// A scalar is outside its domain; `field` is a path such as
    /// `clients[3].levels[1].bits`.
    #[error("invalid `{field}` = {value}: expected {expected}")]
    InvalidField {
        /// Path of the offending field.
        field: String,
        /// The value received.
        value: f64,
        /// What the field must satisfy.
        expected: &'static str,
    },
    /// A policy names a number of kept components that a client does not offer.
    #[error("client {client} has no level with {components} kept components (policy `{policy}`)")]
    MissingLevel {
        /// Index of the client.
        client: usize,
        /// The requested number of kept components.
        components: u32,
        /// The policy that asked for it.
        policy: &'static str,
    },
    /// The MILP solver (good_lp with microlp) failed.
    #[error("MILP solver failed: {0}")]
    Solver(String),
    /// An instance's channel parameters are invalid.
    #[error(transparent)]
    Channel(#[from] wflora_channel::ChannelError),
    /// An instance file could not be parsed.
    #[error("instance JSON: {0}")]
    Json(String),
}

/// Checks that `value` is finite and `>= 0`.
pub(crate) fn non_negative(field: impl FnOnce() -> String, value: f64) -> Result<f64, AllocError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(AllocError::InvalidField {
            field: field(),
            value,
            expected: "a finite number >= 0",
        })
    }
}

/// Checks that `value` is finite and `> 0`.
pub(crate) fn positive(field: impl FnOnce() -> String, value: f64) -> Result<f64, AllocError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(AllocError::InvalidField {
            field: field(),
            value,
            expected: "a finite number > 0",
        })
    }
}
