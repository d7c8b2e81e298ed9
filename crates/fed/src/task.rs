//! The learning task of a run: a pre-trained backbone and the fine-tuning
//! data (train pool to partition among clients, held-out test set).
//!
//! The embedded default (docs/method.md §6b, our choice of data): the Fashion-MNIST
//! test split shipped in `wflora-data` is cut by class. The backbone is
//! pre-trained from scratch on the *source* classes (0–4 by default: T-shirt,
//! trouser, pullover, dress, coat) and fine-tuned on the *target* classes
//! (5–9: sandal, shirt, sneaker, bag, ankle boot), relabelled `0..`. The
//! backbone never sees a target image before fine-tuning. Images are
//! normalised with the statistics of the source set (the backbone's own
//! input convention, like ImageNet statistics for a public backbone).

use crate::FedError;
use crate::config::strict;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use wflora_data::Dataset;
use wflora_lora::{Backbone, Batch, PretrainSchedule, VitConfig};

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// The Fashion-MNIST test split embedded in `wflora-data` (10,000 images).
    #[serde(deserialize_with = "strict::no_fields")]
    EmbeddedFashionMnist,
    /// IDX files (MNIST / Fashion-MNIST layout), gzip or raw.
    Idx {
        /// Images file.
        images: PathBuf,
        /// Labels file.
        labels: PathBuf,
        /// Number of classes of the labels.
        num_classes: usize,
    },
    /// IDX files with their own train and test splits (the full
    /// Fashion-MNIST: 60,000 + 10,000). The test file is the held-out set;
    /// `test_fraction` is not used.
    IdxSplit {
        /// Training images file.
        train_images: PathBuf,
        /// Training labels file.
        train_labels: PathBuf,
        /// Test images file.
        test_images: PathBuf,
        /// Test labels file.
        test_labels: PathBuf,
        /// Number of classes of the labels.
        num_classes: usize,
    },
    /// CIFAR binary files (`data_batch_*.bin` / `train.bin`, and
    /// `test_batch.bin` / `test.bin`). The test file is the held-out set.
    Cifar {
        /// Training files, read in order.
        train: Vec<PathBuf>,
        /// Test file.
        test: PathBuf,
        /// CIFAR-10, or CIFAR-100 with coarse or fine labels.
        format: wflora_data::CifarFormat,
    },
}

/// How the backbone's weights are stored in [`PretrainedWeights::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsFormat {
    /// Our canonical naming (written by `wflora assets fetch` or the
    /// pre-training cache).
    Canonical,
    /// A Hugging Face `ViTModel` checkpoint (e.g. `google/vit-base-patch16-224-in21k`).
    HfVit,
    /// A Hugging Face `Dinov2Model` checkpoint.
    HfDinov2,
}

/// A pre-trained backbone read from a file instead of pre-training one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedWeights {
    /// The safetensors file.
    pub path: PathBuf,
    /// Its naming.
    pub format: WeightsFormat,
    /// Per-channel input mean the backbone was trained with (ImageNet's
    /// `[0.485, 0.456, 0.406]` for ViT-B/16 in21k and DINOv2).
    pub mean: Vec<f32>,
    /// Per-channel input standard deviation (ImageNet's `[0.229, 0.224, 0.225]`).
    pub std: Vec<f32>,
}

impl PretrainedWeights {
    /// ImageNet's normalisation, which DINOv2 and the Hugging Face ViTs use.
    #[must_use]
    pub fn imagenet(path: PathBuf, format: WeightsFormat) -> Self {
        Self {
            path,
            format,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }
}

/// Reads `dataset` through [`strict::table`].
fn de_dataset<'de, D: Deserializer<'de>>(d: D) -> Result<DatasetSource, D::Error> {
    strict::table(d, "dataset")
}

/// Reads `pretrain` through [`strict::table`].
fn de_pretrain<'de, D: Deserializer<'de>>(d: D) -> Result<PretrainSchedule, D::Error> {
    strict::table(d, "pretrain")
}

/// Reads `weights` through [`strict::optional_table`].
fn de_weights<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PretrainedWeights>, D::Error> {
    strict::optional_table(d, "weights")
}

/// The fields behind each part of a task's memory estimate.
const TASK_MEMORY_FIELDS: crate::config::MemoryFields<'static> = crate::config::MemoryFields {
    model: "task.preset, task.image_size",
    pretraining: "task.image_size, task.preset, task.pretrain.batch_size",
    training: "-",
    clients: "-",
    dataset: "task.image_size, task.target_classes, task.train_limit, task.test_limit",
};

