//! Partitioners: coverage, label statistics, determinism, errors, weights.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use wflora_data::{
    DataError, DirichletParams, Partition, Scheme, client_weights, dirichlet, iid, shards,
};

/// `per_class` samples of each of `k` classes, interleaved: label i mod k.
fn balanced(k: usize, per_class: usize) -> Vec<u32> {
    (0..k * per_class).map(|i| (i % k) as u32).collect()
}

fn params(num_clients: usize, alpha: f64, min_size: usize) -> DirichletParams {
    DirichletParams {
        num_clients,
        alpha,
        min_size,
        max_attempts: 1000,
    }
}

/// Shannon entropy (nats) of a count vector.
fn entropy(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum()
}

/// Mean over clients of the entropy of their label distribution.
fn mean_entropy(p: &Partition, labels: &[u32], k: usize) -> f64 {
    let counts = p.label_counts(labels, k);
    counts.iter().map(|c| entropy(c)).sum::<f64>() / counts.len() as f64
}

#[test]
fn iid_gives_each_client_the_global_label_proportions() {
    let labels = balanced(10, 500);
    for seed in 0..5 {
        let p = iid(labels.len(), 10, seed).unwrap();
        assert_eq!(p.sizes(), vec![500; 10]);
        // Each count is hypergeometric (500 of 5000, 500 of the class):
        // sd ≈ 6.4 samples = 0.013 in proportion; 0.06 is over 4.5 sd.
        for c in p.label_counts(&labels, 10) {
            for x in c {
                assert!((x as f64 / 500.0 - 0.1).abs() < 0.06, "{x}");
            }
        }
    }
}

#[test]
fn dirichlet_small_alpha_skews_large_alpha_approaches_iid() {
    let labels = balanced(10, 500);
    let uniform = 10_f64.ln();
    let mut h = [0.0; 3];
    for seed in 0..3 {
        let small = dirichlet(&labels, 10, &params(10, 0.1, 0), seed).unwrap();
        let large = dirichlet(&labels, 10, &params(10, 100.0, 0), seed).unwrap();
        let flat = iid(labels.len(), 10, seed).unwrap();
        h[0] += mean_entropy(&small, &labels, 10) / 3.0;
        h[1] += mean_entropy(&large, &labels, 10) / 3.0;
        h[2] += mean_entropy(&flat, &labels, 10) / 3.0;
    }
    // Dir(0.1·1) puts most of a class on one or two clients; a client then
    // holds a few classes: entropy far below ln 10 = 2.303.
    assert!(h[0] < uniform - 0.8, "alpha 0.1: {h:?}");
    // Dir(100·1) shares have sd √(0.09/1001) ≈ 0.0095 around 0.1: close to IID.
    assert!(h[1] > uniform - 0.03, "alpha 100: {h:?}");
    assert!((h[1] - h[2]).abs() < 0.03, "alpha 100 vs iid: {h:?}");
    assert!(h[0] < h[1] - 0.8);
}

/// Empirical variance of the per-client shares of `classes` single-class groups.
fn share_moments(alpha: f64, k: usize, classes: usize, per_class: usize) -> (f64, f64) {
    let labels = balanced(classes, per_class);
    let p = dirichlet(&labels, classes, &params(k, alpha, 0), 42).unwrap();
    let counts = p.label_counts(&labels, classes);
    let shares: Vec<f64> = (0..classes)
        .flat_map(|c| {
            counts
                .iter()
                .map(move |cl| cl[c] as f64 / per_class as f64)
                .collect::<Vec<_>>()
        })
        .collect();
    let m = shares.iter().sum::<f64>() / shares.len() as f64;
    let v = shares.iter().map(|s| (s - m).powi(2)).sum::<f64>() / shares.len() as f64;
    (m, v)
}

