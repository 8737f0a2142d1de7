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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::ClientInfo;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::sync::watch;

type Key = (i32, Bytes);

/// The sessions that may be cancelled, by their cancel keys.
#[derive(Debug, Default)]
pub struct Cancels {
    sessions: Mutex<HashMap<Key, Arc<watch::Sender<u64>>>>,
}

/// A session's entry, removed when the session ends.
pub struct Registration {
    key: Key,
    cancels: Arc<Cancels>,
    counter: Arc<watch::Sender<u64>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.cancels.sessions.lock() {
            sessions.remove(&self.key);
        }
    }
}

impl Cancels {
    /// Registers the session with `pid` and `secret_key`.
    pub fn register(self: &Arc<Self>, pid: i32, secret_key: &SecretKey) -> Registration {
        let key = (pid, secret_key.to_bytes());
        let counter = Arc::new(watch::Sender::new(0));
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(key.clone(), counter.clone());
        }
        Registration {
            key,
            cancels: self.clone(),
            counter,
        }
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        let counter = self.sessions.lock().ok().and_then(|s| s.get(&key).cloned());
        // A wrong key is ignored without a word, as PostgreSQL does.
        if let Some(counter) = counter {
            counter.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// The cancel signal of the statement starting now in `client`'s
/// session: it fires on the first cancel request from now on.
pub fn for_statement(client: &(impl ClientInfo + ?Sized)) -> Option<watch::Receiver<u64>> {
    let registration = client.session_extensions().get::<Registration>()?;
    let mut receiver = registration.counter.subscribe();
    receiver.mark_unchanged();
    Some(receiver)
}
