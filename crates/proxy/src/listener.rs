//! The accept loops: one per client listener (TCP, and the optional Unix-domain socket), all
//! feeding one set of sessions: on the accepting runtime, or with `worker_threads` above 1 on
//! the session workers (`workers`).

use crate::client::ClientStream;
use crate::clients::ClientPeer;
use crate::context::ProxyContext;
use crate::routing::Endpoint;
use crate::session;
use crate::workers::{Accepted, Workers};
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
    // Sessions learn of the shutdown from their registry entries (cheaper for their loops to
    // watch than the token); one that registers later sees the token cancelled.
    let stopper = {
        let (ctx, shutdown) = (Arc::clone(&ctx), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            ctx.clients.stop_all();
        })
    };
    let workers = match ctx.session_workers {
        0 => None,
        n => Workers::start(n, &ctx, &shutdown, &sessions).map(Arc::new),
    };
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, endpoint)| {
            tokio::spawn(accept(
                listener,
                endpoint,
                Arc::clone(&ctx),
                shutdown.clone(),
                sessions.clone(),
                workers.clone(),
            ))
        })
        .collect();
    for loop_ in accepting {
        let _ = loop_.await;
    }
    sessions.close();
    sessions.wait().await;
    stopper.abort();
    // The workers' queues close with it: their threads end.
    drop(workers);
}

async fn accept(
    listener: ClientListener,
    endpoint: Endpoint,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    workers: Option<Arc<Workers>>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (stream, peer) = match &workers {
                    Some(workers) => match hand_over(workers, stream, peer, endpoint) {
                        None => continue,
                        Some(kept) => kept,
                    },
                    None => (stream, peer),
                };
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

/// Gives an accepted client to a session worker. `Some`: no worker took it, and it is served
/// here (registered again with this runtime). `None`: handed over, or lost while detaching (the
/// socket is then closed: the client sees a refused session, nobody else is affected).
fn hand_over(
    workers: &Workers,
    stream: ClientStream,
    peer: ClientPeer,
    endpoint: Endpoint,
) -> Option<(ClientStream, ClientPeer)> {
    let accepted = match Accepted::detach(stream, peer, endpoint) {
        Ok(accepted) => accepted,
        Err((ClientStream::Gone, e)) => {
            tracing::warn!(error = %e, "could not hand an accepted client to a worker");
            return None;
        }
        Err((stream, _)) => return Some((stream, peer)),
    };
    let unsent = workers.dispatch(accepted).err()?;
    match unsent.attach() {
        Ok((stream, peer, _)) => Some((stream, peer)),
        Err(e) => {
            tracing::warn!(error = %e, "could not take an accepted client back from the workers");
            None
        }
    }
}
