//! The configuration of one federated run (TOML/JSON through serde).
//!
//! Every table rejects unknown keys (every variant of a tagged table too)
//! and a positional array in place of a table ([`strict`]), and
//! [`RunConfig::validate`] checks the values, naming the field in its
//! error, before anything is allocated: sizes included (the LoRA rank
//! against the adapted matrices, and [`RunConfig::memory_estimate`] against
//! the machine's memory). The hash of the canonical JSON form
//! ([`RunConfig::hash`]) identifies a run for checkpoints and caches.

use crate::FedError;
use crate::task::{TaskConfig, TaskMemory};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wflora_alloc::RatioMode;
use wflora_channel::ChannelConfig;
use wflora_data::Scheme;
use wflora_lora::{
    AdamWParams, FineTuneMode, LoraConfig, LoraTarget, ModelFootprint, OptimizerKind,
    RegulariserKind,
};
use wflora_soft::MethodKind;

/// Strict reading of configuration tables, for the `deserialize_with`
/// attributes of the configuration types (here and in `wflora-dfl`).
///
/// serde's derived `Deserialize` reads a struct from a sequence as well as
/// from a map, so `channel = [1, 2]` would fill the first two fields of a
/// table positionally; an internally tagged enum (`kind = "…"`) likewise
/// takes `["kind", …]`; and `deny_unknown_fields` does not reach unit
/// variants of internally tagged enums. Every table-valued field of a
/// configuration is therefore read through [`table`](strict::table) (or
/// [`optional_table`](strict::optional_table), [`array_of_tables`](strict::array_of_tables), [`optimizer`](strict::optimizer)), which accepts
/// only a table and names the key otherwise, and unit variants of tagged
/// tables through [`no_fields`](strict::no_fields).
///
/// A table read this way reaches its type through serde's
/// `MapAccessDeserializer`, which does not check keys against the struct's
/// fields as the `toml` deserializer does on its own: every struct and
/// tagged enum of a configuration must carry `#[serde(deny_unknown_fields)]`
/// (`experiments/tests/config_tables.rs` checks every table of every
/// shipped configuration).
pub mod strict {
    use serde::Deserialize;
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;
    use std::marker::PhantomData;
    use wflora_lora::{AdamWParams, OptimizerKind};

    /// Where a table sits, for the messages.
    #[derive(Clone, Copy)]
    enum Place {
        /// The value of `key`.
        Key(&'static str),
        /// An element of the array `key`.
        Element(&'static str),
    }

    impl fmt::Display for Place {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::Key(k) => write!(f, "`{k}`"),
                Self::Element(k) => write!(f, "every element of `{k}`"),
            }
        }
    }

    /// Reads one table as a `T`.
    struct TableSeed<T> {
        place: Place,
        marker: PhantomData<fn() -> T>,
    }

    impl<T> TableSeed<T> {
        fn new(place: Place) -> Self {
            Self {
                place,
                marker: PhantomData,
            }
        }
    }

    impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for TableSeed<T> {
        type Value = T;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for TableSeed<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "{} to be a table (a `[section]` of `key = value` lines, or `{{ key = value, … }}`), \
                 not an array of positional values",
                self.place
            )
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    /// The value of `key`, which must be a table, as a `T`.
    ///
    /// # Errors
    /// Anything but a table (a positional array, a string, a number), with
    /// `key` named, or `T`'s own errors (an unknown key, a missing one).
    pub fn table<'de, D, T>(d: D, key: &'static str) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        TableSeed::new(Place::Key(key)).deserialize(d)
    }

    /// As [`table`] for an optional field (use with `#[serde(default)]`).
    ///
    /// # Errors
    /// As [`table`].
    pub fn optional_table<'de, D, T>(d: D, key: &'static str) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        struct Opt<T>(&'static str, PhantomData<fn() -> T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Opt<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`{}` to be a table", self.0)
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
                table(d, self.0).map(Some)
            }
        }
        d.deserialize_option(Opt(key, PhantomData))
    }

    /// The value of `key`, an array whose every element is a table (TOML's
    /// `[[key]]`), as `T`s.
    ///
    /// # Errors
    /// Anything but an array of tables, with `key` named, or `T`'s errors.
    pub fn array_of_tables<'de, D, T>(d: D, key: &'static str) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        struct Tables<T>(&'static str, PhantomData<fn() -> T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Tables<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "`{}` to be an array of tables (`[[{}]]`)",
                    self.0, self.0
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element_seed(TableSeed::new(Place::Element(self.0)))? {
                    out.push(t);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Tables(key, PhantomData))
    }

    /// The rest of the table of a unit variant of an internally tagged enum
    /// (`#[serde(deserialize_with = "…")]` on the variant): no key may be
    /// left besides `kind`.
    ///
    /// # Errors
    /// The first key left, named.
    pub fn no_fields<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        struct NoFields;
        impl<'de> Visitor<'de> for NoFields {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("no key besides `kind`")
            }
            fn visit_unit<E: de::Error>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(()),
                    Some(key) => Err(de::Error::custom(format_args!(
                        "unknown field `{key}`: this kind takes no key besides `kind`"
                    ))),
                }
            }
        }
        d.deserialize_map(NoFields)
    }

    /// The variants of [`OptimizerKind`] as written in a configuration.
    pub(crate) const OPTIMIZERS: &[&str] = &["adam_w", "sgd"];

    /// [`OptimizerKind::Sgd`]'s table.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SgdTable {
        lr: f64,
    }

    /// The value of `key`, an optimiser table holding exactly one of
    /// `[key.adam_w]` (AdamW's hyper-parameters) and `[key.sgd]` (`lr`),
    /// itself a table.
    ///
    /// # Errors
    /// Anything but such a table, an unknown or a second optimiser, or an
    /// unknown or missing hyper-parameter, named.
    pub fn optimizer<'de, D: Deserializer<'de>>(
        d: D,
        key: &'static str,
    ) -> Result<OptimizerKind, D::Error> {
        struct Optimizer(&'static str);
        impl<'de> Visitor<'de> for Optimizer {
            type Value = OptimizerKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "`{}` to be a table holding one optimiser table, `adam_w` or `sgd`",
                    self.0
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OptimizerKind, A::Error> {
                let Some(name) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format_args!(
                        "`{}` is empty: expected one of `adam_w`, `sgd`",
                        self.0
                    )));
                };
                let kind = match name.as_str() {
                    "adam_w" => OptimizerKind::AdamW(map.next_value_seed(TableSeed::<
                        AdamWParams,
                    >::new(
                        Place::Key("adam_w"),
                    ))?),
                    "sgd" => OptimizerKind::Sgd {
                        lr: map
                            .next_value_seed(TableSeed::<SgdTable>::new(Place::Key("sgd")))?
                            .lr,
                    },
                    other => return Err(de::Error::unknown_variant(other, OPTIMIZERS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    if !OPTIMIZERS.contains(&extra.as_str()) {
                        return Err(de::Error::unknown_variant(&extra, OPTIMIZERS));
                    }
                    return Err(de::Error::custom(format_args!(
                        "`{}` holds one optimiser, but both `{name}` and `{extra}` are given",
                        self.0
                    )));
                }
                Ok(kind)
            }
        }
        d.deserialize_map(Optimizer(key))
    }

    /// The name an [`OptimizerKind`] is written under (the match keeps
    /// [`optimizer`] in step with the enum: a new variant fails to compile
    /// here).
    #[must_use]
    pub fn optimizer_name(kind: &OptimizerKind) -> &'static str {
        match kind {
            OptimizerKind::AdamW(_) => OPTIMIZERS[0],
            OptimizerKind::Sgd { .. } => OPTIMIZERS[1],
        }
    }
}

