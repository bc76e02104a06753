//! The allocator's tuning for a process that runs for months.
//!
//! glibc's `malloc` serves a block of 128 KiB or more with its own `mmap`, given back to the
//! system when freed, but each such free raises that threshold (up to 32 MiB): after the
//! first large record, every later one comes from the heap, which keeps what it grew to. A
//! burst of 400 KiB records then leaves the resident size 27 to 50 MiB higher from one run to
//! the next (`tests/paused_services.rs`, with an 8 MiB `memory_budget`). A fixed threshold
//! keeps large buffers (records, librdkafka's fetches) out of the heap, so the resident size
//! follows what is held: 36 MiB in each of three runs of the same test.

/// Fixes glibc's `mmap` threshold at 128 KiB; nothing on other C libraries.
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only changes the allocator's tuning, and is called once, first thing
    // in `run`, before any thread of the daemon starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
