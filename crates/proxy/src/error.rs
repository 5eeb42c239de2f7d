//! Why a client's session (or console session) ends early. Shared by the session and the admin
//! console, which both speak to a client through [`crate::client::ClientConn`].

use pgrouter_protocol::ErrorResponse;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client closed its connection or its socket failed: nobody to tell.
    #[error("client disconnected")]
    ClientGone,
    /// pgrouter ends the session with this error, sent to the client first.
    #[error("{}", .0.message)]
    Fatal(ErrorResponse),
    /// The server refused the login; its own `ErrorResponse` (kept whole) is relayed, then the
    /// connection closes.
    #[error("server refused the login")]
    ServerRefused(bytes::Bytes),
    /// The server's connection ended; the client was told.
    #[error("server connection lost: {0}")]
    ServerLost(String),
    /// The request cannot be served now (no primary, no replica): it is answered with this error
    /// and the session goes on.
    #[error("{}", .0.message)]
    Unavailable(ErrorResponse),
}

impl From<ErrorResponse> for SessionError {
    fn from(e: ErrorResponse) -> Self {
        SessionError::Fatal(e)
    }
}
