//! Images/s of one local training step (forward + backward + AdamW), batch 32.
//!
//! Run with `cargo bench -p wflora-lora`. Each row: warm-up steps, then
//! repeated timed runs of `steps` consecutive steps; prints the median and
//! best images/s. The last row trains one tiny client per core at once on
//! its own thread (run it with `RAYON_NUM_THREADS=1` so candle's own pool
//! does not compete with the client threads). Set `WFLORA_BENCH_QUICK=1` to
//! skip the ViT-S/14 rows, or
//! `WFLORA_BENCH_FILTER=text` to run only the rows whose name contains `text`.
//!
//! On a shared machine wall-clock rates depend on the load, so on Linux the
//! table also gives images per CPU-second of this process (user + system time
//! of all its threads from `/proc/self/stat`, in units of `USER_HZ` = 100).

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{
    AdamWParams, Backbone, Batch, FineTuneMode, LocalTrainer, LoraConfig, OptimizerKind,
    TrainOptions, VitConfig, VitModel,
};

const BATCH: usize = 32;
const CLASSES: usize = 10;

struct Row {
    name: String,
    median: f64,
    best: f64,
    per_cpu_s: Option<f64>,
    flops: f64,
}

/// User + system CPU seconds of this process so far (Linux), else `None`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn bench(
    name: &str,
    cfg: &VitConfig,
    mode: FineTuneMode,
    warmup: usize,
    runs: usize,
    steps: usize,
) -> Result<Row, Box<dyn std::error::Error>> {
    let backbone = Arc::new(Backbone::random(cfg, 1)?);
    let mut model = VitModel::new(backbone, mode.clone(), CLASSES, 2)?;
    let mut rng = StdRng::seed_from_u64(3);
    let images: Vec<f32> = (0..BATCH * cfg.pixels())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..BATCH)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    let shape = [BATCH, cfg.in_channels, cfg.image_size, cfg.image_size];
    let batch = Batch::new(&images, &labels, shape)?;
    let batches = vec![batch; steps];
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams::default()),
        ..TrainOptions::default()
    })?;
    for _ in 0..warmup {
        trainer.train(&mut model, &batches[..1])?;
    }
    let mut rates = Vec::with_capacity(runs);
    let cpu0 = cpu_seconds();
    for _ in 0..runs {
        let t0 = Instant::now();
        trainer.train(&mut model, &batches)?;
        rates.push((steps * BATCH) as f64 / t0.elapsed().as_secs_f64());
    }
    let per_cpu_s = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => Some((runs * steps * BATCH) as f64 / (b - a)),
        _ => None,
    };
    rates.sort_by(f64::total_cmp);
    Ok(Row {
        name: name.to_owned(),
        median: rates[rates.len() / 2],
        best: rates[rates.len() - 1],
        per_cpu_s,
        flops: cfg.flops_per_sample(&mode, CLASSES),
    })
}

/// Aggregate images/s of `clients` tiny LoRA clients trained at once on
/// their own threads (shared backbone), `steps` steps each, `runs` times.
fn bench_parallel(
    clients: usize,
    runs: usize,
    steps: usize,
) -> Result<Row, Box<dyn std::error::Error>> {
    let cfg = VitConfig::tiny();
    let mode = FineTuneMode::Lora(LoraConfig::with_rank(16));
    let backbone = Arc::new(Backbone::random(&cfg, 1)?);
    let mut rng = StdRng::seed_from_u64(3);
    let images: Vec<f32> = (0..BATCH * cfg.pixels())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..BATCH)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    let shape = [BATCH, cfg.in_channels, cfg.image_size, cfg.image_size];
    let mut models = (0..clients)
        .map(|k| VitModel::new(backbone.clone(), mode.clone(), CLASSES, k as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rates = Vec::with_capacity(runs);
    let cpu0 = cpu_seconds();
    for run in 0..=runs {
        let t0 = Instant::now();
        std::thread::scope(|s| -> Result<(), String> {
            let handles: Vec<_> = models
                .iter_mut()
                .map(|m| {
                    let (images, labels) = (&images, &labels);
                    s.spawn(move || -> Result<(), String> {
                        let batch = Batch::new(images, labels, shape).map_err(|e| e.to_string())?;
                        let mut t = LocalTrainer::new(TrainOptions::default())
                            .map_err(|e| e.to_string())?;
                        t.train(m, &vec![batch; steps]).map_err(|e| e.to_string())?;
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| "client thread panicked".to_owned())??;
            }
            Ok(())
        })?;
        // Run 0 is the warm-up.
        if run > 0 {
            rates.push((clients * steps * BATCH) as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let per_cpu_s = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => {
            Some(((runs + 1) * clients * steps * BATCH) as f64 / (b - a))
        }
        _ => None,
    };
    rates.sort_by(f64::total_cmp);
    Ok(Row {
        name: format!("tiny LoRA r=16, {clients} clients ||"),
        median: rates[rates.len() / 2],
        best: rates[rates.len() - 1],
        per_cpu_s,
        flops: cfg.flops_per_sample(&mode, CLASSES),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::var_os("WFLORA_BENCH_QUICK").is_some();
    let filter = std::env::var("WFLORA_BENCH_FILTER").unwrap_or_default();
    let lora16 = FineTuneMode::Lora(LoraConfig::with_rank(16));
    let tiny = VitConfig::tiny();
    let s14 = VitConfig::vit_s14().with_image_size(56);
    // (name, config, mode, warm-up, runs, steps per run)
    let mut plan = vec![
        (
            "tiny 28x28, LoRA r=16 q,v",
            &tiny,
            lora16.clone(),
            5,
            15,
            10,
        ),
        (
            "tiny 28x28, head only",
            &tiny,
            FineTuneMode::HeadOnly,
            5,
            15,
            10,
        ),
        (
            "tiny 28x28, full fine-tuning",
            &tiny,
            FineTuneMode::Full,
            5,
            15,
            10,
        ),
    ];
    if !quick {
        plan.push(("vit-s14 56x56, LoRA r=16 q,v", &s14, lora16, 1, 5, 2));
    }
    let mut rows = Vec::new();
    for (name, cfg, mode, warmup, runs, steps) in plan {
        if name.contains(filter.as_str()) {
            rows.push(bench(name, cfg, mode, warmup, runs, steps)?);
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores > 1 && "tiny parallel clients".contains(filter.as_str()) {
        rows.push(bench_parallel(cores, 10, 10)?);
    }
    println!(
        "one local step = forward + backward + AdamW, batch {BATCH}, {} threads available",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<32} {:>13} {:>11} {:>9} {:>10} {:>13}",
        "model", "median img/s", "best img/s", "ms/step", "GFLOP/s", "img/CPU-s"
    );
    for r in rows {
        let cpu = r.per_cpu_s.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{:<32} {:>13.1} {:>11.1} {:>9.2} {:>10.1} {:>13}",
            r.name,
            r.median,
            r.best,
            1e3 * BATCH as f64 / r.median,
            r.median * r.flops / 1e9,
            cpu
        );
    }
    Ok(())
}
