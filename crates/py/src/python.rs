//! The pyo3 module `wflora._core` (see the crate documentation).

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Arc;
use wflora_fed::{ClientMessage, RunConfig, ServerMessage, client_shards};
use wflora_soft::ndarray::Array2;
use wflora_soft::{Decoded, Dims, Factors, FactorsView, Message, MethodKind, Residual};

pyo3::create_exception!(
    _core,
    WfloraError,
    PyValueError,
    "An error of wflora; the message is the one the wflora CLI prints."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    WfloraError::new_err(e.to_string())
}

fn method_kind(name: &str) -> PyResult<MethodKind> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
        err(format!(
            "unknown method '{name}', expected one of soft, soft_delta, slora, tlora, rlora, ilora"
        ))
    })
}

fn method_name(m: MethodKind) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A view of a 2-D numpy array, copied when it is not contiguous.
fn mat(a: &PyReadonlyArray2<'_, f32>) -> Array2<f32> {
    a.as_array().to_owned()
}

// ---- SOFT and the baselines ------------------------------------------------

/// One client's compressed update of one adapted matrix.
#[pyclass(module = "wflora._core", name = "Message", frozen)]
struct PyMessage(Message);

#[pymethods]
impl PyMessage {
    /// The method that made it (`"soft"`, …).
    #[getter]
    fn method(&self) -> String {
        method_name(self.0.method())
    }

    /// `(d, l, r)`: `B` is `d×r`, `A` is `r×l`.
    #[getter]
    fn dims(&self) -> (usize, usize, usize) {
        let Dims { d, l, r } = self.0.dims();
        (d, l, r)
    }

    /// Exact size in bits: values × 32 + index bits.
    #[getter]
    fn bits(&self) -> u64 {
        self.0.bits()
    }

    /// Transmitted values.
    #[getter]
    fn value_count(&self) -> u64 {
        self.0.value_count()
    }

    /// Bits spent on indices.
    #[getter]
    fn index_bits(&self) -> u64 {
        self.0.index_bits()
    }

    /// The decoded update: `(C(U_B), C(U_A))` for the factor methods, the
    /// dense `d×l` update for SLoRA.
    fn decode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.0.decode().map_err(err)? {
            Decoded::Factors(f) => (f.b.into_pyarray(py), f.a.into_pyarray(py))
                .into_pyobject(py)?
                .into_any(),
            Decoded::Dense(e) => e.into_pyarray(py).into_any(),
        })
    }

    fn __repr__(&self) -> String {
        let (d, l, r) = self.dims();
        format!(
            "Message(method='{}', dims=(d={d}, l={l}, r={r}), bits={})",
            self.method(),
            self.bits()
        )
    }
}

/// A client's error-feedback state for one adapted matrix.
#[pyclass(module = "wflora._core", name = "Residual", frozen)]
struct PyResidual(Residual);

#[pymethods]
impl PyResidual {
    /// No residual (the start, or error feedback off).
    #[staticmethod]
    fn zero() -> Self {
        Self(Residual::Zero)
    }

    /// A residual shaped like the factors (the factor methods).
    #[staticmethod]
    fn factors(b: PyReadonlyArray2<'_, f32>, a: PyReadonlyArray2<'_, f32>) -> Self {
        Self(Residual::Factors(Factors::new(mat(&b), mat(&a))))
    }

    /// A dense `d×l` residual (SLoRA).
    #[staticmethod]
    fn dense(e: PyReadonlyArray2<'_, f32>) -> Self {
        Self(Residual::Dense(mat(&e)))
    }

    /// `"zero"`, `"factors"` or `"dense"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.0 {
            Residual::Zero => "zero",
            Residual::Factors(_) => "factors",
            Residual::Dense(_) => "dense",
        }
    }

    /// The arrays: `()`, `(B, A)` or `(E,)`.
    fn arrays<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match &self.0 {
            Residual::Zero => ().into_pyobject(py)?.into_any(),
            Residual::Factors(f) => (
                PyArray2::from_array(py, &f.b),
                PyArray2::from_array(py, &f.a),
            )
                .into_pyobject(py)?
                .into_any(),
            Residual::Dense(e) => (PyArray2::from_array(py, e),).into_pyobject(py)?.into_any(),
        })
    }

    fn __repr__(&self) -> String {
        format!("Residual(kind='{}')", self.kind())
    }
}

