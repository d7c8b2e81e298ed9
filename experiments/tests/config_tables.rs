//! Every table of every shipped configuration rejects an unknown key and a
//! positional array in its place, through the loaders the command line uses
//! (`RunConfig::from_toml` for `wflora run`, `DflConfig::from_toml` for the
//! decentralized runs).
//!
//! The tables are found generically: each configuration is parsed into a
//! `toml::Value` and walked (nested tables and tables inside arrays), so a
//! table added to a shipped configuration is covered without touching this
//! file. Besides the files in `experiments/configs/`, the shipped
//! configurations are the embedded defaults (`wflora default-config`), the
//! quick and default profiles' base runs of the figures, and one
//! configuration per enum variant that no shipped file uses, so that every
//! variant of every tagged table is walked as well.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use toml::Value;
use wflora_data::{CifarFormat, Scheme};
use wflora_dfl::{DflConfig, TaskSpec, TextCorpusKind, TextSetup, TextTask, Topology, Transform};
use wflora_experiments::figures::{Profile, base_config, so::so_base};
use wflora_fed::{AllocationSettings, DatasetSource, RunConfig};
use wflora_lora::OptimizerKind;

/// The key inserted into every table.
const UNKNOWN: &str = "zz_unknown_key";

/// Which loader reads a configuration.
#[derive(Clone, Copy, Debug)]
enum Loader {
    /// A federated run (`wflora run --config`).
    Run,
    /// A decentralized multi-task run.
    Dfl,
}

