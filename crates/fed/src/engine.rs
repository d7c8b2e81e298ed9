//! The in-process driver: one [`Server`] and its [`Client`]s in this
//! process, the messages passed as values.
//!
//! [`Simulation::step`] runs one round as the protocol's phases
//! ([`crate::protocol`]): the server plans, the sampled clients train
//! (concurrently on `federation.workers` threads), the server allocates, the
//! clients compress (concurrently), the server aggregates and evaluates.
//! Replies are handed to the server in client order whatever thread
//! finished first, so the outcome does not depend on the thread count; and
//! since the driver only moves messages, a driver that moves them as bytes
//! to other threads, processes or machines gets the same results.

use crate::checkpoint::Checkpoint;
use crate::client::{Client, client_shards};
use crate::config::RunConfig;
use crate::online::LatencyModel;
use crate::protocol::{ClientMessage, ServerMessage};
use crate::server::Server;
use crate::state::{ModelState, PhaseTimes, RoundAllocation};
use crate::task::Task;
use crate::{FedError, metrics::RoundRecord};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wflora_alloc::{Policy, RoundProblem};
use wflora_channel::{Network, Uplink};

/// A federated simulation in progress: the server and every client in one
/// process.
#[derive(Debug)]
pub struct Simulation {
    server: Server,
    clients: Vec<Client>,
    /// Wall-clock time of the clients' phases (training, compression).
    client_times: PhaseTimes,
    /// The server's and the clients' times together.
    times: PhaseTimes,
}

impl Simulation {
    /// Sets up a run on a built task: the clients' shards, the clients, the
    /// server (channel, initial model).
    ///
    /// # Errors
    /// Invalid configuration, a partition that cannot be drawn, or model errors.
    pub fn new(cfg: RunConfig, task: Arc<Task>) -> Result<Self, FedError> {
        cfg.validate()?;
        let shards = client_shards(&cfg, &task)?;
        let sizes = shards.sizes();
        let clients = shards
            .into_clients()
            .into_iter()
            .enumerate()
            .map(|(k, shard)| Client::new(k, &cfg, task.clone(), shard))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            server: Server::new(cfg, task, &sizes)?,
            clients,
            client_times: PhaseTimes::default(),
            times: PhaseTimes::default(),
        })
    }

    /// Runs one round and returns its record.
    ///
    /// # Errors
    /// Any lower crate's error; divergence.
    pub fn step(&mut self) -> Result<RoundRecord, FedError> {
        let workers = self.server.config().federation.workers;
        let plan = self.server.plan_round()?;
        let clock = Instant::now();
        let reports = exchange(&mut self.clients, &plan, workers, self.server.round())?;
        self.client_times.train_s += clock.elapsed().as_secs_f64();
        let compress = self.server.allocate(reports)?;
        let clock = Instant::now();
        let updates = exchange(&mut self.clients, &compress, workers, self.server.round())?;
        self.client_times.compress_s += clock.elapsed().as_secs_f64();
        let record = self.server.finish_round(updates)?;
        self.times = *self.server.phase_times();
        self.times.train_s += self.client_times.train_s;
        self.times.compress_s += self.client_times.compress_s;
        Ok(record)
    }

    /// Trains the next round's clients (without changing any state) and
    /// returns the allocation problem and policy that round will solve: a
    /// diagnostic for the allocator's guarantees (and for dumping instances).
    ///
    /// # Errors
    /// As [`Simulation::step`].
    pub fn next_round_problem(&self) -> Result<(RoundProblem<Uplink>, Policy), FedError> {
        let mut server = self.server.clone();
        let mut clients = self.clients.clone();
        let plan = server.plan_round()?;
        let workers = server.config().federation.workers;
        let reports = exchange(&mut clients, &plan, workers, server.round())?;
        server.allocation_problem(reports)
    }

    /// The server.
    #[must_use]
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The clients, by index.
    #[must_use]
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The latency budget `T̄ = budget_rel · T_ILoRA` in seconds of the TSFA
    /// policies (`None` for the fixed-ratio ones).
    #[must_use]
    pub fn budget_s(&self) -> Option<f64> {
        self.server.budget_s()
    }

    /// `T_ILoRA` in seconds (TSFA policies only): ILoRA's round latency at
    /// the mean channel, every client, equal shares (see [`LatencyModel`]).
    #[must_use]
    pub fn ilora_latency_s(&self) -> Option<f64> {
        self.server.ilora_latency_s()
    }

    /// The virtual queue backlog `Q^t` in seconds (drift-plus-penalty only).
    #[must_use]
    pub fn queue_s(&self) -> Option<f64> {
        self.server.queue_s()
    }

    /// The mean-channel latency model of this run (LoRA mode only).
    #[must_use]
    pub fn latency_model(&self) -> Option<&LatencyModel> {
        self.server.latency_model()
    }

    /// The cell (sites, fading).
    #[must_use]
    pub fn network(&self) -> &Network {
        self.server.network()
    }

    /// Wall-clock seconds spent per phase since this simulation was built or
    /// restored (see [`PhaseTimes`]).
    #[must_use]
    pub fn phase_times(&self) -> &PhaseTimes {
        &self.times
    }

    /// The last round's allocation as applied (`None` before the first
    /// round of this process: it is not checkpointed).
    #[must_use]
    pub fn last_allocation(&self) -> Option<&RoundAllocation> {
        self.server.last_allocation()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RunConfig {
        self.server.config()
    }

    /// Rounds completed.
    #[must_use]
    pub fn round(&self) -> usize {
        self.server.round()
    }

    /// Whether every configured round has run.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.server.finished()
    }

    /// The current global state.
    #[must_use]
    pub fn global(&self) -> &ModelState {
        self.server.global()
    }

    /// Evaluates a state on the test set: `(loss, accuracy)`.
    ///
    /// The test batches are split into contiguous ranges over the worker
    /// threads (one model each) and their sums added in batch order, so the
    /// result does not depend on the number of workers.
    ///
    /// # Errors
    /// Model errors.
    pub fn evaluate(&self, state: &ModelState) -> Result<(f64, f64), FedError> {
        self.server.evaluate(state)
    }

    /// The state as a checkpoint: the server's (`global.`, round, times,
    /// queue) and every client's (`residual.{k}.`, `local.{k}.`, and its
    /// residual kinds in the metadata's `residual_kinds`).
    #[must_use]
    pub fn checkpoint(&self) -> Checkpoint {
        let mut ck = Checkpoint {
            config_hash: self.config().hash(),
            meta: serde_json::Value::Null,
            tensors: BTreeMap::new(),
        };
        self.server.save(&mut ck);
        let names: Vec<String> = self
            .global()
            .factors
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let kinds: Vec<Vec<&str>> = self
            .clients
            .iter()
            .map(|c| c.save(&mut ck, &names))
            .collect();
        ck.meta["residual_kinds"] = serde_json::json!(kinds);
        ck
    }

    /// Restores the state saved by [`Simulation::checkpoint`] (the
    /// simulation must have been built with the same configuration).
    ///
    /// # Errors
    /// [`FedError::Checkpoint`] for another configuration, a missing or
    /// misshaped tensor, or malformed metadata.
    pub fn restore(&mut self, mut ck: Checkpoint, path: &Path) -> Result<(), FedError> {
        ck.check_config(&self.config().hash(), path)?;
        let meta_err = |what: &str| FedError::Resume {
            path: path.to_path_buf(),
            reason: format!("checkpoint metadata: {what}"),
        };
        let kinds: Vec<Vec<String>> = serde_json::from_value(ck.meta["residual_kinds"].clone())
            .map_err(|_| meta_err("residual_kinds"))?;
        if kinds.len() != self.clients.len() {
            return Err(meta_err("residual_kinds has the wrong number of clients"));
        }
        self.server.restore(&mut ck, path)?;
        for (client, kinds) in self.clients.iter_mut().zip(&kinds) {
            client.restore(&mut ck, self.server.global(), kinds, path)?;
        }
        Ok(())
    }
}

