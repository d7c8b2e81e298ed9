//! Loading a run's configuration through the loader `wflora run` uses
//! (`RunConfig::from_toml`): sizes are checked before anything is allocated
//! (an absurd size is an error naming the field, never an abort), tables
//! take no unknown key and no positional array, and errors name the field
//! and the file.
#![allow(clippy::unwrap_used)]

use toml::Value;
use wflora_fed::config::{human_bytes, machine_memory, parse_mem_total};
use wflora_fed::{RunConfig, Task};

/// The embedded default as `wflora default-config` prints it.
fn default_text() -> String {
    toml::to_string_pretty(&RunConfig::embedded_default()).unwrap()
}

/// The default with the first `from` replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    let t = default_text();
    assert!(t.contains(from), "no `{from}` in the default");
    t.replacen(from, to, 1)
}

fn load_err(text: &str) -> String {
    RunConfig::from_toml(text, "run.toml")
        .map(drop)
        .unwrap_err()
        .to_string()
}

/// The default as a TOML document, edited by `edit`, as text.
fn with_doc(edit: impl FnOnce(&mut toml::Table)) -> String {
    let mut doc: toml::Table = default_text().parse().unwrap();
    edit(&mut doc);
    toml::to_string(&doc).unwrap()
}

fn table<'a>(doc: &'a mut toml::Table, path: &[&str]) -> &'a mut toml::Table {
    path.iter().fold(doc, |t, k| match t.get_mut(*k) {
        Some(Value::Table(t)) => t,
        other => panic!("{k}: {other:?}"),
    })
}

#[test]
fn an_image_size_of_2_pow_32_is_an_error_naming_the_field_not_an_abort() {
    // tiny's patch (7) does not divide 2^32
    let text = edited("image_size = 28", "image_size = 4294967296");
    let err = load_err(&text);
    assert!(
        err.contains("task.image_size") && err.contains("4294967296") && err.contains("run.toml"),
        "{err}"
    );
    // Building the task checks first too (it used to resize 5,000 images
    // to 2^32 × 2^32 and abort).
    let cfg: RunConfig = toml::from_str(&text).unwrap();
    let err = Task::build(&cfg.task).unwrap_err().to_string();
    assert!(err.contains("task.image_size"), "{err}");

    // ViT-B/16's patch divides 2^32: 2^56 tokens, refused by the memory
    // estimate (which saturates rather than overflowing).
    let text = text.replacen("preset = \"tiny\"", "preset = \"vit-b16\"", 1);
    let cfg: RunConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.memory_estimate().unwrap().total(), u64::MAX);
    let err = cfg.check_memory(64 << 30).unwrap_err().to_string();
    assert!(
        err.contains("task.image_size") && err.contains("16 EiB") && err.contains("64.0 GiB"),
        "{err}"
    );
    if machine_memory().is_some() {
        let err = load_err(&text);
        assert!(
            err.contains("task.image_size") && err.contains("MemTotal") && err.contains("run.toml"),
            "{err}"
        );
        let err = Task::build(&cfg.task).unwrap_err().to_string();
        assert!(err.contains("task.image_size"), "{err}");
    }
}

#[test]
fn a_rank_above_the_smaller_side_of_an_adapted_matrix_is_an_error() {
    // tiny's q and v are 64×64
    for rank in [100, 100_000] {
        let err = load_err(&edited("rank = 8", &format!("rank = {rank}")));
        assert!(
            err.contains("model.rank")
                && err.contains(&rank.to_string())
                && err.contains("1..=64")
                && err.contains("run.toml"),
            "{err}"
        );
    }
    RunConfig::from_toml(&edited("rank = 8", "rank = 64"), "run.toml").unwrap();
    // fc1 (128×64) caps the rank at 64 as well
    let text = with_doc(|d| {
        let m = table(d, &["model"]);
        m.insert("rank".into(), Value::Integer(65));
        m.insert(
            "targets".into(),
            Value::Array(vec![Value::String("fc1".into())]),
        );
    });
    let err = load_err(&text);
    assert!(err.contains("mlp.fc1") && err.contains("128×64"), "{err}");
}

