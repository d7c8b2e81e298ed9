//! Messages, their exact size in bits, the bit budget, and decoding.

use crate::factors::{check_rho, from_row_major, kept_components};
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

/// The bit budget of one adapted matrix at ratio `ρ`: that of SOFT keeping
/// `m = ⌈ρ·r⌉` components, `m(d+l)` values plus `m⌈log2 r⌉` index bits
/// (docs/method.md §2). Every method's message fits in it.
///
/// The budget always counts the index bits, also at `m = r`, where SOFT
/// itself sends no indices (a message carrying everything needs none).
///
/// # Errors
/// [`SoftError::Ratio`] for `ρ ∉ (0, 1]`.
pub fn budget(dims: Dims, rho: f64) -> Result<Bits, SoftError> {
    check_rho(rho)?;
    let m = kept_components(rho, dims.r) as u64;
    Ok(Bits {
        values: m * (dims.d + dims.l) as u64,
        index_bits: m * index_bits_for(dims.r),
    })
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
    pub(crate) fn new(method: MethodKind, dims: Dims, payload: Payload) -> Self {
        Self {
            method,
            dims,
            payload,
        }
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
    /// (possible only for a message deserialised from corrupt data).
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

    /// Checks that the fields agree with each other and hold finite values.
    pub(crate) fn validate(&self) -> Result<(), SoftError> {
        let Dims { d, l, r } = self.dims;
        if d == 0 || l == 0 || r == 0 {
            return bad(format!("dims (d, l, r) = ({d}, {l}, {r}) has a zero"));
        }
        let mul = |x: usize, y: usize| {
            x.checked_mul(y).ok_or_else(|| SoftError::MalformedMessage {
                reason: format!("size {x}×{y} overflows"),
            })
        };
        let (dr, rl) = (mul(d, r)?, mul(r, l)?);
        mul(d, l)?;
        let kind_ok = matches!(
            (self.method, &self.payload),
            (
                MethodKind::Soft | MethodKind::SoftDelta | MethodKind::ILora,
                Payload::Components { .. }
            ) | (
                MethodKind::TLora | MethodKind::RLora,
                Payload::Elements { .. }
            ) | (MethodKind::SLora, Payload::Triplets { .. })
        );
        if !kind_ok {
            return bad(format!("{} cannot carry this payload kind", self.method));
        }
        let values: &[&[f32]] = match &self.payload {
            Payload::Components { support, b, a } => {
                let m = check_support(support, r, "component")?;
                if b.len() != d * m || a.len() != m * l {
                    return bad(format!(
                        "{m} components need {} + {} values, got {} + {}",
                        d * m,
                        m * l,
                        b.len(),
                        a.len()
                    ));
                }
                &[b, a]
            }
            Payload::Elements { b, a } => {
                for (s, n, name) in [(b, dr, "U_B"), (a, rl, "U_A")] {
                    if s.len != n {
                        return bad(format!("{name} has {n} elements, message says {}", s.len));
                    }
                    let k = check_support(&s.support, n, name)?;
                    if s.values.len() != k {
                        return bad(format!(
                            "{name}: {k} positions but {} values",
                            s.values.len()
                        ));
                    }
                }
                &[&b.values, &a.values]
            }
            Payload::Triplets { rank, u, vt } => {
                if u.len() != mul(d, *rank)? || vt.len() != mul(*rank, l)? {
                    return bad(format!(
                        "{rank} triplets need {} + {} values, got {} + {}",
                        d * rank,
                        rank * l,
                        u.len(),
                        vt.len()
                    ));
                }
                &[u, vt]
            }
        };
        if values.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return bad("a value is NaN or infinite".to_owned());
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
fn check_support(support: &Support, n: usize, what: &str) -> Result<usize, SoftError> {
    match support {
        Support::All => Ok(n),
        Support::Some(ix) => {
            if ix.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!("{what} indices are not strictly increasing"));
            }
            if ix.last().is_some_and(|&i| i >= n) {
                return bad(format!("{what} index out of range 0..{n}"));
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
