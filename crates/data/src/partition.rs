//! Seeded partitioners of sample indices among `K` clients, and client weights.
//!
//! Every partitioner returns a [`Partition`] whose index lists together cover
//! every sample `0..n` exactly once. All take an explicit seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};

#[cfg(doc)]
use crate::error::DataError;
use crate::error::{Result, invalid};

/// Index lists, one per client (each sorted ascending).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    clients: Vec<Vec<usize>>,
}

impl Partition {
    /// Builds a partition from index lists (sorted here); nothing is checked
    /// beyond that: use [`Partition::covers`] to check coverage.
    #[must_use]
    pub fn from_lists(mut clients: Vec<Vec<usize>>) -> Self {
        for c in &mut clients {
            c.sort_unstable();
        }
        Self { clients }
    }

    /// Number of clients `K`.
    #[must_use]
    pub fn num_clients(&self) -> usize {
        self.clients.len()
    }

    /// Indices of client `k`, or `None` if `k ≥ K`.
    #[must_use]
    pub fn client(&self, k: usize) -> Option<&[usize]> {
        self.clients.get(k).map(Vec::as_slice)
    }

    /// All clients' index lists.
    #[must_use]
    pub fn clients(&self) -> &[Vec<usize>] {
        &self.clients
    }

    /// Consumes the partition into its index lists.
    #[must_use]
    pub fn into_clients(self) -> Vec<Vec<usize>> {
        self.clients
    }

    /// Client sizes `|D_k|`.
    #[must_use]
    pub fn sizes(&self) -> Vec<usize> {
        self.clients.iter().map(Vec::len).collect()
    }

    /// Aggregation weights `p_k = |D_k| / Σ_j |D_j|`.
    ///
    /// # Errors
    /// As [`client_weights`].
    pub fn weights(&self) -> Result<Vec<f64>> {
        client_weights(&self.sizes())
    }

    /// Whether the lists together hold every index of `0..n` exactly once.
    #[must_use]
    pub fn covers(&self, n: usize) -> bool {
        let mut seen = vec![false; n];
        for &i in self.clients.iter().flatten() {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => return false,
            }
        }
        seen.into_iter().all(|s| s)
    }

    /// Per-client class counts: `counts[k][c]` samples of class `c` at client `k`
    /// (indices out of `labels`' range and labels `≥ num_classes` are skipped).
    #[must_use]
    pub fn label_counts(&self, labels: &[u32], num_classes: usize) -> Vec<Vec<usize>> {
        self.clients
            .iter()
            .map(|c| {
                let mut counts = vec![0; num_classes];
                for &i in c {
                    if let Some(x) = labels.get(i).and_then(|&l| counts.get_mut(l as usize)) {
                        *x += 1;
                    }
                }
                counts
            })
            .collect()
    }
}

/// `p_k = |D_k| / Σ_j |D_j|`.
///
/// # Errors
/// [`DataError::Invalid`] if `sizes` is empty or sums to zero.
pub fn client_weights(sizes: &[usize]) -> Result<Vec<f64>> {
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return Err(invalid(
            "sizes",
            "at least one client with a sample",
            format!("{sizes:?}"),
        ));
    }
    Ok(sizes.iter().map(|&s| s as f64 / total as f64).collect())
}

/// How to split a dataset among clients (serialisable, for experiment configs).
///
/// Read from a table with a `kind` key; a key the kind does not take is an
/// error (for `iid` too, which takes none).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scheme {
    /// [`iid`].
    #[serde(deserialize_with = "no_fields")]
    Iid,
    /// [`dirichlet`] with concentration `alpha`, each client at least
    /// `min_size` samples, at most `max_attempts` draws.
    Dirichlet {
        /// Concentration `α > 0` (small: skewed; large: near IID).
        alpha: f64,
        /// Minimum client size.
        min_size: usize,
        /// Maximum number of draws.
        max_attempts: usize,
    },
    /// [`shards`] with `shards_per_client` shards each.
    Shards {
        /// Shards per client `s`.
        shards_per_client: usize,
    },
}

