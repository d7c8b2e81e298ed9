//! so1–so3: SO-LoRA, decentralized multi-task fine-tuning over D2D links
//! (docs/method.md §6; `wflora-dfl`).
//!
//! * so1: per-task accuracy against round and against bits sent, for
//!   SO-LoRA (cluster topology), plain decentralized LoRA, FFA-LoRA (both
//!   on the random geometric D2D graph) and local-only. Claims: the paper's
//!   two (≥ 5 points over plain decentralized LoRA; up to 73% less
//!   communication) and the sanity check that SO-LoRA beats local-only.
//! * so2: the topology ablation: SO-LoRA and plain decentralized LoRA on
//!   the ring, the geometric graph, the complete graph and the clusters.
//! * so3: inference: implicit mixture of experts (nearest task code) against
//!   oracle hard routing and one averaged adapter, on SO-LoRA's final
//!   devices.
//!
//! Each run lives in `runs/<id>/` (a checkpoint after every evaluation,
//! `result.json` when done), so `--resume` continues a killed figure.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wflora_dfl::{
    DflConfig, DflRecord, InferenceReport, Method, MultiTask, Simulation, Structure, Topology,
};

use super::stats::{mean, paired, paired_json, std};
use super::{FigureOptions, FigureOutcome, Profile};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of, min_max_band_label};
use crate::progress::{Progress, build_multi_task};
use crate::report::{Claim, ResultsDir};

/// The base configuration of the SO figures for a profile: the embedded
/// vision multi-task default (`default`, `quick`) or the text tasks
/// (`real`, [`so_text`]).
///
/// # Errors
/// A profile the SO figures do not support (`real-noniid`, `paper`);
/// missing text assets for `real`.
pub fn so_base(p: Profile) -> Result<DflConfig, CliError> {
    let mut c = DflConfig::embedded_default();
    match p {
        Profile::Default => {}
        Profile::Real => return so_text(),
        Profile::Quick => {
            c.backbone.pretrain.steps = 60;
            c.backbone.pretrain.warmup_steps = 10;
            c.devices_per_task = 2;
            c.test_limit = Some(100);
            c.rounds = 2;
            c.local_steps = 2;
            c.eval_every = 1;
        }
        other => {
            return Err(format!(
                "the SO-LoRA figures run on the embedded multi-task default (profiles default \
                 and quick) and on the text tasks (profile real); profile '{}' is not supported",
                other.name()
            )
            .into());
        }
    }
    Ok(c)
}

/// The `real` profile of the SO figures: three text tasks on
/// all-MiniLM-L6-v2 (a 6-layer BERT, LoRA on q and v of every block), from
/// `just fetch-assets`: spam detection (SpamAssassin: ham, spam), genre
/// (Brown corpus: news, romance, learned) and party (State of the Union:
/// Democratic, Republican). Documents are cut into windows of 64 word
/// pieces (at most 4 per document, from the first 4,000 characters), split
/// 70/30 by document, and balanced to 150 training and 100 test windows per
/// class; 3 devices per task, 10 rounds of 4 local steps of 16 windows,
/// AdamW 2e-3 (the vision default's, not tuned per method), evaluated every
/// 2 rounds. Sized so that one run takes minutes on 2 cores
/// (docs/figures.md).
///
/// # Errors
/// The text assets are missing or altered (the error names
/// `just fetch-assets`).
pub fn so_text() -> Result<DflConfig, CliError> {
    use wflora_dfl::{TaskSpec, TextCorpusKind, TextSetup, TextTask, Transform};
    let assets = super::common::verified_assets(crate::assets::AssetPart::Text)?;
    let task = |name: &str, corpus, dir: &str, classes: &[&str]| TaskSpec {
        name: name.into(),
        classes: Vec::new(),
        transform: Transform::None,
        text: Some(TextTask {
            corpus,
            dir: assets.text_corpus_dir(dir),
            classes: classes.iter().map(|s| (*s).to_owned()).collect(),
        }),
    };
    let mut c = DflConfig::embedded_default();
    c.name = "so-text".into();
    c.tasks = vec![
        task(
            "spam",
            TextCorpusKind::SpamAssassin,
            "spam-assassin",
            &["ham", "spam"],
        ),
        task(
            "genre",
            TextCorpusKind::Brown,
            "brown",
            &["news", "romance", "learned"],
        ),
        task(
            "party",
            TextCorpusKind::Sotu,
            "sotu",
            &["Democratic", "Republican"],
        ),
    ];
    c.text = Some(TextSetup {
        model_dir: assets.text_minilm_dir(),
        seq_len: 64,
        max_windows_per_doc: 4,
        max_chars: 4000,
        train_per_class: 150,
        test_per_class: 100,
    });
    c.test_limit = None;
    c.devices_per_task = 3;
    c.rounds = 10;
    c.local_steps = 4;
    c.batch_size = 16;
    c.eval_every = 2;
    Ok(c)
}

