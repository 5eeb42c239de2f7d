//! The SQL admin console: clients that connect to the virtual database `pgrouter` as one of
//! `admin.users` get result sets about pgrouter itself (`SHOW NODES`, …) and a few commands
//! (`RELOAD`, `DISABLE NODE`, …), in the simple query protocol, as psql speaks it.
//!
//! It never talks to a server and never holds a lock across an `.await`.

pub mod command;
pub mod pgbouncer;
pub mod pgpool;
pub mod views;

use crate::client::ClientConn;
use crate::context::ProxyContext;
use crate::error::SessionError;
use bytes::BytesMut;
use command::{Command, UnknownCommand};
use pgrouter_protocol::backend::{self as be, TransactionStatus};
use pgrouter_protocol::{frontend as fe, ErrorResponse, SqlState};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use views::ResultSet;

/// The virtual database name.
pub const DATABASE: &str = "pgrouter";

/// PgBouncer's console database: an admin user connecting to it gets this console too, so tools
/// written for PgBouncer (prometheus-pgbouncer-exporter connects to `pgbouncer`, no other)
/// work unchanged. Anyone else reaches a server database of that name as usual.
pub const PGBOUNCER_DATABASE: &str = "pgbouncer";

/// Whether a login to `database` as `user` is for the console.
pub(crate) fn is_console(ctx: &ProxyContext, database: &str, user: &str) -> bool {
    database == DATABASE
        || (database == PGBOUNCER_DATABASE && ctx.admin_users().iter().any(|u| u == user))
}

/// Refuses users who are not admins before any password exchange, as PostgreSQL's
/// `pg_hba.conf` would (`28000`).
pub(crate) fn admit(ctx: &ProxyContext, user: &str) -> Result<(), SessionError> {
    if ctx.admin_users().iter().any(|u| u == user) {
        return Ok(());
    }
    tracing::info!("admin console refused: not listed in admin.users");
    Err(SessionError::Fatal(
        ErrorResponse::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!("user \"{user}\" may not use the pgrouter admin console"),
        )
        .with_hint("Only users listed under admin.users in pgrouter's configuration may connect to the database \"pgrouter\"."),
    ))
}

