//! Timing of loading the embedded dataset and of the partitioners
//! (std `Instant`, warm-up then median and min of repeated runs).

use std::time::{Duration, Instant};

fn time<T>(name: &str, reps: usize, mut f: impl FnMut() -> T) {
    drop(f());
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            let out = f();
            let d = s.elapsed();
            drop(std::hint::black_box(out));
            d
        })
        .collect();
    t.sort();
    println!(
        "{name:<44} {:>10.3} {:>10.3}",
        t[t.len() / 2].as_secs_f64() * 1e3,
        t[0].as_secs_f64() * 1e3
    );
}

fn main() -> Result<(), wflora_data::DataError> {
    println!("{:<44} {:>10} {:>10}", "operation", "median ms", "min ms");
    time(
        "fashion_mnist_test (verify + decode)",
        10,
        wflora_data::fashion_mnist_test,
    );
    let ds = wflora_data::fashion_mnist_test()?;
    time("sha256 of embedded images", 10, || {
        wflora_data::sha256_hex(&[0_u8; 4_422_079])
    });
    time("keep_classes 5..9", 10, || {
        ds.keep_classes(&[5, 6, 7, 8, 9])
    });
    time("stratified_split 0.2", 10, || ds.stratified_split(0.2, 1));
    time("channel_stats", 10, || ds.channel_stats());
    time("resize_bilinear 28->32 (10k)", 5, || {
        ds.resize_bilinear(32, 32)
    });
    let resized = ds.resize_bilinear(32, 32)?;
    time("replicate_channels 1->3 (10k, 32x32)", 5, || {
        resized.replicate_channels(3)
    });
    time("iid K=10", 10, || wflora_data::iid(ds.len(), 10, 1));
    let p = wflora_data::DirichletParams {
        num_clients: 100,
        alpha: 0.1,
        min_size: 10,
        max_attempts: 1000,
    };
    time("dirichlet K=100 alpha=0.1 min 10", 10, || {
        wflora_data::dirichlet(ds.labels(), 10, &p, 1)
    });
    time("shards K=100 s=2", 10, || {
        wflora_data::shards(ds.labels(), 100, 2, 1)
    });
    let idx: Vec<usize> = (0..ds.len()).collect();
    time("one epoch of batches of 32 (copied)", 5, || {
        ds.batches(&idx, 32, wflora_data::LastBatch::Keep, Some(1))
            .map(|it| it.map(|b| b.len()).sum::<usize>())
    });
    Ok(())
}