pub mod commented;
pub mod layers;

/// What each key of a run configuration means, one line each, for the
/// comments of [`RunConfig::to_commented_toml`] (`experiments/tests/config_tables.rs`
/// checks that every key of every shipped configuration has one).
const KEY_DOCS: &[(&str, &str)] = &[
    (
        "name",
        "A label for the run (outputs, the default output directory results/runs/NAME).",
    ),
    (
        "seed",
        "Run seed: partition, initialisation, client sampling, batches, channel.",
    ),
    ("task", "Data and backbone."),
    ("task.dataset", "Where the images come from."),
    (
        "task.dataset.kind",
        "embedded_fashion_mnist | idx | idx_split | cifar.",
    ),
    ("task.dataset.images", "IDX images file (gzip or raw)."),
    ("task.dataset.labels", "IDX labels file."),
    (
        "task.dataset.num_classes",
        "Number of classes of the labels.",
    ),
    ("task.dataset.train_images", "IDX training images file."),
    ("task.dataset.train_labels", "IDX training labels file."),
    (
        "task.dataset.test_images",
        "IDX test images file (the held-out set).",
    ),
    ("task.dataset.test_labels", "IDX test labels file."),
    (
        "task.dataset.train",
        "CIFAR binary training files, read in order.",
    ),
    (
        "task.dataset.test",
        "CIFAR binary test file (the held-out set).",
    ),
    (
        "task.dataset.format",
        "Cifar10 | Cifar100Coarse | Cifar100Fine.",
    ),
    (
        "task.source_classes",
        "Classes the backbone is pre-trained on (never fine-tuned on).",
    ),
    (
        "task.target_classes",
        "Classes of the fine-tuning task, relabelled 0.. in this order.",
    ),
    (
        "task.test_fraction",
        "Share of the target images held out for testing (stratified).",
    ),
    ("task.preset", "Backbone preset: tiny | vit-s14 | vit-b16."),
    (
        "task.image_size",
        "Input side length fed to the model (images are resized to it).",
    ),
    (
        "task.cache_dir",
        "Directory of the pre-trained backbone cache.",
    ),
    (
        "task.seed",
        "Seed of the task (split, pre-training), apart from the run seed.",
    ),
    (
        "task.train_limit",
        "At most this many fine-tuning images (class-stratified; absent: all).",
    ),
    (
        "task.test_limit",
        "At most this many test images (class-stratified; absent: all).",
    ),
    (
        "task.pretrain",
        "Backbone pre-training on the source classes (AdamW, warm-up, cosine).",
    ),
    ("task.pretrain.steps", "Optimiser steps."),
    ("task.pretrain.batch_size", "Images per step."),
    ("task.pretrain.lr", "Peak learning rate."),
    ("task.pretrain.weight_decay", "Decoupled weight decay."),
    (
        "task.pretrain.warmup_steps",
        "Linear warm-up steps (at most steps).",
    ),
    (
        "task.pretrain.source_classes",
        "Classes of the source task (0 with a weights file).",
    ),
    (
        "task.weights",
        "A pre-trained backbone file instead of pre-training (source_classes empty).",
    ),
    ("task.weights.path", "The safetensors file."),
    (
        "task.weights.format",
        "canonical | hf_vit | hf_dinov2 (the tensor naming).",
    ),
    (
        "task.weights.mean",
        "Per-channel input mean the backbone was trained with.",
    ),
    ("task.weights.std", "Per-channel input standard deviation."),
    ("model", "Model and LoRA."),
    ("model.mode", "lora | head_only."),
    ("model.rank", "LoRA rank r."),
    ("model.alpha", "LoRA alpha (the adapter is (alpha/r) B A)."),
    (
        "model.targets",
        "Adapted matrices of every block: q, k, v, o, fc1, fc2.",
    ),
    (
        "model.zeta",
        "Orthogonality regulariser weight (SOFT's; the baselines use 0).",
    ),
    ("model.regulariser", "plain | scale_invariant."),
    ("local", "Local training of a client in a round."),
    ("local.steps", "Local steps E per round."),
    ("local.batch_size", "Mini-batch size."),
    (
        "local.optimizer",
        "Optimiser, one of [local.optimizer.adam_w] and [local.optimizer.sgd] (state reset every round).",
    ),
    ("local.optimizer.adam_w", "AdamW."),
    ("local.optimizer.adam_w.lr", "Learning rate."),
    ("local.optimizer.adam_w.beta1", "First-moment decay."),
    ("local.optimizer.adam_w.beta2", "Second-moment decay."),
    ("local.optimizer.adam_w.eps", "Denominator guard."),
    (
        "local.optimizer.adam_w.weight_decay",
        "Decoupled weight decay.",
    ),
    ("local.optimizer.sgd", "Plain SGD."),
    ("local.optimizer.sgd.lr", "Learning rate."),
    ("federation", "The federation."),
    ("federation.clients", "Number of clients K."),
    (
        "federation.clients_per_round",
        "Clients sampled per round (uniformly, without replacement).",
    ),
    ("federation.rounds", "Rounds T."),
    (
        "federation.eval_every",
        "Evaluate on the test set every this many rounds (and after the last).",
    ),
    (
        "federation.local_only",
        "Local-only baseline: clients never communicate.",
    ),
    ("federation.workers", "Client models trained at once."),
    (
        "federation.partition",
        "How the fine-tuning pool is split among the clients.",
    ),
    ("federation.partition.kind", "iid | dirichlet | shards."),
    (
        "federation.partition.alpha",
        "Dirichlet concentration (small: skewed; large: near IID).",
    ),
    ("federation.partition.min_size", "Least images per client."),
    (
        "federation.partition.max_attempts",
        "Most Dirichlet draws to meet min_size.",
    ),
    (
        "federation.partition.shards_per_client",
        "Label-sorted shards per client.",
    ),
    ("compression", "Compression of the uploads."),
    (
        "compression.method",
        "soft | soft_delta | slora | tlora | rlora | ilora (ilora sends everything).",
    ),
    (
        "compression.rho",
        "Kept ratio rho in (0, 1] of the fixed-ratio policies.",
    ),
    (
        "compression.error_feedback",
        "Error feedback of what a client did not send.",
    ),
    ("wireless", "The wireless uplink."),
    (
        "wireless.flops_per_cycle",
        "FLOPs a client CPU retires per cycle (16: a 256-bit FMA unit in f32).",
    ),
    ("wireless.channel", "Cell, powers, bandwidth, clocks."),
    (
        "wireless.channel.bandwidth_hz",
        "Total uplink bandwidth W_tot (Hz).",
    ),
    (
        "wireless.channel.tx_power_dbm",
        "Transmit power of every client (dBm).",
    ),
    (
        "wireless.channel.noise_psd_dbm_per_hz",
        "Noise power spectral density N0 (dBm/Hz).",
    ),
    (
        "wireless.channel.cell_radius_m",
        "Radius of the cell disc (m).",
    ),
    (
        "wireless.channel.min_distance_m",
        "Least client to base-station distance (m).",
    ),
    (
        "wireless.channel.cpu_freq_min_hz",
        "Lower end of the uniform CPU clock distribution (Hz).",
    ),
    (
        "wireless.channel.cpu_freq_max_hz",
        "Upper end of the uniform CPU clock distribution (Hz).",
    ),
    (
        "wireless.channel.bits_per_value",
        "Bits per transmitted value.",
    ),
    (
        "wireless.channel.kappa",
        "Effective switched capacitance (J/(cycle Hz^2)) of the compute energy.",
    ),
    (
        "wireless.allocation",
        "Bandwidth (and, for TSFA, ratio) allocation per round.",
    ),
    (
        "wireless.allocation.kind",
        "equal_bandwidth | equalising | drift_plus_penalty (TSFA) | myopic.",
    ),
    (
        "wireless.allocation.v",
        "Penalty weight V >= 0 of drift-plus-penalty.",
    ),
    (
        "wireless.allocation.budget_rel",
        "Latency budget as a share of ILoRA's round latency.",
    ),
    ("wireless.allocation.mode", "per_client | tied ratios."),
    (
        "wireless.allocation.m_min",
        "Least kept components of a participant (1..=model.rank).",
    ),
    (
        "wireless.allocation.penalty",
        "dropped_energy | bound_factor.",
    ),
    (
        "wireless.allocation.budget_rank",
        "The rank at which ILoRA's round latency is taken (absent: model.rank).",
    ),
];

