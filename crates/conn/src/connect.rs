//! Connect, start up and authenticate to a server.

use crate::error::ConnError;
use crate::stream::ServerStream;
use crate::tls::{ServerTls, TlsPolicy};
use bytes::{Bytes, BytesMut};
use pgrouter_protocol::auth::scram::ScramSecret;
use pgrouter_protocol::auth::scram_client::ScramKeyClient;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct ServerTarget<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Role to log in as.
    pub user: &'a str,
    /// How pgrouter proves it is that role.
    pub credential: Credential<'a>,
    /// Start-up parameters besides `user`: `database`, `application_name`, `options`, GUCs.
    pub params: &'a [(String, String)],
    /// Limit for connect + login.
    pub timeout: Duration,
    /// TLS: whether to ask for it, what to verify, and whether a request for the password in
    /// clear text is answered on a connection without TLS (if not, the login fails with
    /// [`ConnError::UnsupportedAuth`] and the password is not sent).
    pub tls: &'a ServerTls,
    /// TCP keepalive for the connection (`None`: the operating system's default).
    pub keepalive: Option<crate::Keepalive>,
}

/// What pgrouter knows of a role's password.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// The password itself (may be empty when the server trusts).
    Password(&'a str),
    /// Its md5 hash as PostgreSQL stores it (`md5…`): answers md5 requests only.
    Md5Hash(&'a str),
    /// Its SCRAM verifier and the `ClientKey` a client's own login revealed: answers SCRAM
    /// requests from servers holding the same verifier.
    ScramKeys {
        /// The verifier (salt, iterations, ServerKey).
        secret: &'a ScramSecret,
        /// `ClientKey`.
        client_key: [u8; 32],
    },
    /// A verifier, but no client has logged in yet to reveal its `ClientKey`.
    ScramVerifierOnly,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Password",
            Credential::Md5Hash(_) => "Md5Hash",
            Credential::ScramKeys { .. } => "ScramKeys",
            Credential::ScramVerifierOnly => "ScramVerifierOnly",
        })
    }
}

/// A logged-in, idle server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket, positioned right after the first `ReadyForQuery`.
    pub stream: ServerStream,
    /// The server's address.
    pub addr: SocketAddr,
    /// `ParameterStatus` values reported during start-up, in order.
    pub parameters: Vec<(String, String)>,
    /// The server's `BackendKeyData` (process id, secret), for cancel requests.
    pub backend_key: Option<(i32, i32)>,
    /// Cancels forwarded to it that the server may not have acted on yet: until they have,
    /// it runs nobody's next statement.
    pub cancels: crate::CancelsInFlight,
    /// A read buffer kept with the connection while it is pooled (empty, or a spare the last
    /// user left), so its next user does not allocate one per transaction.
    pub spare_buf: bytes::BytesMut,
}

impl ServerConn {
    /// The connection with its socket registered with the calling thread's runtime (see
    /// [`ServerStream::move_here`]).
    pub fn move_here(self) -> std::io::Result<Self> {
        Ok(Self {
            stream: self.stream.move_here()?,
            ..self
        })
    }

    /// Connects and logs in within `target.timeout`.
    pub async fn connect(target: &ServerTarget<'_>) -> Result<Self, ConnError> {
        let addr_text = format!("{}:{}", target.host, target.port);
        match tokio::time::timeout(target.timeout, connect_inner(target, &addr_text)).await {
            Ok(result) => result,
            Err(_) => Err(ConnError::Timeout { addr: addr_text }),
        }
    }
}

