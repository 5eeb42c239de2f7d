//! What every session shares, built once from the configuration.

use crate::cancel::CancelRegistry;
use arc_swap::ArcSwap;
use pgrouter_config::{AuthMethod, Config, NodeConfig};
use pgrouter_protocol::auth::scram::ScramSecret;
use pgrouter_sql::{Classifier, FunctionPolicy};
use pgrouter_topology::{NodeTarget, RoutingTable, Topology};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Uses of protocol-level prepared statements (`Bind`/`Describe` by name): `hits` found the
/// statement already prepared on the server connection, `misses` had pgrouter prepare it there
/// first.
#[derive(Debug, Default)]
pub struct PreparedStats {
    /// Found on the connection.
    pub hits: AtomicU64,
    /// Prepared there first.
    pub misses: AtomicU64,
}

/// Name/value pairs, in order (start-up parameters, `ParameterStatus` values).
type Parameters = Vec<(String, String)>;

/// The protocol-level prepared statements a server connection holds: name → definition identity.
pub type PreparedOnServer = HashMap<String, u64>;

/// Which session's sequence state (`currval`, `lastval`) a server connection may hold, and
/// from which of its writes: a connection is handed to the session that made its latest write
/// there untouched, to anyone else after `DISCARD SEQUENCES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceMark {
    /// The session (a number of its own, never reused in a process).
    pub session: u64,
    /// The session's count of writes when it made the one that left this mark.
    pub write: u64,
}

/// What a pooled server connection carries from one client to the next, besides its login: the
/// statements it holds and whose sequence state it may hold. A reset starts both over.
#[derive(Debug, Default)]
pub struct PooledState {
    /// Protocol-level prepared statements on the connection.
    pub prepared: PreparedOnServer,
    /// Set by a write (a `serial` default or `nextval` sets the session's sequence state).
    pub sequences: Option<SequenceMark>,
}

/// A user as sessions need it: how to check the client, the derived SCRAM verifier, and the
/// password for pgrouter's own server login.
#[derive(Debug)]
pub struct UserEntry {
    /// Role name.
    pub name: String,
    /// The configured password field: the password, or its SCRAM verifier or md5 hash.
    pub password: String,
    /// Which of the three `password` is.
    pub stored: pgrouter_config::StoredForm,
    /// How the client is authenticated.
    pub auth: AuthMethod,
    /// SCRAM verifier: derived once from a password, or the configured one.
    pub scram: ScramSecret,
    /// For a user configured by its verifier: the `ClientKey` recovered from the first client
    /// SCRAM login (checked against the verifier), with which pgrouter logs in to the servers.
    pub client_key: std::sync::OnceLock<[u8; 32]>,
    /// Server connections are released after each transaction (`pool_mode: transaction`).
    pub transaction_pooling: bool,
    /// The user's own `pool_mode` was set (it wins over `pool.database_modes`).
    pub pool_mode_set: bool,
}

impl UserEntry {
    /// What pgrouter logs in to the servers with as this user.
    pub fn credential(&self) -> pgrouter_conn::Credential<'_> {
        use pgrouter_config::StoredForm;
        use pgrouter_conn::Credential;
        match self.stored {
            StoredForm::Plain => Credential::Password(&self.password),
            StoredForm::Md5Hash => Credential::Md5Hash(&self.password),
            StoredForm::ScramVerifier => match self.client_key.get() {
                Some(key) => Credential::ScramKeys {
                    secret: &self.scram,
                    client_key: *key,
                },
                None => Credential::ScramVerifierOnly,
            },
        }
    }
}

/// The settings a reload may change, swapped whole: sessions load them per decision.
#[derive(Debug)]
pub struct Live {
    /// The configuration in force (shown by `SHOW CONFIG`, secrets masked).
    pub config: Arc<Config>,
    /// Users by name, with their derived secrets.
    pub users: HashMap<String, Arc<UserEntry>>,
    /// Statement classification under the configured function policy.
    pub classifier: Classifier,
    /// `routing.primary_databases` and `routing.primary_applications`, compiled.
    pub primary_sessions: [Vec<regex::Regex>; 2],
    /// Increases with every reload (classification caches start over).
    pub generation: u64,
}

