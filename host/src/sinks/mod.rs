//! Alert sinks: escalations announced outside healer. Each `[[alert]]`
//! is a sink: Alertmanager's API (`alertmanager.rs`: its routing then
//! reaches Slack, PagerDuty or mail) or a webhook with a body template
//! (`webhook.rs`, `template.rs`). An escalated issue fires, and its
//! resolution (or reset) resolves it; so does an anomaly the intake
//! escalated (`notice.rs`). Each sink keeps its own books (`outbox.rs`:
//! what fires, re-sends, the order of deliveries) and runs as its own
//! task (`sink.rs`), speaking HTTP through `http.rs`; every delivery,
//! retried with backoff, ends as an `alert_sent` or `alert_failed` event.
//!
//! [`Alerts`] is the event subscriber. Like every subscriber it runs on
//! the event thread and must never block: it only hands notices to the
//! sinks' bounded channels, and drops (and counts) one a full channel
//! cannot take.

mod alertmanager;
mod http;
mod notice;
mod outbox;
mod sink;
mod webhook;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::clock::Wall;
use crate::config::Config;
use crate::events::{Events, Record, Subscriber};
use crate::store::Saved;
use notice::Notice;

pub use http::MAX_BACKOFF;
pub use notice::ANOMALY;

/// How often one anomaly's reports (while escalated) are passed on: they
/// only move the moment it ends, and a storm of them must not fill the
/// sinks' channels.
const REPORTS_EVERY: Duration = Duration::from_secs(1);

/// Anomaly names whose last passed-on report is remembered.
const MAX_REPORTED: usize = 10_000;

/// The subscriber that feeds every sink.
pub struct Alerts {
    sinks: Vec<SinkChannel>,
    reported: HashMap<String, Instant>,
}

/// One sink's channel, and the notices it could not take since the
/// last warning.
struct SinkChannel {
    name: String,
    sender: mpsc::Sender<Notice>,
    dropped: u64,
}

impl Alerts {
    /// Starts a task for each of `config`'s sinks, with what `saved` says
    /// was still escalated before a restart firing again (so an alert does
    /// not expire in Alertmanager because healer restarted). `None` when
    /// there are no sinks. Must run on the Tokio runtime.
    pub fn start(config: &Config, saved: &Saved, events: &Events) -> Option<Alerts> {
        if config.alerts.is_empty() {
            return None;
        }
        let restored =
            notice::restored(config, &saved.issues, &saved.intake.anomalies, Wall::now());
        let mut sinks = Vec::new();
        for sink in &config.alerts {
            match sink::spawn(sink, restored.clone(), events.clone()) {
                Ok(sender) => sinks.push(SinkChannel {
                    name: sink.name.clone(),
                    sender,
                    dropped: 0,
                }),
                Err(err) => {
                    tracing::error!(sink = %sink.name, "alert sink {:?} cannot start: {err}; escalations are not sent there", sink.name)
                }
            }
        }
        Some(Alerts {
            sinks,
            reported: HashMap::new(),
        })
    }

    /// Whether a report of a still escalated anomaly is passed on now.
    fn pass_report(&mut self, anomaly: &str) -> bool {
        let now = Instant::now();
        let recent = |last: &Instant| now.duration_since(*last) < REPORTS_EVERY;
        if self.reported.get(anomaly).is_some_and(recent) {
            return false;
        }
        if self.reported.len() >= MAX_REPORTED {
            self.reported.retain(|_, last| recent(last));
        }
        self.reported.insert(anomaly.to_owned(), now);
        true
    }
}

impl Subscriber for Alerts {
    fn deliver(&mut self, record: &Record) {
        let Some(notice) = Notice::of(&record.event, record.at) else {
            return;
        };
        match &notice {
            Notice::Reported { key, .. } if !self.pass_report(&key.target) => return,
            Notice::Resolve { key, .. } if key.kind == ANOMALY => {
                self.reported.remove(&key.target);
            }
            _ => {}
        }
        for feed in &mut self.sinks {
            if let Err(mpsc::error::TrySendError::Full(_)) = feed.sender.try_send(notice.clone()) {
                feed.dropped += 1;
            }
        }
    }

    fn flush(&mut self) {
        for feed in &mut self.sinks {
            if feed.dropped > 0 {
                tracing::warn!(
                    sink = %feed.name,
                    dropped = feed.dropped,
                    "alert sink {:?} falls behind: {} escalations or resolutions were not passed to it ({} at most wait)",
                    feed.name,
                    feed.dropped,
                    sink::QUEUE
                );
                feed.dropped = 0;
            }
        }
    }
}
