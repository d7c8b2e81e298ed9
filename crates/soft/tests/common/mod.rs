//! Shared helpers of the integration tests: seeded random factors and dense
//! reference computations (written independently of the crate's code).
#![allow(dead_code, clippy::unwrap_used)]

use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use wflora_soft::{Factors, Residual};

/// A seeded Gaussian matrix scaled by `scale`.
pub fn gauss(rng: &mut StdRng, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        let x: f32 = StandardNormal.sample(rng);
        x * scale
    })
}

/// One client's inputs: base, update, residual (all seeded).
pub struct Client {
    pub base: Factors,
    pub update: Factors,
    pub residual: Residual,
}

/// Random client inputs; `with_residual` adds a non-zero factor residual.
pub fn client(seed: u64, d: usize, l: usize, r: usize, with_residual: bool) -> Client {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Factors::new(gauss(&mut rng, d, r, 1.0), gauss(&mut rng, r, l, 1.0));
    let update = Factors::new(gauss(&mut rng, d, r, 0.1), gauss(&mut rng, r, l, 0.1));
    let residual = if with_residual {
        Residual::Factors(Factors::new(
            gauss(&mut rng, d, r, 0.05),
            gauss(&mut rng, r, l, 0.05),
        ))
    } else {
        Residual::Zero
    };
    Client {
        base,
        update,
        residual,
    }
}

/// `f64` copy.
pub fn f64m(a: &Array2<f32>) -> Array2<f64> {
    a.mapv(f64::from)
}

/// Dense `B·A` in `f64`.
pub fn product(b: &Array2<f32>, a: &Array2<f32>) -> Array2<f64> {
    f64m(b).dot(&f64m(a))
}

/// Frobenius norm.
pub fn fro(a: &Array2<f64>) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// A random `n×k` matrix with orthonormal columns (`k ≤ n`), from the thin QR
/// of a Gaussian matrix (faer).
pub fn orthonormal(rng: &mut StdRng, n: usize, k: usize) -> Array2<f64> {
    let g = gauss(rng, n, k, 1.0);
    let m = faer::Mat::<f64>::from_fn(n, k, |i, j| f64::from(g[[i, j]]));
    let q = m.qr().compute_thin_Q();
    Array2::from_shape_fn((n, k), |(i, j)| q[(i, j)])
}

/// `⌈log2 n⌉` by counting doublings (independent of the crate's bit trick).
pub fn ceil_log2(n: usize) -> u64 {
    let mut bits = 0;
    let mut reach = 1usize;
    while reach < n {
        reach *= 2;
        bits += 1;
    }
    bits
}

/// The rows `ix` of `a` (or columns, with `axis = 1`).
pub fn select(a: &Array2<f64>, axis: usize, ix: &[usize]) -> Array2<f64> {
    a.select(Axis(axis), ix)
}
