//! Pgpool-II's SQL commands (`SHOW POOL_NODES`, …), answered by pgrouter itself on every client
//! connection, with Pgpool-II 4.x's column names and value formats, so the scripts, exporters and
//! dashboards of people coming from Pgpool-II keep working.
//!
//! Every column is text, as Pgpool-II sends it. Times are `YYYY-MM-DD HH:MM:SS` in UTC (Pgpool-II
//! prints its local time; containers run in UTC). Where pgrouter has no such thing (a child
//! process per client, per-kind statement counters) the column keeps Pgpool-II's shape and the
//! closest value pgrouter has; docs/migrating-from-pgpool.md lists each one.
//!
//! Pure apart from reading the shared counters: it never talks to a server and never waits.

use super::views::ResultSet;
use crate::clients::ClientState;
use crate::context::ProxyContext;
use pgrouter_topology::{NodeState, Role};
use std::sync::atomic::{AtomicU64, Ordering};

/// One of Pgpool-II's `SHOW POOL_*` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgpoolShow {
    /// `SHOW POOL_NODES`.
    Nodes,
    /// `SHOW POOL_VERSION`.
    Version,
    /// `SHOW POOL_POOLS`.
    Pools,
    /// `SHOW POOL_PROCESSES`.
    Processes,
    /// `SHOW POOL_HEALTH_CHECK_STATS`.
    HealthCheckStats,
    /// `SHOW POOL_BACKEND_STATS`.
    BackendStats,
}

