//! Local training, the first-order step check, frozen backbone, evaluation.

use candle_core::{Device, Tensor};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{
    AdamWParams, Batch, FineTuneMode, LocalTrainer, LoraConfig, LoraError, LoraTarget,
    OptimizerKind, RegulariserKind, TrainOptions, VitModel, evaluate,
};

use crate::common::{flat, shape, small_backbone, small_config, synthetic};

fn adamw(lr: f64) -> TrainOptions {
    TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams {
            lr,
            ..AdamWParams::default()
        }),
        ..TrainOptions::default()
    }
}

/// Objective and squared gradient norm over the trainable variables,
/// computed directly with candle (independent of the trainer).
fn loss_and_grad_sq(model: &VitModel, x: &Tensor, y: &Tensor, zeta: f64) -> (f64, f64) {
    let logits = model.forward(x).unwrap();
    let task = candle_nn::loss::cross_entropy(&logits, y).unwrap();
    let reg = model.regulariser(RegulariserKind::Plain).unwrap();
    let loss = (task + (reg * zeta).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let mut sq = 0.0;
    for v in model.trainable_vars() {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += f64::from(
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
            );
        }
    }
    (f64::from(loss.to_scalar::<f32>().unwrap()), sq)
}

/// A LoRA model (Q, V, FC1, rank 3) on the small backbone with non-zero
/// `B`, so that both factors receive gradients.
fn lora_model_with_nonzero_b() -> VitModel {
    let lora = LoraConfig {
        rank: 3,
        alpha: 3.0,
        targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Fc1],
    };
    let model = VitModel::new(small_backbone(3), FineTuneMode::Lora(lora), 3, 7).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut f = model.factors().unwrap();
    for af in &mut f {
        af.b = Array2::from_shape_fn(af.b.dim(), |_| rng.random_range(-0.3..0.3));
    }
    model.set_factors(&f).unwrap();
    model
}

#[test]
fn sgd_step_changes_loss_as_first_order_theory_predicts() {
    let cfg = small_config();
    let mut model = lora_model_with_nonzero_b();
    let (imgs, labels) = synthetic(&cfg, 16, 3, 5);
    let x = Tensor::from_slice(&imgs, shape(&cfg, 16).to_vec(), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&labels, 16, &Device::Cpu).unwrap();
    let zeta = 0.05;
    let (l0, g2) = loss_and_grad_sq(&model, &x, &y, zeta);
    assert!(g2 > 0.0);
    // Step size chosen so the predicted decrease is 1e-3 (well above f32 noise).
    let eta = 1e-3 / g2;
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::Sgd { lr: eta },
        zeta,
        regulariser: RegulariserKind::Plain,
        keep_optimizer_state: false,
        shards: 1,
    })
    .unwrap();
    let batch = Batch::new(&imgs, &labels, shape(&cfg, 16)).unwrap();
    let up = trainer.train(&mut model, &[batch]).unwrap();
    assert!(
        (up.mean_loss - l0).abs() < 1e-5,
        "trainer measured {} before the step, direct {l0}",
        up.mean_loss
    );
    let (l1, _) = loss_and_grad_sq(&model, &x, &y, zeta);
    let predicted = -eta * g2;
    let measured = l1 - l0;
    assert!(
        (measured - predicted).abs() <= 0.05 * predicted.abs(),
        "measured {measured}, predicted {predicted}"
    );
}

/// One SGD step of a LoRA model (Q, V, FC1, rank 3, non-zero `B`, `ζ`)
/// on 16 images with the batch split into `shards`: how far the factors and
/// head moved, and the reported loss.
fn sgd_step_with_shards(shards: usize, zeta: f64) -> (Vec<f32>, f64) {
    let cfg = small_config();
    let mut model = lora_model_with_nonzero_b();
    let (imgs, labels) = synthetic(&cfg, 16, 3, 5);
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::Sgd { lr: 0.5 },
        zeta,
        shards,
        ..TrainOptions::default()
    })
    .unwrap();
    let params = |f: &[wflora_lora::AdapterFactors], h: &wflora_lora::HeadParams| {
        let mut p: Vec<f32> = Vec::new();
        for af in f {
            p.extend(af.b.iter().chain(af.a.iter()));
        }
        p.extend(h.weight.iter().chain(h.bias.iter()));
        p
    };
    let before = params(&model.factors().unwrap(), &model.head().unwrap());
    let batch = Batch::new(&imgs, &labels, shape(&cfg, 16)).unwrap();
    let up = trainer.train(&mut model, &[batch]).unwrap();
    let after = params(&up.factors, &up.head);
    let moved = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    (moved, up.mean_loss)
}

