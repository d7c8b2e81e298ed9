//! Client-side properties of every method: selection, error feedback, bits.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

mod common;

use common::{ceil_log2, client, f64m, fro, gauss, orthonormal, product, select};
use ndarray::{Array2, Axis};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_soft::{
    Decoded, Dims, Factors, FactorsView, ILora, Message, MethodKind, Payload, RLora, Residual,
    SLora, Soft, SoftDelta, Sparsifier, Support, TLora, budget, delta_importances, dropped_energy,
    element_counts, importances, orthogonality_report,
};

/// Orthogonal-factor setting: `B̃ = Q_B diag(β)`, `Ã = diag(α) Q_Aᵀ` with
/// distinct products `β_iα_i`, returned split as base + update + residual.
fn orthogonal_client(
    seed: u64,
    d: usize,
    l: usize,
    r: usize,
) -> (Factors, Factors, Residual, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let qb = orthonormal(&mut rng, d, r);
    let qa = orthonormal(&mut rng, l, r);
    // σ_i = β_i α_i: a random permutation of well-separated values.
    let mut sig: Vec<f64> = (0..r).map(|i| 1.5f64.powi(i as i32)).collect();
    for i in (1..r).rev() {
        let j = rng.random_range(0..=i);
        sig.swap(i, j);
    }
    let beta: Vec<f64> = (0..r).map(|_| rng.random_range(0.5..2.0)).collect();
    let bt = Array2::from_shape_fn((d, r), |(j, i)| (qb[[j, i]] * beta[i]) as f32);
    let at = Array2::from_shape_fn((r, l), |(i, c)| (qa[[c, i]] * sig[i] / beta[i]) as f32);
    // Split B̃ = base + update + residual with the residual and update exact
    // in f32 (base = B̃ − update − residual is then off by rounding only).
    let db = gauss(&mut rng, d, r, 0.01);
    let eb = gauss(&mut rng, d, r, 0.01);
    let da = gauss(&mut rng, r, l, 0.01);
    let ea = gauss(&mut rng, r, l, 0.01);
    let base = Factors::new(&bt - &(&db + &eb), &at - &(&da + &ea));
    (
        base,
        Factors::new(db, da),
        Residual::Factors(Factors::new(eb, ea)),
        sig,
    )
}

/// `B̃ = base + (update + residual)`, `Ã` likewise.
fn compensated(
    base: &Factors,
    update: &Factors,
    residual: &Residual,
) -> (Array2<f64>, Array2<f64>) {
    let (eb, ea) = match residual {
        Residual::Factors(e) => (e.b.clone(), e.a.clone()),
        _ => (Array2::zeros(base.b.dim()), Array2::zeros(base.a.dim())),
    };
    // formed in f32 as the client holds them, then widened
    (
        f64m(&(&base.b + &(&update.b + &eb))),
        f64m(&(&base.a + &(&update.a + &ea))),
    )
}

fn kept_components(msg: &Message) -> Vec<usize> {
    match msg.payload() {
        Payload::Components {
            support: Support::Some(ix),
            ..
        } => ix.clone(),
        Payload::Components {
            support: Support::All,
            ..
        } => (0..msg.dims().r).collect(),
        _ => panic!("not a component message"),
    }
}

fn decoded_factors(msg: &Message) -> Factors {
    match msg.decode().unwrap() {
        Decoded::Factors(f) => f,
        Decoded::Dense(_) => panic!("expected factors"),
    }
}

/// A kept-component count in `1..=r` from a uniform draw `mf ∈ [0, 1)`.
fn kept(r: usize, mf: f64) -> usize {
    (1 + (r as f64 * mf) as usize).min(r)
}

