//! # wflora-fed
//!
//! The federated engine: it composes the model (`wflora-lora`), the
//! sparsifiers (`wflora-soft`), the uplink (`wflora-channel`) and the
//! allocator (`wflora-alloc`) into synchronous rounds. This first part holds
//! the pieces that know none of those crates: the covariance metric of
//! separate aggregation and the checkpoint container.

pub mod checkpoint;
pub mod covariance;
