//! The model a state describes, and its evaluation on the test split: what
//! the server does with the global state and a local-only client with its
//! own.

use crate::FedError;
use crate::config::RunConfig;
use crate::state::ModelState;
use crate::task::Task;
use wflora_lora::{Batch, EvalSums, VitModel};

/// The task's backbone with `state`'s factors and head.
///
/// # Errors
/// Model errors (a state that does not fit the backbone).
pub(crate) fn model_with(
    cfg: &RunConfig,
    task: &Task,
    state: &ModelState,
) -> Result<VitModel, FedError> {
    let model = VitModel::new(
        task.backbone.clone(),
        cfg.model.fine_tune_mode(),
        task.num_classes,
        0,
    )?;
    model.set_factors(&state.factors)?;
    model.set_head(&state.head)?;
    Ok(model)
}

/// `(loss, accuracy)` of `state` on the test split.
///
/// The test batches are split into contiguous ranges over
/// `federation.workers` threads (one model each) and their sums added in
/// batch order, so the result does not depend on the number of workers.
/// `round` names the round in a divergence error.
///
/// # Errors
/// Model errors; a panicked thread.
pub(crate) fn evaluate(
    cfg: &RunConfig,
    task: &Task,
    state: &ModelState,
    round: usize,
) -> Result<(f64, f64), FedError> {
    const EVAL_BATCH: usize = 256;
    let test = &task.test;
    let shape = [test.len(), test.channels(), test.height(), test.width()];
    let batch = Batch::new(test.images(), test.labels(), shape)?;
    let batches = test.len().div_ceil(EVAL_BATCH);
    let workers = cfg.federation.workers.clamp(1, batches.max(1));
    let per = batches.div_ceil(workers) * EVAL_BATCH;
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let part = batch.slice(w * per, per);
                s.spawn(move || -> Result<Vec<EvalSums>, FedError> {
                    if part.is_empty() {
                        return Ok(Vec::new());
                    }
                    let model = model_with(cfg, task, state)?;
                    Ok(wflora_lora::evaluate_sums(&model, &part, EVAL_BATCH)?)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut sums = Vec::with_capacity(batches);
    for p in parts {
        sums.extend(p.map_err(|_| FedError::Diverged {
            round,
            what: "an evaluation thread panicked".into(),
        })??);
    }
    let r = wflora_lora::EvalResult::from_sums(&sums)?;
    Ok((r.loss, r.accuracy))
}
