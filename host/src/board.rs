//! The board: what each target looks like right now, for the operator's
//! view (the API, the dashboard, `healer status`, `/metrics`) and for
//! healer's own liveness (`/healthz`, the systemd watchdog).
//!
//! Each target's loop owns one [`Slot`] and writes its latest check, open
//! issues and pause into it after every step; readers take a snapshot.
//! Nothing here decides anything: the engine's state lives in the engine
//! (and the store); the board is a window onto it, written one way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use healer_plugin_sdk::{Duration as HumanDuration, Metric, Status};
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::clock::Wall;
use crate::issues::Issue;
use crate::model::Pause;
use crate::timeline::{Timeline, TimelineView};

/// One target as the operator sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetView {
    /// Its name.
    pub name: String,
    /// Its monitor plugins, joined with `+` (`process+http`).
    pub monitor: String,
    /// How often it is checked (the target's `interval`; a check may
    /// have its own, see `checks`).
    pub interval: HumanDuration,
    /// The target's status: the worst of its checks' and of its open
    /// issues' (an escalated issue is CRITICAL, an open one at least
    /// WARNING); `None` before the first check.
    pub status: Option<Status>,
    /// What the status stands for: the worst check's summary, or the
    /// issue that makes the target worse than its checks.
    pub summary: String,
    /// The latest metrics of every check.
    pub metrics: Vec<Metric>,
    /// When it was last checked (or pushed).
    pub last_check: Option<Wall>,
    /// How long the latest scheduled check took, in microseconds.
    pub took_us: u64,
    /// Each check as it last ran, in config order.
    #[serde(default)]
    pub checks: Vec<CheckView>,
    /// Its open issues (open, recovering, escalated).
    pub issues: Vec<Issue>,
    /// Its issues whose recovery waits for a dependency.
    #[serde(default)]
    pub held: Vec<Held>,
    /// Its maintenance pause, while one holds.
    pub paused: Option<Pause>,
}

/// One check of a target as it last ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckView {
    /// Its name in the target (the monitor's plugin, `http-2` for a
    /// second http check).
    pub name: String,
    /// Its monitor plugin.
    pub monitor: String,
    /// How often it runs.
    pub interval: HumanDuration,
    /// The latest observation's status; `None` before the first.
    pub status: Option<Status>,
    /// The latest observation's summary.
    pub summary: String,
    /// When it last ran (or pushed).
    pub last_check: Option<Wall>,
    /// How long its latest scheduled run took, in microseconds.
    pub took_us: u64,
    /// Its latest metrics.
    #[serde(skip)]
    pub metrics: Vec<Metric>,
}

/// An issue whose recovery waits for a dependency of its target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The issue's kind.
    pub kind: String,
    /// The target it waits for.
    pub dependency: String,
    /// Why (`has an open issue`, `has not been checked yet`).
    pub reason: String,
    /// Since when.
    pub since: Wall,
}

impl Held {
    /// `held: waiting for nginx (has an open issue) since ...`.
    pub fn describe(&self) -> String {
        format!(
            "held: waiting for {} ({}) since {}",
            self.dependency, self.reason, self.since
        )
    }
}

impl TargetView {
    /// Works out the target's status, summary and metrics from its checks
    /// and issues: what every reader shows and `healer status` exits with.
    pub fn settle(&mut self) {
        let worst_check = self
            .checks
            .iter()
            .filter_map(|check| check.status.map(|status| (status, check)))
            .max_by_key(|(status, _)| rank(*status));
        let worst_issue = self
            .issues
            .iter()
            .map(|issue| (issue_status(issue), issue))
            .max_by_key(|(status, _)| rank(*status));
        let check = worst_check.map(|(status, check)| (status, check.summary.clone()));
        let issue = worst_issue.map(|(status, issue)| {
            let said = format!("{} {}: {}", issue.kind, issue.state.as_str(), issue.summary);
            (status, said)
        });
        let (status, summary) = match (check, issue) {
            (Some(check), Some(issue)) if rank(issue.0) > rank(check.0) => (Some(issue.0), issue.1),
            (Some(check), _) => (Some(check.0), check.1),
            (None, Some(issue)) => (Some(issue.0), issue.1),
            (None, None) => (None, String::new()),
        };
        (self.status, self.summary) = (status, summary);
        debug_assert_eq!(self.status, self.worst_status());
        self.metrics = self
            .checks
            .iter()
            .flat_map(|check| check.metrics.iter().cloned())
            .collect();
        self.last_check = self
            .checks
            .iter()
            .filter_map(|check| check.last_check)
            .max();
    }
}

