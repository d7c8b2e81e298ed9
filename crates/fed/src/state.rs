//! The plain state the roles and drivers share as values: a model state,
//! the phase timings, the applied allocation, and their checkpoint tensors.

use crate::FedError;
use crate::checkpoint::{Checkpoint, Tensor};
use ndarray::Array2;
use std::path::Path;
use wflora_alloc::Allocation;
use wflora_lora::{AdapterFactors, HeadParams};

/// The global model state the server broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    /// LoRA factors per adapted matrix (empty in head-only mode).
    pub factors: Vec<AdapterFactors>,
    /// The classifier head.
    pub head: HeadParams,
}

impl ModelState {
    /// The first part of the state that holds a NaN or an infinity: an
    /// adapted matrix (by name) or the head; `None` when all is finite.
    #[must_use]
    pub fn non_finite(&self) -> Option<NonFinite<'_>> {
        self.factors
            .iter()
            .find(|f| !f.b.iter().chain(f.a.iter()).all(|v| v.is_finite()))
            .map(|f| NonFinite::Factor(&f.name))
            .or_else(|| (!head_is_finite(&self.head)).then_some(NonFinite::Head))
    }
}

/// Where [`ModelState::non_finite`] found a NaN or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinite<'a> {
    /// The adapted matrix of this name.
    Factor(&'a str),
    /// The head (weight or bias).
    Head,
}

/// Whether every weight and bias of a head is finite.
pub(crate) fn head_is_finite(h: &HeadParams) -> bool {
    h.weight.iter().chain(&h.bias).all(|v| v.is_finite())
}

/// Wall-clock seconds this process spent in each phase of its rounds: a
/// measurement for profiling (`docs/performance.md`), not part of the
/// simulation (the metrics use simulated time only). Starts at zero when a
/// simulation is built or restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PhaseTimes {
    /// Local training of the sampled clients (forward, backward, optimiser),
    /// factor deltas included.
    pub train_s: f64,
    /// Building this round's allocation problem and solving it.
    pub allocate_s: f64,
    /// Compression of every sent update (sparsifiers, residuals, bit counts).
    pub compress_s: f64,
    /// The covariance metric of separate aggregation.
    pub covariance_s: f64,
    /// Factor-wise aggregation of the messages and the head.
    pub aggregate_s: f64,
    /// Evaluation of the global model on the test split.
    pub evaluate_s: f64,
    /// Rounds timed.
    pub rounds: usize,
}

impl PhaseTimes {
    /// The sum of the phases.
    #[must_use]
    pub fn total_s(&self) -> f64 {
        self.train_s
            + self.allocate_s
            + self.compress_s
            + self.covariance_s
            + self.aggregate_s
            + self.evaluate_s
    }

    /// Adds another run's times.
    pub fn add(&mut self, o: &Self) {
        self.train_s += o.train_s;
        self.allocate_s += o.allocate_s;
        self.compress_s += o.compress_s;
        self.covariance_s += o.covariance_s;
        self.aggregate_s += o.aggregate_s;
        self.evaluate_s += o.evaluate_s;
        self.rounds += o.rounds;
    }
}

/// One round's allocation as the engine applied it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundAllocation {
    /// The sampled clients (sorted), in the order of the allocation's vectors.
    pub clients: Vec<usize>,
    /// The allocator's answer (kept components, shares, `τ`, penalty).
    pub allocation: Allocation,
    /// Each sampled client's finish time `T_cmp + S/R(β)` from the bits it
    /// actually sent (`None`: it sat out).
    pub finish_s: Vec<Option<f64>>,
    /// The queue backlog `Q^t` the round was allocated with (0 without a queue).
    pub queue_before_s: f64,
}

/// A matrix as a checkpoint tensor.
pub(crate) fn mat(m: &Array2<f32>) -> Tensor {
    Tensor {
        shape: vec![m.nrows(), m.ncols()],
        data: m.iter().copied().collect(),
    }
}