impl Live {
    fn new(config: Config, generation: u64, reuse: Option<&Live>) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                // PBKDF2 is costly: keep the verifier of an unchanged password (and a key
                // recovered for it).
                let unchanged = reuse
                    .and_then(|l| l.users.get(&u.name))
                    .filter(|old| old.password == u.password());
                let stored = u.stored_form();
                let scram = match (unchanged, stored) {
                    (Some(old), _) => old.scram.clone(),
                    (None, pgrouter_config::StoredForm::ScramVerifier) => {
                        ScramSecret::from_verifier(u.password())
                            .unwrap_or_else(|| ScramSecret::generate(u.password()))
                    }
                    // An md5 hash cannot check SCRAM logins (the configuration check refuses
                    // the combination); a random verifier fails them like a wrong password.
                    (None, pgrouter_config::StoredForm::Md5Hash) => {
                        ScramSecret::generate(&format!("{:?}", rand::random::<[u8; 16]>()))
                    }
                    (None, pgrouter_config::StoredForm::Plain) => {
                        ScramSecret::generate(u.password())
                    }
                };
                let entry = UserEntry {
                    name: u.name.clone(),
                    password: u.password().to_owned(),
                    stored,
                    client_key: unchanged
                        .map(|old| old.client_key.clone())
                        .unwrap_or_default(),
                    auth: u.auth,
                    scram,
                    transaction_pooling: u.pool_mode.unwrap_or(config.pool.mode)
                        == pgrouter_config::PoolMode::Transaction,
                    pool_mode_set: u.pool_mode.is_some(),
                };
                (u.name.clone(), Arc::new(entry))
            })
            .collect();
        let classifier = classifier(&config.routing);
        let primary_sessions = [
            whole_text_patterns(&config.routing.primary_databases),
            whole_text_patterns(&config.routing.primary_applications),
        ];
        Self {
            config: Arc::new(config),
            users,
            classifier,
            primary_sessions,
            generation,
        }
    }
}

/// Shared state for sessions.
#[derive(Debug)]
pub struct ProxyContext {
    live: ArcSwap<Live>,
    /// Session worker threads (`worker_threads`, fixed at start-up; 0: sessions run on the
    /// main runtime). See [`crate::workers`].
    pub session_workers: usize,
    /// TLS towards clients (`tls:`), rebuilt on every reload; `None`: off.
    tls: arc_swap::ArcSwapOption<crate::tls::Acceptor>,
    /// TLS towards the servers (`server_tls:`), rebuilt on every reload.
    server_tls: ArcSwap<pgrouter_conn::ServerTls>,
    /// TLS and credentials for Patroni's REST API (`topology.patroni:`), rebuilt on reload.
    patroni_api: ArcSwap<pgrouter_topology::HttpClient>,
    /// Users looked up on the primary (`auth_query:`), and their cache.
    pub auth_query: crate::auth_query::AuthQuery,
    /// The file the configuration came from (`RELOAD` and `SIGHUP` read it again).
    config_path: Option<PathBuf>,
    /// The per-process secret unknown users' verifiers are derived from ([`Self::mock_scram`]).
    mock_secret: [u8; 32],
    /// How often a client's prepared statement was already on the server connection that ran it.
    pub prepared_stats: PreparedStats,
    /// Server connections kept for reuse, each with the prepared statements it holds.
    pub pools: pgrouter_pool::Pools<PooledState>,
    /// Who is primary and who serves reads, as the health checks last found. Its node slots are
    /// the node indexes used everywhere (pools, statistics, sessions' connections).
    pub topology: Arc<Topology>,
    /// Clients counted against `client.max_connections*`.
    pub client_limits: crate::limits::ClientLimits,
    /// Client read buffers' growth, process-wide (`client.max_buffer_memory`).
    pub buffer_budget: Arc<crate::memory::BufferBudget>,
    /// Client keys for cancel requests.
    pub cancels: Arc<CancelRegistry>,
    /// Volatility of functions looked up in `pg_proc` (`true` = VOLATILE), shared by sessions.
    /// Touched only for statements calling functions pgrouter does not know, never per message.
    pub function_volatility: Mutex<HashMap<String, bool>>,
    /// `ParameterStatus` values reported at login, by user and start-up parameters: what
    /// transaction-pooled clients are told at login without taking a server connection.
    /// By user, then start-up parameters: looked up on every login without building a key.
    login_parameters: Mutex<HashMap<String, HashMap<Parameters, Arc<Parameters>>>>,
    read_picks: AtomicU64,
    /// What sessions counted (statements per node and rule, errors, bytes, latency).
    pub stats: crate::stats::Stats,
    /// The clients connected now.
    pub clients: Arc<crate::clients::Clients>,
    /// Set when shutdown begins: readiness turns false.
    pub draining: std::sync::atomic::AtomicBool,
    /// When this process started serving (Unix seconds).
    pub started_at: u64,
    /// The primary's WAL position as the health checks saw it, once a second for the last
    /// ten minutes (for `pgrouter.max_staleness`).
    primary_positions: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
    /// Classification caches, one per worker thread, owned by this context (so two contexts in
    /// one process never share one): no lock on the routing path.
    classification_caches: thread_local::ThreadLocal<RefCell<pgrouter_sql::ClassificationCache>>,
    /// Node slots the pools and counters were grown to (see `track_new_nodes`).
    tracked_nodes: AtomicUsize,
}

