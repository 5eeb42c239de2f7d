//! Several pgrouter instances behind one Service: a client's cancel request lands on a random
//! instance. Each instance's `peer_id` is in the process ids it gives clients; a cancel for a
//! session of another instance is forwarded there (by `peers`, or to every address `peers_dns`
//! resolves to), and only the right secret has an effect. Two real instances, real sessions.

use crate::harness::{cluster, eventually, Router};
use crate::raw::RawClient;
use std::io::Write;
use std::time::{Duration, Instant};

/// Logs in as the trust user; returns the client and the key pgrouter gave it.
fn login_with_key(port: u16) -> (RawClient, i32, i32) {
    RawClient::login_with_key(port, "rawtest")
}

/// Sends a client's CancelRequest to `port`.
fn cancel_via(port: u16, pid: i32, secret: i32) {
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend(80_877_102i32.to_be_bytes());
    packet.extend(pid.to_be_bytes());
    packet.extend(secret.to_be_bytes());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&packet).unwrap();
}

/// Runs `pg_sleep(seconds)` on `c`, sends the cancel with `cancel` once the statement runs on
/// a server, and returns the SQLSTATE the query ended with (`None`: it ran to the end) and how
/// long it took.
fn sleep_and_cancel(
    c: &mut RawClient,
    seconds: u32,
    cancel: impl FnOnce(),
) -> (Option<String>, Duration) {
    let started = Instant::now();
    let marker = format!("peers_{}", rand::random::<u32>());
    c.send_query(&format!("SELECT pg_sleep({seconds}), '{marker}'"));
    let cluster = cluster().unwrap();
    let running = eventually(Duration::from_secs(20), || cluster.runs_statement(&marker));
    assert!(running, "the statement never started");
    cancel();
    let mut code = None;
    loop {
        let (tag, body) = c.read_message().expect("an answer");
        if tag == b'E' {
            let fields = body.split(|b| *b == 0);
            for f in fields {
                if let Some(c) = f.strip_prefix(b"C") {
                    code = Some(String::from_utf8_lossy(c).into_owned());
                }
            }
        }
        if tag == b'Z' {
            return (code, started.elapsed());
        }
    }
}

fn peer_of(pid: i32) -> u32 {
    ((pid as u32) >> 23) & 0xff
}

#[tokio::test]
async fn a_cancel_reaching_another_instance_is_forwarded_to_its_owner() {
    let Some(cluster) = cluster() else { return };
    let a = Router::start(cluster, "peer_id: 1\n");
    let b = Router::start(
        cluster,
        &format!(
            "peer_id: 2\npeers:\n  - {{id: 1, host: 127.0.0.1, port: {}}}\n",
            a.port
        ),
    );

    // A session on A, its cancel sent to B.
    let (mut client, pid, secret) = login_with_key(a.port);
    assert_eq!(peer_of(pid), 1, "A's id is in the process id it gave");
    let (code, took) = sleep_and_cancel(&mut client, 20, || cancel_via(b.port, pid, secret));
    assert_eq!(code.as_deref(), Some("57014"), "cancelled through B");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A wrong secret has no effect, wherever it is sent: on a session of its own, so that
    // nothing of the cancel above plays a part (cancel_race.rs covers late cancels).
    let (mut other, pid, secret) = login_with_key(a.port);
    let (code, _) = sleep_and_cancel(&mut other, 2, || {
        cancel_via(b.port, pid, secret.wrapping_add(1));
        cancel_via(a.port, pid, secret.wrapping_add(1));
    });
    assert_eq!(code, None, "a wrong secret cancels nothing");
    drop(client);

    // The other way, once A knows B (peers reload).
    let config = a.config_path();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "peers:\n  - {{id: 1, host: 127.0.0.1, port: {}}}\n  - {{id: 2, host: 127.0.0.1, port: {}}}\n",
        a.port, b.port
    ));
    std::fs::write(&config, text).unwrap();
    a.signal("HUP");
    a.expect_log("configuration reloaded", Duration::from_secs(10))
        .await;
    let (mut on_b, pid, secret) = login_with_key(b.port);
    assert_eq!(peer_of(pid), 2);
    let (code, _) = sleep_and_cancel(&mut on_b, 20, || cancel_via(a.port, pid, secret));
    assert_eq!(code.as_deref(), Some("57014"), "cancelled through A");

    // An instance with no peer list but a DNS name for all of them forwards there.
    let c = Router::start(
        cluster,
        &format!("peer_id: 3\npeers_dns: localhost:{}\n", b.port),
    );
    // A session of its own again.
    let (mut on_b, pid, secret) = login_with_key(b.port);
    let (code, _) = sleep_and_cancel(&mut on_b, 20, || cancel_via(c.port, pid, secret));
    assert_eq!(
        code.as_deref(),
        Some("57014"),
        "cancelled through C's peers_dns"
    );
    drop(a);
}
