//! Cancel requests: each client gets pgrouter's own `BackendKeyData`; a `CancelRequest` carrying it
//! is forwarded to whichever server connection the session is using at that moment. A cancel
//! that arrives while the session's request waits for a server connection (a pool checkout, a
//! new replica connection) cancels that request before it is sent.
//!
//! The registry is touched when a session starts or ends and when a cancel arrives, never per
//! message, so a short std mutex section (never held across `.await`) is the right tool. The
//! session marks a request waiting for a connection with an atomic, not a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Where a cancel for a session must go right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey {
    /// The server connection's address.
    pub addr: SocketAddr,
    /// Its `BackendKeyData` process id.
    pub process_id: i32,
    /// Its `BackendKeyData` secret.
    pub secret_key: i32,
}

/// A session's current cancel target, updated by the session when it switches server connection.
pub type CancelSlot = Arc<CancelTarget>;

/// No request is waiting for a server connection.
const SENT: u8 = 0;
/// A request waits for a server connection: a cancel now cancels it.
const WAITING: u8 = 1;
/// A cancel arrived while the request waited.
const CANCELLED: u8 = 2;

/// Where a session's cancel requests go.
#[derive(Debug, Default)]
pub struct CancelTarget {
    /// The server connection the session is using.
    server: Mutex<Option<ServerKey>>,
    /// [`SENT`], [`WAITING`] or [`CANCELLED`].
    waiting: AtomicU8,
}

impl CancelTarget {
    /// Points cancels at a server connection (`None`: the session holds none).
    pub fn point_at(&self, key: Option<ServerKey>) {
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// The session holds a request it cannot send before it has a server connection.
    pub fn request_waits(&self) {
        self.waiting.store(WAITING, Ordering::SeqCst);
    }

    /// The session is about to send the waiting request: true when a cancel arrived meanwhile
    /// (the request must then be answered with 57014 and not sent).
    pub fn request_sent(&self) -> bool {
        self.waiting.swap(SENT, Ordering::SeqCst) == CANCELLED
    }

    /// A cancel request for this session: cancels a waiting request (`None`: nothing to
    /// forward), or names the server connection to forward it to.
    fn cancel(&self) -> Option<ServerKey> {
        if self
            .waiting
            .compare_exchange(WAITING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return None;
        }
        *self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Entry {
    secret_key: i32,
    slot: CancelSlot,
}

/// Client keys → current server keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// The smallest process id pgrouter gives clients: above every Linux pid.
const FIRST_CLIENT_PID: u32 = 1 << 22;

impl CancelRegistry {
    /// Allocates a unique client key and registers `slot` under it. The returned guard
    /// unregisters on drop.
    pub fn register(self: &Arc<Self>, slot: CancelSlot) -> Registration {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Positive process ids, like a real server's, but never one a server backend can
            // have: Linux pids stay below 2^22 (`pid_max` is at most 4194304). A client that
            // passes its "backend pid" to pg_terminate_backend() therefore hits no other
            // session's backend.
            let process_id = ((rand::random::<u32>() >> 1) | FIRST_CLIENT_PID) as i32;
            if entries.contains_key(&process_id) {
                continue;
            }
            let secret_key = rand::random::<i32>();
            entries.insert(process_id, Entry { secret_key, slot });
            return Registration {
                registry: Arc::clone(self),
                process_id,
                secret_key,
            };
        }
    }

    /// Cancels for a client key: the server key to forward the cancel to, if the key is valid
    /// and the session is on a server. A request still waiting for a server connection is
    /// marked cancelled instead (and `None` returned).
    pub fn cancel(&self, process_id: i32, secret_key: i32) -> Option<ServerKey> {
        let slot = {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.get(&process_id)?;
            if entry.secret_key != secret_key {
                return None;
            }
            Arc::clone(&entry.slot)
        };
        slot.cancel()
    }

    fn unregister(&self, process_id: i32) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(&process_id);
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's registration; dropping it removes the key.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    /// The process id given to the client.
    pub process_id: i32,
    /// The secret given to the client.
    pub secret_key: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(self.process_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServerKey {
        ServerKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: 7,
            secret_key: 9,
        }
    }

    #[test]
    fn register_cancel_unregister() {
        let reg = Arc::new(CancelRegistry::default());
        let slot: CancelSlot = Arc::default();
        let r = reg.register(Arc::clone(&slot));
        assert!(r.process_id >= FIRST_CLIENT_PID as i32);
        assert_eq!(
            reg.cancel(r.process_id, r.secret_key),
            None,
            "idle: nothing to cancel"
        );
        slot.point_at(Some(key()));
        assert_eq!(reg.cancel(r.process_id, r.secret_key), Some(key()));
        assert_eq!(reg.cancel(r.process_id, r.secret_key.wrapping_add(1)), None);
        let pid = r.process_id;
        drop(r);
        assert_eq!(reg.cancel(pid, 0), None);
        assert!(reg.is_empty());
    }

    #[test]
    fn a_cancel_while_a_request_waits_cancels_that_request() {
        let reg = Arc::new(CancelRegistry::default());
        let slot: CancelSlot = Arc::default();
        let r = reg.register(Arc::clone(&slot));
        slot.point_at(Some(key()));
        // Sent without a cancel.
        slot.request_waits();
        assert!(!slot.request_sent());
        // A cancel while it waits: nothing is forwarded, the request is cancelled once.
        slot.request_waits();
        assert_eq!(reg.cancel(r.process_id, r.secret_key), None);
        assert!(slot.request_sent());
        assert!(!slot.request_sent());
        // Once sent, cancels go to the server again.
        assert_eq!(reg.cancel(r.process_id, r.secret_key), Some(key()));
        // A wrong secret cancels nothing, waiting or not.
        slot.request_waits();
        assert_eq!(reg.cancel(r.process_id, r.secret_key.wrapping_add(1)), None);
        assert!(!slot.request_sent());
    }
}