/// The command a simple query's text is, if it is exactly one of Pgpool-II's `SHOW POOL_*`
/// (any case, surrounding blanks, an optional trailing `;`). Cheap on anything else: most texts
/// are refused at their first letter.
pub fn parse(text: &[u8]) -> Option<PgpoolShow> {
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    let first = begins_with_word(text, &["show"])?;
    let text = std::str::from_utf8(&text[first..]).ok()?.trim_end();
    let text = text.strip_suffix(';').unwrap_or(text);
    let mut words = text.split_ascii_whitespace();
    let (Some(show), Some(what), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    if !show.eq_ignore_ascii_case("show") {
        return None;
    }
    const COMMANDS: [(&str, PgpoolShow); 6] = [
        ("pool_nodes", PgpoolShow::Nodes),
        ("pool_version", PgpoolShow::Version),
        ("pool_pools", PgpoolShow::Pools),
        ("pool_processes", PgpoolShow::Processes),
        ("pool_health_check_stats", PgpoolShow::HealthCheckStats),
        ("pool_backend_stats", PgpoolShow::BackendStats),
    ];
    COMMANDS
        .iter()
        .find(|(name, _)| what.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

/// Where the statement in `text` starts, when its first word is one of `words` (lower-case
/// ASCII, matched in any case) followed by white space. Looked at byte by byte, before any UTF-8
/// check of the whole text: it runs on every simple query and every `Parse`, and refuses a
/// `SELECT` within its first letters.
pub(crate) fn begins_with_word(text: &[u8], words: &[&str]) -> Option<usize> {
    let first = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &text[first..];
    words
        .iter()
        .any(|w| {
            rest.len() > w.len()
                && rest[..w.len()].eq_ignore_ascii_case(w.as_bytes())
                && rest[w.len()].is_ascii_whitespace()
        })
        .then_some(first)
}

/// The answer to `command`.
pub fn answer(ctx: &ProxyContext, command: PgpoolShow) -> ResultSet {
    match command {
        PgpoolShow::Nodes => nodes(ctx),
        PgpoolShow::Version => version(),
        PgpoolShow::Pools => pools(ctx),
        PgpoolShow::Processes => processes(ctx),
        PgpoolShow::HealthCheckStats => health_check_stats(ctx),
        PgpoolShow::BackendStats => backend_stats(ctx),
    }
}

/// A statement a unit prepares or closes, for the session to remember: `Some` the Pgpool-II
/// command now under that name, `None` closed.
pub type StatementChange = (String, Option<PgpoolShow>);

/// The answer to an extended-protocol unit (its messages with their tags, `Parse` … `Sync`) made
/// only of Pgpool-II's commands: `Parse`s of them, and `Bind`/`Describe`/`Execute`/`Close` of
/// those statements (`known`: the ones prepared earlier) through the unnamed portal, with no
/// row limit (every column is `text`, whose binary form is its text). Returns the responses up to, not including, `ReadyForQuery`, and the
/// statements to remember or forget. `None`: anything else, which goes its usual way.
pub fn answer_extended<'a>(
    ctx: &ProxyContext,
    messages: impl Iterator<Item = (u8, &'a [u8])>,
    known: &std::collections::HashMap<String, PgpoolShow>,
) -> Option<(bytes::BytesMut, Vec<StatementChange>)> {
    use pgrouter_protocol::backend as be;
    use pgrouter_protocol::frontend as fe;
    let mut out = bytes::BytesMut::new();
    let mut changes: Vec<StatementChange> = Vec::new();
    let lookup = |changes: &[StatementChange], name: &[u8]| -> Option<PgpoolShow> {
        let name = std::str::from_utf8(name).ok()?;
        match changes.iter().rev().find(|(n, _)| n == name) {
            Some((_, command)) => *command,
            None => known.get(name).copied(),
        }
    };
    // The unnamed portal's command and result format (`text` is sent the same in both).
    let mut portal: Option<(PgpoolShow, i16)> = None;
    let mut synced = false;
    for (tag, body) in messages {
        if synced {
            return None;
        }
        match tag {
            fe::PARSE => {
                let (name, query) = fe::parse_parse(body)?;
                let command = parse(query)?;
                changes.push((std::str::from_utf8(name).ok()?.to_owned(), Some(command)));
                be::parse_complete(&mut out);
            }
            fe::BIND => {
                let (name, format) = fe::bind_portal_result_format(body)?;
                if !name.is_empty() {
                    return None;
                }
                portal = Some((lookup(&changes, fe::bind_statement(body)?)?, format?));
                be::bind_complete(&mut out);
            }
            fe::DESCRIBE => {
                let (kind, name) = fe::describe_target(body)?;
                // A statement's description has no formats yet (0); a portal's has its own.
                let (command, format) = if kind == fe::TARGET_STATEMENT {
                    let command = lookup(&changes, name)?;
                    be::no_parameters(&mut out);
                    (command, 0)
                } else if name.is_empty() {
                    portal?
                } else {
                    return None;
                };
                be::row_description_text_as(&mut out, &answer(ctx, command).columns, format);
            }
            fe::EXECUTE => {
                let (name, limit) = fe::execute_target(body)?;
                if !name.is_empty() || limit != 0 {
                    return None;
                }
                let rs = answer(ctx, portal?.0);
                for row in &rs.rows {
                    let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                    be::data_row_text(&mut out, &values);
                }
                be::command_complete(&mut out, &format!("SELECT {}", rs.rows.len()));
            }
            fe::CLOSE => {
                let (kind, name) = fe::describe_target(body)?;
                if kind == fe::TARGET_STATEMENT {
                    lookup(&changes, name)?;
                    changes.push((std::str::from_utf8(name).ok()?.to_owned(), None));
                } else if !name.is_empty() {
                    return None;
                }
                be::close_complete(&mut out);
            }
            fe::FLUSH => {}
            fe::SYNC => synced = true,
            _ => return None,
        }
    }
    synced.then_some((out, changes))
}

fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Pgpool-II's backend status: a node pgrouter cannot reach is `down`, any other `up` (a lagging
/// or disabled replica is still attached; it only serves no reads, see `load_balance_node`).
fn status(state: NodeState) -> &'static str {
    match state {
        NodeState::Down | NodeState::Removed => "down",
        _ => "up",
    }
}

/// Pgpool-II's role names.
fn role(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Replica => "standby",
        Role::Unknown => "unknown",
    }
}

/// Unix seconds as Pgpool-II prints a time (`YYYY-MM-DD HH:MM:SS`); empty for never (0).
fn pgpool_time(unix: u64) -> String {
    if unix == 0 {
        return String::new();
    }
    let t = super::views::timestamp(unix);
    t.strip_suffix("+00").unwrap_or(&t).to_owned()
}

/// The configured nodes, numbered from 0 as Pgpool-II numbers backends, with their slot.
fn backends(ctx: &ProxyContext) -> Vec<(usize, pgrouter_topology::NodeStatus)> {
    let table = ctx.topology.load();
    table.configured().map(|(i, n)| (i, n.clone())).collect()
}

/// `SHOW POOL_NODES`. `load_balance_node` is true for every node serving reads now (pgrouter
/// balances each statement, not each session); `replication_delay` is in bytes.
fn nodes(ctx: &ProxyContext) -> ResultSet {
    let table = ctx.topology.load();
    let total_weight: u64 = table.configured().map(|(_, n)| u64::from(n.weight)).sum();
    let mut rs = ResultSet::new(&[
        "node_id",
        "hostname",
        "port",
        "status",
        "pg_status",
        "lb_weight",
        "role",
        "pg_role",
        "select_cnt",
        "load_balance_node",
        "replication_delay",
        "replication_state",
        "replication_sync_state",
        "last_status_change",
    ]);
    for (id, (i, n)) in table.configured().enumerate() {
        let weight = if total_weight == 0 {
            0.0
        } else {
            f64::from(n.weight) / total_weight as f64
        };
        let delay = match n.role {
            Role::Primary => Some(0),
            _ => n.lag_bytes,
        };
        rs.push(vec![
            text(id),
            text(&n.host),
            text(n.port),
            text(status(n.state)),
            text(status(n.state)),
            text(format!("{weight:.6}")),
            text(role(n.role)),
            text(role(n.role)),
            text(ctx.stats.reads_served(i)),
            text(table.serves_reads(i)),
            text(delay.map_or_else(String::new, |d| d.to_string())),
            Some(String::new()),
            Some(String::new()),
            text(pgpool_time(n.last_change)),
        ]);
    }
    rs
}

/// `SHOW POOL_VERSION`: pgrouter's version in Pgpool-II's `X.Y.Z (name)` form.
fn version() -> ResultSet {
    let mut rs = ResultSet::new(&["pool_version"]);
    rs.push(vec![text(format!(
        "{} (pgrouter)",
        env!("CARGO_PKG_VERSION")
    ))]);
    rs
}

/// Pgpool-II's process status for a client in `state`.
fn process_status(state: ClientState) -> &'static str {
    match state {
        ClientState::Login => "Wait for connection",
        ClientState::Idle => "Idle",
        ClientState::Active | ClientState::Waiting => "Execute command",
    }
}

