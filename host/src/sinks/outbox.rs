//! One sink's bookkeeping, pure: which alerts fire, when each is re-sent
//! or ends by itself, and each alert's deliveries in order. Deliveries of
//! one alert never overtake each other (a resolution never arrives before
//! its firing); deliveries of different alerts run side by side, up to
//! the slots the caller has free.
//!
//! Two policies. Re-sending (Alertmanager): a firing alert is sent again
//! every `resend_every`, and a newer state replaces one that is queued or
//! waiting to retry, since only the latest state matters to a receiver
//! that keeps state. Once (webhooks): each firing and each resolution is
//! delivered once, in order, nothing replaced (at most a few queued per
//! alert). No clock of its own: callers pass `now`, as an `Instant` for
//! schedules and as wall-clock time for moments events carry.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::notice::{Alert, Key, Notice};
use crate::clock::Wall;
use crate::model::AlertState;

/// Alerts one sink keeps firing at most; beyond, new ones are dropped
/// (and counted). Targets and the intake's anomaly names are bounded
/// below this already.
pub const MAX_FIRING: usize = 10_000;

/// Deliveries waiting per alert for a sink that delivers every state.
pub const MAX_QUEUED: usize = 8;

/// One POST to make.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub alert: Alert,
    pub state: AlertState,
    /// When it started firing, or when it ended.
    pub at: Wall,
    /// A firing alert ends by itself at this moment (an anomaly quiet for
    /// long enough); a receiver may be told so.
    pub ends_by: Option<Wall>,
    /// A repeat of a firing already announced.
    pub resent: bool,
}

struct Firing {
    alert: Alert,
    quiet_for: Option<Duration>,
    last_report: Wall,
    next_send: Option<Instant>,
}

impl Firing {
    fn ends_by(&self) -> Option<Wall> {
        self.quiet_for.map(|quiet| self.last_report + quiet)
    }
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Delivery>,
    running: bool,
    /// Ends the running delivery's wait for its next try.
    stop: Option<oneshot::Sender<()>>,
}

/// The state of one sink.
pub struct Outbox {
    resend_every: Option<Duration>,
    firing: BTreeMap<Key, Firing>,
    lanes: BTreeMap<Key, Lane>,
    dropped: u64,
}

impl Outbox {
    /// With `resend_every`, firing alerts are re-sent and a newer state
    /// replaces an older one; without, every state is delivered once.
    pub fn new(resend_every: Option<Duration>) -> Outbox {
        Outbox {
            resend_every,
            firing: BTreeMap::new(),
            lanes: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Takes in a notice. A restored alert is announced again only by a
    /// re-sending sink (its receiver forgets alerts not re-sent); a sink
    /// that delivers once only remembers it, to deliver its resolution.
    pub fn take(&mut self, notice: Notice, now: Instant, wall: Wall) {
        match notice {
            Notice::Fire {
                alert,
                quiet_for,
                last_report,
                restored,
            } => {
                let known = self.firing.get(&alert.key).map(|f| f.alert.since);
                if known.is_none() && self.firing.len() >= MAX_FIRING {
                    self.dropped += 1;
                    return;
                }
                let firing = Firing {
                    alert,
                    quiet_for,
                    last_report,
                    next_send: self.resend_every.map(|every| now + every),
                };
                let announce = if restored {
                    self.resend_every.is_some()
                } else {
                    known != Some(firing.alert.since) || self.resend_every.is_some()
                };
                if announce {
                    self.push(Delivery {
                        alert: firing.alert.clone(),
                        state: AlertState::Firing,
                        at: firing.alert.since,
                        ends_by: firing.ends_by(),
                        resent: false,
                    });
                }
                self.firing.insert(firing.alert.key.clone(), firing);
                // A restored anomaly may be quiet long enough already.
                self.due(now, wall);
            }
            Notice::Reported { key, at } => {
                if let Some(firing) = self.firing.get_mut(&key) {
                    firing.last_report = firing.last_report.max(at);
                }
            }
            Notice::Forget { target } => self.firing.retain(|key, _| key.target != target),
            Notice::Resolve { key, at } => {
                if let Some(firing) = self.firing.remove(&key) {
                    self.push(Delivery {
                        alert: firing.alert,
                        state: AlertState::Resolved,
                        at,
                        ends_by: None,
                        resent: false,
                    });
                }
            }
        }
    }

    /// Re-sends what is due and ends anomalies quiet for long enough.
    pub fn due(&mut self, now: Instant, wall: Wall) {
        let mut ended = Vec::new();
        let mut resend = Vec::new();
        for (key, firing) in &mut self.firing {
            if let Some(ends_by) = firing.ends_by().filter(|end| *end <= wall) {
                ended.push((key.clone(), ends_by));
                continue;
            }
            if let (Some(next), Some(every)) = (firing.next_send, self.resend_every) {
                if next <= now {
                    firing.next_send = Some(now + every);
                    resend.push(Delivery {
                        alert: firing.alert.clone(),
                        state: AlertState::Firing,
                        at: firing.alert.since,
                        ends_by: firing.ends_by(),
                        resent: true,
                    });
                }
            }
        }
        for delivery in resend {
            self.push(delivery);
        }
        for (key, at) in ended {
            self.take(Notice::Resolve { key, at }, now, wall);
        }
    }

    /// When [`Outbox::due`] has something to do next, if ever.
    pub fn next_due(&self, now: Instant, wall: Wall) -> Option<Instant> {
        self.firing
            .values()
            .flat_map(|firing| {
                let ends = firing.ends_by().map(|end| now + end.since(wall));
                ends.into_iter().chain(firing.next_send)
            })
            .min()
    }

    /// Deliveries to start now, at most `slots`, each with the receiver
    /// that tells it a newer state replaced it.
    pub fn start(&mut self, slots: usize) -> Vec<(Delivery, oneshot::Receiver<()>)> {
        let mut started = Vec::new();
        for lane in self.lanes.values_mut() {
            if started.len() >= slots {
                break;
            }
            if lane.running {
                continue;
            }
            if let Some(delivery) = lane.queue.pop_front() {
                let (stop, stopped) = oneshot::channel();
                lane.running = true;
                lane.stop = Some(stop);
                started.push((delivery, stopped));
            }
        }
        started
    }

    /// The running delivery of `key` ended.
    pub fn finished(&mut self, key: &Key) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.running = false;
            lane.stop = None;
            if lane.queue.is_empty() {
                self.lanes.remove(key);
            }
        }
    }

