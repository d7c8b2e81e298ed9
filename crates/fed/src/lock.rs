//! An exclusive lock on an output directory, held for a whole run.
//!
//! Two processes writing one run directory would interleave their metrics
//! and checkpoints. [`DirLock::acquire`] takes an advisory lock (`flock` on
//! Unix, `LockFileEx` on Windows, through [`std::fs::File::try_lock`]) on
//! the file `.wflora.lock` inside the directory and records its holder
//! there (process id, host, start time, command line). A second process, or
//! a second acquisition in the same process, fails at once with
//! [`FedError::Locked`] naming the directory and that holder. The operating
//! system releases the lock when the holder exits, also on `kill -9`, so a
//! killed run never leaves a stale lock behind: the file stays, the lock
//! does not.

use crate::FedError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = ".wflora.lock";

/// An exclusive lock on a directory, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    // Held open for the lock's lifetime: closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it for this process.
    ///
    /// # Errors
    /// [`FedError::Locked`] when another holder has it (naming the holder
    /// as it recorded itself), [`FedError::Io`] on the directory or lock
    /// file, or where the file system does not support locking.
    pub fn acquire(dir: &Path) -> Result<Self, FedError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FedError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(FedError::Locked {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "a process that has not yet recorded itself".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(FedError::Io {
                    path,
                    source: std::io::Error::new(
                        source.kind(),
                        format!("cannot lock the output directory: {source}"),
                    ),
                });
            }
        }
        let record = holder_description();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io(&path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// "pid N on HOST since UNIX-SECONDS: COMMAND LINE", one line.
fn holder_description() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_owned());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let command: Vec<String> = std::env::args().collect();
    format!(
        "pid {} on {host} since unix time {since}: {}\n",
        std::process::id(),
        command.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wflora-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_named_until_it_drops() {
        let d = scratch("second");
        let first = DirLock::acquire(&d).unwrap();
        assert_eq!(first.dir(), d);
        let err = DirLock::acquire(&d).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FedError::Locked { .. }), "{msg}");
        assert!(msg.contains(&d.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = DirLock::acquire(&d).unwrap();
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