#[test]
fn the_memory_estimate_refuses_what_cannot_fit_and_names_the_fields() {
    let base = RunConfig::embedded_default();
    let m = base.memory_estimate().unwrap();
    // at least the 10,000 embedded images at 28×28 in f32, well under 1 GiB
    assert!(m.dataset >= 10_000 * 28 * 28 * 4, "{m:?}");
    assert!(m.total() < 1 << 30, "{m:?}");
    base.check_memory(1 << 30).unwrap();

    for (edit, field) in [
        (
            Box::new(|c: &mut RunConfig| c.federation.clients = 1_000_000_000_000)
                as Box<dyn Fn(&mut RunConfig)>,
            "federation.clients",
        ),
        (
            Box::new(|c: &mut RunConfig| c.local.steps = 100_000_000_000),
            "local.steps",
        ),
        (
            Box::new(|c: &mut RunConfig| c.task.image_size = 7 << 12),
            "task.image_size",
        ),
    ] {
        let mut c = base.clone();
        edit(&mut c);
        let err = c.check_memory(64 << 30).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("64.0 GiB"), "{err}");
    }

    // Every size at its largest: the estimate saturates, nothing overflows.
    let mut c = base;
    c.federation.clients = usize::MAX;
    c.federation.clients_per_round = usize::MAX;
    c.federation.workers = usize::MAX;
    c.local.steps = usize::MAX;
    c.local.batch_size = usize::MAX;
    c.task.pretrain.batch_size = usize::MAX;
    c.task.train_limit = Some(usize::MAX);
    c.model.rank = usize::MAX;
    assert_eq!(c.memory_estimate().unwrap().total(), u64::MAX);
}

#[test]
fn mem_total_is_read_from_proc_meminfo() {
    let meminfo = "MemTotal:       16318480 kB\nMemFree:         1234 kB\n";
    assert_eq!(parse_mem_total(meminfo), Some(16_318_480 * 1024));
    assert_eq!(parse_mem_total("MemFree: 3 kB\n"), None);
    assert_eq!(parse_mem_total("MemTotal: many kB\n"), None);
    if std::path::Path::new("/proc/meminfo").exists() {
        assert!(machine_memory().is_some_and(|m| m > 1 << 20));
    }
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    assert_eq!(human_bytes(u64::MAX), "more than 16 EiB");
}

#[test]
fn a_positional_array_for_a_table_is_an_error_naming_the_key() {
    let text = with_doc(|d| {
        table(d, &["wireless"]).insert(
            "channel".into(),
            Value::Array(vec![Value::Integer(1), Value::Integer(2)]),
        );
    });
    let err = load_err(&text);
    assert!(
        err.contains("`channel` to be a table") && err.contains("run.toml"),
        "{err}"
    );
    // A tagged table as `[kind, values…]`.
    let text = with_doc(|d| {
        table(d, &["federation"]).insert(
            "partition".into(),
            Value::Array(vec![
                Value::String("dirichlet".into()),
                Value::Float(0.3),
                Value::Integer(32),
                Value::Integer(1000),
            ]),
        );
    });
    assert!(load_err(&text).contains("`partition` to be a table"));
    // A struct variant and a newtype variant of the optimiser.
    let text = with_doc(|d| {
        table(d, &["local"]).insert(
            "optimizer".into(),
            Value::Table(toml::Table::from_iter([(
                "sgd".to_owned(),
                Value::Array(vec![Value::Float(0.1)]),
            )])),
        );
    });
    assert!(load_err(&text).contains("`sgd` to be a table"));
    let text = with_doc(|d| {
        let adam = table(d, &["local", "optimizer"]);
        let values = match adam.get("adam_w") {
            Some(Value::Table(t)) => t.values().cloned().collect(),
            other => panic!("{other:?}"),
        };
        adam.insert("adam_w".into(), Value::Array(values));
    });
    assert!(load_err(&text).contains("`adam_w` to be a table"));
}