/// Images per class of the embedded Fashion-MNIST test split.
pub const EMBEDDED_IMAGES_PER_CLASS: u64 = 1000;

/// Lower bounds of the image counts of a task ([`TaskConfig::image_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCounts {
    /// Images of the source classes (pre-training; 0 with a weights file).
    pub source: u64,
    /// Images of the target classes before the split and the limits.
    pub target: u64,
    /// Fine-tuning images after the split and `train_limit`.
    pub train: u64,
    /// Test images after the split and `test_limit`.
    pub test: u64,
}

/// A lower estimate of the memory of building a task, in bytes
/// ([`TaskConfig::memory_estimate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMemory {
    /// The backbone's weights.
    pub backbone: u64,
    /// The images at the model's resolution (`f32`).
    pub dataset: u64,
    /// Pre-training the backbone here (0 with a weights file): gradients
    /// and AdamW moments of every weight, and one batch's activations.
    pub pretraining: u64,
}

/// How the task is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The images.
    #[serde(deserialize_with = "de_dataset")]
    pub dataset: DatasetSource,
    /// Classes the backbone is pre-trained on (never fine-tuned on).
    pub source_classes: Vec<u32>,
    /// Classes of the fine-tuning task, relabelled `0..` in this order.
    pub target_classes: Vec<u32>,
    /// Share of the target images held out for testing (stratified).
    pub test_fraction: f64,
    /// Model preset (`tiny`, `vit-s14`, `vit-b16`).
    pub preset: String,
    /// Input side length fed to the model (images are resized when it
    /// differs from the data's).
    pub image_size: usize,
    /// Backbone pre-training on the source classes.
    #[serde(deserialize_with = "de_pretrain")]
    pub pretrain: PretrainSchedule,
    /// Directory of the pre-trained backbone cache.
    pub cache_dir: PathBuf,
    /// Seed of the task itself (train/test split and pre-training), kept
    /// apart from the run seed so that runs with different seeds share the
    /// backbone and the test set (paired comparisons).
    pub seed: u64,
    /// A pre-trained backbone to load instead of pre-training on the source
    /// classes (then `source_classes` must be empty and `pretrain` is not
    /// used); grey images are replicated to the backbone's channels.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_weights"
    )]
    pub weights: Option<PretrainedWeights>,
    /// At most this many fine-tuning images, a class-stratified subset
    /// drawn with `seed` (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// At most this many test images, a class-stratified subset (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
}

impl TaskConfig {
    /// The embedded default: Fashion-MNIST 0–4 → 5–9, `tiny` ViT.
    #[must_use]
    pub fn embedded_default() -> Self {
        Self {
            dataset: DatasetSource::EmbeddedFashionMnist,
            source_classes: vec![0, 1, 2, 3, 4],
            target_classes: vec![5, 6, 7, 8, 9],
            test_fraction: 0.3,
            preset: "tiny".into(),
            image_size: 28,
            pretrain: PretrainSchedule {
                steps: 1500,
                batch_size: 64,
                lr: 2e-3,
                weight_decay: 0.05,
                warmup_steps: 100,
                source_classes: 5,
            },
            cache_dir: PathBuf::from(".cache/wflora"),
            seed: 0,
            weights: None,
            train_limit: None,
            test_limit: None,
        }
    }

