//! Server output: what each server connection sends is relayed to the client, with the
//! bookkeeping that keeps the session's view of every connection right (responses owed,
//! transaction status, hidden and swallowed messages, reads held for a retry).

use super::backend::Slot;
use super::client::ClientConn;
use super::ledger::{ErrorFor, Ready};
use super::relay::Session;
use super::unit::utf8;
use super::{server_lost, SessionError};
use bytes::Buf;
use pgrouter_protocol::backend::{self as be, TransactionStatus};
use pgrouter_protocol::error::ErrorFields;
use pgrouter_protocol::frame::{self, Step};

impl Session<'_> {
    /// Relays what a server sent. A connection that ends while idle is dropped (reopened later).
    pub(super) async fn relay_server_output(
        &mut self,
        client: &mut ClientConn,
        slot: Slot,
        read: std::io::Result<usize>,
    ) -> Result<(), SessionError> {
        let max_len = self.live.max_message_size();
        if !matches!(read, Ok(n) if n > 0) {
            // A server that drops its connections may be going away: look at the cluster now.
            self.ctx.topology.probe_now("server_connection_lost");
            if let Some(retry) = self.backend(slot).and_then(|b| b.retry.take()) {
                tracing::warn!(
                    "server connection lost before answering a read; re-running the read on the primary"
                );
                self.take_backend(slot);
                return self.retry_on_primary(client, retry).await;
            }
            let in_tx = self.current == slot && self.state.tx_status != TransactionStatus::Idle;
            let pinned = slot == Slot::Primary && self.state.pin.is_some();
            let ctx = self.ctx;
            let Some(b) = self.backend(slot) else {
                return Ok(());
            };
            if b.busy() || in_tx || pinned {
                // The server's own reason when it gave one (an idle-in-transaction timeout, an
                // administrator's pg_terminate_backend), as PostgreSQL would report it.
                let error = b
                    .farewell
                    .take()
                    .map_or_else(super::answers::transaction_lost, |e| *e);
                return self.abandon(client, slot, error, &[]).await;
            }
            // An idle connection went away: the next request opens a new one and replays state.
            tracing::info!(node = %ctx.node_name(b.node),
                "idle server connection closed; it will be reopened when needed");
            self.take_backend(slot);
            return Ok(());
        }
        let is_read_slot = slot == Slot::Read;
        loop {
            let Some(b) = (match slot {
                Slot::Primary => self.primary.as_mut(),
                Slot::Read => self.read.as_mut(),
            }) else {
                return Ok(());
            };
            let swallowing = b.ledger.swallowing();
            let holding = b.retry.is_some() && !swallowing;
            let step = b.walker.step(&b.buf, max_len, |t| {
                swallowing
                    || holding
                    || matches!(
                        t,
                        be::READY_FOR_QUERY
                            | be::ERROR_RESPONSE
                            | be::PARSE_COMPLETE
                            | be::CLOSE_COMPLETE
                            | be::NOTIFICATION_RESPONSE
                    )
                    || t == be::PARAMETER_STATUS
            });
            let (tag, range) = match step {
                Ok(Step::NeedMore)
                    if holding && b.walker.position() <= super::backend::MAX_HELD =>
                {
                    // Keep what arrived so far until the read's fate is known.
                    return Ok(());
                }
                Ok(Step::NeedMore) => {
                    b.retry = None;
                    let n = b.walker.position();
                    if n > 0 {
                        client.write_all(&b.buf[..n]).await?;
                        b.buf.advance(n);
                        b.walker.consumed(n);
                    }
                    self.release_if_idle(slot).await;
                    return Ok(());
                }
                Ok(Step::Message { tag, range }) => (tag, range),
                Err(e) => {
                    tracing::warn!(error = %e, "invalid message from server");
                    return Err(server_lost());
                }
            };
            // What the bookkeeping needs from the body, copied out before `b` is updated.
            let msg_body = &b.buf[range.start + frame::HEADER_LEN..range.end];
            let rfq_status = msg_body
                .first()
                .and_then(|s| TransactionStatus::from_byte(*s))
                .unwrap_or(TransactionStatus::Idle);
            let (is_fatal, code, farewell) = if tag == be::ERROR_RESPONSE {
                let fields = ErrorFields::parse(msg_body);
                let farewell = fields
                    .is_fatal()
                    .then(|| super::answers::server_ended_transaction(&fields))
                    .flatten();
                (
                    fields.is_fatal(),
                    fields.code.map(|c| utf8(c).to_owned()),
                    farewell,
                )
            } else {
                (false, None, None)
            };
            let hot_standby_param =
                tag == be::PARAMETER_STATUS && msg_body.starts_with(b"in_hot_standby\0");
            // On the read-only endpoint the main connection is a replica's: 25006 is routine.
            let on_primary =
                slot == Slot::Primary && self.endpoint != crate::routing::Endpoint::ReadOnly;
            if let Some(why) = role_change_signal(code.as_deref(), hot_standby_param, on_primary) {
                self.ctx.topology.probe_now(why);
            }
            if holding {
                // 25006: the replica refused a write hidden in a read (a function pgrouter did
                // not know). 0A000: the read touches what only the primary has (an UNLOGGED
                // table's rows: "cannot access temporary or unlogged relations during
                // recovery"). Either way nothing ran: drop what was held, swallow the rest of
                // its answer, and run the request on the primary. On the read-only endpoint
                // the refusal stays.
                let hidden_write = code.as_deref() == Some("25006");
                let primary_only = code.as_deref() == Some("0A000");
                if (hidden_write || primary_only) && self.endpoint.splits() {
                    let Some(retry) = b.retry.take() else {
                        continue;
                    };
                    b.buf.advance(range.end);
                    b.walker.consumed(range.end);
                    b.ledger.request_moved_elsewhere();
                    if hidden_write {
                        // Its functions are remembered as writing.
                        let written: Vec<(String, bool)> = retry
                            .parts
                            .iter()
                            .flat_map(|c| c.check_functions.iter().map(|f| (f.clone(), true)))
                            .collect();
                        tracing::info!(functions = ?written, "read rejected by a replica (25006); re-running it on the primary");
                        self.ctx.remember_volatility(written);
                    } else {
                        tracing::debug!("read refused by a replica (0A000, e.g. an UNLOGGED table); re-running it on the primary");
                    }
                    self.retry_on_primary(client, retry).await?;
                    continue;
                }
                if is_fatal {
                    // The connection is going away before any result: run the read on the
                    // primary instead (a new connection), and forget this one.
                    let Some(retry) = b.retry.take() else {
                        continue;
                    };
                    tracing::warn!(
                        ?code,
                        "server connection lost before answering a read; re-running the read on the primary"
                    );
                    self.take_backend(slot);
                    return self.retry_on_primary(client, retry).await;
                }
                if !matches!(
                    tag,
                    be::PARSE_COMPLETE
                        | be::BIND_COMPLETE
                        | be::PARAMETER_DESCRIPTION
                        | be::ROW_DESCRIPTION
                        | be::NO_DATA
                        | be::PARAMETER_STATUS
                        | be::NOTICE_RESPONSE
                ) {
                    // Results are coming: the read stands; release what was held.
                    b.retry = None;
                }
            }
            let mut drop_it = swallowing;
            let mut compacted = None;
            match tag {
                be::READY_FOR_QUERY => match b.ledger.ready_for_query() {
                    Ready::Swallowed => {}
                    Ready::Hidden => {
                        // The end of a segment pgrouter closed (`close_idle_segment`).
                        drop_it = true;
                    }
                    Ready::Client { done, failed } => {
                        let status = rfq_status;
                        if done {
                            let finished = std::mem::take(&mut self.inflight);
                            let discarded = !failed
                                && finished.iter().any(|c| {
                                    c.effects
                                        .session
                                        .contains(&pgrouter_sql::SessionChange::DiscardAll)
                                });
                            let caught_up = b.ledger.replayed() >= self.state.replay.len();
                            if discarded {
                                b.prepared.clear();
                                self.state.clear_statements();
                            }
                            if !failed {
                                // DEALLOCATE ran here: this connection no longer holds the statement.
                                for change in finished.iter().flat_map(|c| c.effects.session.iter())
                                {
                                    match change {
                                        pgrouter_sql::SessionChange::Deallocate(Some(name)) => {
                                            b.prepared.remove(name.as_str());
                                        }
                                        pgrouter_sql::SessionChange::Deallocate(None) => {
                                            b.prepared.clear();
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            self.state.complete(&finished, failed, status);
                            self.timing.answered(status, &self.ctx.stats, &self.entry);
                            if caught_up {
                                // This connection ran the changes itself.
                                b.ledger.set_replayed(self.state.replay.len());
                            }
                            compacted = self.state.compact_replay();
                        } else {
                            self.state.tx_status = status;
                        }
                    }
                },
                be::ERROR_RESPONSE => match b.ledger.error(is_fatal) {
                    ErrorFor::Unsolicited => {
                        // Unsolicited (e.g. the connection was terminated while idle): not the
                        // client's business now; the connection is reopened when next needed, and
                        // a transaction open there fails at the client's next request.
                        tracing::info!(?code, "error from an idle server connection");
                        b.farewell = farewell.map(Box::new);
                        drop_it = true;
                    }
                    ErrorFor::Injected => {
                        tracing::warn!(
                            ?code,
                            "replaying session state on a server connection failed"
                        );
                    }
                    ErrorFor::Client => {
                        if let Some(code) = &code {
                            self.ctx.stats.error(code.as_bytes());
                        }
                        if is_fatal && !(slot == Slot::Primary && self.state.pin.is_some()) {
                            // The server is closing this connection, but the client keeps its
                            // session (see `abandon`): to the client this is an ERROR.
                            let body = &mut b.buf[range.start + frame::HEADER_LEN..range.end];
                            pgrouter_protocol::error::downgrade_fatal(body);
                        }
                    }
                },
                be::NOTIFICATION_RESPONSE => {
                    // The session's own notification, sent on this very connection: to the
                    // client its sender is the process id pgrouter gave it, which drivers report
                    // as the backend pid and "skip my own notifications" compares with. (A
                    // server's process ids never reach pgrouter's, which start at 2^22.)
                    let at = range.start + frame::HEADER_LEN;
                    if let (Some((server_pid, _)), Some(sender)) =
                        (b.conn.backend_key, b.buf.get_mut(at..at + 4))
                    {
                        if *sender == server_pid.to_be_bytes() {
                            sender.copy_from_slice(&self.client_process_id.to_be_bytes());
                        }
                    }
                }
                be::PARSE_COMPLETE => drop_it |= b.ledger.parse_complete(),
                be::CLOSE_COMPLETE => drop_it |= b.ledger.close_complete(),
                // A standby reports in_hot_standby=on; the client's session is with the primary.
                be::PARAMETER_STATUS if !swallowing => drop_it = is_read_slot && hot_standby_param,
                _ => {}
            }
            if drop_it && b.retry.is_some() {
                // Still holding a read: cut the message out without releasing what is held.
                let tail = b.buf.split_off(range.end);
                b.buf.truncate(range.start);
                b.buf.unsplit(tail);
                b.walker.consumed(range.end - range.start);
            } else if drop_it {
                if range.start > 0 {
                    client.write_all(&b.buf[..range.start]).await?;
                }
                b.buf.advance(range.end);
                b.walker.consumed(range.end);
            }
            if let Some(old_len) = compacted {
                // Connections that had run the whole log still have; the others run the shorter,
                // equivalent log from its start.
                let new_len = self.state.replay.len();
                for c in [self.primary.as_mut(), self.read.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    let replayed = if c.ledger.replayed() == old_len {
                        new_len
                    } else {
                        0
                    };
                    c.ledger.set_replayed(replayed);
                }
            }
        }
    }
}

/// Whether what a server sent suggests the cluster's roles changed, and why (the reason is a
/// metric label): a server shutting down, crashing or not accepting connections (`57P01`,
/// `57P02`, `57P03`), the primary refusing a write as read-only (`25006`: it is in recovery, or a
/// read-only transaction was asked for; a probe tells which), or a promotion (`in_hot_standby`
/// pushed).
fn role_change_signal(
    code: Option<&str>,
    hot_standby_param: bool,
    on_primary: bool,
) -> Option<&'static str> {
    match code {
        Some("57P01" | "57P02" | "57P03") => Some("server_shutting_down"),
        Some("25006") if on_primary => Some("write_refused_read_only"),
        _ if hot_standby_param => Some("in_hot_standby"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_change_signals() {
        // (code, in_hot_standby reported, on the primary connection, reason)
        #[rustfmt::skip]
        let cases: &[(Option<&str>, bool, bool, Option<&str>)] = &[
            (Some("57P01"), false, true, Some("server_shutting_down")),
            (Some("57P02"), false, false, Some("server_shutting_down")),
            (Some("57P03"), false, false, Some("server_shutting_down")),
            (Some("25006"), false, true, Some("write_refused_read_only")),
            // A replica refusing a write hidden in a read is routine (re-run on the primary), as
            // is a write on the read-only endpoint.
            (Some("25006"), false, false, None),
            (None, true, false, Some("in_hot_standby")),
            (None, true, true, Some("in_hot_standby")),
            (Some("23505"), false, true, None),
            (Some("57014"), false, true, None),
            (None, false, true, None),
        ];
        for (code, hot, primary, want) in cases {
            assert_eq!(
                role_change_signal(*code, *hot, *primary),
                *want,
                "{code:?} {hot} {primary}"
            );
        }
    }
}
