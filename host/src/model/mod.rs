//! Values that cross layers: written by one part of healer and read by
//! parts that must not depend on it. The event vocabulary carries them,
//! the store keeps them, the board and the API show them; none of them
//! decides anything.

mod alert;
mod anomaly;
mod pause;
mod plugin_record;
mod store_health;

pub use alert::AlertState;
pub use anomaly::{AnomalyState, Suppressed};
pub use pause::{Pause, MAX_PAUSE};
pub use plugin_record::{crashed_too_often, PluginRecord, Quarantine};
pub use store_health::StoreHealth;