/// Splitting the batch must not change the step beyond float rounding: the
/// reference is the one-thread step (checked against first-order theory
/// above). The regulariser is counted once (with `ζ = 0.5` a repeat per
/// shard would move the factors far beyond the tolerance), the loss is the
/// batch's, more shards than images fall back to one image each, and the
/// same shard count gives the same bits.
#[test]
fn sharded_step_equals_the_whole_batch_step() {
    let zeta = 0.5;
    let (want, want_loss) = sgd_step_with_shards(1, zeta);
    for shards in [2, 3, 16, 40] {
        let (got, loss) = sgd_step_with_shards(shards, zeta);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{shards} shards: the steps differ by {diff} (largest move {scale})"
        );
        assert!(
            (loss - want_loss).abs() <= 1e-6 * want_loss.abs(),
            "{shards} shards: loss {loss} vs {want_loss}"
        );
        let (again, again_loss) = sgd_step_with_shards(shards, zeta);
        assert!(
            again
                .iter()
                .zip(&got)
                .all(|(a, g)| a.to_bits() == g.to_bits())
        );
        assert_eq!(again_loss.to_bits(), loss.to_bits());
    }
    let err = LocalTrainer::new(TrainOptions {
        shards: 0,
        ..TrainOptions::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::InvalidConfig {
                field: "shards",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn lora_training_changes_only_adapters_and_head() {
    let cfg = small_config();
    let bb = small_backbone(4);
    let snapshot: Vec<(String, Vec<f32>)> =
        bb.iter().map(|(n, t)| (n.to_owned(), flat(t))).collect();
    let mut model = VitModel::new(
        bb.clone(),
        FineTuneMode::Lora(LoraConfig::with_rank(2)),
        3,
        1,
    )
    .unwrap();
    let f0 = model.factors().unwrap();
    let h0 = model.head().unwrap();
    let (imgs, labels) = synthetic(&cfg, 24, 3, 2);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 24)).unwrap();
    let batches: Vec<Batch<'_>> = (0..3).map(|i| data.slice(8 * i, 8)).collect();
    let mut trainer = LocalTrainer::new(TrainOptions {
        zeta: 0.1,
        ..adamw(1e-2)
    })
    .unwrap();
    let up = trainer.train(&mut model, &batches).unwrap();
    assert_eq!(up.steps, 3);
    assert!(up.mean_loss.is_finite() && up.mean_loss >= up.mean_task_loss);
    for (name, before) in &snapshot {
        assert_eq!(&flat(bb.get(name).unwrap()), before, "{name} changed");
        let used = model.backbone().get(name).unwrap();
        assert_eq!(&flat(used), before);
    }
    assert_eq!(up.factors, model.factors().unwrap());
    for (a, b) in f0.iter().zip(&up.factors) {
        assert_ne!(a.b, b.b, "{} B did not move", a.name);
        assert_ne!(a.a, b.a, "{} A did not move", a.name);
    }
    assert_ne!(h0, up.head);
}

#[test]
fn head_only_and_full_modes_train_what_they_say() {
    let cfg = small_config();
    let bb = small_backbone(5);
    let (imgs, labels) = synthetic(&cfg, 8, 3, 3);
    let batch = Batch::new(&imgs, &labels, shape(&cfg, 8)).unwrap();

    let mut head_only = VitModel::new(bb.clone(), FineTuneMode::HeadOnly, 3, 1).unwrap();
    let h0 = head_only.head().unwrap();
    let up = LocalTrainer::new(adamw(1e-2))
        .unwrap()
        .train(&mut head_only, &[batch])
        .unwrap();
    assert!(up.factors.is_empty());
    assert_ne!(up.head, h0);

    let mut full = VitModel::new(bb.clone(), FineTuneMode::Full, 3, 1).unwrap();
    LocalTrainer::new(adamw(1e-2))
        .unwrap()
        .train(&mut full, &[batch])
        .unwrap();
    let trained = full.current_backbone().unwrap();
    let q = "blocks.0.attn.q.weight";
    assert_ne!(flat(trained.get(q).unwrap()), flat(bb.get(q).unwrap()));
    // The shared backbone itself is untouched by full fine-tuning.
    assert_eq!(
        flat(bb.get(q).unwrap()),
        flat(small_backbone(5).get(q).unwrap())
    );
}

#[test]
fn lora_learns_a_separable_task() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 64, 2, 11);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 64)).unwrap();
    let mut model = VitModel::new(
        small_backbone(6),
        FineTuneMode::Lora(LoraConfig::with_rank(4)),
        2,
        1,
    )
    .unwrap();
    let before = evaluate(&model, &data, 16).unwrap();
    let mut trainer = LocalTrainer::new(adamw(2e-2)).unwrap();
    for _ in 0..15 {
        let batches: Vec<Batch<'_>> = (0..4).map(|i| data.slice(16 * i, 16)).collect();
        trainer.train(&mut model, &batches).unwrap();
    }
    let after = evaluate(&model, &data, 16).unwrap();
    assert!(after.loss < before.loss * 0.5, "{before:?} → {after:?}");
    assert!(after.accuracy >= 0.9, "{after:?}");
}