#[test]
fn dirichlet_shares_have_the_dirichlet_moments() {
    // For q ~ Dir(α·1_K): E q_k = 1/K, Var q_k = (1/K)(1 − 1/K)/(Kα + 1).
    for &(alpha, k) in &[(0.5, 4), (0.01, 10), (2.0, 5)] {
        let (m, v) = share_moments(alpha, k, 400, 500);
        let kf = k as f64;
        let want = (1.0 / kf) * (1.0 - 1.0 / kf) / (kf * alpha + 1.0);
        assert!((m - 1.0 / kf).abs() < 1e-12, "mean {m}");
        // 400 independent draws: relative sd of the variance estimate ≲ 10%.
        assert!(
            (v / want - 1.0).abs() < 0.2,
            "alpha {alpha}: var {v} vs {want}"
        );
    }
}

#[test]
fn dirichlet_min_size_is_met_or_a_typed_error() {
    let labels = balanced(10, 100);
    let p = dirichlet(&labels, 10, &params(10, 0.1, 30), 3).unwrap();
    assert!(p.sizes().iter().all(|&s| s >= 30), "{:?}", p.sizes());
    // Every client exactly 100 of 1000 is (practically) never drawn.
    let e = dirichlet(
        &labels,
        10,
        &DirichletParams {
            max_attempts: 20,
            ..params(10, 0.1, 100)
        },
        3,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        DataError::PartitionInfeasible { attempts: 20, num_clients: 10, min_size: 100, smallest }
            if smallest < 100
    ));
    // K · min_size > n is rejected at once.
    assert!(matches!(
        dirichlet(&labels, 10, &params(10, 1.0, 101), 3),
        Err(DataError::Invalid {
            field: "min_size",
            ..
        })
    ));
    for (p, field) in [
        (params(0, 1.0, 0), "num_clients"),
        (params(3, 0.0, 0), "alpha"),
        (params(3, f64::NAN, 0), "alpha"),
        (
            DirichletParams {
                max_attempts: 0,
                ..params(3, 1.0, 0)
            },
            "max_attempts",
        ),
    ] {
        assert!(
            matches!(dirichlet(&labels, 10, &p, 0), Err(DataError::Invalid { field: f, .. }) if f == field)
        );
    }
    assert!(matches!(
        dirichlet(&labels, 9, &params(3, 1.0, 0), 0),
        Err(DataError::Invalid {
            field: "labels",
            ..
        })
    ));
}

#[test]
fn shards_bound_the_labels_per_client() {
    // 10 classes of 100, 10 clients × 2 shards of 50: shards align with classes,
    // so each client holds at most s = 2 labels.
    let labels = balanced(10, 100);
    for seed in 0..5 {
        let p = shards(&labels, 10, 2, seed).unwrap();
        for c in p.label_counts(&labels, 10) {
            assert!(c.iter().filter(|&&x| x > 0).count() <= 2);
        }
    }
    // Unaligned shards (13 × 3 shards of 25 or 26 samples, classes of 100):
    // a shard spans at most 2 labels, a client at most 2s = 6.
    for seed in 0..5 {
        let p = shards(&labels, 13, 3, seed).unwrap();
        let most = p
            .label_counts(&labels, 10)
            .iter()
            .map(|c| c.iter().filter(|&&x| x > 0).count())
            .max()
            .unwrap();
        assert!(most <= 6);
    }
    // And far fewer labels than IID gives (every client sees all 10).
    let p = shards(&labels, 10, 2, 0).unwrap();
    let q = iid(labels.len(), 10, 0).unwrap();
    assert!(mean_entropy(&p, &labels, 10) <= 2_f64.ln() + 1e-12);
    assert!(mean_entropy(&q, &labels, 10) > 2.0);
    for (k, s, field) in [
        (0, 2, "num_clients"),
        (3, 0, "shards_per_client"),
        (501, 2, "num_clients · shards_per_client"),
    ] {
        assert!(
            matches!(shards(&labels, k, s, 0), Err(DataError::Invalid { field: f, .. }) if f == field)
        );
    }
}

