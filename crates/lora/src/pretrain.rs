//! Pre-training of the default backbone on a source task, with a content-keyed cache.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backbone::Backbone;
use crate::config::{FineTuneMode, VitConfig};
use crate::error::{LoraError, Result};
use crate::model::VitModel;
use crate::train::{AdamWParams, Batch, LocalTrainer, OptimizerKind, TrainOptions};

/// Metadata key marking our cache files.
pub const META_KIND: &str = "wflora.kind";
/// Value of [`META_KIND`] for pre-trained backbones.
pub const KIND_PRETRAINED: &str = "pretrained-backbone";
/// Metadata key holding the full cache key.
pub const META_KEY: &str = "wflora.key";
/// Metadata key holding the mean loss of the last tenth of the steps.
pub const META_FINAL_LOSS: &str = "wflora.final_loss";
/// Metadata key holding the file's checksum: SHA-256 (hex) over the cache
/// key, the recorded final loss and the whole tensor data section (see
/// [`cache_checksum`]). Verified on every load.
pub const META_SHA256: &str = "wflora.sha256";

/// How to pre-train: AdamW on random mini-batches (epoch-wise shuffles) of
/// the source set, linear warm-up then cosine decay of the learning rate to 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSchedule {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up steps (≤ `steps`).
    pub warmup_steps: usize,
    /// Classes of the source task (labels must be below it).
    pub source_classes: usize,
}

impl PretrainSchedule {
    /// Checks every field.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(LoraError::InvalidConfig { field, reason });
        if self.steps == 0 {
            return bad("schedule.steps", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("schedule.batch_size", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("schedule.lr", format!("{} must be finite and > 0", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "schedule.weight_decay",
                format!("{} must be finite and ≥ 0", self.weight_decay),
            );
        }
        if self.warmup_steps > self.steps {
            return bad(
                "schedule.warmup_steps",
                format!("{} exceeds steps {}", self.warmup_steps, self.steps),
            );
        }
        if self.source_classes == 0 {
            return bad("schedule.source_classes", "must be at least 1".into());
        }
        Ok(())
    }

    /// Learning rate of step `t` (0-based): `lr·(t+1)/warmup` during warm-up,
    /// then `lr·½(1 + cos(π·s))` with `s` the fraction of the remaining steps done.
    #[must_use]
    pub fn lr_at(&self, t: usize) -> f64 {
        if t < self.warmup_steps {
            return self.lr * (t + 1) as f64 / self.warmup_steps as f64;
        }
        let rest = (self.steps - self.warmup_steps).max(1) as f64;
        let s = (t - self.warmup_steps) as f64 / rest;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * s).cos())
    }
}

/// The result of [`pretrain`].
#[derive(Clone, Debug)]
pub struct PretrainOutcome {
    /// The trained backbone (the source head is dropped).
    pub backbone: Arc<Backbone>,
    /// Mean training loss over the last tenth of the steps.
    pub final_loss: f64,
}

/// What pre-training reports to the callback of [`pretrain_with_progress`]
/// and [`cached_pretrain_with_progress`] (for a progress display; it never
/// changes what is trained).
#[derive(Clone, Debug, PartialEq)]
pub enum PretrainProgress<'a> {
    /// The cache holds this backbone: it is loaded from `path`, nothing is
    /// trained (reported before the file is read and checked).
    CacheHit {
        /// The cache file.
        path: &'a Path,
    },
    /// One optimizer step finished.
    Step {
        /// Steps done so far (1 after the first step, `total` after the last).
        done: usize,
        /// Steps of the schedule.
        total: usize,
        /// Mean task loss of this step's mini-batch.
        loss: f64,
    },
}

/// Trains the whole ViT (every weight plus a source head) from a seeded
/// random init on `data` and returns the backbone.
///
/// # Errors
/// Invalid configuration or schedule, an empty set, labels not below
/// `source_classes`, or an image shape that does not match `config`.
pub fn pretrain(
    config: &VitConfig,
    data: &Batch<'_>,
    schedule: &PretrainSchedule,
    seed: u64,
) -> Result<PretrainOutcome> {
    pretrain_with_progress(config, data, schedule, seed, &mut |_| {})
}

