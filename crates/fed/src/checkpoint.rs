//! Checkpoint files: a small self-checking container for run state.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0      8 bytes  magic "WFLORACK"
//! 8      u32      format version (1)
//! 12     u64      header length H
//! 20     H bytes  header, JSON: config hash, metadata, tensor index
//! 20+H   ...      tensor data, f32 LE, in index order
//! end-32 32 bytes sha256 of everything before it
//! ```
//!
//! Reading checks every length against the file, the checksum, and the config
//! hash the caller expects; each failure names the file and the byte offset.
//! Writing goes to a temporary file renamed into place, so a run killed while
//! saving leaves the previous checkpoint intact.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"WFLORACK";
const VERSION: u32 = 1;
const PREFIX: usize = 8 + 4 + 8;
const DIGEST: usize = 32;

/// Errors reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O failure on the file.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint, is truncated, or is corrupt.
    #[error("checkpoint {path} is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was expected.
        what: String,
    },
    /// The checkpoint was written by a run with another configuration.
    #[error(
        "checkpoint {path} belongs to another configuration (its config hash {found}, this run's {expected}); \
         use a fresh --out directory or the configuration that wrote it"
    )]
    OtherConfig {
        /// The file.
        path: PathBuf,
        /// Hash stored in the file.
        found: String,
        /// Hash of the current configuration.
        expected: String,
    },
    /// A tensor the caller asked for is missing or has another shape.
    #[error("checkpoint {path}: tensor '{name}' {what}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// Metadata could not be (de)serialised.
    #[error("checkpoint {path}: metadata: {source}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// A named `f32` tensor (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    config_hash: String,
    meta: serde_json::Value,
    tensors: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
}

