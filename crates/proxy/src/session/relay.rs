//! The session loop after login: requests are classified and routed at transaction boundaries,
//! then relayed; server output streams back to the client.
//!
//! Bytes are forwarded from the buffer they were read into. Messages are copied only when
//! pgrouter has to insert something of its own into the stream (a session replay, a deferred
//! `BEGIN`, a prepared statement the chosen server does not have yet).
//!
//! One loop serves the client and both server connections. While a write to one side waits,
//! nothing more is read from any side, so a slow client slows its own server connection instead of
//! filling memory. Client messages are handled whole (bounded by `client.max_message_size`); server
//! output streams through a [`FrameWalker`](pgrouter_protocol::frame::FrameWalker), so a result of
//! any size passes with bounded memory.

use super::backend::{read_opt, Backend, Slot};
use super::client::ClientConn;
use super::state::SessionState;
use super::SessionError;
use crate::cancel::{CancelSlot, ServerKey};
use crate::clients::{ClientEntry, ClientState};
use crate::context::{Live, LiveCache, ProxyContext};
use crate::routing::{Endpoint, SessionFacts};
use crate::stats::Stats;
use bytes::Bytes;
use pgrouter_protocol::backend::TransactionStatus;
use pgrouter_protocol::{ErrorResponse, SqlState};
use pgrouter_sql::Classification;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// A session after login.
pub(super) struct Session<'a> {
    pub(super) ctx: &'a ProxyContext,
    /// The settings in force, as of the loop's last pass (see `refresh_live`): read many times
    /// a request, each of those would otherwise be an `arc-swap` load.
    pub(super) live: Arc<Live>,
    pub(super) live_cache: LiveCache<'a>,
    /// The listener's offer: where the main connection (`primary`) goes.
    pub(super) endpoint: Endpoint,
    pub(super) primary: Option<Backend>,
    pub(super) read: Option<Backend>,
    /// The node serving this session's reads (index into the configured nodes); `None`: the
    /// primary.
    pub(super) read_node: Option<usize>,
    /// The routing table generation `read_node` was checked against.
    pub(super) read_generation: u64,
    /// The server connection of an open transaction was lost while the client was not waiting
    /// for anything: its next request gets this error (the transaction is gone).
    pub(super) lost_transaction: Option<ErrorResponse>,
    /// Server connections go back to the pool after each transaction.
    pub(super) transaction_pooling: bool,
    pub(super) state: SessionState,
    /// Classifications of client requests whose responses are still coming.
    pub(super) inflight: Vec<Arc<Classification>>,
    /// The slot that served the last request (the transaction's slot while one is open).
    pub(super) current: Slot,
    /// A `BEGIN` answered by pgrouter and not yet sent: the next request decides where the
    /// transaction runs (so `BEGIN; SET TRANSACTION READ ONLY` can go to a replica).
    pub(super) deferred_begin: Option<Bytes>,
    /// A client message being passed on as it arrives (see `stream`).
    pub(super) streaming: Option<super::stream::Streaming>,
    /// The client buffer budget is spent and stayed so: the next drain streams the message still
    /// arriving instead of waiting to read it whole.
    pub(super) force_stream: bool,
    /// The client buffer the units being handled come from is a grown one: bytes kept beyond
    /// the request (the unnamed statement, a held read, a deferred `BEGIN`) are copied out of
    /// it rather than sliced, so they never keep a large allocation alive.
    pub(super) copy_kept_bytes: bool,
    pub(super) cancel: CancelSlot,
    /// Opens the session's server connections.
    pub(super) login: super::login::ServerLogin<'a>,
    /// The client's row in the registry (state, server connections, counts).
    pub(super) entry: Arc<ClientEntry>,
    /// When the request being answered, and the open transaction, started.
    pub(super) timing: Timing,
    /// The unit being routed must read on the primary: no replica has what the session must
    /// see (see `ryw`).
    pub(super) reads_on_primary: bool,
    /// A replica (node) seen to have replayed this position, asked by the session itself.
    pub(super) replica_confirmed: Option<(usize, u64)>,
    /// The process id this client was given in `BackendKeyData`.
    pub(super) client_process_id: i32,
}

/// Start times for the latency histograms.
#[derive(Debug, Default)]
pub(super) struct Timing {
    request: Option<Instant>,
    transaction: Option<Instant>,
}

