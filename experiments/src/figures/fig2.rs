//! fig2: the convergence bound of docs/method.md §4 term by term against the LoRA
//! rank, with TSFA's offline choice `r*`; and the covariance norm of
//! separate aggregation per round under IID and Dirichlet α ∈ {1, 0.1}
//! partitions.
//!
//! The bound table comes from TSFA's offline stage on the TSFA base
//! (`common::tsfa_base`, `common::offline_settings`):
//! pilots with ILoRA give `Γ(r)` (the reference pilot's update spectrum) and
//! `C(r)` (the pilots' mean covariance, fitted), and each candidate rank
//! gets the largest whole-component ratio whose expected round latency
//! meets `T̄`. The covariance runs are ILoRA on the default task, so the
//! covariance is that of the clients' uncompressed factors.

use super::common::{
    ROUND_COLUMNS, Runner, base_config, curve_over_seeds, offline_settings, round_rows, seeds,
    tsfa_base,
};
use super::stats::{mean, paired, std};
use super::{FigureOptions, FigureOutcome, Profile};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of, min_max_band_label};
use crate::report::Claim;
use wflora_data::Scheme;
use wflora_fed::RoundRecord;
use wflora_soft::MethodKind;

/// The partitions of the covariance panel.
fn partitions() -> [(&'static str, &'static str, Scheme); 3] {
    let dirichlet = |alpha| Scheme::Dirichlet {
        alpha,
        min_size: 32,
        max_attempts: 1000,
    };
    [
        ("iid", "IID", Scheme::Iid),
        ("dir1", "Dirichlet α=1", dirichlet(1.0)),
        ("dir0.1", "Dirichlet α=0.1", dirichlet(0.1)),
    ]
}

/// Rounds of each covariance run.
fn covariance_rounds(p: Profile) -> usize {
    match p {
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => 10,
        Profile::Quick => 2,
    }
}

/// Mean over rounds and matrices of the relative covariance norm.
fn mean_covariance(records: &[RoundRecord]) -> f64 {
    let v: Vec<f64> = records
        .iter()
        .flat_map(|r| r.covariance_rel.iter().copied())
        .collect();
    mean(&v)
}

