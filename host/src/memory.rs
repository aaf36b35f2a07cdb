//! How the daemon's own process uses glibc's allocator. Left to its
//! defaults, glibc raises the size above which it maps a block of its own
//! to the largest block freed so far (up to 32 MiB), and each thread's
//! arena then keeps up to twice that of freed memory: after a worker's
//! 10 MiB answer (which healer bounds, reads and drops), every Tokio thread
//! that decoded one could hold ~20 MiB it no longer uses, so the same
//! answers left healer's RSS anywhere between 50 and 70 MB. A fixed
//! threshold keeps a block of a mebibyte or more a mapping of its own,
//! handed back to the kernel when freed; what is smaller is reused as
//! before.
//!
//! What is smaller still stays in the heap once freed: after ten hostile
//! answers of 2 MiB (decoded, refused, dropped), 9 MB of free pages were
//! left in it, found by calling `malloc_trim` by hand (anonymous memory
//! 13.2 → 4.3 MB). So whoever frees a large answer says so
//! ([`large_answer_freed`]) and the daemon trims ([`trim`], on a blocking
//! thread) at its next two ticks of a second: no trim, and no page
//! faulted back in, while answers stay small.

use std::sync::atomic::{AtomicU8, Ordering};

/// Blocks of this size and above are mapped on their own and unmapped
/// when freed.
pub const MAPPED_FROM: usize = 1 << 20;

/// Fixes glibc's mapping threshold at [`MAPPED_FROM`] (which also stops
/// the trim threshold from growing). Called once, before the runtime's
/// threads start. Elsewhere than on Linux's glibc there is nothing to do.
pub fn for_a_daemon() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(MAPPED_FROM).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` sets a parameter of the allocator under its
        // own lock (setting the allocator up first if need be, and
        // consolidating the main arena's free blocks): nothing of ours
        // is read or written, and it is called before any thread of ours
        // starts. It returns 0 when glibc refuses the value (a 32-bit
        // glibc refuses more than 512 KiB), which leaves the defaults: a
        // cost in memory, not in correctness, so nothing is said.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
    }
}

/// How many of the next calls of [`trim_asked`] say yes.
static TRIMS_ASKED: AtomicU8 = AtomicU8::new(0);

/// Says that a large answer (a worker's frame of more than 256 KiB, say)
/// was just freed: the next two calls of [`trim_asked`] say yes (what was
/// decoded from the answer may be freed only after the first).
pub fn large_answer_freed() {
    TRIMS_ASKED.store(2, Ordering::Relaxed);
}

/// Whether this allocator can hand free pages back on demand (glibc).
pub const CAN_TRIM: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Whether a large answer was freed lately, so that [`trim`] is worth
/// its while now (each call uses up one of the two it asked for).
pub fn trim_asked() -> bool {
    TRIMS_ASKED
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Hands the heap's free pages back to the kernel (glibc's
/// `malloc_trim`). It takes each arena's lock in turn: the daemon calls
/// it on a blocking thread, not on one of its runtime's.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` walks the allocator's arenas under their
        // own locks and advises the kernel that their free pages are not
        // needed; no memory in use is touched, and nothing of ours is
        // read or written.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_asked_twice_after_a_large_answer_was_freed_and_not_otherwise() {
        // Other tests of this binary may say so too: start from none.
        while trim_asked() {}
        assert!(!trim_asked(), "nothing freed since");
        large_answer_freed();
        assert!(trim_asked());
        assert!(trim_asked(), "and again, for what was freed after");
        assert!(!trim_asked(), "then no more");
        trim();
    }
}