#[test]
fn unit_variants_and_the_optimiser_take_no_unknown_key() {
    // `kind = "equalising"` takes nothing else
    let text = with_doc(|d| {
        table(d, &["wireless", "allocation"]).insert("v".into(), Value::Float(0.1));
    });
    let err = load_err(&text);
    assert!(err.contains("unknown field `v`"), "{err}");
    let text = with_doc(|d| {
        let p = table(d, &["federation", "partition"]);
        p.clear();
        p.insert("kind".into(), Value::String("iid".into()));
        p.insert("alpha".into(), Value::Float(0.3));
    });
    assert!(load_err(&text).contains("unknown field `alpha`"));
    // one optimiser only, and a known one
    let sgd = || {
        Value::Table(toml::Table::from_iter([(
            "lr".to_owned(),
            Value::Float(0.1),
        )]))
    };
    let text = with_doc(|d| {
        table(d, &["local", "optimizer"]).insert("sgd".into(), sgd());
    });
    let err = load_err(&text);
    assert!(err.contains("`adam_w` and `sgd`"), "{err}");
    let text = with_doc(|d| {
        table(d, &["local", "optimizer"]).insert("lion".into(), sgd());
    });
    let err = load_err(&text);
    assert!(err.contains("unknown variant `lion`"), "{err}");
    // and both variants still read
    let text = with_doc(|d| {
        let o = table(d, &["local", "optimizer"]);
        o.clear();
        o.insert("sgd".into(), sgd());
    });
    let cfg = RunConfig::from_toml(&text, "run.toml").unwrap();
    assert_eq!(
        cfg.local.optimizer,
        wflora_lora::OptimizerKind::Sgd { lr: 0.1 }
    );
    assert_eq!(
        wflora_fed::config::strict::optimizer_name(&cfg.local.optimizer),
        "sgd"
    );
}

/// A scratch directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("wflora-layers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set(s: &str) -> Override {
    s.parse().unwrap()
}

use wflora_fed::config::layers::Override;

#[test]
fn a_partial_config_is_completed_from_the_embedded_default() {
    let text = "name = \"small\"\n[federation]\nclients = 20\nclients_per_round = 5\n";
    let cfg = RunConfig::from_toml(text, "small.toml").unwrap();
    let mut want = RunConfig::embedded_default();
    want.name = "small".into();
    want.federation.clients = 20;
    want.federation.clients_per_round = 5;
    assert_eq!(cfg, want);
    // `base = "default"` says the same.
    let named = format!("base = \"default\"\n{text}");
    assert_eq!(RunConfig::from_toml(&named, "small.toml").unwrap(), want);
    // An empty file is the default.
    assert_eq!(
        RunConfig::from_toml("", "empty.toml").unwrap(),
        RunConfig::embedded_default()
    );
}

