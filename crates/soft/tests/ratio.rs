//! `components_for_ratio`: the one conversion from a ratio `ρ` to a count `m`.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use wflora_soft::{SoftError, components_for_ratio};

#[test]
fn worked_examples() {
    assert_eq!(components_for_ratio(0.3, 10).unwrap(), 3); // 3.0 / 10.0 == 0.3
    assert_eq!(components_for_ratio(0.25, 8).unwrap(), 2);
    assert_eq!(components_for_ratio(0.125, 8).unwrap(), 1);
    assert_eq!(components_for_ratio(0.5, 16).unwrap(), 8);
    assert_eq!(components_for_ratio(1.0 / 3.0, 8).unwrap(), 3);
    assert_eq!(components_for_ratio(0.4, 3).unwrap(), 2);
    assert_eq!(components_for_ratio(0.05, 8).unwrap(), 1);
    assert_eq!(components_for_ratio(f64::MIN_POSITIVE, 8).unwrap(), 1);
    for r in [1, 2, 7, 8, 64, 1000] {
        assert_eq!(components_for_ratio(1.0, r).unwrap(), r);
    }
    // No tolerance: a ratio one ulp above m/r needs one more component
    // (0.1·3 is 0.30000000000000004 in f64, above 3/10).
    assert_eq!(components_for_ratio(0.1 * 3.0, 10).unwrap(), 4);
    assert_eq!(components_for_ratio(0.3f64.next_up(), 10).unwrap(), 4);
    assert_eq!(components_for_ratio(0.3f64.next_down(), 10).unwrap(), 3);
}

#[test]
fn errors() {
    for rho in [
        0.0,
        -0.0,
        -1.0,
        1.0f64.next_up(),
        2.0,
        f64::NAN,
        f64::INFINITY,
    ] {
        assert!(
            matches!(components_for_ratio(rho, 8), Err(SoftError::Ratio { .. })),
            "{rho}"
        );
    }
    assert_eq!(
        components_for_ratio(0.5, 0).unwrap_err(),
        SoftError::Rank { r: 0 }
    );
}

/// Every ratio written as `m/r` gives back `m`: all `r < 64`, all `m`.
#[test]
fn every_exact_ratio_gives_back_its_count() {
    for r in 1usize..64 {
        for m in 1..=r {
            assert_eq!(
                components_for_ratio(m as f64 / r as f64, r).unwrap(),
                m,
                "m = {m}, r = {r}"
            );
        }
    }
}

/// `m` is the least count whose ratio reaches `ρ`.
fn check_least(rho: f64, r: usize) -> Result<(), TestCaseError> {
    let m = components_for_ratio(rho, r).unwrap();
    prop_assert!((1..=r).contains(&m), "m = {m}, r = {r}");
    prop_assert!(m as f64 / r as f64 >= rho, "{m}/{r} < {rho}");
    prop_assert!(
        m == 1 || ((m - 1) as f64 / r as f64) < rho,
        "{}/{r} already reaches {rho}",
        m - 1
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn exact_ratios_give_back_their_count(
        (r, m) in (1usize..64).prop_flat_map(|r| (Just(r), 1..=r)),
    ) {
        prop_assert_eq!(components_for_ratio(m as f64 / r as f64, r).unwrap(), m);
    }

    #[test]
    fn any_ratio_gives_the_least_count_that_reaches_it(
        rho in (0.0f64..=1.0).prop_filter("rho > 0", |x| *x > 0.0), r in 1usize..100_000,
    ) {
        check_least(rho, r)?;
    }

    /// Ratios a few ulps either side of `m/r`, where a tolerance would
    /// make a difference.
    #[test]
    fn ratios_next_to_m_over_r_give_the_least_count(
        (r, m) in (1usize..200).prop_flat_map(|r| (Just(r), 1..=r)), ulps in -3i32..=3,
    ) {
        let mut rho = m as f64 / r as f64;
        for _ in 0..ulps.unsigned_abs() {
            rho = if ulps < 0 { rho.next_down() } else { rho.next_up() };
        }
        prop_assume!(rho > 0.0 && rho <= 1.0);
        check_least(rho, r)?;
    }
}