    /// Checks the fields that the crates below do not check themselves.
    ///
    /// # Errors
    /// [`FedError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| Err(FedError::config(field, reason));
        if self.target_classes.len() < 2 {
            return bad(
                "task.target_classes",
                "at least two classes are needed".into(),
            );
        }
        if let Some(w) = &self.weights {
            if !self.source_classes.is_empty() {
                return bad(
                    "task.source_classes",
                    "must be empty when task.weights gives a pre-trained backbone".into(),
                );
            }
            if w.mean.is_empty() || w.mean.len() != w.std.len() {
                return bad(
                    "task.weights.mean",
                    format!(
                        "mean ({}) and std ({}) need one value per input channel",
                        w.mean.len(),
                        w.std.len()
                    ),
                );
            }
            if let Some(s) = w.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return bad("task.weights.std", format!("{s} must be positive"));
            }
        } else if self.source_classes.is_empty() {
            return bad("task.source_classes", "at least one class is needed".into());
        }
        for (field, limit) in [
            ("task.train_limit", self.train_limit),
            ("task.test_limit", self.test_limit),
        ] {
            if let Some(l) = limit.filter(|&l| l < self.target_classes.len()) {
                return bad(field, format!("{l} is below one image per class"));
            }
        }
        if let Some(c) = self
            .source_classes
            .iter()
            .find(|c| self.target_classes.contains(c))
        {
            return bad(
                "task.source_classes",
                format!("class {c} is also a target class; source and target must be disjoint"),
            );
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(
                "task.test_fraction",
                format!("{} must lie in (0, 1)", self.test_fraction),
            );
        }
        if self.weights.is_none() && self.pretrain.source_classes != self.source_classes.len() {
            return bad(
                "task.pretrain.source_classes",
                format!(
                    "{} must equal the number of source classes ({})",
                    self.pretrain.source_classes,
                    self.source_classes.len()
                ),
            );
        }
        if self.image_size == 0 {
            return bad("task.image_size", "must be at least 1".into());
        }
        // The preset and the image size against its patch; then the memory,
        // before anything is read or allocated.
        self.backbone_config()?;
        if let Some(limit) = crate::config::machine_memory() {
            self.check_memory(limit)?;
        }
        Ok(())
    }

    /// Checks [`TaskConfig::memory_estimate`] against `limit` bytes
    /// ([`TaskConfig::validate`] uses the machine's,
    /// [`crate::config::machine_memory`]).
    ///
    /// # Errors
    /// [`FedError::Config`] naming the fields that drive the largest part,
    /// with the estimate and the limit.
    pub fn check_memory(&self, limit: u64) -> Result<(), FedError> {
        let m = self.memory_estimate()?;
        crate::config::MemoryEstimate {
            model: m.backbone,
            pretraining: m.pretraining,
            dataset: m.dataset,
            ..crate::config::MemoryEstimate::default()
        }
        .check(limit, &TASK_MEMORY_FIELDS)
    }

    /// Channels of the images the dataset holds: 3 for CIFAR, 1 (grey) for
    /// the others.
    #[must_use]
    pub fn data_channels(&self) -> usize {
        match self.dataset {
            DatasetSource::Cifar { .. } => 3,
            DatasetSource::EmbeddedFashionMnist
            | DatasetSource::Idx { .. }
            | DatasetSource::IdxSplit { .. } => 1,
        }
    }

    /// The model configuration of the backbone [`Task::build`] makes, from
    /// the configuration alone (see [`TaskConfig::vit_config`]).
    ///
    /// # Errors
    /// As [`TaskConfig::vit_config`].
    pub fn backbone_config(&self) -> Result<VitConfig, FedError> {
        self.vit_config(self.data_channels())
    }

    /// Lower bounds of the image counts [`Task::build`] works with, from
    /// the configuration alone: the embedded Fashion-MNIST has
    /// [`EMBEDDED_IMAGES_PER_CLASS`] images per class; a dataset read from
    /// files has at least one image per named class.
    #[must_use]
    pub fn image_counts(&self) -> ImageCounts {
        let classes = |c: &[u32]| c.len() as u64;
        let per_class = |c: &[u32]| match self.dataset {
            DatasetSource::EmbeddedFashionMnist => {
                let known = c
                    .iter()
                    .filter(|&&c| (c as usize) < wflora_data::FASHION_MNIST_CLASSES.len())
                    .count() as u64;
                known.saturating_mul(EMBEDDED_IMAGES_PER_CLASS)
            }
            _ => classes(c),
        };
        let target = per_class(&self.target_classes).max(classes(&self.target_classes));
        // The stratified split keeps at least one image per class on each side.
        let test = ((target as f64 * self.test_fraction).floor() as u64).max(1);
        let train = target.saturating_sub(test).max(1);
        let cap = |n: u64, limit: Option<usize>| limit.map_or(n, |l| n.min(l as u64));
        ImageCounts {
            source: if self.weights.is_some() {
                0
            } else {
                per_class(&self.source_classes).max(classes(&self.source_classes))
            },
            target,
            train: cap(train, self.train_limit),
            test: cap(test, self.test_limit),
        }
    }

    /// A lower estimate of the memory [`Task::build`] needs, from the
    /// configuration alone, with saturating arithmetic (an absurd size gives
    /// a huge estimate, never an overflow).
    ///
    /// # Errors
    /// As [`TaskConfig::backbone_config`].
    pub fn memory_estimate(&self) -> Result<TaskMemory, FedError> {
        let vit = self.backbone_config()?;
        let full = vit.footprint(
            &wflora_lora::FineTuneMode::Full,
            self.pretrain.source_classes,
        );
        let n = self.image_counts();
        let f32s = |values: u64| values.saturating_mul(4);
        // Images at the model's resolution: the source and target cuts
        // (resized before the split) when pre-training here, the limited
        // train and test sets otherwise.
        let images = if self.weights.is_some() {
            n.train.saturating_add(n.test)
        } else {
            n.source.saturating_add(n.target)
        };
        let pretraining = if self.weights.is_some() {
            0
        } else {
            // AdamW over every backbone weight: gradients and two moments,
            // and one batch's activations.
            let batch = (self.pretrain.batch_size as u64).min(n.source.max(1));
            f32s(full.backbone.saturating_mul(3).saturating_add(
                batch.saturating_mul(full.activations_per_input.saturating_add(full.input)),
            ))
        };
        Ok(TaskMemory {
            backbone: f32s(full.backbone),
            dataset: f32s(images.saturating_mul(full.input)),
            pretraining,
        })
    }

    /// The model configuration this task uses for data with `channels`
    /// channels.
    ///
    /// # Errors
    /// An unknown preset, or an image size the preset's patch does not divide.
    pub fn vit_config(&self, channels: usize) -> Result<VitConfig, FedError> {
        let mut cfg = VitConfig::preset(&self.preset)
            .map_err(|e| FedError::config("task.preset", e.to_string()))?
            .with_image_size(self.image_size);
        if self.weights.is_none() || channels > 1 {
            // Pre-trained here, or colour data: the backbone takes the
            // data's channels (a weights file must match them). Grey data
            // for a pre-trained backbone keeps the preset's channels and is
            // replicated.
            cfg.in_channels = channels;
        }
        cfg.validate()
            .map_err(|e| FedError::config("task.image_size", e.to_string()))?;
        Ok(cfg)
    }
}

