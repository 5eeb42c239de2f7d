//! Answers pgrouter gives itself when a request cannot be served: PostgreSQL's own errors, in
//! the shape PostgreSQL would have used for that request.

use super::backend::Slot;
use super::client::ClientConn;
use super::relay::Session;
use super::unit::frames;
use super::{server_lost, SessionError};
use bytes::BytesMut;
use pgrouter_protocol::backend::{self as be, TransactionStatus};
use pgrouter_protocol::{frontend as fe, ErrorResponse, SqlState};
use pgrouter_sql::TxControl;

impl Session<'_> {
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
                tracing::warn!(node = %self.ctx.node_name(b.node), owed = b.ledger.owed(), in_tx,
                    "server connection lost mid-request; failing the request, keeping the client");
                let owed = (b.ledger.owed(), b.ledger.saw_error());
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
    pub(super) async fn answer_lost_transaction(
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
}

/// The error for requests of a transaction whose node the routing table no longer gives that job
/// (the primary changed; the replica left the rotation) while the node is still up: nothing more
/// is sent there, which could write to two primaries.
pub(super) fn transaction_moved(slot: Slot) -> ErrorResponse {
    let what = match slot {
        Slot::Primary => "the primary changed",
        Slot::Read => "this transaction's replica left the routing table",
    };
    ErrorResponse::error(
        SqlState::CONNECTION_FAILURE,
        format!("{what}; the current transaction was rolled back"),
    )
    .with_detail("pgrouter sends nothing more to a node that lost its role during a transaction.")
    .with_hint("pgrouter kept this client connection open: retry the transaction.")
}

/// What the client of a transaction is told when the server ended the connection and said why
/// (a FATAL error while the connection was idle): the server's own SQLSTATE and message, as an
/// ERROR since pgrouter keeps the client. `None` for a reason pgrouter does not pass on (the
/// generic [`transaction_lost`] is used then): only the ways a server ends a session by itself.
pub(super) fn server_ended_transaction(
    fields: &pgrouter_protocol::error::ErrorFields<'_>,
) -> Option<ErrorResponse> {
    let code = match fields.code? {
        b"25P03" => SqlState::IDLE_IN_TRANSACTION_TIMEOUT,
        b"25P04" => SqlState::TRANSACTION_TIMEOUT,
        b"57P01" => SqlState::ADMIN_SHUTDOWN,
        b"57P02" => SqlState::CRASH_SHUTDOWN,
        b"57P05" => SqlState::IDLE_SESSION_TIMEOUT,
        _ => return None,
    };
    let message = String::from_utf8_lossy(fields.message.unwrap_or(b"terminating connection"));
    Some(
        ErrorResponse::error(code, message)
            .with_detail(
                "The server closed its connection; the transaction open there was rolled back.",
            )
            .with_hint("pgrouter kept this client connection open: retry the transaction."),
    )
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
pub(super) fn answer_requests(out: &mut BytesMut, unit: &[u8], error: &ErrorResponse) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pgrouter_protocol::frame;

    /// A message with an empty body (enough for `answer_requests`, which looks at tags only).
    fn msg(tag: u8) -> [u8; 5] {
        [tag, 0, 0, 0, 4]
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

#[cfg(test)]
mod server_ended_tests {
    use super::*;
    use pgrouter_protocol::error::ErrorFields;

    /// An ErrorResponse body as a server sends it.
    fn body(severity: &str, code: &str, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            out.push(field);
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        }
        out.push(0);
        out
    }

    #[test]
    fn a_server_ending_a_session_is_reported_with_its_reason() {
        let cases = [
            (
                "25P03",
                "terminating connection due to idle-in-transaction timeout",
                true,
            ),
            (
                "25P04",
                "terminating connection due to transaction timeout",
                true,
            ),
            (
                "57P01",
                "terminating connection due to administrator command",
                true,
            ),
            (
                "57P02",
                "terminating connection because of crash of another server process",
                true,
            ),
            (
                "57P05",
                "terminating connection due to idle-session timeout",
                true,
            ),
            // Anything else gets pgrouter's generic answer.
            ("53300", "sorry, too many clients already", false),
            ("XX000", "something else", false),
        ];
        for (code, message, passed_on) in cases {
            let raw = body("FATAL", code, message);
            let error = server_ended_transaction(&ErrorFields::parse(&raw));
            assert_eq!(error.is_some(), passed_on, "{code}");
            if let Some(error) = error {
                assert_eq!(error.code.code(), code);
                assert_eq!(error.message, message);
                assert_eq!(
                    error.severity,
                    pgrouter_protocol::error::Severity::Error,
                    "the client is kept"
                );
            }
        }
        assert!(server_ended_transaction(&ErrorFields::parse(b"\0")).is_none());
    }
}
