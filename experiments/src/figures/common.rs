//! What every figure does the same way: open the results directory, build
//! the task once, run each simulation in its own resumable directory under a
//! progress bar, write the per-round CSV rows, and finish with the config,
//! manifest, summary and printed claims.

use super::stats::{mean, min_max};
use super::{FigureOptions, FigureOutcome, Profile};
use crate::cli::CliError;
use crate::progress::{Progress, build_task, format_duration};
use crate::report::{Claim, Manifest, ResultsDir, print_claims};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use wflora_bounds::{BoundParams, RatioGrid};
use wflora_fed::{
    AllocationSettings, OfflinePlan, OfflineSettings, PhaseTimes, RoundRecord, RunConfig,
    Simulation, Task,
};

/// One figure's run: its results directory, task and progress bar.
pub struct Runner {
    fig: &'static str,
    profile: Profile,
    dir: ResultsDir,
    runs_dir: PathBuf,
    resume: bool,
    task: Arc<Task>,
    bar: Progress,
    /// Wall clock per engine phase, summed over the runs of this process.
    times: RefCell<PhaseTimes>,
    /// Wall clock inside the runs (phases plus metrics, checkpoints, progress).
    runs_s: Cell<f64>,
    started: Instant,
}

impl Runner {
    /// Opens the figure's directory ([`open_results`]: every refusal before
    /// any work), builds the task of `base`, clears old results on `--force`
    /// ([`begin_results`]) and starts a progress bar over `total_rounds`.
    ///
    /// # Errors
    /// Existing results, I/O, or task errors.
    pub fn start(
        fig: &'static str,
        opts: &FigureOptions,
        base: &RunConfig,
        total_rounds: usize,
    ) -> Result<Self, CliError> {
        base.validate()?;
        let (dir, runs_dir) = open_results(opts, fig, base)?;
        eprintln!(
            "{fig} [{}]: building task ({})...",
            opts.profile.name(),
            if base.task.weights.is_some() {
                "reading the pre-trained backbone and the data"
            } else {
                "pre-training the backbone on first use"
            }
        );
        let task = Arc::new(build_task(&base.task)?);
        begin_results(&dir, opts, fig, base)?;
        let bar = Progress::new(fig, "rounds", total_rounds as u64);
        Ok(Self {
            fig,
            profile: opts.profile,
            dir,
            runs_dir,
            resume: opts.resume,
            task,
            bar,
            times: RefCell::new(PhaseTimes::default()),
            runs_s: Cell::new(0.0),
            started: Instant::now(),
        })
    }

    /// The results directory.
    pub fn dir(&self) -> &ResultsDir {
        &self.dir
    }

    /// Runs (or, with `--resume`, continues) one simulation in `runs/<id>`.
    ///
    /// # Errors
    /// Configuration or run errors.
    pub fn run(&self, cfg: RunConfig, id: &str) -> Result<Vec<RoundRecord>, CliError> {
        Ok(self.run_with(cfg, id, |_| Ok(()))?.0)
    }

    /// As [`Runner::run`], and computes `inspect` on the finished simulation
    /// (its final global model, say).
    ///
    /// # Errors
    /// Configuration or run errors, or those of `inspect`.
    pub fn run_with<T>(
        &self,
        cfg: RunConfig,
        id: &str,
        inspect: impl FnOnce(&Simulation) -> Result<T, CliError>,
    ) -> Result<(Vec<RoundRecord>, T), CliError> {
        let rounds = cfg.federation.rounds as u64;
        let run_dir = self.runs_dir.join(id);
        let mut sim = Simulation::new(cfg, self.task.clone())?;
        self.bar.set_message(id.to_owned());
        let before = self.bar.position();
        let clock = Instant::now();
        let records = wflora_fed::run_to_end(&mut sim, &run_dir, self.resume, |r| {
            self.bar.set_position(before + r.round as u64);
        })?;
        self.runs_s
            .set(self.runs_s.get() + clock.elapsed().as_secs_f64());
        self.times.borrow_mut().add(sim.phase_times());
        self.bar.set_position(before + rounds);
        if self.bar.is_log() {
            // No terminal: a line per finished run besides the progress lines.
            eprintln!(
                "{}: {id} done ({}/{} rounds, {} elapsed), final accuracy {:.4}",
                self.fig,
                self.bar.position(),
                self.bar.length(),
                format_duration(self.bar.elapsed()),
                final_accuracy(&records)
            );
        }
        let extra = inspect(&sim)?;
        Ok((records, extra))
    }