/// A built task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Model shape.
    pub vit: VitConfig,
    /// The frozen pre-trained backbone (shared by every client model).
    pub backbone: Arc<Backbone>,
    /// Fine-tuning pool (target classes, relabelled, normalised).
    pub train: Dataset,
    /// Held-out test set (target classes).
    pub test: Dataset,
    /// Number of target classes.
    pub num_classes: usize,
    /// Whether the backbone came from the cache.
    pub backbone_from_cache: bool,
    /// Pre-training loss at the end of pre-training.
    pub pretrain_loss: f64,
}

/// The one pool of images that pre-training and the class cuts work on:
/// the embedded Fashion-MNIST or an IDX pair (`field` names the source in
/// errors).
///
/// # Errors
/// [`FedError::Config`] naming `field` for a source with its own test split
/// (IDX split, CIFAR); data errors naming the file.
pub fn load_pool(source: &DatasetSource, field: &str) -> Result<Dataset, FedError> {
    Ok(match source {
        DatasetSource::EmbeddedFashionMnist => wflora_data::fashion_mnist_test()?,
        DatasetSource::Idx {
            images,
            labels,
            num_classes,
        } => wflora_data::load_idx(images, labels, *num_classes)?,
        DatasetSource::IdxSplit { .. } | DatasetSource::Cifar { .. } => {
            return Err(FedError::config(
                field,
                "one pool to cut by class is needed (embedded or idx); a dataset with its own \
                 test split is only supported with task.weights (a pre-trained backbone)",
            ));
        }
    })
}

