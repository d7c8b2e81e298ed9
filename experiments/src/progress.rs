//! Progress on stderr, for a terminal and for a log file alike.
//!
//! [`Progress`] counts steps (rounds, fine-tunes, pre-training steps). When
//! stderr is a terminal it draws the indicatif bar (with its ETA); otherwise
//! (CI, `nohup`, `> log 2>&1`) it writes plain, throttled lines such as
//! `fig3: 120/840 rounds (14%), 1m05s elapsed, ETA 6m30s [fedit_r8_s1]`
//! ([`log_line`], [`line_due`]): the first update, the last, and in between
//! at most one every [`LOG_INTERVAL`] unless a further [`LOG_STEP_PERCENT`]
//! of the work is done (and [`LOG_MIN_GAP`] has passed).
//!
//! Progress only observes: it draws from no random stream, reorders
//! nothing and writes only to stderr, so results are the same with or
//! without it, on a terminal or not.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use wflora_lora::PretrainProgress;

/// A log line is due after this long without one (given progress since).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A log line is also due when the work crosses a multiple of this many
/// percent (5%, 10%, ...) since the last line...
pub const LOG_STEP_PERCENT: u64 = 5;

/// ...provided at least this long has passed since the last line (so a
/// fast run does not flood the log).
pub const LOG_MIN_GAP: Duration = Duration::from_secs(1);

/// Where and when the last log line was written: elapsed time since the
/// start and the position it showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Time since the start of the work.
    pub at: Duration,
    /// Steps done then.
    pub pos: u64,
}

/// Whether a log line is due at time `now` (since the start) and position
/// `pos` of `total`, the last one having been written at `last` (`None`:
/// none yet). Always for the first update; always when the work is
/// complete (`pos >= total`) and the last line did not show this position;
/// never without progress since the last line; otherwise after
/// [`LOG_INTERVAL`], or after [`LOG_MIN_GAP`] when `pos` is in a later
/// [`LOG_STEP_PERCENT`] bucket than the last line.
#[must_use]
pub fn line_due(last: Option<Mark>, now: Duration, pos: u64, total: u64) -> bool {
    let Some(last) = last else {
        return true;
    };
    if pos == last.pos {
        return false;
    }
    if pos >= total {
        return true;
    }
    let since = now.saturating_sub(last.at);
    since >= LOG_INTERVAL || (since >= LOG_MIN_GAP && bucket(pos, total) > bucket(last.pos, total))
}

/// Which [`LOG_STEP_PERCENT`] bucket `pos` of `total` is in.
fn bucket(pos: u64, total: u64) -> u128 {
    u128::from(pos) * 100 / (u128::from(total.max(1)) * u128::from(LOG_STEP_PERCENT))
}

/// A duration for a log line, rounded to the second: `0s`, `42s`, `1m05s`,
/// `2h03m` (from an hour on, to the minute).
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => {
            let m = (s + 30) / 60;
            format!("{}h{:02}m", m / 60, m % 60)
        }
    }
}

/// The estimated time left when `done` of `total` steps took `elapsed`, at
/// the same rate: `None` before the first step, zero once all are done.
#[must_use]
pub fn eta(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done >= total {
        return Some(Duration::ZERO);
    }
    if done == 0 {
        return None;
    }
    let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
    // A year is "unknown" too (and keeps `from_secs_f64` in range).
    (left.is_finite() && left < 3.2e7).then(|| Duration::from_secs_f64(left))
}

/// One log line: `what: done/total unit (pct%), elapsed elapsed, ETA eta`
/// (`ETA ?` before the first step; `done in elapsed` once complete), then
/// ` [msg]` where `msg` is not empty.
#[must_use]
pub fn log_line(
    what: &str,
    unit: &str,
    done: u64,
    total: u64,
    elapsed: Duration,
    msg: &str,
) -> String {
    let pct = if total == 0 {
        100
    } else {
        u128::from(done.min(total)) * 100 / u128::from(total)
    };
    let time = if done >= total {
        format!("done in {}", format_duration(elapsed))
    } else {
        format!(
            "{} elapsed, ETA {}",
            format_duration(elapsed),
            eta(elapsed, done, total).map_or_else(|| "?".to_owned(), format_duration)
        )
    };
    let mut line = if unit.is_empty() {
        format!("{what}: {done}/{total} ({pct}%), {time}")
    } else {
        format!("{what}: {done}/{total} {unit} ({pct}%), {time}")
    };
    if !msg.is_empty() {
        line.push_str(&format!(" [{msg}]"));
    }
    line
}

