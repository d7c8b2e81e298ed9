//! A figure end to end on the quick profile: every output file is written,
//! the summary holds the claims computed from the data, earlier results are
//! refused, and `--resume` over finished runs gives the same summary.
#![allow(clippy::unwrap_used)]

use wflora_experiments::figures::{FigureOptions, Profile, find};

#[test]
fn fig2_quick_writes_everything_and_resumes_to_the_same_numbers() {
    let dir = std::env::temp_dir().join(format!("wflora-fig2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = |resume, force| FigureOptions {
        profile: Profile::Quick,
        out: dir.clone(),
        resume,
        force,
        config: Default::default(),
        plot: Default::default(),
    };
    let fig = find("fig2").unwrap();
    let first = (fig.run)(&opts(false, false)).unwrap();
    for f in [
        "data.csv",
        "bound.csv",
        "fig2.png",
        "fig2.svg",
        "fig2_covariance.png",
        "fig2_covariance.svg",
        "summary.json",
        "config.json",
        "manifest.json",
    ] {
        let p = dir.join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let claims = summary["claims"].as_array().unwrap();
    assert_eq!(claims.len(), first.claims.len());
    for c in claims {
        for field in ["name", "pass", "value", "threshold"] {
            assert!(!c[field].is_null(), "claim lacks {field}: {c}");
        }
    }
    // The bound table in the summary is the one in bound.csv (one row per candidate rank).
    let rows = std::fs::read_to_string(dir.join("bound.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(
        summary["bound_table"]["rows"].as_array().unwrap().len(),
        rows
    );

    // A second run into the same directory is refused without --force/--resume.
    let err = (fig.run)(&opts(false, false)).unwrap_err().to_string();
    assert!(
        err.contains("summary.json") || err.contains("exists"),
        "{err}"
    );

    // Resuming over finished runs recomputes the same numbers.
    let data_before = std::fs::read_to_string(dir.join("data.csv")).unwrap();
    (fig.run)(&opts(true, false)).unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(again["claims"], summary["claims"]);
    assert_eq!(again["bound_table"], summary["bound_table"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("data.csv")).unwrap(),
        data_before
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn so3_quick_writes_everything_resumes_and_refuses_other_profiles() {
    let dir = std::env::temp_dir().join(format!("wflora-so3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = |profile, resume| FigureOptions {
        profile,
        out: dir.clone(),
        resume,
        force: false,
        config: Default::default(),
        plot: Default::default(),
    };
    let fig = find("so3").unwrap();
    let first = (fig.run)(&opts(Profile::Quick, false)).unwrap();
    for f in [
        "data.csv",
        "so3.png",
        "so3.svg",
        "summary.json",
        "config.json",
        "manifest.json",
    ] {
        let p = dir.join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    assert!(dir.join("runs/so_lora-s1/result.json").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["claims"].as_array().unwrap().len(),
        first.claims.len()
    );
    // The claims are computed from the reports: hard − moe is what the summary holds.
    let hard = summary["hard_mean"].as_f64().unwrap();
    let moe = summary["moe_mean"].as_f64().unwrap();
    assert!((summary["claims"][0]["value"].as_f64().unwrap() - (hard - moe)).abs() < 1e-12);
    (fig.run)(&opts(Profile::Quick, true)).unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(again["claims"], summary["claims"]);
    std::fs::remove_dir_all(&dir).unwrap();
    let err = (fig.run)(&opts(Profile::Paper, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("profile 'paper'"), "{err}");
}
