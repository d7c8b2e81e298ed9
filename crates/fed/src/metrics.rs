//! Per-round metrics, written as JSON lines.

use serde::{Deserialize, Serialize};

/// What happened in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Rounds completed (1 after the first round).
    pub round: usize,
    /// Clients whose update reached the server.
    pub participants: usize,
    /// Test accuracy of the global model after the round (evaluation rounds only).
    pub accuracy: Option<f64>,
    /// Test loss (evaluation rounds only).
    pub test_loss: Option<f64>,
    /// Mean local training loss (task loss, without the regulariser).
    pub train_loss: f64,
    /// Bits uploaded this round, all clients, factors and head.
    pub bits: f64,
    /// Values uploaded this round.
    pub values: u64,
    /// Index bits uploaded this round.
    pub index_bits: u64,
    /// Simulated round latency `T^t` in seconds.
    pub latency_s: f64,
    /// Simulated wall-clock time since the start, seconds.
    pub sim_time_s: f64,
    /// Running average of the round latency.
    pub mean_latency_s: f64,
    /// Virtual queue `Q` after the round (TSFA), seconds.
    pub queue_s: f64,
    /// Energy spent by the clients this round, joules.
    pub energy_j: f64,
    /// Kept components per sampled client (0: sat out, or absent from the
    /// allocation).
    pub components: Vec<u32>,
    /// Bandwidth share per sampled client.
    pub shares: Vec<f64>,
    /// Relative covariance norm of separate aggregation, per adapted matrix.
    pub covariance_rel: Vec<f64>,
    /// Sampled clients whose train report did not reach the server (not
    /// allocated; written only when there are some).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_reports: Vec<usize>,
    /// Allocated clients whose update did not reach the server (they sat
    /// the round out; written only when there are some).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_updates: Vec<usize>,
}