impl Task {
    /// Loads the data, pre-trains (or loads from cache) the backbone, and
    /// prepares train and test sets (`cfg.seed` fixes the split and the
    /// pre-training).
    ///
    /// # Errors
    /// Invalid configuration, unreadable data, or a pre-training failure.
    pub fn build(cfg: &TaskConfig) -> Result<Self, FedError> {
        Self::build_with_progress(cfg, &mut |_| {})
    }

    /// As [`Task::build`], telling `on_pretrain` about the pre-training (a
    /// cache hit, or every step of the training:
    /// [`wflora_lora::cached_pretrain_with_progress`]); not called where
    /// the backbone is read from `task.weights`. The callback only
    /// observes: the task is the same as [`Task::build`]'s.
    ///
    /// # Errors
    /// As [`Task::build`].
    pub fn build_with_progress(
        cfg: &TaskConfig,
        on_pretrain: &mut dyn FnMut(&wflora_lora::PretrainProgress<'_>),
    ) -> Result<Self, FedError> {
        cfg.validate()?;
        if cfg.weights.is_some() {
            return Self::build_pretrained(cfg);
        }
        let seed = cfg.seed;
        let all = load_pool(&cfg.dataset, "task.dataset")?;
        let prep = |d: Dataset| -> Result<Dataset, FedError> { resize_to(d, cfg.image_size) };
        let mut source = prep(all.keep_classes(&cfg.source_classes)?)?;
        let target = prep(all.keep_classes(&cfg.target_classes)?)?;
        let stats = source.channel_stats()?;
        source.normalize(&stats)?;
        let split = target.stratified_split(
            cfg.test_fraction,
            crate::seed::derive(seed, crate::seed::Stream::Partition, 0, 0),
        )?;
        let mut train = limit(target.subset(&split.train)?, cfg.train_limit, seed, 1)?;
        let mut test = limit(target.subset(&split.test)?, cfg.test_limit, seed, 2)?;
        train.normalize(&stats)?;
        test.normalize(&stats)?;

        let vit = cfg.vit_config(source.channels())?;
        let shape = [
            source.len(),
            source.channels(),
            source.height(),
            source.width(),
        ];
        let batch = Batch::new(source.images(), source.labels(), shape)?;
        let cached = wflora_lora::cached_pretrain_with_progress(
            &cfg.cache_dir,
            &vit,
            &batch,
            &cfg.pretrain,
            crate::seed::derive(seed, crate::seed::Stream::Pretrain, 0, 0),
            on_pretrain,
        )?;
        Ok(Self {
            vit,
            backbone: cached.backbone,
            num_classes: cfg.target_classes.len(),
            train,
            test,
            backbone_from_cache: cached.from_cache,
            pretrain_loss: cached.final_loss,
        })
    }

    /// The pre-trained route: the dataset's own train and test splits (or a
    /// stratified cut), target classes only, resized, replicated to the
    /// backbone's channels and normalised with the backbone's statistics.
    fn build_pretrained(cfg: &TaskConfig) -> Result<Self, FedError> {
        let weights = cfg
            .weights
            .as_ref()
            .ok_or_else(|| FedError::config("task.weights", "missing"))?;
        let seed = cfg.seed;
        // One pool cut by a stratified split (as the pre-training route does).
        let cut = |all: Dataset| -> Result<(Dataset, Dataset), FedError> {
            let all = all.keep_classes(&cfg.target_classes)?;
            let split = all.stratified_split(
                cfg.test_fraction,
                crate::seed::derive(seed, crate::seed::Stream::Partition, 0, 0),
            )?;
            Ok((all.subset(&split.train)?, all.subset(&split.test)?))
        };
        let (train, test) = match &cfg.dataset {
            DatasetSource::EmbeddedFashionMnist => cut(wflora_data::fashion_mnist_test()?)?,
            DatasetSource::Idx {
                images,
                labels,
                num_classes,
            } => cut(wflora_data::load_idx(images, labels, *num_classes)?)?,
            DatasetSource::IdxSplit {
                train_images,
                train_labels,
                test_images,
                test_labels,
                num_classes,
            } => (
                wflora_data::load_idx(train_images, train_labels, *num_classes)?
                    .keep_classes(&cfg.target_classes)?,
                wflora_data::load_idx(test_images, test_labels, *num_classes)?
                    .keep_classes(&cfg.target_classes)?,
            ),
            DatasetSource::Cifar {
                train,
                test,
                format,
            } => (
                wflora_data::load_cifar(train, *format)?.keep_classes(&cfg.target_classes)?,
                wflora_data::load_cifar(std::slice::from_ref(test), *format)?
                    .keep_classes(&cfg.target_classes)?,
            ),
        };
        let vit = cfg.vit_config(train.channels())?;
        let stats = wflora_data::ChannelStats::new(weights.mean.clone(), weights.std.clone())?;
        if stats.mean.len() != vit.in_channels {
            return Err(FedError::config(
                "task.weights.mean",
                format!(
                    "{} values, but the backbone takes {} channels",
                    stats.mean.len(),
                    vit.in_channels
                ),
            ));
        }
        let prep = |d: Dataset, cap: Option<usize>, stream: u64| -> Result<Dataset, FedError> {
            let d = limit(d, cap, seed, stream)?;
            let mut d = resize_to(d, cfg.image_size)?;
            if d.channels() != vit.in_channels {
                d = d.replicate_channels(vit.in_channels)?;
            }
            d.normalize(&stats)?;
            Ok(d)
        };
        let train = prep(train, cfg.train_limit, 1)?;
        let test = prep(test, cfg.test_limit, 2)?;
        let path = &weights.path;
        let missing = |e: wflora_lora::LoraError| {
            FedError::config("task.weights.path", format!("{}: {e}", path.display()))
        };
        let backbone = match weights.format {
            WeightsFormat::Canonical => Backbone::load(&vit, path).map_err(missing)?,
            WeightsFormat::HfVit => {
                wflora_lora::load_hf_backbone(path, &vit, wflora_lora::HfLayout::VitBase)
                    .map_err(missing)?
            }
            WeightsFormat::HfDinov2 => {
                wflora_lora::load_hf_backbone(path, &vit, wflora_lora::HfLayout::Dinov2)
                    .map_err(missing)?
            }
        };
        Ok(Self {
            vit,
            backbone: Arc::new(backbone),
            num_classes: cfg.target_classes.len(),
            train,
            test,
            backbone_from_cache: true,
            pretrain_loss: f64::NAN,
        })
    }
}

/// Resizes to `side × side` when the data differ.
fn resize_to(d: Dataset, side: usize) -> Result<Dataset, FedError> {
    if d.height() == side && d.width() == side {
        Ok(d)
    } else {
        Ok(d.resize_bilinear(side, side)?)
    }
}

/// A class-stratified subset of at most `cap` images, drawn with the task
/// seed (`stream` keeps the train and test draws apart).
fn limit(d: Dataset, cap: Option<usize>, seed: u64, stream: u64) -> Result<Dataset, FedError> {
    match cap {
        Some(cap) if cap < d.len() => {
            let keep = cap as f64 / d.len() as f64;
            let split = d.stratified_split(
                1.0 - keep,
                crate::seed::derive(seed, crate::seed::Stream::Partition, 1, stream),
            )?;
            Ok(d.subset(&split.train)?)
        }
        _ => Ok(d),
    }
}