/// The one-line comment of the key at the dotted `path` of a run
/// configuration (`wireless.channel.kappa`), if it has one.
#[must_use]
pub fn key_doc(path: &str) -> Option<&'static str> {
    KEY_DOCS.iter().find(|(k, _)| *k == path).map(|&(_, d)| d)
}

/// Field readers for `#[serde(deserialize_with = "…")]`: each reads the
/// named key through [`strict`].
macro_rules! strict_fields {
    ($($name:ident: $kind:ident($key:literal) -> $ty:ty;)*) => {$(
        #[doc = concat!("Reads `", $key, "` through [`strict::", stringify!($kind), "`].")]
        fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            strict::$kind(d, $key)
        }
    )*};
}

strict_fields! {
    de_task: table("task") -> TaskConfig;
    de_model: table("model") -> ModelSettings;
    de_local: table("local") -> LocalSettings;
    de_federation: table("federation") -> FederationSettings;
    de_compression: table("compression") -> CompressionSettings;
    de_wireless: table("wireless") -> WirelessSettings;
    de_optimizer: optimizer("optimizer") -> OptimizerKind;
    de_partition: table("partition") -> Scheme;
    de_channel: table("channel") -> ChannelConfig;
    de_allocation: table("allocation") -> AllocationSettings;
}

