//! The console's `SHOW POOLS`, `STATS`, `CLIENTS`, `SERVERS`, `DATABASES` and `LISTS` in
//! PgBouncer's shape: PgBouncer 1.18's columns in its order, so PgBouncer's exporters and
//! dashboards read pgrouter unchanged, then pgrouter's own columns after them.
//!
//! Where pgrouter has no such thing (cancel-request states, per-statement timings) the column is
//! 0 or empty; docs/observability.md says which. Pure apart from reading the shared registries.

use super::views::ResultSet;
use crate::clients::{ClientEntry, ClientState};
use crate::context::ProxyContext;
use crate::stats::DatabaseTotals;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Unix seconds as PgBouncer prints a time: `YYYY-MM-DD HH:MM:SS UTC`.
fn time(unix: u64) -> String {
    let t = super::views::timestamp(unix);
    format!("{} UTC", t.strip_suffix("+00").unwrap_or(&t))
}

/// The pool mode in force for a (database, user) pair.
fn pool_mode(ctx: &ProxyContext, database: &str, user: &str) -> &'static str {
    let config = ctx.config();
    let mode = config
        .users
        .iter()
        .find(|u| u.name == user)
        .and_then(|u| u.pool_mode)
        .or_else(|| config.pool.database_modes.get(database).copied())
        .unwrap_or(config.pool.mode);
    mode_name(mode)
}

/// A pool mode as PgBouncer names it.
fn mode_name(mode: pgrouter_config::PoolMode) -> &'static str {
    match mode {
        pgrouter_config::PoolMode::Session => "session",
        pgrouter_config::PoolMode::Transaction => "transaction",
    }
}

/// Clients, idle and held server connections per (database, user).
#[derive(Default)]
struct PoolCounts {
    clients: [u64; 4],
    servers_held: u64,
    servers_idle: u64,
}

fn pool_counts(ctx: &ProxyContext) -> BTreeMap<(String, String), PoolCounts> {
    let mut pools: BTreeMap<(String, String), PoolCounts> = BTreeMap::new();
    for c in ctx.clients.snapshot() {
        let Some(login) = c.login.get() else { continue };
        let pool = pools
            .entry((login.database.clone(), login.user.clone()))
            .or_default();
        pool.clients[c.state() as usize] += 1;
        pool.servers_held += [c.primary.get(), c.read.get()].iter().flatten().count() as u64;
    }
    for idle in ctx.pools.idle_connections() {
        let key = (idle.key.login.database.clone(), idle.key.login.user.clone());
        pools.entry(key).or_default().servers_idle += 1;
    }
    pools
}

/// `SHOW POOLS`: one row per database and user. `cl_active` counts clients not waiting for a
/// server connection (idle or running), as PgBouncer does; `sv_active` server connections held
/// by clients, `sv_idle` those idle in the pools, over every node. pgrouter adds `cl_idle` and
/// `cl_login`.
pub fn pools(ctx: &ProxyContext) -> ResultSet {
    let mut rs = ResultSet::new(&[
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "cl_active_cancel_req",
        "cl_waiting_cancel_req",
        "sv_active",
        "sv_active_cancel",
        "sv_being_canceled",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
        "maxwait",
        "maxwait_us",
        "pool_mode",
        "cl_idle",
        "cl_login",
    ]);
    for ((database, user), p) in pool_counts(ctx) {
        let clients = |s: ClientState| p.clients[s as usize];
        let mode = pool_mode(ctx, &database, &user);
        rs.push(vec![
            text(&database),
            text(&user),
            text(clients(ClientState::Active) + clients(ClientState::Idle)),
            text(clients(ClientState::Waiting)),
            text(0),
            text(0),
            text(p.servers_held),
            text(0),
            text(0),
            text(p.servers_idle),
            text(0),
            text(0),
            text(0),
            text(0),
            text(0),
            text(mode),
            text(clients(ClientState::Idle)),
            text(clients(ClientState::Login)),
        ]);
    }
    rs
}

/// `SHOW STATS`: one row per database, since start-up. pgrouter counts requests (a simple query,
/// or an extended-protocol segment up to `Sync`), not transactions and statements apart:
/// `total_xact_count` and `total_query_count` are both requests; times and averages are 0.
/// pgrouter adds `total_requests`, PgBouncer's name for the count before 1.8, which Debian's
/// prometheus-pgbouncer-exporter still reads.
pub fn stats(ctx: &ProxyContext) -> ResultSet {
    let mut totals = ctx.stats.closed_by_database();
    for c in ctx.clients.snapshot() {
        let Some(login) = c.login.get() else { continue };
        if !c.authenticated.load(Ordering::Relaxed) {
            continue;
        }
        totals
            .entry(login.database.clone())
            .or_default()
            .add(live_totals(&c));
    }
    let mut rs = ResultSet::new(&[
        "database",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "total_requests",
    ]);
    for (database, t) in totals {
        let mut row = vec![
            text(database),
            text(t.requests),
            text(t.requests),
            text(t.received),
            text(t.sent),
        ];
        row.extend((0..10).map(|_| text(0)));
        row.push(text(t.requests));
        rs.push(row);
    }
    rs
}

