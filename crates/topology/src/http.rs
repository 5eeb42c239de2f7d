//! Just enough HTTP/1.0 to `GET` a JSON document from an HA manager's REST API: one request per
//! connection, a bounded response, no redirects; `https://` with the certificate checked against
//! a configured CA (chain and name), an optional client certificate, and basic authentication.

use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How requests reach the API: TLS settings and credentials, built once (files read at start
/// and on reload).
#[derive(Clone, Default)]
pub struct HttpClient {
    tls: Option<tokio_rustls::TlsConnector>,
    /// `Authorization` header value.
    authorization: Option<String>,
    /// The settings and files' bytes: two clients are equal when these are.
    fingerprint: Vec<u8>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("tls", &self.tls.is_some())
            .field("authorization", &self.authorization.is_some())
            .finish()
    }
}

impl PartialEq for HttpClient {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for HttpClient {}

impl HttpClient {
    /// From `topology.patroni`: a CA enables `https://` (verify-full), a certificate and key are
    /// presented to servers that ask, a user name (and password) is sent as basic
    /// authentication.
    pub fn new(config: &pgrouter_config::PatroniApiConfig) -> Result<Self, String> {
        let mut fingerprint = Vec::new();
        let tls = match &config.ca_file {
            Some(_) => {
                let tls = pgrouter_conn::client_config(
                    pgrouter_conn::TlsPolicy::VerifyFull,
                    pgrouter_conn::TlsFiles {
                        ca_file: config.ca_file.as_deref(),
                        cert_file: config.cert_file.as_deref(),
                        key_file: config.key_file.as_deref(),
                    },
                    b"http/1.1",
                    &mut fingerprint,
                )
                .map_err(|e| format!("topology.patroni: {e}"))?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(tls)))
            }
            None => None,
        };
        let authorization = config.username.as_ref().map(|user| {
            let password = config.password.as_ref().map_or("", |p| p.expose());
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
        });
        fingerprint.extend_from_slice(authorization.as_deref().unwrap_or_default().as_bytes());
        Ok(Self {
            tls,
            authorization,
            fingerprint,
        })
    }
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The URL is not `http[s]://host[:port][/path]`.
    #[error("unsupported URL {0:?} (expected http://host:port or https://host:port)")]
    Url(String),
    /// An `https://` URL without `topology.patroni.ca_file`, or a failed handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The response was not HTTP or was too large.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
}

/// Splits `http[s]://host:port/base` into whether it is https, the address to connect to and
/// the path prefix.
fn split_url(url: &str) -> Result<(bool, String, String), HttpError> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(HttpError::Url(url.to_owned())),
    };
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_owned()));
    }
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if https { 443 } else { 80 })
    };
    Ok((https, address, base.to_owned()))
}

/// `GET base_url + path`; returns the status code and the body.
pub(crate) async fn get(
    client: &HttpClient,
    base_url: &str,
    path: &str,
) -> Result<(u16, Vec<u8>), HttpError> {
    let (https, address, base) = split_url(base_url)?;
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let authorization = client
        .authorization
        .as_ref()
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {base}{path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n{authorization}Connection: close\r\n\r\n"
    );
    let tcp = TcpStream::connect(&address).await?;
    if !https {
        return exchange(tcp, &request).await;
    }
    let connector = client
        .tls
        .as_ref()
        .ok_or_else(|| HttpError::Tls("https needs topology.patroni.ca_file".into()))?;
    let name = pgrouter_conn::server_name(host)
        .ok_or_else(|| HttpError::Tls(format!("{host:?} is not a valid server name")))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    exchange(tls, &request).await
}

/// Sends the request and reads the whole, bounded response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<(u16, Vec<u8>), HttpError> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut response = Vec::with_capacity(4096);
    loop {
        if response.len() > MAX_RESPONSE {
            return Err(HttpError::Malformed("response too large"));
        }
        let read = (&mut stream)
            .take((MAX_RESPONSE + 1 - response.len()) as u64)
            .read_to_end(&mut response)
            .await;
        match read {
            Ok(0) => break,
            Ok(_) => {}
            // A server that closes without TLS's close_notify after a complete response (as
            // many HTTP/1.0 servers do) still gave its answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
                break
            }
            Err(e) => return Err(e.into()),
        }
    }
    parse_response(&response)
}

/// Status code and body of a complete HTTP/1.x response (not chunked: HTTP/1.0 was asked for).
fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&response[..head_end])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Err(HttpError::Malformed("no status line"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("no status code"))?;
    Ok((status, response[head_end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        #[rustfmt::skip]
        let cases = [
            ("http://127.0.0.1:8008", Some((false, "127.0.0.1:8008", ""))),
            ("http://127.0.0.1:8008/", Some((false, "127.0.0.1:8008", ""))),
            ("http://patroni/api/", Some((false, "patroni:80", "/api"))),
            ("https://127.0.0.1:8008", Some((true, "127.0.0.1:8008", ""))),
            ("https://patroni", Some((true, "patroni:443", ""))),
            ("ftp://patroni", None),
            ("http://", None),
        ];
        for (url, expected) in cases {
            let got = split_url(url).ok();
            assert_eq!(
                got.as_ref().map(|(h, a, b)| (*h, a.as_str(), b.as_str())),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn basic_authentication() {
        for (text, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("patroni:s3cret", "cGF0cm9uaTpzM2NyZXQ="),
        ] {
            assert_eq!(base64(text.as_bytes()), encoded, "{text}");
        }
    }

    #[test]
    fn responses() {
        let (status, body) =
            parse_response(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: x\r\n\r\n{}")
                .unwrap();
        assert_eq!((status, body.as_slice()), (503, &b"{}"[..]));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_response(&bytes);
        }
    }
}
