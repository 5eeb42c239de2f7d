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
use super::client::{frame_error, ClientConn};
use super::state::SessionState;
use super::unit::{
    body, bound_classification, classify_text, effective_route, frames, leaves_session_clean,
    may_set_sequences, name_key, next_unit, protocol_violation,
};
use super::{server_lost, SessionError};
use crate::cancel::{CancelSlot, ServerKey};
use crate::clients::{ClientEntry, ClientState};
use crate::context::{PooledState, ProxyContext};
use crate::routing::{self, Endpoint, SessionFacts, Target};
use crate::stats::Stats;
use bytes::{Bytes, BytesMut};
use pgrouter_protocol::backend::{self as be, TransactionStatus};
use pgrouter_protocol::frame;
use pgrouter_protocol::{frontend as fe, ErrorResponse, SqlState};
use pgrouter_sql::{Classification, Route, Rule, TxControl};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Connects a new backend on behalf of the session: to node `Some(n)`, or to the primary (`None`),
/// waiting for one during a failover.
pub(super) type Connector<'a> = dyn Fn(Option<usize>) -> Pin<Box<dyn Future<Output = Result<Backend, SessionError>> + Send + 'a>>
    + Sync
    + 'a;

/// A session after login.
pub(super) struct Session<'a> {
    pub(super) ctx: &'a ProxyContext,
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
    pub(super) cancel: CancelSlot,
    pub(super) connect: &'a Connector<'a>,
    /// The client's row in the registry (state, server connections, counts).
    pub(super) entry: Arc<ClientEntry>,
    /// When the request being answered, and the open transaction, started.
    pub(super) timing: Timing,
}

/// Start times for the latency histograms.
#[derive(Debug, Default)]
pub(super) struct Timing {
    request: Option<Instant>,
    transaction: Option<Instant>,
}

