//! End-to-end checks of the decentralized engine on a small multi-task
//! setting (short pre-training, two tasks, two devices each).

use std::sync::{Arc, OnceLock};

use wflora_dfl::{DflConfig, Method, MultiTask, Simulation, Topology};

fn base() -> DflConfig {
    let mut c = DflConfig::embedded_default();
    c.backbone.pretrain.steps = 60;
    c.backbone.pretrain.warmup_steps = 10;
    c.backbone.cache_dir = std::env::temp_dir().join("wflora-dfl-tests-cache");
    c.tasks.truncate(2);
    c.tasks[1].classes = vec![0, 1, 2];
    c.devices_per_task = 2;
    c.test_limit = Some(64);
    c.rounds = 2;
    c.local_steps = 2;
    c.batch_size = 16;
    c.eval_every = 1;
    c.topology = Topology::Full;
    c
}

fn data() -> Arc<MultiTask> {
    static DATA: OnceLock<Arc<MultiTask>> = OnceLock::new();
    DATA.get_or_init(|| Arc::new(MultiTask::build(&base()).expect("task builds")))
        .clone()
}

fn sim(method: Method, topology: Topology) -> Simulation {
    let mut c = base();
    c.method = method;
    c.topology = topology;
    Simulation::new(c, data()).expect("simulation")
}

#[test]
fn tasks_are_disjoint_relabelled_and_normalised() {
    let d = data();
    assert_eq!(d.tasks.len(), 2);
    assert_eq!(d.tasks[0].num_classes, 5);
    assert_eq!(d.tasks[1].num_classes, 3);
    for t in &d.tasks {
        assert!(t.test.len() <= 64);
        assert!(
            t.train
                .labels()
                .iter()
                .all(|&l| (l as usize) < t.num_classes)
        );
    }
}

#[test]
fn so_lora_keeps_a_frozen_b_sparse_and_prices_a_once() {
    let mut s = sim(Method::SoLora, Topology::Full);
    let a0: Vec<Vec<_>> = s
        .states()
        .iter()
        .map(|d| d.factors.iter().map(|f| f.a.clone()).collect())
        .collect();
    let r1 = s.step().expect("round 1");
    let r2 = s.step().expect("round 2");
    let bpv = 32.0;
    let mut want_b = 0.0;
    let mut want_a = 0.0;
    for (k, d) in s.states().iter().enumerate() {
        for (l, f) in d.factors.iter().enumerate() {
            assert_eq!(f.a, a0[k][l], "A must stay frozen");
            let keep = (0.25 * f.b.len() as f64).ceil() as usize;
            let nz = f.b.iter().filter(|v| **v != 0.0).count();
            assert!(nz <= keep && nz > 0, "{nz} of budget {keep}");
            // Position bits: ⌈log2(d·r)⌉ with d·r = 64·8 = 512 → 9.
            want_b += keep as f64 * (bpv + 9.0);
            want_a += f.a.len() as f64 * bpv;
        }
    }
    assert!((r2.bits - want_b).abs() < 1e-6, "{} vs {want_b}", r2.bits);
    assert!(
        (r1.bits - want_b - want_a).abs() < 1e-6,
        "{} vs {}",
        r1.bits,
        want_b + want_a
    );
    assert!(r1.comm_time_s > 0.0 && r2.cum_comm_time_s > r1.comm_time_s);
    // Different devices' A are near-orthogonal: about 1/√64.
    let st = s.structure().expect("structure");
    assert!(
        st.cross_coherence_mean < 2.0 * st.cross_coherence_gaussian,
        "{st:?}"
    );
    assert!((0.0..=1.0).contains(&st.collision_rate_mean));
}

#[test]
fn so_lora_merges_neighbour_components_exactly() {
    let mut s = sim(Method::SoLora, Topology::Full);
    s.step().expect("round");
    let k = 0;
    let model = s.device_model(k).expect("model");
    let base = data().backbone.clone();
    let scale = 16.0f32 / 8.0;
    let w = s.weights().clone();
    for (layer, f) in s.states()[k].factors.iter().enumerate() {
        let w0 = base.get(&format!("{}.weight", f.name)).expect("weight");
        let w0 = w0.to_vec2::<f32>().expect("2-d");
        let mut want = ndarray::Array2::from_shape_fn((w0.len(), w0[0].len()), |(i, j)| w0[i][j]);
        for &j in s.graph().neighbours(k) {
            let fj = &s.states()[j].factors[layer];
            want.scaled_add(scale * w[[k, j]] as f32, &fj.b.dot(&fj.a));
        }
        let got = model
            .linear(&f.name)
            .expect("layer")
            .weight()
            .to_vec2::<f32>()
            .expect("2-d");
        for (i, row) in got.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - want[[i, j]]).abs() < 1e-5, "{} ({i},{j})", f.name);
            }
        }
    }
}