fn live_totals(c: &ClientEntry) -> DatabaseTotals {
    DatabaseTotals {
        requests: c.requests.load(Ordering::Relaxed),
        received: c.bytes_received.load(Ordering::Relaxed),
        sent: c.bytes_sent.load(Ordering::Relaxed),
    }
}

/// PgBouncer's columns for a client or server connection (`SHOW CLIENTS`, `SHOW SERVERS`),
/// then pgrouter's `extra` ones.
fn connection_columns(extra: &[&'static str]) -> ResultSet {
    const PGBOUNCER: [&str; 18] = [
        "type",
        "user",
        "database",
        "state",
        "addr",
        "port",
        "local_addr",
        "local_port",
        "connect_time",
        "request_time",
        "wait",
        "wait_us",
        "close_needed",
        "ptr",
        "link",
        "remote_pid",
        "tls",
        "application_name",
    ];
    let mut columns = PGBOUNCER.to_vec();
    columns.extend_from_slice(extra);
    ResultSet::new(&columns)
}

/// PgBouncer's client state: `login` until logged in, `waiting` for a server connection, else
/// `active` (PgBouncer calls a client `active` whether it runs a query or is idle).
fn client_state(state: ClientState) -> &'static str {
    match state {
        ClientState::Login => "login",
        ClientState::Waiting => "waiting",
        ClientState::Idle | ClientState::Active => "active",
    }
}

/// `SHOW CLIENTS`. `ptr` is pgrouter's client id (PgBouncer prints an address), `link` the held
/// server connections' backend pids. pgrouter adds its id, the held connections as
/// `node/backend pid`, requests, bytes and the endpoint.
pub fn clients(ctx: &ProxyContext) -> ResultSet {
    let mut rs = connection_columns(&[
        "id",
        "primary_server",
        "read_server",
        "requests",
        "bytes_received",
        "bytes_sent",
        "endpoint",
    ]);
    for c in ctx.clients.snapshot() {
        let login = c.login.get();
        let link =
            |l: Option<(usize, i32)>| l.map(|(n, pid)| format!("{}/{pid}", ctx.node_name(n)));
        let pids: Vec<String> = [c.primary.get(), c.read.get()]
            .into_iter()
            .flatten()
            .map(|(_, pid)| pid.to_string())
            .collect();
        rs.push(vec![
            text("C"),
            login.map(|l| l.user.clone()),
            login.map(|l| l.database.clone()),
            text(client_state(c.state())),
            text(c.address()),
            text(if c.local { 0 } else { c.addr.port() }),
            Some(String::new()),
            Some(String::new()),
            text(time(c.connected_at)),
            text(time(c.connected_at)),
            text(0),
            text(0),
            text(0),
            text(c.id),
            text(pids.join(",")),
            text(0),
            Some(String::new()),
            login.map(|l| l.application_name.clone()),
            text(c.id),
            link(c.primary.get()),
            link(c.read.get()),
            text(c.requests.load(Ordering::Relaxed)),
            text(c.bytes_received.load(Ordering::Relaxed)),
            text(c.bytes_sent.load(Ordering::Relaxed)),
            login.map(|l| l.endpoint.to_owned()),
        ]);
    }
    rs
}

