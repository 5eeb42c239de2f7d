//! pgrouter's connections to PostgreSQL servers: TCP connect, TLS, start-up, authentication as the
//! client's user, and cancel requests.
//!
//! A [`ServerConn`] comes out logged in and idle (after the first `ReadyForQuery`), holding the
//! server's `ParameterStatus` values and its `BackendKeyData`. From then on the proxy reads and
//! writes its socket directly; this crate does not interpret the client's traffic. It runs
//! pgrouter's own simple queries (reset, catalog look-ups) in one place ([`query`]).
//!
//! What it must not do: route, pool, or retry. Errors are typed ([`ConnError`]) so callers can tell
//! a refused login (forward the server's own `ErrorResponse` to the client) from a network failure.
//!
//! # Layout
//! - [`connect`]: connect + start-up + authentication ([`ServerConn::connect`]).
//! - [`cancel`]: sending a `CancelRequest` to a server.
//! - [`query`]: one simple-query exchange of pgrouter's own ([`ServerConn::simple_query`]).
//! - [`stream`]: the socket, plain or TLS ([`ServerStream`]).
//! - [`tls`]: `server_tls:` as a policy and a rustls configuration ([`ServerTls`]).
//! - [`error`]: the [`ConnError`] type.

pub mod cancel;
pub mod connect;
pub mod error;
pub mod keepalive;
pub mod query;
pub mod stream;
pub mod tls;

pub use cancel::{send_cancel, send_peer_cancel, CancelInFlight, CancelsInFlight};
pub use connect::{Credential, ServerConn, ServerTarget};
pub use error::ConnError;
pub use keepalive::Keepalive;
pub use query::QueryOutcome;
pub use stream::ServerStream;
pub use tls::{client_config, server_name, ServerTls, TlsFiles, TlsPolicy, TlsSetupError};
