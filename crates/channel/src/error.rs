//! Typed errors of the channel model.

use thiserror::Error;

/// What can go wrong when building or evaluating the uplink model.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChannelError {
    /// A scalar parameter is outside its domain.
    #[error("invalid `{field}` = {value}: expected {expected}")]
    InvalidField {
        /// Name of the offending field (as in the config or argument list).
        field: &'static str,
        /// The value received.
        value: f64,
        /// What the field must satisfy.
        expected: &'static str,
    },
    /// Two per-client arrays disagree in length.
    #[error("`{field}` has {got} entries, expected {expected} (one per client)")]
    LengthMismatch {
        /// Name of the shorter or longer array.
        field: &'static str,
        /// Its length.
        got: usize,
        /// The number of clients.
        expected: usize,
    },
    /// A client has bits to send but a zero rate cap (zero channel gain or
    /// power), so no finite time and no share lets it finish.
    #[error("client {client} has bits to send but a zero rate cap (no finite finish time)")]
    Unreachable {
        /// Index of the client.
        client: usize,
    },
}

/// Checks that `value` is finite and `> 0`.
pub(crate) fn positive(field: &'static str, value: f64) -> Result<f64, ChannelError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ChannelError::InvalidField {
            field,
            value,
            expected: "a finite number > 0",
        })
    }
}

/// Checks that `value` is finite and `>= 0`.
pub(crate) fn non_negative(field: &'static str, value: f64) -> Result<f64, ChannelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ChannelError::InvalidField {
            field,
            value,
            expected: "a finite number >= 0",
        })
    }
}

/// Checks that `value` is finite.
pub(crate) fn finite(field: &'static str, value: f64) -> Result<f64, ChannelError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ChannelError::InvalidField {
            field,
            value,
            expected: "a finite number",
        })
    }
}
