//! The supervisor's policy for one package's workers, as a pure state
//! machine with the clock passed in: when a worker may start again after
//! a crash (a backoff that doubles with each crash within the crash
//! window, capped), when crashes quarantine the package (`crash_limit`
//! within `crash_window`), and when a quarantine ends (its file changed
//! and probed clean, or an operator lifted it). The worker client asks it
//! before every start and tells it every crash; it spawns, kills and
//! probes nothing itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::WorkerLimits;
use crate::model::crashed_too_often;

/// The wait before the first restart; it doubles with each crash within
/// the window.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one package's workers are allowed to start, after what crashed.
#[derive(Debug)]
pub struct Supervisor {
    /// The file name in the plugins directory, as messages name it.
    package: String,
    /// Crashes within `crash_window` that quarantine the package.
    crash_limit: u32,
    crash_window: Duration,
    /// When each crash within the window happened.
    crashes: VecDeque<Instant>,
    /// No start before this, after a crash.
    retry_at: Option<Instant>,
    last_crash: Option<String>,
    /// Why the package is quarantined, when it is.
    quarantined: Option<String>,
    /// A changed file is being probed again.
    reprobing: bool,
    /// The changed file was refused: lifting the quarantine would start
    /// workers on a file that does not load.
    file_refused: bool,
}

/// Whether a worker may be started for a call that needs one.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Now.
    Now,
    /// Not now: the call fails with this.
    Refused(String),
    /// Not now, but the quarantined package's file changed: probe it again
    /// (once; this is said only once until the probe's verdict is told).
    /// The call fails with this.
    Reprobe(String),
}

/// A crash, as counted.
#[derive(Debug, PartialEq, Eq)]
pub struct Crash {
    /// Crashes within the window, this one included.
    pub crashes: u32,
    /// Whether this crash quarantined the package (said once, by the
    /// crash that reached the limit).
    pub quarantined: bool,
}

impl Supervisor {
    /// A package named `package` (its file name), nothing crashed yet.
    pub fn new(package: &str, limits: &WorkerLimits) -> Supervisor {
        Supervisor {
            package: package.to_owned(),
            crash_limit: limits.crash_limit,
            crash_window: limits.crash_window,
            crashes: VecDeque::new(),
            retry_at: None,
            last_crash: None,
            quarantined: None,
            reprobing: false,
            file_refused: false,
        }
    }

    /// Whether a worker may start at `now`. `file_changed` is asked only
    /// of a quarantined package whose file is not already being probed
    /// again.
    pub fn start(&mut self, now: Instant, file_changed: impl FnOnce() -> bool) -> Start {
        if let Some(why) = &self.quarantined {
            if self.reprobing || !file_changed() {
                return Start::Refused(why.clone());
            }
            self.reprobing = true;
            return Start::Reprobe(format!("{why} (its file changed: probing it again)"));
        }
        if let Some(at) = self.retry_at {
            if at > now {
                return Start::Refused(format!(
                    "plugin worker for {} is restarting after a crash ({}); next start in {}",
                    self.package,
                    self.last_crash.as_deref().unwrap_or("?"),
                    humantime::format_duration(round_ms(at - now))
                ));
            }
        }
        Start::Now
    }

