//! Task codes and the router of the implicit mixture of experts: no trained
//! router, only each device's code, the mean direction of its inputs'
//! frozen-backbone features. An input goes to the device whose code is
//! nearest in cosine. Plain `ndarray`.

use ndarray::{Array2, ArrayView1};

/// A device's task code: the normalised mean of its L2-normalised feature
/// rows (`None` for no rows or a zero mean).
#[must_use]
pub fn task_code(features: &Array2<f32>) -> Option<Vec<f64>> {
    if features.nrows() == 0 {
        return None;
    }
    let mut sum = vec![0.0f64; features.ncols()];
    for row in features.rows() {
        let n = row
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        if n > 0.0 {
            for (s, &v) in sum.iter_mut().zip(row.iter()) {
                *s += f64::from(v) / n;
            }
        }
    }
    let n = sum.iter().map(|v| v * v).sum::<f64>().sqrt();
    (n > 0.0 && n.is_finite()).then(|| sum.iter().map(|v| v / n).collect())
}

/// The index of the code of largest cosine with `feature` (ties: the
/// lowest index); `None` without codes or for a zero feature.
#[must_use]
pub fn route(feature: ArrayView1<'_, f32>, codes: &[Vec<f64>]) -> Option<usize> {
    let n = feature
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt();
    if n.is_nan() || n <= 0.0 {
        return None;
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in codes.iter().enumerate() {
        let cos: f64 = c
            .iter()
            .zip(feature.iter())
            .map(|(a, &b)| a * f64::from(b))
            .sum::<f64>()
            / n;
        if best.is_none_or(|(_, b)| cos > b) {
            best = Some((i, cos));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn code_and_route_by_hand() {
        let f = ndarray::arr2(&[[3.0f32, 0.0], [0.0, 0.5]]);
        let c = task_code(&f).expect("non-zero");
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((c[0] - s).abs() < 1e-12 && (c[1] - s).abs() < 1e-12);
        let codes = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(route(ndarray::arr1(&[0.2f32, 0.9]).view(), &codes), Some(1));
        assert_eq!(route(ndarray::arr1(&[0.0f32, 0.0]).view(), &codes), None);
        assert_eq!(route(ndarray::arr1(&[1.0f32, 1.0]).view(), &codes), Some(0));
        assert!(task_code(&Array2::zeros((0, 2))).is_none());
    }

    proptest! {
        #[test]
        fn routing_is_scale_invariant_and_picks_the_max_cosine(
            x in proptest::collection::vec(-5.0f32..5.0, 3),
            codes in proptest::collection::vec(proptest::collection::vec(-1.0f64..1.0, 3), 1..6),
            scale in 0.1f32..10.0,
        ) {
            let v = ndarray::Array1::from(x.clone());
            let r = route(v.view(), &codes);
            let scaled = v.mapv(|a| a * scale);
            prop_assert_eq!(r, route(scaled.view(), &codes));
            if let Some(i) = r {
                let cos = |c: &Vec<f64>| c.iter().zip(&x).map(|(a, &b)| a * f64::from(b)).sum::<f64>();
                prop_assert!(codes.iter().all(|c| cos(c) <= cos(&codes[i]) + 1e-9));
            }
        }
    }
}