/// A lower estimate of a run's memory in bytes, from its configuration
/// alone ([`RunConfig::memory_estimate`]): what the run certainly
/// allocates, so that a configuration beyond the machine is refused before
/// anything is allocated instead of aborting the process. Every count
/// saturates at `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEstimate {
    /// The backbone's weights and the global model.
    pub model: u64,
    /// Pre-training the backbone (0 with a weights file): gradients and
    /// AdamW moments of every weight, and one batch's activations. It is
    /// over before the clients train, so only the larger of it and
    /// [`MemoryEstimate::training`] counts.
    pub pretraining: u64,
    /// The client models trained at once with their gradients and
    /// optimiser moments, the mini-batches each gathers for its round and
    /// the activations one step keeps for the backward pass.
    pub training: u64,
    /// What every client keeps between rounds: error-feedback residuals,
    /// local-only models, bookkeeping.
    pub clients: u64,
    /// The images at the model's resolution.
    pub dataset: u64,
}

/// Bytes of bookkeeping per client (partition list, sizes, channel state,
/// residual slots): a lower estimate.
const CLIENT_BOOKKEEPING_BYTES: u64 = 64;

/// The configuration fields behind each part of a [`MemoryEstimate`], for
/// its messages (comma-separated dotted paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFields<'a> {
    /// Behind [`MemoryEstimate::model`].
    pub model: &'a str,
    /// Behind [`MemoryEstimate::pretraining`].
    pub pretraining: &'a str,
    /// Behind [`MemoryEstimate::training`].
    pub training: &'a str,
    /// Behind [`MemoryEstimate::clients`].
    pub clients: &'a str,
    /// Behind [`MemoryEstimate::dataset`].
    pub dataset: &'a str,
}

impl MemoryEstimate {
    /// The peak: model, the larger of pre-training and training, client
    /// state and dataset, saturating.
    #[must_use]
    pub fn total(&self) -> u64 {
        [
            self.model,
            self.pretraining.max(self.training),
            self.clients,
            self.dataset,
        ]
        .iter()
        .fold(0_u64, |a, &b| a.saturating_add(b))
    }

    /// Checks the estimate against `limit` bytes; `fields` names the
    /// configuration fields behind each part.
    ///
    /// # Errors
    /// [`FedError::Config`] naming the fields of the largest part, with the
    /// estimate, the limit and every part (largest first, parts of 0 bytes
    /// left out) with the fields behind it.
    pub fn check(&self, limit: u64, fields: &MemoryFields<'_>) -> Result<(), FedError> {
        let total = self.total();
        if total <= limit {
            return Ok(());
        }
        let mut parts = [
            ("model", self.model, fields.model),
            ("pre-training", self.pretraining, fields.pretraining),
            ("training", self.training, fields.training),
            ("per-client state", self.clients, fields.clients),
            ("dataset", self.dataset, fields.dataset),
        ];
        // Largest first; a stable sort keeps the order above among equals.
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let list = parts
            .iter()
            .filter(|p| p.1 > 0)
            .map(|(what, bytes, f)| format!("{what} {} ({f})", human_bytes(*bytes)))
            .collect::<Vec<_>>()
            .join(", ");
        let needs = if total == u64::MAX {
            human_bytes(total)
        } else {
            format!("at least {}", human_bytes(total))
        };
        Err(FedError::config(
            parts[0].2,
            format!(
                "the run needs {needs} of memory, more than this machine's {} (MemTotal in \
                 /proc/meminfo): {list}; lower the sizes named",
                human_bytes(limit)
            ),
        ))
    }
}

/// `bytes` in binary units (`1.5 GiB`); `u64::MAX`, where an estimate
/// saturated, as "more than 16 EiB".
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 16 EiB".into();
    }
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The machine's memory in bytes: `MemTotal` of `/proc/meminfo`, or `None`
/// where that cannot be read (not Linux), in which case the memory checks
/// are skipped.
#[must_use]
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

/// `MemTotal` in bytes from the text of `/proc/meminfo` (`MemTotal: N kB`).
#[must_use]
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// What a run's clients do besides building the task, for
/// [`MemoryEstimate::of`] (also used by the decentralized runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingLoad {
    /// Clients (devices) that keep state between rounds.
    pub clients: usize,
    /// `f32` values each of them keeps between rounds.
    pub per_client_values: u64,
    /// Client models trained at once.
    pub concurrent: usize,
    /// Inputs per mini-batch (at most a client's pool).
    pub batch: usize,
    /// Mini-batches a client gathers before training in a round.
    pub steps: usize,
    /// Copies of the trainable parameters a training step holds: the
    /// parameters, their gradients and the optimiser's moments.
    pub parameter_copies: u64,
}

