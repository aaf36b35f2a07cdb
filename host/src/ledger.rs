//! The ledger of outcomes: what each recoverer's attempts came to, per
//! (target, finding kind, recoverer). Every attempt is judged afterwards
//! ([`Verdict`]): *healed* when its issue resolved and stayed resolved for
//! the target's `stable_after`, *not healed* when it failed, another
//! attempt was needed, the issue came back or was escalated, *unknown*
//! when healer cannot tell (the recoverer timed out, healer was not
//! running for the whole `stable_after`). What an attempt is waiting for is
//! its [`Judging`], carried by its issue (so a restart keeps it).
//!
//! From the tallies come the two decisions that learn: the order of a
//! target's ladder under `order = "learned"` ([`Ledger::learned_order`])
//! and whether a recoverer below its `min_success` only proposes
//! ([`Outcomes::below`]). Pure, like `issues` and `facts`: no I/O, no
//! clock of its own, bounded (at most [`MAX_OUTCOMES`] rows; the least
//! recently judged goes first).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Wall;

/// The most rows (target, kind, recoverer) the ledger keeps.
pub const MAX_OUTCOMES: usize = 10_000;

/// How many of the latest times to healthy a row keeps for its median.
pub const TIMES_KEPT: usize = 32;

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Its issue resolved and stayed resolved for `stable_after`.
    Healed,
    /// It failed, or its issue needed another attempt, came back within
    /// `stable_after` or was escalated.
    NotHealed,
    /// healer cannot tell.
    Unknown,
}

impl Verdict {
    /// Its name in events and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healed => "healed",
            Verdict::NotHealed => "not_healed",
            Verdict::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt whose recoverer said it succeeded, waiting for its verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judging {
    /// The recoverer that succeeded.
    pub recoverer: String,
    /// The attempt's number.
    pub attempt: u32,
    /// When the attempt started.
    pub started_at: Wall,
    /// When its issue resolved, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Wall>,
}

impl Judging {
    /// From the attempt's start to its issue's resolution, once resolved.
    pub fn time_to_healthy(&self) -> Option<Duration> {
        self.resolved_at.map(|at| at.since(self.started_at))
    }
}

/// One row of the ledger: a recoverer's attempts on one kind of issue of
/// one target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Attempts judged.
    pub tries: u32,
    /// Of them, healed.
    pub healed: u32,
    /// Of them, not healed.
    pub not_healed: u32,
    /// Of them, unknown.
    pub unknown: u32,
    /// The latest verdict.
    pub last: Option<Verdict>,
    /// When it was given.
    pub last_at: Option<Wall>,
    /// The latest times to healthy of healed attempts, in milliseconds,
    /// oldest first (at most [`TIMES_KEPT`]).
    #[serde(default)]
    pub times_ms: VecDeque<u64>,
}

impl Outcomes {
    /// Counts one verdict.
    fn count(&mut self, verdict: Verdict, time_to_healthy: Option<Duration>, now: Wall) {
        self.tries = self.tries.saturating_add(1);
        match verdict {
            Verdict::Healed => {
                self.healed = self.healed.saturating_add(1);
                if let Some(took) = time_to_healthy {
                    if self.times_ms.len() >= TIMES_KEPT {
                        self.times_ms.pop_front();
                    }
                    self.times_ms
                        .push_back(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                }
            }
            Verdict::NotHealed => self.not_healed = self.not_healed.saturating_add(1),
            Verdict::Unknown => self.unknown = self.unknown.saturating_add(1),
        }
        self.last = Some(verdict);
        self.last_at = Some(now);
    }

    /// The median of the latest times to healthy, in milliseconds.
    pub fn median_time_to_healthy_ms(&self) -> Option<u64> {
        let mut times: Vec<u64> = self.times_ms.iter().copied().collect();
        times.sort_unstable();
        match times.len() {
            0 => None,
            n if n % 2 == 1 => Some(times[n / 2]),
            n => Some((times[n / 2 - 1] + times[n / 2]) / 2),
        }
    }

    /// How often it healed, of the attempts healer could judge (unknown
    /// verdicts are neither for nor against); `None` before any.
    pub fn success(&self) -> Option<f64> {
        let judged = self.healed + self.not_healed;
        (judged > 0).then(|| f64::from(self.healed) / f64::from(judged))
    }

    /// Whether, after at least `after` judged tries, it heals less often
    /// than `min_success` (a fraction).
    pub fn below(&self, min_success: f64, after: u32) -> bool {
        self.healed + self.not_healed >= after.max(1)
            && self.success().is_some_and(|rate| rate < min_success)
    }
}

/// Which row: (target, kind, recoverer).
pub type Key = (String, String, String);

/// One row as the API and `healer outcomes` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub target: String,
    pub kind: String,
    pub recoverer: String,
    pub tries: u32,
    pub healed: u32,
    pub not_healed: u32,
    pub unknown: u32,
    pub median_time_to_healthy_ms: Option<u64>,
    pub last_outcome: Option<Verdict>,
    pub last_at: Option<Wall>,
}