fn seeds(p: Profile) -> Vec<u64> {
    match p {
        // The text runs cost minutes each: two paired seeds.
        Profile::Real => vec![1, 2],
        other => super::common::seeds(other),
    }
}

/// The topology of the random geometric D2D graph (radius 250 m in the
/// 500 m cell, raised to connect).
const GEOMETRIC: Topology = Topology::RandomGeometric { radius_m: 250.0 };

/// What one finished run keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    config: DflConfig,
    records: Vec<DflRecord>,
    structure: Structure,
    inference: Option<InferenceReport>,
    clusters: Option<Vec<usize>>,
    edges: usize,
}

struct SoRunner {
    fig: &'static str,
    profile: Profile,
    dir: ResultsDir,
    resume: bool,
    data: Arc<MultiTask>,
    bar: Progress,
}

impl SoRunner {
    fn start(
        fig: &'static str,
        opts: &FigureOptions,
        base: &DflConfig,
        total_rounds: usize,
    ) -> Result<Self, CliError> {
        base.validate()?;
        let (dir, _) = super::common::open_results(opts, fig, base)?;
        eprintln!(
            "{fig} [{}]: building the tasks (pre-training the backbone on first use)...",
            opts.profile.name()
        );
        let data = Arc::new(build_multi_task(base)?);
        super::common::begin_results(&dir, opts, fig, base)?;
        Ok(Self {
            fig,
            profile: opts.profile,
            dir,
            resume: opts.resume,
            data,
            bar: Progress::new(fig, "rounds", total_rounds as u64),
        })
    }

    fn run(&self, cfg: DflConfig, id: &str, inference: bool) -> Result<RunResult, CliError> {
        let run_dir = self.dir.path().join("runs").join(id);
        let result_path = run_dir.join("result.json");
        let rounds = cfg.rounds as u64;
        if self.resume && result_path.exists() {
            let text = std::fs::read_to_string(&result_path)
                .map_err(|e| format!("cannot read {}: {e}", result_path.display()))?;
            let r: RunResult = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}: corrupt or truncated result: {e}",
                    result_path.display()
                )
            })?;
            if r.config == cfg && (r.inference.is_some() || !inference) {
                self.bar.inc(rounds);
                return Ok(r);
            }
        }
        self.bar.set_message(id.to_owned());
        let before = self.bar.position();
        let mut sim = Simulation::new(cfg.clone(), self.data.clone())?;
        sim.run_resumable(&run_dir, self.resume, |r| {
            self.bar.set_position(before + r.round as u64)
        })?;
        let result = RunResult {
            config: cfg,
            records: sim.records().to_vec(),
            structure: sim.structure()?,
            inference: if inference {
                Some(sim.inference()?)
            } else {
                None
            },
            clusters: sim.clusters().map(<[usize]>::to_vec),
            edges: sim.graph().num_edges(),
        };
        let tmp = run_dir.join("result.json.tmp");
        std::fs::write(&tmp, serde_json::to_string(&result)?)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &result_path)
            .map_err(|e| format!("cannot write {}: {e}", result_path.display()))?;
        if self.bar.is_log() {
            eprintln!(
                "{}: {id} done, final accuracy {:.4}",
                self.fig,
                final_accuracy(&result.records)
            );
        }
        Ok(result)
    }

    fn finish(
        self,
        base: &DflConfig,
        seeds: &[u64],
        mut summary: serde_json::Map<String, serde_json::Value>,
        claims: Vec<Claim>,
    ) -> Result<FigureOutcome, CliError> {
        self.bar.finish();
        summary.insert(
            "tasks".into(),
            self.data
                .tasks
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "classes": t.num_classes, "train": t.train.len(), "test": t.test.len()}))
                .collect(),
        );
        super::common::write_outcome(
            &self.dir,
            (self.fig, self.profile),
            base,
            seeds,
            summary,
            claims,
        )
    }
}

