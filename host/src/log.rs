//! Logging: tracing to stderr and to the log file (`[healer] log_file`,
//! the seed's `logs/self_healing.log`), as readable lines or JSON lines.
//!
//! Writing never blocks: each destination has its own writer thread and a
//! bounded queue, and a line that does not fit (a stalled terminal, a slow
//! disk) is dropped and counted; the count is logged. Each writer thread
//! writes what its queue holds in one buffered write, not a system call a
//! line, and the event dispatcher hands it a burst of lines at once
//! ([`hold`], [`release`]) rather than waking it for each. A line is
//! formatted once for both destinations, unless stderr is a terminal (then
//! it alone gets colours). The log file is reopened on [`Logging::reopen`]
//! (SIGUSR1, after logrotate moved it).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::writer::{MakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::{Healer, LogFormat};

/// Lines queued per destination before new ones are dropped.
const QUEUE: usize = 8_192;

/// What a writer thread gathers before one write: the lines its queue
/// held (it writes out whenever the queue is empty).
const WRITE_BUFFER: usize = 64 * 1024;

thread_local! {
    /// The lines this thread holds, one buffer per layer, while it holds them.
    static HELD: RefCell<Option<Vec<Vec<u8>>>> = const { RefCell::new(None) };
}

/// Where held lines go when released: each layer's destination, by index.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;
static SINKS: OnceLock<Vec<Sink>> = OnceLock::new();

/// From now until [`release`], this thread's log lines are held and
/// handed to the writer threads together (the event dispatcher, for a
/// burst of events).
pub fn hold() {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_none() {
            let layers = SINKS.get().map_or(0, Vec::len);
            *held = Some(vec![Vec::new(); layers]);
        }
    });
}

/// Hands the lines this thread held to the writer threads, one write per
/// destination, and stops holding.
pub fn release() {
    let Some(held) = HELD.with(|held| held.borrow_mut().take()) else {
        return;
    };
    let Some(sinks) = SINKS.get() else {
        return;
    };
    for (lines, sink) in held.iter().zip(sinks) {
        if !lines.is_empty() {
            sink(lines);
        }
    }
}

/// A layer's writer that holds lines while its thread does ([`hold`]),
/// and otherwise writes straight through.
struct Holding<M> {
    index: usize,
    inner: M,
}

enum HoldingWriter<W> {
    Held(usize),
    Through(W),
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Holding<M> {
    type Writer = HoldingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        let holding = HELD.with(|held| held.borrow().is_some());
        if holding {
            HoldingWriter::Held(self.index)
        } else {
            HoldingWriter::Through(self.inner.make_writer())
        }
    }
}

impl<W: Write> Write for HoldingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            HoldingWriter::Held(index) => {
                HELD.with(|held| {
                    if let Some(lines) = held.borrow_mut().as_mut().and_then(|l| l.get_mut(*index))
                    {
                        lines.extend_from_slice(data);
                    }
                });
                Ok(data.len())
            }
            HoldingWriter::Through(writer) => writer.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            HoldingWriter::Held(_) => Ok(()),
            HoldingWriter::Through(writer) => writer.flush(),
        }
    }
}

/// `writer` as the destination of layer number `index`: held lines are
/// released to it.
fn holding<M>(index: usize, writer: M, sinks: &mut Vec<Sink>) -> Holding<M>
where
    M: for<'a> MakeWriter<'a> + Clone + Send + Sync + 'static,
{
    let sink = writer.clone();
    sinks.push(Box::new(move |lines: &[u8]| {
        let _ = sink.make_writer().write_all(lines);
    }));
    Holding {
        index,
        inner: writer,
    }
}

/// A log layer: one format, one destination (or two, teed).
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// A layer writing to `writer`, as JSON lines or readable ones, with ANSI
/// colours when `ansi`, at the level `filter` lets through.
fn layer<W>(json: bool, ansi: bool, writer: W, filter: EnvFilter) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let plain = fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        Box::new(plain.json().with_filter(filter))
    } else {
        Box::new(plain.with_filter(filter))
    }
}

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
    let (stderr, stderr_guard) =
        writer("healer-log-stderr").finish(BufWriter::with_capacity(WRITE_BUFFER, io::stderr()));
    let mut counters = vec![stderr.error_counter()];
    let mut guards = vec![stderr_guard];
    let colours = io::stderr().is_terminal();
    let mut sinks: Vec<Sink> = Vec::new();

    let (file, layers, file_error) = match Reopenable::open(&healer.log_file) {
        Ok(file) => {
            let file = Arc::new(file);
            let (writer, guard) = writer("healer-log-file").finish(BufWriter::with_capacity(
                WRITE_BUFFER,
                FileWriter(Arc::clone(&file)),
            ));
            counters.push(writer.error_counter());
            guards.push(guard);
            let layers = if colours {
                vec![
                    layer(json, true, holding(0, stderr, &mut sinks), filter()),
                    layer(json, false, holding(1, writer, &mut sinks), filter()),
                ]
            } else {
                // Formatted once, written to both.
                let both = holding(0, stderr.and(writer), &mut sinks);
                vec![layer(json, false, both, filter())]
            };
            (Some(file), layers, None)
        }
        Err(err) => {
            let only = holding(0, stderr, &mut sinks);
            (None, vec![layer(json, colours, only, filter())], Some(err))
        }
    };
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
    {
        let _ = SINKS.set(sinks);
    }
    if let Some(err) = file_error {
        tracing::warn!(file = %healer.log_file.display(), error = %err, "cannot open the log file; logging to stderr only");
    }
    Logging {
        _guards: guards,
        counters,
        file,
    }
}
