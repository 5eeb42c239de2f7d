//! Forwarding a `CancelRequest` to a server, and knowing when it has had its effect.
//!
//! PostgreSQL reads a cancel request on a connection of its own and signals the backend a
//! little later (twice: the process, then its process group), then closes that connection. A
//! cancel still on its way when the cancelled statement ends by itself lands on whatever the
//! server connection runs next: another client's statement once a pool has handed it on.
//! So a forwarded cancel counts as done only when PostgreSQL has closed the cancel connection
//! (libpq's own cancel waits for the same close), and each server connection keeps a count of
//! its cancels in flight ([`CancelsInFlight`]) that a pool waits out before reusing it.

use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The cancel requests forwarded for one server connection that PostgreSQL may not have acted
/// on yet. Cloning it shares the count (the session's cancel target holds a clone).
#[derive(Debug, Clone, Default)]
pub struct CancelsInFlight(Arc<InFlight>);

#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    /// A cancel ended without PostgreSQL closing its connection: its signal may still come, at
    /// any time.
    unconfirmed: AtomicBool,
    settled: Notify,
}

impl CancelsInFlight {
    /// A cancel for this connection is being forwarded; it is in flight until the returned
    /// guard is dropped.
    pub fn start(&self) -> CancelInFlight {
        self.0.count.fetch_add(1, Ordering::SeqCst);
        CancelInFlight {
            of: self.clone(),
            confirmed: false,
        }
    }

    /// No cancel is in flight and none ended unconfirmed: the connection may run anyone's
    /// statement. One atomic load each; the check before every use of a connection.
    pub fn clear(&self) -> bool {
        self.0.count.load(Ordering::SeqCst) == 0 && !self.0.unconfirmed.load(Ordering::SeqCst)
    }

    /// Waits until no cancel is in flight, at most `limit`. True when every cancel forwarded
    /// so far is known to have had its effect; false when one is still on its way after
    /// `limit` or ended unconfirmed (its signal may still come: the connection can only be
    /// closed).
    pub async fn settle(&self, limit: Duration) -> bool {
        let all_ended = async {
            loop {
                let notified = self.0.settled.notified();
                tokio::pin!(notified);
                // Registered before the count is read: a guard dropped in between still wakes us.
                notified.as_mut().enable();
                if self.0.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, all_ended).await.is_ok()
            && !self.0.unconfirmed.load(Ordering::SeqCst)
    }
}

/// One forwarded cancel, in flight until dropped; [`CancelInFlight::confirmed`] when
/// PostgreSQL said it is done.
#[derive(Debug)]
pub struct CancelInFlight {
    of: CancelsInFlight,
    confirmed: bool,
}

impl CancelInFlight {
    /// PostgreSQL closed the cancel connection: it has acted on the request.
    pub fn confirmed(mut self) {
        self.confirmed = true;
    }
}

impl Drop for CancelInFlight {
    fn drop(&mut self) {
        let shared = &self.of.0;
        if !self.confirmed {
            shared.unconfirmed.store(true, Ordering::SeqCst);
        }
        if shared.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.settled.notify_waiters();
        }
    }
}

/// Opens a new connection to `addr` and sends a `CancelRequest` for the given server key.
/// PostgreSQL answers nothing and closes the connection once it has signalled the backend:
/// this returns `Ok` only then.
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
/// sessions only and never forwards it again. Like PostgreSQL, the peer closes the connection
/// once the cancel has had its effect.
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

/// Connects, writes one start-up packet and waits for the other side to close, all within
/// `timeout`.
async fn send_startup_packet(
    addr: SocketAddr,
    packet: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let send = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(packet).await?;
        // Nothing is answered; the close is the answer. A byte would be a protocol error.
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await? {
            0 => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected answer to a cancel request",
            )),
        }
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_when_every_cancel_is_confirmed() {
        let cancels = CancelsInFlight::default();
        assert!(cancels.clear());
        let one = cancels.start();
        let two = cancels.start();
        assert!(!cancels.clear());
        assert!(
            !cancels.settle(Duration::from_millis(10)).await,
            "still in flight"
        );
        let waiter = tokio::spawn({
            let cancels = cancels.clone();
            async move { cancels.settle(Duration::from_secs(10)).await }
        });
        one.confirmed();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        two.confirmed();
        assert!(waiter.await.unwrap());
        assert!(cancels.clear());
    }

    #[tokio::test]
    async fn an_unconfirmed_cancel_never_settles() {
        let cancels = CancelsInFlight::default();
        drop(cancels.start());
        assert!(!cancels.clear());
        assert!(!cancels.settle(Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_cancel_is_done_when_the_server_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut packet = [0u8; 16];
            s.read_exact(&mut packet).await.unwrap();
            // Acts on it later, then closes.
            tokio::time::sleep(Duration::from_millis(200)).await;
            packet
        });
        let started = std::time::Instant::now();
        send_cancel(addr, 7, 9, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        let packet = server.await.unwrap();
        assert_eq!(&packet[8..], &[0, 0, 0, 7, 0, 0, 0, 9]);
    }

    #[tokio::test]
    async fn a_server_that_never_closes_times_the_cancel_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(s);
        });
        let e = send_cancel(addr, 1, 2, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
