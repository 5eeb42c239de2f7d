//! Forwarding a `CancelRequest` to a server.

use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Opens a new connection to `addr` and sends a `CancelRequest` for the given server key.
/// PostgreSQL answers nothing and closes the connection.
pub async fn send_cancel(
    addr: SocketAddr,
    process_id: i32,
    secret_key: i32,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16);
    postgres_protocol::message::frontend::cancel_request(process_id, secret_key, &mut buf);
    send_startup_packet(addr, &buf, timeout).await
}

/// The same, with pgrouter's own request code for a cancel one instance forwards to another
/// (`pgrouter_protocol::startup::PEER_CANCEL_REQUEST_CODE`): the receiver acts on it for its own
/// sessions only and never forwards it again.
pub async fn send_peer_cancel(
    addr: SocketAddr,
    process_id: i32,
    secret_key: i32,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut packet = [0u8; 16];
    packet[..4].copy_from_slice(&16i32.to_be_bytes());
    packet[4..8]
        .copy_from_slice(&pgrouter_protocol::startup::PEER_CANCEL_REQUEST_CODE.to_be_bytes());
    packet[8..12].copy_from_slice(&process_id.to_be_bytes());
    packet[12..].copy_from_slice(&secret_key.to_be_bytes());
    send_startup_packet(addr, &packet, timeout).await
}

/// Connects, writes one start-up packet and closes, all within `timeout`.
async fn send_startup_packet(
    addr: SocketAddr,
    packet: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let send = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(packet).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out"))?
}
