//! Wall-clock time, for every moment that must mean the same after a
//! restart: when an issue opened, when its next attempt is due, when an
//! anomaly last ran. A backoff due at 12:00:05 is due then, whenever healer
//! starts. Durations measured inside one run (deadlines, schedules) use
//! `Instant` instead and never reach this type.
//!
//! Shown to people and written to the event log as RFC 3339 in UTC with
//! milliseconds (`2026-11-23T10:00:05.250Z`); stored as milliseconds since
//! the Unix epoch.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A moment in wall-clock time, to the millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wall(u64);

impl Wall {
    /// Now, by the system clock.
    pub fn now() -> Wall {
        Wall::from(SystemTime::now())
    }

    /// The moment this many milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Wall {
        Wall(millis)
    }

    /// The Unix epoch: a moment that never comes again.
    pub const fn zero() -> Wall {
        Wall(0)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is; zero when it is not after it (the
    /// clock was set back), so a wait never becomes negative.
    pub fn since(self, earlier: Wall) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whether this is less than `span` away from `now`, before or after
    /// it. A moment recorded before the clock was set back lies in the
    /// future; this keeps it from holding anything for longer than `span`
    /// past the moment the clock reaches it again.
    pub fn within(self, span: Duration, now: Wall) -> bool {
        now.since(self) < span && self.since(now) < span
    }
}

impl std::ops::Add<Duration> for Wall {
    type Output = Wall;

    fn add(self, duration: Duration) -> Wall {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Wall(self.0.saturating_add(millis))
    }
}

impl From<SystemTime> for Wall {
    fn from(time: SystemTime) -> Wall {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Wall(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<Wall> for SystemTime {
    fn from(wall: Wall) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(wall.0)
    }
}

impl fmt::Display for Wall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(SystemTime::from(*self))
        )
    }
}

impl Serialize for Wall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Wall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Wall, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Wall::from)
            .map_err(|err| serde::de::Error::custom(format!("invalid time {text:?}: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let wall = Wall::from_millis(1_795_428_005_250);
        let text = serde_json::to_string(&wall).unwrap();
        assert_eq!(text, "\"2026-11-23T10:00:05.250Z\"");
        assert_eq!(serde_json::from_str::<Wall>(&text).unwrap(), wall);
    }

    #[test]
    fn within_holds_either_side_of_now() {
        let now = Wall::from_millis(10_000);
        let span = Duration::from_secs(2);
        assert!(Wall::from_millis(9_000).within(span, now));
        assert!(Wall::from_millis(11_000).within(span, now));
        assert!(!Wall::from_millis(7_000).within(span, now));
        assert!(!Wall::from_millis(13_000).within(span, now));
    }

    #[test]
    fn a_clock_set_back_gives_no_negative_wait() {
        let later = Wall::from_millis(2_000);
        assert_eq!(Wall::from_millis(1_000).since(later), Duration::ZERO);
        assert_eq!(later.since(Wall::from_millis(500)).as_millis(), 1_500);
    }
}
