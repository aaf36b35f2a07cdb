//! The points of a fixed-rate grid: a check's schedule, one point every
//! interval through an origin. The target's loop and the plugin worker
//! that makes a watched check both keep the check on the same grid (the
//! worker gets its origin on the clock both processes share), so both
//! count from here: which point is next, which passed with no check
//! begun, and when a check began late (the one rule the lateness metrics
//! and events count).

use std::time::{Duration, Instant};

/// A check that began more than this share of its interval after its
/// point began late.
pub const LATE_SHARE: u32 = 10;

/// The last point of the grid of `every` through `origin` at or before
/// `now` (`origin` itself before it).
pub fn at_or_before(origin: Instant, now: Instant, every: Duration) -> Instant {
    if now <= origin {
        return origin;
    }
    let every_ns = every.as_nanos().max(1);
    let steps = (now - origin).as_nanos() / every_ns;
    u64::try_from(steps * every_ns)
        .ok()
        .and_then(|ns| origin.checked_add(Duration::from_nanos(ns)))
        .unwrap_or(now)
}

/// The first point of the grid of `every` through `origin` at or after
/// `now`.
pub fn at_or_after(origin: Instant, now: Instant, every: Duration) -> Instant {
    let before = at_or_before(origin, now, every);
    if before >= now {
        return before;
    }
    before.checked_add(every).unwrap_or(now + every)
}

/// The points of a grid of `every` strictly between `due` and `next`
/// (both on it): passed with no check begun.
pub fn missed_between(due: impl Into<Instant>, next: impl Into<Instant>, every: Duration) -> u64 {
    let steps =
        next.into().saturating_duration_since(due.into()).as_nanos() / every.as_nanos().max(1);
    u64::try_from(steps.saturating_sub(1)).unwrap_or(u64::MAX)
}

/// How late a check began after its point `due`, and whether that is late
/// (more than [`LATE_SHARE`] of `every`).
pub fn lateness(
    due: impl Into<Instant>,
    began: impl Into<Instant>,
    every: Duration,
) -> (Duration, bool) {
    let late = began.into().saturating_duration_since(due.into());
    (late, late > every / LATE_SHARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_next_point_is_the_origin_until_it_passed_then_the_next_whole_interval() {
        let origin = Instant::now();
        let before = origin.checked_sub(SECOND).unwrap_or(origin);
        assert_eq!(at_or_after(origin, before, SECOND), origin);
        assert_eq!(at_or_after(origin, origin, SECOND), origin);
        let between = origin + Duration::from_millis(2_300);
        assert_eq!(at_or_after(origin, between, SECOND), origin + 3 * SECOND);
        assert_eq!(
            at_or_after(origin, origin + 2 * SECOND, SECOND),
            origin + 2 * SECOND
        );
    }

    #[test]
    fn the_last_point_passed_is_at_or_before_now() {
        let origin = Instant::now();
        let between = origin + Duration::from_millis(2_300);
        assert_eq!(at_or_before(origin, between, SECOND), origin + 2 * SECOND);
        assert_eq!(
            at_or_before(origin, origin + SECOND, SECOND),
            origin + SECOND
        );
        let before = origin.checked_sub(SECOND).unwrap_or(origin);
        assert_eq!(at_or_before(origin, before, SECOND), origin);
    }

    #[test]
    fn points_passed_between_two_checks_are_missed() {
        let due = Instant::now();
        assert_eq!(missed_between(due, due + SECOND, SECOND), 0);
        assert_eq!(missed_between(due, due + 3 * SECOND, SECOND), 2);
        assert_eq!(
            missed_between(due + SECOND, due, SECOND),
            0,
            "never negative"
        );
    }

    #[test]
    fn a_check_is_late_when_it_began_over_a_tenth_of_its_interval_after_its_point() {
        let due = Instant::now();
        let tenth = Duration::from_millis(100);
        assert_eq!(lateness(due, due + tenth, SECOND), (tenth, false));
        let over = tenth + Duration::from_millis(1);
        assert_eq!(lateness(due, due + over, SECOND), (over, true));
        assert_eq!(lateness(due + SECOND, due, SECOND), (Duration::ZERO, false));
    }
}
