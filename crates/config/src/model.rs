//! The configuration model. Every field is documented here and in `docs/configuration.md`;
//! unknown keys are rejected everywhere.

use crate::values::{ByteSize, Duration, Secret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to (`IP:port`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the admin HTTP server (`/metrics`, `/health`, …).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Optional address whose clients run every statement on the primary (no read splitting):
    /// for applications that need read-your-writes everywhere, behind a "primary" Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_listen: Option<SocketAddr>,
    /// Optional address whose clients run every statement on a replica, in read-only
    /// transactions: for reporting and analytics, behind a "read-only" Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_listen: Option<SocketAddr>,
    /// Optional directory of a Unix-domain socket listener, named as PostgreSQL names its own
    /// (`<dir>/.s.PGSQL.<port>`), e.g. `/var/run/postgresql`: local clients connect with
    /// `host=/var/run/postgresql`. Its clients are served as `listen`'s (reads split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket_dir: Option<PathBuf>,
    /// The port in the socket's name; default: `listen`'s port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket_port: Option<u16>,
    /// This instance's number among several pgrouters behind one Service or load balancer
    /// (1–255; 0: it runs alone). It is encoded in the process id clients get in
    /// `BackendKeyData`, so that a cancel request reaching another instance is forwarded here.
    #[serde(default)]
    pub peer_id: u8,
    /// The other instances, by id: where a cancel request for one of their clients is
    /// forwarded (this instance's own entry may be listed too, so that all share one list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerConfig>,
    /// `host:port` resolving to every instance (a Kubernetes headless Service): a cancel request
    /// for a client of no instance in `peers` is forwarded to each address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_dns: Option<String>,
    /// The PostgreSQL servers. Roles are discovered, not configured (`topology`).
    pub nodes: Vec<NodeConfig>,
    /// Users allowed to connect, with the password pgrouter checks and also uses for its own login
    /// to the servers.
    pub users: Vec<UserConfig>,
    /// Threads serving clients: `1` (default) runs everything on one thread, which costs the least
    /// CPU per transaction on small machines; `0` uses one thread per CPU core; `n` uses `n`.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: u16,
    /// Limits applied to client connections.
    #[serde(default)]
    pub client: ClientConfig,
    /// Server connection settings.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Read/write splitting.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// How node health is checked.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// How roles are discovered and failovers followed.
    #[serde(default)]
    pub topology: TopologyConfig,
    /// The admin console and readiness.
    #[serde(default)]
    pub admin: AdminConfig,
    /// TLS towards clients.
    #[serde(default)]
    pub tls: TlsConfig,
    /// pgrouter's connections to the servers.
    #[serde(default)]
    pub server_tls: ServerTlsConfig,
    /// TCP keepalive on client and server sockets, so that a peer that vanished (a crashed
    /// host, a dropped network path) is noticed instead of waited for.
    #[serde(default)]
    pub tcp_keepalive: TcpKeepaliveConfig,
    /// Users not listed under `users` are looked up on the primary (PgBouncer's `auth_query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<AuthQueryConfig>,
    /// Client access rules, like `pg_hba.conf` (first match wins; with rules, no match is
    /// refused). Empty: every listed user may log in from anywhere with its own `auth`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<crate::access::AccessRule>,
    /// On SIGTERM/SIGINT, how long open transactions and running requests may go on before
    /// their sessions are closed (idle sessions are closed at once).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The SQL admin console (virtual database `pgrouter`) and the readiness rule.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Users (listed under `users`, with their passwords) who may connect to the virtual
    /// database `pgrouter`. Empty: the console is closed to everyone.
    #[serde(default)]
    pub users: Vec<String>,
    /// `/ready` also answers 200 without a primary while some node serves reads (a read-only
    /// service stays in its load balancer during a failover). Default: a primary is required.
    #[serde(default)]
    pub ready_without_primary: bool,
    /// Credentials `/metrics` and `/nodes` require on `admin_listen` (the probes `/health` and
    /// `/ready` never do). Unset: no authentication (bind `admin_listen` to an internal address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_auth: Option<AdminHttpAuth>,
    /// `admin_listen` also speaks https, with `tls:`'s certificate, and `/metrics` and `/nodes`
    /// are served over https only (the probes answer on both). Needs `tls.mode` other than
    /// `disable`.
    #[serde(default)]
    pub https: bool,
}

/// `admin.http_auth`: a bearer token, basic authentication, or both (either is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminHttpAuth {
    /// `Authorization: Bearer <token>` (Prometheus' `authorization` / `bearer_token_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Basic authentication user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// Who health probes log in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckLogin {
    /// Role name.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Database.
    pub database: String,
}

