//! # wflora
//!
//! Facade of the wflora workspace: wireless federated LoRA fine-tuning after
//! Kim & Choi, arXiv:2505.00333 (SOFT and TSFA). Each part is its own crate,
//! usable alone; this crate only re-exports them so that cross-crate tests and
//! users who want everything have one name to depend on.
