//! Local training (the client's `E` steps) and evaluation.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, TensorId, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use crate::config::FineTuneMode;
use crate::error::{LoraError, Result};
use crate::model::{AdapterFactors, HeadParams, VitModel};
use crate::regularizer::RegulariserKind;

/// A borrowed set of inputs with labels: images (`N·C·H·W` `f32` values in
/// NCHW order) for a ViT or token ids (`N·L` `u32` values) for a text
/// encoder, and `N` class indices.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    inputs: Inputs<'a>,
    labels: &'a [u32],
    shape: [usize; 4],
}

#[derive(Clone, Copy, Debug)]
enum Inputs<'a> {
    Images(&'a [f32]),
    Tokens(&'a [u32]),
}

impl<'a> Batch<'a> {
    /// Checks that the slices match `shape = [N, C, H, W]`.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] naming `images` or `labels`.
    pub fn new(images: &'a [f32], labels: &'a [u32], shape: [usize; 4]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if images.len() != n {
            return Err(LoraError::InvalidInput {
                what: "images",
                reason: format!(
                    "{} values do not fill shape {shape:?} ({n} values)",
                    images.len()
                ),
            });
        }
        if labels.len() != shape[0] {
            return Err(LoraError::InvalidInput {
                what: "labels",
                reason: format!("{} labels for {} images", labels.len(), shape[0]),
            });
        }
        Ok(Self {
            inputs: Inputs::Images(images),
            labels,
            shape,
        })
    }

    /// A batch of `n` token sequences of `seq_len` ids each (row-major);
    /// its [`Batch::shape`] is `[n, 1, 1, seq_len]`.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] naming `token ids` or `labels`.
    pub fn tokens(ids: &'a [u32], labels: &'a [u32], seq_len: usize) -> Result<Self> {
        let n = labels.len();
        if seq_len == 0 || ids.len() != n * seq_len {
            return Err(LoraError::InvalidInput {
                what: "token ids",
                reason: format!(
                    "{} ids are not {n} sequences (one per label) of {seq_len} tokens",
                    ids.len()
                ),
            });
        }
        Ok(Self {
            inputs: Inputs::Tokens(ids),
            labels,
            shape: [n, 1, 1, seq_len],
        })
    }

    /// Number of inputs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether there are no inputs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// `[N, C, H, W]` for images, `[N, 1, 1, L]` for token ids.
    #[must_use]
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The image values (`None` for token ids).
    #[must_use]
    pub fn images(&self) -> Option<&'a [f32]> {
        match self.inputs {
            Inputs::Images(x) => Some(x),
            Inputs::Tokens(_) => None,
        }
    }

    /// The token ids (`None` for images).
    #[must_use]
    pub fn token_ids(&self) -> Option<&'a [u32]> {
        match self.inputs {
            Inputs::Tokens(x) => Some(x),
            Inputs::Images(_) => None,
        }
    }

    /// The labels.
    #[must_use]
    pub fn labels(&self) -> &'a [u32] {
        self.labels
    }

    /// Inputs `start .. start + len` (clamped to the end).
    #[must_use]
    pub fn slice(&self, start: usize, len: usize) -> Batch<'a> {
        let start = start.min(self.len());
        let end = (start + len).min(self.len());
        let per: usize = self.shape[1..].iter().product();
        Batch {
            inputs: match self.inputs {
                Inputs::Images(x) => Inputs::Images(&x[start * per..end * per]),
                Inputs::Tokens(x) => Inputs::Tokens(&x[start * per..end * per]),
            },
            labels: &self.labels[start..end],
            shape: [end - start, self.shape[1], self.shape[2], self.shape[3]],
        }
    }

    /// The input tensor on `device`: `(N, C, H, W)` `f32` images or `(N, L)`
    /// `u32` ids.
    pub(crate) fn input_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(match self.inputs {
            Inputs::Images(x) => Tensor::from_slice(x, self.shape.to_vec(), device)?,
            Inputs::Tokens(x) => Tensor::from_slice(x, (self.shape[0], self.shape[3]), device)?,
        })
    }

    /// Image and label tensors on `device`, checking labels against
    /// `num_classes`.
    pub(crate) fn tensors(&self, num_classes: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        if let Some(&bad) = self.labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(LoraError::InvalidInput {
                what: "labels",
                reason: format!("label {bad} is not below num_classes {num_classes}"),
            });
        }
        let x = self.input_tensor(device)?;
        let y = Tensor::from_slice(self.labels, self.labels.len(), device)?;
        Ok((x, y))
    }
}

