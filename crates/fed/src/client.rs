//! The client role: one device's data shard, its error-feedback residuals
//! and local training, driven by the server's messages
//! ([`crate::protocol`]).
//!
//! A client answers [`ServerMessage::Train`] by training `E` local steps
//! from the state it was sent (with SOFT's orthogonality regulariser when
//! the configuration has one) and reporting its sample count, training loss
//! and, when asked, the importances of its update; it answers
//! [`ServerMessage::Compress`] by compressing that update with the kept
//! components it was assigned, keeping what it did not send in its residual
//! (error feedback), or by keeping all of it when told to sit out. Nothing
//! of its state leaves it but what the messages carry.

use crate::checkpoint::Checkpoint;
use crate::config::RunConfig;
use crate::protocol::{
    ClientMessage, ClientUpdate, CompressInstruction, ServerMessage, TrainInstruction, TrainReport,
};
use crate::seed::{Stream, derive};
use crate::state::{
    ModelState, NonFinite, mat, put_state, read_mat, read_state, take_mat, take_state,
};
use crate::task::Task;
use crate::{FedError, eval};
use ndarray::Array2;
use std::path::Path;
use std::sync::Arc;
use wflora_data::{BatchSampler, Partition};
use wflora_lora::{Batch, LocalTrainer, LocalUpdate, TrainOptions, VitModel};
use wflora_soft::{Factors, FactorsView, Residual, importances};

/// The clients' data shards of a run: the configured partition of the
/// task's training split, drawn from the run seed, so that the server, an
/// in-process driver and a client on another machine all find the same
/// shard for client `k`.
///
/// # Errors
/// A partition that cannot be drawn; a client without samples (named, with
/// the fields to change).
pub fn client_shards(cfg: &RunConfig, task: &Task) -> Result<Partition, FedError> {
    let f = &cfg.federation;
    let partition = f.partition.partition(
        task.train.labels(),
        task.num_classes,
        f.clients,
        derive(cfg.seed, Stream::Partition, 1, 0),
    )?;
    if let Some(k) = partition.sizes().iter().position(|&n| n == 0) {
        return Err(FedError::config(
            "federation.partition",
            format!("client {k} received no samples; raise min_size or lower federation.clients"),
        ));
    }
    Ok(partition)
}

/// What a client trained this round, kept until it is told to compress.
#[derive(Debug, Clone)]
struct Trained {
    round: usize,
    /// The state it started from (the broadcast global state).
    start: ModelState,
    update: LocalUpdate,
    /// `(ΔB, ΔA)` per adapted matrix against `start`.
    deltas: Vec<(Array2<f32>, Array2<f32>)>,
}

/// One client of a run.
#[derive(Debug, Clone)]
pub struct Client {
    id: usize,
    cfg: RunConfig,
    task: Arc<Task>,
    shard: Vec<usize>,
    /// Error-feedback residual per adapted matrix (empty until the first
    /// round tells the client how many there are).
    residuals: Vec<Residual>,
    /// The client's own model (local-only runs).
    local: Option<ModelState>,
    trained: Option<Trained>,
    /// The adapted matrices' names, in the model's order.
    names: Vec<String>,
    /// The model's shapes.
    layout: Layout,
}

/// An adapted matrix: its name and the dims of `B` and `A`.
type MatrixShape = (String, (usize, usize), (usize, usize));

/// The shapes of a client's model: `(name, B dims, A dims)` per adapted
/// matrix, and the head's `(weight dims, bias length)`.
#[derive(Debug, Clone)]
struct Layout {
    factors: Vec<MatrixShape>,
    head: ((usize, usize), usize),
}

impl Client {
    /// Client `id` of the run `cfg` (validated) with its data `shard`
    /// (indices into the task's training split).
    ///
    /// # Errors
    /// [`FedError::Config`] for an empty shard or an index outside the
    /// training split.
    pub fn new(
        id: usize,
        cfg: &RunConfig,
        task: Arc<Task>,
        shard: Vec<usize>,
    ) -> Result<Self, FedError> {
        if shard.is_empty() {
            return Err(FedError::config(
                "federation.partition",
                format!("client {id} has no samples"),
            ));
        }
        if let Some(&i) = shard.iter().find(|&&i| i >= task.train.len()) {
            return Err(FedError::config(
                "federation.partition",
                format!(
                    "client {id}'s shard holds sample {i}, the training split has {}",
                    task.train.len()
                ),
            ));
        }
        // The shapes every state sent to this client must have.
        let model = VitModel::new(
            task.backbone.clone(),
            cfg.model.fine_tune_mode(),
            task.num_classes,
            0,
        )?;
        let layout = Layout {
            factors: model
                .factors()?
                .into_iter()
                .map(|f| (f.name, f.b.dim(), f.a.dim()))
                .collect(),
            head: {
                let h = model.head()?;
                (h.weight.dim(), h.bias.len())
            },
        };
        Ok(Self {
            id,
            cfg: cfg.clone(),
            task,
            shard,
            residuals: vec![Residual::Zero; layout.factors.len()],
            local: None,
            trained: None,
            names: layout.factors.iter().map(|f| f.0.clone()).collect(),
            layout,
        })
    }