#[test]
fn a_base_file_is_read_relative_to_the_file_that_names_it() {
    let dir = Scratch::new("base");
    dir.write(
        "shipped/tsfa-like.toml",
        "name = \"tsfa-like\"\n[wireless.channel]\nbandwidth_hz = 1e6\n\
         [wireless.allocation]\nkind = \"drift_plus_penalty\"\nv = 0.1\nbudget_rel = 0.6\nm_min = 1\n",
    );
    let mine = dir.write(
        "mine/run.toml",
        "base = \"../shipped/tsfa-like.toml\"\nname = \"mine\"\n[wireless.allocation]\nv = 1.0\n",
    );
    let cfg = RunConfig::load(&mine, &[]).unwrap();
    assert_eq!(cfg.name, "mine");
    assert_eq!(cfg.wireless.channel.bandwidth_hz, 1e6);
    assert!(
        matches!(
            cfg.wireless.allocation,
            wflora_fed::AllocationSettings::DriftPlusPenalty { v, budget_rel, m_min: 1, .. }
                if v == 1.0 && budget_rel == 0.6
        ),
        "{:?}",
        cfg.wireless.allocation
    );
    // Switching the kind back replaces the table: drift-plus-penalty's keys
    // do not linger under `equalising`.
    let back = dir.write(
        "mine/back.toml",
        "base = \"run.toml\"\n[wireless.allocation]\nkind = \"equalising\"\n",
    );
    let cfg = RunConfig::load(&back, &[]).unwrap();
    assert_eq!(
        cfg.wireless.allocation,
        wflora_fed::AllocationSettings::Equalising
    );
    // A missing base and a cycle name the file and the key.
    let missing = dir.write("mine/missing.toml", "base = \"nope.toml\"\n");
    let err = RunConfig::load(&missing, &[]).unwrap_err().to_string();
    assert!(
        err.contains("missing.toml") && err.contains("`base`") && err.contains("nope.toml"),
        "{err}"
    );
    let a = dir.write("mine/a.toml", "base = \"b.toml\"\n");
    dir.write("mine/b.toml", "base = \"a.toml\"\n");
    let err = RunConfig::load(&a, &[]).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    let err = RunConfig::from_toml("base = 3", "three.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("file three.toml") && err.contains("`base`"),
        "{err}"
    );
}

