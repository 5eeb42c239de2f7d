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
    let send = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&buf).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out"))?
}
