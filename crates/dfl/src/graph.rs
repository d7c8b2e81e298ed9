//! Communication graphs of a decentralized round and their mixing weights
//! (plain `f64`; no model, no channel).
//!
//! A [`Graph`] is undirected and simple (no self loops); `neighbours(i)`
//! are sorted. [`Graph::metropolis_weights`] gives the Metropolis–Hastings
//! matrix `w_ij = 1/(1 + max(deg_i, deg_j))` on edges and the rest on the
//! diagonal: symmetric and doubly stochastic, the standard choice of
//! decentralized SGD when no global knowledge is available.
//!
//! The cluster topology groups devices by average-linkage agglomerative
//! clustering ([`average_linkage`]) on a distance that mixes task
//! dissimilarity and link weakness ([`cluster_distance`]); devices then
//! talk only inside their cluster, which is fully connected.

use ndarray::Array2;

/// Errors of graph construction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// An argument is out of its range.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> GraphError {
    GraphError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// An undirected simple graph on `0..n`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    adj: Vec<Vec<usize>>,
}

impl Graph {
    /// A graph from undirected edges (duplicates merged).
    ///
    /// # Errors
    /// [`GraphError::Invalid`] naming `edges` for a self loop or an end
    /// `≥ n`.
    pub fn from_edges(n: usize, edges: &[(usize, usize)]) -> Result<Self, GraphError> {
        let mut adj = vec![Vec::new(); n];
        for &(a, b) in edges {
            if a >= n || b >= n {
                return Err(invalid("edges", format!("({a}, {b}) has an end ≥ n = {n}")));
            }
            if a == b {
                return Err(invalid("edges", format!("self loop at {a}")));
            }
            adj[a].push(b);
            adj[b].push(a);
        }
        for l in &mut adj {
            l.sort_unstable();
            l.dedup();
        }
        Ok(Self { adj })
    }

    /// The ring `0 – 1 – … – (n−1) – 0` (a path for `n = 2`, no edge for 1).
    #[must_use]
    pub fn ring(n: usize) -> Self {
        let edges: Vec<(usize, usize)> = match n {
            0 | 1 => Vec::new(),
            2 => vec![(0, 1)],
            _ => (0..n).map(|i| (i, (i + 1) % n)).collect(),
        };
        Self::from_edges(n, &edges).unwrap_or_else(|_| Self { adj: vec![] })
    }

    /// The complete graph.
    #[must_use]
    pub fn complete(n: usize) -> Self {
        Self {
            adj: (0..n)
                .map(|i| (0..n).filter(|&j| j != i).collect())
                .collect(),
        }
    }

    /// Complete inside each cluster, nothing across: `labels[i]` is device
    /// `i`'s cluster.
    #[must_use]
    pub fn from_clusters(labels: &[usize]) -> Self {
        let n = labels.len();
        Self {
            adj: (0..n)
                .map(|i| {
                    (0..n)
                        .filter(|&j| j != i && labels[j] == labels[i])
                        .collect()
                })
                .collect(),
        }
    }

