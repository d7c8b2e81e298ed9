//! Small statistics over seeds: means, spreads and paired differences.

/// Mean of a slice (NaN when empty).
#[must_use]
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (0 for fewer than two values).
#[must_use]
pub fn std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// `(min, max)` of a slice (`(+∞, −∞)` when empty).
#[must_use]
pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Named paired differences as the JSON array every summary writes
/// (`[{"name": …, "diff": {mean, se, lower, upper}}]`).
#[must_use]
pub fn paired_json(diffs: &[(String, Paired)]) -> serde_json::Value {
    diffs
        .iter()
        .map(|(n, p)| serde_json::json!({"name": n, "diff": p}))
        .collect()
}

/// A paired difference `a − b` over seeds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Paired {
    /// Mean of the per-seed differences.
    pub mean: f64,
    /// Standard error of that mean (0 with one seed).
    pub se: f64,
    /// `mean − 2·se`: the lower end of an approximate 95% interval.
    pub lower: f64,
    /// `mean + 2·se`: the upper end.
    pub upper: f64,
}

/// Paired difference of two equally long per-seed series.
#[must_use]
pub fn paired(a: &[f64], b: &[f64]) -> Paired {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let m = mean(&d);
    let se = std(&d) / (d.len() as f64).sqrt();
    Paired {
        mean: m,
        se,
        lower: m - 2.0 * se,
        upper: m + 2.0 * se,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked() {
        assert!((mean(&[1.0, 2.0, 3.0]) - 2.0).abs() < 1e-12);
        assert!((std(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        assert_eq!(std(&[5.0]), 0.0);
        // differences 1, 2, 3: mean 2, sd 1, se 1/√3
        let p = paired(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0]);
        assert!((p.mean - 2.0).abs() < 1e-12);
        assert!((p.se - 1.0 / 3f64.sqrt()).abs() < 1e-12);
        assert!((p.lower - (2.0 - 2.0 / 3f64.sqrt())).abs() < 1e-12);
        assert_eq!(min_max(&[0.3, -1.0, 2.0]), (-1.0, 2.0));
        let j = paired_json(&[("a_minus_b".into(), p)]);
        assert_eq!(j[0]["name"], "a_minus_b");
        assert!((j[0]["diff"]["mean"].as_f64().unwrap() - 2.0).abs() < 1e-12);
    }
}
