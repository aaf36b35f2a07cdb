//! What healer and a plugin worker say to each other over their
//! socketpair: postcard-encoded messages in length-delimited frames
//! (tokio-util's codec, a 4-byte length before each).
//!
//! Calls carry an id chosen by healer; the worker answers each with a
//! [`FromWorker::Reply`] of the same id, in any order, so many calls are in
//! flight at once. Pushed observations flow back unasked, tagged with the
//! monitor instance they come from. Details (free-form JSON in the SDK
//! types) cross as JSON text: postcard is not self-describing.
//!
//! What a worker sends is outside input: it is held to the plugin limits
//! ([`crate::plugins::bounds`]) as it is decoded ([`held`]), so a frame of 16 MiB
//! costs its own buffer and at most a copy of what is kept of it; details
//! are parsed (which can take many times their text) only within the
//! limits of what healer reads.

mod held;

use bytes::Bytes;
use futures_util::SinkExt;
use healer_plugin_sdk::ffi::{FindingFfi, MetricFfi, ObservationFfi, PluginKind};
use healer_plugin_sdk::{Finding, Metric, Observation, Outcome, Status};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

use crate::plugins::bounds;

pub use held::FoundList;

/// The largest frame either side accepts: more is garbage or an attack.
pub const MAX_FRAME: usize = 16 << 20;

/// How long a worker gathers answers before it writes them: the checks
/// of one slot of the schedule finish within about a millisecond of each
/// other, and healer then wakes once for them instead of once each.
pub const GATHER_ANSWERS: std::time::Duration = std::time::Duration::from_millis(1);

/// The framing both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// One message from healer to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run a plugin call; answer with a reply of the same id.
    Call { id: u64, call: Call },
    /// healer stopped waiting for this call: drop it.
    Cancel { id: u64 },
    /// The instance is no longer used.
    Drop { instance: u64 },
    /// Answer with a pong once the package's runtime has run a task.
    Ping { seq: u64 },
    /// Check a monitor on its grid here, and say only what changed
    /// ([`FromWorker::Watched`], [`FromWorker::Quiet`]); replaces a watch
    /// of the same monitor.
    Watch(Watch),
    /// Stop checking a monitor on its grid (healer checks it itself).
    Unwatch { monitor: u64 },
    /// healer no longer holds the facts of a watched monitor: its next
    /// check sends them whole.
    FactsForgotten { monitor: u64 },
}

/// A monitor checked on its grid by its worker, and diagnosed there by
/// `diagnosers`, against the history the worker keeps (as [`Observe`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Watch {
    pub monitor: u64,
    pub diagnosers: Vec<u64>,
    /// Observations to keep.
    pub keep: u32,
    /// The check's deadline, and each diagnoser's, in microseconds.
    pub within_us: u64,
    /// The grid: a point every `every_us`, one of them at `origin_ns`
    /// ([`monotonic_ns`]: the clock both processes share).
    pub every_us: u64,
    pub origin_ns: u64,
    /// The digest of the facts healer holds from the monitor's last check
    /// ([`bounds::facts_digest`]; 0: none).
    pub facts: u64,
    /// Every check is news (healer records every check as an event).
    pub every_check: bool,
}

/// How a watched monitor's checks went, since the last [`FromWorker::Quiet`],
/// when none of them said anything new.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietRuns {
    pub monitor: u64,
    /// Checks made.
    pub checks: u32,
    /// How long the latest took, in microseconds.
    pub took_us: u32,
    /// How many began late (more than a tenth of an interval after their
    /// point of the grid), and the latest any began, in microseconds.
    pub late: u32,
    pub late_us: u64,
    /// Points of the grid that passed with no check begun (the previous
    /// one had not ended): late checks too.
    pub missed: u32,
    /// When the latest check ended ([`monotonic_ns`]; 0: none).
    pub latest_ns: u64,
}

/// A plugin call.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    /// Validate a plugin config (JSON text).
    CheckConfig {
        kind: Kind,
        name: String,
        config: String,
    },
    /// Create an instance, numbered by healer.
    Create {
        instance: u64,
        kind: Kind,
        name: String,
        config: String,
    },
    /// One check of a monitor instance; `facts` is the digest of the
    /// facts healer holds from its last check ([`bounds::facts_digest`]; 0: none).
    Check { instance: u64, facts: u64 },
    /// A diagnosis by a diagnoser instance.
    Diagnose {
        instance: u64,
        latest: Seen,
        history: Vec<Seen>,
    },
    /// A recovery (a JSON `Recovery`) by a recoverer instance.
    Recover { instance: u64, recovery: String },
    /// A check and its diagnosis in one call, the history kept here.
    Observe(Observe),
}

