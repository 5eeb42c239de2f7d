//! Cancel requests: each client gets pgrouter's own `BackendKeyData`; a `CancelRequest` carrying it
//! is forwarded to whichever server connection the session is using at that moment.
//!
//! The registry is touched when a session starts or ends and when a cancel arrives, never per
//! message, so a short std mutex section (never held across `.await`) is the right tool.

use std::collections::HashMap;
use std::net::SocketAddr;
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
pub type CancelSlot = Arc<Mutex<Option<ServerKey>>>;

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

    /// The server key to cancel for a client key, if the key is valid and the session is busy
    /// on a server.
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Option<ServerKey> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&process_id)?;
        if entry.secret_key != secret_key {
            return None;
        }
        let slot = entry.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot
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

    #[test]
    fn register_lookup_unregister() {
        let reg = Arc::new(CancelRegistry::default());
        let slot: CancelSlot = Arc::default();
        let r = reg.register(Arc::clone(&slot));
        assert!(r.process_id >= FIRST_CLIENT_PID as i32);
        assert_eq!(
            reg.lookup(r.process_id, r.secret_key),
            None,
            "idle: nothing to cancel"
        );
        let key = ServerKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: 7,
            secret_key: 9,
        };
        *slot.lock().unwrap() = Some(key);
        assert_eq!(reg.lookup(r.process_id, r.secret_key), Some(key));
        assert_eq!(reg.lookup(r.process_id, r.secret_key.wrapping_add(1)), None);
        let pid = r.process_id;
        drop(r);
        assert_eq!(reg.lookup(pid, 0), None);
        assert!(reg.is_empty());
    }
}
