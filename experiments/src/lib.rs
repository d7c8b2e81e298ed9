//! # wflora-experiments
//!
//! The `wflora` binary and the pieces it is made of. This crate only
//! configures runs, executes them through the library crates, checks the
//! claims computed from their data, and plots; no algorithm lives here
//! (architecture invariant, see `docs/architecture.md`).

pub mod assets;
pub mod cli;
pub mod figures;
pub mod plot;
pub mod process;
pub mod progress;
pub mod report;
