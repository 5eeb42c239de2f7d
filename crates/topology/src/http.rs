//! Just enough HTTP/1.0 to `GET` a JSON document from an HA manager's REST API on a trusted
//! network: one request per connection, a bounded response, no redirects, no TLS.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The URL is not `http://host[:port][/path]`.
    #[error("unsupported URL {0:?} (expected http://host:port)")]
    Url(String),
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The response was not HTTP or was too large.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
}

/// Splits `http://host:port/base` into the address to connect to and the path prefix.
fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_owned()))?;
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
        format!("{authority}:80")
    };
    Ok((address, base.to_owned()))
}

/// `GET base_url + path`; returns the status code and the body.
pub(crate) async fn get(base_url: &str, path: &str) -> Result<(u16, Vec<u8>), HttpError> {
    let (address, base) = split_url(base_url)?;
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let mut stream = TcpStream::connect(&address).await?;
    let request =
        format!("GET {base}{path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(4096);
    loop {
        if response.len() > MAX_RESPONSE {
            return Err(HttpError::Malformed("response too large"));
        }
        let n = (&mut stream)
            .take((MAX_RESPONSE + 1 - response.len()) as u64)
            .read_to_end(&mut response)
            .await?;
        if n == 0 {
            break;
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
            ("http://127.0.0.1:8008", Some(("127.0.0.1:8008", ""))),
            ("http://127.0.0.1:8008/", Some(("127.0.0.1:8008", ""))),
            ("http://patroni/api/", Some(("patroni:80", "/api"))),
            ("https://127.0.0.1:8008", None),
            ("http://", None),
        ];
        for (url, expected) in cases {
            let got = split_url(url).ok();
            assert_eq!(
                got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                expected,
                "{url}"
            );
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
