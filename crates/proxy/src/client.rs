//! The client's socket and its read buffer.

use crate::clients::ClientEntry;
use crate::error::SessionError;
use bytes::BytesMut;
use pgrouter_protocol::frame::{self, FrameError};
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read buffers grow to at least this much free space before each read.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// A client connection: the socket and the bytes read from it but not yet handled.
#[derive(Debug)]
pub struct ClientConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    /// The client's row in the registry: bytes and state are counted there.
    pub(crate) entry: Arc<ClientEntry>,
}

impl ClientConn {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, entry: Arc<ClientEntry>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            entry,
        }
    }

    /// Reads more bytes into the buffer; end of stream or an error means the client is gone.
    pub(crate) async fn fill(&mut self) -> Result<(), SessionError> {
        reserve_for_read(&mut self.buf);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(SessionError::ClientGone),
            Ok(n) => {
                self.entry.received(n);
                Ok(())
            }
        }
    }

    /// Writes bytes to the client.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.entry.sent(bytes.len());
        self.stream
            .write_all(bytes)
            .await
            .map_err(|_| SessionError::ClientGone)
    }

    /// Reads one complete tagged message (used during authentication, where messages are small).
    pub(crate) async fn read_message(
        &mut self,
        max_len: usize,
    ) -> Result<(u8, BytesMut), SessionError> {
        loop {
            match frame::next_frame(&self.buf, max_len) {
                Ok(Some(f)) => {
                    let mut msg = self.buf.split_to(f.total_len);
                    let body = msg.split_off(frame::HEADER_LEN);
                    return Ok((f.tag, body));
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(frame_error(e)),
            }
        }
    }

    /// Sends a final error and closes. Failures are ignored: the client may already be gone.
    pub(crate) async fn send_error_and_close(&mut self, error: &ErrorResponse) {
        let mut out = BytesMut::with_capacity(256);
        error.encode(&mut out);
        self.send_raw_and_close(&out).await;
    }

    /// Sends bytes (a complete message) and closes.
    pub(crate) async fn send_raw_and_close(&mut self, bytes: &[u8]) {
        self.entry.sent(bytes.len());
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Makes sure a read has room, without growing a buffer that has enough.
pub(crate) fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}

/// The FATAL error PostgreSQL sends for a malformed message.
pub(crate) fn frame_error(e: FrameError) -> SessionError {
    let message = match e {
        FrameError::InvalidLength { len } => format!("invalid message length {len}"),
        FrameError::TooLarge { len, limit, .. } => {
            format!("message length {len} exceeds the maximum of {limit} bytes")
        }
    };
    SessionError::Fatal(ErrorResponse::fatal(SqlState::PROTOCOL_VIOLATION, message))
}
