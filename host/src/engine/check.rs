//! One check of a target, as its loop runs it: the monitor and its
//! diagnosers, the history they read, when it next falls due on its grid,
//! and what it last saw. The loop ([`super::target`]) runs the checks of
//! a target one at a time, so a target never checks and recovers at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use healer_plugin_sdk::{Duration as HumanDuration, Finding, Observation, Status};
use tokio::time::Instant;

use super::CheckRunner;
use crate::board::CheckView;
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::Check;
use crate::facts::Source;
use crate::plugins::{DiagnoserHandle, MonitorHandle};

/// One check of a target, running.
pub(super) struct Watch {
    /// Its index in the target.
    pub index: usize,
    /// Its name in the target.
    pub name: String,
    /// Its monitor plugin's name.
    pub plugin: String,
    /// How often it runs.
    pub interval: Duration,
    /// The deadline of its check and of each diagnosis.
    pub deadline: HumanDuration,
    pub monitor: Arc<MonitorHandle>,
    pub diagnosers: Vec<(String, DiagnoserHandle)>,
    /// The monitor as the writer of the facts its checks publish.
    pub source: Source,
    /// Each diagnoser's grant (its `reads`, aligned with `diagnosers`):
    /// the facts it is given with each observation.
    pub grants: Vec<Option<GlobSet>>,
    /// That facts it published were dropped was said, and nothing has
    /// been kept whole since.
    pub facts_dropped_said: bool,
    /// The digest of the facts its monitor last published whole, as
    /// healer holds them (0: none): its worker then sends `"same"` for
    /// them unchanged.
    pub facts_digest: u64,
    /// Where its sources of findings start among the target's.
    pub first_source: usize,
    /// Observations before the latest, for the diagnosers.
    pub history: VecDeque<Observation>,
    /// How many to keep.
    pub history_len: usize,
    /// The monitor's worker diagnoses its checks, and keeps the history.
    pub in_place: bool,
    /// Observations made here that the worker's history lacks.
    pub missed: Vec<Observation>,
    pub last_status: Option<Status>,
    /// When its latest run (not a push) began: a push that arrived before
    /// it is stale.
    pub checked_at: Option<Instant>,
    /// When it next falls due; while its worker checks it on its grid,
    /// when healer next looks whether the worker still says how it goes.
    pub schedule: Schedule,
    /// Its monitor's worker may check it on its grid: the monitor and its
    /// diagnosers live in one worker, and no diagnoser reads facts.
    pub watchable: bool,
    /// Set while its worker checks it on its grid.
    pub watched: Option<Arc<Watched>>,
}

/// A check its monitor's worker makes on the check's grid: what the
/// worker's messages and the target's loop share.
pub(super) struct Watched {
    /// Tells this watch's news from an earlier one's.
    pub id: u64,
    /// When the worker last said how the check went.
    confirmed: std::sync::Mutex<Instant>,
    /// Whether the latest check healer knows of was OK (and no finding):
    /// only then does a quiet check confirm it.
    pub ok: AtomicBool,
    /// The digest of the facts healer holds from the monitor.
    pub facts: AtomicU64,
    /// How long its latest check took and how late it began, as the
    /// worker last said (µs): whether a check may have been under way
    /// when the worker ended.
    pub took_us: AtomicU64,
    pub late_us: AtomicU64,
    /// News of it could not be handed to the loop (its queue was full):
    /// the worker stopped, and the loop takes the check back at once.
    pub lost: AtomicBool,
}

/// How long after its grid point a check counts as possibly under way
/// when its worker ends, beyond what its checks take and how late they
/// begin.
const UNDER_WAY_SLACK: Duration = Duration::from_millis(100);

impl Watched {
    pub fn new(id: u64, ok: bool, facts: u64) -> Watched {
        Watched {
            id,
            confirmed: std::sync::Mutex::new(Instant::now()),
            ok: AtomicBool::new(ok),
            facts: AtomicU64::new(facts),
            took_us: AtomicU64::new(0),
            late_us: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        }
    }

