//! Our side of the PyTorch side-by-side (`just bench-peer`, `bench/peer.py`):
//! images/s of one local training step (forward + backward + AdamW on the
//! LoRA factors and the head), LoRA rank 16 on q and v, for one shape.
//!
//! Configured by environment variables, so the orchestrator can run it
//! between PyTorch runs without recompiling: `PEER_SHAPE` (`tiny`,
//! `vit-s14`, `vit-b16`), `PEER_IMAGE` (image side, default the shape's),
//! `PEER_BATCH` (default 32), `PEER_STEPS` (steps per timed run, default 5),
//! `PEER_RUNS` (timed runs, default 5), `PEER_WARMUP` (untimed steps,
//! default 2), `PEER_DEVICE` (`cpu` or `cuda`, default `cpu`; `cuda` needs
//! the crate feature `cuda`), `PEER_DTYPE` (`f32` or `bf16`: the frozen
//! backbone's compute dtype, LoRA factors and head staying `f32`; default
//! `f32`), `PEER_SHARDS` (the batch split into this many shards trained on
//! their own threads, [`TrainOptions::shards`]; default 1). Prints one JSON
//! line: `{"impl":"wflora","shape":…,"img_s_median":…,"img_s_best":…}`.
//! Threads: the shards', times candle's pool (`RAYON_NUM_THREADS`) inside
//! each.
//!
//! `PEER_CHECK=1` with `PEER_DEVICE=cuda` first checks the device against the
//! CPU: the same model (ViT-S/14 shapes at 56×56, batch 8) trained 3 steps
//! on both from the same weights must give the same losses and LoRA factors
//! (relative 1e-3 in `f32`, 5e-2 in `bf16`); it prints the differences as a
//! JSON line and exits non-zero beyond tolerance. The check trains with SGD
//! (lr 0.05), so the factors compare the gradients.
//!
//! `PEER_PHASES=1` also prints the milliseconds of a forward pass and of a
//! forward + backward pass on the benchmark batch (`"fwd_ms"`, `"fwd_bwd_ms"`).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{
    AdamWParams, Backbone, Batch, FineTuneMode, LocalTrainer, LocalUpdate, LoraConfig,
    OptimizerKind, TrainOptions, VitConfig, VitModel,
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

/// A fixed random batch (images uniform in ±1, labels uniform).
fn random_batch(cfg: &VitConfig, batch: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let images = (0..batch * cfg.pixels())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels = (0..batch)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    (images, labels)
}

fn trainer(shards: usize) -> Result<LocalTrainer, wflora_lora::LoraError> {
    LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams::default()),
        shards,
        ..TrainOptions::default()
    })
}

/// Seconds per call of `f` (median of `reps`, the device synchronised
/// around each).
fn time_it(
    device: &Device,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        device.synchronize()?;
        let t0 = Instant::now();
        f()?;
        device.synchronize()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Where a step's time goes: forward alone, forward + backward (no
/// optimiser), as milliseconds per step (`PEER_PHASES=1`).
fn phases(
    model: &VitModel,
    images: &[f32],
    labels: &[u32],
    shape: [usize; 4],
    device: &Device,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let x = candle_core::Tensor::from_slice(images, shape.to_vec(), device)?;
    let y = candle_core::Tensor::from_slice(labels, labels.len(), device)?;
    let loss = || -> candle_core::Result<candle_core::Tensor> {
        let logits = model
            .forward(&x)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        candle_nn::loss::cross_entropy(&logits, &y)
    };
    let fwd = time_it(device, 5, || loss().map(|_| ()))?;
    let fwd_bwd = time_it(device, 5, || loss()?.backward().map(|_| ()))?;
    Ok((fwd * 1e3, fwd_bwd * 1e3))
}

/// `max |x − y| / max(max |y|, 1e-6)` over paired slices.
fn rel_diff<'a>(x: impl IntoIterator<Item = &'a f32>, y: impl IntoIterator<Item = &'a f32>) -> f64 {
    let (mut diff, mut scale) = (0f64, 0f64);
    for (a, b) in x.into_iter().zip(y) {
        diff = diff.max(f64::from((a - b).abs()));
        scale = scale.max(f64::from(b.abs()));
    }
    diff / scale.max(1e-6)
}

