//! The last hour of one target, for the dashboard's status strip and
//! duration sparkline and `GET /api/v1/targets/NAME/timeline`: when its
//! status changed (exact, so a flap of a few seconds shows), and how long
//! its checks took, as the mean of each minute.
//!
//! Pure and bounded, the clock passed in (like `issues.rs`): at most
//! [`MINUTES`] minutes of durations (12 bytes each) and [`MAX_CHANGES`]
//! status changes are kept per target, whatever it does.

use std::collections::VecDeque;
use std::time::Duration;

use healer_plugin_sdk::Status;
use serde::{Deserialize, Serialize};

use crate::clock::Wall;

/// Minutes of history kept and shown.
pub const MINUTES: usize = 60;

/// Status changes kept: a target flapping faster than this within the
/// hour shows its latest ones, and says how many came before.
pub const MAX_CHANGES: usize = 120;

const MINUTE_MS: u64 = 60_000;

/// One target's last hour.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Status changes, oldest first; the first may be from before the
    /// hour (the status the hour began with).
    changes: VecDeque<(Wall, Option<Status>)>,
    /// Changes dropped to keep within [`MAX_CHANGES`] since the hour began.
    dropped: u32,
    /// Each minute with checks, oldest first.
    minutes: VecDeque<Minute>,
}

/// The checks of one minute.
#[derive(Clone, Copy, Debug)]
struct Minute {
    /// Minutes since the Unix epoch.
    at: u32,
    checks: u32,
    /// Their mean duration, in microseconds.
    mean_us: f32,
}

/// The last hour as the API and the dashboard show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineView {
    /// The hour shown: `from` to `to` (now).
    pub from: Wall,
    pub to: Wall,
    /// The status over the hour, as segments that cover it from the first
    /// known status on (none before the target's first check).
    pub segments: Vec<Segment>,
    /// Status changes within the hour that are no longer itemised.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changes_dropped: u32,
    /// The mean check duration of each minute of the hour, oldest first
    /// ([`MINUTES`] entries; none for a minute without checks), in
    /// microseconds.
    pub durations_us: Vec<Option<u64>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A stretch of the hour with one status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub from: Wall,
    pub to: Wall,
    /// `None`: not checked yet.
    pub status: Option<Status>,
}

