//! The synchronous round loop.
//!
//! One round `t` (docs/method.md §1–§3):
//! 1. sample `clients_per_round` clients (seeded by `(seed, t)`);
//! 2. each trains `E` local steps from the broadcast factors and head
//!    (clients run concurrently on `workers` threads; results are used in
//!    client order, so the outcome does not depend on the thread count);
//! 3. this round's channel is drawn and the allocation policy picks each
//!    client's kept components and bandwidth share (the fixed-ratio
//!    policies, or TSFA's online stage: drift-plus-penalty with the virtual
//!    latency queue, or its myopic baseline; each client's menu is `m ∈
//!    {m_min..=r}` with SOFT's bits `S(m)` and its penalty `D_k(m)`);
//! 4. each client compresses its update layer by layer with the configured
//!    sparsifier (error feedback in its residual);
//! 5. the server aggregates factor-wise (SLoRA: dense sum and refactor), the
//!    head densely, weights `p_k ∝ |D_k|` over the clients that sent;
//! 6. metrics: test accuracy, bits, latency (simulated from the channel,
//!    never measured), energy, and the covariance of separate aggregation.

use crate::checkpoint::{Checkpoint, Tensor};
use crate::config::{AllocationSettings, PenaltyKind, RunConfig, TrainMode};
use crate::covariance::covariance;
use crate::seed::{Stream, derive};
use crate::task::Task;
use crate::tsfa::{LatencyModel, bound_factor_penalty, pooled_dropped_energy};
use crate::{FedError, metrics::RoundRecord};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use wflora_alloc::{
    Allocation, ClientRound, Level, Policy, RoundProblem, SearchOptions, Solver, VirtualQueue,
    solve_round,
};
use wflora_channel::{ComputeLoad, Network, Uplink, upload_energy_j};
use wflora_data::{BatchSampler, Partition};
use wflora_lora::{
    AdapterFactors, Batch, HeadParams, LocalTrainer, LocalUpdate, TrainOptions, VitModel,
};
use wflora_soft::{FactorsView, Message, Residual, aggregate, importances};

/// The global model state the server broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    /// LoRA factors per adapted matrix (empty in head-only mode).
    pub factors: Vec<AdapterFactors>,
    /// The classifier head.
    pub head: HeadParams,
}

/// A federated simulation in progress.
#[derive(Debug)]
pub struct Simulation {
    cfg: RunConfig,
    task: Arc<Task>,
    partition: Partition,
    sizes: Vec<f64>,
    network: Network,
    cycles_per_sample: f64,
    global: ModelState,
    residuals: Vec<Vec<Residual>>,
    local_states: Vec<ModelState>,
    round: usize,
    sim_time_s: f64,
    latency_sum_s: f64,
    /// The mean-channel latency model (LoRA mode only).
    latency: Option<LatencyModel>,
    /// `T_ILoRA` at the budget rank (TSFA policies only).
    ilora_latency_s: Option<f64>,
    /// `T̄` (TSFA policies only).
    budget_s: Option<f64>,
    /// The virtual latency queue (drift-plus-penalty only).
    queue: Option<VirtualQueue>,
    /// The last round's allocation (diagnostics; not checkpointed).
    last_allocation: Option<RoundAllocation>,
    /// Wall-clock time per phase (diagnostics; never in the metrics or the
    /// checkpoint, which stay bit-identical).
    times: PhaseTimes,
}

/// Wall-clock seconds this process spent in each phase of its rounds: a
/// measurement for profiling (`docs/performance.md`), not part of the
/// simulation (the metrics use simulated time only). Starts at zero when a
/// simulation is built or restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PhaseTimes {
    /// Local training of the sampled clients (forward, backward, optimiser),
    /// factor deltas included.
    pub train_s: f64,
    /// Building this round's allocation problem and solving it.
    pub allocate_s: f64,
    /// Compression of every sent update (sparsifiers, residuals, bit counts).
    pub compress_s: f64,
    /// The covariance metric of separate aggregation.
    pub covariance_s: f64,
    /// Factor-wise aggregation of the messages and the head.
    pub aggregate_s: f64,
    /// Evaluation of the global model on the test split.
    pub evaluate_s: f64,
    /// Rounds timed.
    pub rounds: usize,
}

impl PhaseTimes {
    /// The sum of the phases.
    #[must_use]
    pub fn total_s(&self) -> f64 {
        self.train_s
            + self.allocate_s
            + self.compress_s
            + self.covariance_s
            + self.aggregate_s
            + self.evaluate_s
    }

    /// Adds another run's times.
    pub fn add(&mut self, o: &Self) {
        self.train_s += o.train_s;
        self.allocate_s += o.allocate_s;
        self.compress_s += o.compress_s;
        self.covariance_s += o.covariance_s;
        self.aggregate_s += o.aggregate_s;
        self.evaluate_s += o.evaluate_s;
        self.rounds += o.rounds;
    }
}