impl Loader {
    /// Loads `text` as the command line does, naming `file` in errors.
    fn load(self, text: &str, file: &str) -> Result<(), String> {
        match self {
            Self::Run => RunConfig::from_toml(text, file)
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Dfl => DflConfig::from_toml(text, file)
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}

/// One configuration: a label (used as its file name), its loader and text.
struct Shipped {
    label: String,
    loader: Loader,
    text: String,
}

fn run(label: &str, cfg: &RunConfig) -> Shipped {
    Shipped {
        label: label.to_owned(),
        loader: Loader::Run,
        text: toml::to_string_pretty(cfg).unwrap(),
    }
}

fn dfl(label: &str, cfg: &DflConfig) -> Shipped {
    Shipped {
        label: label.to_owned(),
        loader: Loader::Dfl,
        text: toml::to_string_pretty(cfg).unwrap(),
    }
}

/// Every shipped configuration, and one per variant the shipped ones miss.
fn shipped() -> Vec<Shipped> {
    let mut all = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected the shipped configs in {dir:?}");
    for path in files {
        all.push(Shipped {
            label: path.display().to_string(),
            loader: Loader::Run,
            text: std::fs::read_to_string(&path).unwrap(),
        });
    }
    all.push(run("default-config.toml", &RunConfig::embedded_default()));
    for p in [Profile::Quick, Profile::Default] {
        all.push(run(
            &format!("base-{}.toml", p.name()),
            &base_config(p).unwrap(),
        ));
        all.push(dfl(
            &format!("so-base-{}.toml", p.name()),
            &so_base(p).unwrap(),
        ));
    }
    all.push(dfl("so-default.toml", &DflConfig::embedded_default()));

    // The variants no shipped configuration uses.
    let base = RunConfig::embedded_default();
    let with = |label: &str, edit: &dyn Fn(&mut RunConfig)| {
        let mut c = base.clone();
        edit(&mut c);
        run(label, &c)
    };
    all.push(with("equal-bandwidth.toml", &|c| {
        c.wireless.allocation = AllocationSettings::EqualBandwidth;
    }));
    all.push(with("myopic.toml", &|c| {
        c.wireless.allocation = AllocationSettings::Myopic {
            budget_rel: 0.6,
            mode: wflora_alloc::RatioMode::Tied,
            m_min: 1,
            budget_rank: Some(8),
        };
    }));
    all.push(with("iid.toml", &|c| c.federation.partition = Scheme::Iid));
    all.push(with("shards.toml", &|c| {
        c.federation.partition = Scheme::Shards {
            shards_per_client: 2,
        };
    }));
    all.push(with("sgd.toml", &|c| {
        c.local.optimizer = OptimizerKind::Sgd { lr: 0.01 };
    }));
    all.push(with("idx.toml", &|c| {
        c.task.dataset = DatasetSource::Idx {
            images: "images.idx".into(),
            labels: "labels.idx".into(),
            num_classes: 10,
        };
    }));
    all.push(with("cifar.toml", &|c| {
        c.task.dataset = DatasetSource::Cifar {
            train: vec!["data_batch_1.bin".into(), "data_batch_2.bin".into()],
            test: "test_batch.bin".into(),
            format: CifarFormat::Cifar10,
        };
    }));
    let so = DflConfig::embedded_default();
    for (name, topology) in [
        ("ring", Topology::Ring),
        ("full", Topology::Full),
        ("geometric", Topology::RandomGeometric { radius_m: 250.0 }),
    ] {
        let mut c = so.clone();
        c.topology = topology;
        all.push(dfl(&format!("so-{name}.toml"), &c));
    }
    let mut text = so.clone();
    text.tasks = vec![TaskSpec {
        name: "spam".into(),
        classes: Vec::new(),
        transform: Transform::None,
        text: Some(TextTask {
            corpus: TextCorpusKind::SpamAssassin,
            dir: "spam-assassin".into(),
            classes: vec!["ham".into(), "spam".into()],
        }),
    }];
    text.text = Some(TextSetup {
        model_dir: "minilm".into(),
        seq_len: 64,
        max_windows_per_doc: 4,
        max_chars: 4000,
        train_per_class: 150,
        test_per_class: 100,
    });
    text.optimizer = OptimizerKind::Sgd { lr: 0.01 };
    all.push(dfl("so-text.toml", &text));
    all
}

/// One step of a path into a TOML document.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The path as written in messages (`wireless.channel`, `tasks[0].text`).
fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() {
        "(top level)".into()
    } else {
        s
    }
}

/// The paths of every table under `v` (`v` itself included), depth first.
fn tables(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Table(t) => {
            out.push(path.clone());
            for (k, child) in t {
                path.push(Seg::Key(k.clone()));
                tables(child, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                tables(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match (seg, v) {
        (Seg::Key(k), Value::Table(t)) => t.get_mut(k).unwrap(),
        (Seg::Index(i), Value::Array(a)) => &mut a[*i],
        (seg, _) => panic!("no {seg:?}"),
    })
}

/// The nearest key of a path (the array's key for a table in an array).
fn last_key(path: &[Seg]) -> &str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .unwrap()
}

fn parse(c: &Shipped) -> Value {
    Value::Table(
        c.text
            .parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("{}: {e}", c.label)),
    )
}

#[test]
fn every_shipped_configuration_loads_unchanged() {
    for c in shipped() {
        c.loader
            .load(&c.text, &c.label)
            .unwrap_or_else(|e| panic!("{}: {e}", c.label));
    }
}

#[test]
fn an_unknown_key_in_any_table_is_an_error_naming_it() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for c in shipped() {
        let doc = parse(&c);
        let mut paths = Vec::new();
        tables(&doc, &mut Vec::new(), &mut paths);
        for path in paths {
            let mut edited = doc.clone();
            match at(&mut edited, &path) {
                Value::Table(t) => {
                    t.insert(UNKNOWN.into(), Value::Integer(1));
                }
                other => panic!("not a table: {other:?}"),
            }
            let text = toml::to_string(&edited).unwrap();
            checked += 1;
            match c.loader.load(&text, &c.label) {
                Err(e) if e.contains(UNKNOWN) && e.contains(&c.label) => {}
                Err(e) => failures.push(format!(
                    "{} [{}]: the error does not name the key or the file: {e}",
                    c.label,
                    show(&path)
                )),
                Ok(()) => failures.push(format!(
                    "{} [{}]: `{UNKNOWN}` was accepted",
                    c.label,
                    show(&path)
                )),
            }
        }
    }
    assert!(checked > 50, "only {checked} tables walked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_table_written_as_a_positional_array_is_an_error_naming_it() {
    let mut failures = Vec::new();
    for c in shipped() {
        let doc = parse(&c);
        let mut paths = Vec::new();
        tables(&doc, &mut Vec::new(), &mut paths);
        for path in paths.into_iter().filter(|p| !p.is_empty()) {
            let mut edited = doc.clone();
            let slot = at(&mut edited, &path);
            // The values in order: what a positional reading would take.
            let positional = match &*slot {
                Value::Table(t) => t.values().cloned().collect(),
                other => panic!("not a table: {other:?}"),
            };
            *slot = Value::Array(positional);
            let text = toml::to_string(&edited).unwrap();
            let key = last_key(&path);
            match c.loader.load(&text, &c.label) {
                Err(e) if e.contains(key) && e.contains("table") => {}
                Err(e) => failures.push(format!(
                    "{} [{}]: the error does not name the key and a table: {e}",
                    c.label,
                    show(&path)
                )),
                Ok(()) => failures.push(format!(
                    "{} [{}]: a positional array was accepted",
                    c.label,
                    show(&path)
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn wflora_run_refuses_absurd_sizes_with_an_error_not_an_abort() {
    let dir = std::env::temp_dir().join(format!("wflora-config-sizes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let default = toml::to_string_pretty(&RunConfig::embedded_default()).unwrap();
    for (name, from, to, field) in [
        (
            "image.toml",
            "image_size = 28",
            "image_size = 4294967296",
            "task.image_size",
        ),
        ("rank.toml", "rank = 8", "rank = 100000", "model.rank"),
        ("rank100.toml", "rank = 8", "rank = 100", "model.rank"),
    ] {
        assert!(default.contains(from));
        let path = dir.join(name);
        std::fs::write(&path, default.replacen(from, to, 1)).unwrap();
        let err = wflora_experiments::cli::run(
            &path,
            &[],
            Some(&dir.join("out")),
            wflora_fed::Start::Fresh,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(field) && err.contains(name), "{name}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
