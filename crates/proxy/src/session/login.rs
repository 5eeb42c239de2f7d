//! Opening server connections for a session, as its client's user: through the node's pool (a
//! pooled connection, or connect and authenticate), and for the main connection waiting for a
//! primary during a failover. One value ([`ServerLogin`]) serves the session's first login and
//! every connection it opens later; what comes out is one value too ([`Opened`]).

use super::backend::Backend;
use super::startup::Startup;
use super::SessionError;
use crate::clients::{ClientEntry, ClientState};
use crate::context::{PooledState, ProxyContext, UserEntry};
use crate::routing::Endpoint;
use pgrouter_conn::{ConnError, ServerConn, ServerTarget};
use pgrouter_pool::{CheckoutError, LoginKey, PoolKey, Ticket};
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::sync::atomic::Ordering;

/// How a session opens server connections: who it is and where its main connection goes.
pub(super) struct ServerLogin<'a> {
    pub(super) ctx: &'a ProxyContext,
    pub(super) user: &'a UserEntry,
    pub(super) startup: &'a Startup,
    pub(super) endpoint: Endpoint,
    /// The pools' key for this login, made once (checked out on every transaction in
    /// transaction pooling).
    login_key: std::sync::Arc<LoginKey>,
}

impl<'a> ServerLogin<'a> {
    pub(super) fn new(
        ctx: &'a ProxyContext,
        user: &'a UserEntry,
        startup: &'a Startup,
        endpoint: Endpoint,
    ) -> Self {
        let login_key = ctx.pools.login_key(
            user.name.clone(),
            startup.database.clone(),
            startup.server_params.clone(),
        );
        Self {
            ctx,
            user,
            startup,
            endpoint,
            login_key,
        }
    }
}

/// A server connection checked out for the session, logged in and idle.
pub(super) struct Opened {
    pub(super) conn: ServerConn,
    /// What the connection carries from its previous clients (prepared statements, …).
    pub(super) pooled: PooledState,
    pub(super) ticket: Ticket,
    pub(super) node: usize,
}

impl Opened {
    /// The connection as one of the session's backends.
    pub(super) fn into_backend(self) -> Backend {
        Backend::new(self.conn, self.pooled, self.ticket, self.node)
    }
}

impl ServerLogin<'_> {
    /// `None`: the main connection; `Some(n)`: node `n`. The client shows as waiting meanwhile.
    pub(super) async fn backend(
        &self,
        entry: &ClientEntry,
        node: Option<usize>,
    ) -> Result<Backend, SessionError> {
        let was = entry.state();
        entry.set_state(ClientState::Waiting);
        let _restore = RestoreState(entry, was);
        let opened = match node {
            Some(node) => self.node(node).await?,
            None => self.main().await?,
        };
        Ok(opened.into_backend())
    }
}

/// Puts a client's state back when a wait for a server connection ends (or is abandoned).
struct RestoreState<'a>(&'a ClientEntry, ClientState);

impl Drop for RestoreState<'_> {
    fn drop(&mut self) {
        self.0.set_state(self.1);
    }
}

