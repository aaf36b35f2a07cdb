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