    /// What the worker said of its latest check: how long it took and how
    /// late it began.
    pub fn ran(&self, took: Duration, late: Duration) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.took_us.store(us(took), Ordering::Relaxed);
        self.late_us.store(us(late), Ordering::Relaxed);
    }

    /// Whether a check may have been under way at `now`, its latest grid
    /// point `point`: it began at most as late as checks began, and ran at
    /// most as long as they took (with some slack). A worker that ends
    /// between checks leaves nothing undecided.
    pub fn maybe_under_way(&self, point: Instant, now: Instant) -> bool {
        let took = Duration::from_micros(self.took_us.load(Ordering::Relaxed));
        let late = Duration::from_micros(self.late_us.load(Ordering::Relaxed));
        now.saturating_duration_since(point)
            <= took.saturating_add(late).saturating_mul(2) + UNDER_WAY_SLACK
    }

    /// The worker said how the check went, now.
    pub fn confirm(&self) {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// By when the worker must next say how the check goes, or healer
    /// checks it itself: [`SILENT_INTERVALS`] intervals (at least
    /// [`SILENT_AT_LEAST`]) after it last did.
    pub fn deadline(&self, interval: Duration) -> Instant {
        let confirmed = *self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        confirmed + silent_for(interval)
    }
}

/// How long a watched check's worker may stay silent: [`SILENT_INTERVALS`]
/// intervals, at least [`SILENT_AT_LEAST`] (it says how quiet checks went
/// once a second).
pub(super) fn silent_for(interval: Duration) -> Duration {
    interval
        .saturating_mul(SILENT_INTERVALS)
        .max(SILENT_AT_LEAST)
}

/// Intervals a watched check's worker may stay silent.
const SILENT_INTERVALS: u32 = 3;
const SILENT_AT_LEAST: Duration = Duration::from_secs(3);

/// When a check next falls due, on its grid.
pub(super) struct Schedule {
    /// The next run.
    pub next: Instant,
    grid: Grid,
}

impl Schedule {
    fn new(grid: Grid) -> Schedule {
        Schedule {
            next: grid.first(),
            grid,
        }
    }

    /// After a run on the grid that began at `started`: the next point,
    /// never sooner than half an interval after it began (a slow check is
    /// not followed by another a few milliseconds later).
    pub fn after_scheduled(&mut self, started: Instant, now: Instant, every: Duration) {
        self.next = self.grid.after(now.max(started + every / 2), every);
    }

    /// The grid's origin: one of its points.
    pub fn origin(&self) -> Instant {
        self.grid.origin
    }

    /// The latest point of the grid of `every` at or before `now` (the
    /// origin, before it).
    pub fn point_at_or_before(&self, now: Instant, every: Duration) -> Instant {
        Instant::from_std(crate::grid::at_or_before(
            self.grid.origin.into_std(),
            now.into_std(),
            every,
        ))
    }

    /// After a run off the grid (a verification, a re-check): the point
    /// it was due at still stands, unless it passed meanwhile.
    pub fn after_unscheduled(&mut self, now: Instant, every: Duration) {
        if self.next <= now {
            self.next = self.grid.after(now, every);
        }
    }
}

impl Watch {
    /// The check `index` of a target, with its plugin instances.
    pub fn new(
        index: usize,
        check: &Check,
        runner: CheckRunner,
        first_source: usize,
        history_len: usize,
        target: &str,
    ) -> Watch {
        let CheckRunner {
            monitor,
            diagnosers,
            source,
        } = runner;
        let handles: Vec<_> = diagnosers.iter().map(|(_, d)| d).collect();
        let grants: Vec<Option<GlobSet>> = check
            .diagnosers
            .iter()
            .map(|plugin| grant(&plugin.reads))
            .collect();
        // A diagnoser given facts is called from here, where they are.
        let in_place =
            monitor.diagnosed_in_place_by(&handles) && grants.iter().all(Option::is_none);
        let watchable = (in_place || handles.is_empty()) && monitor.served_by_a_worker();
        // No more than the diagnosers read (with no diagnoser, none).
        let needed = handles.iter().map(|d| d.history_needed()).max();
        let history_len = history_len.max(1).min(needed.unwrap_or(0));
        let interval: Duration = check.interval.into();
        // The first check of a target keeps the phase a target of one
        // check always had; the others have phases of their own.
        let phase_of = if index == 0 {
            target.to_owned()
        } else {
            format!("{target}/{}", check.name)
        };
        let grid = Grid::of(interval, &phase_of);
        Watch {
            index,
            name: check.name.clone(),
            plugin: check.monitor.plugin.clone(),
            interval,
            deadline: check.deadline,
            monitor,
            diagnosers,
            source,
            grants,
            facts_dropped_said: false,
            facts_digest: 0,
            first_source,
            history: VecDeque::new(),
            history_len,
            in_place,
            missed: Vec::new(),
            last_status: None,
            checked_at: None,
            schedule: Schedule::new(grid),
            watchable,
            watched: None,
        }
    }

