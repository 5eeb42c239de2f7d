//! Messages pgrouter itself sends to clients (as a server would), and backend message tags.
//!
//! All writers append to a caller-owned buffer so a reply can be assembled and written with one
//! system call.

use bytes::{BufMut, BytesMut};

/// `AuthenticationXXX`.
pub const AUTHENTICATION: u8 = b'R';
/// `BackendKeyData`.
pub const BACKEND_KEY_DATA: u8 = b'K';
/// `ParameterStatus`.
pub const PARAMETER_STATUS: u8 = b'S';
/// `ReadyForQuery`.
pub const READY_FOR_QUERY: u8 = b'Z';
/// `ErrorResponse`.
pub const ERROR_RESPONSE: u8 = b'E';
/// `NoticeResponse`.
pub const NOTICE_RESPONSE: u8 = b'N';
/// `NotificationResponse`.
pub const NOTIFICATION_RESPONSE: u8 = b'A';
/// `CopyInResponse`.
pub const COPY_IN_RESPONSE: u8 = b'G';
/// `CopyOutResponse`.
pub const COPY_OUT_RESPONSE: u8 = b'H';
/// `CopyBothResponse`.
pub const COPY_BOTH_RESPONSE: u8 = b'W';
/// `NegotiateProtocolVersion`.
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
/// `ParseComplete`.
pub const PARSE_COMPLETE: u8 = b'1';
/// `BindComplete`.
pub const BIND_COMPLETE: u8 = b'2';
/// `CloseComplete`.
pub const CLOSE_COMPLETE: u8 = b'3';
/// `ParameterDescription`.
pub const PARAMETER_DESCRIPTION: u8 = b't';
/// `RowDescription`.
pub const ROW_DESCRIPTION: u8 = b'T';
/// `NoData`.
pub const NO_DATA: u8 = b'n';
/// `DataRow`.
pub const DATA_ROW: u8 = b'D';

/// Decodes a `DataRow` body as text columns (`None` for NULL). A malformed body yields the
/// columns read before the fault.
pub fn parse_data_row_text(body: &[u8]) -> Vec<Option<String>> {
    let mut cols = Vec::new();
    let Some(count) = body.get(..2) else {
        return cols;
    };
    let count = u16::from_be_bytes([count[0], count[1]]);
    let mut rest = &body[2..];
    for _ in 0..count {
        let Some(len) = rest.get(..4) else { break };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        rest = &rest[4..];
        let Ok(len) = usize::try_from(len) else {
            cols.push(None);
            continue;
        };
        let Some(value) = rest.get(..len) else {
            break;
        };
        cols.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len..];
    }
    cols
}

/// Transaction status carried by `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    /// Decodes the status byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(Self::Idle),
            b'T' => Some(Self::InTransaction),
            b'E' => Some(Self::Failed),
            _ => None,
        }
    }

    /// The status byte.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

fn with_len(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// `AuthenticationOk`.
pub fn authentication_ok(buf: &mut BytesMut) {
    with_len(buf, AUTHENTICATION, |b| b.put_i32(0));
}

/// `AuthenticationMD5Password` with its salt.
pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    with_len(buf, AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// `AuthenticationSASL` listing the mechanisms offered.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    with_len(buf, AUTHENTICATION, |b| {
        b.put_i32(10);
        for m in mechanisms {
            b.put_slice(m.as_bytes());
            b.put_u8(0);
        }
        b.put_u8(0);
    });
}

/// `AuthenticationSASLContinue`.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    with_len(buf, AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// `AuthenticationSASLFinal`.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    with_len(buf, AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// `ParameterStatus`.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    with_len(buf, PARAMETER_STATUS, |b| {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(value.as_bytes());
        b.put_u8(0);
    });
}

/// `BackendKeyData`.
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    with_len(buf, BACKEND_KEY_DATA, |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// `ReadyForQuery`.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    with_len(buf, READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}

/// `ParseComplete`.
pub fn parse_complete(buf: &mut BytesMut) {
    buf.extend_from_slice(&[b'1', 0, 0, 0, 4]);
}

/// `BindComplete`.
pub fn bind_complete(buf: &mut BytesMut) {
    buf.extend_from_slice(&[b'2', 0, 0, 0, 4]);
}

/// `CloseComplete`.
pub fn close_complete(buf: &mut BytesMut) {
    buf.extend_from_slice(&[b'3', 0, 0, 0, 4]);
}

/// `ParameterDescription` of a statement that takes no parameters.
pub fn no_parameters(buf: &mut BytesMut) {
    buf.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
}

/// `CommandComplete` with its tag (e.g. `BEGIN`).
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    with_len(buf, b'C', |b| {
        b.put_slice(tag.as_bytes());
        b.put_u8(0);
    });
}

