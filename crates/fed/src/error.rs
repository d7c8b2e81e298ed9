//! The engine's error type: every lower crate's error, plus configuration
//! errors that name the field.

/// Errors of the federated engine.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    /// A configuration field is invalid.
    #[error("invalid config field `{field}`: {reason}")]
    Config {
        /// Dotted path of the field, e.g. `federation.clients_per_round`.
        field: String,
        /// What was expected.
        reason: String,
    },
    /// A configuration file, or a `--set` override, that cannot be read as
    /// one: unreadable, not TOML, an unknown key, a value of the wrong type.
    #[error("{origin}: {reason}")]
    ConfigSource {
        /// Where it came from: `file PATH` or `--set KEY=VALUE`.
        origin: String,
        /// What is wrong, with the key path where there is one.
        reason: String,
    },
    /// From the model crate.
    #[error(transparent)]
    Model(#[from] wflora_lora::LoraError),
    /// From the data crate.
    #[error(transparent)]
    Data(#[from] wflora_data::DataError),
    /// From the sparsifiers.
    #[error(transparent)]
    Soft(#[from] wflora_soft::SoftError),
    /// From the channel model.
    #[error(transparent)]
    Channel(#[from] wflora_channel::ChannelError),
    /// From the allocator.
    #[error(transparent)]
    Alloc(#[from] wflora_alloc::AllocError),
    /// From the bound calculator.
    #[error(transparent)]
    Bounds(#[from] wflora_bounds::BoundError),
    /// From a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// From the covariance metric.
    #[error(transparent)]
    Covariance(#[from] crate::covariance::CovarianceError),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A metrics or state file is not what a resumed run expects.
    #[error("{path}: {reason}")]
    Resume {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or another run in this one) holds the output directory.
    #[error(
        "output directory {dir} is in use by another run ({holder}); wait for it to finish or choose another --out"
    )]
    Locked {
        /// The directory.
        dir: std::path::PathBuf,
        /// The holder, as it recorded itself in the lock file.
        holder: String,
    },
    /// A protocol message that does not fit the receiver's state: for
    /// another client or round, out of order, or inconsistent with what was
    /// sent before.
    #[error("protocol: {what}")]
    Protocol {
        /// What is wrong.
        what: String,
    },
    /// A protocol message that cannot be read.
    #[error(transparent)]
    Wire(#[from] crate::protocol::WireError),
    /// Training diverged (a non-finite loss or factor).
    #[error("round {round}: {what} is not finite (training diverged; lower the learning rate)")]
    Diverged {
        /// The round.
        round: usize,
        /// What went non-finite.
        what: String,
    },
}

impl FedError {
    /// A configuration error for `field`.
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
