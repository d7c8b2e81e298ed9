//! Centralised fine-tuning on the whole pool: the reference points that tell
//! whether a task separates fine-tuning methods at all (head-only, LoRA, full
//! fine-tuning from the same pre-trained backbone, same data, same steps).

use crate::FedError;
use crate::seed::{Stream, derive};
use crate::task::Task;
use serde::{Deserialize, Serialize};
use wflora_data::BatchSampler;
use wflora_lora::{Batch, FineTuneMode, LocalTrainer, OptimizerKind, TrainOptions, VitModel};

/// A centralised fine-tuning schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralSchedule {
    /// Optimiser steps.
    pub steps: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Optimiser.
    pub optimizer: OptimizerKind,
}

/// The outcome of one centralised fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentralResult {
    /// Test accuracy.
    pub accuracy: f64,
    /// Test loss.
    pub loss: f64,
    /// Trainable parameters.
    pub trainable: usize,
}

/// Fine-tunes one model on the task's whole training pool and evaluates it.
///
/// # Errors
/// Invalid schedule or model errors; [`FedError::Diverged`] on a non-finite loss.
pub fn fine_tune(
    task: &Task,
    mode: FineTuneMode,
    schedule: &CentralSchedule,
    seed: u64,
) -> Result<CentralResult, FedError> {
    if schedule.steps == 0 || schedule.batch_size == 0 {
        return Err(FedError::config(
            "schedule",
            "steps and batch_size must be at least 1",
        ));
    }
    let mut model = VitModel::new(
        task.backbone.clone(),
        mode,
        task.num_classes,
        derive(seed, Stream::Init, 0, 0),
    )?;
    let trainable = model.num_trainable();
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: schedule.optimizer,
        keep_optimizer_state: true,
        ..TrainOptions::default()
    })?;
    let mut sampler = BatchSampler::new(
        (0..task.train.len()).collect(),
        schedule.batch_size,
        derive(seed, Stream::Batches, u64::MAX, 0),
    )?;
    // Train in chunks so that only a few batches are materialised at a time.
    let mut left = schedule.steps;
    while left > 0 {
        let n = left.min(50);
        let gathered = (0..n)
            .map(|_| task.train.gather(sampler.next_batch()))
            .collect::<Result<Vec<_>, _>>()?;
        let batches = gathered
            .iter()
            .map(|b| Batch::new(&b.images, &b.labels, b.shape()))
            .collect::<Result<Vec<_>, _>>()?;
        let update = trainer.train(&mut model, &batches)?;
        if !update.mean_loss.is_finite() {
            return Err(FedError::Diverged {
                round: schedule.steps - left,
                what: "centralised training loss".into(),
            });
        }
        left -= n;
    }
    let test = &task.test;
    let shape = [test.len(), test.channels(), test.height(), test.width()];
    let r = wflora_lora::evaluate(
        &model,
        &Batch::new(test.images(), test.labels(), shape)?,
        256,
    )?;
    Ok(CentralResult {
        accuracy: r.accuracy,
        loss: r.loss,
        trainable,
    })
}
