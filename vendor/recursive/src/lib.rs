//! Rust has a problematic relationship with recursive functions, because functions that recurse
//! deeply can overflow the stack, crashing your program. This crate makes it easy to remedy
//! this problem by marking (indirectly) recursive functions as such:
//! ```rust
//! use recursive::recursive;
//!
//! #[recursive]
//! fn sum(nums: &[u64]) -> u64 {
//!     if let Some((head, tail)) = nums.split_first() {
//!         head + sum(tail)
//!     } else {
//!         0
//!     }
//! }
//! ```
//!
//! The way this prevents stack overflows is by checking the size of the remaining stack at the
//! start of each call to your function. If this size is under a boundary set by
//! [`set_minimum_stack_size`] (by default 128 KiB), a new stack is allocated and execution
//! continues on that stack. This new stack's size is set using [`set_stack_allocation_size`], which
//! is 2 MiB by default.
//!
//! This crate works by wrapping your function body in a call to [`stacker::maybe_grow`]. If this
//! crate is not flexible enough for your needs consider using [`stacker`] directly yourself.
//!
//! ## What are the downsides?
//!
//! This crate is **not** zero cost, but it is also not limited to simple tail recursion or direct
//! recursion. However, in most cases the stack size test is very fast and almost always succeeds
//! without needing to allocate. If your recursive algorithm is very performance-sensitive I would
//! suggest rewriting it to an iterative version regardless.
//!
//! This crate only supports those platforms that [`stacker`] supports. The Rust compiler itself
//! uses [`stacker`], so the platform you're compiling on should always be fine, but for more
//! obscure targets see its documentation.
//!
//! ## Which functions should I mark as `#[recursive]`?
//!
//! Any function that directly calls itself should be marked as `#[recursive]`, unless you know for
//! certain that the stack is sufficiently large for any inputs that function will be called with.
//! If you are feeding untrusted input into a recursive function you should always mark it as
//! `#[recursive]`.
//!
//! It is not necessary to mark every single function that can indirectly recurse as `#[recursive]`.
//! As long as every possible cycle of function calls includes at least one function marked
//! `#[recursive]` you will be protected against stack overflows due to recursion.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

// These are referred to only by the procedural macro.
#[doc(hidden)]
pub mod __impl {
    #[allow(unused)]
    pub use stacker;
}

/// Marks a function to use an automatically growing segmented stack.
///
/// See the [crate docs](crate) for details.
pub use recursive_proc_macro_impl::recursive;

static MINIMUM_STACK_SIZE: AtomicUsize = AtomicUsize::new(128 * 1024);
static STACK_ALLOC_SIZE: AtomicUsize = AtomicUsize::new(2 * 1024 * 1024);

/// This sets the minimum stack size that [`recursive`] requires.
///
/// If a function tagged with `#[recursive]` is called when the remaining stack size is less than
/// this value a new stack gets allocated.
///
/// The default value if this function is never called is 128 KiB.
pub fn set_minimum_stack_size(bytes: usize) {
    MINIMUM_STACK_SIZE.store(bytes, Ordering::Relaxed);
}

/// Returns the value set by [`set_minimum_stack_size`].
///
/// baocao's patch: every `#[recursive]` function calls this on entry, so it
/// is also where work on a thread given a stop flag ([`stop_when`]) ends
/// once the flag is set.
pub fn get_minimum_stack_size() -> usize {
    stop_if_asked();
    MINIMUM_STACK_SIZE.load(Ordering::Relaxed)
}

// baocao's patch: a way to stop a long recursive computation from outside,
// as PostgreSQL's CHECK_FOR_INTERRUPTS stops a backend's planner. DataFusion
// marks its planner's, optimiser's and tree walks' recursive functions
// `#[recursive]`, so they all pass here, many times a millisecond.

thread_local! {
    static STOP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// The payload of the unwind that [`stop_when`]'s flag starts, to tell it
/// from a panic (`payload.is::<Stopped>()`). It is raised with
/// `std::panic::resume_unwind`, which does not run the panic hook.
#[derive(Debug)]
pub struct Stopped;

/// Until the returned guard is dropped, the first `#[recursive]` function
/// this thread enters after `flag` is set unwinds with a [`Stopped`]
/// payload; catch it with `std::panic::catch_unwind` around the work.
///
/// Only for work whose state is thrown away when it stops: the unwind may
/// start in any `#[recursive]` function, and what the work shares with
/// others (a `std::sync::Mutex` it holds) sees it as a panic. Nothing is
/// raised while the thread is already unwinding.
pub fn stop_when(flag: Arc<AtomicBool>) -> StopGuard {
    let previous = STOP.with(|stop| stop.borrow_mut().replace(flag));
    StopGuard { previous }
}

/// Restores the thread's previous stop flag (none, usually) when dropped.
pub struct StopGuard {
    previous: Option<Arc<AtomicBool>>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = STOP.try_with(|stop| *stop.borrow_mut() = previous);
    }
}

#[inline]
fn stop_if_asked() {
    let asked = STOP
        .try_with(|stop| {
            stop.try_borrow()
                .ok()
                .and_then(|flag| flag.as_ref().map(|f| f.load(Ordering::Relaxed)))
                .unwrap_or(false)
        })
        .unwrap_or(false);
    if asked && !std::thread::panicking() {
        std::panic::resume_unwind(Box::new(Stopped));
    }
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    #[recursive]
    fn depth(n: u64, flag: &AtomicBool) -> u64 {
        if n == 1_000 {
            flag.store(true, Ordering::Relaxed);
        }
        if n == 0 {
            0
        } else {
            1 + depth(n - 1, flag)
        }
    }

    #[test]
    fn a_set_flag_stops_the_recursion_and_only_on_its_thread() {
        let flag = Arc::new(AtomicBool::new(false));
        let stopped = {
            let _guard = stop_when(flag.clone());
            std::panic::catch_unwind(|| depth(10_000, &flag))
        };
        assert!(stopped.is_err_and(|payload| payload.is::<Stopped>()));
        // The guard is gone: the same work runs to its end.
        let flag = AtomicBool::new(false);
        assert_eq!(depth(10_000, &flag), 10_000);
    }
}

/// When a new stack gets allocated it will get allocated with this size.
///
/// The default value if this function is never called is 2 MiB.
pub fn set_stack_allocation_size(bytes: usize) {
    STACK_ALLOC_SIZE.store(bytes, Ordering::Relaxed);
}

/// Returns the value set by [`set_stack_allocation_size`].
pub fn get_stack_allocation_size() -> usize {
    STACK_ALLOC_SIZE.load(Ordering::Relaxed)
}
