//! Giving the memory a thread freed back to the system.
//!
//! The server allocates with mimalloc, whose heaps are per thread. A page
//! freed by its own thread is returned to the system (after a short delay)
//! only when that thread next allocates; a page holding blocks freed by
//! *other* threads, as when a connection's thread drops what a query thread
//! built, waits for its owner to collect them. A query thread that goes
//! idle right after a heavy statement allocates nothing more, so without a
//! collect its last pages stay resident for as long as the server is quiet.
//!
//! [`collect_now_and_then`] is meant for the moment a runtime thread parks
//! (tokio's `on_thread_park`): it asks mimalloc to collect the calling
//! thread's heap, at most once per [`INTERVAL`] of that thread's life, so a
//! busy thread that parks between every request pays for it rarely, and a
//! thread that ran a long statement collects when it parks after it.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The least time between two collects of one thread's heap.
pub const INTERVAL: Duration = Duration::from_millis(50);

thread_local! {
    /// When the calling thread last collected.
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Returns the calling thread's free pages to the system, unless it did
/// less than [`INTERVAL`] ago. Returns whether it collected.
pub fn collect_now_and_then() -> bool {
    let now = Instant::now();
    let due = LAST_COLLECT
        .try_with(|last| {
            let due = last.get().is_none_or(|t| now.duration_since(t) >= INTERVAL);
            if due {
                last.set(Some(now));
            }
            due
        })
        // A thread being torn down has nothing left to collect for.
        .unwrap_or(false);
    if due {
        collect();
    }
    due
}

/// Asks mimalloc to free what the calling thread's heap no longer uses
/// (`mi_collect(false)`: not the aggressive, slower form).
fn collect() {
    // SAFETY: `mi_collect` takes no pointers and keeps no state of the
    // caller's; it may be called at any time from any thread, and only
    // walks the calling thread's own heap (and abandoned segments). When
    // mimalloc is not the global allocator it collects mimalloc's unused
    // heap, which is harmless.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(false);
    }
}

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e`
/// (`include/mimalloc.h`) of version 2, the one the server links (`mimalloc`
/// with feature `v2`), and of version 3; `libmimalloc-sys` declares no
/// constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed pages back to the system when they are freed
/// instead of 10 ms later. A delayed purge happens only when the heap is
/// next used, so a thread that parks right after a heavy statement (its
/// collect on parking finds the purge not yet due) keeps those pages for
/// as long as it stays idle. At the `vn` benchmark's scale the server
/// stayed at 1.9 GB resident after its queries, and 1.1 GB with this; its
/// peak went from 1,965 to 1,826 MiB, and no query got slower. Call it
/// first thing in `main`.
pub fn purge_at_once() {
    // SAFETY: `mi_option_set` takes an option number and a value, no
    // pointers; mimalloc reads its options at each use, so setting one
    // from any thread at any time is allowed.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_is_set_to_none() {
        // The option number is mimalloc's purge delay: its default is
        // 10 ms in version 2 (the server's) and 1,000 in version 3 (what
        // this crate links when built alone), the same place in both.
        #[allow(unsafe_code)]
        let before = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert!(before == 10 || before == 1000, "purge delay {before}");
        purge_at_once();
        #[allow(unsafe_code)]
        let after = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(after, 0);
    }

    #[test]
    fn collects_at_most_once_per_interval_per_thread() {
        assert!(collect_now_and_then(), "the first call collects");
        assert!(!collect_now_and_then(), "a second one right after does not");
        // Another thread has its own clock.
        let other = std::thread::spawn(collect_now_and_then);
        assert!(matches!(other.join(), Ok(true)));
        std::thread::sleep(INTERVAL + Duration::from_millis(5));
        assert!(
            collect_now_and_then(),
            "after the interval it collects again"
        );
    }
}
