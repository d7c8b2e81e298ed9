//! Typed errors of the crate.

/// What was wrong in a file at a given byte offset (see [`DataError::Format`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatIssue {
    /// The file does not start with the expected magic number.
    #[error("bad magic number: expected {expected}, found {found:#010x}")]
    BadMagic {
        /// Description of the accepted magic number(s).
        expected: &'static str,
        /// The 32-bit big-endian value found.
        found: u32,
    },
    /// The IDX element type is not unsigned byte (`0x08`).
    #[error("unsupported IDX element type {found:#04x}: expected 0x08 (unsigned byte)")]
    UnsupportedElementType {
        /// The type byte found.
        found: u8,
    },
    /// Wrong number of dimensions in an IDX header.
    #[error("expected {expected} dimensions, found {found}")]
    DimensionCount {
        /// Dimensions this reader needs (3 for images, 1 for labels).
        expected: u8,
        /// Dimensions the header declares.
        found: u8,
    },
    /// A dimension of an IDX header is zero.
    #[error("dimension {index} is zero: expected a positive size")]
    ZeroDimension {
        /// Index of the dimension in the header.
        index: usize,
    },
    /// The declared dimensions overflow the address space.
    #[error("declared dimensions {dims:?} overflow the addressable size")]
    SizeOverflow {
        /// The declared dimensions.
        dims: Vec<u32>,
    },
    /// The data ends before the header or the declared payload does.
    #[error("truncated: expected {expected} bytes in total, found {found}")]
    Truncated {
        /// Total length the header implies (bytes).
        expected: u64,
        /// Total length present (bytes).
        found: u64,
    },
    /// Bytes remain after the declared payload.
    #[error("{extra} trailing bytes after the declared payload of {expected} bytes")]
    TrailingBytes {
        /// Total length the header implies.
        expected: u64,
        /// Bytes beyond it.
        extra: u64,
    },
    /// A label is not below the number of classes.
    #[error("label {label} out of range: expected < {num_classes}")]
    LabelOutOfRange {
        /// The label read.
        label: u32,
        /// The number of classes of the format.
        num_classes: usize,
    },
    /// A fixed-length record (CIFAR) is cut short.
    #[error("partial record: expected records of {record_len} bytes, the last has {found}")]
    PartialRecord {
        /// Record length of the format.
        record_len: usize,
        /// Bytes present in the last record.
        found: usize,
    },
    /// The file holds no records.
    #[error("no records: expected at least one {record_len}-byte record")]
    Empty {
        /// Record length of the format.
        record_len: usize,
    },
    /// The gzip stream cannot be decoded (offset: decompressed bytes produced before the failure).
    #[error("corrupt gzip stream: {message}")]
    Gzip {
        /// The decoder's message.
        message: String,
    },
    /// Image and label files disagree on the number of items.
    #[error("item count mismatch: {images} images but {labels} labels")]
    CountMismatch {
        /// Items in the image file.
        images: u64,
        /// Items in the label file.
        labels: u64,
    },
}

/// Every error of `wflora-data`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{file}: cannot read: {error}")]
    Io {
        /// Path of the file.
        file: String,
        /// The underlying I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A file's content is malformed. `offset` is the byte offset where it went
    /// wrong, counted in the decompressed stream for gzip files.
    #[error("{file}: at byte {offset}: {issue}")]
    Format {
        /// Path of the file, or a label (`embedded:...`) for embedded data.
        file: String,
        /// Byte offset of the problem.
        offset: u64,
        /// What was expected and what was found.
        issue: FormatIssue,
    },
    /// A file's SHA-256 differs from the recorded one.
    #[error("{file}: sha256 mismatch: expected {expected}, found {found}")]
    Checksum {
        /// Path or label of the file.
        file: String,
        /// Recorded digest (hex).
        expected: String,
        /// Digest of the bytes present (hex).
        found: String,
    },
    /// An argument is out of its domain.
    #[error("invalid {field}: expected {expected}, got {got}")]
    Invalid {
        /// Name of the argument or field.
        field: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A text asset (a corpus file, a package directory, a `tokenizer.json`)
    /// is missing or not what a reader expects.
    #[error("{file}: expected {expected}, found {found}")]
    Content {
        /// Path of the file or directory.
        file: String,
        /// What the reader expected there.
        expected: String,
        /// What it found.
        found: String,
    },
    /// The Dirichlet partitioner found no draw meeting the minimum client size.
    #[error(
        "dirichlet partition: none of {attempts} draws gave all {num_clients} clients at least \
         {min_size} samples (smallest client in the last draw: {smallest})"
    )]
    PartitionInfeasible {
        /// Draws tried.
        attempts: usize,
        /// Number of clients.
        num_clients: usize,
        /// Required minimum size.
        min_size: usize,
        /// Smallest client size in the last draw.
        smallest: usize,
    },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, DataError>;

/// Shorthand for an [`DataError::Invalid`].
pub(crate) fn invalid(
    field: &'static str,
    expected: impl Into<String>,
    got: impl std::fmt::Display,
) -> DataError {
    DataError::Invalid {
        field,
        expected: expected.into(),
        got: got.to_string(),
    }
}
