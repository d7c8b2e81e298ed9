//! The orthogonality regulariser: hand values, an independent implementation,
//! and autograd gradients against central finite differences (f64).

use candle_core::{DType, Device, Tensor, Var};
use ndarray::{Array2, array};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{RegulariserKind, orthogonality_penalty, orthogonality_value};

fn tensor(a: &Array2<f32>) -> Tensor {
    Tensor::from_vec(a.iter().copied().collect::<Vec<_>>(), a.dim(), &Device::Cpu).unwrap()
}

fn value(b: &Array2<f32>, a: &Array2<f32>, kind: RegulariserKind) -> f64 {
    f64::from(
        orthogonality_penalty(&tensor(b), &tensor(a), kind)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    )
}

#[test]
fn plain_value_by_hand() {
    // B columns b1 = (1, 2, 0), b2 = (0, 1, 1): b1·b2 = 2, so the off-diagonal
    // of BᵀB contributes 2·2² = 8. A rows a1 = (1, 1), a2 = (1, -1): a1·a2 = 0.
    let b = array![[1.0f32, 0.0], [2.0, 1.0], [0.0, 1.0]];
    let a = array![[1.0f32, 1.0], [1.0, -1.0]];
    assert!((value(&b, &a, RegulariserKind::Plain) - 8.0).abs() < 1e-6);
    // Scale-invariant: cos(b1, b2) = 2/(√5·√2), squared 0.4, twice: 0.8.
    assert!((value(&b, &a, RegulariserKind::ScaleInvariant) - 0.8).abs() < 1e-5);
    // Rescaling a column changes the plain value by the square of the factor
    // and leaves the scale-invariant one alone.
    let b3 = array![[3.0f32, 0.0], [6.0, 1.0], [0.0, 1.0]];
    assert!((value(&b3, &a, RegulariserKind::Plain) - 72.0).abs() < 1e-4);
    assert!((value(&b3, &a, RegulariserKind::ScaleInvariant) - 0.8).abs() < 1e-5);
}

#[test]
fn zero_factors_give_zero_in_both_forms() {
    let b = Array2::<f32>::zeros((5, 3));
    let a = Array2::<f32>::zeros((3, 4));
    for kind in [RegulariserKind::Plain, RegulariserKind::ScaleInvariant] {
        assert_eq!(value(&b, &a, kind), 0.0);
        assert_eq!(orthogonality_value(&b, &a, kind).unwrap(), 0.0);
    }
}

#[test]
fn rank_mismatch_is_a_typed_error() {
    let b = tensor(&Array2::zeros((5, 3)));
    let a = tensor(&Array2::zeros((2, 4)));
    assert!(orthogonality_penalty(&b, &a, RegulariserKind::Plain).is_err());
    assert!(
        orthogonality_value(
            &Array2::zeros((5, 3)),
            &Array2::zeros((2, 4)),
            RegulariserKind::Plain
        )
        .is_err()
    );
}

