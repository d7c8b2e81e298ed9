//! The process settings the `wflora` binary runs with: candle's thread pool
//! and the C allocator's policy for freed memory.
//!
//! Two settings outside the code decide how fast a training step runs on a
//! CPU, and neither is visible in a config file:
//!
//! - **`RAYON_NUM_THREADS`.** The federated engines train clients
//!   concurrently on their own worker threads; candle's thread pool beside
//!   them would only spin, so one thread per client is faster. candle also
//!   reads the variable before every CPU matmul and, when it is unset, counts
//!   the machine's cores again by reading `/proc/cpuinfo` and `/sys`: about a
//!   hundred file reads per training step of a small ViT.
//! - **glibc's malloc thresholds.** A training step frees megabytes of
//!   activations and allocates them again in the next step. By default glibc
//!   returns such memory to the kernel after every step (large blocks are
//!   unmapped, the tops of worker threads' heaps trimmed), and the next step
//!   page-faults it back in, zero-filled: a tenth to a quarter of a step's
//!   time in the kernel. A 32 MiB `mmap` threshold and a 1 GiB trim threshold
//!   keep most of it in the process (glibc still unmaps a worker thread's
//!   heap once it is entirely empty; see `wflora_lora`'s notes on
//!   `arena_max`).
//!
//! [`apply_defaults`] sets both where the user has not: a `RAYON_NUM_THREADS`
//! already in the environment always wins, and so does any malloc setting
//! (a `glibc.malloc.*` tunable in `GLIBC_TUNABLES`, or one of glibc's older
//! `MALLOC_*` variables). So running `target/release/wflora` directly is as
//! fast as running it through `cargo run` or `just`, whose
//! `.cargo/config.toml` sets the same values. [`current`] reports what the
//! process runs with; every run's manifest records it. Programs the binary
//! starts (pip, npm, apt-get in `wflora assets fetch`) inherit
//! `RAYON_NUM_THREADS`; the malloc thresholds are the process's own.
//!
//! This module knows nothing of what runs afterwards. Its `unsafe` is the
//! environment write and the `mallopt` calls, both sound only while the
//! process has one thread (see [`apply_defaults`]).

#![allow(unsafe_code)]

use serde::Serialize;
use std::sync::OnceLock;

/// The `RAYON_NUM_THREADS` the binary sets when the environment has none.
pub const DEFAULT_RAYON_NUM_THREADS: &str = "1";

/// Blocks at least this large (bytes) are `mmap`ed by glibc's malloc and
/// unmapped when freed; smaller ones stay in its heaps (the largest value
/// `mallopt` accepts on 64-bit targets).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// glibc returns free memory at the top of a heap to the kernel only when
/// more than this many bytes (1 GiB) are free there.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The environment the process was started with.
    Environment,
    /// [`apply_defaults`] set it.
    WfloraDefault,
    /// Neither: the library's or platform's own default.
    Unset,
}

/// The settings a process runs with, as recorded in every manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runtime {
    /// `RAYON_NUM_THREADS` as the process sees it (`None`: unset, candle
    /// and rayon then use one thread per core).
    pub rayon_num_threads: Option<String>,
    /// Where that value came from.
    pub rayon_source: Source,
    /// The allocator policy for freed memory, in words.
    pub malloc: String,
    /// Where that policy came from.
    pub malloc_source: Source,
}

/// What [`apply_defaults`] does in a given environment (see [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Set `RAYON_NUM_THREADS` to [`DEFAULT_RAYON_NUM_THREADS`].
    pub set_rayon_threads: bool,
    /// Set glibc's thresholds to [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`].
    pub tune_malloc: bool,
}