/// `SHOW SERVERS`: the connections clients hold (`active`, `link` their client's id), then the
/// idle ones in the pools (`idle`). `addr`/`port` are the node's; pgrouter adds the node's name,
/// and for idle ones how long they have been idle and their age.
pub fn servers(ctx: &ProxyContext) -> ResultSet {
    let mut rs = connection_columns(&["node", "idle_seconds", "age_seconds"]);
    let table = ctx.topology.load();
    let address = |node: usize| {
        table
            .nodes
            .get(node)
            .map_or((String::new(), String::new()), |n| {
                (n.host.clone(), n.port.to_string())
            })
    };
    let now = pgrouter_topology::table::unix_now();
    let row = |rs: &mut ResultSet, s: ServerRow<'_>| {
        let (host, port) = address(s.node);
        rs.push(vec![
            text("S"),
            text(s.user),
            text(s.database),
            text(s.state),
            text(host),
            text(port),
            Some(String::new()),
            Some(String::new()),
            s.connect_time,
            s.request_time,
            text(0),
            text(0),
            text(0),
            text(s.pid),
            s.link,
            text(s.pid),
            Some(String::new()),
            Some(String::new()),
            text(ctx.node_name(s.node)),
            s.idle_seconds,
            s.age_seconds,
        ]);
    };
    for c in ctx.clients.snapshot() {
        let Some(login) = c.login.get() else { continue };
        for (node, pid) in [c.primary.get(), c.read.get()].into_iter().flatten() {
            row(
                &mut rs,
                ServerRow {
                    node,
                    user: &login.user,
                    database: &login.database,
                    state: "active",
                    pid,
                    link: text(c.id),
                    connect_time: Some(String::new()),
                    request_time: Some(String::new()),
                    idle_seconds: None,
                    age_seconds: None,
                },
            );
        }
    }
    let mut idle = ctx.pools.idle_connections();
    idle.sort_by_key(|i| (i.key.node, i.idle_for));
    for i in idle {
        let opened = time(now.saturating_sub(i.age.as_secs()));
        row(
            &mut rs,
            ServerRow {
                node: i.key.node,
                user: &i.key.login.user,
                database: &i.key.login.database,
                state: "idle",
                pid: i.process_id.unwrap_or(0),
                link: Some(String::new()),
                connect_time: text(&opened),
                request_time: text(time(now.saturating_sub(i.idle_for.as_secs()))),
                idle_seconds: text(i.idle_for.as_secs()),
                age_seconds: text(i.age.as_secs()),
            },
        );
    }
    rs
}

/// One server connection's cells that differ between held and idle ones.
struct ServerRow<'a> {
    node: usize,
    user: &'a str,
    database: &'a str,
    state: &'static str,
    pid: i32,
    link: Option<String>,
    connect_time: Option<String>,
    request_time: Option<String>,
    idle_seconds: Option<String>,
    age_seconds: Option<String>,
}

/// `SHOW DATABASES`: one row per database clients use, pointing at the primary (pgrouter has no
/// database entries: every database is reached on every node). `pool_size` is
/// `pool.max_server_connections` (per node), `max_connections` `client.max_connections_per_database`.
pub fn databases(ctx: &ProxyContext) -> ResultSet {
    let mut rs = ResultSet::new(&[
        "name",
        "host",
        "port",
        "database",
        "force_user",
        "pool_size",
        "min_pool_size",
        "reserve_pool",
        "pool_mode",
        "max_connections",
        "current_connections",
        "paused",
        "disabled",
    ]);
    let config = ctx.config();
    let table = ctx.topology.load();
    let (host, port) = table
        .primary
        .and_then(|p| table.nodes.get(p))
        .map_or((String::new(), String::new()), |n| {
            (n.host.clone(), n.port.to_string())
        });
    let mut current: BTreeMap<String, u64> = BTreeMap::new();
    for ((database, _), p) in pool_counts(ctx) {
        *current.entry(database).or_default() += p.servers_held + p.servers_idle;
    }
    for (database, connections) in current {
        let db_mode = mode_name(
            config
                .pool
                .database_modes
                .get(&database)
                .copied()
                .unwrap_or(config.pool.mode),
        );
        rs.push(vec![
            text(&database),
            text(&host),
            text(&port),
            text(&database),
            Some(String::new()),
            text(config.pool.max_server_connections),
            text(config.pool.min_idle),
            text(0),
            text(db_mode),
            text(config.client.max_connections_per_database),
            text(connections),
            text(0),
            text(0),
        ]);
    }
    rs
}

/// `SHOW LISTS`: PgBouncer's twelve counts (`free_*` are pgrouter's headroom under
/// `client.max_connections` and the server connection limits; no DNS cache: 0).
pub fn lists(ctx: &ProxyContext) -> ResultSet {
    let pools = pool_counts(ctx);
    let databases: std::collections::BTreeSet<&String> = pools.keys().map(|(d, _)| d).collect();
    let users: std::collections::BTreeSet<&String> = pools.keys().map(|(_, u)| u).collect();
    let clients = ctx.clients.snapshot();
    let login_clients = clients
        .iter()
        .filter(|c| c.state() == ClientState::Login)
        .count() as u64;
    let used_clients = clients.len() as u64 - login_clients;
    let used_servers: u64 = pools.values().map(|p| p.servers_held).sum();
    let free_servers: u64 = pools.values().map(|p| p.servers_idle).sum();
    let config = ctx.config();
    let free_clients =
        u64::from(config.client.max_connections).saturating_sub(clients.len() as u64);
    let mut rs = ResultSet::new(&["list", "items"]);
    for (name, value) in [
        ("databases", databases.len() as u64),
        ("users", users.len() as u64),
        ("pools", pools.len() as u64),
        ("free_clients", free_clients),
        ("used_clients", used_clients),
        ("login_clients", login_clients),
        ("free_servers", free_servers),
        ("used_servers", used_servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        rs.push(vec![text(name), text(value)]);
    }
    rs
}
