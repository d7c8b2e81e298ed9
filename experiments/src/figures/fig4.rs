//! fig4: final accuracy against the ratio `ρ` for SOFT, SLoRA, TLoRA and
//! RLoRA (ILoRA, `ρ = 1`, as the reference line), and the selection time
//! per client-round of SOFT against SLoRA's SVD as the adapted matrix
//! widens.
//!
//! Ratios: the rank is 8, so rank-wise methods move in steps of `1/8`; a
//! ratio below `1/8` (the 0.05 of docs/method.md §7) keeps one component, the same budget
//! as `1/8` (SOFT's bit budget is that of the least `m` with `m/r ≥ ρ`,
//! `wflora_soft::components_for_ratio`, and every method is held to it), so
//! the grid starts at `1/8`. `ρ = 1` is ILoRA's line.
//!
//! Selection time is *measured* (wall clock, median of repeated calls on
//! one thread), unlike everything else in the figures: it is the cost SOFT
//! avoids, and `cargo bench -p wflora-soft --bench select` measures the
//! same calls more carefully.

use super::common::{
    ROUND_COLUMNS, Runner, SOFT_ZETA, base_config, final_accuracy, round_rows, seeds,
};
use super::stats::{mean, min_max, paired, std};
use super::{FigureOptions, FigureOutcome, Profile};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of, min_max_band_label};
use crate::report::Claim;
use ndarray::Array2;
use std::time::{Duration, Instant};
use wflora_fed::{RoundRecord, RunConfig};
use wflora_soft::{Factors, MethodKind, Residual, SLora, Soft, Sparsifier, components_for_ratio};

const METHODS: [(MethodKind, &str); 4] = [
    (MethodKind::Soft, "SOFT"),
    (MethodKind::SLora, "SLoRA"),
    (MethodKind::TLora, "TLoRA"),
    (MethodKind::RLora, "RLoRA"),
];

fn rhos(p: Profile) -> Vec<f64> {
    match p {
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => {
            vec![0.125, 0.25, 0.5]
        }
        Profile::Quick => vec![0.125, 0.5],
    }
}

fn widths(p: Profile) -> Vec<usize> {
    match p {
        Profile::Default | Profile::Real | Profile::RealNoniid | Profile::Paper => {
            vec![64, 128, 256, 512, 768, 1024]
        }
        Profile::Quick => vec![64, 128],
    }
}

/// Rank and ratio of the timing panel.
const TIMING_RANK: usize = 8;
const TIMING_RHO: f64 = 0.25;

fn config(base: &RunConfig, method: MethodKind, rho: f64, seed: u64) -> RunConfig {
    let mut c = base.clone();
    c.name = format!("fig4-{method}-rho{rho}-s{seed}");
    c.seed = seed;
    c.compression.method = method;
    c.compression.rho = rho;
    c.model.zeta = if method == MethodKind::Soft {
        SOFT_ZETA
    } else {
        0.0
    };
    c
}

/// A deterministic pseudo-random matrix (a linear congruential stream
/// mapped to `[−scale, scale)`): timing needs generic values, not a
/// particular distribution.
fn matrix(rows: usize, cols: usize, scale: f32, state: &mut u64) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = (*state >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * scale
    })
}

/// Median wall time of `reps` calls after one untimed call.
fn median_time(
    reps: usize,
    mut f: impl FnMut() -> Result<(), CliError>,
) -> Result<Duration, CliError> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed());
    }
    t.sort();
    Ok(t[t.len() / 2])
}