impl Config {
    /// The health probes' login: `health_check.user`/`password`/`database`, with the defaults
    /// documented there filled in.
    pub fn health_check_login(&self) -> HealthCheckLogin {
        let hc = &self.health_check;
        let listed = |name: &str| self.users.iter().find(|u| u.name == name);
        let user = hc
            .user
            .clone()
            .or_else(|| self.users.first().map(|u| u.name.clone()))
            .unwrap_or_default();
        let password = hc
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .or_else(|| listed(&user).map(|u| u.password().to_owned()))
            .unwrap_or_default();
        let database = hc.database.clone().unwrap_or_else(|| {
            match self.topology.discovery {
                Discovery::Repmgr => "repmgr",
                Discovery::Sql | Discovery::Patroni => "postgres",
            }
            .to_owned()
        });
        HealthCheckLogin {
            user,
            password,
            database,
        }
    }
}

fn default_worker_threads() -> u16 {
    1
}

/// Another pgrouter instance (`peers`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `peer_id`.
    pub id: u8,
    /// Its host name or address.
    pub host: String,
    /// Its client port.
    pub port: u16,
}

impl Config {
    /// The Unix-domain socket to listen on (`unix_socket_dir`), named as PostgreSQL names it.
    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        let port = self.unix_socket_port.unwrap_or(self.listen.port());
        self.unix_socket_dir
            .as_ref()
            .map(|dir| dir.join(format!(".s.PGSQL.{port}")))
    }
}

/// A `routing.write_functions`/`read_only_functions` entry that is a regular expression (it has
/// one of `.*+?[](){}|^$\`), as Pgpool-II reads its function lists: the pattern, anchored at both
/// ends and case-insensitive as Pgpool-II anchors it. `None`: a plain function name.
pub fn function_pattern(entry: &str) -> Option<String> {
    if !entry.contains(|c: char| ".*+?[](){}|^$\\".contains(c)) {
        return None;
    }
    let inner = entry.strip_prefix('^').unwrap_or(entry);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    Some(format!("(?i)^(?:{inner})$"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6432))
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9930))
}

/// One PostgreSQL server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name used in logs, metrics and the admin console.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Relative share of reads this node serves; `0` means it never serves reads.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// This node's Patroni REST API (`http://host:port`), for `topology.discovery: patroni`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni_url: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}

fn default_weight() -> u32 {
    1
}

/// How pgrouter authenticates a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256, PostgreSQL's default since version 14.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Salted MD5, for old clients.
    #[serde(rename = "md5")]
    Md5,
    /// No password is asked.
    #[serde(rename = "trust")]
    Trust,
    /// A client certificate over TLS, chaining to `tls.ca_file`, whose common name is the user
    /// name (PostgreSQL's `cert`). No password is asked.
    #[serde(rename = "cert")]
    Cert,
}

/// A user pgrouter accepts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// PostgreSQL role name.
    pub name: String,
    /// The password, literally or as `${ENV_VAR}`. Exactly one of `password` and `password_file`
    /// must be set. It is also the password pgrouter uses to log in to the servers as this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (trailing newline ignored), e.g. a mounted Kubernetes secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// How clients logging in as this user are authenticated.
    #[serde(default)]
    pub auth: AuthMethod,
    /// This user's pool mode, instead of `pool.mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_mode: Option<PoolMode>,
}

