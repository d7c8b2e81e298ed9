//! The round as a protocol: a server and its clients on their own threads,
//! exchanging nothing but encoded bytes, give the in-process simulator's
//! metrics bit for bit; messages survive the wire exactly, and a truncated,
//! corrupt, foreign or wrong-version message is refused with a clear error.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::mpsc;
use wflora_fed::protocol::{
    ClientUpdate, CompressInstruction, HEADER_BYTES, TrainInstruction, TrainReport,
};
use wflora_fed::{
    AllocationSettings, Client, ClientMessage, ModelState, PenaltyKind, RoundRecord, RunConfig,
    Server, ServerMessage, Simulation, Task, WireError, client_shards,
};
use wflora_lora::{AdapterFactors, HeadParams};
use wflora_soft::ndarray::Array2;
use wflora_soft::{FactorsView, Message, MethodKind, Residual};

mod common;

/// Runs `cfg` with the server on this thread and every client on a thread of
/// its own; only bytes cross the channels.
fn run_threaded(
    cfg: &RunConfig,
    task: &Arc<Task>,
    rounds: usize,
) -> (Vec<RoundRecord>, ModelState) {
    let shards = client_shards(cfg, task).unwrap();
    let sizes = shards.sizes();
    let mut server = Server::new(cfg.clone(), task.clone(), &sizes).unwrap();
    let (to_server, inbox) = mpsc::channel::<Vec<u8>>();
    let mut to_clients = Vec::new();
    let mut handles = Vec::new();
    for (k, shard) in shards.into_clients().into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        to_clients.push(tx);
        let out = to_server.clone();
        let (cfg, task) = (cfg.clone(), task.clone());
        handles.push(std::thread::spawn(move || {
            let mut client = Client::new(k, &cfg, task, shard).unwrap();
            for bytes in rx {
                let msg = ServerMessage::decode(&bytes).unwrap();
                out.send(client.handle(&msg).unwrap().encode()).unwrap();
            }
        }));
    }
    let exchange = |msgs: Vec<ServerMessage>| -> Vec<ClientMessage> {
        let n = msgs.len();
        for m in msgs {
            to_clients[m.client()].send(m.encode()).unwrap();
        }
        (0..n)
            .map(|_| ClientMessage::decode(&inbox.recv().unwrap()).unwrap())
            .collect()
    };
    let mut records = Vec::new();
    for _ in 0..rounds {
        let plan = server.plan_round().unwrap();
        let reports = exchange(plan);
        let compress = server.allocate(reports).unwrap();
        let updates = exchange(compress);
        records.push(server.finish_round(updates).unwrap());
    }
    drop(to_clients);
    for h in handles {
        h.join().unwrap();
    }
    (records, server.global().clone())
}

fn run_simulation(
    cfg: &RunConfig,
    task: &Arc<Task>,
    rounds: usize,
) -> (Vec<RoundRecord>, ModelState) {
    let mut sim = Simulation::new(cfg.clone(), task.clone()).unwrap();
    let records = (0..rounds).map(|_| sim.step().unwrap()).collect();
    (records, sim.global().clone())
}

fn assert_same(a: &(Vec<RoundRecord>, ModelState), b: &(Vec<RoundRecord>, ModelState)) {
    for (x, y) in a.0.iter().zip(&b.0) {
        // The JSON lines `wflora run` writes: every float in shortest
        // round-trip form, so equal text is equal bits.
        assert_eq!(
            serde_json::to_string(x).unwrap(),
            serde_json::to_string(y).unwrap()
        );
    }
    assert_eq!(a.0.len(), b.0.len());
    assert_eq!(a.1, b.1, "global states differ");
}

#[test]
fn three_rounds_of_the_default_config_over_threads_equal_the_simulator() {
    // The embedded default (10 clients, SOFT at ρ = 0.25, rank 8, q and v,
    // equalising shares), with its backbone pre-trained for fewer steps so
    // that the test takes seconds: the protocol does not see pre-training.
    let mut cfg = RunConfig::embedded_default();
    let base = common::small_base(common::scratch("protocol", "cache"));
    cfg.task = base.task;
    cfg.federation.rounds = 3;
    let task = Arc::new(Task::build(&cfg.task).unwrap());
    let threaded = run_threaded(&cfg, &task, 3);
    let simulated = run_simulation(&cfg, &task, 3);
    assert_eq!(threaded.0.len(), 3);
    assert!(threaded.0.iter().all(|r| r.participants == 10));
    assert_same(&threaded, &simulated);
}

