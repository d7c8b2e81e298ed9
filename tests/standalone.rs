//! The repository stands alone: no file points at material outside it, and
//! every reference to the formulation (`docs/method.md §N`) names a section
//! that `docs/method.md` has.
//!
//! The files checked are those git knows of (tracked, plus new files that
//! are not ignored), or, where git or the repository is unavailable, every
//! file under the workspace root except build outputs, results and caches.
//! Binary files (not UTF-8, or holding a NUL byte) are skipped. The checking
//! functions take text and return what they found, so the last test can feed
//! them bad input and show that they catch it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The formulation document, relative to the workspace root.
const METHOD_DOC: &str = "docs/method.md";

/// This file, which necessarily spells out the patterns it looks for.
const THIS_FILE: &str = "tests/standalone.rs";

/// Text that points outside the repository: the old location of the
/// formulation and the old way of citing it.
const FORBIDDEN: [&str; 3] = ["..\x2fshared", "METHOD §", "METHOD.md"];

/// Directories skipped by the fallback walk (build outputs, results, caches).
const SKIPPED_DIRS: [&str; 5] = ["target", ".git", "results", ".cache", "node_modules"];

/// The sections that code comments and documents cite; each must exist.
const EXPECTED_SECTIONS: [&str; 8] = ["1", "2", "3", "4", "5", "6", "6b", "7"];

/// A problem found in one line of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    /// 1-based line number.
    line: usize,
    /// What is wrong.
    what: String,
}

/// The workspace root (the root package's manifest directory).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files to check, relative to `root`, sorted.
fn repository_files(root: &Path) -> Vec<PathBuf> {
    let mut files = git_files(root).unwrap_or_else(|| {
        let mut found = Vec::new();
        walk(root, root, &mut found);
        found
    });
    files.sort();
    files.dedup();
    files
}

/// Tracked files and untracked files that are not ignored, by `git ls-files`;
/// `None` when git cannot answer (not installed, not a repository).
fn git_files(root: &Path) -> Option<Vec<PathBuf>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let list = String::from_utf8(out.stdout).ok()?;
    let files: Vec<PathBuf> = list
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    (!files.is_empty()).then_some(files)
}

/// Every file under `dir` (relative to `root`), skipping [`SKIPPED_DIRS`]
/// and `target-*` build directories.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if SKIPPED_DIRS.contains(&name.as_ref()) || name.starts_with("target-") {
                continue;
            }
            walk(root, &path, out);
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
}

/// The file's text, or `None` for a missing, unreadable or binary file.
fn read_text(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Every occurrence of a [`FORBIDDEN`] pattern in `text`, by line.
fn forbidden_mentions(text: &str) -> Vec<Violation> {
    mentions_of(text, &FORBIDDEN)
}

/// Every occurrence of any of `patterns` in `text`, by line.
fn mentions_of(text: &str, patterns: &[&str]) -> Vec<Violation> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for p in patterns {
            if line.contains(p) {
                found.push(Violation {
                    line: i + 1,
                    what: format!("mentions `{p}`"),
                });
            }
        }
    }
    found
}

/// A section id at the start of `s` (digits, then lowercase letters:
/// `6`, `6b`), and its length in bytes.
fn section_id(s: &str) -> Option<(&str, usize)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let letters = s[digits..]
        .bytes()
        .take_while(u8::is_ascii_lowercase)
        .count();
    let n = digits + letters;
    Some((&s[..n], n))
}

/// The section ids of the `## N. Title` headings of `doc`.
fn method_sections(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("## "))
        .filter_map(|rest| {
            let (id, n) = section_id(rest)?;
            rest[n..].starts_with('.').then(|| id.to_owned())
        })
        .collect()
}

/// What may join two cited sections: `§1–§3`, `§1-§3`, `§1, §2`,
/// `§1 and §6b`, `§4/§5`.
const JOINERS: [&str; 6] = ["–§", "—§", "-§", ", §", " and §", " or §"];

/// The section ids cited after every `marker` (`docs/method.md §` in other
/// files, `§` inside the document itself), by line; a list or range
/// (`§1–§5`, `§1 and §6b`) gives each id it names.
fn cited_sections(text: &str, marker: &str) -> Vec<(usize, String)> {
    let mut cited = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            loop {
                let Some((id, n)) = section_id(rest) else {
                    cited.push((i + 1, String::new()));
                    break;
                };
                cited.push((i + 1, id.to_owned()));
                rest = &rest[n..];
                match JOINERS.iter().find(|j| rest.starts_with(**j)) {
                    Some(j) => rest = &rest[j.len()..],
                    None => break,
                }
            }
        }
    }
    cited
}

