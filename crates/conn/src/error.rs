//! Errors from connecting to a server.

use bytes::Bytes;

/// Why a server connection could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Connecting or talking to the server failed at the network level.
    #[error("could not connect to server {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Connecting and logging in took longer than allowed.
    #[error("timed out connecting to server {addr}")]
    Timeout {
        /// `host:port`.
        addr: String,
    },
    /// The server refused: its own `ErrorResponse`, kept whole so it can be forwarded to the client.
    #[error("server {addr} refused the connection: {message}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The server's primary message.
        message: String,
        /// SQLSTATE.
        code: String,
        /// The complete `ErrorResponse` message, header included.
        raw: Bytes,
    },
    /// The server asked for an authentication method pgrouter cannot answer.
    #[error("server {addr} requested unsupported authentication: {method}")]
    UnsupportedAuth {
        /// `host:port`.
        addr: String,
        /// The method.
        method: String,
    },
    /// The server sent something that is not valid protocol, or the SCRAM exchange failed.
    #[error("protocol error from server {addr}: {message}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// TLS could not be set up: the server does not offer it where `server_tls.mode` requires
    /// it, or the handshake or certificate check failed.
    #[error("TLS with server {addr}: {message}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What went wrong.
        message: String,
    },
}
