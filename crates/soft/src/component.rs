//! The rank-component methods: SOFT, SOFT-Δ and ILoRA (which keeps all).
//!
//! Memory access: `B` is row-major `d×r`, so the `r` column norms are
//! accumulated in one pass over its rows (`r` running sums, the inner loop
//! over a contiguous row); the rows of `A` are contiguous and summed with
//! eight independent lanes. No dense copy of the factors is made: the
//! error-compensated update `U = Δ + e` and the compensated factors
//! `B̃ = B^t + U` are formed element by element on the fly.

use crate::factors::{
    base_dims, check_components, check_finite, check_pair, from_row_major, row_major,
};
use crate::message::{Payload, Support};
use crate::{Dims, Factors, FactorsView, Message, MethodKind, Residual, SoftError};
use std::borrow::Cow;

/// Which importance rule ranks the components.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// `‖b̃_i‖·‖ã_i‖` (SOFT).
    Soft,
    /// `‖b̃_i ã_iᵀ − b_i a_iᵀ‖_F` (SOFT-Δ).
    Delta,
    /// Keep everything (ILoRA).
    All,
}

/// `(e_B, e_A)` in row-major order.
pub(crate) type RowMajorPair<'a> = (Cow<'a, [f32]>, Cow<'a, [f32]>);

/// Row-major views of one client's inputs, validated.
pub(crate) struct Inputs<'a> {
    pub dims: Dims,
    pub bt: Cow<'a, [f32]>,
    pub at: Cow<'a, [f32]>,
    pub db: Cow<'a, [f32]>,
    pub da: Cow<'a, [f32]>,
    /// `(e_B, e_A)` when error feedback is on and the residual is non-zero.
    pub e: Option<RowMajorPair<'a>>,
    base: FactorsView<'a>,
    update: FactorsView<'a>,
    residual: Option<FactorsView<'a>>,
}

impl<'a> Inputs<'a> {
    /// Checks shapes and the residual kind (not finiteness: see
    /// [`Inputs::check_finite`]; the kept-component count is checked by the
    /// caller, against `dims.r`).
    pub(crate) fn new(
        method: MethodKind,
        base: &'a FactorsView<'_>,
        update: &'a FactorsView<'_>,
        residual: &'a Residual,
        error_feedback: bool,
    ) -> Result<Self, SoftError> {
        let base = FactorsView::new(base.b.view(), base.a.view());
        let update = FactorsView::new(update.b.view(), update.a.view());
        let dims = base_dims(&base)?;
        check_pair(&update, dims, "update.b", "update.a")?;
        let residual = match residual {
            Residual::Zero => None,
            Residual::Factors(f) => {
                let v = f.view();
                check_pair(&v, dims, "residual.b", "residual.a")?;
                error_feedback.then_some(v)
            }
            Residual::Dense(_) => {
                return Err(SoftError::ResidualKind {
                    method,
                    got: residual.kind_name(),
                    expected: "factor",
                });
            }
        };
        Ok(Self {
            dims,
            bt: row_major(&base.b),
            at: row_major(&base.a),
            db: row_major(&update.b),
            da: row_major(&update.a),
            e: residual.map(|v| (row_major(&v.b), row_major(&v.a))),
            base,
            update,
            residual,
        })
    }

    /// The first NaN/inf among the inputs, as an error.
    pub(crate) fn check_finite(&self) -> Result<(), SoftError> {
        check_finite("base.b", &self.base.b)?;
        check_finite("base.a", &self.base.a)?;
        check_finite("update.b", &self.update.b)?;
        check_finite("update.a", &self.update.a)?;
        if let Some(e) = &self.residual {
            check_finite("residual.b", &e.b)?;
            check_finite("residual.a", &e.a)?;
        }
        Ok(())
    }

    /// The per-component importances under `rule` (`Soft` or `Delta`).
    /// A NaN/inf input makes some importance non-finite (sums are formed in
    /// `f64` from `f32`, which cannot overflow), which is then reported by
    /// name.
    pub(crate) fn importances(&self, rule: Rule) -> Result<Vec<f64>, SoftError> {
        let Dims { r, l, .. } = self.dims;
        let (eb, ea) = match &self.e {
            Some((eb, ea)) => (Some(&eb[..]), Some(&ea[..])),
            None => (None, None),
        };
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        let s: Vec<f64> = if rule == Rule::Delta {
            let [nbt, nb, cb] = delta_cols(&self.bt, &self.db, eb, r);
            let [nat, na, ca] = delta_rows(&self.at, &self.da, ea, l);
            if ![&nbt, &nb, &cb, &nat, &na, &ca].iter().all(|v| finite(v)) {
                self.check_finite()?;
            }
            (0..r)
                .map(|i| {
                    (nbt[i] * nat[i] + nb[i] * na[i] - 2.0 * cb[i] * ca[i])
                        .max(0.0)
                        .sqrt()
                })
                .collect()
        } else {
            let nb = soft_cols(&self.bt, &self.db, eb, r);
            let na = soft_rows(&self.at, &self.da, ea, l);
            if !(finite(&nb) && finite(&na)) {
                self.check_finite()?;
            }
            nb.iter().zip(&na).map(|(x, y)| (x * y).sqrt()).collect()
        };
        Ok(s)
    }
}

