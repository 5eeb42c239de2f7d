//! Relaying a logged-in session between the client and its server connection.
//!
//! Both directions are served by one loop: whichever side has bytes is read, and complete messages
//! are written to the other side straight from the read buffer (no per-message copy or
//! allocation). While a write to one side waits, nothing more is read from either, so a slow client
//! slows its own server connection instead of filling memory.
//!
//! Client messages are handled whole (they are bounded by `client.max_message_size`); server
//! output streams through a [`FrameWalker`], so a result of any size passes with bounded memory.

use super::client::{frame_error, reserve_for_read, ClientConn};
use super::SessionError;
use crate::context::ProxyContext;
use bytes::{Buf, BytesMut};
use pgrouter_conn::ServerConn;
use pgrouter_protocol::error::ErrorFields;
use pgrouter_protocol::frame::{self, FrameWalker, Step};
use pgrouter_protocol::{backend, frontend, ErrorResponse, SqlState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What the client side of the buffer allows next.
struct ClientScan {
    /// Bytes of complete messages at the front of the buffer, ready to forward.
    ready: usize,
    /// The client sent `Terminate`.
    terminate: bool,
}

/// Finds the complete, valid client messages at the front of `buf`.
fn scan_client(buf: &mut BytesMut, max_len: usize) -> Result<ClientScan, SessionError> {
    let mut pos = 0;
    while let Some(f) = frame::next_frame(&buf[pos..], max_len).map_err(frame_error)? {
        if !frontend::is_session_message(f.tag) {
            return Err(ErrorResponse::fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {}", f.tag),
            )
            .into());
        }
        pos += f.total_len;
        if f.tag == frontend::TERMINATE {
            return Ok(ClientScan {
                ready: pos,
                terminate: true,
            });
        }
    }
    // A message whose header has arrived: make room for all of it at once.
    if let Ok(Some((_, len))) = frame::parse_header(&buf[pos..], max_len) {
        let needed = pos + len + 1;
        if needed > buf.len() {
            buf.reserve(needed - buf.len());
        }
    }
    Ok(ClientScan {
        ready: pos,
        terminate: false,
    })
}

fn server_lost() -> SessionError {
    SessionError::Fatal(
        ErrorResponse::fatal(
            SqlState::CONNECTION_FAILURE,
            "server closed the connection unexpectedly",
        )
        .with_hint(
            "The server may have been restarted or terminated this session; reconnect and retry.",
        ),
    )
}

/// Relays until the client terminates, either side closes, or pgrouter shuts down.
pub(super) async fn relay(
    client: &mut ClientConn,
    server: &mut ServerConn,
    ctx: &ProxyContext,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let max_len = ctx.max_message_size();
    let ClientConn { stream, buf: cbuf } = client;
    let (mut client_rd, mut client_wr) = stream.split();
    let (mut server_rd, mut server_wr) = server.stream.split();
    let mut sbuf = BytesMut::with_capacity(super::client::READ_CHUNK);
    let mut walker = FrameWalker::new();
    let mut server_said_fatal = false;

    loop {
        // Client → server: everything complete in the buffer (also bytes pipelined right after
        // start-up).
        let scan = scan_client(cbuf, max_len)?;
        if scan.ready > 0 {
            if server_wr.write_all(&cbuf[..scan.ready]).await.is_err() {
                return Err(server_lost());
            }
            cbuf.advance(scan.ready);
        }
        if scan.terminate {
            return Ok(());
        }
        reserve_for_read(cbuf);
        reserve_for_read(&mut sbuf);

        tokio::select! {
            read = client_rd.read_buf(cbuf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    // Tell the server politely; it rolls back whatever was open.
                    let _ = server_wr.write_all(&[frontend::TERMINATE, 0, 0, 0, 4]).await;
                    return Err(SessionError::ClientGone);
                }
            }
            read = server_rd.read_buf(&mut sbuf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return if server_said_fatal {
                        Err(SessionError::ServerLost("server closed the connection after a FATAL error".into()))
                    } else {
                        Err(server_lost())
                    };
                }
                // Server → client: stream through, noting FATAL errors on the way.
                loop {
                    match walker.step(&sbuf, max_len, |t| t == backend::ERROR_RESPONSE) {
                        Ok(Step::Message { range, .. }) => {
                            let body = &sbuf[range.start + frame::HEADER_LEN..range.end];
                            server_said_fatal |= ErrorFields::parse(body).is_fatal();
                        }
                        Ok(Step::NeedMore) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "invalid message from server");
                            return Err(server_lost());
                        }
                    }
                }
                let n = walker.position();
                if n > 0 {
                    if client_wr.write_all(&sbuf[..n]).await.is_err() {
                        return Err(SessionError::ClientGone);
                    }
                    sbuf.advance(n);
                    walker.consumed(n);
                }
            }
            _ = shutdown.cancelled() => {
                return Err(ErrorResponse::fatal(
                    SqlState::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                ).into());
            }
        }
    }
}
