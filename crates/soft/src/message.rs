//! Messages, their exact size in bits, the bit budget, and decoding.

use crate::factors::{check_components, from_row_major};
use crate::{Dims, Factors, MethodKind, SoftError};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Bits per transmitted value (`f32`).
pub const VALUE_BITS: u64 = 32;

/// `⌈log2 n⌉` (0 for `n ≤ 1`): the bits of one index into `n` positions.
#[must_use]
pub fn index_bits_for(n: usize) -> u64 {
    if n <= 1 {
        0
    } else {
        u64::from(usize::BITS - (n - 1).leading_zeros())
    }
}

/// A payload size: value count, index bits, and the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bits {
    /// Transmitted values (each [`VALUE_BITS`] bits).
    pub values: u64,
    /// Bits spent on indices.
    pub index_bits: u64,
}

impl Bits {
    /// `values·32 + index_bits`.
    #[must_use]
    pub fn total(self) -> u64 {
        self.values * VALUE_BITS + self.index_bits
    }
}

/// The bit budget of one adapted matrix when `m` of its `r` rank components
/// are kept: that of SOFT sending them, `m(d+l)` values plus `m⌈log2 r⌉`
/// index bits (docs/method.md §2). Every method's message at the same `m`
/// fits in it. A ratio `ρ` becomes `m` through
/// [`crate::components_for_ratio`].
///
/// The budget always counts the index bits, also at `m = r`, where SOFT
/// itself sends no indices (a message carrying everything needs none).
///
/// # Errors
/// [`SoftError::Components`] for `m ∉ 1..=r`.
pub fn budget(dims: Dims, m: usize) -> Result<Bits, SoftError> {
    check_components(m, dims.r)?;
    let m = m as u64;
    let overflow = || SoftError::MalformedMessage {
        reason: format!("dims {dims:?}: the budget of m = {m} components overflows 64 bits"),
    };
    let values = (dims.d as u64)
        .checked_add(dims.l as u64)
        .and_then(|n| n.checked_mul(m))
        .filter(|v| v.checked_mul(VALUE_BITS).is_some())
        .ok_or_else(overflow)?;
    let index_bits = m.checked_mul(index_bits_for(dims.r)).ok_or_else(overflow)?;
    values
        .checked_mul(VALUE_BITS)
        .and_then(|b| b.checked_add(index_bits))
        .ok_or_else(overflow)?;
    Ok(Bits { values, index_bits })
}

/// A set of positions out of `n`: all of them (no indices sent), or a
/// strictly increasing list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Support {
    /// Every position, in order: costs no index bits.
    All,
    /// These positions, strictly increasing.
    Some(Vec<usize>),
}

/// Sparse values of one flattened (row-major) matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseValues {
    /// Number of positions of the flattened matrix.
    pub len: usize,
    /// Which positions are sent.
    pub support: Support,
    /// The values, one per sent position.
    pub values: Vec<f32>,
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Whole rank components `(U_B[:, i], U_A[i, :])` (SOFT, SOFT-Δ, ILoRA).
    /// With `m` components sent: `b` is `d×m` row-major (row `j` holds the
    /// sent entries of row `j` of `U_B`), `a` is `m×l` row-major.
    Components {
        /// Which components (indices into `0..r`).
        support: Support,
        /// The sent columns of `U_B`, `d×m` row-major.
        b: Vec<f32>,
        /// The sent rows of `U_A`, `m×l` row-major.
        a: Vec<f32>,
    },
    /// Single elements of `U_B` and `U_A` (TLoRA, RLoRA), each with its own
    /// index into its flattened matrix (`⌈log2(dr)⌉` resp. `⌈log2(rl)⌉` bits).
    Elements {
        /// Elements of `U_B` (flattened `d×r`, row-major).
        b: SparseValues,
        /// Elements of `U_A` (flattened `r×l`, row-major).
        a: SparseValues,
    },
    /// SVD triplets of the dense update (SLoRA), `σ` folded into `u`: one
    /// triplet is `d + l` values and no index (triplets are sent in order, so
    /// the receiver needs no position).
    Triplets {
        /// Number of triplets `k`.
        rank: usize,
        /// `u_i·σ_i` as columns: `d×k` row-major.
        u: Vec<f32>,
        /// `v_iᵀ` as rows: `k×l` row-major.
        vt: Vec<f32>,
    },
}

