//! Backpressure: reports that would act are refused (503 with
//! Retry-After) while more than `[intake] max_backlog` events wait to be
//! recorded, in the event stream or held by the store until it writes
//! them. Without it a flood of reports that must never be shed
//! (`would_run`, `workflow_started`) queued without bound: memory grew,
//! and a stop that waited a fixed time lost reports already answered 2xx.
//! With it what the intake answered 2xx is at most `max_backlog` events
//! behind, and a stop writes that out.
//!
//! Refusals are recorded, not per request: [`Said`] is the pure rule for
//! when the count so far becomes a `reports_refused` event (the first
//! within a tick of starting, then at most every [`SAY_EVERY`], and the
//! rest at stop).

use std::time::{Duration, Instant};

/// The least time between two `reports_refused` events.
pub const SAY_EVERY: Duration = Duration::from_secs(10);

/// What the client is told to wait before it tries again, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a report is refused now.
#[derive(Clone, Debug, PartialEq)]
pub struct Behind {
    /// Events waiting to be recorded.
    pub waiting: usize,
    /// `[intake] max_backlog`.
    pub limit: usize,
    /// The store cannot write at all (rather than being slow).
    pub store_degraded: bool,
}

impl Behind {
    /// The one-line reason a client and the log get.
    pub fn reason(&self) -> String {
        let Behind { waiting, limit, .. } = self;
        if self.store_degraded {
            format!(
                "healer cannot record reports now: the store cannot write its database (see the store_degraded event) and {waiting} events wait, more than [intake] max_backlog = {limit}; retry later"
            )
        } else {
            format!(
                "healer is behind recording reports: {waiting} events wait to be written to the log and the store, more than [intake] max_backlog = {limit}; retry after {RETRY_AFTER_SECS} s"
            )
        }
    }
}

/// Whether `waiting` events are too many for `limit`.
pub fn behind(
    waiting: usize,
    limit: usize,
    store_degraded: impl FnOnce() -> bool,
) -> Option<Behind> {
    (waiting > limit).then(|| Behind {
        waiting,
        limit,
        store_degraded: store_degraded(),
    })
}

/// When refusals counted so far are said.
#[derive(Debug, Default)]
pub struct Said {
    at: Option<Instant>,
}

impl Said {
    /// Whether `unsaid` refusals are to be said now: some are, and none
    /// were said within [`SAY_EVERY`] (or healer is `stopping`). Marks
    /// them said.
    pub fn due(&mut self, unsaid: u64, now: Instant, stopping: bool) -> bool {
        let due = unsaid > 0
            && (stopping
                || self
                    .at
                    .is_none_or(|at| now.saturating_duration_since(at) >= SAY_EVERY));
        if due {
            self.at = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusing_starts_behind_the_limit_not_at_it() {
        assert_eq!(behind(10, 10, || false), None);
        let over = behind(11, 10, || false).unwrap();
        assert_eq!((over.waiting, over.limit), (11, 10));
        assert!(
            over.reason().contains("max_backlog = 10"),
            "{}",
            over.reason()
        );
    }

    #[test]
    fn a_refusal_names_a_store_that_cannot_write() {
        let over = behind(11, 10, || true).unwrap();
        assert!(
            over.reason().contains("store cannot write"),
            "{}",
            over.reason()
        );
    }

    #[test]
    fn refusals_are_said_at_once_then_at_most_every_ten_seconds_and_at_stop() {
        let t0 = Instant::now();
        let mut said = Said::default();
        assert!(!said.due(0, t0, false), "nothing refused, nothing said");
        assert!(said.due(5, t0, false), "the first refusals at once");
        assert!(!said.due(7, t0 + Duration::from_secs(1), false));
        assert!(!said.due(7, t0 + Duration::from_secs(9), false));
        assert!(said.due(7, t0 + SAY_EVERY, false));
        assert!(said.due(1, t0 + SAY_EVERY, true), "the rest at stop");
        assert!(!said.due(0, t0 + SAY_EVERY, true));
    }
}
