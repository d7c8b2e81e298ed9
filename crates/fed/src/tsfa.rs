//! TSFA (docs/method.md §4–§5) on top of the engine: the latency model both stages
//! share, and the offline stage that picks the rank `r*` from pilot runs.
//!
//! **Latency model** ([`LatencyModel`]): every client at its *mean* channel
//! (`|h|² = 1`, [`Network::mean_uplink`]), compute latency
//! `E·batch·c(r)/f_k` with `c(r)` from the model's FLOPs at rank `r`, and
//! SOFT's bit budget for `m = ⌈ρr⌉` kept components of every adapted matrix
//! plus the dense head. Two numbers come out of it:
//! - `T_ILoRA` ([`LatencyModel::ilora_latency_s`]): ILoRA's round latency
//!   (all `r` components, no index bits) with every client taking part and
//!   equal shares `1/K`, the max of the clients' finish times. The TSFA
//!   budget is `T̄ = budget_rel · T_ILoRA` (docs/method.md §3, last bullet).
//! - the expected round latency `T(r, ρ)` of the offline stage
//!   ([`LatencyModel::expected_latency_s`]): the common finish time of the
//!   latency-equalising split ([`equalising_split`]) of every client.
//!
//! Both take *all* `K` clients as the reference round (our choice): with
//! `clients_per_round < K` a real round shares the band among fewer clients
//! and is faster.
//!
//! **Offline stage** ([`plan_offline`]): pilot runs with ILoRA at a few
//! ranks; from the run at the reference rank (typically `r_max`) the
//! singular values of every adapted matrix's aggregated update
//! `BᵀAᵀ − B⁰A⁰` give `Γ(r)` ([`EnergyProfile`], pooled over matrices); the
//! mean reported covariance (`covariance_rel` over rounds and matrices) at
//! each pilot rank is fitted to `C(r)` ([`fit_covariance`]); then
//! [`rank_table`] finds, for every candidate rank, the largest `ρ(r)` whose
//! expected latency meets `T̄`, and `r* = argmin_r Bound(r, ρ(r))`. The
//! weights `c_Γ`, `c_C`, `c_S` are parameters ([`BoundParams`]): they are
//! uncalibrated (docs/choices.md).

use crate::FedError;
use crate::config::{AllocationSettings, RunConfig};
use crate::engine::{ModelState, Simulation};
use crate::metrics::RoundRecord;
use crate::task::Task;
use ndarray::{Array2, Axis, concatenate};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wflora_bounds::{
    BoundModel, BoundParams, CovarianceFit, EnergyProfile, OfflineStage, RankSelection, RatioGrid,
    fit_covariance, rank_table,
};
use wflora_channel::{ComputeLoad, Network, Uplink, equalising_split};
use wflora_lora::{FineTuneMode, LoraConfig, VitConfig};
use wflora_soft::{Dims, MethodKind, budget, dropped_energy, product_singular_values};

/// The round-latency model of TSFA at the mean channel (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyModel {
    links: Vec<Uplink>,
    cpu_freq_hz: Vec<f64>,
    dims: Vec<(usize, usize)>,
    head_values: usize,
    bits_per_value: u32,
    local_steps: u32,
    batch_size: u32,
    vit: VitConfig,
    lora: LoraConfig,
    num_classes: usize,
    flops_per_cycle: f64,
}