/// One round's allocation as the engine applied it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundAllocation {
    /// The sampled clients (sorted), in the order of the allocation's vectors.
    pub clients: Vec<usize>,
    /// The allocator's answer (kept components, shares, `τ`, penalty).
    pub allocation: Allocation,
    /// Each sampled client's finish time `T_cmp + S/R(β)` from the bits it
    /// actually sent (`None`: it sat out).
    pub finish_s: Vec<Option<f64>>,
    /// The queue backlog `Q^t` the round was allocated with (0 without a queue).
    pub queue_before_s: f64,
}

/// What one client produced in a round.
struct ClientOutcome {
    update: LocalUpdate,
    /// `(ΔB, ΔA)` per adapted matrix against the state the client started
    /// from, computed once and used by the penalties, the compression and a
    /// sit-out's residual.
    deltas: Vec<(Array2<f32>, Array2<f32>)>,
}

impl Simulation {
    /// Sets up a run on a built task: partition, channel, initial model.
    ///
    /// # Errors
    /// Invalid configuration, a partition that cannot be drawn, or model errors.
    pub fn new(cfg: RunConfig, task: Arc<Task>) -> Result<Self, FedError> {
        cfg.validate()?;
        let f = &cfg.federation;
        let partition = f.partition.partition(
            task.train.labels(),
            task.num_classes,
            f.clients,
            derive(cfg.seed, Stream::Partition, 1, 0),
        )?;
        let sizes: Vec<f64> = partition.sizes().iter().map(|&n| n as f64).collect();
        if let Some(k) = sizes.iter().position(|&n| n == 0.0) {
            return Err(FedError::config(
                "federation.partition",
                format!(
                    "client {k} received no samples; raise min_size or lower federation.clients"
                ),
            ));
        }
        let network = Network::new(
            cfg.wireless.channel.clone(),
            f.clients,
            derive(cfg.seed, Stream::Channel, 0, 0),
        )?;
        let mode = cfg.model.fine_tune_mode();
        let cycles_per_sample =
            task.vit.flops_per_sample(&mode, task.num_classes) / cfg.wireless.flops_per_cycle;
        let model = VitModel::new(
            task.backbone.clone(),
            mode,
            task.num_classes,
            derive(cfg.seed, Stream::Init, 0, 0),
        )?;
        let global = ModelState {
            factors: model.factors()?,
            head: model.head()?,
        };
        let layers = global.factors.len();
        let residuals = vec![vec![Residual::Zero; layers]; f.clients];
        let latency = if cfg.model.mode == TrainMode::Lora {
            let dims = global
                .factors
                .iter()
                .map(|f| (f.b.nrows(), f.a.ncols()))
                .collect();
            Some(LatencyModel::new(
                &cfg,
                &task,
                &network,
                dims,
                global.head.len(),
            )?)
        } else {
            None
        };
        let (mut ilora_latency_s, mut budget_s, mut queue) = (None, None, None);
        if let (Some((budget_rel, budget_rank)), Some(lat)) =
            (cfg.wireless.allocation.budget(), &latency)
        {
            let t_ilora = lat.ilora_latency_s(budget_rank.unwrap_or(cfg.model.rank))?;
            let t_bar = budget_rel * t_ilora;
            ilora_latency_s = Some(t_ilora);
            budget_s = Some(t_bar);
            if matches!(
                cfg.wireless.allocation,
                AllocationSettings::DriftPlusPenalty { .. }
            ) {
                queue = Some(VirtualQueue::new(t_bar)?);
            }
        }
        let local_states = if f.local_only {
            vec![global.clone(); f.clients]
        } else {
            Vec::new()
        };
        Ok(Self {
            cfg,
            task,
            partition,
            sizes,
            network,
            cycles_per_sample,
            global,
            residuals,
            local_states,
            round: 0,
            sim_time_s: 0.0,
            latency_sum_s: 0.0,
            latency,
            ilora_latency_s,
            budget_s,
            queue,
            last_allocation: None,
            times: PhaseTimes::default(),
        })
    }

    /// The latency budget `T̄ = budget_rel · T_ILoRA` in seconds of the TSFA
    /// policies (`None` for the fixed-ratio ones).
    #[must_use]
    pub fn budget_s(&self) -> Option<f64> {
        self.budget_s
    }

    /// `T_ILoRA` in seconds (TSFA policies only): ILoRA's round latency at
    /// the mean channel, every client, equal shares (see [`LatencyModel`]).
    #[must_use]
    pub fn ilora_latency_s(&self) -> Option<f64> {
        self.ilora_latency_s
    }

