//! Engine-level guarantees: resume after a kill is bit-identical, results do
//! not depend on the number of worker threads, a checkpoint of another
//! configuration is refused.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use wflora_fed::{FedError, RunConfig, RunDir, Simulation, Start, Task, run_to_end, run_until};
use wflora_soft::MethodKind;

mod common;

/// The small run, 3 of 4 clients per round, evaluated every 2 rounds.
fn small(method: MethodKind) -> RunConfig {
    let mut c = common::small_base(scratch("cache"));
    c.federation.clients_per_round = 3;
    c.federation.eval_every = 2;
    c.compression.method = method;
    c
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("test", name)
}

fn task() -> Arc<Task> {
    common::task("test")
}

fn lines(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap()
}

#[test]
fn killed_and_resumed_run_ends_with_identical_metrics() {
    for method in [MethodKind::Soft, MethodKind::SLora, MethodKind::RLora] {
        let a = scratch(&format!("whole-{method}"));
        let b = scratch(&format!("killed-{method}"));
        let mut sim = Simulation::new(small(method), task()).unwrap();
        let whole = run_to_end(&mut sim, &a, false, |_| {}).unwrap();
        assert_eq!(whole.len(), 4);

        let mut first = Simulation::new(small(method), task()).unwrap();
        run_until(&mut first, &b, false, 2, |_| {}).unwrap();
        drop(first);
        // Starting again without --resume is refused: nothing is overwritten.
        let mut again = Simulation::new(small(method), task()).unwrap();
        assert!(matches!(
            run_to_end(&mut again, &b, false, |_| {}),
            Err(FedError::Resume { .. })
        ));
        let mut resumed = Simulation::new(small(method), task()).unwrap();
        let rest = run_to_end(&mut resumed, &b, true, |_| {}).unwrap();
        assert_eq!(rest, whole, "{method}");
        assert_eq!(lines(&a), lines(&b), "{method}");
    }
}

#[test]
fn results_do_not_depend_on_worker_threads() {
    let mut one = small(MethodKind::TLora);
    one.federation.workers = 1;
    let mut three = small(MethodKind::TLora);
    three.federation.workers = 3;
    let mut s1 = Simulation::new(one, task()).unwrap();
    let mut s3 = Simulation::new(three, task()).unwrap();
    while !s1.finished() {
        assert_eq!(s1.step().unwrap(), s3.step().unwrap());
    }
    assert_eq!(s1.global(), s3.global());
    // The wall-clock phase times are measured, outside the metrics: every
    // round is counted, training takes time, the sum is the parts.
    let t = s1.phase_times();
    assert_eq!(t.rounds, s1.round());
    assert!(t.train_s > 0.0 && t.evaluate_s > 0.0, "{t:?}");
    let parts =
        t.train_s + t.allocate_s + t.compress_s + t.covariance_s + t.aggregate_s + t.evaluate_s;
    assert!((t.total_s() - parts).abs() < 1e-12);
}

#[test]
fn checkpoint_of_another_config_is_refused() {
    let dir = scratch("other-config");
    let mut sim = Simulation::new(small(MethodKind::Soft), task()).unwrap();
    run_until(&mut sim, &dir, false, 1, |_| {}).unwrap();
    let mut other_cfg = small(MethodKind::Soft);
    other_cfg.compression.rho = 0.5;
    let mut other = Simulation::new(other_cfg, task()).unwrap();
    let err = run_to_end(&mut other, &dir, true, |_| {}).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
}

#[test]
fn a_second_run_on_a_directory_in_use_is_refused_at_once() {
    let dir = scratch("locked");
    let cfg = small(MethodKind::Soft);
    let held = RunDir::open(&dir, &cfg, Start::Fresh).unwrap();
    // Both a fresh start and a resume are refused while the first holds it,
    // before any simulation exists, and the error names the directory and
    // this process as the holder.
    for start in [Start::Fresh, Start::Resume, Start::Force] {
        let err = RunDir::open(&dir, &cfg, start).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FedError::Locked { .. }), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }
    let mut sim = Simulation::new(cfg.clone(), task()).unwrap();
    held.run(&mut sim, 2, |_| {}).unwrap();
    // Released when the run ends: a resume may follow.
    let mut sim = Simulation::new(cfg, task()).unwrap();
    assert_eq!(run_to_end(&mut sim, &dir, true, |_| {}).unwrap().len(), 4);
}

