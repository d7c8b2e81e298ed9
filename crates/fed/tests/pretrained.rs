//! The pre-trained-backbone route of `Task::build` (the `real` and `paper`
//! profiles): a backbone file instead of pre-training, a dataset with its
//! own test split, stratified limits, the backbone's normalisation, and the
//! errors that name the field. Files are written here in their formats.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wflora_fed::{
    DatasetSource, PretrainedWeights, RunConfig, Simulation, Task, TaskConfig, WeightsFormat,
};
use wflora_lora::{Backbone, VitConfig};

fn idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    std::fs::write(path, v).unwrap();
}

/// `n` 28×28 images whose pixels are all `i % 251`, labels `i % 5`.
fn write_split(dir: &Path, prefix: &str, n: usize) {
    let pixels: Vec<u8> = (0..n)
        .flat_map(|i| vec![(i % 251) as u8; 28 * 28])
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 5) as u8).collect();
    idx(
        &dir.join(format!("{prefix}-images")),
        &[n as u32, 28, 28],
        &pixels,
    );
    idx(&dir.join(format!("{prefix}-labels")), &[n as u32], &labels);
}

/// A backbone tensor's values.
fn values(bb: &Backbone, name: &str) -> Vec<f32> {
    bb.get(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// One round of 2 IID clients, 1 local step of 8, on `task`.
fn one_round_sim(task_cfg: TaskConfig, task: Task) -> Simulation {
    let mut cfg = RunConfig::embedded_default();
    cfg.task = task_cfg;
    cfg.federation.clients = 2;
    cfg.federation.clients_per_round = 2;
    cfg.federation.rounds = 1;
    cfg.federation.partition = wflora_data::Scheme::Iid;
    cfg.local.steps = 1;
    cfg.local.batch_size = 8;
    Simulation::new(cfg, Arc::new(task)).unwrap()
}

fn config(dir: &Path) -> TaskConfig {
    let mut t = TaskConfig::embedded_default();
    t.dataset = DatasetSource::IdxSplit {
        train_images: dir.join("train-images"),
        train_labels: dir.join("train-labels"),
        test_images: dir.join("test-images"),
        test_labels: dir.join("test-labels"),
        num_classes: 5,
    };
    t.source_classes = Vec::new();
    t.pretrain.source_classes = 0;
    t.target_classes = vec![1, 2, 3];
    t.weights = Some(PretrainedWeights {
        path: dir.join("bb.safetensors"),
        format: WeightsFormat::Canonical,
        mean: vec![0.5],
        std: vec![0.25],
    });
    t.train_limit = Some(30);
    t.cache_dir = dir.join("cache");
    t
}

fn setup(name: &str) -> (std::path::PathBuf, Backbone) {
    let dir = std::env::temp_dir()
        .join(format!("wflora-fed-pretrained-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_split(&dir, "train", 100);
    write_split(&dir, "test", 25);
    let bb = Backbone::random(&VitConfig::tiny(), 11).unwrap();
    bb.save(&dir.join("bb.safetensors"), &HashMap::new())
        .unwrap();
    (dir, bb)
}

#[test]
fn a_backbone_file_and_own_test_split_build_a_task_that_trains() {
    let (dir, bb) = setup("build");
    let task = Task::build(&config(&dir)).unwrap();
    // 60 training images of classes 1–3, limited to a stratified 30.
    assert_eq!(task.train.len(), 30);
    assert_eq!(task.train.class_counts(), vec![10, 10, 10]);
    // The test file's 15 images of classes 1–3, all kept, relabelled 0..3.
    assert_eq!(task.test.len(), 15);
    assert_eq!(task.num_classes, 3);
    // Test image 0 is file image 1 (label 1 → 0), pixel 1/255, normalised
    // with the backbone's statistics.
    let px = task.test.image(0).unwrap()[0];
    let want = (1.0 / 255.0 - 0.5) / 0.25;
    assert!((px - want).abs() < 1e-6, "{px} vs {want}");
    assert_eq!(task.test.labels()[0], 0);
    assert_eq!(
        values(&task.backbone, "blocks.0.attn.q.weight"),
        values(&bb, "blocks.0.attn.q.weight")
    );
    // No pre-training happened: nothing was written to the cache.
    assert!(!dir.join("cache").exists());

    let mut sim = one_round_sim(config(&dir), task);
    let rec = sim.step().unwrap();
    assert!(rec.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
}

#[test]
fn bad_pretrained_settings_name_the_field() {
    let (dir, _) = setup("errors");
    let mut c = config(&dir);
    c.source_classes = vec![0];
    let e = Task::build(&c).unwrap_err().to_string();
    assert!(e.contains("task.source_classes"), "{e}");

    let mut c = config(&dir);
    c.weights.as_mut().unwrap().std = vec![0.0];
    let e = Task::build(&c).unwrap_err().to_string();
    assert!(e.contains("task.weights.std"), "{e}");

    let mut c = config(&dir);
    c.weights.as_mut().unwrap().path = dir.join("absent.safetensors");
    let e = Task::build(&c).unwrap_err().to_string();
    assert!(
        e.contains("task.weights.path") && e.contains("absent.safetensors"),
        "{e}"
    );

    // Three normalisation values for a one-channel backbone.
    let mut c = config(&dir);
    let w = c.weights.as_mut().unwrap();
    w.mean = vec![0.5; 3];
    w.std = vec![0.25; 3];
    let e = Task::build(&c).unwrap_err().to_string();
    assert!(
        e.contains("task.weights.mean") && e.contains("channels"),
        "{e}"
    );

    let mut c = config(&dir);
    c.train_limit = Some(2);
    let e = Task::build(&c).unwrap_err().to_string();
    assert!(e.contains("task.train_limit"), "{e}");

    // A dataset with its own test split needs a pre-trained backbone.
    let mut c = config(&dir);
    c.weights = None;
    c.source_classes = vec![0];
    c.pretrain.source_classes = 1;
    let e = Task::build(&c).unwrap_err().to_string();
    assert!(e.contains("task.dataset"), "{e}");
}

/// A Hugging Face `ViTModel` checkpoint of `bb` (names spelled out by hand).
fn write_hf_vit(bb: &Backbone, path: &Path) {
    let cfg = bb.config();
    let (d, c, p) = (cfg.width, cfg.in_channels, cfg.patch_size);
    let get = |n: &str| {
        bb.get(n)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let mut e: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        (
            "vit.embeddings.patch_embeddings.projection.weight".into(),
            vec![d, c, p, p],
            get("patch_embed.weight"),
        ),
        (
            "vit.embeddings.patch_embeddings.projection.bias".into(),
            vec![d],
            get("patch_embed.bias"),
        ),
        (
            "vit.embeddings.cls_token".into(),
            vec![1, 1, d],
            get("cls_token"),
        ),
        (
            "vit.embeddings.position_embeddings".into(),
            vec![1, cfg.num_tokens(), d],
            get("pos_embed"),
        ),
        ("vit.layernorm.weight".into(), vec![d], get("norm.weight")),
        ("vit.layernorm.bias".into(), vec![d], get("norm.bias")),
    ];
    for i in 0..cfg.depth {
        let (h, b) = (format!("vit.encoder.layer.{i}"), format!("blocks.{i}"));
        for (hf, canon) in [
            ("layernorm_before", "norm1"),
            ("layernorm_after", "norm2"),
            ("attention.attention.query", "attn.q"),
            ("attention.attention.key", "attn.k"),
            ("attention.attention.value", "attn.v"),
            ("attention.output.dense", "attn.o"),
            ("intermediate.dense", "mlp.fc1"),
            ("output.dense", "mlp.fc2"),
        ] {
            for wb in ["weight", "bias"] {
                let name = format!("{b}.{canon}.{wb}");
                let shape = bb.get(&name).unwrap().dims().to_vec();
                e.push((format!("{h}.{hf}.{wb}"), shape, get(&name)));
            }
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = e
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// CIFAR-100 binary records: coarse byte, fine byte, 3×32×32 pixel bytes.
fn write_cifar100(path: &Path, n: usize, offset: usize) {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(((i + offset) % 20) as u8);
        v.push(((i + offset) % 100) as u8);
        v.extend(std::iter::repeat_n(((i * 7) % 256) as u8, 3 * 32 * 32));
    }
    std::fs::write(path, v).unwrap();
}

#[test]
fn the_paper_formats_cifar100_binary_and_a_hugging_face_vit_load_and_train() {
    let dir = std::env::temp_dir()
        .join(format!("wflora-fed-pretrained-{}", std::process::id()))
        .join("paper");
    std::fs::create_dir_all(&dir).unwrap();
    write_cifar100(&dir.join("train.bin"), 300, 0);
    write_cifar100(&dir.join("test.bin"), 100, 3);
    // The tiny preset with colour input stands in for ViT-B/16 (same naming).
    let mut vit = VitConfig::tiny();
    vit.in_channels = 3;
    let bb = Backbone::random(&vit, 5).unwrap();
    write_hf_vit(&bb, &dir.join("model.safetensors"));

    let mut t = TaskConfig::embedded_default();
    t.dataset = DatasetSource::Cifar {
        train: vec![dir.join("train.bin")],
        test: dir.join("test.bin"),
        format: wflora_data::CifarFormat::Cifar100Fine,
    };
    t.source_classes = Vec::new();
    t.pretrain.source_classes = 0;
    t.target_classes = (0..100).collect();
    t.weights = Some(PretrainedWeights {
        path: dir.join("model.safetensors"),
        format: WeightsFormat::HfVit,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
    });
    t.cache_dir = dir.join("cache");
    let task = Task::build(&t).unwrap();
    assert_eq!(
        (task.train.len(), task.test.len(), task.num_classes),
        (300, 100, 100)
    );
    assert_eq!(task.vit.in_channels, 3);
    assert_eq!(task.train.height(), 28);
    // Test record 0 has fine label 3 and pixel byte 0 → (0 − 0.5)/0.5 = −1.
    assert_eq!(task.test.labels()[0], 3);
    assert!((task.test.image(0).unwrap()[0] + 1.0).abs() < 1e-6);
    assert_eq!(
        values(&task.backbone, "blocks.3.mlp.fc2.weight"),
        values(&bb, "blocks.3.mlp.fc2.weight")
    );

    let mut sim = one_round_sim(t, task);
    assert!(sim.step().unwrap().accuracy.is_some());
}
