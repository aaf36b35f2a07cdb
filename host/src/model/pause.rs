//! A target's maintenance pause: what the engine holds recoveries for, the
//! board shows, events carry and the store keeps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Wall;

/// The longest pause: its end is never further away than this, also
/// once the clock was set back after it began.
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A target in maintenance: checks go on, recoveries do not, until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When it ends by itself.
    pub until: Wall,
    /// Why, as the operator said.
    pub reason: String,
    /// When it began.
    pub since: Wall,
}

impl Pause {
    /// Whether it still holds at `now`.
    pub fn holds(&self, now: Wall) -> bool {
        now < self.until
    }

    /// This pause ending no later than [`MAX_PAUSE`] from `now`, when it
    /// ends later (the clock was set back since it began, or a saved one
    /// was written so); `None` when it is within the limit.
    pub fn shortened(&self, now: Wall) -> Option<Pause> {
        let latest = now + MAX_PAUSE;
        (self.until > latest).then(|| Pause {
            until: latest,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_ending_past_the_longest_pause_is_shortened_to_it() {
        let now = Wall::from_millis(1_800_000_000_000);
        let pause = |until: Wall| Pause {
            until,
            reason: "maintenance".to_owned(),
            since: now,
        };
        assert_eq!(pause(now + MAX_PAUSE).shortened(now), None);
        // Paused for 30 days, then the clock was set back a year.
        let set_back = Wall::from_millis(now.millis() - 365 * 86_400_000);
        let shorter = pause(now + MAX_PAUSE)
            .shortened(set_back)
            .expect("too far away now");
        assert_eq!(shorter.until, set_back + MAX_PAUSE);
        assert_eq!(shorter.reason, "maintenance");
    }
}