impl ServerLogin<'_> {
    /// Logs in to the node of the session's main connection: the primary, or for the read-only
    /// endpoint a read node. While there is none, or it does not accept the login because it is
    /// going away, this waits for the topology to name a new one, up to `topology.failover_timeout`.
    pub(super) async fn main(&self) -> Result<Opened, SessionError> {
        let (ctx, endpoint) = (self.ctx, self.endpoint);
        let timeout = ctx.live().config.topology.failover_timeout.get();
        let deadline = tokio::time::Instant::now() + timeout;
        let fallback = || ctx.live().config.routing.reads_fallback_to_primary;
        let pick = |t: &pgrouter_topology::RoutingTable| {
            endpoint.pick(t, fallback(), |t| ctx.pick_read_node(t))
        };
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Past the deadline nothing is offered, even a node the table still names: a primary
            // that keeps answering as a standby ends in the same error as no primary at all.
            let offered = if remaining.is_zero() {
                None
            } else {
                wait_for_node(ctx, remaining, pick).await
            };
            let Some(node) = offered else {
                if endpoint == Endpoint::ReadOnly {
                    return Err(SessionError::Unavailable(
                    ErrorResponse::error(
                        SqlState::CANNOT_CONNECT_NOW,
                        format!(
                            "no replica is available for reads (waited {}s)",
                            timeout.as_secs()
                        ),
                    )
                    .with_hint(
                        "This is the read-only endpoint: every replica is down, lagging or excluded, and routing.reads_fallback_to_primary is off or there is no primary either.",
                    ),
                ));
                }
                let table = ctx.topology.load();
                return Err(SessionError::Unavailable(
                    ErrorResponse::error(
                        SqlState::CANNOT_CONNECT_NOW,
                        format!(
                            "no primary server is available (waited {}s for a failover)",
                            timeout.as_secs()
                        ),
                    )
                    .with_detail(
                        table
                            .no_primary_reason
                            .clone()
                            .unwrap_or_else(|| "the primary is changing".into()),
                    )
                    .with_hint("Writes resume once the HA manager promotes a new primary."),
                ));
            };
            let wait = remaining.min(std::time::Duration::from_millis(250));
            match self.checkout(node).await {
                Ok(opened)
                    if endpoint != Endpoint::ReadOnly
                        && !opened.ticket.reused
                        && in_hot_standby(&opened.conn) =>
                {
                    // The table still calls this node primary, but the server says at login that
                    // it is a standby (restarted as one in a switchover, before the next probe):
                    // not one statement may go there. Probe now and wait for the table to catch
                    // up. (A pooled connection's login-time value may predate a promotion, so
                    // only fresh logins are judged; a demoted node's old connections are gone.)
                    tracing::info!(node = %ctx.node_name(node),
                        "the primary's server reports in_hot_standby=on; waiting for the topology");
                    drop(opened);
                    ctx.topology.probe_now("primary_in_recovery");
                    ctx.topology.changed(wait).await;
                }
                // The table may have changed during the login: only a node the endpoint still
                // accepts will do.
                Ok(opened) if endpoint.accepts(&ctx.topology.load(), node, fallback()) => {
                    return Ok(opened)
                }
                Ok(_) => continue,
                Err(e) if is_transient(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(node = %ctx.node_name(node), error = %e,
                    "server not accepting logins; waiting for the topology");
                    ctx.topology.probe_now("primary_login_refused");
                    ctx.topology.changed(wait).await;
                }
                Err(e) => return Err(login_error(ctx, node, e)),
            }
        }
    }

    /// A connection to node `node`, as the session's user.
    pub(super) async fn node(&self, node: usize) -> Result<Opened, SessionError> {
        self.checkout(node)
            .await
            .map_err(|e| login_error(self.ctx, node, e))
    }

    /// A connection to node `node` from its pool (pooled, or a new login).
    async fn checkout(&self, node: usize) -> Result<Opened, LoginFailure> {
        let (ctx, user, startup) = (self.ctx, self.user, self.startup);
        let key = PoolKey {
            node,
            login: std::sync::Arc::clone(&self.login_key),
        };
        let index = node;
        ctx.track_new_nodes();
        // What a new login needs is gathered only when no pooled connection is taken.
        let connect = || async move {
            let Some(slot) = ctx.topology.node(index) else {
                // Unreachable: node indexes come from the routing table, whose rows are the
                // topology's slots, which never shrink. Answered as a network failure rather
                // than a panic.
                return Err(ConnError::Io {
                    addr: format!("node #{index}"),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such node slot"),
                });
            };
            let node = &slot.target;
            // A reload may have changed the password since this client logged in.
            let current = ctx.user(&user.name);
            let server_tls = ctx.server_tls();
            let target = ServerTarget {
                host: &node.host,
                port: node.port,
                user: &user.name,
                credential: current.as_deref().unwrap_or(user).credential(),
                params: &startup.server_params,
                timeout: ctx.live().config.pool.connect_timeout.get(),
                tls: &server_tls,
                keepalive: ctx.keepalive(),
            };
            ServerConn::connect(&target).await
        };
        let result = ctx.pools.checkout(key, connect).await;
        match &result {
            Ok((_, _, ticket)) => ctx.stats.checkout_waited(index, ticket.waited),
            Err(CheckoutError::Full { waited, .. }) => {
                ctx.stats.checkout_waited(index, *waited);
                ctx.stats.nodes.with(index, |n| {
                    n.checkout_timeouts.fetch_add(1, Ordering::Relaxed);
                });
            }
            // A failed login is counted where it is reported, not as a wait.
            Err(CheckoutError::Connect(_)) => {}
        }
        result.map(|(conn, pooled, ticket)| Opened {
            conn,
            pooled,
            ticket,
            node: index,
        })
    }
}

