//! The byte format of the protocol's messages (see the module documentation
//! of [`crate::protocol`]): a 52-byte frame around a safetensors body.

use super::{
    ClientMessage, ClientUpdate, CompressInstruction, ServerMessage, TrainInstruction, TrainReport,
};
use crate::state::ModelState;
use ndarray::Array2;
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use wflora_lora::{AdapterFactors, HeadParams};
use wflora_soft::{Dims, Message, MethodKind, Payload, SparseValues, Support};

/// The first eight bytes of every message.
pub const MAGIC: &[u8; 8] = b"WFLORAPR";
/// The protocol version this build writes and reads.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the frame before the body.
pub const HEADER_BYTES: usize = 52;
const TO_CLIENT: u8 = 1;
const TO_SERVER: u8 = 2;
const META_KEY: &str = "wflora";

/// Why a message could not be read (or, rarely, written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the frame needs.
    #[error("protocol message truncated: {need} bytes of frame expected, {have} received")]
    Truncated {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes received.
        have: usize,
    },
    /// Not a wflora message.
    #[error("not a wflora protocol message: it starts with {found:?}, expected \"WFLORAPR\"")]
    Magic {
        /// The first bytes, escaped.
        found: String,
    },
    /// Another protocol version.
    #[error(
        "protocol version {found}, this build reads version {supported}: run the same wflora \
         version on the server and the clients"
    )]
    Version {
        /// The message's version.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A message of the other direction (or an unknown one).
    #[error("expected a {expected} message, got direction byte {found}")]
    Direction {
        /// What the reader expected.
        expected: &'static str,
        /// The direction byte found.
        found: u8,
    },
    /// The body is shorter or longer than the frame says.
    #[error(
        "protocol message body is {have} bytes, the frame says {declared}: the message was \
         truncated or has trailing bytes"
    )]
    Length {
        /// Length in the frame.
        declared: u64,
        /// Bytes after the frame.
        have: usize,
    },
    /// The body's checksum does not match.
    #[error("protocol message is corrupt: the sha256 of its body does not match its frame")]
    Checksum,
    /// The body is not a well-formed safetensors file.
    #[error("protocol message body is not a valid safetensors file: {0}")]
    Body(String),
    /// The JSON header is missing or malformed.
    #[error("protocol message header: {0}")]
    Header(String),
    /// A tensor is missing, unexpected, or of the wrong dtype or shape.
    #[error("protocol message tensor '{name}': {reason}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What was expected.
        reason: String,
    },
    /// The content is inconsistent (e.g. a compressed factor that does not
    /// fit its dimensions).
    #[error("protocol message content: {0}")]
    Content(String),
}

type Result<T> = std::result::Result<T, WireError>;

/// The JSON header, tagged by message type.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Header {
    Train {
        round: usize,
        client: usize,
        /// Names of the state's adapted matrices (`None`: no state sent).
        state: Option<Vec<String>>,
        batch_seed: u64,
        report_importances: bool,
        evaluate: bool,
    },
    Compress {
        round: usize,
        client: usize,
        components: usize,
        share_bits: u64,
        sparsifier_seeds: Vec<u64>,
        report_factors: bool,
    },
    Trained {
        round: usize,
        client: usize,
        samples: usize,
        train_loss_bits: u64,
        importances: usize,
        evaluation_bits: Option<[u64; 2]>,
    },
    Update {
        round: usize,
        client: usize,
        payload_bits: u64,
        layers: Vec<Layer>,
        head: bool,
        local_factors: Vec<String>,
    },
}

/// One compressed matrix: what the tensors alone do not say.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    method: MethodKind,
    d: usize,
    l: usize,
    r: usize,
    payload: LayerPayload,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LayerPayload {
    /// `layer.J.b` (d×m), `layer.J.a` (m×l), `layer.J.support` unless `all`.
    Components { all: bool },
    /// `layer.J.{b,a}.values`, `layer.J.{b,a}.support` unless `*_all`.
    Elements {
        b_len: usize,
        b_all: bool,
        a_len: usize,
        a_all: bool,
    },
    /// `layer.J.u` (d×k), `layer.J.vt` (k×l).
    Triplets { rank: usize },
}

/// An owned tensor to serialise.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

