//! `expf` over a slice, bit for bit equal to the C library's scalar `expf`,
//! in a form the compiler vectorises.
//!
//! The exact GELU's backward pass (`φ(x) = e^{−x²/2}/√(2π)`) and the
//! softmax call `expf` once per element, and a call per element cannot be
//! vectorised. glibc's `expf` (since 2.28: Arm's optimized-routines
//! algorithm; its x86-64 build for CPUs with FMA, `__expf_fma`, read here
//! from glibc 2.36's disassembly) is branch-free arithmetic in `f64` for
//! `|x| < 88`:
//!
//! ```text
//! k = round(x·32/ln2)            (fma(32/ln2, x, 1.5·2⁵²), then − 1.5·2⁵²)
//! r = x·32/ln2 − k               (one fma)
//! s = 2^(k/32)                   (a 32-entry table, k>>5 added to the exponent)
//! y = s·(C0·r³ + C1·r² + C2·r + 1) (three fmas: (C0·r + C1)·r² + (C2·r + 1))
//! expf(x) = (float) y
//! ```
//!
//! [`exp_in_place`] runs exactly those operations, with `f64::mul_add` where
//! glibc fuses, in a loop compiled for AVX2 + FMA (`pulp`'s runtime
//! dispatch, safe), and sends the other elements (`|x| ≥ 88`, infinities,
//! NaN) to the library's `expf`. IEEE arithmetic and single-rounding fused
//! multiply-adds give the same bits in a vector lane as in glibc's scalar
//! code, so the result never depends on the path.
//!
//! The fast path is used only where it can equal the library: x86-64 Linux
//! with glibc, a CPU with AVX2 and FMA (where glibc itself picks
//! `__expf_fma`), and a first-use check that it equals the library's
//! `expf` on 4,097 points spread over `[−104, 89]`. Anywhere else, and if
//! that check finds one difference, every element goes to the library's
//! `expf`. `every_fast_input_is_bitwise_expf` compares it with the library
//! on every `f32` of the fast range (2.2 billion values), and
//! `fast_path_is_bitwise_expf` on a 1-in-61 sweep of every `f32`.