#[test]
fn evaluation_matches_a_direct_computation() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 10, 3, 4);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 10)).unwrap();
    let model = VitModel::new(small_backbone(7), FineTuneMode::HeadOnly, 3, 1).unwrap();
    // Batches of 4 (4 + 4 + 2) against one pass over all ten images.
    let ev = evaluate(&model, &data, 4).unwrap();
    let x = Tensor::from_slice(&imgs, shape(&cfg, 10).to_vec(), &Device::Cpu).unwrap();
    let logits: Vec<Vec<f32>> = model.forward(&x).unwrap().to_vec2().unwrap();
    let mut correct = 0;
    let mut loss = 0.0f64;
    for (row, &l) in logits.iter().zip(&labels) {
        let m = row.iter().copied().fold(f32::MIN, f32::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
        loss += f64::from(lse - row[l as usize]);
        let arg = (0..row.len())
            .max_by(|&i, &j| row[i].total_cmp(&row[j]))
            .unwrap();
        correct += usize::from(arg == l as usize);
    }
    assert_eq!(ev.count, 10);
    assert!((ev.loss - loss / 10.0).abs() < 1e-5);
    assert!((ev.accuracy - correct as f64 / 10.0).abs() < 1e-12);
}

#[test]
fn kept_optimizer_state_belongs_to_one_model() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 4, 3, 4);
    let batch = Batch::new(&imgs, &labels, shape(&cfg, 4)).unwrap();
    let mut trainer = LocalTrainer::new(TrainOptions {
        keep_optimizer_state: true,
        ..adamw(1e-3)
    })
    .unwrap();
    let mut m1 = VitModel::new(small_backbone(1), FineTuneMode::HeadOnly, 3, 1).unwrap();
    let mut m2 = VitModel::new(small_backbone(1), FineTuneMode::HeadOnly, 3, 1).unwrap();
    trainer.train(&mut m1, &[batch]).unwrap();
    trainer.train(&mut m1, &[batch]).unwrap();
    assert!(matches!(
        trainer.train(&mut m2, &[batch]),
        Err(LoraError::ForeignOptimizerState)
    ));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 4, 3, 4);
    assert!(matches!(
        Batch::new(&imgs[1..], &labels, shape(&cfg, 4)),
        Err(LoraError::InvalidInput { what: "images", .. })
    ));
    assert!(matches!(
        Batch::new(&imgs, &labels[1..], shape(&cfg, 4)),
        Err(LoraError::InvalidInput { what: "labels", .. })
    ));
    let batch = Batch::new(&imgs, &labels, shape(&cfg, 4)).unwrap();
    let mut two_class = VitModel::new(small_backbone(1), FineTuneMode::HeadOnly, 2, 1).unwrap();
    let bad_labels = vec![0, 1, 2, 0];
    let b2 = Batch::new(&imgs, &bad_labels, shape(&cfg, 4)).unwrap();
    let mut trainer = LocalTrainer::new(adamw(1e-3)).unwrap();
    assert!(matches!(
        trainer.train(&mut two_class, &[b2]),
        Err(LoraError::InvalidInput { what: "labels", .. })
    ));
    assert!(matches!(
        trainer.train(&mut two_class, &[]),
        Err(LoraError::InvalidInput {
            what: "batches",
            ..
        })
    ));
    assert!(evaluate(&two_class, &batch, 0).is_err());
    let field = |o: TrainOptions| match LocalTrainer::new(o) {
        Err(LoraError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(adamw(0.0)), "optimizer.lr");
    assert_eq!(
        field(TrainOptions {
            zeta: -1.0,
            ..adamw(1e-3)
        }),
        "zeta"
    );
    assert_eq!(
        field(TrainOptions {
            optimizer: OptimizerKind::AdamW(AdamWParams {
                beta2: 1.0,
                ..AdamWParams::default()
            }),
            ..TrainOptions::default()
        }),
        "optimizer.beta2"
    );
}

