//! A target's checks made by their monitors' workers, on the checks' own
//! grids: while the target is quiet (no issue, no recovery being
//! verified), each check whose monitor and
//! diagnosers live in one worker is handed to that worker, which checks
//! and diagnoses it there and sends only what healer must decide on (a
//! status other than OK or a change of status, findings, facts that
//! changed, a failure). A check that changes nothing never crosses the
//! socket (unless every check is recorded as an event: an `event_log`,
//! or `log_level = "debug"`): the worker says once a second how many it made, which keeps
//! the board, the metrics and the check's facts current here. healer keeps
//! every decision: the news runs through the same tracker as a check it
//! made itself, and the moment the target has an issue (or the worker goes
//! silent for [`silent_for`] or ends) the loop takes the schedule back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use healer_plugin_sdk::Status;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::super::check::{silent_for, Watched};
use super::Cycle;
use crate::clock::Wall;
use crate::plugins::{QuietChecks, WatchNews, Watching};

/// What a watched check's worker said, for the target's loop: the
/// check's index and which watch of it said it.
pub(super) type News = Box<(usize, u64, WatchNews)>;

/// News a target's loop may have waiting.
pub(super) const NEWS_BACKLOG: usize = 32;

impl Cycle {
    /// Whether the target is quiet enough for its workers to check it:
    /// nothing open, nothing being verified.
    fn quiet(&self) -> bool {
        // Not `settling`: it outlives the issue it was for. A fleet
        // target is never handed to a worker: its checks must stop the
        // moment this member stops owning it, and a worker goes on
        // checking while healer is stopped (SIGSTOP) or cut off.
        !self.tracker.has_issues()
            && !self.verifying
            && self.off_grid.is_none()
            && self.runner.fence.is_none()
    }

    /// Hands the quiet target's watchable checks to their workers, or takes
    /// them back when the target is not quiet any more.
    pub(super) async fn settle_watches(&mut self, news: &mpsc::Sender<News>) {
        let quiet = self.quiet();
        for index in 0..self.checks.len() {
            let check = &self.checks[index];
            if check
                .watched
                .as_ref()
                .is_some_and(|w| w.lost.load(Ordering::Relaxed))
            {
                // Its news may have said something healer must decide on:
                // checked here, at once.
                self.unwatch(index);
                self.checks[index].schedule.next = Instant::now();
                continue;
            }
            match (&check.watched, quiet && check.watchable) {
                (Some(_), false) => self.unwatch(index),
                (None, true) => self.watch(index, news).await,
                _ => {}
            }
        }
    }

    /// Takes check `index` back from its worker: the loop checks it on its
    /// grid from its next point.
    pub(super) fn unwatch(&mut self, index: usize) {
        let check = &mut self.checks[index];
        let Some(watched) = check.watched.take() else {
            return;
        };
        check.monitor.unwatch();
        check.facts_digest = watched.facts.load(Ordering::Relaxed);
        let now = Instant::now();
        check.schedule.next = now;
        check.schedule.after_unscheduled(now, check.interval);
    }

    /// The worker of the watch `id` of check `index` ended. When that is
    /// the current watch the loop takes the check back; returns whether a
    /// check may have been under way then (by its grid, how long its
    /// checks take and how late they begin): that one counts as failed,
    /// UNKNOWN, as a call in flight on a worker that crashed. A worker
    /// that ends between checks leaves nothing undecided: healer checks on
    /// from its next point.
    pub(super) fn watch_ended(&mut self, index: usize, id: u64, why: &str) -> bool {
        let Some(check) = self.checks.get(index) else {
            return false;
        };
        let Some(watched) = check.watched.as_ref().filter(|w| w.id == id) else {
            return false;
        };
        let now = Instant::now();
        let point = check.schedule.point_at_or_before(now, check.interval);
        let under_way = watched.maybe_under_way(point, now);
        debug!(target = %self.name(), check = %check.name, why, under_way, "its worker ended: healer checks it");
        self.unwatch(index);
        under_way
    }

