//! The embedded default dataset: the Fashion-MNIST test split (10,000 grey
//! 28 × 28 images, 10 balanced classes, MIT licence), vendored under
//! `assets/fashion-mnist/` and checked against its SHA-256 on every load.

use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::read::parse_idx_dataset;

/// Label of the embedded image file in errors.
pub const FASHION_MNIST_IMAGES_NAME: &str = "embedded:fashion-mnist/t10k-images-idx3-ubyte.gz";
/// Label of the embedded label file in errors.
pub const FASHION_MNIST_LABELS_NAME: &str = "embedded:fashion-mnist/t10k-labels-idx1-ubyte.gz";
/// SHA-256 of `t10k-images-idx3-ubyte.gz` (gzip file as vendored).
pub const FASHION_MNIST_IMAGES_SHA256: &str =
    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa";
/// SHA-256 of `t10k-labels-idx1-ubyte.gz` (gzip file as vendored).
pub const FASHION_MNIST_LABELS_SHA256: &str =
    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05";

/// Class names of Fashion-MNIST, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

static IMAGES_GZ: &[u8] = include_bytes!("../assets/fashion-mnist/t10k-images-idx3-ubyte.gz");
static LABELS_GZ: &[u8] = include_bytes!("../assets/fashion-mnist/t10k-labels-idx1-ubyte.gz");

/// Lower-case hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks `bytes` against a recorded hex SHA-256.
///
/// # Errors
/// [`DataError::Checksum`] naming `file` if the digests differ.
pub fn verify_sha256(bytes: &[u8], expected: &str, file: &str) -> Result<()> {
    let found = sha256_hex(bytes);
    if found.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DataError::Checksum {
            file: file.to_owned(),
            expected: expected.to_owned(),
            found,
        })
    }
}

/// Verifies then decodes Fashion-MNIST-shaped gzip IDX bytes.
fn decode_checked(images: &[u8], labels: &[u8]) -> Result<Dataset> {
    verify_sha256(
        images,
        FASHION_MNIST_IMAGES_SHA256,
        FASHION_MNIST_IMAGES_NAME,
    )?;
    verify_sha256(
        labels,
        FASHION_MNIST_LABELS_SHA256,
        FASHION_MNIST_LABELS_NAME,
    )?;
    parse_idx_dataset(
        images,
        FASHION_MNIST_IMAGES_NAME,
        labels,
        FASHION_MNIST_LABELS_NAME,
        FASHION_MNIST_CLASSES.len(),
    )
}

/// The embedded Fashion-MNIST test split: 10,000 images, 1 × 28 × 28, pixels in
/// `[0, 1]`, 10 classes of 1,000 each, in the file's order. Needs no download.
///
/// # Errors
/// [`DataError::Checksum`] if an embedded file does not match its recorded
/// SHA-256 (a corrupt build), [`DataError::Format`] if it does not decode.
pub fn fashion_mnist_test() -> Result<Dataset> {
    decode_checked(IMAGES_GZ, LABELS_GZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_embedded_bytes_are_a_checksum_error_naming_the_file() {
        let mut bad = IMAGES_GZ.to_vec();
        bad[1000] ^= 0x55;
        match decode_checked(&bad, LABELS_GZ) {
            Err(DataError::Checksum {
                file,
                expected,
                found,
            }) => {
                assert_eq!(file, FASHION_MNIST_IMAGES_NAME);
                assert_eq!(expected, FASHION_MNIST_IMAGES_SHA256);
                assert_ne!(found, expected);
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
        let mut bad = LABELS_GZ.to_vec();
        bad.truncate(100);
        assert!(matches!(
            decode_checked(IMAGES_GZ, &bad),
            Err(DataError::Checksum { file, .. }) if file == FASHION_MNIST_LABELS_NAME
        ));
    }

    #[test]
    fn sha256_matches_the_fips_180_2_test_vector() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
