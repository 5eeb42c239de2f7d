//! One client's life: start-up → authentication → server login → relay → end.
//!
//! # Layout
//! - [`client`](self::client): the client socket with its buffers and message reads.
//! - `startup`: SSL/GSS refusals, cancel requests, the `StartupMessage`.
//! - `auth`: pgrouter authenticates the client (SCRAM-SHA-256, MD5, trust).
//! - `relay`: the session loop and the `Session` it drives.
//! - `intake`: the client's input: units, what is answered without a server, routing at
//!   transaction boundaries.
//! - `plan`: what a unit is (classified once) and where it goes.
//! - `login`: opening a server connection as the client's user (pool checkout or login),
//!   waiting for a primary during a failover.
//! - `links`: the session's server connections: when to open or move them, cancel targets,
//!   hand-back.
//! - `forward`: sending a unit with its bookkeeping (replay, invisible prepares, held reads).
//! - `answers`: pgrouter's own error answers, shaped as PostgreSQL would.
//! - `unit`: cutting client input into routable units; the message bodies routing reads.
//! - `server_output`: relaying server output with the per-connection bookkeeping.
//! - `backend`: one server connection of a session.
//! - `ledger`: what a server connection owes and which replies the client must not see (no I/O).
//! - `state`: session state that moves between server connections (replay log, statements).
//! - `stream`: client messages passed on as they arrive instead of read whole.

mod answers;
mod auth;
mod backend;
/// The client socket (shared with the admin console, so it lives at the crate root).
pub use crate::client;
pub use crate::error::SessionError;
mod forward;
mod intake;
mod ledger;
mod links;
mod login;
mod plan;
mod relay;
pub(crate) mod ryw;
mod server_output;
mod startup;
mod state;
mod stream;
mod timeouts;
mod unit;

use crate::cancel::{CancelSlot, ServerKey};
use crate::client::ClientStream;
use crate::clients::ClientPeer;
use crate::clients::{ClientLogin, ClientState};
use crate::context::ProxyContext;
use crate::routing::Endpoint;
use backend as backend_conn;
use bytes::BytesMut;
use client::ClientConn;
use pgrouter_protocol::backend::{self as backend_msg, TransactionStatus};
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The FATAL error a client gets when its server connection ends without saying why.
pub(super) fn server_lost() -> SessionError {
    SessionError::Fatal(
        ErrorResponse::fatal(
            SqlState::CONNECTION_FAILURE,
            "server closed the connection unexpectedly",
        )
        .with_hint(
            "The server may have been restarted or terminated this session; reconnect and retry.",
        ),
    )
}