impl TargetView {
    /// The status [`TargetView::settle`] works out, and only it: the worst
    /// of its checks' and of its open issues' (no text copied).
    pub fn worst_status(&self) -> Option<Status> {
        self.checks
            .iter()
            .filter_map(|check| check.status)
            .chain(self.issues.iter().map(issue_status))
            .max_by_key(|status| rank(*status))
    }
}

/// How bad a status is, for the worst of several: CRITICAL (not working)
/// outranks UNKNOWN (could not tell), which outranks WARNING.
pub fn rank(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::Warning => 1,
        Status::Unknown => 2,
        Status::Critical => 3,
    }
}

/// What an open issue says of its target: CRITICAL once escalated, else
/// its latest finding's severity, at least WARNING.
fn issue_status(issue: &Issue) -> Status {
    if issue.state == crate::issues::State::Escalated {
        Status::Critical
    } else {
        match issue.severity {
            Status::Ok => Status::Warning,
            severity => severity,
        }
    }
}

/// What a target's loop is doing, for liveness: the moment by which it
/// must next have made progress.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// The latest moment the loop should report progress by; none while
    /// it waits its turn for a recovery slot (the slots' holders have
    /// promises of their own).
    due_by: Option<Instant>,
}

/// One target's place on the board, written by its loop.
pub struct Slot {
    view: Mutex<TargetView>,
    /// Its last hour (status changes, check durations).
    timeline: Mutex<Timeline>,
    progress: Mutex<Progress>,
    check_seconds: Histogram,
    lateness: Arc<Lateness>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, TargetView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the view (and notes a change of its status on the
    /// timeline).
    pub fn update(&self, change: impl FnOnce(&mut TargetView)) {
        let mut view = self.lock();
        change(&mut view);
        let status = view.worst_status();
        self.timeline().status(Wall::now(), status);
    }

    fn timeline(&self) -> MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its last hour, up to `now`.
    pub fn last_hour(&self, now: Wall) -> TimelineView {
        self.timeline().view(now)
    }

    /// The target's status as the board shows it, worked out now (the
    /// worst of its checks and issues).
    pub fn settled_status(&self) -> Option<Status> {
        let mut view = self.lock();
        view.settle();
        view.status
    }

    /// A copy of the view.
    pub fn view(&self) -> TargetView {
        self.lock().clone()
    }

    /// `checks` scheduled checks took this long each.
    pub fn checked_in(&self, took: Duration, checks: u32) {
        for _ in 0..checks.min(100) {
            self.check_seconds.observe(took.as_secs_f64());
        }
        self.timeline().checked(Wall::now(), took, checks);
    }

    /// Scheduled checks began: `checks` of them, `late` of them late (see
    /// [`Lateness`]), the latest by `late_by`.
    pub fn began(&self, checks: u64, late: u64, late_by: Duration) {
        self.lateness.record(checks, late, late_by);
    }

    /// The loop made progress; it must make more by `due_by`.
    pub fn progress(&self, due_by: Instant) {
        self.promised().due_by = Some(due_by);
    }

    /// The loop waits for a recovery slot, held by other loops.
    pub fn waiting_for_a_slot(&self) {
        self.promised().due_by = None;
    }

    fn promised(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn late_by(&self, now: Instant) -> Option<Duration> {
        let due_by = self.promised().due_by?;
        now.checked_duration_since(due_by)
    }
}

/// Where the board records how long each target's checks take (the
/// daemon's `/metrics`): it hands each slot its timer, and lets go of a
/// target that left.
pub trait CheckTimers: Send + Sync {
    /// The histogram of `target`'s check durations.
    fn check_timer(&self, target: &str) -> Histogram;
    /// A target removed by a reload: its series go.
    fn forget(&self, target: &str);
}

/// Every target's slot, by name.
pub struct Board {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    metrics: Arc<dyn CheckTimers>,
    /// Whether the checks keep to their schedules.
    pub lateness: Arc<Lateness>,
}

impl Board {
    /// A new board, shared by the engine and its readers; check durations
    /// go to `metrics`.
    pub fn new(metrics: Arc<dyn CheckTimers>) -> Arc<Board> {
        Arc::new(Board {
            slots: RwLock::default(),
            metrics,
            lateness: Arc::default(),
        })
    }

    /// The slot of a target that starts (or restarts: its view is kept
    /// where the name is the same, the rest is `view`'s).
    pub fn enter(&self, view: TargetView, due_by: Instant) -> Arc<Slot> {
        let name = view.name.clone();
        let slot = Arc::new(Slot {
            check_seconds: self.metrics.check_timer(&view.name),
            lateness: Arc::clone(&self.lateness),
            view: Mutex::new(view),
            timeline: Mutex::default(),
            progress: Mutex::new(Progress {
                due_by: Some(due_by),
            }),
        });
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slots.get(&name) {
            // Its last hour goes on.
            *slot.timeline() = std::mem::take(&mut *old.timeline());
            let old = old.view();
            slot.update(|view| {
                // The checks that are still there keep what they saw.
                for check in &mut view.checks {
                    if let Some(was) = old
                        .checks
                        .iter()
                        .find(|was| was.name == check.name && was.monitor == check.monitor)
                    {
                        check.status = was.status;
                        check.summary.clone_from(&was.summary);
                        check.metrics.clone_from(&was.metrics);
                        check.last_check = was.last_check;
                        check.took_us = was.took_us;
                    }
                }
                view.took_us = old.took_us;
                view.settle();
            });
        }
        slots.insert(name, Arc::clone(&slot));
        slot
    }

    /// Shows (or clears) a target's pause.
    pub fn pause(&self, name: &str, pause: Option<Pause>) {
        if let Some(slot) = self.slot(name) {
            slot.update(|view| view.paused = pause);
        }
    }

    /// A target that stopped (removed by a reload).
    pub fn leave(&self, name: &str) {
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.metrics.forget(name);
    }

    /// Every target, by name.
    pub fn targets(&self) -> Vec<TargetView> {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots.iter().map(|slot| slot.view()).collect()
    }

    /// One target.
    pub fn target(&self, name: &str) -> Option<TargetView> {
        self.slot(name).map(|slot| slot.view())
    }

    /// One target's last hour, up to `now`.
    pub fn timeline(&self, name: &str, now: Wall) -> Option<TimelineView> {
        self.slot(name).map(|slot| slot.last_hour(now))
    }

    /// Every target's last hour, by name.
    pub fn timelines(&self, now: Wall) -> BTreeMap<String, TimelineView> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, slot)| (name.clone(), Arc::clone(slot)))
            .collect();
        slots
            .into_iter()
            .map(|(name, slot)| (name, slot.last_hour(now)))
            .collect()
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The targets whose loops have not made progress when they should
    /// have, and by how much they are late.
    pub fn stalled(&self, now: Instant) -> Vec<(String, Duration)> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(name, slot)| slot.late_by(now).map(|late| (name.clone(), late)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str) -> TargetView {
        TargetView {
            name: name.to_owned(),
            monitor: "process".to_owned(),
            interval: HumanDuration(Duration::from_secs(1)),
            status: None,
            summary: String::new(),
            metrics: Vec::new(),
            last_check: None,
            took_us: 0,
            checks: Vec::new(),
            issues: Vec::new(),
            held: Vec::new(),
            paused: None,
        }
    }

