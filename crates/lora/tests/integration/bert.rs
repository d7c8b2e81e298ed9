//! The BERT text encoder against an independent NumPy implementation
//! (`tests/reference/bert_reference.py tiny`, float64), LoRA on it, and the
//! loader's errors.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{
    AdamWParams, Backbone, Batch, FineTuneMode, LocalTrainer, LoraConfig, LoraError, LoraTarget,
    OptimizerKind, TextStem, TrainOptions, VitConfig, VitModel, bert_config_from_hf, evaluate,
    load_hf_bert, load_hf_bert_bytes,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

struct Expected {
    ids: Vec<Vec<u32>>,
    hidden: Vec<Vec<Vec<f64>>>,
    pooled: Vec<Vec<f64>>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = serde_json::from_value(v["ids"].clone()).unwrap();
    let hidden = serde_json::from_value(v["last_hidden_state"].clone()).unwrap();
    let pooled = serde_json::from_value(v["mean_pooled"].clone()).unwrap();
    Expected {
        ids,
        hidden,
        pooled,
    }
}

fn ids_tensor(ids: &[u32]) -> Tensor {
    Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap()
}

#[test]
fn tiny_bert_matches_the_numpy_reference() {
    let e = expected();
    let bb = Arc::new(load_hf_bert(&fixture(), 6).unwrap());
    assert!(bb.config().is_text());
    let model = VitModel::new(bb, FineTuneMode::HeadOnly, 3, 0).unwrap();
    for (s, ids) in e.ids.iter().enumerate() {
        let t = model.tokens(&ids_tensor(ids)).unwrap();
        let got: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
        for (row, want) in got[0].iter().zip(&e.hidden[s]) {
            for (g, w) in row.iter().zip(want) {
                assert!((f64::from(*g) - w).abs() < 2e-5, "hidden {g} vs {w}");
            }
        }
        let p: Vec<Vec<f32>> = model.pooled(&ids_tensor(ids)).unwrap().to_vec2().unwrap();
        for (g, w) in p[0].iter().zip(&e.pooled[s]) {
            assert!((f64::from(*g) - w).abs() < 2e-5, "pooled {g} vs {w}");
        }
    }
    // A batch of both sequences gives the rows of the single ones.
    let flat: Vec<u32> = e.ids.concat();
    let both = Tensor::from_slice(&flat, (2, 6), &Device::Cpu).unwrap();
    let p: Vec<Vec<f32>> = model.pooled(&both).unwrap().to_vec2().unwrap();
    for (row, want) in p.iter().zip(&e.pooled) {
        for (g, w) in row.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 2e-5);
        }
    }
}

fn tiny_text_config(seq_len: usize) -> VitConfig {
    VitConfig::bert(
        TextStem {
            vocab_size: 40,
            max_positions: 16,
            type_vocab_size: 2,
            seq_len,
        },
        8,
        2,
        2,
        16,
    )
}

/// Class `c` sequences contain token `10 + c` among random tokens `20..40`.
fn token_task(n: usize, seq_len: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let c = rng.random_range(0..3u32);
        let at = rng.random_range(1..seq_len - 1);
        for i in 0..seq_len {
            ids.push(match i {
                0 => 2,
                i if i == seq_len - 1 => 3,
                i if i == at => 10 + c,
                _ => rng.random_range(20..40),
            });
        }
        labels.push(c);
    }
    (ids, labels)
}

#[test]
fn lora_on_a_text_encoder_starts_as_the_backbone_and_learns() {
    let cfg = tiny_text_config(8);
    let bb = Arc::new(Backbone::random(&cfg, 5).unwrap());
    let lora = FineTuneMode::Lora(LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    });
    let mut model = VitModel::new(bb.clone(), lora, 3, 1).unwrap();
    let frozen = VitModel::new(bb, FineTuneMode::HeadOnly, 3, 1).unwrap();
    assert_eq!(
        model.adapter_names(),
        [
            "blocks.0.attn.q",
            "blocks.0.attn.v",
            "blocks.1.attn.q",
            "blocks.1.attn.v"
        ]
    );
    let (ids, labels) = token_task(96, 8, 2);
    let x = Tensor::from_slice(&ids[..16], (2, 8), &Device::Cpu).unwrap();
    let a: Vec<Vec<f32>> = model.pooled(&x).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = frozen.pooled(&x).unwrap().to_vec2().unwrap();
    assert_eq!(a, b, "B = 0: the adapters change nothing yet");

    let data = Batch::tokens(&ids, &labels, 8).unwrap();
    let before = evaluate(&model, &data, 32).unwrap();
    let batches: Vec<Batch<'_>> = (0..3).map(|i| data.slice(32 * i, 32)).collect();
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams {
            lr: 2e-2,
            ..AdamWParams::default()
        }),
        keep_optimizer_state: true,
        ..TrainOptions::default()
    })
    .unwrap();
    for _ in 0..30 {
        trainer.train(&mut model, &batches).unwrap();
    }
    let after = evaluate(&model, &data, 32).unwrap();
    assert!(
        after.loss < 0.7 * before.loss && after.accuracy > 0.6,
        "loss {} -> {}, accuracy {} -> {}",
        before.loss,
        after.loss,
        before.accuracy,
        after.accuracy
    );
    assert!(
        model
            .factors()
            .unwrap()
            .iter()
            .all(|f| f.b.iter().any(|&v| v != 0.0))
    );
}

