//! Server connection pools: logged-in server connections kept for reuse by later clients.
//!
//! Connections are pooled per [`PoolKey`]: node, user, database and the client's start-up
//! parameters, so a reused connection is exactly what a fresh login would have given. Each node
//! has one limit, `max_server_connections`, shared by all its pools and counting idle and
//! checked-out connections. A client that needs a connection when its node is full waits in a
//! FIFO queue for up to `checkout_timeout` (see `limit.rs`: taking and returning a permit
//! while nobody waits is one atomic operation each, with no lock). An idle connection of another
//! pool is closed to make room rather than letting a client wait.
//!
//! With several session worker threads, each node's idle connections are kept in one list per
//! worker ([`set_thread_shard`]): a worker takes and returns its own, so a connection stays with
//! the runtime its socket is registered with and the lists' locks are not contended on the hot
//! path. The limit stays one per node. At it, a worker takes over another worker's idle
//! connection of the same pool, moving its socket to its own runtime, rather than closing it
//! and logging in anew; one of another pool is closed to make room.
//!
//! A connection is returned only after the cancels forwarded to it have had their effect and its
//! reset query (`DISCARD ALL` by default) succeeded; one that is broken, too old, idle too long
//! or with a cancel of unknown outcome is closed, never handed out.
//!
//! What it must not do: route, authenticate clients, or read a connection other than to reset
//! it and to check that an idle one is still open. Locks are held only to push or pop idle
//! connections, never across an `.await`.

use arc_swap::ArcSwap;
use limit::{Held, Limit};
use pgrouter_conn::ServerConn;
use pgrouter_slots::Slots;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

mod limit;

/// How long a connection returned with a cancel in flight waits for it at most (the forwarder's
/// own limit, `pool.connect_timeout`, normally ends it first).
const CANCEL_SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// Pool settings (from `pool:` in the configuration).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections per node, idle and checked out together.
    pub max_server_connections: u32,
    /// Idle connections per pool kept even past `idle_timeout`.
    pub min_idle: u32,
    /// Idle connections older than this are closed (`0`: never).
    pub idle_timeout: Duration,
    /// Connections older than this are closed when next returned or found idle (`0`: never).
    pub max_lifetime: Duration,
    /// How long a client waits for a connection when its node is full.
    pub checkout_timeout: Duration,
    /// Run on a connection before it returns to the pool.
    pub reset_query: String,
}

/// Which connections are interchangeable: one node, and one login.
///
/// Checked out and in on every transaction in transaction pooling: cloning it is a reference
/// count and hashing it two numbers (the login's hash is computed once, per client session).
#[derive(Debug, Clone)]
pub struct PoolKey {
    /// Node index.
    pub node: usize,
    /// Role, database and start-up parameters.
    pub login: Arc<LoginKey>,
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
            && (Arc::ptr_eq(&self.login, &other.login) || self.login == other.login)
    }
}

impl Eq for PoolKey {}

impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.node);
        state.write_u64(self.login.hash);
    }
}

/// The login a pooled connection was opened with.
#[derive(Debug)]
pub struct LoginKey {
    /// Role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Start-up parameters sent to the server, in order.
    pub params: Vec<(String, String)>,
    /// Of the three above.
    hash: u64,
}

impl LoginKey {
    /// A login; its hash is computed here, once.
    pub fn new(user: String, database: String, params: Vec<(String, String)>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&user, &database, &params).hash(&mut h);
        Self {
            user,
            database,
            params,
            hash: h.finish(),
        }
    }
}

impl PartialEq for LoginKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.user == other.user
            && self.database == other.database
            && self.params == other.params
    }
}

impl Eq for LoginKey {}

/// One shared [`LoginKey`] per distinct login ([`Pools::login_key`]): a session's key then
/// equals a pooled connection's by pointer, so a check-out or check-in compares no strings.
/// Keys are held weakly; those of logins no session uses any more are dropped by
/// [`Pools::prune`].
#[derive(Debug, Default)]
struct LoginKeys {
    by_hash: Mutex<HashMap<u64, Vec<std::sync::Weak<LoginKey>>>>,
}

