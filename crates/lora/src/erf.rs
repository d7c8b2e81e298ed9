//! The standard normal cdf `Φ(x) = ½(1 + erf(x/√2))` over a slice, bit for
//! bit equal to candle's scalar `erf_f32` (the `libm` crate's `erff`, a port
//! of fdlibm's `s_erff.c`) but in a form the compiler vectorises.
//!
//! `erff` picks one of five formulas by `|x|`. The two for `|x| < 1.25`
//! are rational polynomials in plain `f32` arithmetic; here every element
//! selects its coefficients and runs the same instructions, a branch-free
//! loop that LLVM turns into SIMD code. IEEE `+ − × ÷` give the same bits in a vector
//! lane as in a scalar register, and Rust never contracts them into fused
//! multiply-adds, so each lane equals `erff` exactly. The elements outside
//! that range (`|x| ≥ 1.25`, which need `expf`, and the tiny, infinite or NaN
//! ones) are then recomputed by `erff` itself. For the GELU's inputs most
//! elements fall in the fast range; the result never depends on which path
//! an element took. `fast_path_is_bitwise_erff` checks it against `erff` on
//! a 1-in-61 sweep of every `f32` bit pattern.
//!
//! The coefficients are fdlibm's, as in the `libm` crate:
//!
//! ```text
//! Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
//! Developed at SunPro, a Sun Microsystems, Inc. business.
//! Permission to use, copy, modify, and distribute this
//! software is freely granted, provided that this notice
//! is preserved.
//! ```

use std::f32::consts::FRAC_1_SQRT_2;

use candle_core::cpu::erf::erf_f32;

const ERX: f32 = f32::from_bits(0x3f58_560b);
const PP0: f32 = f32::from_bits(0x3e03_75d4);
const PP1: f32 = f32::from_bits(0xbea6_6beb);
const PP2: f32 = f32::from_bits(0xbce9_528f);
const PP3: f32 = f32::from_bits(0xbbbd_1489);
const PP4: f32 = f32::from_bits(0xb7c7_56b1);
const QQ1: f32 = f32::from_bits(0x3ecb_bbce);
const QQ2: f32 = f32::from_bits(0x3d85_2a63);
const QQ3: f32 = f32::from_bits(0x3ba6_8116);
const QQ4: f32 = f32::from_bits(0x390a_ee49);
const QQ5: f32 = f32::from_bits(0xb684_e21a);
const PA0: f32 = f32::from_bits(0xbb1a_cdc6);
const PA1: f32 = f32::from_bits(0x3ed4_6805);
const PA2: f32 = f32::from_bits(0xbebe_9208);
const PA3: f32 = f32::from_bits(0x3ea2_fe54);
const PA4: f32 = f32::from_bits(0xbde3_1cc2);
const PA5: f32 = f32::from_bits(0x3d11_51b3);
const PA6: f32 = f32::from_bits(0xbb0d_f9c0);
const QA1: f32 = f32::from_bits(0x3dd9_f331);
const QA2: f32 = f32::from_bits(0x3f0a_5785);
const QA3: f32 = f32::from_bits(0x3d93_1ae7);
const QA4: f32 = f32::from_bits(0x3e01_3307);
const QA5: f32 = f32::from_bits(0x3c5f_6e13);
const QA6: f32 = f32::from_bits(0x3c44_5aa3);

/// `|x|` bit patterns (sign cleared) from which the fast formulas equal
/// `erff`: `2⁻²⁸ ≤ |x| < 1.25`.
const FAST_FROM: u32 = 0x3180_0000;
const FAST_TO: u32 = 0x3fa0_0000;
/// `|x| < 0.84375`: the first polynomial; above it the second.
const SMALL_TO: u32 = 0x3f58_0000;

/// `erff(x)` for `2⁻²⁸ ≤ |x| < 1.25`, branch-free (garbage elsewhere).
///
/// fdlibm evaluates one of two rational functions: for `|x| < 0.84375`,
/// `x + x·P(x²)/Q(x²)` with `P` of degree 4 and `Q` of degree 5; above it,
/// `±(1 − (1 − erx − P'(s)/Q'(s)))`, `s = |x| − 1`, both of degree 6. Here
/// each lane picks its variable and coefficients and runs one Horner
/// evaluation of degree 6 for each of `P`, `Q` and one division. The
/// shorter polynomials are padded with zero leading coefficients: the first
/// steps then give `c + v·0 = c` exactly (`v` is finite and the zero
/// positive), so every lane performs fdlibm's own operations in fdlibm's
/// order on the same values.
#[inline(always)]
fn erf_fast(x: f32) -> f32 {
    let bits = x.to_bits();
    let ix = bits & 0x7fff_ffff;
    let small = ix < SMALL_TO;
    let v = if small {
        x * x
    } else {
        f32::from_bits(ix) - 1.0
    };
    let c = |a: f32, b: f32| if small { a } else { b };
    let p = c(PP0, PA0)
        + v * (c(PP1, PA1)
            + v * (c(PP2, PA2)
                + v * (c(PP3, PA3) + v * (c(PP4, PA4) + v * (c(0.0, PA5) + v * c(0.0, PA6))))));
    let q = 1.0
        + v * (c(QQ1, QA1)
            + v * (c(QQ2, QA2)
                + v * (c(QQ3, QA3) + v * (c(QQ4, QA4) + v * (c(QQ5, QA5) + v * c(0.0, QA6))))));
    let ratio = p / q;
    let below = x + x * ratio;
    // `above` is positive, so setting the sign bit negates it.
    let above = 1.0 - (1.0 - ERX - ratio);
    let above = f32::from_bits(above.to_bits() | (bits & 0x8000_0000));
    if small { below } else { above }
}

