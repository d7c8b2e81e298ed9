//! fig5: TSFA against its single-stage variants and ILoRA (docs/method.md §5):
//! test accuracy against *simulated* time, and the running-average round
//! latency and the virtual queue against the round.
//!
//! Arms, all on the TSFA base (`common::tsfa_base`) and one
//! latency budget `T̄ = 0.6·T_ILoRA` (ILoRA at rank 8, equal bandwidth,
//! mean channel):
//! - **TSFA**: the offline stage's `r*`, then drift-plus-penalty each round;
//! - **online only**: drift-plus-penalty at `r_max = 16` (no offline stage);
//! - **offline only**: `r*` with the fixed ratio `ρ(r*)` and
//!   latency-equalising bandwidth, no queue;
//! - **myopic**: `r*`, meet `T̄` in every round, no queue;
//! - **ILoRA**: rank 8, everything sent, equal bandwidth, no budget.
//!
//! "Accuracy per unit time" is read at a common simulated horizon `H`, the
//! earliest time at which any arm (any seed) finished its rounds: the
//! accuracy of each arm's last evaluation at or before `H`.

use super::common::{
    ROUND_COLUMNS, Runner, accuracy_at_time, curve_over_seeds, offline_settings, round_rows, seeds,
    tsfa_base,
};
use super::stats::{Paired, mean, paired, std};
use super::{FigureOptions, FigureOutcome};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of, min_max_band_label};
use crate::report::Claim;
use wflora_alloc::RatioMode;
use wflora_fed::{AllocationSettings, RoundRecord, RunConfig};
use wflora_soft::MethodKind;

const ARMS: [(&str, &str); 5] = [
    ("tsfa", "TSFA"),
    ("online_only", "online only (r_max)"),
    ("offline_only", "offline only"),
    ("myopic", "myopic"),
    ("ilora", "ILoRA"),
];

/// Tolerance on "the average latency meets `T̄`" over a finite horizon: the
/// queue bounds the excess by `Q_T / T`, which vanishes only as `T → ∞`.
pub const LATENCY_TOLERANCE: f64 = 0.05;

/// The configuration of arm `id` from the TSFA base and the offline plan.
fn arm_config(
    base: &RunConfig,
    plan: &wflora_fed::OfflinePlan,
    r_max: usize,
    id: &str,
    seed: u64,
) -> RunConfig {
    let mut c = base.clone();
    c.name = format!("fig5-{id}-s{seed}");
    c.seed = seed;
    plan.apply(&mut c);
    match id {
        "online_only" => c.model.rank = r_max,
        "offline_only" => c.wireless.allocation = AllocationSettings::Equalising,
        "myopic" => {
            c.wireless.allocation = AllocationSettings::Myopic {
                budget_rel: plan.budget_rel,
                mode: RatioMode::PerClient,
                m_min: 1,
                budget_rank: Some(plan.budget_rank),
            }
        }
        "ilora" => {
            c.model.rank = plan.budget_rank;
            c.model.zeta = 0.0;
            c.compression.method = MethodKind::ILora;
            c.compression.rho = 1.0;
            c.wireless.allocation = AllocationSettings::EqualBandwidth;
        }
        _ => {}
    }
    c
}

