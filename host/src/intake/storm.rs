//! Storm control for anomalies: the same name while its workflow runs or
//! within the cooldown is counted, not re-run; runs per name are limited
//! like recovery attempts (forgotten after a quiet `stable_after`, or when
//! Alertmanager says the alert resolved); runs per minute are limited per
//! reflex and for all reflexes together. Pure, like `issues`; every moment
//! is wall-clock time, so the state of each name (attempts, last run,
//! escalation) means the same after a restart. The per-minute windows and
//! whether a workflow is running are not kept across restarts.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::clock::Wall;
use crate::model::{AnomalyState, Suppressed};

/// Limits of the storm control.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub cooldown: Duration,
    pub max_attempts: u32,
    pub stable_after: Duration,
    pub max_runs_per_minute: u32,
}

/// The storm state of every anomaly name.
#[derive(Debug)]
pub struct Storm {
    limits: Limits,
    anomalies: HashMap<String, AnomalyState>,
    runs: VecDeque<Wall>,
    runs_by_reflex: HashMap<String, VecDeque<Wall>>,
    reports: u64,
}

/// Every this many reports, names quiet for `stable_after` are forgotten, so
/// a sender inventing names cannot grow the state without bound.
const PRUNE_EVERY: u64 = 1024;

/// The most anomaly names tracked at once. Beyond it the least recently
/// reported (not running) are forgotten, down to 90 %: a sender inventing
/// names that a wildcard reflex matches costs bounded memory, and forgotten
/// names can run again only within the per-minute limits.
pub const MAX_TRACKED: usize = 10_000;

/// A run may start: its attempt number.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub attempt: u32,
}

impl Storm {
    pub fn new(limits: Limits) -> Storm {
        Storm {
            limits,
            anomalies: HashMap::new(),
            runs: VecDeque::new(),
            runs_by_reflex: HashMap::new(),
            reports: 0,
        }
    }

    /// Carries on from names saved before a restart; those quiet for
    /// `stable_after` are forgotten. Returns how many were restored.
    pub fn restore(&mut self, saved: Vec<(String, AnomalyState)>, now: Wall) -> usize {
        let stable_after = self.limits.stable_after;
        let before = self.anomalies.len();
        for (name, mut state) in saved {
            if state
                .last_report
                .is_some_and(|at| now.since(at) < stable_after)
            {
                state.set_running(false);
                self.anomalies.insert(name, state);
            }
        }
        self.anomalies.len() - before
    }

    /// Where `name` stands now.
    pub fn state(&self, name: &str) -> AnomalyState {
        self.anomalies.get(name).cloned().unwrap_or_default()
    }

    /// A report of `name`, matched by `reflex` (with its own per-minute
    /// limit, 0 for none): admitted, or suppressed with the count so far.
    pub fn report(
        &mut self,
        name: &str,
        reflex: &str,
        reflex_limit: u32,
        now: Wall,
    ) -> Result<Admitted, (Suppressed, u64)> {
        let limits = self.limits;
        self.reports += 1;
        if self.reports.is_multiple_of(PRUNE_EVERY) {
            self.anomalies.retain(|_, a| {
                a.running()
                    || a.last_report
                        .is_some_and(|at| now.since(at) < limits.stable_after)
            });
        }
        if self.anomalies.len() >= MAX_TRACKED && !self.anomalies.contains_key(name) {
            self.forget_least_recent();
        }
        let anomaly = self.anomalies.entry(name.to_owned()).or_default();
        if anomaly
            .last_report
            // Quiet only when it truly was: a report stamped in the future
            // (the clock was set back) never hands out fresh runs.
            .is_some_and(|at| now.since(at) >= limits.stable_after)
            && !anomaly.running()
        {
            *anomaly = AnomalyState::default();
        }
        anomaly.last_report = Some(now);
        let reason = if anomaly.running() {
            Some(Suppressed::Running)
        } else if anomaly
            .last_run
            // A run stamped more than a cooldown in the future (the clock
            // was set back) holds no longer than one cooldown.
            .is_some_and(|at| at.within(limits.cooldown, now))
        {
            Some(Suppressed::Cooldown)
        } else if anomaly.attempts >= limits.max_attempts {
            Some(if std::mem::replace(&mut anomaly.escalated, true) {
                Suppressed::AttemptsExhausted
            } else {
                Suppressed::Escalated
            })
        } else {
            None
        };
        if let Some(reason) = reason {
            anomaly.suppressed += 1;
            return Err((reason, anomaly.suppressed));
        }
        let minute = Duration::from_secs(60);
        let recent = |runs: &mut VecDeque<Wall>| {
            while runs.front().is_some_and(|at| !at.within(minute, now)) {
                runs.pop_front();
            }
            runs.len() as u32
        };
        let global_full =
            limits.max_runs_per_minute > 0 && recent(&mut self.runs) >= limits.max_runs_per_minute;
        let per_reflex = self.runs_by_reflex.entry(reflex.to_owned()).or_default();
        let reflex_full = reflex_limit > 0 && recent(per_reflex) >= reflex_limit;
        let anomaly = self.anomalies.entry(name.to_owned()).or_default();
        if global_full || reflex_full {
            anomaly.suppressed += 1;
            return Err((Suppressed::RateLimited, anomaly.suppressed));
        }
        self.runs.push_back(now);
        per_reflex.push_back(now);
        anomaly.set_running(true);
        anomaly.last_run = Some(now);
        anomaly.attempts += 1;
        Ok(Admitted {
            attempt: anomaly.attempts,
        })
    }