    #[test]
    fn a_target_past_its_due_time_is_stalled_and_progress_clears_it() {
        let board = Board::new(Arc::new(crate::metrics::Metrics::default()));
        let now = Instant::now();
        let slot = board.enter(view("db"), now + Duration::from_secs(2));
        assert!(board.stalled(now).is_empty());
        let later = now + Duration::from_secs(3);
        assert_eq!(board.stalled(later)[0].0, "db");
        slot.progress(later + Duration::from_secs(2));
        assert!(board.stalled(later).is_empty());
    }

    #[test]
    fn a_restarted_target_keeps_its_last_check_on_the_board() {
        let board = Board::new(Arc::new(crate::metrics::Metrics::default()));
        let now = Instant::now();
        let with_a_check = || {
            let mut view = view("db");
            view.checks.push(CheckView {
                name: "process".to_owned(),
                monitor: "process".to_owned(),
                interval: HumanDuration(Duration::from_secs(1)),
                status: None,
                summary: String::new(),
                last_check: None,
                took_us: 0,
                metrics: Vec::new(),
            });
            view
        };
        let slot = board.enter(with_a_check(), now);
        slot.update(|v| {
            v.checks[0].status = Some(Status::Critical);
            v.checks[0].summary = "down".to_owned();
            v.settle();
        });
        board.enter(with_a_check(), now);
        let seen = board.target("db").expect("on the board");
        assert_eq!(seen.status, Some(Status::Critical));
        assert_eq!(seen.summary, "down");
        board.leave("db");
        assert!(board.targets().is_empty());
    }