#[test]
fn gossip_on_a_complete_graph_reaches_consensus() {
    for method in [Method::DLora, Method::FfaLora] {
        let mut s = sim(method, Topology::Full);
        let r = s.step().expect("round");
        let st = s.states();
        for d in &st[1..] {
            for (f, g) in d.factors.iter().zip(&st[0].factors) {
                let diff = (&f.b - &g.b).iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(diff < 1e-6, "{method:?}: B differs by {diff}");
                let diff = (&f.a - &g.a).iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(diff < 1e-6, "{method:?}: A differs by {diff}");
            }
        }
        let per_device: f64 = st[0]
            .factors
            .iter()
            .map(|f| if method == Method::DLora { f.a.len() + f.b.len() } else { f.b.len() } as f64 * 32.0)
            .sum();
        assert!((r.bits - 4.0 * per_device).abs() < 1e-6);
    }
    let mut s = sim(Method::LocalOnly, Topology::Full);
    assert_eq!(s.step().expect("round").bits, 0.0);
}

#[test]
fn runs_are_reproducible_and_resume_identically() {
    let mut a = sim(Method::SoLora, Topology::Ring);
    a.run(|_| {}).expect("run");
    let mut b = sim(Method::SoLora, Topology::Ring);
    b.step().expect("round 1");
    let ck = serde_json::to_string(&b.checkpoint()).expect("serialise");
    let mut c = sim(Method::SoLora, Topology::Ring);
    c.restore(serde_json::from_str(&ck).expect("parse"))
        .expect("restore");
    c.run(|_| {}).expect("run");
    assert_eq!(a.records(), c.records());
    // A checkpoint of another configuration is refused, naming it.
    let mut d = sim(Method::DLora, Topology::Ring);
    let err = d
        .restore(serde_json::from_str(&ck).expect("parse"))
        .expect_err("other config");
    assert!(err.to_string().contains("checkpoint"));
    // A truncated checkpoint file is a named error.
    let dir = std::env::temp_dir().join(format!("wflora-dfl-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("checkpoint.json"), &ck[..ck.len() / 2]).expect("write");
    let mut e = sim(Method::SoLora, Topology::Ring);
    let err = e.run_resumable(&dir, true, |_| {}).expect_err("truncated");
    assert!(err.to_string().contains("checkpoint.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_topology_and_inference_report() {
    let mut s = sim(
        Method::SoLora,
        Topology::Cluster {
            clusters: 2,
            lambda: 0.0,
        },
    );
    // With link quality ignored, the clusters follow the tasks' codes.
    let labels = s.clusters().expect("clusters").to_vec();
    let tasks: Vec<usize> = s.states().iter().map(|d| d.task).collect();
    for i in 0..labels.len() {
        for j in 0..labels.len() {
            assert_eq!(
                labels[i] == labels[j],
                tasks[i] == tasks[j],
                "{labels:?} vs {tasks:?}"
            );
        }
    }
    s.run(|_| {}).expect("run");
    let rep = s.inference().expect("inference");
    for v in [rep.hard, rep.moe, rep.average, rep.routing_accuracy] {
        assert!((0.0..=1.0).contains(&v));
    }
    // The mixture can only lose to the oracle where it routes wrongly.
    assert!(rep.moe <= rep.hard + 1e-12 || rep.routing_accuracy < 1.0);
    assert_eq!(rep.per_task.len(), 2);
}

#[test]
fn bad_input_is_a_named_error() {
    let mut c = base();
    c.tasks[0].classes = vec![5, 42];
    let err = MultiTask::build(&c).expect_err("class out of range");
    assert!(err.to_string().contains("tasks[0].classes"), "{err}");
    let mut c = base();
    c.devices_per_task = 100_000;
    let err = Simulation::new(c, data()).expect_err("too many devices");
    assert!(err.to_string().contains("devices_per_task"), "{err}");
}
