//! pgrouter authenticates the client itself, per configured user, before any server connection is
//! used. Unknown users go through the same exchange as known ones and fail with the same error.

use super::client::ClientConn;
use super::startup::Startup;
use super::SessionError;
use crate::context::{ProxyContext, UserEntry};
use bytes::BytesMut;
use pgrouter_config::AuthMethod;
use pgrouter_protocol::auth::md5;
use pgrouter_protocol::auth::scram::{self, ScramError, ScramServer};
use pgrouter_protocol::{backend, frontend, ErrorResponse, SqlState};
use std::sync::Arc;

/// PostgreSQL's own bound for authentication messages is small; be generous but bounded.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// The access rules' say on this login (`access:`, like pg_hba.conf): the method they require
/// (`None`: no rules, the user's own `auth`), or PostgreSQL's own refusal.
pub(super) fn check_access(
    ctx: &ProxyContext,
    client: &ClientConn,
    startup: &Startup,
) -> Result<Option<AuthMethod>, SessionError> {
    use pgrouter_config::access::{decide, Login, Verdict};
    let live = ctx.live();
    let local = client.entry.local;
    let tls = client.is_tls();
    let login = Login {
        address: client.entry.addr.ip(),
        local,
        user: &startup.user,
        database: &startup.database,
        tls,
    };
    let encryption = if tls {
        "SSL encryption"
    } else {
        "no encryption"
    };
    let refused = |what: &str| {
        ErrorResponse::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!(
                "{what} for host \"{}\", user \"{}\", database \"{}\", {encryption}",
                client.entry.address(),
                startup.user,
                startup.database
            ),
        )
    };
    // As PostgreSQL, the Unix-domain socket has no TLS; it is only reachable on this machine,
    // behind its directory's permissions, so `require` is for TCP clients.
    if live.config.tls.mode == pgrouter_config::TlsMode::Require && !tls && !local {
        return Err(refused("no pg_hba.conf entry")
            .with_hint(
                "pgrouter's tls.mode is require: connect with TLS (sslmode=require or stronger).",
            )
            .into());
    }
    match decide(&live.config.access, &login) {
        None => Ok(None),
        Some(Verdict::Method(method)) => Ok(Some(method)),
        Some(Verdict::Rejected) => Err(refused("pg_hba.conf rejects connection").into()),
        Some(Verdict::NoEntry) => Err(refused("no pg_hba.conf entry").into()),
    }
}

/// Authenticates the client and sends `AuthenticationOk`. Returns the user's entry. `required`:
/// the method an access rule requires instead of the user's own `auth`.
pub(super) async fn authenticate(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    startup: &Startup,
    required: Option<AuthMethod>,
) -> Result<Arc<UserEntry>, SessionError> {
    let user = match ctx.user(&startup.user) {
        Some(user) => Some(user),
        None => looked_up(ctx, &startup.user).await,
    };
    let method = required.unwrap_or(user.as_ref().map_or(AuthMethod::ScramSha256, |u| u.auth));
    let mut out = BytesMut::with_capacity(256);
    match (method, &user) {
        (AuthMethod::Trust, _) => {}
        // The certificate chains to tls.ca_file (rustls checked it in the handshake); its
        // common name must be the user, as PostgreSQL's `cert` without a user-name map.
        (AuthMethod::Cert, _) => match &client.certificate_name {
            Some(name) if *name == startup.user => {}
            Some(_) => {
                tracing::info!("certificate authentication failed");
                return Err(ErrorResponse::fatal(
                    SqlState::INVALID_AUTHORIZATION,
                    format!(
                        "certificate authentication failed for user \"{}\"",
                        startup.user
                    ),
                )
                .into());
            }
            None => {
                return Err(ErrorResponse::fatal(
                    SqlState::INVALID_AUTHORIZATION,
                    "connection requires a valid client certificate",
                )
                .into())
            }
        },
        (AuthMethod::Md5, _) => {
            let salt: [u8; 4] = rand::random();
            backend::authentication_md5(&mut out, salt);
            client.write_all(&out).await?;
            let body = read_password_message(client).await?;
            let ok = user.as_ref().is_some_and(|u| match u.stored {
                pgrouter_config::StoredForm::Plain => {
                    md5::verify(&body, &u.name, &u.password, salt)
                }
                pgrouter_config::StoredForm::Md5Hash => {
                    md5::verify_stored_hash(&body, &u.password, salt)
                }
                // Refused by the configuration check: a verifier cannot check md5.
                pgrouter_config::StoredForm::ScramVerifier => false,
            });
            if !ok {
                return Err(failed(&startup.user));
            }
        }
        (AuthMethod::ScramSha256, _) => {
            let mock;
            let secret = match &user {
                Some(u) => &u.scram,
                None => {
                    mock = ctx.mock_scram(&startup.user);
                    &mock
                }
            };
            let client_key =
                scram_exchange(client, secret, &mut out)
                    .await
                    .map_err(|e| match e {
                        ScramOutcome::Session(e) => e,
                        ScramOutcome::Scram(ScramError::InvalidProof) => failed(&startup.user),
                        ScramOutcome::Scram(e) => {
                            ErrorResponse::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()).into()
                        }
                    })?;
            if let (Some(u), Some(key)) = (&user, client_key) {
                if u.stored == pgrouter_config::StoredForm::ScramVerifier
                    && u.scram.matches_client_key(&key)
                {
                    // The first login of a user configured by its verifier gives pgrouter the
                    // key it logs in to the servers with.
                    let _ = u.client_key.set(key);
                }
            }
            if user.is_none() {
                return Err(failed(&startup.user));
            }
        }
    }
    let Some(user) = user else {
        return Err(failed(&startup.user));
    };
    out.clear();
    backend::authentication_ok(&mut out);
    client.write_all(&out).await?;
    Ok(user)
}

