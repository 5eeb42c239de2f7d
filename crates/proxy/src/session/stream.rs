//! Client messages that are not read whole: one larger than `routing.max_parse_size` (a
//! statement that large is not classified anyway), or one still arriving when the process-wide
//! client buffer budget is spent. Its first bytes go to the server as soon as its header has
//! arrived, the rest as it comes, so a 60 MB `Bind` or `CopyData` passes with a buffer's worth
//! of memory.
//!
//! Where it goes: the connection the session is attached to (an open transaction, a running
//! extended-protocol segment, a COPY), or else the primary, which is always correct for a
//! statement pgrouter has not read. What pgrouter cannot know without the whole message it
//! treats as unknown: the statement may change the session in ways not tracked (the connection
//! is reset before another client gets it), and a named statement prepared this way cannot be
//! prepared again elsewhere, so the session stays on its connection (pinned).

use super::backend::Slot;
use super::client::ClientConn;
use super::forward::{account_parts, prepare_for_use};
use super::relay::Session;
use super::unit::{body, bound_classification, name_key, protocol_violation};
use super::{server_lost, SessionError};
use bytes::{Buf, BytesMut};
use pgrouter_protocol::{frontend as fe, ErrorResponse};
use pgrouter_sql::{Classification, PinReason, Route, Rule};
use std::sync::Arc;

/// A client message being streamed to a server connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Streaming {
    /// The connection receiving it.
    pub(crate) slot: Slot,
    /// Its bytes still to come from the client.
    pub(crate) remaining: usize,
}

/// Whether enough of a message (`head`: its bytes so far, header included) has arrived to
/// start streaming it: a `Parse` or `Bind` needs its statement name, which says what to keep
/// or to prepare first.
pub(super) fn can_start(tag: u8, head: &[u8]) -> bool {
    let partial_body = head
        .get(pgrouter_protocol::frame::HEADER_LEN..)
        .unwrap_or(&[]);
    match tag {
        fe::PARSE => fe::read_cstr(partial_body).is_some(),
        fe::BIND => fe::bind_statement(partial_body).is_some(),
        _ => head.len() >= pgrouter_protocol::frame::HEADER_LEN,
    }
}

/// The session ends with `error` as FATAL: a streamed message cannot be answered with an error
/// without reading all of it first.
fn fatal(error: ErrorResponse) -> SessionError {
    error.into_fatal().into()
}

