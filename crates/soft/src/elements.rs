//! The element-wise methods: TLoRA (magnitude top-k) and RLoRA (random-k).

use crate::component::Inputs;
use crate::factors::from_row_major;
use crate::message::{Payload, SparseValues, Support, VALUE_BITS, index_bits_for};
use crate::{Dims, Factors, FactorsView, Message, MethodKind, Residual, SoftError, budget};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// How many elements of `U_B` and of `U_A` fit the bit budget of `m` kept
/// components ([`budget`]).
///
/// If every element fits without indices (`(dr + rl)·32` bits, e.g. at
/// `m = r`), all are sent. Otherwise the total count `k` is the largest whose
/// split `k_B = ⌊k·d/(d+l)⌋`, `k_A = k − k_B` (proportional to the sizes
/// `dr : rl`) costs at most the budget, each element costing 32 value bits
/// plus `⌈log2(dr)⌉` (resp. `⌈log2(rl)⌉`) index bits.
///
/// # Errors
/// [`SoftError::Components`] for `m ∉ 1..=r`.
pub fn element_counts(dims: Dims, m: usize) -> Result<(usize, usize), SoftError> {
    let Dims { d, l, r } = dims;
    let total = budget(dims, m)?.total();
    let (nb, na) = (d * r, r * l);
    if (nb + na) as u64 * VALUE_BITS <= total {
        return Ok((nb, na));
    }
    let (cb, ca) = (
        VALUE_BITS + index_bits_for(nb),
        VALUE_BITS + index_bits_for(na),
    );
    let split = |k: usize| {
        let kb = k * d / (d + l);
        (kb, k - kb)
    };
    let cost = |k: usize| {
        let (kb, ka) = split(k);
        kb as u64 * cb + ka as u64 * ca
    };
    // cost is non-decreasing in k: binary search for the largest k that fits.
    let (mut lo, mut hi) = (0usize, nb + na);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if cost(mid) <= total {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(split(lo))
}

/// How the elements are chosen.
#[derive(Clone, Copy)]
pub(crate) enum Pick {
    /// Largest magnitude, ties to the lower index.
    Top,
    /// Uniformly at random without replacement, from this seed.
    Random(u64),
}

/// Compresses element-wise.
pub(crate) fn compress(
    method: MethodKind,
    pick: Pick,
    error_feedback: bool,
    base: FactorsView<'_>,
    update: FactorsView<'_>,
    residual: &Residual,
    m: usize,
) -> Result<(Message, Residual), SoftError> {
    let inp = Inputs::new(method, &base, &update, residual, error_feedback)?;
    // element_counts checks m against the rank.
    let (kb, ka) = element_counts(inp.dims, m)?;
    inp.check_finite()?;
    let Dims { d, l, r } = inp.dims;
    let (ub, ua): (Vec<f32>, Vec<f32>) = match &inp.e {
        Some((eb, ea)) => (
            inp.db.iter().zip(eb.iter()).map(|(x, e)| x + e).collect(),
            inp.da.iter().zip(ea.iter()).map(|(x, e)| x + e).collect(),
        ),
        None => (inp.db.to_vec(), inp.da.to_vec()),
    };
    let mut rng = match pick {
        Pick::Random(seed) => Some(StdRng::seed_from_u64(seed)),
        Pick::Top => None,
    };
    let mut choose = |u: &[f32], k: usize| -> Vec<usize> {
        let mut ix = match &mut rng {
            Some(rng) => rand::seq::index::sample(rng, u.len(), k).into_vec(),
            None => top_k_magnitude(u, k),
        };
        ix.sort_unstable();
        ix
    };
    let ib = choose(&ub, kb);
    let ia = choose(&ua, ka);
    let (sb, res_b) = split_side(ub, ib, error_feedback);
    let (sa, res_a) = split_side(ua, ia, error_feedback);
    let message = Message::new(method, inp.dims, Payload::Elements { b: sb, a: sa });
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

/// Indices of the `k` largest `|u|`, ties to the lower index (any order).
fn top_k_magnitude(u: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..u.len()).collect();
    if k < u.len() {
        let cmp = |&i: &usize, &j: &usize| u[j].abs().total_cmp(&u[i].abs()).then(i.cmp(&j));
        if k > 0 {
            order.select_nth_unstable_by(k - 1, cmp);
        }
        order.truncate(k);
    }
    order
}

/// The sent values (`u` at the sorted indices `ix`) and the residual (`u`
/// with those entries zeroed; empty without error feedback).
fn split_side(mut u: Vec<f32>, ix: Vec<usize>, error_feedback: bool) -> (SparseValues, Vec<f32>) {
    let len = u.len();
    let values: Vec<f32> = ix.iter().map(|&p| u[p]).collect();
    let support = if ix.len() == len {
        Support::All
    } else {
        Support::Some(ix)
    };
    if error_feedback {
        match &support {
            Support::All => u.iter_mut().for_each(|x| *x = 0.0),
            Support::Some(ix) => ix.iter().for_each(|&p| u[p] = 0.0),
        }
    } else {
        u = Vec::new();
    }
    (
        SparseValues {
            len,
            support,
            values,
        },
        u,
    )
}