    /// TSFA's offline stage on `base` (pilot runs, the bound table, `r*`).
    /// Deterministic, so a resumed figure recomputes the same plan.
    ///
    /// # Errors
    /// Pilot, fit or selection errors.
    pub fn plan(
        &self,
        base: &RunConfig,
        settings: &OfflineSettings,
    ) -> Result<OfflinePlan, CliError> {
        self.bar.set_message("offline stage (pilots)".to_owned());
        let plan = wflora_fed::plan_offline(base, self.task.clone(), settings)?;
        self.bar.inc(settings.pilot_rounds_total() as u64);
        if self.bar.is_log() {
            eprintln!(
                "{}: offline stage chose r* = {}, rho(r*) = {:.4} (T̄ = {:.3} s)",
                self.fig, plan.rank, plan.ratio, plan.budget_s
            );
        }
        Ok(plan)
    }

    /// Writes `config.json` (`base`), `manifest.json`, `summary.json` (the
    /// given fields plus figure, profile, seeds and claims) and prints the
    /// claims.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish<T: Serialize>(
        self,
        base: &T,
        seeds: &[u64],
        mut summary: serde_json::Map<String, serde_json::Value>,
        claims: Vec<Claim>,
    ) -> Result<FigureOutcome, CliError> {
        self.bar.finish();
        summary.insert("test_images".into(), self.task.test.len().into());
        self.write_timings()?;
        write_outcome(
            &self.dir,
            (self.fig, self.profile),
            base,
            seeds,
            summary,
            claims,
        )
    }
}

