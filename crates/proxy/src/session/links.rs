//! The session's server connections: opening them as the routing table says, moving off nodes
//! whose role changed, pointing cancel requests at the one in use, and handing them back to the
//! pool (transaction pooling: after each transaction; always: at the end of the session).

use super::backend::Slot;
use super::relay::Session;
use super::SessionError;
use crate::cancel::ServerKey;
use crate::context::PooledState;
use crate::routing::{Endpoint, Target};
use pgrouter_protocol::backend::TransactionStatus;
use pgrouter_protocol::{ErrorResponse, SqlState};

impl Session<'_> {
    /// Re-checks the session's read node when the routing table changed: a node that no longer
    /// serves reads is replaced by another (or by the primary).
    pub(super) fn follow_topology(&mut self) {
        let table = self.ctx.topology.load();
        if table.generation == self.read_generation {
            return;
        }
        self.read_generation = table.generation;
        if self.live.config.routing.load_balance
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
                let fallback = self.live.config.routing.reads_fallback_to_primary;
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
    pub(super) fn main_node_accepted(
        &self,
        table: &pgrouter_topology::RoutingTable,
        node: usize,
    ) -> bool {
        let fallback = self.live.config.routing.reads_fallback_to_primary;
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
        if let Some(b) = self.backend(slot) {
            if !b.conn.cancels.clear() {
                // A cancel this client sent for an earlier statement is still on its way to
                // this connection; PostgreSQL would apply it to whatever runs next. (One of
                // unknown outcome is not waited for again: as with PostgreSQL itself, it can
                // only reach this client's own statements.)
                let cancels = b.conn.cancels.clone();
                let limit = self.live.config.pool.connect_timeout.get();
                cancels.settle(limit).await;
            }
            return Ok(slot);
        }
        match slot {
            Slot::Primary => {
                let b = self.login.backend(&self.entry, None).await?;
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
                match self.login.backend(&self.entry, Some(node)).await {
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

    /// Reads are refused when nothing serves them and `routing.reads_fallback_to_primary` is
    /// off (the error itself: `plan::reads_refused`).
    pub(super) fn reads_refused(&self) -> bool {
        self.read_node.is_none() && !self.live.config.routing.reads_fallback_to_primary
    }

    pub(super) fn point_cancel_at(&self, slot: Slot) {
        let key = match slot {
            Slot::Primary => self.primary.as_ref(),
            Slot::Read => self.read.as_ref(),
        }
        .and_then(|b| ServerKey::of(&b.conn));
        self.cancel.point_at(key);
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
                && b.ledger.reusable()
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
        let dirty = b.ledger.needs_reset();
        let mut conn = b.conn;
        super::backend::keep_read_buffer(&mut conn, b.buf);
        self.ctx
            .pools
            .checkin(
                conn,
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
                && b.ledger.reusable();
            let mid_message = self.streaming.is_some_and(|s| s.slot == slot);
            if reusable {
                let mut conn = b.conn;
                super::backend::keep_read_buffer(&mut conn, b.buf);
                self.ctx
                    .pools
                    .checkin(conn, PooledState::default(), b.ticket, true)
                    .await;
            } else if mid_message {
                // The server has part of a streamed message: nothing may be written after it (a
                // Terminate would be read as its rest). Closing the socket makes the server
                // discard it.
                drop(b);
            } else {
                b.terminate().await;
            }
        }
    }
}
