//! How often a report that starts nothing (an anomaly no reflex matches) is
//! recorded. Each is answered; but a flood of them must not become a flood
//! of log lines, events and history rows. Per name, the first is recorded
//! and then at most one per [`EVERY`]; for all names together at most
//! [`AT_MOST`] per [`EVERY`]. Each one recorded says how many reports (of
//! any name) were left out since the one before. Pure, like `storm`, with
//! bounded memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The window of both limits.
pub const EVERY: Duration = Duration::from_secs(10);
/// Reports recorded per window, all names together.
pub const AT_MOST: u32 = 100;
/// Names remembered; beyond it the memory starts over.
const NAMES: usize = 1_000;

/// The limiter.
#[derive(Debug)]
pub struct Quiet {
    /// When each name was last recorded.
    names: HashMap<String, Instant>,
    window: Instant,
    recorded: u32,
    /// Reports left out since one was recorded.
    left_out: u64,
}

impl Quiet {
    pub fn new(now: Instant) -> Quiet {
        Quiet {
            names: HashMap::new(),
            window: now,
            recorded: 0,
            left_out: 0,
        }
    }

    /// A report of `name`: `Some(left_out)` when it is to be recorded (with
    /// how many reports were left out before it), `None` when it is only
    /// counted.
    pub fn record(&mut self, name: &str, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= EVERY {
            self.window = now;
            self.recorded = 0;
        }
        if self.names.len() >= NAMES && !self.names.contains_key(name) {
            self.names.clear();
        }
        let due = self
            .names
            .get(name)
            .is_none_or(|last| now.duration_since(*last) >= EVERY);
        if !due || self.recorded >= AT_MOST {
            self.left_out += 1;
            return None;
        }
        self.names.insert(name.to_owned(), now);
        self.recorded += 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_is_recorded_once_per_window_with_the_count_left_out() {
        let t0 = Instant::now();
        let mut quiet = Quiet::new(t0);
        assert_eq!(quiet.record("a", t0), Some(0));
        for _ in 0..5 {
            assert_eq!(quiet.record("a", t0), None);
        }
        assert_eq!(quiet.record("a", t0 + EVERY), Some(5));
    }

    #[test]
    fn invented_names_are_recorded_at_most_a_hundred_per_window() {
        let t0 = Instant::now();
        let mut quiet = Quiet::new(t0);
        let recorded = (0..10_000)
            .filter(|n| quiet.record(&format!("made.up.{n}"), t0).is_some())
            .count();
        assert_eq!(recorded, AT_MOST as usize);
        assert!(quiet.names.len() <= NAMES);
        assert_eq!(
            quiet.record("next", t0 + EVERY),
            Some(10_000 - u64::from(AT_MOST)),
            "each left out counted once"
        );
    }
}
