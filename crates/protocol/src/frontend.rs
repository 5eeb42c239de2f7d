//! Client (frontend) message tags after start-up, and the bodies pgrouter decodes.

/// `Bind`.
pub const BIND: u8 = b'B';
/// `Close`.
pub const CLOSE: u8 = b'C';
/// `CopyData`.
pub const COPY_DATA: u8 = b'd';
/// `CopyDone`.
pub const COPY_DONE: u8 = b'c';
/// `CopyFail`.
pub const COPY_FAIL: u8 = b'f';
/// `Describe`.
pub const DESCRIBE: u8 = b'D';
/// `Execute`.
pub const EXECUTE: u8 = b'E';
/// `Flush`.
pub const FLUSH: u8 = b'H';
/// `FunctionCall`.
pub const FUNCTION_CALL: u8 = b'F';
/// `Parse`.
pub const PARSE: u8 = b'P';
/// `Query`.
pub const QUERY: u8 = b'Q';
/// `Sync`.
pub const SYNC: u8 = b'S';
/// `Terminate`.
pub const TERMINATE: u8 = b'X';
/// `PasswordMessage`, `SASLInitialResponse` and `SASLResponse` (only during authentication).
pub const PASSWORD: u8 = b'p';

/// True for the message types a client may send once the session is established.
pub fn is_session_message(tag: u8) -> bool {
    matches!(
        tag,
        BIND | CLOSE
            | COPY_DATA
            | COPY_DONE
            | COPY_FAIL
            | DESCRIBE
            | EXECUTE
            | FLUSH
            | FUNCTION_CALL
            | PARSE
            | QUERY
            | SYNC
            | TERMINATE
    )
}

/// Reads a NUL-terminated string at the start of `body`, returning it and the rest.
pub fn read_cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, body)?;
    Some((&body[..end], &body[end + 1..]))
}

/// `Parse` body: statement name and query text.
pub fn parse_parse(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = read_cstr(body)?;
    let (query, _) = read_cstr(rest)?;
    Some((name, query))
}

/// `Bind` body: the statement name (after the portal name).
pub fn bind_statement(body: &[u8]) -> Option<&[u8]> {
    let (_portal, rest) = read_cstr(body)?;
    let (statement, _) = read_cstr(rest)?;
    Some(statement)
}

/// A parameter value of a `Bind`, as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundValue<'a> {
    /// Binary format (format code 1) rather than text (0).
    pub binary: bool,
    /// The bytes, or `None` for SQL NULL.
    pub value: Option<&'a [u8]>,
}

/// `Bind` body: the portal name, and the one format every result column is asked for in (`0`
/// text, `1` binary; no codes means text); `None` for the format when columns differ or a code
/// is unknown. `None`: malformed.
pub fn bind_portal_result_format(body: &[u8]) -> Option<(&[u8], Option<i16>)> {
    let (portal, rest) = read_cstr(body)?;
    let (_statement, rest) = read_cstr(rest)?;
    let (formats, rest) = read_count(rest)?;
    let mut rest = rest.get(formats.checked_mul(2)?..)?;
    let (values, after) = read_count(rest)?;
    rest = after;
    for _ in 0..values {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len > 0 {
            rest = rest.get(usize::try_from(len).ok()?..)?;
        }
    }
    let (results, rest) = read_count(rest)?;
    let codes = rest.get(..results.checked_mul(2)?)?;
    let mut format = Some(0);
    for (i, c) in codes.chunks(2).enumerate() {
        let code = i16::from_be_bytes([c[0], c[1]]);
        if !matches!(code, 0 | 1) || (i > 0 && format != Some(code)) {
            format = None;
            break;
        }
        format = Some(code);
    }
    Some((portal, format))
}

/// `Execute` body: the portal name and the row limit (0: all rows).
pub fn execute_target(body: &[u8]) -> Option<(&[u8], i32)> {
    let (portal, rest) = read_cstr(body)?;
    Some((portal, i32::from_be_bytes(rest.get(..4)?.try_into().ok()?)))
}