/// AdamW hyper-parameters (decoupled weight decay, as in candle-nn and PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// `lr = 1e-3`, betas `(0.9, 0.999)`, `eps = 1e-8`, no weight decay (the
    /// usual choice for LoRA factors).
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The local optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerKind {
    /// AdamW.
    AdamW(AdamWParams),
    /// Plain SGD without momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
    },
}

impl OptimizerKind {
    /// The learning rate.
    #[must_use]
    pub fn lr(&self) -> f64 {
        match self {
            Self::AdamW(p) => p.lr,
            Self::Sgd { lr } => *lr,
        }
    }
}

/// Options of [`LocalTrainer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Optimizer and its hyper-parameters.
    pub optimizer: OptimizerKind,
    /// Weight `ζ` of the orthogonality regulariser (0 for the baselines).
    pub zeta: f64,
    /// Which regulariser form.
    pub regulariser: RegulariserKind,
    /// Keep the optimizer state (AdamW moments, step count) between calls of
    /// [`LocalTrainer::train`]. Off by default: each round starts a fresh
    /// optimizer, since the factors it would continue from were replaced by
    /// the server's aggregate.
    pub keep_optimizer_state: bool,
    /// Data parallelism inside one step: each mini-batch is split into this
    /// many contiguous shards (sizes differing by at most one), whose
    /// forward and backward passes run on their own threads; the gradients
    /// are summed in shard order, each shard's loss weighted by its share
    /// of the batch, so the step follows the gradient of the batch's mean
    /// loss. `1` (the default) runs the step on the calling thread. The
    /// numbers depend on the shard count (the order of the float sums),
    /// never on thread timing. Meant for one model on several cores with
    /// candle's own pool off (`RAYON_NUM_THREADS=1`); the federated engines
    /// already train their clients on separate threads and keep `1`.
    #[serde(default = "one_shard", skip_serializing_if = "is_one_shard")]
    pub shards: usize,
}