/// Compresses one client's update `(ΔB, ΔA)` of one adapted matrix with
/// broadcast factors `(B, A)`, keeping `m` rank components (or their bit
/// budget); returns the message and the new residual.
#[pyfunction]
#[pyo3(signature = (method, base_b, base_a, delta_b, delta_a, m, residual=None, error_feedback=true, seed=0))]
#[allow(clippy::too_many_arguments)]
fn compress(
    py: Python<'_>,
    method: &str,
    base_b: PyReadonlyArray2<'_, f32>,
    base_a: PyReadonlyArray2<'_, f32>,
    delta_b: PyReadonlyArray2<'_, f32>,
    delta_a: PyReadonlyArray2<'_, f32>,
    m: usize,
    residual: Option<PyRef<'_, PyResidual>>,
    error_feedback: bool,
    seed: u64,
) -> PyResult<(PyMessage, PyResidual)> {
    let kind = method_kind(method)?;
    let (b, a, db, da) = (mat(&base_b), mat(&base_a), mat(&delta_b), mat(&delta_a));
    let res = residual.map_or(Residual::Zero, |r| r.0.clone());
    let out = py.detach(|| {
        kind.sparsifier(error_feedback, seed).compress(
            FactorsView::new(b.view(), a.view()),
            FactorsView::new(db.view(), da.view()),
            &res,
            m,
        )
    });
    let (msg, res) = out.map_err(err)?;
    Ok((PyMessage(msg), PyResidual(res)))
}

/// A pair of `float32` matrices `(B, A)`.
type Pair<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>);

/// The server's step: moves the factors `(B, A)` by the weighted decoded
/// messages (factor-wise; SLoRA: dense sum and rank-`r` refactoring).
#[pyfunction]
fn aggregate<'py>(
    py: Python<'py>,
    base_b: PyReadonlyArray2<'_, f32>,
    base_a: PyReadonlyArray2<'_, f32>,
    messages: Vec<(f64, PyRef<'_, PyMessage>)>,
) -> PyResult<Pair<'py>> {
    let (b, a) = (mat(&base_b), mat(&base_a));
    let msgs: Vec<(f64, &Message)> = messages.iter().map(|(w, m)| (*w, &m.0)).collect();
    let new = wflora_soft::aggregate(FactorsView::new(b.view(), a.view()), &msgs).map_err(err)?;
    Ok((new.b.into_pyarray(py), new.a.into_pyarray(py)))
}

/// The `r` SOFT importances `‖b̃_i‖·‖ã_i‖` on the error-compensated factors.
#[pyfunction]
#[pyo3(signature = (base_b, base_a, delta_b, delta_a, residual=None))]
fn importances<'py>(
    py: Python<'py>,
    base_b: PyReadonlyArray2<'_, f32>,
    base_a: PyReadonlyArray2<'_, f32>,
    delta_b: PyReadonlyArray2<'_, f32>,
    delta_a: PyReadonlyArray2<'_, f32>,
    residual: Option<PyRef<'_, PyResidual>>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (b, a, db, da) = (mat(&base_b), mat(&base_a), mat(&delta_b), mat(&delta_a));
    let res = residual.map_or(Residual::Zero, |r| r.0.clone());
    let s = wflora_soft::importances(
        FactorsView::new(b.view(), a.view()),
        FactorsView::new(db.view(), da.view()),
        &res,
    )
    .map_err(err)?;
    Ok(s.into_pyarray(py))
}

/// The kept components of ratio `rho` at rank `r`: the smallest `m` with
/// `m/r ≥ rho`.
#[pyfunction]
fn components_for_ratio(rho: f64, r: usize) -> PyResult<usize> {
    wflora_soft::components_for_ratio(rho, r).map_err(err)
}

