//! The command-line entry points on bad and good input.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use wflora_experiments::cli;
use wflora_experiments::figures::{FigureOptions, Profile, find};

#[test]
fn alloc_solve_reads_the_documented_example() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/alloc/examples/instance.json");
    cli::alloc_solve(&example).unwrap();
}

#[test]
fn alloc_solve_names_a_bad_file() {
    let dir = std::env::temp_dir().join(format!("wflora-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.json");
    std::fs::write(&bad, "{\"clients\": [").unwrap();
    let err = cli::alloc_solve(&bad).unwrap_err().to_string();
    assert!(err.contains("broken.json"), "{err}");
    let err = cli::alloc_solve(&dir.join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_figure_and_profile_are_clear_errors() {
    let err = find("fig99").err().unwrap().to_string();
    assert!(err.contains("fig3"), "{err}");
    assert!("nope".parse::<Profile>().unwrap_err().contains("quick"));
    assert_eq!(
        "real-noniid".parse::<Profile>().unwrap(),
        Profile::RealNoniid
    );
}

/// The options of `wflora reproduce --profile PROFILE` and nothing else.
fn plain(profile: Profile) -> FigureOptions {
    FigureOptions {
        profile,
        out: std::path::PathBuf::new(),
        resume: false,
        force: false,
        config: Default::default(),
        plot: Default::default(),
    }
}

#[test]
fn the_real_profile_without_assets_names_the_fetch_command() {
    // The test's working directory (experiments/) has no asset cache.
    let dir = std::env::temp_dir().join(format!("wflora-cli-real-{}", std::process::id()));
    let err = cli::reproduce("fig3", Some(&dir), &plain(Profile::Real))
        .unwrap_err()
        .to_string();
    assert!(err.contains("just fetch-assets"), "{err}");
    // The SO figures' real profile (the text tasks) needs the text assets.
    let err = cli::reproduce("so1", Some(&dir), &plain(Profile::Real))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text-assets.json") && err.contains("just fetch-assets"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_a_bad_config_names_the_file_and_field() {
    let dir = std::env::temp_dir().join(format!("wflora-cli-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nseed = 1\n[task]\nimage_size = \"big\"\n",
    )
    .unwrap();
    let err = cli::run(&bad, &[], Some(&dir.join("out")), wflora_fed::Start::Fresh)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("file {}: ", bad.display())) && err.contains("`task.image_size`"),
        "{err}"
    );
    // A missing file is a file, not a configuration field.
    let missing = dir.join("missing.toml");
    let err = cli::run(
        &missing,
        &[],
        Some(&dir.join("out")),
        wflora_fed::Start::Fresh,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!("file {}: cannot read it", missing.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            wflora_fed::RunConfig::from_toml(&text, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped configs in {}", dir.display());
}

/// The `wflora` binary with `args`, the environment's thread and malloc
/// variables removed and `env` set; its exit status and stderr.
fn wflora(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wflora"));
    cmd.args(args)
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("GLIBC_TUNABLES");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MALLOC_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Removes a directory when dropped, also when the test fails.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_binary_applies_its_process_defaults_and_the_environment_wins() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("wflora-cli-process-{}", std::process::id())));
    // each run in a directory of its own, so a failed run cannot be read
    // through an earlier run's manifest
    let runtime = |name: &str, env: &[(&str, &str)]| -> serde_json::Value {
        let out = dir.0.join(name);
        let (status, stderr) = wflora(
            &[
                "reproduce",
                "fig2",
                "--profile",
                "quick",
                "--out",
                out.to_str().unwrap(),
            ],
            env,
        );
        assert!(status.success(), "{name}: {status}\n{stderr}");
        let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&manifest).unwrap()["runtime"].clone()
    };
    // Started bare (as `target/release/wflora`), the binary sets both.
    let bare = runtime("bare", &[]);
    assert_eq!(bare["rayon_num_threads"], "1", "{bare}");
    assert_eq!(bare["rayon_source"], "wflora_default", "{bare}");
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert_eq!(bare["malloc_source"], "wflora_default", "{bare}");
        assert!(
            bare["malloc"]
                .as_str()
                .unwrap()
                .contains("trim threshold 1024 MiB"),
            "{bare}"
        );
    }
    // Values the user set are kept and recorded as theirs.
    let theirs = runtime(
        "theirs",
        &[
            ("RAYON_NUM_THREADS", "2"),
            ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"),
        ],
    );
    assert_eq!(theirs["rayon_num_threads"], "2", "{theirs}");
    assert_eq!(theirs["rayon_source"], "environment", "{theirs}");
    assert_eq!(theirs["malloc_source"], "environment", "{theirs}");
    assert!(
        theirs["malloc"].as_str().unwrap().contains("arena_max=2"),
        "{theirs}"
    );
    // glibc's older variables count as the user's malloc setting too.
    let old = runtime("old", &[("MALLOC_ARENA_MAX", "1")]);
    assert_eq!(old["rayon_source"], "wflora_default", "{old}");
    assert_eq!(old["malloc_source"], "environment", "{old}");
    assert!(
        old["malloc"]
            .as_str()
            .unwrap()
            .contains("MALLOC_ARENA_MAX=1"),
        "{old}"
    );
}

#[test]
fn a_thread_count_that_is_not_a_number_is_a_clear_error() {
    let (status, stderr) = wflora(&["list"], &[("RAYON_NUM_THREADS", "two")]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RAYON_NUM_THREADS=\"two\"") && stderr.contains("whole number"),
        "{stderr}"
    );
}