    /// Alerts firing now.
    pub fn firing(&self) -> usize {
        self.firing.len()
    }

    /// Deliveries and alerts dropped since the last call (limits reached).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn push(&mut self, delivery: Delivery) {
        let lane = self.lanes.entry(delivery.alert.key.clone()).or_default();
        if self.resend_every.is_some() {
            lane.queue.clear();
            if let Some(stop) = lane.stop.take() {
                let _ = stop.send(());
            }
        } else if lane.queue.len() >= MAX_QUEUED {
            lane.queue.pop_front();
            self.dropped += 1;
        }
        lane.queue.push_back(delivery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(target: &str) -> Key {
        Key {
            target: target.into(),
            kind: "process.not_running".into(),
        }
    }

    fn alert(target: &str) -> Alert {
        Alert {
            key: key(target),
            severity: "critical".into(),
            summary: "not running".into(),
            reason: "still failing".into(),
            attempts: 3,
            since: Wall::from_millis(1_000),
            workflow: None,
        }
    }

    fn fire(target: &str) -> Notice {
        Notice::Fire {
            alert: alert(target),
            quiet_for: None,
            last_report: Wall::from_millis(1_000),
            restored: false,
        }
    }

    fn resolve(target: &str) -> Notice {
        Notice::Resolve {
            key: key(target),
            at: Wall::from_millis(2_000),
        }
    }

    fn states(started: &[(Delivery, oneshot::Receiver<()>)]) -> Vec<(String, AlertState, bool)> {
        started
            .iter()
            .map(|(d, _)| (d.alert.key.target.clone(), d.state, d.resent))
            .collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_resolution_waits_for_its_firing_to_be_delivered() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(None);
        outbox.take(fire("web"), now, wall);
        outbox.take(resolve("web"), now, wall);
        let first = outbox.start(16);
        assert_eq!(states(&first), [("web".into(), AlertState::Firing, false)]);
        assert!(
            outbox.start(16).is_empty(),
            "one delivery per alert at a time"
        );
        outbox.finished(&key("web"));
        assert_eq!(
            states(&outbox.start(16)),
            [("web".into(), AlertState::Resolved, false)]
        );
    }

    #[test]
    fn different_alerts_are_delivered_side_by_side_up_to_the_free_slots() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(None);
        for target in ["a", "b", "c"] {
            outbox.take(fire(target), now, wall);
        }
        assert_eq!(outbox.start(2).len(), 2);
        assert_eq!(outbox.start(2).len(), 1);
    }