/// Runs a client session to its end. Never panics on client input; every failure is logged once.
pub async fn run(
    stream: ClientStream,
    peer: ClientPeer,
    ctx: Arc<ProxyContext>,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("session", client = %peer, endpoint = endpoint.as_str(), user = tracing::field::Empty,
        database = tracing::field::Empty, application_name = tracing::field::Empty);
    async move {
        if let ClientStream::Plain(tcp) = &stream {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay failed");
            }
            if let Some(keepalive) = ctx.keepalive() {
                if let Err(e) = keepalive.apply(tcp) {
                    tracing::debug!(error = %e, "setting TCP keepalive failed");
                }
            }
        }
        let stats = &ctx.stats;
        stats.clients_accepted.fetch_add(1, Ordering::Relaxed);
        let registration = ctx
            .clients
            .register(peer, pgrouter_topology::table::unix_now());
        let mut client = ClientConn::new(
            stream,
            Arc::clone(&registration.entry),
            Arc::clone(&ctx.buffer_budget),
        );
        // Counted before anything is read: a flood of sockets that never log in is bounded.
        let accepted = {
            let live = ctx.live();
            ctx.client_limits
                .accept(&live.config.client, peer.socket_addr().ip())
        };
        let (_from_address, pending) = match accepted {
            Ok(counted) => counted,
            Err(e) => {
                stats.clients_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(reason = %e.message, "connection refused before its login");
                client.send_error_and_close(&e).await;
                return;
            }
        };
        let mut pending = Some(pending);
        let outcome = serve(&mut client, &ctx, endpoint, &shutdown, &mut pending).await;
        if let Err(SessionError::Fatal(e)) = &outcome {
            if matches!(e.code, SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION) {
                // As PostgreSQL's auth_delay: a failed login answers late, still counted as a
                // login in progress, so guessing passwords is slow and bounded.
                tokio::time::sleep(ctx.live().config.client.auth_failure_delay.get()).await;
            }
        }
        drop(pending);
        match outcome {
            Ok(()) | Err(SessionError::ClientGone) => tracing::debug!("session ended"),
            Err(SessionError::Fatal(e)) => {
                tracing::info!(code = e.code.code(), reason = %e.message, "session closed with error");
                stats.error(e.code.code().as_bytes());
                if e.code == SqlState::INVALID_PASSWORD {
                    stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                }
                client.send_error_and_close(&e).await;
            }
            Err(SessionError::ServerRefused(raw)) => client.send_raw_and_close(&raw).await,
            Err(e @ SessionError::ServerLost(_)) => tracing::info!(error = %e, "session ended"),
            Err(SessionError::Unavailable(e)) => {
                let e = e.into_fatal();
                tracing::info!(code = e.code.code(), reason = %e.message, "session closed with error");
                stats.error(e.code.code().as_bytes());
                client.send_error_and_close(&e).await;
            }
        }
        let entry = &registration.entry;
        if let Some(login) = entry
            .login
            .get()
            .filter(|_| entry.authenticated.load(Ordering::Relaxed))
        {
            stats.client_closed(
                &login.database,
                crate::stats::DatabaseTotals {
                    requests: entry.requests.load(Ordering::Relaxed),
                    received: entry.bytes_received.load(Ordering::Relaxed),
                    sent: entry.bytes_sent.load(Ordering::Relaxed),
                },
            );
        }
        stats.closed_bytes_received.fetch_add(
            entry.bytes_received.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        stats
            .closed_bytes_sent
            .fetch_add(entry.bytes_sent.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    .instrument(span)
    .await
}

/// How a start-up ended: a client session to serve, or the admin console.
enum Login<T> {
    Session(T),
    Console,
}

async fn serve(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    endpoint: Endpoint,
    shutdown: &CancellationToken,
    pending: &mut Option<crate::limits::Pending<'_>>,
) -> Result<(), SessionError> {
    let login_timeout = ctx.live().config.client.login_timeout.get();
    let login = async {
        // As PostgreSQL: no TLS over the Unix-domain socket (an SSLRequest is answered `N`).
        let tls = ctx.tls_acceptor().filter(|_| !client.entry.local);
        let startup = match startup::read(client, tls.as_deref()).await? {
            startup::Start::Cancel {
                process_id,
                secret_key,
                from_peer,
            } => {
                if from_peer || ctx.cancels.owns(process_id) {
                    forward_cancel(ctx, process_id, secret_key).await;
                } else {
                    crate::cancel::forward_to_peers(ctx, process_id, secret_key).await;
                }
                return Ok(None);
            }
            startup::Start::Session(s) => s,
        };
        let mut startup = startup;
        let endpoint = ctx.session_endpoint(
            endpoint,
            &startup.database,
            startup.param("application_name"),
        );
        if endpoint == Endpoint::ReadOnly {
            // Every transaction is read-only, also on the primary when reads fall back to it: a
            // write gets 25006 there as it does on a standby.
            startup
                .server_params
                .retain(|(name, _)| name != "default_transaction_read_only");
            startup
                .server_params
                .push(("default_transaction_read_only".into(), "on".into()));
        }
        let span = tracing::Span::current();
        span.record("user", startup.user.as_str());
        span.record("database", startup.database.as_str());
        if let Some(app) = startup.param("application_name") {
            span.record("application_name", app);
        }
        let _ = client.entry.login.set(ClientLogin {
            user: startup.user.clone(),
            database: startup.database.clone(),
            application_name: startup.param("application_name").unwrap_or("").to_owned(),
            endpoint: endpoint.as_str(),
        });
        // Access rules first, as PostgreSQL checks pg_hba.conf before any password.
        let required = auth::check_access(ctx, client, &startup)?;
        if crate::console::is_console(ctx, &startup.database, &startup.user) {
            crate::console::admit(ctx, &startup.user)?;
            auth::authenticate(client, ctx, &startup, required).await?;
            client.entry.authenticated.store(true, Ordering::Relaxed);
            return Ok(Some(Login::Console));
        }
        let user = auth::authenticate(client, ctx, &startup, required).await?;
        client.entry.authenticated.store(true, Ordering::Relaxed);
        // Counted once authenticated, as PostgreSQL checks its connection limits: clients that
        // stop half-way through a login cannot lock a user or database out.
        let admitted = ctx
            .client_limits
            .admit(&ctx.live().config.client, &startup.user, &startup.database)
            .inspect_err(|_| {
                ctx.stats.clients_refused.fetch_add(1, Ordering::Relaxed);
            })?;
        // Transaction pooling: once a login with these parameters has been seen, later ones are
        // answered with the parameters it reported, without taking a server connection (a
        // client that logs in while holding a transaction open elsewhere must not wait for one).
        if ctx.transaction_pooling(&user, &startup.database) {
            if let Some(params) = ctx.login_parameters(&user.name, &startup.server_params) {
                return Ok(Some(Login::Session((
                    startup, user, params, None, admitted,
                ))));
            }
        }
        let opened = login::ServerLogin::new(ctx, &user, &startup, endpoint)
            .main()
            .await?;
        let params = ctx.remember_login_parameters(
            &user.name,
            &startup.server_params,
            &opened.conn.parameters,
        );
        Ok(Some(Login::Session((
            startup,
            user,
            params,
            Some(opened),
            admitted,
        ))))
    };
    let (mut startup, user, parameters, first_server, _admitted) =
        // Boxed, as the relay below: a session's futures are large, and each level that holds
        // one inline is copied whole when it is created and moved.
        match tokio::time::timeout(login_timeout, Box::pin(login)).await {
            Ok(Ok(Some(Login::Session(s)))) => {
                *pending = None;
                s
            }
            Ok(Ok(Some(Login::Console))) => {
                *pending = None;
                return crate::console::run(client, ctx, shutdown).await;
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SessionError::Fatal(ErrorResponse::fatal(
                    SqlState::QUERY_CANCELED,
                    "canceling authentication due to timeout",
                )))
            }
        };

    let ryw_settings = std::mem::take(&mut startup.pgrouter_settings);
    // As the login decided it (the same inputs give the same endpoint).
    let endpoint = ctx.session_endpoint(
        endpoint,
        &startup.database,
        startup.param("application_name"),
    );
    let slot: CancelSlot = Arc::default();
    let registration = ctx.cancels.register(Arc::clone(&slot));
    if let Some(opened) = &first_server {
        if let Some(key) = ServerKey::of(&opened.conn) {
            slot.point_at(Some(key));
        }
    }

    // The client sees the primary's parameters and pgrouter's own key.
    let mut out = BytesMut::with_capacity(512);
    for (name, value) in parameters.iter() {
        backend_msg::parameter_status(&mut out, name, value);
    }
    backend_msg::backend_key_data(&mut out, registration.process_id, registration.secret_key);
    backend_msg::ready_for_query(&mut out, TransactionStatus::Idle);
    client.write_all(&out).await?;
    tracing::debug!("session established");

    client.entry.set_state(ClientState::Idle);
    let _entry = Arc::clone(&client.entry);
    let login = login::ServerLogin::new(ctx, &user, &startup, endpoint);
    let table = ctx.topology.snapshot();
    let mut live_cache = ctx.live_cache();
    let mut session = relay::Session {
        ctx,
        live: Arc::clone(live_cache.load()),
        live_cache,
        endpoint,
        primary: first_server.map(login::Opened::into_backend),
        read: None,
        read_node: if ctx.live().config.routing.load_balance && endpoint.splits() {
            ctx.pick_read_node(&table)
        } else {
            None
        },
        read_generation: table.generation,
        lost_transaction: None,
        transaction_pooling: ctx.transaction_pooling(&user, &startup.database),
        state: state::SessionState::new(),
        inflight: Vec::new(),
        current: backend_conn::Slot::Primary,
        deferred_begin: None,
        streaming: None,
        force_stream: false,
        copy_kept_bytes: false,
        cancel: slot,
        login,
        entry: Arc::clone(&client.entry),
        timing: relay::Timing::default(),
        reads_on_primary: false,
        replica_confirmed: None,
        client_process_id: registration.process_id,
    };
    for setting in &ryw_settings {
        session.apply_setting(setting);
    }
    let result = Box::pin(relay::relay(client, &mut session, shutdown)).await;
    drop(registration);
    session.release_all().await;
    result
}

async fn forward_cancel(ctx: &ProxyContext, process_id: i32, secret_key: i32) {
    match ctx.cancels.cancel(process_id, secret_key) {
        Some(cancel) => {
            let timeout = ctx.live().config.pool.connect_timeout.get();
            match pgrouter_conn::send_cancel(
                cancel.addr,
                cancel.process_id,
                cancel.secret_key,
                timeout,
            )
            .await
            {
                Ok(()) => {
                    cancel.in_flight.confirmed();
                    tracing::debug!(server = %cancel.addr, "cancel request forwarded");
                }
                // The connection then counts as having a cancel of unknown outcome: it is
                // never handed to another client.
                Err(e) => {
                    tracing::warn!(error = %e, server = %cancel.addr, "forwarding cancel request failed")
                }
            }
        }
        None => tracing::debug!("cancel request for an unknown or idle session ignored"),
    }
}