/// Reads the rest of an internally tagged unit variant's table: no key may
/// be left besides `kind` (serde's `deny_unknown_fields` does not reach
/// unit variants of internally tagged enums).
fn no_fields<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<(), D::Error> {
    struct NoFields;
    impl<'de> serde::de::Visitor<'de> for NoFields {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("no key besides `kind`")
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<(), A::Error> {
            match map.next_key::<String>()? {
                None => Ok(()),
                Some(key) => Err(serde::de::Error::custom(format_args!(
                    "unknown field `{key}`: this kind takes no key besides `kind`"
                ))),
            }
        }
    }
    d.deserialize_map(NoFields)
}

impl Scheme {
    /// Applies the scheme to `labels` (in `0..num_classes`) for `num_clients` clients.
    ///
    /// # Errors
    /// Those of the partitioner called.
    pub fn partition(
        &self,
        labels: &[u32],
        num_classes: usize,
        num_clients: usize,
        seed: u64,
    ) -> Result<Partition> {
        match *self {
            Self::Iid => iid(labels.len(), num_clients, seed),
            Self::Dirichlet {
                alpha,
                min_size,
                max_attempts,
            } => dirichlet(
                labels,
                num_classes,
                &DirichletParams {
                    num_clients,
                    alpha,
                    min_size,
                    max_attempts,
                },
                seed,
            ),
            Self::Shards { shards_per_client } => {
                shards(labels, num_clients, shards_per_client, seed)
            }
        }
    }
}

fn check_clients(num_clients: usize, n: usize) -> Result<()> {
    if num_clients == 0 {
        return Err(invalid("num_clients", "at least 1", num_clients));
    }
    if num_clients > n {
        return Err(invalid(
            "num_clients",
            format!("at most the number of samples, {n}"),
            num_clients,
        ));
    }
    Ok(())
}

/// IID partition of `0..n`: a seeded permutation cut into `K` contiguous parts
/// whose sizes differ by at most one (the first `n mod K` clients get one more).
///
/// # Errors
/// [`DataError::Invalid`] unless `1 ≤ num_clients ≤ n`.
pub fn iid(n: usize, num_clients: usize, seed: u64) -> Result<Partition> {
    check_clients(num_clients, n)?;
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut StdRng::seed_from_u64(seed));
    let (q, r) = (n / num_clients, n % num_clients);
    let mut clients = Vec::with_capacity(num_clients);
    let mut start = 0;
    for k in 0..num_clients {
        let len = q + usize::from(k < r);
        clients.push(perm[start..start + len].to_vec());
        start += len;
    }
    Ok(Partition::from_lists(clients))
}

/// Parameters of [`dirichlet`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DirichletParams {
    /// Number of clients `K ≥ 1`.
    pub num_clients: usize,
    /// Concentration `α > 0`.
    pub alpha: f64,
    /// Every client must get at least this many samples (0: no constraint).
    pub min_size: usize,
    /// Draws tried before giving up (at least 1).
    pub max_attempts: usize,
}

