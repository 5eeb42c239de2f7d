//! Session workers, for `worker_threads` above 1: threads that each run their own
//! single-threaded runtime. An accepted client is handed to the worker serving the fewest
//! sessions, and its session stays there to the end, with every server connection it opens or
//! takes from the pool. The socket events of a request then wake only the thread that serves it
//! (tokio's multi-threaded scheduler would move tasks between threads and wake one thread from
//! another), and the pools keep one idle list per worker (see `pgrouter_pool`'s shards), so a
//! server connection is read by the runtime it is registered with. (A worker at a node's limit
//! may take another worker's idle connection over: the pool moves its socket to the taker's
//! runtime first.)
//!
//! What it must not do: move a session to another worker, block a worker, or lose a client:
//! when a worker cannot take it, the session runs on the accepting runtime instead.

use crate::client::ClientStream;
use crate::clients::ClientPeer;
use crate::context::ProxyContext;
use crate::routing::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A client accepted by the listener's runtime, detached from it so that a worker's runtime can
/// take the socket over.
#[derive(Debug)]
pub(crate) struct Accepted {
    socket: DetachedSocket,
    peer: ClientPeer,
    endpoint: Endpoint,
}

#[derive(Debug)]
enum DetachedSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Accepted {
    /// Detaches an accepted client from the current runtime. A stream already past its
    /// handshake (never the case at accept) cannot be handed over: it is given back.
    pub(crate) fn detach(
        stream: ClientStream,
        peer: ClientPeer,
        endpoint: Endpoint,
    ) -> Result<Self, (ClientStream, std::io::Error)> {
        let socket = match stream {
            ClientStream::Plain(tcp) => tcp.into_std().map(DetachedSocket::Tcp),
            ClientStream::Unix(unix) => unix.into_std().map(DetachedSocket::Unix),
            other => return Err((other, std::io::Error::other("not a fresh socket"))),
        };
        match socket {
            Ok(socket) => Ok(Self {
                socket,
                peer,
                endpoint,
            }),
            // `into_std` fails only before the socket was taken out of the runtime.
            Err(e) => Err((ClientStream::Gone, e)),
        }
    }

    /// Registers the socket with the calling thread's runtime.
    pub(crate) fn attach(self) -> std::io::Result<(ClientStream, ClientPeer, Endpoint)> {
        let stream = match self.socket {
            DetachedSocket::Tcp(s) => ClientStream::Plain(tokio::net::TcpStream::from_std(s)?),
            DetachedSocket::Unix(s) => ClientStream::Unix(tokio::net::UnixStream::from_std(s)?),
        };
        Ok((stream, self.peer, self.endpoint))
    }
}

/// The running workers.
#[derive(Debug)]
pub(crate) struct Workers {
    queues: Vec<Queue>,
}