/// One client's compressed update of one adapted matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    method: MethodKind,
    dims: Dims,
    payload: Payload,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// `(C(U_B), C(U_A))`: the sent entries, zeros elsewhere.
    Factors(Factors),
    /// The dense `d×l` update `Σ_i u_i σ_i v_iᵀ` (SLoRA).
    Dense(Array2<f32>),
}

impl Message {
    /// A message made by this crate's sparsifiers (consistent by
    /// construction, not checked).
    pub(crate) fn new(method: MethodKind, dims: Dims, payload: Payload) -> Self {
        Self {
            method,
            dims,
            payload,
        }
    }

    /// A message from its parts, checked: for messages that arrive from
    /// outside (decoded off a wire). A message that a [`crate::Sparsifier`]
    /// made passes unchanged:
    /// `Message::from_parts(msg.method(), msg.dims(), msg.payload().clone())`
    /// gives `msg` back.
    ///
    /// The checks are those of [`Message::decode`]: `d`, `l` and `r` are all
    /// at least 1 (and their products fit a `usize`); the payload kind fits
    /// the method ([`Payload::Components`] for SOFT, SOFT-Δ and ILoRA,
    /// [`Payload::Elements`] for TLoRA and RLoRA, [`Payload::Triplets`] for
    /// SLoRA); every [`Support::Some`] is strictly increasing, in range and
    /// no longer than the positions it indexes (`r` components, `d·r`
    /// elements of `U_B`, `r·l` of `U_A`); the value counts match
    /// (components: `b` is `d·m` and `a` is `m·l` with `m` the support's
    /// length, `r` for [`Support::All`]; elements: `len` is `d·r` resp.
    /// `r·l` and there is one value per position, `len` for
    /// [`Support::All`]; triplets: `rank ≤ r`, `u` is `d·rank` and `vt` is
    /// `rank·l`); and every value is finite.
    ///
    /// # Errors
    /// [`SoftError::MalformedMessage`], its reason naming the field at fault
    /// (`dims`, `method`, `payload.support`, `payload.b`, `payload.a.len`,
    /// `payload.rank`, `payload.u`, …).
    pub fn from_parts(method: MethodKind, dims: Dims, payload: Payload) -> Result<Self, SoftError> {
        let msg = Self {
            method,
            dims,
            payload,
        };
        msg.validate()?;
        Ok(msg)
    }

    /// The method that made it.
    #[must_use]
    pub fn method(&self) -> MethodKind {
        self.method
    }

    /// Dimensions of the adapted matrix it is for.
    #[must_use]
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// What it carries.
    #[must_use]
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Its exact size: value count and index bits.
    #[must_use]
    pub fn size(&self) -> Bits {
        let Dims { d, l, r } = self.dims;
        match &self.payload {
            Payload::Components { support, b, a } => Bits {
                values: (b.len() + a.len()) as u64,
                index_bits: match support {
                    Support::All => 0,
                    Support::Some(ix) => ix.len() as u64 * index_bits_for(r),
                },
            },
            Payload::Elements { b, a } => {
                let side = |s: &SparseValues, n: usize| match &s.support {
                    Support::All => 0,
                    Support::Some(ix) => ix.len() as u64 * index_bits_for(n),
                };
                Bits {
                    values: (b.values.len() + a.values.len()) as u64,
                    index_bits: side(b, d * r) + side(a, r * l),
                }
            }
            Payload::Triplets { u, vt, .. } => Bits {
                values: (u.len() + vt.len()) as u64,
                index_bits: 0,
            },
        }
    }

    /// Its exact size in bits: `values·32 + index_bits`.
    #[must_use]
    pub fn bits(&self) -> u64 {
        self.size().total()
    }

    /// Number of transmitted values.
    #[must_use]
    pub fn value_count(&self) -> u64 {
        self.size().values
    }

    /// Bits spent on indices.
    #[must_use]
    pub fn index_bits(&self) -> u64 {
        self.size().index_bits
    }

