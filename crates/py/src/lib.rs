//! # wflora-py: the wflora crates as a Python package
//!
//! The extension module `wflora._core` of the Python package `wflora`
//! (`pip install ./crates/py`, built by maturin with this crate's `python`
//! feature). It is a thin layer: every computation is a call into a wflora
//! crate, arrays cross as numpy `float32`/`float64` arrays, and every error
//! becomes a `wflora.WfloraError` (a `ValueError`) whose message is the one
//! the `wflora` CLI prints. Nothing panics across the boundary.
//!
//! What it exposes:
//! - SOFT and the baseline sparsifiers (`compress`, `aggregate`,
//!   `importances`, `components_for_ratio`, `budget`), on one client's
//!   factors with its residual;
//! - the uplink (`Uplink`, `Network`, `equalising_split`);
//! - the allocator on the instance format of `docs/alloc-instance.md`
//!   (`solve_instance_json`);
//! - the bound's offline rank choice (`select_rank`);
//! - the federated protocol's roles (`Task`, `Server`, `Client`), which
//!   exchange the protocol's bytes (`wflora_fed::protocol`).
//!
//! What it deliberately knows nothing about: Flower, PyTorch, or any other
//! Python framework; a driver moves the bytes.
//!
//! Without the `python` feature (as in `cargo test --workspace`) the crate is
//! empty, so no Python library is needed to build the workspace. Its tests
//! are in Python (`crates/py/tests`, run by `.ci/run`).
//!
//! ```text
//! >>> import numpy as np, wflora
//! >>> b, a = np.eye(3, 2, dtype=np.float32), np.eye(2, 2, dtype=np.float32)
//! >>> msg, res = wflora.compress("soft", b, a, 0.5 * b, 0.1 * a, m=1)
//! >>> msg.bits
//! 161
//! ```

#[cfg(feature = "python")]
mod python;
