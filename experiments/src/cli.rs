//! The subcommands, as plain functions (so tests can call them).

use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wflora_fed::{RunConfig, RunDir, Simulation, Start, Task};

/// Any error a subcommand reports.
pub type CliError = Box<dyn std::error::Error>;

/// A progress bar over `len` steps, on stderr.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// `wflora run --config FILE`: `start` says what to do with a run already
/// in the output directory. The directory is locked and checked (an earlier
/// run, the configuration of its checkpoint) before the task is built.
pub fn run(config: &Path, out: Option<&Path>, start: Start) -> Result<(), CliError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read config {}: {e}", config.display()))?;
    let cfg = RunConfig::from_toml(&text, &config.display().to_string())?;
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("results/runs").join(&cfg.name));
    cfg.validate()?;
    let run_dir = RunDir::open(&dir, &cfg, start)?;
    eprintln!("building task (pre-training the backbone on first use)...");
    let task = Arc::new(Task::build(&cfg.task)?);
    let origin = match &cfg.task.weights {
        Some(w) => format!("read from {}", w.path.display()),
        None if task.backbone_from_cache => {
            format!(
                "loaded from cache (pre-training loss {:.3})",
                task.pretrain_loss
            )
        }
        None => format!("pre-trained (loss {:.3})", task.pretrain_loss),
    };
    eprintln!(
        "backbone {origin}; {} train / {} test images",
        task.train.len(),
        task.test.len()
    );
    let rounds = cfg.federation.rounds as u64;
    let mut sim = Simulation::new(cfg, task)?;
    let bar = progress(rounds, "rounds");
    let records = run_dir.run(&mut sim, usize::MAX, |r| {
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
///
/// With a profile, prints that profile's base run instead (for `real`, the
/// asset paths of the cache, which must have been fetched).
pub fn default_config(profile: Option<crate::figures::Profile>) -> Result<(), CliError> {
    let cfg = match profile {
        None => RunConfig::embedded_default(),
        Some(p) => crate::figures::base_config(p)?,
    };
    print!("{}", toml::to_string_pretty(&cfg)?);
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

/// `wflora finetune`: centralised head-only vs LoRA vs full fine-tuning on the
/// embedded default task, with the claims of issue 2 checked and written to
/// `out/summary.json` and `out/data.csv`.
pub fn finetune(out: &Path, force: bool, steps: usize, seeds: u64) -> Result<(), CliError> {
    use crate::report::{Claim, Manifest, ResultsDir, print_claims};
    use wflora_fed::centralized::{CentralSchedule, fine_tune};
    use wflora_lora::{AdamWParams, FineTuneMode, LoraConfig, OptimizerKind};
    let dir = ResultsDir::open(out, force)?;
    let cfg = wflora_fed::TaskConfig::embedded_default();
    eprintln!("building task (pre-training the backbone on first use)...");
    let task = Task::build(&cfg)?;
    if force {
        // Only now that the new run has its task do the old results go.
        dir.clear()?;
    }
    let sched = |lr: f64| CentralSchedule {
        steps,
        batch_size: 32,
        optimizer: OptimizerKind::AdamW(AdamWParams {
            lr,
            ..AdamWParams::default()
        }),
    };
    let modes: [(&str, FineTuneMode, f64); 3] = [
        ("head_only", FineTuneMode::HeadOnly, 5e-3),
        (
            "lora_r8",
            FineTuneMode::Lora(LoraConfig::with_rank(8)),
            2e-3,
        ),
        ("full", FineTuneMode::Full, 1e-3),
    ];
    let bar = progress(seeds * modes.len() as u64, "fine-tunes");
    let mut csv = String::from("mode,seed,accuracy,loss,trainable\n");
    let mut acc = vec![Vec::new(); modes.len()];
    for seed in 1..=seeds {
        for (i, (name, mode, lr)) in modes.iter().enumerate() {
            let r = fine_tune(&task, mode.clone(), &sched(*lr), seed)?;
            csv.push_str(&format!(
                "{name},{seed},{},{},{}\n",
                r.accuracy, r.loss, r.trainable
            ));
            acc[i].push(r.accuracy);
            bar.inc(1);
        }
    }
    bar.finish();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (h, l, f) = (mean(&acc[0]), mean(&acc[1]), mean(&acc[2]));
    let claims = vec![
        Claim::at_least(
            "lora_beats_head_only",
            l - h,
            0.05,
            "mean test accuracy of LoRA r=8 minus head-only (fraction)",
        ),
        Claim::at_least(
            "lora_close_to_full",
            l - f,
            -0.03,
            "mean test accuracy of LoRA r=8 minus full fine-tuning (fraction)",
        ),
    ];
    dir.write_text("data.csv", &csv)?;
    dir.write_json(
        "summary.json",
        &serde_json::json!({
            "task": "embedded Fashion-MNIST, pre-trained on classes 0-4, fine-tuned on 5-9",
            "steps": steps, "seeds": seeds, "test_images": task.test.len(),
            "mean_accuracy": {"head_only": h, "lora_r8": l, "full": f},
            "claims": claims,
        }),
    )?;
    dir.write_json("manifest.json", &Manifest::current(1, "finetune"))?;
    let ok = print_claims("finetune", &claims);
    println!("results in {}", dir.path().display());
    if ok {
        Ok(())
    } else {
        Err("a claim failed (see above)".into())
    }
}

/// `wflora list`: the figures and what they check.
pub fn list() -> Result<(), CliError> {
    for f in crate::figures::FIGURES {
        println!("{:<6} {}\n       claim: {}", f.id, f.shows, f.claim);
    }
    Ok(())
}

/// `wflora reproduce <fig|all>`: runs figures, prints their claims; with a
/// profile whose claims are required, fails when one does not hold.
pub fn reproduce(
    which: &str,
    profile: crate::figures::Profile,
    out: Option<&Path>,
    resume: bool,
    force: bool,
) -> Result<(), CliError> {
    use crate::figures::{FIGURES, FigureOptions, Profile, default_out, find};
    let figs: Vec<_> = if which == "all" {
        FIGURES.iter().collect()
    } else {
        vec![find(which)?]
    };
    let mut failed = Vec::new();
    for f in figs {
        let dir = match out {
            Some(o) if which == "all" => o.join(f.id),
            Some(o) => o.to_path_buf(),
            None => default_out(f.id),
        };
        let start = std::time::Instant::now();
        let outcome = (f.run)(&FigureOptions {
            profile,
            out: dir,
            resume,
            force,
        })?;
        println!(
            "{}: {} of {} claims PASS in {:.1} s; results in {}",
            f.id,
            outcome.claims.iter().filter(|c| c.pass).count(),
            outcome.claims.len(),
            start.elapsed().as_secs_f64(),
            outcome.dir.display()
        );
        if outcome.claims.iter().any(|c| !c.pass) {
            failed.push(f.id);
        }
    }
    if !failed.is_empty() && profile != Profile::Quick {
        return Err(format!(
            "claims failed in: {} (see the FAIL lines above)",
            failed.join(", ")
        )
        .into());
    }
    Ok(())
}