/// Runs fig2.
///
/// # Errors
/// Configuration, run, fit, selection or I/O errors.
pub fn run(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let tsfa = tsfa_base(opts, "fig2")?;
    let settings = offline_settings(p);
    let mut cov_base = opts.apply(base_config(p)?)?;
    cov_base.name = "fig2-covariance".into();
    cov_base.compression.method = MethodKind::ILora;
    cov_base.model.zeta = 0.0;
    cov_base.federation.rounds = covariance_rounds(p);
    let seeds = opts.seeds(seeds(p));
    let pilots = settings.pilot_rounds_total();
    let parts = partitions();
    let total = pilots + parts.len() * seeds.len() * cov_base.federation.rounds;
    let runner = Runner::start("fig2", opts, &tsfa, total)?;

    // Panel (a): the bound table of the offline stage.
    let plan = runner.plan(&tsfa, &settings)?;
    let table = &plan.selection.table;
    runner.dir().write_text("bound.csv", &table.to_csv())?;

    // Panel (b): covariance per round under three partitions.
    let mut results: Vec<Vec<Vec<RoundRecord>>> = Vec::new();
    for (id, _, scheme) in &parts {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            let mut c = cov_base.clone();
            c.name = format!("fig2-{id}-s{seed}");
            c.seed = seed;
            c.federation.partition = *scheme;
            per_seed.push(runner.run(c, &format!("{id}-s{seed}"))?);
        }
        results.push(per_seed);
    }
    let mut csv = format!("partition,seed,{ROUND_COLUMNS}\n");
    for ((id, _, _), per_seed) in parts.iter().zip(&results) {
        for (seed, recs) in seeds.iter().zip(per_seed) {
            csv.push_str(&round_rows(
                &format!("{id},{seed}"),
                recs,
                cov_base.model.rank,
            ));
        }
    }
    runner.dir().write_text("data.csv", &csv)?;

    // Claims.
    let totals: Vec<(usize, f64)> = table
        .rows
        .iter()
        .filter_map(|r| r.total().map(|t| (r.rank, t)))
        .collect();
    let best = plan.selection.terms.total;
    let interior_margin = match (totals.first(), totals.last()) {
        (Some(&(_, lo)), Some(&(_, hi))) if totals.len() >= 3 => (lo.min(hi) - best) / best.abs(),
        _ => 0.0,
    };
    let covs: Vec<Vec<f64>> = results
        .iter()
        .map(|s| s.iter().map(|r| mean_covariance(r)).collect())
        .collect();
    let d_strong_iid = paired(&covs[2], &covs[0]);
    let d_strong_mild = paired(&covs[2], &covs[1]);
    let d_mild_iid = paired(&covs[1], &covs[0]);
    let claims = vec![
        Claim::at_least(
            "bound_u_shaped_interior_rank",
            interior_margin,
            1e-9,
            "(min of the bound at the smallest and the largest feasible candidate rank − bound at r*) / bound at r*; positive only when r* is interior (needs at least three feasible ranks)",
        ),
        Claim::at_least(
            "covariance_larger_non_iid",
            d_strong_iid.lower,
            0.0,
            "mean relative covariance norm, Dirichlet α = 0.1 minus IID, paired over seeds, lower end (mean − 2·se); must be above 0",
        ),
        Claim::at_least(
            "covariance_grows_as_alpha_falls",
            d_strong_mild.lower,
            0.0,
            "mean relative covariance norm, Dirichlet α = 0.1 minus α = 1, paired, lower end; must be above 0",
        ),
    ];

    // Plots.
    let xs = |f: &dyn Fn(&wflora_bounds::RankRow) -> Option<f64>| -> Vec<(f64, f64)> {
        table
            .rows
            .iter()
            .filter_map(|r| f(r).map(|y| (r.rank as f64, y)))
            .collect()
    };
    let series = vec![
        Series::line("c_Γ·Γ(r)", xs(&|r| Some(r.structural_term))).with_markers(),
        Series::line("c_C·C(r)", xs(&|r| Some(r.covariance_term))).with_markers(),
        Series::line(
            "c_S·(1−ρ)/ρ² at ρ(r)",
            xs(&|r| r.choice.map(|c| c.terms.sparsification)),
        )
        .with_markers(),
        Series::line("total bound", xs(&|r| r.total())).with_markers(),
        Series::line(
            &format!("r* = {} (ρ = {:.3})", plan.rank, plan.ratio),
            vec![(plan.rank as f64, best)],
        )
        .with_markers(),
    ];
    LinePlot {
        title: format!(
            "bound terms vs rank (T̄ = {:.2} s, {})",
            plan.budget_s,
            p.name()
        ),
        x_label: "LoRA rank r".into(),
        y_label: "bound term".into(),
        log_x: true,
        log_y: true,
        series,
        band_label: None,
    }
    .write(runner.dir().path(), "fig2", &opts.plot)?;
    let cov_series = parts
        .iter()
        .zip(&results)
        .map(|((_, label, _), per_seed)| {
            let (pts, band) = curve_over_seeds(per_seed, |r| {
                (!r.covariance_rel.is_empty()).then(|| mean(&r.covariance_rel))
            });
            Series::line(label, pts).with_band(band)
        })
        .collect();
    LinePlot {
        title: format!(
            "covariance of separate aggregation per round (ILoRA, {}, {})",
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "round".into(),
        y_label: "‖Σp(B−B̄)(A−Ā)‖ / ‖ΣpBA‖ (mean over matrices)".into(),
        log_x: false,
        log_y: false,
        series: cov_series,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir().path(), "fig2_covariance", &opts.plot)?;

    let mut summary = serde_json::Map::new();
    summary.insert("rank_star".into(), plan.rank.into());
    summary.insert("ratio_star".into(), plan.ratio.into());
    summary.insert("budget_s".into(), plan.budget_s.into());
    summary.insert("ilora_latency_s".into(), plan.ilora_latency_s.into());
    summary.insert("bound_table".into(), serde_json::to_value(table)?);
    summary.insert(
        "covariance_fit".into(),
        serde_json::to_value(plan.covariance)?,
    );
    summary.insert(
        "pilot_mean_covariance".into(),
        plan.pilots
            .iter()
            .map(|q| serde_json::json!({"rank": q.rank, "mean_covariance": q.mean_covariance}))
            .collect(),
    );
    summary.insert(
        "covariance_by_partition".into(),
        parts
            .iter()
            .zip(&covs)
            .map(|((id, _, _), c)| {
                serde_json::json!({"partition": id, "mean": mean(c), "std": std(c), "per_seed": c})
            })
            .collect(),
    );
    summary.insert(
        "paired_differences".into(),
        serde_json::json!([
            {"name": "dir0.1_minus_iid", "diff": d_strong_iid},
            {"name": "dir0.1_minus_dir1", "diff": d_strong_mild},
            {"name": "dir1_minus_iid", "diff": d_mild_iid},
        ]),
    );
    let offline =
        serde_json::json!({"tsfa_base": tsfa, "offline": settings, "covariance_base": cov_base});
    let outcome = runner.finish(&offline, &seeds, summary, claims)?;
    println!(
        "  r* = {}, ρ(r*) = {:.4}, T̄ = {:.3} s; bound by rank: {}",
        plan.rank,
        plan.ratio,
        plan.budget_s,
        totals
            .iter()
            .map(|(r, t)| format!("r={r}: {t:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for ((id, _, _), c) in parts.iter().zip(&covs) {
        println!("  covariance {id:>7}: {:.4} ± {:.4}", mean(c), std(c));
    }
    Ok(outcome)
}
