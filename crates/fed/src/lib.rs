//! # wflora-fed
//!
//! The federated engine: a synchronous simulator of wireless federated LoRA
//! fine-tuning that composes the model (`wflora-lora`), the data
//! (`wflora-data`), the sparsifiers (`wflora-soft`), the uplink
//! (`wflora-channel`) and the allocator (`wflora-alloc`).
//!
//! What it owns: the round loop ([`Simulation::step`]), client sampling,
//! factor-wise aggregation and the head, the covariance metric of separate
//! aggregation ([`covariance()`]), simulated time (from the latency model,
//! never measured, so runs are reproducible), metrics as JSON lines, and
//! checkpoints that make a killed run resumable with identical results.
//!
//! TSFA (docs/method.md §4–§5) lives here too, because it needs the engine's
//! measurements: the online stage is an allocation policy
//! ([`AllocationSettings::DriftPlusPenalty`], with the virtual latency queue
//! in the simulation's state and checkpoints; [`AllocationSettings::Myopic`]
//! is its single-stage baseline), and the offline stage ([`tsfa`]) runs
//! short pilots to fit the bound's `Γ(r)` and `C(r)` and picks the rank `r*`.
//!
//! What it deliberately does not know: how a sparsifier ranks components,
//! how a rate is computed, how the knapsack is solved, how a ViT is built.
//! It sees each through the other crate's public functions and types only.
//!
//! Determinism: every random choice draws from a stream seeded by
//! `(run seed, stream, client, round)` ([`seed::derive`]), so results do not
//! depend on thread count or on where a run was resumed.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wflora_fed::{RunConfig, Simulation, Task};
//! # fn main() -> Result<(), wflora_fed::FedError> {
//! let cfg = RunConfig::embedded_default();
//! let task = Arc::new(Task::build(&cfg.task)?); // pre-trains (or loads) the backbone
//! let mut sim = Simulation::new(cfg, task)?;
//! while !sim.finished() {
//!     let rec = sim.step()?;
//!     println!("round {} accuracy {:?}", rec.round, rec.accuracy);
//! }
//! # Ok(())
//! # }
//! ```

pub mod centralized;
pub mod checkpoint;
pub mod config;
pub mod covariance;
mod engine;
mod error;
pub mod lock;
pub mod metrics;
pub mod run;
pub mod seed;
pub mod task;
pub mod tsfa;

pub use config::{
    AllocationSettings, CompressionSettings, FederationSettings, LocalSettings, ModelSettings,
    PenaltyKind, RunConfig, TrainMode, WirelessSettings,
};
pub use covariance::{Covariance, covariance};
pub use engine::{ModelState, PhaseTimes, RoundAllocation, Simulation};
pub use error::FedError;
pub use lock::DirLock;
pub use metrics::RoundRecord;
pub use run::{RunDir, Start, run_to_end, run_until};
pub use task::{DatasetSource, PretrainedWeights, Task, TaskConfig, WeightsFormat};
pub use tsfa::{LatencyModel, OfflinePlan, OfflineSettings, PilotRun, plan_offline};

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
