//! Running a simulation to the end with metrics on disk, checkpoints and resume.
//!
//! A run directory holds `config.json` (the resolved configuration),
//! `metrics.jsonl` (one [`RoundRecord`] per line), `state.ckpt` (the state
//! after the last completed round, with a digest of the metrics lines up to
//! it) and `.wflora.lock` ([`DirLock`]: one run at a time). [`RunDir::open`]
//! makes every check that can refuse the directory before any work is done
//! (the lock, an earlier run, the configuration of a checkpoint, the metrics
//! against the checkpoint), so a caller can open it before building the task.
//! Starting a run in a directory that already holds one is refused unless
//! resuming or forcing; resuming continues from the checkpoint, keeping
//! exactly the metrics lines of rounds `1..=n` that it vouches for, so a
//! killed and resumed run ends with exactly the metrics of an uninterrupted
//! one; forcing clears the old run only once the new one starts.

use crate::FedError;
use crate::checkpoint::Checkpoint;
use crate::config::RunConfig;
use crate::engine::Simulation;
use crate::lock::DirLock;
use crate::metrics::RoundRecord;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The checkpoint metadata key holding the SHA-256 (hex) of the metrics
/// lines of rounds `1..=n`, each with its newline.
pub const METRICS_DIGEST_KEY: &str = "metrics_sha256";

/// How a run treats a directory that already holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Refuse a directory that holds a run.
    Fresh,
    /// Continue the run in the directory from its checkpoint (or start one
    /// where there is none).
    Resume,
    /// Replace the run in the directory: it is cleared when the new run
    /// starts ([`RunDir::run`]), not before.
    Force,
}

impl Start {
    /// `Resume` or `Fresh`.
    #[must_use]
    pub fn resume_if(resume: bool) -> Self {
        if resume { Self::Resume } else { Self::Fresh }
    }
}

/// A locked run directory whose start has been checked.
#[derive(Debug)]
pub struct RunDir {
    lock: DirLock,
    start: Start,
    config_hash: String,
    /// The checkpoint to resume from and the metrics lines it vouches for.
    resume_from: Option<(Checkpoint, Vec<String>)>,
}

impl RunDir {
    /// Locks `dir` (creating it) and checks that a run of `config` may start
    /// there as `start` says: without resume or force, no earlier run; with
    /// resume, a checkpoint (if any) of this configuration whose metrics
    /// lines are exactly rounds `1..=n` with the digest it records. Reads
    /// the checkpoint once, for [`RunDir::run`].
    ///
    /// # Errors
    /// [`FedError::Locked`] when another run holds the directory;
    /// [`FedError::Resume`] for an earlier run without resume or force, or
    /// metrics that do not match the checkpoint; checkpoint errors (another
    /// configuration, corruption); I/O errors.
    pub fn open(dir: &Path, config: &RunConfig, start: Start) -> Result<Self, FedError> {
        let lock = DirLock::acquire(dir)?;
        let config_hash = config.hash();
        let metrics_path = dir.join("metrics.jsonl");
        let state_path = dir.join("state.ckpt");
        let mut resume_from = None;
        match start {
            Start::Resume if state_path.exists() => {
                let ck = Checkpoint::read(&state_path, Some(&config_hash))?;
                let lines = checked_metrics(&metrics_path, &state_path, &ck)?;
                resume_from = Some((ck, lines));
            }
            Start::Fresh if metrics_path.exists() || state_path.exists() => {
                return Err(FedError::Resume {
                    path: dir.to_path_buf(),
                    reason: "already holds a run (metrics.jsonl or state.ckpt); pass --resume to \
                             continue it, --force to replace it, or choose another output directory"
                        .into(),
                });
            }
            _ => {}
        }
        Ok(Self {
            lock,
            start,
            config_hash,
            resume_from,
        })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.lock.dir()
    }

    /// Runs `sim` (built from the configuration the directory was opened
    /// for) until it has finished or `stop_after` rounds are complete,
    /// writing metrics and a checkpoint after every round; `on_round` sees
    /// every new record. Returns every record of the run, from round 1.
    ///
    /// # Errors
    /// A simulation of another configuration, I/O errors, or any error of a
    /// round.
    pub fn run(
        self,
        sim: &mut Simulation,
        stop_after: usize,
        mut on_round: impl FnMut(&RoundRecord),
    ) -> Result<Vec<RoundRecord>, FedError> {
        let dir = self.path().to_path_buf();
        let metrics_path = dir.join("metrics.jsonl");
        let state_path = dir.join("state.ckpt");
        let config_path = dir.join("config.json");
        if sim.config().hash() != self.config_hash {
            return Err(FedError::Resume {
                path: dir,
                reason:
                    "the simulation's configuration is not the one the directory was opened for"
                        .into(),
            });
        }
        if self.start == Start::Force {
            // The new run has started: only now does the old one go, the
            // checkpoint first (a directory with metrics and no checkpoint
            // is a run to be replaced, never one to resume from).
            for p in [&state_path, &metrics_path] {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(p)(e)),
                }
            }
        }
        let mut records = Vec::new();
        let mut digest = Sha256::new();
        let mut text = String::new();
        if let Some((ck, lines)) = self.resume_from {
            sim.restore(ck, &state_path)?;
            for (i, line) in lines.iter().enumerate() {
                let rec = parse_line(&metrics_path, i, line)?;
                records.push(rec);
                text.push_str(line);
                text.push('\n');
            }
            digest.update(text.as_bytes());
        }
        let cfg_json =
            serde_json::to_string_pretty(sim.config()).map_err(|e| FedError::Resume {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        std::fs::write(&config_path, cfg_json + "\n").map_err(io(&config_path))?;
        // Rewrite the kept lines so that the file ends exactly at the checkpoint.
        std::fs::write(&metrics_path, text).map_err(io(&metrics_path))?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(io(&metrics_path))?;
        while !sim.finished() && sim.round() < stop_after {
            let rec = sim.step()?;
            let mut line = serde_json::to_string(&rec).map_err(|e| FedError::Resume {
                path: metrics_path.clone(),
                reason: e.to_string(),
            })?;
            line.push('\n');
            file.write_all(line.as_bytes())
                .and_then(|()| file.flush())
                .map_err(io(&metrics_path))?;
            digest.update(line.as_bytes());
            let mut ck = sim.checkpoint();
            if let Some(meta) = ck.meta.as_object_mut() {
                meta.insert(
                    METRICS_DIGEST_KEY.to_owned(),
                    crate::hex(&digest.clone().finalize()).into(),
                );
            }
            ck.write(&state_path)?;
            on_round(&rec);
            records.push(rec);
        }
        Ok(records)
    }
}