impl LoginKeys {
    fn intern(&self, key: LoginKey) -> Arc<LoginKey> {
        let mut by_hash = lock(&self.by_hash);
        let same_hash = by_hash.entry(key.hash).or_default();
        same_hash.retain(|k| k.strong_count() > 0);
        if let Some(found) = same_hash
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|k| **k == key)
        {
            return found;
        }
        let key = Arc::new(key);
        same_hash.push(Arc::downgrade(&key));
        key
    }

    fn prune(&self) {
        lock(&self.by_hash).retain(|_, same_hash| {
            same_hash.retain(|k| k.strong_count() > 0);
            !same_hash.is_empty()
        });
    }

    fn len(&self) -> usize {
        lock(&self.by_hash)
            .values()
            .flatten()
            .filter(|k| k.strong_count() > 0)
            .count()
    }
}

/// A checked-out connection's claim on its pool: give it back with [`Pools::checkin`].
#[derive(Debug)]
pub struct Ticket {
    key: PoolKey,
    _active: Held,
    created: Instant,
    /// The connection came from the pool (it served an earlier client).
    pub reused: bool,
    /// How long the checkout took: zero when an idle connection was free at once (the clock is
    /// read only when it waits for one or opens a new one).
    pub waited: Duration,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError<E> {
    /// The node is at `max_server_connections` and none was freed in time.
    #[error(
        "no server connection free on this node after {waited:?} (max_server_connections {max})"
    )]
    Full {
        /// How long the client waited.
        waited: Duration,
        /// The limit.
        max: u32,
    },
    /// Opening a new connection failed.
    #[error(transparent)]
    Connect(E),
}

/// One idle connection, as [`Pools::idle_connections`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleInfo {
    /// Its pool.
    pub key: PoolKey,
    /// The server's process id for it.
    pub process_id: Option<i32>,
    /// Time since it was returned.
    pub idle_for: Duration,
    /// Time since it was opened.
    pub age: Duration,
}

struct Idle<S> {
    conn: ServerConn,
    state: S,
    created: Instant,
    since: Instant,
}

impl<S> Idle<S> {
    /// The pooled connection as a check-out's result.
    fn hand_out(self, key: PoolKey, permit: Held, waited: Duration) -> (ServerConn, S, Ticket) {
        let ticket = Ticket {
            key,
            _active: permit,
            created: self.created,
            reused: true,
            waited,
        };
        (self.conn, self.state, ticket)
    }
}

struct NodePool<S> {
    /// Checked-out connections: one permit each. Fair (FIFO) waiting.
    active: Arc<Limit>,
    /// Permits `active` was sized to (`max_server_connections`).
    permits: AtomicUsize,
    /// Idle connections, one list per shard (a session worker thread: see
    /// [`set_thread_shard`]). A thread takes from and returns to its own, so the lock is not
    /// shared on the hot path, and a connection is always used by the runtime it was
    /// registered with.
    idle: Box<[Mutex<IdleMap<S>>]>,
}

impl<S> NodePool<S> {
    /// Connections checked out now: the permits not free (as sized; while a smaller limit is
    /// still retiring permits, those count as checked out).
    fn checked_out(&self) -> usize {
        self.permits
            .load(Ordering::Relaxed)
            .saturating_sub(self.active.available())
    }
}

type IdleMap<S> = HashMap<PoolKey, Vec<Idle<S>>, KeyHashing>;

