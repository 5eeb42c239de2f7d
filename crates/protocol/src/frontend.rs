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

    #[test]
    fn session_tags() {
        assert!(is_session_message(QUERY));
        assert!(!is_session_message(PASSWORD));
        assert!(!is_session_message(0));
    }
}
