//! The learning task of a run: a pre-trained backbone and the fine-tuning
//! data (train pool to partition among clients, held-out test set).
//!
//! The embedded default (METHOD §6b, our choice of data): the Fashion-MNIST
//! test split shipped in `wflora-data` is cut by class. The backbone is
//! pre-trained from scratch on the *source* classes (0–4 by default: T-shirt,
//! trouser, pullover, dress, coat) and fine-tuned on the *target* classes
//! (5–9: sandal, shirt, sneaker, bag, ankle boot), relabelled `0..`. The
//! backbone never sees a target image before fine-tuning. Images are
//! normalised with the statistics of the source set (the backbone's own
//! input convention, like ImageNet statistics for a public backbone).

use crate::FedError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use wflora_data::Dataset;
use wflora_lora::{Backbone, Batch, PretrainSchedule, VitConfig};

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// The Fashion-MNIST test split embedded in `wflora-data` (10,000 images).
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
}

/// How the task is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The images.
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
    pub pretrain: PretrainSchedule,
    /// Directory of the pre-trained backbone cache.
    pub cache_dir: PathBuf,
    /// Seed of the task itself (train/test split and pre-training), kept
    /// apart from the run seed so that runs with different seeds share the
    /// backbone and the test set (paired comparisons).
    pub seed: u64,
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
        if self.source_classes.is_empty() {
            return bad("task.source_classes", "at least one class is needed".into());
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
        if self.pretrain.source_classes != self.source_classes.len() {
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
        Ok(())
    }

    /// The model configuration this task uses.
    ///
    /// # Errors
    /// An unknown preset, or an image size the preset's patch does not divide.
    pub fn vit_config(&self, channels: usize) -> Result<VitConfig, FedError> {
        let mut cfg = VitConfig::preset(&self.preset)
            .map_err(|e| FedError::config("task.preset", e.to_string()))?
            .with_image_size(self.image_size);
        cfg.in_channels = channels;
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

impl Task {
    /// Loads the data, pre-trains (or loads from cache) the backbone, and
    /// prepares train and test sets (`cfg.seed` fixes the split and the
    /// pre-training).
    ///
    /// # Errors
    /// Invalid configuration, unreadable data, or a pre-training failure.
    pub fn build(cfg: &TaskConfig) -> Result<Self, FedError> {
        cfg.validate()?;
        let seed = cfg.seed;
        let all = match &cfg.dataset {
            DatasetSource::EmbeddedFashionMnist => wflora_data::fashion_mnist_test()?,
            DatasetSource::Idx {
                images,
                labels,
                num_classes,
            } => wflora_data::load_idx(images, labels, *num_classes)?,
        };
        let prep = |d: Dataset| -> Result<Dataset, FedError> {
            if d.height() == cfg.image_size && d.width() == cfg.image_size {
                Ok(d)
            } else {
                Ok(d.resize_bilinear(cfg.image_size, cfg.image_size)?)
            }
        };
        let mut source = prep(all.keep_classes(&cfg.source_classes)?)?;
        let target = prep(all.keep_classes(&cfg.target_classes)?)?;
        let stats = source.channel_stats()?;
        source.normalize(&stats)?;
        let split = target.stratified_split(
            cfg.test_fraction,
            crate::seed::derive(seed, crate::seed::Stream::Partition, 0, 0),
        )?;
        let mut train = target.subset(&split.train)?;
        let mut test = target.subset(&split.test)?;
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
        let cached = wflora_lora::cached_pretrain(
            &cfg.cache_dir,
            &vit,
            &batch,
            &cfg.pretrain,
            crate::seed::derive(seed, crate::seed::Stream::Pretrain, 0, 0),
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
}
