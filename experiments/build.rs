//! Embeds the exact versions of the dependencies the workspace resolved
//! (from `Cargo.lock`) so that `manifest.json` can record them
//! (`report::Manifest`): the direct dependencies of the wflora crates, each
//! at the version the lock file pins.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One `[[package]]` of a lock file: name, version, its dependencies as
/// written (`"name"` or `"name version"`).
struct Package {
    name: String,
    version: String,
    dependencies: Vec<String>,
}

/// Reads the `[[package]]` entries of a `Cargo.lock` (its fixed layout: one
/// `key = value` per line, `dependencies = [` then one quoted entry a line).
fn parse_lock(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let mut current: Option<Package> = None;
    let mut in_deps = false;
    let unquote = |s: &str| s.trim().trim_end_matches(',').trim_matches('"').to_owned();
    for line in text.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            packages.extend(current.take());
            current = Some(Package {
                name: String::new(),
                version: String::new(),
                dependencies: Vec::new(),
            });
            in_deps = false;
            continue;
        }
        let Some(pkg) = current.as_mut() else {
            continue;
        };
        if in_deps {
            if line.starts_with(']') {
                in_deps = false;
            } else if !line.is_empty() {
                pkg.dependencies.push(unquote(line));
            }
        } else if let Some(v) = line.strip_prefix("name = ") {
            pkg.name = unquote(v);
        } else if let Some(v) = line.strip_prefix("version = ") {
            pkg.version = unquote(v);
        } else if line == "dependencies = [" {
            in_deps = true;
        }
    }
    packages.extend(current);
    packages
}

/// The direct dependencies of the `wflora*` packages, name → exact
/// version(s), as the lock file resolves them.
fn direct_dependencies(packages: &[Package]) -> BTreeMap<String, Vec<String>> {
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in packages {
        versions.entry(&p.name).or_default().push(&p.version);
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in packages.iter().filter(|p| p.name.starts_with("wflora")) {
        for dep in &p.dependencies {
            let mut parts = dep.split_whitespace();
            let Some(name) = parts.next() else { continue };
            if name.starts_with("wflora") {
                continue;
            }
            let version = match parts.next() {
                Some(v) => v.to_owned(),
                None => match versions.get(name).map(Vec::as_slice) {
                    Some([v]) => (*v).to_owned(),
                    _ => continue,
                },
            };
            let entry = out.entry(name.to_owned()).or_default();
            if !entry.contains(&version) {
                entry.push(version);
                entry.sort();
            }
        }
    }
    out
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let lock = manifest_dir.join("..").join("Cargo.lock");
    println!("cargo::rerun-if-changed={}", lock.display());
    let deps = std::fs::read_to_string(&lock)
        .map(|t| direct_dependencies(&parse_lock(&t)))
        .unwrap_or_default();
    let mut code = String::from(
        "/// The direct dependencies of the wflora crates at the exact versions of\n\
         /// the workspace's `Cargo.lock` (empty when it was not found at build time).\n\
         pub const LOCKED_DEPENDENCIES: &[(&str, &str)] = &[\n",
    );
    for (name, versions) in &deps {
        for v in versions {
            code.push_str(&format!("    ({name:?}, {v:?}),\n"));
        }
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("locked.rs");
    if let Err(e) = std::fs::write(&out, code) {
        println!("cargo::warning=cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}
