//! Timings of the offline stage and the pilot estimators (std::time only).
//! Run: `cargo bench -p wflora-bounds`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use wflora_bounds::{
    BoundModel, BoundParams, EnergyProfile, OfflineStage, RatioGrid, candidate_ranks,
    fit_covariance, select_rank,
};

/// Runs `f` `warm` times, then `reps` timed times; returns (median, min).
fn time<T>(warm: usize, reps: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    for _ in 0..warm {
        black_box(f());
    }
    let mut d: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    d.sort();
    (d[reps / 2], d[0])
}

fn row(name: &str, (median, min): (Duration, Duration)) {
    println!(
        "| {name:<44} | {:>12.2} | {:>12.2} |",
        median.as_secs_f64() * 1e6,
        min.as_secs_f64() * 1e6
    );
}

fn main() {
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "case", "median (µs)", "min (µs)"
    );
    println!("|{:-<46}|{:-<14}|{:-<14}|", "", "", "");
    // 12 layers × 768 singular values (ViT-Base-sized reference updates).
    let layers: Vec<Vec<f64>> = (0..12)
        .map(|l| {
            (1..=768)
                .map(|i| (i as f64 + l as f64).powf(-0.7))
                .collect()
        })
        .collect();
    row(
        "EnergyProfile::from_layers 12×768",
        time(10, 101, || EnergyProfile::from_layers(&layers).unwrap()),
    );
    let ranks: Vec<usize> = (0..6).flat_map(|k| [1_usize << k; 4]).collect();
    let values: Vec<f64> = ranks.iter().map(|&r| 0.01 * (r as f64).powf(1.2)).collect();
    row(
        "fit_covariance 24 points",
        time(100, 1001, || fit_covariance(&ranks, &values).unwrap()),
    );
    let structural = EnergyProfile::from_layers(&layers).unwrap();
    let cov = fit_covariance(&ranks, &values).unwrap().model;
    let model = BoundModel::new(BoundParams::default(), structural, cov).unwrap();
    let latency = |r: usize, rho: f64| 0.1 + 0.001 * r as f64 + 0.01 * rho * r as f64;
    for r_max in [64, 256, 1024] {
        let cands = candidate_ranks(r_max).unwrap();
        for (grid_name, grid) in [
            ("components", RatioGrid::Components),
            (
                "continuous",
                RatioGrid::Continuous {
                    min_ratio: 1e-3,
                    tolerance: 1e-9,
                },
            ),
        ] {
            let stage = OfflineStage {
                budget_s: 0.5,
                ratio_grid: grid,
            };
            row(
                &format!("select_rank r_max={r_max} {grid_name}"),
                time(10, 101, || {
                    select_rank(&model, &stage, &cands, &latency).unwrap()
                }),
            );
        }
    }
}
