//! Results directories, claim checks, summaries and manifests.
//!
//! Every reproduction writes into its own directory a `summary.json` holding
//! the numbers and the claim checks, and a `manifest.json` saying what produced
//! them. Nothing already written is overwritten silently: a directory that
//! holds results is refused unless the caller asks to overwrite (or resume).

use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors while writing results.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The output directory already holds results and overwriting was not asked for.
    #[error(
        "output directory {0} already holds results (summary.json); pass --force to overwrite or choose another --out"
    )]
    Exists(PathBuf),
    /// An I/O error on the named path.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another run holds the directory (its lock names the holder).
    #[error(transparent)]
    Locked(#[from] wflora_fed::FedError),
    /// Serialisation failed (a non-finite number in a JSON field, say).
    #[error("cannot serialise {what}: {source}")]
    Json {
        /// What was being serialised.
        what: String,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// Which way a claim's value is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The claim holds when `value >= threshold`.
    AtLeast,
    /// The claim holds when `value <= threshold`.
    AtMost,
}

/// One checked claim: a number computed from the run's data, compared with a threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    /// Short identifier, e.g. `lora_beats_head_only`.
    pub name: String,
    /// Whether the claim holds on this run's data.
    pub pass: bool,
    /// The value computed from the data.
    pub value: f64,
    /// The threshold it is compared with.
    pub threshold: f64,
    /// The comparison.
    pub direction: Direction,
    /// One sentence: what the value is and how it was computed.
    pub detail: String,
}

impl Claim {
    /// A claim that holds when `value >= threshold`.
    pub fn at_least(name: &str, value: f64, threshold: f64, detail: &str) -> Self {
        Self::new(name, value, threshold, Direction::AtLeast, detail)
    }

    /// A claim that holds when `value <= threshold`.
    pub fn at_most(name: &str, value: f64, threshold: f64, detail: &str) -> Self {
        Self::new(name, value, threshold, Direction::AtMost, detail)
    }

    fn new(name: &str, value: f64, threshold: f64, direction: Direction, detail: &str) -> Self {
        // A NaN value never passes: a broken run must not look like a success.
        let pass = match direction {
            Direction::AtLeast => value >= threshold,
            Direction::AtMost => value <= threshold,
        };
        Self {
            name: name.to_owned(),
            pass,
            value,
            threshold,
            direction,
            detail: detail.to_owned(),
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.direction {
            Direction::AtLeast => ">=",
            Direction::AtMost => "<=",
        };
        write!(
            f,
            "{} {}: {:.4} {} {:.4} ({})",
            if self.pass { "PASS" } else { "FAIL" },
            self.name,
            self.value,
            op,
            self.threshold,
            self.detail
        )
    }
}

/// A results directory, locked for this process ([`wflora_fed::DirLock`])
/// and checked once for earlier results when opened.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    dir: PathBuf,
    lock: std::sync::Arc<wflora_fed::DirLock>,
}

impl ResultsDir {
    /// Opens (creating it if needed) and locks a results directory. If it
    /// already holds a `summary.json`, it is refused unless `overwrite` is
    /// set.
    ///
    /// # Errors
    /// [`ReportError::Locked`] when another run holds it (checked first, so
    /// the holder is named whatever the directory holds),
    /// [`ReportError::Exists`], or I/O errors.
    pub fn open(dir: &Path, overwrite: bool) -> Result<Self, ReportError> {
        let lock = std::sync::Arc::new(wflora_fed::DirLock::acquire(dir)?);
        if dir.join("summary.json").exists() && !overwrite {
            return Err(ReportError::Exists(dir.to_path_buf()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            lock,
        })
    }

    /// Removes everything in the directory but its lock, `summary.json`
    /// first: killed part-way, it leaves a directory that holds no results,
    /// never old results beside missing runs.
    ///
    /// # Errors
    /// I/O errors, naming the entry.
    pub fn clear(&self) -> Result<(), ReportError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        let summary = self.file("summary.json");
        match std::fs::remove_file(&summary) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&summary)(e)),
        }
        let lock_name = self
            .lock
            .dir()
            .join(wflora_fed::lock::LOCK_FILE)
            .file_name()
            .map(std::ffi::OsStr::to_owned);
        for entry in std::fs::read_dir(&self.dir).map_err(err(&self.dir))? {
            let entry = entry.map_err(err(&self.dir))?;
            if Some(entry.file_name()) == lock_name {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().map_err(err(&path))?.is_dir();
            if is_dir {
                std::fs::remove_dir_all(&path).map_err(err(&path))?;
            } else {
                std::fs::remove_file(&path).map_err(err(&path))?;
            }
        }
        Ok(())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The path of a file inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `value` as pretty JSON to `name`, atomically (temp file + rename).
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<PathBuf, ReportError> {
        let text = serde_json::to_string_pretty(value).map_err(|source| ReportError::Json {
            what: name.to_owned(),
            source,
        })?;
        self.write_text(name, &(text + "\n"))
    }

    /// Writes text to `name`, atomically (temp file + rename).
    pub fn write_text(&self, name: &str, text: &str) -> Result<PathBuf, ReportError> {
        let path = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(|source| ReportError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// What produced a set of results: enough to run it again.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The command line, as given.
    pub command: Vec<String>,
    /// When the manifest was written, UTC, RFC 3339 (`2026-12-07T10:41:05Z`).
    pub created_utc: String,
    /// The machine it ran on.
    pub host: Host,
    /// `git describe --always --dirty` of the working tree, if git is available.
    pub git_revision: Option<String>,
    /// The base seed.
    pub seed: u64,
    /// Version of the wflora crates.
    pub wflora_version: String,
    /// The direct dependencies of the wflora crates at the exact versions
    /// of the `Cargo.lock` the binary was built with (`["ndarray",
    /// "0.17.1"]`), sorted by name.
    pub dependencies: Vec<(String, String)>,
    /// Profile or configuration name.
    pub profile: String,
    /// candle's thread pool and the allocator policy the process ran with
    /// (they change the speed, not the numbers).
    pub runtime: crate::process::Runtime,
}

/// The machine a manifest was written on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Host {
    /// The host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), if known.
    pub name: Option<String>,
    /// The operating system (`std::env::consts::OS`).
    pub os: String,
    /// The CPU architecture (`std::env::consts::ARCH`).
    pub arch: String,
    /// The CPU model (`model name` of `/proc/cpuinfo`), if known.
    pub cpu: Option<String>,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
}

impl Host {
    /// The machine this process runs on.
    #[must_use]
    pub fn current() -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty());
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Self {
            name,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpu,
            logical_cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}

impl Manifest {
    /// A manifest for the current process.
    pub fn current(seed: u64, profile: &str) -> Self {
        let git_revision = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            command: std::env::args().collect(),
            created_utc: rfc3339_utc(now),
            host: Host::current(),
            git_revision,
            seed,
            wflora_version: env!("CARGO_PKG_VERSION").to_owned(),
            dependencies: locked::LOCKED_DEPENDENCIES
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            profile: profile.to_owned(),
            runtime: crate::process::current(),
        }
    }
}

