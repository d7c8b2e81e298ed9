//! The decentralized round loop: every device trains locally from its own
//! state, then exchanges with its graph neighbours as its method says;
//! simulated communication (bits, D2D air time) is priced by
//! `wflora-channel`; evaluation is per device on its own task.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use wflora_channel::{Network, broadcast_airtime_s, site_xy};
use wflora_data::BatchSampler;
use wflora_fed::seed::{Stream, derive};
use wflora_lora::{
    AdapterFactors, FineTuneMode, HeadParams, LocalTrainer, RegulariserKind, TrainOptions, VitModel,
};

use crate::config::{DflConfig, Method, Topology};
use crate::error::DflError;
use crate::graph::{Graph, average_linkage, cluster_distance};
use crate::route::{route, task_code};
use crate::sparse::{
    SparseMatrix, budget, collision_rate, cross_coherence, gaussian_projection, top_k,
};
use crate::tasks::{MultiTask, Samples};

/// Images per device used for its task code.
const CODE_IMAGES: usize = 256;
/// Evaluation batch size.
const EVAL_BATCH: usize = 256;

/// A plain matrix that serialises (rows, cols, row-major values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMatrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl StoredMatrix {
    fn from_array(m: &Array2<f32>) -> Self {
        Self {
            rows: m.nrows(),
            cols: m.ncols(),
            values: m.iter().copied().collect(),
        }
    }

    fn to_array(&self, what: &str) -> Result<Array2<f32>, DflError> {
        Array2::from_shape_vec((self.rows, self.cols), self.values.clone())
            .map_err(|e| DflError::config(what, format!("corrupt matrix: {e}")))
    }
}

/// One device's state: its own adapter factors and its head.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceState {
    /// The device's task.
    pub task: usize,
    /// Its own LoRA factors (for SO-LoRA: frozen `A_k`, sparse `B_k`).
    pub factors: Vec<AdapterFactors>,
    /// Its head (never exchanged).
    pub head: HeadParams,
}

/// One round's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DflRecord {
    /// Rounds completed.
    pub round: usize,
    /// Mean local training loss over devices.
    pub train_loss: f64,
    /// Bits broadcast this round, summed over devices.
    pub bits: f64,
    /// Bits broadcast so far.
    pub cum_bits: f64,
    /// D2D air time of this round (FDMA, the slowest broadcast), seconds.
    pub comm_time_s: f64,
    /// Air time so far.
    pub cum_comm_time_s: f64,
    /// Mean over tasks of the mean accuracy of the task's devices.
    pub accuracy: Option<f64>,
    /// Per task: mean accuracy of its devices.
    pub task_accuracy: Option<Vec<f64>>,
    /// Per device: accuracy on its task's test set.
    pub device_accuracy: Option<Vec<f64>>,
}

/// The structure of a run's adapters: near-orthogonality of the devices'
/// `A` and the collision rate of neighbours' `B` supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Structure {
    /// Mean over layers and device pairs of `‖A_i A_jᵀ‖_F/(‖A_i‖‖A_j‖)`.
    pub cross_coherence_mean: f64,
    /// Its largest value.
    pub cross_coherence_max: f64,
    /// `1/√l`, what independent Gaussian projections give.
    pub cross_coherence_gaussian: f64,
    /// Mean over edges and layers of the neighbours' `B` support collision
    /// rate (non-zero entries).
    pub collision_rate_mean: f64,
    /// The collision rate of independent uniform supports of the same
    /// sizes (the mean non-zero share of `B`).
    pub collision_rate_random: f64,
}

/// Accuracy of the three inference rules on the union of the tasks' test
/// sets (each task weighted equally).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceReport {
    /// Oracle hard routing: the true task's device nearest in task code.
    pub hard: f64,
    /// Implicit mixture of experts: the device nearest in task code overall
    /// (a wrong task counts as an error).
    pub moe: f64,
    /// One adapter averaged over all devices, with the oracle task's head.
    pub average: f64,
    /// Share of test inputs routed to their own task.
    pub routing_accuracy: f64,
    /// Per task `[hard, moe, average]`.
    pub per_task: Vec<[f64; 3]>,
}

