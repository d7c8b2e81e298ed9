//! Selection + encoding time per client and adapted matrix: SOFT vs SLoRA,
//! against the memory-bandwidth floor (reading the factors once).
//!
//! Run: `cargo bench -p wflora-soft --bench select`. Times with
//! `std::time::Instant`: warm-up, then the median and minimum of repeated runs.
//! SLoRA at 4096×4096 takes most of a minute per run (one run); set
//! `SOFT_BENCH_QUICK=1` to skip it while iterating.

use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wflora_soft::{Factors, Residual, SLora, Soft, Sparsifier, components_for_ratio, importances};

/// Kept ratio of the runs: `m = ρ·r` components (2 of 8, 4 of 16, 16 of 64).
const RHO: f64 = 0.25;

fn gauss(rng: &mut StdRng, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        let x: f32 = StandardNormal.sample(rng);
        x * scale
    })
}

/// Median and minimum of `reps` timed runs after `warm` untimed ones.
fn time<T>(warm: usize, reps: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    for _ in 0..warm {
        black_box(f());
    }
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            black_box(f());
            s.elapsed()
        })
        .collect();
    t.sort();
    (t[t.len() / 2], t[0])
}

/// Sum of all elements of the given matrices, eight lanes (the floor).
fn read_all(ms: &[&Array2<f32>]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut tail = 0.0f32;
    for m in ms {
        let Some(s) = m.as_slice() else { continue };
        let c = s.chunks_exact(8);
        tail += c.remainder().iter().sum::<f32>();
        for ch in c {
            for k in 0..8 {
                lanes[k] += ch[k];
            }
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    println!("rho = {RHO}; times per client and adapted matrix, microseconds (median / min)");
    println!(
        "{:>16} | {:>17} | {:>17} | {:>17} | {:>17} | {:>17} | {:>19} | {:>9} | {:>10} | {:>10}",
        "(d, l, r)",
        "floor 4 arrays",
        "floor 6 arrays",
        "SOFT, e = 0",
        "SOFT, e != 0",
        "importances",
        "SLoRA (E != 0)",
        "SLoRA/SOFT",
        "SOFT0/fl4",
        "SOFT/fl6"
    );
    for &(d, l, r) in &[
        (192, 192, 8),
        (384, 384, 16),
        (768, 768, 16),
        (4096, 4096, 64),
    ] {
        let mut rng = StdRng::seed_from_u64(1);
        let base = Factors::new(gauss(&mut rng, d, r, 1.0), gauss(&mut rng, r, l, 1.0));
        let upd = Factors::new(gauss(&mut rng, d, r, 0.1), gauss(&mut rng, r, l, 0.1));
        let res = Factors::new(gauss(&mut rng, d, r, 0.05), gauss(&mut rng, r, l, 0.05));
        let residual = Residual::Factors(res.clone());
        let dense_res = Residual::Dense(gauss(&mut rng, d, l, 0.01));
        let m = components_for_ratio(RHO, r).expect("RHO is a valid ratio");
        let elems = (d * r + r * l) as f64;
        // enough repetitions for ~0.2 s per measurement
        let reps = ((2e8 / (elems * 40.0)) as usize).clamp(15, 20_000);

        let floor4 = time(reps / 5, reps, || {
            read_all(&[&base.b, &base.a, &upd.b, &upd.a])
        });
        let floor6 = time(reps / 5, reps, || {
            read_all(&[&base.b, &base.a, &upd.b, &upd.a, &res.b, &res.a])
        });
        let soft = Soft::default();
        let soft0 = time(reps / 5, reps, || {
            soft.compress(base.view(), upd.view(), &Residual::Zero, m)
        });
        let soft_e = time(reps / 5, reps, || {
            soft.compress(base.view(), upd.view(), &residual, m)
        });
        let imp = time(reps / 5, reps, || {
            importances(base.view(), upd.view(), &residual)
        });
        let quick = std::env::var_os("SOFT_BENCH_QUICK").is_some();
        let slora = if d >= 4096 && quick {
            (Duration::ZERO, Duration::ZERO)
        } else {
            let (sw, sr) = if d >= 4096 { (0, 1) } else { (1, 5) };
            time(sw, sr, || {
                SLora::default().compress(base.view(), upd.view(), &dense_res, m)
            })
        };
        println!(
            "{:>16} | {:>8.1} / {:>6.1} | {:>8.1} / {:>6.1} | {:>8.1} / {:>6.1} | {:>8.1} / {:>6.1} | {:>8.1} / {:>6.1} | {:>10.0} / {:>6.0} | {:>8.0}x | {:>9.2}x | {:>9.2}x",
            format!("({d}, {l}, {r})"),
            us(floor4.0),
            us(floor4.1),
            us(floor6.0),
            us(floor6.1),
            us(soft0.0),
            us(soft0.1),
            us(soft_e.0),
            us(soft_e.1),
            us(imp.0),
            us(imp.1),
            us(slora.0),
            us(slora.1),
            us(slora.0) / us(soft_e.0),
            us(soft0.0) / us(floor4.0),
            us(soft_e.0) / us(floor6.0),
        );
    }
}
