//! Dataset invariants and transforms against brute-force or hand-worked references.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use wflora_data::{
    BatchSampler, ChannelStats, DataError, Dataset, LastBatch, batch_indices, shuffle_indices,
};

/// `n` images of `c × h × w`, value of (sample i, flat j) = i + j/1000, labels i mod k.
fn synth(n: usize, c: usize, h: usize, w: usize, k: usize) -> Dataset {
    let per = c * h * w;
    let images = (0..n * per)
        .map(|x| (x / per) as f32 + (x % per) as f32 / 1000.0)
        .collect();
    let labels = (0..n).map(|i| (i % k) as u32).collect();
    Dataset::new(images, labels, c, h, w, k).unwrap()
}

fn invalid_field<T: std::fmt::Debug>(r: Result<T, DataError>) -> &'static str {
    match r {
        Err(DataError::Invalid { field, .. }) => field,
        other => panic!("expected an argument error, got {other:?}"),
    }
}

#[test]
fn new_rejects_inconsistent_input() {
    assert_eq!(
        invalid_field(Dataset::new(vec![0.0; 5], vec![0, 1], 1, 1, 2, 2)),
        "images"
    );
    assert_eq!(
        invalid_field(Dataset::new(vec![0.0; 4], vec![0, 2], 1, 1, 2, 2)),
        "labels"
    );
    assert_eq!(
        invalid_field(Dataset::new(vec![], vec![], 0, 1, 2, 2)),
        "channels"
    );
    assert_eq!(
        invalid_field(Dataset::new(vec![], vec![], 1, 1, 2, 0)),
        "num_classes"
    );
    let e = Dataset::new(vec![], vec![], 1, 1, 1, 1).unwrap();
    assert!(e.is_empty());
    assert_eq!(invalid_field(e.channel_stats()), "dataset");
}

#[test]
fn keep_classes_filters_and_relabels_in_order() {
    let d = synth(20, 1, 2, 2, 10);
    let t = d.keep_classes(&[5, 6, 7, 8, 9]).unwrap();
    assert_eq!(t.num_classes(), 5);
    assert_eq!(t.len(), 10);
    // Samples 5..9 and 15..19, in order, relabelled label − 5.
    let kept: Vec<usize> = (5..10).chain(15..20).collect();
    for (j, &i) in kept.iter().enumerate() {
        assert_eq!(t.labels()[j], (i % 10) as u32 - 5);
        assert_eq!(t.image(j).unwrap(), d.image(i).unwrap());
    }
    // A permuted list relabels by position.
    let p = d.keep_classes(&[3, 1]).unwrap();
    assert_eq!(p.labels(), &[1, 0, 1, 0]);
    assert_eq!(invalid_field(d.keep_classes(&[1, 1])), "classes");
    assert_eq!(invalid_field(d.keep_classes(&[10])), "classes");
    assert_eq!(invalid_field(d.keep_classes(&[])), "classes");
}

#[test]
fn subset_gather_and_concat() {
    let d = synth(6, 2, 1, 3, 3);
    let s = d.subset(&[4, 0, 4]).unwrap();
    assert_eq!(s.labels(), &[1, 0, 1]);
    assert_eq!(s.image(2).unwrap(), d.image(4).unwrap());
    assert_eq!(invalid_field(d.subset(&[6])), "indices");
    let b = d.gather(&[5, 1]).unwrap();
    assert_eq!(b.shape(), [2, 2, 1, 3]);
    assert_eq!(&b.images[6..], d.image(1).unwrap());
    let c =
        Dataset::concat(&[d.subset(&[0, 1]).unwrap(), d.subset(&[2, 3, 4, 5]).unwrap()]).unwrap();
    assert_eq!(c, d);
    assert_eq!(
        invalid_field(Dataset::concat(&[d.clone(), synth(1, 1, 1, 3, 3)])),
        "parts"
    );
}

#[test]
fn channel_stats_match_a_two_pass_reference_and_normalise_to_zero_mean_unit_std() {
    let d = synth(7, 3, 2, 2, 2);
    let s = d.channel_stats().unwrap();
    for c in 0..3 {
        // Brute force: gather every value of channel c.
        let vals: Vec<f64> = (0..7)
            .flat_map(|i| d.image(i).unwrap()[c * 4..(c + 1) * 4].to_vec())
            .map(f64::from)
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!((f64::from(s.mean[c]) - m).abs() < 1e-5);
        assert!((f64::from(s.std[c]) - v.sqrt()).abs() < 1e-5);
    }
    let mut n = d.clone();
    n.normalize(&s).unwrap();
    let s2 = n.channel_stats().unwrap();
    for c in 0..3 {
        assert!(s2.mean[c].abs() < 1e-5 && (s2.std[c] - 1.0).abs() < 1e-5);
    }
    // Train statistics applied to another split: (x − m) / s exactly.
    let mut other = synth(2, 3, 2, 2, 2);
    let orig = other.clone();
    other.normalize(&s).unwrap();
    let (x, y) = (orig.image(1).unwrap()[5], other.image(1).unwrap()[5]);
    assert!((y - (x - s.mean[1]) / s.std[1]).abs() < 1e-6);
    assert_eq!(
        invalid_field(other.normalize(&ChannelStats::new(vec![0.0], vec![1.0]).unwrap())),
        "stats"
    );
    assert_eq!(
        invalid_field(ChannelStats::new(vec![0.0], vec![0.0])),
        "std"
    );
    let constant = Dataset::new(vec![0.5; 8], vec![0, 0], 1, 2, 2, 1).unwrap();
    assert_eq!(invalid_field(constant.channel_stats()), "std");
}

