//! The multi-task data of a decentralized run: one frozen backbone shared
//! by every device, and per task a train pool and a test set: relabelled,
//! transformed, normalised images cut from one dataset (vision), or
//! fixed-length token windows of a text corpus split by document (text).

use std::sync::Arc;

use wflora_data::{
    ChannelStats, Dataset, TextCorpus, TokenDataset, WindowOptions, WordPieceTokenizer,
};
use wflora_fed::Task;
use wflora_fed::seed::{Stream, derive};
use wflora_lora::{Backbone, Batch, VitConfig};

use crate::config::{DflConfig, TextCorpusKind, TextSetup, Transform};
use crate::error::DflError;

/// A task's samples: images (vision tasks) or token windows (text tasks).
#[derive(Debug, Clone)]
pub enum Samples {
    /// Normalised images.
    Images(Dataset),
    /// `[CLS] … [SEP]` windows of word-piece ids.
    Tokens(TokenDataset),
}

impl Samples {
    /// Number of samples.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Images(d) => d.len(),
            Self::Tokens(d) => d.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels.
    #[must_use]
    pub fn labels(&self) -> &[u32] {
        match self {
            Self::Images(d) => d.labels(),
            Self::Tokens(d) => d.labels(),
        }
    }

    /// The samples at `indices` (in that order).
    ///
    /// # Errors
    /// An index out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Self, DflError> {
        Ok(match self {
            Self::Images(d) => Self::Images(d.subset(indices)?),
            Self::Tokens(d) => Self::Tokens(d.subset(indices)?),
        })
    }

    /// All samples as one model batch (borrowed).
    ///
    /// # Errors
    /// Shape errors (none for sets built here).
    pub fn batch(&self) -> Result<Batch<'_>, DflError> {
        Ok(match self {
            Self::Images(d) => Batch::new(
                d.images(),
                d.labels(),
                [d.len(), d.channels(), d.height(), d.width()],
            )?,
            Self::Tokens(d) => Batch::tokens(d.ids(), d.labels(), d.seq_len())?,
        })
    }
}

/// One task's data.
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Its name.
    pub name: String,
    /// Number of classes.
    pub num_classes: usize,
    /// Training pool.
    pub train: Samples,
    /// Test set.
    pub test: Samples,
}

/// Everything a decentralized run trains on.
#[derive(Debug, Clone)]
pub struct MultiTask {
    /// Model shape.
    pub vit: VitConfig,
    /// The frozen pre-trained backbone.
    pub backbone: Arc<Backbone>,
    /// The tasks, in configuration order.
    pub tasks: Vec<TaskData>,
    /// Whether the backbone came from the pre-training cache.
    pub backbone_from_cache: bool,
}

/// Applies `t` to every image of `d` (raw `[0, 1]` pixels, square images
/// for the rotation).
///
/// # Errors
/// [`DflError::Config`] naming `tasks.transform` for a rotation of a
/// non-square image.
pub fn transform(d: Dataset, t: Transform) -> Result<Dataset, DflError> {
    let (c, h, w, k) = (d.channels(), d.height(), d.width(), d.num_classes());
    if t == Transform::None {
        return Ok(d);
    }
    if t == Transform::Rotate90 && h != w {
        return Err(DflError::config(
            "tasks.transform",
            format!("rotate90 needs square images, got {h}×{w}"),
        ));
    }
    let (mut images, labels) = d.into_parts();
    let plane = h * w;
    let mut buf = vec![0.0f32; plane];
    for img in images.chunks_mut(plane) {
        match t {
            Transform::None => {}
            Transform::Invert => img.iter_mut().for_each(|v| *v = 1.0 - *v),
            Transform::FlipHorizontal => img.chunks_mut(w).for_each(<[f32]>::reverse),
            Transform::Rotate90 => {
                // Counter-clockwise: out[i][j] = in[j][w − 1 − i].
                for i in 0..h {
                    for j in 0..w {
                        buf[i * w + j] = img[j * w + (w - 1 - i)];
                    }
                }
                img.copy_from_slice(&buf);
            }
        }
    }
    Ok(Dataset::new(images, labels, c, h, w, k)?)
}

impl MultiTask {
    /// Pre-trains (or loads from cache) the backbone of `cfg.backbone`,
    /// deals the dataset's images among the tasks (a class claimed by
    /// several tasks has its images shuffled and dealt in turn, so no image
    /// is in two tasks), transforms them, normalises them with the
    /// pre-training classes' statistics and splits each task stratified.
    /// Depends on `cfg.backbone.seed` only, not on the run seed, so runs
    /// with different seeds share data and test sets (paired comparisons).
    ///
    /// # Errors
    /// Configuration, data or pre-training errors; a pre-trained weights
    /// file (`backbone.weights`) is not supported here yet.
    pub fn build(cfg: &DflConfig) -> Result<Self, DflError> {
        Self::build_with_progress(cfg, &mut |_| {})
    }

