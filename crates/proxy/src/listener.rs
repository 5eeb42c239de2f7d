//! The accept loops: one per client listener (TCP, and the optional Unix-domain socket), all
//! feeding one set of sessions.

use crate::client::ClientStream;
use crate::clients::ClientPeer;
use crate::context::ProxyContext;
use crate::routing::Endpoint;
use crate::session;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A socket clients connect to.
#[derive(Debug)]
pub enum ClientListener {
    /// `listen`, `primary_listen`, `read_only_listen`.
    Tcp(TcpListener),
    /// `unix_socket_dir`.
    Unix(UnixListener),
}

impl ClientListener {
    async fn accept(&self) -> std::io::Result<(ClientStream, ClientPeer)> {
        match self {
            ClientListener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                Ok((ClientStream::Plain(stream), ClientPeer::Tcp(peer)))
            }
            ClientListener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok((ClientStream::Unix(stream), ClientPeer::Local))
            }
        }
    }
}

/// Accepts clients on every listener until `shutdown` is cancelled, one task per client, then
/// closes the listeners and waits for sessions to end (they are told through the same token).
/// Each listener's sessions follow its [`Endpoint`].
pub async fn serve(
    listeners: Vec<(ClientListener, Endpoint)>,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
) {
    let sessions = TaskTracker::new();
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, endpoint)| {
            tokio::spawn(accept(
                listener,
                endpoint,
                Arc::clone(&ctx),
                shutdown.clone(),
                sessions.clone(),
            ))
        })
        .collect();
    for loop_ in accepting {
        let _ = loop_.await;
    }
    sessions.close();
    sessions.wait().await;
}

async fn accept(
    listener: ClientListener,
    endpoint: Endpoint,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    session::run(stream, peer, ctx, endpoint, shutdown).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: keep serving the clients we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