/// A figure's last step, shared by the federated and the SO-LoRA figures:
/// adds figure, profile, seeds and claims to `summary`, writes
/// `config.json` (`base`), `manifest.json` and `summary.json` to `dir`, and
/// prints the claims.
///
/// # Errors
/// I/O and serialisation errors.
pub(crate) fn write_outcome<T: Serialize>(
    dir: &ResultsDir,
    (fig, profile): (&'static str, Profile),
    base: &T,
    seeds: &[u64],
    mut summary: serde_json::Map<String, serde_json::Value>,
    claims: Vec<Claim>,
) -> Result<FigureOutcome, CliError> {
    summary.insert("figure".into(), fig.into());
    summary.insert("profile".into(), profile.name().into());
    summary.insert("seeds".into(), serde_json::to_value(seeds)?);
    summary.insert("claims".into(), serde_json::to_value(&claims)?);
    dir.write_json("config.json", base)?;
    dir.write_json(
        "manifest.json",
        &Manifest::current(seeds.first().copied().unwrap_or(0), profile.name()),
    )?;
    dir.write_json("summary.json", &serde_json::Value::Object(summary))?;
    print_claims(fig, &claims);
    Ok(FigureOutcome {
        claims,
        dir: dir.path().to_path_buf(),
    })
}

impl Runner {
    /// Writes `timings.json`: where this process's wall clock went, per
    /// engine phase, plus the rest of the runs (metrics, checkpoints,
    /// progress) and of the figure (task, offline stage, timing panels,
    /// plots). Measured, so kept out of `summary.json`; a resumed figure
    /// counts only the rounds it ran.
    fn write_timings(&self) -> Result<(), CliError> {
        let t = *self.times.borrow();
        let runs = self.runs_s.get();
        let wall = self.started.elapsed().as_secs_f64();
        let bookkeeping = (runs - t.total_s()).max(0.0);
        let share = |x: f64| if runs > 0.0 { x / runs } else { f64::NAN };
        self.dir.write_json(
            "timings.json",
            &serde_json::json!({
                "figure_wall_s": wall,
                "runs_wall_s": runs,
                "rounds_run": t.rounds,
                "phases_s": t,
                "bookkeeping_s": bookkeeping,
                "share_of_runs": {
                    "train": share(t.train_s),
                    "allocate": share(t.allocate_s),
                    "compress": share(t.compress_s),
                    "covariance": share(t.covariance_s),
                    "aggregate": share(t.aggregate_s),
                    "evaluate": share(t.evaluate_s),
                    "bookkeeping": share(bookkeeping),
                },
            }),
        )?;
        if t.rounds > 0 {
            eprintln!(
                "{}: {:.1} s in {} rounds: train {:.1}%, evaluate {:.1}%, compress {:.2}%, allocate {:.2}%, covariance {:.2}%, aggregate {:.2}%, bookkeeping {:.2}%",
                self.fig,
                runs,
                t.rounds,
                100.0 * share(t.train_s),
                100.0 * share(t.evaluate_s),
                100.0 * share(t.compress_s),
                100.0 * share(t.allocate_s),
                100.0 * share(t.covariance_s),
                100.0 * share(t.aggregate_s),
                100.0 * share(bookkeeping)
            );
        }
        Ok(())
    }
}

/// Mean accuracy of the last (up to) three evaluations: the final accuracy
/// with less evaluation noise.
#[must_use]
pub fn final_accuracy(records: &[RoundRecord]) -> f64 {
    let accs: Vec<f64> = records.iter().filter_map(|r| r.accuracy).collect();
    let tail = &accs[accs.len().saturating_sub(3)..];
    mean(tail)
}

/// The accuracy of the last evaluation at or before simulated time `t`
/// (NaN when none).
#[must_use]
pub fn accuracy_at_time(records: &[RoundRecord], t: f64) -> f64 {
    records
        .iter()
        .filter(|r| r.sim_time_s <= t * (1.0 + 1e-12))
        .filter_map(|r| r.accuracy)
        .next_back()
        .unwrap_or(f64::NAN)
}

/// Mean kept ratio `m_k / r` over the sampled clients of a round (sit-outs
/// count as 0; NaN when the round reports no components, e.g. ILoRA's).
#[must_use]
pub fn kept_ratio(r: &RoundRecord, rank: usize) -> f64 {
    if r.components.is_empty() || rank == 0 {
        return f64::NAN;
    }
    r.components.iter().map(|&m| f64::from(m)).sum::<f64>() / (r.components.len() * rank) as f64
}

/// The per-round CSV columns every figure writes after its own key columns.
pub const ROUND_COLUMNS: &str = "round,accuracy,test_loss,train_loss,bits,latency_s,sim_time_s,mean_latency_s,queue_s,participants,kept_ratio,covariance_rel_mean";

/// One CSV line per round: `keys` (already comma-joined) then
/// [`ROUND_COLUMNS`].
#[must_use]
pub fn round_rows(keys: &str, records: &[RoundRecord], rank: usize) -> String {
    let opt = |x: Option<f64>| x.map_or(String::new(), |a| a.to_string());
    let mut out = String::new();
    for r in records {
        let cov = if r.covariance_rel.is_empty() {
            f64::NAN
        } else {
            mean(&r.covariance_rel)
        };
        out.push_str(&format!(
            "{keys},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.round,
            opt(r.accuracy),
            opt(r.test_loss),
            r.train_loss,
            r.bits,
            r.latency_s,
            r.sim_time_s,
            r.mean_latency_s,
            r.queue_s,
            r.participants,
            kept_ratio(r, rank),
            cov
        ));
    }
    out
}

/// A point of a spread band: `(x, low, high)`.
pub type Band = (f64, f64, f64);

/// Mean curve and min–max band over seeds of `f(record)` against the round
/// number (rounds where every seed has a value).
#[must_use]
pub fn curve_over_seeds(
    per_seed: &[Vec<RoundRecord>],
    f: impl Fn(&RoundRecord) -> Option<f64>,
) -> (Vec<(f64, f64)>, Vec<Band>) {
    let rounds = per_seed.iter().map(Vec::len).min().unwrap_or(0);
    let mut pts = Vec::new();
    let mut band = Vec::new();
    for t in 0..rounds {
        let v: Vec<f64> = per_seed.iter().filter_map(|r| f(&r[t])).collect();
        if v.len() == per_seed.len() && !v.is_empty() {
            let x = (t + 1) as f64;
            pts.push((x, mean(&v)));
            let (lo, hi) = min_max(&v);
            band.push((x, lo, hi));
        }
    }
    (pts, band)
}

/// The TSFA base of a profile (docs/method.md §5): the embedded task over a 1 MHz
/// band, where the upload rather than the tiny model's computation
/// dominates a round (at 20 MHz the allocation is bang-bang: every client
/// sends everything or sits out), drift-plus-penalty with `V = 0.1`,
/// per-client ratios, `m_min = 1`, `T̄ = 0.6·T_ILoRA` at rank 8. The same
/// settings as `experiments/configs/tsfa.toml`; fig5–fig7 share them.
/// `reproduce`'s `--set` and `--rounds` ([`FigureOptions::apply`]) come
/// last, so they reach the TSFA settings too.
/// # Errors
/// As [`base_config`]; a bad `--set`.
pub fn tsfa_base(opts: &FigureOptions, name: &str) -> Result<RunConfig, CliError> {
    let mut cfg = base_config(opts.profile)?;
    cfg.name = name.to_owned();
    cfg.compression.method = wflora_soft::MethodKind::Soft;
    cfg.model.zeta = SOFT_ZETA;
    cfg.wireless.channel.bandwidth_hz = 1e6;
    cfg.wireless.allocation = AllocationSettings::DriftPlusPenalty {
        v: 0.1,
        budget_rel: 0.6,
        mode: wflora_alloc::RatioMode::PerClient,
        m_min: 1,
        penalty: wflora_fed::PenaltyKind::DroppedEnergy,
        budget_rank: Some(8),
    };
    opts.apply(cfg)
}

/// The offline stage's settings of a profile: candidates `{1, 2, 4, 8, 16}`
/// (`r_max = 16`, the reference pilot), covariance measured at ranks 2 and 8
/// as well, `T̄ = 0.6·T_ILoRA` at rank 8 (as [`tsfa_base`]), the bound's
/// default constants (`c_Γ = c_C = c_S = 1`, uncalibrated; docs/choices.md)
/// and whole-component ratios.
#[must_use]
pub fn offline_settings(p: Profile) -> OfflineSettings {
    let (candidates, reference_rank, covariance_ranks, pilot_rounds) = match p {
        Profile::Quick => (vec![1, 2, 4, 8], 8, vec![2], 1),
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => {
            (vec![1, 2, 4, 8, 16], 16, vec![2, 8], 5)
        }
    };
    OfflineSettings {
        candidates,
        reference_rank,
        covariance_ranks,
        pilot_rounds,
        budget_rel: 0.6,
        budget_rank: Some(8),
        bound: BoundParams::default(),
        ratio_grid: RatioGrid::Components,
    }
}

/// The orthogonality weight `ζ` every SOFT run uses (docs/method.md §1: the
/// baselines train with `ζ = 0`). Chosen once from fig8's diagnostic by the
/// rule written there and in docs/figures.md: on the default profile
/// (seeds 1–3) the rule picked `ζ = 0.1` of `{0, 0.01, 0.1, 1}`.
pub const SOFT_ZETA: f64 = 0.1;

/// The base run of a profile: `shrink` of the embedded default for
/// `quick` and `default`, `real_base` for `real` / `real-noniid`,
/// `paper_base` for `paper`.
///
/// # Errors
/// A missing or altered asset, or a missing path for `paper`, naming what
/// to do.
pub fn base_config(p: Profile) -> Result<RunConfig, CliError> {
    match p {
        Profile::Quick | Profile::Default => Ok(shrink(RunConfig::embedded_default(), p)),
        Profile::Real => real_base(1.0),
        Profile::RealNoniid => real_base(0.1),
        Profile::Paper => paper_base(),
    }
}

/// The `real` profile (issue 6): DINOv2 ViT-S/14 (converted by
/// `wflora assets fetch`) with LoRA on the full Fashion-MNIST, grey images
/// replicated to RGB, resized to 56×56 (4×4 patches of 14) and normalised
/// with ImageNet's statistics; a class-stratified subset of
/// [`REAL_TRAIN_IMAGES`] training and [`REAL_TEST_IMAGES`] test images;
/// 20 clients, 10 sampled per round, Dirichlet(`alpha`). Participation,
/// rounds, local steps and batch fit fig3 in under an hour on 2 cores
/// (docs/figures.md).
///
/// # Errors
/// The assets are missing or altered (the error names `just fetch-assets`).
pub fn real_base(alpha: f64) -> Result<RunConfig, CliError> {
    let assets = verified_assets(crate::assets::AssetPart::Vision)?;
    let mut cfg = pretrained_federation(alpha);
    cfg.name = "real".into();
    let t = &mut cfg.task;
    t.dataset = wflora_fed::DatasetSource::IdxSplit {
        train_images: assets.fashion("train-images-idx3-ubyte.gz"),
        train_labels: assets.fashion("train-labels-idx1-ubyte.gz"),
        test_images: assets.fashion("t10k-images-idx3-ubyte.gz"),
        test_labels: assets.fashion("t10k-labels-idx1-ubyte.gz"),
        num_classes: 10,
    };
    t.target_classes = (0..10).collect();
    t.preset = "vit-s14".into();
    t.image_size = REAL_IMAGE_SIZE;
    t.weights = Some(wflora_fed::PretrainedWeights::imagenet(
        assets.backbone(),
        wflora_fed::WeightsFormat::Canonical,
    ));
    t.train_limit = Some(REAL_TRAIN_IMAGES);
    t.test_limit = Some(REAL_TEST_IMAGES);
    Ok(cfg)
}

/// The file, inside a figure's directory, that records what the figure was
/// started with (figure, profile and base configuration), so that a
/// `--resume` with anything else is refused before any work.
pub const START_FILE: &str = ".wflora-start.json";

/// A figure's results directory, locked for this process, and its `runs/`
/// folder. Every refusal happens here, before the task is built: another
/// run holding the directory, `--resume` with `--force`, earlier results
/// (`summary.json`, or an unfinished `runs/`) without either, and
/// `--resume` of a figure started with another profile or configuration.
/// Nothing is removed here: see [`begin_results`].
///
/// # Errors
/// As above, naming the directory; I/O errors.
pub fn open_results<T: Serialize>(
    opts: &FigureOptions,
    fig: &str,
    base: &T,
) -> Result<(ResultsDir, PathBuf), CliError> {
    if opts.resume && opts.force {
        return Err(
            "--resume and --force exclude each other: --resume continues the runs in \
                    the output directory, --force replaces them"
                .into(),
        );
    }
    let dir = ResultsDir::open(&opts.out, opts.force || opts.resume)?;
    let runs = dir.path().join("runs");
    let unfinished = std::fs::read_dir(&runs).is_ok_and(|mut r| r.next().is_some());
    if unfinished && !opts.force && !opts.resume {
        return Err(format!(
            "output directory {} holds an unfinished reproduction (runs/); pass --resume to \
             continue it, --force to start over, or choose another --out",
            dir.path().display()
        )
        .into());
    }
    let start = dir.file(START_FILE);
    if opts.resume && start.exists() {
        let text = std::fs::read_to_string(&start)
            .map_err(|e| format!("cannot read {}: {e}", start.display()))?;
        let found: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: corrupt or truncated: {e}", start.display()))?;
        if found != start_record(fig, opts.profile, base)? {
            return Err(format!(
                "output directory {} holds {} started with another profile or configuration \
                 than this --resume ({} of profile {}); resume with the same, pass --force to \
                 start over, or choose another --out",
                dir.path().display(),
                found["figure"].as_str().unwrap_or("a figure"),
                fig,
                opts.profile.name()
            )
            .into());
        }
    }
    Ok((dir, runs))
}

/// The start of a figure whose task has been built: on `--force` the old
/// results go now ([`ResultsDir::clear`]), never before the new run could
/// start; then what the figure was started with is recorded.
///
/// # Errors
/// I/O errors.
pub fn begin_results<T: Serialize>(
    dir: &ResultsDir,
    opts: &FigureOptions,
    fig: &str,
    base: &T,
) -> Result<(), CliError> {
    if opts.force {
        dir.clear()?;
    }
    dir.write_json(START_FILE, &start_record(fig, opts.profile, base)?)?;
    Ok(())
}

fn start_record<T: Serialize>(
    fig: &str,
    profile: Profile,
    base: &T,
) -> Result<serde_json::Value, CliError> {
    Ok(serde_json::json!({
        "figure": fig,
        "profile": profile.name(),
        "base": serde_json::to_value(base)?,
    }))
}

/// The asset cache (`WFLORA_ASSETS`, else [`crate::assets::DEFAULT_CACHE`])
/// with `part` verified against its manifest. Hashing the assets (over
/// 100 MB) once per process and part is enough: a figure asks for its base
/// more than once.
///
/// # Errors
/// Missing or altered assets (the error names `just fetch-assets`).
pub fn verified_assets(
    part: crate::assets::AssetPart,
) -> Result<crate::assets::AssetPaths, CliError> {
    let root = std::env::var_os("WFLORA_ASSETS").map_or_else(
        || PathBuf::from(crate::assets::DEFAULT_CACHE),
        PathBuf::from,
    );
    let assets = crate::assets::AssetPaths::new(&root);
    static VERIFIED: std::sync::Mutex<Vec<(PathBuf, crate::assets::AssetPart)>> =
        std::sync::Mutex::new(Vec::new());
    let mut verified = VERIFIED
        .lock()
        .map_err(|_| "asset verification lock poisoned")?;
    if !verified.contains(&(root.clone(), part)) {
        match part {
            crate::assets::AssetPart::Vision => {
                assets.verify()?;
            }
            crate::assets::AssetPart::Text => {
                assets.verify_text()?;
            }
        }
        verified.push((root, part));
    }
    Ok(assets)
}

/// What the `real` and `paper` profiles share: no pre-training (a backbone
/// file), 20 clients with 10 sampled per round, Dirichlet(`alpha`), and the
/// `real` profile's rounds, local steps and batch.
fn pretrained_federation(alpha: f64) -> RunConfig {
    let mut cfg = RunConfig::embedded_default();
    cfg.task.source_classes = Vec::new();
    cfg.task.pretrain.source_classes = 0;
    cfg.federation.clients = 20;
    cfg.federation.clients_per_round = REAL_CLIENTS_PER_ROUND;
    cfg.federation.rounds = REAL_ROUNDS;
    cfg.federation.eval_every = REAL_EVAL_EVERY;
    cfg.federation.partition = wflora_data::Scheme::Dirichlet {
        alpha,
        min_size: 16,
        max_attempts: 1000,
    };
    cfg.local.steps = REAL_LOCAL_STEPS;
    cfg.local.batch_size = REAL_BATCH;
    cfg
}

/// Input side of the `real` profile (4×4 patches of 14 pixels).
pub const REAL_IMAGE_SIZE: usize = 56;
/// Training images of the `real` profile (stratified subset of 60,000).
pub const REAL_TRAIN_IMAGES: usize = 12_000;
/// Test images of the `real` profile (stratified subset of 10,000).
pub const REAL_TEST_IMAGES: usize = 1_000;
/// Clients sampled per round (of 20) in the `real` profile: half, so that
/// fig3 fits in an hour on 2 cores (all 20 took about 75 minutes, SLoRA's
/// per-client SVDs of 384×384 updates included).
pub const REAL_CLIENTS_PER_ROUND: usize = 10;
/// Rounds of the `real` profile.
pub const REAL_ROUNDS: usize = 10;
/// Evaluation period (rounds) of the `real` profile.
pub const REAL_EVAL_EVERY: usize = 2;
/// Local steps per round in the `real` profile.
pub const REAL_LOCAL_STEPS: usize = 2;
/// Local batch size in the `real` profile.
pub const REAL_BATCH: usize = 16;

/// The `paper` profile: the paper's ViT-B/16 (ImageNet-21k, Hugging Face
/// safetensors at `$WFLORA_VIT_B16`) on CIFAR-100 (binary version, the
/// directory `$WFLORA_CIFAR100` holding `train.bin` and `test.bin`) at
/// 224×224, fine labels, 20 clients, Dirichlet α = 0.1, as the `real`
/// profile otherwise. Nothing is fetched: both come from the user.
///
/// # Errors
/// An unset variable or a missing file, naming it.
pub fn paper_base() -> Result<RunConfig, CliError> {
    let var = |name: &str, what: &str| -> Result<PathBuf, CliError> {
        let v =
            std::env::var_os(name).ok_or_else(|| format!("profile paper: set {name} to {what}"))?;
        Ok(PathBuf::from(v))
    };
    paper_config(
        &var(
            "WFLORA_VIT_B16",
            "the model.safetensors of google/vit-base-patch16-224-in21k",
        )?,
        &var(
            "WFLORA_CIFAR100",
            "the cifar-100-binary directory (train.bin, test.bin)",
        )?,
    )
}

/// The `paper` profile's run for a weights file and a CIFAR-100 binary
/// directory (see `paper_base`).
///
/// # Errors
/// A path that does not exist, named.
pub fn paper_config(weights: &Path, data: &Path) -> Result<RunConfig, CliError> {
    for (what, p) in [
        ("the ViT-B/16 weights", weights.to_owned()),
        ("CIFAR-100 train.bin", data.join("train.bin")),
        ("CIFAR-100 test.bin", data.join("test.bin")),
    ] {
        if !p.is_file() {
            return Err(format!("profile paper: {} ({what}) does not exist", p.display()).into());
        }
    }
    let (weights, data) = (weights.to_owned(), data.to_owned());
    let mut cfg = pretrained_federation(0.1);
    cfg.name = "paper".into();
    let t = &mut cfg.task;
    t.dataset = wflora_fed::DatasetSource::Cifar {
        train: vec![data.join("train.bin")],
        test: data.join("test.bin"),
        format: wflora_data::CifarFormat::Cifar100Fine,
    };
    t.target_classes = (0..100).collect();
    t.preset = "vit-b16".into();
    t.image_size = 224;
    t.weights = Some(wflora_fed::PretrainedWeights {
        path: weights,
        format: wflora_fed::WeightsFormat::HfVit,
        mean: vec![0.5, 0.5, 0.5],
        std: vec![0.5, 0.5, 0.5],
    });
    t.train_limit = None;
    t.test_limit = None;
    Ok(cfg)
}

/// The profile's size: `default` is the embedded default run; `quick`
/// shrinks pre-training, clients, rounds and local steps so that a figure
/// runs end to end in seconds.
#[must_use]
pub fn shrink(mut cfg: RunConfig, p: Profile) -> RunConfig {
    if p == Profile::Quick {
        cfg.task.pretrain.steps = 60;
        cfg.task.pretrain.warmup_steps = 10;
        cfg.federation.clients = 4;
        cfg.federation.clients_per_round = 4;
        cfg.federation.rounds = 3;
        cfg.local.steps = 2;
    }
    cfg
}

/// The seeds of a profile: three on `default` (claims are paired over
/// them), one on `quick`.
#[must_use]
pub fn seeds(p: Profile) -> Vec<u64> {
    match p {
        Profile::Quick => vec![1],
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => vec![1, 2, 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        round: usize,
        accuracy: Option<f64>,
        sim_time_s: f64,
        components: Vec<u32>,
    ) -> RoundRecord {
        RoundRecord {
            round,
            participants: components.iter().filter(|&&m| m > 0).count(),
            accuracy,
            test_loss: accuracy.map(|a| 1.0 - a),
            train_loss: 0.5,
            bits: 1.0,
            values: 1,
            index_bits: 0,
            latency_s: 1.0,
            sim_time_s,
            mean_latency_s: 1.0,
            queue_s: 0.0,
            energy_j: 0.0,
            components,
            shares: Vec::new(),
            covariance_rel: vec![0.1, 0.3],
            missing_reports: Vec::new(),
            missing_updates: Vec::new(),
        }
    }

    #[test]
    fn accuracy_at_time_takes_the_last_evaluation_not_after_t() {
        let recs = vec![
            record(1, Some(0.5), 1.0, vec![]),
            record(2, None, 2.0, vec![]),
            record(3, Some(0.7), 3.0, vec![]),
        ];
        assert_eq!(accuracy_at_time(&recs, 2.5), 0.5);
        assert_eq!(accuracy_at_time(&recs, 3.0), 0.7);
        assert!(accuracy_at_time(&recs, 0.5).is_nan());
    }

    #[test]
    fn kept_ratio_counts_sit_outs_as_zero() {
        // (8 + 0 + 2) / (3 · 8)
        let r = record(1, None, 1.0, vec![8, 0, 2]);
        assert!((kept_ratio(&r, 8) - 10.0 / 24.0).abs() < 1e-15);
        assert!(kept_ratio(&record(1, None, 1.0, vec![]), 8).is_nan());
    }

    #[test]
    fn final_accuracy_is_the_mean_of_the_last_three_evaluations() {
        let recs: Vec<_> = [0.1, 0.2, 0.4, 0.6, 0.8]
            .iter()
            .enumerate()
            .map(|(i, &a)| record(i + 1, Some(a), i as f64, vec![]))
            .collect();
        assert!((final_accuracy(&recs) - 0.6).abs() < 1e-15);
        assert!((final_accuracy(&recs[..1]) - 0.1).abs() < 1e-15);
    }

    #[test]
    fn round_rows_match_the_header() {
        let recs = vec![record(1, Some(0.5), 1.0, vec![4, 4])];
        let line = round_rows("a,b", &recs, 8);
        let header = format!("k1,k2,{ROUND_COLUMNS}");
        assert_eq!(
            line.trim_end().split(',').count(),
            header.split(',').count(),
            "{line}"
        );
        // covariance column is the mean over matrices
        assert!(line.trim_end().ends_with(",0.5,0.2"), "{line}");
    }

    #[test]
    fn curve_over_seeds_gives_mean_and_range() {
        let a = vec![
            record(1, Some(0.2), 1.0, vec![]),
            record(2, Some(0.4), 2.0, vec![]),
        ];
        let b = vec![
            record(1, Some(0.4), 1.0, vec![]),
            record(2, None, 2.0, vec![]),
        ];
        let (pts, band) = curve_over_seeds(&[a, b], |r| r.accuracy);
        // Round 2 is missing for one seed, so only round 1 is drawn.
        assert_eq!(pts.len(), 1);
        assert!((pts[0].1 - 0.3).abs() < 1e-15);
        assert_eq!(band[0], (1.0, 0.2, 0.4));
    }

    #[test]
    fn the_paper_profile_names_missing_paths_and_points_at_the_files() {
        let dir = std::env::temp_dir().join(format!("wflora-paper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = dir.join("model.safetensors");
        let e = paper_config(&w, &dir).unwrap_err().to_string();
        assert!(e.contains("model.safetensors"), "{e}");
        std::fs::write(&w, b"x").unwrap();
        let e = paper_config(&w, &dir).unwrap_err().to_string();
        assert!(e.contains("train.bin"), "{e}");
        std::fs::write(dir.join("train.bin"), b"x").unwrap();
        std::fs::write(dir.join("test.bin"), b"x").unwrap();
        let cfg = paper_config(&w, &dir).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.task.preset, "vit-b16");
        assert_eq!(cfg.task.target_classes.len(), 100);
        assert!(matches!(
            cfg.task.dataset,
            wflora_fed::DatasetSource::Cifar { ref test, .. } if test == &dir.join("test.bin")
        ));
        assert_eq!(cfg.task.weights.as_ref().unwrap().path, w);
    }
}
