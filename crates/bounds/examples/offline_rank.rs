//! TSFA's offline stage: pick the LoRA rank once, before training, by
//! minimising the convergence bound under a latency budget.
//!
//! The bound's constants are [`BoundParams::default`] (the project's trial
//! profile `η = 5e-3`, `E = 10`, `T = 40`, `b = 32`, and unit weights). The
//! structural term comes from a reference spectrum `σ_i = i^{-1/2}`
//! (`i = 1..=64`), the covariance term from three pilot measurements fitted
//! by [`fit_covariance`], and the expected round latency is the model
//! `T(r, ρ) = 0.1 + 0.01·r + 0.05·ρ·r` s (compute grows with `r`, upload with
//! the `ρr` kept components) that an engine would build from its channel.
//! For each candidate rank `r ∈ {1, 2, 4, 8, 16}` the stage finds the largest
//! ratio `ρ(r) = m/r` meeting the budget; the program prints the bound term
//! by term at `(r, ρ(r))` and the chosen rank `r*`.
//!
//! ```sh
//! cargo run -p wflora-bounds --example offline_rank -- [BUDGET_S]
//! ```
//! (default `T̄ = 0.6` s: ranks up to 8 fit uncompressed, while rank 16 must
//! drop to 6 of its 16 components and its sparsification term outweighs what
//! it gains in expressiveness, so `r* = 8`; a tighter budget moves `r*` down,
//! one under 0.16 s leaves no feasible rank and the program says so).

use wflora_bounds::{
    BoundModel, BoundParams, EnergyProfile, OfflineStage, RatioGrid, fit_covariance, select_rank,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let budget_s: f64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("BUDGET_S: cannot parse {s:?}: {e}"))?,
        None => 0.6,
    };

    let params = BoundParams::default();
    let spectrum: Vec<f64> = (1..=64).map(|i| f64::from(i).powf(-0.5)).collect();
    let structural = EnergyProfile::from_singular_values(&spectrum)?;
    // Pilot covariance norms at ranks 2, 8, 32 (here exactly C(r) = 0.005·r).
    let covariance = fit_covariance(&[2, 8, 32], &[0.01, 0.04, 0.16])?;
    let model = BoundModel::new(params, structural, covariance.model)?;
    let stage = OfflineStage {
        budget_s,
        ratio_grid: RatioGrid::Components,
    };
    let latency = |r: usize, rho: f64| 0.1 + 0.01 * r as f64 + 0.05 * rho * r as f64;
    let ranks = [1, 2, 4, 8, 16];

    println!(
        "BoundParams::default(): F0−F* = {:.4}, η = {}, E = {}, T = {}, L = {}, σ² = {}, b = {}, \
         c_Γ = {}, c_C = {}, c_S = {}",
        params.objective_gap,
        params.learning_rate,
        params.local_steps,
        params.rounds,
        params.smoothness,
        params.gradient_variance,
        params.batch_size,
        params.structural_weight,
        params.covariance_weight,
        params.sparsification_weight,
    );
    println!("covariance fit: {:?}", covariance.model);
    println!("budget T̄ = {budget_s} s\n");

    let choice = select_rank(&model, &stage, &ranks, &latency)?;
    println!(
        "{:>4} {:>6} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "r", "ρ(r)", "m", "T(r,ρ) s", "opt", "noise", "c_Γ·Γ", "c_C·C", "c_S·sp", "bound"
    );
    for row in &choice.table.rows {
        match row.choice {
            Some(c) => println!(
                "{:>4} {:>6.3} {:>5} {:>9.3} {:>8.4} {:>8.5} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
                row.rank,
                c.ratio,
                c.kept_components
                    .map_or_else(|| "-".into(), |m| m.to_string()),
                c.latency_s,
                c.terms.optimisation,
                c.terms.noise,
                c.terms.structural,
                c.terms.covariance,
                c.terms.sparsification,
                c.terms.total,
            ),
            None => println!(
                "{:>4} infeasible: least latency {:.3} s > budget",
                row.rank, row.least_latency_s
            ),
        }
    }
    println!(
        "\nchosen rank r* = {} with ρ = {:.3} ({} of {} components), latency {:.3} s, bound {:.4}",
        choice.rank,
        choice.ratio,
        choice
            .kept_components
            .map_or_else(|| "-".into(), |m| m.to_string()),
        choice.rank,
        choice.latency_s,
        choice.terms.total,
    );
    Ok(())
}