    /// Checks that a state fits this client's model: the same adapted
    /// matrices in the same order, of the same shapes, and the head's.
    fn check_state(&self, s: &ModelState, what: &str) -> Result<(), FedError> {
        let bad = |why: String| Err(protocol(format!("client {}: {what}: {why}", self.id)));
        if s.factors.len() != self.layout.factors.len() {
            return bad(format!(
                "{} adapted matrices, the model has {}",
                s.factors.len(),
                self.layout.factors.len()
            ));
        }
        for (f, (name, bd, ad)) in s.factors.iter().zip(&self.layout.factors) {
            if &f.name != name || f.b.dim() != *bd || f.a.dim() != *ad {
                return bad(format!(
                    "matrix '{}' with B {:?} and A {:?}, expected '{name}' with B {bd:?} and A {ad:?}",
                    f.name,
                    f.b.dim(),
                    f.a.dim()
                ));
            }
        }
        let (wd, bl) = self.layout.head;
        if s.head.weight.dim() != wd || s.head.bias.len() != bl {
            return bad(format!(
                "head {:?} + {}, expected {wd:?} + {bl}",
                s.head.weight.dim(),
                s.head.bias.len()
            ));
        }
        match s.non_finite() {
            None => Ok(()),
            Some(NonFinite::Factor(name)) => bad(format!("matrix '{name}' is not finite")),
            Some(NonFinite::Head) => bad("the head is not finite".into()),
        }
    }

    /// Checks a residual against matrix `j`'s shapes.
    fn check_residual(&self, j: usize, r: &Residual) -> Result<(), FedError> {
        let (name, bd, ad) = &self.layout.factors[j];
        let ok = match r {
            Residual::Zero => true,
            Residual::Factors(f) => f.b.dim() == *bd && f.a.dim() == *ad,
            Residual::Dense(e) => e.dim() == (bd.0, ad.1),
        };
        if ok {
            Ok(())
        } else {
            Err(protocol(format!(
                "client {}: the residual of '{name}' does not fit its shapes",
                self.id
            )))
        }
    }

    /// The client's index.
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    /// Its sample count `|D_k|`.
    #[must_use]
    pub fn samples(&self) -> usize {
        self.shard.len()
    }

    /// Answers one message of the server.
    ///
    /// # Errors
    /// A message for another client or out of order (a compression before
    /// any training, or for another round), a state that does not fit the
    /// model, training that diverges, a sparsifier's error.
    pub fn handle(&mut self, msg: &ServerMessage) -> Result<ClientMessage, FedError> {
        if msg.client() != self.id {
            return Err(protocol(format!(
                "client {} received a message for client {}",
                self.id,
                msg.client()
            )));
        }
        match msg {
            ServerMessage::Train(m) => self.train(m).map(ClientMessage::Trained),
            ServerMessage::Compress(m) => self.compress(m).map(ClientMessage::Update),
        }
    }

