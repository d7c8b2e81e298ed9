//! The in-memory [`Dataset`] and its transforms.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

#[cfg(doc)]
use crate::error::DataError;
use crate::error::{Result, invalid};

/// Images (`f32`, NCHW, row-major) with `u32` labels in `0..num_classes`.
///
/// Invariants (checked by [`Dataset::new`], kept by every method):
/// `images.len() == len · channels · height · width`, every label `< num_classes`,
/// `channels, height, width, num_classes ≥ 1`. A dataset may be empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Vec<u32>,
    channels: usize,
    height: usize,
    width: usize,
    num_classes: usize,
}

/// A mini-batch copied out of a dataset: images NCHW and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Images, `labels.len() · channels · height · width` values, NCHW row-major.
    pub images: Vec<f32>,
    /// Labels, one per image.
    pub labels: Vec<u32>,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl Batch {
    /// Number of images in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape `[n, channels, height, width]`, as a tensor library wants it.
    #[must_use]
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), self.channels, self.height, self.width]
    }
}

/// Index lists of a train/test split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Indices of the training samples, ascending.
    pub train: Vec<usize>,
    /// Indices of the test samples, ascending.
    pub test: Vec<usize>,
}

/// Per-channel mean and standard deviation, for normalisation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelStats {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel (population, divisor `N`), all `> 0`.
    pub std: Vec<f32>,
}

impl ChannelStats {
    /// Builds statistics from given values (e.g. published ones).
    ///
    /// # Errors
    /// [`DataError::Invalid`] if the lengths differ or are zero, a mean is not
    /// finite, or a standard deviation is not finite and positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(invalid(
                "channel stats",
                "as many means as standard deviations, at least one",
                format!("{} means, {} stds", mean.len(), std.len()),
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(invalid("mean", "finite values", m));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid("std", "finite positive values", s));
        }
        Ok(Self { mean, std })
    }
}

/// Policy for the last, partial mini-batch of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LastBatch {
    /// Yield it, shorter than the others (every sample is seen once per epoch).
    Keep,
    /// Drop it (every batch has exactly `batch_size` samples).
    Drop,
}