/// Statements each worker thread's classification cache holds (at most twice this).
const CLASSIFICATION_CACHE_SIZE: usize = 4096;

impl ProxyContext {
    /// Classifies `sql` with the calling thread's cache, under the classifier of the live
    /// configuration (a reload with other function lists empties the caches).
    pub fn classify(&self, sql: &str) -> Arc<pgrouter_sql::Classification> {
        self.classify_under(&self.live(), sql)
    }

    /// [`Self::classify`] under the settings `live` (a session's view of those in force).
    pub fn classify_under(&self, live: &Live, sql: &str) -> Arc<pgrouter_sql::Classification> {
        let cache = self.classification_caches.get_or(|| {
            RefCell::new(pgrouter_sql::ClassificationCache::new(
                CLASSIFICATION_CACHE_SIZE,
            ))
        });
        let mut cache = cache.borrow_mut();
        cache.start_generation(live.generation);
        cache.classify(&live.classifier, sql)
    }

    /// Builds the context, deriving every SCRAM verifier (PBKDF2) once, here. `config_path` is
    /// where `RELOAD` reads the configuration again.
    pub fn new(config: &Config, config_path: Option<PathBuf>) -> Self {
        let topology = Topology::new(config.nodes.iter().map(node_target).collect());
        let session_workers = crate::workers::session_workers(config.worker_threads);
        let tls = crate::tls::acceptor(&config.tls)
            .inspect_err(|e| tracing::error!("{e}; clients get no TLS"))
            .ok()
            .flatten()
            .map(Arc::new);
        let server_tls = crate::tls::server_tls(&config.server_tls).unwrap_or_else(|e| {
            tracing::error!("{e}; server connections fail until a reload fixes it");
            pgrouter_conn::ServerTls::unavailable(
                crate::tls::server_tls_policy(config.server_tls.mode),
                config.server_tls.allow_cleartext_password,
            )
        });
        let patroni_api = pgrouter_topology::HttpClient::new(&config.topology.patroni)
            .unwrap_or_else(|e| {
                tracing::error!("{e}; https:// Patroni URLs fail until a reload fixes it");
                pgrouter_topology::HttpClient::default()
            });
        Self {
            session_workers,
            patroni_api: ArcSwap::from_pointee(patroni_api),
            tls: arc_swap::ArcSwapOption::new(tls),
            server_tls: ArcSwap::from_pointee(server_tls),
            auth_query: crate::auth_query::AuthQuery::default(),
            live: ArcSwap::from_pointee(Live::new(config.clone(), 0, None)),
            config_path,
            mock_secret: rand::random(),
            // One idle list per worker: a connection stays with the runtime it is registered
            // with.
            pools: pgrouter_pool::Pools::with_shards(
                config.nodes.len(),
                pool_settings(config),
                session_workers.max(1),
            ),
            topology,
            client_limits: crate::limits::ClientLimits::default(),
            buffer_budget: Arc::new(crate::memory::BufferBudget::new(byte_limit(
                config.client.max_buffer_memory,
            ))),
            cancels: Arc::new(CancelRegistry::with_peer_id(config.peer_id)),
            function_volatility: Mutex::new(HashMap::new()),
            login_parameters: Mutex::new(HashMap::new()),
            read_picks: AtomicU64::new(0),
            prepared_stats: PreparedStats::default(),
            stats: crate::stats::Stats::new(
                &config
                    .nodes
                    .iter()
                    .map(|n| n.name.clone())
                    .collect::<Vec<_>>(),
            ),
            clients: Arc::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            started_at: pgrouter_topology::table::unix_now(),
            primary_positions: std::sync::Mutex::default(),
            classification_caches: thread_local::ThreadLocal::new(),
            tracked_nodes: AtomicUsize::new(0),
        }
    }

