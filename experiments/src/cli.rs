//! The subcommands, as plain functions (so tests can call them).

use crate::progress::{Progress, build_task};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wflora_fed::config::layers::Override;
use wflora_fed::{RunConfig, RunDir, Simulation, Start};

/// Any error a subcommand reports.
pub type CliError = Box<dyn std::error::Error>;

/// Progress over `len` steps of `what` (e.g. `fig3 rounds`), on stderr: a
/// bar on a terminal, throttled log lines otherwise ([`Progress::new`]).
#[must_use]
pub fn progress(len: u64, what: &str) -> Progress {
    Progress::new(what, "", len)
}

/// `wflora run FILE`: the configuration file over its base with the
/// `--set` overrides on top ([`RunConfig::load`]); `start` says what to do
/// with a run already in the output directory. The directory is locked and
/// checked (an earlier run, the configuration of its checkpoint) before the
/// task is built.
pub fn run(
    config: &Path,
    overrides: &[Override],
    out: Option<&Path>,
    start: Start,
) -> Result<(), CliError> {
    let cfg = RunConfig::load(config, overrides)?;
    let dir = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("results/runs").join(&cfg.name));
    let run_dir = RunDir::open(&dir, &cfg, start)?;
    eprintln!("building task (pre-training the backbone on first use)...");
    let task = Arc::new(build_task(&cfg.task)?);
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
    let bar = Progress::new(&sim.config().name, "rounds", rounds);
    let records = run_dir.run(&mut sim, usize::MAX, |r| {
        if let Some(a) = r.accuracy {
            bar.set_message(format!("acc {a:.4}"));
        }
        bar.set_position(r.round as u64);
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

/// `wflora default-config`: the embedded default run as commented TOML
/// ([`RunConfig::to_commented_toml`]).
///
/// With a profile, prints that profile's base run instead (for `real`, the
/// asset paths of the cache, which must have been fetched).
pub fn default_config(profile: Option<crate::figures::Profile>) -> Result<(), CliError> {
    print!("{}", default_config_text(profile)?);
    Ok(())
}

/// What [`default_config`] prints.
///
/// # Errors
/// As [`crate::figures::base_config`].
pub fn default_config_text(profile: Option<crate::figures::Profile>) -> Result<String, CliError> {
    let (cfg, what) = match profile {
        None => (
            RunConfig::embedded_default(),
            "the embedded default run".to_owned(),
        ),
        Some(p) => (
            crate::figures::base_config(p)?,
            format!(
                "the base run of profile {} (`--profile {}`)",
                p.name(),
                p.name()
            ),
        ),
    };
    let header = format!(
        "wflora run configuration: {what}.\n\
         A file needs only the keys it changes. It starts from its `base`: the\n\
         embedded default unless it names another (`base = \"default\"`, or the\n\
         path of a configuration file relative to it: `base = \"tsfa.toml\"`).\n\
         `wflora run FILE --set section.key=value` changes a key on top\n\
         (e.g. `--set federation.clients=20 --set local.optimizer.adam_w.lr=3e-4`)."
    );
    Ok(cfg.to_commented_toml(&header)?)
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
    let task = build_task(&cfg)?;
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
    let bar = Progress::new("finetune", "fine-tunes", seeds * modes.len() as u64);
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

/// The exit status of `wflora reproduce --strict` when a claim does not
/// hold (everything was still written). 1 is an error, 2 bad arguments.
pub const EXIT_CLAIMS_FAILED: u8 = 3;

/// What the quick profile says of itself, first and last.
pub const QUICK_NOTICE: &str = "quick profile: a smoke run of the pipeline (seconds per figure); \
     its numbers are not results and its claims are not expected to hold \
     (results: --profile default)";

/// Where a figure's claims are discussed.
#[must_use]
pub fn claims_doc(fig: &str) -> String {
    format!("docs/figures.md#{fig}")
}

/// How one figure's claims came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureTally {
    /// The figure.
    pub id: &'static str,
    /// Claims that hold.
    pub hold: usize,
    /// Claims checked.
    pub total: usize,
}

/// How the claims of a reproduction came out, figure by figure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimTally {
    /// Every figure run, in order.
    pub figures: Vec<FigureTally>,
}

impl ClaimTally {
    /// Whether every claim of every figure holds.
    #[must_use]
    pub fn all_hold(&self) -> bool {
        self.figures.iter().all(|f| f.hold == f.total)
    }

    /// The closing line for `label` (a figure, or `all`): how many claims
    /// hold and where the others are discussed, e.g. `fig3: 2 of 6 claims
    /// hold; the 4 that do not: docs/figures.md#fig3`.
    #[must_use]
    pub fn line(&self, label: &str, profile: crate::figures::Profile) -> String {
        let hold: usize = self.figures.iter().map(|f| f.hold).sum();
        let total: usize = self.figures.iter().map(|f| f.total).sum();
        let mut line = if hold == total {
            match total {
                1 => format!("{label}: the 1 claim holds"),
                n => format!("{label}: all {n} claims hold"),
            }
        } else {
            let failing: Vec<String> = self
                .figures
                .iter()
                .filter(|f| f.hold < f.total)
                .map(|f| {
                    if self.figures.len() == 1 {
                        claims_doc(f.id)
                    } else {
                        format!("{} ({})", claims_doc(f.id), f.total - f.hold)
                    }
                })
                .collect();
            let fail = total - hold;
            format!(
                "{label}: {hold} of {total} claims hold; the {fail} that {} not: {}",
                if fail == 1 { "does" } else { "do" },
                failing.join(", ")
            )
        };
        if profile == crate::figures::Profile::Quick {
            line.push_str(" (quick profile: a smoke run, not results)");
        }
        line
    }
}

/// `wflora reproduce <fig|all>`: runs the figures with `opts` (each into
/// `out`, `out/<fig>` for `all`, or `results/<fig>`; `opts.out` is
/// replaced), prints each figure's claims and, last, one line saying how
/// many hold and where the others are discussed ([`ClaimTally::line`]).
/// A claim that does not hold is a result, not an error: the caller
/// decides (`--strict`: [`EXIT_CLAIMS_FAILED`]).
///
/// # Errors
/// An unknown figure, a bad `--set`, a figure's configuration, run or I/O
/// errors.
pub fn reproduce(
    which: &str,
    out: Option<&Path>,
    opts: &crate::figures::FigureOptions,
) -> Result<ClaimTally, CliError> {
    use crate::figures::{FIGURES, FigureOptions, Profile, default_out, find};
    let figs: Vec<_> = if which == "all" {
        FIGURES.iter().collect()
    } else {
        vec![find(which)?]
    };
    if opts.profile == Profile::Quick {
        println!("{QUICK_NOTICE}");
    }
    let mut tally = ClaimTally::default();
    for f in figs {
        let dir = match out {
            Some(o) if which == "all" => o.join(f.id),
            Some(o) => o.to_path_buf(),
            None => default_out(f.id),
        };
        let start = std::time::Instant::now();
        let outcome = (f.run)(&FigureOptions {
            out: dir,
            ..opts.clone()
        })?;
        let one = ClaimTally {
            figures: vec![FigureTally {
                id: f.id,
                hold: outcome.claims.iter().filter(|c| c.pass).count(),
                total: outcome.claims.len(),
            }],
        };
        println!(
            "{}: results in {} ({:.1} s)",
            f.id,
            outcome.dir.display(),
            start.elapsed().as_secs_f64()
        );
        println!("{}", one.line(f.id, opts.profile));
        tally.figures.extend(one.figures);
    }
    if which == "all" {
        println!("{}", tally.line("all", opts.profile));
    }
    Ok(tally)
}