/// Mean of the last (up to) three evaluations.
fn final_accuracy(records: &[DflRecord]) -> f64 {
    let accs: Vec<f64> = records.iter().filter_map(|r| r.accuracy).collect();
    mean(&accs[accs.len().saturating_sub(3)..])
}

/// The same for each task.
fn final_task_accuracy(records: &[DflRecord]) -> Vec<f64> {
    let accs: Vec<&Vec<f64>> = records
        .iter()
        .filter_map(|r| r.task_accuracy.as_ref())
        .collect();
    let tail = &accs[accs.len().saturating_sub(3)..];
    let tasks = tail.first().map_or(0, |v| v.len());
    (0..tasks)
        .map(|t| mean(&tail.iter().map(|v| v[t]).collect::<Vec<_>>()))
        .collect()
}

/// CSV rows of a run: every evaluated round.
fn rows(keys: &str, records: &[DflRecord]) -> String {
    let mut out = String::new();
    for r in records {
        if let (Some(a), Some(t)) = (r.accuracy, &r.task_accuracy) {
            let tasks: Vec<String> = t.iter().map(|v| format!("{v:.6}")).collect();
            out.push_str(&format!(
                "{keys},{},{a:.6},{},{:.1},{:.6e},{:.6}\n",
                r.round,
                tasks.join(";"),
                r.cum_bits,
                r.cum_comm_time_s,
                r.train_loss
            ));
        }
    }
    out
}

const COLUMNS: &str = "round,accuracy,task_accuracy,cum_bits,cum_comm_time_s,train_loss";

/// A curve and its min–max band.
type Curve = (Vec<(f64, f64)>, Vec<(f64, f64, f64)>);

/// `(x, mean)` and `(x, min, max)` over seeds of the evaluated accuracies.
fn curve(runs: &[RunResult], x: impl Fn(&DflRecord) -> f64) -> Curve {
    let evals: Vec<Vec<&DflRecord>> = runs
        .iter()
        .map(|r| r.records.iter().filter(|x| x.accuracy.is_some()).collect())
        .collect();
    let len = evals.iter().map(Vec::len).min().unwrap_or(0);
    let mut pts = Vec::new();
    let mut band = Vec::new();
    for i in 0..len {
        let xs: Vec<f64> = evals.iter().map(|e| x(e[i])).collect();
        let ys: Vec<f64> = evals
            .iter()
            .map(|e| e[i].accuracy.unwrap_or(f64::NAN))
            .collect();
        let (lo, hi) = super::stats::min_max(&ys);
        pts.push((mean(&xs), mean(&ys)));
        band.push((mean(&xs), lo, hi));
    }
    (pts, band)
}

/// Bits sent until the seed-mean accuracy first reaches `target`
/// (`None` if it never does).
fn bits_to_reach(runs: &[RunResult], target: f64) -> Option<f64> {
    let (pts, _) = curve(runs, |r| r.cum_bits);
    pts.iter().find(|(_, a)| *a >= target).map(|(b, _)| *b)
}

fn arms_so1() -> Vec<(&'static str, Method, Topology)> {
    vec![
        (
            "so_lora",
            Method::SoLora,
            Topology::Cluster {
                clusters: 3,
                lambda: 0.3,
            },
        ),
        ("d_lora", Method::DLora, GEOMETRIC),
        ("ffa_lora", Method::FfaLora, GEOMETRIC),
        ("local_only", Method::LocalOnly, GEOMETRIC),
    ]
}

