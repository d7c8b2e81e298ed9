//! fig6: TSFA's online stage swept over the penalty weight `V` and over the
//! latency budget `T̄` (docs/method.md §5): final accuracy, mean kept ratio,
//! average latency and queue.
//!
//! The sweep holds the rank at 8 (the online stage alone, on the TSFA base
//! `common::tsfa_base`): `V ∈ {0.01, 0.1, 1, 10}` at
//! `T̄ = 0.6·T_ILoRA`, and `T̄/T_ILoRA ∈ {0.4, 0.6, 0.8, 1.0}` at `V = 0.1`
//! (the shared point runs once). Drift-plus-penalty trades an `O(1/V)`
//! distance from the least penalty against an `O(V)` queue backlog: a
//! larger `V` keeps more components (a lower sparsification penalty) and
//! lets the queue, the latency overshoot the budget absorbs, grow.

use super::common::{
    ROUND_COLUMNS, Runner, final_accuracy, kept_ratio, round_rows, seeds, tsfa_base,
};
use super::fig5::LATENCY_TOLERANCE;
use super::stats::{mean, paired, std};
use super::{FigureOptions, FigureOutcome, Profile};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of};
use crate::report::Claim;
use wflora_fed::{AllocationSettings, RoundRecord, RunConfig};

fn vs(p: Profile) -> Vec<f64> {
    match p {
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => {
            vec![0.01, 0.1, 1.0, 10.0]
        }
        Profile::Quick => vec![0.01, 10.0],
    }
}

fn budgets(p: Profile) -> Vec<f64> {
    match p {
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => {
            vec![0.4, 0.6, 0.8, 1.0]
        }
        Profile::Quick => vec![0.4, 1.0],
    }
}

const BASE_V: f64 = 0.1;
const BASE_BUDGET: f64 = 0.6;

fn config(base: &RunConfig, v_new: f64, budget_new: f64, seed: u64) -> RunConfig {
    let mut c = base.clone();
    c.name = format!("fig6-v{v_new}-b{budget_new}-s{seed}");
    c.seed = seed;
    if let AllocationSettings::DriftPlusPenalty { v, budget_rel, .. } = &mut c.wireless.allocation {
        *v = v_new;
        *budget_rel = budget_new;
    }
    c
}

/// What one run reports to the sweep.
#[derive(Debug, Clone, Copy)]
struct Point {
    accuracy: f64,
    kept: f64,
    queue_s: f64,
    latency_over_budget: f64,
}

fn point(recs: &[RoundRecord], rank: usize, budget_s: f64) -> Point {
    let kept: Vec<f64> = recs.iter().map(|r| kept_ratio(r, rank)).collect();
    let queue: Vec<f64> = recs.iter().map(|r| r.queue_s).collect();
    Point {
        accuracy: final_accuracy(recs),
        kept: mean(&kept),
        queue_s: mean(&queue),
        latency_over_budget: recs.last().map_or(f64::NAN, |r| r.mean_latency_s) / budget_s,
    }
}

