//! The one way out of the engine and the intake: a closed, typed [`Event`]
//! for every transition, sent into one channel and handed, in order, to
//! every subscriber: the log (human or JSON lines, and the seed's
//! `auto_healer_action` record at CRITICAL), the event log file (one JSON
//! object per line, what tests read), the store, and the alert sinks.
//!
//! Emitting never blocks and never fails: [`Events::emit`] stamps the
//! event with the wall-clock time and sends it to the dispatcher thread,
//! which delivers it. A slow subscriber (a slow disk) delays other
//! subscribers, never a check. How many events wait ([`Events::waiting`])
//! is what the intake reads to refuse reports instead of queueing without
//! bound; on stop, [`Events::finish`] waits for what waits as long as it
//! is being written.
//!
//! What outside input puts into events (an anomaly's details, a reflex's
//! params) is encoded as JSON once, when the event is made ([`Json`]), and
//! shared by the log, the event log and the store.
//!
//! Invariant: the engine and the intake write no transition anywhere else.
//! They may still write `debug!` lines about their own mechanics.

mod bus;
mod event;
mod json;
#[cfg(test)]
pub mod witness;

pub use bus::{Events, Inbox, Subscriber, HIGH_WATER};
pub use event::{fact_events, Event, Record, Role, Run, StepResult};
pub use json::{bounded, Json, MAX_DETAILS};
