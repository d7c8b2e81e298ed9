//! The decentralized engine's errors: the lower crates' errors plus
//! configuration errors that name the field.

/// Errors of `wflora-dfl`.
#[derive(Debug, thiserror::Error)]
pub enum DflError {
    /// A configuration field is invalid.
    #[error("invalid config field `{field}`: {reason}")]
    Config {
        /// Dotted path of the field, e.g. `so_lora.density`.
        field: String,
        /// What was expected.
        reason: String,
    },
    /// From the model crate.
    #[error(transparent)]
    Model(#[from] wflora_lora::LoraError),
    /// From the data crate.
    #[error(transparent)]
    Data(#[from] wflora_data::DataError),
    /// From the channel model.
    #[error(transparent)]
    Channel(#[from] wflora_channel::ChannelError),
    /// From the federated crate (the shared backbone task).
    #[error(transparent)]
    Fed(#[from] wflora_fed::FedError),
    /// From graph construction.
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    /// From the sparse pieces.
    #[error(transparent)]
    Sparse(#[from] crate::sparse::SparseError),
    /// Training diverged.
    #[error("round {round}: {what} is not finite (training diverged; lower the learning rate)")]
    Diverged {
        /// The round.
        round: usize,
        /// What went non-finite.
        what: String,
    },
    /// A worker thread panicked.
    #[error("a worker thread panicked in round {round}")]
    Worker {
        /// The round.
        round: usize,
    },
}

impl DflError {
    /// A configuration error for `field`.
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