    /// The random geometric graph of `points` (metres): an edge wherever
    /// two points are within `radius`, the radius first raised to the least
    /// value that connects the graph (the longest edge of a Euclidean
    /// minimum spanning tree) when `radius` alone leaves it disconnected.
    /// Returns the graph and the radius used.
    ///
    /// # Errors
    /// [`GraphError::Invalid`] naming `radius` if it is not finite and
    /// positive, or `points` for a non-finite coordinate.
    pub fn random_geometric(points: &[(f64, f64)], radius: f64) -> Result<(Self, f64), GraphError> {
        if !(radius.is_finite() && radius > 0.0) {
            return Err(invalid(
                "radius",
                format!("{radius} must be finite and > 0"),
            ));
        }
        if let Some(p) = points
            .iter()
            .find(|p| !(p.0.is_finite() && p.1.is_finite()))
        {
            return Err(invalid("points", format!("{p:?} is not finite")));
        }
        let r = radius.max(connectivity_radius(points));
        let n = points.len();
        let mut edges = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                if dist(points[i], points[j]) <= r {
                    edges.push((i, j));
                }
            }
        }
        Ok((Self::from_edges(n, &edges)?, r))
    }

    /// Number of vertices.
    #[must_use]
    pub fn len(&self) -> usize {
        self.adj.len()
    }

    /// Whether the graph has no vertex.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.adj.is_empty()
    }

    /// The sorted neighbours of `i` (empty out of range).
    #[must_use]
    pub fn neighbours(&self, i: usize) -> &[usize] {
        self.adj.get(i).map_or(&[], Vec::as_slice)
    }

    /// Number of undirected edges.
    #[must_use]
    pub fn num_edges(&self) -> usize {
        self.adj.iter().map(Vec::len).sum::<usize>() / 2
    }

    /// Whether every vertex reaches every other (true for `n ≤ 1`).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.components().len() <= 1
    }

    /// Connected components, each sorted, ordered by their least vertex.
    #[must_use]
    pub fn components(&self) -> Vec<Vec<usize>> {
        let n = self.len();
        let mut seen = vec![false; n];
        let mut out = Vec::new();
        for s in 0..n {
            if seen[s] {
                continue;
            }
            let mut comp = vec![s];
            seen[s] = true;
            let mut i = 0;
            while i < comp.len() {
                for &j in &self.adj[comp[i]] {
                    if !seen[j] {
                        seen[j] = true;
                        comp.push(j);
                    }
                }
                i += 1;
            }
            comp.sort_unstable();
            out.push(comp);
        }
        out
    }

    /// Metropolis–Hastings weights: `w_ij = 1/(1 + max(d_i, d_j))` for an
    /// edge, `w_ii = 1 − Σ_j w_ij`, 0 elsewhere. Symmetric, doubly
    /// stochastic, non-negative.
    #[must_use]
    pub fn metropolis_weights(&self) -> Array2<f64> {
        let n = self.len();
        let mut w = Array2::zeros((n, n));
        for i in 0..n {
            for &j in &self.adj[i] {
                w[[i, j]] = 1.0 / (1.0 + self.adj[i].len().max(self.adj[j].len()) as f64);
            }
        }
        for i in 0..n {
            let off: f64 = w.row(i).sum();
            w[[i, i]] = 1.0 - off;
        }
        w
    }
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// The least radius that connects the geometric graph of `points`: the
/// longest edge of a Euclidean minimum spanning tree (Prim, `O(n²)`); 0 for
/// fewer than two points.
#[must_use]
pub fn connectivity_radius(points: &[(f64, f64)]) -> f64 {
    let n = points.len();
    if n < 2 {
        return 0.0;
    }
    let mut in_tree = vec![false; n];
    let mut best = vec![f64::INFINITY; n];
    best[0] = 0.0;
    let mut longest = 0.0f64;
    for _ in 0..n {
        let (u, &d) = best
            .iter()
            .enumerate()
            .filter(|(i, _)| !in_tree[*i])
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        in_tree[u] = true;
        longest = longest.max(d);
        for v in 0..n {
            if !in_tree[v] {
                best[v] = best[v].min(dist(points[u], points[v]));
            }
        }
    }
    longest
}

/// The clustering distance of devices `i`, `j`:
/// `(1 − λ)·(1 − cos(c_i, c_j))/2 + λ·(1 − q_ij)`, with `c` the devices'
/// task codes and `q ∈ [0, 1]` their link quality (1 best). Both terms lie
/// in `[0, 1]`; `λ` weighs link quality against task similarity.
///
/// # Errors
/// [`GraphError::Invalid`] naming `lambda` outside `[0, 1]`, `codes` for
/// codes of unequal length or zero norm, or `quality` for a wrong shape.
pub fn cluster_distance(
    codes: &[Vec<f64>],
    quality: &Array2<f64>,
    lambda: f64,
) -> Result<Array2<f64>, GraphError> {
    let n = codes.len();
    if !(0.0..=1.0).contains(&lambda) {
        return Err(invalid("lambda", format!("{lambda} must lie in [0, 1]")));
    }
    if quality.dim() != (n, n) {
        return Err(invalid(
            "quality",
            format!("shape {:?}, expected ({n}, {n})", quality.dim()),
        ));
    }
    let dim = codes.first().map_or(0, Vec::len);
    let norms: Vec<f64> = codes
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    if codes.iter().any(|c| c.len() != dim) || norms.iter().any(|&x| !(x > 0.0 && x.is_finite())) {
        return Err(invalid(
            "codes",
            "every task code needs the same length and a finite non-zero norm",
        ));
    }
    let mut d = Array2::zeros((n, n));
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let cos = codes[i]
                .iter()
                .zip(&codes[j])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / (norms[i] * norms[j]);
            let q = quality[[i, j]].clamp(0.0, 1.0);
            d[[i, j]] = (1.0 - lambda) * (1.0 - cos.clamp(-1.0, 1.0)) / 2.0 + lambda * (1.0 - q);
        }
    }
    Ok(d)
}

