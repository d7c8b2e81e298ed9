//! On the embedded default task (Fashion-MNIST, backbone pre-trained on
//! classes 0–4, fine-tuned on 5–9): LoRA fine-tuning beats the frozen
//! backbone with a trained head by at least 5 accuracy points on held-out
//! data and sits close to full fine-tuning (issue 2's acceptance test).
//!
//! Same backbone, same data, same number of steps and batch size for the
//! three modes; learning rates are each mode's usual choice, fixed here once.
#![allow(clippy::unwrap_used)]

use wflora::fed::TaskConfig;
use wflora::fed::centralized::{CentralSchedule, fine_tune};
use wflora::fed::task::Task;
use wflora::lora::{AdamWParams, FineTuneMode, LoraConfig, OptimizerKind};

fn schedule(lr: f64) -> CentralSchedule {
    CentralSchedule {
        steps: 400,
        batch_size: 32,
        optimizer: OptimizerKind::AdamW(AdamWParams {
            lr,
            ..AdamWParams::default()
        }),
    }
}

#[test]
fn lora_beats_head_only_and_is_close_to_full() {
    let mut cfg = TaskConfig::embedded_default();
    cfg.cache_dir = std::env::temp_dir().join(format!("wflora-test-cache-{}", std::process::id()));
    let task = Task::build(&cfg).unwrap();
    let head = fine_tune(&task, FineTuneMode::HeadOnly, &schedule(5e-3), 1).unwrap();
    let lora = fine_tune(
        &task,
        FineTuneMode::Lora(LoraConfig::with_rank(8)),
        &schedule(2e-3),
        1,
    )
    .unwrap();
    let full = fine_tune(&task, FineTuneMode::Full, &schedule(1e-3), 1).unwrap();
    eprintln!(
        "head-only {:.4}, LoRA {:.4}, full {:.4} (test images: {})",
        head.accuracy,
        lora.accuracy,
        full.accuracy,
        task.test.len()
    );
    assert!(
        lora.accuracy >= head.accuracy + 0.05,
        "LoRA {:.4} must beat head-only {:.4} by 5 points",
        lora.accuracy,
        head.accuracy
    );
    assert!(
        lora.accuracy >= full.accuracy - 0.03,
        "LoRA {:.4} must be within 3 points of full fine-tuning {:.4}",
        lora.accuracy,
        full.accuracy
    );
    assert!(lora.trainable < full.trainable / 5);
    std::fs::remove_dir_all(&cfg.cache_dir).ok();
}
