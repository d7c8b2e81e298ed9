//! Readers for the IDX (MNIST, Fashion-MNIST) and CIFAR-10/100 binary formats.
//!
//! Both accept raw or gzip-compressed bytes; gzip is detected by its magic bytes
//! `1f 8b`, not by the file name (no valid raw file starts so: IDX starts with a
//! zero byte, a CIFAR record with a label below 100). Concatenated gzip members
//! are read as one stream. Pixels become `f32` in `[0, 1]` (byte / 255).
//! Offsets in errors count bytes of the decompressed stream.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::dataset::Dataset;
use crate::error::{DataError, FormatIssue, Result};

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest pixel byte value: pixels are divided by it to land in `[0, 1]`.
const BYTE_MAX: f32 = 255.0;

fn format_error(file: &str, offset: u64, issue: FormatIssue) -> DataError {
    DataError::Format {
        file: file.to_owned(),
        offset,
        issue,
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| DataError::Io {
        file: path.display().to_string(),
        error,
    })
}

/// Returns the bytes decompressed if they start with the gzip magic, else as they are.
///
/// # Errors
/// [`FormatIssue::Gzip`] if the stream is corrupt or truncated; the offset is the
/// number of decompressed bytes produced before the failure.
pub fn maybe_gunzip<'a>(bytes: &'a [u8], file: &str) -> Result<std::borrow::Cow<'a, [u8]>> {
    if bytes.len() < 2 || bytes[..2] != GZIP_MAGIC {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(2));
    match MultiGzDecoder::new(bytes).read_to_end(&mut out) {
        Ok(_) => Ok(std::borrow::Cow::Owned(out)),
        Err(e) => Err(format_error(
            file,
            out.len() as u64,
            FormatIssue::Gzip {
                message: e.to_string(),
            },
        )),
    }
}

/// An IDX array of unsigned bytes: its dimensions and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header (outermost first).
    pub dims: Vec<usize>,
    /// Payload, row-major, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Decodes an IDX file of unsigned bytes (type `0x08`), raw or gzip.
///
/// Header: two zero bytes, the type byte, the dimension count `d`, then `d`
/// big-endian `u32` sizes; then the payload. `file` names the source in errors.
///
/// # Errors
/// [`DataError::Format`] for a bad magic, another element type, a zero or
/// overflowing dimension, a truncated header or payload, or trailing bytes.
pub fn decode_idx(bytes: &[u8], file: &str) -> Result<IdxArray> {
    let bytes = maybe_gunzip(bytes, file)?;
    let len = bytes.len() as u64;
    if bytes.len() < 4 {
        return Err(format_error(
            file,
            len,
            FormatIssue::Truncated {
                expected: 4,
                found: len,
            },
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_error(
            file,
            0,
            FormatIssue::BadMagic {
                expected: "0x0000TTDD (two zero bytes, element type, dimension count)",
                found: magic,
            },
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format_error(
            file,
            2,
            FormatIssue::UnsupportedElementType { found: bytes[2] },
        ));
    }
    let ndim = usize::from(bytes[3]);
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format_error(
            file,
            len,
            FormatIssue::Truncated {
                expected: header as u64,
                found: len,
            },
        ));
    }
    let raw_dims: Vec<u32> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut total: usize = 1;
    for (i, &d) in raw_dims.iter().enumerate() {
        if d == 0 {
            return Err(format_error(
                file,
                4 + 4 * i as u64,
                FormatIssue::ZeroDimension { index: i },
            ));
        }
        total = usize::try_from(d)
            .ok()
            .and_then(|d| total.checked_mul(d))
            .ok_or_else(|| {
                format_error(
                    file,
                    4,
                    FormatIssue::SizeOverflow {
                        dims: raw_dims.clone(),
                    },
                )
            })?;
    }
    let expected = header.checked_add(total).ok_or_else(|| {
        format_error(
            file,
            4,
            FormatIssue::SizeOverflow {
                dims: raw_dims.clone(),
            },
        )
    })? as u64;
    if len < expected {
        return Err(format_error(
            file,
            len,
            FormatIssue::Truncated {
                expected,
                found: len,
            },
        ));
    }
    if len > expected {
        return Err(format_error(
            file,
            expected,
            FormatIssue::TrailingBytes {
                expected,
                extra: len - expected,
            },
        ));
    }
    let dims = raw_dims.iter().map(|&d| d as usize).collect();
    let data = match bytes {
        std::borrow::Cow::Owned(mut v) => {
            v.drain(..header);
            v
        }
        std::borrow::Cow::Borrowed(b) => b[header..].to_vec(),
    };
    Ok(IdxArray { dims, data })
}