    /// The TLS acceptor in force, when TLS towards clients is on.
    pub fn tls_acceptor(&self) -> Option<Arc<crate::tls::Acceptor>> {
        self.tls.load_full()
    }

    /// TCP keepalive for client and server sockets (`tcp_keepalive:`), `None` when off.
    pub fn keepalive(&self) -> Option<pgrouter_conn::Keepalive> {
        crate::reload::keepalive(&self.live.load().config)
    }

    /// TLS towards the servers in force.
    pub fn server_tls(&self) -> Arc<pgrouter_conn::ServerTls> {
        self.server_tls.load_full()
    }

    /// The health checks' settings from `config`, with the server TLS in force.
    pub fn monitor_settings(&self, config: &Config) -> pgrouter_topology::MonitorSettings {
        crate::reload::monitor_settings(config, self.server_tls(), self.patroni_api.load_full())
    }

    /// The settings in force: a lock-free load.
    pub fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// A view of the settings in force for one session's loop: checking it for a reload is one
    /// atomic load, cheaper than [`Self::live`] on every use.
    pub(crate) fn live_cache(&self) -> LiveCache<'_> {
        arc_swap::Cache::new(&self.live)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live.load().config)
    }

    /// Users allowed on the admin console.
    pub fn admin_users(&self) -> Vec<String> {
        self.live.load().config.admin.users.clone()
    }

    /// The verifier a login for the unknown user `name` goes through (see
    /// [`ScramSecret::mock`]).
    pub fn mock_scram(&self, name: &str) -> ScramSecret {
        ScramSecret::mock(&self.mock_secret, name)
    }

    /// A user's current entry.
    pub fn user(&self, name: &str) -> Option<Arc<UserEntry>> {
        self.live.load().users.get(name).cloned()
    }

    /// Reads the configuration file again and applies what can change while running (see
    /// [`ProxyContext::apply`]).
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let Some(path) = &self.config_path else {
            return Err("pgrouter was not started from a configuration file".into());
        };
        let config =
            pgrouter_config::load(path, &pgrouter_config::ProcessEnv).map_err(|e| e.to_string())?;
        Ok(self.apply(config))
    }

    /// Applies a new, valid configuration: the node list, users and passwords, routing, limits,
    /// pool and health-check settings and node weights take effect now, for existing clients too;
    /// settings that need a restart are kept and reported. Returns one line per change.
    ///
    /// A node added (or re-addressed) serves once its health checks say so. A node removed (or
    /// re-addressed) leaves the routing table at once: sessions move off it at their next
    /// transaction boundary, as after a failover, and its idle connections are closed.
    pub fn apply(&self, new: Config) -> Vec<String> {
        let old = self.config();
        let mut new = new;
        let mut report = crate::reload::restart_only(&old, &mut new);
        report.extend(crate::reload::changes(&old, &new));
        // Certificates are read again on every reload (rotation keeps the same file names).
        match crate::tls::acceptor(&new.tls) {
            Ok(acceptor) => self.tls.store(acceptor.map(Arc::new)),
            Err(e) => {
                tracing::warn!("{e}: the TLS settings in force stay");
                report.push(format!("{e}: the TLS settings in force stay"));
                new.tls = old.tls.clone();
            }
        }
        match crate::tls::server_tls(&new.server_tls) {
            Ok(server_tls) => {
                // Changed keys are reported with the others; changed files only here.
                if old.server_tls == new.server_tls && *self.server_tls.load_full() != server_tls {
                    report.push("server_tls: files changed, used by new server connections".into());
                }
                self.server_tls.store(Arc::new(server_tls));
            }
            Err(e) => {
                tracing::warn!("{e}: the server TLS settings in force stay");
                report.push(format!("{e}: the server TLS settings in force stay"));
                new.server_tls = old.server_tls.clone();
            }
        }
        match pgrouter_topology::HttpClient::new(&new.topology.patroni) {
            Ok(client) => self.patroni_api.store(Arc::new(client)),
            Err(e) => {
                tracing::warn!("{e}: the Patroni API settings in force stay");
                report.push(format!("{e}: the Patroni API settings in force stay"));
                new.topology.patroni = old.topology.patroni.clone();
            }
        }
        self.topology.update_settings(self.monitor_settings(&new));
        self.pools.update_settings(pool_settings(&new));
        self.buffer_budget
            .set_limit(byte_limit(new.client.max_buffer_memory));
        let targets: Vec<NodeTarget> = new.nodes.iter().map(node_target).collect();
        let nodes = self.topology.reconfigure(&targets);
        let slots = self.topology.slot_count();
        self.pools.grow_to(slots);
        self.stats.grow_to(slots);
        for &removed in &nodes.removed {
            self.pools.close_idle(removed);
        }
        // Looked-up users are looked up again under the new settings.
        self.auth_query.clear();
        let generation = self.live.load().generation + 1;
        let live = Live::new(new, generation, Some(&self.live.load()));
        self.live.store(Arc::new(live));
        if report.is_empty() {
            report.push("no changes".into());
        }
        for line in &report {
            tracing::info!("configuration reloaded: {line}");
        }
        report
    }

    /// Gives nodes the topology added by itself (members found through the HA manager,
    /// `topology.discover_members`) their pool and counters; cheap when there are none.
    pub(crate) fn track_new_nodes(&self) {
        let slots = self.topology.slot_count();
        // Called on every check-out: one relaxed load when nothing was added.
        if self.tracked_nodes.load(Ordering::Relaxed) >= slots {
            return;
        }
        self.pools.grow_to(slots);
        self.stats.grow_to(slots);
        self.tracked_nodes.fetch_max(slots, Ordering::Relaxed);
    }

    /// Picks a read node from the table's readers by weight (the primary among them when its
    /// weight is not 0). `None` when nothing serves reads.
    pub fn pick_read_node(&self, table: &RoutingTable) -> Option<usize> {
        let ticket = self.read_picks.fetch_add(1, Ordering::Relaxed);
        let weights: Vec<u32> = table.readers.iter().map(|(_, w)| *w).collect();
        crate::routing::pick_read_node(&weights, ticket).map(|i| table.readers[i].0)
    }

    /// Whether every named function is known to be non-volatile (`Some(false)`), some is volatile
    /// (`Some(true)`), or some has not been looked up yet (`None`).
    pub fn any_volatile(&self, names: &[String]) -> Option<bool> {
        if names.is_empty() {
            return Some(false);
        }
        let cache = self
            .function_volatility
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut any = false;
        for n in names {
            any |= *cache.get(n)?;
        }
        Some(any)
    }

    /// Records looked-up volatilities.
    pub fn remember_volatility(&self, found: impl IntoIterator<Item = (String, bool)>) {
        let mut cache = self
            .function_volatility
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded: a client inventing function names must not grow it forever.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.extend(found);
    }

    /// The parameters a server reported to an earlier login of this user with these start-up
    /// parameters.
    pub fn login_parameters(
        &self,
        user: &str,
        startup: &[(String, String)],
    ) -> Option<Arc<Parameters>> {
        let cache = self
            .login_parameters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.get(user)?.get(startup).cloned()
    }

    /// Records what a server reported at login (bounded: distinct start-up parameters are few
    /// in practice, but a client could invent many), and returns it as kept. Nothing is copied
    /// when the same was recorded before (every login of a session-pooled client).
    pub fn remember_login_parameters(
        &self,
        user: &str,
        startup: &[(String, String)],
        reported: &[(String, String)],
    ) -> Arc<Parameters> {
        let mut cache = self
            .login_parameters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = cache.get(user).and_then(|m| m.get(startup)) {
            if known.as_slice() == reported {
                return Arc::clone(known);
            }
        }
        if cache.values().map(HashMap::len).sum::<usize>() > 10_000 {
            cache.clear();
        }
        let kept = Arc::new(reported.to_vec());
        cache
            .entry(user.to_owned())
            .or_default()
            .insert(startup.to_vec(), Arc::clone(&kept));
        kept
    }

    /// Pool upkeep, run periodically: closes idle connections past their time and those of nodes
    /// that are down or removed from the configuration.
    pub fn maintain_pools(&self) {
        use pgrouter_topology::NodeState;
        self.pools.prune();
        let table = self.topology.load();
        for (i, node) in table.nodes.iter().enumerate() {
            if matches!(node.state, NodeState::Down | NodeState::Removed) {
                self.pools.close_idle(i);
            }
        }
    }

    /// The endpoint a session of `database` and `application_name` is served as: `listen`'s
    /// clients matching `routing.primary_databases` or `primary_applications` run every
    /// statement on the primary, as `primary_listen`'s.
    pub fn session_endpoint(
        &self,
        endpoint: crate::routing::Endpoint,
        database: &str,
        application_name: Option<&str>,
    ) -> crate::routing::Endpoint {
        let live = self.live();
        let [databases, applications] = &live.primary_sessions;
        let matches =
            |patterns: &[regex::Regex], name: &str| patterns.iter().any(|p| p.is_match(name));
        if endpoint == crate::routing::Endpoint::Split
            && (matches(databases, database)
                || application_name.is_some_and(|app| matches(applications, app)))
        {
            crate::routing::Endpoint::Primary
        } else {
            endpoint
        }
    }

    /// Records the primary's WAL position in the routing table now (called once a second).
    pub fn record_primary_position(&self) {
        let table = self.topology.load();
        let Some(position) = table
            .primary
            .and_then(|p| table.nodes.get(p))
            .and_then(|n| n.wal_position)
        else {
            return;
        };
        let now = std::time::Instant::now();
        let mut history = self
            .primary_positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        history.push_back((now, position));
        while history.len() > 600 {
            history.pop_front();
        }
    }

    /// The primary's WAL position as recorded at least `age` ago (the latest such record);
    /// when none is that old, the oldest record (a stricter bound); `None` without records.
    pub fn primary_position_before(&self, age: std::time::Duration) -> Option<u64> {
        let history = self
            .primary_positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cutoff = std::time::Instant::now().checked_sub(age);
        history
            .iter()
            .rev()
            .find(|(at, _)| cutoff.is_some_and(|c| *at <= c))
            .or_else(|| history.front())
            .map(|(_, position)| *position)
    }

    /// Whether a session of this user on this database uses transaction pooling:
    /// `users[].pool_mode`, else `pool.database_modes`, else `pool.mode`.
    pub fn transaction_pooling(&self, user: &UserEntry, database: &str) -> bool {
        if user.pool_mode_set {
            return user.transaction_pooling;
        }
        match self.live.load().config.pool.database_modes.get(database) {
            Some(mode) => *mode == pgrouter_config::PoolMode::Transaction,
            None => user.transaction_pooling,
        }
    }

    /// A node's configured name (`#index` for a slot that does not exist).
    pub fn node_name(&self, node: usize) -> String {
        self.topology
            .node(node)
            .map_or_else(|| format!("#{node}"), |n| n.target.name.clone())
    }

    /// Bytes received from and sent to clients since start-up: those of clients that left plus
    /// those of the clients connected now.
    pub fn client_bytes(&self, live: &[Arc<crate::clients::ClientEntry>]) -> (u64, u64) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        live.iter().fold(
            (
                load(&self.stats.closed_bytes_received),
                load(&self.stats.closed_bytes_sent),
            ),
            |(r, s), c| (r + load(&c.bytes_received), s + load(&c.bytes_sent)),
        )
    }

    /// Client messages larger than this stream to their server as they arrive instead of being
    /// read whole (`routing.max_parse_size`: larger statements are not classified anyway).
    pub fn stream_threshold(&self) -> usize {
        self.live.load().stream_threshold()
    }

    /// Largest client message accepted, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.live.load().max_message_size()
    }
}

