//! One thread that stops statements planning inline once their stop fires.
//!
//! A statement is planned in its connection's task (all but the long
//! queries, see `session::planned`), and DataFusion's planning never
//! yields: while it runs, that task cannot see its timeout, a cancel
//! request or a hang-up. So every statement that may stop registers here
//! while its handler runs; every `TICK` this thread asks each registered
//! statement whether its stop fired or its client hung up
//! (`cancel::Cancels::hung_up`), and if so sets its flag. The handler
//! is polled under `recursive::stop_when(flag)` (vendor/recursive), so
//! DataFusion's next recursion unwinds and `session::until` answers the
//! client. Registering is a lock and a map insert; nothing is woken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How often the thread looks.
const TICK: Duration = Duration::from_millis(25);

type Fired = Box<dyn Fn() -> bool + Send>;

#[derive(Default)]
struct Watched {
    statements: Mutex<HashMap<u64, (Fired, Arc<AtomicBool>)>>,
    next: AtomicU64,
}

/// The registered statements, and the thread that watches them (started
/// with the first registration). `None` if the thread could not start:
/// statements then stop only where they yield.
fn watched() -> Option<&'static Arc<Watched>> {
    static WATCHED: OnceLock<Option<Arc<Watched>>> = OnceLock::new();
    WATCHED
        .get_or_init(|| {
            let watched = Arc::new(Watched::default());
            let looked_at = watched.clone();
            let started = std::thread::Builder::new()
                .name("baocao-watchdog".to_string())
                .spawn(move || {
                    loop {
                        std::thread::sleep(TICK);
                        if let Ok(statements) = looked_at.statements.lock() {
                            for (fired, flag) in statements.values() {
                                if !flag.load(Ordering::Relaxed) && fired() {
                                    flag.store(true, Ordering::Relaxed);
                                    tracing::debug!(
                                        "the watchdog set a statement's stop flag: its stop fired"
                                    );
                                }
                            }
                        }
                    }
                });
            match started {
                Ok(_) => Some(watched),
                Err(e) => {
                    tracing::warn!("cannot start the statement watchdog: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// A statement's registration, removed when dropped.
pub(super) struct Registration(Option<u64>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let (Some(id), Some(watched)) = (self.0, watched())
            && let Ok(mut statements) = watched.statements.lock()
        {
            statements.remove(&id);
        }
    }
}

/// Sets `flag` once `fired` says the statement's stop fired, until the
/// registration is dropped. `fired` runs on the watchdog's thread, under
/// its lock: it must only look (a clock, an atomic, a peek at a socket
/// that cannot block).
pub(super) fn watch(
    fired: impl Fn() -> bool + Send + 'static,
    flag: Arc<AtomicBool>,
) -> Registration {
    let Some(watched) = watched() else {
        return Registration(None);
    };
    let id = watched.next.fetch_add(1, Ordering::Relaxed);
    match watched.statements.lock() {
        Ok(mut statements) => {
            statements.insert(id, (Box::new(fired), flag));
            Registration(Some(id))
        }
        Err(_) => Registration(None),
    }
}