/// What `users[].password` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredForm {
    /// The password itself.
    Plain,
    /// A SCRAM-SHA-256 verifier as in `pg_authid` (`SCRAM-SHA-256$<iterations>:<salt>$…`).
    ScramVerifier,
    /// An md5 hash as in `pg_authid` (`md5` and 32 hex digits).
    Md5Hash,
}

impl StoredForm {
    /// Tells the form of a configured password, by PostgreSQL's rules (a text that does not
    /// parse as a verifier or a hash is a password).
    pub fn of(password: &str) -> Self {
        use pgrouter_protocol::auth::{md5, scram::ScramSecret};
        if ScramSecret::from_verifier(password).is_some() {
            StoredForm::ScramVerifier
        } else if md5::is_stored_hash(password) {
            StoredForm::Md5Hash
        } else {
            StoredForm::Plain
        }
    }
}

impl UserConfig {
    /// What the password field holds.
    pub fn stored_form(&self) -> StoredForm {
        StoredForm::of(self.password())
    }

    /// The resolved password (empty only for a `trust` user configured without one).
    pub fn password(&self) -> &str {
        self.password.as_ref().map(Secret::expose).unwrap_or("")
    }
}

/// Limits on client connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Time a client has to complete start-up and authentication (PostgreSQL's
    /// `authentication_timeout`).
    pub login_timeout: Duration,
    /// Largest message a client may send; a larger one closes that client with SQLSTATE 08P01.
    pub max_message_size: ByteSize,
    /// Client connections pgrouter accepts at once (`0`: no limit).
    pub max_connections: u32,
    /// Client connections per user (`0`: no limit).
    pub max_connections_per_user: u32,
    /// Client connections per database (`0`: no limit).
    pub max_connections_per_database: u32,
    /// Connections still logging in (before authentication completes); more are refused at
    /// once (`0`: no limit). Bounds what clients that never finish a login can hold.
    pub max_pending_logins: u32,
    /// Connections from one client address, logging in or logged in (`0`: no limit).
    pub max_connections_per_address: u32,
    /// A failed login (wrong password, no access rule, unknown user) gets its error this much
    /// later, as PostgreSQL's `auth_delay`: password guessing slows down (`0s`: at once).
    pub auth_failure_delay: Duration,
    /// A session idle this long outside a transaction is closed (`0s`: never), as PostgreSQL's
    /// `idle_session_timeout`.
    pub idle_timeout: Duration,
    /// A session idle this long inside a transaction is closed and the transaction rolled back
    /// (`0s`: never), as PostgreSQL's `idle_in_transaction_session_timeout`.
    pub idle_transaction_timeout: Duration,
    /// A request the server has not finished answering after this long is cancelled on the
    /// server (`0s`: never); a server that ignores the cancel for as long again loses the
    /// session.
    pub query_timeout: Duration,
    /// Named prepared statements (protocol-level) one session may hold (`0`: no limit): pgrouter
    /// keeps each one's `Parse` to prepare it again on other server connections.
    pub max_prepared_statements: u32,
    /// Bytes of statement definitions (their `Parse` messages) pgrouter keeps for one session
    /// (`0`: no limit); a `Parse` that would take it past gets SQLSTATE 54000.
    pub max_prepared_statement_memory: ByteSize,
    /// Bytes all client read buffers together may hold beyond their first 16 kB each
    /// (`0`: no limit). A buffer grows only to gather a message routing reads whole; past this
    /// budget a session stops reading from its client until memory is freed, and a message
    /// still waiting streams to the primary unclassified.
    pub max_buffer_memory: ByteSize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            login_timeout: Duration::from_secs(60),
            max_message_size: ByteSize(64 << 20),
            max_connections: 10_000,
            max_connections_per_user: 0,
            max_connections_per_database: 0,
            max_pending_logins: 1_000,
            max_connections_per_address: 0,
            auth_failure_delay: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(0),
            idle_transaction_timeout: Duration::from_secs(0),
            query_timeout: Duration::from_secs(0),
            max_prepared_statements: 10_000,
            max_prepared_statement_memory: ByteSize(16 << 20),
            max_buffer_memory: ByteSize(64 << 20),
        }
    }
}