/// See [`ProxyContext::live_cache`].
pub(crate) type LiveCache<'a> = arc_swap::Cache<&'a ArcSwap<Live>, Arc<Live>>;

impl Live {
    /// Client messages larger than this stream to their server as they arrive (see
    /// [`ProxyContext::stream_threshold`]).
    pub fn stream_threshold(&self) -> usize {
        match byte_limit(self.config.routing.max_parse_size) {
            0 => usize::MAX,
            n => n,
        }
    }

    /// Largest client message accepted, in bytes.
    pub fn max_message_size(&self) -> usize {
        let max = self.config.client.max_message_size.bytes();
        usize::try_from(max).unwrap_or(usize::MAX)
    }
}

/// A configured size as `usize` (saturating on 32-bit targets).
fn byte_limit(size: pgrouter_config::ByteSize) -> usize {
    usize::try_from(size.bytes()).unwrap_or(usize::MAX)
}

/// What the health checks watch of a configured node.
fn node_target(n: &NodeConfig) -> NodeTarget {
    NodeTarget {
        name: n.name.clone(),
        host: n.host.clone(),
        port: n.port,
        weight: n.weight,
        patroni_url: n.patroni_url.clone(),
    }
}

/// The pool crate's settings, from the configuration.
fn pool_settings(config: &Config) -> pgrouter_pool::PoolSettings {
    pgrouter_pool::PoolSettings {
        max_server_connections: config.pool.max_server_connections,
        min_idle: config.pool.min_idle,
        idle_timeout: config.pool.idle_timeout.get(),
        max_lifetime: config.pool.max_lifetime.get(),
        checkout_timeout: config.pool.checkout_timeout.get(),
        reset_query: config.pool.reset_query.clone(),
    }
}

