//! The client's socket (plain TCP, or TLS once the client asked for it) and its read buffer.

use crate::clients::ClientEntry;
use crate::error::SessionError;
use bytes::BytesMut;
use pgrouter_protocol::frame::{self, FrameError};
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The client's byte stream.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// A Unix-domain socket client (`unix_socket_dir`).
    Unix(tokio::net::UnixStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while a handshake takes the socket over, or after it failed.
    Gone,
}

impl ClientStream {
    /// Whether the stream is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Gone => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Unix(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Read buffers grow to at least this much free space before each read.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

use crate::memory::{BufferBudget, BASE_BUFFER};

/// A client connection: the socket and the bytes read from it but not yet handled.
#[derive(Debug)]
pub struct ClientConn {
    pub(crate) stream: ClientStream,
    pub(crate) buf: BytesMut,
    /// The client's row in the registry: bytes and state are counted there.
    pub(crate) entry: Arc<ClientEntry>,
    /// On TLS: the `tls-server-end-point` binding of the certificate this client's handshake
    /// used (a reload may have changed the one in force since).
    pub(crate) tls_end_point: Option<Vec<u8>>,
    /// On TLS with a client certificate (verified against `tls.ca_file`): its subject's common
    /// name, for the `cert` method. `Some("")`: a certificate without one.
    pub(crate) certificate_name: Option<String>,
    /// The process-wide budget `buf`'s growth beyond [`BASE_BUFFER`] is taken from.
    budget: Arc<BufferBudget>,
    /// Bytes of `buf`'s allocation taken from `budget` (its size beyond [`BASE_BUFFER`]).
    charged: usize,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.budget.give_back(self.charged);
    }
}

impl ClientConn {
    /// Wraps an accepted socket; its buffer grows beyond [`BASE_BUFFER`] only within `budget`.
    pub fn new(stream: ClientStream, entry: Arc<ClientEntry>, budget: Arc<BufferBudget>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(BASE_BUFFER),
            entry,
            tls_end_point: None,
            certificate_name: None,
            budget,
            charged: 0,
        }
    }

    /// Makes sure the buffer has room for a read (half a [`READ_CHUNK`] at least). Growth beyond
    /// [`BASE_BUFFER`] is taken from the budget; `false`: the budget is spent, nothing changed.
    ///
    /// The buffer's allocation is always made here, at a size known to the budget: either
    /// [`BASE_BUFFER`] (free) or a geometric step above what it holds (charged). Bytes still in
    /// flight elsewhere (a frozen slice of an older allocation) keep that allocation alive only
    /// until they are sent.
    pub(crate) fn make_room(&mut self) -> bool {
        let (len, free) = (self.buf.len(), self.buf.capacity() - self.buf.len());
        if free >= READ_CHUNK / 2 {
            return true;
        }
        if len + READ_CHUNK / 2 <= BASE_BUFFER {
            // What is left fits a base buffer: reuse this allocation when nothing else holds it
            // and it is a base one; otherwise move to a new base buffer and give the growth back.
            if self.charged == 0 && self.buf.try_reclaim(READ_CHUNK / 2) {
                return true;
            }
            self.reallocate(BASE_BUFFER);
            self.budget.give_back(std::mem::take(&mut self.charged));
            return true;
        }
        // Geometric growth while a large message arrives (amortised copies), never ahead of the
        // bytes actually received: memory follows what the client sent, not what it announced.
        let size = len.saturating_mul(2).max(len + READ_CHUNK);
        let charge = size - BASE_BUFFER;
        if !self.budget.try_take(charge.saturating_sub(self.charged)) {
            return false;
        }
        self.budget.give_back(self.charged.saturating_sub(charge));
        self.charged = charge;
        self.reallocate(size);
        true
    }

    /// Moves the buffered bytes to a new allocation of `size` bytes.
    fn reallocate(&mut self, size: usize) {
        let mut fresh = BytesMut::with_capacity(size);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
    }

    /// The buffer's allocation is larger than [`BASE_BUFFER`] (taken from the budget). A slice of
    /// it kept after its message was handled would keep all of it alive past the budget's
    /// count: such slices are copied instead (see `Session::keep`).
    pub(crate) fn is_grown(&self) -> bool {
        self.charged > 0
    }

    /// Once the buffer is empty, a grown one goes back to [`BASE_BUFFER`] and its growth to the
    /// budget.
    pub(crate) fn shrink_if_empty(&mut self) {
        if self.charged > 0 && self.buf.is_empty() {
            self.buf = BytesMut::with_capacity(BASE_BUFFER);
            self.budget.give_back(std::mem::take(&mut self.charged));
        }
    }

    /// Reads more bytes into the buffer; end of stream or an error means the client is gone.
    /// Used before a session relays (start-up, authentication, the admin console), where
    /// messages are small: a spent budget ends the connection with PostgreSQL's out-of-memory
    /// error.
    pub(crate) async fn fill(&mut self) -> Result<(), SessionError> {
        if !self.make_room() {
            return Err(SessionError::Fatal(
                ErrorResponse::fatal(SqlState::OUT_OF_MEMORY, "out of memory")
                    .with_detail("pgrouter's client.max_buffer_memory is spent."),
            ));
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(SessionError::ClientGone),
            Ok(n) => {
                self.entry.received(n);
                Ok(())
            }
        }
    }

    /// Writes bytes to the client (through TLS: and flushes the records out).
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.entry.sent(bytes.len());
        self.stream
            .write_all(bytes)
            .await
            .map_err(|_| SessionError::ClientGone)?;
        if self.stream.is_tls() {
            self.stream
                .flush()
                .await
                .map_err(|_| SessionError::ClientGone)?;
        }
        Ok(())
    }

    /// Whether the client talks TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The first byte the client sent, left unread; `None` when nothing is to be read (the
    /// client closed, or the stream is not plain TCP).
    pub(crate) async fn peek_first_byte(&self) -> Option<u8> {
        let ClientStream::Plain(tcp) = &self.stream else {
            return None;
        };
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1) => Some(first[0]),
            _ => None,
        }
    }

    /// The protocol the client and pgrouter agreed on by ALPN, on TLS.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.stream {
            ClientStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// Runs the TLS handshake on the plain socket (after answering `S` to an `SSLRequest`, or
    /// at once for PostgreSQL 17's direct TLS).
    pub(crate) async fn start_tls(
        &mut self,
        acceptor: &crate::tls::Acceptor,
    ) -> Result<(), SessionError> {
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Gone)
        else {
            return Err(SessionError::ClientGone);
        };
        match acceptor.tls.accept(tcp).await {
            Ok(tls) => {
                self.certificate_name = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| crate::cert_name::subject_common_name(leaf).unwrap_or_default());
                self.stream = ClientStream::Tls(Box::new(tls));
                self.tls_end_point = Some(acceptor.end_point.clone());
                Ok(())
            }
            Err(e) => {
                // PostgreSQL logs a failed handshake and closes: there is no channel to answer on.
                tracing::info!(error = %e, "TLS handshake with a client failed");
                Err(SessionError::ClientGone)
            }
        }
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

/// Makes sure a read has room, without growing a buffer that has enough (server connections'
/// buffers: server output streams through them, so they stay near [`READ_CHUNK`]).
pub(crate) fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        // Geometric growth while a large message arrives (amortised copies), never ahead of
        // the bytes actually received: memory follows what the client sent.
        buf.reserve(READ_CHUNK.max(buf.len()));
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