    /// How long the facts its monitor publishes hold unless written (or
    /// vouched for) again: two intervals; for a check its worker may make
    /// on its grid, at least two of the worker's reports of quiet checks
    /// (one a second) and one more second.
    pub fn facts_ttl(&self) -> Duration {
        let ttl = self.interval.saturating_mul(2);
        if self.watchable {
            ttl.max(Duration::from_secs(3))
        } else {
            ttl
        }
    }

    /// Its sources of findings: each diagnoser, or the monitor itself.
    pub fn sources(&self) -> usize {
        self.diagnosers.len().max(1)
    }

    /// How it looks before its first run.
    pub fn view(&self) -> CheckView {
        CheckView {
            name: self.name.clone(),
            monitor: self.plugin.clone(),
            interval: HumanDuration(self.interval),
            status: None,
            summary: String::new(),
            last_check: None,
            took_us: 0,
            metrics: Vec::new(),
        }
    }

    /// Keeps `seen` for the diagnosers that read the history.
    pub fn remember(&mut self, seen: Observation) {
        if self.in_place || self.history_len == 0 {
            return;
        }
        self.history.push_back(seen);
        while self.history.len() > self.history_len {
            self.history.pop_front();
        }
    }

    /// Keeps an observation the worker's history lacks, for the next call.
    pub fn remember_missed(&mut self, seen: Observation) {
        self.missed.push(seen);
        if self.missed.len() > self.history_len {
            self.missed.remove(0);
        }
    }

    /// With no diagnosis, the observation itself when it is not OK:
    /// `<monitor>.<status>`.
    pub fn undiagnosed(&self, seen: &Observation) -> Vec<Finding> {
        if seen.status == Status::Ok {
            return Vec::new();
        }
        let kind = format!("{}.{}", self.plugin, seen.status.as_str().to_lowercase());
        vec![Finding::new(kind, seen.status, seen.summary.clone())]
    }
}

/// When a check falls due: on a fixed-rate grid (a slow check does not
/// stretch the period), at one of [`SLOTS`] phases of the interval chosen
/// from the target's name (the same phase in every run). Targets spread
/// over the slots, so they do not all fire at once, and the targets of one
/// slot fire in the same instant: their checks reach a plugin worker as one
/// batch, and the threads on their way wake once per slot instead of once
/// per check.
pub(super) struct Grid {
    /// The first check.
    origin: Instant,
}

/// Phases per interval: 20 ms apart at 1 s.
const SLOTS: u64 = 50;

impl Grid {
    fn of(interval: Duration, name: &str) -> Grid {
        // One origin for every target of this run, so that targets of one
        // slot share their deadlines to the nanosecond.
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Grid::at(
            *EPOCH.get_or_init(Instant::now),
            Instant::now(),
            interval,
            name,
        )
    }

    /// The grid of a target named `name` whose run began at `epoch`,
    /// starting after `now`.
    fn at(epoch: Instant, now: Instant, interval: Duration, name: &str) -> Grid {
        use std::hash::BuildHasher;
        // A fixed hasher: the phase depends on the name only.
        let slot = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default()
            .hash_one(name)
            % SLOTS;
        let phase = interval.mul_f64(slot as f64 / SLOTS as f64);
        let grid = Grid {
            origin: epoch + phase,
        };
        let origin = grid.after(now, interval);
        if grid.origin >= now {
            grid
        } else {
            Grid { origin }
        }
    }