#[derive(Default)]
struct Tensors(Vec<(String, Owned)>);

impl Tensors {
    fn f32(&mut self, name: String, shape: Vec<usize>, v: impl IntoIterator<Item = f32>) {
        let data = v.into_iter().flat_map(f32::to_le_bytes).collect();
        self.0.push((
            name,
            Owned {
                dtype: Dtype::F32,
                shape,
                data,
            },
        ));
    }
    fn f64(&mut self, name: String, v: &[f64]) {
        let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.0.push((
            name,
            Owned {
                dtype: Dtype::F64,
                shape: vec![v.len()],
                data,
            },
        ));
    }
    fn indices(&mut self, name: String, v: &[usize]) {
        let data = v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect();
        self.0.push((
            name,
            Owned {
                dtype: Dtype::I64,
                shape: vec![v.len()],
                data,
            },
        ));
    }
    fn mat(&mut self, name: String, m: &Array2<f32>) {
        self.f32(name, vec![m.nrows(), m.ncols()], m.iter().copied());
    }
    fn state(&mut self, prefix: &str, s: &ModelState) {
        for f in &s.factors {
            self.mat(format!("{prefix}{}.B", f.name), &f.b);
            self.mat(format!("{prefix}{}.A", f.name), &f.a);
        }
        self.head(prefix, &s.head);
    }
    fn head(&mut self, prefix: &str, h: &HeadParams) {
        self.mat(format!("{prefix}head.weight"), &h.weight);
        self.f32(
            format!("{prefix}head.bias"),
            vec![h.bias.len()],
            h.bias.iter().copied(),
        );
    }

    /// The framed message.
    fn frame(self, header: &Header, direction: u8) -> Vec<u8> {
        // Serialising these plain structs cannot fail (string keys, no
        // floats); the fallback would still be rejected by any reader.
        let json = serde_json::to_string(header).unwrap_or_default();
        let meta = HashMap::from([(META_KEY.to_owned(), json)]);
        let views: Vec<(&str, &Owned)> = self.0.iter().map(|(n, t)| (n.as_str(), t)).collect();
        // Only fails for an index that overflows, impossible for in-memory data.
        let body = safetensors::serialize(views, Some(meta)).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out.push(direction);
        out.push(0);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }
}

