//! A minimal blocking protocol client for sending exactly the bytes a test wants.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct RawClient {
    pub stream: TcpStream,
}

/// A StartupMessage with the given protocol version and parameters.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// A tagged message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A hang is a failure: no read waits longer than this.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        RawClient { stream }
    }

    /// Logs in as a `trust` user and reads up to the first ReadyForQuery.
    pub fn login(port: u16, user: &str) -> RawClient {
        RawClient::login_reading_key(port, user).0
    }

    /// The same; also returns the key pgrouter gave the client in `BackendKeyData` (process id,
    /// secret).
    pub fn login_with_key(port: u16, user: &str) -> (RawClient, i32, i32) {
        let (c, key) = RawClient::login_reading_key(port, user);
        let (pid, secret) = key.expect("BackendKeyData");
        (c, pid, secret)
    }

    fn login_reading_key(port: u16, user: &str) -> (RawClient, Option<(i32, i32)>) {
        let mut c = RawClient::connect(port);
        c.send(&startup_packet(
            196_608,
            &[("user", user), ("database", "app")],
        ));
        let mut key = None;
        loop {
            let (tag, body) = c.read_message().expect("login answer");
            match tag {
                b'K' => {
                    key = Some((
                        i32::from_be_bytes(body[..4].try_into().unwrap()),
                        i32::from_be_bytes(body[4..8].try_into().unwrap()),
                    ))
                }
                b'Z' => return (c, key),
                b'E' => panic!("login failed: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends bytes, tolerating a peer that already closed.
    pub fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn send_query(&mut self, sql: &str) {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(&message(b'Q', &body));
    }

    pub fn read_byte(&mut self) -> Option<u8> {
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }

    /// Reads one tagged message; `None` at end of stream.
    pub fn read_message(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header).ok()?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).ok()?;
        Some((header[0], body))
    }

    /// True once the peer has closed (reads return end of stream, not a timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.stream.read(&mut b), Ok(0)) || matches!(self.stream.read(&mut b), Ok(0))
    }

    /// The peer closed the connection without sending anything (PostgreSQL's answer to bytes
    /// that are not a start-up packet).
    pub fn expect_closed_silently(&mut self) {
        let mut b = [0u8; 64];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("expected a silent close, got {:?}", &b[..n]),
            Err(e) => panic!("expected a silent close, got {e}"),
        }
    }

    /// Reads messages until an ErrorResponse and returns its (severity, code, message); then
    /// checks that the connection is closed when the error is FATAL.
    pub fn expect_error(&mut self) -> (String, String, String) {
        loop {
            let (tag, body) = self
                .read_message()
                .expect("an ErrorResponse before the end");
            if tag != b'E' {
                continue;
            }
            let mut fields = std::collections::HashMap::new();
            for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                fields.insert(field[0], String::from_utf8_lossy(&field[1..]).into_owned());
            }
            let severity = fields.get(&b'V').cloned().unwrap_or_default();
            if severity == "FATAL" {
                assert!(self.is_closed(), "connection must close after FATAL");
            }
            return (
                severity,
                fields.get(&b'C').cloned().unwrap_or_default(),
                fields.get(&b'M').cloned().unwrap_or_default(),
            );
        }
    }
}