impl Timing {
    /// A request went to a server.
    pub(super) fn started(&mut self, entry: &ClientEntry) {
        if self.request.is_none() {
            self.request = Some(Instant::now());
            entry.set_state(ClientState::Active);
        }
    }

    /// Everything sent was answered; the server reports `status`.
    pub(super) fn answered(
        &mut self,
        status: TransactionStatus,
        stats: &Stats,
        entry: &ClientEntry,
    ) {
        let Some(started) = self.request.take() else {
            return;
        };
        let now = Instant::now();
        stats.request_duration.record(now - started);
        stats.requests.add(1);
        entry.requests.fetch_add(1, Ordering::Relaxed);
        if status == TransactionStatus::Idle {
            entry.set_state(ClientState::Idle);
            if let Some(tx_started) = self.transaction.take() {
                stats.transaction_duration.record(now - tx_started);
                stats.transactions.add(1);
            }
        } else if self.transaction.is_none() {
            self.transaction = Some(started);
        }
    }
}

/// What handling the client's buffered messages came to.
pub(super) enum Drain {
    /// Everything complete was handled; read more from the client.
    NeedMore,
    /// The next request must wait for earlier responses; do not read more from the client.
    Blocked,
    /// The client sent Terminate.
    Terminated,
}

impl<'a> Session<'a> {
    /// Picks up a reload: one atomic load when nothing changed.
    pub(super) fn refresh_live(&mut self) {
        let fresh = self.live_cache.load();
        if !Arc::ptr_eq(fresh, &self.live) {
            self.live = Arc::clone(fresh);
        }
    }

    /// Bytes of a unit to keep beyond the request: a view of the client buffer while it is a
    /// base one, a copy while it is grown (see `copy_kept_bytes`).
    pub(super) fn keep(&self, bytes: &Bytes) -> Bytes {
        if self.copy_kept_bytes {
            Bytes::copy_from_slice(bytes)
        } else {
            bytes.clone()
        }
    }

    /// Takes a slot's connection out of the session.
    pub(super) fn take_backend(&mut self, slot: Slot) -> Option<Backend> {
        let taken = match slot {
            Slot::Primary => self.primary.take(),
            Slot::Read => self.read.take(),
        };
        self.show_links();
        taken
    }

    /// Publishes the session's server connections in its registry entry (`SHOW SERVERS`).
    pub(super) fn show_links(&self) {
        let link = |b: &Option<Backend>| {
            b.as_ref()
                .map(|b| (b.node, b.conn.backend_key.map_or(0, |(pid, _)| pid)))
        };
        self.entry.primary.set(link(&self.primary));
        self.entry.read.set(link(&self.read));
    }

    pub(super) fn backend(&mut self, slot: Slot) -> Option<&mut Backend> {
        match slot {
            Slot::Primary => self.primary.as_mut(),
            Slot::Read => self.read.as_mut(),
        }
    }

    /// The slot that must receive the next client bytes whatever they are: the transaction's
    /// connection, or one in the middle of an extended-protocol segment.
    pub(super) fn attached(&self) -> Option<Slot> {
        if let Some(streaming) = &self.streaming {
            return Some(streaming.slot);
        }
        if self.state.tx_status != TransactionStatus::Idle && self.deferred_begin.is_none() {
            return Some(self.current);
        }
        for (slot, b) in [(Slot::Primary, &self.primary), (Slot::Read, &self.read)] {
            if b.as_ref().is_some_and(|b| b.ledger.in_running_segment()) {
                return Some(slot);
            }
        }
        None
    }

    /// In the middle of an extended-protocol segment or a streaming message: the next client
    /// bytes belong to it whatever they are.
    pub(super) fn in_segment_or_stream(&self) -> bool {
        self.streaming.is_some()
            || [&self.primary, &self.read]
                .into_iter()
                .any(|b| b.as_ref().is_some_and(|b| b.ledger.in_running_segment()))
    }

    /// A connection still owing responses to earlier requests (a pipelining client).
    pub(super) fn busy(&self) -> Option<Slot> {
        [(Slot::Primary, &self.primary), (Slot::Read, &self.read)]
            .into_iter()
            .find(|(_, b)| b.as_ref().is_some_and(Backend::busy))
            .map(|(slot, _)| slot)
    }

