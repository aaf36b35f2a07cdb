//! How the store stands, as the intake (its backlog), `/healthz` and
//! `/metrics` read it: a window onto the store that does not need the store
//! itself, so readers below it in the stack can hold one.

use std::time::Duration;

/// A reading of the store's health: whether it can write, and how far
/// behind the event stream it is.
pub trait StoreHealth: Send + Sync {
    /// Whether the database cannot be written (healing goes on from
    /// memory; the store retries).
    fn degraded(&self) -> bool;

    /// History rows (events) not yet written to the database: held in
    /// memory or being written now. Cheap: no lock.
    fn pending(&self) -> usize;

    /// How long the oldest event not yet written has waited.
    fn lag(&self) -> Duration;
}