#[test]
fn overrides_of_every_value_type_apply_over_the_file() {
    let text = "[federation]\nclients = 20\nclients_per_round = 20\n";
    let cfg = RunConfig::from_toml_with(
        text,
        "run.toml",
        &[
            set("local.optimizer.adam_w.lr=3e-4"),
            set("federation.clients_per_round=5"),
            set("federation.local_only=true"),
            set("compression.method=slora"),
            set("name=\"with space\""),
            set("model.targets=[\"q\", \"k\", \"v\"]"),
            set("federation.partition={ kind = \"iid\" }"),
        ],
    )
    .unwrap();
    let wflora_lora::OptimizerKind::AdamW(adam) = cfg.local.optimizer else {
        panic!("{:?}", cfg.local.optimizer)
    };
    assert_eq!(adam.lr, 3e-4);
    assert_eq!(adam.beta2, 0.999, "the other AdamW keys stay");
    assert_eq!(cfg.federation.clients, 20, "the file's value stays");
    assert_eq!(cfg.federation.clients_per_round, 5);
    assert!(cfg.federation.local_only);
    assert_eq!(cfg.compression.method, wflora_soft::MethodKind::SLora);
    assert_eq!(cfg.name, "with space");
    assert_eq!(cfg.model.targets.len(), 3);
    assert_eq!(cfg.federation.partition, wflora_data::Scheme::Iid);
    // Another optimiser replaces AdamW; the last --set of a key wins.
    let cfg = RunConfig::from_toml_with(
        "",
        "run.toml",
        &[
            set("local.optimizer.sgd.lr=0.1"),
            set("local.optimizer.sgd.lr=0.05"),
        ],
    )
    .unwrap();
    assert_eq!(
        cfg.local.optimizer,
        wflora_lora::OptimizerKind::Sgd { lr: 0.05 }
    );
    // A kind switched by --set takes its keys from --set, in any order.
    let cfg = RunConfig::from_toml_with(
        "",
        "run.toml",
        &[
            set("wireless.allocation.budget_rel=0.6"),
            set("wireless.allocation.kind=myopic"),
            set("wireless.allocation.m_min=2"),
        ],
    )
    .unwrap();
    assert!(matches!(
        cfg.wireless.allocation,
        wflora_fed::AllocationSettings::Myopic { m_min: 2, .. }
    ));
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_where_they_came_from() {
    let err = RunConfig::from_toml("[federation]\nclientz = 3\n", "dir/run.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("file dir/run.toml: ")
            && err.contains("`federation.clientz`")
            && err.contains("`clients_per_round`"),
        "{err}"
    );
    let err = RunConfig::from_toml_with("", "run.toml", &[set("federation.clientz=3")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--set federation.clientz=3: ") && err.contains("`federation.clientz`"),
        "{err}"
    );
    let err = RunConfig::from_toml_with("", "run.toml", &[set("train.lr=3e-4")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`train`") && err.contains("`federation`"),
        "{err}"
    );
    // Inside a tagged table too.
    let err = RunConfig::from_toml_with("", "run.toml", &[set("federation.partition.alpah=0.1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("alpah") && err.contains("--set"), "{err}");
    // A wrong type: what was expected and what was found.
    let err = RunConfig::from_toml_with("", "run.toml", &[set("federation.clients=many")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`federation.clients`")
            && err.contains("\"many\"")
            && err.contains("expected"),
        "{err}"
    );
    let err = RunConfig::from_toml("[model]\nrank = \"8\"\n", "run.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("file run.toml") && err.contains("`model.rank`"),
        "{err}"
    );
    // A table given a plain value by --set.
    let err = RunConfig::from_toml_with("", "run.toml", &[set("wireless.channel=3")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`channel` to be a table"), "{err}");
    // A bad value is still validated, naming the field and the file.
    let err = RunConfig::from_toml_with("", "run.toml", &[set("federation.clients=0")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("federation.clients") && err.contains("run.toml"),
        "{err}"
    );
    // Not TOML, and a missing file.
    let err = RunConfig::from_toml("[federation\n", "broken.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("file broken.toml: not valid TOML"), "{err}");
    let missing = std::env::temp_dir().join("wflora-no-such-config.toml");
    let err = RunConfig::load(&missing, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("file {}: cannot read it", missing.display())),
        "{err}"
    );
    assert!(!err.contains("config field"), "{err}");
}

#[test]
fn the_commented_default_reads_back_and_has_readable_floats() {
    let cfg = RunConfig::embedded_default();
    let text = cfg.to_commented_toml("header").unwrap();
    assert!(text.contains("\nkappa = 1e-28\n"), "{text}");
    assert!(text.contains("\neps = 1e-8\n"), "{text}");
    assert!(text.contains("\nrho = 0.25\n"), "{text}");
    assert!(text.contains("\nbandwidth_hz = 2e7\n"), "{text}");
    assert!(
        text.contains("# Number of clients K.\nclients = 10\n"),
        "{text}"
    );
    // Read strictly, as a complete file, and through the layers.
    assert_eq!(toml::from_str::<RunConfig>(&text).unwrap(), cfg);
    assert_eq!(RunConfig::from_toml(&text, "default.toml").unwrap(), cfg);
}

#[test]
fn a_bad_ratio_names_compression_rho_and_a_ratio_m_over_r_keeps_m() {
    for rho in ["0.0", "-0.25", "1.5", "nan", "inf"] {
        let err = load_err(&edited("rho = 0.25", &format!("rho = {rho}")));
        assert!(
            err.contains("compression.rho") && err.contains("run.toml"),
            "{rho}: {err}"
        );
    }
    let mut cfg = RunConfig::embedded_default();
    let r = cfg.model.rank;
    assert_eq!(r, 8);
    for m in 1..=r {
        cfg.compression.rho = m as f64 / r as f64;
        assert_eq!(cfg.kept_components(), m, "rho = {}", cfg.compression.rho);
    }
    cfg.compression.rho = 0.05;
    assert_eq!(cfg.kept_components(), 1);
    cfg.compression.rho = 0.3;
    assert_eq!(cfg.kept_components(), 3);
    cfg.compression.method = wflora_soft::MethodKind::ILora;
    assert_eq!(cfg.kept_components(), r);
}