/// Server connections and their pools.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// How long a client keeps a server connection (overridable per user).
    pub mode: PoolMode,
    /// Time allowed to connect and log in to a server.
    pub connect_timeout: Duration,
    /// Server connections per node, idle and in use together.
    pub max_server_connections: u32,
    /// Idle connections per pool kept even past `idle_timeout`.
    pub min_idle: u32,
    /// Idle connections unused this long are closed (`0s`: never).
    pub idle_timeout: Duration,
    /// Connections older than this are closed instead of reused (`0s`: never).
    pub max_lifetime: Duration,
    /// How long a client waits for a server connection when its node is full, before
    /// `53300`.
    pub checkout_timeout: Duration,
    /// Run on a server connection before another client may use it.
    pub reset_query: String,
    /// Pool mode per database, instead of `mode` (a user's own `pool_mode` wins).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub database_modes: std::collections::BTreeMap<String, PoolMode>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            mode: PoolMode::Session,
            connect_timeout: Duration::from_secs(5),
            max_server_connections: 40,
            min_idle: 0,
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            checkout_timeout: Duration::from_secs(10),
            reset_query: "DISCARD ALL".into(),
            database_modes: std::collections::BTreeMap::new(),
        }
    }
}

/// How long a client keeps a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// From the first use until the client disconnects.
    #[default]
    Session,
    /// For one transaction (or one statement outside a transaction); then it serves other
    /// clients.
    Transaction,
}

/// Read/write splitting settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send provably read-only statements to replicas (and to the primary in proportion to its
    /// weight). `false` sends everything to the primary.
    pub load_balance: bool,
    /// Extra functions that write or have side effects: a statement calling one goes to the
    /// primary (Pgpool-II's `write_function_list`).
    pub write_functions: Vec<String>,
    /// When set, only these functions may appear in a statement sent to a replica; any other
    /// function sends it to the primary (Pgpool-II's `read_only_function_list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_functions: Option<Vec<String>>,
    /// A replica further behind the primary than this many bytes of WAL serves no reads.
    /// `0` disables the check.
    pub max_replica_lag_bytes: ByteSize,
    /// A replica whose last replayed transaction is older than this, while it still has WAL to
    /// replay, serves no reads. `0s` disables the check.
    pub max_replica_lag: Duration,
    /// With no usable replica, reads go to the primary (`true`) or fail with an error (`false`).
    pub reads_fallback_to_primary: bool,
    /// Statements longer than this are not parsed (parsing holds the worker thread, and every
    /// client on it, for a time that grows with the length): they go to the primary, as
    /// statements pgrouter cannot read. Plain `SELECT`s and plain DML (no parentheses) of any
    /// length still take the lexical fast path.
    pub max_parse_size: ByteSize,
    /// What a session's reads do once it has written: keep being balanced (`balance`), or go
    /// to the primary for the rest of the session (`primary`, Pgpool-II's
    /// `disable_load_balance_on_write = always`).
    pub reads_after_write: ReadsAfterWrite,
    /// Reads whose whole text matches one of these regular expressions (case-insensitive, `.`
    /// matching new lines too) go to the primary (Pgpool-II's
    /// `primary_routing_query_pattern_list`).
    pub primary_query_patterns: Vec<String>,
    /// Read-your-writes: after a session's write, its reads go only to replicas that have
    /// replayed it (`session`, default), or anywhere (`off`).
    pub read_your_writes: ReadYourWrites,
    /// How long a read waits for a replica to replay the session's last write before it runs on
    /// the primary instead.
    pub read_your_writes_wait: Duration,
    /// Sessions whose database name matches one of these regular expressions (whole name,
    /// case-insensitive) run every statement on the primary, as `primary_listen`'s do
    /// (Pgpool-II's `database_redirect_preference_list` entries `db:primary`).
    pub primary_databases: Vec<String>,
    /// Sessions whose `application_name` matches one of these run every statement on the
    /// primary (Pgpool-II's `app_name_redirect_preference_list` entries `app:primary`).
    pub primary_applications: Vec<String>,
}