/// A resumable snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DflCheckpoint {
    /// The run's configuration.
    pub config: DflConfig,
    /// Rounds completed.
    pub round: usize,
    /// Records so far.
    pub records: Vec<DflRecord>,
    /// Per device, per layer: `(name, B, A)`.
    pub factors: Vec<Vec<(String, StoredMatrix, StoredMatrix)>>,
    /// Per device: head weight and bias.
    pub heads: Vec<(StoredMatrix, Vec<f32>)>,
}

/// A decentralized multi-task simulation.
#[derive(Debug)]
pub struct Simulation {
    cfg: DflConfig,
    data: Arc<MultiTask>,
    network: Network,
    graph: Graph,
    weights: Array2<f64>,
    radius_m: Option<f64>,
    clusters: Option<Vec<usize>>,
    codes: Vec<Vec<f64>>,
    pools: Vec<Vec<usize>>,
    states: Vec<DeviceState>,
    records: Vec<DflRecord>,
    round: usize,
}

fn lora_mode(cfg: &DflConfig) -> FineTuneMode {
    crate::config::lora_mode(cfg.rank, cfg.alpha)
}

/// Runs `f(k)` for `k in 0..n` on `workers` threads (contiguous ranges),
/// results in order.
fn parallel<T: Send>(
    n: usize,
    workers: usize,
    round: usize,
    f: impl Fn(usize) -> Result<T, DflError> + Sync,
) -> Result<Vec<T>, DflError> {
    let workers = workers.clamp(1, n.max(1));
    let per = n.div_ceil(workers);
    let f = &f;
    let parts = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    (w * per..((w + 1) * per).min(n))
                        .map(f)
                        .collect::<Result<Vec<T>, DflError>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut out = Vec::with_capacity(n);
    for p in parts {
        out.extend(p.map_err(|_| DflError::Worker { round })??);
    }
    Ok(out)
}