/// Average-linkage agglomerative clustering of `n` items with the
/// symmetric distance matrix `dist` into `k` clusters: repeatedly merge the
/// two clusters of least mean pairwise distance (ties: the lowest indices).
/// Labels are `0..k`, numbered in order of each cluster's least member.
///
/// # Errors
/// [`GraphError::Invalid`] naming `k` outside `1..=n`, or `dist` if it is
/// not square, symmetric and finite.
pub fn average_linkage(dist: &Array2<f64>, k: usize) -> Result<Vec<usize>, GraphError> {
    let n = dist.nrows();
    if dist.ncols() != n {
        return Err(invalid(
            "dist",
            format!("shape {:?} is not square", dist.dim()),
        ));
    }
    if k == 0 || k > n {
        return Err(invalid("k", format!("{k} clusters of {n} items")));
    }
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (dist[[i, j]], dist[[j, i]]);
            if !a.is_finite() || (a - b).abs() > 1e-9 * (1.0 + a.abs()) {
                return Err(invalid(
                    "dist",
                    format!("entry ({i}, {j}) is not finite and symmetric"),
                ));
            }
        }
    }
    let mut clusters: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let link = |a: &[usize], b: &[usize]| -> f64 {
        let s: f64 = a
            .iter()
            .flat_map(|&i| b.iter().map(move |&j| (i, j)))
            .map(|(i, j)| dist[[i, j]])
            .sum();
        s / (a.len() * b.len()) as f64
    };
    while clusters.len() > k {
        let mut best = (f64::INFINITY, 0, 1);
        for a in 0..clusters.len() {
            for b in a + 1..clusters.len() {
                let d = link(&clusters[a], &clusters[b]);
                if d < best.0 {
                    best = (d, a, b);
                }
            }
        }
        let merged = clusters.remove(best.2);
        clusters[best.1].extend(merged);
    }
    for c in &mut clusters {
        c.sort_unstable();
    }
    clusters.sort_by_key(|c| c[0]);
    let mut labels = vec![0; n];
    for (l, c) in clusters.iter().enumerate() {
        for &i in c {
            labels[i] = l;
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ring_and_complete_have_their_degrees() {
        let r = Graph::ring(6);
        assert!((0..6).all(|i| r.neighbours(i).len() == 2));
        assert_eq!(r.num_edges(), 6);
        assert_eq!(r.neighbours(0), &[1, 5]);
        assert_eq!(Graph::ring(2).num_edges(), 1);
        assert_eq!(Graph::ring(1).num_edges(), 0);
        let c = Graph::complete(5);
        assert_eq!(c.num_edges(), 10);
        assert!(c.is_connected() && r.is_connected());
    }

    #[test]
    fn clusters_are_cliques_without_bridges() {
        let g = Graph::from_clusters(&[0, 1, 0, 1, 2]);
        assert_eq!(g.neighbours(0), &[2]);
        assert_eq!(g.neighbours(1), &[3]);
        assert!(g.neighbours(4).is_empty());
        assert_eq!(g.components(), vec![vec![0, 2], vec![1, 3], vec![4]]);
    }

    #[test]
    fn metropolis_weights_by_hand_on_a_path() {
        // Path 0 – 1 – 2: degrees 1, 2, 1, so every edge weighs 1/3.
        let g = Graph::from_edges(3, &[(0, 1), (1, 2)]).expect("edges");
        let w = g.metropolis_weights();
        let want = [
            [2.0 / 3.0, 1.0 / 3.0, 0.0],
            [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
            [0.0, 1.0 / 3.0, 2.0 / 3.0],
        ];
        for i in 0..3 {
            for j in 0..3 {
                assert!((w[[i, j]] - want[i][j]).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn connectivity_radius_matches_brute_force_bisection() {
        let pts = [(0.0, 0.0), (3.0, 0.0), (3.0, 4.0), (10.0, 4.0), (10.5, 4.2)];
        let r = connectivity_radius(&pts);
        assert!((r - 7.0).abs() < 1e-12, "{r}");
        let connected = |rad: f64| {
            let mut e = Vec::new();
            for i in 0..pts.len() {
                for j in i + 1..pts.len() {
                    if dist(pts[i], pts[j]) <= rad {
                        e.push((i, j));
                    }
                }
            }
            Graph::from_edges(pts.len(), &e)
                .expect("edges")
                .is_connected()
        };
        assert!(connected(r) && !connected(r - 1e-9));
        let (g, used) = Graph::random_geometric(&pts, 1.0).expect("radius");
        assert!((used - 7.0).abs() < 1e-12 && g.is_connected());
        let (g, used) = Graph::random_geometric(&pts, 100.0).expect("radius");
        assert_eq!((used, g.num_edges()), (100.0, 10));
        assert!(Graph::random_geometric(&pts, -1.0).is_err());
    }

    #[test]
    fn average_linkage_recovers_separated_groups_and_checks_input() {
        // Two tight groups far apart: {0, 2, 4} and {1, 3}.
        let pos = [0.0, 10.0, 0.1, 10.2, 0.3];
        let d = Array2::from_shape_fn((5, 5), |(i, j)| f64::abs(pos[i] - pos[j]));
        assert_eq!(average_linkage(&d, 2).expect("k"), vec![0, 1, 0, 1, 0]);
        assert_eq!(average_linkage(&d, 5).expect("k"), vec![0, 1, 2, 3, 4]);
        assert_eq!(average_linkage(&d, 1).expect("k"), vec![0; 5]);
        assert!(average_linkage(&d, 0).is_err());
        assert!(average_linkage(&d, 6).is_err());
        let mut bad = d.clone();
        bad[[0, 1]] = 3.0;
        assert!(average_linkage(&bad, 2).is_err());
    }

    #[test]
    fn cluster_distance_by_hand() {
        let codes = vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![-1.0, 0.0]];
        let q = Array2::from_shape_fn((3, 3), |(i, j)| if i == j { 1.0 } else { 0.5 });
        let d = cluster_distance(&codes, &q, 0.0).expect("valid");
        assert!((d[[0, 1]] - 0.5).abs() < 1e-15); // orthogonal
        assert!((d[[0, 2]] - 1.0).abs() < 1e-15); // opposite
        let d = cluster_distance(&codes, &q, 1.0).expect("valid");
        assert!((d[[0, 2]] - 0.5).abs() < 1e-15);
        assert!(cluster_distance(&codes, &q, 1.5).is_err());
        assert!(cluster_distance(&[vec![0.0, 0.0]], &Array2::zeros((1, 1)), 0.5).is_err());
    }

    fn graph_strategy() -> impl Strategy<Value = Graph> {
        (1usize..12).prop_flat_map(|n| {
            proptest::collection::vec((0..n, 0..n), 0..40).prop_map(move |pairs| {
                let edges: Vec<_> = pairs.into_iter().filter(|(a, b)| a != b).collect();
                Graph::from_edges(n, &edges).expect("valid edges")
            })
        })
    }

    proptest! {
        #[test]
        fn metropolis_is_symmetric_doubly_stochastic_and_follows_edges(g in graph_strategy()) {
            let w = g.metropolis_weights();
            let n = g.len();
            for i in 0..n {
                prop_assert!((w.row(i).sum() - 1.0).abs() < 1e-12);
                prop_assert!((w.column(i).sum() - 1.0).abs() < 1e-12);
                for j in 0..n {
                    prop_assert!(w[[i, j]] >= 0.0);
                    prop_assert!((w[[i, j]] - w[[j, i]]).abs() < 1e-15);
                    if i != j {
                        prop_assert_eq!(w[[i, j]] > 0.0, g.neighbours(i).contains(&j));
                    }
                }
            }
        }

        #[test]
        fn geometric_graph_is_connected_and_monotone_in_radius(
            pts in proptest::collection::vec((-500.0f64..500.0, -500.0f64..500.0), 1..15),
            r in 1.0f64..800.0,
        ) {
            let (g, used) = Graph::random_geometric(&pts, r).expect("valid");
            prop_assert!(g.is_connected());
            prop_assert!(used >= r);
            let (g2, _) = Graph::random_geometric(&pts, used * 1.5).expect("valid");
            prop_assert!(g2.num_edges() >= g.num_edges());
        }

        #[test]
        fn linkage_gives_k_nonempty_clusters(
            pos in proptest::collection::vec(-10.0f64..10.0, 1..12),
            k_raw in 1usize..12,
        ) {
            let n = pos.len();
            let k = 1 + k_raw % n;
            let d = Array2::from_shape_fn((n, n), |(i, j)| f64::abs(pos[i] - pos[j]));
            let labels = average_linkage(&d, k).expect("valid");
            let mut seen = vec![0usize; k];
            for &l in &labels { seen[l] += 1; }
            prop_assert!(seen.iter().all(|&c| c > 0));
            prop_assert_eq!(labels[0], 0);
        }
    }
}
