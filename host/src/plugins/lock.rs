//! Locking a mutex whatever a panicking holder left behind: what the
//! worker machinery keeps behind a mutex (calls in flight, an outbox's
//! books, an output allowance, what a worker holds between calls) stays
//! usable after a panic.

use std::sync::{Mutex, MutexGuard};

/// `mutex`, locked, even if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