#[derive(Debug)]
struct Queue {
    jobs: mpsc::UnboundedSender<Accepted>,
    /// Sessions this worker serves now.
    sessions: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` worker threads. Sessions they run are tracked by `sessions` and told to
    /// end through `shutdown`, as those of the accepting runtime. A worker whose thread or
    /// runtime cannot start is left out (logged); with none left, `None`.
    pub(crate) fn start(
        count: usize,
        ctx: &Arc<ProxyContext>,
        shutdown: &CancellationToken,
        sessions: &TaskTracker,
    ) -> Option<Self> {
        let mut queues = Vec::with_capacity(count);
        for index in 0..count {
            let (jobs, incoming) = mpsc::unbounded_channel();
            let load = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                index,
                incoming,
                ctx: Arc::clone(ctx),
                shutdown: shutdown.clone(),
                sessions: sessions.clone(),
                load: Arc::clone(&load),
            };
            let started = std::thread::Builder::new()
                .name(format!("pgrouter-w{index}"))
                .spawn(move || worker.run());
            match started {
                Ok(_) => queues.push(Queue {
                    jobs,
                    sessions: load,
                }),
                Err(e) => {
                    tracing::error!(error = %e, worker = index, "cannot start a worker thread")
                }
            }
        }
        (!queues.is_empty()).then_some(Self { queues })
    }

    /// Hands a client to the worker serving the fewest sessions. A worker whose runtime is
    /// gone is left out from then on and the next one tried. `Err`: no worker took it; the
    /// caller serves it.
    pub(crate) fn dispatch(&self, mut accepted: Accepted) -> Result<(), Accepted> {
        for _ in 0..self.queues.len() {
            let least_busy = self
                .queues
                .iter()
                .filter(|q| q.sessions.load(Ordering::Relaxed) != GONE)
                .min_by_key(|q| q.sessions.load(Ordering::Relaxed));
            let Some(queue) = least_busy else {
                break;
            };
            queue.sessions.fetch_add(1, Ordering::Relaxed);
            match queue.jobs.send(accepted) {
                Ok(()) => return Ok(()),
                Err(unsent) => {
                    // Its receiver was dropped: the worker's runtime could not start, or ended.
                    queue.sessions.store(GONE, Ordering::Relaxed);
                    accepted = unsent.0;
                }
            }
        }
        Err(accepted)
    }
}

/// A worker's session count once it is known to take no more clients.
const GONE: usize = usize::MAX;

/// One worker thread's state.
struct Worker {
    index: usize,
    incoming: mpsc::UnboundedReceiver<Accepted>,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    load: Arc<AtomicUsize>,
}

impl Worker {
    /// Runs sessions until the accepting side is gone and they have all ended.
    fn run(mut self) {
        // Server connections this thread checks out and returns use its own idle lists.
        pgrouter_pool::set_thread_shard(self.index);
        // Its counters and histograms go to its own shard (summed at scrape time).
        crate::per_worker::set_thread_shard(self.index);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                // The receiver is dropped with `self`: the listener serves this worker's share.
                tracing::error!(error = %e, worker = self.index, "cannot start a worker's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            while let Some(accepted) = self.incoming.recv().await {
                let load = Arc::clone(&self.load);
                let (stream, peer, endpoint) = match accepted.attach() {
                    Ok(attached) => attached,
                    Err(e) => {
                        load.fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not take over an accepted client's socket");
                        continue;
                    }
                };
                let session =
                    crate::session::run(stream, peer, Arc::clone(&self.ctx), endpoint, self.shutdown.clone());
                tokio::spawn(self.sessions.track_future(async move {
                    // Counted off when the session ends, panicked or not.
                    let _counted = SessionCount(load);
                    session.await;
                }));
            }
            // The listeners are closed: wait for this worker's sessions before the runtime
            // (and every task on it) is dropped.
            self.sessions.wait().await;
        });
    }
}

/// One session on a worker's count, until dropped.
struct SessionCount(Arc<AtomicUsize>);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Session worker threads for `worker_threads`: with 1, none (sessions run on the main
/// thread, with everything else); 0 means one per core.
pub fn session_workers(worker_threads: u16) -> usize {
    let threads = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => usize::from(n),
    };
    if threads > 1 {
        threads
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> Accepted {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let socket = std::net::TcpStream::connect(addr).expect("connect");
        Accepted {
            socket: DetachedSocket::Tcp(socket),
            peer: ClientPeer::Tcp(addr),
            endpoint: Endpoint::Split,
        }
    }

    fn queue(sessions: usize) -> (Queue, mpsc::UnboundedReceiver<Accepted>) {
        let (jobs, incoming) = mpsc::unbounded_channel();
        let sessions = Arc::new(AtomicUsize::new(sessions));
        (Queue { jobs, sessions }, incoming)
    }

    #[test]
    fn a_worker_whose_runtime_is_gone_is_skipped_from_then_on() {
        let (dead, dead_incoming) = queue(0);
        let (busy, mut busy_incoming) = queue(5);
        drop(dead_incoming);
        let workers = Workers {
            queues: vec![dead, busy],
        };
        for round in 1..=2 {
            assert!(workers.dispatch(accepted()).is_ok(), "round {round}");
            assert!(busy_incoming.try_recv().is_ok(), "the live worker got it");
            assert_eq!(workers.queues[0].sessions.load(Ordering::Relaxed), GONE);
            assert_eq!(
                workers.queues[1].sessions.load(Ordering::Relaxed),
                5 + round
            );
        }
        drop(busy_incoming);
        assert!(
            workers.dispatch(accepted()).is_err(),
            "with no worker left the caller serves the client"
        );
    }

    #[test]
    fn one_thread_means_no_workers_and_zero_one_per_core() {
        assert_eq!(session_workers(1), 0);
        assert_eq!(session_workers(2), 2);
        assert_eq!(session_workers(16), 16);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(session_workers(0), if cores > 1 { cores } else { 0 });
    }
}
