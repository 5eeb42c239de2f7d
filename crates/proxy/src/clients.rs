//! The clients connected right now, for `SHOW CLIENTS`, `SHOW SERVERS` and the client gauges.
//!
//! A session registers at accept and is removed when it ends (a mutex held for a map insert or
//! removal, once per connection). While it runs it updates its own entry with relaxed atomic
//! stores only: nothing on the per-message path takes a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Start-up and authentication.
    Login = 0,
    /// Between requests, no transaction open.
    Idle = 1,
    /// A request is running, or a transaction is open.
    Active = 2,
    /// Waiting for a server connection (pool full, or no primary during a failover).
    Waiting = 3,
}

impl ClientState {
    /// Every state, for gauges.
    pub const ALL: [ClientState; 4] = [
        ClientState::Login,
        ClientState::Idle,
        ClientState::Active,
        ClientState::Waiting,
    ];

    /// Lower-case name (a metric label and a console column).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Active,
            3 => ClientState::Waiting,
            _ => ClientState::Login,
        }
    }
}

/// Marks "no server connection" in a [`ServerLink`].
const NONE: u32 = u32::MAX;

/// A session's server connection for one slot: node index and backend process id.
#[derive(Debug)]
pub struct ServerLink {
    node: AtomicU32,
    pid: AtomicU32,
}

impl ServerLink {
    fn new() -> Self {
        Self {
            node: AtomicU32::new(NONE),
            pid: AtomicU32::new(0),
        }
    }

    /// Records the connection now held (or none).
    pub fn set(&self, link: Option<(usize, i32)>) {
        let (node, pid) = link.map_or((NONE, 0), |(node, pid)| {
            (u32::try_from(node).unwrap_or(NONE), pid as u32)
        });
        self.node.store(node, Ordering::Relaxed);
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The node index and backend pid, if a connection is held.
    pub fn get(&self) -> Option<(usize, i32)> {
        let node = self.node.load(Ordering::Relaxed);
        (node != NONE).then(|| (node as usize, self.pid.load(Ordering::Relaxed) as i32))
    }
}

/// Where a client connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPeer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A client of the Unix-domain socket.
    Local,
}