/// Hands each message to its client, `workers` clients at a time, and
/// returns the replies in message order.
///
/// # Errors
/// A message for a client that does not exist (or two for one client); a
/// client's error; a panicked thread.
fn exchange(
    clients: &mut [Client],
    msgs: &[ServerMessage],
    workers: usize,
    round: usize,
) -> Result<Vec<ClientMessage>, FedError> {
    let mut by_id: Vec<Option<&mut Client>> = clients.iter_mut().map(Some).collect();
    let jobs = msgs
        .iter()
        .map(|m| {
            let k = m.client();
            let c = by_id
                .get_mut(k)
                .and_then(Option::take)
                .ok_or_else(|| FedError::Protocol {
                    what: format!("round {round}: no client {k}, or two messages for it"),
                })?;
            Ok(Mutex::new(Some((c, m))))
        })
        .collect::<Result<Vec<_>, FedError>>()?;
    let next = AtomicUsize::new(0);
    let workers = workers.min(jobs.len()).max(1);
    let done = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let taken = job.lock().ok().and_then(|mut j| j.take());
                        if let Some((client, msg)) = taken {
                            done.push((i, client.handle(msg)));
                        }
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut slots: Vec<Option<Result<ClientMessage, FedError>>> =
        msgs.iter().map(|_| None).collect();
    for d in done {
        let d = d.map_err(|_| FedError::Diverged {
            round,
            what: "a client thread panicked".into(),
        })?;
        for (i, reply) in d {
            slots[i] = Some(reply);
        }
    }
    slots
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                Err(FedError::Diverged {
                    round,
                    what: "a client reply is missing".into(),
                })
            })
        })
        .collect()
}