/// As [`pretrain`], calling `on_progress` after every step
/// ([`PretrainProgress::Step`]). The callback only observes: the result is
/// the same as [`pretrain`]'s.
///
/// # Errors
/// As [`pretrain`].
pub fn pretrain_with_progress(
    config: &VitConfig,
    data: &Batch<'_>,
    schedule: &PretrainSchedule,
    seed: u64,
    on_progress: &mut dyn FnMut(&PretrainProgress<'_>),
) -> Result<PretrainOutcome> {
    config.validate()?;
    schedule.validate()?;
    if data.is_empty() {
        return Err(LoraError::InvalidInput {
            what: "pre-training set",
            reason: "no images".into(),
        });
    }
    let backbone = Arc::new(Backbone::random(config, seed)?);
    let mut model = VitModel::new(
        backbone,
        FineTuneMode::Full,
        schedule.source_classes,
        seed.wrapping_add(1),
    )?;
    let mut trainer = LocalTrainer::new(TrainOptions {
        optimizer: OptimizerKind::AdamW(AdamWParams {
            lr: schedule.lr,
            weight_decay: schedule.weight_decay,
            ..AdamWParams::default()
        }),
        keep_optimizer_state: true,
        ..TrainOptions::default()
    })?;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2));
    let [n, c, h, w] = data.shape();
    let per = c * h * w;
    let pixels = data.images().ok_or_else(|| LoraError::InvalidInput {
        what: "pre-training data",
        reason: "pre-training takes images, not token ids".into(),
    })?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut cursor = n;
    let bs = schedule.batch_size.min(n);
    let (mut images, mut labels) = (Vec::with_capacity(bs * per), Vec::with_capacity(bs));
    let tail_from = schedule.steps - schedule.steps.div_ceil(10);
    let (mut tail_sum, mut tail_n) = (0.0, 0usize);
    for step in 0..schedule.steps {
        images.clear();
        labels.clear();
        while labels.len() < bs {
            if cursor == n {
                order.shuffle(&mut rng);
                cursor = 0;
            }
            let i = order[cursor];
            cursor += 1;
            images.extend_from_slice(&pixels[i * per..(i + 1) * per]);
            labels.push(data.labels()[i]);
        }
        let batch = Batch::new(&images, &labels, [bs, c, h, w])?;
        trainer.set_lr(schedule.lr_at(step))?;
        let up = trainer.train(&mut model, &[batch])?;
        if step >= tail_from {
            tail_sum += up.mean_task_loss;
            tail_n += 1;
        }
        on_progress(&PretrainProgress::Step {
            done: step + 1,
            total: schedule.steps,
            loss: up.mean_task_loss,
        });
    }
    Ok(PretrainOutcome {
        backbone: Arc::new(model.current_backbone()?),
        final_loss: tail_sum / tail_n.max(1) as f64,
    })
}

/// The cache key of a pre-training run: SHA-256 (hex) over a version tag,
/// the JSON of `config` and `schedule`, the seed, the data shape and the
/// little-endian bytes of every image value and label.
///
/// # Errors
/// Serialisation errors only.
pub fn pretrain_cache_key(
    config: &VitConfig,
    data: &Batch<'_>,
    schedule: &PretrainSchedule,
    seed: u64,
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"wflora-pretrain-v2\0");
    h.update(json(config)?.as_bytes());
    h.update(b"\0");
    h.update(json(schedule)?.as_bytes());
    h.update(b"\0");
    h.update(seed.to_le_bytes());
    for d in data.shape() {
        h.update((d as u64).to_le_bytes());
    }
    for v in data.images().unwrap_or_default() {
        h.update(v.to_le_bytes());
    }
    for v in data.token_ids().unwrap_or_default() {
        h.update(v.to_le_bytes());
    }
    for l in data.labels() {
        h.update(l.to_le_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| LoraError::InvalidConfig {
        field: "cache key",
        reason: e.to_string(),
    })
}

