//! fig3: test accuracy vs round for ILoRA, SOFT, SLoRA, TLoRA and RLoRA at
//! the same ratio ρ on non-IID clients (docs/method.md §7), with the two sanity
//! conditions of docs/method.md §6b (ILoRA clearly above head-only; federated ILoRA
//! above local-only training) checked before the paper's claim.
//!
//! Every arm runs with the same seeds, so partitions, initialisations and
//! batches are shared and the differences are paired.

use super::common::{
    ROUND_COLUMNS, Runner, SOFT_ZETA, base_config, curve_over_seeds, final_accuracy, round_rows,
    seeds,
};
use super::stats::{Paired, mean, paired, paired_json, std};
use super::{FigureOptions, FigureOutcome};
use crate::cli::CliError;
use crate::plot::{LinePlot, Series, count_of, min_max_band_label};
use crate::report::Claim;
use serde::Serialize;
use wflora_fed::{RoundRecord, RunConfig, TrainMode};
use wflora_soft::MethodKind;

/// One curve of the figure.
#[derive(Debug, Clone, Copy)]
struct Arm {
    id: &'static str,
    label: &'static str,
    method: MethodKind,
    mode: TrainMode,
    local_only: bool,
}

const ARMS: [Arm; 7] = [
    Arm {
        id: "ilora",
        label: "ILoRA",
        method: MethodKind::ILora,
        mode: TrainMode::Lora,
        local_only: false,
    },
    Arm {
        id: "soft",
        label: "SOFT",
        method: MethodKind::Soft,
        mode: TrainMode::Lora,
        local_only: false,
    },
    Arm {
        id: "slora",
        label: "SLoRA",
        method: MethodKind::SLora,
        mode: TrainMode::Lora,
        local_only: false,
    },
    Arm {
        id: "tlora",
        label: "TLoRA",
        method: MethodKind::TLora,
        mode: TrainMode::Lora,
        local_only: false,
    },
    Arm {
        id: "rlora",
        label: "RLoRA",
        method: MethodKind::RLora,
        mode: TrainMode::Lora,
        local_only: false,
    },
    Arm {
        id: "head_only",
        label: "head only",
        method: MethodKind::ILora,
        mode: TrainMode::HeadOnly,
        local_only: false,
    },
    Arm {
        id: "local_only",
        label: "local only",
        method: MethodKind::ILora,
        mode: TrainMode::Lora,
        local_only: true,
    },
];

/// The base configuration and seeds of a profile. Learning rate, local
/// steps and non-IID level were fixed on ILoRA alone (docs/method.md §6b) and are
/// the same for every arm; see docs/figures.md.
fn profile(opts: &FigureOptions) -> Result<(RunConfig, Vec<u64>), CliError> {
    let p = opts.profile;
    let mut cfg = opts.apply(base_config(p)?)?;
    cfg.name = "fig3".into();
    Ok((cfg, opts.seeds(seeds(p))))
}

fn arm_config(base: &RunConfig, arm: &Arm, seed: u64) -> RunConfig {
    let mut c = base.clone();
    c.name = format!("fig3-{}-s{seed}", arm.id);
    c.seed = seed;
    c.compression.method = arm.method;
    c.model.mode = arm.mode;
    c.federation.local_only = arm.local_only;
    // The orthogonality regulariser is SOFT's change to training; the
    // baselines train without it (docs/method.md §1).
    c.model.zeta = if arm.method == MethodKind::Soft {
        SOFT_ZETA
    } else {
        0.0
    };
    c
}

#[derive(Serialize)]
struct ArmSummary {
    arm: &'static str,
    final_accuracy_mean: f64,
    final_accuracy_std: f64,
    final_accuracy_per_seed: Vec<f64>,
    bits_per_round_mean: f64,
    mean_round_latency_s: f64,
}

