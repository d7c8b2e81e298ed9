//! The round as a protocol: the messages the [`Server`](crate::Server) and
//! its [`Client`](crate::Client)s exchange, and their byte format.
//!
//! A federated round (docs/method.md §1–§3, §5) is two exchanges, because
//! the allocation of round `t` depends on what the clients learned in round
//! `t` (the penalties `D_k(m)` come from this round's importances) and the
//! compression depends on the allocation:
//!
//! ```text
//! server                                   client k (sampled in round t)
//!   plan: sample clients, seeds
//!   ── ServerMessage::Train ──────────────▶  local training from the state
//!      (round, global state, batch seed,      (its shard, its optimiser,
//!       what to report)                        SOFT's regulariser)
//!   ◀────────────── ClientMessage::Trained ─  samples, training loss,
//!                                             importances (TSFA's menu)
//!   allocate: channel draw t, m_k, β_k
//!   ── ServerMessage::Compress ───────────▶  compression with m_k kept
//!      (m_k, share β_k, sparsifier seeds)     components, error feedback
//!   ◀─────────────── ClientMessage::Update ─  compressed factors, head,
//!                                             exact payload bits
//!   aggregate factor-wise, queue, evaluate
//! ```
//!
//! `m_k = 0` tells a client to sit out: it keeps its whole update in its
//! residual and answers with an empty update. The server never reads or
//! writes a client's residual; a client never sees another's state.
//!
//! **Byte format** ([`ServerMessage::encode`], [`ClientMessage::decode`],
//! …), version [`PROTOCOL_VERSION`], all integers little-endian:
//!
//! ```text
//! 0    8 bytes  magic "WFLORAPR"
//! 8    u16      protocol version
//! 10   u8       direction: 1 server → client, 2 client → server
//! 11   u8       0 (reserved)
//! 12   u64      body length N
//! 20   32 bytes sha256 of the body
//! 52   N bytes  body: a safetensors file
//! ```
//!
//! The body is a plain safetensors file (readable with Python's
//! `safetensors.numpy.load(data[52:])`): the tensors (`f32` factors and head,
//! `f64` importances, `i64` indices) under documented names, and one
//! metadata entry `"wflora"` holding a small JSON header (message type,
//! round, client, counts, seeds; floats of the header as their `u64` bit
//! patterns, so that nothing is rounded on the way). Reading checks, in this
//! order, the magic, the version, the direction, the length, the checksum,
//! the safetensors structure, the header, and every tensor's dtype and
//! shape; each failure is a [`WireError`] that says what was expected.
//! Compressed factors travel in the sparsifier's own layout
//! ([`wflora_soft::Payload`]) and are re-validated on arrival
//! ([`wflora_soft::Message::from_parts`]).

mod wire;

pub use wire::{HEADER_BYTES, MAGIC, PROTOCOL_VERSION, WireError};

use crate::state::ModelState;
use wflora_lora::{AdapterFactors, HeadParams};
use wflora_soft::Message;

/// A message from the server to one client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// Round phase 1: train from a state.
    Train(TrainInstruction),
    /// Round phase 2: compress what was trained.
    Compress(CompressInstruction),
}

/// Train `E` local steps (docs/method.md §1).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainInstruction {
    /// The round `t` (0-based).
    pub round: usize,
    /// The addressed client.
    pub client: usize,
    /// The state to start from: the broadcast global state, or `None` to
    /// continue from the client's own local state (local-only runs after
    /// their first round).
    pub state: Option<ModelState>,
    /// Seed of the client's mini-batch sampler for this round.
    pub batch_seed: u64,
    /// Report the importances of every adapted matrix (TSFA's
    /// dropped-energy penalty needs them).
    pub report_importances: bool,
    /// Evaluate the trained local state on the test split and report it
    /// (local-only runs, last round).
    pub evaluate: bool,
}

/// Compress the update trained in this round.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressInstruction {
    /// The round `t`.
    pub round: usize,
    /// The addressed client.
    pub client: usize,
    /// Kept components `m_k` per adapted matrix; 0: sit out (the update
    /// stays in the residual).
    pub components: usize,
    /// The bandwidth share `β_k` the allocation gave the client.
    pub share: f64,
    /// One sparsifier seed per adapted matrix (RLoRA draws from it).
    pub sparsifier_seeds: Vec<u64>,
    /// Also send the uncompressed local factors, for the server's
    /// covariance metric of separate aggregation (a measurement of the
    /// simulation, not counted in the payload bits).
    pub report_factors: bool,
}

/// A message from one client to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Answer to [`ServerMessage::Train`].
    Trained(TrainReport),
    /// Answer to [`ServerMessage::Compress`].
    Update(ClientUpdate),
}

/// What a client reports after local training.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// The round.
    pub round: usize,
    /// The reporting client.
    pub client: usize,
    /// Its sample count `|D_k|` (the aggregation weight).
    pub samples: usize,
    /// Mean cross-entropy over its local steps.
    pub train_loss: f64,
    /// SOFT importances of every adapted matrix, `r` each (empty unless
    /// asked for).
    pub importances: Vec<Vec<f64>>,
    /// `(test loss, test accuracy)` of its local state (only when asked).
    pub evaluation: Option<(f64, f64)>,
}

/// A client's compressed upload.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientUpdate {
    /// The round.
    pub round: usize,
    /// The sending client.
    pub client: usize,
    /// One message per adapted matrix, in the model's order (empty when the
    /// client sat out).
    pub messages: Vec<Message>,
    /// The trained head, sent densely (`None` when the client sat out).
    pub head: Option<HeadParams>,
    /// Exact payload bits: the messages' bits plus the head's.
    pub payload_bits: u64,
    /// The uncompressed local factors (only when asked; a diagnostic).
    pub local_factors: Vec<AdapterFactors>,
}

impl ClientUpdate {
    /// Whether the client sat out (sent nothing).
    #[must_use]
    pub fn sat_out(&self) -> bool {
        self.head.is_none()
    }
}

impl ServerMessage {
    /// The addressed client.
    #[must_use]
    pub fn client(&self) -> usize {
        match self {
            Self::Train(m) => m.client,
            Self::Compress(m) => m.client,
        }
    }
}

impl ClientMessage {
    /// The sending client.
    #[must_use]
    pub fn client(&self) -> usize {
        match self {
            Self::Trained(m) => m.client,
            Self::Update(m) => m.client,
        }
    }
}
