//! The event log file (`[healer] event_log`): every event as one JSON
//! object per line, appended. Its shape is the [`Record`] type, so a
//! program (or a test) can read it back and match on events instead of
//! log wording. SIGUSR1 asks it to open its file anew, as it does the log
//! (after logrotate moved it away): the next event goes to the new file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::events::{Record, Subscriber};

/// Appends events to a file.
pub struct EventLog {
    path: PathBuf,
    file: BufWriter<File>,
    /// Writing failed; said once, until it works again.
    failing: bool,
    /// Set by [`Reopen::ask`]: open the file anew before the next event.
    reopen: Arc<AtomicBool>,
}

/// Asks an [`EventLog`] to open its file anew (SIGUSR1).
#[derive(Clone)]
pub struct Reopen(Arc<AtomicBool>);

impl Reopen {
    /// The next event goes to a file opened anew at the event log's path.
    pub fn ask(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl EventLog {
    /// Opens (creating it and its directory) the file at `path` for appending.
    pub fn open(path: &Path) -> Result<EventLog, String> {
        match open_append(path) {
            Ok(file) => Ok(EventLog {
                path: path.to_owned(),
                file: BufWriter::new(file),
                failing: false,
                reopen: Arc::default(),
            }),
            Err(err) => Err(format!(
                "cannot open the event log {}: {err}",
                path.display()
            )),
        }
    }

    /// What asks it to open its file anew.
    pub fn reopener(&self) -> Reopen {
        Reopen(Arc::clone(&self.reopen))
    }

    /// Opens the file anew when asked (what the old one still buffers is
    /// written to it first); on failure it writes on to the old one.
    fn reopen_if_asked(&mut self) {
        if !self.reopen.swap(false, Ordering::Relaxed) {
            return;
        }
        let _ = self.file.flush();
        match open_append(&self.path) {
            Ok(file) => {
                self.file = BufWriter::new(file);
                tracing::info!(file = %self.path.display(), "SIGUSR1: the event log was reopened");
            }
            Err(err) => {
                tracing::error!(file = %self.path.display(), error = %err, "SIGUSR1: cannot reopen the event log; writing on to the old one")
            }
        }
    }

    fn outcome(&mut self, result: std::io::Result<()>) {
        match result {
            Ok(()) => self.failing = false,
            Err(err) if !self.failing => {
                self.failing = true;
                tracing::error!(file = %self.path.display(), error = %err, "cannot write the event log; events go on to the log and the store");
            }
            Err(_) => {}
        }
    }
}

impl Subscriber for EventLog {
    fn deliver(&mut self, record: &Record) {
        self.reopen_if_asked();
        let written = serde_json::to_writer(&mut self.file, record)
            .map_err(std::io::Error::other)
            .and_then(|()| self.file.write_all(b"\n"));
        self.outcome(written);
    }

    fn flush(&mut self) {
        let flushed = self.file.flush();
        self.outcome(flushed);
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}
