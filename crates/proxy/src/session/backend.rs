//! One server connection of a session: its socket and read buffer, the prepared statements it
//! holds, and its ledger (`ledger.rs`: what it owes, which session changes it has replayed, and
//! whether it must be reset before another client gets it).

use super::client::reserve_for_read;
use super::ledger::Ledger;
use crate::context::{PooledState, SequenceMark};
use bytes::BytesMut;
use pgrouter_conn::ServerConn;
use pgrouter_pool::Ticket;
use pgrouter_protocol::frame::FrameWalker;
use std::collections::HashMap;
use tokio::io::AsyncReadExt;

/// Which of the session's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The primary connection.
    Primary,
    /// The read connection (a replica, or the primary when picked by weight: then this slot is
    /// never used and reads go to [`Slot::Primary`]).
    Read,
}

/// A server connection in use by a session.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) conn: ServerConn,
    /// The connection's claim on its pool; handed back with the connection when the session
    /// ends cleanly.
    pub(crate) ticket: Ticket,
    /// Index of the node in the configuration.
    pub(crate) node: usize,
    pub(crate) buf: BytesMut,
    pub(crate) walker: FrameWalker,
    /// Named (and the unnamed, `""`) prepared statements this connection holds, by version.
    pub(crate) prepared: HashMap<String, u64>,
    /// Whose sequence state the connection may hold (see [`SequenceMark`]).
    pub(crate) sequences: Option<SequenceMark>,
    /// What the connection owes and which replies the client must not see.
    pub(crate) ledger: Ledger,
    /// An autocommit read whose responses are held back until it is clear that it did not fail
    /// with `25006` (a function that writes) and the connection did not break: until then it
    /// can be run on the primary instead without the client noticing. Only a read that cannot
    /// have done anything qualifies: one sent to a standby (which cannot write), or one that
    /// calls only built-ins and changes nothing in the session.
    pub(crate) retry: Option<Retry>,
    /// Why the server is ending the connection, when it said so (a FATAL error while the
    /// connection was idle): what the client is told if a transaction was open there.
    /// (Boxed: rare, and the connection's state is moved in and out of the pool on every
    /// transaction in transaction pooling.)
    pub(crate) farewell: Option<Box<pgrouter_protocol::ErrorResponse>>,
}

/// Gives a connection going back to its pool the session's read buffer for its next user,
/// when that is empty and of the usual size (a grown one is freed).
pub(crate) fn keep_read_buffer(conn: &mut ServerConn, buf: BytesMut) {
    if worth_keeping(&buf) {
        conn.spare_buf = buf;
    }
}

/// An idle connection keeps at most a usual-sized, empty buffer: pooled memory stays bounded by
/// the pool size whatever results went through it.
fn worth_keeping(buf: &BytesMut) -> bool {
    buf.is_empty() && buf.capacity() <= 2 * super::client::READ_CHUNK
}

/// A read that can still be re-run elsewhere.
#[derive(Debug)]
pub(crate) struct Retry {
    /// The client's request, as sent.
    pub(crate) unit: bytes::Bytes,
    /// Its classifications.
    pub(crate) parts: Vec<std::sync::Arc<pgrouter_sql::Classification>>,
}

/// Responses held for a retryable read beyond this size are released (no retry then).
pub(crate) const MAX_HELD: usize = 64 * 1024;

impl Backend {
    pub(crate) fn new(
        mut conn: ServerConn,
        pooled: PooledState,
        ticket: Ticket,
        node: usize,
    ) -> Self {
        let PooledState {
            mut prepared,
            sequences,
        } = pooled;
        // The unnamed statement belongs to whoever used the connection last.
        if !prepared.is_empty() {
            prepared.remove("");
        }
        let mut buf = std::mem::take(&mut conn.spare_buf);
        if buf.capacity() == 0 {
            buf = BytesMut::with_capacity(super::client::READ_CHUNK);
        }
        Self {
            conn,
            ticket,
            node,
            buf,
            walker: FrameWalker::new(),
            prepared,
            sequences,
            ledger: Ledger::default(),
            retry: None,
            farewell: None,
        }
    }

    /// Closes the connection politely: the server rolls back whatever was open there.
    pub(crate) async fn terminate(mut self) {
        let _ = self
            .conn
            .stream
            .write_all(&[pgrouter_protocol::frontend::TERMINATE, 0, 0, 0, 4])
            .await;
    }

    /// True while the connection owes responses or is inside an extended-protocol segment: the
    /// session may not switch to another connection.
    pub(crate) fn busy(&self) -> bool {
        self.ledger.busy()
    }

    /// Closes an open segment that only prepared or described statements (the client moved on
    /// without a `Sync`) so that the session may use another connection: a `Sync` whose
    /// `ReadyForQuery` is hidden. Returns whether it did.
    pub(crate) async fn close_idle_segment(&mut self) -> bool {
        if !self.ledger.close_idle_segment() {
            return false;
        }
        let mut sync = BytesMut::with_capacity(5);
        pgrouter_protocol::frontend::write_sync(&mut sync);
        // A dead connection is noticed when it is read.
        let _ = self.conn.stream.write_all(&sync).await;
        true
    }

    /// Reads more bytes from the server.
    pub(crate) async fn read(&mut self) -> std::io::Result<usize> {
        reserve_for_read(&mut self.buf);
        self.conn.stream.read_buf(&mut self.buf).await
    }
}

impl Backend {
    /// Runs one query of pgrouter's own on this idle connection and returns its rows as text.
    /// Asynchronous messages that arrive meanwhile (notifications, notices, parameter changes)
    /// are passed to the client.
    pub(crate) async fn query_rows(
        &mut self,
        client: &mut super::client::ClientConn,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, super::SessionError> {
        // A simple query destroys the connection's unnamed statement.
        self.prepared.remove("");
        let outcome = self
            .conn
            .simple_query(&mut self.buf, sql)
            .await
            .map_err(|_| super::server_lost())?;
        for message in &outcome.asynchronous {
            client.write_all(message).await?;
        }
        if outcome.failed {
            tracing::warn!("pgrouter's own catalog query failed");
        }
        Ok(outcome.rows)
    }
}

/// Reads from an optional backend; pends forever when there is none (for use in `select!`).
pub(crate) async fn read_opt(backend: &mut Option<Backend>) -> std::io::Result<usize> {
    match backend {
        Some(b) => b.read().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::READ_CHUNK;

    #[test]
    fn only_an_empty_buffer_of_the_usual_size_stays_with_a_pooled_connection() {
        let mut holding = BytesMut::with_capacity(READ_CHUNK);
        holding.extend_from_slice(b"Z\0\0\0\x05I");
        for (buf, kept) in [
            (BytesMut::with_capacity(READ_CHUNK), true),
            (BytesMut::new(), true),
            (holding, false),
            (BytesMut::with_capacity(4 * READ_CHUNK), false),
        ] {
            assert_eq!(worth_keeping(&buf), kept, "capacity {}", buf.capacity());
        }
    }
}
