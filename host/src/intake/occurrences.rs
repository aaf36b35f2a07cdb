//! Alertmanager's side of the intake, pure like `storm`: which alert
//! occurrences were already acted on (Alertmanager re-sends a group on
//! every retry and repeat interval; an occurrence is a fingerprint plus its
//! `startsAt`), and which fingerprints are firing under each alert name, so
//! an anomaly resolves only when every alert of its name has.
//!
//! Occurrences are remembered for a day, in wall-clock time, and survive a
//! restart through the store. Both are bounded: at most [`MAX_TRACKED`]
//! occurrences and as many firing fingerprints; beyond that the oldest are
//! forgotten first (down to 90 %).

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::Wall;

/// How long an acted-on occurrence is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(86_400);

/// The most occurrences, and the most firing fingerprints, kept.
pub const MAX_TRACKED: usize = 10_000;

/// Alertmanager alerts seen.
#[derive(Debug, Default)]
pub struct Occurrences {
    /// (fingerprint, startsAt) acted on, and when.
    acted: HashMap<(String, String), Wall>,
    /// Fingerprints firing under each alert name, and when last heard of.
    firing: HashMap<String, HashMap<String, Wall>>,
    /// How many fingerprints `firing` holds.
    firing_count: usize,
}

/// One occurrence acted on, as saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acted {
    pub fingerprint: String,
    pub starts_at: String,
    pub at: Wall,
}

impl Occurrences {
    /// Carries on from what was saved before a restart.
    pub fn restore(&mut self, acted: Vec<Acted>, firing: Vec<(String, String, Wall)>, now: Wall) {
        for occurrence in acted {
            if now.since(occurrence.at) < REMEMBER_FOR {
                self.acted.insert(
                    (occurrence.fingerprint, occurrence.starts_at),
                    occurrence.at,
                );
            }
        }
        for (name, fingerprint, seen_at) in firing {
            self.note_firing(name, fingerprint, seen_at);
        }
        self.bound(now);
    }

    /// Whether this occurrence was already acted on.
    pub fn already_acted_on(&self, fingerprint: &str, starts_at: &str) -> bool {
        self.acted
            .contains_key(&(fingerprint.to_owned(), starts_at.to_owned()))
    }

    /// Notes a firing alert whose name a reflex matches; remembers its
    /// occurrence only when it was acted on, so one suppressed by a storm
    /// limit runs on a re-send.
    pub fn firing(
        &mut self,
        name: &str,
        fingerprint: &str,
        starts_at: &str,
        acted_on: bool,
        now: Wall,
    ) {
        self.note_firing(name.to_owned(), fingerprint.to_owned(), now);
        if acted_on {
            self.acted
                .insert((fingerprint.to_owned(), starts_at.to_owned()), now);
        }
        self.bound(now);
    }

    fn note_firing(&mut self, name: String, fingerprint: String, seen_at: Wall) {
        let fingerprints = self.firing.entry(name).or_default();
        if fingerprints.insert(fingerprint, seen_at).is_none() {
            self.firing_count += 1;
        }
    }

    /// Forgets occurrences past their day, then the oldest of each beyond
    /// the caps.
    fn bound(&mut self, now: Wall) {
        if self.acted.len() > MAX_TRACKED {
            self.acted.retain(|_, at| now.since(*at) < REMEMBER_FOR);
            let mut oldest: Vec<(Wall, (String, String))> =
                self.acted.iter().map(|(k, at)| (*at, k.clone())).collect();
            oldest.sort_unstable();
            let excess = self.acted.len().saturating_sub(MAX_TRACKED * 9 / 10);
            for (_, key) in oldest.into_iter().take(excess) {
                self.acted.remove(&key);
            }
        }
        if self.firing_count > MAX_TRACKED {
            let mut oldest: Vec<(Wall, String, String)> = self
                .firing
                .iter()
                .flat_map(|(name, fps)| {
                    fps.iter()
                        .map(move |(fp, at)| (*at, name.clone(), fp.clone()))
                })
                .collect();
            oldest.sort_unstable();
            let excess = self.firing_count.saturating_sub(MAX_TRACKED * 9 / 10);
            for (_, name, fingerprint) in oldest.into_iter().take(excess) {
                if let Some(fingerprints) = self.firing.get_mut(&name) {
                    fingerprints.remove(&fingerprint);
                    if fingerprints.is_empty() {
                        self.firing.remove(&name);
                    }
                }
            }
            self.firing_count = self.firing.values().map(HashMap::len).sum();
        }
    }

