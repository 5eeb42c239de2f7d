//! The accept loop.

use crate::context::ProxyContext;
use crate::session;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts clients until `shutdown` is cancelled, one task per client, then waits for sessions to
/// end (they are told through the same token).
pub async fn serve(listener: TcpListener, ctx: Arc<ProxyContext>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    session::run(stream, peer, ctx, shutdown).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: keep serving the clients we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
