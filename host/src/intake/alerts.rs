//! Alertmanager's side of the intake, pure like `storm`: which alert
//! occurrences were already acted on (Alertmanager re-sends a group on
//! every retry and repeat interval; an occurrence is a fingerprint plus its
//! `startsAt`), and which fingerprints are firing under each alert name, so
//! an anomaly resolves only when every alert of its name has.
//!
//! Occurrences are remembered for a day, in wall-clock time, and survive a
//! restart through the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::clock::Wall;

/// How long an acted-on occurrence is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(86_400);

/// Alertmanager alerts seen.
#[derive(Debug, Default)]
pub struct Alerts {
    /// (fingerprint, startsAt) acted on, and when.
    acted: HashMap<(String, String), Wall>,
    /// Fingerprints firing under each alert name.
    firing: HashMap<String, HashSet<String>>,
}

/// One occurrence acted on, as saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acted {
    pub fingerprint: String,
    pub starts_at: String,
    pub at: Wall,
}

impl Alerts {
    /// Carries on from what was saved before a restart.
    pub fn restore(&mut self, acted: Vec<Acted>, firing: Vec<(String, String)>, now: Wall) {
        for occurrence in acted {
            if now.since(occurrence.at) < REMEMBER_FOR {
                self.acted.insert(
                    (occurrence.fingerprint, occurrence.starts_at),
                    occurrence.at,
                );
            }
        }
        for (name, fingerprint) in firing {
            self.firing.entry(name).or_default().insert(fingerprint);
        }
    }

    /// Whether this occurrence was already acted on.
    pub fn already_acted_on(&self, fingerprint: &str, starts_at: &str) -> bool {
        self.acted
            .contains_key(&(fingerprint.to_owned(), starts_at.to_owned()))
    }

    /// Notes a firing alert; remembers its occurrence only when it was
    /// acted on, so one suppressed by a storm limit runs on a re-send.
    pub fn firing(
        &mut self,
        name: &str,
        fingerprint: &str,
        starts_at: &str,
        acted_on: bool,
        now: Wall,
    ) {
        self.firing
            .entry(name.to_owned())
            .or_default()
            .insert(fingerprint.to_owned());
        if acted_on {
            self.acted.retain(|_, at| now.since(*at) < REMEMBER_FOR);
            self.acted
                .insert((fingerprint.to_owned(), starts_at.to_owned()), now);
        }
    }

    /// An alert of `name` resolved. Returns whether that resolves the
    /// anomaly: this fingerprint was seen firing and no other alert of the
    /// name still is.
    pub fn resolved(&mut self, name: &str, fingerprint: &str) -> bool {
        let Some(fingerprints) = self.firing.get_mut(name) else {
            return false;
        };
        if !fingerprints.remove(fingerprint) || !fingerprints.is_empty() {
            return false;
        }
        self.firing.remove(name);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occurrence_acted_on_is_a_duplicate_for_a_day() {
        let now = Wall::from_millis(1_000_000);
        let mut alerts = Alerts::default();
        alerts.firing("HighErrorRate", "f1", "10:00", true, now);
        assert!(alerts.already_acted_on("f1", "10:00"));
        assert!(!alerts.already_acted_on("f1", "11:00"), "a new occurrence");

        let mut restarted = Alerts::default();
        let saved = Acted {
            fingerprint: "f1".into(),
            starts_at: "10:00".into(),
            at: now,
        };
        restarted.restore(vec![saved.clone()], vec![], now + Duration::from_secs(60));
        assert!(restarted.already_acted_on("f1", "10:00"));
        let mut next_day = Alerts::default();
        next_day.restore(vec![saved], vec![], now + REMEMBER_FOR);
        assert!(!next_day.already_acted_on("f1", "10:00"));
    }

    #[test]
    fn a_suppressed_occurrence_is_not_a_duplicate() {
        let mut alerts = Alerts::default();
        alerts.firing("X", "f1", "10:00", false, Wall::from_millis(0));
        assert!(!alerts.already_acted_on("f1", "10:00"));
    }

    #[test]
    fn a_name_resolves_when_every_fingerprint_seen_firing_has() {
        let now = Wall::from_millis(0);
        let mut alerts = Alerts::default();
        alerts.firing("X", "a", "t", true, now);
        alerts.firing("X", "b", "t", true, now);
        assert!(!alerts.resolved("X", "a"));
        assert!(!alerts.resolved("X", "never-seen"));
        assert!(alerts.resolved("X", "b"));
        assert!(!alerts.resolved("X", "b"), "already resolved");
        assert!(!alerts.resolved("Unknown", "z"));
    }
}