/// The bit budget of one adapted matrix with `m` kept components:
/// `(values, index_bits)`.
#[pyfunction]
fn budget(d: usize, l: usize, r: usize, m: usize) -> PyResult<(u64, u64)> {
    let b = wflora_soft::budget(Dims { d, l, r }, m).map_err(err)?;
    Ok((b.values, b.index_bits))
}

// ---- the uplink ----------------------------------------------------------

/// One client's FDMA uplink.
#[pyclass(module = "wflora._core", name = "Uplink", frozen)]
struct PyUplink(wflora_channel::Uplink);

#[pymethods]
impl PyUplink {
    #[new]
    fn new(
        tx_power_w: f64,
        channel_gain: f64,
        bandwidth_hz: f64,
        noise_psd_w_per_hz: f64,
    ) -> PyResult<Self> {
        wflora_channel::Uplink::new(tx_power_w, channel_gain, bandwidth_hz, noise_psd_w_per_hz)
            .map(Self)
            .map_err(err)
    }

    /// `R(β) = β·W·log2(1 + P·g/(β·W·N0))` in bit/s.
    fn rate_bps(&self, share: f64) -> f64 {
        self.0.rate_bps(share)
    }

    /// The rate with unlimited bandwidth, `P·g/(N0·ln 2)`.
    fn rate_cap_bps(&self) -> f64 {
        self.0.rate_cap_bps()
    }

    /// Seconds to send `bits` with share `share`.
    fn airtime_s(&self, bits: f64, share: f64) -> f64 {
        self.0.airtime_s(bits, share)
    }

    /// The least share that sends `bits` within `seconds` (`None`: not even
    /// the whole band does).
    fn min_share(&self, bits: f64, seconds: f64) -> Option<f64> {
        self.0.min_share(bits, seconds)
    }

    #[getter]
    fn tx_power_w(&self) -> f64 {
        self.0.tx_power_w
    }

    #[getter]
    fn channel_gain(&self) -> f64 {
        self.0.channel_gain
    }

    #[getter]
    fn bandwidth_hz(&self) -> f64 {
        self.0.bandwidth_hz
    }

    #[getter]
    fn noise_psd_w_per_hz(&self) -> f64 {
        self.0.noise_psd_w_per_hz
    }

    fn __repr__(&self) -> String {
        format!(
            "Uplink(tx_power_w={}, channel_gain={:e}, bandwidth_hz={}, noise_psd_w_per_hz={:e})",
            self.0.tx_power_w, self.0.channel_gain, self.0.bandwidth_hz, self.0.noise_psd_w_per_hz
        )
    }
}

/// A cell of clients with seeded placement and per-round fading.
#[pyclass(module = "wflora._core", name = "Network", frozen)]
struct PyNetwork(wflora_channel::Network);

#[pymethods]
impl PyNetwork {
    /// `clients` sites drawn from `seed`; `config_json` is a
    /// `ChannelConfig` as JSON (default: the project's cell).
    #[new]
    #[pyo3(signature = (clients, seed, config_json=None))]
    fn new(clients: usize, seed: u64, config_json: Option<&str>) -> PyResult<Self> {
        let config = match config_json {
            Some(text) => {
                serde_json::from_str(text).map_err(|e| err(format!("channel config: {e}")))?
            }
            None => wflora_channel::ChannelConfig::default(),
        };
        wflora_channel::Network::new(config, clients, seed)
            .map(Self)
            .map_err(err)
    }

    /// Client `k`'s uplink in round `round` (its fading draw).
    fn uplink(&self, k: usize, round: u64) -> PyResult<PyUplink> {
        self.0
            .uplink(k, round)
            .map(PyUplink)
            .ok_or_else(|| err(format!("no client {k}")))
    }

    /// Client `k`'s uplink at its mean channel (`|h|² = 1`).
    fn mean_uplink(&self, k: usize) -> PyResult<PyUplink> {
        self.0
            .mean_uplink(k)
            .map(PyUplink)
            .ok_or_else(|| err(format!("no client {k}")))
    }