/// A monitor's check (or what it pushed) diagnosed in the worker, by
/// diagnosers of the same package, against the history the worker keeps
/// for that monitor: nothing but the latest observation crosses.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observe {
    pub monitor: u64,
    /// What the monitor pushed: diagnosed instead of a check.
    pub pushed: Option<Seen>,
    /// What healer recorded that the worker never saw (a check that timed
    /// out on healer's side, a worker that crashed), oldest first: kept in
    /// the history before the latest.
    pub missed: Vec<Seen>,
    /// Diagnoser instances, in the target's order.
    pub diagnosers: Vec<u64>,
    /// Observations to keep.
    pub keep: u32,
    /// The check's deadline, and each diagnoser's, in microseconds.
    pub within_us: u64,
    /// The digest of the facts healer holds from the monitor's last check
    /// ([`bounds::facts_digest`]; 0: none).
    pub facts: u64,
}

/// How a check went, on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum Checked {
    Seen(Seen),
    Failed(#[serde(deserialize_with = "held::text")] String),
    TimedOut,
}

/// How one diagnoser's diagnosis went, on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum Diagnosis {
    Found(FoundList),
    Failed(#[serde(deserialize_with = "held::text")] String),
    TimedOut,
}

/// One message from a worker to healer.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The answer to a call.
    Reply {
        id: u64,
        #[serde(deserialize_with = "held::answer")]
        answer: Result<Answer, String>,
    },
    /// A monitor instance pushed an observation; `None` once it never will.
    Push { instance: u64, seen: Option<Seen> },
    /// The answer to a ping.
    Pong { seq: u64 },
    /// The package is loaded and calls are served (sent once, first).
    Ready,
    /// A watched monitor's check that said something healer must decide
    /// on: a status other than OK, a change of status, findings, facts
    /// that changed, or a check or diagnosis that failed.
    Watched {
        monitor: u64,
        /// When the check began ([`monotonic_ns`]), how late after its
        /// point of the grid, and how long it took (diagnoses included).
        began_ns: u64,
        late_us: u64,
        took_us: u64,
        checked: Checked,
        #[serde(deserialize_with = "held::diagnoses")]
        diagnoses: Vec<Diagnosis>,
    },
    /// Watched monitors whose checks said nothing new, each with how its
    /// checks went: sent about once a second.
    Quiet(Vec<QuietRuns>),
}

/// `at` on the monotonic clock (`CLOCK_MONOTONIC`, what `Instant` reads on
/// Linux), in nanoseconds: the same figure in healer and its workers.
pub fn monotonic_ns(at: std::time::Instant) -> u64 {
    let (now, raw) = (std::time::Instant::now(), raw_monotonic_ns());
    if at <= now {
        raw.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    } else {
        raw.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The instant a [`monotonic_ns`] figure stands for.
pub fn instant_of(ns: u64) -> std::time::Instant {
    let (now, raw) = (std::time::Instant::now(), raw_monotonic_ns());
    // Outside input (a worker says it): never a panic, whatever it says.
    if ns <= raw {
        now.checked_sub(std::time::Duration::from_nanos(raw - ns))
            .unwrap_or(now)
    } else {
        now.checked_add(std::time::Duration::from_nanos(ns - raw))
            .unwrap_or(now)
    }
}

fn raw_monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |at| {
        u64::try_from(at.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(at.tv_nsec()).unwrap_or(0)
    })
}

/// What a call returned.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// Done, nothing to say (a valid config, a created instance).
    Done,
    /// A check's observation.
    Seen(Seen),
    /// A diagnosis.
    Findings(FoundList),
    /// A recovery's outcome.
    Outcome {
        #[serde(deserialize_with = "held::text")]
        summary: String,
        #[serde(deserialize_with = "held::details")]
        details: String,
    },
    /// An observation and its diagnoses, one per diagnoser (none when the
    /// check failed or said UNKNOWN: no diagnoser can read those).
    Observed {
        checked: Checked,
        #[serde(deserialize_with = "held::diagnoses")]
        diagnoses: Vec<Diagnosis>,
    },
    /// A valid config, and what its plugin declares about it
    /// (`healer_plugin_sdk::ffi::Declared`); `Done` is a valid config of
    /// which nothing is declared.
    Declared {
        #[serde(deserialize_with = "held::declared_kinds")]
        kinds: Option<Vec<String>>,
        own_timeout_ms: Option<u64>,
    },
}

