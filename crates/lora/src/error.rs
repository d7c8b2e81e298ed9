//! The crate's typed error.

use std::path::PathBuf;

/// Everything that can go wrong in `wflora-lora`.
///
/// Bad input (configurations, shapes, files) gets a variant naming the field,
/// tensor or file and what was expected; failures inside candle are wrapped
/// in [`LoraError::Candle`].
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A configuration field has an invalid value.
    #[error("invalid configuration: field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `width` or `lora.rank`.
        field: &'static str,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// A matrix or tensor has the wrong shape.
    #[error("shape mismatch for `{what}`: expected {expected:?}, got {got:?}")]
    Shape {
        /// Which matrix or tensor (a stable name such as `blocks.0.attn.q.B`).
        what: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape that was supplied.
        got: Vec<usize>,
    },
    /// Input data (images, labels, batches) is inconsistent.
    #[error("invalid input `{what}`: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A tensor that the model needs is absent from a weight file.
    #[error("tensor `{name}` (expected shape {expected:?}) is missing from {source_name}")]
    MissingTensor {
        /// The tensor's name in the file's naming scheme.
        name: String,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The file (or buffer label) that was read.
        source_name: String,
    },
    /// A weight file could not be parsed, or holds something we do not accept.
    #[error("weight file {source_name}: {reason}")]
    WeightFile {
        /// The file (or buffer label) that was read.
        source_name: String,
        /// What was wrong.
        reason: String,
    },
    /// A pre-training cache file exists but is corrupt, truncated, or not ours.
    #[error(
        "pre-training cache file {path:?} is unusable ({reason}); delete it and run again to rebuild it (the backbone is pre-trained anew)"
    )]
    CorruptCache {
        /// The cache file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A file-system operation failed.
    #[error("i/o error on {path:?}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The optimizer state kept between rounds belongs to another model.
    #[error("the kept optimizer state was built for another model's parameters")]
    ForeignOptimizerState,
    /// An error raised inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, LoraError>;

/// Checks that `got` equals `expected`, naming `what` otherwise.
pub(crate) fn check_shape(what: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(LoraError::Shape {
            what: what.to_owned(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}
