//! Cancel requests: each client gets pgrouter's own `BackendKeyData`; a `CancelRequest` carrying it
//! is forwarded to whichever server connection the session is using at that moment. A cancel
//! that arrives while the session's request waits for a server connection (a pool checkout, a
//! new replica connection) cancels that request before it is sent.
//!
//! The registry is touched when a session starts or ends and when a cancel arrives, never per
//! message, so a short std mutex section (never held across `.await`) is the right tool. The
//! session marks a request waiting for a connection with an atomic, not a lock.

use pgrouter_conn::{CancelInFlight, CancelsInFlight};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Where a cancel for a session must go right now.
#[derive(Debug, Clone)]
pub struct ServerKey {
    /// The server connection's address.
    pub addr: SocketAddr,
    /// Its `BackendKeyData` process id.
    pub process_id: i32,
    /// Its `BackendKeyData` secret.
    pub secret_key: i32,
    /// The connection's cancels in flight: a cancel counts there from the moment it is handed
    /// out (under the lock the session takes to point cancels elsewhere), so a connection the
    /// session gives back is never reused before the cancel has had its effect.
    pub cancels: CancelsInFlight,
}

impl ServerKey {
    /// The key of a server connection (`None`: it sent no `BackendKeyData`).
    pub fn of(conn: &pgrouter_conn::ServerConn) -> Option<Self> {
        conn.backend_key.map(|(process_id, secret_key)| ServerKey {
            addr: conn.addr,
            process_id,
            secret_key,
            cancels: conn.cancels.clone(),
        })
    }
}

/// A cancel to send to a server, counted in flight on its connection until `in_flight` is
/// confirmed or dropped.
#[derive(Debug)]
pub struct ForwardedCancel {
    /// The server connection's address.
    pub addr: SocketAddr,
    /// Its `BackendKeyData` process id.
    pub process_id: i32,
    /// Its `BackendKeyData` secret.
    pub secret_key: i32,
    /// Confirm it once the server has closed the cancel connection.
    pub in_flight: CancelInFlight,
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
    fn cancel(&self) -> Option<ForwardedCancel> {
        if self
            .waiting
            .compare_exchange(WAITING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return None;
        }
        let server = self.server.lock().unwrap_or_else(PoisonError::into_inner);
        server.as_ref().map(|key| ForwardedCancel {
            addr: key.addr,
            process_id: key.process_id,
            secret_key: key.secret_key,
            in_flight: key.cancels.start(),
        })
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
    /// `peer_id`, encoded in every process id given out (0: this instance runs alone).
    peer_id: u8,
}

/// The smallest process id pgrouter gives clients: above every Linux pid.
const FIRST_CLIENT_PID: u32 = 1 << 22;

/// Where the peer id sits in a process id: bits 23–30 (bit 22 is always set, bit 31 never,
/// bits 0–21 are random).
const PEER_SHIFT: u32 = 23;

/// The peer id encoded in a process id pgrouter gave a client (`None`: not one of pgrouter's,
/// or from an instance without an id).
pub fn peer_of(process_id: i32) -> Option<u8> {
    let pid = u32::try_from(process_id).ok()?;
    if pid & FIRST_CLIENT_PID == 0 {
        return None;
    }
    let id = ((pid >> PEER_SHIFT) & 0xff) as u8;
    (id != 0).then_some(id)
}

/// A fresh process id for a client: random, with `peer_id` encoded when it is not 0.
fn client_process_id(peer_id: u8) -> i32 {
    let random = rand::random::<u32>();
    let pid = if peer_id == 0 {
        (random >> 1) | FIRST_CLIENT_PID
    } else {
        (random & (FIRST_CLIENT_PID - 1)) | FIRST_CLIENT_PID | (u32::from(peer_id) << PEER_SHIFT)
    };
    // Bit 31 is clear in both forms: a positive i32, as a server's process ids are.
    pid as i32
}

impl CancelRegistry {
    /// A registry whose process ids carry `peer_id` (see [`peer_of`]).
    pub fn with_peer_id(peer_id: u8) -> Self {
        Self {
            entries: Mutex::default(),
            peer_id,
        }
    }

    /// This instance's peer id (0: alone).
    pub fn peer_id(&self) -> u8 {
        self.peer_id
    }