/// Runs fig5.
///
/// # Errors
/// Configuration, run, offline-stage or I/O errors.
pub fn run(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let base = tsfa_base(opts, "fig5")?;
    let settings = offline_settings(p);
    let seeds = opts.seeds(seeds(p));
    let r_max = settings
        .candidates
        .iter()
        .copied()
        .max()
        .unwrap_or(base.model.rank);
    let total = ARMS.len() * seeds.len() * base.federation.rounds + settings.pilot_rounds_total();
    let runner = Runner::start("fig5", opts, &base, total)?;
    let plan = runner.plan(&base, &settings)?;
    let budget = plan.budget_s;

    let mut results: Vec<Vec<Vec<RoundRecord>>> = Vec::new();
    let mut csv = format!("arm,rank,seed,{ROUND_COLUMNS}\n");
    for (id, _) in &ARMS {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            let cfg = arm_config(&base, &plan, r_max, id, seed);
            let rank = cfg.model.rank;
            let recs = runner.run(cfg, &format!("{id}-s{seed}"))?;
            csv.push_str(&round_rows(&format!("{id},{rank},{seed}"), &recs, rank));
            per_seed.push(recs);
        }
        results.push(per_seed);
    }
    runner.dir().write_text("data.csv", &csv)?;

    // The common horizon and each arm's accuracy there.
    let horizon = results
        .iter()
        .flatten()
        .filter_map(|r| r.last().map(|x| x.sim_time_s))
        .fold(f64::INFINITY, f64::min);
    let at_h: Vec<Vec<f64>> = results
        .iter()
        .map(|s| s.iter().map(|r| accuracy_at_time(r, horizon)).collect())
        .collect();
    let avg_latency: Vec<Vec<f64>> = results
        .iter()
        .map(|s| {
            s.iter()
                .map(|r| r.last().map_or(f64::NAN, |x| x.mean_latency_s))
                .collect()
        })
        .collect();
    let vs_tsfa: Vec<(&str, Paired)> = ARMS
        .iter()
        .zip(&at_h)
        .skip(1)
        .map(|((id, _), a)| (*id, paired(a, &at_h[0])))
        .collect();
    let most_ahead = vs_tsfa
        .iter()
        .map(|(_, d)| d.lower)
        .fold(f64::NEG_INFINITY, f64::max);
    let tsfa_latency = avg_latency[0]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        / budget;
    let d_tsfa_ilora = paired(&at_h[0], &at_h[ARMS.len() - 1]);
    let claims = vec![
        Claim::at_most(
            "tsfa_not_beaten_per_time",
            most_ahead,
            0.0,
            "largest over the other arms of (arm − TSFA) accuracy at the common horizon H, paired over seeds, lower end (mean − 2·se); no arm may be clearly ahead of TSFA",
        ),
        Claim::at_least(
            "tsfa_beats_ilora_per_time",
            d_tsfa_ilora.lower,
            0.0,
            "TSFA − ILoRA accuracy at the common horizon H, paired, lower end; must be above 0",
        ),
        Claim::at_most(
            "tsfa_average_latency_meets_budget",
            tsfa_latency,
            1.0 + LATENCY_TOLERANCE,
            "largest over seeds of TSFA's running-average round latency after the last round, divided by T̄; at most 1 + 5% (finite-horizon slack)",
        ),
    ];

    // Plots.
    let acc_series = ARMS
        .iter()
        .zip(&results)
        .map(|((_, label), per_seed)| {
            let (acc, _) = curve_over_seeds(per_seed, |r| r.accuracy);
            let (time, _) = curve_over_seeds(per_seed, |r| r.accuracy.map(|_| r.sim_time_s));
            Series::line(
                label,
                time.iter().zip(&acc).map(|(t, a)| (t.1, a.1)).collect(),
            )
        })
        .collect();
    LinePlot {
        title: format!(
            "test accuracy vs simulated time (T̄ = {budget:.3} s, r* = {}, {}, {})",
            plan.rank,
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "simulated time, s".into(),
        y_label: "test accuracy".into(),
        log_x: false,
        log_y: false,
        series: acc_series,
        band_label: None,
    }
    .write(runner.dir().path(), "fig5", &opts.plot)?;
    let rounds = base.federation.rounds as f64;
    let mut lat_series: Vec<Series> = ARMS
        .iter()
        .zip(&results)
        .map(|((_, label), per_seed)| {
            let (pts, band) = curve_over_seeds(per_seed, |r| Some(r.mean_latency_s));
            Series::line(label, pts).with_band(band)
        })
        .collect();
    lat_series.push(Series::line(
        "budget T̄",
        vec![(1.0, budget), (rounds, budget)],
    ));
    LinePlot {
        title: "running-average round latency".into(),
        x_label: "round".into(),
        y_label: "average latency, s".into(),
        log_x: false,
        log_y: false,
        series: lat_series,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir().path(), "fig5_latency", &opts.plot)?;
    let queue_series = ARMS
        .iter()
        .zip(&results)
        .take(2)
        .map(|((_, label), per_seed)| {
            let (pts, band) = curve_over_seeds(per_seed, |r| Some(r.queue_s));
            Series::line(label, pts).with_band(band)
        })
        .collect();
    LinePlot {
        title: "virtual latency queue Q".into(),
        x_label: "round".into(),
        y_label: "Q, s".into(),
        log_x: false,
        log_y: false,
        series: queue_series,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir().path(), "fig5_queue", &opts.plot)?;

    let mut summary = serde_json::Map::new();
    summary.insert("rank_star".into(), plan.rank.into());
    summary.insert("ratio_star".into(), plan.ratio.into());
    summary.insert("budget_s".into(), budget.into());
    summary.insert("ilora_latency_s".into(), plan.ilora_latency_s.into());
    summary.insert("horizon_s".into(), horizon.into());
    summary.insert(
        "arms".into(),
        ARMS.iter()
            .zip(&at_h)
            .zip(&avg_latency)
            .zip(&results)
            .map(|((((id, _), a), l), recs)| {
                serde_json::json!({
                    "arm": id,
                    "accuracy_at_horizon_mean": mean(a),
                    "accuracy_at_horizon_std": std(a),
                    "accuracy_at_horizon_per_seed": a,
                    "average_latency_over_budget_per_seed": l.iter().map(|x| x / budget).collect::<Vec<_>>(),
                    "final_sim_time_s_per_seed": recs.iter().map(|r| r.last().map_or(f64::NAN, |x| x.sim_time_s)).collect::<Vec<_>>(),
                    "final_accuracy_per_seed": recs.iter().map(|r| super::common::final_accuracy(r)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    );
    summary.insert(
        "paired_differences".into(),
        vs_tsfa
            .iter()
            .map(|(id, d)| serde_json::json!({"name": format!("{id}_minus_tsfa_at_horizon"), "diff": d}))
            .collect(),
    );
    let config = serde_json::json!({"tsfa_base": base, "offline": settings});
    let outcome = runner.finish(&config, &seeds, summary, claims)?;
    println!(
        "  r* = {}, ρ(r*) = {:.4}, T̄ = {budget:.4} s, horizon H = {horizon:.3} s",
        plan.rank, plan.ratio
    );
    for (((id, _), a), l) in ARMS.iter().zip(&at_h).zip(&avg_latency) {
        println!(
            "  {id:>12}: accuracy at H {:.4} ± {:.4}, average latency / T̄ {:.3}",
            mean(a),
            std(a),
            mean(l) / budget
        );
    }
    Ok(outcome)
}