/// A user not listed under `users`, from `auth_query`. Every failure is `None`: the login then
/// fails like a wrong password, after the same exchange, so a client cannot tell why.
async fn looked_up(ctx: &ProxyContext, name: &str) -> Option<Arc<UserEntry>> {
    use crate::auth_query::Found;
    ctx.live().config.auth_query.as_ref()?;
    match ctx.auth_query.lookup(ctx, name).await {
        Ok(Found::User(user)) => Some(user),
        Ok(Found::Unknown) => None,
        Ok(Found::Expired) => {
            tracing::info!("the user's password has expired (VALID UNTIL)");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "auth_query look-up failed");
            None
        }
    }
}

fn failed(user: &str) -> SessionError {
    tracing::info!("password authentication failed");
    ErrorResponse::password_failed(user).into()
}

enum ScramOutcome {
    Session(SessionError),
    Scram(ScramError),
}

impl From<SessionError> for ScramOutcome {
    fn from(e: SessionError) -> Self {
        Self::Session(e)
    }
}

async fn scram_exchange(
    client: &mut ClientConn,
    secret: &scram::ScramSecret,
    out: &mut BytesMut,
) -> Result<Option<[u8; 32]>, ScramOutcome> {
    out.clear();
    // Over TLS, SCRAM-SHA-256-PLUS first, as PostgreSQL offers them.
    let binding = client.tls_end_point.clone();
    let offered: &[&str] = if binding.is_some() {
        &[scram::MECHANISM_PLUS, scram::MECHANISM]
    } else {
        &[scram::MECHANISM]
    };
    backend::authentication_sasl(out, offered);
    client.write_all(out).await?;

    let body = read_password_message(client).await?;
    let Some((mechanism, initial)) = frontend::parse_sasl_initial_response(&body) else {
        return Err(ScramOutcome::Scram(ScramError::Malformed));
    };
    if !offered.iter().any(|m| m.as_bytes() == mechanism) {
        return Err(ScramOutcome::Session(
            ErrorResponse::fatal(
                SqlState::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            )
            .into(),
        ));
    }
    let plus = mechanism == scram::MECHANISM_PLUS.as_bytes();
    let mut server = ScramServer::new(secret);
    if let Some(data) = binding {
        server = server.with_channel_binding(data, plus);
    }
    let server_first = server.client_first(initial).map_err(ScramOutcome::Scram)?;
    out.clear();
    backend::authentication_sasl_continue(out, &server_first);
    client.write_all(out).await?;

    let body = read_password_message(client).await?;
    let server_final = server.client_final(&body).map_err(ScramOutcome::Scram)?;
    out.clear();
    backend::authentication_sasl_final(out, &server_final);
    client.write_all(out).await?;
    Ok(server.client_key())
}

/// Reads the client's next message, which must be a password/SASL response.
async fn read_password_message(client: &mut ClientConn) -> Result<BytesMut, SessionError> {
    let (tag, body) = client.read_message(MAX_AUTH_MESSAGE).await?;
    if tag != frontend::PASSWORD {
        return Err(ErrorResponse::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("expected password response, got message type {tag}"),
        )
        .into());
    }
    Ok(body)
}