impl ClientPeer {
    /// The TCP address; the unspecified address for a socket client (all of them count as one
    /// address for `client.max_connections_per_address`).
    pub fn socket_addr(self) -> SocketAddr {
        match self {
            ClientPeer::Tcp(addr) => addr,
            ClientPeer::Local => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

impl std::fmt::Display for ClientPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientPeer::Tcp(addr) => addr.fmt(f),
            ClientPeer::Local => f.write_str("[local]"),
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    /// pgrouter's id for the session (also the process id its client sees in `BackendKeyData`
    /// is separate; this one only orders the console's rows).
    pub id: u64,
    /// The client's address (`0.0.0.0:0` for a Unix-domain socket client).
    pub addr: SocketAddr,
    /// Connected through the Unix-domain socket (`unix_socket_dir`).
    pub local: bool,
    /// When it connected (Unix seconds).
    pub connected_at: u64,
    /// Set once the start-up message is read (what the client claims, before authentication).
    pub login: OnceLock<ClientLogin>,
    /// Set once the client has authenticated: only then do its user and database name metric
    /// label values (names a client makes up before that would make series without bound).
    pub authenticated: std::sync::atomic::AtomicBool,
    state: AtomicU8,
    /// Bytes read from the client.
    pub bytes_received: AtomicU64,
    /// Bytes written to the client.
    pub bytes_sent: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// The primary connection held.
    pub primary: ServerLink,
    /// The read connection held.
    pub read: ServerLink,
    /// Raised when shutdown begins (see [`StopSignal`]).
    pub stop: StopSignal,
}

/// Tells a session that shutdown began. Its loop checks this on every pass: an atomic load and
/// a waker registration, where a cancellation token's future takes a lock each time it is
/// polled.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl StopSignal {
    /// Raises the signal and wakes the session waiting on it.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Ready once the signal is raised; until then the task is woken when it is.
    pub fn poll_stopped(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.stopped.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Raised between the load and the registration: the wake may have found no waker.
        if self.stopped.load(Ordering::SeqCst) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Who the client logged in as.
#[derive(Debug)]
pub struct ClientLogin {
    /// Role name.
    pub user: String,
    /// Database.
    pub database: String,
    /// `application_name`, if sent.
    pub application_name: String,
    /// The listener it came through: `split`, `primary` or `read_only`.
    pub endpoint: &'static str,
}

impl ClientEntry {
    /// The client's address as PostgreSQL prints it: the IP, or `[local]` for a socket client.
    pub fn address(&self) -> String {
        if self.local {
            "[local]".to_owned()
        } else {
            self.addr.ip().to_string()
        }
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state.
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Counts bytes received from the client.
    pub fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes sent to the client.
    pub fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The connected clients.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ClientEntry>>>,
}

impl Clients {
    /// Registers a client that just connected; it stays listed until the guard is dropped.
    pub fn register(self: &Arc<Self>, peer: ClientPeer, connected_at: u64) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            addr: peer.socket_addr(),
            local: peer == ClientPeer::Local,
            connected_at,
            login: OnceLock::new(),
            authenticated: std::sync::atomic::AtomicBool::new(false),
            state: AtomicU8::new(ClientState::Login as u8),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            primary: ServerLink::new(),
            read: ServerLink::new(),
            stop: StopSignal::default(),
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&entry));
        Registration {
            clients: Arc::clone(self),
            entry,
        }
    }

    /// Raises every connected client's [`StopSignal`] (shutdown began). A session registered
    /// after this must see the shutdown token cancelled itself.
    pub fn stop_all(&self) {
        for entry in self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            entry.stop.stop();
        }
    }

    /// Every connected client, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<_> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|e| e.id);
        all
    }
}

/// A client's place in [`Clients`]; dropping it removes the client.
#[derive(Debug)]
pub struct Registration {
    clients: Arc<Clients>,
    /// The client's entry, updated by its session.
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_all_wakes_every_waiting_session_and_later_polls_see_it() {
        let clients = Arc::new(Clients::default());
        let entries: Vec<_> = (0..3)
            .map(|_| clients.register(ClientPeer::Local, 0))
            .collect();
        let waiting: Vec<_> = entries
            .iter()
            .map(|r| {
                let entry = Arc::clone(&r.entry);
                tokio::spawn(async move {
                    std::future::poll_fn(|cx| entry.stop.poll_stopped(cx)).await;
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(
            waiting.iter().all(|t| !t.is_finished()),
            "nothing raised yet"
        );
        clients.stop_all();
        for task in waiting {
            tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .expect("woken")
                .expect("no panic");
        }
        let entry = &entries[0].entry;
        let again = std::future::poll_fn(|cx| entry.stop.poll_stopped(cx));
        tokio::time::timeout(std::time::Duration::from_secs(5), again)
            .await
            .expect("stays raised");
    }

    #[test]
    fn clients_are_listed_while_registered() {
        let clients = Arc::new(Clients::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = clients.register(ClientPeer::Tcp(addr), 1);
        let b = clients.register(ClientPeer::Local, 2);
        a.entry.set_state(ClientState::Active);
        b.entry.primary.set(Some((2, 4242)));
        let listed = clients.snapshot();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].state(), ClientState::Active);
        assert_eq!(listed[1].state(), ClientState::Login);
        assert_eq!(listed[1].primary.get(), Some((2, 4242)));
        assert_eq!(listed[1].read.get(), None);
        drop(a);
        assert_eq!(clients.snapshot().len(), 1);
        b.entry.primary.set(None);
        assert_eq!(b.entry.primary.get(), None);
    }
}