/// Splits off a big-endian `i16` count (negative counts are malformed).
fn read_count(body: &[u8]) -> Option<(usize, &[u8])> {
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    Some((usize::try_from(n).ok()?, &body[2..]))
}

/// `Bind` body: parameter `index` (0-based) with its format, or `None` when the message is
/// malformed or has no such parameter.
pub fn bind_parameter(body: &[u8], index: usize) -> Option<BoundValue<'_>> {
    let (_portal, rest) = read_cstr(body)?;
    let (_statement, rest) = read_cstr(rest)?;
    let (formats, rest) = read_count(rest)?;
    let codes = rest.get(..formats.checked_mul(2)?)?;
    let rest = &rest[codes.len()..];
    let format_of = |i: usize| match formats {
        0 => Some(0),
        1 => Some(i16::from_be_bytes([codes[0], codes[1]])),
        _ => codes
            .get(i * 2..i * 2 + 2)
            .map(|c| i16::from_be_bytes([c[0], c[1]])),
    };
    let (count, mut rest) = read_count(rest)?;
    if index >= count {
        return None;
    }
    for i in 0..=index {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        let value = match usize::try_from(len) {
            Ok(len) => {
                let v = rest.get(..len)?;
                rest = &rest[len..];
                Some(v)
            }
            Err(_) if len == -1 => None,
            Err(_) => return None,
        };
        if i == index {
            let binary = match format_of(i)? {
                0 => false,
                1 => true,
                _ => return None,
            };
            return Some(BoundValue { binary, value });
        }
    }
    None
}

/// `Parse` body: the type OID the client declared for parameter `index` (0-based); `Some(0)`
/// when it declared none (the server infers it).
pub fn parse_parameter_type(body: &[u8], index: usize) -> Option<u32> {
    let (_name, rest) = read_cstr(body)?;
    let (_query, rest) = read_cstr(rest)?;
    let (count, rest) = read_count(rest)?;
    if index >= count {
        return Some(0);
    }
    let at = index * 4;
    Some(u32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?))
}

/// The kind byte of a `Describe` or `Close` naming a prepared statement.
pub const TARGET_STATEMENT: u8 = b'S';
/// The kind byte of a `Describe` or `Close` naming a portal.
pub const TARGET_PORTAL: u8 = b'P';

/// `Describe` or `Close` body: the kind (`S` statement, `P` portal) and the name.
pub fn describe_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = read_cstr(rest)?;
    Some((kind, name))
}

/// `Query` body: the query text.
pub fn query_text(body: &[u8]) -> Option<&[u8]> {
    read_cstr(body).map(|(q, _)| q)
}

/// Writes a `Query` message.
pub fn write_query(buf: &mut bytes::BytesMut, sql: &str) {
    use bytes::BufMut;
    buf.put_u8(QUERY);
    buf.put_i32((sql.len() + 5) as i32);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
}

/// Writes a `Close` message for a prepared statement.
pub fn write_close_statement(buf: &mut bytes::BytesMut, name: &[u8]) {
    use bytes::BufMut;
    buf.put_u8(CLOSE);
    buf.put_i32((name.len() + 6) as i32);
    buf.put_u8(b'S');
    buf.put_slice(name);
    buf.put_u8(0);
}

/// Appends a `Sync`.
pub fn write_sync(buf: &mut bytes::BytesMut) {
    buf.extend_from_slice(&[SYNC, 0, 0, 0, 4]);
}