/// `routing.read_your_writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadYourWrites {
    /// A session's reads see its own writes.
    #[default]
    Session,
    /// Reads go to any replica within the lag limits.
    Off,
}

/// `routing.reads_after_write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadsAfterWrite {
    /// Reads outside transactions are balanced whatever the session wrote before.
    #[default]
    Balance,
    /// After the session's first write, every statement runs on the primary.
    Primary,
}

/// A `routing.primary_query_patterns`, `primary_databases` or `primary_applications` entry as
/// the regular expression it stands for: the whole text must match, case-insensitive, `.`
/// matching new lines (as Pgpool-II's POSIX patterns).
pub fn whole_text_pattern(entry: &str) -> String {
    let inner = entry.strip_prefix('^').unwrap_or(entry);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    format!("(?is)^(?:{inner})$")
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            load_balance: true,
            write_functions: Vec::new(),
            read_only_functions: None,
            max_replica_lag_bytes: ByteSize(16 << 20),
            max_replica_lag: Duration::from_secs(10),
            reads_fallback_to_primary: true,
            max_parse_size: ByteSize(256 << 10),
            reads_after_write: ReadsAfterWrite::Balance,
            read_your_writes: ReadYourWrites::Session,
            read_your_writes_wait: Duration::from_millis(50),
            primary_query_patterns: Vec::new(),
            primary_databases: Vec::new(),
            primary_applications: Vec::new(),
        }
    }
}

/// Health checks: one probe per node every `interval`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Time between two probes of a node.
    pub interval: Duration,
    /// Time a probe (connect, query, or REST call) may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failed probes before a node is marked down.
    pub max_failures: u32,
    /// Consecutive successful probes before a down node returns.
    pub min_successes: u32,
    /// Role the probes log in as; defaults to the first entry of `users`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its password; defaults to that user's password from `users` when `user` names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Database the probes connect to; defaults to `repmgr` with `topology.discovery: repmgr`
    /// (repmgr's metadata lives there) and to `postgres` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            max_failures: 3,
            min_successes: 2,
            user: None,
            password: None,
            database: None,
        }
    }
}

/// Where roles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// Ask each node: `pg_is_in_recovery()`, timeline and WAL positions.
    #[default]
    Sql,
    /// Ask each node's Patroni REST API (`nodes[].patroni_url`); the Patroni leader is the primary.
    Patroni,
    /// Read repmgr's metadata (`repmgr.nodes`), cross-checked with `pg_is_in_recovery()`.
    Repmgr,
}

/// Role discovery and failover following.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Where roles come from.
    pub discovery: Discovery,
    /// How long writes wait for a primary when there is none before they fail.
    pub failover_timeout: Duration,
    /// Patroni and repmgr discovery: also route to cluster members the HA manager lists that the
    /// configuration does not (a replica added by Patroni or registered with repmgr).
    pub discover_members: bool,
    /// How to reach Patroni's REST API: TLS (`https://` URLs) and basic authentication.
    #[serde(skip_serializing_if = "PatroniApiConfig::is_default")]
    pub patroni: PatroniApiConfig,
}

/// `topology.patroni`: Patroni's `restapi` TLS and authentication, seen from its client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatroniApiConfig {
    /// CA certificates (PEM) Patroni's certificate must chain to, for `https://` URLs (its
    /// name is checked against the URL's host). Relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// pgrouter's client certificate (PEM), for `restapi.verify_client`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// Its key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// Basic authentication (`restapi.authentication`) user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password (`${ENV_VAR}` works).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl PatroniApiConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            discovery: Discovery::Sql,
            failover_timeout: Duration::from_secs(30),
            discover_members: false,
            patroni: PatroniApiConfig::default(),
        }
    }
}

