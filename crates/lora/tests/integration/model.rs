//! Model construction, sharing, factor exchange, configs and FLOP counts.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use ndarray::Array2;
use proptest::prelude::*;
use wflora_lora::{
    AdapterFactors, Backbone, FineTuneMode, LoraConfig, LoraError, LoraTarget, VitConfig, VitModel,
};

use crate::common::{flat, shape, small_backbone, small_config, synthetic};

fn images(n: usize) -> Tensor {
    let cfg = small_config();
    let (x, _) = synthetic(&cfg, n, 2, 9);
    Tensor::from_vec(x, shape(&cfg, n).to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn zero_b_init_equals_backbone_with_same_head() {
    let bb = small_backbone(1);
    let lora = VitModel::new(bb.clone(), FineTuneMode::Lora(LoraConfig::default()), 3, 4).unwrap();
    let plain = VitModel::new(bb, FineTuneMode::HeadOnly, 3, 5).unwrap();
    plain.set_head(&lora.head().unwrap()).unwrap();
    let x = images(4);
    assert_eq!(
        flat(&lora.forward(&x).unwrap()),
        flat(&plain.forward(&x).unwrap())
    );
}

#[test]
fn client_models_share_backbone_storage() {
    let bb = small_backbone(1);
    let before = Arc::strong_count(&bb);
    let m1 = VitModel::new(bb.clone(), FineTuneMode::Lora(LoraConfig::default()), 3, 1).unwrap();
    let m2 = VitModel::new(bb.clone(), FineTuneMode::HeadOnly, 3, 2).unwrap();
    assert_eq!(Arc::strong_count(&bb), before + 2);
    for m in [&m1, &m2] {
        let q = m.linear("blocks.1.attn.q").unwrap();
        assert_eq!(
            q.weight().id(),
            bb.get("blocks.1.attn.q.weight").unwrap().id()
        );
        let p = m.linear("patch_embed").unwrap();
        assert_eq!(p.weight().id(), bb.get("patch_embed.weight").unwrap().id());
    }
    // Full fine-tuning copies: its weights are fresh variables.
    let full = VitModel::new(bb.clone(), FineTuneMode::Full, 3, 1).unwrap();
    let q = full.linear("blocks.1.attn.q").unwrap();
    assert_ne!(
        q.weight().id(),
        bb.get("blocks.1.attn.q.weight").unwrap().id()
    );
    assert!(q.weight().is_variable());
}

#[test]
fn adapter_names_are_stable_and_ordered() {
    let lora = LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: vec![LoraTarget::Fc2, LoraTarget::Q, LoraTarget::O],
    };
    let m = VitModel::new(small_backbone(1), FineTuneMode::Lora(lora), 3, 1).unwrap();
    assert_eq!(
        m.adapter_names(),
        [
            "blocks.0.attn.q",
            "blocks.0.attn.o",
            "blocks.0.mlp.fc2",
            "blocks.1.attn.q",
            "blocks.1.attn.o",
            "blocks.1.mlp.fc2"
        ]
    );
    let f = m.factors().unwrap();
    assert_eq!(f[2].b.dim(), (8, 2));
    assert_eq!(f[2].a.dim(), (2, 16));
    assert!(m.linear("blocks.0.attn.k").unwrap().adapter().is_none());
    assert!(m.linear("blocks.7.attn.k").is_none());
}

#[test]
fn factor_and_head_exchange_round_trip_and_errors() {
    let m = VitModel::new(
        small_backbone(1),
        FineTuneMode::Lora(LoraConfig::with_rank(3)),
        4,
        1,
    )
    .unwrap();
    let mut f = m.factors().unwrap();
    for (i, af) in f.iter_mut().enumerate() {
        af.b = Array2::from_shape_fn(af.b.dim(), |(r, c)| (i + r * 3 + c) as f32 * 0.01);
        af.a = af.a.mapv(|v| -v);
    }
    m.set_factors(&f).unwrap();
    assert_eq!(m.factors().unwrap(), f);
    let mut head = m.head().unwrap();
    head.bias[1] = 2.5;
    head.weight[[3, 7]] = -1.0;
    m.set_head(&head).unwrap();
    assert_eq!(m.head().unwrap(), head);
    assert_eq!(head.len(), 4 * 8 + 4);

    let unknown = AdapterFactors {
        name: "blocks.0.attn.k".into(),
        ..f[0].clone()
    };
    assert!(matches!(
        m.set_factors(&[unknown]),
        Err(LoraError::InvalidInput { .. })
    ));
    let bad = AdapterFactors {
        b: Array2::zeros((8, 2)),
        ..f[1].clone()
    };
    let err = m.set_factors(&[f[0].clone(), bad]).unwrap_err();
    match err {
        LoraError::Shape { what, expected, .. } => {
            assert_eq!(what, format!("{}.B", f[1].name));
            assert_eq!(expected, vec![8, 3]);
        }
        other => panic!("unexpected {other}"),
    }
    // Nothing was written by the failed call.
    assert_eq!(m.factors().unwrap(), f);
    let mut bad_head = head.clone();
    bad_head.bias.push(0.0);
    assert!(matches!(
        m.set_head(&bad_head),
        Err(LoraError::Shape { .. })
    ));
}

#[test]
fn merged_backbone_reproduces_lora_model() {
    let bb = small_backbone(2);
    let lora = LoraConfig {
        rank: 2,
        alpha: 3.0,
        targets: LoraTarget::ALL.to_vec(),
    };
    let m = VitModel::new(bb, FineTuneMode::Lora(lora), 3, 1).unwrap();
    let mut f = m.factors().unwrap();
    for af in &mut f {
        af.b = Array2::from_shape_fn(af.b.dim(), |(r, c)| ((r + 2 * c) % 5) as f32 * 0.1 - 0.2);
    }
    m.set_factors(&f).unwrap();
    let merged = Arc::new(m.current_backbone().unwrap());
    let plain = VitModel::new(merged, FineTuneMode::HeadOnly, 3, 0).unwrap();
    plain.set_head(&m.head().unwrap()).unwrap();
    let x = images(3);
    let (a, b) = (
        flat(&m.forward(&x).unwrap()),
        flat(&plain.forward(&x).unwrap()),
    );
    let diff = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");
    // and the LoRA output differs from the bare backbone's
    let bare = VitModel::new(m.backbone().clone(), FineTuneMode::HeadOnly, 3, 0).unwrap();
    bare.set_head(&m.head().unwrap()).unwrap();
    assert_ne!(flat(&bare.forward(&x).unwrap()), a);
}

#[test]
fn wrong_image_shape_is_a_typed_error() {
    let m = VitModel::new(small_backbone(1), FineTuneMode::HeadOnly, 3, 1).unwrap();
    let x = Tensor::zeros((2, 1, 12, 12), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(m.forward(&x), Err(LoraError::Shape { .. })));
    assert!(matches!(
        VitModel::new(small_backbone(1), FineTuneMode::HeadOnly, 0, 1),
        Err(LoraError::InvalidConfig {
            field: "num_classes",
            ..
        })
    ));
}

#[test]
fn config_validation_names_the_field() {
    let field = |c: VitConfig| match c.validate() {
        Err(LoraError::InvalidConfig { field, .. }) => field,
        other => panic!("expected an error, got {other:?}"),
    };
    let base = small_config();
    assert_eq!(
        field(VitConfig {
            heads: 3,
            ..base.clone()
        }),
        "width"
    );
    assert_eq!(
        field(VitConfig {
            image_size: 10,
            ..base.clone()
        }),
        "image_size"
    );
    assert_eq!(
        field(VitConfig {
            depth: 0,
            ..base.clone()
        }),
        "depth"
    );
    assert_eq!(
        field(VitConfig {
            ln_eps: 0.0,
            ..base.clone()
        }),
        "ln_eps"
    );
    assert_eq!(
        field(VitConfig {
            layer_scale: Some(f64::NAN),
            ..base
        }),
        "layer_scale"
    );
    let lora_field = |l: LoraConfig| match l.validate() {
        Err(LoraError::InvalidConfig { field, .. }) => field,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(lora_field(LoraConfig::with_rank(0)), "lora.rank");
    assert_eq!(
        lora_field(LoraConfig {
            alpha: -1.0,
            ..LoraConfig::default()
        }),
        "lora.alpha"
    );
    assert_eq!(
        lora_field(LoraConfig {
            targets: vec![],
            ..LoraConfig::default()
        }),
        "lora.targets"
    );
    assert_eq!(
        lora_field(LoraConfig {
            targets: vec![LoraTarget::Q, LoraTarget::Q],
            ..LoraConfig::default()
        }),
        "lora.targets"
    );
    assert!(matches!(
        VitModel::new(
            small_backbone(1),
            FineTuneMode::Lora(LoraConfig::with_rank(0)),
            3,
            1
        ),
        Err(LoraError::InvalidConfig {
            field: "lora.rank",
            ..
        })
    ));
    assert!(VitConfig::preset("vit-h14").is_err());
    for name in wflora_lora::PRESET_NAMES {
        VitConfig::preset(name).unwrap().validate().unwrap();
    }
}

#[test]
fn config_serde_round_trip() {
    let c = VitConfig::vit_s14().with_image_size(56);
    let back: VitConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    let mode = FineTuneMode::Lora(LoraConfig::default());
    let back: FineTuneMode = serde_json::from_str(&serde_json::to_string(&mode).unwrap()).unwrap();
    assert_eq!(back, mode);
}

#[test]
fn preset_parameter_counts_match_the_published_models() {
    // ViT-B/16 at 224: 85.8 M backbone parameters (86.4 M with an ImageNet
    // head of 1000 classes, as commonly quoted); DINOv2 ViT-S/14 at 224:
    // 21.7 M with 257 position rows (the hub file stores 1370 rows for 518²).
    let b16 = VitConfig::vit_b16().backbone_params();
    assert_eq!(b16 + 768 * 1000 + 1000, 86_567_656);
    // tiny: embedding 64·49 + 64 + 64 + 17·64 = 4,352; per block LN 128 + q,k,v,o
    // 4·(4,096 + 64) + LN 128 + fc1 8,192 + 128 + fc2 8,192 + 64 = 33,472; ×4 + final LN 128.
    assert_eq!(
        VitConfig::tiny().backbone_params(),
        4_352 + 4 * 33_472 + 128
    );
    let s14 = VitConfig::vit_s14().backbone_params();
    assert!((21_600_000..21_800_000).contains(&s14), "{s14}");
}

#[test]
fn trainable_counts_match_the_models() {
    let cfg = small_config();
    let bb = small_backbone(1);
    let modes = [
        FineTuneMode::HeadOnly,
        FineTuneMode::Full,
        FineTuneMode::Lora(LoraConfig {
            rank: 3,
            alpha: 1.0,
            targets: vec![LoraTarget::K, LoraTarget::Fc1],
        }),
    ];
    for mode in modes {
        let m = VitModel::new(bb.clone(), mode.clone(), 5, 1).unwrap();
        assert_eq!(
            m.num_trainable(),
            cfg.trainable_params(&mode, 5),
            "{mode:?}"
        );
    }
    // LoRA by hand: 2 blocks × (k: 3·(8+8) + fc1: 3·(16+8)) + head 5·8+5 = 285.
    let mode = FineTuneMode::Lora(LoraConfig {
        rank: 3,
        alpha: 1.0,
        targets: vec![LoraTarget::K, LoraTarget::Fc1],
    });
    assert_eq!(cfg.trainable_params(&mode, 5), 285);
}

#[test]
fn flops_match_hand_count() {
    // small_config: T = 5, N = 4, D = 8, M = 16, P = 16, K = 3, depth 2.
    // patch 2·4·16·8 = 1024; per block linears 4·2·5·64 + 2·2·5·8·16 = 2560 + 2560
    // = 5120, attention 2·2·25·8 = 800; head 2·8·3 = 48.
    // LoRA r = 2 on q, v: 2 · 2·5·2·16 = 640 per block.
    let cfg = small_config();
    let head_only = 1024.0 + 2.0 * (5120.0 + 800.0) + 3.0 * 48.0;
    assert_eq!(cfg.flops_per_sample(&FineTuneMode::HeadOnly, 3), head_only);
    let lora = 1024.0 + 2.0 * (2.0 * 5120.0 + 3.0 * 800.0 + 3.0 * 640.0) + 3.0 * 48.0;
    let mode = FineTuneMode::Lora(LoraConfig::with_rank(2));
    assert_eq!(cfg.flops_per_sample(&mode, 3), lora);
    let full = 2.0 * 1024.0 + 2.0 * 3.0 * (5120.0 + 800.0) + 3.0 * 48.0;
    assert_eq!(cfg.flops_per_sample(&FineTuneMode::Full, 3), full);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// FLOPs grow linearly in the rank: c(r) = c(0⁺) + r·slope.
    #[test]
    fn flops_are_affine_in_rank(r in 1usize..64) {
        let cfg = VitConfig::vit_s14().with_image_size(56);
        let f = |r: usize| cfg.flops_per_sample(&FineTuneMode::Lora(LoraConfig::with_rank(r)), 10);
        let slope = f(2) - f(1);
        prop_assert!(slope > 0.0);
        let pred = f(1) + (r as f64 - 1.0) * slope;
        prop_assert!((f(r) - pred).abs() <= 1e-9 * pred);
        prop_assert!(f(r) > cfg.flops_per_sample(&FineTuneMode::HeadOnly, 10));
    }
}

#[test]
fn backbone_from_tensors_rejects_missing_and_extra() {
    let cfg = small_config();
    let bb = Backbone::random(&cfg, 1).unwrap();
    let mut map: std::collections::BTreeMap<String, Tensor> =
        bb.iter().map(|(n, t)| (n.to_owned(), t.clone())).collect();
    map.remove("blocks.1.ls2");
    match Backbone::from_tensors(&cfg, map.clone()).unwrap_err() {
        LoraError::MissingTensor { name, expected, .. } => {
            assert_eq!(name, "blocks.1.ls2");
            assert_eq!(expected, vec![8]);
        }
        other => panic!("{other}"),
    }
    map.insert(
        "blocks.1.ls2".into(),
        Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        Backbone::from_tensors(&cfg, map),
        Err(LoraError::Shape { .. })
    ));
}

#[test]
fn models_and_trainers_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<VitModel>();
    send_sync::<Backbone>();
    send::<wflora_lora::LocalTrainer>();
    // Two clients on one shared backbone, trained on two threads.
    let bb = small_backbone(3);
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 8, 3, 1);
    std::thread::scope(|s| {
        for seed in 0..2 {
            let bb = bb.clone();
            let (imgs, labels, cfg) = (&imgs, &labels, &cfg);
            s.spawn(move || {
                let mut m =
                    VitModel::new(bb, FineTuneMode::Lora(LoraConfig::with_rank(2)), 3, seed)
                        .unwrap();
                let batch = wflora_lora::Batch::new(imgs, labels, shape(cfg, 8)).unwrap();
                let mut t = wflora_lora::LocalTrainer::new(Default::default()).unwrap();
                t.train(&mut m, &[batch]).unwrap();
            });
        }
    });
}