    /// Every client's CPU clock in Hz.
    #[getter]
    fn cpu_freq_hz(&self) -> Vec<f64> {
        self.0.sites().iter().map(|s| s.cpu_freq_hz).collect()
    }

    /// Every client's distance to the base station in metres.
    #[getter]
    fn distance_m(&self) -> Vec<f64> {
        self.0.sites().iter().map(|s| s.distance_m).collect()
    }
}

/// Shares that give every client the same finish time
/// `T_cmp,k + S_k/R_k(β_k)`: `(shares, finish_time_s)`.
#[pyfunction]
fn equalising_split(
    links: Vec<PyRef<'_, PyUplink>>,
    compute_latency_s: Vec<f64>,
    bits: Vec<f64>,
) -> PyResult<(Vec<f64>, f64)> {
    let links: Vec<_> = links.iter().map(|l| l.0).collect();
    let s = wflora_channel::equalising_split(&links, &compute_latency_s, &bits).map_err(err)?;
    Ok((s.shares, s.finish_time_s))
}

// ---- the allocator and the bound -------------------------------------------

/// One round of the allocator on an instance in the JSON format of
/// `docs/alloc-instance.md`; returns the solution as JSON.
#[pyfunction]
fn solve_instance_json(py: Python<'_>, text: &str) -> PyResult<String> {
    let sol = py
        .detach(|| wflora_alloc::solve_instance_json(text))
        .map_err(err)?;
    serde_json::to_string(&sol).map_err(err)
}

/// TSFA's offline rank choice: the bound built from a reference update
/// spectrum and pilot covariance measurements, minimised over `candidates`
/// under the budget `budget_s` with `latency(rank, ratio)` (seconds) as the
/// expected round latency; `params_json` overrides the bound's constants
/// (`BoundParams` as JSON). Returns the selection with its table as JSON.
#[pyfunction]
#[pyo3(signature = (spectrum, pilot_ranks, pilot_covariances, candidates, budget_s, latency, params_json=None))]
fn select_rank(
    spectrum: Vec<f64>,
    pilot_ranks: Vec<usize>,
    pilot_covariances: Vec<f64>,
    candidates: Vec<usize>,
    budget_s: f64,
    latency: Bound<'_, PyAny>,
    params_json: Option<&str>,
) -> PyResult<String> {
    use wflora_bounds::{BoundModel, EnergyProfile, OfflineStage, fit_covariance};
    let params = match params_json {
        Some(t) => serde_json::from_str(t).map_err(|e| err(format!("bound params: {e}")))?,
        None => wflora_bounds::BoundParams::default(),
    };
    let gamma = EnergyProfile::from_singular_values(&spectrum).map_err(err)?;
    let fit = fit_covariance(&pilot_ranks, &pilot_covariances).map_err(err)?;
    let model = BoundModel::new(params, gamma, fit.model).map_err(err)?;
    let stage = OfflineStage {
        budget_s,
        ratio_grid: wflora_bounds::RatioGrid::Components,
    };
    let failure: std::cell::RefCell<Option<PyErr>> = std::cell::RefCell::new(None);
    let t = |r: usize, rho: f64| -> f64 {
        match latency.call1((r, rho)).and_then(|v| v.extract::<f64>()) {
            Ok(v) => v,
            Err(e) => {
                failure.borrow_mut().get_or_insert(e);
                f64::INFINITY
            }
        }
    };
    let sel = wflora_bounds::select_rank(&model, &stage, &candidates, &t);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    serde_json::to_string(&sel.map_err(err)?).map_err(err)
}

// ---- the protocol's roles -------------------------------------------------

/// A run's configuration and its built task (the backbone, pre-trained or
/// loaded from its cache, and the data), shared by the roles made from it.
#[pyclass(module = "wflora._core", name = "Task", frozen)]
struct PyTask {
    cfg: RunConfig,
    task: Arc<wflora_fed::Task>,
    shards: Vec<Vec<usize>>,
}

