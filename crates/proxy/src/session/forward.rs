//! Sending a unit to a server connection with the bookkeeping it needs: replayed session state
//! first, statements the connection lacks prepared invisibly, a read held for a re-run.

use super::backend::Slot;
use super::client::ClientConn;
use super::relay::Session;
use super::unit::{
    body, classify_text, effective_route, frames, leaves_session_clean, may_set_sequences, name_key,
};
use super::{server_lost, SessionError};
use bytes::{Bytes, BytesMut};
use pgrouter_protocol::frontend as fe;
use pgrouter_sql::Classification;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Session<'_> {
    /// Runs a held read on the primary: its standby rejected it with `25006` or `0A000`, or the
    /// standby's connection broke before anything reached the client. Once, and never held
    /// again: if the primary's connection breaks too, the client gets the error, because the
    /// primary may have run it (a read that crashes servers is not sent to a third).
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
        let (unit, parts) = (retry.unit, retry.parts);
        // Its `Parse`s are classified again (from the cache): a retry is rare.
        self.send(slot, &unit, parts, &[], prefix).await
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
            b.ledger.injected_request();
            b.prepared.remove("");
            b.sequences = None;
        }
        if b.ledger.replayed() >= total {
            return;
        }
        let pending = &log[b.ledger.replayed()..];
        if pending
            .iter()
            .any(|s| s == "DISCARD ALL" || s == "DEALLOCATE ALL")
        {
            b.prepared.clear();
        }
        // The replay is a simple query: it destroys the connection's unnamed statement.
        b.prepared.remove("");
        // One query per entry, pipelined: an entry that fails here must not keep the others from
        // running. That happens when compaction made a connection that had run part of the log
        // run the shorter log from its start (its `PREPARE` then exists already, 42P05); in one
        // multi-statement query the error would skip every later entry, and the client's last
        // `SET` would silently not hold on this connection. Entries are idempotent otherwise
        // (settings, `PREPARE`/`DEALLOCATE` pairs in order), and a `DISCARD ALL` cannot run
        // inside the implicit transaction of a multi-statement query anyway.
        for s in pending {
            fe::write_query(out, s);
            b.ledger.injected_request();
        }
        b.ledger.set_replayed(total);
    }

    /// Sends client messages to a connection with the bookkeeping they need; `prefix` holds
    /// pgrouter's own messages to send first.
    pub(super) async fn send(
        &mut self,
        slot: Slot,
        bytes: &Bytes,
        parts: Vec<Arc<Classification>>,
        parses: &[Arc<Classification>],
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
        account_parts(self.ctx, state, b, &parts, &mut out);
        // Copy only when something has to be inserted between client messages.
        let mut copied_upto = 0usize;
        let mut pos = 0usize;
        // The unit's `Parse`s as `classify_unit` classified them, in order.
        let mut parses = parses.iter();
        for (tag, msg) in frames(bytes) {
            let start = pos;
            pos += msg.len();
            b.ledger.sent(tag);
            match tag {
                fe::QUERY => {
                    // A simple query destroys the unnamed statement, for the session too.
                    b.prepared.remove("");
                    state.remove_statement("");
                }
                fe::FUNCTION_CALL => {
                    // A function called by OID: pgrouter cannot tell what it does.
                    b.ledger.note_untracked_state();
                }
                fe::PARSE => {
                    let Some((raw_name, sql)) = fe::parse_parse(body(msg)) else {
                        continue;
                    };
                    let name = name_key(raw_name);
                    let name = name.as_ref();
                    let c = match parses.next() {
                        Some(c) => Arc::clone(c),
                        None => classify_text(self.ctx, &self.live, sql),
                    };
                    let route = effective_route(self.ctx, state, &c);
                    let stale = !name.is_empty()
                        && b.prepared.contains_key(name)
                        && !state.statements.contains_key(name);
                    // The unnamed statement is replaced often: keep a view of the client's
                    // buffer rather than a copy. Named ones live long: copy them out.
                    let parse = if name.is_empty() && !self.copy_kept_bytes {
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
                        b.ledger.injected_close();
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
                    let name = if tag == fe::BIND {
                        fe::bind_statement(body(msg))
                    } else {
                        fe::describe_target(body(msg))
                            .and_then(|(k, n)| (k == fe::TARGET_STATEMENT).then_some(n))
                    };
                    let Some(raw_name) = name else {
                        continue;
                    };
                    let mut inject = BytesMut::new();
                    prepare_for_use(self.ctx, state, b, raw_name, &mut inject);
                    if !inject.is_empty() {
                        out.extend_from_slice(&bytes[copied_upto..start]);
                        copied_upto = start;
                        out.extend_from_slice(&inject);
                    }
                }
                fe::CLOSE => {
                    if let Some((fe::TARGET_STATEMENT, raw_name)) = fe::describe_target(body(msg)) {
                        let name = name_key(raw_name);
                        state.remove_statement(name.as_ref());
                        b.prepared.remove(name.as_ref());
                    }
                }
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
}

/// Makes sure connection `b` holds the statement a `Bind` or `Describe` names (`raw_name`) as the
/// client defined it, writing into `inject` what must go before the client's message: the
/// statement's `Parse` when it was prepared on another connection (invisibly), or a `Close` of a
/// statement the client never prepared that another client left there, so that the server
/// answers with its own 26000 and runs nothing.
pub(super) fn prepare_for_use(
    ctx: &crate::context::ProxyContext,
    state: &super::state::SessionState,
    b: &mut super::backend::Backend,
    raw_name: &[u8],
    inject: &mut BytesMut,
) {
    let name = name_key(raw_name);
    let name = name.as_ref();
    let Some(stored) = state.statements.get(name) else {
        if state.sql_prepared.contains_key(name) {
            // Made by SQL PREPARE on this connection's session: it is there.
            return;
        }
        fe::write_close_statement(inject, raw_name);
        b.ledger.injected_close();
        b.prepared.remove(name);
        return;
    };
    match b.prepared.get(name) {
        Some(v) if *v == stored.version => {
            if !name.is_empty() {
                ctx.prepared_stats.hits.fetch_add(1, Ordering::Relaxed);
            }
        }
        have => {
            if !name.is_empty() {
                ctx.prepared_stats.misses.fetch_add(1, Ordering::Relaxed);
            }
            if stored.parse.is_empty() {
                // Streamed through, never kept (the session is pinned to the connection that
                // has it): the server answers for a connection that lost it.
                return;
            }
            // Prepared on another connection: prepare it here, invisibly.
            if have.is_some() {
                fe::write_close_statement(inject, raw_name);
                b.ledger.injected_close();
            }
            inject.extend_from_slice(&stored.parse);
            b.ledger.injected_parse();
            b.prepared.insert(name.to_owned(), stored.version);
        }
    }
}

/// The bookkeeping for what a unit runs (`parts`) on connection `b`: statistics, the session's
/// sequence state, whether the connection needs a reset before another client gets it, and a
/// `DEALLOCATE` of a statement `b` does not hold (prepared there first, invisibly, into `out`).
pub(super) fn account_parts(
    ctx: &crate::context::ProxyContext,
    state: &mut super::state::SessionState,
    b: &mut super::backend::Backend,
    parts: &[Arc<Classification>],
    out: &mut BytesMut,
) {
    if parts.iter().any(|c| may_set_sequences(c)) {
        // Another connection holding this session's older sequence state is stale now.
        b.sequences = Some(state.wrote());
    }
    for c in parts {
        if writes_data(c) {
            state.has_written = true;
            state.write_unconfirmed = true;
        }
        ctx.stats.routed(b.node, c.route, c.rule);
        // `parts` holds what the unit runs, prepared statements it binds included.
        if !leaves_session_clean(ctx, c) {
            b.ledger.note_untracked_state();
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
            // A statement that streamed through has no copy to prepare elsewhere (its session
            // is pinned to the connection that holds it).
            if !stored.parse.is_empty() && b.prepared.get(name.as_str()) != Some(&stored.version) {
                if b.prepared.contains_key(name.as_str()) {
                    fe::write_close_statement(out, name.as_bytes());
                }
                out.extend_from_slice(&stored.parse);
                fe::write_sync(out);
                b.ledger.injected_request();
                b.prepared.insert(name.clone(), stored.version);
            }
        }
    }
}

/// Whether a statement changes data (or may: text pgrouter could not read), for
/// `routing.reads_after_write`. Session settings, transaction control and reads routed to the
/// primary for other reasons do not count.
fn writes_data(c: &Classification) -> bool {
    use pgrouter_sql::Rule;
    // `set_config()` is a "write function" that changes only the session.
    if c.rule == Rule::WriteFunction && !c.effects.session.is_empty() {
        return false;
    }
    matches!(
        c.rule,
        Rule::Write
            | Rule::LockingClause
            | Rule::SelectInto
            | Rule::DataModifyingCte
            | Rule::WriteFunction
            | Rule::FunctionNotReadOnly
            | Rule::ExplainWrite
            | Rule::Unparsable
            | Rule::Streamed
    )
}