/// Runs fig3.
///
/// # Errors
/// Configuration, run or I/O errors.
pub fn run(opts: &FigureOptions) -> Result<FigureOutcome, CliError> {
    let (base, seeds) = profile(opts)?;
    let total = ARMS.len() * seeds.len() * base.federation.rounds;
    let runner = Runner::start("fig3", opts, &base, total)?;
    let mut results: Vec<Vec<Vec<RoundRecord>>> = Vec::new();
    for arm in &ARMS {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            let cfg = arm_config(&base, arm, seed);
            per_seed.push(runner.run(cfg, &format!("{}-s{seed}", arm.id))?);
        }
        results.push(per_seed);
    }

    // data.csv: one row per arm, seed and round.
    let mut csv = format!("arm,seed,{ROUND_COLUMNS}\n");
    for (arm, per_seed) in ARMS.iter().zip(&results) {
        for (seed, recs) in seeds.iter().zip(per_seed) {
            csv.push_str(&round_rows(
                &format!("{},{seed}", arm.id),
                recs,
                base.model.rank,
            ));
        }
    }
    runner.dir().write_text("data.csv", &csv)?;

    // Summaries per arm.
    let finals: Vec<Vec<f64>> = results
        .iter()
        .map(|s| s.iter().map(|r| final_accuracy(r)).collect())
        .collect();
    let summaries: Vec<ArmSummary> = ARMS
        .iter()
        .zip(&results)
        .zip(&finals)
        .map(|((arm, per_seed), f)| ArmSummary {
            arm: arm.id,
            final_accuracy_mean: mean(f),
            final_accuracy_std: std(f),
            final_accuracy_per_seed: f.clone(),
            bits_per_round_mean: mean(
                &per_seed
                    .iter()
                    .flat_map(|r| r.iter().map(|x| x.bits))
                    .collect::<Vec<_>>(),
            ),
            mean_round_latency_s: mean(
                &per_seed
                    .iter()
                    .filter_map(|r| r.last().map(|x| x.mean_latency_s))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    let idx = |id: &str| ARMS.iter().position(|a| a.id == id).unwrap_or(0);
    let pair = |a: &str, b: &str| paired(&finals[idx(a)], &finals[idx(b)]);
    let d_ilora_head = pair("ilora", "head_only");
    let d_ilora_local = pair("ilora", "local_only");
    let d_ilora_soft = pair("ilora", "soft");
    let d_soft_slora = pair("soft", "slora");
    let d_soft_tlora = pair("soft", "tlora");
    let d_soft_rlora = pair("soft", "rlora");
    let claims = vec![
        Claim::at_least(
            "sanity_ilora_above_head_only",
            d_ilora_head.lower,
            0.02,
            "ILoRA minus head-only final accuracy, paired over seeds, lower end (mean − 2·se); must clear 2 points",
        ),
        Claim::at_least(
            "sanity_federated_above_local_only",
            d_ilora_local.lower,
            0.0,
            "federated ILoRA minus local-only final accuracy, paired, lower end (mean − 2·se)",
        ),
        Claim::at_most(
            "soft_close_to_ilora",
            d_ilora_soft.upper,
            0.02,
            "ILoRA minus SOFT final accuracy, paired, upper end (mean + 2·se); within 2 points",
        ),
        Claim::at_most(
            "soft_close_to_slora",
            d_soft_slora.mean.abs() + 2.0 * d_soft_slora.se,
            0.02,
            "|SOFT minus SLoRA| final accuracy, paired, plus 2·se; within 2 points",
        ),
        Claim::at_least(
            "tlora_clearly_below_soft",
            d_soft_tlora.lower,
            0.01,
            "SOFT minus TLoRA final accuracy, paired, lower end (mean − 2·se); at least 1 point beyond the seed noise",
        ),
        Claim::at_least(
            "rlora_clearly_below_soft",
            d_soft_rlora.lower,
            0.01,
            "SOFT minus RLoRA final accuracy, paired, lower end (mean − 2·se); at least 1 point beyond the seed noise",
        ),
    ];

    // Plot: mean accuracy with min–max band over seeds, federated arms.
    let mut series = Vec::new();
    for (arm, per_seed) in ARMS.iter().zip(&results) {
        if arm.local_only {
            continue;
        }
        let (pts, band) = curve_over_seeds(per_seed, |r| r.accuracy);
        let mut s = Series::line(arm.label, pts);
        if seeds.len() > 1 {
            s = s.with_band(band);
        }
        series.push(s);
    }
    let rho = base.compression.rho;
    LinePlot {
        title: format!(
            "test accuracy vs round (ρ = {rho}, {}, {})",
            count_of(seeds.len(), "seed"),
            opts.profile.name()
        ),
        x_label: "round".into(),
        y_label: "test accuracy".into(),
        log_x: false,
        log_y: false,
        series,
        band_label: Some(min_max_band_label(seeds.len())),
    }
    .write(runner.dir().path(), "fig3", &opts.plot)?;

    let diffs: Vec<(String, Paired)> = [
        ("ilora_minus_head_only", d_ilora_head),
        ("ilora_minus_local_only", d_ilora_local),
        ("ilora_minus_soft", d_ilora_soft),
        ("soft_minus_slora", d_soft_slora),
        ("soft_minus_tlora", d_soft_tlora),
        ("soft_minus_rlora", d_soft_rlora),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_owned(), p))
    .collect();
    let mut summary = serde_json::Map::new();
    summary.insert("rho".into(), rho.into());
    summary.insert("zeta_soft".into(), SOFT_ZETA.into());
    summary.insert("arms".into(), serde_json::to_value(&summaries)?);
    summary.insert("paired_differences".into(), paired_json(&diffs));
    let outcome = runner.finish(&base, &seeds, summary, claims)?;
    for s in &summaries {
        println!(
            "  {:>10}: final accuracy {:.4} ± {:.4} (per seed {:?})",
            s.arm,
            s.final_accuracy_mean,
            s.final_accuracy_std,
            s.final_accuracy_per_seed
                .iter()
                .map(|a| (a * 10000.0).round() / 10000.0)
                .collect::<Vec<_>>()
        );
    }
    Ok(outcome)
}