#[pymethods]
impl PyTask {
    /// Reads a wflora TOML configuration (the keys it changes over its
    /// base, as `wflora run FILE` does; `file` names it in errors and
    /// resolves its `base`), with `overrides` as `--set KEY=VALUE` gives
    /// them, and builds its task (pre-training the backbone on first use).
    #[staticmethod]
    #[pyo3(signature = (text, file="<config>", overrides=Vec::new()))]
    fn from_toml(py: Python<'_>, text: &str, file: &str, overrides: Vec<String>) -> PyResult<Self> {
        let overrides = overrides
            .iter()
            .map(|s| {
                s.parse::<wflora_fed::config::layers::Override>()
                    .map_err(|e| err(format!("--set {s}: {e}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let cfg = RunConfig::from_toml_with(text, file, &overrides).map_err(err)?;
        py.detach(|| {
            let task = Arc::new(wflora_fed::Task::build(&cfg.task)?);
            let shards = client_shards(&cfg, &task)?.into_clients();
            Ok::<_, wflora_fed::FedError>(Self { cfg, task, shards })
        })
        .map_err(err)
    }

    /// The configuration as JSON.
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.cfg).map_err(err)
    }

    /// Every client's sample indices into the training split.
    #[getter]
    fn shards(&self) -> Vec<Vec<usize>> {
        self.shards.clone()
    }

    /// The run's server.
    fn server(&self, py: Python<'_>) -> PyResult<PyServer> {
        let sizes: Vec<usize> = self.shards.iter().map(Vec::len).collect();
        let server = py
            .detach(|| wflora_fed::Server::new(self.cfg.clone(), self.task.clone(), &sizes))
            .map_err(err)?;
        Ok(PyServer(server))
    }

    /// Client `k` of the run.
    fn client(&self, k: usize) -> PyResult<PyClient> {
        let shard = self
            .shards
            .get(k)
            .ok_or_else(|| err(format!("no client {k}: the run has {}", self.shards.len())))?;
        wflora_fed::Client::new(k, &self.cfg, self.task.clone(), shard.clone())
            .map(PyClient)
            .map_err(err)
    }
}

fn to_bytes<'py>(py: Python<'py>, msgs: Vec<ServerMessage>) -> Vec<(usize, Bound<'py, PyBytes>)> {
    msgs.iter()
        .map(|m| (m.client(), PyBytes::new(py, &m.encode())))
        .collect()
}

fn from_bytes(replies: &[Bound<'_, PyBytes>]) -> PyResult<Vec<ClientMessage>> {
    replies
        .iter()
        .map(|b| ClientMessage::decode(b.as_bytes()).map_err(err))
        .collect()
}

/// The server role: three calls per round, exchanging the protocol's bytes.
#[pyclass(module = "wflora._core", name = "Server")]
struct PyServer(wflora_fed::Server);

#[pymethods]
impl PyServer {
    /// Round phase 1: `[(client, message bytes)]`, a train instruction for
    /// every sampled client.
    fn plan_round<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<(usize, Bound<'py, PyBytes>)>> {
        let msgs = self.0.plan_round().map_err(err)?;
        Ok(to_bytes(py, msgs))
    }

    /// Round phase 2: from the clients' train reports (bytes, any order),
    /// the compress instructions. `absent` names sampled clients whose
    /// report did not come (they are not allocated and get no instruction).
    #[pyo3(signature = (replies, absent = None))]
    fn allocate<'py>(
        &mut self,
        py: Python<'py>,
        replies: Vec<Bound<'py, PyBytes>>,
        absent: Option<Vec<usize>>,
    ) -> PyResult<Vec<(usize, Bound<'py, PyBytes>)>> {
        let replies = from_bytes(&replies)?;
        let absent = absent.unwrap_or_default();
        let server = &mut self.0;
        let msgs = py
            .detach(|| server.allocate_with_absent(replies, &absent))
            .map_err(err)?;
        Ok(to_bytes(py, msgs))
    }

    /// Round phase 3: from the clients' updates (bytes, any order), the new
    /// global state; returns the round's record as JSON (the line `wflora
    /// run` writes to metrics.jsonl). `absent` names allocated clients
    /// whose update did not come (they sit the round out).
    #[pyo3(signature = (replies, absent = None))]
    fn finish_round(
        &mut self,
        py: Python<'_>,
        replies: Vec<Bound<'_, PyBytes>>,
        absent: Option<Vec<usize>>,
    ) -> PyResult<String> {
        let replies = from_bytes(&replies)?;
        let absent = absent.unwrap_or_default();
        let server = &mut self.0;
        let rec = py
            .detach(|| server.finish_round_with_absent(replies, &absent))
            .map_err(err)?;
        serde_json::to_string(&rec).map_err(err)
    }

    /// Rounds completed.
    #[getter]
    fn round(&self) -> usize {
        self.0.round()
    }

    /// Whether every configured round has run.
    #[getter]
    fn finished(&self) -> bool {
        self.0.finished()
    }

    /// The server's state (global factors and head, round, simulated time,
    /// queue) as checkpoint bytes.
    fn checkpoint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut ck = wflora_fed::checkpoint::Checkpoint {
            config_hash: self.0.config().hash(),
            meta: serde_json::Value::Null,
            tensors: Default::default(),
        };
        self.0.save(&mut ck);
        Ok(PyBytes::new(py, &ck.to_bytes().map_err(err)?))
    }

    /// Restores what [`PyServer::checkpoint`] wrote (between rounds).
    fn restore(&mut self, data: &[u8]) -> PyResult<()> {
        let path = PathBuf::from("<server checkpoint>");
        let mut ck = wflora_fed::checkpoint::Checkpoint::from_bytes(data, &path).map_err(err)?;
        ck.check_config(&self.0.config().hash(), &path)
            .map_err(err)?;
        self.0.restore(&mut ck, &path).map_err(err)
    }
}

/// A client role: answers the server's messages with its own.
#[pyclass(module = "wflora._core", name = "Client")]
struct PyClient(wflora_fed::Client);

#[pymethods]
impl PyClient {
    /// Answers one server message (bytes) with a client message (bytes).
    fn handle<'py>(&mut self, py: Python<'py>, message: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let msg = ServerMessage::decode(message).map_err(err)?;
        let client = &mut self.0;
        let reply = py.detach(|| client.handle(&msg)).map_err(err)?;
        Ok(PyBytes::new(py, &reply.encode()))
    }