/// A state's factors and head as checkpoint tensors under `prefix`.
pub(crate) fn put_state(ck: &mut Checkpoint, prefix: &str, s: &ModelState) {
    for f in &s.factors {
        ck.tensors
            .insert(format!("{prefix}{}.B", f.name), mat(&f.b));
        ck.tensors
            .insert(format!("{prefix}{}.A", f.name), mat(&f.a));
    }
    ck.tensors
        .insert(format!("{prefix}head.weight"), mat(&s.head.weight));
    ck.tensors.insert(
        format!("{prefix}head.bias"),
        Tensor {
            shape: vec![s.head.bias.len()],
            data: s.head.bias.clone(),
        },
    );
}

/// Reads a state written by [`put_state`] into `s` (whose shapes it checks).
pub(crate) fn take_state(
    ck: &mut Checkpoint,
    prefix: &str,
    s: &mut ModelState,
    path: &Path,
) -> Result<(), FedError> {
    for f in &mut s.factors {
        f.b = take_mat(ck, &format!("{prefix}{}.B", f.name), f.b.dim(), path)?;
        f.a = take_mat(ck, &format!("{prefix}{}.A", f.name), f.a.dim(), path)?;
    }
    s.head.weight = take_mat(
        ck,
        &format!("{prefix}head.weight"),
        s.head.weight.dim(),
        path,
    )?;
    s.head.bias = ck.take(&format!("{prefix}head.bias"), &[s.head.bias.len()], path)?;
    Ok(())
}

pub(crate) fn take_mat(
    ck: &mut Checkpoint,
    name: &str,
    dim: (usize, usize),
    path: &Path,
) -> Result<Array2<f32>, FedError> {
    let data = ck.take(name, &[dim.0, dim.1], path)?;
    Array2::from_shape_vec(dim, data).map_err(|e| FedError::Resume {
        path: path.to_path_buf(),
        reason: format!("tensor {name}: {e}"),
    })
}

/// A state written by [`put_state`] under `prefix`, its shapes read from
/// the tensors themselves (the matrices named `names`, in that order).
pub(crate) fn read_state(
    ck: &Checkpoint,
    prefix: &str,
    names: &[String],
    path: &Path,
) -> Result<ModelState, FedError> {
    let get = |name: String| read_mat(ck, &name, path);
    let factors = names
        .iter()
        .map(|n| {
            Ok(AdapterFactors {
                name: n.clone(),
                b: get(format!("{prefix}{n}.B"))?,
                a: get(format!("{prefix}{n}.A"))?,
            })
        })
        .collect::<Result<Vec<_>, FedError>>()?;
    let weight = get(format!("{prefix}head.weight"))?;
    let bias_name = format!("{prefix}head.bias");
    let bias = ck
        .tensors
        .get(&bias_name)
        .filter(|t| t.shape == [weight.nrows()])
        .map(|t| t.data.clone())
        .ok_or_else(|| FedError::Resume {
            path: path.to_path_buf(),
            reason: format!("tensor {bias_name} is missing or misshaped"),
        })?;
    Ok(ModelState {
        factors,
        head: HeadParams { weight, bias },
    })
}

/// A matrix of a checkpoint, of whatever shape it was saved with.
pub(crate) fn read_mat(ck: &Checkpoint, name: &str, path: &Path) -> Result<Array2<f32>, FedError> {
    let t = ck.tensors.get(name).ok_or_else(|| FedError::Resume {
        path: path.to_path_buf(),
        reason: format!("tensor {name} is missing"),
    })?;
    let [r, c] = t.shape[..] else {
        return Err(FedError::Resume {
            path: path.to_path_buf(),
            reason: format!("tensor {name} has shape {:?}, expected a matrix", t.shape),
        });
    };
    Array2::from_shape_vec((r, c), t.data.clone()).map_err(|e| FedError::Resume {
        path: path.to_path_buf(),
        reason: format!("tensor {name}: {e}"),
    })
}