/// Builds a one-channel dataset from IDX image bytes (`n × h × w`) and IDX label
/// bytes (`n`), each raw or gzip; labels must be `< num_classes`.
///
/// # Errors
/// [`DataError::Format`] naming `images_file` or `labels_file` for any
/// malformation, a wrong dimension count (3 for images, 1 for labels), a count
/// mismatch (offset 4 of the label file) or a label out of range (its offset);
/// [`DataError::Invalid`] if `num_classes` is zero.
pub fn parse_idx_dataset(
    image_bytes: &[u8],
    images_file: &str,
    label_bytes: &[u8],
    labels_file: &str,
    num_classes: usize,
) -> Result<Dataset> {
    if num_classes == 0 {
        return Err(crate::error::invalid(
            "num_classes",
            "at least 1",
            num_classes,
        ));
    }
    let images = decode_idx(image_bytes, images_file)?;
    let labels = decode_idx(label_bytes, labels_file)?;
    if images.dims.len() != 3 {
        return Err(format_error(
            images_file,
            3,
            FormatIssue::DimensionCount {
                expected: 3,
                found: images.dims.len() as u8,
            },
        ));
    }
    if labels.dims.len() != 1 {
        return Err(format_error(
            labels_file,
            3,
            FormatIssue::DimensionCount {
                expected: 1,
                found: labels.dims.len() as u8,
            },
        ));
    }
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(format_error(
            labels_file,
            4,
            FormatIssue::CountMismatch {
                images: n as u64,
                labels: labels.dims[0] as u64,
            },
        ));
    }
    let mut out_labels = Vec::with_capacity(n);
    for (i, &l) in labels.data.iter().enumerate() {
        if usize::from(l) >= num_classes {
            return Err(format_error(
                labels_file,
                8 + i as u64,
                FormatIssue::LabelOutOfRange {
                    label: u32::from(l),
                    num_classes,
                },
            ));
        }
        out_labels.push(u32::from(l));
    }
    let pixels = bytes_to_unit_f32(&images.data);
    Dataset::new(pixels, out_labels, 1, h, w, num_classes)
}

/// Loads an IDX image file and an IDX label file (raw or gzip) as a dataset.
///
/// # Errors
/// [`DataError::Io`] if a file cannot be read, else as [`parse_idx_dataset`].
pub fn load_idx(images: &Path, labels: &Path, num_classes: usize) -> Result<Dataset> {
    let ib = read_file(images)?;
    let lb = read_file(labels)?;
    parse_idx_dataset(
        &ib,
        &images.display().to_string(),
        &lb,
        &labels.display().to_string(),
        num_classes,
    )
}

/// Which CIFAR binary format, and for CIFAR-100 which label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CifarFormat {
    /// CIFAR-10: 1 label byte (`< 10`) + 3072 pixel bytes per record.
    Cifar10,
    /// CIFAR-100 with its 20 coarse labels: coarse byte, fine byte, 3072 pixel bytes.
    Cifar100Coarse,
    /// CIFAR-100 with its 100 fine labels: coarse byte, fine byte, 3072 pixel bytes.
    Cifar100Fine,
}