/// The state of a run at the end of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Hash of the configuration that produced it.
    pub config_hash: String,
    /// Scalars and small state (round, queue, …) as JSON.
    pub meta: serde_json::Value,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Encodes to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let header = Header {
            config_hash: self.config_hash.clone(),
            meta: self.meta.clone(),
            tensors: self
                .tensors
                .iter()
                .map(|(name, t)| Entry {
                    name: name.clone(),
                    shape: t.shape.clone(),
                })
                .collect(),
        };
        let h = serde_json::to_vec(&header)?;
        let n_values: usize = self.tensors.values().map(|t| t.data.len()).sum();
        let mut out = Vec::with_capacity(PREFIX + h.len() + 4 * n_values + DIGEST);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        for t in self.tensors.values() {
            for v in &t.data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Decodes bytes read from `path` (the path only names the file in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let corrupt = |offset: usize, what: &str| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            offset,
            what: what.to_owned(),
        };
        if bytes.len() < PREFIX + DIGEST {
            return Err(corrupt(
                bytes.len(),
                "file too short for a checkpoint (truncated?)",
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt(0, "expected magic bytes \"WFLORACK\""));
        }
        let mut u32b = [0u8; 4];
        u32b.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(u32b);
        if version != VERSION {
            return Err(corrupt(
                8,
                &format!("format version {version}, expected {VERSION}"),
            ));
        }
        let body_end = bytes.len() - DIGEST;
        let digest = Sha256::digest(&bytes[..body_end]);
        if digest.as_slice() != &bytes[body_end..] {
            return Err(corrupt(
                body_end,
                "sha256 checksum mismatch (truncated or modified file)",
            ));
        }
        let mut u64b = [0u8; 8];
        u64b.copy_from_slice(&bytes[12..20]);
        let hlen = usize::try_from(u64::from_le_bytes(u64b))
            .map_err(|_| corrupt(12, "header length overflows"))?;
        let hend = PREFIX
            .checked_add(hlen)
            .filter(|&e| e <= body_end)
            .ok_or_else(|| {
                corrupt(
                    12,
                    &format!("header length {hlen} runs past the end of the file"),
                )
            })?;
        let header: Header = serde_json::from_slice(&bytes[PREFIX..hend])
            .map_err(|e| corrupt(PREFIX, &format!("header is not valid JSON: {e}")))?;
        let mut pos = hend;
        let mut tensors = BTreeMap::new();
        for e in header.tensors {
            let n = e
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| corrupt(PREFIX, &format!("tensor '{}' shape overflows", e.name)))?;
            let end = n
                .checked_mul(4)
                .and_then(|b| pos.checked_add(b))
                .filter(|&end| end <= body_end)
                .ok_or_else(|| {
                    corrupt(
                        pos,
                        &format!("tensor '{}' data runs past the end of the file", e.name),
                    )
                })?;
            let data = bytes[pos..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            pos = end;
            tensors.insert(
                e.name,
                Tensor {
                    shape: e.shape,
                    data,
                },
            );
        }
        if pos != body_end {
            return Err(corrupt(pos, "unexpected bytes after the last tensor"));
        }
        Ok(Self {
            config_hash: header.config_hash,
            meta: header.meta,
            tensors,
        })
    }

    /// Writes atomically: a temporary file beside `path`, then a rename.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self.to_bytes().map_err(|source| CheckpointError::Meta {
            path: path.to_path_buf(),
            source,
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &bytes).map_err(|source| CheckpointError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads and checks a checkpoint; with `expected_config`, refuses one
    /// written under another configuration.
    pub fn read(path: &Path, expected_config: Option<&str>) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ck = Self::from_bytes(&bytes, path)?;
        if let Some(expected) = expected_config {
            ck.check_config(expected, path)?;
        }
        Ok(ck)
    }

    /// Refuses a checkpoint written under another configuration than the
    /// one whose hash is `expected` (`path` names it in the error).
    ///
    /// # Errors
    /// [`CheckpointError::OtherConfig`].
    pub fn check_config(&self, expected: &str, path: &Path) -> Result<(), CheckpointError> {
        if self.config_hash == expected {
            return Ok(());
        }
        Err(CheckpointError::OtherConfig {
            path: path.to_path_buf(),
            found: self.config_hash.clone(),
            expected: expected.to_owned(),
        })
    }

    /// Takes a tensor out, checking its shape.
    pub fn take(
        &mut self,
        name: &str,
        shape: &[usize],
        path: &Path,
    ) -> Result<Vec<f32>, CheckpointError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| CheckpointError::Tensor {
                path: path.to_path_buf(),
                name: name.to_owned(),
                what: "is missing".to_owned(),
            })?;
        if t.shape != shape {
            return Err(CheckpointError::Tensor {
                path: path.to_path_buf(),
                name: name.to_owned(),
                what: format!("has shape {:?}, expected {:?}", t.shape, shape),
            });
        }
        Ok(t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "a".to_owned(),
            Tensor {
                shape: vec![2, 3],
                data: vec![1.0, -2.5, 3.0, f32::MIN_POSITIVE, 0.0, 7.0],
            },
        );
        tensors.insert(
            "b".to_owned(),
            Tensor {
                shape: vec![1],
                data: vec![42.0],
            },
        );
        Checkpoint {
            config_hash: "abc".into(),
            meta: serde_json::json!({"round": 3, "queue": 0.25}),
            tensors,
        }
    }

    fn path() -> PathBuf {
        PathBuf::from("test.ckpt")
    }

    #[test]
    fn round_trip_is_exact() {
        let c = sample();
        let bytes = c.to_bytes().unwrap();
        assert_eq!(Checkpoint::from_bytes(&bytes, &path()).unwrap(), c);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let bytes = sample().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Checkpoint::from_bytes(&bytes[..cut], &path()).is_err(),
                "cut {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Checkpoint::from_bytes(&b, &path()).is_err(), "flip {i}");
        }
    }

    #[test]
    fn other_config_and_bad_tensor_are_refused() {
        let dir = std::env::temp_dir().join(format!("wflora-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.ckpt");
        sample().write(&p).unwrap();
        assert!(matches!(
            Checkpoint::read(&p, Some("xyz")),
            Err(CheckpointError::OtherConfig { .. })
        ));
        let mut c = Checkpoint::read(&p, Some("abc")).unwrap();
        assert!(matches!(
            c.take("a", &[3, 2], &p),
            Err(CheckpointError::Tensor { .. })
        ));
        assert!(matches!(
            c.take("zz", &[1], &p),
            Err(CheckpointError::Tensor { .. })
        ));
        assert_eq!(c.take("b", &[1], &p).unwrap(), vec![42.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_that_fails_leaves_the_previous_checkpoint_whole() {
        // What a full disk does to a write: here the temporary file cannot
        // be written because a directory stands at its path.
        let dir = std::env::temp_dir().join(format!("wflora-ckpt-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.ckpt");
        sample().write(&p).unwrap();
        let before = std::fs::read(&p).unwrap();
        std::fs::create_dir_all(dir.join("state.ckpt.tmp")).unwrap();
        let mut next = sample();
        next.meta = serde_json::json!({"round": 4});
        let err = next.write(&p).unwrap_err().to_string();
        assert!(err.contains("state.ckpt.tmp"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(Checkpoint::read(&p, Some("abc")).unwrap(), sample());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