/// The citations after `marker` in `text` that name no section of
/// `sections`.
fn dangling_references(text: &str, marker: &str, sections: &BTreeSet<String>) -> Vec<Violation> {
    cited_sections(text, marker)
        .into_iter()
        .filter(|(_, id)| !sections.contains(id))
        .map(|(line, id)| Violation {
            line,
            what: if id.is_empty() {
                format!("`{marker}` is not followed by a section number")
            } else {
                format!("cites §{id}, which {METHOD_DOC} does not have")
            },
        })
        .collect()
}

/// The formulation document's text and its section ids.
fn method_doc() -> (String, BTreeSet<String>) {
    let path = root().join(METHOD_DOC);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    let sections = method_sections(&text);
    (text, sections)
}

/// `file:line: what` for every violation, one a line.
fn report(file: &Path, found: &[Violation]) -> Vec<String> {
    found
        .iter()
        .map(|v| format!("{}:{}: {}", file.display(), v.line, v.what))
        .collect()
}

/// Every text file of the repository except this one, with its text.
fn repository_texts() -> Vec<(PathBuf, String)> {
    let root = root();
    let files = repository_files(&root);
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.toml")),
        "the file list of {} lacks Cargo.toml: {} files found",
        root.display(),
        files.len()
    );
    files
        .into_iter()
        .filter(|f| f != Path::new(THIS_FILE))
        .filter_map(|f| read_text(&root.join(&f)).map(|t| (f, t)))
        .collect()
}

#[test]
fn no_file_points_outside_the_repository() {
    let mut problems = Vec::new();
    for (file, text) in repository_texts() {
        problems.extend(report(&file, &forbidden_mentions(&text)));
    }
    assert!(
        problems.is_empty(),
        "files that point outside the repository (the formulation is {METHOD_DOC}):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_reference_to_the_method_names_one_of_its_sections() {
    let (_, sections) = method_doc();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (file, text) in repository_texts() {
        checked += cited_sections(&text, "docs/method.md §").len();
        problems.extend(report(
            &file,
            &dangling_references(&text, "docs/method.md §", &sections),
        ));
    }
    assert!(
        problems.is_empty(),
        "references to sections {METHOD_DOC} lacks (it has {sections:?}):\n{}",
        problems.join("\n")
    );
    assert!(checked > 0, "no `docs/method.md §` reference was found");
}

#[test]
fn the_method_document_is_complete_and_self_contained() {
    let (text, sections) = method_doc();
    for id in EXPECTED_SECTIONS {
        assert!(
            sections.contains(id),
            "{METHOD_DOC} has no `## {id}.` heading (it has {sections:?})"
        );
    }
    // Its own cross-references (`§4`, `§1–§2`) resolve as well.
    let mut problems = report(
        Path::new(METHOD_DOC),
        &dangling_references(&text, "§", &sections),
    );
    problems.extend(report(
        Path::new(METHOD_DOC),
        &mentions_of(&text, &["shared/"]),
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checkers_catch_bad_input() {
    let doc = "# Title\n\n## 1. One\ntext §2\n## 2. Two\n## 6b. Six b\n## Notes\n## 3 no dot\n";
    let sections = method_sections(doc);
    let expected: BTreeSet<String> = ["1", "2", "6b"].map(String::from).into();
    assert_eq!(sections, expected);

    // Forbidden text is found on its line, every pattern.
    let bad = "fine\nsee ..\x2fshared/METHOD.md\nas METHOD §3 says\n";
    let found = forbidden_mentions(bad);
    let lines: Vec<usize> = found.iter().map(|v| v.line).collect();
    assert_eq!(lines, [2, 2, 3], "{found:?}");
    assert!(forbidden_mentions("docs/method.md §3; shared state").is_empty());

    // Citations: single, range, list, possessive; a dangling one and a
    // marker without a number are caught, with their lines.
    let refs = "a (docs/method.md §1–§2) b\n\
                c docs/method.md §6b's trial\n\
                d docs/method.md §1 and §9\n\
                e docs/method.md §x\n\
                f docs/method.md §3, last bullet\n";
    let cited: Vec<(usize, String)> = cited_sections(refs, "docs/method.md §");
    let ids: Vec<&str> = cited.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "6b", "1", "9", "", "3"]);
    let dangling = dangling_references(refs, "docs/method.md §", &sections);
    let at: Vec<usize> = dangling.iter().map(|v| v.line).collect();
    assert_eq!(at, [3, 4, 5], "{dangling:?}");
    assert!(dangling[0].what.contains("§9"), "{dangling:?}");
    assert!(dangling[2].what.contains("§3"), "{dangling:?}");
    assert!(dangling[1].what.contains("not followed"), "{dangling:?}");

    // The report names file and line.
    let lines = report(Path::new("x/y.rs"), &dangling);
    assert!(lines[0].starts_with("x/y.rs:3: "), "{lines:?}");
}