    /// Hands check `index` to its monitor's worker.
    async fn watch(&mut self, index: usize, news: &mpsc::Sender<News>) {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let Some(slot) = self.slot.clone() else {
            return;
        };
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let check = &self.checks[index];
        let ok = check.last_status == Some(Status::Ok);
        let watched = Arc::new(Watched::new(id, ok, check.facts_digest));
        let sender = news.clone();
        let lost = Arc::clone(&watched);
        let told = Box::new(move |said: WatchNews| {
            let sent = sender.try_send(Box::new((index, id, said))).is_ok();
            if !sent {
                lost.lost.store(true, Ordering::Relaxed);
            }
            sent
        });
        let quiet = {
            let watched = Arc::clone(&watched);
            let shared = Arc::clone(&self.shared);
            let subject = format!("target.{}", self.name());
            let writer = check.source.writer.clone();
            let ttl = check.facts_ttl();
            Box::new(move |runs: QuietChecks| {
                // A point missed is a check that should have begun: late.
                let missed = u64::from(runs.missed);
                slot.began(
                    u64::from(runs.checks) + missed,
                    u64::from(runs.late) + missed,
                    runs.late_by,
                );
                // Quiet means "OK again": healer must have seen it OK.
                // Points missed alone vouch for nothing.
                if !watched.ok.load(Ordering::Relaxed) || runs.checks == 0 {
                    return true;
                }
                watched.confirm();
                watched.ran(runs.took, runs.late_by);
                let took_us = u64::try_from(runs.took.as_micros()).unwrap_or(u64::MAX);
                let Some(latest) = runs.latest else {
                    return true;
                };
                // When it ended, on the wall clock.
                let ago = std::time::Instant::now().saturating_duration_since(latest);
                let at = Wall::from(std::time::SystemTime::from(Wall::now()) - ago);
                slot.update(|view| {
                    if let Some(check) = view.checks.get_mut(index) {
                        check.last_check = Some(at);
                        check.took_us = took_us;
                        view.took_us = took_us;
                    }
                    view.last_check = view.checks.iter().filter_map(|c| c.last_check).max();
                });
                slot.checked_in(runs.took, runs.checks);
                // Its facts held still: vouched for again.
                if watched.facts.load(Ordering::Relaxed) != 0 {
                    let held = shared.facts().refresh(&subject, &writer, ttl, Wall::now());
                    if held == 0 {
                        watched.facts.store(0, Ordering::Relaxed);
                        return false;
                    }
                }
                true
            })
        };
        let watching = Watching {
            keep: check.history_len,
            within: check.deadline.into(),
            every: check.interval,
            origin: check.schedule.origin().into_std(),
            facts: check.facts_digest,
            every_check: self.events.wants_every_check(),
            news: told,
            quiet,
        };
        let diagnosers: Vec<_> = check.diagnosers.iter().map(|(_, d)| d).collect();
        // Handing it over may start the worker and create the instances:
        // bounded as a check is, and promised to the watchdog.
        let within: Duration = check.deadline.into();
        self.promise(within);
        let handed = tokio::time::timeout(within, check.monitor.watch(&diagnosers, watching))
            .await
            .unwrap_or_else(|_| Err(format!("not handed over within {}", check.deadline)));
        match handed {
            Ok(()) => {
                let check = &mut self.checks[index];
                check.schedule.next = Instant::now() + silent_for(check.interval);
                check.watched = Some(watched);
            }
            Err(why) => {
                debug!(target = %self.name(), check = %self.checks[index].name, why, "its worker cannot check it: healer does");
            }
        }
    }

    /// Whether the news of watch `id` of check `index` is still news: the
    /// watch is the current one, and the check began after the latest
    /// this loop made or heard of.
    pub(super) fn fresh_news(&self, index: usize, id: u64, began: Instant) -> bool {
        let Some(check) = self.checks.get(index) else {
            return false;
        };
        check.watched.as_ref().is_some_and(|w| w.id == id)
            && check.checked_at.is_none_or(|at| at <= began)
    }

    /// After the loop ran (or heard of) check `index`: what a watch of it
    /// shares with the worker's messages.
    pub(super) fn after_watched_run(&mut self, index: usize, facts_sent: bool) {
        let check = &self.checks[index];
        let Some(watched) = &check.watched else {
            return;
        };
        watched.confirm();
        let ok = check.last_status == Some(Status::Ok) && !self.tracker.has_issues();
        watched.ok.store(ok, Ordering::Relaxed);
        watched.facts.store(check.facts_digest, Ordering::Relaxed);
        // The worker thinks healer holds what it sent; healer does not.
        if facts_sent && check.facts_digest == 0 {
            check.monitor.facts_forgotten();
        }
    }

    /// Whether watched check `index` may still wait for its worker at
    /// `now`: its worker said how it goes within [`silent_for`]; then its
    /// next look is moved on.
    pub(super) fn worker_still_says(&mut self, index: usize, now: Instant) -> bool {
        let check = &mut self.checks[index];
        let Some(watched) = &check.watched else {
            return false;
        };
        let deadline = watched.deadline(check.interval);
        if deadline > now {
            check.schedule.next = deadline;
            return true;
        }
        debug!(target = %self.name(), check = %self.checks[index].name, "its worker went silent: healer checks it");
        self.unwatch(index);
        false
    }
}