    /// Whether a session of this instance has this process id (whatever the secret).
    pub fn owns(&self, process_id: i32) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&process_id)
    }

    /// Allocates a unique client key and registers `slot` under it. The returned guard
    /// unregisters on drop.
    pub fn register(self: &Arc<Self>, slot: CancelSlot) -> Registration {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Positive process ids, like a real server's, but never one a server backend can
            // have: Linux pids stay below 2^22 (`pid_max` is at most 4194304). A client that
            // passes its "backend pid" to pg_terminate_backend() therefore hits no other
            // session's backend.
            let process_id = client_process_id(self.peer_id);
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
    pub fn cancel(&self, process_id: i32, secret_key: i32) -> Option<ForwardedCancel> {
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

/// A client's cancel request for a session this instance does not have: sent on to the peer
/// whose id the process id carries (`peers`), else to every address `peers_dns` resolves to,
/// with pgrouter's peer code so that no peer forwards it again. Only the instance holding the
/// session, with the right secret, acts on it.
pub async fn forward_to_peers(
    ctx: &crate::context::ProxyContext,
    process_id: i32,
    secret_key: i32,
) {
    let config = ctx.config();
    let timeout = config.pool.connect_timeout.get();
    let owner = peer_of(process_id).filter(|id| *id != ctx.cancels.peer_id());
    let target = match owner.and_then(|id| config.peers.iter().find(|p| p.id == id)) {
        Some(peer) => format!("{}:{}", peer.host, peer.port),
        None => match &config.peers_dns {
            Some(dns) => dns.clone(),
            None => {
                tracing::debug!("cancel request for an unknown session ignored (no peers)");
                return;
            }
        },
    };
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host(target.as_str()).await {
        Ok(found) => found.collect(),
        Err(e) => {
            tracing::warn!(error = %e, peer = target, "cannot resolve the peer for a cancel request");
            return;
        }
    };
    for addr in addresses {
        match pgrouter_conn::send_peer_cancel(addr, process_id, secret_key, timeout).await {
            Ok(()) => tracing::debug!(peer = %addr, "cancel request forwarded to a peer"),
            Err(e) => {
                tracing::warn!(error = %e, peer = %addr, "forwarding a cancel request to a peer failed")
            }
        }
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
    fn process_ids_carry_the_peer_id() {
        for peer in [0u8, 1, 2, 17, 255] {
            let registry = Arc::new(CancelRegistry::with_peer_id(peer));
            for _ in 0..1000 {
                let r = registry.register(Arc::default());
                assert!(
                    r.process_id >= 1 << 22,
                    "above every Linux pid: {}",
                    r.process_id
                );
                if peer != 0 {
                    assert_eq!(peer_of(r.process_id), Some(peer));
                }
                assert!(registry.owns(r.process_id));
            }
        }
        assert_eq!(peer_of(12345), None, "a server's pid");
        assert_eq!(peer_of(-5), None);
    }

    fn key() -> ServerKey {
        ServerKey {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: 7,
            secret_key: 9,
            cancels: CancelsInFlight::default(),
        }
    }

    /// Where a forwarded cancel goes.
    fn target(forwarded: Option<ForwardedCancel>) -> Option<(SocketAddr, i32, i32)> {
        forwarded.map(|f| (f.addr, f.process_id, f.secret_key))
    }

    fn key_target() -> Option<(SocketAddr, i32, i32)> {
        Some(("127.0.0.1:5432".parse().unwrap(), 7, 9))
    }

    #[test]
    fn register_cancel_unregister() {
        let reg = Arc::new(CancelRegistry::default());
        let slot: CancelSlot = Arc::default();
        let r = reg.register(Arc::clone(&slot));
        assert!(r.process_id >= FIRST_CLIENT_PID as i32);
        assert!(
            reg.cancel(r.process_id, r.secret_key).is_none(),
            "idle: nothing to cancel"
        );
        slot.point_at(Some(key()));
        assert_eq!(target(reg.cancel(r.process_id, r.secret_key)), key_target());
        assert!(reg
            .cancel(r.process_id, r.secret_key.wrapping_add(1))
            .is_none());
        let pid = r.process_id;
        drop(r);
        assert!(reg.cancel(pid, 0).is_none());
        assert!(reg.is_empty());
    }

    #[test]
    fn a_forwarded_cancel_is_in_flight_on_its_connection_until_confirmed() {
        let reg = Arc::new(CancelRegistry::default());
        let slot: CancelSlot = Arc::default();
        let r = reg.register(Arc::clone(&slot));
        let key = key();
        let cancels = key.cancels.clone();
        slot.point_at(Some(key));
        let forwarded = reg.cancel(r.process_id, r.secret_key).unwrap();
        // The session gives the connection up meanwhile: it still owes the cancel.
        slot.point_at(None);
        assert!(!cancels.clear());
        forwarded.in_flight.confirmed();
        assert!(cancels.clear());
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
        assert!(reg.cancel(r.process_id, r.secret_key).is_none());
        assert!(slot.request_sent());
        assert!(!slot.request_sent());
        // Once sent, cancels go to the server again.
        assert_eq!(target(reg.cancel(r.process_id, r.secret_key)), key_target());
        // A wrong secret cancels nothing, waiting or not.
        slot.request_waits();
        assert!(reg
            .cancel(r.process_id, r.secret_key.wrapping_add(1))
            .is_none());
        assert!(!slot.request_sent());
    }
}