impl Timing {
    /// A request went to a server.
    fn started(&mut self, entry: &ClientEntry) {
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
        stats.request_duration.record((now - started).as_secs_f64());
        stats.requests.fetch_add(1, Ordering::Relaxed);
        entry.requests.fetch_add(1, Ordering::Relaxed);
        if status == TransactionStatus::Idle {
            entry.set_state(ClientState::Idle);
            if let Some(tx_started) = self.transaction.take() {
                stats
                    .transaction_duration
                    .record((now - tx_started).as_secs_f64());
                stats.transactions.fetch_add(1, Ordering::Relaxed);
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

/// Where a unit goes and what it is.
struct Plan {
    /// Only reads, outside a transaction: safe to re-run elsewhere if its connection breaks.
    is_read: bool,
    /// The unit cannot be served now (reads with no replica and no fallback to the primary).
    unavailable: Option<ErrorResponse>,
    /// `None`: nothing to route, stay on the current connection.
    slot: Option<Slot>,
    /// The statements the unit runs.
    parts: Vec<Arc<Classification>>,
    /// The statements it only prepares.
    parsed: Vec<Arc<Classification>>,
    /// A lone `BEGIN` that pgrouter answers itself.
    deferred_begin: bool,
}

/// What [`Session::classify_unit`] found in a unit.
pub(super) struct UnitClass {
    /// The combined route of everything in it.
    route: Route,
    /// The statements it runs, in order (what their completion changes in the session).
    pub(super) runs: Vec<Arc<Classification>>,
    /// The statements it only prepares.
    parsed: Vec<Arc<Classification>>,
    /// The first statement's transaction control (`BEGIN`, `SET TRANSACTION READ ONLY`).
    first_tx: Option<TxControl>,
    /// It binds or describes the unnamed statement made by an earlier request.
    needs_unnamed: bool,
    /// It has anything to route (not only `Sync`, `Close`, …).
    routable: bool,
}

/// Functions called by a unit's read statements whose volatility is not known yet.
fn unresolved_functions<'c>(
    ctx: &ProxyContext,
    parts: impl Iterator<Item = &'c Arc<Classification>>,
) -> Vec<String> {
    parts
        .filter(|c| c.route == Route::Read && !c.check_functions.is_empty())
        .filter(|c| ctx.any_volatile(&c.check_functions).is_none())
        .flat_map(|c| c.check_functions.iter().cloned())
        .collect()
}

impl<'a> Session<'a> {
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
        if self.state.tx_status != TransactionStatus::Idle && self.deferred_begin.is_none() {
            return Some(self.current);
        }
        for (slot, b) in [(Slot::Primary, &self.primary), (Slot::Read, &self.read)] {
            if b.as_ref().is_some_and(|b| b.in_segment && b.segment_runs) {
                return Some(slot);
            }
        }
        None
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
            && client.buf.is_empty()
    }

    pub(super) fn facts(&self) -> SessionFacts {
        SessionFacts {
            pinned: self.state.pin.is_some(),
            load_balance: self.ctx.live().config.routing.load_balance && self.endpoint.splits(),
            default_read_only: self.state.default_read_only,
        }
    }

    /// Classifies a unit: its combined route, the statements it runs, and whether it starts a
    /// (read-only) transaction.
    pub(super) fn classify_unit(&self, unit: &[u8]) -> UnitClass {
        let mut routable = false;
        let mut route = Route::Read;
        // Statements that run in this unit: simple queries, and prepared statements it binds.
        // Their effects on the session apply when the unit completes.
        let mut runs = Vec::new();
        // Statements it only prepares: they route the unit (a `Parse` goes where it will run)
        // but change nothing until a later `Bind` runs them.
        let mut parsed: Vec<(&[u8], &[u8], Arc<Classification>)> = Vec::new();
        let mut needs_unnamed = false;
        let demote = |r: Route, route: &mut Route| {
            if r != Route::Read {
                *route = Route::Primary;
            }
        };
        for (tag, msg) in frames(unit) {
            routable |= matches!(
                tag,
                fe::QUERY | fe::PARSE | fe::BIND | fe::FUNCTION_CALL | fe::COPY_DATA
            );
            match tag {
                fe::QUERY => {
                    let c = classify_text(self.ctx, fe::query_text(body(msg)).unwrap_or_default());
                    demote(self.effective_route(&c), &mut route);
                    runs.push(c);
                }
                fe::PARSE => {
                    if let Some((name, sql)) = fe::parse_parse(body(msg)) {
                        let c = classify_text(self.ctx, sql);
                        demote(self.effective_route(&c), &mut route);
                        parsed.retain(|(n, _, _)| *n != name);
                        parsed.push((name, body(msg), c));
                    }
                }
                fe::BIND => {
                    let name = fe::bind_statement(body(msg)).unwrap_or_default();
                    if let Some((_, parse, c)) = parsed.iter().find(|(n, _, _)| *n == name) {
                        runs.push(bound_classification(c, body(msg), parse));
                    } else {
                        // A statement made by an earlier request (the unnamed one included)
                        // routes as it was classified; one this client never made goes to the
                        // primary, where it gets PostgreSQL's 26000.
                        needs_unnamed |= name.is_empty();
                        match self.state.statements.get(name_key(name).as_ref()) {
                            Some(stored) => {
                                demote(stored.route, &mut route);
                                runs.push(bound_classification(
                                    &stored.classification,
                                    body(msg),
                                    body(&stored.parse),
                                ));
                            }
                            None => demote(Route::Primary, &mut route),
                        }
                    }
                }
                // Describing the unnamed statement made by an earlier segment: it lives on one
                // connection only.
                fe::DESCRIBE
                    if fe::describe_target(body(msg)) == Some((fe::TARGET_STATEMENT, &b""[..]))
                        && !parsed.iter().any(|(n, _, _)| n.is_empty()) =>
                {
                    needs_unnamed = true;
                }
                fe::FUNCTION_CALL | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                    route = Route::Primary
                }
                _ => {}
            }
        }
        let first_tx = runs
            .first()
            .and_then(|c| c.effects.transaction.first().copied());
        UnitClass {
            route,
            runs,
            parsed: parsed.into_iter().map(|(_, _, c)| c).collect(),
            first_tx,
            needs_unnamed,
            routable,
        }
    }

    /// The route of one statement once session knowledge is added.
    pub(super) fn effective_route(&self, c: &Classification) -> Route {
        effective_route(self.ctx, &self.state, c)
    }

    /// Re-checks the session's read node when the routing table changed: a node that no longer
    /// serves reads is replaced by another (or by the primary).
    pub(super) fn follow_topology(&mut self) {
        let table = self.ctx.topology.load();
        if table.generation == self.read_generation {
            return;
        }
        self.read_generation = table.generation;
        if self.ctx.live().config.routing.load_balance
            && self.endpoint.splits()
            && !self.read_node.is_some_and(|n| table.serves_reads(n))
        {
            self.read_node = self.ctx.pick_read_node(&table);
        }
    }

    /// The slot's connection is to a node that no longer has that job: the main connection to a
    /// node the endpoint no longer accepts (not the primary any more; for the read-only
    /// endpoint, not serving reads), or the read connection to a node that is not this
    /// session's read node.
    pub(super) fn is_stale(&self, slot: Slot) -> bool {
        match slot {
            Slot::Primary => self.primary.as_ref().is_some_and(|b| {
                let fallback = self.ctx.live().config.routing.reads_fallback_to_primary;
                let pinned = self.state.pin.is_some();
                self.endpoint
                    .should_move(&self.ctx.topology.load(), b.node, fallback, pinned)
            }),
            Slot::Read => self
                .read
                .as_ref()
                .is_some_and(|b| self.read_node != Some(b.node)),
        }
    }

    /// Whether the main connection may stay on `node`.
    fn main_node_accepted(&self, table: &pgrouter_topology::RoutingTable, node: usize) -> bool {
        let fallback = self.ctx.live().config.routing.reads_fallback_to_primary;
        self.endpoint.accepts(table, node, fallback)
    }

    /// Closes a slot's connection (politely: an open transaction there is rolled back).
    pub(super) async fn close_backend(&mut self, slot: Slot) {
        let taken = self.take_backend(slot);
        if let Some(b) = taken {
            tracing::info!(node = %self.ctx.node_name(b.node), "closing a server connection to a node whose role changed");
            b.terminate().await;
        }
    }

    /// Opens the backend for a slot if needed, following the routing table: a connection to a
    /// node that lost its role is closed first (the caller made sure it owes nothing). A read
    /// node that cannot be reached falls back to the primary.
    pub(super) async fn ensure(&mut self, slot: Slot) -> Result<Slot, SessionError> {
        if self.is_stale(slot) {
            if slot == Slot::Primary && self.state.pin.is_some() {
                // Temporary tables, listeners, … live on the old primary: they cannot follow.
                let what = if self.endpoint == Endpoint::ReadOnly {
                    "the read node left the routing table"
                } else {
                    "the primary changed"
                };
                return Err(SessionError::Fatal(
                    ErrorResponse::fatal(
                        SqlState::CONNECTION_FAILURE,
                        format!("{what}; this session's server-side state (temporary tables, LISTEN, locks) is gone"),
                    )
                    .with_hint("Reconnect and recreate the session state."),
                ));
            }
            self.close_backend(slot).await;
        }
        if self.backend(slot).is_some() {
            return Ok(slot);
        }
        match slot {
            Slot::Primary => {
                let b = (self.connect)(None).await?;
                self.primary = Some(b);
                if self.current == Slot::Primary {
                    self.point_cancel_at(Slot::Primary);
                }
                Ok(Slot::Primary)
            }
            Slot::Read => {
                let primary = self.ctx.topology.load().primary;
                let Some(node) = self.read_node.filter(|n| Some(*n) != primary) else {
                    return Box::pin(self.ensure(Slot::Primary)).await;
                };
                match (self.connect)(Some(node)).await {
                    Ok(b) => {
                        self.read = Some(b);
                        if self.current == Slot::Read {
                            // A reopened connection has a new key for cancel requests.
                            self.point_cancel_at(Slot::Read);
                        }
                        Ok(Slot::Read)
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.ctx.node_name(node), error = ?e,
                            "read node unreachable; this session reads from the primary");
                        self.read_node = None;
                        Box::pin(self.ensure(Slot::Primary)).await
                    }
                }
            }
        }
    }