impl TrainingLoad {
    /// Parameter copies a step of `optimizer` holds (AdamW: parameters,
    /// gradients, two moments; SGD: parameters and gradients).
    #[must_use]
    pub fn copies_for(optimizer: &OptimizerKind) -> u64 {
        match optimizer {
            OptimizerKind::AdamW(_) => 4,
            OptimizerKind::Sgd { .. } => 2,
        }
    }
}

impl MemoryEstimate {
    /// The estimate of a run whose task needs `task` and whose client model
    /// has the footprint `model`, under `load`.
    #[must_use]
    pub fn of(task: &TaskMemory, model: &ModelFootprint, load: &TrainingLoad) -> Self {
        let f32s = |v: u64| v.saturating_mul(4);
        let per_model = f32s(
            model
                .trainable
                .saturating_mul(load.parameter_copies)
                .saturating_add(
                    (load.steps as u64)
                        .saturating_mul(load.batch as u64)
                        .saturating_mul(model.input),
                )
                .saturating_add((load.batch as u64).saturating_mul(model.activations_per_input)),
        );
        let clients = (load.clients as u64)
            .saturating_mul(f32s(load.per_client_values).saturating_add(CLIENT_BOOKKEEPING_BYTES));
        Self {
            model: task.backbone.saturating_add(f32s(model.trainable)),
            pretraining: task.pretraining,
            training: per_model.saturating_mul(load.concurrent as u64),
            clients,
            dataset: task.dataset,
        }
    }
}

/// What the clients train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    /// LoRA adapters and the head.
    Lora,
    /// The head only (frozen backbone baseline; nothing to compress, the head
    /// is sent densely).
    HeadOnly,
}

/// Model and LoRA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// LoRA or head-only.
    pub mode: TrainMode,
    /// LoRA rank `r`.
    pub rank: usize,
    /// LoRA `α` (the adapter is `(α/r)·B·A`).
    pub alpha: f64,
    /// Adapted matrices in every block.
    pub targets: Vec<LoraTarget>,
    /// Orthogonality regulariser weight `ζ` (docs/method.md §1).
    pub zeta: f64,
    /// Plain (as written in the paper) or scale-invariant regulariser.
    pub regulariser: RegulariserKind,
}

impl ModelSettings {
    /// The model crate's mode.
    #[must_use]
    pub fn fine_tune_mode(&self) -> FineTuneMode {
        match self.mode {
            TrainMode::Lora => FineTuneMode::Lora(LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                targets: self.targets.clone(),
            }),
            TrainMode::HeadOnly => FineTuneMode::HeadOnly,
        }
    }
}

/// Local training of a client in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Local steps `E` per round.
    pub steps: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Optimiser (state reset every round).
    #[serde(deserialize_with = "de_optimizer")]
    pub optimizer: OptimizerKind,
}

/// The federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// Number of clients `K`.
    pub clients: usize,
    /// Clients sampled per round (uniformly without replacement).
    pub clients_per_round: usize,
    /// Rounds `T`.
    pub rounds: usize,
    /// How the fine-tuning pool is split among clients.
    #[serde(deserialize_with = "de_partition")]
    pub partition: Scheme,
    /// Evaluate on the test set every this many rounds (and after the last).
    pub eval_every: usize,
    /// Local-only baseline: clients never communicate; the reported accuracy
    /// is the mean of the clients' own models (evaluated after the last round).
    pub local_only: bool,
    /// Client models trained concurrently (1: one at a time, each using
    /// candle's own threads).
    pub workers: usize,
}

/// Compression of the uploads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionSettings {
    /// The sparsifier (docs/method.md §2).
    pub method: MethodKind,
    /// Ratio `ρ ∈ (0, 1]` for the fixed-ratio policies (ILoRA always sends everything).
    pub rho: f64,
    /// Error feedback (on by default for every method).
    pub error_feedback: bool,
}

/// The sparsification penalty `D_k(m)` of TSFA's online stage (docs/method.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyKind {
    /// The share of the client's SOFT importance energy that keeping the
    /// top-`m` components of every adapted matrix drops, pooled over the
    /// matrices (`Σ_j Σ_{i∉top m} s_{j,i}² / Σ_j Σ_i s_{j,i}²`). The default.
    #[default]
    DroppedEnergy,
    /// The bound's error-feedback factor `(1−ρ)/ρ²` at `ρ = m/r`, divided by
    /// its value at `ρ = 1/r` so that it lies in `[0, 1]` like the sit-out
    /// penalty `D(0) = 1` (our normalisation; `0` for every `m` when `r = 1`).
    BoundFactor,
}

/// How bandwidth (and, for TSFA, the ratios) are allocated each round.
///
/// The latency budget of the TSFA policies is `T̄ = budget_rel · T_ILoRA`,
/// where `T_ILoRA` is the round latency of ILoRA (all `r` components) with
/// every client taking part, equal bandwidth shares `1/K`, at the mean
/// channel (`|h|² = 1`), computed once when the simulation is built
/// (docs/method.md §3, last bullet; see [`crate::online::LatencyModel`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AllocationSettings {
    /// Fixed `ρ` for every client, equal bandwidth shares.
    #[serde(deserialize_with = "strict::no_fields")]
    EqualBandwidth,
    /// Fixed `ρ`, shares that make every client finish at once.
    #[serde(deserialize_with = "strict::no_fields")]
    Equalising,
    /// TSFA's online stage: Lyapunov drift-plus-penalty with the virtual
    /// latency queue (docs/method.md §5); `compression.rho` is not used.
    DriftPlusPenalty {
        /// Penalty weight `V >= 0` (the `O(1/V)` / `O(V)` trade-off).
        v: f64,
        /// `T̄ / T_ILoRA`, finite and `> 0`.
        budget_rel: f64,
        /// Per-client ratios or one tied ratio (default per client).
        #[serde(default)]
        mode: RatioMode,
        /// Least kept components `m_min` of a participant, `1..=model.rank`.
        m_min: usize,
        /// The penalty `D_k(m)` (default dropped importance energy).
        #[serde(default)]
        penalty: PenaltyKind,
        /// The rank at which `T_ILoRA` is evaluated (default `model.rank`).
        /// Set it to the same value in runs at different ranks (TSFA at
        /// `r*`, online-only at `r_max`) so that they share one budget `T̄`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_rank: Option<usize>,
    },
    /// Single-stage baseline: meet `T̄` in every round, no queue (least
    /// dropped importance energy with `τ <= T̄`).
    Myopic {
        /// `T̄ / T_ILoRA`, finite and `> 0`.
        budget_rel: f64,
        /// Per-client ratios or one tied ratio (default per client).
        #[serde(default)]
        mode: RatioMode,
        /// Least kept components `m_min` of a participant, `1..=model.rank`.
        m_min: usize,
        /// The rank at which `T_ILoRA` is evaluated (default `model.rank`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_rank: Option<usize>,
    },
}

