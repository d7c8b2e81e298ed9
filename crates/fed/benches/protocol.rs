//! What the protocol costs a client-round at ViT-B/16 sizes, next to one
//! local training step.
//!
//! Run with `cargo bench -p wflora-fed --bench protocol`. Sizes: ViT-B/16
//! (12 blocks, width 768, 224 px), LoRA rank 16 on q and v (24 adapted
//! matrices), SOFT at ρ = 0.25 (m = 4), 10 classes. One client-round moves
//! four messages; each is encoded once (by its sender) and decoded once (by
//! its receiver):
//! - `Train` (server → client): the global factors and head;
//! - `Trained` (client → server): 24 importance vectors;
//! - `Compress` (server → client): m, share, 24 seeds;
//! - `Update` (client → server): 24 SOFT messages and the head, plus the
//!   uncompressed local factors the covariance metric asks for.
//!
//! The training step is forward + backward + AdamW on one mini-batch of
//! `WFLORA_BENCH_BATCH` random images (default 8; the default config's 32
//! makes the step four times longer and the ratio four times smaller).
//! Each timing is the median of repeated runs; the last line is the ratio.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_fed::protocol::{ClientUpdate, CompressInstruction, TrainInstruction, TrainReport};
use wflora_fed::{ClientMessage, ModelState, ServerMessage};
use wflora_lora::{
    AdamWParams, Backbone, Batch, FineTuneMode, LocalTrainer, LoraConfig, LoraTarget,
    OptimizerKind, TrainOptions, VitConfig, VitModel,
};
use wflora_soft::ndarray::Array2;
use wflora_soft::{FactorsView, MethodKind, Residual, importances};

const RANK: usize = 16;
const KEPT: usize = 4;
const CLASSES: usize = 10;

type Error = Box<dyn std::error::Error>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` over `runs` runs after one warm-up.
fn time(runs: usize, mut f: impl FnMut() -> Result<(), Error>) -> Result<f64, Error> {
    f()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn random(rng: &mut StdRng, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-scale..scale))
}

fn main() -> Result<(), Error> {
    let batch: usize = std::env::var("WFLORA_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let cfg = VitConfig::vit_b16();
    let mode = FineTuneMode::Lora(LoraConfig {
        rank: RANK,
        alpha: 32.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    });
    let backbone = Arc::new(Backbone::random(&cfg, 1)?);
    let mut model = VitModel::new(backbone, mode, CLASSES, 2)?;
    let mut rng = StdRng::seed_from_u64(3);

    // The messages of one client-round, from this model's shapes.
    let global = ModelState {
        factors: model.factors()?,
        head: model.head()?,
    };
    let mut local = global.clone();
    for f in &mut local.factors {
        f.b = random(&mut rng, f.b.nrows(), f.b.ncols(), 0.01);
        f.a = &f.a + &random(&mut rng, f.a.nrows(), f.a.ncols(), 0.01);
    }
    let soft = MethodKind::Soft.sparsifier(true, 0);
    let mut messages = Vec::new();
    let mut imps = Vec::new();
    for (g, u) in global.factors.iter().zip(&local.factors) {
        let (db, da) = (&u.b - &g.b, &u.a - &g.a);
        let base = FactorsView::new(g.b.view(), g.a.view());
        let update = FactorsView::new(db.view(), da.view());
        imps.push(importances(base, update, &Residual::Zero)?);
        messages.push(soft.compress(base, update, &Residual::Zero, KEPT)?.0);
    }
    let head_bits = global.head.len() as u64 * 32;
    let payload_bits = head_bits + messages.iter().map(|m| m.size().total()).sum::<u64>();
    let round = [
        Msg::S(ServerMessage::Train(TrainInstruction {
            round: 0,
            client: 0,
            state: Some(global.clone()),
            batch_seed: 1,
            report_importances: true,
            evaluate: false,
        })),
        Msg::C(ClientMessage::Trained(TrainReport {
            round: 0,
            client: 0,
            samples: 600,
            train_loss: 1.0,
            importances: imps,
            evaluation: None,
        })),
        Msg::S(ServerMessage::Compress(CompressInstruction {
            round: 0,
            client: 0,
            components: KEPT,
            share: 0.1,
            sparsifier_seeds: vec![7; global.factors.len()],
            report_factors: true,
        })),
        Msg::C(ClientMessage::Update(ClientUpdate {
            round: 0,
            client: 0,
            messages,
            head: Some(local.head.clone()),
            payload_bits,
            local_factors: local.factors.clone(),
        })),
    ];

    println!(
        "protocol at ViT-B/16, r = {RANK} on q and v ({} matrices), SOFT m = {KEPT}",
        global.factors.len()
    );
    println!("{:<34} {:>12} {:>12}", "message", "bytes", "enc+dec ms");
    let mut protocol_s = 0.0;
    for m in &round {
        let bytes = m.encode();
        let s = time(20, || {
            let b = m.encode();
            m.decode_same(&b)
        })?;
        protocol_s += s;
        println!("{:<34} {:>12} {:>12.3}", m.name(), bytes.len(), s * 1e3);
    }
    println!(
        "{:<34} {:>12} {:>12.3}",
        "client-round total",
        "",
        protocol_s * 1e3
    );

    // One local training step on `batch` random images.
    let images: Vec<f32> = (0..batch * cfg.pixels())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..batch)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    let shape = [batch, cfg.in_channels, cfg.image_size, cfg.image_size];
    let batches = vec![Batch::new(&images, &labels, shape)?];
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams::default()),
        ..TrainOptions::default()
    })?;
    let step_s = time(3, || {
        trainer.train(&mut model, &batches)?;
        Ok(())
    })?;
    println!(
        "{:<34} {:>12} {:>12.3}",
        format!("one training step, batch {batch}"),
        "",
        step_s * 1e3
    );
    println!(
        "protocol / step: {:.4} % (must stay under 1 %)",
        100.0 * protocol_s / step_s
    );
    Ok(())
}

/// A message of either direction.
enum Msg {
    S(ServerMessage),
    C(ClientMessage),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Self::S(m) => m.encode(),
            Self::C(m) => m.encode(),
        }
    }

    /// Decodes `bytes` as this message's direction and checks it is this message.
    fn decode_same(&self, bytes: &[u8]) -> Result<(), Error> {
        let same = match self {
            Self::S(m) => &ServerMessage::decode(bytes)? == m,
            Self::C(m) => &ClientMessage::decode(bytes)? == m,
        };
        if same {
            Ok(())
        } else {
            Err("a message did not survive encoding".into())
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::S(ServerMessage::Train(_)) => "Train (global state)",
            Self::C(ClientMessage::Trained(_)) => "Trained (importances)",
            Self::S(ServerMessage::Compress(_)) => "Compress (m, share, seeds)",
            Self::C(ClientMessage::Update(_)) => "Update (SOFT + head + factors)",
        }
    }
}