/// A progress display over a number of steps, on stderr: the indicatif bar
/// on a terminal, throttled [`log_line`]s otherwise (see the module).
/// Shared by reference (`&self`), like the bar it replaces.
pub struct Progress {
    what: String,
    unit: String,
    total: u64,
    mode: Mode,
}

enum Mode {
    Bar(ProgressBar),
    Log(Mutex<LogState>),
}

struct LogState {
    pos: u64,
    msg: String,
    started: Instant,
    last: Option<Mark>,
}

impl Progress {
    /// A display of `what` (`fig3`, `pre-training backbone`) over `total`
    /// steps counted in `unit` (`rounds`): a bar when stderr is a terminal,
    /// log lines otherwise. Nothing is written before the first update.
    #[must_use]
    pub fn new(what: &str, unit: &str, total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(what, unit, total)
        } else {
            Self::log(what, unit, total)
        }
    }

    /// As [`Progress::new`], always a bar (drawn only on a terminal).
    #[must_use]
    pub fn bar(what: &str, unit: &str, total: u64) -> Self {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(if unit.is_empty() {
            what.to_owned()
        } else {
            format!("{what} {unit}")
        });
        Self {
            what: what.to_owned(),
            unit: unit.to_owned(),
            total,
            mode: Mode::Bar(bar),
        }
    }

    /// As [`Progress::new`], always log lines.
    #[must_use]
    pub fn log(what: &str, unit: &str, total: u64) -> Self {
        Self {
            what: what.to_owned(),
            unit: unit.to_owned(),
            total,
            mode: Mode::Log(Mutex::new(LogState {
                pos: 0,
                msg: String::new(),
                started: Instant::now(),
                last: None,
            })),
        }
    }

    /// Whether this display writes log lines (no terminal) rather than a bar.
    #[must_use]
    pub fn is_log(&self) -> bool {
        matches!(self.mode, Mode::Log(_))
    }

    /// Steps done.
    #[must_use]
    pub fn position(&self) -> u64 {
        match &self.mode {
            Mode::Bar(b) => b.position(),
            Mode::Log(s) => lock(s).pos,
        }
    }

    /// Steps in all.
    #[must_use]
    pub fn length(&self) -> u64 {
        self.total
    }

    /// Time since the display was made.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        match &self.mode {
            Mode::Bar(b) => b.elapsed(),
            Mode::Log(s) => lock(s).started.elapsed(),
        }
    }

    /// Sets the steps done (a log line when one is due: [`line_due`]).
    pub fn set_position(&self, pos: u64) {
        match &self.mode {
            Mode::Bar(b) => b.set_position(pos),
            Mode::Log(s) => {
                let mut s = lock(s);
                s.pos = pos;
                self.maybe_write(&mut s, false);
            }
        }
    }

    /// Adds `n` steps done.
    pub fn inc(&self, n: u64) {
        let pos = self.position().saturating_add(n);
        self.set_position(pos);
    }

    /// What the display says besides the count (the run, the loss); in log
    /// mode it goes with the next line.
    pub fn set_message(&self, msg: impl Into<String>) {
        match &self.mode {
            Mode::Bar(b) => b.set_message(msg.into()),
            Mode::Log(s) => lock(s).msg = msg.into(),
        }
    }

    /// Ends the display: the bar stays drawn as it is; in log mode a last
    /// line is written unless the last one already showed this position.
    pub fn finish(&self) {
        match &self.mode {
            Mode::Bar(b) => b.finish(),
            Mode::Log(s) => self.maybe_write(&mut lock(s), true),
        }
    }

    fn maybe_write(&self, s: &mut LogState, last: bool) {
        let now = s.started.elapsed();
        let due = if last {
            s.last.is_none_or(|m| m.pos != s.pos)
        } else {
            line_due(s.last, now, s.pos, self.total)
        };
        if due {
            eprintln!(
                "{}",
                log_line(&self.what, &self.unit, s.pos, self.total, now, &s.msg)
            );
            s.last = Some(Mark {
                at: now,
                pos: s.pos,
            });
        }
    }
}