/// `(width, SOFT µs, SLoRA µs)` per width: one client's compression of one
/// `width × width` adapted matrix at rank 8, `ρ = 0.25`, with a non-zero
/// residual (SOFT's factor residual, SLoRA's dense one).
fn selection_times(widths: &[usize]) -> Result<Vec<(usize, f64, f64)>, CliError> {
    let mut out = Vec::new();
    let mut state = 7u64;
    let r = TIMING_RANK;
    let m = components_for_ratio(TIMING_RHO, r)?;
    for &w in widths {
        let base = Factors::new(matrix(w, r, 1.0, &mut state), matrix(r, w, 1.0, &mut state));
        let upd = Factors::new(matrix(w, r, 0.1, &mut state), matrix(r, w, 0.1, &mut state));
        let res = Residual::Factors(Factors::new(
            matrix(w, r, 0.05, &mut state),
            matrix(r, w, 0.05, &mut state),
        ));
        let dense = Residual::Dense(matrix(w, w, 0.01, &mut state));
        let soft = Soft::default();
        let slora = SLora::default();
        let soft_t = median_time(201, || {
            soft.compress(base.view(), upd.view(), &res, m)?;
            Ok(())
        })?;
        let slora_t = median_time(if w >= 512 { 3 } else { 11 }, || {
            slora.compress(base.view(), upd.view(), &dense, m)?;
            Ok(())
        })?;
        out.push((w, soft_t.as_secs_f64() * 1e6, slora_t.as_secs_f64() * 1e6));
    }
    Ok(out)
}

