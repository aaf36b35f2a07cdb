//! The event log file (`[healer] event_log`): every event as one JSON
//! object per line, appended. Its shape is the [`Record`] type, so a
//! program (or a test) can read it back and match on events instead of
//! log wording.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::events::{Record, Subscriber};

/// Appends events to a file.
pub struct EventLog {
    path: PathBuf,
    file: BufWriter<File>,
    /// Writing failed; said once, until it works again.
    failing: bool,
}

impl EventLog {
    /// Opens (creating it and its directory) the file at `path` for appending.
    pub fn open(path: &Path) -> Result<EventLog, String> {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
        match opened {
            Ok(file) => Ok(EventLog {
                path: path.to_owned(),
                file: BufWriter::new(file),
                failing: false,
            }),
            Err(err) => Err(format!(
                "cannot open the event log {}: {err}",
                path.display()
            )),
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
