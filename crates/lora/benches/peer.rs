//! Our side of the PyTorch side-by-side (`just bench-peer`, `bench/peer.py`):
//! images/s of one local training step (forward + backward + AdamW on the
//! LoRA factors and the head), LoRA rank 16 on q and v, for one shape.
//!
//! Configured by environment variables, so the orchestrator can run it
//! between PyTorch runs without recompiling: `PEER_SHAPE` (`tiny`,
//! `vit-s14`, `vit-b16`), `PEER_IMAGE` (image side, default the shape's),
//! `PEER_BATCH` (default 32), `PEER_STEPS` (steps per timed run, default 5),
//! `PEER_RUNS` (timed runs, default 5), `PEER_WARMUP` (untimed steps,
//! default 2). Prints one JSON line: `{"impl":"wflora","shape":…,"img_s_median":…,"img_s_best":…}`.
//! Threads: candle's pool (`RAYON_NUM_THREADS`).

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{
    AdamWParams, Backbone, Batch, FineTuneMode, LocalTrainer, LoraConfig, OptimizerKind,
    TrainOptions, VitConfig, VitModel,
};

const CLASSES: usize = 10;

fn env(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v}: expected a positive integer")),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shape = std::env::var("PEER_SHAPE").unwrap_or_else(|_| "tiny".into());
    let preset = VitConfig::preset(&shape)?;
    let side = env("PEER_IMAGE", preset.image_size)?;
    let cfg = preset.with_image_size(side);
    cfg.validate()?;
    let batch = env("PEER_BATCH", 32)?;
    let steps = env("PEER_STEPS", 5)?;
    let runs = env("PEER_RUNS", 5)?;
    let warmup = env("PEER_WARMUP", 2)?;
    let mode = FineTuneMode::Lora(LoraConfig::with_rank(16));
    let backbone = Arc::new(Backbone::random(&cfg, 1)?);
    let mut model = VitModel::new(backbone, mode, CLASSES, 2)?;
    let mut rng = StdRng::seed_from_u64(3);
    let images: Vec<f32> = (0..batch * cfg.pixels())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..batch)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    let b = Batch::new(
        &images,
        &labels,
        [batch, cfg.in_channels, cfg.image_size, cfg.image_size],
    )?;
    let batches = vec![b; steps.max(1)];
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams::default()),
        ..TrainOptions::default()
    })?;
    for _ in 0..warmup {
        trainer.train(&mut model, &batches[..1])?;
    }
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        trainer.train(&mut model, &batches)?;
        rates.push((batches.len() * batch) as f64 / t0.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{{\"impl\":\"wflora\",\"shape\":\"{shape}\",\"image\":{},\"batch\":{batch},\"img_s_median\":{},\"img_s_best\":{}}}",
        cfg.image_size,
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
    Ok(())
}
