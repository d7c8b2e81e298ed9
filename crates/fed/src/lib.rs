//! # wflora-fed
//!
//! The federated engine: a synchronous simulator of wireless federated LoRA
//! fine-tuning that composes the model (`wflora-lora`), the data
//! (`wflora-data`), the sparsifiers (`wflora-soft`), the uplink
//! (`wflora-channel`) and the allocator (`wflora-alloc`).
//!
//! A round is a protocol between two roles that share no mutable state
//! ([`protocol`]): the [`Server`] holds the global factors and head, the
//! channel, the allocation policy with TSFA's virtual queue, aggregation,
//! the covariance metric of separate aggregation ([`covariance()`]),
//! simulated time and the metrics; each [`Client`] holds its data shard, its
//! error-feedback residuals and its local training, and compresses with the
//! kept components it is assigned. They exchange versioned byte messages
//! ([`ServerMessage`], [`ClientMessage`]). [`Simulation`] is the in-process
//! driver of both (its [`Simulation::step`] runs one round); other drivers
//! (threads, processes, Flower) move the same messages as bytes and get the
//! same results. Simulated time comes from the latency model, never from a
//! clock, so runs are reproducible; metrics are JSON lines, and checkpoints
//! make a killed run resumable with identical results.
//!
//! TSFA (docs/method.md §4–§5): the online stage is an allocation policy
//! of the server ([`AllocationSettings::DriftPlusPenalty`], with the virtual
//! latency queue in its state and checkpoints; [`AllocationSettings::Myopic`]
//! is its single-stage baseline) over the latency model of [`online`]; the
//! offline stage ([`tsfa`]) runs short pilots on the simulator to fit the
//! bound's `Γ(r)` and `C(r)` and picks the rank `r*`.
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
mod client;
pub mod config;
pub mod covariance;
mod engine;
mod error;
mod eval;
pub mod lock;
pub mod metrics;
pub mod online;
pub mod protocol;
pub mod run;
pub mod seed;
mod server;
mod state;
pub mod task;
pub mod tsfa;

pub use client::{Client, client_shards};
pub use config::{
    AllocationSettings, CompressionSettings, FederationSettings, LocalSettings, ModelSettings,
    PenaltyKind, RunConfig, TrainMode, WirelessSettings,
};
pub use covariance::{Covariance, covariance};
pub use engine::Simulation;
pub use error::FedError;
pub use lock::DirLock;
pub use metrics::RoundRecord;
pub use online::LatencyModel;
pub use protocol::{ClientMessage, ServerMessage, WireError};
pub use run::{RunDir, Start, run_to_end, run_until};
pub use server::Server;
pub use state::{ModelState, NonFinite, PhaseTimes, RoundAllocation};
pub use task::{DatasetSource, PretrainedWeights, Task, TaskConfig, WeightsFormat};
pub use tsfa::{OfflinePlan, OfflineSettings, PilotRun, plan_offline};

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