/// The exact dependency versions, written by `build.rs` from `Cargo.lock`.
mod locked {
    include!(concat!(env!("OUT_DIR"), "/locked.rs"));
}

/// `secs` after the Unix epoch as an RFC 3339 UTC timestamp
/// (`1970-01-01T00:00:00Z`), by H. Hinnant's `civil_from_days`
/// algorithm (proleptic Gregorian calendar).
#[must_use]
pub fn rfc3339_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Prints every claim as a PASS/FAIL line and returns whether all passed.
pub fn print_claims(title: &str, claims: &[Claim]) -> bool {
    println!("{title}:");
    for c in claims {
        println!("  {c}");
    }
    claims.iter().all(|c| c.pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        // reference instants from `date -u -d @SECS +%FT%TZ` (GNU coreutils)
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(1_796_640_065), "2026-12-07T10:41:05Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn manifest_records_exact_locked_versions() {
        let m = Manifest::current(7, "test");
        let lock = include_str!("../../Cargo.lock");
        for name in ["ndarray", "candle-core", "good_lp", "rand", "serde"] {
            let (_, v) = m
                .dependencies
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing from {:?}", m.dependencies));
            assert_eq!(
                v.split('.').count(),
                3,
                "{name} {v} is not an exact version"
            );
            assert!(
                lock.contains(&format!("name = \"{name}\"\nversion = \"{v}\"")),
                "{name} {v} is not what Cargo.lock pins"
            );
        }
        assert_eq!(m.created_utc.len(), 20, "{}", m.created_utc);
        assert!(m.host.logical_cpus >= 1);
        assert_eq!(m.host.os, std::env::consts::OS);
    }

    #[test]
    fn claim_direction_and_nan() {
        assert!(Claim::at_least("a", 5.0, 5.0, "").pass);
        assert!(!Claim::at_least("a", 4.9, 5.0, "").pass);
        assert!(Claim::at_most("a", 1.0, 2.0, "").pass);
        assert!(!Claim::at_most("a", 2.1, 2.0, "").pass);
        assert!(!Claim::at_least("a", f64::NAN, 0.0, "").pass);
        assert!(!Claim::at_most("a", f64::NAN, 0.0, "").pass);
    }

    #[test]
    fn results_dir_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("wflora-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = ResultsDir::open(&dir, false).unwrap();
        r.write_json("summary.json", &serde_json::json!({"x": 1}))
            .unwrap();
        drop(r);
        assert!(matches!(
            ResultsDir::open(&dir, false),
            Err(ReportError::Exists(_))
        ));
        assert!(ResultsDir::open(&dir, true).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn results_dir_is_locked_while_open_and_clear_keeps_only_the_lock() {
        let dir = std::env::temp_dir().join(format!("wflora-report-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = ResultsDir::open(&dir, false).unwrap();
        let err = ResultsDir::open(&dir, true).unwrap_err().to_string();
        assert!(err.contains("in use by another run"), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
        r.write_json("summary.json", &serde_json::json!({"x": 1}))
            .unwrap();
        std::fs::create_dir_all(dir.join("runs/a")).unwrap();
        std::fs::write(dir.join("runs/a/metrics.jsonl"), "x\n").unwrap();
        r.clear().unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [wflora_fed::lock::LOCK_FILE]);
        drop(r);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
