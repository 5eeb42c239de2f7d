//! Start-up phase packets: untagged, `length: i32, code: i32, body`.
//!
//! A connection begins with an optional `SSLRequest`/`GSSENCRequest` (answered with one byte), then
//! either a `StartupMessage` or a `CancelRequest`.

use bytes::{Buf, BytesMut};

/// Protocol version 3.0 as sent in a `StartupMessage`.
pub const PROTOCOL_3_0: i32 = 196_608;
/// `CancelRequest` code.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// pgrouter's own code for a `CancelRequest` one pgrouter instance forwards to another (its
/// peers): the same body, handled by the receiver for its own sessions only, never forwarded
/// again (no loops between peers). Not a code PostgreSQL uses (`1234.5700`).
pub const PEER_CANCEL_REQUEST_CODE: i32 = 80_877_124;
/// `SSLRequest` code.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// PostgreSQL's limit for a start-up packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// A start-up phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running on the session identified by this key.
    CancelRequest {
        /// The `BackendKeyData` process id the client was given.
        process_id: i32,
        /// The `BackendKeyData` secret the client was given.
        secret_key: i32,
        /// Forwarded by a peer pgrouter ([`PEER_CANCEL_REQUEST_CODE`]), not sent by a client.
        from_peer: bool,
    },
    /// A `StartupMessage`.
    Startup(StartupMessage),
}

/// The body of a `StartupMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Major protocol version (3 for every supported client).
    pub major: u16,
    /// Minor protocol version.
    pub minor: u16,
    /// Every parameter in the order sent: `user`, `database`, `application_name`, `options`, GUCs
    /// and `_pq_.` protocol options.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of one parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a start-up packet was rejected. The `Display` text is PostgreSQL's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Length outside `8..=MAX_STARTUP_PACKET_LEN`.
    #[error("invalid length of startup packet")]
    InvalidLength,
    /// The parameter list is not NUL-terminated pairs ending with an empty name.
    #[error("invalid startup packet layout: expected terminator as last byte")]
    InvalidLayout,
    /// A parameter name or value is not valid UTF-8.
    #[error("invalid byte sequence in startup packet")]
    InvalidEncoding,
    /// A protocol major version pgrouter does not speak.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedVersion {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// A `CancelRequest` with the wrong length.
    #[error("invalid length of cancel request packet")]
    InvalidCancel,
}

/// Takes one start-up packet off the front of `buf`; `Ok(None)` if it is not complete yet.
pub fn read_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 || len as usize > MAX_STARTUP_PACKET_LEN {
        return Err(StartupError::InvalidLength);
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let mut body = &packet[4..];
    let code = body.get_i32();
    match code {
        SSL_REQUEST_CODE => Ok(Some(StartupPacket::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(StartupPacket::GssEncRequest)),
        CANCEL_REQUEST_CODE | PEER_CANCEL_REQUEST_CODE => {
            if body.len() != 8 {
                return Err(StartupError::InvalidCancel);
            }
            Ok(Some(StartupPacket::CancelRequest {
                process_id: body.get_i32(),
                secret_key: body.get_i32(),
                from_peer: code == PEER_CANCEL_REQUEST_CODE,
            }))
        }
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedVersion { major, minor });
            }
            Ok(Some(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params: parse_params(body)?,
            })))
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    if body.last() != Some(&0) {
        return Err(StartupError::InvalidLayout);
    }
    let mut params = Vec::new();
    loop {
        let (name, rest) = take_cstr(body)?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(StartupError::InvalidLayout);
            }
            return Ok(params);
        }
        let (value, rest) = take_cstr(rest)?;
        params.push((utf8(name)?, utf8(value)?));
        body = rest;
    }
}

fn take_cstr(buf: &[u8]) -> Result<(&[u8], &[u8]), StartupError> {
    let end = memchr::memchr(0, buf).ok_or(StartupError::InvalidLayout)?;
    Ok((&buf[..end], &buf[end + 1..]))
}

fn utf8(b: &[u8]) -> Result<String, StartupError> {
    String::from_utf8(b.to_vec()).map_err(|_| StartupError::InvalidEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32((body.len() + 8) as i32);
        b.put_i32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn startup_cases() {
        let ok_body = b"user\0app\0database\0db\0\0";
        let cases: Vec<(BytesMut, Result<Option<StartupPacket>, StartupError>)> = vec![
            (BytesMut::from(&[0u8, 0][..]), Ok(None)),
            (
                packet(SSL_REQUEST_CODE, b""),
                Ok(Some(StartupPacket::SslRequest)),
            ),
            (
                packet(GSSENC_REQUEST_CODE, b""),
                Ok(Some(StartupPacket::GssEncRequest)),
            ),
            (
                packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1, 0, 0, 0, 2]),
                Ok(Some(StartupPacket::CancelRequest {
                    process_id: 1,
                    secret_key: 2,
                    from_peer: false,
                })),
            ),
            (
                packet(PEER_CANCEL_REQUEST_CODE, &[0, 0, 0, 1, 0, 0, 0, 2]),
                Ok(Some(StartupPacket::CancelRequest {
                    process_id: 1,
                    secret_key: 2,
                    from_peer: true,
                })),
            ),
            (
                packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1]),
                Err(StartupError::InvalidCancel),
            ),
            (
                packet(PROTOCOL_3_0, ok_body),
                Ok(Some(StartupPacket::Startup(StartupMessage {
                    major: 3,
                    minor: 0,
                    params: vec![
                        ("user".into(), "app".into()),
                        ("database".into(), "db".into()),
                    ],
                }))),
            ),
            (
                packet(PROTOCOL_3_0, b"user\0app"),
                Err(StartupError::InvalidLayout),
            ),
            (
                packet(PROTOCOL_3_0, b"user\0app\0\0x\0"),
                Err(StartupError::InvalidLayout),
            ),
            (
                packet(PROTOCOL_3_0, b"user\0\xff\0\0"),
                Err(StartupError::InvalidEncoding),
            ),
            (
                packet(2 << 16, b"\0"),
                Err(StartupError::UnsupportedVersion { major: 2, minor: 0 }),
            ),
            (
                BytesMut::from(&[0u8, 0, 0, 4][..]),
                Err(StartupError::InvalidLength),
            ),
            (
                BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]),
                Err(StartupError::InvalidLength),
            ),
        ];
        for (mut input, expected) in cases {
            let shown = format!("{input:?}");
            assert_eq!(read_startup(&mut input), expected, "input {shown}");
        }
    }

    #[test]
    fn incomplete_packet_waits() {
        let full = packet(PROTOCOL_3_0, b"user\0app\0\0");
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(read_startup(&mut part), Ok(None));
        assert_eq!(part.len(), full.len() - 1);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut b = BytesMut::from(&data[..]);
            let _ = read_startup(&mut b);
        }

        #[test]
        fn params_round_trip(params in proptest::collection::vec(("[a-z_]{1,10}", "[ -~]{0,20}"), 0..8)) {
            let mut body = Vec::new();
            for (k, v) in &params {
                body.extend_from_slice(k.as_bytes()); body.push(0);
                body.extend_from_slice(v.as_bytes()); body.push(0);
            }
            body.push(0);
            let mut b = packet(PROTOCOL_3_0, &body);
            let Ok(Some(StartupPacket::Startup(m))) = read_startup(&mut b) else {
                return Err(TestCaseError::fail("not parsed"));
            };
            prop_assert_eq!(m.params, params);
        }
    }
}