/// The `wflora` binary run in `cwd` (so its caches live there) with `args`;
/// its exit status, stdout and stderr.
fn wflora_in(cwd: &Path, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wflora"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file below `dir` but the lock (whose holder changes) with the
/// SHA-256 of its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if rel != wflora_fed::lock::LOCK_FILE {
                    out.push((rel, wflora_data::sha256_hex(&std::fs::read(&p).unwrap())));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_directory_in_use_is_refused_at_once_naming_it_and_the_holder() {
    let dir = TempDir(std::env::temp_dir().join(format!("wflora-cli-lock-{}", std::process::id())));
    let out = dir.0.join("fig2");
    let held = wflora_fed::DirLock::acquire(&out).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml");
    for args in [
        vec![
            "reproduce",
            "fig2",
            "--profile",
            "quick",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "reproduce",
            "fig2",
            "--profile",
            "quick",
            "--resume",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--resume",
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        let (status, _, stderr) = wflora_in(&dir.0, &args);
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("in use by another run"), "{stderr}");
        assert!(stderr.contains(&out.display().to_string()), "{stderr}");
        assert!(
            stderr.contains(&format!("pid {}", std::process::id())),
            "{stderr}"
        );
        // Refused before any work: nothing was pre-trained or written.
        assert!(!dir.0.join(".cache").exists(), "{args:?}");
    }
    drop(held);
    // --resume and --force exclude each other.
    let (status, _, stderr) = wflora_in(
        &dir.0,
        &[
            "reproduce",
            "fig2",
            "--resume",
            "--force",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
}

#[test]
fn force_keeps_old_results_whole_until_the_new_run_has_started() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("wflora-cli-force-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let out = dir.0.join("fig2");
    let out_s = out.to_str().unwrap();
    let force = || {
        let args = [
            "reproduce",
            "fig2",
            "--profile",
            "quick",
            "--force",
            "--out",
            out_s,
        ];
        wflora_in(&dir.0, &args)
    };
    let (status, _, stderr) = wflora_in(
        &dir.0,
        &["reproduce", "fig2", "--profile", "quick", "--out", out_s],
    );
    assert!(status.success(), "{stderr}");
    let before = snapshot(&out);
    assert!(before.iter().any(|(p, _)| p == "summary.json"));
    assert!(before.iter().any(|(p, _)| p.starts_with("runs/")));

    // One flipped bit in the cached backbone's weights: an error naming
    // the file and how to rebuild it, and the old results stay whole.
    let cache = dir.0.join(".cache/wflora");
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    *bytes.last_mut().unwrap() ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let (status, _, stderr) = force();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(file.file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
    assert!(stderr.contains("delete it and run again"), "{stderr}");
    assert_eq!(
        snapshot(&out),
        before,
        "old results changed by a --force that failed to start"
    );

    // --resume of a figure started with another profile is refused before
    // its task is built (no backbone of that profile appears in the cache).
    let cached = snapshot(&cache);
    let (status, _, stderr) = wflora_in(
        &dir.0,
        &[
            "reproduce",
            "fig2",
            "--profile",
            "default",
            "--resume",
            "--out",
            out_s,
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another profile or configuration"),
        "{stderr}"
    );
    assert_eq!(snapshot(&cache), cached);

    // With the damaged file gone, --force replaces the results with the
    // same numbers.
    std::fs::remove_file(&file).unwrap();
    let (status, _, stderr) = force();
    assert!(status.success(), "{stderr}");
    let after = snapshot(&out);
    for name in ["data.csv", "summary.json", "bound.csv"] {
        let get =
            |s: &[(String, String)]| s.iter().find(|(p, _)| p == name).map(|(_, b)| b.clone());
        assert_eq!(get(&after), get(&before), "{name}");
    }
}

/// The claims of a written `summary.json`: how many hold, how many in all.
fn claims_of(dir: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let claims = v["claims"].as_array().expect("summary.json has claims");
    let hold = claims.iter().filter(|c| c["pass"] == true).count();
    (hold, claims.len())
}

#[test]
fn reproduce_exits_0_once_written_and_3_with_strict_when_a_claim_fails() {
    let dir = TempDir(std::env::temp_dir().join(format!("wflora-cli-exit-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let out = dir.0.join("fig2");
    let out_s = out.to_str().unwrap();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "reproduce",
            "fig2",
            "--profile",
            "quick",
            "--force",
            "--out",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.push(out_s.to_owned());
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        wflora_in(&dir.0, &a)
    };

    // Without --strict: 0, whatever the claims, and the last line tallies
    // the claims summary.json holds.
    let (status, stdout, stderr) = run(&["--seeds", "1", "--rounds", "2"]);
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    let (hold, total) = claims_of(&out);
    assert!(total > 0);
    let last = stdout.lines().last().unwrap_or_default();
    if hold == total {
        assert!(
            last.starts_with("fig2: all ") || last.starts_with("fig2: the 1 claim"),
            "{last}"
        );
    } else {
        assert!(
            last.starts_with(&format!(
                "fig2: {hold} of {total} claims hold; the {} ",
                total - hold
            )) && last.contains("docs/figures.md#fig2"),
            "{last}"
        );
    }
    assert!(
        last.ends_with("(quick profile: a smoke run, not results)"),
        "{last}"
    );
    assert!(stdout.starts_with("quick profile: a smoke run"), "{stdout}");
    // --seeds and --rounds reached the runs.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tsfa_base"]["federation"]["rounds"], 2, "{config}");

    // With --strict: 3 exactly when a claim does not hold.
    let (status, stdout, stderr) = run(&["--seeds", "1", "--rounds", "2", "--strict"]);
    let (hold, total) = claims_of(&out);
    let expected = if hold == total { 0 } else { 3 };
    assert_eq!(status.code(), Some(expected), "{stdout}\n{stderr}");

    // A bad --set is an error (1) naming the key, before anything runs.
    let (status, _, stderr) = run(&["--set", "federation.no_such_key=1"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no_such_key"), "{stderr}");
    // Bad arguments are 2.
    let (status, _, stderr) = run(&["--seeds", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
}

#[test]
fn run_takes_the_file_as_an_argument_or_with_config_and_refuses_resume_with_force() {
    let dir = TempDir(std::env::temp_dir().join(format!("wflora-cli-run-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cfg = dir.0.join("three.toml");
    // A partial configuration: three lines over the embedded default.
    std::fs::write(&cfg, "name = \"three\"\n[federation]\nclients = 0\n").unwrap();
    let cfg_s = cfg.to_str().unwrap();
    for args in [vec!["run", cfg_s], vec!["run", "--config", cfg_s]] {
        let (status, _, stderr) = wflora_in(&dir.0, &args);
        // The file was read (positionally or with --config): its bad value is named.
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("three.toml") && stderr.contains("clients"),
            "{args:?}: {stderr}"
        );
    }
    let (status, _, stderr) = wflora_in(&dir.0, &["run", cfg_s, "--resume", "--force"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let (status, _, stderr) = wflora_in(&dir.0, &["run", cfg_s, "--config", cfg_s]);
    assert_eq!(status.code(), Some(2), "{stderr}");
}
