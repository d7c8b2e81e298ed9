//! SLoRA: dense update, SVD, top triplets; server-side dense sum and
//! rank-`r` refactoring.

use crate::factors::{
    base_dims, check_components, check_finite, check_pair, expect_shape, from_row_major,
};
use crate::linalg::{lowrank_svd, thin_svd_mat};
use crate::message::{Payload, VALUE_BITS};
use crate::{Dims, Factors, FactorsView, Message, MethodKind, Residual, SoftError, budget};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};

/// Number of SLoRA triplets that fit the bit budget of `m` kept components
/// ([`budget`]): one triplet is `d + l` values and no index bits (σ folded
/// into `u`), so `m' = ⌊budget / (32(d+l))⌋` (which is `m` unless the
/// budget's index bits add up to a whole triplet), capped at `min(d, l)`.
///
/// # Errors
/// [`SoftError::Components`] for `m ∉ 1..=r`.
pub fn slora_triplets(dims: Dims, m: usize) -> Result<usize, SoftError> {
    let per = (dims.d + dims.l) as u64 * VALUE_BITS;
    let k = usize::try_from(budget(dims, m)?.total() / per).unwrap_or(usize::MAX);
    Ok(k.min(dims.d.min(dims.l)))
}

/// The client side.
pub(crate) fn compress(
    error_feedback: bool,
    base: FactorsView<'_>,
    update: FactorsView<'_>,
    residual: &Residual,
    m: usize,
) -> Result<(Message, Residual), SoftError> {
    let dims = base_dims(&base)?;
    let Dims { d, l, r } = dims;
    check_pair(&update, dims, "update.b", "update.a")?;
    let e = match residual {
        Residual::Zero => None,
        Residual::Dense(e) => {
            expect_shape("residual", e.dim(), (d, l))?;
            error_feedback.then_some(e)
        }
        Residual::Factors(_) => {
            return Err(SoftError::ResidualKind {
                method: MethodKind::SLora,
                got: residual.kind_name(),
                expected: "dense",
            });
        }
    };
    check_components(m, r)?;
    check_finite("base.b", &base.b)?;
    check_finite("base.a", &base.a)?;
    check_finite("update.b", &update.b)?;
    check_finite("update.a", &update.a)?;
    if let Some(e) = e {
        check_finite("residual", &e.view())?;
    }
    let k = slora_triplets(dims, m)?;

    // ΔW = B̃Ã − BᵗAᵗ + E = ΔB·Ã + Bᵗ·ΔA + E (no cancellation), in f64.
    let par = faer::get_global_parallelism();
    let mut w = match e {
        Some(e) => Mat::from_fn(d, l, |i, j| f64::from(e[[i, j]])),
        None => Mat::zeros(d, l),
    };
    let bt = Mat::from_fn(d, r, |i, j| f64::from(base.b[[i, j]]));
    let db = Mat::from_fn(d, r, |i, j| f64::from(update.b[[i, j]]));
    let da = Mat::from_fn(r, l, |i, j| f64::from(update.a[[i, j]]));
    let a_tilde = Mat::from_fn(r, l, |i, j| f64::from(base.a[[i, j]]) + da[(i, j)]);
    matmul(
        w.as_mut(),
        Accum::Add,
        db.as_ref(),
        a_tilde.as_ref(),
        1.0,
        par,
    );
    matmul(w.as_mut(), Accum::Add, bt.as_ref(), da.as_ref(), 1.0, par);

    let (u, s, v) = thin_svd_mat(w.as_ref(), "SLoRA dense update")?;
    let k = k.min(s.len());
    #[allow(clippy::cast_possible_truncation)]
    let u_msg: Vec<f32> = (0..d)
        .flat_map(|j| {
            (0..k)
                .map(|t| (u[(j, t)] * s[t]) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    #[allow(clippy::cast_possible_truncation)]
    let vt_msg: Vec<f32> = (0..k)
        .flat_map(|t| (0..l).map(|c| v[(c, t)] as f32).collect::<Vec<_>>())
        .collect();

    let residual = if error_feedback {
        // E' = ΔW − (what the server decodes), from the rounded values sent.
        let uk = Mat::from_fn(d, k, |j, t| f64::from(u_msg[j * k + t]));
        let vk = Mat::from_fn(k, l, |t, c| f64::from(vt_msg[t * l + c]));
        matmul(w.as_mut(), Accum::Add, uk.as_ref(), vk.as_ref(), -1.0, par);
        #[allow(clippy::cast_possible_truncation)]
        let e_new = (0..d)
            .flat_map(|i| (0..l).map(|j| w[(i, j)] as f32).collect::<Vec<_>>())
            .collect();
        Residual::Dense(from_row_major("residual", d, l, e_new)?)
    } else {
        Residual::Zero
    };
    let message = Message::new(
        MethodKind::SLora,
        dims,
        Payload::Triplets {
            rank: k,
            u: u_msg,
            vt: vt_msg,
        },
    );
    Ok((message, residual))
}

/// The server side: `W = BᵗAᵗ + Σ_k p_k·Ŵ_k`, refactored into rank `r` by a
/// truncated SVD, `B = U_rΣ_r^{1/2}`, `A = Σ_r^{1/2}V_rᵀ`.
///
/// `W` is never formed: it is `L·Rᵀ` with `L = [Bᵗ | p_1U_1 | …]` and
/// `R = [Aᵗᵀ | V_1 | …]` (inner dimension `q = r + Σ_k m'_k`), so its SVD comes
/// from two thin QRs and the SVD of a `q×q` core, exactly (in exact
/// arithmetic) what a dense SVD of `W` would give.
pub(crate) fn aggregate(
    base: FactorsView<'_>,
    dims: Dims,
    messages: &[(f64, &Message)],
) -> Result<Factors, SoftError> {
    let Dims { d, l, r } = dims;
    let parts: Vec<(f64, usize, &[f32], &[f32])> = messages
        .iter()
        .filter_map(|(p, m)| match m.payload() {
            Payload::Triplets { rank, u, vt } => Some((*p, *rank, &u[..], &vt[..])),
            _ => None,
        })
        .collect();
    let q = r + parts.iter().map(|x| x.1).sum::<usize>();
    let mut lm = Mat::<f64>::zeros(d, q);
    let mut rm = Mat::<f64>::zeros(l, q);
    for j in 0..d {
        for c in 0..r {
            lm[(j, c)] = f64::from(base.b[[j, c]]);
        }
    }
    for c in 0..r {
        for j in 0..l {
            rm[(j, c)] = f64::from(base.a[[c, j]]);
        }
    }
    let mut off = r;
    for (p, k, u, vt) in parts {
        for j in 0..d {
            for t in 0..k {
                lm[(j, off + t)] = p * f64::from(u[j * k + t]);
            }
        }
        for t in 0..k {
            for c in 0..l {
                rm[(c, off + t)] = f64::from(vt[t * l + c]);
            }
        }
        off += k;
    }
    let (uu, s, vv) = lowrank_svd(lm.as_ref(), rm.as_ref())?;
    let kk = r.min(s.len());
    let root: Vec<f64> = s.iter().take(kk).map(|x| x.max(0.0).sqrt()).collect();
    #[allow(clippy::cast_possible_truncation)]
    let b = (0..d)
        .flat_map(|j| {
            (0..r)
                .map(|i| {
                    if i < kk {
                        (uu[(j, i)] * root[i]) as f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    #[allow(clippy::cast_possible_truncation)]
    let a = (0..r)
        .flat_map(|i| {
            (0..l)
                .map(|c| {
                    if i < kk {
                        (root[i] * vv[(c, i)]) as f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Factors::new(
        from_row_major("aggregated.b", d, r, b)?,
        from_row_major("aggregated.a", r, l, a)?,
    ))
}