/// `‖B̃[:, i]‖²` for all `i`. The columns are taken in blocks of up to 16
/// (one 64-byte cache line of a row) whose sums stay in registers while the
/// rows stream by; for `r ≤ 16` this is one pass, and for larger `r` every
/// cache line of `B` is still read once.
fn soft_cols(bt: &[f32], db: &[f32], eb: Option<&[f32]>, r: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; r];
    let mut c0 = 0;
    while c0 < r {
        c0 += match r - c0 {
            16.. => col_block::<16>(bt, db, eb, r, c0, &mut out),
            8.. => col_block::<8>(bt, db, eb, r, c0, &mut out),
            4.. => col_block::<4>(bt, db, eb, r, c0, &mut out),
            _ => col_block::<1>(bt, db, eb, r, c0, &mut out),
        };
    }
    out
}

/// Squared norms of the `W` columns `c0..c0+W` into `out`; returns `W`.
fn col_block<const W: usize>(
    bt: &[f32],
    db: &[f32],
    eb: Option<&[f32]>,
    r: usize,
    c0: usize,
    out: &mut [f64],
) -> usize {
    let mut acc = [0.0f64; W];
    let d = bt.len() / r;
    match eb {
        Some(eb) => {
            for j in 0..d {
                let o = j * r + c0;
                let (b, x, e) = (&bt[o..o + W], &db[o..o + W], &eb[o..o + W]);
                for k in 0..W {
                    let v = f64::from(b[k] + (x[k] + e[k]));
                    acc[k] += v * v;
                }
            }
        }
        None => {
            for j in 0..d {
                let o = j * r + c0;
                let (b, x) = (&bt[o..o + W], &db[o..o + W]);
                for k in 0..W {
                    let v = f64::from(b[k] + x[k]);
                    acc[k] += v * v;
                }
            }
        }
    }
    out[c0..c0 + W].copy_from_slice(&acc);
    W
}

/// `‖Ã[i, :]‖²` for all rows `i` (rows of length `l`).
fn soft_rows(at: &[f32], da: &[f32], ea: Option<&[f32]>, l: usize) -> Vec<f64> {
    let rows = at.chunks_exact(l).zip(da.chunks_exact(l));
    match ea {
        Some(ea) => rows
            .zip(ea.chunks_exact(l))
            .map(|((a, x), e)| {
                let mut lanes = [0.0f64; 8];
                let mut tail = 0.0f64;
                let (ca, cx, ce) = (a.chunks_exact(8), x.chunks_exact(8), e.chunks_exact(8));
                for ((&a, &x), &e) in ca
                    .remainder()
                    .iter()
                    .zip(cx.remainder())
                    .zip(ce.remainder())
                {
                    let v = f64::from(a + (x + e));
                    tail += v * v;
                }
                for ((a, x), e) in ca.zip(cx).zip(ce) {
                    for k in 0..8 {
                        let v = f64::from(a[k] + (x[k] + e[k]));
                        lanes[k] += v * v;
                    }
                }
                lanes.iter().sum::<f64>() + tail
            })
            .collect(),
        None => rows
            .map(|(a, x)| {
                let mut lanes = [0.0f64; 8];
                let mut tail = 0.0f64;
                let (ca, cx) = (a.chunks_exact(8), x.chunks_exact(8));
                for (&a, &x) in ca.remainder().iter().zip(cx.remainder()) {
                    let v = f64::from(a + x);
                    tail += v * v;
                }
                for (a, x) in ca.zip(cx) {
                    for k in 0..8 {
                        let v = f64::from(a[k] + x[k]);
                        lanes[k] += v * v;
                    }
                }
                lanes.iter().sum::<f64>() + tail
            })
            .collect(),
    }
}