/// A verdict counted: the row as it now stands, and the row let go to
/// make room (the store forgets it too).
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    pub outcomes: Outcomes,
    pub forgot: Option<Key>,
}

/// Every row.
#[derive(Debug, Default)]
pub struct Ledger {
    rows: BTreeMap<Key, Outcomes>,
}

impl Ledger {
    /// Counts a verdict on `recoverer`'s attempt at `kind` of `target`.
    pub fn count(
        &mut self,
        key: Key,
        verdict: Verdict,
        time_to_healthy: Option<Duration>,
        now: Wall,
    ) -> Counted {
        let mut forgot = None;
        if self.rows.len() >= MAX_OUTCOMES && !self.rows.contains_key(&key) {
            forgot = self
                .rows
                .iter()
                .min_by_key(|(_, row)| row.last_at)
                .map(|(key, _)| key.clone());
            if let Some(old) = &forgot {
                self.rows.remove(old);
            }
        }
        let row = self.rows.entry(key).or_default();
        row.count(verdict, time_to_healthy, now);
        Counted {
            outcomes: row.clone(),
            forgot,
        }
    }

    /// The row of `recoverer` on `kind` of `target`, if any attempt was judged.
    pub fn get(&self, target: &str, kind: &str, recoverer: &str) -> Option<&Outcomes> {
        self.rows
            .get(&(target.to_owned(), kind.to_owned(), recoverer.to_owned()))
    }

    /// The recoverers of `ladder` (names, in the config's order) in the
    /// order learned for `kind` of `target`: while any has fewer than
    /// `after` tries, those first (in the config's order, so each gets its
    /// tries; an unknown verdict counts as a try here, so one that always
    /// times out does not stay first for ever); then the one that heals
    /// most often (of its judged tries) first, ties in the config's order.
    /// Returns positions in `ladder`.
    pub fn learned_order(
        &self,
        target: &str,
        kind: &str,
        ladder: &[&str],
        after: u32,
    ) -> Vec<usize> {
        let judged = |name: &str| {
            self.get(target, kind, name)
                .map_or((0, None), |row| (row.tries, row.success()))
        };
        let mut order: Vec<usize> = (0..ladder.len()).collect();
        // Stable: equal keys keep the config's order.
        order.sort_by(|&a, &b| {
            let (tries_a, rate_a) = judged(ladder[a]);
            let (tries_b, rate_b) = judged(ladder[b]);
            let learning_a = tries_a < after;
            let learning_b = tries_b < after;
            learning_b
                .cmp(&learning_a)
                .then_with(|| match (learning_a, learning_b) {
                    (false, false) => rate_b
                        .unwrap_or(0.0)
                        .partial_cmp(&rate_a.unwrap_or(0.0))
                        .unwrap_or(std::cmp::Ordering::Equal),
                    _ => std::cmp::Ordering::Equal,
                })
        });
        order
    }

    /// Carries on from the rows saved before a restart.
    pub fn restore(&mut self, saved: Vec<(Key, Outcomes)>) -> usize {
        let count = saved.len();
        self.rows.extend(saved);
        count
    }

