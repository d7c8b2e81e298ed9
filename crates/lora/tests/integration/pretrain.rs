//! Pre-training and its cache.

use std::path::PathBuf;

use wflora_lora::{
    Batch, LoraError, PretrainProgress, PretrainSchedule, cached_pretrain,
    cached_pretrain_with_progress, pretrain, pretrain_cache_key, pretrain_with_progress,
};

use crate::common::{flat, shape, small_config, synthetic};

fn schedule() -> PretrainSchedule {
    PretrainSchedule {
        steps: 40,
        batch_size: 16,
        lr: 1e-2,
        weight_decay: 0.01,
        warmup_steps: 4,
        source_classes: 3,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wflora-lora-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn learning_rate_schedule_by_hand() {
    let s = PretrainSchedule {
        steps: 6,
        warmup_steps: 2,
        lr: 1.0,
        ..schedule()
    };
    // warm-up (t+1)/2; then ½(1 + cos(π·(t−2)/4)).
    let expect = [
        0.5,
        1.0,
        1.0,
        0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()),
        0.5,
        0.5 * (1.0 + (3.0 * std::f64::consts::PI / 4.0).cos()),
    ];
    for (t, e) in expect.iter().enumerate() {
        assert!((s.lr_at(t) - e).abs() < 1e-12, "t = {t}");
    }
    let field = |s: PretrainSchedule| match s.validate() {
        Err(LoraError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(PretrainSchedule {
            steps: 0,
            ..schedule()
        }),
        "schedule.steps"
    );
    assert_eq!(
        field(PretrainSchedule {
            warmup_steps: 41,
            ..schedule()
        }),
        "schedule.warmup_steps"
    );
    assert_eq!(
        field(PretrainSchedule {
            source_classes: 0,
            ..schedule()
        }),
        "schedule.source_classes"
    );
}

#[test]
fn pretraining_learns_and_is_deterministic() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 64, 3, 21);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 64)).unwrap();
    let a = pretrain(&cfg, &data, &schedule(), 5).unwrap();
    assert!(
        a.final_loss < 0.5 * 3f64.ln(),
        "final loss {}",
        a.final_loss
    );
    let b = pretrain(&cfg, &data, &schedule(), 5).unwrap();
    for ((n1, t1), (_, t2)) in a.backbone.iter().zip(b.backbone.iter()) {
        assert_eq!(flat(t1), flat(t2), "{n1}");
    }
    let bad_labels = vec![3u32; 64];
    let bad = Batch::new(&imgs, &bad_labels, shape(&cfg, 64)).unwrap();
    assert!(matches!(
        pretrain(&cfg, &bad, &schedule(), 5),
        Err(LoraError::InvalidInput { what: "labels", .. })
    ));
}

