//! fig7: final accuracy against a fixed LoRA rank under the latency budget,
//! with the offline stage's `r*` marked (docs/method.md §4).
//!
//! Every rank of the offline stage's candidates runs TSFA's online stage
//! (drift-plus-penalty on the TSFA base `common::tsfa_base`) with
//! the same `T̄ = 0.6·T_ILoRA` at rank 8; the run at `r*` is exactly the
//! TSFA run. The claim: the offline choice sits near the best rank, i.e.
//! the best rank's accuracy is not clearly above `r*`'s.

use super::common::{
    ROUND_COLUMNS, Runner, final_accuracy, offline_settings, round_rows, seeds, tsfa_base,
};
use super::stats::{mean, min_max, paired, std};
use super::{FigureOptions, FigureOutcome};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of, min_max_band_label};
use crate::report::Claim;
use wflora_fed::RunConfig;

/// Runs fig7.
///
/// # Errors
/// Configuration, run, offline-stage or I/O errors.
pub fn run(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let base = tsfa_base(opts, "fig7")?;
    let settings = offline_settings(p);
    let seeds = opts.seeds(seeds(p));
    let ranks = settings.candidates.clone();
    let total = ranks.len() * seeds.len() * base.federation.rounds + settings.pilot_rounds_total();
    let runner = Runner::start("fig7", opts, &base, total)?;
    let plan = runner.plan(&base, &settings)?;

    let mut csv = format!("rank,seed,{ROUND_COLUMNS}\n");
    let mut finals: Vec<Vec<f64>> = Vec::new();
    for &rank in &ranks {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            let mut c: RunConfig = base.clone();
            plan.apply(&mut c);
            c.model.rank = rank;
            c.name = format!("fig7-r{rank}-s{seed}");
            c.seed = seed;
            let recs = runner.run(c, &format!("r{rank}-s{seed}"))?;
            csv.push_str(&round_rows(&format!("{rank},{seed}"), &recs, rank));
            per_seed.push(final_accuracy(&recs));
        }
        finals.push(per_seed);
    }
    runner.dir().write_text("data.csv", &csv)?;

    let means: Vec<f64> = finals.iter().map(|v| mean(v)).collect();
    let best = (0..ranks.len())
        .max_by(|&a, &b| means[a].total_cmp(&means[b]))
        .unwrap_or(0);
    let star = ranks.iter().position(|&r| r == plan.rank).unwrap_or(best);
    let d_best_star = paired(&finals[best], &finals[star]);
    let claims = vec![Claim::at_most(
        "offline_rank_near_best",
        d_best_star.upper,
        0.02,
        "final accuracy at the best fixed rank minus at r*, paired over seeds, upper end (mean + 2·se); within 2 points",
    )];

    let pts: Vec<(f64, f64)> = ranks
        .iter()
        .zip(&means)
        .map(|(&r, &m)| (r as f64, m))
        .collect();
    let band = ranks
        .iter()
        .zip(&finals)
        .map(|(&r, v)| {
            let (lo, hi) = min_max(v);
            (r as f64, lo, hi)
        })
        .collect();
    LinePlot {
        title: format!(
            "final accuracy vs fixed rank under T̄ = {:.3} s ({}, {})",
            plan.budget_s,
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "LoRA rank r".into(),
        y_label: "final test accuracy".into(),
        log_x: true,
        log_y: false,
        series: vec![
            Series::line("TSFA online stage at fixed r", pts)
                .with_band(band)
                .with_markers(),
            Series::line(
                &format!("offline choice r* = {}", plan.rank),
                vec![(plan.rank as f64, means[star])],
            )
            .with_markers(),
        ],
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir().path(), "fig7", &opts.plot)?;

    let mut summary = serde_json::Map::new();
    summary.insert("rank_star".into(), plan.rank.into());
    summary.insert("ratio_star".into(), plan.ratio.into());
    summary.insert("best_rank".into(), ranks[best].into());
    summary.insert("budget_s".into(), plan.budget_s.into());
    summary.insert(
        "ranks".into(),
        ranks
            .iter()
            .zip(&finals)
            .map(|(r, v)| {
                serde_json::json!({"rank": r, "final_accuracy_mean": mean(v), "final_accuracy_std": std(v), "per_seed": v})
            })
            .collect(),
    );
    summary.insert(
        "paired_differences".into(),
        serde_json::json!([{"name": "best_minus_rstar", "diff": d_best_star}]),
    );
    let config = serde_json::json!({"tsfa_base": base, "offline": settings});
    let outcome = runner.finish(&config, &seeds, summary, claims)?;
    println!("  r* = {}, best fixed rank = {}", plan.rank, ranks[best]);
    for (r, v) in ranks.iter().zip(&finals) {
        println!(
            "  rank {r:>2}: final accuracy {:.4} ± {:.4}",
            mean(v),
            std(v)
        );
    }
    Ok(outcome)
}