/// Pixel bytes of one CIFAR image: 3 planes (R, G, B) of 32 × 32, row-major.
const CIFAR_PIXELS: usize = 3 * 32 * 32;

impl CifarFormat {
    /// Label bytes per record (1 or 2).
    #[must_use]
    pub fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100Coarse | Self::Cifar100Fine => 2,
        }
    }

    /// Bytes per record (3073 or 3074).
    #[must_use]
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    /// Number of classes of the chosen label (10, 20 or 100).
    #[must_use]
    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100Coarse => 20,
            Self::Cifar100Fine => 100,
        }
    }
}

/// Parses CIFAR binary bytes (raw or gzip) into a 3 × 32 × 32 dataset.
///
/// Every label byte is checked (for CIFAR-100 both the coarse `< 20` and the
/// fine `< 100`), whichever one is kept.
///
/// # Errors
/// [`DataError::Format`] naming `file`: no records, a partial last record
/// (offset: its start), a label out of range (offset: its byte), a corrupt gzip stream.
pub fn parse_cifar(bytes: &[u8], file: &str, format: CifarFormat) -> Result<Dataset> {
    let bytes = maybe_gunzip(bytes, file)?;
    let rec = format.record_len();
    if bytes.is_empty() {
        return Err(format_error(
            file,
            0,
            FormatIssue::Empty { record_len: rec },
        ));
    }
    let n = bytes.len() / rec;
    let rest = bytes.len() % rec;
    if rest != 0 {
        return Err(format_error(
            file,
            (n * rec) as u64,
            FormatIssue::PartialRecord {
                record_len: rec,
                found: rest,
            },
        ));
    }
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * CIFAR_PIXELS);
    for (i, record) in bytes.chunks_exact(rec).enumerate() {
        let start = (i * rec) as u64;
        let limits: &[usize] = match format {
            CifarFormat::Cifar10 => &[10],
            CifarFormat::Cifar100Coarse | CifarFormat::Cifar100Fine => &[20, 100],
        };
        for (j, &limit) in limits.iter().enumerate() {
            if usize::from(record[j]) >= limit {
                return Err(format_error(
                    file,
                    start + j as u64,
                    FormatIssue::LabelOutOfRange {
                        label: u32::from(record[j]),
                        num_classes: limit,
                    },
                ));
            }
        }
        let label = match format {
            CifarFormat::Cifar10 | CifarFormat::Cifar100Coarse => record[0],
            CifarFormat::Cifar100Fine => record[1],
        };
        labels.push(u32::from(label));
        pixels.extend(
            record[format.label_bytes()..]
                .iter()
                .map(|&b| f32::from(b) / BYTE_MAX),
        );
    }
    Dataset::new(pixels, labels, 3, 32, 32, format.num_classes())
}

/// Loads and concatenates CIFAR binary files (e.g. `data_batch_1.bin` … `data_batch_5.bin`).
///
/// # Errors
/// [`DataError::Invalid`] for an empty list, [`DataError::Io`] if a file cannot
/// be read, else as [`parse_cifar`].
pub fn load_cifar<P: AsRef<Path>>(files: &[P], format: CifarFormat) -> Result<Dataset> {
    if files.is_empty() {
        return Err(crate::error::invalid(
            "files",
            "at least one CIFAR file",
            "an empty list",
        ));
    }
    let mut parts = Vec::with_capacity(files.len());
    for f in files {
        let path = f.as_ref();
        let bytes = read_file(path)?;
        parts.push(parse_cifar(&bytes, &path.display().to_string(), format)?);
    }
    Dataset::concat(&parts)
}

/// Converts pixel bytes to `f32` in `[0, 1]`.
pub(crate) fn bytes_to_unit_f32(bytes: &[u8]) -> Vec<f32> {
    // A 256-entry table keeps this a pure load/store loop even at opt-level 1.
    let mut table = [0.0_f32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = i as f32 / BYTE_MAX;
    }
    bytes.iter().map(|&b| table[usize::from(b)]).collect()
}
