//! Running a simulation to the end with metrics on disk, checkpoints and resume.
//!
//! A run directory holds `config.json` (the resolved configuration),
//! `metrics.jsonl` (one [`RoundRecord`] per line) and `state.ckpt` (the
//! state after the last completed round). Starting a run in a directory that
//! already holds one is refused unless resuming; resuming checks that the
//! configuration is the same, drops metric lines past the checkpoint, and
//! continues, so a killed and resumed run ends with exactly the metrics of an
//! uninterrupted one.

use crate::FedError;
use crate::checkpoint::Checkpoint;
use crate::engine::Simulation;
use crate::metrics::RoundRecord;
use std::io::Write;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FedError + '_ {
    move |source| FedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `sim` to its last round, writing into `dir`. With `resume`, picks up
/// from `dir/state.ckpt` if present. `on_round` sees every new record (for
/// progress display). Returns every record of the run, from round 1.
///
/// # Errors
/// A directory holding another run (without `resume`), a checkpoint of
/// another configuration, I/O errors, or any error of a round.
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
    mut on_round: impl FnMut(&RoundRecord),
) -> Result<Vec<RoundRecord>, FedError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let metrics_path = dir.join("metrics.jsonl");
    let state_path = dir.join("state.ckpt");
    let config_path = dir.join("config.json");
    let mut records = Vec::new();
    if resume && state_path.exists() {
        let ck = Checkpoint::read(&state_path, Some(&sim.config().hash()))?;
        sim.restore(ck, &state_path)?;
        records = read_metrics(&metrics_path, sim.round())?;
    } else if (metrics_path.exists() || state_path.exists()) && !resume {
        return Err(FedError::Resume {
            path: dir.to_path_buf(),
            reason: "already holds a run (metrics.jsonl or state.ckpt); pass --resume to continue it or choose another output directory".into(),
        });
    }
    let cfg_json = serde_json::to_string_pretty(sim.config()).map_err(|e| FedError::Resume {
        path: config_path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&config_path, cfg_json + "\n").map_err(io(&config_path))?;
    // Rewrite the kept lines so that the file ends exactly at the checkpoint.
    write_metrics(&metrics_path, &records)?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(io(&metrics_path))?;
    while !sim.finished() && sim.round() < stop_after {
        let rec = sim.step()?;
        let line = serde_json::to_string(&rec).map_err(|e| FedError::Resume {
            path: metrics_path.clone(),
            reason: e.to_string(),
        })?;
        writeln!(file, "{line}").map_err(io(&metrics_path))?;
        file.flush().map_err(io(&metrics_path))?;
        sim.checkpoint().write(&state_path)?;
        on_round(&rec);
        records.push(rec);
    }
    Ok(records)
}

/// Reads the first `rounds` records of a metrics file.
///
/// # Errors
/// I/O errors, a malformed line (named by number), or fewer lines than the
/// checkpoint says were completed.
pub fn read_metrics(path: &Path, rounds: usize) -> Result<Vec<RoundRecord>, FedError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut out = Vec::with_capacity(rounds);
    for (i, line) in text.lines().enumerate().take(rounds) {
        let rec: RoundRecord = serde_json::from_str(line).map_err(|e| FedError::Resume {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        out.push(rec);
    }
    if out.len() != rounds {
        return Err(FedError::Resume {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} rounds but the checkpoint is at round {rounds}",
                out.len()
            ),
        });
    }
    Ok(out)
}

fn write_metrics(path: &PathBuf, records: &[RoundRecord]) -> Result<(), FedError> {
    let mut text = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| FedError::Resume {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io(path))
}
