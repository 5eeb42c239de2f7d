//! `ErrorResponse` / `NoticeResponse` construction with the SQLSTATEs pgrouter sends itself.
//!
//! pgrouter answers in PostgreSQL's own words and codes wherever PostgreSQL has a matching
//! condition, so drivers' error handling keeps working.

use bytes::{BufMut, BytesMut};

/// A five-character SQLSTATE code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(pub &'static str);

impl SqlState {
    /// `08P01` protocol_violation.
    pub const PROTOCOL_VIOLATION: Self = Self("08P01");
    /// `08006` connection_failure.
    pub const CONNECTION_FAILURE: Self = Self("08006");
    /// `08001` sqlclient_unable_to_establish_sqlconnection.
    pub const UNABLE_TO_CONNECT: Self = Self("08001");
    /// `0A000` feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: Self = Self("0A000");
    /// `28000` invalid_authorization_specification.
    pub const INVALID_AUTHORIZATION: Self = Self("28000");
    /// `28P01` invalid_password.
    pub const INVALID_PASSWORD: Self = Self("28P01");
    /// `53300` too_many_connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self("53300");
    /// `57P01` admin_shutdown.
    pub const ADMIN_SHUTDOWN: Self = Self("57P01");
    /// `57P03` cannot_connect_now.
    pub const CANNOT_CONNECT_NOW: Self = Self("57P03");
    /// `57014` query_canceled.
    pub const QUERY_CANCELED: Self = Self("57014");
    /// `54000` program_limit_exceeded.
    pub const PROGRAM_LIMIT_EXCEEDED: Self = Self("54000");
    /// `out_of_memory`.
    pub const OUT_OF_MEMORY: Self = Self("53200");
    /// `25P03` idle_in_transaction_session_timeout.
    pub const IDLE_IN_TRANSACTION_TIMEOUT: Self = Self("25P03");
    /// `57P05` idle_session_timeout.
    pub const IDLE_SESSION_TIMEOUT: Self = Self("57P05");
    /// `57P02` crash_shutdown.
    pub const CRASH_SHUTDOWN: Self = Self("57P02");
    /// `25P04` transaction_timeout (PostgreSQL 17).
    pub const TRANSACTION_TIMEOUT: Self = Self("25P04");
    /// `42P05` duplicate_prepared_statement.
    pub const DUPLICATE_PREPARED_STATEMENT: Self = Self("42P05");
    /// `XX000` internal_error.
    pub const INTERNAL_ERROR: Self = Self("XX000");
    /// `syntax_error`.
    pub const SYNTAX_ERROR: Self = Self("42601");
    /// `undefined_object`.
    pub const UNDEFINED_OBJECT: Self = Self("42704");
    /// `config_file_error`.
    pub const CONFIG_FILE_ERROR: Self = Self("F0000");
    /// `22023` invalid_parameter_value.
    pub const INVALID_PARAMETER_VALUE: Self = Self("22023");

    /// The code's text.
    pub fn code(&self) -> &'static str {
        self.0
    }
}

/// Severity of an error or notice, as sent in the `S` and `V` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session continues.
    Error,
    /// The session is over; the connection closes after this message.
    Fatal,
    /// A notice; nothing failed.
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// An error pgrouter itself reports to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// How bad it is.
    pub severity: Severity,
    /// The SQLSTATE.
    pub code: SqlState,
    /// The primary message, in PostgreSQL's style (lower case, no trailing period).
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
}

impl ErrorResponse {
    /// An `ERROR`: the statement fails, the session goes on.
    pub fn error(code: SqlState, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A `FATAL` error: the connection is closed after it.
    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    /// The same error as `FATAL`: for an error pgrouter cannot answer as a failed statement
    /// (the session must end instead).
    pub fn into_fatal(mut self) -> Self {
        self.severity = Severity::Fatal;
        self
    }

    /// Adds a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `28P01 password authentication failed for user "…"`, the same for a wrong password and an
    /// unknown user, as PostgreSQL does.
    pub fn password_failed(user: &str) -> Self {
        Self::fatal(
            SqlState::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }

    /// Appends the wire form (`E` message, or `N` for a notice) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let tag = if self.severity == Severity::Notice {
            b'N'
        } else {
            b'E'
        };
        let start = buf.len();
        buf.put_u8(tag);
        buf.put_i32(0);
        let sev = self.severity.as_str();
        put_field(buf, b'S', sev);
        put_field(buf, b'V', sev);
        put_field(buf, b'C', self.code.0);
        put_field(buf, b'M', &self.message);
        if let Some(d) = &self.detail {
            put_field(buf, b'D', d);
        }
        if let Some(h) = &self.hint {
            put_field(buf, b'H', h);
        }
        buf.put_u8(0);
        let len = (buf.len() - start - 1) as i32;
        buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }
}