    /// Every row, by target, kind and recoverer.
    pub fn rows(&self) -> Vec<Row> {
        self.rows
            .iter()
            .map(|((target, kind, recoverer), row)| Row {
                target: target.clone(),
                kind: kind.clone(),
                recoverer: recoverer.clone(),
                tries: row.tries,
                healed: row.healed,
                not_healed: row.not_healed,
                unknown: row.unknown,
                median_time_to_healthy_ms: row.median_time_to_healthy_ms(),
                last_outcome: row.last,
                last_at: row.last_at,
            })
            .collect()
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(recoverer: &str) -> Key {
        (
            "app".to_owned(),
            "process.not_running".to_owned(),
            recoverer.to_owned(),
        )
    }

    #[test]
    fn a_row_counts_each_verdict_and_keeps_the_median_time_to_healthy() {
        let mut ledger = Ledger::default();
        let now = Wall::from_millis(1_000);
        for ms in [300, 100, 200] {
            ledger.count(
                key("restart"),
                Verdict::Healed,
                Some(Duration::from_millis(ms)),
                now,
            );
        }
        ledger.count(key("restart"), Verdict::NotHealed, None, now);
        let counted = ledger.count(key("restart"), Verdict::Unknown, None, now);
        let row = counted.outcomes;
        assert_eq!(
            (row.tries, row.healed, row.not_healed, row.unknown),
            (5, 3, 1, 1)
        );
        assert_eq!(row.median_time_to_healthy_ms(), Some(200));
        assert_eq!(row.success(), Some(0.75), "unknown counts neither way");
        assert_eq!(row.last, Some(Verdict::Unknown));
    }

    #[test]
    fn learned_order_gives_each_recoverer_its_tries_then_puts_the_one_that_heals_first() {
        let mut ledger = Ledger::default();
        let now = Wall::from_millis(1);
        let ladder = ["never", "heals"];
        let order =
            |ledger: &Ledger| ledger.learned_order("app", "process.not_running", &ladder, 2);
        assert_eq!(
            order(&ledger),
            vec![0, 1],
            "nothing learned: the config's order"
        );
        ledger.count(key("never"), Verdict::NotHealed, None, now);
        ledger.count(key("never"), Verdict::NotHealed, None, now);
        assert_eq!(order(&ledger), vec![1, 0], "the untried one gets its tries");
        ledger.count(key("heals"), Verdict::Healed, None, now);
        assert_eq!(order(&ledger), vec![1, 0]);
        ledger.count(key("heals"), Verdict::Healed, None, now);
        assert_eq!(
            order(&ledger),
            vec![1, 0],
            "both tried: the one that heals first"
        );
        ledger.count(key("never"), Verdict::Healed, None, now);
        ledger.count(key("never"), Verdict::Healed, None, now);
        ledger.count(key("never"), Verdict::Healed, None, now);
        ledger.count(key("never"), Verdict::Healed, None, now);
        ledger.count(key("heals"), Verdict::NotHealed, None, now);
        ledger.count(key("heals"), Verdict::NotHealed, None, now);
        assert_eq!(order(&ledger), vec![0, 1], "4/6 beats 2/4");
    }

    #[test]
    fn a_recoverer_that_only_times_out_stops_being_tried_first_once_it_had_its_tries() {
        let mut ledger = Ledger::default();
        let now = Wall::from_millis(1);
        let ladder = ["hangs", "heals"];
        ledger.count(key("hangs"), Verdict::Unknown, None, now);
        ledger.count(key("hangs"), Verdict::Unknown, None, now);
        assert_eq!(
            ledger.learned_order("app", "process.not_running", &ladder, 2),
            vec![1, 0],
            "its tries had, the other one gets its own"
        );
    }

    #[test]
    fn below_min_success_only_after_enough_judged_tries() {
        let mut row = Outcomes::default();
        let now = Wall::from_millis(1);
        row.count(Verdict::NotHealed, None, now);
        assert!(!row.below(0.5, 3), "one try says little");
        row.count(Verdict::Unknown, None, now);
        row.count(Verdict::Unknown, None, now);
        assert!(
            !row.below(0.5, 3),
            "unknown verdicts are not tries against it"
        );
        row.count(Verdict::NotHealed, None, now);
        row.count(Verdict::Healed, None, now);
        assert!(row.below(0.5, 3), "1 of 3 is below a half");
        assert!(!row.below(0.3, 3));
    }

    #[test]
    fn the_ledger_holds_at_most_its_rows_and_lets_the_least_recent_go() {
        let mut ledger = Ledger::default();
        for i in 0..MAX_OUTCOMES {
            let at = Wall::from_millis(10 + i as u64);
            ledger.count(
                ("t".into(), format!("k{i}"), "r".into()),
                Verdict::Healed,
                None,
                at,
            );
        }
        let counted = ledger.count(key("new"), Verdict::Healed, None, Wall::from_millis(1));
        assert_eq!(counted.forgot, Some(("t".into(), "k0".into(), "r".into())));
        assert_eq!(ledger.len(), MAX_OUTCOMES);
    }
}