    pub(super) fn slot_for(&self, target: Target) -> Slot {
        let primary = self.ctx.topology.load().primary;
        match (target, self.read_node) {
            (Target::Read, Some(node)) if Some(node) != primary => Slot::Read,
            _ => Slot::Primary,
        }
    }

    /// Reads are refused when nothing serves them and `routing.reads_fallback_to_primary` is off.
    fn reads_unavailable(&self, target: Target) -> Option<ErrorResponse> {
        if target != Target::Read
            || self.read_node.is_some()
            || self.ctx.live().config.routing.reads_fallback_to_primary
        {
            return None;
        }
        Some(
            ErrorResponse::error(
                SqlState::CANNOT_CONNECT_NOW,
                "no replica is available for reads",
            )
            .with_hint(
                "Every replica is down, lagging or excluded, and routing.reads_fallback_to_primary is off.",
            ),
        )
    }

    pub(super) fn point_cancel_at(&self, slot: Slot) {
        let key = match slot {
            Slot::Primary => self.primary.as_ref(),
            Slot::Read => self.read.as_ref(),
        }
        .and_then(|b| {
            b.conn
                .backend_key
                .map(|(process_id, secret_key)| ServerKey {
                    addr: b.conn.addr,
                    process_id,
                    secret_key,
                })
        });
        self.cancel.point_at(key);
    }