    /// Nothing in flight and no transaction open: the session can be closed without losing
    /// anything the client was promised.
    pub(super) fn is_quiescent(&self, client: &ClientConn) -> bool {
        self.busy().is_none()
            && self.state.tx_status == TransactionStatus::Idle
            && self.deferred_begin.is_none()
            && self.streaming.is_none()
            && client.buf.is_empty()
    }

    /// `client.idle_timeout`, `idle_transaction_timeout` and `query_timeout` in force.
    pub(super) fn timeout_limits(&self) -> super::timeouts::Limits {
        let client = &self.live.config.client;
        super::timeouts::Limits {
            idle: client.idle_timeout.get(),
            idle_in_transaction: client.idle_transaction_timeout.get(),
            query: client.query_timeout.get(),
        }
    }

    /// `client.query_timeout` expired: asks the server that owes the answer to cancel the
    /// request (its error then reaches the client as usual, 57014).
    pub(super) async fn cancel_busy_request(&self) {
        let Some(slot) = self.busy() else { return };
        let backend = match slot {
            Slot::Primary => self.primary.as_ref(),
            Slot::Read => self.read.as_ref(),
        };
        let Some(key) = backend.and_then(|b| ServerKey::of(&b.conn)) else {
            return;
        };
        let addr = key.addr;
        tracing::info!(server = %addr, "client.query_timeout expired: cancelling the request on the server");
        let timeout = self.live.config.pool.connect_timeout.get();
        // Counted in flight like a client's cancel: one of unknown outcome keeps the
        // connection from ever serving another client.
        let in_flight = key.cancels.start();
        match pgrouter_conn::send_cancel(addr, key.process_id, key.secret_key, timeout).await {
            Ok(()) => in_flight.confirmed(),
            Err(e) => {
                tracing::warn!(error = %e, server = %addr, "cancel request for client.query_timeout failed")
            }
        }
    }

    pub(super) fn facts(&self) -> SessionFacts {
        let routing = &self.live.config.routing;
        let stays_on_primary = self.state.has_written
            && routing.reads_after_write == pgrouter_config::ReadsAfterWrite::Primary;
        SessionFacts {
            pinned: self.state.pin.is_some(),
            load_balance: routing.load_balance
                && self.endpoint.splits()
                && !stays_on_primary
                && !self.reads_on_primary,
            default_read_only: self.state.default_read_only,
        }
    }
}

