//! When the database cannot be used: what kind of failure it is, a cause a
//! person can act on (SQLite says "disk I/O error"; the file system says
//! why), and moving a corrupt file aside.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::schema::{MigrationError, LATEST};
use crate::clock::Wall;

/// Below this much free space a file system counts as full.
const NEARLY_FULL: u64 = 64 * 1024;

/// What went wrong with the database.
#[derive(Debug)]
pub enum Failure {
    /// The file is not a database or is damaged: move it aside.
    Corrupt(String),
    /// Written by a newer healer: leave it alone.
    Newer(String),
    /// It cannot be written now (read-only, full disk, I/O error): retry.
    Unavailable(String),
}

impl Failure {
    /// The cause, for an event.
    pub fn message(&self) -> &str {
        match self {
            Failure::Corrupt(message) | Failure::Newer(message) | Failure::Unavailable(message) => {
                message
            }
        }
    }
}

/// Classifies a failure on `file` and says what caused it.
pub fn classify(err: MigrationError, file: &Path) -> Failure {
    let err = match err {
        MigrationError::Newer(version) => {
            return Failure::Newer(format!(
                "it was written by a newer healer (schema {version}; this healer knows up to {LATEST}); it is left untouched and state is kept in memory only"
            ))
        }
        MigrationError::Sqlite(err) => err,
    };
    let corrupt = matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    );
    if corrupt {
        return Failure::Corrupt(err.to_string());
    }
    let mut message = err.to_string();
    if let Some(cause) = probe(file) {
        message = format!("{message}: {cause}");
    }
    Failure::Unavailable(message)
}

/// Looks at the files themselves for why SQLite failed.
fn probe(file: &Path) -> Option<String> {
    for path in [file.to_owned(), with_suffix(file, "-wal")] {
        if !path.exists() {
            continue;
        }
        if let Err(err) = OpenOptions::new().append(true).open(&path) {
            return Some(format!("{} cannot be written: {err}", path.display()));
        }
    }
    if let Some(limited) = at_file_size_limit(file) {
        return Some(limited);
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty())?;
    let fs = nix::sys::statvfs::statvfs(dir).ok()?;
    let free = fs.blocks_available().saturating_mul(fs.fragment_size());
    (free < NEARLY_FULL).then(|| {
        format!(
            "the file system holding {} is full ({free} bytes free)",
            dir.display()
        )
    })
}

/// A file of the database at the process's file size limit (RLIMIT_FSIZE),
/// where writes fail with EFBIG.
fn at_file_size_limit(file: &Path) -> Option<String> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let (limit, _) = getrlimit(Resource::RLIMIT_FSIZE).ok()?;
    if limit == RLIM_INFINITY {
        return None;
    }
    [file.to_owned(), with_suffix(file, "-wal")]
        .into_iter()
        .find_map(|path| {
            let size = std::fs::metadata(&path).ok()?.len();
            (size.saturating_add(NEARLY_FULL) >= limit).then(|| {
                format!(
                    "{} is {size} bytes, at healer's file size limit (RLIMIT_FSIZE) of {limit} bytes",
                    path.display()
                )
            })
        })
}

/// `file` with `suffix` appended to its name (`healer.db` → `healer.db-wal`).
pub fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Moves a corrupt database (and its WAL and shared-memory files) aside as
/// `<file>.corrupt-<time>`; nothing is deleted. Returns the new name.
pub fn move_aside(file: &Path) -> std::io::Result<PathBuf> {
    let stamp = Wall::now().to_string().replace([':', '.'], "-");
    let aside = with_suffix(file, &format!(".corrupt-{stamp}"));
    std::fs::rename(file, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let side = with_suffix(file, suffix);
        if side.exists() {
            std::fs::rename(&side, with_suffix(&aside, suffix))?;
        }
    }
    Ok(aside)
}
