//! Just enough HTTP/1.x for the admin endpoints: one `GET` (or `HEAD`) per connection, answered
//! and closed. Request heads come from the network, so parsing is bounded and never panics.

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD` (others are refused before this is built).
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: the same answer without a body.
    Head,
}

/// Why a request head was refused, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Not an HTTP/1.x request line.
    #[error("malformed request")]
    Malformed,
    /// A method other than GET or HEAD.
    #[error("method not allowed")]
    Method,
    /// The head is longer than [`MAX_HEAD`].
    #[error("request head too large")]
    TooLarge,
}

impl BadRequest {
    /// The status line's code and reason.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            BadRequest::Malformed => (400, "Bad Request"),
            BadRequest::Method => (405, "Method Not Allowed"),
            BadRequest::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// Looks for a complete head in `buf`: `Ok(None)` while more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, BadRequest> {
    let Some(end) = find(buf, b"\r\n\r\n").or_else(|| find(buf, b"\n\n")) else {
        return if buf.len() >= MAX_HEAD {
            Err(BadRequest::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| BadRequest::Malformed)?;
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(BadRequest::Malformed);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(BadRequest::Method)
        }
        _ => return Err(BadRequest::Malformed),
    };
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let authorization = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    Ok(Some(Request {
        method,
        path,
        authorization,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A complete response: status line, headers, and the body unless `head_only`.
pub fn response(status: (u16, &str), content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    response_with(status, content_type, "", body, head_only)
}

/// [`response`] with extra header lines (each ending in `\r\n`).
pub fn response_with(
    status: (u16, &str),
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra_headers}Connection: close\r\n\r\n",
        status.0,
        status.1,
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_heads() {
        let get = |path: &str| {
            Ok(Some(Request {
                method: Method::Get,
                path: path.into(),
                authorization: None,
            }))
        };
        let cases: &[(&[u8], Result<Option<Request>, BadRequest>)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", get("/metrics")),
            (b"GET /ready?verbose=1 HTTP/1.0\r\n\r\n", get("/ready")),
            (b"GET /health HTTP/1.1\n\n", get("/health")),
            (
                b"HEAD /health HTTP/1.1\r\n\r\n",
                Ok(Some(Request {
                    method: Method::Head,
                    path: "/health".into(),
                    authorization: None,
                })),
            ),
            (
                b"GET /nodes HTTP/1.1\r\nHost: x\r\nauthorization:  Bearer abc \r\n\r\n",
                Ok(Some(Request {
                    method: Method::Get,
                    path: "/nodes".into(),
                    authorization: Some("Bearer abc".into()),
                })),
            ),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Ok(None)),
            (b"", Ok(None)),
            (b"POST /nodes HTTP/1.1\r\n\r\n", Err(BadRequest::Method)),
            (b"GET metrics HTTP/1.1\r\n\r\n", Err(BadRequest::Malformed)),
            (b"GET /metrics\r\n\r\n", Err(BadRequest::Malformed)),
            (b"GET /a b HTTP/1.1\r\n\r\n", Err(BadRequest::Malformed)),
            (b"\x16\x03\x01\x00\r\n\r\n", Err(BadRequest::Malformed)),
            (b"GET /metrics SPDY/3\r\n\r\n", Err(BadRequest::Malformed)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &parse_head(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD]), Err(BadRequest::TooLarge));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = response((200, "OK"), "text/plain", b"ok\n", false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
        let head = response((200, "OK"), "text/plain", b"ok\n", true);
        assert!(String::from_utf8(head).unwrap().ends_with("\r\n\r\n"));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn valid_get_lines_parse(path in "/[a-z0-9/_.-]{0,40}") {
            let head = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
            prop_assert_eq!(
                parse_head(head.as_bytes()),
                Ok(Some(Request { method: Method::Get, path, authorization: None }))
            );
        }
    }
}