async fn connect_inner(
    target: &ServerTarget<'_>,
    addr_text: &str,
) -> Result<ServerConn, ConnError> {
    let io_err = |source| ConnError::Io {
        addr: addr_text.to_owned(),
        source,
    };
    let proto_err = |message: String| ConnError::Protocol {
        addr: addr_text.to_owned(),
        message,
    };
    let tcp = TcpStream::connect((target.host, target.port))
        .await
        .map_err(io_err)?;
    tcp.set_nodelay(true).map_err(io_err)?;
    if let Some(keepalive) = &target.keepalive {
        keepalive.apply(&tcp).map_err(io_err)?;
    }
    let addr = tcp.peer_addr().map_err(io_err)?;
    let mut stream = negotiate_tls(tcp, target, addr_text).await?;
    // `tls-server-end-point` of the server's certificate, for SCRAM-SHA-256-PLUS.
    let end_point = match &stream {
        ServerStream::Tls(tls) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| pgrouter_protocol::auth::scram::tls_server_end_point(leaf)),
        ServerStream::Plain(_) => None,
    };

    let mut out = BytesMut::with_capacity(256);
    let params = std::iter::once(("user", target.user)).chain(
        target
            .params
            .iter()
            .filter(|(k, _)| k != "user")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    frontend::startup_message(params, &mut out).map_err(io_err)?;
    stream.write_all(&out).await.map_err(io_err)?;

    let mut inbuf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    let mut key_scram: Option<ScramKeyClient<'_>> = None;
    let unsupported = |method: &str| ConnError::UnsupportedAuth {
        addr: addr_text.to_owned(),
        method: method.to_owned(),
    };
    let mut parameters = Vec::new();
    let mut backend_key = None;
    loop {
        let msg = loop {
            // Keep the raw bytes of an ErrorResponse so it can be relayed verbatim.
            let raw_len = raw_message_len(&inbuf);
            let snapshot = raw_len.map(|n| Bytes::copy_from_slice(&inbuf[..n]));
            match Message::parse(&mut inbuf).map_err(|e| proto_err(e.to_string()))? {
                Some(m) => break (m, snapshot),
                None => {
                    if stream.read_buf(&mut inbuf).await.map_err(io_err)? == 0 {
                        return Err(io_err(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        };
        out.clear();
        match msg {
            (Message::AuthenticationOk, _) => {}
            (Message::AuthenticationCleartextPassword, _)
                if !stream.is_tls() && !target.tls.allow_cleartext_password =>
            {
                return Err(ConnError::UnsupportedAuth {
                    addr: addr_text.to_owned(),
                    method: "a cleartext password over a connection without TLS (server_tls.allow_cleartext_password is off)".into(),
                });
            }
            (Message::AuthenticationCleartextPassword, _) => {
                let Credential::Password(password) = target.credential else {
                    return Err(unsupported(
                        "a cleartext password, and only a hash or verifier of it is configured",
                    ));
                };
                frontend::password_message(password.as_bytes(), &mut out).map_err(io_err)?;
            }
            (Message::AuthenticationMd5Password(body), _) => {
                let hash = match target.credential {
                    Credential::Password(password) => postgres_protocol::authentication::md5_hash(
                        target.user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    ),
                    Credential::Md5Hash(stored) => {
                        pgrouter_protocol::auth::md5::response_from_stored_hash(stored, body.salt())
                    }
                    Credential::ScramKeys { .. } | Credential::ScramVerifierOnly => {
                        return Err(unsupported(
                            "md5, and only a SCRAM verifier of this user's password is configured",
                        ))
                    }
                };
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io_err)?;
            }
            (Message::AuthenticationSasl(body), _) => {
                let mut mechanisms = body.mechanisms();
                let (mut offered, mut offered_plus) = (false, false);
                while let Some(m) =
                    postgres_protocol_next(&mut mechanisms).map_err(|e| proto_err(e.to_string()))?
                {
                    offered |= m == SCRAM_SHA_256;
                    offered_plus |= m == SCRAM_SHA_256_PLUS;
                }
                // Bind the login to this TLS connection when the server offers it, as libpq's
                // default channel_binding=prefer does.
                let (mechanism, binding) = match &end_point {
                    Some(hash) if offered_plus => (
                        SCRAM_SHA_256_PLUS,
                        ChannelBinding::tls_server_end_point(hash.clone()),
                    ),
                    Some(_) if offered => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                    _ if offered => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                    _ => {
                        return Err(ConnError::UnsupportedAuth {
                            addr: addr_text.to_owned(),
                            method: "SASL without SCRAM-SHA-256".into(),
                        })
                    }
                };
                match target.credential {
                    Credential::Password(password) => {
                        let client = ScramSha256::new(password.as_bytes(), binding);
                        frontend::sasl_initial_response(mechanism, client.message(), &mut out)
                            .map_err(io_err)?;
                        scram = Some(client);
                    }
                    Credential::ScramKeys { secret, client_key } => {
                        let plus = (mechanism == SCRAM_SHA_256_PLUS)
                            .then(|| end_point.clone())
                            .flatten();
                        let client =
                            ScramKeyClient::new(secret, client_key, plus, end_point.is_some());
                        frontend::sasl_initial_response(
                            mechanism,
                            &client.client_first(),
                            &mut out,
                        )
                        .map_err(io_err)?;
                        key_scram = Some(client);
                    }
                    Credential::ScramVerifierOnly => {
                        return Err(unsupported(
                            "SCRAM, and this user is configured by its verifier: pgrouter logs in with the key of a client's own SCRAM login, and none has logged in yet",
                        ))
                    }
                    Credential::Md5Hash(_) => {
                        return Err(unsupported(
                            "SCRAM, and only an md5 hash of this user's password is configured",
                        ))
                    }
                }
            }
            (Message::AuthenticationSaslContinue(body), _) if key_scram.is_some() => {
                let message = key_scram
                    .as_mut()
                    .map(|client| client.server_first(body.data()))
                    .transpose()
                    .map_err(|e| proto_err(format!("SCRAM: {e}")))?
                    .unwrap_or_default();
                frontend::sasl_response(&message, &mut out).map_err(io_err)?;
            }
            (Message::AuthenticationSaslFinal(body), _) if key_scram.is_some() => {
                if let Some(mut client) = key_scram.take() {
                    client
                        .server_final(body.data())
                        .map_err(|e| proto_err(format!("SCRAM server signature: {e}")))?;
                }
            }
            (Message::AuthenticationSaslContinue(body), _) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| proto_err("unexpected SASLContinue".into()))?;
                client
                    .update(body.data())
                    .map_err(|e| proto_err(format!("SCRAM: {e}")))?;
                frontend::sasl_response(client.message(), &mut out).map_err(io_err)?;
            }
            (Message::AuthenticationSaslFinal(body), _) => {
                let mut client = scram
                    .take()
                    .ok_or_else(|| proto_err("unexpected SASLFinal".into()))?;
                client
                    .finish(body.data())
                    .map_err(|e| proto_err(format!("SCRAM server signature: {e}")))?;
            }
            (Message::ParameterStatus(body), _) => {
                let name = body.name().map_err(|e| proto_err(e.to_string()))?;
                let value = body.value().map_err(|e| proto_err(e.to_string()))?;
                parameters.push((name.to_owned(), value.to_owned()));
            }
            (Message::BackendKeyData(body), _) => {
                backend_key = Some((body.process_id(), body.secret_key()));
            }
            (Message::ReadyForQuery(_), _) => {
                return Ok(ServerConn {
                    stream,
                    addr,
                    parameters,
                    backend_key,
                    cancels: crate::CancelsInFlight::default(),
                    spare_buf: bytes::BytesMut::new(),
                });
            }
            (Message::ErrorResponse(body), raw) => {
                let mut message = String::new();
                let mut code = String::new();
                let mut fields = body.fields();
                while let Ok(Some(f)) = fallible_next(&mut fields) {
                    match f.type_() {
                        b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                        b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                        _ => {}
                    }
                }
                return Err(ConnError::Refused {
                    addr: addr_text.to_owned(),
                    message,
                    code,
                    raw: raw.unwrap_or_default(),
                });
            }
            (Message::NoticeResponse(_), _) => {}
            (Message::AuthenticationGss, _)
            | (Message::AuthenticationSspi, _)
            | (Message::AuthenticationKerberosV5, _)
            | (Message::AuthenticationScmCredential, _) => {
                return Err(ConnError::UnsupportedAuth {
                    addr: addr_text.to_owned(),
                    method: "GSS/SSPI/Kerberos".into(),
                })
            }
            _ => return Err(proto_err("unexpected message during start-up".into())),
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(io_err)?;
        }
    }
}

/// `SSLRequest` and the handshake, as `target.tls` asks. Reads exactly the one answer byte
/// before the handshake, so nothing the server sent in plain text is taken as TLS data
/// (CVE-2021-23222).
async fn negotiate_tls(
    mut tcp: TcpStream,
    target: &ServerTarget<'_>,
    addr_text: &str,
) -> Result<ServerStream, ConnError> {
    let policy = target.tls.policy();
    let tls_err = |message: String| ConnError::Tls {
        addr: addr_text.to_owned(),
        message,
    };
    if policy == TlsPolicy::Disable {
        return Ok(ServerStream::Plain(tcp));
    }
    let Some(connector) = target.tls.connector() else {
        return Err(tls_err(
            "server_tls could not be set up (see the log at start)".into(),
        ));
    };
    let io_err = |source| ConnError::Io {
        addr: addr_text.to_owned(),
        source,
    };
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_err)?;
    match tcp.read_u8().await.map_err(io_err)? {
        b'S' => {}
        b'N' if policy == TlsPolicy::Prefer => return Ok(ServerStream::Plain(tcp)),
        b'N' => {
            return Err(tls_err(format!(
                "the server does not support TLS, and server_tls.mode is {}",
                match policy {
                    TlsPolicy::Require => "require",
                    TlsPolicy::VerifyCa => "verify-ca",
                    _ => "verify-full",
                }
            )))
        }
        other => {
            return Err(tls_err(format!(
                "unexpected answer {:?} to SSLRequest",
                char::from(other)
            )))
        }
    }
    let name = crate::tls::server_name(target.host)
        .ok_or_else(|| tls_err(format!("{:?} is not a valid server name", target.host)))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(ServerStream::Tls(Box::new(tls)))
}

/// Length of the complete message at the front of `buf`, if one is there.
fn raw_message_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 5 || buf[0] != b'E' {
        return None;
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let total = usize::try_from(len).ok()? + 1;
    (buf.len() >= total).then_some(total)
}

fn postgres_protocol_next<'a>(
    it: &mut postgres_protocol::message::backend::SaslMechanisms<'a>,
) -> std::io::Result<Option<&'a str>> {
    use fallible_iterator::FallibleIterator;
    it.next()
}

fn fallible_next<'a>(
    it: &mut postgres_protocol::message::backend::ErrorFields<'a>,
) -> std::io::Result<Option<postgres_protocol::message::backend::ErrorField<'a>>> {
    use fallible_iterator::FallibleIterator;
    it.next()
}
