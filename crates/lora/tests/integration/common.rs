//! Shared helpers: a tiny configuration and synthetic data.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wflora_lora::{Backbone, VitConfig};

/// 8×8 grey images, patch 4 (5 tokens), width 8, 2 blocks, 2 heads, MLP 16,
/// LayerScale on (so every code path runs).
pub fn small_config() -> VitConfig {
    VitConfig {
        image_size: 8,
        in_channels: 1,
        patch_size: 4,
        width: 8,
        depth: 2,
        heads: 2,
        mlp_dim: 16,
        layer_scale: Some(0.7),
        ln_eps: 1e-6,
        text: None,
    }
}

pub fn small_backbone(seed: u64) -> Arc<Backbone> {
    Arc::new(Backbone::random(&small_config(), seed).unwrap())
}

/// `n` images of `cfg` with labels in `0..classes`; class `c` brightens the
/// `c`-th patch row band so the task is learnable.
pub fn synthetic(cfg: &VitConfig, n: usize, classes: u32, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let side = cfg.image_size;
    let mut images = Vec::with_capacity(n * cfg.pixels());
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = rng.random_range(0..classes);
        for _c in 0..cfg.in_channels {
            for y in 0..side {
                for x in 0..side {
                    let band = (y * classes as usize) / side;
                    let signal = if band == label as usize { 1.0 } else { 0.0 };
                    let _ = x;
                    images.push(signal + 0.3 * rng.random_range(-1.0f32..1.0));
                }
            }
        }
        labels.push(label);
    }
    (images, labels)
}

pub fn shape(cfg: &VitConfig, n: usize) -> [usize; 4] {
    [n, cfg.in_channels, cfg.image_size, cfg.image_size]
}

pub fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}