/// One server connection, as `SHOW POOL_POOLS` shows it.
struct PoolRow<'a> {
    backend: usize,
    database: &'a str,
    user: &'a str,
    backend_connection_time: String,
    client_connection_time: String,
    client_idle_duration: u64,
    server_pid: i32,
    held: bool,
    status: &'static str,
}

/// `SHOW POOL_POOLS`: one row per server connection, those clients hold (`pool_connected` 1)
/// then the idle ones in the pools (`Wait for connection`). `pool_pid` is pgrouter's process.
fn pools(ctx: &ProxyContext) -> ResultSet {
    let mut rs = ResultSet::new(&[
        "pool_pid",
        "start_time",
        "client_connection_count",
        "pool_id",
        "backend_id",
        "database",
        "username",
        "backend_connection_time",
        "client_connection_time",
        "client_disconnection_time",
        "client_idle_duration",
        "majorversion",
        "minorversion",
        "pool_counter",
        "pool_backendpid",
        "pool_connected",
        "status",
    ]);
    let ids: Vec<usize> = backends(ctx).into_iter().map(|(i, _)| i).collect();
    let backend_id = |slot: usize| ids.iter().position(|&i| i == slot);
    let now = pgrouter_topology::table::unix_now();
    let clients = ctx.clients.snapshot();
    let mut idle = ctx.pools.idle_connections();
    idle.sort_by_key(|i| (i.key.node, i.idle_for));
    let mut rows = Vec::new();
    for c in clients.iter() {
        let Some(login) = c.login.get() else { continue };
        for (node, server_pid) in [c.primary.get(), c.read.get()].into_iter().flatten() {
            let Some(backend) = backend_id(node) else {
                continue;
            };
            rows.push(PoolRow {
                backend,
                database: &login.database,
                user: &login.user,
                backend_connection_time: String::new(),
                client_connection_time: pgpool_time(c.connected_at),
                client_idle_duration: 0,
                server_pid,
                held: true,
                status: process_status(c.state()),
            });
        }
    }
    for i in &idle {
        let Some(backend) = backend_id(i.key.node) else {
            continue;
        };
        rows.push(PoolRow {
            backend,
            database: &i.key.login.database,
            user: &i.key.login.user,
            backend_connection_time: pgpool_time(now.saturating_sub(i.age.as_secs())),
            client_connection_time: String::new(),
            client_idle_duration: i.idle_for.as_secs(),
            server_pid: i.process_id.unwrap_or(0),
            held: false,
            status: "Wait for connection",
        });
    }
    let pid = std::process::id();
    let start = pgpool_time(ctx.started_at);
    for (pool_id, r) in rows.into_iter().enumerate() {
        rs.push(vec![
            text(pid),
            text(&start),
            text(u8::from(r.held)),
            text(pool_id),
            text(r.backend),
            text(r.database),
            text(r.user),
            Some(r.backend_connection_time),
            Some(r.client_connection_time),
            Some(String::new()),
            text(r.client_idle_duration),
            text(3),
            text(0),
            text(1),
            text(r.server_pid),
            text(u8::from(r.held)),
            text(r.status),
        ]);
    }
    rs
}

