//! The text corpora and the MiniLM tokenizer on the real assets (fetched by
//! `just fetch-assets --only text`): documents kept, windows, dropped
//! documents, class counts and timings per corpus at seq_len 64 and 128.
//!
//! ```sh
//! cargo run -p wflora-data --example text_windows -- [ASSETS_DIR] [MAX_CHARS] [MAX_WINDOWS_PER_DOC]
//! ```
//! (defaults: `.cache/wflora/assets`, 20000, 1000).

use std::path::PathBuf;
use std::time::Instant;

use wflora_data::{
    DataError, Result, TextCorpus, WindowOptions, WordPieceTokenizer, read_brown, read_sotu,
    read_spam_assassin, split_by_document, windows,
};

const BROWN_GENRES: [&str; 15] = [
    "adventure",
    "belles_lettres",
    "editorial",
    "fiction",
    "government",
    "hobbies",
    "humor",
    "learned",
    "lore",
    "mystery",
    "news",
    "religion",
    "reviews",
    "romance",
    "science_fiction",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(args.first().map_or(".cache/wflora/assets", String::as_str));
    let number = |i: usize, field: &'static str, default: usize| {
        args.get(i).map_or(Ok(default), |a| {
            a.parse().map_err(|_| DataError::Invalid {
                field,
                expected: "a whole number".into(),
                got: a.clone(),
            })
        })
    };
    let max_chars = number(1, "MAX_CHARS", 20_000)?;
    let max_windows = number(2, "MAX_WINDOWS_PER_DOC", 1000)?;
    let text = root.join("text");
    let tokenizer = WordPieceTokenizer::from_file(&text.join("minilm/tokenizer.json"))?;
    println!(
        "tokenizer: {} entries, [CLS] {} [SEP] {} [PAD] {}; max_chars {max_chars}, max windows per doc {max_windows}",
        tokenizer.vocab_size(),
        tokenizer.cls_id(),
        tokenizer.sep_id(),
        tokenizer.pad_id()
    );
    let t = Instant::now();
    let spam = read_spam_assassin(&text.join("spam-assassin"))?;
    report(&spam, t, &tokenizer, max_chars, max_windows)?;
    let t = Instant::now();
    let brown = read_brown(&text.join("brown"), &BROWN_GENRES)?;
    report(&brown, t, &tokenizer, max_chars, max_windows)?;
    let t = Instant::now();
    let sotu = read_sotu(&text.join("sotu"), &["Democratic", "Republican"])?;
    report(&sotu, t, &tokenizer, max_chars, max_windows)?;
    Ok(())
}

/// Prints a corpus's statistics (read since `read_start`) and its windows at
/// seq_len 64 and 128.
fn report(
    corpus: &TextCorpus,
    read_start: Instant,
    tokenizer: &WordPieceTokenizer,
    max_chars: usize,
    max_windows: usize,
) -> Result<()> {
    let chars: usize = corpus.docs.iter().map(|d| d.text.chars().count()).sum();
    println!(
        "\n{}: {} documents ({:.1} s to read), {chars} characters, per class {:?} {:?}",
        corpus.name,
        corpus.docs.len(),
        read_start.elapsed().as_secs_f64(),
        corpus.class_names,
        corpus.class_counts()
    );
    for seq_len in [64, 128] {
        let opts = WindowOptions {
            seq_len,
            max_windows_per_doc: max_windows,
            max_chars,
        };
        let t = Instant::now();
        let (data, stats) = windows(corpus, tokenizer, &opts)?;
        let secs = t.elapsed().as_secs_f64();
        let split = split_by_document(&data, 0.2, 1)
            .map(|(tr, te)| format!("train {} / test {} windows", tr.len(), te.len()))
            .unwrap_or_else(|e| format!("split: {e}"));
        println!(
            "  seq_len {seq_len}: {} windows from {} documents ({} dropped, {} cut to \
             max_chars), per class {:?}; {secs:.1} s to tokenise and window; {split}",
            stats.windows,
            stats.docs_kept,
            stats.docs_dropped,
            stats.docs_truncated,
            data.class_counts()
        );
    }
    Ok(())
}