    /// A worker crashed (or did not start) at `now`, for `reason`: no
    /// start before the backoff, and the package quarantined if it crashed
    /// `crash_limit` times within the window.
    pub fn crashed(&mut self, now: Instant, reason: &str) -> Crash {
        let window = self.crash_window;
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|at| now.duration_since(*at) > window)
        {
            self.crashes.pop_front();
        }
        let crashes = u32::try_from(self.crashes.len()).unwrap_or(u32::MAX);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << crashes.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        self.retry_at = Some(now + backoff);
        self.last_crash = Some(reason.to_owned());
        let quarantined = crashes >= self.crash_limit && self.quarantined.is_none();
        if quarantined {
            self.quarantined = Some(crashed_too_often(
                &self.package,
                crashes,
                &humantime::format_duration(window).to_string(),
                reason,
            ));
        }
        Crash {
            crashes,
            quarantined,
        }
    }

    /// The changed file probed clean: the quarantine is lifted and the
    /// crashes before it forgotten.
    pub fn reprobed_clean(&mut self) {
        self.quarantined = None;
        self.reprobing = false;
        self.file_refused = false;
        self.crashes.clear();
        self.retry_at = None;
    }

    /// The changed file was refused (`refused` says why): the package
    /// stays quarantined, for that, until its file changes again.
    pub fn reprobe_refused(&mut self, refused: &str) {
        self.reprobing = false;
        self.file_refused = true;
        self.quarantined = Some(format!(
            "plugin package {} is quarantined: its file changed, but the new one is refused: {refused}",
            self.package
        ));
    }

    /// Starts quarantined for `why`: a quarantine of this very file,
    /// remembered from before a restart or a reload.
    pub fn remember_quarantine(&mut self, why: String) {
        self.quarantined = Some(why);
        self.reprobing = false;
        self.file_refused = false;
    }

    /// An operator lifts the quarantine: the package is served again, its
    /// crashes before forgotten (as when a changed file probes clean).
    /// Refused, saying why, when it is not quarantined, or when its file
    /// changed since and the new one is being probed or was refused.
    pub fn lift(&mut self) -> Result<(), String> {
        let Some(why) = &self.quarantined else {
            return Err(format!(
                "plugin package {} is not quarantined",
                self.package
            ));
        };
        if self.reprobing {
            return Err(format!(
                "plugin package {}: its changed file is being probed; ask again in a moment",
                self.package
            ));
        }
        if self.file_refused {
            return Err(format!(
                "{why}; lifting it would start workers on that file: replace it with one that loads"
            ));
        }
        self.reprobed_clean();
        Ok(())
    }

    /// How long a caller waiting for a worker (a push monitor) waits at
    /// `now` before it looks again, unless a start wakes it first.
    pub fn retry_in(&self, now: Instant) -> Duration {
        match (self.quarantined.is_some(), self.retry_at) {
            (true, _) => Duration::from_secs(1),
            (false, Some(at)) => at
                .saturating_duration_since(now)
                .max(Duration::from_millis(10)),
            (false, None) => Duration::from_millis(10),
        }
    }

    /// Crashes within the window, as of the last one.
    pub fn recent_crashes(&self) -> usize {
        self.crashes.len()
    }

    /// Why the last worker crashed.
    pub fn last_crash(&self) -> Option<&str> {
        self.last_crash.as_deref()
    }

    /// Why the package is quarantined, while it is.
    pub fn quarantined(&self) -> Option<&str> {
        self.quarantined.as_deref()
    }
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH: &str = "killed by SIGSEGV";

    fn supervisor(crash_limit: u32) -> Supervisor {
        Supervisor::new(
            "libx.so",
            &WorkerLimits {
                crash_limit,
                ..WorkerLimits::default()
            },
        )
    }

    fn unchanged() -> bool {
        false
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_worker_starts_at_once_when_nothing_crashed() {
        let mut policy = supervisor(3);

        assert_eq!(policy.start(Instant::now(), unchanged), Start::Now);
    }

    #[test]
    fn the_first_crash_holds_a_restart_back_a_tenth_of_a_second() {
        let mut policy = supervisor(3);
        let t0 = Instant::now();

        policy.crashed(t0, CRASH);

        assert_eq!(
            policy.start(t0 + ms(40), unchanged),
            Start::Refused(
                "plugin worker for libx.so is restarting after a crash (killed by SIGSEGV); next start in 60ms"
                    .to_owned()
            )
        );
        assert_eq!(policy.start(t0 + ms(100), unchanged), Start::Now);
    }

    #[test]
    fn a_crash_inside_the_window_backs_off_longer() {
        let mut policy = supervisor(100);
        let t0 = Instant::now();

        policy.crashed(t0, CRASH);
        let second = t0 + Duration::from_secs(60);
        policy.crashed(second, CRASH);

        assert!(matches!(
            policy.start(second + ms(150), unchanged),
            Start::Refused(_)
        ));
        assert_eq!(policy.start(second + ms(200), unchanged), Start::Now);
    }

    #[test]
    fn the_backoff_doubles_with_each_crash_up_to_thirty_seconds() {
        let mut policy = supervisor(100);
        let t0 = Instant::now();

        let waits: Vec<Duration> = (0..12)
            .map(|_| {
                policy.crashed(t0, CRASH);
                policy.retry_in(t0)
            })
            .collect();

        let expected: Vec<Duration> = [
            100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000, 30_000,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(waits, expected);
    }

    #[test]
    fn crashes_up_to_the_limit_quarantine_the_package() {
        let mut policy = supervisor(3);
        let t0 = Instant::now();

        let first = policy.crashed(t0, "exited with status 1");
        let second = policy.crashed(t0 + ms(1), "exited with status 1");
        let third = policy.crashed(t0 + ms(2), CRASH);

        assert_eq!(
            [first, second, third],
            [
                Crash {
                    crashes: 1,
                    quarantined: false
                },
                Crash {
                    crashes: 2,
                    quarantined: false
                },
                Crash {
                    crashes: 3,
                    quarantined: true
                },
            ]
        );
        let why = "plugin package libx.so is quarantined: its worker crashed 3 times within 10m (last: killed by SIGSEGV); replace the file, or lift it with `healer reset --plugin libx.so`, to try it again";
        assert_eq!(policy.quarantined(), Some(why));
        let an_hour_later = t0 + Duration::from_secs(3600);
        assert_eq!(
            policy.start(an_hour_later, unchanged),
            Start::Refused(why.to_owned())
        );
    }

    #[test]
    fn a_remembered_quarantine_refuses_starts_until_an_operator_lifts_it() {
        let mut policy = supervisor(3);
        let t0 = Instant::now();
        policy.remember_quarantine("quarantined before the restart".to_owned());

        assert_eq!(
            policy.start(t0, unchanged),
            Start::Refused("quarantined before the restart".to_owned())
        );
        assert_eq!(policy.lift(), Ok(()), "it was quarantined");
        assert_eq!(policy.start(t0, unchanged), Start::Now);
        assert_eq!(
            policy.lift(),
            Err("plugin package libx.so is not quarantined".to_owned())
        );
    }

    #[test]
    fn a_quarantine_whose_new_file_is_being_probed_or_was_refused_is_not_lifted() {
        let mut policy = supervisor(1);
        let t0 = Instant::now();
        policy.crashed(t0, CRASH);
        assert!(matches!(policy.start(t0, || true), Start::Reprobe(_)));

        let probing = policy.lift();
        policy.reprobe_refused("not a shared library");
        let refused = policy.lift();

        assert_eq!(
            probing,
            Err(
                "plugin package libx.so: its changed file is being probed; ask again in a moment"
                    .to_owned()
            )
        );
        assert!(
            refused.as_ref().is_err_and(|why| why
                .contains("the new one is refused: not a shared library")
                && why.ends_with("replace it with one that loads")),
            "{refused:?}"
        );
        assert!(policy.quarantined().is_some());
    }

    #[test]
    fn a_lifted_quarantine_starts_counting_crashes_from_nothing() {
        let mut policy = supervisor(2);
        let t0 = Instant::now();
        policy.crashed(t0, CRASH);
        assert!(policy.crashed(t0 + ms(1), CRASH).quarantined);

        assert_eq!(policy.lift(), Ok(()));

        assert_eq!(policy.start(t0 + ms(2), unchanged), Start::Now);
        let after = policy.crashed(t0 + ms(3), CRASH);
        assert_eq!(
            after,
            Crash {
                crashes: 1,
                quarantined: false
            }
        );
    }

    #[test]
    fn a_quarantine_is_announced_by_the_crash_that_reached_the_limit_only() {
        let mut policy = supervisor(1);
        let t0 = Instant::now();

        assert!(policy.crashed(t0, CRASH).quarantined);
        let again = policy.crashed(t0 + ms(1), "exited with status 1");

        assert_eq!(
            again,
            Crash {
                crashes: 2,
                quarantined: false
            }
        );
        assert!(
            policy.quarantined().is_some_and(|why| why.contains(CRASH)),
            "the reason stays the first one: {:?}",
            policy.quarantined()
        );
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let mut policy = supervisor(3);
        let t0 = Instant::now();
        let window = WorkerLimits::default().crash_window;

        policy.crashed(t0, CRASH);
        policy.crashed(t0 + ms(1), CRASH);
        let later = policy.crashed(t0 + window + ms(1), CRASH);

        assert_eq!(
            later,
            Crash {
                crashes: 2,
                quarantined: false
            },
            "the first crash, one window and a millisecond old, no longer counts; the second, exactly a window old, does"
        );
        assert_eq!(policy.recent_crashes(), 2);
        assert_eq!(policy.retry_in(t0 + window + ms(1)), ms(200));
    }

    #[test]
    fn a_quarantined_package_is_probed_again_once_its_file_changed() {
        let mut policy = supervisor(1);
        let t0 = Instant::now();
        policy.crashed(t0, CRASH);
        let why = policy.quarantined().unwrap_or_default().to_owned();

        let changed = policy.start(t0 + ms(1), || true);
        let meanwhile = policy.start(t0 + ms(2), || panic!("not looked at while it is probed"));

        assert_eq!(
            changed,
            Start::Reprobe(format!("{why} (its file changed: probing it again)"))
        );
        assert_eq!(meanwhile, Start::Refused(why));
    }

    #[test]
    fn a_clean_reprobe_lifts_the_quarantine_and_forgets_the_crashes() {
        let mut policy = supervisor(1);
        let t0 = Instant::now();
        policy.crashed(t0, CRASH);
        policy.start(t0 + ms(1), || true);

        policy.reprobed_clean();

        assert_eq!(policy.quarantined(), None);
        assert_eq!(policy.recent_crashes(), 0);
        assert_eq!(policy.start(t0 + ms(2), unchanged), Start::Now);
        assert_eq!(
            policy.last_crash(),
            Some(CRASH),
            "still shown to the operator"
        );
    }

    #[test]
    fn a_refused_reprobe_keeps_the_package_quarantined_for_the_new_reason() {
        let mut policy = supervisor(1);
        let t0 = Instant::now();
        policy.crashed(t0, CRASH);
        policy.start(t0 + ms(1), || true);

        policy.reprobe_refused("its probe did not answer");

        let why = "plugin package libx.so is quarantined: its file changed, but the new one is refused: its probe did not answer";
        assert_eq!(
            policy.start(t0 + ms(2), unchanged),
            Start::Refused(why.to_owned())
        );
        assert!(
            matches!(policy.start(t0 + ms(3), || true), Start::Reprobe(_)),
            "a file that changes again is probed again"
        );
    }

    #[test]
    fn a_waiting_caller_looks_again_when_the_backoff_ends_and_each_second_in_quarantine() {
        let mut policy = supervisor(2);
        let t0 = Instant::now();
        assert_eq!(policy.retry_in(t0), ms(10), "nothing to wait for");

        policy.crashed(t0, CRASH);
        assert_eq!(policy.retry_in(t0 + ms(30)), ms(70));
        assert_eq!(policy.retry_in(t0 + ms(95)), ms(10), "never less");

        policy.crashed(t0 + ms(100), CRASH);
        assert_eq!(policy.retry_in(t0 + ms(100)), Duration::from_secs(1));
    }
}