fn one_shard() -> usize {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` signature
fn is_one_shard(n: &usize) -> bool {
    *n == 1
}

impl Default for TrainOptions {
    /// AdamW with [`AdamWParams::default`], `ζ = 0`, plain regulariser,
    /// state reset each round, one shard.
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::AdamW(AdamWParams::default()),
            zeta: 0.0,
            regulariser: RegulariserKind::Plain,
            keep_optimizer_state: false,
            shards: 1,
        }
    }
}

impl TrainOptions {
    /// Checks learning rate, betas, `ζ` and the shard count.
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(LoraError::InvalidConfig {
                field: "optimizer.lr",
                reason: format!("{lr} must be finite and > 0"),
            });
        }
        if let OptimizerKind::AdamW(p) = &self.optimizer {
            for (field, v) in [("optimizer.beta1", p.beta1), ("optimizer.beta2", p.beta2)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(LoraError::InvalidConfig {
                        field,
                        reason: format!("{v} must lie in [0, 1)"),
                    });
                }
            }
            if !(p.eps.is_finite() && p.eps > 0.0) {
                return Err(LoraError::InvalidConfig {
                    field: "optimizer.eps",
                    reason: format!("{} must be finite and > 0", p.eps),
                });
            }
            if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
                return Err(LoraError::InvalidConfig {
                    field: "optimizer.weight_decay",
                    reason: format!("{} must be finite and ≥ 0", p.weight_decay),
                });
            }
        }
        if !(self.zeta.is_finite() && self.zeta >= 0.0) {
            return Err(LoraError::InvalidConfig {
                field: "zeta",
                reason: format!("{} must be finite and ≥ 0", self.zeta),
            });
        }
        if self.shards == 0 {
            return Err(LoraError::InvalidConfig {
                field: "shards",
                reason: "0 shards: at least 1 is needed".into(),
            });
        }
        Ok(())
    }
}

/// What a client sends back after local training.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalUpdate {
    /// The new LoRA factors (empty outside LoRA mode).
    pub factors: Vec<AdapterFactors>,
    /// The new head.
    pub head: HeadParams,
    /// Mean training objective (task loss + `ζ`·regulariser) over the steps,
    /// each measured before its update.
    pub mean_loss: f64,
    /// Mean cross-entropy alone.
    pub mean_task_loss: f64,
    /// Steps taken (= batches supplied).
    pub steps: usize,
}

#[derive(Debug)]
enum Opt {
    AdamW(candle_nn::AdamW),
    Sgd(candle_nn::SGD),
}

impl Opt {
    fn new(kind: &OptimizerKind, vars: Vec<candle_core::Var>) -> Result<Self> {
        Ok(match kind {
            OptimizerKind::AdamW(p) => Self::AdamW(candle_nn::AdamW::new(
                vars,
                candle_nn::ParamsAdamW {
                    lr: p.lr,
                    beta1: p.beta1,
                    beta2: p.beta2,
                    eps: p.eps,
                    weight_decay: p.weight_decay,
                },
            )?),
            OptimizerKind::Sgd { lr } => Self::Sgd(candle_nn::SGD::new(vars, *lr)?),
        })
    }

    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        match self {
            Self::AdamW(o) => o.backward_step(loss)?,
            Self::Sgd(o) => o.backward_step(loss)?,
        }
        Ok(())
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Self::AdamW(o) => o.step(grads)?,
            Self::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            Self::AdamW(o) => o.set_learning_rate(lr),
            Self::Sgd(o) => o.set_learning_rate(lr),
        }
    }
}

/// The training objective of one batch: cross-entropy plus `ζ`·regulariser.
/// Returns `(objective, task loss)`.
pub(crate) fn objective(
    model: &VitModel,
    batch: &Batch<'_>,
    zeta: f64,
    kind: RegulariserKind,
) -> Result<(Tensor, Tensor)> {
    weighted_objective(model, batch, 1.0, zeta, kind)
}

/// [`objective`] with the cross-entropy scaled by `weight` (a shard's share
/// of its batch); the regulariser keeps its weight `ζ`.
fn weighted_objective(
    model: &VitModel,
    batch: &Batch<'_>,
    weight: f64,
    zeta: f64,
    kind: RegulariserKind,
) -> Result<(Tensor, Tensor)> {
    let (x, y) = batch.tensors(model.num_classes(), &model.device())?;
    let logits = model.forward(&x)?;
    let task = candle_nn::loss::cross_entropy(&logits, &y)?;
    let task = if weight == 1.0 {
        task
    } else {
        task.affine(weight, 0.0)?
    };
    let total = if zeta > 0.0 && matches!(model.mode(), FineTuneMode::Lora(_)) {
        (&task + model.regulariser(kind)?.affine(zeta, 0.0)?)?
    } else {
        task.clone()
    };
    Ok((total, task))
}

/// Runs local steps on a client model; optionally keeps optimizer state.
#[derive(Debug)]
pub struct LocalTrainer {
    options: TrainOptions,
    state: Option<(Vec<TensorId>, Opt)>,
}

impl LocalTrainer {
    /// A trainer with validated options.
    ///
    /// # Errors
    /// See [`TrainOptions::validate`].
    pub fn new(options: TrainOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self {
            options,
            state: None,
        })
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// Changes the learning rate used from the next call on (kept optimizer
    /// state is preserved).
    ///
    /// # Errors
    /// [`LoraError::InvalidConfig`] unless `lr` is finite and > 0.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(LoraError::InvalidConfig {
                field: "optimizer.lr",
                reason: format!("{lr} must be finite and > 0"),
            });
        }
        match &mut self.options.optimizer {
            OptimizerKind::AdamW(p) => p.lr = lr,
            OptimizerKind::Sgd { lr: l } => *l = lr,
        }
        Ok(())
    }

    /// One optimizer step per batch, in order (the caller draws the `E`
    /// mini-batches), then reads back the factors and head.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] for no batches, bad labels or shapes;
    /// [`LoraError::ForeignOptimizerState`] if kept state belongs to another model.
    pub fn train(&mut self, model: &mut VitModel, batches: &[Batch<'_>]) -> Result<LocalUpdate> {
        if batches.is_empty() {
            return Err(LoraError::InvalidInput {
                what: "batches",
                reason: "at least one mini-batch is needed".into(),
            });
        }
        if let Some(empty) = batches.iter().position(Batch::is_empty) {
            return Err(LoraError::InvalidInput {
                what: "batches",
                reason: format!("mini-batch {empty} is empty"),
            });
        }
        let vars = model.trainable_vars();
        let ids: Vec<TensorId> = vars.iter().map(|v| v.as_tensor().id()).collect();
        let mut opt = match self.state.take() {
            Some((kept, opt)) if self.options.keep_optimizer_state => {
                if kept != ids {
                    return Err(LoraError::ForeignOptimizerState);
                }
                opt
            }
            _ => Opt::new(&self.options.optimizer, vars.clone())?,
        };
        opt.set_lr(self.options.optimizer.lr());
        // The losses are read back after the last step, so that on a GPU no
        // step waits for the device to finish the one before.
        let mut losses = Vec::with_capacity(batches.len());
        let shards = self.options.shards;
        for batch in batches {
            if shards > 1 && batch.len() > 1 {
                let (grads, loss, task) = sharded_gradients(
                    model,
                    batch,
                    shards,
                    self.options.zeta,
                    self.options.regulariser,
                    &vars,
                )?;
                opt.step(&grads)?;
                losses.push((loss, task));
            } else {
                let (loss, task) =
                    objective(model, batch, self.options.zeta, self.options.regulariser)?;
                opt.backward_step(&loss)?;
                losses.push((loss.detach(), task.detach()));
            }
        }
        let (mut sum, mut sum_task) = (0.0, 0.0);
        for (loss, task) in losses {
            sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            sum_task += f64::from(task.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        }
        if self.options.keep_optimizer_state {
            self.state = Some((ids, opt));
        }
        let steps = batches.len();
        Ok(LocalUpdate {
            factors: model.factors()?,
            head: model.head()?,
            mean_loss: sum / steps as f64,
            mean_task_loss: sum_task / steps as f64,
            steps,
        })
    }
}

/// One step's gradients from `shards` contiguous parts of `batch`, each
/// part's forward and backward pass on its own thread (the first on the
/// calling one). Part `s` contributes `(n_s/N)·CE_s` (the first also
/// `ζ`·regulariser, once), so the sum is the batch's objective; the
/// gradients of `vars` are added in part order. Returns the summed
/// gradients with the objective and the task loss (detached).
fn sharded_gradients(
    model: &VitModel,
    batch: &Batch<'_>,
    shards: usize,
    zeta: f64,
    kind: RegulariserKind,
    vars: &[Var],
) -> Result<(GradStore, Tensor, Tensor)> {
    let n = batch.len();
    let shards = shards.min(n);
    let part = |s: usize| -> Result<(GradStore, Tensor, Tensor)> {
        let (start, end) = (s * n / shards, (s + 1) * n / shards);
        let weight = (end - start) as f64 / n as f64;
        let zeta = if s == 0 { zeta } else { 0.0 };
        let (total, task) =
            weighted_objective(model, &batch.slice(start, end - start), weight, zeta, kind)?;
        Ok((total.backward()?, total.detach(), task.detach()))
    };
    let parts: Vec<Result<(GradStore, Tensor, Tensor)>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..shards).map(|s| scope.spawn(move || part(s))).collect();
        let mut parts = vec![part(0)];
        for handle in others {
            parts.push(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        parts
    });
    let mut parts = parts.into_iter();
    let (mut grads, mut total, mut task) = parts.next().ok_or(LoraError::InvalidInput {
        what: "batches",
        reason: "an empty mini-batch has no shards".into(),
    })??;
    for p in parts {
        let (g, t, k) = p?;
        for var in vars {
            let Some(add) = g.get(var) else { continue };
            let sum = match grads.get(var) {
                Some(have) => have.add(add)?,
                None => add.clone(),
            };
            grads.insert(var, sum);
        }
        total = (total + t)?;
        task = (task + k)?;
    }
    Ok((grads, total, task))
}

/// Mean cross-entropy and accuracy over a set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of correct top-1 predictions.
    pub accuracy: f64,
    /// Number of images evaluated.
    pub count: usize,
}

/// Evaluates `model` on `data` in batches of `batch_size` (no parameter changes).
///
/// # Errors
/// [`LoraError::InvalidInput`] for an empty set or a zero batch size, and
/// shape or label errors.
pub fn evaluate(model: &VitModel, data: &Batch<'_>, batch_size: usize) -> Result<EvalResult> {
    EvalResult::from_sums(&evaluate_sums(model, data, batch_size)?)
}

/// One evaluation batch's sums: summed cross-entropy, correct predictions
/// and images. [`evaluate`] is [`EvalResult::from_sums`] over
/// [`evaluate_sums`]; splitting the batches among threads and summing the
/// parts in batch order gives bit-identical results.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalSums {
    /// Cross-entropy summed over the batch's images.
    pub loss_sum: f64,
    /// Correct top-1 predictions.
    pub correct: usize,
    /// Images in the batch.
    pub count: usize,
}

impl EvalResult {
    /// Sums batch results in their order.
    ///
    /// # Errors
    /// [`LoraError::InvalidInput`] if there are no images.
    pub fn from_sums(parts: &[EvalSums]) -> Result<Self> {
        let (mut loss_sum, mut correct, mut n) = (0.0f64, 0usize, 0usize);
        for p in parts {
            loss_sum += p.loss_sum;
            correct += p.correct;
            n += p.count;
        }
        if n == 0 {
            return Err(LoraError::InvalidInput {
                what: "evaluation set",
                reason: "no images".into(),
            });
        }
        Ok(Self {
            loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
            count: n,
        })
    }
}

/// The per-batch sums of [`evaluate`], batches of `batch_size` in order.
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_sums(
    model: &VitModel,
    data: &Batch<'_>,
    batch_size: usize,
) -> Result<Vec<EvalSums>> {
    if data.is_empty() || batch_size == 0 {
        return Err(LoraError::InvalidInput {
            what: "evaluation set",
            reason: format!("{} images, batch size {batch_size}", data.len()),
        });
    }
    let mut out = Vec::with_capacity(data.len().div_ceil(batch_size));
    let mut start = 0;
    while start < data.len() {
        let part = data.slice(start, batch_size);
        let (x, y) = part.tensors(model.num_classes(), &model.device())?;
        let logits = model.forward(&x)?.detach();
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        let pred = logits.argmax_keepdim(1)?.flatten_all()?.to_vec1::<u32>()?;
        let correct = pred
            .iter()
            .zip(part.labels())
            .filter(|(p, l)| p == l)
            .count();
        out.push(EvalSums {
            loss_sum: f64::from(loss) * part.len() as f64,
            correct,
            count: part.len(),
        });
        start += part.len();
    }
    Ok(out)
}

/// Top-1 predictions of `model` on `data`, in batches of `batch_size`
/// (labels are not read: they may belong to another task's label space).
///
/// # Errors
/// As [`evaluate`].
pub fn predict(model: &VitModel, data: &Batch<'_>, batch_size: usize) -> Result<Vec<u32>> {
    if data.is_empty() || batch_size == 0 {
        return Err(LoraError::InvalidInput {
            what: "prediction set",
            reason: format!("{} images, batch size {batch_size}", data.len()),
        });
    }
    let mut out = Vec::with_capacity(data.len());
    let mut start = 0;
    while start < data.len() {
        let part = data.slice(start, batch_size);
        let x = part.input_tensor(&model.device())?;
        let logits = model.forward(&x)?.detach();
        out.extend(logits.argmax_keepdim(1)?.flatten_all()?.to_vec1::<u32>()?);
        start += part.len();
    }
    Ok(out)
}

/// What the head reads (`N × D`, [`VitModel::pooled`]: the class token after
/// the final LayerNorm, or a text encoder's mean token), adapters included,
/// in batches of `batch_size`. Labels of `data` are not read.
///
/// # Errors
/// As [`evaluate`].
pub fn features(
    model: &VitModel,
    data: &Batch<'_>,
    batch_size: usize,
) -> Result<ndarray::Array2<f32>> {
    if data.is_empty() || batch_size == 0 {
        return Err(LoraError::InvalidInput {
            what: "feature set",
            reason: format!("{} images, batch size {batch_size}", data.len()),
        });
    }
    let d = model.config().width;
    let mut flat = Vec::with_capacity(data.len() * d);
    let mut start = 0;
    while start < data.len() {
        let part = data.slice(start, batch_size);
        let x = part.input_tensor(&model.device())?;
        let f = model.pooled(&x)?.detach();
        flat.extend(f.flatten_all()?.to_vec1::<f32>()?);
        start += part.len();
    }
    ndarray::Array2::from_shape_vec((data.len(), d), flat).map_err(|e| LoraError::InvalidInput {
        what: "features",
        reason: e.to_string(),
    })
}
