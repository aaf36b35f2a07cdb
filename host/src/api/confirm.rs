//! The other side of `confirm = K`: a member of the fleet asked to check
//! a fleet target it does not own, from where it is, once, with no
//! recovery (`POST /api/v1/fleet/confirm {"target": NAME}`). The check
//! runs through fresh instances of the target's plugins, as `healer once`
//! runs one; at most [`AT_ONCE`] at a time, the rest refused.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::Target;
use crate::engine;
use crate::events::Events;
use crate::fleet::Seen;
use crate::plugins::Catalog;

/// Confirmations checked at once; more are refused (503).
pub const AT_ONCE: usize = 4;

/// What a member needs to check a fleet target for another.
pub struct Confirming {
    /// This member's name.
    pub member: String,
    /// The config's fleet targets.
    pub targets: Vec<Target>,
    /// The plugins they run on.
    pub catalog: Catalog,
    /// Observations kept per check (the diagnosers' history).
    pub history: usize,
    pub events: Events,
    pub slots: Arc<Semaphore>,
}

/// Why a confirmation was not checked.
pub enum NotChecked {
    /// The config has no such fleet target.
    Unknown(String),
    /// As many confirmations as it takes are running.
    Busy,
    /// Its plugins could not be made.
    Failed(String),
}

impl Confirming {
    /// Checks `name` once, here: what this member sees.
    pub async fn check(&self, name: &str) -> Result<Seen, NotChecked> {
        let target = self
            .targets
            .iter()
            .find(|target| target.name == name)
            .ok_or_else(|| {
                NotChecked::Unknown(format!(
                    "no fleet target named {name:?} in this member's config"
                ))
            })?;
        let _slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| NotChecked::Busy)?;
        let runner = engine::build_target(target, &self.catalog)
            .await
            .map_err(NotChecked::Failed)?;
        let looked = engine::once(vec![runner], false, self.history, self.events.clone())
            .await
            .into_iter()
            .next()
            .ok_or_else(|| NotChecked::Failed("the check did not run".to_owned()))?;
        Ok(Seen {
            member: self.member.clone(),
            status: looked.seen.status,
            summary: looked.seen.summary,
        })
    }
}
