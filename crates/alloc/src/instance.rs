//! One round as a self-contained JSON document, and its solution.
//!
//! The format is documented in `docs/alloc-instance.md`; an example lives in
//! `crates/alloc/examples/instance.json`.

use serde::{Deserialize, Serialize};
use wflora_channel::Uplink;

use crate::error::{AllocError, non_negative, positive};
use crate::policy::{Allocation, Policy, SearchOptions, solve_round};
use crate::problem::{ClientRound, Level, RoundProblem};

/// One client of an [`Instance`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceClient {
    /// Transmit power `P_k` in watts.
    pub tx_power_w: f64,
    /// Path gain (linear, e.g. `10^(−PL_dB/10)`).
    pub path_gain: f64,
    /// This round's fading power `|h|²` (linear).
    pub fading: f64,
    /// Computation latency `T_k^cmp` in seconds.
    pub compute_latency_s: f64,
    /// Aggregation weight `p_k`.
    pub weight: f64,
    /// Levels offered (sitting out is implicit, penalty 1).
    pub levels: Vec<Level>,
}

/// One round's allocation problem, self-contained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Total bandwidth `W_tot` in Hz.
    pub bandwidth_hz: f64,
    /// Noise power spectral density `N0` in W/Hz.
    pub noise_psd_w_per_hz: f64,
    /// Queue backlog `Q^t` (seconds).
    pub queue: f64,
    /// Penalty weight `V`.
    pub v: f64,
    /// Allocation policy (default: drift-plus-penalty, per-client, hull).
    #[serde(default)]
    pub policy: Policy,
    /// Search tolerances (defaults if absent).
    #[serde(default)]
    pub options: SearchOptions,
    /// The clients.
    pub clients: Vec<InstanceClient>,
}

/// The solution of an [`Instance`]: the allocation plus the policy used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    /// The policy that produced it.
    pub policy: Policy,
    /// The allocation (`components`, `shares`, `tau_s`, `objective`, `penalty`, …).
    #[serde(flatten)]
    pub allocation: Allocation,
}

impl Instance {
    /// Parses an instance from JSON text.
    ///
    /// # Errors
    /// [`AllocError::Json`] with serde's message (it names the field).
    pub fn from_json(text: &str) -> Result<Self, AllocError> {
        serde_json::from_str(text).map_err(|e| AllocError::Json(e.to_string()))
    }

    /// Builds the round problem over [`Uplink`]s (gain = path gain × fading).
    ///
    /// # Errors
    /// [`AllocError::InvalidField`] naming the field for invalid input,
    /// including a non-finite effective gain `path_gain × fading` (named
    /// `clients[k].fading`) and a non-finite SNR or rate cap (named
    /// `clients[k].tx_power_w`).
    pub fn to_problem(&self) -> Result<RoundProblem<Uplink>, AllocError> {
        positive(|| "bandwidth_hz".into(), self.bandwidth_hz)?;
        positive(|| "noise_psd_w_per_hz".into(), self.noise_psd_w_per_hz)?;
        let mut clients = Vec::with_capacity(self.clients.len());
        for (k, c) in self.clients.iter().enumerate() {
            non_negative(|| format!("clients[{k}].tx_power_w"), c.tx_power_w)?;
            non_negative(|| format!("clients[{k}].path_gain"), c.path_gain)?;
            non_negative(|| format!("clients[{k}].fading"), c.fading)?;
            let channel_gain = c.path_gain * c.fading;
            if !channel_gain.is_finite() {
                return Err(AllocError::InvalidField {
                    field: format!("clients[{k}].fading"),
                    value: c.fading,
                    expected: "a finite number >= 0 whose product with path_gain is finite",
                });
            }
            let link = Uplink {
                tx_power_w: c.tx_power_w,
                channel_gain,
                bandwidth_hz: self.bandwidth_hz,
                noise_psd_w_per_hz: self.noise_psd_w_per_hz,
            };
            // The SNR over the band and the rate cap must be finite too
            // (an infinite one would let any payload through in no time).
            if !(link.snr_full_band().is_finite() && link.rate_cap_bps().is_finite()) {
                return Err(AllocError::InvalidField {
                    field: format!("clients[{k}].tx_power_w"),
                    value: c.tx_power_w,
                    expected: "a finite number >= 0 with a finite SNR P·g/(W·N0) and rate cap P·g/(N0·ln 2)",
                });
            }
            clients.push(ClientRound {
                link,
                compute_latency_s: c.compute_latency_s,
                weight: c.weight,
                levels: c.levels.clone(),
            });
        }
        let p = RoundProblem {
            clients,
            v: self.v,
            queue: self.queue,
        };
        p.validate()?;
        Ok(p)
    }

    /// Solves the instance with its own policy and options.
    ///
    /// # Errors
    /// As [`Instance::to_problem`] and [`solve_round`].
    pub fn solve(&self) -> Result<Solution, AllocError> {
        let p = self.to_problem()?;
        let allocation = solve_round(&p, &self.policy, &self.options)?;
        Ok(Solution {
            policy: self.policy,
            allocation,
        })
    }
}

/// Parses an instance from JSON and solves it.
///
/// # Errors
/// As [`Instance::from_json`] and [`Instance::solve`].
pub fn solve_instance_json(text: &str) -> Result<Solution, AllocError> {
    Instance::from_json(text)?.solve()
}
