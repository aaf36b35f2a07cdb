//! A member's session: its etcd lease and, on this machine's monotonic
//! clock, until when it may act. Pure, the clock passed in.
//!
//! etcd counts a lease's time from when it *receives* a renewal; this
//! member counts from when it *sent* the renewal that was acknowledged,
//! which is earlier, so its deadline falls before the server's expiry
//! (as long as the two clocks run at about the same rate). etcd's Go
//! client counts from the reply instead (`client/v3/lease.go`), which can
//! let a slow reply carry a member past the server's expiry. No new
//! claim is made in the last second before the deadline ([`MARGIN`]):
//! a claim must leave its recovery time to start.

use std::time::{Duration, Instant};

/// No claim is made this close to the deadline.
pub const MARGIN: Duration = Duration::from_secs(1);

/// A lease and what the latest acknowledged renewal says of it.
#[derive(Clone, Debug)]
pub struct Session {
    /// etcd's lease id.
    pub lease: i64,
    /// The lease's time to live as granted.
    pub ttl: Duration,
    /// Until when this member may act on what it owns.
    deadline: Instant,
}

impl Session {
    /// A lease granted with `ttl`, asked for at `sent`.
    pub fn granted(lease: i64, ttl: Duration, sent: Instant) -> Session {
        Session {
            lease,
            ttl,
            deadline: sent + ttl,
        }
    }

    /// A renewal sent at `sent` was acknowledged with `ttl` left.
    pub fn renewed(&mut self, sent: Instant, ttl: Duration) {
        self.deadline = self.deadline.max(sent + ttl);
    }

    /// Whether it still holds at `now` (the shards may be acted on).
    pub fn holds(&self, now: Instant) -> bool {
        now < self.deadline
    }

    /// Whether a claim may be made at `now`: more than [`MARGIN`] before
    /// the deadline (less, when the lease itself is that short: a third
    /// of it).
    pub fn may_claim(&self, now: Instant) -> bool {
        now + MARGIN.min(self.ttl / 3) < self.deadline
    }

    /// Time left at `now`.
    pub fn left(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_counts_from_when_the_renewal_was_sent() {
        let start = Instant::now();
        let mut session = Session::granted(7, Duration::from_secs(5), start);
        // A renewal sent at 1 s, acknowledged at 3 s: the deadline is 6 s,
        // not 8 s.
        session.renewed(start + Duration::from_secs(1), Duration::from_secs(5));
        assert!(session.holds(start + Duration::from_millis(5_999)));
        assert!(!session.holds(start + Duration::from_secs(6)));
        assert_eq!(
            session.left(start + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_late_acknowledgement_of_an_older_renewal_never_shortens_it() {
        let start = Instant::now();
        let mut session = Session::granted(7, Duration::from_secs(5), start);
        session.renewed(start + Duration::from_secs(2), Duration::from_secs(5));
        session.renewed(start + Duration::from_secs(1), Duration::from_secs(5));
        assert!(session.holds(start + Duration::from_millis(6_500)));
    }

    #[test]
    fn no_claim_in_the_last_second() {
        let start = Instant::now();
        let session = Session::granted(7, Duration::from_secs(5), start);
        assert!(session.may_claim(start + Duration::from_millis(3_900)));
        assert!(!session.may_claim(start + Duration::from_millis(4_000)));
        assert!(session.holds(start + Duration::from_millis(4_500)));
        let short = Session::granted(7, Duration::from_secs(2), start);
        assert!(short.may_claim(start + Duration::from_millis(1_300)));
        assert!(!short.may_claim(start + Duration::from_millis(1_400)));
    }
}