impl Timeline {
    /// The target's status at `now`: kept when it changed.
    pub fn status(&mut self, now: Wall, status: Option<Status>) {
        self.forget_the_future(now);
        if self.changes.back().is_some_and(|(_, last)| *last == status) {
            return;
        }
        self.changes.push_back((now, status));
        self.trim(now);
        if self.changes.len() > MAX_CHANGES {
            self.changes.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// `checks` checks that took `took` each, ended at `now`.
    pub fn checked(&mut self, now: Wall, took: Duration, checks: u32) {
        if checks == 0 {
            return;
        }
        self.forget_the_future(now);
        let minute = minute_of(now);
        let took_us = took.as_micros() as f32;
        match self.minutes.back_mut() {
            Some(last) if last.at == minute => {
                let total = last.checks.saturating_add(checks);
                last.mean_us += (took_us - last.mean_us) * checks as f32 / total as f32;
                last.checks = total;
            }
            _ => self.minutes.push_back(Minute {
                at: minute,
                checks,
                mean_us: took_us,
            }),
        }
        self.trim(now);
    }

    /// The clock was set back: what was noted after `now` is forgotten
    /// (the status then noted again), so the timeline stays in order and
    /// bounded.
    fn forget_the_future(&mut self, now: Wall) {
        let minute = minute_of(now);
        while self.minutes.back().is_some_and(|m| m.at > minute) {
            self.minutes.pop_back();
        }
        while self.changes.back().is_some_and(|(at, _)| *at > now) {
            self.changes.pop_back();
        }
    }

    /// Forgets what is older than the hour before `now` (but the status
    /// the hour began with).
    fn trim(&mut self, now: Wall) {
        let first_minute = minute_of(now).saturating_sub(MINUTES as u32 - 1);
        while self.minutes.front().is_some_and(|m| m.at < first_minute) {
            self.minutes.pop_front();
        }
        let from = hour_before(now);
        while self.changes.len() > 1 && self.changes[1].0 <= from {
            self.changes.pop_front();
            self.dropped = 0;
        }
    }

    /// The hour before `now`.
    pub fn view(&self, now: Wall) -> TimelineView {
        let from = hour_before(now);
        let mut segments: Vec<Segment> = Vec::new();
        for (index, (at, status)) in self.changes.iter().enumerate() {
            let end = self.changes.get(index + 1).map_or(now, |(next, _)| *next);
            if end <= from {
                continue;
            }
            segments.push(Segment {
                from: (*at).max(from),
                to: end.min(now),
                status: *status,
            });
        }
        let last_minute = minute_of(now);
        let durations_us = (0..MINUTES as u32)
            .map(|ago| last_minute.saturating_sub(MINUTES as u32 - 1 - ago))
            .map(|minute| {
                self.minutes
                    .iter()
                    .find(|m| m.at == minute)
                    .map(|m| m.mean_us.round() as u64)
            })
            .collect();
        TimelineView {
            from,
            to: now,
            segments,
            changes_dropped: self.dropped,
            durations_us,
        }
    }
}

fn minute_of(at: Wall) -> u32 {
    u32::try_from(at.millis() / MINUTE_MS).unwrap_or(u32::MAX)
}

fn hour_before(now: Wall) -> Wall {
    Wall::from_millis(now.millis().saturating_sub(MINUTES as u64 * MINUTE_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn at(seconds: u64) -> Wall {
        Wall::from_millis(T0 + seconds * 1000)
    }

    #[test]
    fn a_flap_of_seconds_shows_as_its_own_segment() {
        let mut timeline = Timeline::default();
        timeline.status(at(0), Some(Status::Ok));
        timeline.status(at(600), Some(Status::Critical));
        timeline.status(at(605), Some(Status::Ok));
        timeline.status(at(606), Some(Status::Ok));

        let view = timeline.view(at(1200));

        let statuses: Vec<(u64, u64, Option<Status>)> = view
            .segments
            .iter()
            .map(|s| {
                (
                    (s.from.millis() - T0) / 1000,
                    (s.to.millis() - T0) / 1000,
                    s.status,
                )
            })
            .collect();
        assert_eq!(
            statuses,
            [
                (0, 600, Some(Status::Ok)),
                (600, 605, Some(Status::Critical)),
                (605, 1200, Some(Status::Ok)),
            ]
        );
    }

    #[test]
    fn the_hour_begins_with_the_status_it_began_with_and_older_changes_go() {
        let mut timeline = Timeline::default();
        timeline.status(at(0), Some(Status::Critical));
        timeline.status(at(100), Some(Status::Ok));
        timeline.status(at(5000), Some(Status::Warning));

        let view = timeline.view(at(5000));

        assert_eq!(timeline.changes.len(), 2, "the change at 0 is forgotten");
        assert_eq!(view.segments.len(), 2);
        assert_eq!(view.segments[0].from, at(5000 - 3600));
        assert_eq!(view.segments[0].status, Some(Status::Ok));
        assert_eq!(view.segments[1].status, Some(Status::Warning));
    }

    #[test]
    fn durations_are_the_mean_of_each_minute_and_a_minute_without_checks_is_none() {
        let mut timeline = Timeline::default();
        timeline.checked(at(0), Duration::from_millis(10), 1);
        timeline.checked(at(30), Duration::from_millis(30), 3);
        timeline.checked(at(125), Duration::from_millis(5), 1);

        let view = timeline.view(at(125));

        assert_eq!(view.durations_us.len(), MINUTES);
        let known: Vec<Option<u64>> = view.durations_us[MINUTES - 3..].to_vec();
        assert_eq!(known, [Some(25_000), None, Some(5_000)]);
    }

    #[test]
    fn a_clock_set_back_keeps_the_timeline_in_order_and_bounded() {
        let mut timeline = Timeline::default();
        timeline.status(at(100_000), Some(Status::Ok));
        timeline.checked(at(100_000), Duration::from_millis(1), 1);

        timeline.status(at(10), Some(Status::Critical));
        timeline.checked(at(10), Duration::from_millis(2), 1);
        let view = timeline.view(at(20));

        assert_eq!(timeline.changes.len(), 1);
        assert_eq!(timeline.minutes.len(), 1);
        assert!(view.segments.iter().all(|s| s.from <= s.to), "{view:?}");
        assert_eq!(
            view.segments.last().map(|s| s.status),
            Some(Some(Status::Critical))
        );
    }

    #[test]
    fn a_target_flapping_without_end_keeps_a_bounded_timeline() {
        let mut timeline = Timeline::default();
        for second in 0..3000 {
            let status = if second % 2 == 0 {
                Status::Ok
            } else {
                Status::Critical
            };
            timeline.status(at(second), Some(status));
            timeline.checked(at(second), Duration::from_millis(1), 1);
        }

        let view = timeline.view(at(3000));

        assert_eq!(timeline.changes.len(), MAX_CHANGES);
        assert!(timeline.minutes.len() <= MINUTES);
        assert_eq!(view.segments.len(), MAX_CHANGES);
        assert!(view.changes_dropped > 0);
    }
}