impl Dataset {
    /// Builds a dataset, checking its invariants.
    ///
    /// # Errors
    /// [`DataError::Invalid`] naming the field: a zero dimension or class count,
    /// an image buffer whose length is not `labels.len() · c · h · w`, a label
    /// `≥ num_classes`.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u32>,
        channels: usize,
        height: usize,
        width: usize,
        num_classes: usize,
    ) -> Result<Self> {
        for (field, v) in [
            ("channels", channels),
            ("height", height),
            ("width", width),
            ("num_classes", num_classes),
        ] {
            if v == 0 {
                return Err(invalid(field, "at least 1", v));
            }
        }
        let per = channels
            .checked_mul(height)
            .and_then(|x| x.checked_mul(width))
            .ok_or_else(|| {
                invalid(
                    "image shape",
                    "c·h·w within usize",
                    format!("{channels}×{height}×{width}"),
                )
            })?;
        let expected = labels.len().checked_mul(per);
        if expected != Some(images.len()) {
            return Err(invalid(
                "images",
                format!(
                    "{} values ({} labels × {channels}×{height}×{width})",
                    labels.len().saturating_mul(per),
                    labels.len()
                ),
                format!("{} values", images.len()),
            ));
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= num_classes)
        {
            return Err(invalid(
                "labels",
                format!("labels < num_classes = {num_classes}"),
                format!("label {l} at index {i}"),
            ));
        }
        Ok(Self {
            images,
            labels,
            channels,
            height,
            width,
            num_classes,
        })
    }

    /// All images, NCHW row-major.
    #[must_use]
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All labels.
    #[must_use]
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Number of samples `n`.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Channels per image.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height.
    #[must_use]
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width.
    #[must_use]
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes (labels lie in `0..num_classes`).
    #[must_use]
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Values per image, `channels · height · width`.
    #[must_use]
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i` (`c·h·w` values), or `None` out of range.
    #[must_use]
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let s = self.image_len();
        self.images.get(i * s..(i + 1) * s)
    }

    /// Consumes the dataset into `(images, labels)`.
    #[must_use]
    pub fn into_parts(self) -> (Vec<f32>, Vec<u32>) {
        (self.images, self.labels)
    }

    /// Number of samples of each class (length `num_classes`).
    #[must_use]
    pub fn class_counts(&self) -> Vec<usize> {
        class_counts(&self.labels, self.num_classes)
    }

    fn check_indices(&self, indices: &[usize]) -> Result<()> {
        match indices.iter().find(|&&i| i >= self.len()) {
            Some(i) => Err(invalid(
                "indices",
                format!("indices < dataset length {}", self.len()),
                i,
            )),
            None => Ok(()),
        }
    }

    /// Copies the samples at `indices` (in that order; repeats allowed) into a batch.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if an index is out of range.
    pub fn gather(&self, indices: &[usize]) -> Result<Batch> {
        self.check_indices(indices)?;
        Ok(self.gather_unchecked(indices))
    }

    pub(crate) fn gather_unchecked(&self, indices: &[usize]) -> Batch {
        let s = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * s);
        for &i in indices {
            images.extend_from_slice(&self.images[i * s..(i + 1) * s]);
        }
        Batch {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    /// The dataset of the samples at `indices` (in that order; repeats allowed),
    /// with the same class count.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let b = self.gather(indices)?;
        Ok(Dataset {
            images: b.images,
            labels: b.labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        })
    }

    /// Concatenates datasets of equal image shape and class count.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for an empty list or differing shapes/class counts.
    pub fn concat(parts: &[Dataset]) -> Result<Dataset> {
        let Some(first) = parts.first() else {
            return Err(invalid("parts", "at least one dataset", "an empty list"));
        };
        let key = |d: &Dataset| (d.channels, d.height, d.width, d.num_classes);
        if let Some(d) = parts.iter().find(|d| key(d) != key(first)) {
            return Err(invalid(
                "parts",
                format!("(c, h, w, classes) = {:?} for every part", key(first)),
                format!("{:?}", key(d)),
            ));
        }
        let mut images = Vec::with_capacity(parts.iter().map(|d| d.images.len()).sum());
        let mut labels = Vec::with_capacity(parts.iter().map(Dataset::len).sum());
        for d in parts {
            images.extend_from_slice(&d.images);
            labels.extend_from_slice(&d.labels);
        }
        Ok(Dataset {
            images,
            labels,
            channels: first.channels,
            height: first.height,
            width: first.width,
            num_classes: first.num_classes,
        })
    }

    /// Keeps the samples whose label is in `classes` and relabels class
    /// `classes[j]` as `j`; the result has `classes.len()` classes.
    /// E.g. `keep_classes(&[5, 6, 7, 8, 9])` maps 5…9 to 0…4. Sample order is kept.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if `classes` is empty, repeats a class or names one
    /// `≥ num_classes`.
    pub fn keep_classes(&self, classes: &[u32]) -> Result<Dataset> {
        if classes.is_empty() {
            return Err(invalid("classes", "at least one class", "an empty list"));
        }
        let mut map = vec![None; self.num_classes];
        for (j, &c) in classes.iter().enumerate() {
            let slot = map
                .get_mut(c as usize)
                .ok_or_else(|| invalid("classes", format!("classes < {}", self.num_classes), c))?;
            if slot.is_some() {
                return Err(invalid("classes", "distinct classes", format!("{c} twice")));
            }
            *slot = Some(j as u32);
        }
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| map[self.labels[i] as usize].is_some())
            .collect();
        let mut out = self.subset(&keep)?;
        for l in &mut out.labels {
            if let Some(new) = map[*l as usize] {
                *l = new;
            }
        }
        out.num_classes = classes.len();
        Ok(out)
    }

    /// Seeded stratified split: each class puts a share `test_fraction` of its
    /// samples into the test set, its samples chosen at random.
    ///
    /// Per-class test counts are apportioned by largest remainder, so the total
    /// test size is exactly `round(test_fraction · n)` and each class's test count
    /// is `⌊f·n_c⌋` or `⌈f·n_c⌉` (ties broken by class index). Index lists are sorted.
    ///
    /// # Errors
    /// [`DataError::Invalid`] unless `0 ≤ test_fraction ≤ 1`.
    pub fn stratified_split(&self, test_fraction: f64, seed: u64) -> Result<Split> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(invalid(
                "test_fraction",
                "a number in [0, 1]",
                test_fraction,
            ));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let n = self.len();
        let target = (test_fraction * n as f64).round() as usize;
        let quotas: Vec<f64> = by_class
            .iter()
            .map(|c| test_fraction * c.len() as f64)
            .collect();
        let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
        let mut order: Vec<usize> = (0..self.num_classes).collect();
        // Largest fractional remainder first; stable sort keeps class order on ties.
        order.sort_by(|&a, &b| {
            let ra = quotas[a] - quotas[a].floor();
            let rb = quotas[b] - quotas[b].floor();
            rb.total_cmp(&ra)
        });
        let mut missing = target.saturating_sub(counts.iter().sum());
        for &c in &order {
            if missing == 0 {
                break;
            }
            if counts[c] < by_class[c].len() {
                counts[c] += 1;
                missing -= 1;
            }
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut train = Vec::with_capacity(n - target);
        let mut test = Vec::with_capacity(target);
        for (idx, &k) in by_class.iter_mut().zip(&counts) {
            idx.shuffle(&mut rng);
            test.extend_from_slice(&idx[..k]);
            train.extend_from_slice(&idx[k..]);
        }
        train.sort_unstable();
        test.sort_unstable();
        Ok(Split { train, test })
    }

    /// Per-channel mean and population standard deviation over all samples
    /// and pixels (accumulated in `f64`). Compute it on the training split and
    /// apply it to both splits with [`Dataset::normalize`].
    ///
    /// # Errors
    /// [`DataError::Invalid`] if the dataset is empty or a channel is constant
    /// (zero standard deviation).
    pub fn channel_stats(&self) -> Result<ChannelStats> {
        if self.is_empty() {
            return Err(invalid(
                "dataset",
                "at least one sample",
                "an empty dataset",
            ));
        }
        let plane = self.height * self.width;
        let mut sum = vec![0.0_f64; self.channels];
        for (j, chunk) in self.images.chunks_exact(plane).enumerate() {
            sum[j % self.channels] += chunk.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        let count = (self.len() * plane) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let mut sq = vec![0.0_f64; self.channels];
        for (j, chunk) in self.images.chunks_exact(plane).enumerate() {
            let c = j % self.channels;
            sq[c] += chunk
                .iter()
                .map(|&v| (f64::from(v) - mean[c]).powi(2))
                .sum::<f64>();
        }
        let std: Vec<f32> = sq.iter().map(|s| (s / count).sqrt() as f32).collect();
        ChannelStats::new(mean.iter().map(|&m| m as f32).collect(), std)
    }

    /// Normalises in place: `x ← (x − mean_c) / std_c` per channel `c`.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if `stats` has another channel count.
    pub fn normalize(&mut self, stats: &ChannelStats) -> Result<()> {
        if stats.mean.len() != self.channels {
            return Err(invalid(
                "stats",
                format!("{} channels", self.channels),
                format!("{} channels", stats.mean.len()),
            ));
        }
        let plane = self.height * self.width;
        for (j, chunk) in self.images.chunks_exact_mut(plane).enumerate() {
            let c = j % self.channels;
            let (m, inv) = (stats.mean[c], 1.0 / stats.std[c]);
            for v in chunk {
                *v = (*v - m) * inv;
            }
        }
        Ok(())
    }

    /// Bilinear resize of every image to `new_height × new_width`.
    ///
    /// Convention: half-pixel centres (`align_corners = false` in PyTorch, no
    /// antialiasing): output pixel `y` samples source row `(y + ½)·H/H' − ½`,
    /// clamped to `[0, H − 1]`. Same size is the identity; a 2× downscale averages
    /// 2 × 2 blocks; affine ramps are reproduced away from the borders.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if a new size is zero.
    pub fn resize_bilinear(&self, new_height: usize, new_width: usize) -> Result<Dataset> {
        if new_height == 0 || new_width == 0 {
            return Err(invalid(
                "size",
                "positive height and width",
                format!("{new_height}×{new_width}"),
            ));
        }
        let taps = |src: usize, dst: usize| -> Vec<(usize, usize, f32)> {
            let scale = src as f64 / dst as f64;
            (0..dst)
                .map(|o| {
                    let x = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
                    let i0 = x.floor() as usize;
                    let i1 = (i0 + 1).min(src - 1);
                    (i0, i1, (x - i0 as f64) as f32)
                })
                .collect()
        };
        let ys = taps(self.height, new_height);
        let xs = taps(self.width, new_width);
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(self.len() * self.channels * new_height * new_width);
        for src in self.images.chunks_exact(plane) {
            for &(y0, y1, fy) in &ys {
                let (r0, r1) = (&src[y0 * self.width..], &src[y1 * self.width..]);
                for &(x0, x1, fx) in &xs {
                    let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
                    let bot = r1[x0] + (r1[x1] - r1[x0]) * fx;
                    out.push(top + (bot - top) * fy);
                }
            }
        }
        Ok(Dataset {
            images: out,
            height: new_height,
            width: new_width,
            ..self.clone_shape_with_labels()
        })
    }

    /// Replicates a one-channel dataset into `channels` identical channels
    /// (e.g. grey → RGB for a ViT expecting 3 channels).
    ///
    /// # Errors
    /// [`DataError::Invalid`] if the dataset does not have exactly one channel or
    /// `channels` is zero.
    pub fn replicate_channels(&self, channels: usize) -> Result<Dataset> {
        if self.channels != 1 {
            return Err(invalid("dataset channels", "1", self.channels));
        }
        if channels == 0 {
            return Err(invalid("channels", "at least 1", channels));
        }
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(self.images.len() * channels);
        for img in self.images.chunks_exact(plane) {
            for _ in 0..channels {
                out.extend_from_slice(img);
            }
        }
        Ok(Dataset {
            images: out,
            channels,
            ..self.clone_shape_with_labels()
        })
    }

    /// Mini-batches over `indices` (a client's partition, a split, or
    /// `0..len`), shuffled by `seed` if given, of `batch_size` samples; the last
    /// partial batch is kept or dropped by `last`.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for a zero batch size or an index out of range.
    pub fn batches<'a>(
        &'a self,
        indices: &[usize],
        batch_size: usize,
        last: LastBatch,
        seed: Option<u64>,
    ) -> Result<impl Iterator<Item = Batch> + 'a> {
        self.check_indices(indices)?;
        let mut order = indices.to_vec();
        if let Some(s) = seed {
            shuffle_indices(&mut order, s);
        }
        let chunks = batch_indices(&order, batch_size, last)?;
        Ok(chunks.into_iter().map(move |c| self.gather_unchecked(&c)))
    }

    fn clone_shape_with_labels(&self) -> Dataset {
        Dataset {
            images: Vec::new(),
            labels: self.labels.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }
}