    /// The virtual queue backlog `Q^t` in seconds (drift-plus-penalty only).
    #[must_use]
    pub fn queue_s(&self) -> Option<f64> {
        self.queue.map(|q| q.backlog_s)
    }

    /// The mean-channel latency model of this run (LoRA mode only).
    #[must_use]
    pub fn latency_model(&self) -> Option<&LatencyModel> {
        self.latency.as_ref()
    }

    /// The cell (sites, fading).
    #[must_use]
    pub fn network(&self) -> &Network {
        &self.network
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
        self.last_allocation.as_ref()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    /// Rounds completed.
    #[must_use]
    pub fn round(&self) -> usize {
        self.round
    }

    /// Whether every configured round has run.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.round >= self.cfg.federation.rounds
    }

    /// The current global state.
    #[must_use]
    pub fn global(&self) -> &ModelState {
        &self.global
    }

    /// Evaluates a state on the test set: `(loss, accuracy)`.
    ///
    /// # Errors
    /// Model errors.
    ///
    /// The test batches are split into contiguous ranges over the worker
    /// threads (one model each) and their sums added in batch order, so the
    /// result does not depend on the number of workers.
    pub fn evaluate(&self, state: &ModelState) -> Result<(f64, f64), FedError> {
        const EVAL_BATCH: usize = 256;
        let test = &self.task.test;
        let shape = [test.len(), test.channels(), test.height(), test.width()];
        let batch = Batch::new(test.images(), test.labels(), shape)?;
        let batches = test.len().div_ceil(EVAL_BATCH);
        let workers = self.cfg.federation.workers.clamp(1, batches.max(1));
        let per = batches.div_ceil(workers) * EVAL_BATCH;
        let parts = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let part = batch.slice(w * per, per);
                    s.spawn(move || -> Result<Vec<wflora_lora::EvalSums>, FedError> {
                        if part.is_empty() {
                            return Ok(Vec::new());
                        }
                        let model = self.model_with(state)?;
                        Ok(wflora_lora::evaluate_sums(&model, &part, EVAL_BATCH)?)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        let mut sums = Vec::with_capacity(batches);
        for p in parts {
            sums.extend(p.map_err(|_| FedError::Diverged {
                round: self.round,
                what: "an evaluation thread panicked".into(),
            })??);
        }
        let r = wflora_lora::EvalResult::from_sums(&sums)?;
        Ok((r.loss, r.accuracy))
    }

    fn model_with(&self, state: &ModelState) -> Result<VitModel, FedError> {
        let model = VitModel::new(
            self.task.backbone.clone(),
            self.cfg.model.fine_tune_mode(),
            self.task.num_classes,
            0,
        )?;
        model.set_factors(&state.factors)?;
        model.set_head(&state.head)?;
        Ok(model)
    }

    /// The clients sampled in round `t` (sorted).
    fn sample_clients(&self, t: usize) -> Vec<usize> {
        let f = &self.cfg.federation;
        if f.clients_per_round == f.clients {
            return (0..f.clients).collect();
        }
        let mut rng = StdRng::seed_from_u64(derive(self.cfg.seed, Stream::Sampling, 0, t as u64));
        let mut v = sample(&mut rng, f.clients, f.clients_per_round).into_vec();
        v.sort_unstable();
        v
    }

    fn train_one(&self, k: usize, t: usize, start: &ModelState) -> Result<ClientOutcome, FedError> {
        let model = self.model_with(start)?;
        let mut model = model;
        let pool = self
            .partition
            .client(k)
            .ok_or_else(|| FedError::config("federation.clients", format!("no client {k}")))?
            .to_vec();
        let mut sampler = BatchSampler::new(
            pool,
            self.cfg.local.batch_size,
            derive(self.cfg.seed, Stream::Batches, k as u64, t as u64),
        )?;
        let train = &self.task.train;
        let gathered = (0..self.cfg.local.steps)
            .map(|_| train.gather(sampler.next_batch()))
            .collect::<Result<Vec<_>, _>>()?;
        let batches = gathered
            .iter()
            .map(|b| Batch::new(&b.images, &b.labels, b.shape()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut trainer = LocalTrainer::new(TrainOptions {
            optimizer: self.cfg.local.optimizer,
            zeta: self.cfg.model.zeta,
            regulariser: self.cfg.model.regulariser,
            keep_optimizer_state: false,
            shards: 1,
        })?;
        let update = trainer.train(&mut model, &batches)?;
        if !update.mean_loss.is_finite() {
            return Err(FedError::Diverged {
                round: t,
                what: format!("client {k}'s training loss"),
            });
        }
        let deltas = start
            .factors
            .iter()
            .zip(&update.factors)
            .map(|(g, u)| (&u.b - &g.b, &u.a - &g.a))
            .collect();
        Ok(ClientOutcome { update, deltas })
    }

    /// Trains `clients` (each from its own start state) on worker threads.
    fn train_clients(
        &self,
        t: usize,
        clients: &[usize],
        starts: &[&ModelState],
    ) -> Result<Vec<ClientOutcome>, FedError> {
        let workers = self.cfg.federation.workers.min(clients.len()).max(1);
        let next = AtomicUsize::new(0);
        let mut slots: Vec<Option<Result<ClientOutcome, FedError>>> = Vec::new();
        slots.resize_with(clients.len(), || None);
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= clients.len() {
                                break;
                            }
                            done.push((i, self.train_one(clients[i], t, starts[i])));
                        }
                        done
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        for r in results {
            match r {
                Ok(done) => {
                    for (i, out) in done {
                        slots[i] = Some(out);
                    }
                }
                Err(_) => {
                    return Err(FedError::Diverged {
                        round: t,
                        what: "a client training thread panicked".into(),
                    });
                }
            }
        }
        slots
            .into_iter()
            .map(|s| {
                s.unwrap_or_else(|| {
                    Err(FedError::Diverged {
                        round: t,
                        what: "a client result is missing".into(),
                    })
                })
            })
            .collect()
    }

    fn head_bits(&self) -> f64 {
        self.global.head.len() as f64 * f64::from(self.cfg.wireless.channel.bits_per_value)
    }

    /// Bits of one client's upload when it keeps `m` components per matrix
    /// (SOFT's budget with index bits, plus the dense head).
    fn level_bits(&self, m: usize) -> Result<f64, FedError> {
        let r = self.cfg.model.rank;
        match &self.latency {
            Some(lat) => lat.level_bits(r, m as f64 / r as f64),
            None => Ok(self.head_bits()),
        }
    }

    /// The penalties `D_k(m)`, `m = 0..=r`, of client `k` with `update`.
    fn penalties(
        &self,
        k: usize,
        out: &ClientOutcome,
        kind: PenaltyKind,
    ) -> Result<Vec<f64>, FedError> {
        let r = self.cfg.model.rank;
        match kind {
            PenaltyKind::BoundFactor => Ok(bound_factor_penalty(r)),
            PenaltyKind::DroppedEnergy => {
                let mut per_matrix = Vec::with_capacity(self.global.factors.len());
                for (j, (g, (db, da))) in self.global.factors.iter().zip(&out.deltas).enumerate() {
                    // A dense residual (SLoRA) has no components: rank the update alone.
                    let residual = match &self.residuals[k][j] {
                        Residual::Dense(_) => &Residual::Zero,
                        other => other,
                    };
                    per_matrix.push(importances(
                        FactorsView::new(g.b.view(), g.a.view()),
                        FactorsView::new(db.view(), da.view()),
                        residual,
                    )?);
                }
                pooled_dropped_energy(&per_matrix, r)
            }
        }
    }

    /// This round's allocation problem and policy for the sampled `clients`
    /// with their trained `outcomes`.
    fn round_problem(
        &self,
        t: usize,
        clients: &[usize],
        outcomes: &[ClientOutcome],
    ) -> Result<(RoundProblem<Uplink>, Policy), FedError> {
        let lora = self.cfg.model.mode == TrainMode::Lora;
        let m = if lora { self.cfg.kept_components() } else { 1 };
        let fixed_bits = if lora {
            self.level_bits(m)?
        } else {
            self.head_bits()
        };
        let load = self.load();
        let total_size: f64 = clients.iter().map(|&k| self.sizes[k]).sum();
        let mut problem_clients = Vec::with_capacity(clients.len());
        for (&k, out) in clients.iter().zip(outcomes) {
            let link = self.network.uplink(k, t as u64).ok_or_else(|| {
                FedError::config("federation.clients", format!("no uplink for client {k}"))
            })?;
            let freq = self.network.sites()[k].cpu_freq_hz;
            let levels = match self.cfg.wireless.allocation {
                AllocationSettings::EqualBandwidth | AllocationSettings::Equalising => {
                    vec![Level {
                        components: m as u32,
                        bits: fixed_bits,
                        penalty: 0.0,
                    }]
                }
                AllocationSettings::DriftPlusPenalty { m_min, penalty, .. } => {
                    self.menu(k, out, m_min, penalty)?
                }
                AllocationSettings::Myopic { m_min, .. } => {
                    self.menu(k, out, m_min, PenaltyKind::DroppedEnergy)?
                }
            };
            problem_clients.push(ClientRound {
                link,
                compute_latency_s: load.latency_s(freq)?,
                weight: self.sizes[k] / total_size,
                levels,
            });
        }
        let (v, queue, policy) = match self.cfg.wireless.allocation {
            AllocationSettings::EqualBandwidth => (
                0.0,
                0.0,
                Policy::EqualBandwidth {
                    components: m as u32,
                },
            ),
            AllocationSettings::Equalising => (
                0.0,
                0.0,
                Policy::FixedRatio {
                    components: m as u32,
                },
            ),
            AllocationSettings::DriftPlusPenalty { v, mode, .. } => (
                v,
                self.queue.map_or(0.0, |q| q.backlog_s),
                Policy::DriftPlusPenalty {
                    mode,
                    solver: Solver::Hull,
                },
            ),
            AllocationSettings::Myopic { mode, .. } => (
                1.0,
                0.0,
                Policy::Myopic {
                    mode,
                    solver: Solver::Hull,
                    budget_s: self.budget_s.unwrap_or(f64::NAN),
                },
            ),
        };
        Ok((
            RoundProblem {
                clients: problem_clients,
                v,
                queue,
            },
            policy,
        ))
    }

    /// Client `k`'s levels `m ∈ {m_min..=r}` with SOFT's bits and `D_k(m)`.
    fn menu(
        &self,
        k: usize,
        out: &ClientOutcome,
        m_min: usize,
        kind: PenaltyKind,
    ) -> Result<Vec<Level>, FedError> {
        let d = self.penalties(k, out, kind)?;
        (m_min..=self.cfg.model.rank)
            .map(|m| {
                Ok(Level {
                    components: m as u32,
                    bits: self.level_bits(m)?,
                    penalty: d[m],
                })
            })
            .collect()
    }

    fn load(&self) -> ComputeLoad {
        ComputeLoad {
            local_steps: self.cfg.local.steps as u32,
            batch_size: self.cfg.local.batch_size as u32,
            cycles_per_sample: self.cycles_per_sample,
        }
    }

    /// Trains the next round's clients (without changing any state) and
    /// returns the allocation problem and policy that round will solve: a
    /// diagnostic for the allocator's guarantees (and for dumping instances).
    ///
    /// # Errors
    /// As [`Simulation::step`].
    pub fn next_round_problem(&self) -> Result<(RoundProblem<Uplink>, Policy), FedError> {
        let t = self.round;
        let clients = self.sample_clients(t);
        let starts = vec![&self.global; clients.len()];
        let outcomes = self.train_clients(t, &clients, &starts)?;
        self.round_problem(t, &clients, &outcomes)
    }

    /// Runs one round and returns its record.
    ///
    /// # Errors
    /// Any lower crate's error; divergence.
    pub fn step(&mut self) -> Result<RoundRecord, FedError> {
        if self.cfg.federation.local_only {
            return self.step_local_only();
        }
        let t = self.round;
        let clients = self.sample_clients(t);
        let starts = vec![&self.global; clients.len()];
        let clock = Instant::now();
        let outcomes = self.train_clients(t, &clients, &starts)?;
        self.times.train_s += clock.elapsed().as_secs_f64();

        // Allocation for this round's channel.
        let clock = Instant::now();
        let lora = self.cfg.model.mode == TrainMode::Lora;
        let load = self.load();
        let (problem, policy) = self.round_problem(t, &clients, &outcomes)?;
        let alloc = solve_round(&problem, &policy, &SearchOptions::default())?;
        self.times.allocate_s += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let tsfa = self.cfg.wireless.allocation.budget().is_some();

        // Compression, client by client, layer by layer.
        let r = self.cfg.model.rank as f64;
        let fixed_rho = if lora {
            self.cfg.kept_components() as f64 / r
        } else {
            1.0
        };
        let mut sent: Vec<(usize, f64, Vec<Message>, f64)> = Vec::new();
        let (mut values, mut index_bits, mut total_bits, mut energy) = (0u64, 0u64, 0.0f64, 0.0f64);
        for (i, (&k, out)) in clients.iter().zip(&outcomes).enumerate() {
            if alloc.components[i] == 0 {
                // Sits out (deep fade): its update stays in its residual.
                self.absorb_into_residual(k, out)?;
                continue;
            }
            let rho = if tsfa {
                f64::from(alloc.components[i]) / r
            } else {
                fixed_rho
            };
            let mut msgs = Vec::with_capacity(self.global.factors.len());
            let mut client_bits = self.head_bits();
            for (j, (g, (db, da))) in self.global.factors.iter().zip(&out.deltas).enumerate() {
                let sparsifier = self.cfg.compression.method.sparsifier(
                    self.cfg.compression.error_feedback,
                    derive(
                        self.cfg.seed,
                        Stream::Sparsifier,
                        k as u64,
                        (t * 4096 + j) as u64,
                    ),
                );
                let (msg, res) = sparsifier.compress(
                    FactorsView::new(g.b.view(), g.a.view()),
                    FactorsView::new(db.view(), da.view()),
                    &self.residuals[k][j],
                    rho,
                )?;
                self.residuals[k][j] = res;
                let size = msg.size();
                values += size.values;
                index_bits += size.index_bits;
                client_bits += size.total() as f64;
                msgs.push(msg);
            }
            values += self.global.head.len() as u64;
            total_bits += client_bits;
            let link = &problem.clients[i].link;
            let rate = link.rate_bps(alloc.shares[i]);
            let freq = self.network.sites()[k].cpu_freq_hz;
            energy += upload_energy_j(link.tx_power_w, client_bits, rate)
                + load.energy_j(self.cfg.wireless.channel.kappa, freq);
            // Finish time from the bits actually sent.
            let finish = problem.clients[i].compute_latency_s + client_bits / rate;
            sent.push((i, self.sizes[k], msgs, finish));
        }

        self.times.compress_s += clock.elapsed().as_secs_f64();

        // Round latency: the last participant to finish.
        let mut latency = 0.0f64;
        let mut finish_s = vec![None; clients.len()];
        for &(i, _, _, finish) in &sent {
            finish_s[i] = Some(finish);
            latency = latency.max(finish);
        }

        // Covariance of separate aggregation, per layer, over the clients that sent.
        let clock = Instant::now();
        let mut cov_rel = Vec::with_capacity(self.global.factors.len());
        for j in 0..self.global.factors.len() {
            let items: Vec<_> = sent
                .iter()
                .map(|(i, p, _, _)| {
                    let f = &outcomes[*i].update.factors[j];
                    (*p, &f.b, &f.a)
                })
                .collect();
            if items.is_empty() {
                break;
            }
            cov_rel.push(covariance(&items)?.relative);
        }

        self.times.covariance_s += clock.elapsed().as_secs_f64();

        // Aggregation.
        let clock = Instant::now();
        let total_w: f64 = sent.iter().map(|(_, p, _, _)| p).sum();
        if total_w > 0.0 {
            for j in 0..self.global.factors.len() {
                let msgs: Vec<(f64, &Message)> = sent
                    .iter()
                    .map(|(_, p, m, _)| (p / total_w, &m[j]))
                    .collect();
                let g = &self.global.factors[j];
                let new = aggregate(FactorsView::new(g.b.view(), g.a.view()), &msgs)?;
                self.global.factors[j].b = new.b;
                self.global.factors[j].a = new.a;
            }
            let mut w = self.global.head.weight.clone();
            let mut b = self.global.head.bias.clone();
            for (i, p, _, _) in &sent {
                let h = &outcomes[*i].update.head;
                w.scaled_add(
                    (p / total_w) as f32,
                    &(&h.weight - &self.global.head.weight),
                );
                for (bj, (hj, gj)) in b.iter_mut().zip(h.bias.iter().zip(&self.global.head.bias)) {
                    *bj += (p / total_w) as f32 * (hj - gj);
                }
            }
            self.global.head = HeadParams { weight: w, bias: b };
        }
        self.check_finite(t)?;
        self.times.aggregate_s += clock.elapsed().as_secs_f64();

        let queue_before_s = self.queue.map_or(0.0, |q| q.backlog_s);
        let queue_s = match &mut self.queue {
            Some(q) => q.update(latency)?,
            None => 0.0,
        };
        self.round += 1;
        self.sim_time_s += latency;
        self.latency_sum_s += latency;
        let train_loss = mean(outcomes.iter().map(|o| o.update.mean_task_loss));
        let clock = Instant::now();
        let (test_loss, accuracy) =
            if self.round.is_multiple_of(self.cfg.federation.eval_every) || self.finished() {
                let (l, a) = self.evaluate(&self.global)?;
                (Some(l), Some(a))
            } else {
                (None, None)
            };
        self.times.evaluate_s += clock.elapsed().as_secs_f64();
        self.times.rounds += 1;
        let record = RoundRecord {
            round: self.round,
            participants: sent.len(),
            accuracy,
            test_loss,
            train_loss,
            bits: total_bits,
            values,
            index_bits,
            latency_s: latency,
            sim_time_s: self.sim_time_s,
            mean_latency_s: self.latency_sum_s / self.round as f64,
            queue_s,
            energy_j: energy,
            components: alloc.components.clone(),
            shares: alloc.shares.clone(),
            covariance_rel: cov_rel,
        };
        self.last_allocation = Some(RoundAllocation {
            clients,
            allocation: alloc,
            finish_s,
            queue_before_s,
        });
        Ok(record)
    }

    /// A client that sits out keeps its whole update in its residual.
    fn absorb_into_residual(&mut self, k: usize, out: &ClientOutcome) -> Result<(), FedError> {
        let update = &out.update;
        for (j, ((g, u), (db, da))) in self
            .global
            .factors
            .iter()
            .zip(&update.factors)
            .zip(&out.deltas)
            .enumerate()
        {
            let next = match std::mem::take(&mut self.residuals[k][j]) {
                Residual::Zero => {
                    Residual::Factors(wflora_soft::Factors::new(db.clone(), da.clone()))
                }
                Residual::Factors(f) => {
                    Residual::Factors(wflora_soft::Factors::new(f.b + db, f.a + da))
                }
                Residual::Dense(e) => {
                    let dense = u.b.dot(&u.a) - g.b.dot(&g.a);
                    Residual::Dense(e + &dense)
                }
            };
            self.residuals[k][j] = if self.cfg.compression.error_feedback {
                next
            } else {
                Residual::Zero
            };
        }
        Ok(())
    }

    fn step_local_only(&mut self) -> Result<RoundRecord, FedError> {
        let t = self.round;
        let clients: Vec<usize> = (0..self.cfg.federation.clients).collect();
        let starts: Vec<&ModelState> = self.local_states.iter().collect();
        let clock = Instant::now();
        let outcomes = self.train_clients(t, &clients, &starts)?;
        self.times.train_s += clock.elapsed().as_secs_f64();
        for (k, out) in outcomes.iter().enumerate() {
            self.local_states[k] = ModelState {
                factors: out.update.factors.clone(),
                head: out.update.head.clone(),
            };
        }
        self.round += 1;
        let train_loss = mean(outcomes.iter().map(|o| o.update.mean_task_loss));
        let clock = Instant::now();
        let (test_loss, accuracy) = if self.finished() {
            let mut loss = 0.0;
            let mut acc = 0.0;
            for s in &self.local_states {
                let (l, a) = self.evaluate(s)?;
                loss += l;
                acc += a;
            }
            let n = self.local_states.len() as f64;
            (Some(loss / n), Some(acc / n))
        } else {
            (None, None)
        };
        self.times.evaluate_s += clock.elapsed().as_secs_f64();
        self.times.rounds += 1;
        Ok(RoundRecord {
            round: self.round,
            participants: 0,
            accuracy,
            test_loss,
            train_loss,
            bits: 0.0,
            values: 0,
            index_bits: 0,
            latency_s: 0.0,
            sim_time_s: 0.0,
            mean_latency_s: 0.0,
            queue_s: 0.0,
            energy_j: 0.0,
            components: Vec::new(),
            shares: Vec::new(),
            covariance_rel: Vec::new(),
        })
    }

    fn check_finite(&self, t: usize) -> Result<(), FedError> {
        for f in &self.global.factors {
            if !f.b.iter().chain(f.a.iter()).all(|v| v.is_finite()) {
                return Err(FedError::Diverged {
                    round: t,
                    what: format!("global factor {}", f.name),
                });
            }
        }
        if !self.global.head.weight.iter().all(|v| v.is_finite()) {
            return Err(FedError::Diverged {
                round: t,
                what: "global head".into(),
            });
        }
        Ok(())
    }

    /// The state as a checkpoint.
    #[must_use]
    pub fn checkpoint(&self) -> Checkpoint {
        let mut tensors = BTreeMap::new();
        let mut put_state = |prefix: &str, s: &ModelState| {
            for f in &s.factors {
                tensors.insert(format!("{prefix}{}.B", f.name), mat(&f.b));
                tensors.insert(format!("{prefix}{}.A", f.name), mat(&f.a));
            }
            tensors.insert(format!("{prefix}head.weight"), mat(&s.head.weight));
            tensors.insert(
                format!("{prefix}head.bias"),
                Tensor {
                    shape: vec![s.head.bias.len()],
                    data: s.head.bias.clone(),
                },
            );
        };
        put_state("global.", &self.global);
        for (k, s) in self.local_states.iter().enumerate() {
            put_state(&format!("local.{k}."), s);
        }
        let mut kinds = Vec::new();
        for (k, rs) in self.residuals.iter().enumerate() {
            let mut row = Vec::new();
            for (j, r) in rs.iter().enumerate() {
                let name = &self.global.factors[j].name;
                match r {
                    Residual::Zero => row.push("zero"),
                    Residual::Factors(f) => {
                        tensors.insert(format!("residual.{k}.{name}.B"), mat(&f.b));
                        tensors.insert(format!("residual.{k}.{name}.A"), mat(&f.a));
                        row.push("factors");
                    }
                    Residual::Dense(e) => {
                        tensors.insert(format!("residual.{k}.{name}.E"), mat(e));
                        row.push("dense");
                    }
                }
            }
            kinds.push(row);
        }
        Checkpoint {
            config_hash: self.cfg.hash(),
            meta: serde_json::json!({
                "round": self.round,
                "sim_time_s_bits": self.sim_time_s.to_bits(),
                "latency_sum_s_bits": self.latency_sum_s.to_bits(),
                "queue_s_bits": self.queue.map(|q| q.backlog_s.to_bits()),
                "residual_kinds": kinds,
            }),
            tensors,
        }
    }

    /// Restores the state saved by [`Simulation::checkpoint`] (the
    /// simulation must have been built with the same configuration).
    ///
    /// # Errors
    /// [`FedError::Checkpoint`] for another configuration, a missing or
    /// misshaped tensor, or malformed metadata.
    pub fn restore(&mut self, mut ck: Checkpoint, path: &Path) -> Result<(), FedError> {
        let expected = self.cfg.hash();
        if ck.config_hash != expected {
            return Err(crate::checkpoint::CheckpointError::OtherConfig {
                path: path.to_path_buf(),
                found: ck.config_hash,
                expected,
            }
            .into());
        }
        let meta_err = |what: &str| FedError::Resume {
            path: path.to_path_buf(),
            reason: format!("checkpoint metadata: {what}"),
        };
        let round = ck.meta["round"].as_u64().ok_or_else(|| meta_err("round"))? as usize;
        let sim = ck.meta["sim_time_s_bits"]
            .as_u64()
            .ok_or_else(|| meta_err("sim_time_s_bits"))?;
        let lat = ck.meta["latency_sum_s_bits"]
            .as_u64()
            .ok_or_else(|| meta_err("latency_sum_s_bits"))?;
        let kinds: Vec<Vec<String>> = serde_json::from_value(ck.meta["residual_kinds"].clone())
            .map_err(|_| meta_err("residual_kinds"))?;
        if kinds.len() != self.residuals.len() {
            return Err(meta_err("residual_kinds has the wrong number of clients"));
        }
        let mut take_state = |prefix: &str, s: &mut ModelState| -> Result<(), FedError> {
            for f in &mut s.factors {
                f.b = take_mat(&mut ck, &format!("{prefix}{}.B", f.name), f.b.dim(), path)?;
                f.a = take_mat(&mut ck, &format!("{prefix}{}.A", f.name), f.a.dim(), path)?;
            }
            s.head.weight = take_mat(
                &mut ck,
                &format!("{prefix}head.weight"),
                s.head.weight.dim(),
                path,
            )?;
            s.head.bias = ck.take(&format!("{prefix}head.bias"), &[s.head.bias.len()], path)?;
            Ok(())
        };
        take_state("global.", &mut self.global)?;
        for (k, s) in self.local_states.iter_mut().enumerate() {
            take_state(&format!("local.{k}."), s)?;
        }
        for (k, row) in kinds.iter().enumerate() {
            if row.len() != self.global.factors.len() {
                return Err(meta_err("residual_kinds has the wrong number of layers"));
            }
            for (j, kind) in row.iter().enumerate() {
                let f = &self.global.factors[j];
                let name = f.name.clone();
                self.residuals[k][j] = match kind.as_str() {
                    "zero" => Residual::Zero,
                    "factors" => Residual::Factors(wflora_soft::Factors::new(
                        take_mat(&mut ck, &format!("residual.{k}.{name}.B"), f.b.dim(), path)?,
                        take_mat(&mut ck, &format!("residual.{k}.{name}.A"), f.a.dim(), path)?,
                    )),
                    "dense" => Residual::Dense(take_mat(
                        &mut ck,
                        &format!("residual.{k}.{name}.E"),
                        (f.b.nrows(), f.a.ncols()),
                        path,
                    )?),
                    other => return Err(meta_err(&format!("unknown residual kind '{other}'"))),
                };
            }
        }
        if let Some(q) = &mut self.queue {
            let bits = ck.meta["queue_s_bits"]
                .as_u64()
                .ok_or_else(|| meta_err("queue_s_bits"))?;
            q.backlog_s = f64::from_bits(bits);
        }
        self.round = round;
        self.sim_time_s = f64::from_bits(sim);
        self.latency_sum_s = f64::from_bits(lat);
        Ok(())
    }
}

fn mat(m: &Array2<f32>) -> Tensor {
    Tensor {
        shape: vec![m.nrows(), m.ncols()],
        data: m.iter().copied().collect(),
    }
}

fn take_mat(
    ck: &mut Checkpoint,
    name: &str,
    dim: (usize, usize),
    path: &Path,
) -> Result<Array2<f32>, FedError> {
    let data = ck.take(name, &[dim.0, dim.1], path)?;
    Array2::from_shape_vec(dim, data).map_err(|e| FedError::Resume {
        path: path.to_path_buf(),
        reason: format!("tensor {name}: {e}"),
    })
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}
