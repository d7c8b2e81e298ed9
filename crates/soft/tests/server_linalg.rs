//! Server aggregation and the SVD wrapper.
#![allow(clippy::unwrap_used)]

mod common;

use common::{client, f64m, fro, gauss, product};
use ndarray::{Array2, array};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wflora_soft::{
    Decoded, Factors, FactorsView, MethodKind, Residual, SLora, Soft, Sparsifier, aggregate,
    product_singular_values, svd, thin_svd, truncated_svd,
};

#[test]
fn factor_wise_aggregation_by_hand() {
    // d = 2, l = 2, r = 2. Bᵗ = I, Aᵗ = I. Client 1 (p = 0.25) sends component 0
    // with U_B[:,0] = (1, 2), U_A[0,:] = (4, 0); client 2 (p = 0.75) sends
    // component 1 with U_B[:,1] = (0, 4), U_A[1,:] = (0, 8).
    // Hand result: B = I + 0.25·[[1,0],[2,0]] + 0.75·[[0,0],[0,4]] = [[1.25, 0], [0.5, 4]],
    //              A = I + 0.25·[[4,0],[0,0]] + 0.75·[[0,0],[0,8]] = [[2, 0], [0, 7]].
    let eye = array![[1.0f32, 0.0], [0.0, 1.0]];
    let base = FactorsView::new(eye.view(), eye.view());
    let send = |ub: Array2<f32>, ua: Array2<f32>| {
        Soft::default()
            .compress(
                base,
                FactorsView::new(ub.view(), ua.view()),
                &Residual::Zero,
                1,
            )
            .unwrap()
            .0
    };
    let m1 = send(
        array![[1.0, 0.0], [2.0, 0.0]],
        array![[4.0, 0.0], [0.0, 0.0]],
    );
    let m2 = send(
        array![[0.0, 0.0], [0.0, 4.0]],
        array![[0.0, 0.0], [0.0, 8.0]],
    );
    let new = aggregate(base, &[(0.25, &m1), (0.75, &m2)]).unwrap();
    assert_eq!(new.b, array![[1.25f32, 0.0], [0.5, 4.0]]);
    assert_eq!(new.a, array![[2.0f32, 0.0], [0.0, 7.0]]);
    // no messages: unchanged
    assert_eq!(
        aggregate(base, &[]).unwrap(),
        Factors::new(eye.clone(), eye.clone())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Factor-wise aggregation = base + Σ p_k·decode(msg_k), for every factor method.
    #[test]
    fn factor_wise_aggregation_is_the_weighted_sum(
        seed in any::<u64>(), d in 1usize..16, l in 1usize..16, r in 1usize..6,
        mf in 0.0f64..1.0, k in 1usize..5,
    ) {
        let m = (1 + (r as f64 * mf) as usize).min(r);
        for kind in MethodKind::ALL.into_iter().filter(|m| m.is_factor_wise()) {
            let base = client(seed, d, l, r, false).base;
            let msgs: Vec<_> = (0..k)
                .map(|i| {
                    let c = client(seed.wrapping_add(i as u64 + 1), d, l, r, true);
                    kind.sparsifier(true, i as u64)
                        .compress(base.view(), c.update.view(), &c.residual, m)
                        .unwrap()
                        .0
                })
                .collect();
            let p: Vec<f64> = (0..k).map(|i| (i + 1) as f64 / (k * (k + 1) / 2) as f64).collect();
            let pairs: Vec<_> = p.iter().copied().zip(msgs.iter()).collect();
            let new = aggregate(base.view(), &pairs).unwrap();
            let mut want_b = f64m(&base.b);
            let mut want_a = f64m(&base.a);
            for (pk, m) in &pairs {
                let Decoded::Factors(f) = m.decode().unwrap() else { panic!() };
                want_b = want_b + f64m(&f.b) * *pk;
                want_a = want_a + f64m(&f.a) * *pk;
            }
            prop_assert!(fro(&(f64m(&new.b) - &want_b)) <= 1e-6 * (1.0 + fro(&want_b)));
            prop_assert!(fro(&(f64m(&new.a) - &want_a)) <= 1e-6 * (1.0 + fro(&want_a)));
        }
    }

    /// SLoRA's refactoring of a rank-≤r sum reproduces the product: every
    /// client's ΔW lies in the column space of a fixed d×r basis P.
    #[test]
    fn slora_refactor_reproduces_a_rank_r_sum(
        seed in any::<u64>(), d in 4usize..16, l in 4usize..16, r in 1usize..4, k in 1usize..4,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = gauss(&mut rng, d, r, 1.0);
        let mix = |rng: &mut StdRng| p.mapv(f64::from).dot(&gauss(rng, r, r, 1.0).mapv(f64::from)).mapv(|x| x as f32);
        let base = Factors::new(mix(&mut rng), gauss(&mut rng, r, l, 1.0));
        let mut want = product(&base.b, &base.a);
        // f32 rounding scales with the summands, not with their sum: when the
        // clients' updates nearly cancel the base (seen in CI: ‖want‖ ≈ 9e-3
        // from terms of size ≈ 10) a relative-to-result bound is too tight.
        let mut scale = fro(&want);
        let mut msgs = Vec::new();
        for i in 0..k {
            let update = Factors::new(mix(&mut rng), gauss(&mut rng, r, l, 0.3));
            let (m, _) = SLora::default().compress(base.view(), update.view(), &Residual::Zero, r).unwrap();
            let w = (i + 1) as f64 / k as f64;
            let dw = product(&update.b, &(&base.a + &update.a)) + product(&base.b, &update.a);
            scale += w * fro(&dw);
            want = want + dw * w;
            msgs.push((w, m));
        }
        let pairs: Vec<_> = msgs.iter().map(|(w, m)| (*w, m)).collect();
        let new = aggregate(base.view(), &pairs).unwrap();
        let got = product(&new.b, &new.a);
        prop_assert!(fro(&(&got - &want)) <= 1e-5 * scale, "{} vs {} (terms {})", fro(&(&got - &want)), fro(&want), scale);
        // balanced factors: BᵀB = AAᵀ = Σ_r
        let btb = f64m(&new.b).t().dot(&f64m(&new.b));
        let aat = f64m(&new.a).dot(&f64m(&new.a).t());
        prop_assert!(fro(&(&btb - &aat)) <= 1e-4 * (1.0 + fro(&btb)));
    }

    /// In general SLoRA's server step is the best rank-r approximation of
    /// BᵗAᵗ + Σ p_k Ŵ_k: compare with a dense truncated SVD.
    #[test]
    fn slora_refactor_is_the_dense_truncated_svd(seed in any::<u64>(), d in 3usize..14, l in 3usize..14, r in 1usize..4) {
        let base = client(seed, d, l, r, false).base;
        let c1 = client(seed ^ 5, d, l, r, false);
        let c2 = client(seed ^ 9, d, l, r, false);
        let (m1, _) = SLora::default().compress(base.view(), c1.update.view(), &Residual::Zero, r).unwrap();
        let (m2, _) = SLora::default().compress(base.view(), c2.update.view(), &Residual::Zero, r).unwrap();
        let new = aggregate(base.view(), &[(0.5, &m1), (0.5, &m2)]).unwrap();
        let Decoded::Dense(w1) = m1.decode().unwrap() else { panic!() };
        let Decoded::Dense(w2) = m2.decode().unwrap() else { panic!() };
        let w = product(&base.b, &base.a) + f64m(&w1) * 0.5 + f64m(&w2) * 0.5;
        let t = truncated_svd(&w, r).unwrap();
        let s = svd(&w).unwrap().s;
        // skip near-degenerate cases where the rank-r truncation is not unique
        prop_assume!(s.len() <= r || s[r - 1] - s[r] > 1e-3 * s[0]);
        let best = (&t.u * &t.s).dot(&t.vt);
        let got = product(&new.b, &new.a);
        prop_assert!(fro(&(&got - &best)) <= 1e-4 * fro(&w));
    }

    /// svd / thin_svd reconstruct the matrix with orthonormal factors and
    /// sorted non-negative singular values.
    #[test]
    fn svd_reconstructs(seed in any::<u64>(), n in 1usize..12, p in 1usize..12) {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = gauss(&mut rng, n, p, 1.0);
        let a64 = f64m(&a);
        for dec in [svd(&a).unwrap(), thin_svd(&a).unwrap()] {
            let k = dec.s.len();
            prop_assert_eq!(k, n.min(p));
            let uk = dec.u.slice_axis(ndarray::Axis(1), (..k).into()).to_owned();
            let vk = dec.vt.slice_axis(ndarray::Axis(0), (..k).into()).to_owned();
            let rec = (&uk * &dec.s).dot(&vk);
            prop_assert!(fro(&(&rec - &a64)) <= 1e-10 * (1.0 + fro(&a64)));
            let utu = dec.u.t().dot(&dec.u);
            prop_assert!(fro(&(&utu - &Array2::<f64>::eye(utu.nrows()))) <= 1e-10);
            let vvt = dec.vt.dot(&dec.vt.t());
            prop_assert!(fro(&(&vvt - &Array2::<f64>::eye(vvt.nrows()))) <= 1e-10);
            prop_assert!(dec.s.windows(2).into_iter().all(|w| w[0] >= w[1] && w[1] >= 0.0));
        }
        // f64 input gives the same singular values
        let s64 = svd(&a64).unwrap().s;
        prop_assert!(s64.iter().zip(svd(&a).unwrap().s.iter()).all(|(x, y)| (x - y).abs() < 1e-12));
    }

    /// Singular values of B·A from QR + core SVD equal those of the dense product.
    #[test]
    fn product_singular_values_match_dense(seed in any::<u64>(), d in 1usize..14, l in 1usize..14, r in 1usize..7) {
        let c = client(seed, d, l, r, false);
        let fast = product_singular_values(&c.base.b, &c.base.a).unwrap();
        prop_assert_eq!(fast.len(), r);
        let dense = svd(&product(&c.base.b, &c.base.a)).unwrap().s;
        let scale = 1.0 + dense[0];
        for (i, f) in fast.iter().enumerate() {
            let want = dense.get(i).copied().unwrap_or(0.0);
            prop_assert!((f - want).abs() <= 1e-9 * scale, "{i}: {f} vs {want}");
        }
    }
}

#[test]
fn truncated_svd_keeps_the_leading_triplets() {
    let mut rng = StdRng::seed_from_u64(1);
    let a = gauss(&mut rng, 7, 5, 1.0);
    let full = thin_svd(&a).unwrap();
    let t = truncated_svd(&a, 2).unwrap();
    assert_eq!(t.u.dim(), (7, 2));
    assert_eq!(t.vt.dim(), (2, 5));
    assert_eq!(t.s.as_slice().unwrap(), &full.s.as_slice().unwrap()[..2]);
    assert_eq!(truncated_svd(&a, 9).unwrap().s.len(), 5);
}
