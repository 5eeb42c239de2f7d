//! The accept loops: one per client listener, all feeding one set of sessions.

use crate::context::ProxyContext;
use crate::routing::Endpoint;
use crate::session;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts clients on every listener until `shutdown` is cancelled, one task per client, then
/// closes the listeners and waits for sessions to end (they are told through the same token).
/// Each listener's sessions follow its [`Endpoint`].
pub async fn serve(
    listeners: Vec<(TcpListener, Endpoint)>,
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
    listener: TcpListener,
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
