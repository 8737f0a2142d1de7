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
//!
//! The collect is forced (`mi_collect(true)`): mimalloc purges a freed page
//! only a delay (10 ms) after it was freed, at the heap's next use, so an
//! unforced collect right as the thread parks finds a heavy statement's
//! last pages not yet due, and the parked thread never comes back to them.
//! At the `vn` benchmark's scale the server stayed at 1.9 GB resident
//! after its queries that way, 1.2 GB with the forced collect. Purging
//! every page as it is freed (a purge delay of 0) kept as little, but
//! made reading a commit 15–20% slower (`benches/run-reporting-bench`'s
//! commit-to-visible on copies of one warehouse).

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

/// Asks mimalloc to free what the calling thread's heap no longer uses and
/// give the pages back to the system now (`mi_collect(true)`, the forced
/// form: see the crate's documentation).
fn collect() {
    // SAFETY: `mi_collect` takes no pointers and keeps no state of the
    // caller's; it may be called at any time from any thread, and only
    // walks the calling thread's own heap (and abandoned segments). When
    // mimalloc is not the global allocator it collects mimalloc's unused
    // heap, which is harmless.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