/// Waits up to `limit` for the table to offer a node for the main connection. While it offers
/// none, every node is probed every [`WAITING_PROBE_EVERY`]: a session waiting for a primary
/// sees the promotion within that time, not at the next health-check interval.
async fn wait_for_node(
    ctx: &ProxyContext,
    limit: std::time::Duration,
    pick: impl Fn(&pgrouter_topology::RoutingTable) -> Option<usize>,
) -> Option<usize> {
    // The common case, a node offered at once, reads no clock.
    if let Some(node) = pick(&ctx.topology.load()) {
        return Some(node);
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(node) = pick(&ctx.topology.load()) {
            return Some(node);
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return None;
        }
        ctx.topology.probe_now("waiting_for_primary");
        if let Some(node) = ctx
            .topology
            .wait_for(remaining.min(WAITING_PROBE_EVERY), &pick)
            .await
        {
            return Some(node);
        }
    }
}

/// How often sessions waiting for a primary have every node probed.
const WAITING_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a server reports itself in hot standby (`in_hot_standby`, PostgreSQL 14+, sent at
/// login and on promotion). Older servers do not report it: `false`.
fn in_hot_standby(conn: &ServerConn) -> bool {
    conn.parameters
        .iter()
        .any(|(name, value)| name == "in_hot_standby" && value == "on")
}

/// A login failure that a failover may cure: the network, or a server starting up or shutting
/// down (`57P0x`), as opposed to a wrong password or a missing database.
fn is_transient(e: &LoginFailure) -> bool {
    match e {
        CheckoutError::Connect(ConnError::Refused { code, .. }) => {
            code.starts_with("57P") || code.starts_with("08")
        }
        CheckoutError::Connect(ConnError::Io { .. } | ConnError::Timeout { .. }) => true,
        _ => false,
    }
}

/// Why no server connection could be had: the pool is full, or the login failed.
type LoginFailure = CheckoutError<ConnError>;

fn login_error(ctx: &ProxyContext, node: usize, e: LoginFailure) -> SessionError {
    let name = ctx.node_name(node);
    let e = match e {
        CheckoutError::Full { waited, max } => {
            tracing::warn!(node = %name, max, "pool exhausted: no server connection free");
            return SessionError::Unavailable(
                ErrorResponse::error(
                    SqlState::TOO_MANY_CONNECTIONS,
                    format!(
                        "no server connection available on \"{}\": all {max} are in use (pool.max_server_connections)",
                        name
                    ),
                )
                .with_detail(format!("Waited {:.1}s (pool.checkout_timeout).", waited.as_secs_f64())),
            );
        }
        CheckoutError::Connect(e) => e,
    };
    match e {
        // The server's own refusal (no such database, too many connections, …) reaches the client
        // word for word.
        ConnError::Refused {
            raw, code, message, ..
        } => {
            tracing::info!(node = %name, %code, %message, "server refused login");
            SessionError::ServerRefused(raw)
        }
        other => {
            tracing::warn!(node = %name, error = %other, "server login failed");
            SessionError::Fatal(
                ErrorResponse::fatal(
                    SqlState::UNABLE_TO_CONNECT,
                    format!("pgrouter could not connect to server \"{name}\""),
                )
                .with_detail(other.to_string()),
            )
        }
    }
}