impl Answer {
    /// What kind of answer it is, for an error that must not repeat it.
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::Done => "done",
            Answer::Seen(_) => "an observation",
            Answer::Findings(_) => "findings",
            Answer::Outcome { .. } => "an outcome",
            Answer::Observed { .. } => "an observation with its diagnoses",
            Answer::Declared { .. } => "a declaration",
        }
    }
}

/// A plugin kind on the wire.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Kind {
    Monitor,
    Diagnoser,
    Recoverer,
}

impl From<PluginKind> for Kind {
    fn from(kind: PluginKind) -> Kind {
        match kind {
            PluginKind::Monitor => Kind::Monitor,
            PluginKind::Diagnoser => Kind::Diagnoser,
            PluginKind::Recoverer => Kind::Recoverer,
        }
    }
}

impl From<Kind> for PluginKind {
    fn from(kind: Kind) -> PluginKind {
        match kind {
            Kind::Monitor => PluginKind::Monitor,
            Kind::Diagnoser => PluginKind::Diagnoser,
            Kind::Recoverer => PluginKind::Recoverer,
        }
    }
}

/// An [`Observation`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seen {
    status: Status,
    #[serde(deserialize_with = "held::text")]
    summary: String,
    /// (name, value, unit)
    #[serde(deserialize_with = "held::metrics")]
    metrics: Vec<(String, f64, String)>,
    #[serde(deserialize_with = "held::observed_details")]
    details: String,
}

/// A [`Finding`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Found {
    #[serde(deserialize_with = "held::kind")]
    kind: String,
    severity: Status,
    #[serde(deserialize_with = "held::text")]
    summary: String,
    #[serde(deserialize_with = "held::details")]
    details: String,
}

impl From<&Observation> for Seen {
    fn from(seen: &Observation) -> Seen {
        Seen {
            status: seen.status,
            summary: seen.summary.clone(),
            metrics: seen
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.value, m.unit.clone()))
                .collect(),
            details: details_to_text(&seen.details),
        }
    }
}

impl From<Seen> for Observation {
    fn from(seen: Seen) -> Observation {
        Observation {
            status: seen.status,
            summary: seen.summary,
            metrics: seen
                .metrics
                .into_iter()
                .map(|(name, value, unit)| Metric { name, value, unit })
                .collect(),
            details: details_from_text(&seen.details),
        }
    }
}

/// The `healer_facts` member of details (JSON text), unparsed; `None` when
/// there is none (or the details are not an object).
fn facts_member(details: &str) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct OnlyFacts<'a> {
        #[serde(borrow, rename = "healer_facts")]
        facts: Option<&'a RawValue>,
    }
    if !details.contains(healer_plugin_sdk::FACTS_KEY) {
        return None;
    }
    serde_json::from_str::<OnlyFacts>(details).ok()?.facts
}

/// The digest of the facts a check's details (JSON text, as its package
/// wrote them) publish; `None` when they publish none.
pub fn facts_digest_in(details: &str) -> Option<u64> {
    facts_member(details).map(|raw| bounds::facts_digest(raw.get()))
}

/// An observation as a worker keeps it in a history: one buffer.
pub fn encode_kept(seen: &Seen) -> Box<[u8]> {
    postcard::to_allocvec(seen)
        .unwrap_or_default()
        .into_boxed_slice()
}

/// A kept observation, to hand to a diagnoser (`None` if it was not one).
pub fn decode_kept(kept: &[u8]) -> Option<ObservationFfi> {
    postcard::from_bytes::<Seen>(kept)
        .ok()
        .map(ObservationFfi::from)
}

impl From<&ObservationFfi> for Seen {
    fn from(seen: &ObservationFfi) -> Seen {
        Seen {
            status: seen.status,
            summary: seen.summary.to_string(),
            metrics: seen
                .metrics
                .iter()
                .map(|m| (m.name.to_string(), m.value, m.unit.to_string()))
                .collect(),
            // Already JSON text: passed on as it is.
            details: seen.details.to_string(),
        }
    }
}