#[test]
fn tsfa_with_sampling_over_threads_equals_the_simulator() {
    // Both exchanges carry content here: importances for the dropped-energy
    // penalty, per-matrix RLoRA seeds, and clients that are not sampled.
    for method in [MethodKind::Soft, MethodKind::RLora, MethodKind::SLora] {
        let mut cfg = common::small_base(common::scratch("protocol", "cache"));
        cfg.federation.clients_per_round = 3;
        cfg.compression.method = method;
        cfg.wireless.allocation = AllocationSettings::DriftPlusPenalty {
            v: 1.0,
            mode: Default::default(),
            m_min: 1,
            penalty: PenaltyKind::DroppedEnergy,
            budget_rel: 0.3,
            budget_rank: None,
        };
        let task = common::task("protocol");
        let threaded = run_threaded(&cfg, &task, 3);
        let simulated = run_simulation(&cfg, &task, 3);
        assert_same(&threaded, &simulated);
    }
}

#[test]
fn the_server_refuses_replies_out_of_order_or_from_strangers() {
    let mut cfg = common::small_base(common::scratch("protocol", "cache"));
    cfg.federation.clients_per_round = 4;
    let task = common::task("protocol");
    let shards = client_shards(&cfg, &task).unwrap();
    let mut server = Server::new(cfg.clone(), task.clone(), &shards.sizes()).unwrap();
    let plan = server.plan_round().unwrap();
    assert!(
        server.plan_round().is_err(),
        "a second plan in the same round"
    );
    let report = |client: usize, round: usize, samples: usize| {
        ClientMessage::Trained(TrainReport {
            round,
            client,
            samples,
            train_loss: 1.0,
            importances: Vec::new(),
            evaluation: None,
        })
    };
    let sizes = shards.sizes();
    let good: Vec<_> = (0..plan.len()).map(|k| report(k, 0, sizes[k])).collect();
    let cases = [
        (good[..plan.len() - 1].to_vec(), "did not answer"),
        (
            [good.clone(), vec![report(0, 0, sizes[0])]].concat(),
            "answered twice",
        ),
        (
            [good[1..].to_vec(), vec![report(0, 1, sizes[0])]].concat(),
            "answered round 1",
        ),
        (
            [good[1..].to_vec(), vec![report(0, 0, sizes[0] + 1)]].concat(),
            "reports",
        ),
    ];
    // A refused batch of replies leaves the round where it was.
    for (replies, want) in cases {
        let err = server.allocate(replies).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    assert!(
        server.finish_round(Vec::new()).is_err(),
        "updates before allocation"
    );
    server.allocate(good).unwrap();
}

#[test]
fn the_server_refuses_updates_that_do_not_add_up() {
    let mut cfg = common::small_base(common::scratch("protocol", "cache"));
    cfg.federation.clients_per_round = 4;
    let task = common::task("protocol");
    let shards = client_shards(&cfg, &task).unwrap();
    let mut server = Server::new(cfg.clone(), task.clone(), &shards.sizes()).unwrap();
    let mut clients: Vec<Client> = shards
        .into_clients()
        .into_iter()
        .enumerate()
        .map(|(k, shard)| Client::new(k, &cfg, task.clone(), shard).unwrap())
        .collect();
    let mut exchange = |msgs: Vec<ServerMessage>| -> Vec<ClientMessage> {
        msgs.iter()
            .map(|m| clients[m.client()].handle(m).unwrap())
            .collect()
    };
    let reports = exchange(server.plan_round().unwrap());
    let updates = exchange(server.allocate(reports).unwrap());
    let tamper = |f: &dyn Fn(&mut ClientUpdate)| -> String {
        let mut u = updates.clone();
        let ClientMessage::Update(first) = &mut u[0] else {
            unreachable!()
        };
        f(first);
        server.clone().finish_round(u).unwrap_err().to_string()
    };
    let e = tamper(&|u| u.payload_bits += 1);
    assert!(e.contains("payload bits"), "{e}");
    let e = tamper(&|u| u.head.as_mut().unwrap().bias.push(0.0));
    assert!(e.contains("head"), "{e}");
    let e = tamper(&|u| {
        u.messages.pop();
    });
    assert!(e.contains("messages"), "{e}");
    let e = tamper(&|u| u.local_factors.clear());
    assert!(e.contains("local factors"), "{e}");
    let e = tamper(&|u| u.round = 5);
    assert!(e.contains("answered round 5"), "{e}");
    let e = tamper(&|u| u.head.as_mut().unwrap().bias[0] = f32::NAN);
    assert!(e.contains("not finite"), "{e}");
    let e = tamper(&|u| u.local_factors[0].name = "blocks.9.attn.k".into());
    assert!(e.contains("local factors 'blocks.9.attn.k'"), "{e}");
    // More than its m_k components: SOFT keeping all r of them.
    let e = tamper(&|u| {
        let (d, l, r) = {
            let dims = u.messages[0].dims();
            (dims.d, dims.l, dims.r)
        };
        let (b, a) = (Array2::<f32>::ones((d, r)), Array2::<f32>::ones((r, l)));
        let all = MethodKind::Soft
            .sparsifier(true, 0)
            .compress(
                FactorsView::new(b.view(), a.view()),
                FactorsView::new(b.view(), a.view()),
                &Residual::Zero,
                r,
            )
            .unwrap()
            .0;
        u.messages[0] = all;
    });
    assert!(e.contains("the budget of its m = 2 components"), "{e}");
    let rec = server.finish_round(updates).unwrap();
    assert_eq!(rec.participants, 4);
}

#[test]
fn a_client_rebuilt_from_its_state_bytes_at_any_point_continues_identically() {
    // A driver that keeps clients outside its process (a Flower node's
    // state) saves each client after every message and rebuilds it before
    // the next: the records must not move, for the factor residuals of
    // SOFT, the dense ones of SLoRA, and local-only models.
    for (method, local_only) in [
        (MethodKind::Soft, false),
        (MethodKind::SLora, false),
        (MethodKind::Soft, true),
    ] {
        let mut cfg = common::small_base(common::scratch("protocol", "cache"));
        cfg.federation.clients_per_round = 3;
        cfg.federation.rounds = 3;
        cfg.federation.local_only = local_only;
        cfg.compression.method = method;
        let task = common::task("protocol");
        let want = run_simulation(&cfg, &task, 3);
        let shards = client_shards(&cfg, &task).unwrap().into_clients();
        let mut server = Server::new(
            cfg.clone(),
            task.clone(),
            &client_shards(&cfg, &task).unwrap().sizes(),
        )
        .unwrap();
        let fresh = |k: usize| Client::new(k, &cfg, task.clone(), shards[k].clone()).unwrap();
        let mut states: Vec<Vec<u8>> = (0..4).map(|k| fresh(k).state_bytes().unwrap()).collect();
        let mut exchange = |msgs: Vec<ServerMessage>| -> Vec<ClientMessage> {
            msgs.iter()
                .map(|m| {
                    let k = m.client();
                    let mut c = fresh(k);
                    c.restore_state(&states[k]).unwrap();
                    let reply = c.handle(m).unwrap();
                    states[k] = c.state_bytes().unwrap();
                    reply
                })
                .collect()
        };
        let mut records = Vec::new();
        for _ in 0..3 {
            let reports = exchange(server.plan_round().unwrap());
            let updates = exchange(server.allocate(reports).unwrap());
            records.push(server.finish_round(updates).unwrap());
        }
        assert_same(&(records, server.global().clone()), &want);
    }
    // Another client's state, and corrupt bytes, are refused.
    let cfg = common::small_base(common::scratch("protocol", "cache"));
    let task = common::task("protocol");
    let shards = client_shards(&cfg, &task).unwrap().into_clients();
    let a = Client::new(0, &cfg, task.clone(), shards[0].clone()).unwrap();
    let mut b = Client::new(1, &cfg, task.clone(), shards[1].clone()).unwrap();
    let bytes = a.state_bytes().unwrap();
    let e = b.restore_state(&bytes).unwrap_err().to_string();
    assert!(e.contains("another client"), "{e}");
    let e = b
        .restore_state(&bytes[..bytes.len() - 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt"), "{e}");
}

#[test]
fn a_client_refuses_messages_for_others_or_out_of_order() {
    let cfg = common::small_base(common::scratch("protocol", "cache"));
    let task = common::task("protocol");
    let shards = client_shards(&cfg, &task).unwrap();
    let mut client = Client::new(1, &cfg, task.clone(), shards.clients()[1].clone()).unwrap();
    let compress = ServerMessage::Compress(CompressInstruction {
        round: 0,
        client: 1,
        components: 2,
        share: 0.25,
        sparsifier_seeds: vec![0; 4],
        report_factors: true,
    });
    let err = client.handle(&compress).unwrap_err().to_string();
    assert!(err.contains("before training"), "{err}");
    // A state that is not this model's (two matrices swapped) is refused
    // before anything changes.
    let server = Server::new(
        {
            let mut c = cfg.clone();
            c.federation.clients_per_round = 4;
            c
        },
        task.clone(),
        &shards.sizes(),
    )
    .unwrap();
    let mut state = server.global().clone();
    state.factors.swap(0, 1);
    let train = |state: ModelState| {
        ServerMessage::Train(TrainInstruction {
            round: 0,
            client: 1,
            state: Some(state),
            batch_seed: 0,
            report_importances: false,
            evaluate: false,
        })
    };
    let err = client.handle(&train(state)).unwrap_err().to_string();
    assert!(err.contains("expected 'blocks.0.attn.q'"), "{err}");
    client.handle(&train(server.global().clone())).unwrap();
    // A bad compress instruction leaves the trained update in place.
    let bad = |components: usize, seeds: usize| {
        ServerMessage::Compress(CompressInstruction {
            round: 0,
            client: 1,
            components,
            share: 0.25,
            sparsifier_seeds: vec![0; seeds],
            report_factors: true,
        })
    };
    let layers = server.global().factors.len();
    let err = client.handle(&bad(2, 1)).unwrap_err().to_string();
    assert!(err.contains("sparsifier seeds"), "{err}");
    let err = client.handle(&bad(99, layers)).unwrap_err().to_string();
    assert!(err.contains("kept components m = 99"), "{err}");
    let ClientMessage::Update(u) = client.handle(&bad(2, layers)).unwrap() else {
        unreachable!()
    };
    assert_eq!(u.messages.len(), layers);
    let other = ServerMessage::Train(TrainInstruction {
        round: 0,
        client: 2,
        state: None,
        batch_seed: 0,
        report_importances: false,
        evaluate: false,
    });
    let err = client.handle(&other).unwrap_err().to_string();
    assert!(err.contains("for client 2"), "{err}");
    assert!(Client::new(0, &cfg, task.clone(), vec![]).is_err());
    assert!(Client::new(0, &cfg, task.clone(), vec![usize::MAX]).is_err());
}

// ---- the byte format, without a task --------------------------------------

fn mat(rows: usize, cols: usize, seed: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        ((i * cols + j) as f32 * 0.37 + seed).sin()
    })
}

fn state() -> ModelState {
    ModelState {
        factors: (0..2)
            .map(|j| AdapterFactors {
                name: format!("blocks.{j}.attn.q"),
                b: mat(6, 4, j as f32),
                a: mat(4, 5, 1.0 + j as f32),
            })
            .collect(),
        head: HeadParams {
            weight: mat(3, 6, 7.0),
            bias: vec![0.5, -1.25, f32::MIN_POSITIVE],
        },
    }
}

/// One message of each method, on the factors of [`state`].
fn messages() -> Vec<Message> {
    let s = state();
    let f = &s.factors[0];
    let (db, da) = (mat(6, 4, 3.0), mat(4, 5, 4.0));
    MethodKind::ALL
        .iter()
        .map(|m| {
            m.sparsifier(true, 42)
                .compress(
                    FactorsView::new(f.b.view(), f.a.view()),
                    FactorsView::new(db.view(), da.view()),
                    &Residual::Zero,
                    2,
                )
                .unwrap()
                .0
        })
        .collect()
}

fn server_messages() -> Vec<ServerMessage> {
    vec![
        ServerMessage::Train(TrainInstruction {
            round: 7,
            client: 3,
            state: Some(state()),
            batch_seed: u64::MAX,
            report_importances: true,
            evaluate: false,
        }),
        ServerMessage::Train(TrainInstruction {
            round: 8,
            client: 0,
            state: None,
            batch_seed: 1,
            report_importances: false,
            evaluate: true,
        }),
        ServerMessage::Compress(CompressInstruction {
            round: 7,
            client: 3,
            components: 2,
            share: 0.1 + 0.2,
            sparsifier_seeds: vec![5, u64::MAX],
            report_factors: true,
        }),
    ]
}

fn client_messages() -> Vec<ClientMessage> {
    let mut out = vec![
        ClientMessage::Trained(TrainReport {
            round: 7,
            client: 3,
            samples: 120,
            train_loss: std::f64::consts::PI,
            importances: vec![vec![1.0, 1e-300, 0.0, 3.5], vec![2.0; 4]],
            evaluation: Some((0.1 + 0.2, 1.0 / 3.0)),
        }),
        ClientMessage::Update(ClientUpdate {
            round: 7,
            client: 3,
            messages: Vec::new(),
            head: None,
            payload_bits: 0,
            local_factors: Vec::new(),
        }),
    ];
    for msg in messages() {
        let bits = msg.size().total() + 21 * 32;
        out.push(ClientMessage::Update(ClientUpdate {
            round: 7,
            client: 3,
            messages: vec![msg.clone(), msg],
            head: Some(state().head),
            payload_bits: 2 * bits,
            local_factors: state().factors,
        }));
    }
    out
}

#[test]
fn every_message_type_round_trips_exactly() {
    for m in server_messages() {
        assert_eq!(ServerMessage::decode(&m.encode()).unwrap(), m);
        // The same message gives the same bytes.
        assert_eq!(m.encode(), m.encode());
    }
    for m in client_messages() {
        assert_eq!(ClientMessage::decode(&m.encode()).unwrap(), m);
    }
}

#[test]
fn the_body_is_a_plain_safetensors_file() {
    let ServerMessage::Train(t) = &server_messages()[0] else {
        unreachable!()
    };
    let bytes = server_messages()[0].encode();
    let st = safetensors::SafeTensors::deserialize(&bytes[HEADER_BYTES..]).unwrap();
    let b = st.tensor("state.blocks.1.attn.q.B").unwrap();
    assert_eq!(b.shape(), &[6, 4]);
    let first = f32::from_le_bytes(b.data()[..4].try_into().unwrap());
    assert_eq!(first, t.state.as_ref().unwrap().factors[1].b[[0, 0]]);
}

#[test]
fn truncated_corrupt_foreign_and_wrong_version_messages_are_refused() {
    let server = server_messages()[0].encode();
    let client = client_messages()[3].encode();
    for bytes in [&server, &client] {
        // Every truncation is refused, none panics.
        for n in 0..bytes.len() {
            let e = ClientMessage::decode(&bytes[..n]).unwrap_err();
            let e2 = ServerMessage::decode(&bytes[..n]).unwrap_err();
            if n < HEADER_BYTES {
                assert!(matches!(e, WireError::Truncated { .. }), "{n}: {e}");
            } else {
                assert!(
                    matches!(e, WireError::Length { .. } | WireError::Direction { .. }),
                    "{n}: {e}"
                );
                assert!(
                    matches!(e2, WireError::Length { .. } | WireError::Direction { .. }),
                    "{n}: {e2}"
                );
            }
        }
        // Every single flipped byte is refused.
        for i in 0..bytes.len() {
            let mut c = bytes.clone();
            c[i] ^= 0x5a;
            assert!(ClientMessage::decode(&c).is_err(), "byte {i}");
            assert!(ServerMessage::decode(&c).is_err(), "byte {i}");
        }
    }
    let mut v = server.clone();
    v[8] = 2;
    let e = ServerMessage::decode(&v).unwrap_err();
    assert_eq!(
        e,
        WireError::Version {
            found: 2,
            supported: 1
        }
    );
    assert!(e.to_string().contains("same wflora version"), "{e}");
    let e = ClientMessage::decode(&server).unwrap_err();
    assert!(matches!(e, WireError::Direction { found: 1, .. }), "{e}");
    let e = ServerMessage::decode(b"PK\x03\x04 this is a zip file, not a message at all....")
        .unwrap_err();
    assert!(matches!(e, WireError::Magic { .. }), "{e}");
    let mut tail = server.clone();
    tail.push(0);
    assert!(matches!(
        ServerMessage::decode(&tail).unwrap_err(),
        WireError::Length { .. }
    ));
}

#[test]
fn a_well_framed_message_with_bad_content_is_refused() {
    // Re-frame a body whose tensors do not fit the header: a valid checksum,
    // a valid safetensors file, but the compressed factor's shape is wrong.
    let bytes = client_messages()[2].encode();
    let body = &bytes[HEADER_BYTES..];
    let st = safetensors::SafeTensors::deserialize(body).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(body).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    let (name, t) = tensors
        .iter()
        .find(|(n, _)| n == "layer.0.b")
        .cloned()
        .unwrap();
    let n = t.shape().iter().product::<usize>();
    let wrong = safetensors::tensor::TensorView::new(t.dtype(), vec![n], t.data()).unwrap();
    tensors.retain(|(m, _)| m != &name);
    tensors.push((name, wrong));
    let new_body = safetensors::serialize(tensors, meta.metadata().clone()).unwrap();
    let mut framed = bytes[..HEADER_BYTES].to_vec();
    framed[12..20].copy_from_slice(&(new_body.len() as u64).to_le_bytes());
    use sha2::Digest;
    framed[20..52].copy_from_slice(&sha2::Sha256::digest(&new_body));
    framed.extend_from_slice(&new_body);
    let e = ClientMessage::decode(&framed).unwrap_err();
    assert!(
        matches!(&e, WireError::Tensor { name, .. } if name == "layer.0.b"),
        "{e}"
    );
    assert!(e.to_string().contains("expected [6, 2]"), "{e}");
}

/// The server and its clients of `cfg`, in one thread.
fn roles(cfg: &RunConfig, task: &Arc<Task>) -> (Server, Vec<Client>, Vec<usize>) {
    let shards = client_shards(cfg, task).unwrap();
    let sizes = shards.sizes();
    let server = Server::new(cfg.clone(), task.clone(), &sizes).unwrap();
    let clients = shards
        .into_clients()
        .into_iter()
        .enumerate()
        .map(|(k, shard)| Client::new(k, cfg, task.clone(), shard).unwrap())
        .collect();
    (server, clients, sizes)
}

/// Delivers `msgs` to every client not in `absent` and returns the replies.
fn deliver(clients: &mut [Client], msgs: &[ServerMessage], absent: &[usize]) -> Vec<ClientMessage> {
    msgs.iter()
        .filter(|m| !absent.contains(&m.client()))
        .map(|m| clients[m.client()].handle(m).unwrap())
        .collect()
}

#[test]
fn absent_clients_sit_out_and_the_rest_aggregate_by_their_sizes() {
    // Client 1's report and client 2's update do not come (a node that
    // died): 1 is not allocated, 2 sits out, and the global state is the
    // factor-wise aggregate of clients 0 and 3 alone with p_k ∝ |D_k|,
    // computed here from their messages independently of the server.
    let mut cfg = common::small_base(common::scratch("protocol", "cache"));
    cfg.federation.clients_per_round = 4;
    let task = common::task("protocol");
    let (mut server, mut clients, sizes) = roles(&cfg, &task);
    let before = server.global().clone();
    let plan = server.plan_round().unwrap();
    let reports = deliver(&mut clients, &plan, &[1]);
    let compress = server.allocate_with_absent(reports, &[1]).unwrap();
    assert_eq!(
        compress
            .iter()
            .map(ServerMessage::client)
            .collect::<Vec<_>>(),
        [0, 2, 3],
        "no instruction for the absent client"
    );
    let updates = deliver(&mut clients, &compress, &[2]);
    let senders: Vec<ClientUpdate> = updates
        .iter()
        .map(|m| match m {
            ClientMessage::Update(u) => u.clone(),
            ClientMessage::Trained(_) => unreachable!(),
        })
        .collect();
    let rec = server.finish_round_with_absent(updates, &[2]).unwrap();
    assert_eq!(rec.missing_reports, [1]);
    assert_eq!(rec.missing_updates, [2]);
    assert_eq!(rec.participants, 2);
    assert_eq!(rec.components.len(), 4);
    assert_eq!((rec.components[1], rec.shares[1]), (0, 0.0));
    assert!(rec.components[2] > 0, "client 2 was allocated");
    let shares: f64 = rec.shares.iter().sum();
    assert!(
        (shares - 1.0).abs() < 1e-9,
        "the three present share the band: {shares}"
    );
    let line = serde_json::to_string(&rec).unwrap();
    assert!(
        line.contains(r#""missing_reports":[1],"missing_updates":[2]"#),
        "{line}"
    );
    assert_eq!(serde_json::from_str::<RoundRecord>(&line).unwrap(), rec);
    // Independent aggregate of 0 and 3.
    let total = (sizes[0] + sizes[3]) as f64;
    let p: Vec<f64> = senders
        .iter()
        .map(|u| sizes[u.client] as f64 / total)
        .collect();
    assert_eq!(senders.iter().map(|u| u.client).collect::<Vec<_>>(), [0, 3]);
    let got = server.global();
    for (j, g) in before.factors.iter().enumerate() {
        let msgs: Vec<(f64, &Message)> = senders
            .iter()
            .zip(&p)
            .map(|(u, &w)| (w, &u.messages[j]))
            .collect();
        let want = wflora_soft::aggregate(FactorsView::new(g.b.view(), g.a.view()), &msgs).unwrap();
        assert_eq!(got.factors[j].b, want.b, "{}", g.name);
        assert_eq!(got.factors[j].a, want.a, "{}", g.name);
    }
    let g = &before.head;
    for (idx, want) in g.weight.indexed_iter() {
        let mut w = *want;
        for (u, &pk) in senders.iter().zip(&p) {
            w += pk as f32 * (u.head.as_ref().unwrap().weight[idx] - want);
        }
        let diff = (got.head.weight[idx] - w).abs();
        assert!(
            diff <= 1e-6 * (1.0 + w.abs()),
            "head {idx:?}: {} vs {w}",
            got.head.weight[idx]
        );
    }
    // The round's latency is the slower of the two that sent.
    let la = server.last_allocation().unwrap();
    assert_eq!(la.clients, [0, 2, 3]);
    assert_eq!(la.finish_s[1], None);
    let slowest = la.finish_s.iter().flatten().fold(0.0_f64, |m, &f| m.max(f));
    assert_eq!(rec.latency_s, slowest);
    // The next round runs with everyone, and its line has no missing sets.
    let reports = deliver(&mut clients, &server.plan_round().unwrap(), &[]);
    let updates = deliver(&mut clients, &server.allocate(reports).unwrap(), &[]);
    let rec = server.finish_round(updates).unwrap();
    assert!(!serde_json::to_string(&rec).unwrap().contains("missing"));
}

#[test]
fn absent_sets_that_do_not_add_up_are_refused_and_change_nothing() {
    let mut cfg = common::small_base(common::scratch("protocol", "cache"));
    cfg.federation.clients_per_round = 4;
    let task = common::task("protocol");
    let (mut server, mut clients, _) = roles(&cfg, &task);
    let plan = server.plan_round().unwrap();
    let all = deliver(&mut clients, &plan, &[]);
    let but_1 = deliver(&mut clients.clone(), &plan, &[1]);
    let cases: [(Vec<ClientMessage>, &[usize], &str); 5] = [
        (but_1.clone(), &[1, 1], "named absent twice"),
        (
            but_1.clone(),
            &[7],
            "client 7 is named absent in round 0 but is not sampled",
        ),
        (
            all.clone(),
            &[1],
            "client 1 is named absent in round 0 but answered",
        ),
        (but_1.clone(), &[], "client 1 did not answer"),
        (
            Vec::new(),
            &[0, 1, 2, 3],
            "every sampled client of round 0 is absent",
        ),
    ];
    for (replies, absent, want) in cases {
        let err = server
            .allocate_with_absent(replies, absent)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
    // Still in phase 2: the full set of reports is accepted.
    let compress = server.allocate(all).unwrap();
    let but_3 = deliver(&mut clients.clone(), &compress, &[3]);
    let updates = deliver(&mut clients, &compress, &[]);
    let e = server
        .clone()
        .finish_round_with_absent(updates.clone(), &[3])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("client 3 is named absent in round 0 but answered"),
        "{e}"
    );
    let e = server
        .clone()
        .finish_round_with_absent(but_3, &[3, 9])
        .unwrap_err();
    assert!(e.to_string().contains("is not allocated"), "{e}");
    // No update at all: the global state stays, nothing is sent, no time passes.
    let before = server.global().clone();
    let rec = server
        .clone()
        .finish_round_with_absent(Vec::new(), &[0, 1, 2, 3])
        .unwrap();
    assert_eq!((rec.participants, rec.bits, rec.latency_s), (0, 0.0, 0.0));
    assert_eq!(rec.missing_updates, [0, 1, 2, 3]);
    let rec = server.finish_round(updates).unwrap();
    assert_eq!(rec.participants, 4);
    assert_ne!(server.global(), &before);
}