fn configure(
    base: &DflConfig,
    fig: &str,
    arm: &str,
    method: Method,
    topology: Topology,
    seed: u64,
) -> DflConfig {
    let mut c = base.clone();
    c.name = format!("{fig}-{arm}-s{seed}");
    c.method = method;
    c.topology = topology;
    if let Topology::Cluster { lambda, .. } = topology {
        // One cluster per task.
        c.topology = Topology::Cluster {
            clusters: c.tasks.len(),
            lambda,
        };
    }
    c.seed = seed;
    c
}

/// Runs so1.
///
/// # Errors
/// Configuration, run or I/O errors.
pub fn run_so1(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let base = opts.apply(so_base(p)?)?;
    let seeds = opts.seeds(seeds(p));
    let arms = arms_so1();
    let runner = SoRunner::start("so1", opts, &base, arms.len() * seeds.len() * base.rounds)?;
    let mut csv = format!("method,seed,{COLUMNS}\n");
    let mut results: Vec<Vec<RunResult>> = Vec::new();
    for &(arm, method, topology) in &arms {
        let mut per = Vec::new();
        for &seed in &seeds {
            let r = runner.run(
                configure(&base, "so1", arm, method, topology, seed),
                &format!("{arm}-s{seed}"),
                false,
            )?;
            csv.push_str(&rows(&format!("{arm},{seed}"), &r.records));
            per.push(r);
        }
        results.push(per);
    }
    runner.dir.write_text("data.csv", &csv)?;
    let finals: Vec<Vec<f64>> = results
        .iter()
        .map(|v| v.iter().map(|r| final_accuracy(&r.records)).collect())
        .collect();
    let (so, dl, local) = (0, 1, 3);
    let d_so_dl = paired(&finals[so], &finals[dl]);
    let d_so_local = paired(&finals[so], &finals[local]);
    let d_so_ffa = paired(&finals[so], &finals[2]);
    let target = mean(&finals[dl]) - 0.01;
    let bits_dl = bits_to_reach(&results[dl], target);
    let bits_so = bits_to_reach(&results[so], target);
    let reduction = match (bits_so, bits_dl) {
        (Some(s), Some(d)) if d > 0.0 => 1.0 - s / d,
        _ => f64::NEG_INFINITY,
    };
    let total_bits: Vec<f64> = results
        .iter()
        .map(|v| {
            mean(
                &v.iter()
                    .map(|r| r.records.last().map_or(0.0, |x| x.cum_bits))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let claims = vec![
        Claim::at_least(
            "so_lora_beats_local_only",
            d_so_local.lower,
            0.0,
            "sanity: SO-LoRA minus local-only final accuracy (mean over tasks), paired over seeds, lower end (mean − 2·se) above 0",
        ),
        Claim::at_least(
            "so_lora_plus_5_points_over_dlora",
            d_so_dl.mean,
            0.05,
            "the paper's +5%: SO-LoRA minus plain decentralized LoRA final accuracy (mean over tasks), paired mean over seeds, at least 5 points",
        ),
        Claim::at_least(
            "so_lora_73pct_less_communication",
            reduction,
            0.73,
            "the paper's up-to-73%: 1 − (SO-LoRA's bits)/(D-LoRA's bits) to first reach D-LoRA's final seed-mean accuracy minus 1 point (−∞ if SO-LoRA never does)",
        ),
    ];
    let labels = [
        "SO-LoRA (clusters)",
        "D-LoRA (geometric)",
        "FFA-LoRA (geometric)",
        "local-only",
    ];
    let mut by_round = Vec::new();
    let mut by_bits = Vec::new();
    for (i, runs) in results.iter().enumerate() {
        let (pts, band) = curve(runs, |r| r.round as f64);
        by_round.push(Series::line(labels[i], pts).with_band(band));
        if i != local {
            let (pts, _) = curve(runs, |r| r.cum_bits.max(1.0));
            by_bits.push(Series::line(labels[i], pts).with_markers());
        }
    }
    LinePlot {
        title: format!(
            "mean per-task accuracy vs round ({}, {})",
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "round".into(),
        y_label: "test accuracy (mean over tasks)".into(),
        log_x: false,
        log_y: false,
        series: by_round,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir.path(), "so1", &opts.plot)?;
    LinePlot {
        title: format!("accuracy vs bits broadcast ({})", p.name()),
        x_label: "bits broadcast, all devices (log)".into(),
        y_label: "test accuracy (mean over tasks)".into(),
        log_x: true,
        log_y: false,
        series: by_bits,
        band_label: None,
    }
    .write(runner.dir.path(), "so1_bits", &opts.plot)?;
    let mut summary = serde_json::Map::new();
    summary.insert(
        "methods".into(),
        arms.iter()
            .enumerate()
            .map(|(i, (arm, m, t))| {
                let tasks: Vec<Vec<f64>> = results[i]
                    .iter()
                    .map(|r| final_task_accuracy(&r.records))
                    .collect();
                let per_task: Vec<f64> = (0..tasks[0].len())
                    .map(|t| mean(&tasks.iter().map(|v| v[t]).collect::<Vec<_>>()))
                    .collect();
                serde_json::json!({
                    "arm": arm, "method": m.name(), "topology": t.name(),
                    "final_accuracy_mean": mean(&finals[i]), "final_accuracy_std": std(&finals[i]),
                    "per_seed": finals[i], "per_task_mean": per_task,
                    "total_bits_mean": total_bits[i],
                    "structure_seed1": results[i][0].structure,
                })
            })
            .collect(),
    );
    summary.insert("target_accuracy".into(), target.into());
    summary.insert(
        "bits_to_target".into(),
        serde_json::json!({"so_lora": bits_so, "d_lora": bits_dl}),
    );
    summary.insert(
        "reduction_to_target".into(),
        if reduction.is_finite() {
            reduction.into()
        } else {
            serde_json::Value::Null
        },
    );
    summary.insert(
        "total_bits_reduction_vs_d_lora".into(),
        (1.0 - total_bits[so] / total_bits[dl]).into(),
    );
    summary.insert(
        "paired_differences".into(),
        paired_json(&[
            ("so_minus_dlora".into(), d_so_dl),
            ("so_minus_ffa".into(), d_so_ffa),
            ("so_minus_local".into(), d_so_local),
        ]),
    );
    let outcome = runner.finish(&base, &seeds, summary, claims)?;
    for (i, l) in labels.iter().enumerate() {
        println!(
            "  {l:<22} final accuracy {:.4} ± {:.4}, bits {:.3e}",
            mean(&finals[i]),
            std(&finals[i]),
            total_bits[i]
        );
    }
    Ok(outcome)
}

/// Runs so2.
///
/// # Errors
/// Configuration, run or I/O errors.
pub fn run_so2(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let base = opts.apply(so_base(p)?)?;
    let seeds = opts.seeds(seeds(p));
    let topologies = [
        Topology::Ring,
        GEOMETRIC,
        Topology::Full,
        Topology::Cluster {
            clusters: base.tasks.len(),
            lambda: 0.3,
        },
    ];
    let methods = [Method::SoLora, Method::DLora];
    let runner = SoRunner::start(
        "so2",
        opts,
        &base,
        topologies.len() * methods.len() * seeds.len() * base.rounds,
    )?;
    let mut csv = format!("method,topology,seed,{COLUMNS}\n");
    // finals[m][t][seed], bits[m][t]
    let mut finals = vec![vec![Vec::new(); topologies.len()]; methods.len()];
    let mut bits = vec![vec![0.0; topologies.len()]; methods.len()];
    let mut edges = vec![0usize; topologies.len()];
    for (mi, &m) in methods.iter().enumerate() {
        for (ti, &t) in topologies.iter().enumerate() {
            let mut b = Vec::new();
            for &seed in &seeds {
                let arm = format!(
                    "{}-{}",
                    if m == Method::SoLora {
                        "so_lora"
                    } else {
                        "d_lora"
                    },
                    t.name()
                );
                let r = runner.run(
                    configure(&base, "so2", &arm, m, t, seed),
                    &format!("{arm}-s{seed}"),
                    false,
                )?;
                csv.push_str(&rows(
                    &format!("{},{},{seed}", m.name(), t.name()),
                    &r.records,
                ));
                finals[mi][ti].push(final_accuracy(&r.records));
                b.push(r.records.last().map_or(0.0, |x| x.cum_bits));
                edges[ti] = r.edges;
            }
            bits[mi][ti] = mean(&b);
        }
    }
    runner.dir.write_text("data.csv", &csv)?;
    let cl = topologies.len() - 1;
    let best_other = (0..cl)
        .max_by(|&a, &b| mean(&finals[0][a]).total_cmp(&mean(&finals[0][b])))
        .unwrap_or(0);
    let d = paired(&finals[0][cl], &finals[0][best_other]);
    let so_vs_dl: Vec<_> = (0..topologies.len())
        .map(|t| paired(&finals[0][t], &finals[1][t]))
        .collect();
    let min_gain = so_vs_dl
        .iter()
        .map(|p| p.mean)
        .fold(f64::INFINITY, f64::min);
    let claims = vec![
        Claim::at_least(
            "cluster_topology_best_for_so_lora",
            d.upper,
            0.0,
            "SO-LoRA's final accuracy on the clusters minus on the best other topology, paired over seeds, upper end (mean + 2·se) not below 0 (the clusters are not clearly worse)",
        ),
        Claim::at_least(
            "so_lora_above_dlora_on_every_topology",
            min_gain,
            0.0,
            "the least, over the four topologies, of SO-LoRA minus D-LoRA final accuracy (paired mean over seeds), above 0",
        ),
    ];
    let xs: Vec<f64> = (0..topologies.len()).map(|t| t as f64).collect();
    let series = methods
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            Series::line(
                &format!("{} (x: 0 ring, 1 geometric, 2 full, 3 clusters)", m.name()),
                xs.iter()
                    .map(|&x| (x, mean(&finals[mi][x as usize])))
                    .collect(),
            )
            .with_band(
                xs.iter()
                    .map(|&x| {
                        let (lo, hi) = super::stats::min_max(&finals[mi][x as usize]);
                        (x, lo, hi)
                    })
                    .collect(),
            )
            .with_markers()
        })
        .collect();
    LinePlot {
        title: format!(
            "final accuracy per topology ({}, {})",
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "topology".into(),
        y_label: "final test accuracy (mean over tasks)".into(),
        log_x: false,
        log_y: false,
        series,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir.path(), "so2", &opts.plot)?;
    let mut summary = serde_json::Map::new();
    let mut table = Vec::new();
    for (mi, m) in methods.iter().enumerate() {
        for (ti, t) in topologies.iter().enumerate() {
            table.push(serde_json::json!({
                "method": m.name(), "topology": t.name(), "edges": edges[ti],
                "final_accuracy_mean": mean(&finals[mi][ti]), "final_accuracy_std": std(&finals[mi][ti]),
                "per_seed": finals[mi][ti], "total_bits_mean": bits[mi][ti],
            }));
        }
    }
    summary.insert("runs".into(), table.into());
    summary.insert(
        "paired_differences".into(),
        paired_json(
            &std::iter::once((
                format!("so_cluster_minus_so_{}", topologies[best_other].name()),
                d,
            ))
            .chain(
                topologies
                    .iter()
                    .zip(&so_vs_dl)
                    .map(|(t, p)| (format!("so_minus_dlora_{}", t.name()), *p)),
            )
            .collect::<Vec<_>>(),
        ),
    );
    let outcome = runner.finish(&base, &seeds, summary, claims)?;
    for (mi, m) in methods.iter().enumerate() {
        for (ti, t) in topologies.iter().enumerate() {
            println!(
                "  {:<10} {:<10} final accuracy {:.4} ± {:.4}, bits {:.3e}",
                m.name(),
                t.name(),
                mean(&finals[mi][ti]),
                std(&finals[mi][ti]),
                bits[mi][ti]
            );
        }
    }
    Ok(outcome)
}

/// Runs so3.
///
/// # Errors
/// Configuration, run or I/O errors.
pub fn run_so3(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let base = opts.apply(so_base(p)?)?;
    let seeds = opts.seeds(seeds(p));
    let runner = SoRunner::start("so3", opts, &base, seeds.len() * base.rounds)?;
    let topology = Topology::Cluster {
        clusters: base.tasks.len(),
        lambda: 0.3,
    };
    let mut reports = Vec::new();
    let mut csv = String::from("seed,rule,task,accuracy\n");
    for &seed in &seeds {
        let r = runner.run(
            configure(&base, "so3", "so_lora", Method::SoLora, topology, seed),
            &format!("so_lora-s{seed}"),
            true,
        )?;
        let rep = r.inference.ok_or("so3: the run kept no inference report")?;
        for (t, acc) in rep.per_task.iter().enumerate() {
            for (rule, a) in ["hard", "moe", "average"].iter().zip(acc) {
                csv.push_str(&format!("{seed},{rule},{},{a:.6}\n", base.tasks[t].name));
            }
        }
        csv.push_str(&format!("{seed},routing,all,{:.6}\n", rep.routing_accuracy));
        reports.push(rep);
    }
    runner.dir.write_text("data.csv", &csv)?;
    let hard: Vec<f64> = reports.iter().map(|r| r.hard).collect();
    let moe: Vec<f64> = reports.iter().map(|r| r.moe).collect();
    let avg: Vec<f64> = reports.iter().map(|r| r.average).collect();
    let routing: Vec<f64> = reports.iter().map(|r| r.routing_accuracy).collect();
    let d_hard_moe = paired(&hard, &moe);
    let d_moe_avg = paired(&moe, &avg);
    let claims = vec![
        Claim::at_most(
            "moe_close_to_hard_routing",
            d_hard_moe.upper,
            0.02,
            "oracle hard routing minus implicit MoE accuracy on the union test set (tasks weighted equally), paired over seeds, upper end within 2 points",
        ),
        Claim::at_least(
            "moe_beats_averaging",
            d_moe_avg.lower,
            0.0,
            "implicit MoE minus one averaged adapter (with the oracle task's head), paired over seeds, lower end above 0",
        ),
    ];
    let series = ["hard routing (oracle)", "implicit MoE", "averaged adapter"]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let per_task: Vec<(f64, f64)> = (0..base.tasks.len())
                .map(|t| {
                    (
                        t as f64,
                        mean(&reports.iter().map(|r| r.per_task[t][i]).collect::<Vec<_>>()),
                    )
                })
                .collect();
            Series::line(l, per_task).with_markers()
        })
        .collect();
    let names: Vec<&str> = base.tasks.iter().map(|t| t.name.as_str()).collect();
    LinePlot {
        title: format!(
            "accuracy per task by inference rule (x: {}; {})",
            names.join(", "),
            p.name()
        ),
        x_label: "task".into(),
        y_label: "test accuracy".into(),
        log_x: false,
        log_y: false,
        series,
        band_label: None,
    }
    .write(runner.dir.path(), "so3", &opts.plot)?;
    let mut summary = serde_json::Map::new();
    summary.insert("hard_mean".into(), mean(&hard).into());
    summary.insert("moe_mean".into(), mean(&moe).into());
    summary.insert("average_mean".into(), mean(&avg).into());
    summary.insert("routing_accuracy_mean".into(), mean(&routing).into());
    summary.insert("reports".into(), serde_json::to_value(&reports)?);
    summary.insert(
        "paired_differences".into(),
        paired_json(&[
            ("hard_minus_moe".into(), d_hard_moe),
            ("moe_minus_average".into(), d_moe_avg),
        ]),
    );
    let outcome = runner.finish(&base, &seeds, summary, claims)?;
    println!(
        "  hard {:.4}, implicit MoE {:.4}, averaged {:.4}, routing accuracy {:.4}",
        mean(&hard),
        mean(&moe),
        mean(&avg),
        mean(&routing)
    );
    Ok(outcome)
}
