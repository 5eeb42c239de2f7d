//! The client side: cutting the client's buffered input into units, answering what needs no
//! server (`Parse` alone, a lone `BEGIN`), and routing the rest at transaction boundaries.

use super::answers::{transaction_lost, transaction_moved};
use super::backend::Slot;
use super::client::{frame_error, ClientConn};
use super::plan::{unresolved_functions, Plan};
use super::relay::{Drain, Session};
use super::unit::{
    body, classify_text, complete_prefix, effective_route, frames, name_key, next_unit,
    protocol_violation,
};
use super::{server_lost, SessionError};
use crate::console::pgpool as pgpool_show;
use bytes::{Bytes, BytesMut};
use pgrouter_protocol::backend::{self as be, TransactionStatus};
use pgrouter_protocol::frame;
use pgrouter_protocol::{frontend as fe, ErrorResponse, SqlState};

impl Session<'_> {
    /// Handles every complete client message in the buffer.
    pub(super) async fn drain_client(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Drain, SessionError> {
        let max_len = self.live.max_message_size();
        // Messages larger than this stream on as they arrive (all of them while the client
        // buffer budget is spent).
        let forced = std::mem::take(&mut self.force_stream);
        self.copy_kept_bytes = client.is_grown();
        let threshold = if forced {
            0
        } else {
            self.live.stream_threshold()
        };
        loop {
            if self.streaming.is_some() {
                if !self.continue_stream(client).await {
                    return Ok(Drain::NeedMore);
                }
                continue;
            }
            if let Some(slot) = self.attached() {
                // Inside a transaction or a segment: everything goes to the same connection.
                // Pgpool-II's `SHOW POOL_*` inside a transaction is answered here, in order.
                let answers_pgpool = !self.in_segment_or_stream();
                if answers_pgpool {
                    match self.extended_pgpool_unit(&client.buf, max_len)? {
                        PgpoolUnit::No => {}
                        PgpoolUnit::Incomplete => return Ok(Drain::NeedMore),
                        PgpoolUnit::Through(len) => {
                            match self.answer_extended_pgpool(client, len).await? {
                                Some(false) => return Ok(Drain::Blocked),
                                Some(true) => continue,
                                None => {}
                            }
                        }
                    }
                }
                let mut ready = 0;
                let mut terminate = false;
                let mut pgpool = None;
                let mut held_for_pgpool = false;
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
                    if f.tag == fe::QUERY && answers_pgpool {
                        let message = &client.buf[ready..ready + f.total_len];
                        pgpool = pgpool_show::parse(body(message)).map(|c| (c, f.total_len));
                        if pgpool.is_some() {
                            break;
                        }
                    }
                    if f.tag == fe::PARSE && answers_pgpool && ready > 0 {
                        // A unit that may be Pgpool-II's commands starts here: what comes before
                        // it goes now, the unit is looked at once it is at the front.
                        let message = &client.buf[ready..ready + f.total_len];
                        if fe::parse_parse(body(message))
                            .is_some_and(|(_, query)| pgpool_show::parse(query).is_some())
                        {
                            held_for_pgpool = true;
                            break;
                        }
                    }
                    ready += f.total_len;
                }
                if let (0, Some((command, len))) = (ready, pgpool) {
                    if !self.answer_pgpool_show(client, len, command).await? {
                        return Ok(Drain::Blocked);
                    }
                    continue;
                }
                if ready > 0 {
                    let bytes = client.buf.split_to(ready).freeze();
                    if self.backend(slot).is_none() {
                        self.abandon(client, slot, transaction_lost(), &bytes)
                            .await?;
                    } else if self.is_stale(slot) {
                        // The transaction's server is not the primary any more: never send it
                        // more (that could write to two primaries).
                        self.abandon(client, slot, transaction_moved(slot), &bytes)
                            .await?;
                    } else {
                        let class = self.classify_unit(&bytes);
                        self.send(slot, &bytes, class.runs, &class.parsed, BytesMut::new())
                            .await?;
                    }
                }
                if terminate {
                    return Ok(Drain::Terminated);
                }
                if pgpool.is_some() || held_for_pgpool {
                    // Answered once what was sent before it has been.
                    continue;
                }
                if let (0, Some((tag, total))) = complete_prefix(&client.buf, max_len)? {
                    if total > threshold && super::stream::can_start(tag, &client.buf) {
                        self.stream_attached(client, slot, tag, total).await?;
                        continue;
                    }
                }
                return Ok(Drain::NeedMore);
            }
            let unit = match next_unit(&mut client.buf, max_len)? {
                Some(unit) => unit,
                None => {
                    let (complete, next) = complete_prefix(&client.buf, max_len)?;
                    // Only once that much of it has actually arrived: a header alone announcing
                    // a large message takes no server connection (nor memory).
                    let arrived = client.buf.len() - complete;
                    let large = next.is_some_and(|(tag, total)| {
                        total > threshold
                            && arrived >= threshold
                            && super::stream::can_start(tag, &client.buf[complete..])
                    });
                    if complete > 0 && (large || forced) {
                        // The messages before it go first, where their plan says (the large one
                        // then follows a segment they started).
                        super::unit::Unit {
                            len: complete,
                            terminate: false,
                        }
                    } else if let Some((tag, total)) = next.filter(|_| large) {
                        if !self.stream_at_boundary(client, tag, total).await? {
                            return Ok(Drain::Blocked);
                        }
                        continue;
                    } else {
                        return Ok(Drain::NeedMore);
                    }
                }
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
            // After a lost transaction (above): the client believes it is still in one, and
            // learns it did not with its next request, whatever that is.
            if let Some(command) = lone_setting(&client.buf[..unit.len]) {
                if self.busy().is_some() {
                    return Ok(Drain::Blocked);
                }
                let _ = client.buf.split_to(unit.len);
                self.answer_setting(client, command).await?;
                continue;
            }
            if let Some(command) = lone_pgpool_show(&client.buf[..unit.len]) {
                if !self.answer_pgpool_show(client, unit.len, command).await? {
                    return Ok(Drain::Blocked);
                }
                continue;
            }
            let first = client.buf.first().copied();
            if first == Some(fe::PARSE)
                || (!self.state.pgpool_statements.is_empty()
                    && matches!(first, Some(fe::BIND | fe::DESCRIBE | fe::CLOSE)))
            {
                match self.answer_extended_pgpool(client, unit.len).await? {
                    Some(false) => return Ok(Drain::Blocked),
                    Some(true) => continue,
                    None => {}
                }
            }
            if first == Some(fe::PARSE) && prepares_setting(&client.buf[..unit.len]) {
                // A server would take `SET pgrouter.min_lsn` as a custom setting of its own and
                // pgrouter would never see it: refused, rather than silently not applied.
                if self.busy().is_some() {
                    return Ok(Drain::Blocked);
                }
                let bytes = client.buf.split_to(unit.len).freeze();
                let error = ErrorResponse::error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "pgrouter's settings (pgrouter.min_lsn, pgrouter.max_staleness) and SHOW pgrouter.last_write_lsn take the simple query protocol",
                )
                .with_hint("Send them as a plain query (no parameters, not prepared), or give pgrouter.min_lsn and pgrouter.max_staleness as start-up parameters.");
                self.answer_with_error(client, &bytes, &error).await?;
                continue;
            }
            if let Some(error) = self.too_many_statements(&client.buf[..unit.len]) {
                match self.refuse_unit(client, unit.len, error).await? {
                    Some(drain) => return Ok(drain),
                    None => continue,
                }
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
            if let Some(error) = self.too_many_sql_prepares(&plan.parts) {
                match self.refuse_unit(client, unit.len, error).await? {
                    Some(drain) => return Ok(drain),
                    None => continue,
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
            if plan.slot == Some(Slot::Read) && self.wants_read_check() {
                // The replica must have what the session must see, or the read runs on the
                // primary. Asked with nothing in flight (the answers keep their order). A unit
                // that continues an open segment on the replica (`Parse`/`Describe`/`Flush`,
                // then `Bind`/`Execute`/`Sync`) goes where the segment's start was checked: no
                // write can come between (it would wait for the segment to close).
                match self.busy() {
                    Some(Slot::Read) => {}
                    Some(Slot::Primary) => return Ok(Drain::Blocked),
                    None => {
                        self.settle_read(client).await?;
                        if self.reads_on_primary {
                            plan = self.plan(&client.buf[..unit.len]);
                        }
                    }
                }
            }
            let bytes = client.buf.split_to(unit.len).freeze();
            let routed = self.route_unit(client, bytes, plan).await;
            self.reads_on_primary = false;
            routed?;
        }
    }

    /// Answers a unit that would take the session past one of its limits with `error` instead
    /// of running it. Outside a transaction, with nothing in flight, the request fails and the
    /// session goes on, as for any error; inside one, the session ends (its transaction is
    /// rolled back), since an error answered here could not abort it. `Some`: what the drain
    /// returns now (the unit waits for earlier requests).
    async fn refuse_unit(
        &mut self,
        client: &mut ClientConn,
        len: usize,
        error: ErrorResponse,
    ) -> Result<Option<Drain>, SessionError> {
        if self.busy().is_some() {
            return Ok(Some(Drain::Blocked));
        }
        if self.state.tx_status != TransactionStatus::Idle || self.deferred_begin.is_some() {
            return Err(error.into_fatal().into());
        }
        let bytes = client.buf.split_to(len).freeze();
        self.answer_with_error(client, &bytes, &error).await?;
        Ok(None)
    }

    /// Answers one of Pgpool-II's `SHOW POOL_*`, `len` bytes at the front of the client's buffer,
    /// once every answer owed before it has been relayed (`Ok(false)`: not yet). The session's
    /// transaction status is unchanged: nothing ran on a server.
    async fn answer_pgpool_show(
        &mut self,
        client: &mut ClientConn,
        len: usize,
        command: pgpool_show::PgpoolShow,
    ) -> Result<bool, SessionError> {
        if self.busy().is_some() {
            return Ok(false);
        }
        let _ = client.buf.split_to(len);
        let mut out = BytesMut::new();
        crate::console::write_result(&mut out, &pgpool_show::answer(self.ctx, command), "SELECT");
        self.send_local_answer(client, out).await?;
        Ok(true)
    }

    /// Answers the extended-protocol unit of `len` bytes at the front of the client's buffer when
    /// it runs only Pgpool-II's commands (see [`pgpool_show::answer_extended`]): `Some(true)`
    /// answered, `Some(false)` it is one but earlier answers are still owed, `None` it is not.
    async fn answer_extended_pgpool(
        &mut self,
        client: &mut ClientConn,
        len: usize,
    ) -> Result<Option<bool>, SessionError> {
        let messages = frames(&client.buf[..len]).map(|(tag, m)| (tag, body(m)));
        let known = &self.state.pgpool_statements;
        let Some((answer, changes)) = pgpool_show::answer_extended(self.ctx, messages, known)
        else {
            return Ok(None);
        };
        if self.busy().is_some() {
            return Ok(Some(false));
        }
        let _ = client.buf.split_to(len);
        for (name, command) in changes {
            match command {
                Some(command) => self.state.store_pgpool_statement(&name, command),
                None => self.state.remove_statement(&name),
            }
        }
        self.send_local_answer(client, answer).await?;
        Ok(Some(true))
    }

    /// Inside a transaction, whether the client's buffer starts an extended-protocol unit that may
    /// be Pgpool-II's commands (a `Parse` of one, or a message naming one prepared earlier), and
    /// how far it goes: it is held until its `Sync` so that none of it reaches the server first.
    /// A `Flush` before any `Sync` ends the wait (the client wants answers now): it goes its
    /// usual way.
    fn extended_pgpool_unit(&self, buf: &[u8], max_len: usize) -> Result<PgpoolUnit, SessionError> {
        let Some(first) = frame::next_frame(buf, max_len).map_err(frame_error)? else {
            return Ok(PgpoolUnit::No);
        };
        let message = &buf[..first.total_len];
        let candidate = match first.tag {
            fe::PARSE => fe::parse_parse(body(message))
                .is_some_and(|(_, query)| pgpool_show::parse(query).is_some()),
            fe::BIND | fe::DESCRIBE | fe::CLOSE => !self.state.pgpool_statements.is_empty(),
            _ => false,
        };
        if !candidate {
            return Ok(PgpoolUnit::No);
        }
        // Such units are small: past this much without a `Sync`, stop holding it.
        const MAX_HELD: usize = 64 * 1024;
        let mut at = 0;
        while let Some(f) = frame::next_frame(&buf[at..], max_len).map_err(frame_error)? {
            at += f.total_len;
            if at > MAX_HELD {
                return Ok(PgpoolUnit::No);
            }
            match f.tag {
                fe::SYNC => return Ok(PgpoolUnit::Through(at)),
                fe::FLUSH => return Ok(PgpoolUnit::No),
                _ => {}
            }
        }
        if buf.len() > MAX_HELD {
            return Ok(PgpoolUnit::No);
        }
        Ok(PgpoolUnit::Incomplete)
    }

    /// Sends responses pgrouter made itself, then `ReadyForQuery` with the transaction status the
    /// client knows (nothing ran on a server).
    pub(super) async fn send_local_answer(
        &mut self,
        client: &mut ClientConn,
        mut out: BytesMut,
    ) -> Result<(), SessionError> {
        let status = if self.deferred_begin.is_some() {
            TransactionStatus::InTransaction
        } else {
            self.state.tx_status
        };
        be::ready_for_query(&mut out, status);
        client.write_all(&out).await
    }

    /// `client.max_prepared_statements` and `client.max_prepared_statement_memory` in force,
    /// from one look at the configuration (`None`: no limit).
    fn statement_limits(&self) -> (Option<usize>, Option<usize>) {
        let client = &self.live.config.client;
        let limit = |n: u64| (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX));
        (
            limit(u64::from(client.max_prepared_statements)),
            limit(client.max_prepared_statement_memory.bytes()),
        )
    }

    /// Named statements the session holds: protocol-level and SQL `PREPARE`d.
    fn statements_held(&self) -> usize {
        let unnamed = usize::from(self.state.statements.contains_key(""));
        self.state.statements.len() - unnamed + self.state.sql_prepared.len()
    }

    /// The error PostgreSQL would give for a program limit, for `client.max_prepared_statements`.
    fn too_many_statements_error(&self, limit: usize) -> ErrorResponse {
        ErrorResponse::error(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "too many prepared statements: this session holds {}",
                self.statements_held()
            ),
        )
        .with_hint(format!(
            "Close (deallocate) prepared statements no longer needed; pgrouter's client.max_prepared_statements is {limit}."
        ))
    }

    /// `client.max_prepared_statements` for SQL `PREPARE`: the error for a unit whose
    /// statements would prepare more than the session may hold (each is kept in the session's
    /// replay log, to prepare on other server connections).
    fn too_many_sql_prepares(
        &self,
        parts: &[std::sync::Arc<pgrouter_sql::Classification>],
    ) -> Option<ErrorResponse> {
        use pgrouter_sql::SessionChange;
        // Most units prepare nothing: no look at the configuration for them.
        let changes = || parts.iter().flat_map(|c| c.effects.session.iter());
        if !changes().any(|c| matches!(c, SessionChange::Prepare { .. })) {
            return None;
        }
        let limit = self.statement_limits().0?;
        // In order: a `DEALLOCATE` before a `PREPARE` makes room for it.
        let mut held = self.statements_held();
        let mut made: Vec<&str> = Vec::new();
        let mut gone: Vec<&str> = Vec::new();
        let mut over = false;
        for change in changes() {
            let holds = |name: &str, made: &Vec<&str>, gone: &Vec<&str>| {
                (self.state.sql_prepared.contains_key(name) && !gone.contains(&name))
                    || made.contains(&name)
            };
            match change {
                SessionChange::Prepare { name, .. } if !holds(name, &made, &gone) => {
                    made.push(name);
                    held += 1;
                    over |= held > limit;
                }
                SessionChange::Deallocate(Some(name)) if holds(name, &made, &gone) => {
                    made.retain(|n| n != name);
                    gone.push(name);
                    held -= 1;
                }
                SessionChange::Deallocate(None) | SessionChange::DiscardAll => {
                    held = 0;
                    made.clear();
                    gone.extend(self.state.sql_prepared.keys().map(String::as_str));
                }
                _ => {}
            }
        }
        over.then(|| self.too_many_statements_error(limit))
    }

    /// `client.max_prepared_statements`: the error for a unit whose `Parse`s would take the
    /// session past the limit of named statements it holds.
    fn too_many_statements(&self, unit: &[u8]) -> Option<ErrorResponse> {
        // Read from the configuration at the first new statement only (most units have none).
        let mut limits = None;
        // Walk the unit in order: a `Close` before a `Parse` makes room for it.
        let mut held = self.statements_held();
        let mut bytes = self.state.statement_bytes();
        let mut new: Vec<&[u8]> = Vec::new();
        let mut closed: Vec<&[u8]> = Vec::new();
        let (mut too_many, mut too_large) = (false, false);
        for (tag, msg) in frames(unit) {
            let holds = |name: &[u8], new: &Vec<&[u8]>, closed: &Vec<&[u8]>| {
                (self.state.statements.contains_key(name_key(name).as_ref())
                    && !closed.contains(&name))
                    || new.contains(&name)
            };
            match tag {
                fe::PARSE => {
                    let Some((name, _)) = fe::parse_parse(body(msg)) else {
                        continue;
                    };
                    if !name.is_empty() && !holds(name, &new, &closed) {
                        let (count_limit, memory_limit) =
                            *limits.get_or_insert_with(|| self.statement_limits());
                        new.push(name);
                        held += 1;
                        bytes += msg.len();
                        too_many |= count_limit.is_some_and(|limit| held > limit);
                        too_large |= memory_limit.is_some_and(|limit| bytes > limit);
                    }
                }
                fe::CLOSE => {
                    let Some((fe::TARGET_STATEMENT, name)) = fe::describe_target(body(msg)) else {
                        continue;
                    };
                    if !name.is_empty() && holds(name, &new, &closed) {
                        new.retain(|n| *n != name);
                        closed.push(name);
                        held -= 1;
                    }
                }
                _ => {}
            }
        }
        let (count_limit, memory_limit) = limits?;
        if too_many {
            return count_limit.map(|limit| self.too_many_statements_error(limit));
        }
        too_large.then(|| {
            ErrorResponse::error(
                SqlState::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "prepared statements take too much memory: pgrouter keeps {} bytes of them for this session",
                    self.state.statement_bytes()
                ),
            )
            .with_hint(format!(
                "Close (deallocate) prepared statements no longer needed; pgrouter's client.max_prepared_statement_memory is {} bytes.",
                memory_limit.unwrap_or_default()
            ))
        })
    }

    /// Transaction pooling: a request that only prepares named statements (`Parse`… `Sync`, as
    /// libpq's `PQprepare` sends) outside a transaction is answered here, without taking a server
    /// connection; each statement is prepared on whichever connection first runs it. Waiting for
    /// a connection here could deadlock a client program that prepares on one connection while it
    /// holds a transaction open on another (pgbench does). An invalid statement reports its error
    /// when first used. Returns whether the request was answered.
    pub(super) async fn prepare_locally(
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
            let c = classify_text(self.ctx, &self.live, sql);
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

    /// Makes `slot` the one serving the session from now on; returns what must reach it before
    /// the client's next bytes: session changes it has not run yet, then a deferred `BEGIN`.
    pub(super) fn take_slot(&mut self, slot: Slot) -> BytesMut {
        let mut prefix = BytesMut::new();
        // Session changes first, outside the transaction: replayed after the deferred BEGIN,
        // a ROLLBACK would undo them (and the server would report the old client_encoding).
        self.replay_into(slot, &mut prefix);
        if let Some(begin) = self.deferred_begin.take() {
            prefix.extend_from_slice(&begin);
            if let Some(b) = self.backend(slot) {
                b.ledger.injected_request();
                // A simple query destroys the connection's unnamed statement.
                b.prepared.remove("");
            }
        }
        if slot != self.current {
            self.point_cancel_at(slot);
        }
        self.current = slot;
        prefix
    }

    /// Sends a unit that starts at a transaction boundary where its plan says.
    pub(super) async fn route_unit(
        &mut self,
        client: &mut ClientConn,
        bytes: Bytes,
        plan: Plan,
    ) -> Result<(), SessionError> {
        if plan.deferred_begin {
            // A lone BEGIN: answer it now and let the next request choose the node.
            self.deferred_begin = Some(self.keep(&bytes));
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
        // The unit's last message: whether it is a whole request.
        let last_tag = frames(&bytes).last().map(|(tag, _)| tag);
        let cancellable = self.busy().is_none()
            && self.state.tx_status == TransactionStatus::Idle
            && self.deferred_begin.is_none()
            && matches!(last_tag, Some(fe::QUERY | fe::SYNC | fe::FUNCTION_CALL));
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
        let prefix = self.take_slot(slot);
        // Only a read may be held to run again elsewhere, and only when running it again cannot
        // repeat a side effect: it was sent to a standby (which cannot write), or it calls
        // nothing but built-ins pgrouter knows and changes nothing in the session.
        let retryable = plan.is_read
            && self.state.tx_status == TransactionStatus::Idle
            && matches!(last_tag, Some(fe::SYNC | fe::QUERY));
        if retryable {
            let primary = self.ctx.topology.load().primary;
            let side_effect_free = plan.parts.iter().all(|c| {
                c.check_functions.is_empty()
                    && !c.effects.untracked
                    && c.effects.pin.is_none()
                    && c.effects.session.is_empty()
            });
            let unit = self.keep(&bytes);
            if let Some(b) = self
                .backend(slot)
                .filter(|b| side_effect_free || Some(b.node) != primary)
            {
                b.retry = Some(super::backend::Retry {
                    unit,
                    parts: plan.parts.clone(),
                });
            }
        }
        self.send(slot, &bytes, plan.parts, &plan.parsed, prefix)
            .await
    }
}

/// The text of `unit` when it is one simple query and nothing else.
fn lone_query(unit: &[u8]) -> Option<&[u8]> {
    let mut messages = frames(unit);
    match (messages.next(), messages.next()) {
        (Some((fe::QUERY, message)), None) => Some(body(message)),
        _ => None,
    }
}

/// The Pgpool-II command `unit` is, when it is one simple query and nothing else.
fn lone_pgpool_show(unit: &[u8]) -> Option<pgpool_show::PgpoolShow> {
    pgpool_show::parse(lone_query(unit)?)
}

/// What [`Session::extended_pgpool_unit`] found.
enum PgpoolUnit {
    /// Not one of Pgpool-II's commands: the bytes go their usual way.
    No,
    /// It may be: wait for the rest of it.
    Incomplete,
    /// It may be, and its `Sync` ends this many bytes in.
    Through(usize),
}

/// pgrouter's own session command `unit` is, when it is one simple query and nothing else.
fn lone_setting(unit: &[u8]) -> Option<super::ryw::Setting> {
    super::ryw::parse(lone_query(unit)?)
}

/// Whether `unit` prepares one of pgrouter's own session commands (`SET pgrouter.min_lsn`, …).
fn prepares_setting(unit: &[u8]) -> bool {
    frames(unit).any(|(tag, message)| {
        tag == fe::PARSE
            && fe::parse_parse(body(message))
                .is_some_and(|(_, query)| super::ryw::parse(query).is_some())
    })
}