/// Whether `erf_fast(x)` is `erff(x)`.
#[inline(always)]
fn fast_applies(x: f32) -> bool {
    let ix = x.to_bits() & 0x7fff_ffff;
    (FAST_FROM..FAST_TO).contains(&ix)
}

/// `Φ(x) = 0.5·(1 + erff(x·(1/√2)))` for every element, in order.
///
/// The branch-free loop runs under `pulp`'s runtime dispatch: on a CPU with
/// AVX2 it is compiled for AVX2 (eight lanes instead of SSE2's four), safely
/// and without assuming the feature at build time. Wider lanes run the same
/// IEEE operations, so the bits do not depend on the CPU.
pub(crate) fn normal_cdf(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    pulp::Arch::new().dispatch(|| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = 0.5 * (1.0 + erf_fast(v * FRAC_1_SQRT_2));
        }
    });
    for (o, &v) in out.iter_mut().zip(x) {
        let u = v * FRAC_1_SQRT_2;
        if !fast_applies(u) {
            *o = 0.5 * (1.0 + erf_f32(u));
        }
    }
    out
}

/// The scalar `Φ(x)` the slice version reproduces.
#[cfg(test)]
pub(crate) fn normal_cdf_scalar(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2))
}

/// Whether two `f32`s are the same bits (any NaN matching any NaN): the
/// equality the vectorised kernels' tests hold them to.
#[cfg(test)]
pub(crate) fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The reference is `libm`'s own `erff` (through candle): every bit
    /// pattern `k·61` (70 million `f32`s, both signs, every exponent,
    /// subnormals, infinities and NaNs among them) gives the same bits.
    #[test]
    fn fast_path_is_bitwise_erff() {
        let mut fast_hits = 0u64;
        let mut bits = 0u64;
        while bits <= u64::from(u32::MAX) {
            let x = f32::from_bits(u32::try_from(bits).unwrap());
            if fast_applies(x) {
                fast_hits += 1;
                let (got, want) = (erf_fast(x), erf_f32(x));
                assert!(same(got, want), "erf({x:e}): {got:e} vs erff {want:e}");
            }
            bits += 61;
        }
        // The sweep did reach the fast range (both formulas, both signs).
        assert!(fast_hits > 1_000_000, "{fast_hits}");
    }

    #[test]
    fn hand_values() {
        // Φ(0) = 1/2, Φ(±1) = 0.841345, 0.158655; Φ(3) = 0.998650 (tables).
        let v = normal_cdf(&[0.0, 1.0, -1.0, 3.0, f32::INFINITY, f32::NEG_INFINITY]);
        assert!((v[0] - 0.5).abs() < 1e-7);
        assert!((v[1] - 0.841_345).abs() < 1e-6 && (v[2] - 0.158_655).abs() < 1e-6);
        assert!((v[3] - 0.998_650).abs() < 1e-6);
        assert!(v[4] == 1.0 && v[5] == 0.0);
        assert!(normal_cdf(&[f32::NAN])[0].is_nan());
    }

    /// The dispatched slice loop against the scalar function over a long
    /// slice: every bit pattern `k·4099` (a million `f32`s, all ranges), in
    /// one call, so the vector body (not only its remainder) is checked.
    #[test]
    fn long_slice_is_bitwise_scalar() {
        let x: Vec<f32> = (0..=u32::MAX / 4099)
            .map(|k| f32::from_bits(k * 4099))
            .collect();
        let got = normal_cdf(&x);
        let bad = got
            .iter()
            .zip(&x)
            .filter(|&(g, &v)| !same(*g, normal_cdf_scalar(v)))
            .count();
        assert_eq!(bad, 0, "{bad} of {} differ", x.len());
    }

    proptest! {
        /// The slice version equals the scalar one bit for bit, element by
        /// element, whatever mix of ranges the slice holds.
        #[test]
        fn slice_is_bitwise_scalar(x in prop::collection::vec(
            prop_oneof![-2.0f32..2.0, -12.0f32..12.0, any::<f32>()], 0..70)) {
            let got = normal_cdf(&x);
            prop_assert_eq!(got.len(), x.len());
            for (g, &v) in got.iter().zip(&x) {
                prop_assert!(same(*g, normal_cdf_scalar(v)), "Φ({v:e}): {g:e}");
            }
        }
    }
}