fn lock(s: &Mutex<LogState>) -> std::sync::MutexGuard<'_, LogState> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The weight of the newest step's loss in the loss [`PretrainReport`]
/// shows (an exponential moving average over about 20 steps).
pub const LOSS_SMOOTHING: f64 = 0.1;

/// The moving average of the pre-training loss after a step of loss `x`
/// (`prev`: the average before; `None`: the first step).
#[must_use]
pub fn smooth_loss(prev: Option<f64>, x: f64) -> f64 {
    match prev {
        Some(p) if p.is_finite() => p + LOSS_SMOOTHING * (x - p),
        _ => x,
    }
}

/// Shows a backbone's pre-training: feed it every
/// [`PretrainProgress`] (the callback of [`wflora_fed::Task::build_with_progress`]).
/// A cache hit is one line, `using cached backbone <path>`; training is a
/// [`Progress`] over its steps (`pre-training backbone: 300/2000 steps
/// (15%), 20s elapsed, ETA 1m53s [loss 1.234]`, the loss a moving average:
/// [`smooth_loss`]).
#[derive(Default)]
pub struct PretrainReport {
    progress: Option<Progress>,
    loss: Option<f64>,
}

impl PretrainReport {
    /// A report that has seen nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `event`.
    pub fn observe(&mut self, event: &PretrainProgress<'_>) {
        match event {
            PretrainProgress::CacheHit { path } => {
                eprintln!("using cached backbone {}", path.display());
            }
            PretrainProgress::Step { done, total, loss } => {
                let p = self.progress.get_or_insert_with(|| {
                    Progress::new("pre-training backbone", "steps", *total as u64)
                });
                let l = smooth_loss(self.loss, *loss);
                self.loss = Some(l);
                p.set_message(format!("loss {l:.3}"));
                p.set_position(*done as u64);
                if done >= total {
                    p.finish();
                }
            }
        }
    }
}

/// [`wflora_fed::Task::build`], showing the pre-training ([`PretrainReport`]).
///
/// # Errors
/// As [`wflora_fed::Task::build`].
pub fn build_task(cfg: &wflora_fed::TaskConfig) -> Result<wflora_fed::Task, wflora_fed::FedError> {
    let mut report = PretrainReport::new();
    wflora_fed::Task::build_with_progress(cfg, &mut |e| report.observe(e))
}

