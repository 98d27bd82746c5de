//! Hands the memory a closed lesson freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its arenas for reuse and by itself
//! returns only the top of each heap; a gateway whose lessons come and go
//! (media buffers, the feed, the core's state, freed on many threads'
//! arenas) then holds pages no lesson uses any more, and its resident
//! memory creeps up lesson after lesson although the live heap does not
//! (BENCHMARKS.md, "Soak": heaptrack saw a few MB live under 60–70 MB
//! resident). `malloc_trim(0)` gives every whole free page of every arena
//! back (`madvise`). It walks the free lists, so it runs on the blocking
//! pool, never on a runtime worker, and requests arriving while one is
//! queued share it (500 lessons closing at once trim once or twice, not
//! 500 times).
//!
//! This is the gateway's one `unsafe` call, allowed in this module only
//! (the crate denies `unsafe_code`), because the soak's bound (memory
//! within 10 % of where it began) did not hold without it; the release
//! figures before and after are in BENCHMARKS.md.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

/// A trim is queued and has not started. Process-wide, as the allocator is.
static QUEUED: AtomicBool = AtomicBool::new(false);

/// Asks for the allocator's free memory to be returned to the operating
/// system soon, off the async runtime's workers. Never waits.
pub(super) fn release_free_memory_soon() {
    if QUEUED.swap(true, Ordering::AcqRel) {
        return;
    }
    let trim = || {
        // Cleared first: memory freed from now on gets a trim of its own.
        QUEUED.store(false, Ordering::Release);
        release_free_memory();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(trim);
        }
        Err(_) => QUEUED.store(false, Ordering::Release),
    }
}

/// Returns the free memory of every malloc arena to the operating system
/// (glibc on Linux; nothing to do elsewhere). Blocks for the walk.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes a padding size and touches only the
        // allocator's own free lists, under the allocator's own locks; glibc
        // documents it as safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
