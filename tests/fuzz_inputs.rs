//! Bounded fuzzing of what a user hands the tools: mutated run and SO-LoRA
//! configurations (TOML) and mutated allocation instances (JSON) must each
//! end in `Ok` or in an error, never in a panic, an abort or a hang.
//!
//! The seeds are every shipped configuration, the embedded defaults and the
//! documented allocation instance. Each case applies one to three mutations
//! (a key deleted, an unknown key added, a value replaced by an extreme or
//! mistyped one, a table replaced by an array, an array emptied or doubled)
//! drawn from a fixed seed, so a failure is reproducible: its message
//! prints the mutated input. A case slower than [`CASE_LIMIT`] counts as a
//! hang; the whole test stops drawing new cases after [`WALL_LIMIT`], so it
//! stays within about two minutes on CI's two cores.
#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A single parse-and-validate or solve slower than this is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(5);
/// No new case is drawn after this much wall clock per input kind.
const WALL_LIMIT: Duration = Duration::from_secs(40);

/// Replacement values: extremes, wrong types and wrong shapes.
fn toml_replacement(rng: &mut StdRng) -> toml::Value {
    use toml::Value as V;
    match rng.random_range(0..16) {
        0 => V::Integer(0),
        1 => V::Integer(-1),
        2 => V::Integer(4_294_967_296),
        3 => V::Integer(i64::MAX),
        4 => V::Integer(100_000),
        5 => V::Float(f64::NAN),
        6 => V::Float(f64::INFINITY),
        7 => V::Float(-1e308),
        8 => V::Float(1e-320),
        9 => V::Boolean(true),
        10 => V::String(String::new()),
        11 => V::String("zz".repeat(rng.random_range(1..64))),
        12 => V::Array(vec![V::Integer(1), V::Integer(2)]),
        13 => V::Array(Vec::new()),
        14 => V::Table(toml::map::Map::new()),
        _ => V::Float(rng.random_range(-1e6..1e6)),
    }
}

/// Every path (keys and array indices) to a value inside `v`.
fn toml_paths(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                prefix.push(k.clone());
                out.push(prefix.clone());
                toml_paths(x, prefix, out);
                prefix.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(format!("#{i}"));
                out.push(prefix.clone());
                toml_paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The parent container of `path` and the last step.
fn toml_at<'v>(root: &'v mut toml::Value, path: &[String]) -> Option<&'v mut toml::Value> {
    let mut cur = root;
    for step in path {
        cur = match (cur, step.strip_prefix('#')) {
            (toml::Value::Array(a), Some(i)) => a.get_mut(i.parse::<usize>().ok()?)?,
            (toml::Value::Table(t), None) => t.get_mut(step)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn mutate_toml(root: &mut toml::Value, rng: &mut StdRng) {
    let mut paths = Vec::new();
    toml_paths(root, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    let path = paths[rng.random_range(0..paths.len())].clone();
    let (parent_path, last) = path.split_at(path.len() - 1);
    let Some(parent) = toml_at(root, parent_path) else {
        return;
    };
    let last = &last[0];
    match (parent, rng.random_range(0..6)) {
        (toml::Value::Table(t), 0) => {
            t.remove(last);
        }
        (toml::Value::Table(t), 1) => {
            t.insert("zz_fuzz_key".into(), toml::Value::Integer(1));
        }
        (toml::Value::Array(a), 2) => {
            if rng.random_bool(0.5) {
                a.clear();
            } else {
                let copy = a.clone();
                a.extend(copy);
            }
        }
        (p, _) => {
            if let Some(slot) = toml_at(p, std::slice::from_ref(last)) {
                *slot = toml_replacement(rng);
            }
        }
    }
}

fn json_replacement(rng: &mut StdRng) -> serde_json::Value {
    use serde_json::json;
    match rng.random_range(0..13) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1e308),
        3 => json!(-1e308),
        4 => json!(1e-320),
        5 => json!(4_294_967_296u64),
        6 => json!(u64::MAX),
        7 => json!(null),
        8 => json!("x"),
        9 => json!([]),
        10 => json!({}),
        11 => json!(true),
        _ => json!(rng.random_range(-10.0..10.0)),
    }
}

fn mutate_json(v: &mut serde_json::Value, rng: &mut StdRng) {
    // A random walk down the tree, then one change where it stops.
    let descend = rng.random_bool(0.7);
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            let Some(k) = m.keys().nth(rng.random_range(0..m.len())).cloned() else {
                return;
            };
            if descend {
                if let Some(child) = m.get_mut(&k) {
                    mutate_json(child, rng);
                }
                return;
            }
            match rng.random_range(0..3) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert("zz_fuzz_key".into(), serde_json::json!(1));
                }
                _ => {
                    m.insert(k, json_replacement(rng));
                }
            }
        }
        serde_json::Value::Array(a) if !a.is_empty() && descend => {
            let i = rng.random_range(0..a.len());
            mutate_json(&mut a[i], rng);
        }
        other => *other = json_replacement(rng),
    }
}