/// A configured function list: plain names, and the entries that are regular expressions
/// (`pgrouter_config::function_pattern`; configuration validation has compiled each once).
fn function_list(entries: &[String]) -> pgrouter_sql::FunctionList {
    let (patterns, names): (Vec<&String>, Vec<&String>) = entries
        .iter()
        .partition(|e| pgrouter_config::function_pattern(e).is_some());
    pgrouter_sql::FunctionList::new(
        names.into_iter().cloned(),
        patterns
            .into_iter()
            .filter_map(|e| regex::Regex::new(&pgrouter_config::function_pattern(e)?).ok())
            .collect(),
    )
}

/// Compiles whole-text patterns (`pgrouter_config::whole_text_pattern`; configuration validation
/// has compiled each once).
fn whole_text_patterns(entries: &[String]) -> Vec<regex::Regex> {
    entries
        .iter()
        .filter_map(|e| regex::Regex::new(&pgrouter_config::whole_text_pattern(e)).ok())
        .collect()
}

/// The statement classifier `routing` describes: function lists (names and patterns), the
/// parse size limit, the query patterns sent to the primary.
pub fn classifier(routing: &pgrouter_config::RoutingConfig) -> Classifier {
    Classifier::new(FunctionPolicy {
        write_functions: function_list(&routing.write_functions),
        read_only_functions: routing.read_only_functions.as_deref().map(function_list),
    })
    .with_max_parse_len(usize::try_from(routing.max_parse_size.bytes()).unwrap_or(usize::MAX))
    .with_primary_patterns(whole_text_patterns(&routing.primary_query_patterns))
}