/// Which defaults apply, from the value of `RAYON_NUM_THREADS` (`None`:
/// unset; set but empty counts as unset, as rayon and candle read it) and
/// whether the environment holds a malloc setting of its own
/// ([`sets_malloc`]).
///
/// A `RAYON_NUM_THREADS` that is not a whole number is an error: rayon and
/// candle would silently ignore it and use every core. `0` is kept as the
/// user's choice and means what it means to them: rayon's pool gets one
/// thread per logical CPU, and candle counts the physical cores again before
/// every CPU matmul. candle's separate `CANDLE_NUM_THREADS` (its barrier
/// pool, unused by our CPU paths) is left as it is.
pub fn plan(rayon_num_threads: Option<&str>, user_malloc: bool) -> Result<Plan, String> {
    let rayon_num_threads = rayon_num_threads.filter(|v| !v.is_empty());
    if let Some(v) = rayon_num_threads
        && v.parse::<usize>().is_err()
    {
        return Err(format!(
            "RAYON_NUM_THREADS={v:?}: expected a whole number of threads (0: one per core), \
             or leave it unset for wflora's default of {DEFAULT_RAYON_NUM_THREADS}"
        ));
    }
    Ok(Plan {
        set_rayon_threads: rayon_num_threads.is_none(),
        tune_malloc: !user_malloc,
    })
}

/// Whether the environment (`(name, value)` pairs) sets glibc's malloc: a
/// `glibc.malloc.*` tunable in `GLIBC_TUNABLES`, or any of the older
/// `MALLOC_*` variables glibc still reads (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`, ...).
pub fn sets_malloc<K: AsRef<str>, V: AsRef<str>>(env: impl IntoIterator<Item = (K, V)>) -> bool {
    env.into_iter().any(|(k, v)| {
        let (k, v) = (k.as_ref(), v.as_ref());
        k.starts_with("MALLOC_")
            || (k == "GLIBC_TUNABLES"
                && v.split(':')
                    .any(|t| t.trim_start().starts_with("glibc.malloc.")))
    })
}

/// The malloc settings in the process environment, in words (`None`: none).
fn user_malloc_settings() -> Option<String> {
    let found: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
            sets_malloc([(&*k, &*v)]).then(|| format!("{k}={v}"))
        })
        .collect();
    (!found.is_empty()).then(|| found.join(" "))
}

static APPLIED: OnceLock<Runtime> = OnceLock::new();

/// Reads an environment variable that must be UTF-8 if set.
fn env_var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "{name}={v:?}: expected UTF-8 text, the value is not"
        )),
    }
}

/// Applies wflora's defaults where the environment sets nothing (see the
/// module documentation) and returns what the process now runs with. A
/// second call returns the first call's result and changes nothing.
///
/// # Errors
/// A `RAYON_NUM_THREADS` that is not UTF-8 or not a whole number.
///
/// # Safety
/// No other thread of the process may exist yet (call it first thing in
/// `main`): it writes the process environment and glibc's malloc
/// parameters, which another thread could be reading.
pub unsafe fn apply_defaults() -> Result<&'static Runtime, String> {
    if let Some(done) = APPLIED.get() {
        return Ok(done);
    }
    let rayon = env_var("RAYON_NUM_THREADS")?;
    let user_malloc = user_malloc_settings();
    let plan = plan(rayon.as_deref(), user_malloc.is_some())?;
    let rayon_source = if plan.set_rayon_threads {
        // SAFETY: the caller guarantees that this is the only thread, so no
        // other thread reads or writes the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", DEFAULT_RAYON_NUM_THREADS) };
        Source::WfloraDefault
    } else {
        Source::Environment
    };
    // what the process now sees, not what was planned
    let rayon_num_threads = env_var("RAYON_NUM_THREADS")?;
    let (malloc, malloc_source) = if plan.tune_malloc {
        // SAFETY: the caller guarantees that this is the only thread.
        unsafe { tune_malloc() }
    } else {
        malloc_as_found(user_malloc)
    };
    Ok(APPLIED.get_or_init(|| Runtime {
        rayon_num_threads,
        rayon_source,
        malloc,
        malloc_source,
    }))
}