/// TLS on pgrouter's connections to the servers: client sessions' server connections and the
/// health probes (`server_tls:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// Whether to use TLS and what to verify, with libpq's `sslmode` meanings.
    pub mode: ServerTlsMode,
    /// CA certificates (PEM) the servers' certificates must chain to: required by `verify-ca`
    /// and `verify-full`; with `require`, given, it makes `require` verify the chain as libpq
    /// does when `root.crt` exists. Relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// pgrouter's client certificate chain (PEM), for servers whose `pg_hba.conf` says `cert`
    /// or `clientcert=verify-ca`. Relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM). Relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// Answer a server that asks for the password in clear text (`password` in its
    /// `pg_hba.conf`) over a connection without TLS. Off: such a server gets nothing and the
    /// login fails, so no password crosses the network readable.
    pub allow_cleartext_password: bool,
}

/// `server_tls.mode`: libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked (as
    /// libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked only against `ca_file` if one is given.
    Require,
    /// TLS, with a certificate that chains to `ca_file`.
    VerifyCa,
    /// TLS, with a certificate that chains to `ca_file` and names the host pgrouter connects to.
    VerifyFull,
}

/// `tcp_keepalive:` probes on idle TCP connections (client and server sockets).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpKeepaliveConfig {
    /// Keepalive on (`false`: the operating system's default, usually off).
    pub enabled: bool,
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is declared dead.
    pub count: u32,
}

impl Default for TcpKeepaliveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            count: 6,
        }
    }
}

/// The default `auth_query.query`: name, stored password and the end of its validity (`VALID
/// UNTIL`) as Unix seconds, NULL for none.
pub const DEFAULT_AUTH_QUERY: &str =
    "SELECT usename, passwd, extract(epoch FROM valuntil) FROM pg_shadow WHERE usename = $1";

/// `auth_query:` how users that are not listed are looked up on the primary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthQueryConfig {
    /// The role the look-up logs in as (a role that may read `pg_shadow`, or may call the
    /// SECURITY DEFINER function the query calls).
    pub user: String,
    /// Its password (`${ENV_VAR}` works); taken from `users` when the role is listed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Database to run the query in.
    #[serde(default = "default_auth_query_database")]
    pub database: String,
    /// The query: `$1` is the user name; it returns the name, the stored password (SCRAM
    /// verifier or md5 hash) and optionally the end of the password's validity as Unix seconds.
    #[serde(default = "default_auth_query")]
    pub query: String,
    /// How long a user found stays cached (a password changed on the server is seen after
    /// this at the latest; a user not found is never cached).
    #[serde(default = "default_auth_query_cache")]
    pub cache_lifetime: Duration,
}

fn default_auth_query_database() -> String {
    "postgres".into()
}

fn default_auth_query() -> String {
    DEFAULT_AUTH_QUERY.into()
}

fn default_auth_query_cache() -> Duration {
    Duration::from_secs(60)
}

/// TLS towards clients (`tls:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Whether clients may or must use TLS.
    pub mode: TlsMode,
    /// The certificate chain (PEM), leaf first. Relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1). Relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to. Given, clients may present
    /// a certificate, and access rules with `method: cert` accept a client whose certificate
    /// chains to it and whose common name is the user it logs in as. Relative to the
    /// configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
}

/// Whether clients may or must use TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// No TLS: an `SSLRequest` is answered `N`.
    #[default]
    Disable,
    /// TLS for clients that ask (as `prefer`: the server side of both is the same).
    Allow,
    /// TLS for clients that ask.
    Prefer,
    /// Only TLS: a client without it is refused.
    Require,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}