    /// Handles every complete client message in the buffer.
    pub(super) async fn drain_client(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Drain, SessionError> {
        let max_len = self.ctx.max_message_size();
        loop {
            if let Some(slot) = self.attached() {
                // Inside a transaction or a segment: everything goes to the same connection.
                let mut ready = 0;
                let mut terminate = false;
                while let Some(f) =
                    frame::next_frame(&client.buf[ready..], max_len).map_err(frame_error)?
                {
                    if !fe::is_session_message(f.tag) {
                        return Err(protocol_violation(format!(
                            "invalid frontend message type {}",
                            f.tag
                        )));
                    }
                    if f.tag == fe::TERMINATE {
                        terminate = true;
                        break;
                    }
                    ready += f.total_len;
                }
                if ready > 0 {
                    let bytes = client.buf.split_to(ready).freeze();
                    if self.backend(slot).is_none() || self.is_stale(slot) {
                        // The transaction's server is gone or is not the primary any more:
                        // never send it more (that could write to two primaries).
                        self.abandon(client, slot, transaction_lost(), &bytes)
                            .await?;
                    } else {
                        let classifications = self.classify_unit(&bytes).runs;
                        self.send(slot, &bytes, classifications, BytesMut::new())
                            .await?;
                    }
                }
                if terminate {
                    return Ok(Drain::Terminated);
                }
                // Make room for a partly received message.
                let _ = next_unit(&mut client.buf, max_len)?;
                return Ok(Drain::NeedMore);
            }
            let Some(unit) = next_unit(&mut client.buf, max_len)? else {
                return Ok(Drain::NeedMore);
            };
            if unit.terminate {
                return Ok(Drain::Terminated);
            }
            if let Some(error) = self.lost_transaction.take() {
                if self.busy().is_some() {
                    self.lost_transaction = Some(error);
                    return Ok(Drain::Blocked);
                }
                let bytes = client.buf.split_to(unit.len).freeze();
                self.answer_lost_transaction(client, &bytes, error).await?;
                continue;
            }
            if self.transaction_pooling
                && self.busy().is_none()
                && self.prepare_locally(client, unit.len).await?
            {
                continue;
            }
            self.follow_topology();
            let mut plan = self.plan(&client.buf[..unit.len]);
            let unknown = unresolved_functions(self.ctx, plan.parts.iter().chain(&plan.parsed));
            if !unknown.is_empty() {
                if self.busy().is_some() {
                    return Ok(Drain::Blocked);
                }
                match self.look_up_volatility(client, &unknown).await {
                    Ok(()) => plan = self.plan(&client.buf[..unit.len]),
                    Err(SessionError::Unavailable(error)) => {
                        let bytes = client.buf.split_to(unit.len).freeze();
                        self.answer_with_error(client, &bytes, &error).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(busy) = self.busy() {
                // Earlier requests are still answering: keep responses in order by sending this one
                // to the same connection, or by waiting until that connection is done (also when
                // that connection's node lost its role: it is replaced once it owes nothing).
                let holding = self.backend(busy).is_some_and(|b| b.retry.is_some());
                if plan.deferred_begin
                    || holding
                    || plan.slot.is_some_and(|s| s != busy)
                    || (plan.slot == Some(busy) && self.is_stale(busy))
                {
                    if let Some(b) = self.backend(busy) {
                        // Busy only with a segment that prepared statements: close it, then go on.
                        b.close_idle_segment().await;
                    }
                    return Ok(Drain::Blocked);
                }
            }
            let bytes = client.buf.split_to(unit.len).freeze();
            self.route_unit(client, bytes, plan).await?;
        }
    }

    /// Transaction pooling: a request that only prepares named statements (`Parse`… `Sync`, as
    /// libpq's `PQprepare` sends) outside a transaction is answered here, without taking a server
    /// connection; each statement is prepared on whichever connection first runs it. Waiting for
    /// a connection here could deadlock a client program that prepares on one connection while it
    /// holds a transaction open on another (pgbench does). An invalid statement reports its error
    /// when first used. Returns whether the request was answered.
    async fn prepare_locally(
        &mut self,
        client: &mut ClientConn,
        len: usize,
    ) -> Result<bool, SessionError> {
        if self.state.tx_status != TransactionStatus::Idle || self.deferred_begin.is_some() {
            return Ok(false);
        }
        let unit = &client.buf[..len];
        let count = frames(unit).count();
        let only_named_parses = count >= 2
            && frames(unit).enumerate().all(|(i, (tag, msg))| {
                if i + 1 == count {
                    tag == fe::SYNC
                } else {
                    tag == fe::PARSE
                        && fe::parse_parse(body(msg)).is_some_and(|(name, _)| !name.is_empty())
                }
            });
        if !only_named_parses {
            return Ok(false);
        }
        let bytes = client.buf.split_to(len).freeze();
        let mut out = BytesMut::new();
        let mut failed = false;
        for (tag, msg) in frames(&bytes) {
            if tag == fe::SYNC {
                be::ready_for_query(&mut out, TransactionStatus::Idle);
                continue;
            }
            let Some((name, sql)) = fe::parse_parse(body(msg)) else {
                continue;
            };
            if failed {
                continue;
            }
            let name_len = name.len();
            let name = name_key(name);
            let name = name.as_ref();
            if self.state.statements.contains_key(name) {
                ErrorResponse::error(
                    SqlState::DUPLICATE_PREPARED_STATEMENT,
                    format!("prepared statement \"{name}\" already exists"),
                )
                .encode(&mut out);
                failed = true;
                continue;
            }
            let c = classify_text(self.ctx, sql);
            let route = effective_route(self.ctx, &self.state, &c);
            self.state
                .store_statement(name, name_len, Bytes::copy_from_slice(msg), route, c);
            be::parse_complete(&mut out);
        }
        client.write_all(&out).await?;
        Ok(true)
    }

    /// Asks the primary's catalog whether these functions are VOLATILE, on the session's own
    /// primary connection (which is idle here), and caches the answer for every session.
    pub(super) async fn look_up_volatility(
        &mut self,
        client: &mut ClientConn,
        names: &[String],
    ) -> Result<(), SessionError> {
        let slot = self.ensure(Slot::Primary).await?;
        let list = names
            .iter()
            .map(|n| format!("'{}'", n.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT proname, bool_or(provolatile = 'v') FROM pg_catalog.pg_proc \
             WHERE proname IN ({list}) GROUP BY proname"
        );
        let Some(b) = self.backend(slot) else {
            return Err(server_lost());
        };
        let rows = b.query_rows(client, &sql).await?;
        self.ctx
            .remember_volatility(rows.into_iter().filter_map(|row| {
                let name = row.first()?.clone()?;
                let volatile = row.get(1)?.as_deref() == Some("t");
                Some((name, volatile))
            }));
        Ok(())
    }

    /// Decides where a unit goes (without side effects).
    fn plan(&self, bytes: &[u8]) -> Plan {
        let UnitClass {
            route,
            runs: parts,
            parsed,
            first_tx,
            needs_unnamed,
            routable,
        } = self.classify_unit(bytes);
        let facts = self.facts();
        let deferred_begin = self.deferred_begin.is_none()
            && self.state.tx_status == TransactionStatus::Idle
            && parts.len() == 1
            && parts[0].rule == Rule::TransactionControl
            && parts[0].effects.transaction == [TxControl::Begin { read_only: false }]
            && frames(bytes).count() == 1
            && bytes.first() == Some(&fe::QUERY)
            && is_single_statement(bytes)
            && !facts.pinned
            && facts.load_balance
            && !facts.default_read_only;
        let (begins, begins_ro) = match (&self.deferred_begin, first_tx) {
            (Some(_), Some(TxControl::SetReadOnly(ro))) => (true, ro),
            (Some(_), _) => (true, false),
            (None, Some(TxControl::Begin { read_only })) => (true, read_only),
            _ => (false, false),
        };
        let mut unavailable = None;
        let mut target = None;
        let mut slot = if routable || self.deferred_begin.is_some() {
            let chosen = routing::choose(route, begins, begins_ro, facts);
            target = Some(chosen);
            unavailable = self.reads_unavailable(chosen);
            Some(self.slot_for(chosen))
        } else {
            // Nothing to route (e.g. only Close/Sync): stay where the session is.
            None
        };
        if needs_unnamed && target != Some(Target::Primary) {
            // The unnamed statement the client made last lives on one connection: a read may use
            // it there (else it is prepared again where the unit goes). What must run on the
            // primary goes there whatever holds the statement.
            let current = self.state.statements.get("").map(|s| s.version);
            let holder = [Slot::Primary, Slot::Read].into_iter().find(|s| {
                let b = match s {
                    Slot::Primary => self.primary.as_ref(),
                    Slot::Read => self.read.as_ref(),
                };
                current.is_some() && b.and_then(|b| b.prepared.get("")).copied() == current
            });
            if holder.is_some() {
                slot = holder;
            }
        }
        Plan {
            is_read: routable && route == Route::Read && first_tx.is_none(),
            unavailable,
            slot,
            parts,
            parsed,
            deferred_begin,
        }
    }

    /// Sends a unit that starts at a transaction boundary where its plan says.
    async fn route_unit(
        &mut self,
        client: &mut ClientConn,
        bytes: Bytes,
        plan: Plan,
    ) -> Result<(), SessionError> {
        if plan.deferred_begin {
            // A lone BEGIN: answer it now and let the next request choose the node.
            self.deferred_begin = Some(bytes);
            self.state.tx_status = TransactionStatus::InTransaction;
            let mut out = BytesMut::with_capacity(32);
            be::command_complete(&mut out, "BEGIN");
            be::ready_for_query(&mut out, TransactionStatus::InTransaction);
            client.write_all(&out).await?;
            return Ok(());
        }
        if let Some(error) = plan.unavailable {
            return self.answer_with_error(client, &bytes, &error).await;
        }
        let wanted = plan
            .slot
            .unwrap_or(if self.backend(self.current).is_some() {
                self.current
            } else {
                Slot::Primary
            });
        // While the request waits for a server connection (a pool checkout, a new replica
        // connection), a cancel for it has no server to go to: it cancels the request instead.
        // Only for a whole request outside a transaction with nothing else in flight, which
        // can be answered here exactly as PostgreSQL would have answered it.
        let cancellable = self.busy().is_none()
            && self.state.tx_status == TransactionStatus::Idle
            && self.deferred_begin.is_none()
            && matches!(
                frames(&bytes).last().map(|(tag, _)| tag),
                Some(fe::QUERY | fe::SYNC | fe::FUNCTION_CALL)
            );
        if cancellable {
            self.cancel.request_waits();
        }
        let ensured = self.ensure(wanted).await;
        if cancellable && self.cancel.request_sent() {
            let cancelled = ErrorResponse::error(
                SqlState::QUERY_CANCELED,
                "canceling statement due to user request",
            );
            self.answer_with_error(client, &bytes, &cancelled).await?;
            if let Ok(slot) = ensured {
                // Transaction pooling: the connection it waited for goes back at once.
                self.release_if_idle(slot).await;
            }
            return Ok(());
        }
        let slot = match ensured {
            Ok(slot) => slot,
            Err(SessionError::Unavailable(error)) => {
                // No primary after the failover timeout: this request fails, the session stays.
                if self.deferred_begin.take().is_some() {
                    self.state.tx_status = TransactionStatus::Idle;
                }
                return self.answer_with_error(client, &bytes, &error).await;
            }
            Err(e) => return Err(e),
        };
        let mut prefix = BytesMut::new();
        // Session changes first, outside the transaction: replayed after the deferred BEGIN,
        // a ROLLBACK would undo them (and the server would report the old client_encoding).
        self.replay_into(slot, &mut prefix);
        if let Some(begin) = self.deferred_begin.take() {
            prefix.extend_from_slice(&begin);
            if let Some(b) = self.backend(slot) {
                b.swallow += 1;
                // A simple query destroys the connection's unnamed statement.
                b.prepared.remove("");
            }
        }
        if slot != self.current {
            self.point_cancel_at(slot);
        }
        self.current = slot;
        // Only a unit that is provably a read may be held for a re-run elsewhere.
        let retryable = plan.is_read
            && self.state.tx_status == TransactionStatus::Idle
            && matches!(frames(&bytes).last(), Some((fe::SYNC | fe::QUERY, _)));
        if retryable {
            if let Some(b) = self.backend(slot) {
                b.retry = Some(super::backend::Retry {
                    unit: bytes.clone(),
                    parts: plan.parts.clone(),
                    reruns: 0,
                });
            }
        }
        self.send(slot, &bytes, plan.parts, prefix).await
    }

    /// Re-runs a held read on the primary: its replica rejected it with `25006` or the replica
    /// connection broke before anything reached the client.
    pub(super) async fn retry_on_primary(
        &mut self,
        client: &mut ClientConn,
        retry: super::backend::Retry,
    ) -> Result<(), SessionError> {
        self.inflight.clear();
        let slot = match self.ensure(Slot::Primary).await {
            Ok(slot) => slot,
            Err(SessionError::Unavailable(error)) => {
                return self.answer_with_error(client, &retry.unit, &error).await
            }
            Err(e) => return Err(e),
        };
        let mut prefix = BytesMut::new();
        self.replay_into(slot, &mut prefix);
        self.point_cancel_at(slot);
        self.current = slot;
        let (unit, parts) = (retry.unit.clone(), retry.parts.clone());
        if retry.reruns < super::backend::MAX_RERUNS {
            // Hold this answer too: the primary connection may be lost before answering.
            if let Some(b) = self.backend(slot) {
                b.retry = Some(super::backend::Retry {
                    reruns: retry.reruns + 1,
                    ..retry
                });
            }
        }
        self.send(slot, &unit, parts, prefix).await
    }

    /// Appends the session changes this connection has not run yet (their results are swallowed).
    pub(super) fn replay_into(&mut self, slot: Slot, out: &mut BytesMut) {
        let total = self.state.replay.len();
        let log = &self.state.replay;
        let b = match slot {
            Slot::Primary => self.primary.as_mut(),
            Slot::Read => self.read.as_mut(),
        };
        let Some(b) = b else { return };
        // Sequence state of another session, or this session's from before its latest write
        // elsewhere: `currval` must fail there (55000), never answer with someone else's value.
        if b.sequences
            .is_some_and(|mark| mark != self.state.sequence_mark())
        {
            fe::write_query(out, "DISCARD SEQUENCES");
            b.swallow += 1;
            b.prepared.remove("");
            b.sequences = None;
        }
        if b.replayed >= total {
            return;
        }
        let pending = &log[b.replayed..];
        if pending
            .iter()
            .any(|s| s == "DISCARD ALL" || s == "DEALLOCATE ALL")
        {
            b.prepared.clear();
        }
        // The replay is a simple query: it destroys the connection's unnamed statement.
        b.prepared.remove("");
        let sql = pending.join(";\n");
        // Replay runs as one implicit transaction, so a DISCARD ALL inside it would fail: run
        // such logs statement by statement.
        if pending.len() > 1 && pending.iter().any(|s| s == "DISCARD ALL") {
            for s in pending {
                fe::write_query(out, s);
                b.swallow += 1;
            }
        } else {
            fe::write_query(out, &sql);
            b.swallow += 1;
        }
        b.replayed = total;
    }

    /// Sends client messages to a connection with the bookkeeping they need; `prefix` holds
    /// pgrouter's own messages to send first.
    pub(super) async fn send(
        &mut self,
        slot: Slot,
        bytes: &Bytes,
        parts: Vec<Arc<Classification>>,
        mut out: BytesMut,
    ) -> Result<(), SessionError> {
        self.timing.started(&self.entry);
        self.show_links();
        let state = &mut self.state;
        let (b, mut other) = match slot {
            Slot::Primary => (self.primary.as_mut(), self.read.as_mut()),
            Slot::Read => (self.read.as_mut(), self.primary.as_mut()),
        };
        let Some(b) = b else {
            return Err(server_lost());
        };
        if parts.iter().any(|c| may_set_sequences(c)) {
            // Another connection holding this session's older sequence state is stale now.
            b.sequences = Some(state.wrote());
        }
        for c in &parts {
            self.ctx.stats.routed(b.node, c.route, c.rule);
            // `parts` holds what the unit runs, prepared statements it binds included.
            if !leaves_session_clean(self.ctx, c) {
                b.dirty = true;
            }
            // DEALLOCATE of a protocol-level statement this connection does not hold (it was
            // prepared on another one): prepare it here first, invisibly, so that the DEALLOCATE
            // succeeds as it would have on the client's one connection.
            for change in &c.effects.session {
                let pgrouter_sql::SessionChange::Deallocate(Some(name)) = change else {
                    continue;
                };
                let Some(stored) = state.statements.get(name.as_str()) else {
                    continue;
                };
                if b.prepared.get(name.as_str()) != Some(&stored.version) {
                    if b.prepared.contains_key(name.as_str()) {
                        fe::write_close_statement(&mut out, name.as_bytes());
                    }
                    out.extend_from_slice(&stored.parse);
                    fe::write_sync(&mut out);
                    b.swallow += 1;
                    b.prepared.insert(name.clone(), stored.version);
                }
            }
        }
        // Copy only when something has to be inserted between client messages.
        let mut copied_upto = 0usize;
        let mut pos = 0usize;
        for (tag, msg) in frames(bytes) {
            let start = pos;
            pos += msg.len();
            match tag {
                fe::QUERY => {
                    b.pending += 1;
                    b.syncs_since_execute = 0;
                    // A simple query ends an open extended-protocol segment.
                    b.in_segment = false;
                    b.segment_runs = false;
                    // A simple query destroys the unnamed statement, for the session too.
                    b.prepared.remove("");
                    state.statements.remove("");
                }
                fe::SYNC => {
                    b.pending += 1;
                    b.syncs_since_execute += 1;
                    b.in_segment = false;
                    b.segment_runs = false;
                }
                fe::FUNCTION_CALL => {
                    b.pending += 1;
                    // A function called by OID: pgrouter cannot tell what it does.
                    b.dirty = true;
                }
                fe::COPY_DONE | fe::COPY_FAIL => {
                    // Syncs sent during copy-in were ignored by the server.
                    b.pending = b.pending.saturating_sub(b.syncs_since_execute);
                    b.syncs_since_execute = 0;
                }
                fe::PARSE => {
                    b.in_segment = true;
                    let Some((raw_name, sql)) = fe::parse_parse(body(msg)) else {
                        continue;
                    };
                    let name = name_key(raw_name);
                    let name = name.as_ref();
                    let c = classify_text(self.ctx, sql);
                    let route = effective_route(self.ctx, state, &c);
                    let stale = !name.is_empty()
                        && b.prepared.contains_key(name)
                        && !state.statements.contains_key(name);
                    // The unnamed statement is replaced often: keep a view of the client's
                    // buffer rather than a copy. Named ones live long: copy them out.
                    let parse = if name.is_empty() {
                        bytes.slice(start..pos)
                    } else {
                        Bytes::copy_from_slice(msg)
                    };
                    let version = state.store_statement(name, raw_name.len(), parse, route, c);
                    if stale {
                        // The client closed it on another connection: close it here first.
                        out.extend_from_slice(&bytes[copied_upto..start]);
                        copied_upto = start;
                        fe::write_close_statement(&mut out, name.as_bytes());
                        b.hide_close += 1;
                    }
                    if name.is_empty() {
                        // The other connection's unnamed statement is not the client's any more.
                        if let Some(o) = other.as_deref_mut() {
                            o.prepared.remove("");
                        }
                    }
                    b.prepared.insert(name.to_owned(), version);
                }
                fe::BIND | fe::DESCRIBE => {
                    b.in_segment = true;
                    b.segment_runs |= tag == fe::BIND;
                    let name = if tag == fe::BIND {
                        fe::bind_statement(body(msg))
                    } else {
                        fe::describe_target(body(msg))
                            .and_then(|(k, n)| (k == fe::TARGET_STATEMENT).then_some(n))
                    };
                    let Some(raw_name) = name else {
                        continue;
                    };
                    let name = name_key(raw_name);
                    let name = name.as_ref();
                    let Some(stored) = state.statements.get(name) else {
                        if state.sql_prepared.contains_key(name) {
                            // Made by SQL PREPARE on this connection's session: it is there.
                            continue;
                        }
                        // A statement this client never prepared (or closed). The connection may
                        // hold one of that name that another client left: close it first, so
                        // that the server answers with its own 26000 and runs nothing.
                        out.extend_from_slice(&bytes[copied_upto..start]);
                        copied_upto = start;
                        fe::write_close_statement(&mut out, raw_name);
                        b.hide_close += 1;
                        b.prepared.remove(name);
                        continue;
                    };
                    match b.prepared.get(name) {
                        Some(v) if *v == stored.version => {
                            if !name.is_empty() {
                                self.ctx.prepared_stats.hits.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        have => {
                            if !name.is_empty() {
                                self.ctx
                                    .prepared_stats
                                    .misses
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            // Prepared on another connection: prepare it here, invisibly.
                            out.extend_from_slice(&bytes[copied_upto..start]);
                            copied_upto = start;
                            if have.is_some() {
                                fe::write_close_statement(&mut out, raw_name);
                                b.hide_close += 1;
                            }
                            out.extend_from_slice(&stored.parse);
                            b.hide_parse += 1;
                            b.prepared.insert(name.to_owned(), stored.version);
                        }
                    }
                }
                fe::CLOSE => {
                    b.in_segment = true;
                    if let Some((fe::TARGET_STATEMENT, raw_name)) = fe::describe_target(body(msg)) {
                        let name = name_key(raw_name);
                        state.statements.remove(name.as_ref());
                        b.prepared.remove(name.as_ref());
                    }
                }
                fe::EXECUTE => {
                    b.in_segment = true;
                    b.segment_runs = true;
                    b.syncs_since_execute = 0;
                }
                fe::FLUSH => b.in_segment = true,
                _ => {}
            }
        }
        self.inflight.extend(parts);
        let result = if !out.is_empty() {
            out.extend_from_slice(&bytes[copied_upto..]);
            b.conn.stream.write_all(&out).await
        } else {
            b.conn.stream.write_all(bytes).await
        };
        if let Err(e) = result {
            // The connection is dead: reading it reports the end, and the requests just counted
            // as owed are answered then (see `abandon`).
            tracing::debug!(error = %e, "writing to a server connection failed");
        }
        Ok(())
    }

    /// Gives up a server connection that was lost (or must not be used any more) while the
    /// client waited for answers or had a transaction open there. Every request it owed, and the
    /// client's `unsent` requests, get `error` (the transaction is gone, as after a server
    /// restart), and the session goes on: its next request opens a new connection and replays the
    /// session's state there. A session pinned to its primary connection (temporary tables,
    /// LISTEN, …) cannot get that state back and is closed instead.
    pub(super) async fn abandon(
        &mut self,
        client: &mut ClientConn,
        slot: Slot,
        error: ErrorResponse,
        unsent: &[u8],
    ) -> Result<(), SessionError> {
        if slot == Slot::Primary && self.state.pin.is_some() {
            return Err(server_lost());
        }
        let in_tx = self.current == slot && self.state.tx_status != TransactionStatus::Idle;
        let taken = self.take_backend(slot);
        let (owed, error_sent) = match taken {
            Some(b) => {
                if !b.walker.at_boundary() {
                    // Part of a message reached the client: its stream cannot be repaired.
                    return Err(server_lost());
                }
                tracing::warn!(node = %self.ctx.node_name(b.node), owed = b.pending, in_tx,
                    "server connection lost mid-request; failing the request, keeping the client");
                let owed = (b.pending, b.saw_error);
                b.terminate().await;
                owed
            }
            None => (0, false),
        };
        let finished = std::mem::take(&mut self.inflight);
        self.state
            .complete(&finished, true, TransactionStatus::Idle);
        self.deferred_begin = None;
        let mut out = BytesMut::new();
        for i in 0..owed {
            // A FATAL error the server sent before closing was already relayed (as an ERROR).
            if i > 0 || !error_sent {
                error.encode(&mut out);
            }
            be::ready_for_query(&mut out, TransactionStatus::Idle);
        }
        let answered_unsent = answer_requests(&mut out, unsent, &error);
        if owed > 0 || answered_unsent {
            self.ctx.stats.error(error.code.code().as_bytes());
        }
        if owed == 0 && !answered_unsent && in_tx {
            // Idle in a transaction that no longer exists: its next request learns it.
            self.lost_transaction = Some(error);
        }
        // The requests are answered (with the error); the transaction is gone.
        self.timing
            .answered(TransactionStatus::Idle, &self.ctx.stats, &self.entry);
        if !out.is_empty() {
            client.write_all(&out).await?;
        }
        Ok(())
    }

    /// Answers every request in `unit` with `error`, as the server would have failed them.
    pub(super) async fn answer_with_error(
        &mut self,
        client: &mut ClientConn,
        unit: &[u8],
        error: &ErrorResponse,
    ) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        if answer_requests(&mut out, unit, error) {
            self.ctx.stats.error(error.code.code().as_bytes());
        }
        client.write_all(&out).await
    }

    /// The first request after a transaction was lost while idle: a plain `ROLLBACK` succeeds
    /// (there is nothing left to roll back), anything else gets the error.
    async fn answer_lost_transaction(
        &mut self,
        client: &mut ClientConn,
        unit: &[u8],
        error: ErrorResponse,
    ) -> Result<(), SessionError> {
        let parts = self.classify_unit(unit).runs;
        let rollback = matches!(frames(unit).next(), Some((fe::QUERY, _)))
            && frames(unit).count() == 1
            && parts.len() == 1
            && parts[0].effects.transaction == [TxControl::Rollback];
        if rollback {
            let mut out = BytesMut::with_capacity(32);
            be::command_complete(&mut out, "ROLLBACK");
            be::ready_for_query(&mut out, TransactionStatus::Idle);
            return client.write_all(&out).await;
        }
        self.answer_with_error(client, unit, &error).await
    }

    /// Transaction pooling: hands a connection back to the pool once the client's transaction
    /// (or statement) is over and the connection owes nothing. Sessions with state that lives
    /// only on that connection (pinned: temporary tables, LISTEN, …) keep it.
    pub(super) async fn release_if_idle(&mut self, slot: Slot) {
        if !self.transaction_pooling
            || self.state.pin.is_some()
            || self.state.tx_status != TransactionStatus::Idle
            || self.deferred_begin.is_some()
            || self.lost_transaction.is_some()
        {
            return;
        }
        let idle = self.backend(slot).is_some_and(|b| {
            !b.busy()
                && b.retry.is_none()
                && b.buf.is_empty()
                && b.walker.at_boundary()
                && b.hide_parse == 0
                && b.hide_close == 0
                && !b.said_fatal
        });
        if !idle {
            return;
        }
        let taken = self.take_backend(slot);
        let Some(b) = taken else { return };
        if self.current == slot {
            // A cancel request must not reach the connection's next client.
            self.cancel.point_at(None);
        }
        // Session settings replayed on (or made on) this connection, or anything the client ran
        // that may have left state pgrouter cannot see, must not reach the next client.
        let dirty = b.replayed > 0 || b.dirty;
        self.ctx
            .pools
            .checkin(
                b.conn,
                PooledState {
                    prepared: b.prepared,
                    sequences: b.sequences,
                },
                b.ticket,
                dirty,
            )
            .await;
    }

    /// At the end of the session: each server connection that owes nothing, is outside a
    /// transaction and whose node still has its role goes back to its pool (after the reset
    /// query); the others are closed politely, which rolls back whatever was open there.
    pub(super) async fn release_all(&mut self) {
        let table = self.ctx.topology.snapshot();
        let in_tx =
            self.state.tx_status != TransactionStatus::Idle && self.deferred_begin.is_none();
        for (slot, backend) in [
            (Slot::Primary, self.primary.take()),
            (Slot::Read, self.read.take()),
        ] {
            let Some(b) = backend else { continue };
            let still_has_role = match slot {
                Slot::Primary => self.main_node_accepted(&table, b.node),
                Slot::Read => table.serves_reads(b.node) || table.primary == Some(b.node),
            };
            let reusable = still_has_role
                && !b.busy()
                && b.buf.is_empty()
                && b.walker.at_boundary()
                && !(in_tx && self.current == slot)
                && !b.said_fatal;
            if reusable {
                self.ctx
                    .pools
                    .checkin(b.conn, PooledState::default(), b.ticket, true)
                    .await;
            } else {
                b.terminate().await;
            }
        }
    }
}

/// A simple-protocol `Query` holding one statement (`BEGIN;` but not `BEGIN; SELECT 1`, whose
/// results the client expects now). A `BEGIN` has no string literals, so any `;` before the end
/// means another statement.
fn is_single_statement(query: &[u8]) -> bool {
    let text = fe::query_text(body(query)).unwrap_or_default();
    let trimmed = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(&text[..0], |end| &text[..=end]);
    !trimmed.contains(&b';')
}

/// The error for requests whose server connection was lost mid-transaction.
pub(super) fn transaction_lost() -> ErrorResponse {
    ErrorResponse::error(
        SqlState::CONNECTION_FAILURE,
        "server connection lost; the current transaction was rolled back",
    )
    .with_detail("If a COMMIT was in progress, whether it committed is unknown.")
    .with_hint("pgrouter kept this client connection open: retry the transaction.")
}

/// Writes what PostgreSQL answers to `unit` when each of its requests fails with `error`: a simple
/// query or function call gets the error and `ReadyForQuery`; an extended-protocol segment gets
/// the error once, then `ReadyForQuery` at its `Sync`. Returns whether anything was answered.
fn answer_requests(out: &mut BytesMut, unit: &[u8], error: &ErrorResponse) -> bool {
    let mut failed_segment = false;
    let mut answered = false;
    for (tag, _) in frames(unit) {
        match tag {
            fe::QUERY | fe::FUNCTION_CALL => {
                error.encode(out);
                be::ready_for_query(out, TransactionStatus::Idle);
                answered = true;
            }
            fe::SYNC => {
                be::ready_for_query(out, TransactionStatus::Idle);
                failed_segment = false;
                answered = true;
            }
            fe::PARSE | fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE if !failed_segment => {
                error.encode(out);
                failed_segment = true;
                answered = true;
            }
            _ => {}
        }
    }
    answered
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
    loop {
        if drain_deadline.is_some() && session.is_quiescent(client) {
            return Err(shutting_down(false));
        }
        let blocked = match session.drain_client(client).await? {
            Drain::Terminated => return Ok(()),
            Drain::Blocked => true,
            Drain::NeedMore => false,
        };
        super::client::reserve_for_read(&mut client.buf);
        tokio::select! {
            read = client.stream.read_buf(&mut client.buf), if !blocked => {
                if let Ok(n) = read {
                    client.entry.received(n);
                }
                if !matches!(read, Ok(n) if n > 0) {
                    // The session's connections are released (or closed, rolling back whatever
                    // was open) when it ends.
                    return Err(SessionError::ClientGone);
                }
            }
            read = read_opt(&mut session.primary) => session.relay_server_output(client, Slot::Primary, read).await?,
            read = read_opt(&mut session.read) => session.relay_server_output(client, Slot::Read, read).await?,
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                let timeout = session.ctx.live().config.shutdown_timeout.get();
                drain_deadline = Some(tokio::time::Instant::now() + timeout);
                if !session.is_quiescent(client) {
                    tracing::info!(timeout = ?timeout, "shutting down: letting this session's transaction or request finish");
                }
            }
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)), if drain_deadline.is_some() => {
                tracing::info!("shutdown_timeout expired: closing a session with a transaction or request still open");
                return Err(shutting_down(true));
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with an empty body (enough for `answer_requests`, which looks at tags only).
    fn msg(tag: u8) -> [u8; 5] {
        [tag, 0, 0, 0, 4]
    }

    #[test]
    fn single_statement_queries() {
        #[rustfmt::skip]
        let cases = [
            ("BEGIN", true), ("BEGIN;", true), ("begin ;  \n", true),
            ("BEGIN; SELECT 1", false), ("BEGIN;SELECT 1;", false), ("BEGIN;;", true),
        ];
        for (sql, single) in cases {
            let mut q = BytesMut::new();
            fe::write_query(&mut q, sql);
            assert_eq!(is_single_statement(&q), single, "{sql:?}");
        }
    }

    #[test]
    fn failed_requests_are_answered_as_postgresql_would() {
        let error = ErrorResponse::error(SqlState::CANNOT_CONNECT_NOW, "no primary");
        #[rustfmt::skip]
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("simple query", &[fe::QUERY], b"EZ"),
            ("two simple queries", &[fe::QUERY, fe::QUERY], b"EZEZ"),
            ("extended segment: one error, then ReadyForQuery at Sync",
                &[fe::PARSE, fe::BIND, fe::DESCRIBE, fe::EXECUTE, fe::SYNC], b"EZ"),
            ("two segments", &[fe::BIND, fe::EXECUTE, fe::SYNC, fe::BIND, fe::EXECUTE, fe::SYNC], b"EZEZ"),
            ("a lone Sync only gets ReadyForQuery", &[fe::SYNC], b"Z"),
            ("segment without Sync yet", &[fe::PARSE, fe::BIND, fe::FLUSH], b"E"),
            ("function call", &[fe::FUNCTION_CALL], b"EZ"),
            ("copy data is not answered", &[fe::COPY_DATA, fe::COPY_DONE], b""),
        ];
        for (why, tags, expected) in cases {
            let unit: Vec<u8> = tags.iter().flat_map(|t| msg(*t)).collect();
            let mut out = BytesMut::new();
            let answered = answer_requests(&mut out, &unit, &error);
            let mut got = Vec::new();
            let mut rest = &out[..];
            while let Ok(Some(f)) = frame::next_frame(rest, usize::MAX) {
                got.push(f.tag);
                if f.tag == be::READY_FOR_QUERY {
                    assert_eq!(rest[5], b'I', "{why}: the transaction is over");
                }
                rest = &rest[f.total_len..];
            }
            assert_eq!(got, *expected, "{why}");
            assert_eq!(answered, !expected.is_empty(), "{why}");
        }
    }
}