/// Dirichlet label-skew partition (Hsu et al. 2019; Yurochkin et al. 2019).
///
/// For each class `c`, proportions `q_c ~ Dir(α·1_K)` over clients; the class's
/// samples, in a seeded random order, are cut at `⌊n_c · Σ_{j≤k} q_{c,j}⌋`, so
/// client `k` gets about `q_{c,k}·n_c` of them. If some client ends with fewer
/// than `min_size` samples, the whole draw is redone, at most `max_attempts`
/// times. Small `α` concentrates each class on few clients; `α → ∞` tends to IID.
///
/// The Dirichlet draw normalises Gamma(α, 1) variates, sampled in log space as
/// `ln G(α+1) + ln(U)/α` (`U ~ U(0,1]`), which has the Gamma(α) law and does
/// not underflow for tiny `α`.
///
/// # Errors
/// [`DataError::Invalid`] for `K = 0`, `α` not finite and positive,
/// `max_attempts = 0`, a label `≥ num_classes`, or `K · min_size > n`;
/// [`DataError::PartitionInfeasible`] if no draw meets `min_size`.
pub fn dirichlet(
    labels: &[u32],
    num_classes: usize,
    params: &DirichletParams,
    seed: u64,
) -> Result<Partition> {
    let &DirichletParams {
        num_clients,
        alpha,
        min_size,
        max_attempts,
    } = params;
    let n = labels.len();
    if num_clients == 0 {
        return Err(invalid("num_clients", "at least 1", num_clients));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(invalid("alpha", "a finite positive number", alpha));
    }
    if max_attempts == 0 {
        return Err(invalid("max_attempts", "at least 1", max_attempts));
    }
    if num_clients.saturating_mul(min_size) > n {
        return Err(invalid(
            "min_size",
            format!("num_clients · min_size ≤ n = {n}"),
            format!("{num_clients} · {min_size}"),
        ));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class
            .get_mut(l as usize)
            .ok_or_else(|| {
                invalid(
                    "labels",
                    format!("labels < num_classes = {num_classes}"),
                    format!("label {l} at index {i}"),
                )
            })?
            .push(i);
    }
    let gamma =
        Gamma::new(alpha + 1.0, 1.0).map_err(|e| invalid("alpha", "a valid Gamma shape", e))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut smallest = 0;
    for _ in 0..max_attempts {
        let mut clients: Vec<Vec<usize>> = vec![Vec::new(); num_clients];
        for idx in &mut by_class {
            if idx.is_empty() {
                continue;
            }
            idx.shuffle(&mut rng);
            let q = dirichlet_draw(&gamma, alpha, num_clients, &mut rng);
            let nc = idx.len();
            let mut cum = 0.0;
            let mut start = 0;
            for (k, client) in clients.iter_mut().enumerate() {
                cum += q[k];
                let end = if k + 1 == num_clients {
                    nc
                } else {
                    ((cum * nc as f64).floor() as usize).clamp(start, nc)
                };
                client.extend_from_slice(&idx[start..end]);
                start = end;
            }
        }
        smallest = clients.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min_size {
            return Ok(Partition::from_lists(clients));
        }
    }
    Err(crate::error::DataError::PartitionInfeasible {
        attempts: max_attempts,
        num_clients,
        min_size,
        smallest,
    })
}

/// One draw of `Dir(α·1_K)`: normalised Gamma(α) variates, in log space.
fn dirichlet_draw(gamma_a1: &Gamma<f64>, alpha: f64, k: usize, rng: &mut StdRng) -> Vec<f64> {
    // ln G(α) = ln G(α+1) + ln(U)/α with U ~ U(0, 1]  (Marsaglia & Tsang 2000, §6).
    let logs: Vec<f64> = (0..k)
        .map(|_| {
            let g: f64 = gamma_a1.sample(rng);
            let u: f64 = 1.0 - rng.random::<f64>();
            g.ln() + u.ln() / alpha
        })
        .collect();
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|x| x / s).collect()
}

/// Pathological non-IID shards (McMahan et al. 2017): samples sorted by label
/// (ties in a seeded random order) are cut into `K·s` contiguous shards, sizes
/// differing by at most one, and each client gets `s` shards chosen at random.
///
/// A shard spans at most `1 + ⌈(L−1)/m⌉` labels for shard size `L` and smallest
/// non-empty class size `m`; when every class holds at least `L` samples, each
/// client sees at most `2s` labels, and exactly `s` shards' labels when shards
/// align with classes.
///
/// # Errors
/// [`DataError::Invalid`] unless `K ≥ 1`, `s ≥ 1` and `K·s ≤ n`.
pub fn shards(
    labels: &[u32],
    num_clients: usize,
    shards_per_client: usize,
    seed: u64,
) -> Result<Partition> {
    let n = labels.len();
    if num_clients == 0 {
        return Err(invalid("num_clients", "at least 1", num_clients));
    }
    if shards_per_client == 0 {
        return Err(invalid(
            "shards_per_client",
            "at least 1",
            shards_per_client,
        ));
    }
    let total = num_clients.saturating_mul(shards_per_client);
    if total > n {
        return Err(invalid(
            "num_clients · shards_per_client",
            format!("at most the number of samples, {n}"),
            total,
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order.sort_by_key(|&i| labels[i]); // stable: ties keep the random order
    let (q, r) = (n / total, n % total);
    let mut bounds = Vec::with_capacity(total + 1);
    bounds.push(0);
    for j in 0..total {
        let last = bounds[j];
        bounds.push(last + q + usize::from(j < r));
    }
    let mut ids: Vec<usize> = (0..total).collect();
    ids.shuffle(&mut rng);
    let clients = ids
        .chunks_exact(shards_per_client)
        .map(|sh| {
            sh.iter()
                .flat_map(|&j| order[bounds[j]..bounds[j + 1]].iter().copied())
                .collect()
        })
        .collect();
    Ok(Partition::from_lists(clients))
}