/// Runs fig6.
///
/// # Errors
/// Configuration, run or I/O errors.
pub fn run(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let base = tsfa_base(opts, "fig6")?;
    let seeds = opts.seeds(seeds(p));
    let (v_grid, b_grid) = (vs(p), budgets(p));
    let mut grid: Vec<(f64, f64)> = v_grid.iter().map(|&v| (v, BASE_BUDGET)).collect();
    for &b in &b_grid {
        if !grid.contains(&(BASE_V, b)) {
            grid.push((BASE_V, b));
        }
    }
    let total = grid.len() * seeds.len() * base.federation.rounds;
    let runner = Runner::start("fig6", opts, &base, total)?;
    let rank = base.model.rank;

    let mut csv = format!("v,budget_rel,seed,{ROUND_COLUMNS}\n");
    // points[grid index][seed]
    let mut points: Vec<Vec<Point>> = Vec::new();
    for &(v, b) in &grid {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            let cfg = config(&base, v, b, seed);
            let (recs, budget_s) = runner.run_with(cfg, &format!("v{v}-b{b}-s{seed}"), |sim| {
                sim.budget_s()
                    .ok_or_else(|| "fig6 needs a TSFA policy with a budget".into())
            })?;
            csv.push_str(&round_rows(&format!("{v},{b},{seed}"), &recs, rank));
            per_seed.push(point(&recs, rank, budget_s));
        }
        points.push(per_seed);
    }
    runner.dir().write_text("data.csv", &csv)?;

    let get = |v: f64, b: f64| grid.iter().position(|&g| g == (v, b)).unwrap_or(0);
    let field = |i: usize, f: fn(&Point) -> f64| -> Vec<f64> { points[i].iter().map(f).collect() };
    let v_lo = v_grid.first().copied().unwrap_or(BASE_V);
    let v_hi = v_grid.last().copied().unwrap_or(BASE_V);
    let (lo, hi) = (get(v_lo, BASE_BUDGET), get(v_hi, BASE_BUDGET));
    let d_kept = paired(&field(hi, |q| q.kept), &field(lo, |q| q.kept));
    let d_queue = paired(&field(hi, |q| q.queue_s), &field(lo, |q| q.queue_s));
    let worst_latency = points
        .iter()
        .flatten()
        .map(|q| q.latency_over_budget)
        .fold(f64::NEG_INFINITY, f64::max);
    let claims = vec![
        Claim::at_least(
            "larger_v_keeps_more",
            d_kept.lower,
            0.0,
            "mean kept ratio m/r over rounds and clients at the largest V minus at the smallest, paired over seeds, lower end (mean − 2·se); the O(1/V) side: must be above 0",
        ),
        Claim::at_least(
            "larger_v_grows_queue",
            d_queue.lower,
            0.0,
            "mean virtual queue over rounds at the largest V minus at the smallest, paired, lower end; the O(V) side: must be above 0",
        ),
        Claim::at_most(
            "average_latency_meets_every_budget",
            worst_latency,
            1.0 + LATENCY_TOLERANCE,
            "largest over the whole sweep (every V and T̄, every seed) of the running-average latency after the last round divided by that run's T̄; at most 1 + 5%",
        ),
    ];

    // Plots: one per sweep, every quantity against the swept value.
    let sweep_series = |idx: &[usize], xs: &[f64]| -> Vec<Series> {
        let line = |label: &str, f: fn(&Point) -> f64| {
            let pts = idx
                .iter()
                .zip(xs)
                .map(|(&i, &x)| (x, mean(&field(i, f))))
                .collect();
            Series::line(label, pts).with_markers()
        };
        vec![
            line("final accuracy", |q| q.accuracy),
            line("mean kept ratio m/r", |q| q.kept),
            line("average latency / T̄", |q| q.latency_over_budget),
        ]
    };
    let v_idx: Vec<usize> = v_grid.iter().map(|&v| get(v, BASE_BUDGET)).collect();
    let mut v_series = sweep_series(&v_idx, &v_grid);
    let q_pts: Vec<(f64, f64)> = v_idx
        .iter()
        .zip(&v_grid)
        .map(|(&i, &v)| (v, mean(&field(i, |q| q.queue_s))))
        .collect();
    let q_max = q_pts
        .iter()
        .map(|x| x.1)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    v_series.push(
        Series::line(
            &format!("mean queue / {q_max:.3} s"),
            q_pts.iter().map(|&(x, y)| (x, y / q_max)).collect(),
        )
        .with_markers(),
    );
    LinePlot {
        title: format!(
            "sweep of V at T̄ = {BASE_BUDGET}·T_ILoRA ({}, {})",
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "V".into(),
        y_label: "value".into(),
        log_x: true,
        log_y: false,
        series: v_series,
        band_label: None,
    }
    .write(runner.dir().path(), "fig6", &opts.plot)?;
    let b_idx: Vec<usize> = b_grid.iter().map(|&b| get(BASE_V, b)).collect();
    LinePlot {
        title: format!(
            "sweep of T̄ at V = {BASE_V} ({}, {})",
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "T̄ / T_ILoRA".into(),
        y_label: "value".into(),
        log_x: false,
        log_y: false,
        series: sweep_series(&b_idx, &b_grid),
        band_label: None,
    }
    .write(runner.dir().path(), "fig6_budget", &opts.plot)?;

    let mut summary = serde_json::Map::new();
    summary.insert(
        "points".into(),
        grid.iter()
            .zip(&points)
            .map(|(&(v, b), pts)| {
                let f = |g: fn(&Point) -> f64| pts.iter().map(g).collect::<Vec<f64>>();
                serde_json::json!({
                    "v": v, "budget_rel": b,
                    "final_accuracy_mean": mean(&f(|q| q.accuracy)),
                    "final_accuracy_std": std(&f(|q| q.accuracy)),
                    "kept_ratio_mean": mean(&f(|q| q.kept)),
                    "queue_s_mean": mean(&f(|q| q.queue_s)),
                    "latency_over_budget_per_seed": f(|q| q.latency_over_budget),
                })
            })
            .collect(),
    );
    summary.insert(
        "paired_differences".into(),
        serde_json::json!([
            {"name": "kept_ratio_vmax_minus_vmin", "diff": d_kept},
            {"name": "queue_vmax_minus_vmin", "diff": d_queue},
        ]),
    );
    let outcome = runner.finish(&base, &seeds, summary, claims)?;
    for (&(v, b), pts) in grid.iter().zip(&points) {
        let f = |g: fn(&Point) -> f64| mean(&pts.iter().map(g).collect::<Vec<f64>>());
        println!(
            "  V = {v:>5}, T̄ = {b}·T_ILoRA: accuracy {:.4}, kept {:.3}, queue {:.4} s, latency/T̄ {:.3}",
            f(|q| q.accuracy),
            f(|q| q.kept),
            f(|q| q.queue_s),
            f(|q| q.latency_over_budget)
        );
    }
    Ok(outcome)
}