impl Simulation {
    /// Places the devices, deals their data, computes their task codes,
    /// builds the graph and the initial adapters.
    ///
    /// # Errors
    /// Configuration, data, channel or model errors.
    pub fn new(cfg: DflConfig, data: Arc<MultiTask>) -> Result<Self, DflError> {
        cfg.validate()?;
        if data.tasks.len() != cfg.tasks.len() {
            return Err(DflError::config(
                "tasks",
                format!(
                    "{} tasks configured, {} built",
                    cfg.tasks.len(),
                    data.tasks.len()
                ),
            ));
        }
        let n = cfg.devices();
        let t_count = cfg.tasks.len();
        let device_task: Vec<usize> = (0..n).map(|k| k % t_count).collect();
        // IID shares of each task's pool among its devices.
        let mut pools = vec![Vec::new(); n];
        for (t, task) in data.tasks.iter().enumerate() {
            let mut idx: Vec<usize> = (0..task.train.len()).collect();
            wflora_data::shuffle_indices(
                &mut idx,
                derive(cfg.seed, Stream::Partition, 1, t as u64),
            );
            let devs: Vec<usize> = (0..n).filter(|&k| device_task[k] == t).collect();
            let per = idx.len() / devs.len();
            if per == 0 {
                return Err(DflError::config(
                    "devices_per_task",
                    format!(
                        "task `{}` has {} training images for {} devices",
                        task.name,
                        idx.len(),
                        devs.len()
                    ),
                ));
            }
            for (c, &k) in devs.iter().enumerate() {
                let end = if c + 1 == devs.len() {
                    idx.len()
                } else {
                    (c + 1) * per
                };
                pools[k] = idx[c * per..end].to_vec();
            }
        }
        let network = Network::new(
            cfg.channel.clone(),
            n,
            derive(cfg.seed, Stream::Channel, 0, 0),
        )?;
        // Task codes: frozen-backbone class-token features of local images.
        let codes = parallel(n, cfg.workers, 0, |k| {
            let train = &data.tasks[device_task[k]].train;
            let take: Vec<usize> = pools[k].iter().copied().take(CODE_IMAGES).collect();
            let b = train.subset(&take)?;
            let frozen = VitModel::new(data.backbone.clone(), FineTuneMode::HeadOnly, 1, 0)?;
            let f = wflora_lora::features(&frozen, &b.batch()?, EVAL_BATCH)?;
            task_code(&f).ok_or_else(|| {
                DflError::config("tasks", format!("device {k}'s features are all zero"))
            })
        })?;
        let (mut radius_m, mut clusters) = (None, None);
        let graph = match cfg.topology {
            Topology::Ring => Graph::ring(n),
            Topology::Full => Graph::complete(n),
            Topology::RandomGeometric { radius_m: r } => {
                let pts: Vec<(f64, f64)> = network.sites().iter().map(site_xy).collect();
                let (g, used) = Graph::random_geometric(&pts, r)?;
                radius_m = Some(used);
                g
            }
            Topology::Cluster {
                clusters: c,
                lambda,
            } => {
                let q = link_quality(&network, n);
                let d = cluster_distance(&codes, &q, lambda)?;
                let labels = average_linkage(&d, c)?;
                let g = Graph::from_clusters(&labels);
                clusters = Some(labels);
                g
            }
        };
        let weights = graph.metropolis_weights();
        let mut states = Vec::with_capacity(n);
        for (k, &t) in device_task.iter().enumerate() {
            let model = VitModel::new(
                data.backbone.clone(),
                lora_mode(&cfg),
                data.tasks[t].num_classes,
                derive(cfg.seed, Stream::Init, 0, t as u64),
            )?;
            let mut factors = model.factors()?;
            for (layer, f) in factors.iter_mut().enumerate() {
                let (r, l) = f.a.dim();
                match cfg.method {
                    Method::SoLora => {
                        f.a = gaussian_projection(
                            r,
                            l,
                            derive(cfg.seed, Stream::Init, 1 + k as u64, layer as u64),
                        )?;
                    }
                    Method::FfaLora => {
                        f.a = gaussian_projection(
                            r,
                            l,
                            derive(cfg.seed, Stream::Init, 1 << 20, layer as u64),
                        )?;
                    }
                    Method::DLora | Method::LocalOnly => {
                        // The standard LoRA init, common to every device.
                    }
                }
            }
            states.push(DeviceState {
                task: t,
                factors,
                head: model.head()?,
            });
        }
        Ok(Self {
            cfg,
            data,
            network,
            graph,
            weights,
            radius_m,
            clusters,
            codes,
            pools,
            states,
            records: Vec::new(),
            round: 0,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &DflConfig {
        &self.cfg
    }

    /// The communication graph.
    #[must_use]
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The mixing weights (Metropolis–Hastings on the graph).
    #[must_use]
    pub fn weights(&self) -> &Array2<f64> {
        &self.weights
    }

    /// Cluster labels (cluster topology only).
    #[must_use]
    pub fn clusters(&self) -> Option<&[usize]> {
        self.clusters.as_deref()
    }

    /// The radius used by the geometric topology.
    #[must_use]
    pub fn radius_m(&self) -> Option<f64> {
        self.radius_m
    }

    /// The devices' task codes.
    #[must_use]
    pub fn codes(&self) -> &[Vec<f64>] {
        &self.codes
    }

    /// The devices' states.
    #[must_use]
    pub fn states(&self) -> &[DeviceState] {
        &self.states
    }

    /// Records so far.
    #[must_use]
    pub fn records(&self) -> &[DflRecord] {
        &self.records
    }

    /// Rounds completed.
    #[must_use]
    pub fn round(&self) -> usize {
        self.round
    }

    /// Whether every round has run.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.round >= self.cfg.rounds
    }

    fn scale(&self) -> f64 {
        self.cfg.alpha / self.cfg.rank as f64
    }

    /// `s·Σ_j w_kj B_j A_j` over `k`'s neighbours, per layer (SO-LoRA's
    /// stored neighbour components, merged into `k`'s frozen weights).
    fn neighbour_deltas(&self, k: usize) -> Vec<(String, Array2<f32>)> {
        let s = self.scale();
        self.states[k]
            .factors
            .iter()
            .enumerate()
            .map(|(layer, f)| {
                let mut d = Array2::<f32>::zeros((f.b.nrows(), f.a.ncols()));
                for &j in self.graph.neighbours(k) {
                    let fj = &self.states[j].factors[layer];
                    let w = (s * self.weights[[k, j]]) as f32;
                    d.scaled_add(w, &fj.b.dot(&fj.a));
                }
                (f.name.clone(), d)
            })
            .collect()
    }

    /// Device `k`'s model as it trains and is evaluated: for SO-LoRA the
    /// neighbours' components merged into the frozen weights plus its own
    /// adapter; otherwise the shared backbone plus its adapter.
    ///
    /// # Errors
    /// Model errors.
    pub fn device_model(&self, k: usize) -> Result<VitModel, DflError> {
        let st = &self.states[k];
        let backbone = if self.cfg.method == Method::SoLora && !self.graph.neighbours(k).is_empty()
        {
            Arc::new(self.data.backbone.with_added(&self.neighbour_deltas(k))?)
        } else {
            self.data.backbone.clone()
        };
        let mut model = VitModel::new(
            backbone,
            lora_mode(&self.cfg),
            self.data.tasks[st.task].num_classes,
            0,
        )?;
        model.set_factors(&st.factors)?;
        model.set_head(&st.head)?;
        model.set_train_a(matches!(self.cfg.method, Method::DLora | Method::LocalOnly));
        Ok(model)
    }

    fn train_device(
        &self,
        k: usize,
        t: usize,
    ) -> Result<(Vec<AdapterFactors>, HeadParams, f64), DflError> {
        let mut model = self.device_model(k)?;
        let train = &self.data.tasks[self.states[k].task].train;
        let mut sampler = BatchSampler::new(
            self.pools[k].clone(),
            self.cfg.batch_size,
            derive(self.cfg.seed, Stream::Batches, k as u64, t as u64),
        )?;
        let gathered = (0..self.cfg.local_steps)
            .map(|_| train.subset(sampler.next_batch()))
            .collect::<Result<Vec<_>, _>>()?;
        let batches = gathered
            .iter()
            .map(Samples::batch)
            .collect::<Result<Vec<_>, _>>()?;
        let mut trainer = LocalTrainer::new(TrainOptions {
            optimizer: self.cfg.optimizer,
            zeta: 0.0,
            regulariser: RegulariserKind::Plain,
            keep_optimizer_state: false,
            shards: 1,
        })?;
        let u = trainer.train(&mut model, &batches)?;
        if !u.mean_loss.is_finite() {
            return Err(DflError::Diverged {
                round: t,
                what: format!("device {k}'s training loss"),
            });
        }
        Ok((u.factors, u.head, u.mean_task_loss))
    }

    /// Runs one round: local training, exchange, pricing, evaluation when due.
    ///
    /// # Errors
    /// Model errors or divergence.
    pub fn step(&mut self) -> Result<DflRecord, DflError> {
        let t = self.round;
        let n = self.states.len();
        let trained = parallel(n, self.cfg.workers, t, |k| self.train_device(k, t))?;
        let bpv = self.cfg.channel.bits_per_value;
        let mut bits = vec![0.0f64; n];
        let loss = trained.iter().map(|x| x.2).sum::<f64>() / n as f64;
        let mut new_factors: Vec<Vec<AdapterFactors>> = Vec::with_capacity(n);
        for (k, (factors, head, _)) in trained.iter().enumerate() {
            self.states[k].head = head.clone();
            let sends = !self.graph.neighbours(k).is_empty();
            let mut f = factors.clone();
            match self.cfg.method {
                Method::SoLora => {
                    for layer in &mut f {
                        let keep = budget(layer.b.len(), self.cfg.density)?;
                        let sparse = top_k(&layer.b, keep)?;
                        if sends {
                            bits[k] += sparse.payload_bits(bpv);
                            if t == 0 {
                                // A_k goes out once, densely.
                                bits[k] += layer.a.len() as f64 * f64::from(bpv);
                            }
                        }
                        layer.b = sparse.to_dense();
                    }
                }
                Method::DLora => {
                    if sends {
                        bits[k] = f
                            .iter()
                            .map(|l| (l.a.len() + l.b.len()) as f64)
                            .sum::<f64>()
                            * f64::from(bpv);
                    }
                }
                Method::FfaLora => {
                    if sends {
                        bits[k] = f.iter().map(|l| l.b.len() as f64).sum::<f64>() * f64::from(bpv);
                    }
                }
                Method::LocalOnly => {}
            }
            new_factors.push(f);
        }
        // Gossip averaging (D-LoRA: A and B; FFA-LoRA: B) with the new states.
        if matches!(self.cfg.method, Method::DLora | Method::FfaLora) {
            let mixed: Vec<Vec<AdapterFactors>> = (0..n)
                .map(|k| {
                    let mut out = new_factors[k].clone();
                    for (layer, o) in out.iter_mut().enumerate() {
                        let w = self.weights[[k, k]] as f32;
                        o.b = &new_factors[k][layer].b * w;
                        if self.cfg.method == Method::DLora {
                            o.a = &new_factors[k][layer].a * w;
                        }
                        for &j in self.graph.neighbours(k) {
                            let w = self.weights[[k, j]] as f32;
                            o.b.scaled_add(w, &new_factors[j][layer].b);
                            if self.cfg.method == Method::DLora {
                                o.a.scaled_add(w, &new_factors[j][layer].a);
                            }
                        }
                    }
                    out
                })
                .collect();
            new_factors = mixed;
        }
        for (k, f) in new_factors.into_iter().enumerate() {
            self.states[k].factors = f;
        }
        // D2D air time: the transmitting devices share the band equally
        // (FDMA); each broadcasts to its neighbours at the weakest link.
        let transmitters = (0..n).filter(|&k| bits[k] > 0.0).count();
        let mut comm_time_s = 0.0f64;
        if transmitters > 0 {
            let share = 1.0 / transmitters as f64;
            for k in (0..n).filter(|&k| bits[k] > 0.0) {
                let links: Vec<_> = self
                    .graph
                    .neighbours(k)
                    .iter()
                    .filter_map(|&j| self.network.d2d_link(k, j, t as u64))
                    .collect();
                comm_time_s = comm_time_s.max(broadcast_airtime_s(&links, bits[k], share));
            }
        }
        self.round += 1;
        let round_bits: f64 = bits.iter().sum();
        let (cum_bits, cum_time) = self
            .records
            .last()
            .map_or((0.0, 0.0), |r| (r.cum_bits, r.cum_comm_time_s));
        let due = self.round.is_multiple_of(self.cfg.eval_every) || self.round == self.cfg.rounds;
        let (accuracy, task_accuracy, device_accuracy) = if due {
            let dev = self.evaluate_devices()?;
            let per_task = self.task_means(&dev);
            let mean = per_task.iter().sum::<f64>() / per_task.len() as f64;
            (Some(mean), Some(per_task), Some(dev))
        } else {
            (None, None, None)
        };
        let rec = DflRecord {
            round: self.round,
            train_loss: loss,
            bits: round_bits,
            cum_bits: cum_bits + round_bits,
            comm_time_s,
            cum_comm_time_s: cum_time + comm_time_s,
            accuracy,
            task_accuracy,
            device_accuracy,
        };
        self.records.push(rec.clone());
        Ok(rec)
    }

    fn task_means(&self, per_device: &[f64]) -> Vec<f64> {
        (0..self.cfg.tasks.len())
            .map(|t| {
                let v: Vec<f64> = (0..per_device.len())
                    .filter(|&k| self.states[k].task == t)
                    .map(|k| per_device[k])
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            })
            .collect()
    }

    /// Each device's accuracy on its own task's test set.
    ///
    /// # Errors
    /// Model errors.
    pub fn evaluate_devices(&self) -> Result<Vec<f64>, DflError> {
        parallel(self.states.len(), self.cfg.workers, self.round, |k| {
            let test = &self.data.tasks[self.states[k].task].test;
            let model = self.device_model(k)?;
            Ok(wflora_lora::evaluate(&model, &test.batch()?, EVAL_BATCH)?.accuracy)
        })
    }

    /// Runs the remaining rounds, calling `progress` after each.
    ///
    /// # Errors
    /// As [`Self::step`].
    pub fn run(&mut self, mut progress: impl FnMut(&DflRecord)) -> Result<(), DflError> {
        while !self.finished() {
            let r = self.step()?;
            progress(&r);
        }
        Ok(())
    }

    /// Near-orthogonality of the devices' `A` and collisions of neighbours'
    /// `B` supports, over the current states.
    ///
    /// # Errors
    /// Shape errors (none for states built by this engine).
    pub fn structure(&self) -> Result<Structure, DflError> {
        let n = self.states.len();
        let (mut sum, mut max, mut count) = (0.0, 0.0f64, 0usize);
        let mut width = 1;
        for layer in 0..self.states[0].factors.len() {
            for i in 0..n {
                for j in i + 1..n {
                    let (ai, aj) = (
                        &self.states[i].factors[layer].a,
                        &self.states[j].factors[layer].a,
                    );
                    width = ai.ncols();
                    let c = cross_coherence(ai, aj)?;
                    sum += c;
                    max = max.max(c);
                    count += 1;
                }
            }
        }
        let (mut csum, mut ccount, mut density_sum, mut dcount) = (0.0, 0usize, 0.0, 0usize);
        for i in 0..n {
            for (layer, f) in self.states[i].factors.iter().enumerate() {
                let nz = f.b.iter().filter(|v| **v != 0.0).count();
                density_sum += nz as f64 / f.b.len() as f64;
                dcount += 1;
                for &j in self.graph.neighbours(i).iter().filter(|&&j| j > i) {
                    let c = collision_rate(
                        &SparseMatrix::from_dense(&f.b),
                        &SparseMatrix::from_dense(&self.states[j].factors[layer].b),
                    )?;
                    csum += c;
                    ccount += 1;
                }
            }
        }
        Ok(Structure {
            cross_coherence_mean: if count > 0 { sum / count as f64 } else { 0.0 },
            cross_coherence_max: max,
            cross_coherence_gaussian: 1.0 / (width as f64).sqrt(),
            collision_rate_mean: if ccount > 0 {
                csum / ccount as f64
            } else {
                0.0
            },
            collision_rate_random: if dcount > 0 {
                density_sum / dcount as f64
            } else {
                0.0
            },
        })
    }

    /// The three inference rules on the union of the tasks' test sets.
    ///
    /// # Errors
    /// Model errors.
    pub fn inference(&self) -> Result<InferenceReport, DflError> {
        let n = self.states.len();
        let t_count = self.data.tasks.len();
        let tests: Vec<&Samples> = self.data.tasks.iter().map(|t| &t.test).collect();
        // Route every test input by the frozen features.
        let frozen = VitModel::new(self.data.backbone.clone(), FineTuneMode::HeadOnly, 1, 0)?;
        let mut routed: Vec<Vec<usize>> = Vec::with_capacity(t_count);
        let mut hard_dev: Vec<Vec<usize>> = Vec::with_capacity(t_count);
        for (t, test) in tests.iter().enumerate() {
            let f = wflora_lora::features(&frozen, &test.batch()?, EVAL_BATCH)?;
            let own: Vec<usize> = (0..n).filter(|&k| self.states[k].task == t).collect();
            let own_codes: Vec<Vec<f64>> = own.iter().map(|&k| self.codes[k].clone()).collect();
            let mut r = Vec::with_capacity(test.len());
            let mut h = Vec::with_capacity(test.len());
            for row in f.rows() {
                r.push(route(row, &self.codes).unwrap_or(0));
                h.push(own[route(row, &own_codes).unwrap_or(0)]);
            }
            routed.push(r);
            hard_dev.push(h);
        }
        // Every device's predictions on every task's test set.
        let preds = parallel(n, self.cfg.workers, self.round, |k| {
            let model = self.device_model(k)?;
            tests
                .iter()
                .map(|d| Ok(wflora_lora::predict(&model, &d.batch()?, EVAL_BATCH)?))
                .collect::<Result<Vec<Vec<u32>>, DflError>>()
        })?;
        // One adapter: the mean of every device's effective update.
        let s = self.scale() as f32;
        let mut avg: BTreeMap<String, Array2<f32>> = BTreeMap::new();
        for k in 0..n {
            let own = self.states[k]
                .factors
                .iter()
                .map(|f| (f.name.clone(), (&f.b.dot(&f.a)) * s));
            let extra = if self.cfg.method == Method::SoLora {
                self.neighbour_deltas(k)
            } else {
                Vec::new()
            };
            for (name, d) in own.chain(extra) {
                let e = avg.entry(name).or_insert_with(|| Array2::zeros(d.dim()));
                e.scaled_add(1.0 / n as f32, &d);
            }
        }
        let merged = Arc::new(
            self.data
                .backbone
                .with_added(&avg.into_iter().collect::<Vec<_>>())?,
        );
        let avg_preds = parallel(n, self.cfg.workers, self.round, |k| {
            let st = &self.states[k];
            let model = VitModel::new(
                merged.clone(),
                FineTuneMode::HeadOnly,
                self.data.tasks[st.task].num_classes,
                0,
            )?;
            model.set_head(&st.head)?;
            let d = tests[st.task];
            Ok(wflora_lora::predict(&model, &d.batch()?, EVAL_BATCH)?)
        })?;
        let mut per_task = Vec::with_capacity(t_count);
        let mut routed_right = 0usize;
        let mut total = 0usize;
        for (t, test) in tests.iter().enumerate() {
            let (mut hard, mut moe, mut average) = (0usize, 0usize, 0usize);
            for (i, &label) in test.labels().iter().enumerate() {
                let h = hard_dev[t][i];
                hard += usize::from(preds[h][t][i] == label);
                average += usize::from(avg_preds[h][i] == label);
                let m = routed[t][i];
                if self.states[m].task == t {
                    routed_right += 1;
                    moe += usize::from(preds[m][t][i] == label);
                }
            }
            total += test.len();
            let len = test.len() as f64;
            per_task.push([hard as f64 / len, moe as f64 / len, average as f64 / len]);
        }
        let mean = |i: usize| per_task.iter().map(|p| p[i]).sum::<f64>() / t_count as f64;
        Ok(InferenceReport {
            hard: mean(0),
            moe: mean(1),
            average: mean(2),
            routing_accuracy: routed_right as f64 / total as f64,
            per_task,
        })
    }

    /// A snapshot to resume from.
    #[must_use]
    pub fn checkpoint(&self) -> DflCheckpoint {
        DflCheckpoint {
            config: self.cfg.clone(),
            round: self.round,
            records: self.records.clone(),
            factors: self
                .states
                .iter()
                .map(|s| {
                    s.factors
                        .iter()
                        .map(|f| {
                            (
                                f.name.clone(),
                                StoredMatrix::from_array(&f.b),
                                StoredMatrix::from_array(&f.a),
                            )
                        })
                        .collect()
                })
                .collect(),
            heads: self
                .states
                .iter()
                .map(|s| {
                    (
                        StoredMatrix::from_array(&s.head.weight),
                        s.head.bias.clone(),
                    )
                })
                .collect(),
        }
    }

    /// Continues from `ck` (taken from a run of the same configuration).
    ///
    /// # Errors
    /// [`DflError::Config`] naming `checkpoint` when its configuration,
    /// device count or shapes differ from this run's.
    pub fn restore(&mut self, ck: DflCheckpoint) -> Result<(), DflError> {
        if ck.config != self.cfg {
            return Err(DflError::config(
                "checkpoint",
                "it was written by a run with another configuration",
            ));
        }
        if ck.factors.len() != self.states.len()
            || ck.heads.len() != self.states.len()
            || ck.records.len() != ck.round
            || ck.round > self.cfg.rounds
        {
            return Err(DflError::config(
                "checkpoint",
                "its device count, records or round do not fit this run",
            ));
        }
        let mut states = self.states.clone();
        for (k, st) in states.iter_mut().enumerate() {
            if ck.factors[k].len() != st.factors.len() {
                return Err(DflError::config(
                    "checkpoint",
                    format!(
                        "device {k} has {} layers, expected {}",
                        ck.factors[k].len(),
                        st.factors.len()
                    ),
                ));
            }
            for (f, (name, b, a)) in st.factors.iter_mut().zip(&ck.factors[k]) {
                let (b, a) = (
                    b.to_array("checkpoint.factors")?,
                    a.to_array("checkpoint.factors")?,
                );
                if *name != f.name || b.dim() != f.b.dim() || a.dim() != f.a.dim() {
                    return Err(DflError::config(
                        "checkpoint",
                        format!("device {k}: layer {name} does not match {}", f.name),
                    ));
                }
                f.b = b;
                f.a = a;
            }
            let w = ck.heads[k].0.to_array("checkpoint.heads")?;
            if w.dim() != st.head.weight.dim() || ck.heads[k].1.len() != st.head.bias.len() {
                return Err(DflError::config(
                    "checkpoint",
                    format!("device {k}'s head has another shape"),
                ));
            }
            st.head = HeadParams {
                weight: w,
                bias: ck.heads[k].1.clone(),
            };
        }
        self.states = states;
        self.records = ck.records;
        self.round = ck.round;
        Ok(())
    }

    /// Runs to the end with a checkpoint file `dir/checkpoint.json` written
    /// after every evaluation (atomically: temporary file, then rename);
    /// with `resume`, continues from it when present.
    ///
    /// # Errors
    /// As [`Self::step`], and I/O or checkpoint errors naming the file.
    pub fn run_resumable(
        &mut self,
        dir: &Path,
        resume: bool,
        mut progress: impl FnMut(&DflRecord),
    ) -> Result<(), DflError> {
        let path = dir.join("checkpoint.json");
        let io = |e: std::io::Error| DflError::config(&path.display().to_string(), e.to_string());
        if resume && path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let ck: DflCheckpoint = serde_json::from_str(&text).map_err(|e| {
                DflError::config(
                    &path.display().to_string(),
                    format!("corrupt or truncated checkpoint: {e}"),
                )
            })?;
            self.restore(ck)?;
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        while !self.finished() {
            let r = self.step()?;
            progress(&r);
            if r.accuracy.is_some() {
                let tmp = dir.join("checkpoint.json.tmp");
                let text = serde_json::to_string(&self.checkpoint())
                    .map_err(|e| DflError::config("checkpoint", e.to_string()))?;
                std::fs::write(&tmp, text).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
            }
        }
        Ok(())
    }
}

/// Link quality in `[0, 1]`: the pair's mean-channel SNR in dB, min–max
/// scaled over the pairs (1 for the best pair; all 1 when every pair is
/// equal).
fn link_quality(network: &Network, n: usize) -> Array2<f64> {
    let mut snr = Array2::from_elem((n, n), f64::NAN);
    for i in 0..n {
        for j in 0..n {
            if let Some(l) = network.d2d_mean_link(i, j) {
                snr[[i, j]] = 10.0 * l.snr_full_band().max(1e-300).log10();
            }
        }
    }
    let vals: Vec<f64> = snr.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    snr.mapv(|v| {
        if !v.is_finite() {
            1.0
        } else if hi > lo {
            (v - lo) / (hi - lo)
        } else {
            1.0
        }
    })
}
