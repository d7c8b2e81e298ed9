//! The server role: the global LoRA factors and head, the channel and the
//! allocation policy (with TSFA's virtual latency queue), factor-wise
//! aggregation, the covariance metric, simulated time and the round's
//! metrics. It talks to clients only through [`crate::protocol`] messages.
//!
//! A round is three calls, each one named phase (docs/method.md §1–§3, §5):
//! 1. [`Server::plan_round`]: sample the clients (seeded by `(seed, t)`)
//!    and tell each to train from the global state, with its batch seed;
//! 2. [`Server::allocate`], on the clients' [`TrainReport`]s: draw this
//!    round's channel, build every client's menu `m ∈ {m_min..=r}` with
//!    SOFT's bits `S(m)` and its penalty `D_k(m)` (or the fixed ratio's one
//!    level), solve the allocation, and tell each client its `m_k` and share;
//! 3. [`Server::finish_round`], on the clients' [`ClientUpdate`]s: account
//!    bits, latency and energy, measure the covariance of separate
//!    aggregation, aggregate factor-wise (SLoRA: dense sum and refactor) and
//!    the head densely with weights `p_k ∝ |D_k|` over the clients that
//!    sent, update the queue, evaluate, and return the round's record.
//!
//! Replies may arrive in any order; the server orders them by the sampled
//! clients, so the result does not depend on who answered first.
//!
//! A driver whose clients can fail (a Flower node that dies, a reply that
//! times out) names the sampled clients that did not answer with
//! [`Server::allocate_with_absent`] and [`Server::finish_round_with_absent`]:
//! a client absent from phase 2 is not allocated (0 components, share 0),
//! one absent from phase 3 sits the round out, as a client told to send
//! nothing does. The record lists both sets, so the round can be replayed.

use crate::checkpoint::Checkpoint;
use crate::config::{AllocationSettings, PenaltyKind, RunConfig, TrainMode};
use crate::covariance::covariance;
use crate::online::{LatencyModel, bound_factor_penalty, pooled_dropped_energy};
use crate::protocol::{
    ClientMessage, ClientUpdate, CompressInstruction, ServerMessage, TrainInstruction, TrainReport,
};
use crate::seed::{Stream, derive};
use crate::state::{
    ModelState, NonFinite, PhaseTimes, RoundAllocation, head_is_finite, put_state, take_state,
};
use crate::task::Task;
use crate::{FedError, eval, metrics::RoundRecord};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wflora_alloc::{
    Allocation, ClientRound, Level, Policy, RoundProblem, SearchOptions, Solver, VirtualQueue,
    solve_round,
};
use wflora_channel::{ComputeLoad, Network, Uplink, upload_energy_j};
use wflora_lora::{HeadParams, VitModel};
use wflora_soft::{FactorsView, Message, aggregate};

/// Where the server is within a round.
#[derive(Debug, Clone, Default)]
enum Phase {
    /// Between rounds.
    #[default]
    Idle,
    /// Train instructions sent to `clients`.
    Training { round: usize, clients: Vec<usize> },
    /// Compress instructions sent.
    Compressing(Box<Allocated>),
    /// A local-only round: trained, nothing to aggregate.
    LocalOnly {
        round: usize,
        train_loss: f64,
        evaluation: Option<(f64, f64)>,
        missing_reports: Vec<usize>,
    },
}

/// A round between allocation and aggregation.
#[derive(Debug, Clone)]
struct Allocated {
    round: usize,
    /// Every sampled client (sorted).
    sampled: Vec<usize>,
    /// Sampled clients whose train report did not come.
    missing_reports: Vec<usize>,
    /// The allocated clients: `sampled` less `missing_reports`, in the
    /// order of `problem` and `allocation`.
    clients: Vec<usize>,
    train_loss: f64,
    problem: RoundProblem<Uplink>,
    allocation: Allocation,
    queue_before_s: f64,
}

/// What the clients that sent contribute to the aggregate.
struct Sent<'a> {
    /// `|D_k|`.
    weight: f64,
    update: &'a ClientUpdate,
}

/// The round's payload totals.
#[derive(Default)]
struct Totals {
    values: u64,
    index_bits: u64,
    bits: f64,
    energy_j: f64,
    latency_s: f64,
    /// Each sampled client's finish time (`None`: it sat out).
    finish_s: Vec<Option<f64>>,
}

