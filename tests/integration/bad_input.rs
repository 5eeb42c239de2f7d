//! Bad input: each malformed client gets PostgreSQL's error (or is simply closed when it is gone)
//! and the router keeps serving everybody else.

use crate::harness::{cluster, connect, Router};
use crate::raw::{message, startup_packet, RawClient};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A router with a short login timeout, shared by the bad-input tests.
fn router() -> Option<&'static Router> {
    static ROUTER: OnceLock<Option<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            cluster().map(|c| {
                Router::start(c, "client:\n  login_timeout: 1s\n  max_message_size: 1MB\n")
            })
        })
        .as_ref()
}

/// After each bad client, a good one still gets served.
fn still_serves(router: &Router) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        let v: i32 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
        assert_eq!(v, 7);
    });
}

#[test]
fn garbage_instead_of_a_startup_packet() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    // PostgreSQL logs "invalid length of startup packet" and closes without a word.
    c.expect_closed_silently();
    still_serves(router);
}

/// node-postgres's `client.end()` before the connection is up sends Terminate where the
/// start-up packet should be: PostgreSQL closes quietly, so the driver sees a clean end.
#[test]
fn terminate_instead_of_a_startup_packet() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(&[b'X', 0, 0, 0, 4]);
    c.expect_closed_silently();
    still_serves(router);
}

#[test]
fn wrong_protocol_version() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(&startup_packet(2 << 16, &[("user", "app")]));
    let (severity, code, message) = c.expect_error();
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "0A000"));
    assert_eq!(
        message,
        "unsupported frontend protocol 2.0: server supports 3.0 to 3.0"
    );
    still_serves(router);
}

/// A newer 3.x minor version and unknown `_pq_` options are negotiated down, as PostgreSQL does.
#[test]
fn newer_minor_version_is_negotiated() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(&startup_packet(
        (3 << 16) | 9,
        &[
            ("user", "rawtest"),
            ("database", "app"),
            ("_pq_.future", "1"),
        ],
    ));
    let (tag, body) = c.read_message().unwrap();
    assert_eq!(tag, b'v');
    assert_eq!(&body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&body[8..], b"_pq_.future\0");
    loop {
        let (tag, _) = c.read_message().unwrap();
        if tag == b'Z' {
            break;
        }
    }
    c.send_query("SELECT 1");
    assert_eq!(c.read_message().unwrap().0, b'T');
}

#[test]
fn missing_user() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(&startup_packet(196_608, &[("database", "app")]));
    let (severity, code, message) = c.expect_error();
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "28000"));
    assert_eq!(
        message,
        "no PostgreSQL user name specified in startup packet"
    );
    still_serves(router);
}

/// SSLRequest and GSSENCRequest are refused with `N`, and the client may continue unencrypted.
#[test]
fn ssl_and_gss_requests_are_refused_with_n() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]); // GSSENCRequest
    assert_eq!(c.read_byte(), Some(b'N'));
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]); // SSLRequest
    assert_eq!(c.read_byte(), Some(b'N'));
    c.send(&startup_packet(
        196_608,
        &[("user", "rawtest"), ("database", "app")],
    ));
    loop {
        if c.read_message().unwrap().0 == b'Z' {
            break;
        }
    }
}

/// A client that connects and sends nothing is closed after `client.login_timeout`.
#[test]
fn silent_client_is_closed_after_the_login_timeout() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    let started = Instant::now();
    let (severity, code, _) = c.expect_error();
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "57014"));
    assert!(started.elapsed() < Duration::from_secs(15));
    still_serves(router);
}

/// A start-up packet cut short, then the client goes away: the session just ends.
#[test]
fn truncated_startup_packet() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    let packet = startup_packet(196_608, &[("user", "rawtest")]);
    c.send(&packet[..packet.len() - 3]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed());
    still_serves(router);
}

/// A message cut short after login, then the client goes away.
#[test]
fn truncated_message_after_login() {
    let Some(router) = router() else { return };
    let mut c = RawClient::login(router.port, "rawtest");
    let q = message(b'Q', b"SELECT 1\0");
    c.send(&q[..7]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed());
    still_serves(router);
}

/// Lengths that cannot be valid: larger than the configured maximum, or below 4.
#[test]
fn absurd_and_negative_lengths() {
    let Some(router) = router() else { return };
    for header in [
        [b'Q', 0x7f, 0xff, 0xff, 0xff],
        [b'Q', 0x00, 0x20, 0x00, 0x00],
        [b'Q', 0xff, 0xff, 0xff, 0xf0],
        [b'Q', 0, 0, 0, 2],
    ] {
        let mut c = RawClient::login(router.port, "rawtest");
        c.send(&header);
        let (severity, code, message) = c.expect_error();
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", "08P01"),
            "{header:?}: {message}"
        );
    }
    still_serves(router);
}

/// A message type no client may send, after login.
#[test]
fn invalid_message_type_after_login() {
    let Some(router) = router() else { return };
    let mut c = RawClient::login(router.port, "rawtest");
    c.send(&message(b'Z', b"I"));
    let (severity, code, message) = c.expect_error();
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "08P01"));
    assert_eq!(message, "invalid frontend message type 90");
    still_serves(router);
}

/// Garbage during the SCRAM exchange gives 08P01, not a crash.
#[test]
fn garbage_during_authentication() {
    let Some(router) = router() else { return };
    let mut c = RawClient::connect(router.port);
    c.send(&startup_packet(
        196_608,
        &[("user", "app"), ("database", "app")],
    ));
    let (tag, _) = c.read_message().unwrap();
    assert_eq!(tag, b'R');
    c.send(&message(b'p', b"SCRAM-SHA-256\0\0\0\0\x05n,,zz"));
    let (severity, code, _) = c.expect_error();
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "08P01"));
    still_serves(router);
}

/// Random bytes from many clients at once never take the router down.
#[test]
fn random_bytes_from_many_clients() {
    let Some(router) = router() else { return };
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let port = router.port;
            std::thread::spawn(move || {
                let mut c = RawClient::connect(port);
                let len = 1 + (i * 37) % 300;
                let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
                c.try_send(&junk);
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                // Either an error or a close; never a hang: the read must reach EOF before the
                // client's read timeout.
                let mut buf = Vec::new();
                let read = std::io::Read::read_to_end(&mut c.stream, &mut buf);
                match read {
                    Ok(_) => {}
                    // The router closed first with our unread junk in its buffer: a reset.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    Err(e) => panic!("client {i}: no answer and no close: {e}"),
                }
                // Nothing, PostgreSQL's ErrorResponse, or 'N' to what read as an SSLRequest.
                assert!(
                    matches!(buf.first(), None | Some(b'E' | b'N')),
                    "client {i}: unexpected answer {buf:?}"
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    still_serves(router);
}
