//! The small run both engine test files start from.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use wflora_fed::{RunConfig, Task};

/// A directory for this test binary's files: `<tmp>/wflora-fed-<binary>-<pid>/<name>`.
pub fn scratch(binary: &str, name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("wflora-fed-{binary}-{}", std::process::id()))
        .join(name)
}

/// The embedded default cut down to seconds: 30 pre-training steps,
/// 4 clients, 4 rounds of 2 local steps, backbone cached under `cache`.
pub fn small_base(cache: PathBuf) -> RunConfig {
    let mut c = RunConfig::embedded_default();
    c.task.pretrain.steps = 30;
    c.task.pretrain.warmup_steps = 5;
    c.task.cache_dir = cache;
    c.federation.clients = 4;
    c.federation.rounds = 4;
    c.local.steps = 2;
    c
}

/// The task of [`small_base`] with its cache under this binary's scratch
/// directory, built once per test binary.
pub fn task(binary: &str) -> Arc<Task> {
    static TASK: OnceLock<Arc<Task>> = OnceLock::new();
    TASK.get_or_init(|| {
        Arc::new(
            Task::build(&small_base(scratch(binary, "cache")).task).expect("small task builds"),
        )
    })
    .clone()
}