/// The server of a run.
#[derive(Debug, Clone)]
pub struct Server {
    cfg: RunConfig,
    task: Arc<Task>,
    sizes: Vec<f64>,
    network: Network,
    cycles_per_sample: f64,
    /// Kept components at the configured ratio (`ρ` turned into `m` once).
    kept: usize,
    global: ModelState,
    round: usize,
    sim_time_s: f64,
    latency_sum_s: f64,
    latency: Option<LatencyModel>,
    ilora_latency_s: Option<f64>,
    budget_s: Option<f64>,
    queue: Option<VirtualQueue>,
    phase: Phase,
    last_allocation: Option<RoundAllocation>,
    times: PhaseTimes,
}

impl Server {
    /// The server of run `cfg` on `task`, whose clients hold `samples[k]`
    /// samples each: draws the cell, initialises the global model, and sets
    /// up the TSFA budget and queue.
    ///
    /// # Errors
    /// Invalid configuration; a sample count list that is not one positive
    /// count per client; channel or model errors.
    pub fn new(cfg: RunConfig, task: Arc<Task>, samples: &[usize]) -> Result<Self, FedError> {
        cfg.validate()?;
        let f = &cfg.federation;
        if samples.len() != f.clients || samples.contains(&0) {
            return Err(FedError::config(
                "federation.clients",
                format!(
                    "the server needs a positive sample count for each of the {} clients, got {samples:?}",
                    f.clients
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
        let latency = if cfg.model.mode == TrainMode::Lora {
            let dims = global
                .factors
                .iter()
                .map(|f| (f.b.nrows(), f.a.ncols()))
                .collect();
            let head = global.head.len();
            Some(LatencyModel::new(&cfg, &task, &network, dims, head)?)
        } else {
            None
        };
        let (mut ilora_latency_s, mut budget_s, mut queue) = (None, None, None);
        if let (Some((budget_rel, budget_rank)), Some(lat)) =
            (cfg.wireless.allocation.budget(), &latency)
        {
            let t_ilora = lat.ilora_latency_s(budget_rank.unwrap_or(cfg.model.rank))?;
            ilora_latency_s = Some(t_ilora);
            budget_s = Some(budget_rel * t_ilora);
            if matches!(
                cfg.wireless.allocation,
                AllocationSettings::DriftPlusPenalty { .. }
            ) {
                queue = Some(VirtualQueue::new(budget_rel * t_ilora)?);
            }
        }
        let kept = if cfg.model.mode == TrainMode::Lora {
            cfg.kept_components()
        } else {
            1
        };
        Ok(Self {
            sizes: samples.iter().map(|&n| n as f64).collect(),
            cfg,
            task,
            network,
            cycles_per_sample,
            kept,
            global,
            round: 0,
            sim_time_s: 0.0,
            latency_sum_s: 0.0,
            latency,
            ilora_latency_s,
            budget_s,
            queue,
            phase: Phase::Idle,
            last_allocation: None,
            times: PhaseTimes::default(),
        })
    }

    /// Phase 1, plan: the clients of round `t` and their train instructions.
    ///
    /// # Errors
    /// [`FedError::Protocol`] when a round is already under way or every
    /// round has run.
    pub fn plan_round(&mut self) -> Result<Vec<ServerMessage>, FedError> {
        if !matches!(self.phase, Phase::Idle) || self.finished() {
            return Err(protocol(format!(
                "round {} cannot start: {}",
                self.round,
                if self.finished() {
                    "every configured round has run"
                } else {
                    "the previous round has not finished"
                }
            )));
        }
        let t = self.round;
        let local_only = self.cfg.federation.local_only;
        let clients = if local_only {
            (0..self.cfg.federation.clients).collect()
        } else {
            self.sample_clients(t)
        };
        // A local-only client continues from its own state after round 0.
        let state = (!local_only || t == 0).then(|| self.global.clone());
        let report_importances = matches!(
            self.cfg.wireless.allocation,
            AllocationSettings::DriftPlusPenalty {
                penalty: PenaltyKind::DroppedEnergy,
                ..
            } | AllocationSettings::Myopic { .. }
        );
        let msgs = clients
            .iter()
            .map(|&k| {
                ServerMessage::Train(TrainInstruction {
                    round: t,
                    client: k,
                    state: state.clone(),
                    batch_seed: derive(self.cfg.seed, Stream::Batches, k as u64, t as u64),
                    report_importances,
                    evaluate: local_only && t + 1 >= self.cfg.federation.rounds,
                })
            })
            .collect();
        self.phase = Phase::Training { round: t, clients };
        Ok(msgs)
    }

    /// Phase 2, allocate: from every sampled client's [`TrainReport`], this
    /// round's allocation and the compress instructions (none in a
    /// local-only run).
    ///
    /// # Errors
    /// [`FedError::Protocol`] out of phase, or for replies that are not one
    /// report per sampled client of this round with its registered sample
    /// count; allocator errors.
    pub fn allocate(
        &mut self,
        replies: Vec<ClientMessage>,
    ) -> Result<Vec<ServerMessage>, FedError> {
        self.allocate_with_absent(replies, &[])
    }

    /// Phase 2 when some sampled clients did not answer: `absent` names
    /// them, `replies` holds one report from each of the others. The round
    /// is allocated over the clients that answered (the absent ones get 0
    /// components and share 0 in the record, and no instruction).
    ///
    /// # Errors
    /// As [`Server::allocate`]; also for an `absent` client that is not
    /// sampled or is named twice, a report from an absent client, and a
    /// round in which every sampled client is absent (the state does not
    /// change, so the driver may stop and resume).
    pub fn allocate_with_absent(
        &mut self,
        replies: Vec<ClientMessage>,
        absent: &[usize],
    ) -> Result<Vec<ServerMessage>, FedError> {
        // The phase changes only once the replies are accepted.
        let Phase::Training { round, clients } = &self.phase else {
            return Err(protocol(
                "train reports arrived outside the training phase".into(),
            ));
        };
        let (round, sampled) = (*round, clients.clone());
        let (clients, missing_reports) = present(round, &sampled, absent, "sampled")?;
        if clients.is_empty() {
            return Err(protocol(format!(
                "every sampled client of round {round} is absent ({missing_reports:?}): nothing to allocate"
            )));
        }
        answered_while_absent(round, &replies, &missing_reports)?;
        let reports = self.reports(round, &clients, replies)?;
        let train_loss = mean(reports.iter().map(|r| r.train_loss));
        if self.cfg.federation.local_only {
            let evaluation = reports
                .iter()
                .map(|r| r.evaluation)
                .collect::<Option<Vec<_>>>()
                .map(|e| {
                    let n = e.len() as f64;
                    let (l, a) = e.iter().fold((0.0, 0.0), |(l, a), (x, y)| (l + x, a + y));
                    (l / n, a / n)
                });
            self.phase = Phase::LocalOnly {
                round,
                train_loss,
                evaluation,
                missing_reports,
            };
            return Ok(Vec::new());
        }
        let clock = Instant::now();
        let (problem, policy) = self.round_problem(round, &clients, &reports)?;
        let allocation = solve_round(&problem, &policy, &SearchOptions::default())?;
        self.times.allocate_s += clock.elapsed().as_secs_f64();
        let msgs = self.compress_instructions(round, &clients, &allocation);
        self.phase = Phase::Compressing(Box::new(Allocated {
            round,
            sampled,
            missing_reports,
            clients,
            train_loss,
            problem,
            allocation,
            queue_before_s: self.queue.map_or(0.0, |q| q.backlog_s),
        }));
        Ok(msgs)
    }

    /// Every sampled client's compress instruction: its `m_k` (0: sit
    /// out), its share, and one sparsifier seed per adapted matrix.
    fn compress_instructions(
        &self,
        round: usize,
        clients: &[usize],
        allocation: &Allocation,
    ) -> Vec<ServerMessage> {
        let layers = self.global.factors.len();
        clients
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                ServerMessage::Compress(CompressInstruction {
                    round,
                    client: k,
                    components: allocation.components[i] as usize,
                    share: allocation.shares[i],
                    sparsifier_seeds: (0..layers)
                        .map(|j| {
                            let stream = (round * 4096 + j) as u64;
                            derive(self.cfg.seed, Stream::Sparsifier, k as u64, stream)
                        })
                        .collect(),
                    report_factors: layers > 0,
                })
            })
            .collect()
    }

    /// The allocation problem and policy the train reports `replies` of the
    /// round in progress would give, without changing any state (a
    /// diagnostic for the allocator's guarantees, and for dumping instances).
    ///
    /// # Errors
    /// As [`Server::allocate`].
    pub fn allocation_problem(
        &self,
        replies: Vec<ClientMessage>,
    ) -> Result<(RoundProblem<Uplink>, Policy), FedError> {
        let Phase::Training { round, clients } = &self.phase else {
            return Err(protocol("no round is in its training phase".into()));
        };
        let reports = self.reports(*round, clients, replies)?;
        self.round_problem(*round, clients, &reports)
    }

    /// Phase 3, aggregate: from every sampled client's [`ClientUpdate`],
    /// the new global state, the queue, and the round's record.
    ///
    /// # Errors
    /// [`FedError::Protocol`] out of phase, or for updates that are not one
    /// per sampled client, carry other bits than they say, or do not fit
    /// the global model; aggregation errors; divergence.
    pub fn finish_round(&mut self, replies: Vec<ClientMessage>) -> Result<RoundRecord, FedError> {
        self.finish_round_with_absent(replies, &[])
    }

    /// Phase 3 when some allocated clients did not answer: `absent` names
    /// them, `replies` holds one update from each of the others. An absent
    /// client sits the round out: the aggregation weights `p_k ∝ |D_k|` and
    /// the round latency run over the clients whose update came (a round
    /// in which none came keeps the global state).
    ///
    /// # Errors
    /// As [`Server::finish_round`]; also for an `absent` client that was
    /// not allocated or is named twice, and an update from an absent client.
    pub fn finish_round_with_absent(
        &mut self,
        replies: Vec<ClientMessage>,
        absent: &[usize],
    ) -> Result<RoundRecord, FedError> {
        let a = match &self.phase {
            Phase::Compressing(a) => (**a).clone(),
            Phase::LocalOnly {
                round,
                train_loss,
                evaluation,
                missing_reports,
            } if replies.is_empty() && absent.is_empty() => {
                let (round, train_loss, evaluation) = (*round, *train_loss, *evaluation);
                let missing_reports = missing_reports.clone();
                self.phase = Phase::Idle;
                let mut record = self.finish_local_only(round, train_loss, evaluation);
                record.missing_reports = missing_reports;
                return Ok(record);
            }
            _ => {
                return Err(protocol(
                    "updates arrived outside the compression phase".into(),
                ));
            }
        };
        // Nothing changes until the updates are accepted and aggregated.
        let (_, missing_updates) = present(a.round, &a.clients, absent, "allocated")?;
        answered_while_absent(a.round, &replies, &missing_updates)?;
        let updates = self.updates(&a, replies, &missing_updates)?;
        let clock = Instant::now();
        let (sent, totals) = self.account(&a, &updates);
        self.times.compress_s += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let covariance_rel = self.covariance(&sent)?;
        self.times.covariance_s += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let global = self.aggregate(&sent)?;
        check_finite(&global, a.round)?;
        self.times.aggregate_s += clock.elapsed().as_secs_f64();
        let mut queue = self.queue;
        let queue_s = match &mut queue {
            Some(q) => q.update(totals.latency_s)?,
            None => 0.0,
        };
        // Commit.
        self.global = global;
        self.queue = queue;
        self.phase = Phase::Idle;
        self.round += 1;
        self.sim_time_s += totals.latency_s;
        self.latency_sum_s += totals.latency_s;
        let evaluation = self.evaluate_if_due()?;
        let mut record = self.record(a, totals, sent.len(), queue_s, covariance_rel, evaluation);
        record.missing_updates = missing_updates;
        Ok(record)
    }

    /// The round's record; keeps its allocation for diagnostics.
    fn record(
        &mut self,
        a: Allocated,
        mut totals: Totals,
        participants: usize,
        queue_s: f64,
        covariance_rel: Vec<f64>,
        (test_loss, accuracy): (Option<f64>, Option<f64>),
    ) -> RoundRecord {
        // Components and shares per sampled client; 0 for one absent from
        // the allocation.
        let mut components = vec![0; a.sampled.len()];
        let mut shares = vec![0.0; a.sampled.len()];
        for (i, k) in a.clients.iter().enumerate() {
            if let Ok(s) = a.sampled.binary_search(k) {
                components[s] = a.allocation.components[i];
                shares[s] = a.allocation.shares[i];
            }
        }
        let record = RoundRecord {
            round: self.round,
            participants,
            accuracy,
            test_loss,
            train_loss: a.train_loss,
            bits: totals.bits,
            values: totals.values,
            index_bits: totals.index_bits,
            latency_s: totals.latency_s,
            sim_time_s: self.sim_time_s,
            mean_latency_s: self.latency_sum_s / self.round as f64,
            queue_s,
            energy_j: totals.energy_j,
            components,
            shares,
            covariance_rel,
            missing_reports: a.missing_reports,
            missing_updates: Vec::new(),
        };
        self.last_allocation = Some(RoundAllocation {
            clients: a.clients,
            allocation: a.allocation,
            finish_s: std::mem::take(&mut totals.finish_s),
            queue_before_s: a.queue_before_s,
        });
        record
    }

    /// The train reports of `round`, in the order of `clients`.
    fn reports(
        &self,
        round: usize,
        clients: &[usize],
        replies: Vec<ClientMessage>,
    ) -> Result<Vec<TrainReport>, FedError> {
        let reports = in_client_order(round, clients, replies, |m| match m {
            ClientMessage::Trained(r) => Ok((r.round, r.client, r)),
            ClientMessage::Update(u) => Err(u.client),
        })?;
        for r in &reports {
            if r.samples as f64 != self.sizes[r.client] {
                return Err(protocol(format!(
                    "client {} reports {} samples, the server was given {}",
                    r.client, r.samples, self.sizes[r.client]
                )));
            }
        }
        Ok(reports)
    }

    /// The updates of the allocated round, in client order (`None` for a
    /// client in `missing`), each checked against its instruction and the
    /// global model.
    fn updates(
        &self,
        a: &Allocated,
        replies: Vec<ClientMessage>,
        missing: &[usize],
    ) -> Result<Vec<Option<ClientUpdate>>, FedError> {
        let (senders, _) = present(a.round, &a.clients, missing, "allocated")?;
        let mut updates = in_client_order(a.round, &senders, replies, |m| match m {
            ClientMessage::Update(u) => Ok((u.round, u.client, u)),
            ClientMessage::Trained(r) => Err(r.client),
        })?
        .into_iter();
        let mut out = Vec::with_capacity(a.clients.len());
        for (i, k) in a.clients.iter().enumerate() {
            if missing.binary_search(k).is_ok() {
                out.push(None);
                continue;
            }
            let u = updates
                .next()
                .ok_or_else(|| protocol(format!("client {k}'s update is missing")))?;
            self.check_update(&u, a.allocation.components[i] as usize)?;
            out.push(Some(u));
        }
        Ok(out)
    }

    fn check_update(&self, u: &ClientUpdate, m_k: usize) -> Result<(), FedError> {
        let k = u.client;
        let bad = |what: String| Err(protocol(format!("client {k}'s update: {what}")));
        if m_k == 0 {
            return if u.sat_out() && u.messages.is_empty() {
                Ok(())
            } else {
                bad("it was told to sit out but sent an update".into())
            };
        }
        let Some(head) = &u.head else {
            return bad("no head".into());
        };
        if head.weight.dim() != self.global.head.weight.dim()
            || head.bias.len() != self.global.head.bias.len()
        {
            return bad(format!(
                "head {:?} + {}, expected {:?} + {}",
                head.weight.dim(),
                head.bias.len(),
                self.global.head.weight.dim(),
                self.global.head.bias.len()
            ));
        }
        if !head_is_finite(head) {
            return bad("the head is not finite".into());
        }
        let layers = self.global.factors.len();
        if u.messages.len() != layers || u.local_factors.len() != layers {
            return bad(format!(
                "{} messages and {} local factors for {layers} adapted matrices",
                u.messages.len(),
                u.local_factors.len()
            ));
        }
        for (f, g) in u.local_factors.iter().zip(&self.global.factors) {
            if f.name != g.name || f.b.dim() != g.b.dim() || f.a.dim() != g.a.dim() {
                return bad(format!(
                    "local factors '{}' {:?}/{:?}, expected '{}' {:?}/{:?}",
                    f.name,
                    f.b.dim(),
                    f.a.dim(),
                    g.name,
                    g.b.dim(),
                    g.a.dim()
                ));
            }
        }
        for (j, (msg, g)) in u.messages.iter().zip(&self.global.factors).enumerate() {
            let dims = msg.dims();
            if msg.method() != self.cfg.compression.method
                || (dims.d, dims.r, dims.l) != (g.b.nrows(), g.b.ncols(), g.a.ncols())
            {
                return bad(format!(
                    "matrix {j} is a {} message of {:?}, expected {} of {:?}",
                    msg.method(),
                    dims,
                    self.cfg.compression.method,
                    (g.b.nrows(), g.b.ncols(), g.a.ncols())
                ));
            }
            // It was allocated m_k components: their budget bounds it (ILoRA
            // is the uncompressed upper line and sends everything).
            if msg.method() != wflora_soft::MethodKind::ILora {
                let limit = wflora_soft::budget(dims, m_k)?.total();
                if msg.size().total() > limit {
                    return bad(format!(
                        "matrix {j} carries {} bits, the budget of its m = {m_k} components is {limit}",
                        msg.size().total()
                    ));
                }
            }
        }
        let bits = head.len() as u64 * u64::from(self.cfg.wireless.channel.bits_per_value)
            + u.messages.iter().map(|m| m.size().total()).sum::<u64>();
        if bits != u.payload_bits {
            return bad(format!(
                "it says {} payload bits, it carries {bits}",
                u.payload_bits
            ));
        }
        Ok(())
    }

    /// Bits, energy and finish times of the clients that sent.
    fn account<'a>(
        &self,
        a: &Allocated,
        updates: &'a [Option<ClientUpdate>],
    ) -> (Vec<Sent<'a>>, Totals) {
        let load = self.load();
        let mut totals = Totals {
            finish_s: vec![None; a.clients.len()],
            ..Totals::default()
        };
        let mut sent = Vec::new();
        for (i, (&k, u)) in a.clients.iter().zip(updates).enumerate() {
            let Some(u) = u.as_ref().filter(|u| !u.sat_out()) else {
                continue;
            };
            let mut client_bits = self.head_bits();
            for msg in &u.messages {
                let size = msg.size();
                totals.values += size.values;
                totals.index_bits += size.index_bits;
                client_bits += size.total() as f64;
            }
            totals.values += self.global.head.len() as u64;
            totals.bits += client_bits;
            let link = &a.problem.clients[i].link;
            let rate = link.rate_bps(a.allocation.shares[i]);
            let freq = self.network.sites()[k].cpu_freq_hz;
            totals.energy_j += upload_energy_j(link.tx_power_w, client_bits, rate)
                + load.energy_j(self.cfg.wireless.channel.kappa, freq);
            // Finish time from the bits actually sent.
            let finish = a.problem.clients[i].compute_latency_s + client_bits / rate;
            totals.finish_s[i] = Some(finish);
            totals.latency_s = totals.latency_s.max(finish);
            sent.push(Sent {
                weight: self.sizes[k],
                update: u,
            });
        }
        (sent, totals)
    }

    /// Relative covariance of separate aggregation, per matrix, over the
    /// clients that sent (their uncompressed local factors).
    fn covariance(&self, sent: &[Sent<'_>]) -> Result<Vec<f64>, FedError> {
        let mut rel = Vec::with_capacity(self.global.factors.len());
        for j in 0..self.global.factors.len() {
            let items: Vec<_> = sent
                .iter()
                .map(|s| {
                    let f = &s.update.local_factors[j];
                    (s.weight, &f.b, &f.a)
                })
                .collect();
            if items.is_empty() {
                break;
            }
            rel.push(covariance(&items)?.relative);
        }
        Ok(rel)
    }

    /// Factor-wise aggregation of the messages, the head densely, with
    /// weights `p_k ∝ |D_k|` over the clients that sent: the new global
    /// state (the current one is not changed).
    fn aggregate(&self, sent: &[Sent<'_>]) -> Result<ModelState, FedError> {
        let mut global = self.global.clone();
        let total_w: f64 = sent.iter().map(|s| s.weight).sum();
        if total_w <= 0.0 {
            return Ok(global);
        }
        for (j, g) in global.factors.iter_mut().enumerate() {
            let msgs: Vec<(f64, &Message)> = sent
                .iter()
                .map(|s| (s.weight / total_w, &s.update.messages[j]))
                .collect();
            let new = aggregate(FactorsView::new(g.b.view(), g.a.view()), &msgs)?;
            g.b = new.b;
            g.a = new.a;
        }
        let g = &self.global.head;
        let mut w = g.weight.clone();
        let mut b = g.bias.clone();
        for s in sent {
            let Some(h) = &s.update.head else { continue };
            let p = (s.weight / total_w) as f32;
            w.scaled_add(p, &(&h.weight - &g.weight));
            for (bj, (hj, gj)) in b.iter_mut().zip(h.bias.iter().zip(&g.bias)) {
                *bj += p * (hj - gj);
            }
        }
        global.head = HeadParams { weight: w, bias: b };
        Ok(global)
    }

    /// Phase evaluation: the global model on the test split every
    /// `eval_every` rounds and after the last.
    fn evaluate_if_due(&mut self) -> Result<(Option<f64>, Option<f64>), FedError> {
        let clock = Instant::now();
        let due = self.round.is_multiple_of(self.cfg.federation.eval_every) || self.finished();
        let out = if due {
            let (l, a) = self.evaluate(&self.global)?;
            (Some(l), Some(a))
        } else {
            (None, None)
        };
        self.times.evaluate_s += clock.elapsed().as_secs_f64();
        self.times.rounds += 1;
        Ok(out)
    }

    fn finish_local_only(
        &mut self,
        round: usize,
        train_loss: f64,
        evaluation: Option<(f64, f64)>,
    ) -> RoundRecord {
        self.round = round + 1;
        self.times.rounds += 1;
        RoundRecord {
            round: self.round,
            participants: 0,
            accuracy: evaluation.map(|e| e.1),
            test_loss: evaluation.map(|e| e.0),
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
            missing_reports: Vec::new(),
            missing_updates: Vec::new(),
        }
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

    fn head_bits(&self) -> f64 {
        self.global.head.len() as f64 * f64::from(self.cfg.wireless.channel.bits_per_value)
    }

    /// Bits of one client's upload when it keeps `m` components per matrix
    /// (SOFT's budget with index bits, plus the dense head).
    fn level_bits(&self, m: usize) -> Result<f64, FedError> {
        match &self.latency {
            Some(lat) => lat.level_bits(self.cfg.model.rank, m),
            None => Ok(self.head_bits()),
        }
    }

    fn load(&self) -> ComputeLoad {
        ComputeLoad {
            local_steps: self.cfg.local.steps as u32,
            batch_size: self.cfg.local.batch_size as u32,
            cycles_per_sample: self.cycles_per_sample,
        }
    }

    /// This round's allocation problem and policy for the sampled `clients`
    /// with their `reports`.
    fn round_problem(
        &self,
        t: usize,
        clients: &[usize],
        reports: &[TrainReport],
    ) -> Result<(RoundProblem<Uplink>, Policy), FedError> {
        let m = self.kept;
        let fixed_bits = self.level_bits(m)?;
        let load = self.load();
        let total_size: f64 = clients.iter().map(|&k| self.sizes[k]).sum();
        let mut problem_clients = Vec::with_capacity(clients.len());
        for (&k, report) in clients.iter().zip(reports) {
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
                    self.menu(report, m_min, penalty)?
                }
                AllocationSettings::Myopic { m_min, .. } => {
                    self.menu(report, m_min, PenaltyKind::DroppedEnergy)?
                }
            };
            problem_clients.push(ClientRound {
                link,
                compute_latency_s: load.latency_s(freq)?,
                weight: self.sizes[k] / total_size,
                levels,
            });
        }
        let (v, queue, policy) = self.policy(m as u32);
        let problem = RoundProblem {
            clients: problem_clients,
            v,
            queue,
        };
        Ok((problem, policy))
    }

    /// `(V, Q, policy)` of the configured allocation.
    fn policy(&self, components: u32) -> (f64, f64, Policy) {
        match self.cfg.wireless.allocation {
            AllocationSettings::EqualBandwidth => (0.0, 0.0, Policy::EqualBandwidth { components }),
            AllocationSettings::Equalising => (0.0, 0.0, Policy::FixedRatio { components }),
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
        }
    }

    /// A client's levels `m ∈ {m_min..=r}` with SOFT's bits and `D_k(m)`.
    fn menu(
        &self,
        report: &TrainReport,
        m_min: usize,
        kind: PenaltyKind,
    ) -> Result<Vec<Level>, FedError> {
        let r = self.cfg.model.rank;
        let d = match kind {
            PenaltyKind::BoundFactor => bound_factor_penalty(r),
            PenaltyKind::DroppedEnergy => {
                if report.importances.len() != self.global.factors.len() {
                    return Err(protocol(format!(
                        "client {} reported importances of {} matrices, expected {}",
                        report.client,
                        report.importances.len(),
                        self.global.factors.len()
                    )));
                }
                pooled_dropped_energy(&report.importances, r)?
            }
        };
        (m_min..=r)
            .map(|m| {
                Ok(Level {
                    components: m as u32,
                    bits: self.level_bits(m)?,
                    penalty: d[m],
                })
            })
            .collect()
    }

    /// Evaluates a state on the test set: `(loss, accuracy)` (see
    /// [`crate::Simulation::evaluate`]).
    ///
    /// # Errors
    /// Model errors.
    pub fn evaluate(&self, state: &ModelState) -> Result<(f64, f64), FedError> {
        eval::evaluate(&self.cfg, &self.task, state, self.round)
    }

    /// Writes the server's state into `ck`: the global state under
    /// `global.` and the round, simulated time and queue in the metadata.
    pub fn save(&self, ck: &mut Checkpoint) {
        put_state(ck, "global.", &self.global);
        let meta = serde_json::json!({
            "round": self.round,
            "sim_time_s_bits": self.sim_time_s.to_bits(),
            "latency_sum_s_bits": self.latency_sum_s.to_bits(),
            "queue_s_bits": self.queue.map(|q| q.backlog_s.to_bits()),
        });
        ck.meta = meta;
    }

    /// Restores what [`Server::save`] wrote (between rounds).
    ///
    /// # Errors
    /// [`FedError::Resume`] for malformed metadata; checkpoint errors for a
    /// missing or misshaped tensor.
    pub fn restore(&mut self, ck: &mut Checkpoint, path: &Path) -> Result<(), FedError> {
        let meta_err = |what: &str| FedError::Resume {
            path: path.to_path_buf(),
            reason: format!("checkpoint metadata: {what}"),
        };
        let bits = |key: &str| ck.meta[key].as_u64().ok_or_else(|| meta_err(key));
        let round = bits("round")? as usize;
        let sim = bits("sim_time_s_bits")?;
        let lat = bits("latency_sum_s_bits")?;
        let queue = if self.queue.is_some() {
            Some(bits("queue_s_bits")?)
        } else {
            None
        };
        take_state(ck, "global.", &mut self.global, path)?;
        if let (Some(q), Some(b)) = (&mut self.queue, queue) {
            q.backlog_s = f64::from_bits(b);
        }
        self.round = round;
        self.sim_time_s = f64::from_bits(sim);
        self.latency_sum_s = f64::from_bits(lat);
        self.phase = Phase::Idle;
        Ok(())
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

    /// The latency budget `T̄` in seconds (TSFA policies only).
    #[must_use]
    pub fn budget_s(&self) -> Option<f64> {
        self.budget_s
    }

    /// `T_ILoRA` in seconds (TSFA policies only).
    #[must_use]
    pub fn ilora_latency_s(&self) -> Option<f64> {
        self.ilora_latency_s
    }

    /// The virtual queue backlog `Q^t` in seconds (drift-plus-penalty only).
    #[must_use]
    pub fn queue_s(&self) -> Option<f64> {
        self.queue.map(|q| q.backlog_s)
    }

    /// The mean-channel latency model (LoRA mode only).
    #[must_use]
    pub fn latency_model(&self) -> Option<&LatencyModel> {
        self.latency.as_ref()
    }

    /// The cell (sites, fading).
    #[must_use]
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The last round's allocation as applied (not checkpointed).
    #[must_use]
    pub fn last_allocation(&self) -> Option<&RoundAllocation> {
        self.last_allocation.as_ref()
    }

    /// Wall-clock seconds of the server's phases (allocation, accounting,
    /// covariance, aggregation, evaluation) since it was built.
    #[must_use]
    pub fn phase_times(&self) -> &PhaseTimes {
        &self.times
    }
}

/// `replies` of `round`, one per client of `clients`, in that order; `pick`
/// extracts `(round, client, payload)` or names a client that sent the
/// other message type.
fn in_client_order<T>(
    round: usize,
    clients: &[usize],
    replies: Vec<ClientMessage>,
    pick: impl Fn(ClientMessage) -> Result<(usize, usize, T), usize>,
) -> Result<Vec<T>, FedError> {
    let mut slots: Vec<Option<T>> = clients.iter().map(|_| None).collect();
    for reply in replies {
        let (r, k, payload) =
            pick(reply).map_err(|k| protocol(format!("client {k} sent the wrong message type")))?;
        if r != round {
            return Err(protocol(format!(
                "client {k} answered round {r} in round {round}"
            )));
        }
        let i = clients
            .binary_search(&k)
            .map_err(|_| protocol(format!("client {k} is not in round {round}")))?;
        if slots[i].replace(payload).is_some() {
            return Err(protocol(format!(
                "client {k} answered twice in round {round}"
            )));
        }
    }
    slots
        .into_iter()
        .zip(clients)
        .map(|(s, k)| {
            s.ok_or_else(|| protocol(format!("client {k} did not answer in round {round}")))
        })
        .collect()
}

/// `clients` split by `absent` into `(present, absent sorted)`; `absent`
/// must name distinct members of `clients` (`what` says which set, for the
/// error).
fn present(
    round: usize,
    clients: &[usize],
    absent: &[usize],
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>), FedError> {
    let mut missing = absent.to_vec();
    missing.sort_unstable();
    if let Some(w) = missing.windows(2).find(|w| w[0] == w[1]) {
        return Err(protocol(format!(
            "client {} is named absent twice in round {round}",
            w[0]
        )));
    }
    if let Some(k) = missing.iter().find(|k| clients.binary_search(k).is_err()) {
        return Err(protocol(format!(
            "client {k} is named absent in round {round} but is not {what} ({clients:?})"
        )));
    }
    let rest = clients
        .iter()
        .copied()
        .filter(|k| missing.binary_search(k).is_err())
        .collect();
    Ok((rest, missing))
}

/// Refuses a reply from a client the driver named absent (`absent` sorted).
fn answered_while_absent(
    round: usize,
    replies: &[ClientMessage],
    absent: &[usize],
) -> Result<(), FedError> {
    match replies
        .iter()
        .map(ClientMessage::client)
        .find(|k| absent.binary_search(k).is_ok())
    {
        Some(k) => Err(protocol(format!(
            "client {k} is named absent in round {round} but answered"
        ))),
        None => Ok(()),
    }
}

fn protocol(what: String) -> FedError {
    FedError::Protocol { what }
}

/// Divergence of an aggregated state (a non-finite factor or head).
fn check_finite(s: &ModelState, t: usize) -> Result<(), FedError> {
    let what = match s.non_finite() {
        None => return Ok(()),
        Some(NonFinite::Factor(name)) => format!("global factor {name}"),
        Some(NonFinite::Head) => "global head".into(),
    };
    Err(FedError::Diverged { round: t, what })
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}