    /// The client's whole state (residuals, local model, an update trained
    /// but not yet compressed) as bytes, for drivers that keep a client
    /// between messages outside this process (a Flower node's state).
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.state_bytes().map_err(err)?))
    }

    /// Restores what [`PyClient::state`] wrote (the same client of the same
    /// configuration).
    fn restore_state(&mut self, data: &[u8]) -> PyResult<()> {
        self.0.restore_state(data).map_err(err)
    }

    /// The client's index.
    #[getter]
    fn id(&self) -> usize {
        self.0.id()
    }

    /// Its sample count.
    #[getter]
    fn samples(&self) -> usize {
        self.0.samples()
    }
}

/// The module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("WfloraError", m.py().get_type::<WfloraError>())?;
    m.add("PROTOCOL_VERSION", wflora_fed::protocol::PROTOCOL_VERSION)?;
    m.add_class::<PyMessage>()?;
    m.add_class::<PyResidual>()?;
    m.add_class::<PyUplink>()?;
    m.add_class::<PyNetwork>()?;
    m.add_class::<PyTask>()?;
    m.add_class::<PyServer>()?;
    m.add_class::<PyClient>()?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(importances, m)?)?;
    m.add_function(wrap_pyfunction!(components_for_ratio, m)?)?;
    m.add_function(wrap_pyfunction!(budget, m)?)?;
    m.add_function(wrap_pyfunction!(equalising_split, m)?)?;
    m.add_function(wrap_pyfunction!(solve_instance_json, m)?)?;
    m.add_function(wrap_pyfunction!(select_rank, m)?)?;
    Ok(())
}