    #[test]
    fn a_target_is_as_bad_as_its_worst_check_or_issue() {
        use crate::issues::State;
        let mut target = view("db");
        let check = |status| CheckView {
            name: "process".to_owned(),
            monitor: "process".to_owned(),
            interval: HumanDuration(Duration::from_secs(1)),
            status: Some(status),
            summary: format!("{status:?}"),
            last_check: Some(Wall::from_millis(1)),
            took_us: 0,
            metrics: Vec::new(),
        };
        target.checks = vec![check(Status::Ok), check(Status::Warning)];
        target.settle();
        assert_eq!(target.status, Some(Status::Warning));
        let issue = |state| {
            Issue::saved(
                "disk.filling".to_owned(),
                state,
                Status::Warning,
                "91% full".to_owned(),
                3,
                [Wall::from_millis(1), Wall::from_millis(2)],
                [None, None],
            )
        };
        target.checks = vec![check(Status::Ok)];
        target.issues = vec![issue(State::Open)];
        target.settle();
        assert_eq!(
            target.status,
            Some(Status::Warning),
            "an open issue is not OK"
        );
        target.issues = vec![issue(State::Escalated)];
        target.settle();
        assert_eq!(target.status, Some(Status::Critical));
        assert_eq!(target.summary, "disk.filling escalated: 91% full");
    }
}

/// Whether healer's checks keep to their schedules. A check is late when
/// it began more than a tenth of its interval after its point of the
/// grid; healer is *behind* once at least [`BEHIND_SHARE`] of the checks
/// of a [`LATE_WINDOW`] began late, and has caught up once fewer than
/// [`CAUGHT_UP_SHARE`] of a window's did. Being behind is healer's own
/// state: it never opens an issue or makes a check UNKNOWN.
#[derive(Default)]
pub struct Lateness {
    state: Mutex<LateState>,
}

/// The share of a window's checks (per mille) that puts healer behind.
pub const BEHIND_SHARE: u64 = 10;
/// The share (per mille) under which healer has caught up.
pub const CAUGHT_UP_SHARE: u64 = 1;
/// How long a window of checks is.
pub const LATE_WINDOW: Duration = Duration::from_secs(5);

#[derive(Default)]
struct LateState {
    /// The open window.
    window: LateCount,
    /// Since start.
    total: LateCount,
    /// How far behind healer is, while it is: the window that said so.
    behind: Option<LateCount>,
}

/// Checks counted, how many began late, and the latest any began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LateCount {
    pub checks: u64,
    pub late: u64,
    /// How late the latest check began, in milliseconds.
    pub latest_ms: u64,
}

impl LateCount {
    fn add(&mut self, checks: u64, late: u64, late_by: Duration) {
        self.checks = self.checks.saturating_add(checks);
        self.late = self.late.saturating_add(late.min(checks));
        let ms = u64::try_from(late_by.as_millis()).unwrap_or(u64::MAX);
        self.latest_ms = self.latest_ms.max(ms);
    }

