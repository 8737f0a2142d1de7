//! CancelRequest (psql's Ctrl-C): a second connection names a session by
//! its process id and secret key, and the statement that session is
//! running stops with SQLSTATE 57014.
//!
//! pgwire's own handle cancels only the planning of a statement (it races
//! the cancel against `do_query`), while baocao computes rows as they are
//! sent. So each session has a counter that a cancel request increments;
//! a statement notes the counter when it starts and stops — planning or
//! sending rows — when it changes. A cancel that arrives between statements
//! changes nothing that runs later, as in PostgreSQL.
//!
//! A client that hangs up cancels its session's statement the same way
//! (`Cancels::hang_up`, from the server's watch on the socket), so that a
//! statement being planned in the connection's task, which the task's
//! abort cannot reach until planning yields, stops too (see `watchdog`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::ClientInfo;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::sync::watch;

type Key = (i32, Bytes);

/// The sessions that may be cancelled, by their cancel keys and by their
/// clients' addresses.
#[derive(Debug, Default)]
pub struct Cancels {
    sessions: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_key: HashMap<Key, Arc<watch::Sender<u64>>>,
    by_peer: HashMap<SocketAddr, Arc<watch::Sender<u64>>>,
}

/// A session's entry, removed when the session ends.
pub struct Registration {
    key: Key,
    peer: SocketAddr,
    cancels: Arc<Cancels>,
    counter: Arc<watch::Sender<u64>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.cancels.sessions.lock() {
            sessions.by_key.remove(&self.key);
            if sessions
                .by_peer
                .get(&self.peer)
                .is_some_and(|c| Arc::ptr_eq(c, &self.counter))
            {
                sessions.by_peer.remove(&self.peer);
            }
        }
    }
}

impl Cancels {
    /// Registers the session with `pid` and `secret_key`, whose client
    /// connects from `peer`.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        secret_key: &SecretKey,
        peer: SocketAddr,
    ) -> Registration {
        let key = (pid, secret_key.to_bytes());
        let counter = Arc::new(watch::Sender::new(0));
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.by_key.insert(key.clone(), counter.clone());
            sessions.by_peer.insert(peer, counter.clone());
        }
        Registration {
            key,
            peer,
            cancels: self.clone(),
            counter,
        }
    }

    /// The client at `peer` hung up: its session's statement, if one runs,
    /// is cancelled, and so is any it starts later (`gone`).
    pub fn hang_up(&self, peer: SocketAddr) {
        let counter = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.by_peer.get(&peer).cloned());
        if let Some(counter) = counter {
            counter.send_modify(|n| *n = n.wrapping_add(1) | GONE);
        }
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        let counter = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.by_key.get(&key).cloned());
        // A wrong key is ignored without a word, as PostgreSQL does.
        if let Some(counter) = counter {
            counter.send_modify(|n| *n = (n.wrapping_add(1) & !GONE) | (*n & GONE));
        }
    }
}

/// The bit of a session's counter that says its client hung up.
const GONE: u64 = 1 << 63;

/// Whether the client of the session whose counter `receiver` watches has
/// hung up.
pub fn gone(receiver: &watch::Receiver<u64>) -> bool {
    *receiver.borrow() & GONE != 0
}

/// The cancel signal of the statement starting now in `client`'s
/// session: it fires on the first cancel request from now on.
pub fn for_statement(client: &(impl ClientInfo + ?Sized)) -> Option<watch::Receiver<u64>> {
    let registration = client.session_extensions().get::<Registration>()?;
    let mut receiver = registration.counter.subscribe();
    receiver.mark_unchanged();
    Some(receiver)
}
