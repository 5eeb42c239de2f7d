//! One server connection of a session, with what the session must remember about it: which
//! prepared statements it holds, which session changes it has replayed, and which responses it
//! still owes.

use super::client::reserve_for_read;
use bytes::BytesMut;
use pgrouter_conn::ServerConn;
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
    /// Index of the node in the configuration.
    pub(crate) node: usize,
    pub(crate) buf: BytesMut,
    pub(crate) walker: FrameWalker,
    /// How many entries of the session's replay log this connection has run.
    pub(crate) replayed: usize,
    /// Named (and the unnamed, `""`) prepared statements this connection holds, by version.
    pub(crate) prepared: HashMap<String, u64>,
    /// `ReadyForQuery` messages owed for client requests.
    pub(crate) pending: u32,
    /// `ReadyForQuery` messages owed for requests pgrouter injected; everything up to and
    /// including each of them is swallowed.
    pub(crate) swallow: u32,
    /// `ParseComplete` / `CloseComplete` messages for injected mid-segment messages, to hide.
    pub(crate) hide_parse: u32,
    pub(crate) hide_close: u32,
    /// `Sync`s sent since the last `Execute`/`Query`: if that started a COPY FROM STDIN, the server
    /// ignores them (it ignores Sync in copy-in mode) and they owe no `ReadyForQuery`.
    pub(crate) syncs_since_execute: u32,
    /// Extended-protocol messages were sent since the last `Sync`.
    pub(crate) in_segment: bool,
    /// An `ErrorResponse` arrived for the current client request.
    pub(crate) saw_error: bool,
    /// The server sent a FATAL error.
    pub(crate) said_fatal: bool,
}

impl Backend {
    pub(crate) fn new(conn: ServerConn, node: usize) -> Self {
        Self {
            conn,
            node,
            buf: BytesMut::with_capacity(super::client::READ_CHUNK),
            walker: FrameWalker::new(),
            replayed: 0,
            prepared: HashMap::new(),
            pending: 0,
            swallow: 0,
            hide_parse: 0,
            hide_close: 0,
            syncs_since_execute: 0,
            in_segment: false,
            saw_error: false,
            said_fatal: false,
        }
    }

    /// True while the connection owes responses or is inside an extended-protocol segment: the
    /// session may not switch to another connection.
    pub(crate) fn busy(&self) -> bool {
        self.pending > 0 || self.swallow > 0 || self.in_segment
    }

    /// Reads more bytes from the server.
    pub(crate) async fn read(&mut self) -> std::io::Result<usize> {
        reserve_for_read(&mut self.buf);
        self.conn.stream.read_buf(&mut self.buf).await
    }
}

/// Reads from an optional backend; pends forever when there is none (for use in `select!`).
pub(crate) async fn read_opt(backend: &mut Option<Backend>) -> std::io::Result<usize> {
    match backend {
        Some(b) => b.read().await,
        None => std::future::pending().await,
    }
}