/// [`wflora_dfl::MultiTask::build`], showing the pre-training
/// ([`PretrainReport`]).
///
/// # Errors
/// As [`wflora_dfl::MultiTask::build`].
pub fn build_multi_task(
    cfg: &wflora_dfl::DflConfig,
) -> Result<wflora_dfl::MultiTask, wflora_dfl::DflError> {
    let mut report = PretrainReport::new();
    wflora_dfl::MultiTask::build_with_progress(cfg, &mut |e| report.observe(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn durations_read_as_seconds_minutes_hours() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(499)), "0s");
        assert_eq!(format_duration(Duration::from_millis(500)), "1s");
        assert_eq!(format_duration(S(42)), "42s");
        assert_eq!(format_duration(Duration::from_millis(59_600)), "1m00s");
        assert_eq!(format_duration(S(65)), "1m05s");
        assert_eq!(format_duration(S(390)), "6m30s");
        assert_eq!(format_duration(S(3599)), "59m59s");
        assert_eq!(format_duration(S(3600)), "1h00m");
        assert_eq!(format_duration(S(2 * 3600 + 3 * 60 + 10)), "2h03m");
        assert_eq!(format_duration(S(2 * 3600 + 3 * 60 + 40)), "2h04m");
        assert_eq!(format_duration(S(30 * 3600)), "30h00m");
    }

    #[test]
    fn eta_extrapolates_the_rate_so_far() {
        assert_eq!(eta(S(10), 0, 100), None);
        assert_eq!(eta(S(10), 25, 100), Some(S(30)));
        assert_eq!(eta(S(65), 120, 840), Some(S(390)));
        assert_eq!(eta(S(10), 100, 100), Some(Duration::ZERO));
        assert_eq!(eta(S(10), 120, 100), Some(Duration::ZERO));
        assert_eq!(eta(S(1_000_000), 1, 1_000_000), None);
    }

    #[test]
    fn lines_say_what_count_percent_elapsed_and_eta() {
        assert_eq!(
            log_line("fig3", "rounds", 120, 840, S(65), ""),
            "fig3: 120/840 rounds (14%), 1m05s elapsed, ETA 6m30s"
        );
        assert_eq!(
            log_line("fig3", "rounds", 120, 840, S(65), "fedit_r8_s1"),
            "fig3: 120/840 rounds (14%), 1m05s elapsed, ETA 6m30s [fedit_r8_s1]"
        );
        assert_eq!(
            log_line(
                "pre-training backbone",
                "steps",
                0,
                2000,
                S(3),
                "loss 2.300"
            ),
            "pre-training backbone: 0/2000 steps (0%), 3s elapsed, ETA ? [loss 2.300]"
        );
        assert_eq!(
            log_line("fig3", "rounds", 840, 840, S(455), ""),
            "fig3: 840/840 rounds (100%), done in 7m35s"
        );
        assert_eq!(
            log_line("fig3 rounds", "", 3, 10, S(3), ""),
            "fig3 rounds: 3/10 (30%), 3s elapsed, ETA 7s"
        );
        assert_eq!(
            log_line("x", "runs", 0, 0, S(0), ""),
            "x: 0/0 runs (100%), done in 0s"
        );
    }

    #[test]
    fn first_and_last_updates_always_log() {
        assert!(line_due(None, S(0), 0, 100));
        assert!(line_due(None, S(0), 100, 100));
        let last = Some(Mark { at: S(0), pos: 1 });
        // Complete, only a moment after the previous line.
        assert!(line_due(last, Duration::from_millis(10), 100, 100));
        // ... but not twice.
        let done = Some(Mark { at: S(0), pos: 100 });
        assert!(!line_due(done, S(60), 100, 100));
    }

    #[test]
    fn lines_in_between_are_throttled() {
        let last = Some(Mark {
            at: S(100),
            pos: 10,
        });
        // No progress: never, however long.
        assert!(!line_due(last, S(1000), 10, 1000));
        // Progress within the same 5% bucket: only after 10 s.
        assert!(!line_due(last, S(105), 40, 1000));
        assert!(!line_due(last, S(109), 49, 1000));
        assert!(line_due(last, S(110), 11, 1000));
        // Into the next 5% bucket: after 1 s, not sooner.
        assert!(!line_due(last, Duration::from_millis(100_900), 50, 1000));
        assert!(line_due(last, S(101), 50, 1000));
        // A clock that went backwards counts as no time.
        assert!(!line_due(last, S(50), 20, 1000));
    }

    #[test]
    fn a_run_of_steps_logs_first_last_and_few_between() {
        // 1000 steps, one every 0.1 s (100 s in all): 10 s lines and 5%
        // lines coincide; at most one line per bucket or interval.
        let (mut last, mut lines) = (None, Vec::new());
        for pos in 1..=1000u64 {
            let now = Duration::from_millis(pos * 100);
            if line_due(last, now, pos, 1000) {
                last = Some(Mark { at: now, pos });
                lines.push(pos);
            }
        }
        assert_eq!(lines.first(), Some(&1));
        assert_eq!(lines.last(), Some(&1000));
        assert!(lines.len() <= 22, "{lines:?}");
        assert!(lines.len() >= 10, "{lines:?}");
        // Fast steps (1 ms each): the 1 s gap holds them back.
        let (mut last, mut n) = (None, 0);
        for pos in 1..=1000u64 {
            let now = Duration::from_millis(pos);
            if line_due(last, now, pos, 1000) {
                last = Some(Mark { at: now, pos });
                n += 1;
            }
        }
        assert_eq!(n, 2, "first and last only");
    }

    #[test]
    fn the_loss_is_a_moving_average() {
        assert_eq!(smooth_loss(None, 2.0), 2.0);
        assert!((smooth_loss(Some(2.0), 1.0) - 1.9).abs() < 1e-12);
        assert_eq!(smooth_loss(Some(f64::NAN), 1.5), 1.5);
    }

    #[test]
    fn a_log_display_counts_like_the_bar() {
        let p = Progress::log("test", "steps", 10);
        assert!(p.is_log());
        p.set_position(3);
        p.inc(2);
        assert_eq!(p.position(), 5);
        assert_eq!(p.length(), 10);
        p.set_message("m");
        p.finish();
        assert_eq!(p.position(), 5);
    }
}