    /// As [`MultiTask::build`], telling `on_pretrain` about the backbone's
    /// pre-training ([`Task::build_with_progress`]; not called for text
    /// tasks). The callback only observes: the tasks are the same as
    /// [`MultiTask::build`]'s.
    ///
    /// # Errors
    /// As [`MultiTask::build`].
    pub fn build_with_progress(
        cfg: &DflConfig,
        on_pretrain: &mut dyn FnMut(&wflora_lora::PretrainProgress<'_>),
    ) -> Result<Self, DflError> {
        cfg.validate()?;
        if let Some(text) = &cfg.text {
            return Self::build_text(cfg, text);
        }
        let b = &cfg.backbone;
        if b.weights.is_some() {
            return Err(DflError::config(
                "backbone.weights",
                "the decentralized runs pre-train their backbone on backbone.source_classes; \
                 a weights file is not supported here yet",
            ));
        }
        let all = wflora_fed::task::load_pool(&b.dataset, "backbone.dataset")?;
        let all = if all.height() == b.image_size && all.width() == b.image_size {
            all
        } else {
            all.resize_bilinear(b.image_size, b.image_size)?
        };
        let stats: ChannelStats = all.keep_classes(&b.source_classes)?.channel_stats()?;
        for (i, t) in cfg.tasks.iter().enumerate() {
            if let Some(c) = t.classes.iter().find(|&&c| c as usize >= all.num_classes()) {
                return Err(DflError::config(
                    &format!("tasks[{i}].classes"),
                    format!("class {c} is not below the dataset's {}", all.num_classes()),
                ));
            }
        }
        let task = Task::build_with_progress(b, on_pretrain)?;
        // Deal each class's images among the tasks that claim it.
        let mut per_task: Vec<Vec<usize>> = vec![Vec::new(); cfg.tasks.len()];
        for class in 0..all.num_classes() as u32 {
            let claim: Vec<usize> = (0..cfg.tasks.len())
                .filter(|&t| cfg.tasks[t].classes.contains(&class))
                .collect();
            if claim.is_empty() {
                continue;
            }
            let mut idx: Vec<usize> = (0..all.len())
                .filter(|&i| all.labels()[i] == class)
                .collect();
            wflora_data::shuffle_indices(
                &mut idx,
                derive(b.seed, Stream::Partition, 100, u64::from(class)),
            );
            for (n, i) in idx.into_iter().enumerate() {
                per_task[claim[n % claim.len()]].push(i);
            }
        }
        let mut tasks = Vec::with_capacity(cfg.tasks.len());
        for (t, (spec, mut idx)) in cfg.tasks.iter().zip(per_task).enumerate() {
            idx.sort_unstable();
            let data = transform(
                all.subset(&idx)?.keep_classes(&spec.classes)?,
                spec.transform,
            )?;
            let split = data.stratified_split(
                cfg.test_fraction,
                derive(b.seed, Stream::Partition, 200, t as u64),
            )?;
            let mut train = data.subset(&split.train)?;
            let mut test_idx = split.test;
            if let Some(cap) = cfg.test_limit.filter(|&c| c < test_idx.len()) {
                wflora_data::shuffle_indices(
                    &mut test_idx,
                    derive(b.seed, Stream::Partition, 300, t as u64),
                );
                test_idx.truncate(cap);
                test_idx.sort_unstable();
            }
            let mut test = data.subset(&test_idx)?;
            train.normalize(&stats)?;
            test.normalize(&stats)?;
            if train.is_empty() || test.is_empty() {
                return Err(DflError::config(
                    &format!("tasks[{t}]"),
                    format!("task `{}` got no training or no test images", spec.name),
                ));
            }
            tasks.push(TaskData {
                name: spec.name.clone(),
                num_classes: spec.classes.len(),
                train: Samples::Images(train),
                test: Samples::Images(test),
            });
        }
        Ok(Self {
            vit: task.vit.clone(),
            backbone: task.backbone.clone(),
            tasks,
            backbone_from_cache: task.backbone_from_cache,
        })
    }

    /// Text tasks: the BERT of `text.model_dir` (its `tokenizer.json` too);
    /// each task's corpus read with its classes, cut into windows, split by
    /// document (`test_fraction`, so no test window shares a document with a
    /// training window) and class-balanced to `train_per_class` /
    /// `test_per_class`. Depends on `cfg.backbone.seed` only, like the
    /// vision tasks.
    fn build_text(cfg: &DflConfig, text: &TextSetup) -> Result<Self, DflError> {
        let backbone = wflora_lora::load_hf_bert(&text.model_dir, text.seq_len)?;
        let vit = backbone.config().clone();
        let tokenizer = WordPieceTokenizer::from_file(&text.model_dir.join("tokenizer.json"))?;
        let vocab = vit.text.map_or(0, |s| s.vocab_size);
        if tokenizer.vocab_size() > vocab {
            return Err(DflError::config(
                "text.model_dir",
                format!(
                    "the tokenizer's {} entries exceed the model's vocabulary of {vocab}",
                    tokenizer.vocab_size()
                ),
            ));
        }
        let options = WindowOptions {
            seq_len: text.seq_len,
            max_windows_per_doc: text.max_windows_per_doc,
            max_chars: text.max_chars,
        };
        let seed = cfg.backbone.seed;
        let mut tasks = Vec::with_capacity(cfg.tasks.len());
        for (t, spec) in cfg.tasks.iter().enumerate() {
            let field = format!("tasks[{t}].text");
            let src = spec
                .text
                .as_ref()
                .ok_or_else(|| DflError::config(&field, "missing (validated above)"))?;
            let classes: Vec<&str> = src.classes.iter().map(String::as_str).collect();
            let corpus: TextCorpus = match src.corpus {
                TextCorpusKind::SpamAssassin => {
                    let c = wflora_data::read_spam_assassin(&src.dir)?;
                    if c.class_names != src.classes {
                        return Err(DflError::config(
                            &format!("{field}.classes"),
                            format!("the spam corpus has classes {:?}", c.class_names),
                        ));
                    }
                    c
                }
                TextCorpusKind::Brown => wflora_data::read_brown(&src.dir, &classes)?,
                TextCorpusKind::Sotu => wflora_data::read_sotu(&src.dir, &classes)?,
            };
            let (windows, _) = wflora_data::windows(&corpus, &tokenizer, &options)?;
            let (train, test) = wflora_data::split_by_document(
                &windows,
                cfg.test_fraction,
                derive(seed, Stream::Partition, 200, t as u64),
            )?;
            let train = wflora_data::balance(
                &train,
                text.train_per_class,
                derive(seed, Stream::Partition, 300, t as u64),
            )?;
            let test = wflora_data::balance(
                &test,
                text.test_per_class,
                derive(seed, Stream::Partition, 400, t as u64),
            )?;
            tasks.push(TaskData {
                name: spec.name.clone(),
                num_classes: src.classes.len(),
                train: Samples::Tokens(train),
                test: Samples::Tokens(test),
            });
        }
        Ok(Self {
            vit,
            backbone: Arc::new(backbone),
            tasks,
            backbone_from_cache: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(vals: Vec<f32>, side: usize) -> Dataset {
        Dataset::new(vals, vec![0], 1, side, side, 1).expect("valid")
    }

    #[test]
    fn transforms_by_hand() {
        // 2×2 image [[a, b], [c, d]] = [[1, 2], [3, 4]] (as fractions).
        let d = square(vec![0.1, 0.2, 0.3, 0.4], 2);
        let r = transform(d.clone(), Transform::Rotate90).expect("square");
        // Counter-clockwise rotation: [[b, d], [a, c]].
        assert_eq!(r.images(), &[0.2, 0.4, 0.1, 0.3]);
        let f = transform(d.clone(), Transform::FlipHorizontal).expect("ok");
        assert_eq!(f.images(), &[0.2, 0.1, 0.4, 0.3]);
        let i = transform(d.clone(), Transform::Invert).expect("ok");
        for (a, b) in i.images().iter().zip([0.9f32, 0.8, 0.7, 0.6]) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(transform(d.clone(), Transform::None).expect("ok"), d);
        // Four rotations are the identity.
        let mut x = square((0..9).map(|v| v as f32).collect(), 3);
        for _ in 0..4 {
            x = transform(x, Transform::Rotate90).expect("square");
        }
        assert_eq!(
            x.images(),
            (0..9).map(|v| v as f32).collect::<Vec<_>>().as_slice()
        );
        let rect = Dataset::new(vec![0.0; 6], vec![0], 1, 2, 3, 1).expect("valid");
        assert!(transform(rect, Transform::Rotate90).is_err());
    }
}
