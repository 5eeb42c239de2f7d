//! The start-up phase: TLS when the client asks and `tls:` is on, by `SSLRequest` or by
//! PostgreSQL 17's direct TLS (GSS encryption is refused), hand cancel requests over, and check
//! the `StartupMessage`.

use super::client::ClientConn;
use super::SessionError;
use bytes::BytesMut;
use pgrouter_protocol::backend;
use pgrouter_protocol::startup::{self, StartupError, StartupPacket};
use pgrouter_protocol::{ErrorResponse, SqlState};

/// What the client wants.
pub(super) enum Start {
    /// Cancel the query of the session holding this key.
    Cancel {
        process_id: i32,
        secret_key: i32,
        /// Forwarded by a peer pgrouter: handled here or nowhere.
        from_peer: bool,
    },
    /// Open a session.
    Session(Startup),
}

/// A checked `StartupMessage`.
#[derive(Debug)]
pub(crate) struct Startup {
    /// The role.
    pub(crate) user: String,
    /// The database (defaults to the user name, as in PostgreSQL).
    pub(crate) database: String,
    /// Everything to pass to the server's start-up packet: all parameters but `user` and the
    /// `_pq_.` protocol options, with `database` filled in.
    pub(crate) server_params: Vec<(String, String)>,
    /// pgrouter's own settings given at start-up (`pgrouter.min_lsn`, …), taken out of
    /// `server_params`.
    pub(crate) pgrouter_settings: Vec<super::ryw::Command>,
}

impl Startup {
    /// One start-up parameter.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.server_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The first byte of a TLS handshake record: no start-up packet begins with it (its length
/// would be over 369 MB).
const TLS_HANDSHAKE: u8 = 0x16;

pub(super) async fn read(
    client: &mut ClientConn,
    tls: Option<&crate::tls::Acceptor>,
) -> Result<Start, SessionError> {
    if client.peek_first_byte().await == Some(TLS_HANDSHAKE) {
        direct_tls(client, tls).await?;
    }
    // Each negotiation once per connection, as PostgreSQL (libpq may ask for GSS encryption,
    // then for TLS); a repeated request is not a protocol version this server speaks.
    let (mut asked_ssl, mut asked_gss) = (false, false);
    loop {
        match startup::read_startup(&mut client.buf) {
            Ok(Some(request @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest))) => {
                let (asked, code) = match request {
                    StartupPacket::SslRequest => (&mut asked_ssl, "1234.5679"),
                    _ => (&mut asked_gss, "1234.5680"),
                };
                if std::mem::replace(asked, true) {
                    return Err(ErrorResponse::fatal(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        format!("unsupported frontend protocol {code}: server supports 3.0 to 3.0"),
                    )
                    .into());
                }
                if !client.buf.is_empty() {
                    // Bytes sent before our answer could have been injected by a third party.
                    return Err(ErrorResponse::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                    )
                    .into());
                }
                if client.is_tls() {
                    return Err(ErrorResponse::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        "received an encryption request over an encrypted connection",
                    )
                    .into());
                }
                match (request, tls) {
                    (StartupPacket::SslRequest, Some(acceptor)) => {
                        client.write_all(b"S").await?;
                        client.start_tls(acceptor).await?;
                    }
                    _ => client.write_all(b"N").await?,
                }
            }
            Ok(Some(StartupPacket::CancelRequest {
                process_id,
                secret_key,
                from_peer,
            })) => {
                return Ok(Start::Cancel {
                    process_id,
                    secret_key,
                    from_peer,
                })
            }
            Ok(Some(StartupPacket::Startup(message))) => {
                return check(client, message).await.map(Start::Session)
            }
            Ok(None) => client.fill().await?,
            // PostgreSQL logs these and closes the connection without a word (COMMERROR): the
            // peer is not speaking the protocol, or is a client that gave up before its start-up
            // packet (node-postgres sends Terminate when `end()` comes first).
            Err(e @ (StartupError::InvalidLength | StartupError::InvalidCancel)) => {
                tracing::info!(error = %e, "closing a connection that sent no valid start-up packet");
                return Err(SessionError::ClientGone);
            }
            Err(e) => {
                let code = match e {
                    StartupError::UnsupportedVersion { .. } => SqlState::FEATURE_NOT_SUPPORTED,
                    _ => SqlState::PROTOCOL_VIOLATION,
                };
                return Err(ErrorResponse::fatal(code, e.to_string()).into());
            }
        }
    }
}

/// PostgreSQL 17's direct TLS (libpq's `sslnegotiation=direct`): the client starts with the
/// handshake, no `SSLRequest`. As PostgreSQL, it must agree on ALPN `postgresql`, so that a TLS
/// connection meant for another protocol is never taken for a PostgreSQL one.
async fn direct_tls(
    client: &mut ClientConn,
    tls: Option<&crate::tls::Acceptor>,
) -> Result<(), SessionError> {
    let Some(acceptor) = tls else {
        // No way to answer in a language the client speaks: close, as PostgreSQL without SSL.
        tracing::info!("closing a direct TLS connection: tls.mode is disable");
        return Err(SessionError::ClientGone);
    };
    client.start_tls(acceptor).await?;
    if client.alpn_protocol() != Some(b"postgresql") {
        return Err(ErrorResponse::fatal(
            SqlState::PROTOCOL_VIOLATION,
            "received direct SSL connection request without ALPN protocol negotiation extension",
        )
        .into());
    }
    Ok(())
}

async fn check(
    client: &mut ClientConn,
    message: startup::StartupMessage,
) -> Result<Startup, SessionError> {
    let user = match message.param("user") {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => {
            return Err(ErrorResponse::fatal(
                SqlState::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
            .into())
        }
    };
    let database = match message.param("database") {
        Some(d) if !d.is_empty() => d.to_owned(),
        _ => user.clone(),
    };
    let unsupported: Vec<&str> = message
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    // Like PostgreSQL: a newer 3.x minor or unknown protocol options are negotiated down, not refused.
    if message.minor > 0 || !unsupported.is_empty() {
        let mut out = BytesMut::new();
        backend::negotiate_protocol_version(&mut out, 0, &unsupported);
        client.write_all(&out).await?;
    }
    let mut server_params: Vec<(String, String)> = message
        .params
        .into_iter()
        .filter(|(k, _)| k != "user" && k != "database" && !k.starts_with("_pq_."))
        .collect();
    server_params.insert(0, ("database".to_owned(), database.clone()));
    // pgrouter's own settings: applied to the session, never sent to a server (nor splitting
    // the pools); a bad value refuses the login, as PostgreSQL refuses one of its own.
    let (settings, server_params) = super::ryw::startup_settings(server_params);
    let pgrouter_settings = settings
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SessionError::Fatal(e.into_fatal()))?;
    Ok(Startup {
        user,
        database,
        server_params,
        pgrouter_settings,
    })
}
