//! A server connection's byte stream: plain TCP, or TLS over TCP.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A server connection's socket.
#[derive(Debug)]
pub enum ServerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ServerStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        }
    }

    /// Registers a plain socket with the calling thread's runtime, for a connection taken over
    /// from another thread's runtime (a session worker's idle list): its events then wake this
    /// thread directly. A TLS stream cannot be taken apart and stays registered where it was;
    /// it works the same, its events passing through that runtime. `Err`: the socket could not
    /// be moved and is closed.
    pub fn move_here(self) -> std::io::Result<Self> {
        match self {
            ServerStream::Plain(tcp) => {
                Ok(ServerStream::Plain(TcpStream::from_std(tcp.into_std()?)?))
            }
            tls @ ServerStream::Tls(_) => Ok(tls),
        }
    }

    /// Whether the connection is on TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Writes all of `bytes` and, on TLS, flushes: rustls may keep the tail of a write
    /// buffered until it is flushed, and a request that waits in a buffer is a hang.
    /// (Shadows `AsyncWriteExt::write_all` for callers holding a `ServerStream`.)
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ServerStream::Plain(s) => s.write_all(bytes).await,
            ServerStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// For an idle connection: true while the server has sent nothing. Data or end-of-file on
    /// an idle connection means the server closed it (or is about to, with a FATAL error).
    /// Reads the TCP socket underneath, so on TLS the byte read is lost: the caller drops a
    /// connection this says is not open.
    pub fn idle_and_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.tcp().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