/// Autograd gradients of the whole model (fused kernels included) against
/// central finite differences in f32, for a few entries of every trainable
/// variable, in LoRA mode (with non-zero B) and in full fine-tuning.
#[test]
fn model_gradients_match_finite_differences() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 6, 3, 8);
    let x = Tensor::from_slice(&imgs, shape(&cfg, 6).to_vec(), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&labels, 6, &Device::Cpu).unwrap();
    let lora = LoraConfig {
        rank: 2,
        alpha: 2.0,
        targets: LoraTarget::ALL.to_vec(),
    };
    for mode in [FineTuneMode::Lora(lora), FineTuneMode::Full] {
        let model = VitModel::new(small_backbone(12), mode.clone(), 3, 3).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut f = model.factors().unwrap();
        for af in &mut f {
            af.b = Array2::from_shape_fn(af.b.dim(), |_| rng.random_range(-0.5..0.5));
        }
        model.set_factors(&f).unwrap();
        let loss = |m: &VitModel| -> f64 {
            let logits = m.forward(&x).unwrap();
            let l = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            f64::from(l.to_scalar::<f32>().unwrap())
        };
        let logits = model.forward(&x).unwrap();
        let grads = candle_nn::loss::cross_entropy(&logits, &y)
            .unwrap()
            .backward()
            .unwrap();
        let mut checked = 0;
        for (vi, var) in model.trainable_vars().into_iter().enumerate() {
            let g = flat(grads.get(var.as_tensor()).unwrap());
            let v0 = flat(var.as_tensor());
            for _ in 0..3 {
                let i = rng.random_range(0..v0.len());
                let h = 2e-3f32;
                let mut vp = v0.clone();
                vp[i] += h;
                var.set(&Tensor::from_slice(&vp, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let lp = loss(&model);
                vp[i] -= 2.0 * h;
                var.set(&Tensor::from_slice(&vp, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let lm = loss(&model);
                var.set(&Tensor::from_slice(&v0, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let fd = (lp - lm) / (2.0 * f64::from(h));
                let ad = f64::from(g[i]);
                assert!(
                    (fd - ad).abs() <= 2e-3 + 3e-2 * ad.abs(),
                    "{mode:?} var #{vi} {:?} entry {i}: finite difference {fd}, autograd {ad}",
                    var.dims()
                );
                checked += 1;
            }
        }
        assert!(checked >= 3 * 4);
    }
}

#[test]
fn predict_features_frozen_a_and_merged_deltas() {
    use std::sync::Arc;
    use wflora_lora::{
        Backbone, Batch, FineTuneMode, LocalTrainer, LoraConfig, TrainOptions, VitConfig, VitModel,
        evaluate, features, predict,
    };
    let cfg = VitConfig::tiny();
    let backbone = Arc::new(Backbone::random(&cfg, 3).unwrap());
    let mut model = VitModel::new(
        backbone.clone(),
        FineTuneMode::Lora(LoraConfig::with_rank(2)),
        4,
        5,
    )
    .unwrap();
    let n = 6;
    let images: Vec<f32> = (0..n * 28 * 28)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
    let batch = Batch::new(&images, &labels, [n, 1, 28, 28]).unwrap();
    // Predictions reproduce evaluate's accuracy (batches of 4, so two calls).
    let pred = predict(&model, &batch, 4).unwrap();
    let acc = pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / n as f64;
    assert!((evaluate(&model, &batch, 4).unwrap().accuracy - acc).abs() < 1e-12);
    // Features are the class token of `tokens`.
    let f = features(&model, &batch, 4).unwrap();
    let x = candle_core::Tensor::from_slice(&images, (n, 1, 28, 28), &candle_core::Device::Cpu)
        .unwrap();
    let t = model.tokens(&x).unwrap().to_vec3::<f32>().unwrap();
    for i in 0..n {
        for j in 0..cfg.width {
            assert!((f[[i, j]] - t[i][0][j]).abs() < 1e-5);
        }
    }
    // With A frozen, training moves B and the head but never A.
    model.set_train_a(false);
    assert!(!model.trains_a());
    let a0: Vec<_> = model.factors().unwrap().into_iter().map(|f| f.a).collect();
    let mut trainer = LocalTrainer::new(TrainOptions::default()).unwrap();
    let u = trainer.train(&mut model, &[batch, batch]).unwrap();
    for (f, a) in u.factors.iter().zip(&a0) {
        assert_eq!(&f.a, a);
        assert!(f.b.iter().any(|v| *v != 0.0));
    }
    // with_added: W0 + Δ on the named layer, errors name the layer.
    let delta = ndarray::Array2::from_elem((cfg.width, cfg.width), 0.5f32);
    let merged = backbone
        .with_added(&[("blocks.1.attn.v".into(), delta.clone())])
        .unwrap();
    let w0 = backbone
        .get("blocks.1.attn.v.weight")
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let w1 = merged
        .get("blocks.1.attn.v.weight")
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!((w1[3][5] - w0[3][5] - 0.5).abs() < 1e-6);
    let err = backbone
        .with_added(&[("blocks.9.attn.v".into(), delta)])
        .unwrap_err();
    assert!(err.to_string().contains("blocks.9.attn.v"), "{err}");
    let wrong = ndarray::Array2::zeros((2, 2));
    let err = backbone
        .with_added(&[("blocks.0.attn.q".into(), wrong)])
        .unwrap_err();
    assert!(err.to_string().contains("blocks.0.attn.q"), "{err}");
}