impl LatencyModel {
    /// The model of a run: `network` gives the clients' sites (mean
    /// uplinks, clocks); `dims` is `(d, l)` of every adapted matrix (they
    /// do not depend on the rank); `head_values` the head's parameter count.
    ///
    /// # Errors
    /// [`FedError::Config`] when the run is not in LoRA mode.
    pub fn new(
        cfg: &RunConfig,
        task: &Task,
        network: &Network,
        dims: Vec<(usize, usize)>,
        head_values: usize,
    ) -> Result<Self, FedError> {
        let FineTuneMode::Lora(lora) = cfg.model.fine_tune_mode() else {
            return Err(FedError::config(
                "model.mode",
                "the TSFA latency model needs model.mode = lora",
            ));
        };
        let links = (0..network.sites().len())
            .map(|k| {
                network.mean_uplink(k).ok_or_else(|| {
                    FedError::config("federation.clients", format!("no site for client {k}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            links,
            cpu_freq_hz: network.sites().iter().map(|s| s.cpu_freq_hz).collect(),
            dims,
            head_values,
            bits_per_value: cfg.wireless.channel.bits_per_value,
            local_steps: cfg.local.steps as u32,
            batch_size: cfg.local.batch_size as u32,
            vit: task.vit.clone(),
            lora,
            num_classes: task.num_classes,
            flops_per_cycle: cfg.wireless.flops_per_cycle,
        })
    }

    /// Number of clients.
    #[must_use]
    pub fn clients(&self) -> usize {
        self.links.len()
    }

    /// The clients' uplinks at the mean channel.
    #[must_use]
    pub fn mean_links(&self) -> &[Uplink] {
        &self.links
    }

    /// CPU cycles per sample `c(r)` = FLOPs per sample at rank `rank` /
    /// `flops_per_cycle`.
    #[must_use]
    pub fn cycles_per_sample(&self, rank: usize) -> f64 {
        let mode = FineTuneMode::Lora(LoraConfig {
            rank,
            ..self.lora.clone()
        });
        self.vit.flops_per_sample(&mode, self.num_classes) / self.flops_per_cycle
    }

    /// Client `k`'s compute latency `E·batch·c(r)/f_k` at rank `rank`.
    ///
    /// # Errors
    /// [`FedError::Config`] for an unknown client; channel errors.
    pub fn compute_latency_s(&self, k: usize, rank: usize) -> Result<f64, FedError> {
        let freq = *self
            .cpu_freq_hz
            .get(k)
            .ok_or_else(|| FedError::config("federation.clients", format!("no client {k}")))?;
        let load = ComputeLoad {
            local_steps: self.local_steps,
            batch_size: self.batch_size,
            cycles_per_sample: self.cycles_per_sample(rank),
        };
        Ok(load.latency_s(freq)?)
    }

    fn head_bits(&self) -> f64 {
        self.head_values as f64 * f64::from(self.bits_per_value)
    }

    /// SOFT's budget in bits at rank `rank` and ratio `ratio` (kept
    /// components `⌈ρr⌉` of every adapted matrix, with index bits) plus the
    /// dense head: the payload `S(m)` of one client.
    ///
    /// # Errors
    /// A ratio outside `(0, 1]`.
    pub fn level_bits(&self, rank: usize, ratio: f64) -> Result<f64, FedError> {
        let mut bits = self.head_bits();
        for &(d, l) in &self.dims {
            bits += budget(Dims { d, r: rank, l }, ratio)?.total() as f64;
        }
        Ok(bits)
    }

    /// ILoRA's payload at rank `rank`: every component, no index bits, and
    /// the head.
    #[must_use]
    pub fn ilora_bits(&self, rank: usize) -> f64 {
        let values: usize = self.dims.iter().map(|&(d, l)| rank * (d + l)).sum();
        (values + self.head_values) as f64 * f64::from(self.bits_per_value)
    }

    /// `T_ILoRA` at rank `rank`: `max_k (T_cmp,k + S_ILoRA / R_k(1/K))` at the
    /// mean channel.
    ///
    /// # Errors
    /// A client that cannot send at all (zero path gain), or channel errors.
    pub fn ilora_latency_s(&self, rank: usize) -> Result<f64, FedError> {
        let bits = self.ilora_bits(rank);
        let share = 1.0 / self.links.len() as f64;
        let mut worst = 0.0_f64;
        for (k, link) in self.links.iter().enumerate() {
            let rate = link.rate_bps(share);
            if rate <= 0.0 {
                return Err(wflora_channel::ChannelError::Unreachable { client: k }.into());
            }
            worst = worst.max(self.compute_latency_s(k, rank)? + bits / rate);
        }
        Ok(worst)
    }

    /// The expected round latency `T(r, ρ)` of the offline stage: every
    /// client sends SOFT's budget at `(r, ρ)` at its mean channel, with the
    /// latency-equalising split; the common finish time.
    ///
    /// # Errors
    /// A ratio outside `(0, 1]`; an unreachable client.
    pub fn expected_latency_s(&self, rank: usize, ratio: f64) -> Result<f64, FedError> {
        let bits = self.level_bits(rank, ratio)?;
        let cmp = (0..self.links.len())
            .map(|k| self.compute_latency_s(k, rank))
            .collect::<Result<Vec<_>, _>>()?;
        let split = equalising_split(&self.links, &cmp, &vec![bits; self.links.len()])?;
        Ok(split.finish_time_s)
    }
}

/// The online stage's default penalty, pooled over a client's adapted
/// matrices: `D(m) = Σ_j Σ_{i∉top m} s_{j,i}² / Σ_j Σ_i s_{j,i}²` for
/// `m = 0..=r` (index `m`), from each matrix's `r` SOFT importances
/// (keeping the top `m` of every matrix). All-zero importances give `0`
/// everywhere (nothing can be lost), as [`dropped_energy`] does for one
/// matrix; a matrix whose squared importances overflow is left out.
///
/// # Errors
/// A negative or non-finite importance; a matrix with other than `r`
/// importances.
pub fn pooled_dropped_energy(importances: &[Vec<f64>], r: usize) -> Result<Vec<f64>, FedError> {
    let mut dropped = vec![0.0f64; r + 1];
    let mut total = 0.0f64;
    for (j, s) in importances.iter().enumerate() {
        if s.len() != r {
            return Err(FedError::config(
                "importances",
                format!("matrix {j} has {} importances, expected r = {r}", s.len()),
            ));
        }
        let shares = dropped_energy(s)?;
        let energy: f64 = s.iter().map(|x| x * x).sum();
        if energy > 0.0 && energy.is_finite() {
            for (acc, d) in dropped.iter_mut().zip(shares) {
                *acc += d * energy;
            }
            total += energy;
        }
    }
    if total > 0.0 {
        dropped.iter_mut().for_each(|d| *d /= total);
    }
    Ok(dropped)
}

/// The optional penalty: the bound's `(1−ρ)/ρ²` at `ρ = m/r`, divided by
/// its largest value `r(r−1)` (at `m = 1`) so that it lies in `[0, 1]`;
/// index `m = 0..=r`, with `D(0) = 1` (sitting out) and all zeros after it
/// when `r = 1`.
#[must_use]
pub fn bound_factor_penalty(r: usize) -> Vec<f64> {
    let norm = (r * r.saturating_sub(1)) as f64;
    (0..=r)
        .map(|m| {
            if m == 0 {
                wflora_alloc::SIT_OUT_PENALTY
            } else if norm == 0.0 {
                0.0
            } else {
                let rho = m as f64 / r as f64;
                (1.0 - rho) / (rho * rho) / norm
            }
        })
        .collect()
}

/// Settings of the offline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSettings {
    /// Candidate ranks, strictly increasing (e.g. `{1, 2, 4, …, r_max}`,
    /// [`wflora_bounds::candidate_ranks`]).
    pub candidates: Vec<usize>,
    /// The high rank of the reference pilot whose update spectrum gives `Γ`.
    pub reference_rank: usize,
    /// Pilot ranks at which the covariance is measured (the reference rank
    /// is added when missing; at least two distinct ranks give a slope).
    pub covariance_ranks: Vec<usize>,
    /// Rounds of every pilot run.
    pub pilot_rounds: usize,
    /// `T̄ / T_ILoRA` (as the online stage's `budget_rel`).
    pub budget_rel: f64,
    /// The rank at which `T_ILoRA` is evaluated (as the online stage's
    /// `budget_rank`; default the base configuration's `model.rank`).
    #[serde(default)]
    pub budget_rank: Option<usize>,
    /// The bound's constants, the weights `c_Γ`, `c_C`, `c_S` included.
    pub bound: BoundParams,
    /// Ratios considered at each rank (default: whole components `m/r`).
    #[serde(default)]
    pub ratio_grid: RatioGrid,
}

impl OfflineSettings {
    /// The ranks of the pilot runs, increasing: the covariance ranks and
    /// the reference rank, without repeats.
    #[must_use]
    pub fn pilot_ranks(&self) -> Vec<usize> {
        let mut ranks = self.covariance_ranks.clone();
        ranks.push(self.reference_rank);
        ranks.sort_unstable();
        ranks.dedup();
        ranks
    }

    /// Rounds of all pilot runs together.
    #[must_use]
    pub fn pilot_rounds_total(&self) -> usize {
        self.pilot_ranks().len() * self.pilot_rounds
    }

    /// Checks the settings, naming the field (`offline.…`).
    ///
    /// # Errors
    /// [`FedError::Config`].
    pub fn validate(&self) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| {
            Err(FedError::config(&format!("offline.{field}"), reason))
        };
        if self.candidates.is_empty() {
            return bad("candidates", "at least one rank is needed".into());
        }
        if self.reference_rank == 0 {
            return bad("reference_rank", "must be at least 1".into());
        }
        if self.covariance_ranks.contains(&0) {
            return bad("covariance_ranks", "ranks must be at least 1".into());
        }
        if self.pilot_rounds == 0 {
            return bad("pilot_rounds", "must be at least 1".into());
        }
        if !(self.budget_rel.is_finite() && self.budget_rel > 0.0) {
            return bad(
                "budget_rel",
                format!("{} must be finite and > 0", self.budget_rel),
            );
        }
        if self.budget_rank == Some(0) {
            return bad("budget_rank", "must be at least 1".into());
        }
        Ok(())
    }
}

/// One pilot run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PilotRun {
    /// Its LoRA rank.
    pub rank: usize,
    /// Mean `covariance_rel` over its rounds and adapted matrices.
    pub mean_covariance: f64,
    /// Its round records.
    pub records: Vec<RoundRecord>,
}

/// The offline stage's answer.
#[derive(Debug, Clone, Serialize)]
pub struct OfflinePlan {
    /// `r*`.
    pub rank: usize,
    /// `ρ(r*)`.
    pub ratio: f64,
    /// `T̄ / T_ILoRA`.
    pub budget_rel: f64,
    /// The rank at which `T_ILoRA` was evaluated.
    pub budget_rank: usize,
    /// `T_ILoRA` in seconds (at the budget rank).
    pub ilora_latency_s: f64,
    /// `T̄ = budget_rel · T_ILoRA` in seconds.
    pub budget_s: f64,
    /// The selection with the whole bound table (fig2's data).
    pub selection: RankSelection,
    /// `Γ(r)` from the reference pilot.
    pub gamma: EnergyProfile,
    /// Singular values of every adapted matrix's aggregated reference update.
    pub reference_spectrum: Vec<Vec<f64>>,
    /// The fit of `C(r)` to the pilots' mean covariance.
    pub covariance: CovarianceFit,
    /// The pilot runs, ranks increasing.
    pub pilots: Vec<PilotRun>,
}

impl OfflinePlan {
    /// Applies the plan to a run: `model.rank = r*`, `compression.rho =
    /// ρ(r*)` (what the fixed-ratio "offline only" variant sends), and, for
    /// the TSFA policies, `budget_rel` and `budget_rank` set to the plan's
    /// so that the run's `T̄` is the budget the plan was made for.
    pub fn apply(&self, cfg: &mut RunConfig) {
        cfg.model.rank = self.rank;
        cfg.compression.rho = self.ratio;
        match &mut cfg.wireless.allocation {
            AllocationSettings::DriftPlusPenalty {
                budget_rel,
                budget_rank,
                ..
            }
            | AllocationSettings::Myopic {
                budget_rel,
                budget_rank,
                ..
            } => {
                *budget_rel = self.budget_rel;
                *budget_rank = Some(self.budget_rank);
            }
            AllocationSettings::EqualBandwidth | AllocationSettings::Equalising => {}
        }
    }
}

/// Singular values of the aggregated update `B¹A¹ − B⁰A⁰` of every adapted
/// matrix between two states (the `(α/r)` scale is left out: `Γ` is scale
/// free). Computed without the dense product: the stacked factors
/// `[B¹, −B⁰]·[A¹; A⁰]` (rank at most `2r`) through
/// [`product_singular_values`].
///
/// # Errors
/// [`FedError::Config`] when the states have different matrices; SVD errors.
pub fn update_spectrum(before: &ModelState, after: &ModelState) -> Result<Vec<Vec<f64>>, FedError> {
    if before.factors.len() != after.factors.len() {
        return Err(FedError::config(
            "factors",
            "the two states adapt different numbers of matrices",
        ));
    }
    before
        .factors
        .iter()
        .zip(&after.factors)
        .map(|(f0, f1)| {
            if f0.b.dim() != f1.b.dim() || f0.a.dim() != f1.a.dim() {
                return Err(FedError::config(
                    "factors",
                    format!("matrix {} has different shapes in the two states", f1.name),
                ));
            }
            let b: Array2<f32> = concatenate(Axis(1), &[f1.b.view(), (-&f0.b).view()])
                .map_err(|e| FedError::config("factors", e.to_string()))?;
            let a: Array2<f32> = concatenate(Axis(0), &[f1.a.view(), f0.a.view()])
                .map_err(|e| FedError::config("factors", e.to_string()))?;
            let mut sv = product_singular_values(&b, &a)?;
            // At most min(d, l) singular values are meaningful.
            sv.truncate(b.nrows().min(a.ncols()).min(sv.len()));
            Ok(sv)
        })
        .collect()
}

/// The pilot configuration at `rank`: ILoRA, latency-equalising shares,
/// `rounds` rounds, evaluated once at the end.
#[must_use]
pub fn pilot_config(base: &RunConfig, rank: usize, rounds: usize) -> RunConfig {
    let mut c = base.clone();
    c.name = format!("{}-pilot-r{rank}", base.name);
    c.model.rank = rank;
    c.compression.method = MethodKind::ILora;
    c.compression.rho = 1.0;
    c.wireless.allocation = AllocationSettings::Equalising;
    c.federation.rounds = rounds;
    c.federation.eval_every = rounds;
    c
}

/// TSFA's offline stage: pilots, `Γ`, `C`, the bound table and `r*`
/// (docs/method.md §4).
///
/// # Errors
/// Invalid settings or configuration, a pilot's error, a fit or bound error,
/// [`wflora_bounds::BoundError::NoFeasibleRank`] when no candidate meets
/// the budget.
pub fn plan_offline(
    base: &RunConfig,
    task: Arc<Task>,
    settings: &OfflineSettings,
) -> Result<OfflinePlan, FedError> {
    settings.validate()?;
    let ranks = settings.pilot_ranks();
    let mut pilots = Vec::with_capacity(ranks.len());
    let mut reference_spectrum = Vec::new();
    let mut latency = None;
    for &rank in &ranks {
        let mut sim = Simulation::new(
            pilot_config(base, rank, settings.pilot_rounds),
            task.clone(),
        )?;
        let before = sim.global().clone();
        let mut records = Vec::with_capacity(settings.pilot_rounds);
        while !sim.finished() {
            records.push(sim.step()?);
        }
        if rank == settings.reference_rank {
            reference_spectrum = update_spectrum(&before, sim.global())?;
        }
        let covs: Vec<f64> = records
            .iter()
            .flat_map(|r| r.covariance_rel.iter().copied())
            .collect();
        let mean_covariance = if covs.is_empty() {
            0.0
        } else {
            covs.iter().sum::<f64>() / covs.len() as f64
        };
        if latency.is_none() {
            latency = sim.latency_model().cloned();
        }
        pilots.push(PilotRun {
            rank,
            mean_covariance,
            records,
        });
    }
    let latency = latency.ok_or_else(|| {
        FedError::config("model.mode", "the offline stage needs model.mode = lora")
    })?;
    let gamma = EnergyProfile::from_layers(&reference_spectrum)?;
    let pilot_ranks: Vec<usize> = pilots.iter().map(|p| p.rank).collect();
    let pilot_covs: Vec<f64> = pilots.iter().map(|p| p.mean_covariance).collect();
    let covariance = fit_covariance(&pilot_ranks, &pilot_covs)?;
    let budget_rank = settings.budget_rank.unwrap_or(base.model.rank);
    let ilora_latency_s = latency.ilora_latency_s(budget_rank)?;
    let budget_s = settings.budget_rel * ilora_latency_s;
    let model = BoundModel::new(settings.bound, gamma.clone(), covariance.model)?;
    let selection = select_offline(
        &model,
        &latency,
        budget_s,
        &settings.candidates,
        settings.ratio_grid,
    )?;
    Ok(OfflinePlan {
        rank: selection.rank,
        ratio: selection.ratio,
        budget_rel: settings.budget_rel,
        budget_rank,
        ilora_latency_s,
        budget_s,
        selection,
        gamma,
        reference_spectrum,
        covariance,
        pilots,
    })
}

/// The selection step alone: [`rank_table`] with the expected latency of
/// `latency` (`+∞` where it cannot be computed, e.g. an unreachable client),
/// then `r* = argmin`.
///
/// # Errors
/// As [`wflora_bounds::select_rank`].
pub fn select_offline(
    model: &BoundModel,
    latency: &LatencyModel,
    budget_s: f64,
    candidates: &[usize],
    ratio_grid: RatioGrid,
) -> Result<RankSelection, FedError> {
    let stage = OfflineStage {
        budget_s,
        ratio_grid,
    };
    let t = |r: usize, rho: f64| latency.expected_latency_s(r, rho).unwrap_or(f64::INFINITY);
    Ok(rank_table(model, &stage, candidates, &t)?.select()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_dropped_energy_by_hand() {
        // Matrix 1: s = (3, 1), energies 9, 1; matrix 2: s = (0, 2), energies 0, 4.
        // Total 14; keeping the top 1 of each drops 1 (matrix 1) + 0 (matrix 2).
        let d = pooled_dropped_energy(&[vec![3.0, 1.0], vec![0.0, 2.0]], 2).unwrap();
        assert_eq!(d, vec![1.0, 1.0 / 14.0, 0.0]);
        assert_eq!(
            pooled_dropped_energy(&[vec![0.0, 0.0]], 2).unwrap(),
            vec![0.0; 3]
        );
        assert!(pooled_dropped_energy(&[vec![1.0]], 2).is_err());
        assert!(pooled_dropped_energy(&[vec![1.0, f64::NAN]], 2).is_err());
    }

    #[test]
    fn bound_factor_penalty_by_hand() {
        // r = 4: (1−ρ)/ρ² at ρ = 1/4, 1/2, 3/4, 1 is 12, 2, 4/9, 0; divided by 12.
        let d = bound_factor_penalty(4);
        let want = [1.0, 1.0, 2.0 / 12.0, 4.0 / 9.0 / 12.0, 0.0];
        for (g, w) in d.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{d:?}");
        }
        assert_eq!(bound_factor_penalty(1), vec![1.0, 0.0]);
    }
}
