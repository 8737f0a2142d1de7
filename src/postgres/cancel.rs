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
//! (`Cancels::hang_up`), so that a statement being planned in the
//! connection's task, which the task's abort cannot reach until planning
//! yields, stops too (see `watchdog`). The hang-up is seen by the watchdog,
//! which peeks at the sockets of the connections whose statements it
//! watches (`Cancels::hung_up`): between statements the connection's task
//! reads the socket itself and sees the end. No runtime polls a second
//! handle on the socket: it would be woken by every message the client
//! sends.

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
    /// A second handle on each connection's socket, to peek at, and the
    /// connection's task, by the client's address.
    connections: Mutex<HashMap<SocketAddr, (std::net::TcpStream, tokio::task::AbortHandle)>>,
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

    /// Watches the connection from `peer` for its hang-up (`hung_up`)
    /// while the returned guard lives: `socket` is a second handle on its
    /// socket, `task` the task that serves it.
    pub fn watch_connection(
        self: &Arc<Self>,
        peer: SocketAddr,
        socket: std::net::TcpStream,
        task: tokio::task::AbortHandle,
    ) -> ConnectionWatch {
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(peer, (socket, task));
        }
        ConnectionWatch {
            peer,
            cancels: self.clone(),
        }
    }

    /// Whether the client at `peer` has hung up: a peek at its socket finds
    /// its end (or an error). If so, its session is cancelled (`hang_up`)
    /// and its connection's task aborted, which ends a statement wherever it
    /// yields. Never blocks: the socket is non-blocking, and with no bytes
    /// waiting the peek answers at once.
    pub fn hung_up(&self, peer: SocketAddr) -> bool {
        let mut byte = [0u8; 1];
        let gone = match self.connections.lock() {
            Ok(connections) => match connections.get(&peer) {
                Some((socket, task)) => match socket.peek(&mut byte) {
                    // Bytes wait for the connection to read them (a
                    // pipelined message), or none yet: still there.
                    Ok(n) if n > 0 => false,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                    _ => {
                        task.abort();
                        true
                    }
                },
                None => false,
            },
            Err(_) => false,
        };
        if gone {
            tracing::info!(%peer, "client went away; its statement is cancelled");
            self.hang_up(peer);
        }
        gone
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

/// A connection's watch (`Cancels::watch_connection`), removed when dropped.
pub struct ConnectionWatch {
    peer: SocketAddr,
    cancels: Arc<Cancels>,
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.cancels.connections.lock() {
            connections.remove(&self.peer);
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
pub fn for_statement(client: &(impl ClientInfo + ?Sized)) -> Option<StatementCancel> {
    let registration = client.session_extensions().get::<Registration>()?;
    let mut receiver = registration.counter.subscribe();
    receiver.mark_unchanged();
    Some(StatementCancel {
        receiver,
        cancels: registration.cancels.clone(),
        peer: registration.peer,
    })
}

/// A statement's cancel signal, and where to look for its client's hang-up.
#[derive(Clone)]
pub struct StatementCancel {
    pub receiver: watch::Receiver<u64>,
    cancels: Arc<Cancels>,
    peer: SocketAddr,
}

impl StatementCancel {
    /// Whether the client hung up (see `Cancels::hung_up`; a system call).
    pub fn hung_up(&self) -> bool {
        self.cancels.hung_up(self.peer)
    }
}