    #[test]
    fn a_newer_state_replaces_a_retrying_delivery_when_re_sending() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(Some(MINUTE));
        outbox.take(fire("web"), now, wall);
        let mut running = outbox.start(16);
        outbox.take(resolve("web"), now, wall);
        assert!(
            running[0].1.try_recv().is_ok(),
            "the retrying firing is told to stop"
        );
        outbox.finished(&key("web"));
        assert_eq!(
            states(&outbox.start(16)),
            [("web".into(), AlertState::Resolved, false)]
        );
    }

    #[test]
    fn a_firing_alert_is_re_sent_every_resend_every_until_it_resolves() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(Some(MINUTE));
        outbox.take(fire("web"), now, wall);
        outbox.start(16);
        outbox.finished(&key("web"));
        assert_eq!(outbox.next_due(now, wall), Some(now + MINUTE));
        outbox.due(now + MINUTE / 2, wall);
        assert!(outbox.start(16).is_empty(), "not yet");
        outbox.due(now + MINUTE, wall);
        assert_eq!(
            states(&outbox.start(16)),
            [("web".into(), AlertState::Firing, true)]
        );
        outbox.finished(&key("web"));
        outbox.take(resolve("web"), now + MINUTE, wall);
        assert_eq!(outbox.next_due(now, wall), None);
        assert_eq!(
            states(&outbox.start(16)),
            [("web".into(), AlertState::Resolved, false)]
        );
    }

    #[test]
    fn a_sink_that_delivers_once_never_re_sends() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(None);
        outbox.take(fire("web"), now, wall);
        outbox.start(16);
        outbox.finished(&key("web"));
        assert_eq!(outbox.next_due(now, wall), None);
        outbox.due(now + MINUTE * 10, wall);
        assert!(outbox.start(16).is_empty());
    }

    #[test]
    fn a_restored_alert_is_announced_again_only_by_a_re_sending_sink() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let restored = Notice::Fire {
            alert: alert("web"),
            quiet_for: None,
            last_report: wall,
            restored: true,
        };
        let mut once = Outbox::new(None);
        once.take(restored.clone(), now, wall);
        assert!(once.start(16).is_empty(), "remembered, not announced");
        once.take(resolve("web"), now, wall);
        assert_eq!(
            states(&once.start(16)),
            [("web".into(), AlertState::Resolved, false)],
            "but its resolution is delivered"
        );
        let mut resending = Outbox::new(Some(MINUTE));
        resending.take(restored, now, wall);
        assert_eq!(
            states(&resending.start(16)),
            [("web".into(), AlertState::Firing, false)]
        );
    }

    #[test]
    fn an_anomaly_ends_by_itself_when_quiet_for_long_enough_and_reports_extend_it() {
        let (now, wall) = (Instant::now(), Wall::from_millis(10_000));
        let quiet = Duration::from_secs(600);
        let mut outbox = Outbox::new(None);
        outbox.take(
            Notice::Fire {
                alert: alert("disk.full"),
                quiet_for: Some(quiet),
                last_report: wall,
                restored: false,
            },
            now,
            wall,
        );
        outbox.start(16);
        outbox.finished(&key("disk.full"));
        assert_eq!(outbox.next_due(now, wall), Some(now + quiet));
        let later = wall + Duration::from_secs(300);
        outbox.take(
            Notice::Reported {
                key: key("disk.full"),
                at: later,
            },
            now,
            wall,
        );
        outbox.due(now + quiet, wall + quiet);
        assert_eq!(outbox.firing(), 1, "the report kept it firing");
        outbox.due(now + quiet * 2, later + quiet);
        assert_eq!(outbox.firing(), 0);
        let ended = outbox.start(16);
        assert_eq!(
            states(&ended),
            [("disk.full".into(), AlertState::Resolved, false)]
        );
        assert_eq!(ended[0].0.at, later + quiet);
    }

    #[test]
    fn a_resolution_of_an_alert_never_announced_is_not_delivered() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(None);
        outbox.take(resolve("web"), now, wall);
        assert!(outbox.start(16).is_empty());
    }

    #[test]
    fn a_lane_holds_at_most_max_queued_deliveries_and_counts_the_rest() {
        let (now, wall) = (Instant::now(), Wall::from_millis(1_000));
        let mut outbox = Outbox::new(None);
        outbox.take(fire("web"), now, wall);
        outbox.start(16);
        for n in 0..MAX_QUEUED as u64 {
            outbox.take(resolve("web"), now, wall);
            let mut again = alert("web");
            again.since = Wall::from_millis(3_000 + n);
            outbox.take(
                Notice::Fire {
                    alert: again,
                    quiet_for: None,
                    last_report: wall,
                    restored: false,
                },
                now,
                wall,
            );
        }
        assert_eq!(outbox.take_dropped(), MAX_QUEUED as u64);
        assert_eq!(outbox.take_dropped(), 0);
    }
}