    fn train(&mut self, m: &TrainInstruction) -> Result<TrainReport, FedError> {
        let start = match (&m.state, &self.local) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(protocol(format!(
                    "client {}: round {} sent no state and the client has no local state",
                    self.id, m.round
                )));
            }
        };
        self.check_state(&start, &format!("round {}'s state", m.round))?;
        let update = self.local_steps(&start, m.round, m.batch_seed)?;
        let deltas: Vec<_> = start
            .factors
            .iter()
            .zip(&update.factors)
            .map(|(g, u)| (&u.b - &g.b, &u.a - &g.a))
            .collect();
        let importances = if m.report_importances {
            self.importances(&start, &deltas)?
        } else {
            Vec::new()
        };
        let mut report = TrainReport {
            round: m.round,
            client: self.id,
            samples: self.shard.len(),
            train_loss: update.mean_task_loss,
            importances,
            evaluation: None,
        };
        if self.cfg.federation.local_only {
            // No server aggregates a local-only run: the update is the state.
            let state = ModelState {
                factors: update.factors.clone(),
                head: update.head.clone(),
            };
            if m.evaluate {
                report.evaluation = Some(eval::evaluate(&self.cfg, &self.task, &state, m.round)?);
            }
            self.local = Some(state);
        }
        self.trained = Some(Trained {
            round: m.round,
            start,
            update,
            deltas,
        });
        Ok(report)
    }

    /// `E` local steps from `start` on this round's mini-batches.
    fn local_steps(
        &self,
        start: &ModelState,
        round: usize,
        seed: u64,
    ) -> Result<LocalUpdate, FedError> {
        let mut model = eval::model_with(&self.cfg, &self.task, start)?;
        let mut sampler = BatchSampler::new(self.shard.clone(), self.cfg.local.batch_size, seed)?;
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
                round,
                what: format!("client {}'s training loss", self.id),
            });
        }
        Ok(update)
    }

    /// SOFT importances of every matrix on the error-compensated factors (a
    /// dense residual, SLoRA's, has no components: the update alone is ranked).
    fn importances(
        &self,
        start: &ModelState,
        deltas: &[(Array2<f32>, Array2<f32>)],
    ) -> Result<Vec<Vec<f64>>, FedError> {
        start
            .factors
            .iter()
            .zip(deltas)
            .zip(&self.residuals)
            .map(|((g, (db, da)), res)| {
                let res = match res {
                    Residual::Dense(_) => &Residual::Zero,
                    other => other,
                };
                Ok(importances(
                    FactorsView::new(g.b.view(), g.a.view()),
                    FactorsView::new(db.view(), da.view()),
                    res,
                )?)
            })
            .collect()
    }

    fn compress(&mut self, m: &CompressInstruction) -> Result<ClientUpdate, FedError> {
        // Nothing changes until the instruction is known to be good.
        let trained = self
            .trained
            .as_ref()
            .filter(|t| t.round == m.round)
            .ok_or_else(|| {
                protocol(format!(
                    "client {}: told to compress round {} before training it",
                    self.id, m.round
                ))
            })?;
        let mut update = ClientUpdate {
            round: m.round,
            client: self.id,
            messages: Vec::new(),
            head: None,
            payload_bits: 0,
            local_factors: Vec::new(),
        };
        if m.components == 0 {
            // Sits out (deep fade): the whole update stays in the residual.
            if let Some(t) = self.trained.take() {
                self.absorb(&t);
            }
            return Ok(update);
        }
        let layers = trained.start.factors.len();
        if m.sparsifier_seeds.len() != layers {
            return Err(protocol(format!(
                "client {}: {} sparsifier seeds for {layers} adapted matrices",
                self.id,
                m.sparsifier_seeds.len()
            )));
        }
        let head = &trained.update.head;
        let (messages, residuals, bits) = self.compress_all(trained, m)?;
        update.messages = messages;
        update.payload_bits = bits;
        update.head = Some(head.clone());
        // Every matrix compressed: commit.
        self.residuals = residuals;
        let trained = self.trained.take();
        if m.report_factors
            && let Some(t) = trained
        {
            update.local_factors = t.update.factors;
        }
        Ok(update)
    }

    /// Every matrix of `trained` compressed with `m.components` kept: the
    /// messages, the new residuals (not yet committed) and the payload bits
    /// with the head's.
    fn compress_all(
        &self,
        trained: &Trained,
        m: &CompressInstruction,
    ) -> Result<(Vec<wflora_soft::Message>, Vec<Residual>, u64), FedError> {
        let head = &trained.update.head;
        let mut bits = head.len() as u64 * u64::from(self.cfg.wireless.channel.bits_per_value);
        let c = &self.cfg.compression;
        let layers = trained.start.factors.len();
        let (mut messages, mut residuals) =
            (Vec::with_capacity(layers), Vec::with_capacity(layers));
        for (j, (g, (db, da))) in trained
            .start
            .factors
            .iter()
            .zip(&trained.deltas)
            .enumerate()
        {
            let sparsifier = c.method.sparsifier(c.error_feedback, m.sparsifier_seeds[j]);
            let (msg, res) = sparsifier.compress(
                FactorsView::new(g.b.view(), g.a.view()),
                FactorsView::new(db.view(), da.view()),
                &self.residuals[j],
                m.components,
            )?;
            bits += msg.size().total();
            messages.push(msg);
            residuals.push(res);
        }
        Ok((messages, residuals, bits))
    }

    /// Adds the whole update to the residual (error feedback on) or drops it.
    fn absorb(&mut self, t: &Trained) {
        let ef = self.cfg.compression.error_feedback;
        for (j, ((g, u), (db, da))) in t
            .start
            .factors
            .iter()
            .zip(&t.update.factors)
            .zip(&t.deltas)
            .enumerate()
        {
            let next = match std::mem::take(&mut self.residuals[j]) {
                Residual::Zero => Residual::Factors(Factors::new(db.clone(), da.clone())),
                Residual::Factors(f) => Residual::Factors(Factors::new(f.b + db, f.a + da)),
                Residual::Dense(e) => Residual::Dense(e + &(u.b.dot(&u.a) - g.b.dot(&g.a))),
            };
            self.residuals[j] = if ef { next } else { Residual::Zero };
        }
    }

    /// The client's own model (local-only runs, after their first round).
    #[must_use]
    pub fn local_state(&self) -> Option<&ModelState> {
        self.local.as_ref()
    }

    /// Writes the client's state into a checkpoint: its residuals under
    /// `residual.{id}.{matrix}.{B,A,E}` and its local model under
    /// `local.{id}.`; returns the residual kinds (`zero`, `factors`,
    /// `dense`) in matrix order. `names` are the adapted matrices' names.
    pub fn save(&self, ck: &mut Checkpoint, names: &[String]) -> Vec<&'static str> {
        let k = self.id;
        if let Some(s) = &self.local {
            put_state(ck, &format!("local.{k}."), s);
        }
        (0..names.len())
            .map(|j| match self.residuals.get(j).unwrap_or(&Residual::Zero) {
                Residual::Zero => "zero",
                Residual::Factors(f) => {
                    ck.tensors
                        .insert(format!("residual.{k}.{}.B", names[j]), mat(&f.b));
                    ck.tensors
                        .insert(format!("residual.{k}.{}.A", names[j]), mat(&f.a));
                    "factors"
                }
                Residual::Dense(e) => {
                    ck.tensors
                        .insert(format!("residual.{k}.{}.E", names[j]), mat(e));
                    "dense"
                }
            })
            .collect()
    }

    /// Restores what [`Client::save`] wrote. `shape` is the global state
    /// (for the matrices' names and shapes); `kinds` the saved residual
    /// kinds; `local` whether a local model was saved.
    ///
    /// # Errors
    /// [`FedError::Resume`] or [`FedError::Checkpoint`] for a missing or
    /// misshaped tensor or an unknown kind.
    pub fn restore(
        &mut self,
        ck: &mut Checkpoint,
        shape: &ModelState,
        kinds: &[String],
        path: &Path,
    ) -> Result<(), FedError> {
        let k = self.id;
        // A local model is saved once the client has trained.
        self.local = None;
        if self.cfg.federation.local_only
            && ck.tensors.contains_key(&format!("local.{k}.head.weight"))
        {
            let mut s = shape.clone();
            take_state(ck, &format!("local.{k}."), &mut s, path)?;
            self.local = Some(s);
        }
        if kinds.len() != shape.factors.len() {
            return Err(FedError::Resume {
                path: path.to_path_buf(),
                reason: "checkpoint metadata: residual_kinds has the wrong number of layers".into(),
            });
        }
        self.residuals = kinds
            .iter()
            .zip(&shape.factors)
            .map(|(kind, f)| {
                let name = &f.name;
                Ok(match kind.as_str() {
                    "zero" => Residual::Zero,
                    "factors" => Residual::Factors(Factors::new(
                        take_mat(ck, &format!("residual.{k}.{name}.B"), f.b.dim(), path)?,
                        take_mat(ck, &format!("residual.{k}.{name}.A"), f.a.dim(), path)?,
                    )),
                    "dense" => Residual::Dense(take_mat(
                        ck,
                        &format!("residual.{k}.{name}.E"),
                        (f.b.nrows(), f.a.ncols()),
                        path,
                    )?),
                    other => {
                        return Err(FedError::Resume {
                            path: path.to_path_buf(),
                            reason: format!("checkpoint metadata: unknown residual kind '{other}'"),
                        });
                    }
                })
            })
            .collect::<Result<_, FedError>>()?;
        self.trained = None;
        Ok(())
    }

    /// The client's whole state as bytes, for drivers that keep a client
    /// between messages outside its process (a Flower node's state): its
    /// residuals, its local model, and an update trained but not yet
    /// compressed. A `WFLORACK` container (sha256-checked) tied to the
    /// configuration's hash.
    ///
    /// # Errors
    /// Serialising the metadata fails (not expected for finite values).
    pub fn state_bytes(&self) -> Result<Vec<u8>, FedError> {
        let mut ck = Checkpoint {
            config_hash: self.cfg.hash(),
            meta: serde_json::Value::Null,
            tensors: std::collections::BTreeMap::new(),
        };
        let names = &self.names;
        let kinds = self.save(&mut ck, names);
        let trained = self.trained.as_ref().map(|t| {
            put_state(&mut ck, "trained.start.", &t.start);
            let update = ModelState {
                factors: t.update.factors.clone(),
                head: t.update.head.clone(),
            };
            put_state(&mut ck, "trained.update.", &update);
            serde_json::json!({
                "round": t.round,
                "mean_loss_bits": t.update.mean_loss.to_bits(),
                "mean_task_loss_bits": t.update.mean_task_loss.to_bits(),
                "steps": t.update.steps,
            })
        });
        ck.meta = serde_json::json!({
            "client": self.id,
            "names": names,
            "residual_kinds": kinds,
            "trained": trained,
        });
        ck.to_bytes()
            .map_err(|e| protocol(format!("client {} state: {e}", self.id)))
    }

    /// Restores what [`Client::state_bytes`] wrote.
    ///
    /// # Errors
    /// Corrupt bytes, another configuration or client, a missing or
    /// misshaped tensor.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), FedError> {
        let path = std::path::PathBuf::from(format!("<client {} state>", self.id));
        let ck = Checkpoint::from_bytes(bytes, &path)?;
        ck.check_config(&self.cfg.hash(), &path)?;
        let bad = |what: &str| FedError::Resume {
            path: path.clone(),
            reason: format!("client state: {what}"),
        };
        if ck.meta["client"].as_u64() != Some(self.id as u64) {
            return Err(bad("it belongs to another client"));
        }
        let names: Vec<String> =
            serde_json::from_value(ck.meta["names"].clone()).map_err(|_| bad("names"))?;
        let kinds: Vec<String> = serde_json::from_value(ck.meta["residual_kinds"].clone())
            .map_err(|_| bad("residual_kinds"))?;
        let trained = ck.meta["trained"].clone();
        if kinds.len() != names.len() {
            return Err(bad("residual_kinds and names differ in length"));
        }
        // Shapes come from the saved tensors themselves.
        let k = self.id;
        let residuals = kinds
            .iter()
            .zip(&names)
            .map(|(kind, name)| {
                let m = |x: &str| read_mat(&ck, &format!("residual.{k}.{name}.{x}"), &path);
                Ok(match kind.as_str() {
                    "zero" => Residual::Zero,
                    "factors" => Residual::Factors(Factors::new(m("B")?, m("A")?)),
                    "dense" => Residual::Dense(m("E")?),
                    other => return Err(bad(&format!("unknown residual kind '{other}'"))),
                })
            })
            .collect::<Result<Vec<_>, FedError>>()?;
        let local_prefix = format!("local.{k}.");
        let local = if ck
            .tensors
            .contains_key(&format!("{local_prefix}head.weight"))
        {
            Some(read_state(&ck, &local_prefix, &names, &path)?)
        } else {
            None
        };
        let pending = if trained.is_null() {
            None
        } else {
            let bits = |key: &str| trained[key].as_u64().ok_or_else(|| bad(key));
            let start = read_state(&ck, "trained.start.", &names, &path)?;
            let upd = read_state(&ck, "trained.update.", &names, &path)?;
            Some(Trained {
                round: bits("round")? as usize,
                deltas: start
                    .factors
                    .iter()
                    .zip(&upd.factors)
                    .map(|(g, u)| (&u.b - &g.b, &u.a - &g.a))
                    .collect(),
                start,
                update: LocalUpdate {
                    factors: upd.factors,
                    head: upd.head,
                    mean_loss: f64::from_bits(bits("mean_loss_bits")?),
                    mean_task_loss: f64::from_bits(bits("mean_task_loss_bits")?),
                    steps: bits("steps")? as usize,
                },
            })
        };
        if names != self.names {
            return Err(bad("its matrices are not this model's"));
        }
        for (j, r) in residuals.iter().enumerate() {
            self.check_residual(j, r)?;
        }
        if let Some(l) = &local {
            self.check_state(l, "the saved local model")?;
        }
        if let Some(t) = &pending {
            self.check_state(&t.start, "the saved start state")?;
            self.check_state(
                &ModelState {
                    factors: t.update.factors.clone(),
                    head: t.update.head.clone(),
                },
                "the saved update",
            )?;
        }
        self.residuals = residuals;
        self.local = local;
        self.trained = pending;
        Ok(())
    }
}

fn protocol(what: String) -> FedError {
    FedError::Protocol { what }
}