/// Runs `sim` to its last round, writing into `dir`. With `resume`, picks up
/// from `dir/state.ckpt` if present. `on_round` sees every new record (for
/// progress display). Returns every record of the run, from round 1.
///
/// # Errors
/// As [`RunDir::open`] and [`RunDir::run`].
pub fn run_to_end(
    sim: &mut Simulation,
    dir: &Path,
    resume: bool,
    on_round: impl FnMut(&RoundRecord),
) -> Result<Vec<RoundRecord>, FedError> {
    run_until(sim, dir, resume, usize::MAX, on_round)
}

/// As [`run_to_end`], but stops (with metrics and checkpoint on disk) once
/// `stop_after` rounds are complete: what a run killed after that round
/// leaves behind.
///
/// # Errors
/// As [`run_to_end`].
pub fn run_until(
    sim: &mut Simulation,
    dir: &Path,
    resume: bool,
    stop_after: usize,
    on_round: impl FnMut(&RoundRecord),
) -> Result<Vec<RoundRecord>, FedError> {
    RunDir::open(dir, sim.config(), Start::resume_if(resume))?.run(sim, stop_after, on_round)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FedError + '_ {
    move |source| FedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the first `rounds` records of a metrics file, checking that they
/// are rounds `1..=rounds` in order.
///
/// # Errors
/// I/O errors, a malformed line (named by number), a line out of order, or
/// fewer lines than `rounds`.
pub fn read_metrics(path: &Path, rounds: usize) -> Result<Vec<RoundRecord>, FedError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let lines = first_lines(path, &text, rounds)?;
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_line(path, i, l))
        .collect()
}

/// The metrics lines a checkpoint vouches for: the first `n` (its round),
/// numbered `1..=n`, whose digest is the one it records. Lines past them
/// (a round whose checkpoint was not written before a kill) are dropped.
fn checked_metrics(
    metrics_path: &Path,
    state_path: &Path,
    ck: &Checkpoint,
) -> Result<Vec<String>, FedError> {
    let bad_ck = |what: &str| FedError::Resume {
        path: state_path.to_path_buf(),
        reason: what.to_owned(),
    };
    let rounds = ck.meta["round"]
        .as_u64()
        .and_then(|r| usize::try_from(r).ok())
        .ok_or_else(|| bad_ck("checkpoint metadata: round"))?;
    let recorded = ck.meta[METRICS_DIGEST_KEY].as_str().ok_or_else(|| {
        bad_ck(
            "records no digest of the metrics (written by an older wflora); \
             start the run over with --force",
        )
    })?;
    let text = std::fs::read_to_string(metrics_path).map_err(io(metrics_path))?;
    let lines = first_lines(metrics_path, &text, rounds)?;
    let mut digest = Sha256::new();
    for (i, l) in lines.iter().enumerate() {
        parse_line(metrics_path, i, l)?;
        digest.update(l.as_bytes());
        digest.update(b"\n");
    }
    let computed = crate::hex(&digest.finalize());
    if computed != recorded {
        return Err(FedError::Resume {
            path: metrics_path.to_path_buf(),
            reason: format!(
                "rounds 1..={rounds} are not the ones the checkpoint {} was written after \
                 (their SHA-256 {computed}, recorded {recorded}): the file was changed by \
                 another process or by hand; start the run over with --force",
                state_path.display()
            ),
        });
    }
    Ok(lines.into_iter().map(str::to_owned).collect())
}

/// The first `rounds` lines of a metrics file.
fn first_lines<'t>(path: &Path, text: &'t str, rounds: usize) -> Result<Vec<&'t str>, FedError> {
    let lines: Vec<&str> = text.lines().take(rounds).collect();
    if lines.len() != rounds {
        return Err(FedError::Resume {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} rounds but the checkpoint is at round {rounds}",
                lines.len()
            ),
        });
    }
    Ok(lines)
}

/// Line `i` (0-based) of a metrics file, which must be round `i + 1`.
fn parse_line(path: &Path, i: usize, line: &str) -> Result<RoundRecord, FedError> {
    let rec: RoundRecord = serde_json::from_str(line).map_err(|e| FedError::Resume {
        path: path.to_path_buf(),
        reason: format!("line {}: {e}", i + 1),
    })?;
    if rec.round != i + 1 {
        return Err(FedError::Resume {
            path: path.to_path_buf(),
            reason: format!(
                "line {} holds round {} where round {} belongs: rounds must be 1, 2, 3, ... \
                 once each (two runs wrote this file?)",
                i + 1,
                rec.round,
                i + 1
            ),
        });
    }
    Ok(rec)
}
