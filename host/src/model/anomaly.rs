//! Where an anomaly name stands in the intake's storm control, and why a
//! report did not start a run: what intake events carry, the store keeps
//! and the alert sinks read.

use serde::{Deserialize, Serialize};

use crate::clock::Wall;

/// Why a report did not start a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppressed {
    /// Its workflow is running.
    Running,
    /// It ran less than `cooldown` ago.
    Cooldown,
    /// It has run `max_attempts` times without a quiet period.
    AttemptsExhausted,
    /// As `AttemptsExhausted`, reported once, the first time: the moment
    /// the anomaly is escalated.
    Escalated,
    /// Too many runs in the last minute.
    RateLimited,
}

impl Suppressed {
    /// The reason as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Running => "running",
            Suppressed::Cooldown => "cooldown",
            Suppressed::AttemptsExhausted | Suppressed::Escalated => "attempts exhausted",
            Suppressed::RateLimited => "rate limited",
        }
    }
}

/// Where one anomaly name stands: what events carry and the store keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyState {
    /// Runs since it was last quiet for `stable_after` (or resolved).
    pub attempts: u32,
    /// When its workflow last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Wall>,
    /// When it was last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Wall>,
    /// Reports counted, not run.
    pub suppressed: u64,
    /// Its attempts are exhausted and that was reported.
    pub escalated: bool,
    /// Its workflow is running now (never true after a restart).
    #[serde(skip)]
    running: bool,
}

impl AnomalyState {
    /// Whether its workflow is running now.
    pub(crate) fn running(&self) -> bool {
        self.running
    }

    /// Marks its workflow as running, or not.
    pub(crate) fn set_running(&mut self, running: bool) {
        self.running = running;
    }
}