/// `SHOW POOL_PROCESSES`: one row per client (where Pgpool-II has a child process per client);
/// `pool_pid` is the process id pgrouter gave that client.
fn processes(ctx: &ProxyContext) -> ResultSet {
    let mut rs = ResultSet::new(&[
        "pool_pid",
        "start_time",
        "client_connection_count",
        "database",
        "username",
        "backend_connection_time",
        "pool_counter",
        "status",
    ]);
    for c in ctx.clients.snapshot() {
        let login = c.login.get();
        rs.push(vec![
            text(c.id),
            text(pgpool_time(c.connected_at)),
            text(1),
            text(login.map_or("", |l| l.database.as_str())),
            text(login.map_or("", |l| l.user.as_str())),
            text(pgpool_time(c.connected_at)),
            text(1),
            text(process_status(c.state())),
        ]);
    }
    rs
}

/// The columns that start `SHOW POOL_HEALTH_CHECK_STATS` and `SHOW POOL_BACKEND_STATS`, then
/// `more`.
fn node_columns(more: &[&'static str]) -> ResultSet {
    let mut columns = vec!["node_id", "hostname", "port", "status", "role"];
    columns.extend_from_slice(more);
    ResultSet::new(&columns)
}

/// The cells of [`node_columns`] for backend `id`.
fn node_cells(id: usize, n: &pgrouter_topology::NodeStatus) -> Vec<Option<String>> {
    vec![
        text(id),
        text(&n.host),
        text(n.port),
        text(status(n.state)),
        text(role(n.role)),
    ]
}

/// `SHOW POOL_HEALTH_CHECK_STATS`, from pgrouter's health checks (which do not retry: the
/// retry columns are 0).
fn health_check_stats(ctx: &ProxyContext) -> ResultSet {
    let mut rs = node_columns(&[
        "last_status_change",
        "total_count",
        "success_count",
        "fail_count",
        "skip_count",
        "retry_count",
        "average_retry_count",
        "max_retry_count",
        "max_duration",
        "min_duration",
        "average_duration",
        "last_health_check",
        "last_successful_health_check",
        "last_skip_health_check",
        "last_failed_health_check",
    ]);
    let slots = ctx.topology.nodes();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (id, (i, n)) in backends(ctx).into_iter().enumerate() {
        let (total, failed, times) = match slots.get(i) {
            Some(s) => (
                load(&s.checks),
                load(&s.check_failures),
                Some(&s.check_times),
            ),
            None => (0, 0, None),
        };
        let ms =
            |f: fn(&pgrouter_topology::CheckTimes) -> &AtomicU64| times.map_or(0, |t| load(f(t)));
        let min = if total == 0 { 0 } else { ms(|t| &t.min_ms) };
        let average = if total == 0 {
            0.0
        } else {
            ms(|t| &t.total_ms) as f64 / total as f64
        };
        let mut row = node_cells(id, &n);
        row.extend([
            text(pgpool_time(n.last_change)),
            text(total),
            text(total - failed.min(total)),
            text(failed),
            text(0),
            text(0),
            text("0.000000"),
            text(0),
            text(ms(|t| &t.max_ms)),
            text(min),
            text(format!("{average:.6}")),
            text(pgpool_time(ms(|t| &t.last))),
            text(pgpool_time(ms(|t| &t.last_success))),
            Some(String::new()),
            text(pgpool_time(ms(|t| &t.last_failure))),
        ]);
        rs.push(row);
    }
    rs
}

/// `SHOW POOL_BACKEND_STATS`. pgrouter counts statements by where they ran, not by kind: reads
/// are `select_cnt`, everything else that ran on the node `other_cnt`.
fn backend_stats(ctx: &ProxyContext) -> ResultSet {
    let mut rs = node_columns(&[
        "select_cnt",
        "insert_cnt",
        "update_cnt",
        "delete_cnt",
        "ddl_cnt",
        "other_cnt",
        "panic_cnt",
        "fatal_cnt",
        "error_cnt",
    ]);
    for (id, (i, n)) in backends(ctx).into_iter().enumerate() {
        let routed = ctx
            .stats
            .nodes
            .with(i, |s| {
                s.routed.each_ref().map(crate::per_worker::Counter::get)
            })
            .unwrap_or_default();
        let reads = routed[0];
        let other = routed[1] + routed[2];
        let mut row = node_cells(id, &n);
        row.extend([
            text(reads),
            text(0),
            text(0),
            text(0),
            text(0),
            text(other),
            text(0),
            text(0),
            text(0),
        ]);
        rs.push(row);
    }
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pgpool_commands_are_recognised_exactly() {
        let cases: &[(&[u8], Option<PgpoolShow>)] = &[
            (b"SHOW POOL_NODES\0", Some(PgpoolShow::Nodes)),
            (b"show pool_nodes;\0", Some(PgpoolShow::Nodes)),
            (b"  Show   Pool_Version ;  \0", Some(PgpoolShow::Version)),
            (b"SHOW POOL_POOLS", Some(PgpoolShow::Pools)),
            (b"SHOW POOL_PROCESSES\0", Some(PgpoolShow::Processes)),
            (
                b"SHOW POOL_HEALTH_CHECK_STATS\0",
                Some(PgpoolShow::HealthCheckStats),
            ),
            (
                b"\nSHOW POOL_BACKEND_STATS\n\0",
                Some(PgpoolShow::BackendStats),
            ),
            (b"SHOW pool_status\0", None),
            (b"SHOW search_path\0", None),
            (b"SHOW POOL_NODES; SELECT 1\0", None),
            (b"SHOW POOL_NODES x\0", None),
            (b"SELECT 'SHOW POOL_NODES'\0", None),
            (b"SHOW\0", None),
            (b"\0", None),
            (b"", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse(text),
                *expected,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn times_are_printed_as_pgpool_prints_them() {
        assert_eq!(pgpool_time(0), "");
        assert_eq!(pgpool_time(1_795_450_123), "2026-11-23 16:08:43");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(text in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&text);
        }
    }
}