impl AllocationSettings {
    /// `(budget_rel, budget_rank)` of the TSFA policies, `None` for the
    /// fixed-ratio ones.
    #[must_use]
    pub fn budget(&self) -> Option<(f64, Option<usize>)> {
        match *self {
            Self::DriftPlusPenalty {
                budget_rel,
                budget_rank,
                ..
            }
            | Self::Myopic {
                budget_rel,
                budget_rank,
                ..
            } => Some((budget_rel, budget_rank)),
            Self::EqualBandwidth | Self::Equalising => None,
        }
    }

    /// Checks the TSFA fields against the model rank, naming the field.
    ///
    /// # Errors
    /// [`FedError::Config`].
    pub fn validate(&self, rank: usize) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| {
            Err(FedError::config(
                &format!("wireless.allocation.{field}"),
                reason,
            ))
        };
        let (budget_rel, m_min, budget_rank) = match *self {
            Self::EqualBandwidth | Self::Equalising => return Ok(()),
            Self::DriftPlusPenalty {
                v,
                budget_rel,
                m_min,
                budget_rank,
                ..
            } => {
                if !(v.is_finite() && v >= 0.0) {
                    return bad("v", format!("{v} must be finite and >= 0"));
                }
                (budget_rel, m_min, budget_rank)
            }
            Self::Myopic {
                budget_rel,
                m_min,
                budget_rank,
                ..
            } => (budget_rel, m_min, budget_rank),
        };
        if !(budget_rel.is_finite() && budget_rel > 0.0) {
            return bad("budget_rel", format!("{budget_rel} must be finite and > 0"));
        }
        if m_min == 0 || m_min > rank {
            return bad(
                "m_min",
                format!("{m_min} must lie in 1..={rank} (model.rank)"),
            );
        }
        if budget_rank == Some(0) {
            return bad("budget_rank", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The wireless uplink of the simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirelessSettings {
    /// Cell, powers, bandwidth, clocks.
    #[serde(deserialize_with = "de_channel")]
    pub channel: ChannelConfig,
    /// Bandwidth/ratio allocation.
    #[serde(deserialize_with = "de_allocation")]
    pub allocation: AllocationSettings,
    /// FLOPs a client CPU retires per cycle (turns the model's FLOPs per
    /// sample into the cycles per sample `c(r)` of docs/method.md §3; 16 is a
    /// 256-bit FMA unit in f32: our choice).
    pub flops_per_cycle: f64,
}

/// A model-crate configuration error as a `model.*` field.
fn model_error(e: &wflora_lora::LoraError) -> FedError {
    match e {
        wflora_lora::LoraError::InvalidConfig { field, reason } => {
            let field = match *field {
                "lora.rank" => "model.rank",
                "lora.alpha" => "model.alpha",
                "lora.targets" => "model.targets",
                _ => "model",
            };
            FedError::config(field, reason.clone())
        }
        other => FedError::config("model", other.to_string()),
    }
}

/// A validation error of a configuration read from `file`, naming the file.
fn in_file(e: FedError, file: &str) -> FedError {
    match e {
        FedError::Config { field, reason } => FedError::Config {
            field,
            reason: format!("{reason} (in {file})"),
        },
        other => other,
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A label for the run (appears in outputs).
    pub name: String,
    /// Run seed: partition, initialisation, sampling, batches, channel.
    pub seed: u64,
    /// Data and backbone.
    #[serde(deserialize_with = "de_task")]
    pub task: TaskConfig,
    /// Model.
    #[serde(deserialize_with = "de_model")]
    pub model: ModelSettings,
    /// Local training.
    #[serde(deserialize_with = "de_local")]
    pub local: LocalSettings,
    /// Federation.
    #[serde(deserialize_with = "de_federation")]
    pub federation: FederationSettings,
    /// Compression.
    #[serde(deserialize_with = "de_compression")]
    pub compression: CompressionSettings,
    /// Uplink.
    #[serde(deserialize_with = "de_wireless")]
    pub wireless: WirelessSettings,
}

impl RunConfig {
    /// The embedded default run: SOFT at `ρ = 0.25` on the embedded task.
    #[must_use]
    pub fn embedded_default() -> Self {
        Self {
            name: "default".into(),
            seed: 1,
            task: TaskConfig::embedded_default(),
            model: ModelSettings {
                mode: TrainMode::Lora,
                rank: 8,
                alpha: 16.0,
                targets: vec![LoraTarget::Q, LoraTarget::V],
                // SOFT's orthogonality weight, chosen once by fig8's rule
                // (docs/figures.md); baselines run with ζ = 0.
                zeta: 0.1,
                regulariser: RegulariserKind::Plain,
            },
            local: LocalSettings {
                steps: 10,
                batch_size: 32,
                optimizer: OptimizerKind::AdamW(AdamWParams {
                    lr: 2e-3,
                    ..AdamWParams::default()
                }),
            },
            federation: FederationSettings {
                clients: 10,
                clients_per_round: 10,
                rounds: 20,
                partition: Scheme::Dirichlet {
                    alpha: 0.3,
                    min_size: 32,
                    max_attempts: 1000,
                },
                eval_every: 1,
                local_only: false,
                workers: 2,
            },
            compression: CompressionSettings {
                method: MethodKind::Soft,
                rho: 0.25,
                error_feedback: true,
            },
            wireless: WirelessSettings {
                channel: ChannelConfig::default(),
                allocation: AllocationSettings::Equalising,
                flops_per_cycle: 16.0,
            },
        }
    }

    /// Reads the configuration file `file` (the text `text`) over its
    /// base ([`layers`]: the keys it gives over `base`, the embedded
    /// default when it names none) and validates it.
    ///
    /// # Errors
    /// [`FedError::ConfigSource`] naming the file and the key path (not
    /// TOML, an unknown key, a wrong type); [`FedError::Config`] naming the
    /// field and the file for a bad value.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, FedError> {
        Self::from_toml_with(text, file, &[])
    }

    /// As [`RunConfig::from_toml`] with `--set` overrides on top of the file.
    ///
    /// # Errors
    /// As [`RunConfig::from_toml`]; a bad override is named.
    pub fn from_toml_with(
        text: &str,
        file: &str,
        overrides: &[layers::Override],
    ) -> Result<Self, FedError> {
        let cfg: Self = layers::from_text(
            &Self::embedded_default(),
            text,
            std::path::Path::new(file),
            overrides,
        )?;
        cfg.validate().map_err(|e| in_file(e, file))?;
        Ok(cfg)
    }

    /// Reads the configuration file `file` as [`RunConfig::from_toml_with`]
    /// does.
    ///
    /// # Errors
    /// As [`RunConfig::from_toml_with`]; an unreadable file is named
    /// (`file PATH: cannot read it: …`).
    pub fn load(file: &std::path::Path, overrides: &[layers::Override]) -> Result<Self, FedError> {
        let cfg: Self = layers::load(&Self::embedded_default(), file, overrides)?;
        cfg.validate()
            .map_err(|e| in_file(e, &file.display().to_string()))?;
        Ok(cfg)
    }

    /// This configuration with `overrides` on top (`origin` names it in
    /// messages), not validated.
    ///
    /// # Errors
    /// An unknown key or a wrong type, naming the override.
    pub fn with_overrides(
        &self,
        origin: &str,
        overrides: &[layers::Override],
    ) -> Result<Self, FedError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        layers::apply(self, origin, overrides)
    }

    /// The configuration as commented TOML (`wflora default-config`): the
    /// lines of `header` first, a comment above every key ([`key_doc`]),
    /// readable floats; it reads back to `self`.
    ///
    /// # Errors
    /// A value TOML cannot hold (a seed above `i64::MAX`).
    pub fn to_commented_toml(&self, header: &str) -> Result<String, FedError> {
        let table = toml::Table::try_from(self).map_err(|e| FedError::ConfigSource {
            origin: "the configuration".into(),
            reason: format!("cannot be written as TOML: {e}"),
        })?;
        Ok(commented::write(&table, header, &key_doc))
    }

    /// Checks every value, naming the first bad field.
    ///
    /// # Errors
    /// [`FedError::Config`].
    pub fn validate(&self) -> Result<(), FedError> {
        let bad = |field: &str, reason: String| Err(FedError::config(field, reason));
        self.task.validate()?;
        let f = &self.federation;
        if f.clients == 0 {
            return bad("federation.clients", "must be at least 1".into());
        }
        if f.clients_per_round == 0 || f.clients_per_round > f.clients {
            return bad(
                "federation.clients_per_round",
                format!("{} must lie in 1..={}", f.clients_per_round, f.clients),
            );
        }
        if f.rounds == 0 {
            return bad("federation.rounds", "must be at least 1".into());
        }
        if f.eval_every == 0 {
            return bad("federation.eval_every", "must be at least 1".into());
        }
        if f.workers == 0 {
            return bad("federation.workers", "must be at least 1".into());
        }
        if self.local.steps == 0 {
            return bad("local.steps", "must be at least 1".into());
        }
        if self.local.batch_size == 0 {
            return bad("local.batch_size", "must be at least 1".into());
        }
        // The one conversion of a ratio into kept components (the rank is
        // checked below, in LoRA mode): a bad ratio names compression.rho.
        wflora_soft::components_for_ratio(self.compression.rho, self.model.rank.max(1))
            .map_err(|e| FedError::config("compression.rho", e.to_string()))?;
        if self.model.mode == TrainMode::Lora {
            if self.model.rank == 0 {
                return bad("model.rank", "must be at least 1".into());
            }
            // The backbone's shape is known from the task (validated above).
            let vit = self.task.backbone_config()?;
            self.model
                .fine_tune_mode()
                .validate_for(&vit)
                .map_err(|e| model_error(&e))?;
        }
        if !(self.model.zeta.is_finite() && self.model.zeta >= 0.0) {
            return bad(
                "model.zeta",
                format!("{} must be finite and >= 0", self.model.zeta),
            );
        }
        wflora_lora::TrainOptions {
            optimizer: self.local.optimizer,
            zeta: self.model.zeta,
            regulariser: self.model.regulariser,
            keep_optimizer_state: false,
            shards: 1,
        }
        .validate()
        .map_err(|e| FedError::config("local.optimizer", e.to_string()))?;
        self.wireless
            .channel
            .validate()
            .map_err(|e| FedError::config("wireless.channel", e.to_string()))?;
        if self.wireless.allocation.budget().is_some() {
            if self.model.mode != TrainMode::Lora {
                return bad(
                    "wireless.allocation.kind",
                    "the TSFA policies choose LoRA ratios and need model.mode = lora".into(),
                );
            }
            if self.compression.method == MethodKind::ILora {
                return bad(
                    "wireless.allocation.kind",
                    "ILoRA ignores the ratio and always sends everything; use `equalising` or `equal_bandwidth`".into(),
                );
            }
        }
        self.wireless.allocation.validate(self.model.rank)?;
        if !(self.wireless.flops_per_cycle.is_finite() && self.wireless.flops_per_cycle > 0.0) {
            return bad(
                "wireless.flops_per_cycle",
                format!("{} must be finite and > 0", self.wireless.flops_per_cycle),
            );
        }
        if let Some(limit) = machine_memory() {
            self.check_memory(limit)?;
        }
        Ok(())
    }

    /// A lower estimate of the run's memory, from the configuration alone
    /// (nothing is read or allocated): the task's ([`TaskConfig::memory_estimate`]),
    /// the global model, the [`federation.workers`](FederationSettings::workers)
    /// client models trained at once with their optimiser state, mini-batches
    /// and activations, and every client's error-feedback residual
    /// (`compression.error_feedback`) and local-only model.
    ///
    /// # Errors
    /// The task's backbone configuration is invalid (unknown preset, an
    /// image size the patch does not divide).
    pub fn memory_estimate(&self) -> Result<MemoryEstimate, FedError> {
        let task = self.task.memory_estimate()?;
        let vit = self.task.backbone_config()?;
        let model = vit.footprint(&self.model.fine_tune_mode(), self.task.target_classes.len());
        let f = &self.federation;
        let pool = (self.task.image_counts().train / f.clients.max(1) as u64).max(1);
        let residual = match self.model.mode {
            TrainMode::Lora if self.compression.error_feedback => {
                if self.compression.method == MethodKind::SLora {
                    model.dense_residual
                } else {
                    model.factor_residual
                }
            }
            TrainMode::Lora | TrainMode::HeadOnly => 0,
        };
        let local = if f.local_only { model.trainable } else { 0 };
        Ok(MemoryEstimate::of(
            &task,
            &model,
            &TrainingLoad {
                clients: f.clients,
                per_client_values: residual.saturating_add(local),
                concurrent: f.workers.min(f.clients_per_round),
                batch: usize::try_from((self.local.batch_size as u64).min(pool))
                    .unwrap_or(usize::MAX),
                steps: self.local.steps,
                parameter_copies: TrainingLoad::copies_for(&self.local.optimizer),
            },
        ))
    }

    /// Checks [`RunConfig::memory_estimate`] against `limit` bytes
    /// ([`RunConfig::validate`] uses the machine's, [`machine_memory`]).
    ///
    /// # Errors
    /// [`FedError::Config`] naming the fields that drive the largest part,
    /// with the estimate and the limit (see [`MemoryEstimate::check`]).
    pub fn check_memory(&self, limit: u64) -> Result<MemoryEstimate, FedError> {
        let m = self.memory_estimate()?;
        m.check(
            limit,
            &MemoryFields {
                model: "task.preset, task.image_size, model.rank, model.targets",
                pretraining: "task.image_size, task.preset, task.pretrain.batch_size",
                training: "local.batch_size, local.steps, federation.workers, task.image_size",
                clients: "federation.clients, model.rank, compression.error_feedback, \
                          federation.local_only",
                dataset: "task.image_size, task.target_classes, task.train_limit, \
                          task.test_limit",
            },
        )?;
        Ok(m)
    }

    /// Kept components per adapted matrix at the configured ratio: the
    /// smallest `m ∈ 1..=r` with `m/r ≥ ρ`
    /// ([`wflora_soft::components_for_ratio`], so `ρ = m/r` gives `m`); all
    /// `r` of them for ILoRA.
    ///
    /// Call it on a validated configuration ([`RunConfig::validate`] checks
    /// `compression.rho` with the same conversion, and `model.rank >= 1` in
    /// LoRA mode). Otherwise, where the conversion fails (a bad ratio, or
    /// rank 0 outside LoRA mode), it returns `model.rank` rather than
    /// panicking.
    #[must_use]
    pub fn kept_components(&self) -> usize {
        if self.compression.method == MethodKind::ILora {
            return self.model.rank;
        }
        wflora_soft::components_for_ratio(self.compression.rho, self.model.rank)
            .unwrap_or(self.model.rank)
    }

    /// The configured ratio, or 1 for ILoRA.
    #[must_use]
    pub fn effective_rho(&self) -> f64 {
        if self.compression.method == MethodKind::ILora {
            1.0
        } else {
            self.compression.rho
        }
    }

    /// sha256 of the canonical JSON form (hex).
    #[must_use]
    pub fn hash(&self) -> String {
        // Serialising plain data to JSON cannot fail (no maps with non-string
        // keys, no non-finite floats survive `validate`); an empty string
        // would still hash deterministically.
        let json = serde_json::to_string(self).unwrap_or_default();
        crate::hex(&Sha256::digest(json.as_bytes()))
    }
}
