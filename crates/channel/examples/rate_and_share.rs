//! One client's uplink: its rate at a few bandwidth shares, and the least
//! share that delivers a payload by a deadline.
//!
//! The client sits `DISTANCE_M` metres from the base station under the
//! default [`ChannelConfig`] (20 MHz, 23 dBm, −174 dBm/Hz, path loss
//! `128.1 + 37.6·log10(d_km)` dB). The program prints the path loss and the
//! full-band SNR at the mean channel (`|h|² = 1`) and at one seeded Rayleigh
//! draw, the FDMA rate `R(β)` at several shares `β` and its cap, then the
//! least share [`Uplink::min_share`] that uploads `PAYLOAD_BITS` within
//! `DEADLINE_S` seconds, checked by timing the upload at that share.
//!
//! ```sh
//! cargo run -p wflora-channel --example rate_and_share -- [DISTANCE_M] [PAYLOAD_BITS] [DEADLINE_S] [SEED]
//! ```
//! (defaults: 250 m, 4.72e6 bits — a rank-8 SOFT payload on 24 matrices of
//! 384×384 —, 0.1 s, seed 11).

use wflora_channel::units::linear_to_db;
use wflora_channel::{ChannelConfig, Uplink, fading_power, path_gain, path_loss_db};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let distance_m: f64 = parse(args.first(), "DISTANCE_M", 250.0)?;
    let bits: f64 = parse(args.get(1), "PAYLOAD_BITS", 4.72e6)?;
    let deadline_s: f64 = parse(args.get(2), "DEADLINE_S", 0.1)?;
    let seed: u64 = parse(args.get(3), "SEED", 11)?;
    if !(distance_m.is_finite() && distance_m > 0.0) {
        return Err(format!("DISTANCE_M must be a finite distance > 0, got {distance_m}").into());
    }

    let config = ChannelConfig::default();
    config.validate()?;
    let gain = path_gain(distance_m);
    let mean = Uplink::new(
        config.tx_power_w(),
        gain,
        config.bandwidth_hz,
        config.noise_psd_w_per_hz(),
    )?;
    // One block-fading draw |h|² ~ Exp(1) (client 0, round 0 of this seed).
    let fading = fading_power(seed, 0, 0);
    let faded = Uplink::new(
        config.tx_power_w(),
        gain * fading,
        config.bandwidth_hz,
        config.noise_psd_w_per_hz(),
    )?;

    println!(
        "client at {distance_m} m: path loss {:.1} dB, W = {} MHz, P = {} dBm",
        path_loss_db(distance_m),
        config.bandwidth_hz / 1e6,
        config.tx_power_dbm
    );
    for (name, link) in [("mean channel", mean), ("faded", faded)] {
        let label = if name == "faded" {
            format!("{name} (|h|² = {fading:.3})")
        } else {
            name.to_string()
        };
        println!(
            "\n{label}: full-band SNR {:.1} dB, rate cap {:.1} Mbit/s",
            linear_to_db(link.snr_full_band()),
            link.rate_cap_bps() / 1e6
        );
        for share in [0.05, 0.1, 0.25, 0.5, 1.0] {
            println!(
                "  β = {share:<4}: R = {:7.2} Mbit/s, {bits:.3e} bits in {:.4} s",
                link.rate_bps(share) / 1e6,
                link.airtime_s(bits, share)
            );
        }
        match link.min_share(bits, deadline_s) {
            Some(beta) => println!(
                "  least share for {bits:.3e} bits within {deadline_s} s: β = {beta:.4} \
                 ({:.2} MHz; upload takes {:.6} s at that share){}",
                beta * config.bandwidth_hz / 1e6,
                link.airtime_s(bits, beta),
                if beta > 1.0 {
                    " — more than the whole band"
                } else {
                    ""
                }
            ),
            None => println!(
                "  no share meets {deadline_s} s: even unlimited bandwidth needs {:.4} s",
                link.min_airtime_s(bits)
            ),
        }
    }
    Ok(())
}

/// Parses an optional positional argument, or returns the default.
fn parse<T: std::str::FromStr>(arg: Option<&String>, name: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match arg {
        Some(s) => s
            .parse()
            .map_err(|e| format!("{name}: cannot parse {s:?}: {e}")),
        None => Ok(default),
    }
}