/// Runs `check` on `cases` inputs made by `make`, each under a panic guard
/// and the per-case limit, in a thread watched for hangs. Returns how many
/// cases ran and how many were accepted.
fn fuzz<F>(kind: &'static str, cases: usize, mut make: F, check: fn(&str) -> bool) -> (usize, usize)
where
    F: FnMut(usize) -> String + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let worker = std::thread::spawn(move || {
        let start = Instant::now();
        let (mut ran, mut ok) = (0, 0);
        for i in 0..cases {
            if start.elapsed() > WALL_LIMIT {
                break;
            }
            let input = make(i);
            let _ = tx.send((i, input.clone()));
            let t = Instant::now();
            let accepted = catch_unwind(AssertUnwindSafe(|| check(&input)))
                .unwrap_or_else(|_| panic!("{kind} case {i} panicked on:\n{input}"));
            let took = t.elapsed();
            assert!(
                took < CASE_LIMIT,
                "{kind} case {i} took {took:?} (a hang) on:\n{input}"
            );
            ran += 1;
            ok += usize::from(accepted);
        }
        (ran, ok)
    });
    // The watchdog: every case must start within the case limit of the last.
    let mut last = None;
    loop {
        match rx.recv_timeout(CASE_LIMIT * 2) {
            Ok(case) => last = Some(case),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (i, input) = last.unwrap_or_default();
                panic!("{kind} case {i} hangs on:\n{input}");
            }
        }
    }
    worker.join().unwrap()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn mutated_run_configs_never_panic_or_hang() {
    let mut seeds: Vec<toml::Value> = Vec::new();
    for e in std::fs::read_dir(root().join("experiments/configs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            seeds.push(toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap());
        }
    }
    seeds.push(toml::Value::try_from(wflora::fed::RunConfig::embedded_default()).unwrap());
    assert!(seeds.len() >= 4);
    let mut rng = StdRng::seed_from_u64(31);
    let (ran, ok) = fuzz(
        "run config",
        4000,
        move |i| {
            let mut v = seeds[i % seeds.len()].clone();
            for _ in 0..rng.random_range(1..=3) {
                mutate_toml(&mut v, &mut rng);
            }
            toml::to_string(&v).unwrap_or_default()
        },
        |text| wflora::fed::RunConfig::from_toml(text, "fuzz.toml").is_ok(),
    );
    eprintln!("run configs: {ran} cases, {ok} accepted");
    assert!(ran >= 500, "only {ran} cases ran");
    // The mutations must mostly be refused (they break something) and the
    // unmutated shape must still parse: neither all-accept nor all-refuse.
    assert!(ok < ran, "every mutated config was accepted");
}

#[test]
fn mutated_so_lora_configs_never_panic_or_hang() {
    let seed = toml::Value::try_from(wflora::dfl::DflConfig::embedded_default()).unwrap();
    let text = toml::to_string(&seed).unwrap();
    assert!(wflora::dfl::DflConfig::from_toml(&text, "seed.toml").is_ok());
    let mut rng = StdRng::seed_from_u64(32);
    let (ran, ok) = fuzz(
        "SO-LoRA config",
        3000,
        move |_| {
            let mut v = seed.clone();
            for _ in 0..rng.random_range(1..=3) {
                mutate_toml(&mut v, &mut rng);
            }
            toml::to_string(&v).unwrap_or_default()
        },
        |text| wflora::dfl::DflConfig::from_toml(text, "fuzz.toml").is_ok(),
    );
    eprintln!("SO-LoRA configs: {ran} cases, {ok} accepted");
    assert!(ran >= 500, "only {ran} cases ran");
    assert!(ok < ran, "every mutated config was accepted");
}

#[test]
fn mutated_alloc_instances_never_panic_or_hang() {
    let text = std::fs::read_to_string(root().join("crates/alloc/examples/instance.json")).unwrap();
    let seed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(wflora::alloc::solve_instance_json(&text).is_ok());
    let mut rng = StdRng::seed_from_u64(33);
    let (ran, ok) = fuzz(
        "alloc instance",
        3000,
        move |_| {
            let mut v = seed.clone();
            for _ in 0..rng.random_range(1..=3) {
                mutate_json(&mut v, &mut rng);
            }
            serde_json::to_string_pretty(&v).unwrap_or_default()
        },
        |text| match wflora::alloc::solve_instance_json(text) {
            Ok(s) => {
                // An accepted instance gives a usable answer.
                let v = serde_json::to_value(&s).unwrap();
                assert!(v.is_object(), "{v}");
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        },
    );
    eprintln!("alloc instances: {ran} cases, {ok} accepted");
    assert!(ran >= 500, "only {ran} cases ran");
    assert!(ok > 0 && ok < ran, "{ok} of {ran} accepted");
}
