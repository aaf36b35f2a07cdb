//! The state database a test daemon leaves: where it is, how long to
//! wait for a write, and one number read from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The path of the state database of a daemon whose config is in `dir`.
pub fn store_file(dir: &Path) -> PathBuf {
    dir.join("state").join("healer.db")
}

/// How long to wait after an event before killing healer, so the store
/// has written it: its batch window is 50 ms, a write takes a few.
pub const STORE_WRITES_WITHIN: Duration = Duration::from_secs(1);

/// Runs `query` (one integer) on the state database of a daemon whose
/// config is in `dir`. healer holds its database exclusively while it
/// runs: read it after [`Daemon::stop`](crate::Daemon::stop) or
/// [`Daemon::kill`](crate::Daemon::kill). `None` when it cannot be read.
pub fn store_number(dir: &Path, query: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        store_file(dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    conn.query_row(query, [], |row| row.get(0)).ok()
}
