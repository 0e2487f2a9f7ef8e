//! One writer per run folder: `train`, `demo`, `import` and `dissect` — and `eval` and `predict`
//! when their `--out` lies inside the run folder ([`lock_if_writing_into`]) — hold an advisory lock (`flock`, through
//! `std::fs::File::try_lock`) on `RUN/.lock` while they write there. The operating system releases
//! it when the process ends, however it ends, so a killed run never leaves its folder locked. The
//! holder writes its PID into the file, so a second writer's error names it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// The held lock of one run folder; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    _file: File,
}

fn lock_err<T>(dir: &Path, detail: impl Into<String>) -> Result<T> {
    Err(Error::Data { path: dir.display().to_string(), detail: detail.into() })
}

impl RunLock {
    /// Creates `dir` if needed, checks that files can be written there, takes the lock, removes
    /// temporary files that killed writers left behind, and records this process's PID. Fails at
    /// once (no waiting) when another process holds the lock, naming its PID.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).or_else(|e| lock_err(dir, format!("cannot create the run folder: {e}")))?;
        Self::lock(dir)
    }

    /// [`RunLock::acquire`] for a run that must exist already (`eval`, `dissect`): a missing folder
    /// is an error, not created.
    pub fn existing(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return lock_err(dir, "no such run folder");
        }
        Self::lock(dir)
    }

    fn lock(dir: &Path) -> Result<Self> {
        check_writable(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .or_else(|e| lock_err(&path, format!("cannot open the run lock: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("process {pid}"),
                    Err(_) => "another process".to_string(),
                };
                return lock_err(
                    dir,
                    format!("{holder} is writing to this run (it holds {}); wait for it to finish or use another folder", path.display()),
                );
            }
            Err(TryLockError::Error(e)) => return lock_err(&path, format!("cannot lock the run folder: {e}")),
        }
        let recorded = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
        recorded.or_else(|e| lock_err(&path, format!("cannot record the lock holder: {e}")))?;
        cvn_autograd::io::remove_stale_temps(dir)?;
        Ok(Self { dir: dir.to_path_buf(), _file: file })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The lock of the existing run folder `dir` when `out` (a file about to be written) lies inside
/// it, else `None`: commands that only read a run (`eval`, `predict`) work on a read-only run
/// folder and take the lock only to write there.
pub fn lock_if_writing_into(dir: &Path, out: &Path) -> Result<Option<RunLock>> {
    let Ok(run) = std::fs::canonicalize(dir) else { return Ok(None) };
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    // The nearest existing folder above `out` (folders below it may not exist yet).
    let inside = out.ancestors().skip(1).find_map(|a| std::fs::canonicalize(a).ok()).is_some_and(|a| a.starts_with(&run));
    if inside {
        RunLock::existing(dir).map(Some)
    } else {
        Ok(None)
    }
}

/// Fails with a clear error when files cannot be created in `dir` (a read-only folder), before
/// any work is done.
pub fn check_writable(dir: &Path) -> Result<()> {
    let probe = cvn_autograd::io::temp_path(&dir.join("write-check"));
    match File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => lock_err(dir, format!("cannot write in this folder ({e}): outputs could not be saved")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvn-run-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn second_writer_is_refused_with_the_holders_pid_until_release() {
        let dir = scratch("two");
        let first = RunLock::acquire(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts too.
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains(&format!("process {}", std::process::id())) && err.contains("is writing to this run"), "{err}");
        drop(first);
        RunLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporary_files_are_removed_and_others_kept() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".checkpoint.safetensors.tmp-12345"), b"half").unwrap();
        std::fs::write(dir.join("notes.tmp-1"), b"not hidden: not ours").unwrap();
        let _lock = RunLock::acquire(&dir).unwrap();
        assert!(!dir.join(".checkpoint.safetensors.tmp-12345").exists());
        assert!(dir.join("notes.tmp-1").exists() && dir.join(LOCK_FILE).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn read_only_folder_is_refused_before_any_work() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("readonly");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permissions: then there is nothing to test.
        let writable = File::create(dir.join("probe")).is_ok();
        if !writable {
            let err = RunLock::acquire(&dir).unwrap_err().to_string();
            assert!(err.contains("cannot write in this folder"), "{err}");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
