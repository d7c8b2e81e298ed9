//! The subcommands, as plain functions (so tests can call them).

use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wflora_fed::{RunConfig, Simulation, Task};

/// Any error a subcommand reports.
pub type CliError = Box<dyn std::error::Error>;

/// A progress bar over `len` steps, on stderr.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// `wflora run --config FILE`.
pub fn run(config: &Path, out: Option<&Path>, resume: bool) -> Result<(), CliError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read config {}: {e}", config.display()))?;
    let cfg = RunConfig::from_toml(&text, &config.display().to_string())?;
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("results/runs").join(&cfg.name));
    eprintln!("building task (pre-training the backbone on first use)...");
    let task = Arc::new(Task::build(&cfg.task)?);
    eprintln!(
        "backbone {} (pre-training loss {:.3}); {} train / {} test images",
        if task.backbone_from_cache { "loaded from cache" } else { "pre-trained" },
        task.pretrain_loss,
        task.train.len(),
        task.test.len()
    );
    let rounds = cfg.federation.rounds as u64;
    let mut sim = Simulation::new(cfg, task)?;
    let bar = progress(rounds, "rounds");
    let records = wflora_fed::run_to_end(&mut sim, &dir, resume, |r| {
        bar.set_position(r.round as u64);
        if let Some(a) = r.accuracy {
            bar.set_message(format!("acc {:.4}", a));
        }
    })?;
    bar.finish();
    if let Some(last) = records.last() {
        println!(
            "{}: {} rounds, final accuracy {}, simulated time {:.3} s, written to {}",
            sim.config().name,
            last.round,
            last.accuracy.map_or("-".into(), |a| format!("{a:.4}")),
            last.sim_time_s,
            dir.display()
        );
    }
    Ok(())
}

/// `wflora default-config`.
pub fn default_config() -> Result<(), CliError> {
    print!("{}", toml::to_string_pretty(&RunConfig::embedded_default())?);
    Ok(())
}

/// `wflora alloc solve INSTANCE.json`.
pub fn alloc_solve(instance: &Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(instance)
        .map_err(|e| format!("cannot read instance {}: {e}", instance.display()))?;
    let solution = wflora_alloc::solve_instance_json(&text)
        .map_err(|e| format!("{}: {e}", instance.display()))?;
    println!("{}", serde_json::to_string_pretty(&solution)?);
    Ok(())
}
