//! Cost of the rate model's inverse, `Uplink::min_share`.
//!
//! Run: `cargo bench -p wflora-channel --bench rate`

use std::hint::black_box;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_channel::Uplink;

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let n = 100_000;
    // full-band SNR 10^[-3, 6], required rate a fraction 10^[-6, 0) of the cap
    let cases: Vec<(Uplink, f64)> = (0..n)
        .map(|_| {
            let a = 10f64.powf(rng.random_range(-3.0..6.0));
            let l = Uplink::new(0.2, a * 2e7 * 4e-21 / 0.2, 2e7, 4e-21)
                .unwrap_or_else(|e| panic!("{e}"));
            let frac = 10f64.powf(rng.random_range(-6.0..-1e-4));
            (l, frac * l.rate_cap_bps())
        })
        .collect();
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut acc = 0.0;
        for (l, r) in &cases {
            acc += l.min_share(black_box(*r), 1.0).unwrap_or(0.0);
        }
        black_box(acc);
        runs.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "min_share: median {:.1} ns, min {:.1} ns per call",
        runs[3], runs[0]
    );
    let t = Instant::now();
    let mut acc = 0.0;
    for (l, _) in &cases {
        acc += l.rate_bps(black_box(0.3));
    }
    black_box(acc);
    println!(
        "rate_bps:  {:.1} ns per call",
        t.elapsed().as_secs_f64() * 1e9 / n as f64
    );
}