/// Applies `expf` to every element, in place: the same bits as `x.exp()`
/// (the C library's `expf`) element by element.
pub(crate) fn exp_in_place(x: &mut [f32]) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    if let Some(simd) = fast::usable() {
        fast::exp_in_place(simd, x);
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod fast {
    use std::sync::OnceLock;

    use pulp::x86::V3;

    /// `32/ln 2`.
    const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
    /// `1.5·2⁵²`: adding it rounds to an integer.
    const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
    /// The polynomial for `2^(r/32)`, highest degree first.
    const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
    const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
    const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);
    /// `2^(i/32)` for `i < 32`, with `i` subtracted from the exponent field
    /// (`k << 47` puts it back with `k >> 5`).
    const TAB: [u64; 32] = [
        0x3ff0_0000_0000_0000,
        0x3fef_d9b0_d315_8574,
        0x3fef_b558_6cf9_890f,
        0x3fef_9301_d012_5b51,
        0x3fef_72b8_3c7d_517b,
        0x3fef_5487_3168_b9aa,
        0x3fef_387a_6e75_6238,
        0x3fef_1e9d_f51f_dee1,
        0x3fef_06fe_0a31_b715,
        0x3fee_f1a7_373a_a9cb,
        0x3fee_dea6_4c12_3422,
        0x3fee_ce08_6061_892d,
        0x3fee_bfda_d536_2a27,
        0x3fee_b42b_569d_4f82,
        0x3fee_ab07_dd48_5429,
        0x3fee_a47e_b03a_5585,
        0x3fee_a09e_667f_3bcd,
        0x3fee_9f75_e8ec_5f74,
        0x3fee_a114_73eb_0187,
        0x3fee_a589_994c_ce13,
        0x3fee_ace5_422a_a0db,
        0x3fee_b737_b0cd_c5e5,
        0x3fee_c491_82a3_f090,
        0x3fee_d503_b23e_255d,
        0x3fee_e89f_995a_d3ad,
        0x3fee_ff76_f2fb_5e47,
        0x3fef_199b_dd85_529c,
        0x3fef_3720_dcef_9069,
        0x3fef_5818_dcfb_a487,
        0x3fef_7c97_337b_9b5f,
        0x3fef_a4af_a2a4_90da,
        0x3fef_d076_5b6e_4540,
    ];

    /// `expf(x)` for `|x| < 88` (`top12 ≤ 0x42a`); garbage elsewhere.
    #[inline(always)]
    pub(super) fn expf_fast(x: f32) -> f32 {
        let xd = f64::from(x);
        let kd = INV_LN2_N.mul_add(xd, SHIFT);
        let ki = kd.to_bits();
        let kd = kd - SHIFT;
        let r = INV_LN2_N.mul_add(xd, -kd);
        // `ki % 32` is below 32.
        #[allow(clippy::cast_possible_truncation)]
        let t = TAB[(ki & 31) as usize].wrapping_add(ki << 47);
        let s = f64::from_bits(t);
        let z = r.mul_add(C0, C1);
        let r2 = r * r;
        let y = r.mul_add(C2, 1.0);
        let y = z.mul_add(r2, y);
        // Rounding to the nearest `f32`, as `cvtsd2ss` does.
        #[allow(clippy::cast_possible_truncation)]
        let out = (y * s) as f32;
        out
    }

    /// Whether [`expf_fast`] applies: glibc's own fast-range test.
    #[inline(always)]
    pub(super) fn fast_applies(x: f32) -> bool {
        (x.to_bits() >> 20) & 0x7ff <= 0x42a
    }

    /// The AVX2 + FMA token, if the CPU has them and the fast path equals
    /// this process's `expf` on the check points.
    pub(super) fn usable() -> Option<V3> {
        static OK: OnceLock<bool> = OnceLock::new();
        let simd = V3::try_new()?;
        let ok = *OK.get_or_init(|| {
            (0..=4096u16).all(|i| {
                let x = -104.0 + f32::from(i) * (193.0 / 4096.0);
                !fast_applies(x) || {
                    let got = simd.vectorize(|| expf_fast(x));
                    got.to_bits() == x.exp().to_bits()
                }
            })
        });
        ok.then_some(simd)
    }

    /// [`super::exp_in_place`] on a CPU with AVX2 and FMA.
    pub(super) fn exp_in_place(simd: V3, x: &mut [f32]) {
        // The rare elements outside the fast range (|x| ≥ 88, ±∞, NaN),
        // with their inputs, before the vector pass overwrites them.
        let slow: Vec<(usize, f32)> = x
            .iter()
            .enumerate()
            .filter(|&(_, &v)| !fast_applies(v))
            .map(|(i, &v)| (i, v))
            .collect();
        simd.vectorize(|| {
            for v in x.iter_mut() {
                *v = expf_fast(*v);
            }
        });
        for (i, v) in slow {
            x[i] = v.exp();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::erf::same;
    use proptest::prelude::*;

    /// Every bit pattern `k·61` (70 million `f32`s: both signs, every
    /// exponent, subnormals, infinities, NaNs) through the slice version in
    /// long slices, against the library's scalar `expf`.
    #[test]
    fn fast_path_is_bitwise_expf() {
        let mut bits = 0u64;
        let mut checked = 0u64;
        while bits <= u64::from(u32::MAX) {
            let chunk: Vec<f32> = (0..4096u64)
                .map(|j| bits + 61 * j)
                .take_while(|&b| b <= u64::from(u32::MAX))
                .map(|b| f32::from_bits(u32::try_from(b).unwrap()))
                .collect();
            let mut got = chunk.clone();
            exp_in_place(&mut got);
            for (g, x) in got.iter().zip(&chunk) {
                assert!(same(*g, x.exp()), "exp({x:e}): {g:e} vs expf {:e}", x.exp());
            }
            checked += chunk.len() as u64;
            bits += 61 * 4096;
        }
        assert!(checked > 70_000_000, "{checked}");
    }

    /// Every `f32` in the fast range (`|x| < 88`: 2.2 billion values), in
    /// slices of 65,536 on two threads, against the library's `expf`. A
    /// one-ulp change of a `f64` coefficient, or an unfused step, changes
    /// only a handful of the results, which a sample can miss; this finds
    /// them: an unfused `r = x·32/ln2 − k` changes 2 of the 2.2 billion
    /// results and fails this test. About 20 s on two cores.
    #[test]
    fn every_fast_input_is_bitwise_expf() {
        let mismatches = |lo: u32, hi: u32| -> Vec<u32> {
            let mut bad = Vec::new();
            let mut start = lo;
            while start < hi {
                let end = hi.min(start.saturating_add(1 << 16));
                let x: Vec<f32> = (start..end).map(f32::from_bits).collect();
                let mut got = x.clone();
                exp_in_place(&mut got);
                for (g, v) in got.iter().zip(&x) {
                    if !same(*g, v.exp()) {
                        bad.push(v.to_bits());
                    }
                }
                start = end;
            }
            bad
        };
        // |x| < 88 is bit patterns below 0x42b0_0000, of either sign.
        let (pos, neg) = std::thread::scope(|s| {
            let p = s.spawn(|| mismatches(0, 0x42b0_0000));
            let n = mismatches(0x8000_0000, 0xc2b0_0000);
            (p.join().unwrap(), n)
        });
        assert!(
            pos.is_empty() && neg.is_empty(),
            "{} + {} inputs differ, e.g. {:?}",
            pos.len(),
            neg.len(),
            pos.iter()
                .chain(&neg)
                .take(5)
                .map(|&b| f32::from_bits(b))
                .collect::<Vec<_>>()
        );
    }

    /// The fast path is the one being tested on this machine kind (x86-64
    /// Linux, glibc, AVX2 + FMA): otherwise the test above compares the
    /// library with itself.
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn fast_path_is_taken_where_available() {
        if pulp::x86::V3::try_new().is_some() {
            assert!(fast::usable().is_some());
            assert!(fast::fast_applies(-87.0) && !fast::fast_applies(89.0));
            assert!(fast::fast_applies(0.0) && !fast::fast_applies(f32::NAN));
        }
    }

    #[test]
    fn hand_values() {
        let mut v = [
            0.0f32,
            1.0,
            -1.0,
            -0.5,
            88.8,
            -200.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        exp_in_place(&mut v);
        assert_eq!(v[0], 1.0);
        assert!((v[1] - std::f32::consts::E).abs() < 1e-6);
        assert!((v[2] - 0.367_879_44).abs() < 1e-7);
        assert!((v[3] - 0.606_530_66).abs() < 1e-7);
        assert!(v[4].is_infinite() && v[5] == 0.0);
        assert!(v[6].is_infinite() && v[7] == 0.0);
        let mut n = [f32::NAN];
        exp_in_place(&mut n);
        assert!(n[0].is_nan());
    }

    proptest! {
        /// Element by element equal to the scalar `expf`, whatever mix of
        /// ranges the slice holds.
        #[test]
        fn slice_is_bitwise_scalar(x in prop::collection::vec(
            prop_oneof![-20.0f32..2.0, -110.0f32..95.0, any::<f32>()], 0..70)) {
            let mut got = x.clone();
            exp_in_place(&mut got);
            for (g, v) in got.iter().zip(&x) {
                prop_assert!(same(*g, v.exp()), "exp({v:e}): {g:e}");
            }
        }
    }
}