#[test]
fn stratified_split_apportions_each_class() {
    // Classes of sizes 10, 7 and 3 (labels i mod 3 for 9 samples, then class 0 and 1 extra).
    let mut labels: Vec<u32> = (0..9).map(|i| i % 3).collect();
    labels.extend([0; 7]);
    labels.extend([1; 4]);
    let n = labels.len();
    let d = Dataset::new(vec![0.0; n], labels.clone(), 1, 1, 1, 3).unwrap();
    let s = d.stratified_split(0.25, 11).unwrap();
    // Quotas 2.5, 1.75, 0.75 (sum 5): floors 2, 1, 0; the two largest
    // remainders (0.75 for classes 1 and 2) get one more: 2, 2, 1.
    let tc = wflora_data::class_counts(&s.test.iter().map(|&i| labels[i]).collect::<Vec<_>>(), 3);
    assert_eq!(tc, vec![2, 2, 1]);
    assert_eq!(s.test.len(), 5);
    assert_eq!(invalid_field(d.stratified_split(1.5, 0)), "test_fraction");
}

#[test]
fn resize_identity_constant_and_downscale_average() {
    let d = synth(2, 2, 4, 6, 2);
    assert_eq!(d.resize_bilinear(4, 6).unwrap(), d);
    // 2× downscale with half-pixel centres samples exactly between pixel pairs:
    // the mean of each 2 × 2 block.
    let r = d.resize_bilinear(2, 3).unwrap();
    for i in 0..2 {
        let (src, dst) = (d.image(i).unwrap(), r.image(i).unwrap());
        for c in 0..2 {
            for y in 0..2 {
                for x in 0..3 {
                    let p = |yy: usize, xx: usize| src[c * 24 + yy * 6 + xx];
                    let want = (p(2 * y, 2 * x)
                        + p(2 * y, 2 * x + 1)
                        + p(2 * y + 1, 2 * x)
                        + p(2 * y + 1, 2 * x + 1))
                        / 4.0;
                    assert!((dst[c * 6 + y * 3 + x] - want).abs() < 1e-5);
                }
            }
        }
    }
    let k = Dataset::new(vec![0.3; 9], vec![0], 1, 3, 3, 1).unwrap();
    assert!(
        k.resize_bilinear(7, 5)
            .unwrap()
            .images()
            .iter()
            .all(|&v| (v - 0.3).abs() < 1e-6)
    );
    assert_eq!(invalid_field(d.resize_bilinear(0, 3)), "size");
}

#[test]
fn resize_upscale_matches_hand_values() {
    // 1 × 2 image [0, 1] to width 4: source x = (o + ½)/2 − ½ = −¼, ¼, ¾, 5⁄4,
    // clamped to [0, 1]: 0, ¼, ¾, 1 (PyTorch align_corners=False gives the same).
    let d = Dataset::new(vec![0.0, 1.0], vec![0], 1, 1, 2, 1).unwrap();
    assert_eq!(
        d.resize_bilinear(1, 4).unwrap().images(),
        &[0.0, 0.25, 0.75, 1.0]
    );
    // 2 × 2 [[0, 1], [2, 3]] to 4 × 4: value = x + 2y at clamped source coordinates.
    let d = Dataset::new(vec![0.0, 1.0, 2.0, 3.0], vec![0], 1, 2, 2, 1).unwrap();
    let r = d.resize_bilinear(4, 4).unwrap();
    let t = [0.0, 0.25, 0.75, 1.0];
    for y in 0..4 {
        for x in 0..4 {
            assert!((r.images()[y * 4 + x] - (t[x] + 2.0 * t[y])).abs() < 1e-6);
        }
    }
}

#[test]
fn replicate_channels_copies_the_plane() {
    let d = synth(3, 1, 2, 2, 2);
    let r = d.replicate_channels(3).unwrap();
    assert_eq!((r.channels(), r.len()), (3, 3));
    for i in 0..3 {
        let img = r.image(i).unwrap();
        for c in 0..3 {
            assert_eq!(&img[c * 4..(c + 1) * 4], d.image(i).unwrap());
        }
    }
    assert_eq!(invalid_field(r.replicate_channels(3)), "dataset channels");
    assert_eq!(invalid_field(d.replicate_channels(0)), "channels");
}