/// The update entry `u = Δ + e` (or `Δ` without residual).
#[inline]
fn u_at(x: &[f32], e: Option<&[f32]>, k: usize) -> f32 {
    match e {
        Some(e) => x[k] + e[k],
        None => x[k],
    }
}

/// Per column of `B`: `[‖b̃_i‖², ‖b_i‖², b̃_i·b_i]`.
fn delta_cols(bt: &[f32], db: &[f32], eb: Option<&[f32]>, r: usize) -> [Vec<f64>; 3] {
    let (mut nt, mut n0, mut c) = (vec![0.0f64; r], vec![0.0f64; r], vec![0.0f64; r]);
    for (j, b) in bt.chunks_exact(r).enumerate() {
        for (i, &b) in b.iter().enumerate() {
            let b0 = f64::from(b);
            let bn = f64::from(b + u_at(db, eb, j * r + i));
            nt[i] += bn * bn;
            n0[i] += b0 * b0;
            c[i] += bn * b0;
        }
    }
    [nt, n0, c]
}

/// Per row of `A`: `[‖ã_i‖², ‖a_i‖², ã_i·a_i]`.
fn delta_rows(at: &[f32], da: &[f32], ea: Option<&[f32]>, l: usize) -> [Vec<f64>; 3] {
    let r = at.len() / l;
    let (mut nt, mut n0, mut c) = (vec![0.0f64; r], vec![0.0f64; r], vec![0.0f64; r]);
    for (i, a) in at.chunks_exact(l).enumerate() {
        let (mut lt, mut l0, mut lc) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
        for (k, &a) in a.iter().enumerate() {
            let a0 = f64::from(a);
            let an = f64::from(a + u_at(da, ea, i * l + k));
            let lane = k % 4;
            lt[lane] += an * an;
            l0[lane] += a0 * a0;
            lc[lane] += an * a0;
        }
        nt[i] = lt.iter().sum();
        n0[i] = l0.iter().sum();
        c[i] = lc.iter().sum();
    }
    [nt, n0, c]
}

/// The `m` components with the largest scores, ties to the lower index,
/// returned in increasing order.
pub(crate) fn top_m(scores: &[f64], m: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]).then(i.cmp(&j)));
    order.truncate(m);
    order.sort_unstable();
    order
}

/// Compresses by whole rank components.
pub(crate) fn compress(
    method: MethodKind,
    rule: Rule,
    error_feedback: bool,
    base: FactorsView<'_>,
    update: FactorsView<'_>,
    residual: &Residual,
    m: usize,
) -> Result<(Message, Residual), SoftError> {
    let inp = Inputs::new(method, &base, &update, residual, error_feedback)?;
    check_components(m, inp.dims.r)?;
    let Dims { d, l, r } = inp.dims;
    let m = if rule == Rule::All { r } else { m };
    let kept = if m == r {
        inp.check_finite()?;
        (0..r).collect()
    } else {
        top_m(&inp.importances(rule)?, m)
    };
    let (eb, ea) = match &inp.e {
        Some((eb, ea)) => (Some(&eb[..]), Some(&ea[..])),
        None => (None, None),
    };

    // U = Δ + e as one bulk pass per factor; it becomes the new residual
    // once the sent entries are moved out of it into the message.
    let compensate = |x: &[f32], e: Option<&[f32]>| -> Vec<f32> {
        match e {
            Some(e) => x.iter().zip(e).map(|(x, e)| x + e).collect(),
            None => x.to_vec(),
        }
    };
    let mut res_b = compensate(&inp.db, eb);
    let mut msg_b = vec![0.0f32; d * m];
    for (row, sent) in res_b.chunks_exact_mut(r).zip(msg_b.chunks_exact_mut(m)) {
        for (slot, &i) in sent.iter_mut().zip(&kept) {
            *slot = row[i];
            row[i] = 0.0;
        }
    }
    let mut res_a = compensate(&inp.da, ea);
    let mut msg_a = Vec::with_capacity(m * l);
    for &i in &kept {
        let row = &mut res_a[i * l..(i + 1) * l];
        msg_a.extend_from_slice(row);
        row.fill(0.0);
    }

    let support = if m == r {
        Support::All
    } else {
        Support::Some(kept)
    };
    let message = Message::new(
        method,
        inp.dims,
        Payload::Components {
            support,
            b: msg_b,
            a: msg_a,
        },
    );
    let residual = if error_feedback {
        Residual::Factors(Factors::new(
            from_row_major("residual.b", d, r, res_b)?,
            from_row_major("residual.a", r, l, res_a)?,
        ))
    } else {
        Residual::Zero
    };
    Ok((message, residual))
}