/// Checks the frame and parses the body.
fn open<'a>(bytes: &'a [u8], direction: u8, expected: &'static str) -> Result<(Header, Body<'a>)> {
    if bytes.len() < HEADER_BYTES {
        // Say "not a message" when even the magic is wrong.
        if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC {
            return Err(magic_error(bytes));
        }
        return Err(WireError::Truncated {
            need: HEADER_BYTES,
            have: bytes.len(),
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(magic_error(bytes));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version {
            found: version,
            supported: PROTOCOL_VERSION,
        });
    }
    if bytes[10] != direction {
        return Err(WireError::Direction {
            expected,
            found: bytes[10],
        });
    }
    if bytes[11] != 0 {
        return Err(WireError::Header(format!(
            "frame byte 11 is reserved and must be 0, found {}",
            bytes[11]
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let declared = u64::from_le_bytes(len);
    let body = &bytes[HEADER_BYTES..];
    if declared != body.len() as u64 {
        return Err(WireError::Length {
            declared,
            have: body.len(),
        });
    }
    if Sha256::digest(body).as_slice() != &bytes[20..52] {
        return Err(WireError::Checksum);
    }
    let st = SafeTensors::deserialize(body).map_err(|e| WireError::Body(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(body).map_err(|e| WireError::Body(e.to_string()))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| WireError::Header(format!("no '{META_KEY}' metadata entry")))?;
    let header: Header =
        serde_json::from_str(json).map_err(|e| WireError::Header(e.to_string()))?;
    Ok((
        header,
        Body {
            st,
            used: BTreeSet::new(),
        },
    ))
}

fn magic_error(bytes: &[u8]) -> WireError {
    let n = bytes.len().min(8);
    WireError::Magic {
        found: bytes[..n].escape_ascii().to_string(),
    }
}

/// A parsed body whose tensors are taken one by one; every tensor must be
/// taken exactly once.
struct Body<'a> {
    st: SafeTensors<'a>,
    used: BTreeSet<String>,
}

impl Body<'_> {
    fn raw(&mut self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8]> {
        let err = |reason: String| WireError::Tensor {
            name: name.to_owned(),
            reason,
        };
        let t = self
            .st
            .tensor(name)
            .map_err(|_| err("missing".to_owned()))?;
        if t.dtype() != dtype {
            return Err(err(format!("dtype {:?}, expected {dtype:?}", t.dtype())));
        }
        if t.shape() != shape {
            return Err(err(format!("shape {:?}, expected {shape:?}", t.shape())));
        }
        self.used.insert(name.to_owned());
        Ok(t.data())
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        self.st
            .tensor(name)
            .map(|t| t.shape().to_vec())
            .map_err(|_| WireError::Tensor {
                name: name.to_owned(),
                reason: "missing".to_owned(),
            })
    }

    fn f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let data = self.raw(name, Dtype::F32, shape)?;
        Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn f64(&mut self, name: &str, len: usize) -> Result<Vec<f64>> {
        let data = self.raw(name, Dtype::F64, &[len])?;
        Ok(data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect())
    }

    fn indices(&mut self, name: &str, len: usize) -> Result<Vec<usize>> {
        let data = self.raw(name, Dtype::I64, &[len])?;
        data.chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                usize::try_from(i64::from_le_bytes(b)).map_err(|_| WireError::Tensor {
                    name: name.to_owned(),
                    reason: "holds a negative index".to_owned(),
                })
            })
            .collect()
    }

    /// A 2-D `f32` tensor of any shape.
    fn mat(&mut self, name: &str) -> Result<Array2<f32>> {
        let shape = self.shape_of(name)?;
        let [r, c] = shape[..] else {
            return Err(WireError::Tensor {
                name: name.to_owned(),
                reason: format!("shape {shape:?}, expected a matrix"),
            });
        };
        let v = self.f32(name, &shape)?;
        Array2::from_shape_vec((r, c), v).map_err(|e| WireError::Tensor {
            name: name.to_owned(),
            reason: e.to_string(),
        })
    }

    /// A vector of whatever length it has (`f32`).
    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        let shape = self.shape_of(name)?;
        if shape.len() != 1 {
            return Err(WireError::Tensor {
                name: name.to_owned(),
                reason: format!("shape {shape:?}, expected a vector"),
            });
        }
        self.f32(name, &shape)
    }

    fn head(&mut self, prefix: &str) -> Result<HeadParams> {
        let weight = self.mat(&format!("{prefix}head.weight"))?;
        let bias = self.f32(&format!("{prefix}head.bias"), &[weight.nrows()])?;
        Ok(HeadParams { weight, bias })
    }

    fn factors(&mut self, prefix: &str, names: &[String]) -> Result<Vec<AdapterFactors>> {
        names
            .iter()
            .map(|name| {
                let b = self.mat(&format!("{prefix}{name}.B"))?;
                let a = self.mat(&format!("{prefix}{name}.A"))?;
                if b.ncols() != a.nrows() {
                    return Err(WireError::Content(format!(
                        "{prefix}{name}: B is {:?} and A is {:?}, their ranks differ",
                        b.dim(),
                        a.dim()
                    )));
                }
                Ok(AdapterFactors {
                    name: name.clone(),
                    b,
                    a,
                })
            })
            .collect()
    }

    /// Fails on any tensor that was not taken.
    fn finish(self) -> Result<()> {
        match self
            .st
            .names()
            .into_iter()
            .find(|n| !self.used.contains(*n))
        {
            Some(n) => Err(WireError::Tensor {
                name: n.to_owned(),
                reason: "is not part of this message type".to_owned(),
            }),
            None => Ok(()),
        }
    }
}

impl ServerMessage {
    /// The message as bytes (see [`crate::protocol`]).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut t = Tensors::default();
        let header = match self {
            Self::Train(m) => {
                if let Some(s) = &m.state {
                    t.state("state.", s);
                }
                Header::Train {
                    round: m.round,
                    client: m.client,
                    state: m
                        .state
                        .as_ref()
                        .map(|s| s.factors.iter().map(|f| f.name.clone()).collect()),
                    batch_seed: m.batch_seed,
                    report_importances: m.report_importances,
                    evaluate: m.evaluate,
                }
            }
            Self::Compress(m) => Header::Compress {
                round: m.round,
                client: m.client,
                components: m.components,
                share_bits: m.share.to_bits(),
                sparsifier_seeds: m.sparsifier_seeds.clone(),
                report_factors: m.report_factors,
            },
        };
        t.frame(&header, TO_CLIENT)
    }

    /// Reads a message written by [`ServerMessage::encode`].
    ///
    /// # Errors
    /// [`WireError`] saying what is wrong: truncated, corrupt, another
    /// version, another direction, a malformed header or tensor.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (header, mut body) = open(bytes, TO_CLIENT, "server-to-client")?;
        let msg = match header {
            Header::Train {
                round,
                client,
                state,
                batch_seed,
                report_importances,
                evaluate,
            } => {
                let state = match state {
                    Some(names) => Some(ModelState {
                        factors: body.factors("state.", &names)?,
                        head: body.head("state.")?,
                    }),
                    None => None,
                };
                Self::Train(TrainInstruction {
                    round,
                    client,
                    state,
                    batch_seed,
                    report_importances,
                    evaluate,
                })
            }
            Header::Compress {
                round,
                client,
                components,
                share_bits,
                sparsifier_seeds,
                report_factors,
            } => Self::Compress(CompressInstruction {
                round,
                client,
                components,
                share: f64::from_bits(share_bits),
                sparsifier_seeds,
                report_factors,
            }),
            Header::Trained { .. } | Header::Update { .. } => {
                return Err(WireError::Header(
                    "a client-to-server message type in a server-to-client message".into(),
                ));
            }
        };
        body.finish()?;
        Ok(msg)
    }
}