#[test]
fn resume_refuses_metrics_that_are_not_the_checkpoints_rounds() {
    let cfg = small(MethodKind::Soft);
    // Two runs' lines interleaved (rounds 1, 1, 2, 2): what two processes
    // on one directory used to leave behind.
    let dir = scratch("doubled");
    let mut sim = Simulation::new(cfg.clone(), task()).unwrap();
    run_until(&mut sim, &dir, false, 2, |_| {}).unwrap();
    let text = lines(&dir);
    let l: Vec<&str> = text.lines().collect();
    let doubled = format!("{0}\n{0}\n{1}\n{1}\n", l[0], l[1]);
    std::fs::write(dir.join("metrics.jsonl"), &doubled).unwrap();
    let err = RunDir::open(&dir, &cfg, Start::Resume)
        .unwrap_err()
        .to_string();
    assert!(err.contains("metrics.jsonl"), "{err}");
    assert!(err.contains("line 2 holds round 1"), "{err}");
    assert_eq!(
        lines(&dir),
        doubled,
        "a refused resume leaves the file alone"
    );
    // A line changed in place (same round numbers) fails the checkpoint's
    // digest of the metrics.
    let changed = text.replacen("\"participants\":3", "\"participants\":2", 1);
    assert_ne!(changed, text);
    std::fs::write(dir.join("metrics.jsonl"), &changed).unwrap();
    let err = RunDir::open(&dir, &cfg, Start::Resume)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the ones the checkpoint"), "{err}");
    // The line of a round whose checkpoint was never written (a kill
    // between the two) is dropped, as before.
    let mut extra = text.clone();
    extra.push_str(&l[1].replacen("\"round\":2", "\"round\":3", 1));
    extra.push('\n');
    std::fs::write(dir.join("metrics.jsonl"), &extra).unwrap();
    let mut sim = Simulation::new(cfg.clone(), task()).unwrap();
    let all = run_to_end(&mut sim, &dir, true, |_| {}).unwrap();
    let whole_dir = scratch("doubled-whole");
    let mut whole = Simulation::new(cfg, task()).unwrap();
    assert_eq!(
        all,
        run_to_end(&mut whole, &whole_dir, false, |_| {}).unwrap()
    );
    assert_eq!(lines(&dir), lines(&whole_dir));
}

#[test]
fn refusals_come_before_any_work_and_force_replaces_only_once_started() {
    let dir = scratch("early");
    let cfg = small(MethodKind::Soft);
    let mut sim = Simulation::new(cfg.clone(), task()).unwrap();
    run_until(&mut sim, &dir, false, 1, |_| {}).unwrap();
    let kept = lines(&dir);
    // No task or simulation is needed to be refused: another configuration
    // on --resume, and an existing run without --resume or --force.
    let mut other = cfg.clone();
    other.compression.rho = 0.5;
    let err = RunDir::open(&dir, &other, Start::Resume).unwrap_err();
    assert!(err.to_string().contains("another configuration"), "{err}");
    let err = RunDir::open(&dir, &cfg, Start::Fresh).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    // --force opened but not run (the new run failed to start): the old
    // run is whole.
    drop(RunDir::open(&dir, &other, Start::Force).unwrap());
    assert_eq!(lines(&dir), kept);
    assert!(dir.join("state.ckpt").exists());
    // Run, it replaces the old run with the new one's.
    let forced = RunDir::open(&dir, &other, Start::Force).unwrap();
    let mut sim = Simulation::new(other.clone(), task()).unwrap();
    let records = forced.run(&mut sim, usize::MAX, |_| {}).unwrap();
    assert_eq!(records.len(), 4);
    let fresh_dir = scratch("early-fresh");
    let mut fresh = Simulation::new(other, task()).unwrap();
    run_to_end(&mut fresh, &fresh_dir, false, |_| {}).unwrap();
    assert_eq!(lines(&dir), lines(&fresh_dir));
}

#[test]
fn bits_follow_the_budget_and_ilora_sends_everything() {
    let mut soft = Simulation::new(small(MethodKind::Soft), task()).unwrap();
    let mut ilora = Simulation::new(small(MethodKind::ILora), task()).unwrap();
    let rs = soft.step().unwrap();
    let ri = ilora.step().unwrap();
    // tiny: 4 blocks × (q, v), 64×64, rank 8; head 5×64 + 5.
    let head = (5 * 64 + 5) as f64 * 32.0;
    let per_matrix = |m: f64| m * (64.0 + 64.0) * 32.0 + m * 3.0;
    let clients = rs.participants as f64;
    assert_eq!(rs.bits, clients * (8.0 * per_matrix(2.0) + head));
    // ILoRA sends all r components and no index bits.
    assert_eq!(ri.bits, clients * (8.0 * 8.0 * 128.0 * 32.0 + head));
    assert!(rs.latency_s < ri.latency_s);
}

#[test]
fn bad_config_names_the_field() {
    let mut c = small(MethodKind::Soft);
    c.federation.clients_per_round = 9;
    let err = Simulation::new(c, task()).unwrap_err().to_string();
    assert!(err.contains("federation.clients_per_round"), "{err}");
    let err = RunConfig::from_toml("name = 3", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.toml"), "{err}");
}