/// A backbone from [`cached_pretrain`].
#[derive(Clone, Debug)]
pub struct CachedBackbone {
    /// The backbone.
    pub backbone: Arc<Backbone>,
    /// The cache file it was read from or written to.
    pub path: PathBuf,
    /// Whether it was read from the cache (no training happened).
    pub from_cache: bool,
    /// Mean training loss over the last tenth of the steps (recorded in the file).
    pub final_loss: f64,
}

/// [`pretrain`] with a cache: the weights live in
/// `cache_dir/pretrain-<first 32 hex digits of the key>.safetensors`
/// (key: [`pretrain_cache_key`]). A hit loads them; a miss trains and writes
/// the file atomically and without replacing anything: a temporary file of
/// its own, then a hard link to the cache path. Concurrent misses of one key
/// (threads or processes) each train; the first to finish writes the file,
/// the others check it as a hit would and return their own (equal) weights.
///
/// Every file records its checksum ([`META_SHA256`]), checked on every
/// load, so one flipped bit in the weights is an error rather than a
/// different result.
///
/// Policy for a bad file: an existing file at the cache path that does not
/// parse, is truncated, was not written by us, records another key, has no
/// checksum or fails it is an error ([`LoraError::CorruptCache`] naming the
/// file). It is never overwritten or retrained over silently: delete it to
/// retrain.
///
/// # Errors
/// As [`pretrain`], plus [`LoraError::Io`] and [`LoraError::CorruptCache`].
pub fn cached_pretrain(
    cache_dir: &Path,
    config: &VitConfig,
    data: &Batch<'_>,
    schedule: &PretrainSchedule,
    seed: u64,
) -> Result<CachedBackbone> {
    cached_pretrain_with_progress(cache_dir, config, data, schedule, seed, &mut |_| {})
}