impl ClientMessage {
    /// The message as bytes (see [`crate::protocol`]).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut t = Tensors::default();
        let header = match self {
            Self::Trained(m) => {
                for (j, s) in m.importances.iter().enumerate() {
                    t.f64(format!("importances.{j}"), s);
                }
                Header::Trained {
                    round: m.round,
                    client: m.client,
                    samples: m.samples,
                    train_loss_bits: m.train_loss.to_bits(),
                    importances: m.importances.len(),
                    evaluation_bits: m.evaluation.map(|(l, a)| [l.to_bits(), a.to_bits()]),
                }
            }
            Self::Update(m) => {
                let layers = m
                    .messages
                    .iter()
                    .enumerate()
                    .map(|(j, msg)| encode_layer(&mut t, j, msg))
                    .collect();
                if let Some(h) = &m.head {
                    t.head("", h);
                }
                for f in &m.local_factors {
                    t.mat(format!("local.{}.B", f.name), &f.b);
                    t.mat(format!("local.{}.A", f.name), &f.a);
                }
                Header::Update {
                    round: m.round,
                    client: m.client,
                    payload_bits: m.payload_bits,
                    layers,
                    head: m.head.is_some(),
                    local_factors: m.local_factors.iter().map(|f| f.name.clone()).collect(),
                }
            }
        };
        t.frame(&header, TO_SERVER)
    }

    /// Reads a message written by [`ClientMessage::encode`]; compressed
    /// factors are re-validated ([`Message::from_parts`]).
    ///
    /// # Errors
    /// As [`ServerMessage::decode`]; [`WireError::Content`] for a compressed
    /// factor that does not fit its dimensions or method.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (header, mut body) = open(bytes, TO_SERVER, "client-to-server")?;
        let msg = match header {
            Header::Trained {
                round,
                client,
                samples,
                train_loss_bits,
                importances,
                evaluation_bits,
            } => {
                let importances = (0..importances)
                    .map(|j| {
                        let name = format!("importances.{j}");
                        let len = body.shape_of(&name)?.first().copied().unwrap_or(0);
                        body.f64(&name, len)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Self::Trained(TrainReport {
                    round,
                    client,
                    samples,
                    train_loss: f64::from_bits(train_loss_bits),
                    importances,
                    evaluation: evaluation_bits
                        .map(|[l, a]| (f64::from_bits(l), f64::from_bits(a))),
                })
            }
            Header::Update {
                round,
                client,
                payload_bits,
                layers,
                head,
                local_factors,
            } => {
                let messages = layers
                    .into_iter()
                    .enumerate()
                    .map(|(j, l)| decode_layer(&mut body, j, l))
                    .collect::<Result<Vec<_>>>()?;
                let head = if head { Some(body.head("")?) } else { None };
                let local_factors = body.factors("local.", &local_factors)?;
                Self::Update(ClientUpdate {
                    round,
                    client,
                    messages,
                    head,
                    payload_bits,
                    local_factors,
                })
            }
            Header::Train { .. } | Header::Compress { .. } => {
                return Err(WireError::Header(
                    "a server-to-client message type in a client-to-server message".into(),
                ));
            }
        };
        body.finish()?;
        Ok(msg)
    }
}