    /// An alert of `name` resolved. `None` when this fingerprint was never
    /// seen firing (nothing to do, nothing to record); else whether that
    /// resolves the anomaly: no other alert of the name still fires.
    pub fn resolved(&mut self, name: &str, fingerprint: &str) -> Option<bool> {
        let fingerprints = self.firing.get_mut(name)?;
        fingerprints.remove(fingerprint)?;
        self.firing_count -= 1;
        if !fingerprints.is_empty() {
            return Some(false);
        }
        self.firing.remove(name);
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_occurrence_acted_on_is_a_duplicate_for_a_day() {
        let now = Wall::from_millis(1_000_000);
        let mut alerts = Occurrences::default();
        alerts.firing("HighErrorRate", "f1", "10:00", true, now);
        assert!(alerts.already_acted_on("f1", "10:00"));
        assert!(!alerts.already_acted_on("f1", "11:00"), "a new occurrence");

        let mut restarted = Occurrences::default();
        let saved = Acted {
            fingerprint: "f1".into(),
            starts_at: "10:00".into(),
            at: now,
        };
        restarted.restore(vec![saved.clone()], vec![], now + Duration::from_secs(60));
        assert!(restarted.already_acted_on("f1", "10:00"));
        let mut next_day = Occurrences::default();
        next_day.restore(vec![saved], vec![], now + REMEMBER_FOR);
        assert!(!next_day.already_acted_on("f1", "10:00"));
    }

    #[test]
    fn a_suppressed_occurrence_is_not_a_duplicate() {
        let mut alerts = Occurrences::default();
        alerts.firing("X", "f1", "10:00", false, Wall::from_millis(0));
        assert!(!alerts.already_acted_on("f1", "10:00"));
    }

    #[test]
    fn a_name_resolves_when_every_fingerprint_seen_firing_has() {
        let now = Wall::from_millis(0);
        let mut alerts = Occurrences::default();
        alerts.firing("X", "a", "t", true, now);
        alerts.firing("X", "b", "t", true, now);
        assert_eq!(alerts.resolved("X", "a"), Some(false));
        assert_eq!(alerts.resolved("X", "never-seen"), None);
        assert_eq!(alerts.resolved("X", "b"), Some(true));
        assert_eq!(alerts.resolved("X", "b"), None, "already resolved");
        assert_eq!(alerts.resolved("Unknown", "z"), None);
        assert_eq!(alerts.firing_count, 0);
    }

    #[test]
    fn fingerprints_and_occurrences_are_bounded_oldest_first() {
        let t0 = Wall::from_millis(1_000_000);
        let mut alerts = Occurrences::default();
        for n in 0..(MAX_TRACKED + 3_000) {
            let at = t0 + Duration::from_millis(n as u64);
            alerts.firing("X", &format!("fp{n}"), "t", true, at);
        }
        assert!(alerts.acted.len() <= MAX_TRACKED);
        assert!(alerts.firing_count <= MAX_TRACKED);
        assert_eq!(alerts.firing_count, alerts.firing["X"].len());
        assert!(
            !alerts.already_acted_on("fp0", "t"),
            "the oldest went first"
        );
        let newest = format!("fp{}", MAX_TRACKED + 2_999);
        assert!(alerts.already_acted_on(&newest, "t"));
    }
}
