//! pgrouter's client-facing side: the listener, client sessions and the relay between a client
//! and its server connection.
//!
//! A session is one async task per client: start-up, authentication by pgrouter itself, a login
//! to the server as the same user, then relaying whole protocol messages in both directions. Bytes
//! are forwarded from the read buffer they arrived in; only message headers (and the few bodies
//! routing needs) are looked at.
//!
//! What it must not do: block, hold a lock across an `.await`, buffer without bound, or let one
//! client's bad input affect another. Every client error ends in a PostgreSQL `ErrorResponse`.
//!
//! # Layout
//! - [`listener`]: accept loop, one task per client, shutdown.
//! - [`workers`]: session worker threads (`worker_threads` above 1), a session staying on one.
//! - [`context`]: what sessions share: users with derived secrets, nodes, limits, cancel registry.
//! - [`limits`]: client connection limits.
//! - [`memory`]: the process-wide budget for client read buffers.
//! - [`per_worker`]: counters and histograms sharded per session worker, summed when read.
//! - [`stats`], [`clients`]: what sessions count and who is connected, for metrics and the console.
//! - [`console`]: the SQL admin console (database `pgrouter`).
//! - [`cancel`]: client-facing `BackendKeyData` and the mapping to server keys.
//! - [`routing`]: where a request goes, as a pure function of classification and session facts.
//! - [`session`]: one client's life: `startup`, `auth`, `relay`.
//! - [`client`], [`error`]: the client socket (plain or TLS) and the session error, shared by
//!   sessions and the console (which therefore depend on these, not on each other).
//! - [`tls`]: the TLS acceptor towards clients, from `tls:`.

pub mod auth_query;
pub mod cancel;
pub mod cert_name;
pub mod client;
pub mod clients;
pub mod console;
pub mod context;
pub mod error;
pub mod latency;
pub mod limits;
pub mod listener;
pub mod memory;
pub mod per_worker;
pub mod reload;
pub mod routing;
pub mod session;
pub mod stats;
pub mod tls;
pub mod workers;

pub use context::ProxyContext;
pub use listener::serve;