#[test]
fn gradient_of_b_through_post_norm_blocks_matches_finite_differences() {
    let cfg = tiny_text_config(6);
    let bb = Arc::new(Backbone::random(&cfg, 9).unwrap());
    let lora = FineTuneMode::Lora(LoraConfig {
        rank: 2,
        alpha: 2.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    });
    let model = VitModel::new(bb, lora, 3, 4).unwrap();
    // Move B off zero so that the gradient of A's side is exercised too.
    let mut rng = StdRng::seed_from_u64(3);
    let mut factors = model.factors().unwrap();
    for f in &mut factors {
        f.b.mapv_inplace(|_| rng.random_range(-0.5..0.5));
    }
    model.set_factors(&factors).unwrap();
    let (ids, labels) = token_task(4, 6, 8);
    let x = Tensor::from_slice(&ids, (4, 6), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&labels, 4, &Device::Cpu).unwrap();
    let loss = |m: &VitModel| -> f64 {
        let l = candle_nn::loss::cross_entropy(&m.forward(&x).unwrap(), &y).unwrap();
        f64::from(l.to_scalar::<f32>().unwrap())
    };
    let l = candle_nn::loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
    let grads = l.backward().unwrap();
    let var = model
        .linear("blocks.0.attn.v")
        .unwrap()
        .adapter()
        .unwrap()
        .b_var()
        .clone();
    let g: Vec<Vec<f32>> = grads.get(&var).unwrap().to_vec2().unwrap();
    let base: Vec<Vec<f32>> = var.as_tensor().to_vec2().unwrap();
    let h = 1e-2f32;
    for (i, j) in [(0, 0), (3, 1), (7, 0)] {
        let mut plus = base.clone();
        plus[i][j] += h;
        let mut minus = base.clone();
        minus[i][j] -= h;
        let set = |m: &Vec<Vec<f32>>| {
            let flat: Vec<f32> = m.concat();
            var.set(&Tensor::from_vec(flat, (8, 2), &Device::Cpu).unwrap())
                .unwrap();
        };
        set(&plus);
        let lp = loss(&model);
        set(&minus);
        let lm = loss(&model);
        set(&base);
        let fd = (lp - lm) / (2.0 * f64::from(h));
        let an = f64::from(g[i][j]);
        assert!(
            (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
            "dL/dB[{i}][{j}]: finite difference {fd}, autograd {an}"
        );
    }
}

#[test]
fn bad_token_inputs_and_checkpoints_are_clear_errors() {
    let bb = Arc::new(load_hf_bert(&fixture(), 6).unwrap());
    let model = VitModel::new(bb, FineTuneMode::HeadOnly, 2, 0).unwrap();
    // An id outside the vocabulary of 50.
    let err = model.forward(&ids_tensor(&[2, 50, 3])).unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    // Longer than the 16 learned positions.
    let err = model.forward(&ids_tensor(&[1; 17])).unwrap_err();
    assert!(err.to_string().contains("token ids"), "{err}");
    // Images into a text encoder.
    let img = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward(&img).is_err());
    // Mismatched batch.
    assert!(Batch::tokens(&[1, 2, 3], &[0], 2).is_err());
    assert!(Batch::tokens(&[1, 2], &[0], 0).is_err());

    // A config with another activation, or one that is not JSON.
    let cfg = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let relu = cfg.replace("\"gelu\"", "\"relu\"");
    let err = bert_config_from_hf(&relu, 6, "config.json").unwrap_err();
    assert!(err.to_string().contains("hidden_act"), "{err}");
    assert!(bert_config_from_hf("{", 6, "config.json").is_err());
    // seq_len beyond the positions.
    let err = bert_config_from_hf(&cfg, 17, "config.json").unwrap_err();
    assert!(err.to_string().contains("seq_len"), "{err}");

    // A truncated checkpoint, and one with a wrong shape.
    let config = bert_config_from_hf(&cfg, 6, "config.json").unwrap();
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let err =
        load_hf_bert_bytes(&bytes[..bytes.len() / 2], &config, "half.safetensors").unwrap_err();
    assert!(err.to_string().contains("half.safetensors"), "{err}");
    let mut wide = config.clone();
    wide.mlp_dim = 32;
    let err = load_hf_bert_bytes(&bytes, &wide, "m.safetensors").unwrap_err();
    assert!(matches!(err, LoraError::Shape { .. }), "{err}");
    // A ViT configuration is refused.
    assert!(load_hf_bert_bytes(&bytes, &VitConfig::tiny(), "m").is_err());
    // A missing directory names the file.
    let err = load_hf_bert(&fixture().join("nope"), 6).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn text_configs_validate_and_count() {
    let cfg = VitConfig::minilm_l6(128);
    cfg.validate().unwrap();
    assert_eq!(cfg.num_tokens(), 128);
    // 22.7M parameters: embeddings (30522 + 512 + 2)·384 + 2·384, six
    // blocks of 4·(384² + 384) + 2·384·1536 + 1536 + 384 + 4·384 (no pooler).
    let d = 384usize;
    let embed = (30_522 + 512 + 2) * d + 2 * d;
    let block = 4 * (d * d + d) + (1536 * d + 1536) + (d * 1536 + d) + 4 * d;
    assert_eq!(cfg.backbone_params(), embed + 6 * block);
    let bb = Backbone::random(&tiny_text_config(8), 0).unwrap();
    assert_eq!(bb.num_params(), tiny_text_config(8).backbone_params());
    let mut bad = tiny_text_config(8);
    bad.patch_size = 2;
    assert!(bad.validate().is_err());
    let mut bad = tiny_text_config(8);
    bad.text = Some(TextStem {
        seq_len: 0,
        ..bad.text.unwrap()
    });
    assert!(bad.validate().is_err());
}
