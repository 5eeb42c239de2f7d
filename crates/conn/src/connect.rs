//! Connect, start up and authenticate to a server.

use crate::error::ConnError;
use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
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
    /// Its password (may be empty when the server trusts).
    pub password: &'a str,
    /// Start-up parameters besides `user`: `database`, `application_name`, `options`, GUCs.
    pub params: &'a [(String, String)],
    /// Limit for connect + login.
    pub timeout: Duration,
    /// Answer a request for the password in clear text (the connection has no TLS). Off: the
    /// login fails with [`ConnError::UnsupportedAuth`] and the password is not sent.
    pub allow_cleartext_password: bool,
}

/// A logged-in, idle server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket, positioned right after the first `ReadyForQuery`.
    pub stream: TcpStream,
    /// The server's address.
    pub addr: SocketAddr,
    /// `ParameterStatus` values reported during start-up, in order.
    pub parameters: Vec<(String, String)>,
    /// The server's `BackendKeyData` (process id, secret), for cancel requests.
    pub backend_key: Option<(i32, i32)>,
}

impl ServerConn {
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
    let mut stream = TcpStream::connect((target.host, target.port))
        .await
        .map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    let addr = stream.peer_addr().map_err(io_err)?;

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
            (Message::AuthenticationCleartextPassword, _) if !target.allow_cleartext_password => {
                return Err(ConnError::UnsupportedAuth {
                    addr: addr_text.to_owned(),
                    method: "a cleartext password over a connection without TLS (server_tls.allow_cleartext_password is off)".into(),
                });
            }
            (Message::AuthenticationCleartextPassword, _) => {
                frontend::password_message(target.password.as_bytes(), &mut out).map_err(io_err)?;
            }
            (Message::AuthenticationMd5Password(body), _) => {
                let hash = postgres_protocol::authentication::md5_hash(
                    target.user.as_bytes(),
                    target.password.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io_err)?;
            }
            (Message::AuthenticationSasl(body), _) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = false;
                while let Some(m) =
                    postgres_protocol_next(&mut mechanisms).map_err(|e| proto_err(e.to_string()))?
                {
                    offered |= m == SCRAM_SHA_256;
                }
                if !offered {
                    return Err(ConnError::UnsupportedAuth {
                        addr: addr_text.to_owned(),
                        method: "SASL without SCRAM-SHA-256".into(),
                    });
                }
                let client =
                    ScramSha256::new(target.password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut out)
                    .map_err(io_err)?;
                scram = Some(client);
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