#[test]
fn same_seed_same_partition_other_seed_other_partition() {
    let labels = balanced(10, 100);
    let schemes = [
        Scheme::Iid,
        Scheme::Dirichlet {
            alpha: 0.5,
            min_size: 5,
            max_attempts: 100,
        },
        Scheme::Shards {
            shards_per_client: 2,
        },
    ];
    for s in schemes {
        let a = s.partition(&labels, 10, 10, 1).unwrap();
        assert_eq!(a, s.partition(&labels, 10, 10, 1).unwrap());
        assert_ne!(a, s.partition(&labels, 10, 10, 2).unwrap(), "{s:?}");
    }
}

#[test]
fn scheme_round_trips_through_json() {
    let s = Scheme::Dirichlet {
        alpha: 0.1,
        min_size: 10,
        max_attempts: 100,
    };
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(
        j,
        r#"{"kind":"dirichlet","alpha":0.1,"min_size":10,"max_attempts":100}"#
    );
    assert_eq!(serde_json::from_str::<Scheme>(&j).unwrap(), s);
}

#[test]
fn every_scheme_rejects_a_key_it_does_not_take() {
    for (json, key) in [
        (r#"{"kind":"iid","zz_unknown_key":1}"#, "zz_unknown_key"),
        (
            r#"{"kind":"dirichlet","alpha":0.1,"min_size":1,"max_attempts":9,"alhpa":1}"#,
            "alhpa",
        ),
        (
            r#"{"kind":"shards","shards_per_client":2,"extra":0}"#,
            "extra",
        ),
    ] {
        let err = serde_json::from_str::<Scheme>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
    assert_eq!(
        serde_json::from_str::<Scheme>(r#"{"kind":"iid"}"#).unwrap(),
        Scheme::Iid
    );
    assert_eq!(
        serde_json::to_string(&Scheme::Iid).unwrap(),
        r#"{"kind":"iid"}"#
    );
}

#[test]
fn client_weights_are_size_shares() {
    let w = client_weights(&[1, 3, 0, 4]).unwrap();
    assert_eq!(w, vec![0.125, 0.375, 0.0, 0.5]);
    assert!(matches!(
        client_weights(&[]),
        Err(DataError::Invalid { field: "sizes", .. })
    ));
    assert!(matches!(
        client_weights(&[0, 0]),
        Err(DataError::Invalid { .. })
    ));
    let p = iid(10, 3, 0).unwrap();
    let w = p.weights().unwrap();
    assert_eq!(w, vec![0.4, 0.3, 0.3]);
}

#[test]
fn iid_errors() {
    assert!(matches!(
        iid(5, 0, 0),
        Err(DataError::Invalid {
            field: "num_clients",
            ..
        })
    ));
    assert!(matches!(
        iid(5, 6, 0),
        Err(DataError::Invalid {
            field: "num_clients",
            ..
        })
    ));
}

fn labels_strategy() -> impl Strategy<Value = (Vec<u32>, usize)> {
    (1_usize..8).prop_flat_map(|k| (proptest::collection::vec(0..k as u32, 1..300), Just(k)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every partitioner assigns every sample exactly once, to one of K clients.
    #[test]
    fn every_sample_assigned_exactly_once(
        (labels, k) in labels_strategy(),
        clients in 1_usize..12,
        alpha in 0.01..10.0_f64,
        s in 1_usize..4,
        seed in any::<u64>(),
    ) {
        let n = labels.len();
        let clients = clients.min(n);
        let p = iid(n, clients, seed).unwrap();
        prop_assert!(p.covers(n));
        let sizes = p.sizes();
        prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);

        let p = dirichlet(&labels, k, &params(clients, alpha, 0), seed).unwrap();
        prop_assert!(p.covers(n));
        prop_assert_eq!(p.num_clients(), clients);

        if clients * s <= n {
            let p = shards(&labels, clients, s, seed).unwrap();
            prop_assert!(p.covers(n));
            let shard = n / (clients * s);
            for size in p.sizes() {
                prop_assert!(size >= s * shard && size <= s * (shard + 1));
            }
        }
    }
}