fn put_field(buf: &mut BytesMut, field: u8, value: &str) {
    buf.put_u8(field);
    // A NUL inside a value would end the field early; PostgreSQL never sends one either.
    buf.extend(value.bytes().filter(|b| *b != 0));
    buf.put_u8(0);
}

/// Fields of an `ErrorResponse` or `NoticeResponse` body, as pgrouter needs to inspect them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// Non-localised severity (`V`), or `S` when `V` is absent.
    pub severity: Option<&'a [u8]>,
    /// SQLSTATE (`C`).
    pub code: Option<&'a [u8]>,
    /// Primary message (`M`).
    pub message: Option<&'a [u8]>,
}

impl<'a> ErrorFields<'a> {
    /// Parses the body of an `E`/`N` message (after the 5-byte header). Malformed input yields
    /// whatever fields could be read.
    pub fn parse(body: &'a [u8]) -> Self {
        let mut out = Self::default();
        let mut rest = body;
        while let Some((&field, tail)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let Some(end) = memchr::memchr(0, tail) else {
                break;
            };
            let value = &tail[..end];
            match field {
                b'V' => out.severity = Some(value),
                b'S' if out.severity.is_none() => out.severity = Some(value),
                b'C' => out.code = Some(value),
                b'M' => out.message = Some(value),
                _ => {}
            }
            rest = &tail[end + 1..];
        }
        out
    }

    /// True for `FATAL` and `PANIC`, after which the server closes the connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity, Some(b"FATAL") | Some(b"PANIC"))
    }
}

/// Rewrites a FATAL `ErrorResponse` body (fields only, no header) as an ERROR, in place: both
/// severity fields (`S`, which may be localized and is then left alone, and `V`) say `ERROR`.
/// Returns whether anything changed. Malformed bodies are left as they are.
pub fn downgrade_fatal(body: &mut [u8]) -> bool {
    let mut changed = false;
    let mut pos = 0;
    while pos < body.len() && body[pos] != 0 {
        let kind = body[pos];
        let start = pos + 1;
        let Some(len) = body[start..].iter().position(|&b| b == 0) else {
            return changed;
        };
        let value = &mut body[start..start + len];
        if matches!(kind, b'S' | b'V') && value == b"FATAL" {
            value.copy_from_slice(b"ERROR");
            changed = true;
        }
        pos = start + len + 1;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_becomes_error_in_place() {
        let mut buf = BytesMut::new();
        ErrorResponse::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection").encode(&mut buf);
        let body = &mut buf[5..];
        assert!(downgrade_fatal(body));
        let fields = ErrorFields::parse(body);
        assert!(!fields.is_fatal());
        assert_eq!(fields.code, Some(&b"57P01"[..]));
        assert!(!downgrade_fatal(body), "already an ERROR");
    }

    proptest::proptest! {
        #[test]
        fn downgrade_never_panics(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let len = bytes.len();
            downgrade_fatal(&mut bytes);
            proptest::prop_assert_eq!(bytes.len(), len);
        }
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let mut buf = BytesMut::new();
        ErrorResponse::fatal(SqlState::PROTOCOL_VIOLATION, "bad\0 input")
            .with_hint("h")
            .encode(&mut buf);
        assert_eq!(buf[0], b'E');
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(len + 1, buf.len());
        let fields = ErrorFields::parse(&buf[5..]);
        assert_eq!(fields.code, Some(&b"08P01"[..]));
        assert!(fields.is_fatal());
        assert!(!buf[5..buf.len() - 1].windows(3).any(|w| w == b"\0 i"));
    }

    #[test]
    fn parse_tolerates_garbage() {
        for body in [&b""[..], b"S", b"SERROR", b"\0", b"CXX000\0Mtrunc"] {
            let _ = ErrorFields::parse(body);
        }
        assert_eq!(
            ErrorFields::parse(b"CXX000\0Mtrunc").code,
            Some(&b"XX000"[..])
        );
    }
}