/// As [`cached_pretrain`], telling `on_progress` about a cache hit
/// ([`PretrainProgress::CacheHit`]) or about every step of a miss's
/// training ([`pretrain_with_progress`]). The callback only observes: the
/// result is the same as [`cached_pretrain`]'s.
///
/// # Errors
/// As [`cached_pretrain`].
pub fn cached_pretrain_with_progress(
    cache_dir: &Path,
    config: &VitConfig,
    data: &Batch<'_>,
    schedule: &PretrainSchedule,
    seed: u64,
    on_progress: &mut dyn FnMut(&PretrainProgress<'_>),
) -> Result<CachedBackbone> {
    config.validate()?;
    schedule.validate()?;
    let key = pretrain_cache_key(config, data, schedule, seed)?;
    let path = cache_dir.join(format!("pretrain-{}.safetensors", &key[..32]));
    if path.exists() {
        on_progress(&PretrainProgress::CacheHit { path: &path });
        return load_cached(config, &path, &key);
    }
    let out = pretrain_with_progress(config, data, schedule, seed, on_progress)?;
    std::fs::create_dir_all(cache_dir).map_err(|source| LoraError::Io {
        path: cache_dir.to_owned(),
        source,
    })?;
    let loss = out.final_loss.to_string();
    let mut meta = HashMap::from([
        (META_KIND.to_owned(), KIND_PRETRAINED.to_owned()),
        (META_KEY.to_owned(), key.clone()),
        (META_FINAL_LOSS.to_owned(), loss.clone()),
    ]);
    // The data section does not depend on the metadata: serialise once to
    // learn it, then again with its checksum in the header.
    let draft = out.backbone.to_safetensors_bytes(&meta)?;
    let sum = data_section(&draft)
        .map(|d| cache_checksum(&key, &loss, d))
        .ok_or_else(|| LoraError::CorruptCache {
            path: path.clone(),
            reason: "the serialised backbone has no data section".into(),
        })?;
    meta.insert(META_SHA256.to_owned(), sum);
    let bytes = out.backbone.to_safetensors_bytes(&meta)?;
    let written = write_new(&path, &bytes).map_err(|source| LoraError::Io {
        path: path.clone(),
        source,
    })?;
    if !written {
        // Another run (a thread or a process) trained the same key and
        // wrote it first. Its file is checked as a hit would be, so a bad
        // file there is still an error, and ours is dropped.
        load_cached(config, &path, &key)?;
    }
    Ok(CachedBackbone {
        backbone: out.backbone,
        path,
        from_cache: false,
        final_loss: out.final_loss,
    })
}

/// Writes `bytes` to `path` only where no file is there yet, and returns
/// whether it did. The bytes go to a temporary file named for this process
/// and this call (so concurrent writers, threads of one process included,
/// never share one), are synced, and are then hard-linked to `path`: unlike a
/// rename, a link fails rather than replace a file that appeared meanwhile.
/// On a filesystem without hard links it falls back to a rename after a
/// check for `path` (a narrow window remains there). The temporary file is
/// removed in every case.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{call}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(_) if path.exists() => Ok(false),
            Err(_) => std::fs::rename(&tmp, path).map(|()| true),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// The checksum recorded under [`META_SHA256`]: SHA-256 (hex) over a tag,
/// the cache key, the recorded final loss (as written) and the tensor data
/// section of the safetensors file (every byte after its header).
#[must_use]
pub fn cache_checksum(key: &str, final_loss: &str, data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"wflora-pretrain-file-v1\0");
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(final_loss.as_bytes());
    h.update(b"\0");
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The tensor data section of safetensors bytes (after the `u64` header
/// length and the header), or `None` where the lengths do not fit.
fn data_section(bytes: &[u8]) -> Option<&[u8]> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let start = usize::try_from(n).ok()?.checked_add(8)?;
    bytes.get(start..)
}

fn load_cached(config: &VitConfig, path: &Path, key: &str) -> Result<CachedBackbone> {
    let corrupt = |reason: String| LoraError::CorruptCache {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
        path: path.to_owned(),
        source,
    })?;
    let (backbone, meta) =
        Backbone::from_safetensors_bytes(config, &bytes, &path.display().to_string())
            .map_err(|e| corrupt(e.to_string()))?;
    if meta.get(META_KIND).map(String::as_str) != Some(KIND_PRETRAINED) {
        return Err(corrupt("not a wflora pre-training cache file".into()));
    }
    if meta.get(META_KEY).map(String::as_str) != Some(key) {
        return Err(corrupt("it records another cache key".into()));
    }
    let loss = meta
        .get(META_FINAL_LOSS)
        .ok_or_else(|| corrupt(format!("missing `{META_FINAL_LOSS}`")))?;
    let final_loss = loss
        .parse::<f64>()
        .map_err(|_| corrupt(format!("unreadable `{META_FINAL_LOSS}` '{loss}'")))?;
    let recorded = meta
        .get(META_SHA256)
        .ok_or_else(|| corrupt(format!("it records no checksum (`{META_SHA256}`)")))?;
    let computed = data_section(&bytes)
        .map(|d| cache_checksum(key, loss, d))
        .ok_or_else(|| corrupt("no tensor data section".into()))?;
    if *recorded != computed {
        return Err(corrupt(format!(
            "its SHA-256 is {computed} where the file records {recorded}: \
             the file was altered or damaged after it was written"
        )));
    }
    Ok(CachedBackbone {
        backbone: Arc::new(backbone),
        path: path.to_owned(),
        from_cache: true,
        final_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::write_new;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wflora-write-new-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_new_never_replaces_a_file() {
        let d = dir("keep");
        let path = d.join("pretrain-x.safetensors");
        assert!(write_new(&path, b"first").unwrap());
        assert!(!write_new(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(entries(&d), ["pretrain-x.safetensors"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_writers_of_one_path_all_return_and_one_writes() {
        // Threads of one process, released together: a rename over the
        // target (the old way) lets every one of them report a write.
        let d = dir("race");
        let path = d.join("pretrain-y.safetensors");
        let n = 8;
        let barrier = std::sync::Barrier::new(n);
        let bytes = vec![7u8; 1 << 20];
        let wrote: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        write_new(&path, &bytes).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wrote.iter().filter(|w| **w).count(), 1, "{wrote:?}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(entries(&d), ["pretrain-y.safetensors"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