/// Relays until the client terminates, a connection in use is lost, or pgrouter shuts down.
pub(super) async fn relay(
    client: &mut ClientConn,
    session: &mut Session<'_>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    // Transaction pooling: the connection opened at login goes back until the first request.
    session.release_if_idle(Slot::Primary).await;
    // Set when shutdown begins: the session ends once it is idle, or at this deadline.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // The idle, idle-in-transaction and query timers (client.*_timeout).
    let mut last_activity = tokio::time::Instant::now();
    let mut busy_since: Option<tokio::time::Instant> = None;
    let mut cancel_sent_at: Option<tokio::time::Instant> = None;
    let mut timing_was_on = false;
    let mut starved_since: Option<tokio::time::Instant> = None;
    // Shutdown reaches the loop through the client's registry entry (`StopSignal`: an atomic
    // load each pass, where the token's future takes its lock whenever it is polled). The
    // signal is raised for every registered client once the token is cancelled; a session
    // that registered after that sees the token itself here.
    let stop = std::sync::Arc::clone(&session.entry);
    if shutdown.is_cancelled() {
        stop.stop.stop();
    }
    loop {
        session.refresh_live();
        if drain_deadline.is_some() && session.is_quiescent(client) {
            return Err(shutting_down(false));
        }
        let blocked = match session.drain_client(client).await? {
            Drain::Terminated => return Ok(()),
            Drain::Blocked => true,
            Drain::NeedMore => false,
        };
        client.shrink_if_empty();
        // Room to read into, within the client buffer budget. Without it the session stops
        // reading (TCP pushes back on the client) until memory is freed; after a short grace the
        // message it was gathering streams on instead, so no session waits on others forever.
        let starved = !blocked && !client.make_room();
        if starved {
            starved_since.get_or_insert_with(tokio::time::Instant::now);
        } else {
            starved_since = None;
        }
        let ctx = session.ctx;
        let limits = session.timeout_limits();
        // Clock reads only when a timer is configured; a reload that turns one on starts it
        // from now, not from the last activity seen before.
        let timing = limits.any();
        if timing && !timing_was_on {
            last_activity = tokio::time::Instant::now();
            (busy_since, cancel_sent_at) = (None, None);
        }
        timing_was_on = timing;
        let timer = {
            if session.busy().is_some() {
                busy_since.get_or_insert(last_activity);
            } else {
                (busy_since, cancel_sent_at) = (None, None);
            }
            super::timeouts::next(
                &limits,
                &super::timeouts::Facts {
                    busy_since,
                    cancel_sent_at,
                    in_transaction: session.state.tx_status != TransactionStatus::Idle
                        || session.deferred_begin.is_some(),
                    last_activity,
                },
            )
        };
        tokio::select! {
            read = client.stream.read_buf(&mut client.buf), if !blocked && !starved => {
                if let Ok(n) = read {
                    client.entry.received(n);
                }
                if !matches!(read, Ok(n) if n > 0) {
                    // The session's connections are released (or closed, rolling back whatever
                    // was open) when it ends.
                    return Err(SessionError::ClientGone);
                }
                if timing {
                    last_activity = tokio::time::Instant::now();
                }
            }
            read = read_opt(&mut session.primary) => {
                session.relay_server_output(client, Slot::Primary, read).await?;
                if timing {
                    last_activity = tokio::time::Instant::now();
                }
            }
            read = read_opt(&mut session.read) => {
                session.relay_server_output(client, Slot::Read, read).await?;
                if timing {
                    last_activity = tokio::time::Instant::now();
                }
            }
            () = sleep_until_opt(timer.map(|(at, _)| at)), if timer.is_some() => {
                use super::timeouts::Expired;
                match timer.map(|(_, expired)| expired) {
                    Some(Expired::Idle) => return Err(ErrorResponse::fatal(
                        SqlState::IDLE_SESSION_TIMEOUT,
                        "terminating connection due to idle-session timeout",
                    ).into()),
                    Some(Expired::IdleInTransaction) => return Err(ErrorResponse::fatal(
                        SqlState::IDLE_IN_TRANSACTION_TIMEOUT,
                        "terminating connection due to idle-in-transaction timeout",
                    ).into()),
                    Some(Expired::Query) => {
                        cancel_sent_at = Some(tokio::time::Instant::now());
                        session.cancel_busy_request().await;
                    }
                    Some(Expired::CancelIgnored) => {
                        tracing::warn!("the server ignored the cancel request of client.query_timeout; closing the session");
                        return Err(ErrorResponse::fatal(
                            SqlState::CONNECTION_FAILURE,
                            "terminating connection because the server did not answer within client.query_timeout, nor cancel the request",
                        ).into());
                    }
                    None => {}
                }
            }
            () = ctx.buffer_budget.freed(), if starved => {}
            () = sleep_until_opt(starved_since.map(|at| at + STARVED_GRACE)), if starved => {
                session.force_stream = true;
            }
            () = std::future::poll_fn(|cx| stop.stop.poll_stopped(cx)), if drain_deadline.is_none() => {
                let timeout = session.live.config.shutdown_timeout.get();
                drain_deadline = Some(tokio::time::Instant::now() + timeout);
                if !session.is_quiescent(client) {
                    tracing::info!(timeout = ?timeout, "shutting down: letting this session's transaction or request finish");
                }
            }
            () = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => {
                tracing::info!("shutdown_timeout expired: closing a session with a transaction or request still open");
                return Err(shutting_down(true));
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one. Nothing is built until it is polled:
/// `select!` creates the future of every branch on every pass, disabled ones included, and a
/// `Sleep` made there would read the clock and touch the runtime's timer for nothing.
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long a session waits for client buffer memory before the message it is gathering streams
/// on unclassified (to the primary).
const STARVED_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// PostgreSQL's error for sessions closed by a shutdown (`57P01`).
fn shutting_down(timed_out: bool) -> SessionError {
    let error = ErrorResponse::fatal(
        SqlState::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    );
    if timed_out {
        error
            .with_detail("pgrouter is shutting down and shutdown_timeout expired; the open transaction was rolled back.")
            .into()
    } else {
        error.into()
    }
}
