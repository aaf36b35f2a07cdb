//! Logging: tracing to stderr and to the log file (`[healer] log_file`,
//! the seed's `logs/self_healing.log`), as readable lines or JSON lines.
//!
//! Writing never blocks: each destination has its own writer thread and a
//! bounded queue, and a line that does not fit (a stalled terminal, a slow
//! disk) is dropped and counted; the count is logged. The log file is
//! reopened on [`Logging::reopen`] (SIGUSR1, after logrotate moved it).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{Healer, LogFormat};

/// Lines queued per destination before new ones are dropped.
const QUEUE: usize = 8_192;

/// The running log: keep it until the process ends (dropping it writes out
/// what is queued).
pub struct Logging {
    _guards: Vec<WorkerGuard>,
    counters: Vec<ErrorCounter>,
    file: Option<Arc<Reopenable>>,
}

impl Logging {
    /// Opens the log file anew at its path (after logrotate moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }

    /// Lines dropped so far because a destination could not keep up.
    pub fn dropped(&self) -> usize {
        self.counters.iter().map(ErrorCounter::dropped_lines).sum()
    }
}

/// The log file, behind a lock so it can be swapped for a new one.
struct Reopenable {
    path: PathBuf,
    file: Mutex<File>,
}

impl Reopenable {
    fn open(path: &Path) -> io::Result<Reopenable> {
        Ok(Reopenable {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// What the writer thread of the log file writes to.
struct FileWriter(Arc<Reopenable>);

impl Write for FileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush()
    }
}

/// Starts logging. `verbose` (-v, -vv) raises the level over the config's;
/// `HEALER_LOG` (a tracing filter) overrides both. A log file that cannot
/// be opened costs a warning, not the daemon: it logs to stderr only.
pub fn init(healer: &Healer, verbose: u8) -> Logging {
    let level = match verbose {
        0 => healer.log_level.clone(),
        1 => "debug".to_owned(),
        _ => "trace".to_owned(),
    };
    let filter =
        || EnvFilter::try_from_env("HEALER_LOG").unwrap_or_else(|_| EnvFilter::new(&level));
    let json = healer.log_format == LogFormat::Json;
    let writer = |name: &str| {
        NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE)
            .thread_name(name)
    };
    let (stderr, stderr_guard) = writer("healer-log-stderr").finish(io::stderr());
    let mut counters = vec![stderr.error_counter()];
    let mut guards = vec![stderr_guard];
    let stderr: Box<dyn Layer<_> + Send + Sync> = if json {
        Box::new(
            fmt::layer()
                .json()
                .with_target(false)
                .with_writer(stderr)
                .with_filter(filter()),
        )
    } else {
        Box::new(
            fmt::layer()
                .with_target(false)
                .with_writer(stderr)
                .with_filter(filter()),
        )
    };

    let (file, file_layer, file_error) = match Reopenable::open(&healer.log_file) {
        Ok(file) => {
            let file = Arc::new(file);
            let (writer, guard) = writer("healer-log-file").finish(FileWriter(Arc::clone(&file)));
            counters.push(writer.error_counter());
            guards.push(guard);
            let layer: Box<dyn Layer<_> + Send + Sync> = if json {
                Box::new(
                    fmt::layer()
                        .json()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter()),
                )
            } else {
                Box::new(
                    fmt::layer()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter()),
                )
            };
            (Some(file), Some(layer), None)
        }
        Err(err) => (None, None, Some(err)),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    if let Some(err) = file_error {
        tracing::warn!(file = %healer.log_file.display(), error = %err, "cannot open the log file; logging to stderr only");
    }
    Logging {
        _guards: guards,
        counters,
        file,
    }
}
