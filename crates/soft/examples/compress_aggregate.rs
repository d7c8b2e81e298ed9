//! SOFT end to end for one adapted matrix: a few clients compress their LoRA
//! factor updates, the server decodes and aggregates them.
//!
//! Four clients share the broadcast factors `B` (`d×r`) and `A` (`r×l`) and
//! each computes a random update `(ΔB, ΔA)`. Each client compresses its
//! update with [`Soft`] keeping `m` of the `r` rank components (ratio
//! `ρ = m/r`) and carries the unsent part in its error-feedback
//! [`Residual`] to the next round. The server decodes every message and
//! aggregates factor-wise with equal weights. Over three rounds the program
//! prints, per client, the kept ranks and the payload in bits (against the
//! budget and the uncompressed size), and per round the relative error of
//! the aggregated update against the uncompressed average `Σ_k p_k Δ_k`, as
//! well as how far the compressed trajectory lags the uncompressed one (what
//! error feedback still holds back).
//!
//! ```sh
//! cargo run -p wflora-soft --example compress_aggregate -- [KEPT] [SEED]
//! ```
//! (defaults: `KEPT = 3` of `r = 8` components, `SEED = 7`). Everything is
//! drawn from a seeded generator, so a run prints the same numbers every time.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wflora_soft::ndarray::{Array2, ArrayView2};
use wflora_soft::{
    Decoded, Dims, Factors, Message, Payload, Residual, Soft, Sparsifier, Support, aggregate,
    budget,
};