/// Body of a `SASLInitialResponse`: the mechanism and the initial response bytes.
pub fn parse_sasl_initial_response(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mechanism, rest) = read_cstr(body)?;
    let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return None;
    }
    Some((mechanism, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_initial_response_cases() {
        let good = b"SCRAM-SHA-256\0\0\0\0\x03abc";
        assert_eq!(
            parse_sasl_initial_response(good),
            Some((&b"SCRAM-SHA-256"[..], &b"abc"[..]))
        );
        for bad in [
            &b""[..],
            b"SCRAM",
            b"M\0\0\0",
            b"M\0\0\0\0\x05abc",
            b"M\0\xff\xff\xff\xffabc",
        ] {
            assert_eq!(parse_sasl_initial_response(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn extended_bodies() {
        assert_eq!(
            parse_parse(b"s1\0SELECT 1\0\0\0"),
            Some((&b"s1"[..], &b"SELECT 1"[..]))
        );
        assert_eq!(parse_parse(b"s1\0SELECT"), None);
        assert_eq!(bind_statement(b"\0s1\0\0\0"), Some(&b"s1"[..]));
        assert_eq!(bind_statement(b"p"), None);
        assert_eq!(describe_target(b"Ss1\0"), Some((b'S', &b"s1"[..])));
        assert_eq!(describe_target(b""), None);
        assert_eq!(query_text(b"SELECT 1\0"), Some(&b"SELECT 1"[..]));
        let mut b = bytes::BytesMut::new();
        write_query(&mut b, "SET a = 1");
        write_close_statement(&mut b, b"s1");
        assert_eq!(&b[..], &b"Q\0\0\0\x0eSET a = 1\0C\0\0\0\x08Ss1\0"[..]);
    }

    /// A `Bind` body: portal "", statement "s", the given format codes and values.
    fn bind_body(formats: &[i16], values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = b"\0s\0".to_vec();
        b.extend((formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend(f.to_be_bytes());
        }
        b.extend((values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend(*v);
                }
                None => b.extend((-1i32).to_be_bytes()),
            }
        }
        b.extend(0i16.to_be_bytes());
        b
    }

    #[test]
    fn bind_parameters() {
        let text = |v: &'static [u8]| BoundValue {
            binary: false,
            value: Some(v),
        };
        let two: [Option<&[u8]>; 2] = [Some(b"a"), Some(b"bc")];
        let cases: Vec<(Vec<u8>, usize, Option<BoundValue<'static>>)> = vec![
            (bind_body(&[], &two), 0, Some(text(b"a"))),
            (bind_body(&[], &two), 1, Some(text(b"bc"))),
            (bind_body(&[], &two), 2, None),
            (
                bind_body(&[1], &two),
                1,
                Some(BoundValue {
                    binary: true,
                    value: Some(b"bc"),
                }),
            ),
            (bind_body(&[1, 0], &two), 1, Some(text(b"bc"))),
            (bind_body(&[2], &two), 0, None),
            (
                bind_body(&[], &[None]),
                0,
                Some(BoundValue {
                    binary: false,
                    value: None,
                }),
            ),
            (b"\0s\0\0\0\0\x01\0\0\0\x09ab".to_vec(), 0, None),
            (b"\0s\0\xff\xff".to_vec(), 0, None),
            (b"\0s".to_vec(), 0, None),
        ];
        for (body, index, want) in cases {
            assert_eq!(bind_parameter(&body, index), want, "{body:?} #{index}");
        }
    }

    #[test]
    fn parse_parameter_types() {
        let body = b"s\0SELECT $1, $2\0\0\x01\0\0\0\x19";
        assert_eq!(parse_parameter_type(body, 0), Some(25));
        assert_eq!(parse_parameter_type(body, 1), Some(0));
        assert_eq!(parse_parameter_type(b"s\0q\0\0\x02\0\0", 1), None);
    }

    proptest::proptest! {
        #[test]
        fn bind_and_parse_readers_never_panic(body: Vec<u8>, index in 0usize..4) {
            let _ = bind_parameter(&body, index);
            let _ = parse_parameter_type(&body, index);
        }
    }

    #[test]
    fn session_tags() {
        assert!(is_session_message(QUERY));
        assert!(!is_session_message(PASSWORD));
        assert!(!is_session_message(0));
    }
}