impl Session<'_> {
    /// Passes on the client bytes of the message being streamed. Returns whether it is complete.
    pub(super) async fn continue_stream(&mut self, client: &mut ClientConn) -> bool {
        let Some(mut streaming) = self.streaming else {
            return true;
        };
        let n = streaming.remaining.min(client.buf.len());
        if n > 0 {
            if let Some(b) = self.backend(streaming.slot) {
                if let Err(e) = b.conn.stream.write_all(&client.buf[..n]).await {
                    // A dead connection is noticed when it is read; the rest is dropped.
                    tracing::debug!(error = %e, "streaming to a server connection failed");
                }
            }
            client.buf.advance(n);
            streaming.remaining -= n;
        }
        self.streaming = (streaming.remaining > 0).then_some(streaming);
        self.streaming.is_none()
    }

    /// Streams the message at the front of the client's buffer (`tag`, `total` bytes long) to
    /// the connection the session is attached to.
    pub(super) async fn stream_attached(
        &mut self,
        client: &mut ClientConn,
        slot: Slot,
        tag: u8,
        total: usize,
    ) -> Result<(), SessionError> {
        if self.backend(slot).is_none() {
            return Err(fatal(super::answers::transaction_lost()));
        }
        if self.is_stale(slot) {
            return Err(fatal(super::answers::transaction_moved(slot)));
        }
        self.start_stream(client, slot, tag, total, BytesMut::new())
            .await
    }

    /// Streams the message at the front of the client's buffer, at a transaction boundary:
    /// COPY data to the COPY in progress, anything else to the primary. `Ok(false)`: another
    /// connection still owes answers; the message waits (and nothing more is read meanwhile).
    pub(super) async fn stream_at_boundary(
        &mut self,
        client: &mut ClientConn,
        tag: u8,
        total: usize,
    ) -> Result<bool, SessionError> {
        let copy = matches!(tag, fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL);
        let target = if copy {
            self.busy().unwrap_or(self.current)
        } else {
            Slot::Primary
        };
        if let Some(busy) = self.busy() {
            // As for any request: after the earlier ones on the same connection, unless that
            // connection holds a read to re-run elsewhere or lost its role (a COPY in progress
            // is fed wherever it runs); else once it is done.
            let holding = self.backend(busy).is_some_and(|b| b.retry.is_some());
            if busy != target || holding || (!copy && self.is_stale(busy)) {
                if let Some(b) = self.backend(busy) {
                    // Busy only with a segment that prepared statements: close it, then go on.
                    b.close_idle_segment().await;
                }
                return Ok(false);
            }
        }
        if let Some(error) = self.lost_transaction.take() {
            return Err(fatal(error));
        }
        self.follow_topology();
        let slot = match self.ensure(target).await {
            Ok(slot) => slot,
            Err(SessionError::Unavailable(error)) => return Err(fatal(error)),
            Err(e) => return Err(e),
        };
        let prefix = self.take_slot(slot);
        self.start_stream(client, slot, tag, total, prefix).await?;
        Ok(true)
    }

    /// Sends `prefix`, then what has arrived of the message at the front of the client's buffer,
    /// with the bookkeeping its kind needs; the rest follows through [`Self::continue_stream`].
    async fn start_stream(
        &mut self,
        client: &mut ClientConn,
        slot: Slot,
        tag: u8,
        total: usize,
        mut out: BytesMut,
    ) -> Result<(), SessionError> {
        self.timing.started(&self.entry);
        self.show_links();
        let head_len = client.buf.len().min(total);
        let head = &client.buf[..head_len];
        let state = &mut self.state;
        let (b, other) = match slot {
            Slot::Primary => (self.primary.as_mut(), self.read.as_mut()),
            Slot::Read => (self.read.as_mut(), self.primary.as_mut()),
        };
        let Some(b) = b else {
            return Err(server_lost());
        };
        let mut streamed = Classification::new(Route::Primary, Rule::Streamed);
        streamed.effects.untracked = true;
        let mut parts: Vec<Arc<Classification>> = Vec::new();
        let partial_body = head
            .get(pgrouter_protocol::frame::HEADER_LEN..)
            .unwrap_or(&[]);
        match tag {
            fe::QUERY => {
                // A simple query destroys the unnamed statement, for the session too.
                b.prepared.remove("");
                state.remove_statement("");
                parts.push(Arc::new(streamed));
            }
            fe::PARSE => {
                let Some((raw_name, _)) = fe::read_cstr(partial_body) else {
                    return Err(protocol_violation(
                        "invalid Parse message: no statement name in its first bytes".into(),
                    ));
                };
                let name = name_key(raw_name);
                let name = name.as_ref();
                if !name.is_empty() {
                    streamed.effects.pin = Some(PinReason::StreamedStatement);
                }
                if !name.is_empty()
                    && b.prepared.contains_key(name)
                    && !state.statements.contains_key(name)
                {
                    // Left there by another client, or closed by this one on another connection.
                    fe::write_close_statement(&mut out, raw_name);
                    b.ledger.injected_close();
                }
                let streamed = Arc::new(streamed);
                // Never kept: an empty `Parse` with a version no definition shares.
                let version = state.store_streamed_statement(name, Arc::clone(&streamed));
                b.prepared.insert(name.to_owned(), version);
                if name.is_empty() {
                    if let Some(o) = other {
                        o.prepared.remove("");
                    }
                }
                parts.push(streamed);
            }
            fe::BIND => {
                let Some(raw_name) = fe::bind_statement(partial_body) else {
                    return Err(protocol_violation(
                        "invalid Bind message: no statement name in its first bytes".into(),
                    ));
                };
                prepare_for_use(self.ctx, state, b, raw_name, &mut out);
                let stored = state.statements.get(name_key(raw_name).as_ref()).cloned();
                parts.push(match stored {
                    // Its effects apply as for any run; a `set_config` argument that has not
                    // arrived cannot be read, so such a statement pins the session.
                    Some(stored) => bound_classification(
                        &stored.classification,
                        partial_body,
                        body(&stored.parse),
                    ),
                    None => Arc::new(streamed),
                });
            }
            fe::FUNCTION_CALL => b.ledger.note_untracked_state(),
            _ => {}
        }
        account_parts(self.ctx, state, b, &parts, &mut out);
        b.ledger.sent(tag);
        self.inflight.extend(parts);
        out.extend_from_slice(head);
        if let Err(e) = b.conn.stream.write_all(&out).await {
            tracing::debug!(error = %e, "writing to a server connection failed");
        }
        client.buf.advance(head_len);
        self.streaming = Some(Streaming {
            slot,
            remaining: total - head_len,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::can_start;
    use pgrouter_protocol::frontend as fe;

    #[test]
    fn streaming_starts_once_the_statement_name_has_arrived() {
        #[rustfmt::skip]
        let cases: [(u8, &[u8], bool); 8] = [
            (fe::QUERY, b"Q\0\x10\0\0", true),
            (fe::QUERY, b"Q\0\x10", false),
            (fe::PARSE, b"P\0\x10\0\0stmt", false),
            (fe::PARSE, b"P\0\x10\0\0stmt\0SELECT", true),
            (fe::BIND, b"B\0\x10\0\0portal\0st", false),
            (fe::BIND, b"B\0\x10\0\0\0\0\0\x01", true),
            (fe::COPY_DATA, b"d\0\x10\0\0", true),
            (fe::COPY_DATA, b"d", false),
        ];
        for (tag, head, want) in cases {
            assert_eq!(can_start(tag, head), want, "{head:?}");
        }
    }
}