/// `EmptyQueryResponse`.
pub fn empty_query_response(buf: &mut BytesMut) {
    buf.extend_from_slice(&[b'I', 0, 0, 0, 4]);
}

/// `RowDescription` for columns of type `text` in text format.
pub fn row_description_text(buf: &mut BytesMut, columns: &[&str]) {
    row_description_text_as(buf, columns, 0);
}

/// `RowDescription` for columns of type `text` sent in `format` (`0` text, `1` binary: for
/// `text` both are the same bytes).
pub fn row_description_text_as(buf: &mut BytesMut, columns: &[&str], format: i16) {
    /// `pg_type.oid` of `text`.
    const TEXT_OID: i32 = 25;
    with_len(buf, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for name in columns {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_i32(0); // no table
            b.put_i16(0); // no column number
            b.put_i32(TEXT_OID);
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_i16(format);
        }
    });
}

/// `DataRow` of text values (`None` is SQL NULL).
pub fn data_row_text(buf: &mut BytesMut, values: &[Option<&str>]) {
    with_len(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// `NegotiateProtocolVersion`: the newest minor version supported and the options not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: i32, unrecognized: &[&str]) {
    with_len(buf, NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(newest_minor);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            b.put_slice(o.as_bytes());
            b.put_u8(0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn data_rows_as_text() {
        let row = b"\0\x03\0\0\0\x02ab\xff\xff\xff\xff\0\0\0\0";
        assert_eq!(
            parse_data_row_text(row),
            vec![Some("ab".into()), None, Some(String::new())]
        );
        assert_eq!(
            parse_data_row_text(b"\0\x02\0\0\0\x09ab"),
            Vec::<Option<String>>::new()
        );
        assert_eq!(parse_data_row_text(b"\0"), Vec::<Option<String>>::new());
    }

    proptest::proptest! {
        #[test]
        fn data_row_reader_never_panics(body: Vec<u8>) {
            let _ = parse_data_row_text(&body);
        }
    }

    /// Everything we write must parse with an independent implementation.
    #[test]
    fn written_messages_parse_with_postgres_protocol() {
        let mut buf = BytesMut::new();
        authentication_ok(&mut buf);
        authentication_md5(&mut buf, [1, 2, 3, 4]);
        authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
        authentication_sasl_continue(&mut buf, b"r=abc");
        authentication_sasl_final(&mut buf, b"v=xyz");
        parameter_status(&mut buf, "server_version", "15.0");
        backend_key_data(&mut buf, 42, -7);
        ready_for_query(&mut buf, TransactionStatus::InTransaction);
        let mut kinds = Vec::new();
        while let Some(m) = Message::parse(&mut buf).unwrap() {
            kinds.push(match m {
                Message::AuthenticationOk => "ok",
                Message::AuthenticationMd5Password(b) => {
                    assert_eq!(b.salt(), [1, 2, 3, 4]);
                    "md5"
                }
                Message::AuthenticationSasl(_) => "sasl",
                Message::AuthenticationSaslContinue(b) => {
                    assert_eq!(b.data(), b"r=abc");
                    "cont"
                }
                Message::AuthenticationSaslFinal(_) => "final",
                Message::ParameterStatus(p) => {
                    assert_eq!(p.name().unwrap(), "server_version");
                    "ps"
                }
                Message::BackendKeyData(k) => {
                    assert_eq!((k.process_id(), k.secret_key()), (42, -7));
                    "key"
                }
                Message::ReadyForQuery(r) => {
                    assert_eq!(r.status(), b'T');
                    "rfq"
                }
                _ => "other",
            });
        }
        assert_eq!(
            kinds,
            ["ok", "md5", "sasl", "cont", "final", "ps", "key", "rfq"]
        );
        assert!(!buf.has_remaining());
    }
}