    fn first(&self) -> Instant {
        self.origin
    }

    /// The first point of the grid of `every` after `now`.
    fn after(&self, now: Instant, every: Duration) -> Instant {
        if every.is_zero() || now < self.origin {
            return self.origin.max(now);
        }
        let passed = crate::grid::at_or_before(self.origin.into_std(), now.into_std(), every);
        // Far beyond any uptime only with absurd figures: then an
        // interval from now, never a point in the past.
        Instant::from_std(passed)
            .checked_add(every)
            .unwrap_or(now + every)
    }
}

/// The facts a diagnoser's `reads` grants it, as one glob set; none for
/// no `reads` (the config checked each glob).
fn grant(reads: &[String]) -> Option<GlobSet> {
    if reads.is_empty() {
        return None;
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in reads {
        if let Ok(glob) = Glob::new(pattern) {
            builder.add(glob);
        }
    }
    builder.build().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn checks_fall_on_the_targets_phase_at_a_fixed_rate() {
        let epoch = Instant::now();
        let grid = Grid::at(epoch, epoch, SECOND, "web");
        let phase = grid.first() - epoch;
        assert!(phase < SECOND);
        assert_eq!(phase.as_millis() % 20, 0, "one of 50 slots: {phase:?}");
        // A check that took 200 ms does not stretch the period.
        let done = grid.first() + Duration::from_millis(200);
        assert_eq!(grid.after(done, SECOND), grid.first() + SECOND);
        // One that overran skips to the next point, never into the past.
        let late = grid.first() + Duration::from_millis(2_300);
        assert_eq!(grid.after(late, SECOND), grid.first() + 3 * SECOND);
    }

    #[test]
    fn the_phase_depends_on_the_name_only() {
        let epoch = Instant::now();
        let phases = |name: &str| Grid::at(epoch, epoch, SECOND, name).first() - epoch;
        assert_eq!(phases("web"), phases("web"));
        let spread: HashSet<Duration> = (0..200).map(|i| phases(&format!("t{i}"))).collect();
        assert!(spread.len() > 30, "200 targets on {} slots", spread.len());
    }

    #[test]
    fn a_target_started_later_begins_at_its_next_point() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(3_500);
        let grid = Grid::at(epoch, now, SECOND, "web");
        assert!(grid.first() >= now && grid.first() < now + SECOND);
        let phase = (grid.first() - epoch).as_nanos() % SECOND.as_nanos();
        let at_start = Grid::at(epoch, epoch, SECOND, "web").first() - epoch;
        assert_eq!(phase, at_start.as_nanos(), "the same phase");
    }

    #[test]
    fn a_run_off_the_grid_never_moves_the_next_scheduled_one() {
        let epoch = Instant::now();
        let mut schedule = Schedule::new(Grid::at(epoch, epoch, 5 * SECOND, "web"));
        let due = schedule.next;
        // A verification 4 s before the next point: that point stands.
        schedule.after_unscheduled(due - 4 * SECOND, 5 * SECOND);
        assert_eq!(schedule.next, due);
        // One that ran past it: the point after.
        schedule.after_unscheduled(due + SECOND, 5 * SECOND);
        assert_eq!(schedule.next, due + 5 * SECOND);
        // A scheduled run is followed by the next point at least half an
        // interval after it began.
        let mut schedule = Schedule::new(Grid::at(epoch, epoch, 5 * SECOND, "web"));
        let started = schedule.next;
        schedule.after_scheduled(started, started + SECOND, 5 * SECOND);
        assert_eq!(schedule.next, started + 5 * SECOND);
    }

    #[test]
    fn an_absurdly_long_wait_is_one_interval_not_the_past() {
        let epoch = Instant::now();
        let grid = Grid::at(epoch, epoch, Duration::from_nanos(1), "web");
        let far = epoch + Duration::from_secs(400 * 24 * 3600);
        assert!(grid.after(far, Duration::from_nanos(1)) > far);
        assert_eq!(grid.after(far, Duration::ZERO), far);
    }
}