fn matrix(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f32>> {
    prop::collection::vec(-2.0f32..2.0, rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The tensor implementation agrees with the loop implementation, and both are ≥ 0.
    #[test]
    fn tensor_and_loop_implementations_agree(
        (b, a) in (1usize..5, 1usize..7, 1usize..7).prop_flat_map(|(r, d, l)| (matrix(d, r), matrix(r, l)))
    ) {
        for kind in [RegulariserKind::Plain, RegulariserKind::ScaleInvariant] {
            let t = value(&b, &a, kind);
            let l = orthogonality_value(&b, &a, kind).unwrap();
            prop_assert!(l >= 0.0);
            prop_assert!((t - l).abs() <= 1e-4 * (1.0 + l), "{kind:?}: {t} vs {l}");
        }
    }

    /// Orthogonal columns and rows (a permuted, scaled identity) give 0.
    #[test]
    fn orthogonal_factors_give_zero(r in 1usize..6, scale in 0.1f32..3.0) {
        let b = Array2::from_shape_fn((r + 2, r), |(i, j)| if i == j { scale * (j + 1) as f32 } else { 0.0 });
        let a = Array2::from_shape_fn((r, r + 1), |(i, j)| if (i + 1) % r == j % r && j < r { scale } else { 0.0 });
        prop_assert_eq!(orthogonality_value(&b, &a, RegulariserKind::Plain).unwrap(), 0.0);
        prop_assert!(value(&b, &a, RegulariserKind::Plain).abs() < 1e-9);
    }
}

/// Autograd gradient of the penalty in f64 against central differences of
/// the penalty itself (step 1e-6, relative tolerance 1e-6).
fn seeded(rows: usize, cols: usize, rng: &mut StdRng) -> Tensor {
    let v: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

fn check_gradient(kind: RegulariserKind, seed: u64) {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(seed);
    let b0 = seeded(5, 3, &mut rng);
    let a0 = seeded(3, 4, &mut rng);
    let b = Var::from_tensor(&b0).unwrap();
    let a = Var::from_tensor(&a0).unwrap();
    let pen = orthogonality_penalty(b.as_tensor(), a.as_tensor(), kind).unwrap();
    assert_eq!(pen.dtype(), DType::F64);
    let grads = pen.backward().unwrap();
    let f = |bv: &[f64], av: &[f64]| -> f64 {
        let bt = Tensor::from_slice(bv, (5, 3), &dev).unwrap();
        let at = Tensor::from_slice(av, (3, 4), &dev).unwrap();
        orthogonality_penalty(&bt, &at, kind)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let bv = b0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let av = a0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let gb = grads
        .get(b.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let ga = grads
        .get(a.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let h = 1e-6;
    for i in 0..bv.len() {
        let (mut p, mut m) = (bv.clone(), bv.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (f(&p, &av) - f(&m, &av)) / (2.0 * h);
        assert!(
            (fd - gb[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{kind:?} dB[{i}]: {fd} vs {}",
            gb[i]
        );
    }
    for i in 0..av.len() {
        let (mut p, mut m) = (av.clone(), av.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (f(&bv, &p) - f(&bv, &m)) / (2.0 * h);
        assert!(
            (fd - ga[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{kind:?} dA[{i}]: {fd} vs {}",
            ga[i]
        );
    }
}

#[test]
fn plain_gradient_matches_finite_differences() {
    check_gradient(RegulariserKind::Plain, 1);
}

#[test]
fn scale_invariant_gradient_matches_finite_differences() {
    check_gradient(RegulariserKind::ScaleInvariant, 2);
}

#[test]
fn plain_gradient_closed_form() {
    // ∂/∂B ‖BᵀB − diag‖² = 4·B·(BᵀB − diag(BᵀB)) (a standard identity), likewise
    // ∂/∂A = 4·(AAᵀ − diag(AAᵀ))·A.
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(3);
    let b = Var::from_tensor(&seeded(4, 3, &mut rng)).unwrap();
    let a = Var::from_tensor(&seeded(3, 5, &mut rng)).unwrap();
    let g = orthogonality_penalty(b.as_tensor(), a.as_tensor(), RegulariserKind::Plain)
        .unwrap()
        .backward()
        .unwrap();
    let off = |m: &Tensor| -> Tensor {
        let eye = Tensor::eye(3, DType::F64, &dev).unwrap();
        (m - m.mul(&eye).unwrap()).unwrap()
    };
    let bt = b.as_tensor();
    let at = a.as_tensor();
    let gb = (bt
        .matmul(&off(&bt.t().unwrap().matmul(bt).unwrap()))
        .unwrap()
        * 4.0)
        .unwrap();
    let ga = (off(&at.matmul(&at.t().unwrap()).unwrap())
        .matmul(at)
        .unwrap()
        * 4.0)
        .unwrap();
    let d1 = (g.get(bt).unwrap() - gb)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let d2 = (g.get(at).unwrap() - ga)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(d1 < 1e-10 && d2 < 1e-10, "{d1} {d2}");
}