/// Number of samples per class of `labels` (length `num_classes`; labels
/// `≥ num_classes` are not counted).
#[must_use]
pub fn class_counts(labels: &[u32], num_classes: usize) -> Vec<usize> {
    let mut c = vec![0; num_classes];
    for &l in labels {
        if let Some(x) = c.get_mut(l as usize) {
            *x += 1;
        }
    }
    c
}

/// Shuffles `indices` in place with a generator seeded by `seed`.
pub fn shuffle_indices(indices: &mut [usize], seed: u64) {
    indices.shuffle(&mut StdRng::seed_from_u64(seed));
}

/// Splits `indices` into consecutive batches of `batch_size`; the last partial
/// batch is kept or dropped by `last`.
///
/// # Errors
/// [`DataError::Invalid`] for a zero batch size.
pub fn batch_indices(
    indices: &[usize],
    batch_size: usize,
    last: LastBatch,
) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(invalid("batch_size", "at least 1", batch_size));
    }
    Ok(indices
        .chunks(batch_size)
        .filter(|c| last == LastBatch::Keep || c.len() == batch_size)
        .map(<[usize]>::to_vec)
        .collect())
}

/// An endless mini-batch sampler over a pool of indices, for a fixed number of
/// local steps that need not align with epochs.
///
/// It walks a seeded permutation of the pool; when fewer than `batch_size`
/// indices remain it drops them and reshuffles (an epoch with the last partial
/// batch dropped), so a batch never repeats an index. If the pool is smaller than
/// `batch_size`, every batch is the whole pool, reshuffled.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    order: Vec<usize>,
    pos: usize,
    batch: usize,
    rng: StdRng,
}

impl BatchSampler {
    /// A sampler over `pool` with batches of `batch_size`, seeded by `seed`.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for an empty pool or a zero batch size.
    pub fn new(pool: Vec<usize>, batch_size: usize, seed: u64) -> Result<Self> {
        if pool.is_empty() {
            return Err(invalid("pool", "at least one index", "an empty pool"));
        }
        if batch_size == 0 {
            return Err(invalid("batch_size", "at least 1", batch_size));
        }
        let batch = batch_size.min(pool.len());
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order = pool;
        order.shuffle(&mut rng);
        Ok(Self {
            order,
            pos: 0,
            batch,
            rng,
        })
    }

    /// The effective batch size, `min(batch_size, pool size)`.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The next batch of indices.
    pub fn next_batch(&mut self) -> &[usize] {
        if self.pos + self.batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
        }
        let b = &self.order[self.pos..self.pos + self.batch];
        self.pos += self.batch;
        b
    }
}
