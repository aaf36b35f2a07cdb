//! What a worker prints (a plugin's own prints, a Rust panic or allocation
//! failure message) goes to healer's log, rate-limited per package: a
//! token bucket of [`LINES_PER_SECOND`] lines with a burst of [`BURST`],
//! shared by the stdout and stderr of all the package's workers. What does
//! not fit is counted, and the count is logged at most once every
//! [`REPORT_EVERY`] ("plugin worker for X printed 123456 more lines;
//! dropped"), and when the worker's output ends. A worker printing 100 MB
//! adds a few dozen lines to the log.
//!
//! The last line that says something (not a backtrace) is kept whether it
//! was logged or not: it is a crash's last words.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

use crate::plugins::lock::lock;

/// Lines per second a package's workers may add to healer's log.
pub const LINES_PER_SECOND: f64 = 10.0;

/// Lines a package's workers may add at once, after a quiet spell.
pub const BURST: f64 = 50.0;

/// At most one "dropped" line per package this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// The longest line relayed; longer ones are counted as dropped.
const MAX_LINE: usize = 1024;

/// A package's allowance of log lines: one per package, shared by every
/// stream of every worker it has.
#[derive(Debug)]
pub struct Allowance {
    bucket: Mutex<Bucket>,
}

/// A token bucket, and the lines it refused since the last report; the
/// clock is passed in.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    filled_at: Instant,
    dropped: u64,
    reported_at: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: BURST,
            filled_at: now,
            dropped: 0,
            reported_at: now,
        }
    }

    /// Whether a line printed `now` may be logged; counted if not.
    fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.filled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LINES_PER_SECOND).min(BURST);
        self.filled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// A line not logged for another reason (too long).
    fn drop_one(&mut self) {
        self.dropped += 1;
    }

    /// The lines dropped since the last report, if one is due `now` (or
    /// `now_anyway`: the output ended).
    fn report(&mut self, now: Instant, now_anyway: bool) -> Option<u64> {
        let due = now_anyway || now.saturating_duration_since(self.reported_at) >= REPORT_EVERY;
        if self.dropped == 0 || !due {
            return None;
        }
        self.reported_at = now;
        Some(std::mem::take(&mut self.dropped))
    }
}

impl Allowance {
    /// A fresh allowance (a full burst).
    pub fn new() -> Arc<Allowance> {
        Arc::new(Allowance {
            bucket: Mutex::new(Bucket::new(Instant::now())),
        })
    }

    fn report(&self, package: &str, now_anyway: bool) {
        let dropped = lock(&self.bucket).report(Instant::now(), now_anyway);
        if let Some(dropped) = dropped {
            tracing::warn!(
                package = %package,
                dropped,
                "plugin worker for {package} printed {dropped} more lines; dropped"
            );
        }
    }
}

/// Relays `output` (a worker's stdout or stderr) to healer's log within
/// `allowance`; returns the last line that says something.
pub async fn relay(
    package: String,
    allowance: Arc<Allowance>,
    output: impl AsyncRead + Unpin,
) -> Option<String> {
    // Bytes, not text: a line that is not UTF-8 is shown as well as it
    // can be, and never ends the relay (nor the pipe the worker prints to).
    let mut lines = FramedRead::new(
        output,
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE),
    );
    let mut last = None;
    // After an error, `FramedRead` answers `None` once and then reads on:
    // a line too long ends nothing.
    let mut resumes = false;
    loop {
        let next = tokio::time::timeout(REPORT_EVERY, lines.next()).await;
        match next {
            // Quiet for a while: say what was dropped before.
            Err(_) => allowance.report(&package, false),
            Ok(Some(Ok(line))) => {
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if !is_backtrace(line) {
                    last = Some(line.to_owned());
                }
                let admitted = lock(&allowance.bucket).admit(Instant::now());
                if admitted {
                    tracing::warn!(package = %package, "plugin worker printed: {}", crate::one_line::OneLine(line));
                }
                allowance.report(&package, false);
            }
            Ok(Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded))) => {
                lock(&allowance.bucket).drop_one();
                resumes = true;
            }
            Ok(None) if resumes => resumes = false,
            Ok(Some(Err(_)) | None) => {
                allowance.report(&package, true);
                return last;
            }
        }
    }
}

/// A line of a Rust backtrace, or its notes: not what went wrong.
fn is_backtrace(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("note:")
        || line.starts_with("stack backtrace:")
        || line.starts_with("at ")
        || line.split_once(':').is_some_and(|(frame, _)| {
            !frame.is_empty() && frame.bytes().all(|b| b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_then_lines_come_at_the_rate_and_the_rest_is_counted() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        let admitted = (0..1000).filter(|_| bucket.admit(start)).count();
        assert_eq!(admitted, BURST as usize);
        // One second later, ten more.
        let later = start + Duration::from_secs(1);
        let admitted = (0..1000).filter(|_| bucket.admit(later)).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        assert_eq!(bucket.report(later, false), None, "not yet due");
        let due = start + REPORT_EVERY;
        assert_eq!(bucket.report(due, false), Some(2000 - 60));
        assert_eq!(bucket.report(due, true), None, "nothing dropped since");
        bucket.drop_one();
        assert_eq!(bucket.report(due, true), Some(1), "the end reports at once");
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_and_no_more() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        while bucket.admit(start) {}
        let quiet = start + Duration::from_secs(3600);
        let admitted = (0..1000).filter(|_| bucket.admit(quiet)).count();
        assert_eq!(admitted, BURST as usize);
    }

    #[test]
    fn the_last_words_are_what_went_wrong_not_the_backtrace() {
        runtime().block_on(async {
            let text: &[u8] = b"memory allocation of 268435456 bytes failed\nstack backtrace:\n   0: std::x\n             at /rustc/x\nnote: run with RUST_BACKTRACE\n";
            let last = relay("p".to_owned(), Allowance::new(), text).await;
            assert_eq!(
                last.as_deref(),
                Some("memory allocation of 268435456 bytes failed")
            );
        });
    }

    /// one byte that is not UTF-8 ends the relay: the lines after
    /// it are never read (nor is the pipe, which closes).
    #[test]
    fn a_line_too_long_is_dropped_and_the_relay_goes_on() {
        runtime().block_on(async {
            let text = format!("{}\nlast words\n", "a".repeat(5000));
            let last = relay("p".to_owned(), Allowance::new(), text.as_bytes()).await;
            assert_eq!(last.as_deref(), Some("last words"));
        });
    }

    #[test]
    fn a_line_that_is_not_utf8_does_not_end_the_relay() {
        runtime().block_on(async {
            let text: &[u8] = b"first\n\xff latin-1 caf\xe9\nlast words\n";
            let last = relay("p".to_owned(), Allowance::new(), text).await;
            assert_eq!(last.as_deref(), Some("last words"));
        });
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}
