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
//!
//! A line cannot be forged: text from outside (a pause reason, a plugin's
//! summary or error, an anomaly's name, a worker's output) may hold a
//! newline followed by something that looks like a line of healer's own.
//! Every field and message of a readable line goes through
//! [`EscapedFields`], which writes control characters (newlines, carriage
//! returns, escape sequences, and the Unicode line and paragraph
//! separators) as `\n`, `\r`, `\u{1b}`, ..., so one event is always one
//! line whoever wrote its text. JSON lines are serde's strings, which
//! escape the same characters.

mod events;

pub use events::{log_only, EventLines};

use std::cell::RefCell;
use std::fmt::{self as format, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
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
    let plain = fmt::layer().with_target(false).with_ansi(ansi);
    if json {
        let json = plain.with_writer(JsonLines(writer)).json();
        Box::new(json.with_filter(filter))
    } else {
        let readable = plain.with_writer(writer).fmt_fields(EscapedFields);
        Box::new(readable.with_filter(filter))
    }
}

/// A JSON log's writer: serde escapes the C0 controls in strings; what
/// else would break a line for some reader (DEL, the C1 controls,
/// U+2028, U+2029) is escaped here ([`crate::one_line::json_line`]).
struct JsonLines<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonLines<M> {
    type Writer = JsonLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonLine(self.0.make_writer())
    }
}

/// One JSON line on its way out.
struct JsonLine<W>(W);

impl<W: Write> Write for JsonLine<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(bytes) {
            Ok(line) => {
                self.0
                    .write_all(crate::one_line::json_line(line).as_bytes())?;
                Ok(bytes.len())
            }
            Err(_) => self.0.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The fields of a readable line, as tracing's default writes them
/// (`message`, then `name=value` separated by spaces), with every control
/// character of a name or value escaped: one event, one line.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> format::Result {
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: format::Result,
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            // Quoted, as tracing's default writes a `&str` field.
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn format::Debug) {
        let name = field.name();
        // The `log` crate's metadata (tracing-log), already in the line's head.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let mut out = crate::one_line::Escaping(&mut *self.writer);
        self.result = match name {
            "message" => write!(out, "{separator}{value:?}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(out, "{separator}{name}={value:?}")
            }
        };
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
    // The fleet's gRPC stack (etcd's client) logs every HTTP/2 frame at
    // debug: healer's own debug lines, not theirs, unless HEALER_LOG
    // asks for them.
    let level = if level.contains('=') {
        level
    } else {
        format!("{level},h2=info,tonic=info,tower=info,hyper_util=info")
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

#[cfg(test)]
mod tests {
    use super::*;

    const FORGED: &str = "\n2030-01-01T00:00:00.000000Z ERROR forged";

    /// What a layer of `init` writes for one event carrying outside text
    /// in a `%` field, a `?` field, a `&str` field and its message.
    fn written(json: bool) -> String {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let writer = move || Captured(Arc::clone(&sink));
        let subscriber =
            tracing_subscriber::registry().with(layer(json, false, writer, EnvFilter::new("info")));
        tracing::subscriber::with_default(subscriber, || {
            let reason = format!("upgrade{FORGED}");
            let details = vec![format!("a\r{FORGED}\u{1b}[2J")];
            tracing::warn!(
                target = "db",
                reason = %reason,
                details = ?details,
                anomaly = reason.as_str(),
                "target paused: {reason}\u{2028}and more"
            );
        });
        let bytes = lines.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[derive(Clone)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn outside_text_with_newlines_stays_on_its_line_in_the_readable_log() {
        let log = written(false);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
        assert!(!log.contains('\u{2028}'), "{log:?}");
        // Escaped, not dropped: the reader still sees what was sent.
        assert!(
            log.contains(
                r"target paused: upgrade\n2030-01-01T00:00:00.000000Z ERROR forged\u{2028}and more"
            ),
            "{log}"
        );
        assert!(
            log.contains(r"reason=upgrade\n2030-01-01T00:00:00.000000Z ERROR forged"),
            "{log}"
        );
        assert!(
            log.contains(r#"anomaly="upgrade\n2030-01-01T00:00:00.000000Z ERROR forged""#),
            "{log}"
        );
        assert!(log.contains(r#"target="db""#), "{log}");
    }

    #[test]
    fn outside_text_with_newlines_stays_inside_its_json_string() {
        let log = written(true);
        assert_eq!(log.lines().count(), 1, "{log}");
        let line: serde_json::Value = serde_json::from_str(log.trim_end()).unwrap();
        let fields = &line["fields"];
        assert_eq!(
            fields["reason"],
            format!("upgrade{FORGED}"),
            "the reader gets the text back exactly: {line}"
        );
        assert_eq!(
            fields["message"],
            format!("target paused: upgrade{FORGED}\u{2028}and more")
        );
    }

    #[test]
    fn plain_text_is_written_as_before() {
        let mut out = String::new();
        write!(
            crate::one_line::Escaping(&mut out),
            "é ok \"quoted\" \\ tab\there"
        )
        .unwrap();
        assert_eq!(out, "é ok \"quoted\" \\ tab\\there");
    }
}