    /// Decodes on the server: the factor methods give `(C(U_B), C(U_A))`,
    /// SLoRA the dense update.
    ///
    /// # Errors
    /// [`SoftError::MalformedMessage`] if the fields contradict each other
    /// (possible only for a message deserialised from corrupt data: see
    /// [`Message::from_parts`] for the checks).
    pub fn decode(&self) -> Result<Decoded, SoftError> {
        self.validate()?;
        let Dims { d, l, r } = self.dims;
        match &self.payload {
            Payload::Triplets { rank, u, vt } => {
                let mut w = vec![0.0f64; d * l];
                add_triplets(&mut w, 1.0, l, *rank, u, vt);
                #[allow(clippy::cast_possible_truncation)]
                let w32 = w.into_iter().map(|x| x as f32).collect();
                Ok(Decoded::Dense(from_row_major("decoded", d, l, w32)?))
            }
            _ => {
                let mut b = vec![0.0f32; d * r];
                let mut a = vec![0.0f32; r * l];
                self.scatter(&mut b, &mut a);
                Ok(Decoded::Factors(Factors::new(
                    from_row_major("decoded.b", d, r, b)?,
                    from_row_major("decoded.a", r, l, a)?,
                )))
            }
        }
    }

    /// Writes the sent entries of a (validated) factor message into
    /// row-major `d×r` and `r×l` buffers.
    fn scatter(&self, b_out: &mut [f32], a_out: &mut [f32]) {
        self.for_each_entry(|side, pos, v| match side {
            Side::B => b_out[pos] = v,
            Side::A => a_out[pos] = v,
        });
    }

    /// Adds `w·C(U_B)`, `w·C(U_A)` of a (validated) factor message to `f64`
    /// accumulators.
    pub(crate) fn add_scaled(&self, w: f64, b_acc: &mut [f64], a_acc: &mut [f64]) {
        self.for_each_entry(|side, pos, v| match side {
            Side::B => b_acc[pos] += w * f64::from(v),
            Side::A => a_acc[pos] += w * f64::from(v),
        });
    }

    /// Calls `f(side, flat position, value)` for every sent factor entry.
    fn for_each_entry(&self, mut f: impl FnMut(Side, usize, f32)) {
        let Dims { l, r, .. } = self.dims;
        match &self.payload {
            Payload::Components { support, b, a } => {
                let kept: Vec<usize> = match support {
                    Support::All => (0..r).collect(),
                    Support::Some(ix) => ix.clone(),
                };
                let m = kept.len();
                if m == 0 {
                    return;
                }
                for (j, row) in b.chunks_exact(m).enumerate() {
                    for (&i, &v) in kept.iter().zip(row) {
                        f(Side::B, j * r + i, v);
                    }
                }
                for (&i, row) in kept.iter().zip(a.chunks_exact(l)) {
                    for (c, &v) in row.iter().enumerate() {
                        f(Side::A, i * l + c, v);
                    }
                }
            }
            Payload::Elements { b, a } => {
                for (side, s) in [(Side::B, b), (Side::A, a)] {
                    match &s.support {
                        Support::All => {
                            for (p, &v) in s.values.iter().enumerate() {
                                f(side, p, v);
                            }
                        }
                        Support::Some(ix) => {
                            for (&p, &v) in ix.iter().zip(&s.values) {
                                f(side, p, v);
                            }
                        }
                    }
                }
            }
            Payload::Triplets { .. } => {}
        }
    }