/// Trains the same model on the CPU and on `device` (3 steps) and compares
/// the losses and the LoRA factors; an error beyond tolerance.
fn check_device(device: &Device, dtype: DType) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = VitConfig::preset("vit-s14")?.with_image_size(56);
    let (batch, steps) = (8, 3);
    let (images, labels) = random_batch(&cfg, batch, 5);
    let b = Batch::new(
        &images,
        &labels,
        [batch, cfg.in_channels, cfg.image_size, cfg.image_size],
    )?;
    let cpu = Arc::new(Backbone::random(&cfg, 4)?);
    // SGD: the factors move by the gradients themselves, so they compare the
    // gradients (AdamW's first steps are sign-like and would amplify noise
    // in the gradients of entries that barely get any).
    let run = |backbone: Arc<Backbone>| -> Result<Vec<LocalUpdate>, wflora_lora::LoraError> {
        let mode = FineTuneMode::Lora(LoraConfig::with_rank(16));
        let mut model = VitModel::new(backbone, mode, CLASSES, 6)?;
        let mut t = LocalTrainer::new(TrainOptions {
            optimizer: OptimizerKind::Sgd { lr: 0.05 },
            ..TrainOptions::default()
        })?;
        (0..steps)
            .map(|_| t.train(&mut model, std::slice::from_ref(&b)))
            .collect()
    };
    let want = run(cpu.clone())?;
    let got = run(Arc::new(cpu.to(device, dtype)?))?;
    let loss = want
        .iter()
        .zip(&got)
        .map(|(w, g)| ((w.mean_loss - g.mean_loss) / w.mean_loss.abs().max(1e-6)).abs())
        .fold(0f64, f64::max);
    let (w, g) = (want.last().ok_or("no step")?, got.last().ok_or("no step")?);
    let mut factors = 0f64;
    for (fw, fg) in w.factors.iter().zip(&g.factors) {
        factors = factors.max(rel_diff(fg.b.iter(), fw.b.iter()));
        factors = factors.max(rel_diff(fg.a.iter(), fw.a.iter()));
    }
    let head = rel_diff(g.head.weight.iter(), w.head.weight.iter());
    let tol = if dtype == DType::F32 { 1e-3 } else { 5e-2 };
    println!(
        "{{\"check\":\"{device:?} vs cpu\",\"dtype\":\"{dtype:?}\",\"steps\":{steps},\"loss_rel\":{loss:e},\"factors_rel\":{factors:e},\"head_rel\":{head:e},\"tolerance\":{tol:e},\"losses_cpu\":{:?},\"losses_device\":{:?}}}",
        want.iter().map(|u| u.mean_loss).collect::<Vec<_>>(),
        got.iter().map(|u| u.mean_loss).collect::<Vec<_>>()
    );
    if !(loss <= tol && factors <= tol && head <= tol) {
        return Err(format!(
            "device check failed: loss {loss:e}, factors {factors:e}, head {head:e} (tolerance {tol:e})"
        )
        .into());
    }
    Ok(())
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
    let shards = env("PEER_SHARDS", 1)?;
    let device = match std::env::var("PEER_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => Device::Cpu,
        Ok("cuda") => Device::new_cuda(0)?,
        Ok(other) => return Err(format!("PEER_DEVICE={other}: expected cpu or cuda").into()),
    };
    let dtype = match std::env::var("PEER_DTYPE").as_deref() {
        Err(_) | Ok("f32") => DType::F32,
        Ok("bf16") => DType::BF16,
        Ok(other) => return Err(format!("PEER_DTYPE={other}: expected f32 or bf16").into()),
    };
    if std::env::var("PEER_CHECK").is_ok_and(|v| v == "1") && !device.is_cpu() {
        check_device(&device, dtype)?;
    }
    let mode = FineTuneMode::Lora(LoraConfig::with_rank(16));
    let backbone = Arc::new(Backbone::random(&cfg, 1)?.to(&device, dtype)?);
    let mut model = VitModel::new(backbone, mode, CLASSES, 2)?;
    let (images, labels) = random_batch(&cfg, batch, 3);
    let b = Batch::new(
        &images,
        &labels,
        [batch, cfg.in_channels, cfg.image_size, cfg.image_size],
    )?;
    let batches = vec![b; steps.max(1)];
    let mut trainer = trainer(shards)?;
    for _ in 0..warmup {
        trainer.train(&mut model, &batches[..1])?;
    }
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        device.synchronize()?;
        let t0 = Instant::now();
        trainer.train(&mut model, &batches)?;
        device.synchronize()?;
        rates.push((batches.len() * batch) as f64 / t0.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let phase = if std::env::var("PEER_PHASES").is_ok_and(|v| v == "1") {
        let shape4 = [batch, cfg.in_channels, cfg.image_size, cfg.image_size];
        let (f, fb) = phases(&model, &images, &labels, shape4, &device)?;
        format!(",\"fwd_ms\":{f},\"fwd_bwd_ms\":{fb}")
    } else {
        String::new()
    };
    println!(
        "{{\"impl\":\"wflora\",\"shape\":\"{shape}\",\"image\":{},\"batch\":{batch},\"device\":\"{}\",\"dtype\":\"{dtype:?}\",\"shards\":{shards},\"img_s_median\":{},\"img_s_best\":{}{phase}}}",
        cfg.image_size,
        if device.is_cpu() { "cpu" } else { "cuda" },
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
    Ok(())
}