/// Serves an authenticated admin until it leaves (or shutdown).
pub(crate) async fn run(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let mut out = BytesMut::with_capacity(512);
    for (name, value) in [
        (
            "server_version",
            concat!("16.0 (pgrouter ", env!("CARGO_PKG_VERSION"), ")"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        be::parameter_status(&mut out, name, value);
    }
    be::backend_key_data(&mut out, 0, 0);
    be::ready_for_query(&mut out, TransactionStatus::Idle);
    client.write_all(&out).await?;
    client.entry.set_state(crate::clients::ClientState::Idle);
    let max_len = ctx.max_message_size();
    // In the extended protocol only errors are answered, once per Sync.
    let mut extended_error = false;
    loop {
        let (tag, body) = tokio::select! {
            m = client.read_message(max_len) => m?,
            _ = shutdown.cancelled() => return Err(ErrorResponse::fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            ).into()),
        };
        let mut out = BytesMut::with_capacity(1024);
        match tag {
            fe::TERMINATE => return Ok(()),
            fe::QUERY => {
                let text = fe::query_text(&body).unwrap_or_default();
                let text = String::from_utf8_lossy(text).into_owned();
                answer_query(ctx, &text, &mut out).await;
                be::ready_for_query(&mut out, TransactionStatus::Idle);
            }
            fe::SYNC => {
                if std::mem::take(&mut extended_error) {
                    ErrorResponse::error(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "the pgrouter admin console answers simple queries only",
                    )
                    .encode(&mut out);
                }
                be::ready_for_query(&mut out, TransactionStatus::Idle);
            }
            fe::FLUSH => {}
            _ => extended_error = true,
        }
        if !out.is_empty() {
            client.write_all(&out).await?;
        }
    }
}

/// Runs every statement of a simple query, stopping at the first error (as PostgreSQL does).
async fn answer_query(ctx: &ProxyContext, text: &str, out: &mut BytesMut) {
    let mut ran_any = false;
    for statement in text.split(';') {
        match command::parse(statement) {
            Ok(None) => {}
            Ok(Some(c)) => {
                ran_any = true;
                tracing::info!(command = ?c, "admin console command");
                if let Err(e) = execute(ctx, c, out).await {
                    e.encode(out);
                    return;
                }
            }
            Err(UnknownCommand(what)) => {
                let list: Vec<&str> = command::COMMANDS.iter().map(|(c, _)| *c).collect();
                ErrorResponse::error(
                    SqlState::SYNTAX_ERROR,
                    format!("unknown admin console command: {what}"),
                )
                .with_hint(format!("Commands: {}.", list.join(", ")))
                .encode(out);
                return;
            }
        }
    }
    if !ran_any {
        be::empty_query_response(out);
    }
}

async fn execute(ctx: &ProxyContext, c: Command, out: &mut BytesMut) -> Result<(), ErrorResponse> {
    let (rs, tag) = match c {
        Command::ShowNodes => (views::nodes(ctx), "SHOW"),
        Command::ShowPools => (pgbouncer::pools(ctx), "SHOW"),
        Command::ShowClients => (pgbouncer::clients(ctx), "SHOW"),
        Command::ShowServers => (pgbouncer::servers(ctx), "SHOW"),
        Command::ShowStats => (pgbouncer::stats(ctx), "SHOW"),
        Command::ShowDatabases => (pgbouncer::databases(ctx), "SHOW"),
        Command::ShowLists => (pgbouncer::lists(ctx), "SHOW"),
        Command::ShowCounters => (views::counters(ctx), "SHOW"),
        Command::ShowConfig => (views::config(ctx), "SHOW"),
        Command::ShowVersion => (views::version(), "SHOW"),
        Command::Help => (views::help(), "SHOW"),
        Command::Reload => {
            let report = ctx.reload().map_err(|e| {
                ErrorResponse::error(SqlState::CONFIG_FILE_ERROR, "configuration not reloaded")
                    .with_detail(e)
                    .with_hint("The configuration in force is unchanged.")
            })?;
            let mut rs = ResultSet {
                columns: vec!["change"],
                rows: Vec::new(),
            };
            for line in report {
                rs.rows.push(vec![Some(line)]);
            }
            (rs, "RELOAD")
        }
        Command::DisableNode(name) => {
            set_disabled(ctx, &name, true).await?;
            be::command_complete(out, "DISABLE NODE");
            return Ok(());
        }
        Command::EnableNode(name) => {
            set_disabled(ctx, &name, false).await?;
            be::command_complete(out, "ENABLE NODE");
            return Ok(());
        }
    };
    write_result(out, &rs, tag);
    Ok(())
}

/// Takes a node out of read rotation (or back) and waits, briefly, until the routing table
/// says so: sessions move their next read away from it without an error.
async fn set_disabled(ctx: &ProxyContext, name: &str, disabled: bool) -> Result<(), ErrorResponse> {
    let Some(index) = ctx.topology.find(name) else {
        let table = ctx.topology.load();
        let names: Vec<&str> = table.configured().map(|(_, n)| n.name.as_str()).collect();
        return Err(ErrorResponse::error(
            SqlState::UNDEFINED_OBJECT,
            format!("no node named \"{name}\""),
        )
        .with_hint(format!("Nodes: {}.", names.join(", "))));
    };
    ctx.topology.set_disabled(index, disabled);
    tracing::info!(
        node = name,
        disabled,
        "node read rotation changed by an operator"
    );
    let applied = |t: &pgrouter_topology::RoutingTable| {
        let is_disabled = t.nodes.get(index)?.state == pgrouter_topology::NodeState::Disabled;
        (is_disabled == disabled || (!disabled && !is_disabled)).then_some(())
    };
    // Applied at the next health check; a down node shows down rather than disabled.
    let wait = ctx.config().health_check.interval.get() * 3 + Duration::from_secs(1);
    let _ = ctx.topology.wait_for(wait, applied).await;
    Ok(())
}

pub(crate) fn write_result(out: &mut BytesMut, rs: &ResultSet, tag: &str) {
    be::row_description_text(out, &rs.columns);
    for row in &rs.rows {
        let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
        be::data_row_text(out, &values);
    }
    let tag = if tag == "SHOW" || tag == "SELECT" {
        format!("{tag} {}", rs.rows.len())
    } else {
        tag.to_owned()
    };
    be::command_complete(out, &tag);
}