thread_local! {
    static THREAD_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the calling thread use idle list `index` (modulo the shard count) for every check-out
/// and check-in. Threads that never call it use list 0.
pub fn set_thread_shard(index: usize) {
    THREAD_SHARD.with(|shard| shard.set(index));
}

/// Hashing for the idle map: a [`PoolKey`] carries its login's hash, computed once per session,
/// so a lookup on every check-out and check-in only mixes two words instead of running SipHash.
/// (The map holds at most `max_server_connections` entries a node, so a crafted collision can
/// cost little.)
type KeyHashing = std::hash::BuildHasherDefault<KeyHasher>;

/// Mixes the words a [`PoolKey`] writes (see [`KeyHashing`]).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, word: u64) {
        // FxHash's step: enough to spread a node index and an already uniform hash.
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

/// Every node's pools. `S` is what the caller remembers about each connection (e.g. the prepared
/// statements it holds); it travels with the connection through the pool and starts as
/// `S::default()` for a new or reset connection.
pub struct Pools<S = ()> {
    settings: ArcSwap<PoolSettings>,
    /// Indexed by node slot; grows when a reload adds nodes.
    nodes: Slots<NodePool<S>>,
    /// The clock the idle and lifetime limits read (see [`CoarseClock`]).
    clock: CoarseClock,
    /// Idle lists a node (see [`NodePool::idle`]).
    shards: usize,
    /// `settings.max_lifetime` in nanoseconds, read on every check-out and check-in without
    /// an `arc-swap` load.
    max_lifetime_nanos: AtomicU64,
    login_keys: LoginKeys,
}

/// The time as of the last [`Pools::prune`] (run every second), for limits counted in minutes:
/// a check-in and a check-out compare with it instead of reading the clock, which they did
/// three times per transaction in transaction pooling. A connection may so be taken for idle
/// or too old up to one upkeep interval early or late.
#[derive(Debug)]
struct CoarseClock {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last tick.
    nanos: AtomicU64,
}

impl CoarseClock {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn tick(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos, Ordering::Relaxed);
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// Whether `since` lies more than `limit` in the past (`limit` 0: never).
    fn expired(&self, limit: &Duration, since: Instant) -> bool {
        !limit.is_zero() && self.now().saturating_duration_since(since) > *limit
    }
}

impl<S> std::fmt::Debug for Pools<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("settings", &self.settings)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl<S: Default> Pools<S> {
    /// Empty pools for `nodes` nodes.
    pub fn new(nodes: usize, settings: PoolSettings) -> Self {
        Self::with_shards(nodes, settings, 1)
    }

    /// Pools with `shards` idle lists a node (one per session worker thread).
    pub fn with_shards(nodes: usize, settings: PoolSettings, shards: usize) -> Self {
        let pools = Self {
            shards: shards.max(1),
            nodes: Slots::default(),
            max_lifetime_nanos: AtomicU64::new(nanos(settings.max_lifetime)),
            settings: ArcSwap::from_pointee(settings),
            clock: CoarseClock::new(),
            login_keys: LoginKeys::default(),
        };
        pools.grow_to(nodes);
        pools
    }

    /// Empty pools for nodes up to slot `nodes - 1` that have none yet (a reload added nodes).
    pub fn grow_to(&self, nodes: usize) {
        if self.nodes.len() >= nodes {
            return;
        }
        let max = self.settings.load().max_server_connections.max(1) as usize;
        self.nodes.grow_to(nodes, |_| NodePool {
            active: Arc::new(Limit::new(max)),
            permits: AtomicUsize::new(max),
            idle: (0..self.shards)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        });
    }

    /// The pools' key for a login: the same `Arc` for every session with the same role,
    /// database and start-up parameters (make it once per session, not per check-out).
    pub fn login_key(
        &self,
        user: String,
        database: String,
        params: Vec<(String, String)>,
    ) -> Arc<LoginKey> {
        self.login_keys
            .intern(LoginKey::new(user, database, params))
    }

    /// Distinct logins with a key alive (for tests and diagnostics).
    pub fn login_keys(&self) -> usize {
        self.login_keys.len()
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Applies new settings (a configuration reload). A smaller `max_server_connections` takes
    /// effect as connections come back: none is closed under a client.
    pub fn update_settings(&self, settings: PoolSettings) {
        let max = settings.max_server_connections.max(1) as usize;
        self.max_lifetime_nanos
            .store(nanos(settings.max_lifetime), Ordering::Relaxed);
        self.settings.store(Arc::new(settings));
        for node in self.nodes.snapshot().iter() {
            let before = node.permits.swap(max, Ordering::Relaxed);
            if max > before {
                node.active.add(max - before);
            } else if max < before {
                let owed = node.active.forget(before - max);
                if owed > 0 {
                    // Held by clients now: retire each as it is returned.
                    tokio::spawn(Arc::clone(&node.active).retire(owed));
                }
            }
        }
    }

    /// A connection for `key`: an idle one from its pool, else a new one from `connect`, waiting
    /// in line while the node is full.
    pub async fn checkout<E, F>(
        &self,
        key: PoolKey,
        connect: impl FnOnce() -> F,
    ) -> Result<(ServerConn, S, Ticket), CheckoutError<E>>
    where
        F: Future<Output = Result<ServerConn, E>>,
    {
        // The common case touches nothing shared but the permit count: a permit free at once
        // and an idle connection in this thread's own list.
        let quick = self.nodes.with(key.node, |node| {
            let permit = node.active.try_hold()?;
            match self.take_idle(node, &key) {
                Some(idle) => Some(Ok((idle, permit))),
                None => Some(Err(permit)),
            }
        });
        let permit = match quick {
            None => {
                return Err(CheckoutError::Full {
                    waited: Duration::ZERO,
                    max: 0,
                })
            }
            Some(Some(Ok((idle, permit)))) => {
                return Ok(idle.hand_out(key, permit, Duration::ZERO))
            }
            Some(Some(Err(permit))) => Some(permit),
            Some(None) => None,
        };
        let Some(node) = self.nodes.get(key.node) else {
            return Err(CheckoutError::Full {
                waited: Duration::ZERO,
                max: 0,
            });
        };
        // Set when the checkout waits or opens a connection: only then is the clock read.
        let mut started = None;
        let permit = match permit {
            Some(p) => p,
            None => {
                let settings = self.settings.load_full();
                let since = *started.insert(Instant::now());
                match tokio::time::timeout(settings.checkout_timeout, node.active.hold()).await {
                    Ok(p) => p,
                    Err(_) => {
                        return Err(CheckoutError::Full {
                            waited: since.elapsed(),
                            max: settings.max_server_connections,
                        })
                    }
                }
            }
        };
        // This thread's own idle connection first, unless the quick look above just found none
        // (it looks only with a permit in hand, so not when this check-out had to wait).
        let mut reusable = if started.is_some() {
            self.take_idle(&node, &key)
        } else {
            None
        };
        // Whether the node is at its limit (the permit covers checked-out connections; idle
        // ones count too): looked at once, and only when this thread had none.
        let at_limit = reusable.is_none() && {
            node.checked_out() + idle_count(&node) > node.permits.load(Ordering::Relaxed)
        };
        if at_limit {
            // One of the same pool another worker holds idle, rather than closing it to log in
            // anew.
            reusable = self.take_other_workers_idle(&node, &key);
        }
        if let Some(idle) = reusable {
            let waited = started.map_or(Duration::ZERO, |at| at.elapsed());
            return Ok(idle.hand_out(key, permit, waited));
        }
        let started = *started.get_or_insert_with(Instant::now);
        // Room for one more: close an idle connection of another pool if the node is at its
        // limit.
        if at_limit {
            evict_one(&node);
        }
        let conn = connect().await.map_err(CheckoutError::Connect)?;
        Ok((
            conn,
            S::default(),
            Ticket {
                key,
                _active: permit,
                created: Instant::now(),
                reused: false,
                waited: started.elapsed(),
            },
        ))
    }

    /// Returns a connection to its pool, after running the reset query when `reset` is set (the
    /// state then starts over); closes it if the reset fails or it is too old. Call it only for
    /// a connection that owes nothing (idle, outside a transaction) and on whose node it may
    /// still be used.
    pub async fn checkin(&self, mut conn: ServerConn, mut state: S, ticket: Ticket, reset: bool) {
        if self.too_old(ticket.created) {
            return;
        }
        // A cancel forwarded for its last statement that the server has not acted on yet would
        // land on the next client's statement. The forwarder gives up within its own timeout;
        // the limit here is only a backstop.
        if !conn.cancels.clear() && !conn.cancels.settle(CANCEL_SETTLE_LIMIT).await {
            tracing::debug!("server connection with a cancel of unknown outcome closed");
            return;
        }
        if reset {
            if let Err(why) = reset_connection(&mut conn, &self.settings.load().reset_query).await {
                tracing::debug!(error = %why, "server connection not reusable; closed");
                return;
            }
            state = S::default();
        }
        let returned = Idle {
            conn,
            state,
            created: ticket.created,
            since: self.clock.now(),
        };
        self.nodes.with(ticket.key.node, |node| {
            let mut idle = self.own_idle(node);
            // The key is cloned only for a pool's first idle connection.
            match idle.get_mut(&ticket.key) {
                Some(conns) => conns.push(returned),
                None => {
                    idle.insert(ticket.key.clone(), vec![returned]);
                }
            }
        });
        // The permit drops after the connection is in the pool, so the next waiter finds it.
        drop(ticket);
    }

    /// Whether a connection opened at `created` is past `max_lifetime`.
    fn too_old(&self, created: Instant) -> bool {
        let limit = Duration::from_nanos(self.max_lifetime_nanos.load(Ordering::Relaxed));
        self.clock.expired(&limit, created)
    }

    /// Closes the idle connections of a node (it left the routing table).
    pub fn close_idle(&self, node: usize) {
        self.nodes.with(node, |n| {
            for shard in n.idle.iter() {
                lock(shard).clear();
            }
        });
    }

    /// Closes idle connections past `idle_timeout` (keeping `min_idle` per pool) or
    /// `max_lifetime`. Run it periodically.
    pub fn prune(&self) {
        self.clock.tick();
        self.login_keys.prune();
        for shard in self.nodes.snapshot().iter().flat_map(|n| n.idle.iter()) {
            let mut idle = lock(shard);
            for conns in idle.values_mut() {
                conns.retain(|c| !self.too_old(c.created));
                let keep = self.settings.load().min_idle as usize;
                // Newest last: the oldest idle ones go first.
                while conns.len() > keep
                    && conns.first().is_some_and(|c| {
                        self.clock
                            .expired(&self.settings.load().idle_timeout, c.since)
                    })
                {
                    conns.remove(0);
                }
            }
            idle.retain(|_, v| !v.is_empty());
        }
    }

    /// Idle and checked-out connections of a node.
    pub fn counts(&self, node: usize) -> (usize, usize) {
        self.nodes
            .with(node, |n| (idle_count(n), n.checked_out()))
            .unwrap_or((0, 0))
    }

    /// Every idle connection, for introspection (the admin console's `SHOW POOLS` and
    /// `SHOW SERVERS`).
    pub fn idle_connections(&self) -> Vec<IdleInfo> {
        let now = Instant::now();
        self.nodes
            .snapshot()
            .iter()
            .flat_map(|n| n.idle.iter())
            .flat_map(|shard| {
                let idle = lock(shard);
                idle.iter()
                    .flat_map(|(k, conns)| {
                        conns.iter().map(|c| IdleInfo {
                            key: k.clone(),
                            process_id: c.conn.backend_key.map(|(pid, _)| pid),
                            idle_for: now.saturating_duration_since(c.since),
                            age: now.saturating_duration_since(c.created),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The calling thread's idle list of `node`, locked.
    fn own_idle<'n>(&self, node: &'n NodePool<S>) -> std::sync::MutexGuard<'n, IdleMap<S>> {
        let shard = THREAD_SHARD.with(std::cell::Cell::get) % self.shards;
        // `idle` has `self.shards` lists (made in `grow_to`); the first is a fallback that
        // cannot be reached.
        lock(node.idle.get(shard).unwrap_or(&node.idle[0]))
    }

    fn take_idle(&self, node: &NodePool<S>, key: &PoolKey) -> Option<Idle<S>> {
        self.pop_usable(&mut self.own_idle(node), key)
    }

    /// For a node at its limit, with several workers: an idle connection of the same pool from
    /// another worker's list, its socket moved to this thread's runtime. (Below the limit a new
    /// login is opened instead, so each worker settles on connections of its own; at the
    /// limit, taking one over costs two `epoll_ctl` calls where closing it and logging in anew
    /// would cost a login.)
    fn take_other_workers_idle(&self, node: &NodePool<S>, key: &PoolKey) -> Option<Idle<S>> {
        if self.shards == 1 {
            return None;
        }
        let own = THREAD_SHARD.with(std::cell::Cell::get) % self.shards;
        for (index, shard) in node.idle.iter().enumerate() {
            if index == own {
                continue;
            }
            let Some(idle) = self.pop_usable(&mut lock(shard), key) else {
                continue;
            };
            match idle.conn.move_here() {
                Ok(conn) => {
                    tracing::debug!(
                        from = index,
                        to = own,
                        "idle server connection taken over from another worker"
                    );
                    return Some(Idle { conn, ..idle });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "an idle connection could not change threads; closed")
                }
            }
        }
        None
    }

    /// The most recently used connection of `key` in a locked idle list that is neither too
    /// old nor closed by the server (those found on the way are closed).
    fn pop_usable(&self, idle: &mut IdleMap<S>, key: &PoolKey) -> Option<Idle<S>> {
        let conns = idle.get_mut(key)?;
        // Most recently used first: warm, and the oldest can time out.
        while let Some(c) = conns.pop() {
            if !self.too_old(c.created) && still_open(&c.conn) {
                return Some(c);
            }
        }
        None
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn idle_count<S>(node: &NodePool<S>) -> usize {
    node.idle
        .iter()
        .map(|shard| lock(shard).values().map(Vec::len).sum::<usize>())
        .sum()
}

fn evict_one<S>(node: &NodePool<S>) {
    // The oldest idle connection of any pool and shard. Each list is locked on its own: one
    // that changed meanwhile loses its oldest connection of that pool instead.
    let oldest = node
        .idle
        .iter()
        .enumerate()
        .filter_map(|(shard, idle)| {
            lock(idle)
                .iter()
                .filter_map(|(k, v)| v.first().map(|c| (shard, k.clone(), c.since)))
                .min_by_key(|(_, _, since)| *since)
        })
        .min_by_key(|(_, _, since)| *since);
    if let Some((shard, k, _)) = oldest {
        if let Some(idle) = node.idle.get(shard) {
            if let Some(v) = lock(idle).get_mut(&k).filter(|v| !v.is_empty()) {
                v.remove(0);
            }
        }
    }
}

/// An idle connection must have nothing to say: data or end-of-file means the server closed it
/// (or is about to, with a FATAL error).
fn still_open(conn: &ServerConn) -> bool {
    conn.stream.idle_and_open()
}

/// Runs the reset query; the connection is reusable if it answers without error and is idle.
async fn reset_connection(conn: &mut ServerConn, query: &str) -> Result<(), String> {
    let mut buf = bytes::BytesMut::new();
    let outcome = tokio::time::timeout(Duration::from_secs(5), conn.simple_query(&mut buf, query))
        .await
        .map_err(|_| "reset query timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let idle = outcome.status == pgrouter_protocol::backend::TransactionStatus::Idle;
    if outcome.failed || !idle || !buf.is_empty() {
        return Err("reset query failed".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