impl From<Seen> for ObservationFfi {
    fn from(seen: Seen) -> ObservationFfi {
        ObservationFfi {
            status: seen.status,
            summary: seen.summary.into(),
            metrics: seen
                .metrics
                .into_iter()
                .map(|(name, value, unit)| MetricFfi {
                    name: name.into(),
                    value,
                    unit: unit.into(),
                })
                .collect(),
            details: seen.details.into(),
        }
    }
}

impl From<FindingFfi> for Found {
    fn from(found: FindingFfi) -> Found {
        Found {
            kind: found.kind.into_string(),
            severity: found.severity,
            summary: found.summary.into_string(),
            details: found.details.into_string(),
        }
    }
}

impl From<&Finding> for Found {
    fn from(found: &Finding) -> Found {
        Found {
            kind: found.kind.clone(),
            severity: found.severity,
            summary: found.summary.clone(),
            details: details_to_text(&found.details),
        }
    }
}

impl Found {
    /// This finding with `details` (JSON text) as they are: what a worker
    /// may send, for the tests of what healer does with it.
    pub fn with_details(self, details: String) -> Found {
        Found { details, ..self }
    }
}

impl Seen {
    /// This observation without its details: what a worker that diagnosed
    /// a check itself sends back (healer reads only the status, summary
    /// and metrics of such a check; the details stay with the diagnosers).
    /// What healer reads of a check diagnosed in its worker: no details
    /// but the facts the monitor published (they are healer's to keep),
    /// as [`facts_as_known`](Self::facts_as_known) says them.
    pub fn without_details(&self, known: u64) -> Seen {
        let details = match facts_member(&self.details) {
            Some(raw) => format!("{{\"{}\":{}}}", healer_plugin_sdk::FACTS_KEY, raw.get()),
            None => String::new(),
        };
        let mut seen = Seen {
            status: self.status,
            summary: self.summary.clone(),
            metrics: self.metrics.clone(),
            details,
        };
        seen.facts_as_known(known);
        seen
    }

    /// Only changes cross from a worker to healer: when the facts this
    /// check published are those healer holds (their digest is `known`),
    /// they are sent as `"same"`, which healer reads as "still true".
    pub fn facts_as_known(&mut self, known: u64) {
        if known == 0 {
            return;
        }
        let Some(raw) = facts_member(&self.details) else {
            return;
        };
        if bounds::facts_digest(raw.get()) != known {
            return;
        }
        // Where the member's value sits in the text it was read from.
        let start = raw.get().as_ptr() as usize - self.details.as_ptr() as usize;
        let end = start + raw.get().len();
        self.details.replace_range(start..end, bounds::SAME_FACTS);
    }

    /// What this observation (as [`without_details`](Self::without_details)
    /// made it) says of its facts: `None` when it publishes none, `Some(0)`
    /// when they are those healer holds (`"same"`), else their digest.
    pub fn facts_sent(&self) -> Option<u64> {
        let raw = facts_member(&self.details)?;
        Some(if raw.get() == bounds::SAME_FACTS {
            0
        } else {
            bounds::facts_digest(raw.get())
        })
    }

    /// Its status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The observation a check answered: an error when its details were
    /// left out ([`bounds::check_details`]).
    pub fn into_checked(mut self) -> Result<Observation, String> {
        let details = bounds::check_details(&self.details)?;
        self.details = String::new();
        Ok(Observation {
            details,
            ..Observation::from(self)
        })
    }

    /// The observation of a check diagnosed in its worker: its details
    /// hold only the facts it published ([`without_details`](Self::without_details)),
    /// read as a check's are.
    pub fn into_observation_without_details(mut self) -> Result<Observation, String> {
        let details = if self.details.is_empty() {
            serde_json::Value::Null
        } else {
            bounds::check_details(&self.details)?
        };
        self.details = String::new();
        Ok(Observation {
            details,
            ..Observation::from(self)
        })
    }

    /// This observation with `details` (JSON text) as they are: what a
    /// worker may send, for the tests of what healer does with it.
    pub fn with_details(self, details: String) -> Seen {
        Seen { details, ..self }
    }