/// Sets glibc's thresholds; the policy in words and where it came from.
///
/// # Safety
/// No other thread may exist: glibc's `mallopt` is MT-Unsafe (other
/// threads' `malloc` and `free` read the parameters it writes without a
/// lock).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn tune_malloc() -> (String, Source) {
    let set = |param, value: usize| -> bool {
        // The thresholds are constants far below `c_int::MAX`.
        let Ok(value) = libc::c_int::try_from(value) else {
            return false;
        };
        // SAFETY: `tune_malloc`'s caller guarantees that no other thread
        // exists, so nothing allocates while the parameters change.
        unsafe { libc::mallopt(param, value) == 1 }
    };
    let mmap = set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    let trim = set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    if mmap && trim {
        (
            format!(
                "glibc malloc, mmap threshold {} MiB, trim threshold {} MiB",
                MMAP_THRESHOLD >> 20,
                TRIM_THRESHOLD >> 20
            ),
            Source::WfloraDefault,
        )
    } else {
        (
            format!("glibc malloc, defaults (mallopt refused: mmap {mmap}, trim {trim})"),
            Source::Unset,
        )
    }
}

/// Other platforms keep their allocator as it is.
///
/// # Safety
/// None needed; `unsafe` to match the glibc version.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
unsafe fn tune_malloc() -> (String, Source) {
    malloc_as_found(None)
}

/// The allocator policy in words for the malloc settings found in the
/// environment (`None`: none), and where it came from.
fn malloc_as_found(settings: Option<String>) -> (String, Source) {
    match settings {
        Some(s) => (format!("glibc malloc with {s}"), Source::Environment),
        None => ("the platform's malloc, untuned".to_owned(), Source::Unset),
    }
}

/// What the process runs with: [`apply_defaults`]'s result where it ran,
/// otherwise the environment as found (a program using the library crates
/// without the binary).
pub fn current() -> Runtime {
    if let Some(done) = APPLIED.get() {
        return done.clone();
    }
    let rayon = std::env::var("RAYON_NUM_THREADS").ok();
    let (malloc, malloc_source) = malloc_as_found(user_malloc_settings());
    Runtime {
        rayon_source: if rayon.is_some() {
            Source::Environment
        } else {
            Source::Unset
        },
        rayon_num_threads: rayon,
        malloc,
        malloc_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_get_the_defaults() {
        let both = Ok(Plan {
            set_rayon_threads: true,
            tune_malloc: true,
        });
        assert_eq!(plan(None, false), both);
        // set but empty is unset, as rayon and candle read it
        assert_eq!(plan(Some(""), false), both);
    }

    #[test]
    fn the_environment_wins() {
        let p = plan(Some("2"), true).expect("valid");
        assert!(!p.set_rayon_threads && !p.tune_malloc);
        // `0` is rayon's "one per core", kept as the user's choice.
        assert!(!plan(Some("0"), false).expect("valid").set_rayon_threads);
    }

    #[test]
    fn malloc_settings_are_recognised() {
        let none: [(&str, &str); 0] = [];
        assert!(!sets_malloc(none));
        // tunables of other glibc parts leave malloc to us
        assert!(!sets_malloc([
            (
                "GLIBC_TUNABLES",
                "glibc.cpu.hwcaps=-AVX2:glibc.rtld.optional_static_tls=64"
            ),
            ("PATH", "/usr/bin"),
            ("RAYON_NUM_THREADS", "1"),
        ]));
        assert!(sets_malloc([(
            "GLIBC_TUNABLES",
            "glibc.cpu.x86_rep_movsb_threshold=1:glibc.malloc.trim_threshold=1"
        )]));
        for old in [
            "MALLOC_ARENA_MAX",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_",
        ] {
            assert!(sets_malloc([(old, "1")]), "{old}");
        }
        // a malloc tunable named in another variable is not a setting
        assert!(!sets_malloc([("NOTES", "glibc.malloc.arena_max=1")]));
    }

    #[test]
    fn a_bad_thread_count_names_the_variable() {
        for bad in ["two", "-1", "1.5", " 2"] {
            let e = plan(Some(bad), false).expect_err(bad);
            assert!(
                e.contains("RAYON_NUM_THREADS") && e.contains("whole number"),
                "{e}"
            );
        }
    }
}
