//! # wflora-channel: the wireless uplink of one federated round
//!
//! This crate answers one question for the rest of wflora: *how long does a
//! client take to compute and upload `S` bits with a given share of the
//! band, and what does it cost in energy?* It models docs/method.md §3:
//!
//! * placement uniform in the area of an annulus around the base station
//!   (radius 500 m, at least 50 m away), path loss `128.1 + 37.6·log10(d_km)` dB;
//! * block Rayleigh fading `|h|² ~ Exp(1)`, redrawn every round from a stream
//!   keyed by `(seed, client, round)`, so a client's channel does not depend
//!   on how many other clients exist or in which order they are queried;
//! * FDMA: `R(β) = β·W·log2(1 + P·g/(β·W·N0))`, its cap `P·g/(N0·ln 2)`, and
//!   its inverse [`Uplink::min_share`] (least share meeting a deadline, `None`
//!   when even unlimited bandwidth cannot);
//! * computation latency `E·batch·c/f` and energy `P·S/R + κ·f²·E·batch·c`,
//!   the synchronous round latency `max_k (T_cmp + S/R)`, and the
//!   latency-equalising split ([`equalising_split`]).
//!
//! * device-to-device links between two sites ([`Network::d2d_link`]):
//!   the same path loss at their distance, reciprocal per-pair fading, and
//!   a broadcast priced at its weakest receiver ([`broadcast_airtime_s`]),
//!   for decentralized training without a server.
//!
//! Every quantity carries its unit in its name (`_hz`, `_w`, `_dbm`, `_db`,
//! `_s`, `bits`); conversions live in [`units`].
//!
//! It deliberately knows nothing about LoRA, sparsifiers, queues or
//! optimisation: the allocator (`wflora-alloc`) decides shares and payloads,
//! the training loop decides the bits; this crate only prices them.
//!
//! ```
//! use wflora_channel::{ChannelConfig, Network, equalising_split};
//!
//! let net = Network::new(ChannelConfig::default(), 4, 42)?;
//! let links = net.uplinks(0); // round 0's CSI
//! let bits = [8e6; 4]; // 1 MB each
//! let t_cmp: Vec<f64> = net.sites().iter().map(|s| 3.2e8 / s.cpu_freq_hz).collect();
//! let split = equalising_split(&links, &t_cmp, &bits)?;
//! assert!((split.shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
//! for k in 0..4 {
//!     let t = t_cmp[k] + links[k].airtime_s(bits[k], split.shares[k]);
//!     assert!((t / split.finish_time_s - 1.0).abs() < 1e-9);
//! }
//! # Ok::<(), wflora_channel::ChannelError>(())
//! ```

mod config;
mod d2d;
mod error;
mod geometry;
mod latency;
mod link;
pub mod units;

pub use config::ChannelConfig;
pub use d2d::{MIN_D2D_DISTANCE_M, broadcast_airtime_s, site_distance_m, site_xy};
pub use error::ChannelError;
pub use geometry::{ClientSite, Network, draw_site, fading_power, path_gain, path_loss_db};
pub use latency::{
    ClientTiming, ComputeLoad, EqualisedSplit, equalising_split, finish_time_s, round_latency_s,
    upload_energy_j,
};
pub use link::Uplink;