/// Runs fig4.
///
/// # Errors
/// Configuration, run or I/O errors.
pub fn run(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let p = opts.profile;
    let mut base = opts.apply(base_config(p)?)?;
    base.name = "fig4".into();
    let seeds = opts.seeds(seeds(p));
    let rhos = rhos(p);
    let total = (METHODS.len() * rhos.len() + 1) * seeds.len() * base.federation.rounds;
    let runner = Runner::start("fig4", opts, &base, total)?;
    let rank = base.model.rank;

    let mut csv = format!("method,rho,seed,{ROUND_COLUMNS}\n");
    let mut ilora = Vec::new();
    for &seed in &seeds {
        let recs = runner.run(
            config(&base, MethodKind::ILora, 1.0, seed),
            &format!("ilora-s{seed}"),
        )?;
        csv.push_str(&round_rows(&format!("ilora,1,{seed}"), &recs, rank));
        ilora.push(final_accuracy(&recs));
    }
    // finals[method][rho][seed]
    let mut finals: Vec<Vec<Vec<f64>>> = Vec::new();
    for (method, _) in &METHODS {
        let mut per_rho = Vec::new();
        for &rho in &rhos {
            let mut per_seed = Vec::new();
            for &seed in &seeds {
                let recs: Vec<RoundRecord> = runner.run(
                    config(&base, *method, rho, seed),
                    &format!("{method}-rho{rho}-s{seed}"),
                )?;
                csv.push_str(&round_rows(&format!("{method},{rho},{seed}"), &recs, rank));
                per_seed.push(final_accuracy(&recs));
            }
            per_rho.push(per_seed);
        }
        finals.push(per_rho);
    }
    runner.dir().write_text("data.csv", &csv)?;

    eprintln!("fig4: timing SOFT and SLoRA selection per client-round...");
    let times = selection_times(&widths(p))?;
    let mut tcsv = String::from("width,rank,rho,soft_us,slora_us,slora_over_soft\n");
    for &(w, s, l) in &times {
        tcsv.push_str(&format!(
            "{w},{TIMING_RANK},{TIMING_RHO},{s},{l},{}\n",
            l / s
        ));
    }
    runner.dir().write_text("selection.csv", &tcsv)?;

    // Claims at the lowest ratio.
    let soft_low = &finals[0][0];
    let d_ilora_soft = paired(&ilora, soft_low);
    let widest = times.last().map_or(f64::NAN, |&(_, s, l)| l / s);
    let claims = vec![
        Claim::at_most(
            "soft_keeps_accuracy_at_low_rho",
            d_ilora_soft.upper,
            0.02,
            "ILoRA minus SOFT at the lowest ratio (1/8, one of eight components), final accuracy, paired over seeds, upper end (mean + 2·se); within 2 points",
        ),
        Claim::at_least(
            "soft_selection_orders_cheaper",
            widest,
            100.0,
            "SLoRA / SOFT median selection time per client and adapted matrix at the widest matrix (rank 8, ρ = 0.25, non-zero residuals); at least two orders of magnitude",
        ),
    ];
    let mut diffs = Vec::new();
    for (mi, (m, _)) in METHODS.iter().enumerate().skip(1) {
        for (ri, rho) in rhos.iter().enumerate() {
            diffs.push(serde_json::json!({
                "name": format!("soft_minus_{m}_at_rho{rho}"),
                "diff": paired(&finals[0][ri], &finals[mi][ri]),
            }));
        }
    }

    // Plots.
    let mut series: Vec<Series> = METHODS
        .iter()
        .zip(&finals)
        .map(|((_, label), per_rho)| {
            let pts = rhos
                .iter()
                .zip(per_rho)
                .map(|(&r, v)| (r, mean(v)))
                .collect();
            let band = rhos
                .iter()
                .zip(per_rho)
                .map(|(&r, v)| {
                    let (lo, hi) = min_max(v);
                    (r, lo, hi)
                })
                .collect();
            Series::line(label, pts).with_band(band).with_markers()
        })
        .collect();
    let lo_rho = rhos.first().copied().unwrap_or(0.125);
    series.push(Series::line(
        "ILoRA (ρ = 1)",
        vec![(lo_rho, mean(&ilora)), (1.0, mean(&ilora))],
    ));
    LinePlot {
        title: format!(
            "final accuracy vs ρ (rank {rank}, {}, {})",
            count_of(seeds.len(), "seed"),
            p.name()
        ),
        x_label: "ratio ρ".into(),
        y_label: "final test accuracy".into(),
        log_x: false,
        log_y: false,
        series,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir().path(), "fig4", &opts.plot)?;
    LinePlot {
        title: format!("selection time per client-round (rank {TIMING_RANK}, ρ = {TIMING_RHO})"),
        x_label: "matrix width d = l".into(),
        y_label: "median time, µs".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series::line(
                "SOFT",
                times.iter().map(|&(w, s, _)| (w as f64, s)).collect(),
            )
            .with_markers(),
            Series::line(
                "SLoRA (SVD)",
                times.iter().map(|&(w, _, l)| (w as f64, l)).collect(),
            )
            .with_markers(),
        ],
        band_label: None,
    }
    .write(runner.dir().path(), "fig4_selection", &opts.plot)?;

    let mut summary = serde_json::Map::new();
    summary.insert("rhos".into(), serde_json::to_value(&rhos)?);
    summary.insert("zeta_soft".into(), SOFT_ZETA.into());
    summary.insert(
        "ilora".into(),
        serde_json::json!({"final_accuracy_mean": mean(&ilora), "final_accuracy_std": std(&ilora), "per_seed": ilora}),
    );
    summary.insert(
        "methods".into(),
        METHODS
            .iter()
            .zip(&finals)
            .map(|((m, _), per_rho)| {
                serde_json::json!({
                    "method": m.to_string(),
                    "by_rho": rhos.iter().zip(per_rho).map(|(r, v)| serde_json::json!({
                        "rho": r, "final_accuracy_mean": mean(v), "final_accuracy_std": std(v), "per_seed": v
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    );
    summary.insert("paired_differences".into(), serde_json::Value::Array(diffs));
    summary.insert(
        "selection_time_us".into(),
        times
            .iter()
            .map(
                |&(w, s, l)| serde_json::json!({"width": w, "soft": s, "slora": l, "ratio": l / s}),
            )
            .collect(),
    );
    let outcome = runner.finish(&base, &seeds, summary, claims)?;
    println!("  ILoRA: {:.4} ± {:.4}", mean(&ilora), std(&ilora));
    for ((m, _), per_rho) in METHODS.iter().zip(&finals) {
        let row: Vec<String> = rhos
            .iter()
            .zip(per_rho)
            .map(|(r, v)| format!("ρ={r}: {:.4} ± {:.4}", mean(v), std(v)))
            .collect();
        println!("  {m:>6}: {}", row.join(", "));
    }
    for &(w, s, l) in &times {
        println!(
            "  width {w:>5}: SOFT {s:.1} µs, SLoRA {l:.0} µs ({:.0}×)",
            l / s
        );
    }
    Ok(outcome)
}