#[test]
fn batches_keep_or_drop_the_last_partial_batch() {
    let d = synth(10, 1, 1, 2, 3);
    let idx: Vec<usize> = (0..10).collect();
    let keep: Vec<_> = d.batches(&idx, 4, LastBatch::Keep, None).unwrap().collect();
    assert_eq!(
        keep.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    assert_eq!(keep[2].labels, vec![2, 0]);
    let drop: Vec<_> = d
        .batches(&idx, 4, LastBatch::Drop, Some(5))
        .unwrap()
        .collect();
    assert_eq!(drop.len(), 2);
    assert_eq!(
        invalid_field(d.batches(&idx, 0, LastBatch::Keep, None).map(|_| ())),
        "batch_size"
    );
    assert_eq!(
        invalid_field(d.batches(&[10], 1, LastBatch::Keep, None).map(|_| ())),
        "indices"
    );
}

#[test]
fn batch_sampler_small_pool_gives_the_whole_pool() {
    let mut s = BatchSampler::new(vec![4, 8, 9], 32, 1).unwrap();
    assert_eq!(s.batch_size(), 3);
    let mut b = s.next_batch().to_vec();
    b.sort_unstable();
    assert_eq!(b, vec![4, 8, 9]);
    assert_eq!(invalid_field(BatchSampler::new(vec![], 3, 1)), "pool");
    assert_eq!(
        invalid_field(BatchSampler::new(vec![1], 0, 1)),
        "batch_size"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A stratified split covers every index once, puts ⌊f·n_c⌋ or ⌈f·n_c⌉ of
    /// each class into the test set, and round(f·n) in total; seeded.
    #[test]
    fn stratified_split_invariants(
        labels in proptest::collection::vec(0_u32..5, 1..200),
        f in 0.0..=1.0_f64,
        seed in any::<u64>(),
    ) {
        let n = labels.len();
        let d = Dataset::new(vec![0.0; n], labels.clone(), 1, 1, 1, 5).unwrap();
        let s = d.stratified_split(f, seed).unwrap();
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        prop_assert_eq!(s.test.len(), (f * n as f64).round() as usize);
        let total = d.class_counts();
        let test = wflora_data::class_counts(&s.test.iter().map(|&i| labels[i]).collect::<Vec<_>>(), 5);
        for c in 0..5 {
            let q = f * total[c] as f64;
            prop_assert!(test[c] as f64 >= q.floor() && test[c] as f64 <= q.ceil());
        }
        prop_assert_eq!(&s, &d.stratified_split(f, seed).unwrap());
    }

    /// Epoch batches partition the (shuffled) indices: each index once with
    /// `Keep`, all but `n mod b` with `Drop`; shuffling is a permutation.
    #[test]
    fn batches_cover_indices(n in 0_usize..100, b in 1_usize..20, seed in any::<u64>()) {
        let mut idx: Vec<usize> = (0..n).collect();
        shuffle_indices(&mut idx, seed);
        let keep = batch_indices(&idx, b, LastBatch::Keep).unwrap();
        prop_assert_eq!(keep.concat(), idx.clone());
        prop_assert!(keep.iter().all(|c| c.len() <= b && !c.is_empty()));
        let drop = batch_indices(&idx, b, LastBatch::Drop).unwrap();
        prop_assert_eq!(drop.concat().len(), n - n % b);
        prop_assert!(drop.iter().all(|c| c.len() == b));
        idx.sort_unstable();
        prop_assert_eq!(idx, (0..n).collect::<Vec<_>>());
    }

    /// The endless sampler: full batches of distinct pool members, and over
    /// each block of ⌊P/b⌋ batches after a reshuffle, no index repeats.
    #[test]
    fn batch_sampler_invariants(p in 1_usize..60, b in 1_usize..16, seed in any::<u64>()) {
        let pool: Vec<usize> = (0..p).map(|i| 3 * i + 1).collect();
        let mut s = BatchSampler::new(pool.clone(), b, seed).unwrap();
        let eff = b.min(p);
        let per_epoch = p / eff;
        for _ in 0..3 {
            let mut epoch = Vec::new();
            for _ in 0..per_epoch {
                let batch = s.next_batch().to_vec();
                prop_assert_eq!(batch.len(), eff);
                epoch.extend(batch);
            }
            epoch.sort_unstable();
            let len = epoch.len();
            epoch.dedup();
            prop_assert_eq!(epoch.len(), len);
            prop_assert!(epoch.iter().all(|i| pool.contains(i)));
        }
    }
}