fn encode_layer(t: &mut Tensors, j: usize, msg: &Message) -> Layer {
    let Dims { d, l, r } = msg.dims();
    let p = format!("layer.{j}");
    let payload = match msg.payload() {
        Payload::Components { support, b, a } => {
            let m = match support {
                Support::All => r,
                Support::Some(idx) => {
                    t.indices(format!("{p}.support"), idx);
                    idx.len()
                }
            };
            t.f32(format!("{p}.b"), vec![d, m], b.iter().copied());
            t.f32(format!("{p}.a"), vec![m, l], a.iter().copied());
            LayerPayload::Components {
                all: support == &Support::All,
            }
        }
        Payload::Elements { b, a } => {
            for (side, v) in [("b", b), ("a", a)] {
                if let Support::Some(idx) = &v.support {
                    t.indices(format!("{p}.{side}.support"), idx);
                }
                t.f32(
                    format!("{p}.{side}.values"),
                    vec![v.values.len()],
                    v.values.iter().copied(),
                );
            }
            LayerPayload::Elements {
                b_len: b.len,
                b_all: b.support == Support::All,
                a_len: a.len,
                a_all: a.support == Support::All,
            }
        }
        Payload::Triplets { rank, u, vt } => {
            t.f32(format!("{p}.u"), vec![d, *rank], u.iter().copied());
            t.f32(format!("{p}.vt"), vec![*rank, l], vt.iter().copied());
            LayerPayload::Triplets { rank: *rank }
        }
    };
    Layer {
        method: msg.method(),
        d,
        l,
        r,
        payload,
    }
}

fn decode_layer(body: &mut Body<'_>, j: usize, layer: Layer) -> Result<Message> {
    let Layer {
        method,
        d,
        l,
        r,
        payload,
    } = layer;
    let p = format!("layer.{j}");
    let support = |body: &mut Body<'_>, name: String, all: bool| -> Result<Support> {
        if all {
            return Ok(Support::All);
        }
        let len = body.shape_of(&name)?.first().copied().unwrap_or(0);
        Ok(Support::Some(body.indices(&name, len)?))
    };
    let payload = match payload {
        LayerPayload::Components { all } => {
            let support = support(body, format!("{p}.support"), all)?;
            let m = match &support {
                Support::All => r,
                Support::Some(idx) => idx.len(),
            };
            Payload::Components {
                support,
                b: body.f32(&format!("{p}.b"), &[d, m])?,
                a: body.f32(&format!("{p}.a"), &[m, l])?,
            }
        }
        LayerPayload::Elements {
            b_len,
            b_all,
            a_len,
            a_all,
        } => {
            let mut side = |name: &str, len: usize, all: bool| -> Result<SparseValues> {
                let support = support(body, format!("{p}.{name}.support"), all)?;
                let values = body.vector(&format!("{p}.{name}.values"))?;
                Ok(SparseValues {
                    len,
                    support,
                    values,
                })
            };
            let b = side("b", b_len, b_all)?;
            let a = side("a", a_len, a_all)?;
            Payload::Elements { b, a }
        }
        LayerPayload::Triplets { rank } => Payload::Triplets {
            rank,
            u: body.f32(&format!("{p}.u"), &[d, rank])?,
            vt: body.f32(&format!("{p}.vt"), &[rank, l])?,
        },
    };
    Message::from_parts(method, Dims { d, l, r }, payload)
        .map_err(|e| WireError::Content(format!("layer {j}: {e}")))
}