    /// Checks that the fields agree with each other and hold finite values
    /// (the checks listed at [`Message::from_parts`]).
    pub(crate) fn validate(&self) -> Result<(), SoftError> {
        let Dims { d, l, r } = self.dims;
        if d == 0 || l == 0 || r == 0 {
            return bad(format!(
                "dims: (d, l, r) = ({d}, {l}, {r}), expected all >= 1"
            ));
        }
        let mul = |x: usize, y: usize| {
            x.checked_mul(y).ok_or_else(|| SoftError::MalformedMessage {
                reason: format!("dims: size {x}×{y} overflows"),
            })
        };
        let (dr, rl) = (mul(d, r)?, mul(r, l)?);
        mul(d, l)?;
        let carried = match &self.payload {
            Payload::Components { .. } => "Components",
            Payload::Elements { .. } => "Elements",
            Payload::Triplets { .. } => "Triplets",
        };
        let wanted = match self.method {
            MethodKind::Soft | MethodKind::SoftDelta | MethodKind::ILora => "Components",
            MethodKind::TLora | MethodKind::RLora => "Elements",
            MethodKind::SLora => "Triplets",
        };
        if carried != wanted {
            return bad(format!(
                "method: {} sends a {wanted} payload, this message carries {carried}",
                self.method
            ));
        }
        let values: [(&str, &[f32]); 2] = match &self.payload {
            Payload::Components { support, b, a } => {
                let m = check_support(support, r, "payload.support", "component")?;
                // m ≤ r, so d·m and m·l do not overflow (d·r and r·l do not).
                if b.len() != d * m {
                    return bad(format!(
                        "payload.b: {m} components need d·m = {} values, got {}",
                        d * m,
                        b.len()
                    ));
                }
                if a.len() != m * l {
                    return bad(format!(
                        "payload.a: {m} components need m·l = {} values, got {}",
                        m * l,
                        a.len()
                    ));
                }
                [("payload.b", b), ("payload.a", a)]
            }
            Payload::Elements { b, a } => {
                for (s, n, side, size) in [(b, dr, "payload.b", "d·r"), (a, rl, "payload.a", "r·l")]
                {
                    if s.len != n {
                        return bad(format!(
                            "{side}.len: {} positions, expected {size} = {n}",
                            s.len
                        ));
                    }
                    let field = format!("{side}.support");
                    let k = check_support(&s.support, n, &field, "element")?;
                    if s.values.len() != k {
                        return bad(format!(
                            "{side}.values: {} values for {k} positions",
                            s.values.len()
                        ));
                    }
                }
                [
                    ("payload.b.values", &b.values),
                    ("payload.a.values", &a.values),
                ]
            }
            Payload::Triplets { rank, u, vt } => {
                if *rank > r {
                    return bad(format!("payload.rank: {rank} triplets, at most r = {r}"));
                }
                // rank ≤ r: no overflow either.
                if u.len() != d * rank {
                    return bad(format!(
                        "payload.u: {rank} triplets need d·rank = {} values, got {}",
                        d * rank,
                        u.len()
                    ));
                }
                if vt.len() != rank * l {
                    return bad(format!(
                        "payload.vt: {rank} triplets need rank·l = {} values, got {}",
                        rank * l,
                        vt.len()
                    ));
                }
                [("payload.u", u), ("payload.vt", vt)]
            }
        };
        for (field, v) in values {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return bad(format!("{field}[{i}] = {x}: expected a finite value"));
            }
        }
        Ok(())
    }
}

/// Which factor an entry belongs to.
#[derive(Clone, Copy)]
enum Side {
    B,
    A,
}

fn bad<T>(reason: String) -> Result<T, SoftError> {
    Err(SoftError::MalformedMessage { reason })
}

/// Checks a support against `n` positions and returns its size.
fn check_support(support: &Support, n: usize, field: &str, what: &str) -> Result<usize, SoftError> {
    match support {
        Support::All => Ok(n),
        Support::Some(ix) => {
            if ix.len() > n {
                return bad(format!("{field}: {} {what} indices, at most {n}", ix.len()));
            }
            if let Some(w) = ix.windows(2).find(|w| w[0] >= w[1]) {
                return bad(format!(
                    "{field}: {what} indices not strictly increasing ({} then {})",
                    w[0], w[1]
                ));
            }
            if let Some(&i) = ix.last().filter(|&&i| i >= n) {
                return bad(format!("{field}: {what} index {i} out of range 0..{n}"));
            }
            Ok(ix.len())
        }
    }
}

/// `w += scale · Σ_t u[:, t] vt[t, :]` on a row-major `·×l` buffer, in `f64`.
pub(crate) fn add_triplets(
    w: &mut [f64],
    scale: f64,
    l: usize,
    rank: usize,
    u: &[f32],
    vt: &[f32],
) {
    if rank == 0 {
        return;
    }
    for (wrow, urow) in w.chunks_exact_mut(l).zip(u.chunks_exact(rank)) {
        for (&uv, vrow) in urow.iter().zip(vt.chunks_exact(l)) {
            let c = scale * f64::from(uv);
            for (x, &v) in wrow.iter_mut().zip(vrow) {
                *x += c * f64::from(v);
            }
        }
    }
}