#[test]
fn cache_hit_returns_identical_weights_and_bad_files_are_errors() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 32, 3, 22);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 32)).unwrap();
    let sched = PretrainSchedule {
        steps: 6,
        warmup_steps: 1,
        ..schedule()
    };
    let dir = temp_dir("cache");
    let first = cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap();
    assert!(!first.from_cache);
    assert!(first.path.exists());
    let second = cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap();
    assert!(second.from_cache);
    assert_eq!(second.path, first.path);
    assert_eq!(second.final_loss.to_bits(), first.final_loss.to_bits());
    for ((n1, t1), (n2, t2)) in first.backbone.iter().zip(second.backbone.iter()) {
        assert_eq!(n1, n2);
        assert_eq!(flat(t1), flat(t2), "{n1}");
    }
    // The key depends on the seed and on the data bytes.
    let k1 = pretrain_cache_key(&cfg, &data, &sched, 1).unwrap();
    assert_ne!(k1, pretrain_cache_key(&cfg, &data, &sched, 2).unwrap());
    let mut imgs2 = imgs.clone();
    imgs2[7] += 1e-3;
    let data2 = Batch::new(&imgs2, &labels, shape(&cfg, 32)).unwrap();
    assert_ne!(k1, pretrain_cache_key(&cfg, &data2, &sched, 1).unwrap());
    assert!(
        first
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(&k1[..32])
    );

    // One flipped bit in the tensor data (the last byte: a weight, past
    // the header) is an error naming the file and how to rebuild it, and
    // the file is left as it is; so is NaN written over a weight.
    let bytes = std::fs::read(&first.path).unwrap();
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x01;
    std::fs::write(&first.path, &flipped).unwrap();
    match cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap_err() {
        e @ LoraError::CorruptCache { .. } => {
            let msg = e.to_string();
            assert!(msg.contains(&first.path.display().to_string()), "{msg}");
            assert!(msg.contains("SHA-256"), "{msg}");
            assert!(msg.contains("delete it and run again"), "{msg}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read(&first.path).unwrap(), flipped);
    let mut nan = bytes.clone();
    let n = nan.len();
    nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&first.path, &nan).unwrap();
    assert!(matches!(
        cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap_err(),
        LoraError::CorruptCache { .. }
    ));
    // A file of ours without a checksum (as older versions wrote) is refused.
    let mut meta = std::collections::HashMap::from([
        (
            wflora_lora::META_KIND.to_owned(),
            wflora_lora::KIND_PRETRAINED.to_owned(),
        ),
        (wflora_lora::META_KEY.to_owned(), k1.clone()),
        (
            wflora_lora::META_FINAL_LOSS.to_owned(),
            first.final_loss.to_string(),
        ),
    ]);
    std::fs::write(
        &first.path,
        first.backbone.to_safetensors_bytes(&meta).unwrap(),
    )
    .unwrap();
    match cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap_err() {
        LoraError::CorruptCache { reason, .. } => {
            assert!(reason.contains("no checksum"), "{reason}")
        }
        other => panic!("{other}"),
    }
    // The checksum is what the crate documents: recomputed here from the
    // file's own bytes by the public function, it lets the file load again.
    let draft = first.backbone.to_safetensors_bytes(&meta).unwrap();
    let header = u64::from_le_bytes(draft[..8].try_into().unwrap()) as usize;
    meta.insert(
        wflora_lora::META_SHA256.to_owned(),
        wflora_lora::cache_checksum(&k1, &first.final_loss.to_string(), &draft[8 + header..]),
    );
    std::fs::write(
        &first.path,
        first.backbone.to_safetensors_bytes(&meta).unwrap(),
    )
    .unwrap();
    assert!(
        cached_pretrain(&dir, &cfg, &data, &sched, 1)
            .unwrap()
            .from_cache
    );
    std::fs::write(&first.path, &bytes).unwrap();

    // A truncated file is an error naming it, and is left as it is.
    std::fs::write(&first.path, &bytes[..bytes.len() / 2]).unwrap();
    match cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap_err() {
        LoraError::CorruptCache { path, .. } => assert_eq!(path, first.path),
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read(&first.path).unwrap().len(), bytes.len() / 2);

    // A valid safetensors file that is not ours is refused too.
    first
        .backbone
        .save(&first.path, &Default::default())
        .unwrap();
    match cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap_err() {
        LoraError::CorruptCache { reason, .. } => {
            assert!(reason.contains("not a wflora"), "{reason}")
        }
        other => panic!("{other}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_misses_of_one_key_all_succeed() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 32, 3, 23);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 32)).unwrap();
    let sched = PretrainSchedule {
        steps: 4,
        warmup_steps: 1,
        ..schedule()
    };
    let dir = temp_dir("race");
    let barrier = std::sync::Barrier::new(3);
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    cached_pretrain(&dir, &cfg, &data, &sched, 1)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let runs: Vec<_> = runs.into_iter().map(|r| r.unwrap()).collect();
    // One file, no temporary left behind, and every run's weights equal to
    // what a later hit reads.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let hit = cached_pretrain(&dir, &cfg, &data, &sched, 1).unwrap();
    assert!(hit.from_cache);
    for run in &runs {
        assert_eq!(run.path, hit.path);
        for ((n1, t1), (_, t2)) in run.backbone.iter().zip(hit.backbone.iter()) {
            assert_eq!(flat(t1), flat(t2), "{n1}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn progress_reports_every_step_and_the_cache_hit_without_changing_the_result() {
    let cfg = small_config();
    let (imgs, labels) = synthetic(&cfg, 32, 3, 23);
    let data = Batch::new(&imgs, &labels, shape(&cfg, 32)).unwrap();
    let sched = PretrainSchedule {
        steps: 5,
        warmup_steps: 1,
        ..schedule()
    };
    let mut steps = Vec::new();
    let watched = pretrain_with_progress(&cfg, &data, &sched, 3, &mut |p| match p {
        PretrainProgress::Step { done, total, loss } => steps.push((*done, *total, *loss)),
        PretrainProgress::CacheHit { path } => panic!("no cache here, got {}", path.display()),
    })
    .unwrap();
    assert_eq!(
        steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    );
    assert!(
        steps.iter().all(|s| s.2.is_finite() && s.2 > 0.0),
        "{steps:?}"
    );
    // The last tenth of 5 steps is the last step: its loss is the final loss.
    assert_eq!(steps[4].2.to_bits(), watched.final_loss.to_bits());
    let plain = pretrain(&cfg, &data, &sched, 3).unwrap();
    assert_eq!(plain.final_loss.to_bits(), watched.final_loss.to_bits());
    for ((n1, t1), (_, t2)) in plain.backbone.iter().zip(watched.backbone.iter()) {
        assert_eq!(flat(t1), flat(t2), "{n1}");
    }

    let dir = temp_dir("progress");
    let mut events = Vec::new();
    let mut record = |p: &PretrainProgress<'_>| {
        events.push(match p {
            PretrainProgress::CacheHit { path } => format!("hit {}", path.display()),
            PretrainProgress::Step { done, total, .. } => format!("step {done}/{total}"),
        });
    };
    let miss = cached_pretrain_with_progress(&dir, &cfg, &data, &sched, 3, &mut record).unwrap();
    assert!(!miss.from_cache);
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[4], "step 5/5");
    events.clear();
    let mut record = |p: &PretrainProgress<'_>| {
        events.push(match p {
            PretrainProgress::CacheHit { path } => format!("hit {}", path.display()),
            PretrainProgress::Step { done, total, .. } => format!("step {done}/{total}"),
        });
    };
    let hit = cached_pretrain_with_progress(&dir, &cfg, &data, &sched, 3, &mut record).unwrap();
    assert!(hit.from_cache);
    assert_eq!(events, [format!("hit {}", hit.path.display())]);
    let _ = std::fs::remove_dir_all(&dir);
}