    /// How many names are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.anomalies.len()
    }

    /// Forgets the least recently reported names (not running) until 90 %
    /// of [`MAX_TRACKED`] are left; escalated names go last, so a flood of
    /// invented names cannot wipe out an escalation.
    fn forget_least_recent(&mut self) {
        let keep = MAX_TRACKED * 9 / 10;
        let excess = self.anomalies.len().saturating_sub(keep);
        // The oldest selected without sorting, and only their names cloned.
        let mut idle: Vec<(bool, Wall, &String)> = self
            .anomalies
            .iter()
            .filter(|(_, a)| !a.running())
            .map(|(name, a)| {
                let last = a.last_report.unwrap_or(Wall::from_millis(0));
                (a.escalated, last, name)
            })
            .collect();
        if excess < idle.len() {
            idle.select_nth_unstable(excess);
        }
        let forget: Vec<String> = idle
            .into_iter()
            .take(excess)
            .map(|(_, _, name)| name.clone())
            .collect();
        for name in forget {
            self.anomalies.remove(&name);
        }
    }

    /// The run of `name` ended.
    pub fn finished(&mut self, name: &str) {
        if let Some(anomaly) = self.anomalies.get_mut(name) {
            anomaly.set_running(false);
        }
    }

    /// The anomaly is over (a resolved alert): its attempts are forgotten.
    /// Returns whether there was anything to forget.
    pub fn resolved(&mut self, name: &str) -> bool {
        match self.anomalies.get_mut(name) {
            Some(anomaly) if !anomaly.running() => self.anomalies.remove(name).is_some(),
            Some(anomaly) => {
                anomaly.attempts = 0;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storm() -> Storm {
        Storm::new(Limits {
            cooldown: Duration::from_secs(60),
            max_attempts: 2,
            stable_after: Duration::from_secs(600),
            max_runs_per_minute: 0,
        })
    }

    #[test]
    fn a_hundred_reports_at_once_start_one_run() {
        let mut storm = storm();
        let now = Wall::from_millis(1_000_000);
        let results: Vec<_> = (0..100).map(|_| storm.report("x", "x", 0, now)).collect();
        assert_eq!(results[0], Ok(Admitted { attempt: 1 }));
        assert!(results[1..]
            .iter()
            .all(|r| matches!(r, Err((Suppressed::Running, _)))));
        assert_eq!(results[99], Err((Suppressed::Running, 99)));
    }

    #[test]
    fn cooldown_then_attempts_then_quiet_resets() {
        let mut storm = storm();
        let t0 = Wall::from_millis(1_000_000);
        storm.report("x", "x", 0, t0).unwrap();
        storm.finished("x");
        assert!(matches!(
            storm.report("x", "x", 0, t0 + Duration::from_secs(30)),
            Err((Suppressed::Cooldown, _))
        ));
        assert_eq!(
            storm.report("x", "x", 0, t0 + Duration::from_secs(61)),
            Ok(Admitted { attempt: 2 })
        );
        storm.finished("x");
        assert!(matches!(
            storm.report("x", "x", 0, t0 + Duration::from_secs(200)),
            Err((Suppressed::Escalated, _))
        ));
        assert!(matches!(
            storm.report("x", "x", 0, t0 + Duration::from_secs(201)),
            Err((Suppressed::AttemptsExhausted, _))
        ));
        assert_eq!(
            storm.report("x", "x", 0, t0 + Duration::from_secs(900)),
            Ok(Admitted { attempt: 1 })
        );
    }

    #[test]
    fn a_resolved_alert_forgets_the_attempts() {
        let mut storm = storm();
        let t0 = Wall::from_millis(1_000_000);
        storm.report("x", "x", 0, t0).unwrap();
        storm.finished("x");
        assert!(storm.resolved("x"));
        assert_eq!(
            storm.report("x", "x", 0, t0 + Duration::from_secs(1)),
            Ok(Admitted { attempt: 1 })
        );
    }

    #[test]
    fn names_quiet_past_stable_after_are_forgotten() {
        let mut storm = storm();
        let t0 = Wall::from_millis(1_000_000);
        for n in 0..(PRUNE_EVERY - 1) {
            let name = format!("made.up.{n}");
            let _ = storm.report(&name, "*", 0, t0);
            storm.finished(&name);
        }
        assert_eq!(storm.tracked() as u64, PRUNE_EVERY - 1);
        let _ = storm.report("fresh", "*", 0, t0 + Duration::from_secs(700));
        assert_eq!(storm.tracked(), 1);
    }

    #[test]
    fn runs_per_minute_are_limited_per_reflex() {
        let mut storm = storm();
        let now = Wall::from_millis(1_000_000);
        assert!(storm.report("a", "r", 1, now).is_ok());
        assert!(matches!(
            storm.report("b", "r", 1, now),
            Err((Suppressed::RateLimited, 1))
        ));
        assert!(storm.report("c", "other", 1, now).is_ok());
    }

    #[test]
    fn a_restored_storm_keeps_cooldown_and_attempts_and_forgets_quiet_names() {
        let t0 = Wall::from_millis(1_000_000);
        let mut before = storm();
        before.report("x", "x", 0, t0).unwrap();
        before.finished("x");
        let saved = vec![("x".to_owned(), before.state("x"))];

        let mut after = storm();
        assert_eq!(
            after.restore(saved.clone(), t0 + Duration::from_secs(10)),
            1
        );
        assert!(matches!(
            after.report("x", "x", 0, t0 + Duration::from_secs(30)),
            Err((Suppressed::Cooldown, _))
        ));
        assert_eq!(
            after.report("x", "x", 0, t0 + Duration::from_secs(61)),
            Ok(Admitted { attempt: 2 })
        );

        let mut much_later = storm();
        assert_eq!(much_later.restore(saved, t0 + Duration::from_secs(601)), 0);
    }

    #[test]
    fn a_clock_set_back_holds_a_cooldown_no_longer_than_the_cooldown() {
        let mut storm = storm();
        let t0 = Wall::from_millis(10_000_000);
        storm.report("x", "x", 0, t0).unwrap();
        storm.finished("x");
        let an_hour_back = Wall::from_millis(t0.millis() - 3_600_000);
        assert_eq!(
            storm.report("x", "x", 0, an_hour_back),
            Ok(Admitted { attempt: 2 }),
            "a run an hour in the future is not a cooldown, and no reason to start over"
        );
    }

    #[test]
    fn a_clock_set_back_empties_the_rate_window() {
        let mut storm = storm();
        let t0 = Wall::from_millis(10_000_000);
        assert!(storm.report("a", "r", 1, t0).is_ok());
        let an_hour_back = Wall::from_millis(t0.millis() - 3_600_000);
        assert!(storm.report("b", "r", 1, an_hour_back).is_ok());
    }

    #[test]
    fn invented_names_are_bounded_and_the_least_recent_forgotten_first() {
        let mut storm = storm();
        let t0 = Wall::from_millis(1_000_000);
        storm.report("old.but.real", "*", 0, t0).ok();
        storm.finished("old.but.real");
        for n in 0..(MAX_TRACKED + 5_000) {
            let at = t0 + Duration::from_millis(1 + n as u64);
            let name = format!("made.up.{n}");
            let _ = storm.report(&name, "*", 0, at);
            storm.finished(&name);
        }
        assert!(storm.tracked() <= MAX_TRACKED, "{}", storm.tracked());
        assert!(
            !storm.anomalies.contains_key("old.but.real"),
            "the least recent went first"
        );
        let newest = format!("made.up.{}", MAX_TRACKED + 4_999);
        assert!(storm.anomalies.contains_key(&newest));
    }

    #[test]
    fn a_flood_of_invented_names_does_not_wipe_out_an_escalation() {
        let mut storm = storm();
        let t0 = Wall::from_millis(1_000_000);
        let mut at = t0;
        // Run it to exhaustion, cooldowns passed, until it is escalated.
        while !storm.anomalies.get("real").is_some_and(|a| a.escalated) {
            at = at + Duration::from_secs(61);
            let _ = storm.report("real", "*", 0, at);
            storm.finished("real");
        }
        for n in 0..(MAX_TRACKED + 5_000) {
            let name = format!("made.up.{n}");
            let _ = storm.report(&name, "*", 0, at + Duration::from_millis(1 + n as u64));
            storm.finished(&name);
        }
        assert!(storm.tracked() <= MAX_TRACKED, "{}", storm.tracked());
        assert!(storm.anomalies.get("real").is_some_and(|a| a.escalated));
    }
}