fn factor_methods(seed: u64) -> Vec<Box<dyn Sparsifier>> {
    vec![
        Box::new(Soft::default()),
        Box::new(SoftDelta::default()),
        Box::new(TLora::default()),
        Box::new(RLora::new(seed)),
        Box::new(ILora::default()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Eckart–Young: on orthogonal factors SOFT keeps the components of the
    /// top-m singular values of B̃Ã, and the error of dropping the rest is
    /// the SVD tail energy Σ_{i>m} σ_i² (σ from a dense SVD of B̃Ã).
    #[test]
    fn soft_matches_svd_on_orthogonal_factors(
        seed in any::<u64>(), d in 6usize..20, l in 6usize..20, r in 2usize..6, mf in 0.0f64..1.0,
    ) {
        let r = r.min(d).min(l);
        let m = 1 + ((r - 1) as f64 * mf) as usize;
        let (base, update, residual, sig) = orthogonal_client(seed, d, l, r);
        let (msg, _) = Soft::default()
            .compress(base.view(), update.view(), &residual, m)
            .unwrap();
        let kept = kept_components(&msg);
        // the components of the m largest σ_i = β_iα_i, by construction
        let mut order: Vec<usize> = (0..r).collect();
        order.sort_by(|&i, &j| sig[j].total_cmp(&sig[i]));
        let mut want = order[..m].to_vec();
        want.sort_unstable();
        prop_assert_eq!(&kept, &want);

        let (bt, at) = compensated(&base, &update, &residual);
        let full = bt.dot(&at);
        let svals = wflora_soft::svd(&full).unwrap().s;
        let kept_part = select(&bt, 1, &kept).dot(&select(&at, 0, &kept));
        let err = fro(&(&full - &kept_part)).powi(2);
        let tail: f64 = svals.iter().skip(m).map(|s| s * s).sum();
        let total: f64 = svals.iter().map(|s| s * s).sum();
        prop_assert!((err - tail).abs() <= 1e-5 * total, "err {err} tail {tail}");
        // and the importances are the singular values
        let mut s = importances(base.view(), update.view(), &residual).unwrap();
        s.sort_by(|a, b| b.total_cmp(a));
        for (a, b) in s.iter().zip(svals.iter()) {
            prop_assert!((a - b).abs() <= 1e-4 * svals[0], "{a} vs {b}");
        }
    }

    /// Error feedback is lossless bookkeeping, bitwise for the factor methods:
    /// decode(message) + new residual = update + old residual.
    #[test]
    fn error_feedback_is_exact_for_factor_methods(
        seed in any::<u64>(), d in 1usize..24, l in 1usize..24, r in 1usize..8,
        mf in 0.0f64..1.0, with_res in any::<bool>(),
    ) {
        let m = kept(r, mf);
        let c = client(seed, d, l, r, with_res);
        for method in factor_methods(seed) {
            let (msg, res) = method.compress(c.base.view(), c.update.view(), &c.residual, m).unwrap();
            let dec = decoded_factors(&msg);
            let Residual::Factors(e_new) = res else { panic!("EF on returns a factor residual") };
            let (want_b, want_a) = match &c.residual {
                Residual::Factors(e) => (&c.update.b + &e.b, &c.update.a + &e.a),
                _ => (c.update.b.clone(), c.update.a.clone()),
            };
            let got_b = &dec.b + &e_new.b;
            let got_a = &dec.a + &e_new.a;
            prop_assert!(got_b.iter().zip(&want_b).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", method.kind());
            prop_assert!(got_a.iter().zip(&want_a).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", method.kind());
            // what is sent and what is kept do not overlap
            prop_assert!(dec.b.iter().zip(&e_new.b).all(|(x, y)| *x == 0.0 || *y == 0.0));
        }
    }

    /// SLoRA's bookkeeping, to f32 rounding: decode + E' = ΔB·Ã + Bᵗ·ΔA + E.
    #[test]
    fn error_feedback_is_exact_for_slora(
        seed in any::<u64>(), d in 1usize..16, l in 1usize..16, r in 1usize..5, mf in 0.0f64..1.0,
    ) {
        let m = kept(r, mf);
        let c = client(seed, d, l, r, false);
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        let e_old = gauss(&mut rng, d, l, 0.05);
        let (msg, res) = SLora::default()
            .compress(c.base.view(), c.update.view(), &Residual::Dense(e_old.clone()), m)
            .unwrap();
        let Decoded::Dense(w) = msg.decode().unwrap() else { panic!("dense") };
        let Residual::Dense(e_new) = res else { panic!("dense residual") };
        let a_tilde = &c.base.a + &c.update.a;
        let want = product(&c.update.b, &a_tilde) + product(&c.base.b, &c.update.a) + f64m(&e_old);
        let got = f64m(&w) + f64m(&e_new);
        prop_assert!(fro(&(&got - &want)) <= 1e-5 * (1.0 + fro(&want)));
    }

    /// Bits: each method's count equals an independent recount from its
    /// payload, and every method fits SOFT's budget at the same m.
    #[test]
    fn bits_match_recount_and_fit_the_budget(
        seed in any::<u64>(), d in 1usize..40, l in 1usize..40, r in 1usize..9, mf in 0.0f64..1.0,
    ) {
        let c = client(seed, d, l, r, true);
        let m = kept(r, mf);
        // SOFT's budget, independently.
        let budget_bits = (m * (d + l)) as u64 * 32 + m as u64 * ceil_log2(r);
        prop_assert_eq!(budget(Dims { d, l, r }, m).unwrap().total(), budget_bits);
        let mut all: Vec<Box<dyn Sparsifier>> = factor_methods(seed);
        all.push(Box::new(SLora::default()));
        for method in all {
            let residual = if method.kind() == MethodKind::SLora { Residual::Zero } else { c.residual.clone() };
            let (msg, _) = method.compress(c.base.view(), c.update.view(), &residual, m).unwrap();
            let recount = match msg.payload() {
                Payload::Components { support, b, a } => {
                    let ix = match support { Support::All => 0, Support::Some(ix) => ix.len() as u64 * ceil_log2(r) };
                    (b.len() + a.len()) as u64 * 32 + ix
                }
                Payload::Elements { b, a } => {
                    let side = |s: &wflora_soft::SparseValues, n: usize| {
                        s.values.len() as u64 * 32
                            + match &s.support { Support::All => 0, Support::Some(ix) => ix.len() as u64 * ceil_log2(n) }
                    };
                    side(b, d * r) + side(a, r * l)
                }
                Payload::Triplets { rank, .. } => (rank * (d + l)) as u64 * 32,
            };
            prop_assert_eq!(msg.bits(), recount, "{}", method.kind());
            prop_assert_eq!(msg.bits(), msg.value_count() * 32 + msg.index_bits());
            if method.kind() != MethodKind::ILora || m == r {
                prop_assert!(msg.bits() <= budget_bits, "{} {} > {}", method.kind(), msg.bits(), budget_bits);
            }
            if method.kind() == MethodKind::Soft || method.kind() == MethodKind::SoftDelta {
                let ix = if m == r { 0 } else { m as u64 * ceil_log2(r) };
                prop_assert_eq!(msg.value_count(), (m * (d + l)) as u64);
                prop_assert_eq!(msg.index_bits(), ix);
            }
        }
        // TLoRA: the counts are maximal (one more element would not fit) unless all are sent
        let (kb, ka) = element_counts(Dims { d, l, r }, m).unwrap();
        if kb + ka < r * (d + l) {
            let k = kb + ka + 1;
            let kb1 = k * d / (d + l);
            let cost = kb1 as u64 * (32 + ceil_log2(d * r)) + (k - kb1) as u64 * (32 + ceil_log2(r * l));
            prop_assert!(cost > budget_bits);
            prop_assert!(kb + ka <= m * (d + l), "fewer values than SOFT fit");
        }
    }

    /// m = r is lossless for every factor method: all of U is sent, no
    /// indices, and the residual is zero.
    #[test]
    fn keeping_every_component_is_lossless(seed in any::<u64>(), d in 1usize..20, l in 1usize..20, r in 1usize..6) {
        let c = client(seed, d, l, r, true);
        let Residual::Factors(e) = &c.residual else { unreachable!() };
        for method in factor_methods(seed) {
            let (msg, res) = method.compress(c.base.view(), c.update.view(), &c.residual, r).unwrap();
            prop_assert_eq!(msg.index_bits(), 0);
            prop_assert_eq!(msg.value_count(), (r * (d + l)) as u64);
            let dec = decoded_factors(&msg);
            prop_assert_eq!(&dec.b, &(&c.update.b + &e.b));
            prop_assert_eq!(&dec.a, &(&c.update.a + &e.a));
            let Residual::Factors(e_new) = res else { panic!() };
            prop_assert!(e_new.b.iter().chain(e_new.a.iter()).all(|x| *x == 0.0));
        }
    }

    /// SOFT-Δ's inner-product formula equals the explicit Frobenius norm of
    /// the dense difference b̃ãᵀ − baᵀ.
    #[test]
    fn soft_delta_formula_matches_dense(seed in any::<u64>(), d in 1usize..20, l in 1usize..20, r in 1usize..6) {
        let c = client(seed, d, l, r, true);
        let s = delta_importances(c.base.view(), c.update.view(), &c.residual).unwrap();
        let (bt, at) = compensated(&c.base, &c.update, &c.residual);
        let (b0, a0) = (f64m(&c.base.b), f64m(&c.base.a));
        for i in 0..r {
            let new = bt.column(i).insert_axis(Axis(1)).dot(&at.row(i).insert_axis(Axis(0)));
            let old = b0.column(i).insert_axis(Axis(1)).dot(&a0.row(i).insert_axis(Axis(0)));
            let want = fro(&(&new - &old));
            prop_assert!((s[i] - want).abs() <= 1e-6 * (1.0 + want), "{} vs {}", s[i], want);
        }
    }

    /// SOFT's importances are ‖b̃_i‖·‖ã_i‖, computed here from dense columns.
    #[test]
    fn soft_importances_match_dense_norms(seed in any::<u64>(), d in 1usize..30, l in 1usize..30, r in 1usize..7) {
        let c = client(seed, d, l, r, true);
        let s = importances(c.base.view(), c.update.view(), &c.residual).unwrap();
        let (bt, at) = compensated(&c.base, &c.update, &c.residual);
        for i in 0..r {
            let want = bt.column(i).dot(&bt.column(i)).sqrt() * at.row(i).dot(&at.row(i)).sqrt();
            prop_assert!((s[i] - want).abs() <= 1e-9 * (1.0 + want));
        }
    }

    /// D(m) equals the brute-force dropped share over the complement of the
    /// top-m set, and is a non-increasing curve from 1 to 0.
    #[test]
    fn dropped_energy_matches_brute_force(s in prop::collection::vec(0.0f64..10.0, 1..12)) {
        let dd = dropped_energy(&s).unwrap();
        prop_assert_eq!(dd.len(), s.len() + 1);
        let total: f64 = s.iter().map(|x| x * x).sum();
        if total == 0.0 {
            prop_assert!(dd.iter().all(|x| *x == 0.0));
            return Ok(());
        }
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
        for m in 0..=s.len() {
            let dropped: f64 = order[m..].iter().map(|&i| s[i] * s[i]).sum();
            prop_assert!((dd[m] - dropped / total).abs() <= 1e-12);
            prop_assert!((0.0..=1.0).contains(&dd[m]));
        }
        prop_assert!(dd.windows(2).all(|w| w[0] >= w[1]));
        prop_assert_eq!(dd[0], 1.0);
        prop_assert_eq!(dd[s.len()], 0.0);
    }
}

#[test]
fn dropped_energy_by_hand() {
    // s = (1, 2, 0, 2): s² = 1, 4, 0, 4, total 9; dropping all but the top
    // one leaves 1 + 0 + 4 = 5.
    let dd = dropped_energy(&[1.0, 2.0, 0.0, 2.0]).unwrap();
    let want = [1.0, 5.0 / 9.0, 1.0 / 9.0, 0.0, 0.0];
    for (a, b) in dd.iter().zip(want) {
        assert!((a - b).abs() < 1e-15, "{dd:?}");
    }
    assert_eq!(dropped_energy(&[0.0, 0.0]).unwrap(), vec![0.0; 3]);
    // huge values whose squares overflow f64 still give a valid curve
    let big = dropped_energy(&[1e200, 1e200]).unwrap();
    assert_eq!(big, vec![1.0, 0.5, 0.0]);
}

#[test]
fn soft_by_hand() {
    // B̃ columns have norms (3, 1), Ã rows (1, 4): s = (3, 4), so m = 1 keeps
    // component 1.
    let b = ndarray::array![[3.0f32, 0.0], [0.0, 1.0]];
    let a = ndarray::array![[1.0f32, 0.0, 0.0], [0.0, 0.0, 4.0]];
    let zb = Array2::<f32>::zeros((2, 2));
    let za = Array2::<f32>::zeros((2, 3));
    let base = FactorsView::new(zb.view(), za.view());
    let upd = FactorsView::new(b.view(), a.view());
    assert_eq!(
        importances(base, upd, &Residual::Zero).unwrap(),
        vec![3.0, 4.0]
    );
    let (msg, res) = Soft::default()
        .compress(base, upd, &Residual::Zero, 1)
        .unwrap();
    assert_eq!(kept_components(&msg), vec![1]);
    let Payload::Components { b: mb, a: ma, .. } = msg.payload() else {
        panic!()
    };
    assert_eq!(mb, &vec![0.0, 1.0]);
    assert_eq!(ma, &vec![0.0, 0.0, 4.0]);
    assert_eq!(msg.bits(), 5 * 32 + 1);
    let Residual::Factors(e) = res else { panic!() };
    assert_eq!(e.b, ndarray::array![[3.0f32, 0.0], [0.0, 0.0]]);
    assert_eq!(e.a, ndarray::array![[1.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]]);
}

#[test]
fn soft_sees_the_first_round_where_delta_a_is_blind() {
    // Round 1: Bᵗ = 0, ΔA = 0. The update lives in ΔB only; SOFT ranks by
    // ‖Δb_i‖·‖a_i‖ and picks the column that matters in B̃Ã.
    let mut rng = StdRng::seed_from_u64(7);
    let (d, l, r) = (10, 12, 4);
    let bt = Array2::<f32>::zeros((d, r));
    let at = gauss(&mut rng, r, l, 1.0);
    let mut db = gauss(&mut rng, d, r, 0.01);
    db.column_mut(2).mapv_inplace(|x| x * 100.0);
    let da = Array2::<f32>::zeros((r, l));
    let base = FactorsView::new(bt.view(), at.view());
    let upd = FactorsView::new(db.view(), da.view());
    let (msg, _) = Soft::default()
        .compress(base, upd, &Residual::Zero, 1)
        .unwrap();
    assert_eq!(kept_components(&msg), vec![2]);
}

#[test]
fn error_feedback_off_discards_the_residual() {
    let c = client(3, 9, 7, 4, true);
    for kind in MethodKind::ALL {
        let residual = if kind == MethodKind::SLora {
            Residual::Dense(Array2::from_elem((9, 7), 0.5))
        } else {
            c.residual.clone()
        };
        let off = kind.sparsifier(false, 11);
        let on = kind.sparsifier(true, 11);
        let (m_off, r_off) = off
            .compress(c.base.view(), c.update.view(), &residual, 2)
            .unwrap();
        let (m_on_zero, _) = on
            .compress(c.base.view(), c.update.view(), &Residual::Zero, 2)
            .unwrap();
        assert_eq!(r_off, Residual::Zero, "{kind}");
        assert_eq!(m_off, m_on_zero, "{kind}: EF off ignores the residual");
        assert_eq!(off.kind(), kind);
    }
}

#[test]
fn rlora_is_reproducible_by_seed() {
    let c = client(5, 32, 24, 4, true);
    let run = |seed| {
        RLora::new(seed)
            .compress(c.base.view(), c.update.view(), &c.residual, 1)
            .unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1).0, run(2).0);
    let Payload::Elements { b, .. } = run(1).0.payload().clone() else {
        panic!()
    };
    let Payload::Elements { b: b2, .. } = run(2).0.payload().clone() else {
        panic!()
    };
    assert_ne!(b.support, b2.support);
}

#[test]
fn tlora_keeps_the_largest_magnitudes() {
    let c = client(9, 16, 12, 4, false);
    let (msg, _) = TLora::default()
        .compress(c.base.view(), c.update.view(), &Residual::Zero, 1)
        .unwrap();
    let Payload::Elements { b, .. } = msg.payload() else {
        panic!()
    };
    let Support::Some(ix) = &b.support else {
        panic!()
    };
    let flat: Vec<f32> = c.update.b.iter().copied().collect();
    let smallest_sent = ix
        .iter()
        .map(|&p| flat[p].abs())
        .fold(f32::INFINITY, f32::min);
    let largest_unsent = (0..flat.len())
        .filter(|p| !ix.contains(p))
        .map(|p| flat[p].abs())
        .fold(0.0, f32::max);
    assert!(smallest_sent >= largest_unsent);
    assert_eq!(b.values.len(), ix.len());
}

#[test]
fn slora_keeping_r_triplets_is_lossless_iff_the_update_has_rank_at_most_r() {
    let (d, l, r) = (12, 10, 3);
    let c = client(21, d, l, r, false);
    // Bᵗ = 0: ΔW = ΔB·Ã has rank ≤ r, so r triplets carry it all.
    let zb = Array2::<f32>::zeros((d, r));
    let base0 = FactorsView::new(zb.view(), c.base.a.view());
    let (msg, res) = SLora::default()
        .compress(base0, c.update.view(), &Residual::Zero, r)
        .unwrap();
    let Residual::Dense(e) = res else { panic!() };
    let want = product(&c.update.b, &(&c.base.a + &c.update.a));
    assert!(fro(&f64m(&e)) <= 1e-6 * fro(&want));
    let Decoded::Dense(w) = msg.decode().unwrap() else {
        panic!()
    };
    assert!(fro(&(&f64m(&w) - &want)) <= 1e-6 * fro(&want));
    assert_eq!(msg.index_bits(), 0);
    // Generic base: ΔW = ΔB·Ã + Bᵗ·ΔA has rank 2r > r, so r triplets are not enough.
    let (_, res) = SLora::default()
        .compress(c.base.view(), c.update.view(), &Residual::Zero, r)
        .unwrap();
    let Residual::Dense(e) = res else { panic!() };
    assert!(fro(&f64m(&e)) > 1e-3);
}

#[test]
fn non_standard_layouts_give_the_same_result() {
    let c = client(13, 11, 9, 3, true);
    // the same matrices stored column-major (transposed copies, viewed back)
    let bt_t = c.base.b.t().to_owned();
    let at_t = c.base.a.t().to_owned();
    let base_cm = FactorsView::new(bt_t.t(), at_t.t());
    for kind in [MethodKind::Soft, MethodKind::SoftDelta, MethodKind::TLora] {
        let s = kind.sparsifier(true, 0);
        let a = s
            .compress(c.base.view(), c.update.view(), &c.residual, 2)
            .unwrap();
        let b = s
            .compress(base_cm, c.update.view(), &c.residual, 2)
            .unwrap();
        assert_eq!(a, b, "{kind}");
    }
}

#[test]
fn messages_round_trip_through_serde() {
    let c = client(17, 8, 6, 4, true);
    for kind in MethodKind::ALL {
        let residual = if kind == MethodKind::SLora {
            Residual::Zero
        } else {
            c.residual.clone()
        };
        let (msg, _) = kind
            .sparsifier(true, 3)
            .compress(c.base.view(), c.update.view(), &residual, 2)
            .unwrap();
        let json = serde_json::to_string(&msg).unwrap();
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.bits(), msg.bits());
    }
    assert_eq!(
        serde_json::to_string(&MethodKind::SoftDelta).unwrap(),
        "\"soft_delta\""
    );
}

#[test]
fn orthogonality_report_is_zero_for_orthogonal_factors_only() {
    let (base, update, residual, sig) = orthogonal_client(4, 15, 13, 4);
    let (bt, at) = compensated(&base, &update, &residual);
    let f = Factors::new(bt.mapv(|x| x as f32), at.mapv(|x| x as f32));
    let rep = orthogonality_report(f.view()).unwrap();
    assert!(rep.relative_error < 1e-5, "{rep:?}");
    let mut want = sig.clone();
    want.sort_by(|a, b| b.total_cmp(a));
    for (a, b) in rep.singular_values.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4 * want[0]);
    }
    // generic factors: importances overestimate, error clearly > 0; the
    // singular values agree with a dense SVD of B·A.
    let c = client(8, 15, 13, 4, false);
    let rep = orthogonality_report(c.base.view()).unwrap();
    let dense = wflora_soft::svd(&product(&c.base.b, &c.base.a)).unwrap().s;
    for (a, b) in rep.singular_values.iter().zip(dense.iter()) {
        assert!((a - b).abs() < 1e-9 * dense[0]);
    }
    assert!(rep.relative_error > 0.05, "{rep:?}");
}