    /// The observation a monitor pushed: UNKNOWN when its details are
    /// more than a push may hold ([`bounds::pushed`]).
    pub fn into_pushed(self) -> Observation {
        match bounds::pushed_details(&self.details) {
            Ok(()) => Observation::from(self),
            Err(why) => Observation::unknown(why),
        }
    }
}

impl From<Found> for Finding {
    fn from(found: Found) -> Finding {
        Finding {
            kind: found.kind,
            severity: found.severity,
            summary: found.summary,
            details: details_from_text(&found.details),
        }
    }
}

impl Answer {
    /// An outcome on the wire.
    pub fn outcome(outcome: &Outcome) -> Answer {
        Answer::Outcome {
            summary: outcome.summary.clone(),
            details: details_to_text(&outcome.details),
        }
    }
}

/// Details as JSON text; empty for `null`.
fn details_to_text(details: &Value) -> String {
    if details.is_null() {
        String::new()
    } else {
        details.to_string()
    }
}

/// Details back from JSON text; text that is not JSON stays a string.
pub fn details_from_text(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Writes queued frames to the other side, as many as are waiting per
/// flush; ends when the queue closes or the socket fails.
pub async fn write_frames<W: AsyncWrite + Unpin>(write: W, outbox: UnboundedReceiver<Bytes>) {
    // Nothing to gather: a queue closed from the start.
    let (_, nothing) = tokio::sync::mpsc::unbounded_channel();
    write_gathering(write, outbox, nothing, std::time::Duration::ZERO).await;
}

/// A worker's writer: frames from `urgent` are written at once; after a
/// frame from `gathered` (an answer to a check) it waits up to `gather`
/// for more (an urgent frame ends the wait), so the answers of one slot of
/// the schedule cross as one write and healer wakes once for them. Ends
/// when both queues close or the socket fails.
pub async fn write_gathering<W: AsyncWrite + Unpin>(
    write: W,
    mut urgent: UnboundedReceiver<Bytes>,
    mut gathered: UnboundedReceiver<Bytes>,
    gather: std::time::Duration,
) {
    let mut sink = FramedWrite::new(write, codec());
    let (mut urgent_open, mut gathered_open) = (true, true);
    while urgent_open || gathered_open {
        let (frame, wait) = tokio::select! {
            biased;
            frame = urgent.recv(), if urgent_open => match frame {
                Some(frame) => (frame, false),
                None => { urgent_open = false; continue; }
            },
            frame = gathered.recv(), if gathered_open => match frame {
                Some(frame) => (frame, true),
                None => { gathered_open = false; continue; }
            },
        };
        if sink.feed(frame).await.is_err() {
            return;
        }
        if wait && urgent_open {
            tokio::select! {
                _ = tokio::time::sleep(gather) => {}
                frame = urgent.recv() => match frame {
                    Some(frame) => if sink.feed(frame).await.is_err() { return },
                    None => urgent_open = false,
                },
            }
        }
        for queue in [&mut urgent, &mut gathered] {
            while let Ok(more) = queue.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

/// A message as one frame's payload.
pub fn encode<T: Serialize>(message: &T) -> Bytes {
    // Encoding into a Vec fails only for types postcard cannot express
    // (maps of unknown length, `deserialize_any`); these are all fixed.
    Bytes::from(postcard::to_stdvec(message).unwrap_or_default())
}

/// Whether a frame may be sent, or why not.
pub fn fits(frame: &Bytes) -> Result<(), String> {
    if frame.len() <= MAX_FRAME {
        Ok(())
    } else {
        Err(format!(
            "the message is {} bytes, more than the {} MiB one may be",
            frame.len(),
            MAX_FRAME >> 20
        ))
    }
}

/// A frame's payload as a message, or what was wrong with it.
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(frame)
        .map_err(|err| format!("an unreadable message ({} bytes: {err})", frame.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{take_published, Value as FactValue};
    use crate::plugins::bounds;

    #[test]
    fn a_moment_crosses_to_the_other_process_as_the_same_moment_and_any_figure_is_safe() {
        let at = std::time::Instant::now() + std::time::Duration::from_millis(250);
        let back = instant_of(monotonic_ns(at));
        let off = if back > at { back - at } else { at - back };
        assert!(off < std::time::Duration::from_millis(5), "{off:?}");
        // What a hostile worker may say: no panic, a moment near now.
        for ns in [0, 1, u64::MAX / 2, u64::MAX] {
            let _ = instant_of(ns);
        }
    }

    #[test]
    fn facts_healer_holds_already_cross_the_wire_as_one_word_and_a_change_whole() {
        let check = |pid: u32| {
            Observation::ok("running")
                .detail("lines", 3)
                .fact("process.pid", pid)
                .fact("process.running", true)
        };
        // The first check: whole, and healer notes their digest.
        let mut first = Seen::from(&check(42));
        first.facts_as_known(0);
        let mut read = first.into_checked().expect("a check");
        let taken = take_published(&mut read.details);
        assert_eq!(taken.facts.len(), 2);
        assert!(!taken.same);
        assert_ne!(taken.digest, 0);
        // The same facts again: one word, which healer reads as such.
        let mut again = Seen::from(&check(42));
        again.facts_as_known(taken.digest);
        assert!(
            again.details.contains("\"healer_facts\":\"same\""),
            "{}",
            again.details
        );
        let mut read = again.into_checked().expect("a check");
        let same = take_published(&mut read.details);
        assert!(same.same && same.facts.is_empty(), "{same:?}");
        assert_eq!(
            read.details["lines"], 3,
            "the rest of the details as they were"
        );
        // A change: whole again.
        let mut changed = Seen::from(&check(43));
        changed.facts_as_known(taken.digest);
        let mut read = changed.into_checked().expect("a check");
        let whole = take_published(&mut read.details);
        assert!(!whole.same);
        assert!(whole
            .facts
            .contains(&("process.pid".to_owned(), FactValue::Number(43.0))));
    }

    #[test]
    fn a_check_diagnosed_in_its_worker_still_hands_healer_its_facts_and_nothing_else() {
        let seen = Seen::from(
            &Observation::ok("running")
                .detail("secret_lines", "not healer's to read")
                .fact("process.pid", 7),
        );
        let mut read = seen
            .without_details(0)
            .into_observation_without_details()
            .expect("readable");
        assert!(
            read.details.get("secret_lines").is_none(),
            "{}",
            read.details
        );
        let taken = take_published(&mut read.details);
        assert_eq!(
            taken.facts,
            [("process.pid".to_owned(), FactValue::Number(7.0))]
        );
    }

    #[test]
    fn an_observation_and_a_finding_survive_the_wire() {
        let seen = Observation::warning("slow")
            .metric("latency", 812.5, "ms")
            .metric("count", 3.0, "")
            .detail("url", "http://127.0.0.1/");
        let frame = encode(&FromWorker::Reply {
            id: 7,
            answer: Ok(Answer::Seen(Seen::from(&seen))),
        });
        let Ok(FromWorker::Reply {
            id: 7,
            answer: Ok(Answer::Seen(back)),
        }) = decode::<FromWorker>(&frame)
        else {
            panic!("not a reply")
        };
        assert_eq!(Observation::from(back), seen);
        let found = Finding::critical("http.down", "refused").detail("code", 0);
        assert_eq!(Finding::from(Found::from(&found)), found);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = decode::<FromWorker>(&[0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.starts_with("an unreadable message (5 bytes"), "{err}");
    }

    fn reply(answer: Answer) -> Bytes {
        encode(&FromWorker::Reply {
            id: 1,
            answer: Ok(answer),
        })
    }

    fn declared_kinds_after_the_wire(kinds: Option<Vec<String>>) -> Option<Vec<String>> {
        let frame = reply(Answer::Declared {
            kinds,
            own_timeout_ms: Some(5000),
        });
        match decode::<FromWorker>(&frame) {
            Ok(FromWorker::Reply {
                answer:
                    Ok(Answer::Declared {
                        kinds,
                        own_timeout_ms: Some(5000),
                    }),
                ..
            }) => kinds,
            _ => panic!("not a declaration"),
        }
    }

    #[test]
    fn a_declaration_survives_the_wire_and_too_many_kinds_declare_nothing() {
        let few = vec!["disk.filling".to_owned(), "log.fatal".to_owned()];
        assert_eq!(declared_kinds_after_the_wire(Some(few.clone())), Some(few));
        assert_eq!(declared_kinds_after_the_wire(None), None);
        let many = vec!["k.k".to_owned(); bounds::DECLARED_KINDS + 1];
        assert_eq!(declared_kinds_after_the_wire(Some(many)), None);
        let long = vec!["k".repeat(1 << 20)];
        let cut = declared_kinds_after_the_wire(Some(long)).expect("one kind");
        assert!(cut[0].len() <= bounds::KIND_BYTES + 4, "{}", cut[0].len());
    }

    #[test]
    fn a_huge_string_is_cut_as_it_is_decoded() {
        let seen = Seen::from(&Observation::critical("s".repeat(15 << 20)));
        let frame = reply(Answer::Seen(seen));
        let Ok(FromWorker::Reply {
            answer: Ok(Answer::Seen(back)),
            ..
        }) = decode::<FromWorker>(&frame)
        else {
            panic!("not a reply")
        };
        assert!(back.summary.len() <= bounds::TEXT_BYTES);
        let error = encode(&FromWorker::Reply {
            id: 2,
            answer: Err("e".repeat(4 << 20)),
        });
        let Ok(FromWorker::Reply { answer: Err(e), .. }) = decode::<FromWorker>(&error) else {
            panic!("not an error")
        };
        assert!(e.len() <= bounds::TEXT_BYTES);
    }

    #[test]
    fn findings_beyond_the_limit_are_counted_as_they_are_decoded() {
        let found: FoundList = (0..20_000)
            .map(|i| Found::from(&Finding::critical(format!("flood.k{i}"), "s")))
            .collect();
        let frame = reply(Answer::Observed {
            checked: Checked::TimedOut,
            diagnoses: vec![Diagnosis::Found(found), Diagnosis::TimedOut],
        });
        let Ok(FromWorker::Reply {
            answer: Ok(Answer::Observed { diagnoses, .. }),
            ..
        }) = decode::<FromWorker>(&frame)
        else {
            panic!("not observed")
        };
        let [Diagnosis::Found(found), Diagnosis::TimedOut] = &diagnoses[..] else {
            panic!("two diagnoses")
        };
        assert_eq!(found.kept.len(), bounds::FINDINGS_PER_ANSWER);
        assert_eq!(found.dropped, 20_000 - bounds::FINDINGS_PER_ANSWER);
    }

    #[test]
    fn the_shapes_walked_over_are_the_shapes_encoded() {
        // More diagnoses than are kept, each with findings: the ones past
        // the limit are walked over as `DiagnosisSkip`s. A number encoded
        // after them reads back right only if the walk took exactly the
        // bytes the real shapes wrote.
        let finding = Finding::critical("a.b", "s").detail("k", "v");
        let diagnoses: Vec<Diagnosis> = (0..bounds::DIAGNOSES_PER_ANSWER + 10)
            .map(|i| match i % 3 {
                0 => Diagnosis::Found((0..3).map(|_| Found::from(&finding)).collect()),
                1 => Diagnosis::Failed("no".into()),
                _ => Diagnosis::TimedOut,
            })
            .collect();
        let message = (
            Answer::Observed {
                checked: Checked::TimedOut,
                diagnoses,
            },
            7u64,
        );
        let frame = encode(&message);
        let (answer, after) = decode::<(Answer, u64)>(&frame).expect("decodes");
        assert_eq!(after, 7, "everything before it was read exactly");
        let Answer::Observed { diagnoses, .. } = answer else {
            panic!("observed")
        };
        assert_eq!(diagnoses.len(), bounds::DIAGNOSES_PER_ANSWER);
        let metrics = (0..100).fold(Observation::ok("m"), |seen, i| {
            seen.metric(format!("m{i}"), f64::from(i), "ms")
        });
        let frame = encode(&(Seen::from(&metrics), 9u64));
        let (seen, after) = decode::<(Seen, u64)>(&frame).expect("decodes");
        assert_eq!(
            (seen.metrics.len(), after),
            (bounds::METRICS_PER_OBSERVATION, 9)
        );
    }

    #[test]
    fn a_list_that_claims_a_huge_length_reserves_nothing_for_it() {
        // A reply (variant 0) of id 1, Ok, Answer::Findings (variant 2)
        // claiming 2^60 findings and holding none.
        let mut frame = vec![0u8, 1, 0, 2];
        frame.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
        let err = decode::<FromWorker>(&frame).unwrap_err();
        assert!(err.starts_with("an unreadable message"), "{err}");
    }
}
