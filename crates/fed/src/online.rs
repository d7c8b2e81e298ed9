//! TSFA's online stage (docs/method.md §5) below the engine: the latency
//! model both stages share, and the penalties `D_k(m)` of a client's menu.
//!
//! **Latency model** ([`LatencyModel`]): every client at its *mean* channel
//! (`|h|² = 1`, [`Network::mean_uplink`]), compute latency
//! `E·batch·c(r)/f_k` with `c(r)` from the model's FLOPs at rank `r`, and
//! SOFT's bit budget for `m` kept components of every adapted matrix
//! plus the dense head (a ratio `ρ` is turned into `m` once, by
//! [`wflora_soft::components_for_ratio`]). Two numbers come out of it:
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

use crate::FedError;
use crate::config::RunConfig;
use crate::task::Task;
use wflora_channel::{ComputeLoad, Network, Uplink, equalising_split};
use wflora_lora::{FineTuneMode, LoraConfig, VitConfig};
use wflora_soft::{Dims, budget, components_for_ratio, dropped_energy};

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

    /// SOFT's budget in bits at rank `rank` with `m` kept components of
    /// every adapted matrix (with index bits) plus the dense head: the
    /// payload `S(m)` of one client.
    ///
    /// # Errors
    /// `m` outside `1..=rank`.
    pub fn level_bits(&self, rank: usize, m: usize) -> Result<f64, FedError> {
        let mut bits = self.head_bits();
        for &(d, l) in &self.dims {
            bits += budget(Dims { d, r: rank, l }, m)?.total() as f64;
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
    /// client sends SOFT's budget at rank `r` with the `m` components of
    /// ratio `ρ` ([`wflora_soft::components_for_ratio`]) at its mean
    /// channel, with the latency-equalising split; the common finish time.
    ///
    /// # Errors
    /// A ratio outside `(0, 1]` or a rank of 0; an unreachable client.
    pub fn expected_latency_s(&self, rank: usize, ratio: f64) -> Result<f64, FedError> {
        let bits = self.level_bits(rank, components_for_ratio(ratio, rank)?)?;
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