/// Output dimension of the adapted weight.
const D: usize = 64;
/// Input dimension of the adapted weight.
const L: usize = 48;
/// LoRA rank.
const R: usize = 8;
/// Number of clients.
const CLIENTS: usize = 4;
/// Federated rounds.
const ROUNDS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kept: usize = match args.first() {
        Some(s) => s
            .parse()
            .map_err(|e| format!("KEPT must be a whole number, got {s:?}: {e}"))?,
        None => 3,
    };
    if !(1..=R).contains(&kept) {
        return Err(format!("KEPT must be in 1..={R}, got {kept}").into());
    }
    let seed: u64 = match args.get(1) {
        Some(s) => s
            .parse()
            .map_err(|e| format!("SEED must be a whole number, got {s:?}: {e}"))?,
        None => 7,
    };
    let rho = kept as f64 / R as f64;
    let dims = Dims { d: D, l: L, r: R };
    let mut rng = StdRng::seed_from_u64(seed);

    // Broadcast factors with decaying component scales, so that the SOFT
    // importances ‖b̃_i‖·‖ã_i‖ differ from component to component.
    let scale = |i: usize| 0.95f32.powf(i as f32);
    let mut global = Factors::new(
        gauss(&mut rng, D, R, 1.0) * &row_of(scale),
        gauss(&mut rng, R, L, 1.0) * &column_of(scale),
    );
    // The same rounds without compression, for comparison.
    let mut dense_global = global.clone();
    let mut residuals = vec![Residual::Zero; CLIENTS];
    let p = 1.0 / CLIENTS as f64;

    let cap = budget(dims, kept)?;
    let full = budget(dims, R)?;
    println!("d = {D}, l = {L}, r = {R}, {CLIENTS} clients, SOFT keeps m = {kept} (ρ = {rho:.3})");
    println!(
        "budget of m = {kept}: {} bits ({} values + {} index bits); uncompressed: {} values = {} bits",
        cap.total(),
        cap.values,
        cap.index_bits,
        full.values,
        full.values * wflora_soft::VALUE_BITS
    );

    for round in 0..ROUNDS {
        println!("\nround {round}");
        let mut messages: Vec<Message> = Vec::with_capacity(CLIENTS);
        let mut mean_update = Factors::zeros(dims);
        let mut decoded_sum = Factors::zeros(dims);
        for (k, residual) in residuals.iter_mut().enumerate() {
            // A client's update: small, with its own per-component emphasis.
            let emphasis: Vec<f32> = (0..R).map(|_| rng.random_range(0.2f32..1.5)).collect();
            let update = Factors::new(
                gauss(&mut rng, D, R, 0.3) * &row_of(|i| emphasis[i]),
                gauss(&mut rng, R, L, 0.3) * &column_of(|i| emphasis[i]),
            );
            let (msg, next) =
                Soft::default().compress(global.view(), update.view(), residual, kept)?;
            *residual = next;
            let pending = match residual {
                Residual::Factors(e) => fro(e.b.view()).hypot(fro(e.a.view())),
                _ => 0.0,
            };
            println!(
                "  client {k}: kept ranks {:?}, payload {} bits ({} values + {} index bits, \
                 {:.1}% of uncompressed), residual ‖e‖ = {pending:.4}",
                kept_ranks(&msg),
                msg.bits(),
                msg.value_count(),
                msg.index_bits(),
                100.0 * msg.bits() as f64 / (full.values * wflora_soft::VALUE_BITS) as f64,
            );
            // What the server sees of this client: the sent entries, zeros elsewhere.
            if let Decoded::Factors(c) = msg.decode()? {
                decoded_sum.b.scaled_add(p as f32, &c.b);
                decoded_sum.a.scaled_add(p as f32, &c.a);
            }
            mean_update.b.scaled_add(p as f32, &update.b);
            mean_update.a.scaled_add(p as f32, &update.a);
            messages.push(msg);
        }

        let weighted: Vec<(f64, &Message)> = messages.iter().map(|m| (p, m)).collect();
        let next = aggregate(global.view(), &weighted)?;
        let sent_b = &next.b - &global.b;
        let sent_a = &next.a - &global.a;
        // `aggregate` decodes and sums in f64; the f32 sum of the decoded
        // messages above agrees with it to rounding.
        let check =
            fro((&sent_b - &decoded_sum.b).view()).hypot(fro((&sent_a - &decoded_sum.a).view()));
        let err_b = fro((&sent_b - &mean_update.b).view()) / fro(mean_update.b.view());
        let err_a = fro((&sent_a - &mean_update.a).view()) / fro(mean_update.a.view());
        global = next;
        dense_global.b += &mean_update.b;
        dense_global.a += &mean_update.a;
        let lag_b = fro((&global.b - &dense_global.b).view()) / fro(dense_global.b.view());
        let lag_a = fro((&global.a - &dense_global.a).view()) / fro(dense_global.a.view());
        let product = global.b.dot(&global.a);
        let dense_product = dense_global.b.dot(&dense_global.a);
        let lag_ba = fro((&product - &dense_product).view()) / fro(dense_product.view());
        println!("  server: aggregate = base + Σ p_k·decode(msg_k) (difference {check:.1e})");
        println!(
            "  aggregate vs uncompressed average update: ‖·‖_F relative error \
             B {err_b:.3}, A {err_a:.3}"
        );
        println!(
            "  global factors vs uncompressed run: B {lag_b:.4}, A {lag_a:.4}, B·A {lag_ba:.4} \
             (relative)"
        );
    }
    Ok(())
}

/// A seeded `rows×cols` matrix of standard normals (Box–Muller), times `scale`.
fn gauss(rng: &mut StdRng, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| {
        let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let v: f64 = rng.random();
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        #[allow(clippy::cast_possible_truncation)]
        let z = z as f32;
        z * scale
    })
}

/// `1×r`: multiplies column `i` of a `d×r` matrix by `f(i)` (broadcast).
fn row_of(f: impl Fn(usize) -> f32) -> Array2<f32> {
    Array2::from_shape_fn((1, R), |(_, i)| f(i))
}

/// `r×1`: multiplies row `i` of an `r×l` matrix by `f(i)` (broadcast).
fn column_of(f: impl Fn(usize) -> f32) -> Array2<f32> {
    Array2::from_shape_fn((R, 1), |(i, _)| f(i))
}

/// Frobenius norm, accumulated in `f64`.
fn fro(m: ArrayView2<'_, f32>) -> f64 {
    m.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// The rank components a component message carries.
fn kept_ranks(msg: &Message) -> Vec<usize> {
    match msg.payload() {
        Payload::Components {
            support: Support::Some(ix),
            ..
        } => ix.clone(),
        Payload::Components {
            support: Support::All,
            ..
        } => (0..msg.dims().r).collect(),
        _ => Vec::new(),
    }
}