    /// The late checks per mille of the checks.
    fn per_mille(&self) -> u64 {
        self.late.saturating_mul(1000) / self.checks.max(1)
    }
}

/// What closing a window changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeping {
    /// healer fell behind: the window that says so.
    FellBehind(LateCount),
    /// healer caught up: the window that says so.
    CaughtUp(LateCount),
}

impl Lateness {
    fn lock(&self) -> MutexGuard<'_, LateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `checks` that began, `late` of them late, the latest by
    /// `late_by`.
    pub fn record(&self, checks: u64, late: u64, late_by: Duration) {
        let mut state = self.lock();
        state.window.add(checks, late, late_by);
        state.total.add(checks, late, Duration::ZERO);
    }

    /// Closes the open window (every [`LATE_WINDOW`]): whether healer fell
    /// behind or caught up with it.
    pub fn close_window(&self) -> Option<Keeping> {
        let mut state = self.lock();
        let window = std::mem::take(&mut state.window);
        let share = window.per_mille();
        match state.behind {
            None if window.checks > 0 && share >= BEHIND_SHARE => {
                state.behind = Some(window);
                Some(Keeping::FellBehind(window))
            }
            // A window with no checks shows nothing caught up.
            Some(_) if window.checks > 0 && share < CAUGHT_UP_SHARE => {
                state.behind = None;
                Some(Keeping::CaughtUp(window))
            }
            Some(_) => {
                state.behind = Some(window);
                None
            }
            None => None,
        }
    }

    /// The window that put healer behind (the latest, while it stays
    /// behind); `None` while it keeps to the schedules.
    pub fn behind(&self) -> Option<LateCount> {
        self.lock().behind
    }

    /// Every check counted since start, and how many began late.
    pub fn total(&self) -> LateCount {
        self.lock().total
    }
}

#[cfg(test)]
mod lateness_tests {
    use super::*;

    const LATE_BY: Duration = Duration::from_millis(250);

    #[test]
    fn one_late_check_in_a_hundred_puts_healer_behind_and_fewer_do_not() {
        let lateness = Lateness::default();
        lateness.record(1000, 9, LATE_BY);
        assert_eq!(lateness.close_window(), None, "0.9 % late is keeping up");
        assert_eq!(lateness.behind(), None);

        lateness.record(1000, 10, LATE_BY);
        let window = LateCount {
            checks: 1000,
            late: 10,
            latest_ms: 250,
        };
        assert_eq!(lateness.close_window(), Some(Keeping::FellBehind(window)));
        assert_eq!(lateness.behind(), Some(window));
    }

    #[test]
    fn healer_stays_behind_until_fewer_than_one_in_a_thousand_are_late() {
        let lateness = Lateness::default();
        lateness.record(1000, 500, LATE_BY);
        assert!(matches!(
            lateness.close_window(),
            Some(Keeping::FellBehind(_))
        ));

        // Better, but not caught up: no event, the latest window shown.
        lateness.record(1000, 5, Duration::from_millis(120));
        assert_eq!(lateness.close_window(), None);
        assert_eq!(
            lateness.behind(),
            Some(LateCount {
                checks: 1000,
                late: 5,
                latest_ms: 120
            })
        );

        assert_eq!(lateness.close_window(), None, "no checks: still behind");
        assert!(lateness.behind().is_some());
        lateness.record(2000, 0, Duration::ZERO);
        assert!(matches!(
            lateness.close_window(),
            Some(Keeping::CaughtUp(LateCount { late: 0, .. }))
        ));
        assert_eq!(lateness.behind(), None);
        assert_eq!(lateness.close_window(), None, "caught up is said once");
    }

    #[test]
    fn the_total_counts_every_window_and_late_never_exceeds_checks() {
        let lateness = Lateness::default();
        lateness.record(10, 3, LATE_BY);
        lateness.close_window();
        lateness.record(5, 99, LATE_BY);
        let total = lateness.total();
        assert_eq!((total.checks, total.late), (15, 8));
    }
}
