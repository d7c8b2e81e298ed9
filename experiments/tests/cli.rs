//! The command-line entry points on bad and good input.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use wflora_experiments::cli;
use wflora_experiments::figures::{Profile, find};

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

#[test]
fn the_real_profile_without_assets_names_the_fetch_command() {
    // The test's working directory (experiments/) has no asset cache.
    let dir = std::env::temp_dir().join(format!("wflora-cli-real-{}", std::process::id()));
    let err = cli::reproduce("fig3", Profile::Real, Some(&dir), false, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("just fetch-assets"), "{err}");
    // The SO figures' real profile (the text tasks) needs the text assets.
    let err = cli::reproduce("so1", Profile::Real, Some(&dir), false, false)
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
    std::fs::write(&bad, "name = \"x\"\nseed = 1\n").unwrap();
    let err = cli::run(&bad, Some(&dir.join("out")), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.toml") && err.contains("task"), "{err}");
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
