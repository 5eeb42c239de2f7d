//! Memory per process, whatever clients send: a message larger than `routing.max_parse_size`
//! streams through to its server instead of being buffered whole, and client read buffers beyond
//! their first 16 kB share one process-wide budget (`client.max_buffer_memory`). Observed from
//! pgrouter's resident memory while the messages pass, and from the answers of the servers.

use crate::harness::{cluster, connect, Router};
use crate::raw::{message, RawClient};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Samples pgrouter's resident memory every 10 ms until dropped; the peak is kept.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let sampler = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        PeakRss {
            peak,
            stop,
            sampler: Some(sampler),
        }
    }

    /// The peak so far, in KiB.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends one simple query (its text built by `sql_around`) and returns the first column of
/// every row and the error code, if any, through the next ReadyForQuery.
fn run_raw(c: &mut RawClient, sql: &[u8]) -> (Vec<String>, Option<String>) {
    let mut body = sql.to_vec();
    body.push(0);
    c.send(&message(b'Q', &body));
    read_through_ready(c)
}

fn read_through_ready(c: &mut RawClient) -> (Vec<String>, Option<String>) {
    let (mut values, mut error) = (Vec::new(), None);
    loop {
        let (tag, body) = c.read_message().expect("an answer before the end");
        match tag {
            b'D' => {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                let value = usize::try_from(len)
                    .map(|len| String::from_utf8_lossy(&body[6..6 + len]).into_owned())
                    .unwrap_or_default();
                values.push(value);
            }
            b'E' => {
                error = body
                    .split(|b| *b == 0)
                    .find(|f| f.first() == Some(&b'C'))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned());
            }
            b'Z' => return (values, error),
            _ => {}
        }
    }
}

/// `SELECT length('xxx…')` with `len` bytes of literal.
fn length_query(len: usize) -> Vec<u8> {
    let mut sql = b"SELECT length('".to_vec();
    sql.resize(sql.len() + len, b'x');
    sql.extend_from_slice(b"')");
    sql
}

/// `SELECT length($1)` with a `len`-byte text parameter: Parse (unnamed), Bind, Execute, Sync.
fn bound_length_request(len: usize) -> Vec<u8> {
    let mut out = message(b'P', b"\0SELECT length($1::text)\0\0\0");
    let mut bind = b"\0\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&i32::try_from(len).unwrap().to_be_bytes());
    bind.resize(bind.len() + len, b'z');
    bind.extend_from_slice(&[0, 0]);
    out.extend(message(b'B', &bind));
    out.extend(message(b'E', &[0; 5]));
    out.extend(message(b'S', &[]));
    out
}

/// Eight clients send a 40 MB query at the same moment (two of them inside a transaction), one
/// copies a 20 MB row in, one binds a 30 MB parameter: every answer is right, and pgrouter's
/// resident memory grows by far less than one of those messages (each used to be buffered whole
/// before it was sent on: 300 MB and more at once). In both pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_stream_through_with_bounded_memory() {
    let Some(cluster) = cluster() else { return };
    const QUERY: usize = 40 << 20;
    for pool in ["session", "transaction"] {
        let router = Router::start(cluster, &format!("pool: {{mode: {pool}}}\n"));
        // Warm up: the pools and the first sessions exist before the baseline is taken.
        let mut warm = RawClient::login(router.port, "rawtest");
        assert_eq!(run_raw(&mut warm, b"SELECT 1").0, vec!["1"]);
        let before = rss_kib(router.pid());
        let peak = PeakRss::watch(router.pid());
        let port = router.port;
        let senders: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = RawClient::login(port, "rawtest");
                    c.stream
                        .set_read_timeout(Some(Duration::from_secs(120)))
                        .unwrap();
                    let in_transaction = i < 2;
                    if in_transaction {
                        assert_eq!(run_raw(&mut c, b"BEGIN").1, None);
                    }
                    let got = run_raw(&mut c, &length_query(QUERY));
                    if in_transaction {
                        assert_eq!(run_raw(&mut c, b"COMMIT").1, None);
                    }
                    // The session goes on normally after it.
                    let after = run_raw(&mut c, b"SELECT 'still here'");
                    (got, after)
                })
            })
            .collect();
        // COPY FROM STDIN with one 20 MB row, in one CopyData message.
        let copy = std::thread::spawn(move || {
            let mut c = RawClient::login(port, "rawtest");
            c.stream
                .set_read_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            assert_eq!(
                run_raw(&mut c, b"CREATE TEMP TABLE memory_copy(t text)").1,
                None
            );
            c.send_query("COPY memory_copy FROM STDIN");
            let (tag, _) = c.read_message().unwrap();
            assert_eq!(tag, b'G', "CopyInResponse");
            let mut row = vec![b'y'; 20 << 20];
            row.push(b'\n');
            c.send(&message(b'd', &row));
            c.send(&message(b'c', &[]));
            let (_, error) = read_through_ready(&mut c);
            assert_eq!(error, None);
            let mut got = run_raw(&mut c, b"SELECT length(t) FROM memory_copy").0;
            // An unnamed statement larger than routing.max_parse_size, bound and run in the same
            // request: its Parse streams, the rest follows to the same connection.
            let mut parse = vec![0];
            parse.extend_from_slice(&length_query(300 << 10));
            parse.extend_from_slice(&[0, 0, 0]);
            c.send(&message(b'P', &parse));
            c.send(&message(b'B', &[0; 8]));
            c.send(&message(b'E', &[0; 5]));
            c.send(&message(b'S', &[]));
            let (values, error) = read_through_ready(&mut c);
            assert_eq!(error, None);
            got.extend(values);
            got
        });
        // A 30 MB bytea parameter through the extended protocol (tokio-postgres).
        let client = connect(&router.conninfo("app", "app")).await.unwrap();
        let blob = vec![7u8; 30 << 20];
        let bound: i32 = client
            .query_one("SELECT length($1::bytea)", &[&blob])
            .await
            .unwrap()
            .get(0);
        assert_eq!(bound, 30 << 20, "{pool}");
        for s in senders {
            let (got, after) = s.join().unwrap();
            assert_eq!(got, (vec![QUERY.to_string()], None), "{pool}");
            assert_eq!(after, (vec!["still here".to_string()], None), "{pool}");
        }
        assert_eq!(
            copy.join().unwrap(),
            vec![(20 << 20).to_string(), (300 << 10).to_string()],
            "{pool}"
        );
        // A named statement that large (its Parse streams, so pgrouter keeps no copy): the
        // session keeps the server connection that has it, and runs it again and again.
        let big = String::from_utf8(length_query(300 << 10)).unwrap();
        let statement = client.prepare(&big).await.unwrap();
        for _ in 0..3 {
            let n: i32 = client.query_one(&statement, &[]).await.unwrap().get(0);
            assert_eq!(n, 300 << 10, "{pool}");
        }
        let grown = peak.finish().saturating_sub(before);
        eprintln!(
            "{pool}: RSS {before} KiB before, peak {} KiB above it",
            grown
        );
        assert!(
            grown < 64 * 1024,
            "{pool}: pgrouter's resident memory grew by {} MiB while 370 MB of messages passed",
            grown / 1024
        );
    }
}

/// Two hundred clients each send a 200 kB query (below `routing.max_parse_size`, so normally
/// buffered whole and classified) at the same moment, three times over, with
/// `client.max_buffer_memory` at 2 MB: all are answered right (none waits forever for memory:
/// beyond the budget a statement streams to the primary unclassified), and pgrouter's resident
/// memory grows by much less than the 40 MB the buffers would hold together (55 MB measured
/// without a budget, about 22 MB with it: server connections, the runtime, the allocator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_buffers_share_one_budget() {
    let Some(cluster) = cluster() else { return };
    const QUERY: usize = 200 << 10;
    // Reads on the replicas only.
    let router = Router::start_weighted(
        cluster,
        [0, 1, 1],
        "pool: {mode: transaction}\nclient: {max_buffer_memory: 2MB}\n",
    );
    let port = router.port;
    let clients: Vec<RawClient> = (0..200)
        .map(|_| RawClient::login(port, "rawtest"))
        .collect();
    let before = rss_kib(router.pid());
    let peak = PeakRss::watch(router.pid());
    let barrier = Arc::new(std::sync::Barrier::new(clients.len()));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let query = length_query(QUERY);
                for _ in 0..3 {
                    barrier.wait();
                    // Half of them through the extended protocol, the 200 kB as a parameter.
                    let got = if i % 2 == 0 {
                        run_raw(&mut c, &query)
                    } else {
                        c.send(&bound_length_request(QUERY));
                        read_through_ready(&mut c)
                    };
                    assert_eq!(got, (vec![QUERY.to_string()], None));
                }
                c
            })
        })
        .collect();
    let clients: Vec<RawClient> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = peak.finish().saturating_sub(before);
    eprintln!("RSS {before} KiB before, peak {grown} KiB above it");
    assert!(
        grown < 36 * 1024,
        "pgrouter's resident memory grew by {} MiB for 200 clients' 200 kB queries",
        grown / 1024
    );
    // The budget is free again (all buffers are back to their first 16 kB): a statement that
    // fits is classified and read on a replica.
    let (_, metrics) = crate::harness::http(&router.admin_addr(), "GET", "/metrics");
    assert!(
        metrics.contains("pgrouter_client_buffer_bytes 0\n"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("pgrouter_client_buffer"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut c = RawClient::login(port, "rawtest");
    let (values, error) = run_raw(&mut c, b"SELECT pg_is_in_recovery()");
    assert_eq!((values, error), (vec!["t".to_string()], None));
    drop(clients);
}

/// A large message pipelined behind a read still running on a replica waits for it (answers
/// stay in order), then streams to the primary; in a transaction it streams to the
/// transaction's connection. In both pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_keeps_its_place_in_the_pipeline() {
    let Some(cluster) = cluster() else { return };
    for pool in ["session", "transaction"] {
        // Reads on the replicas only.
        let router =
            Router::start_weighted(cluster, [0, 1, 1], &format!("pool: {{mode: {pool}}}\n"));
        let mut c = RawClient::login(router.port, "rawtest");
        let mut large = b"SELECT pg_is_in_recovery() /* ".to_vec();
        large.resize(large.len() + (1 << 20), b'x');
        large.extend_from_slice(b" */");
        let mut pipeline = Vec::new();
        for sql in [&b"SELECT pg_is_in_recovery() FROM (SELECT count(*) FROM generate_series(1, 2000000)) s"[..], &large] {
            let mut body = sql.to_vec();
            body.push(0);
            pipeline.extend(message(b'Q', &body));
        }
        let slow =
            b"SELECT pg_is_in_recovery() FROM (SELECT count(*) FROM generate_series(1, 2000000)) s";
        assert_eq!(
            run_raw(&mut c, slow),
            (vec!["t".into()], None),
            "{pool}: alone"
        );
        c.send(&pipeline);
        assert_eq!(
            read_through_ready(&mut c),
            (vec!["t".into()], None),
            "{pool}"
        );
        assert_eq!(
            read_through_ready(&mut c),
            (vec!["f".into()], None),
            "{pool}"
        );
        // Inside a transaction that started on a replica (read only), it follows it there.
        assert_eq!(run_raw(&mut c, b"BEGIN READ ONLY").1, None);
        assert_eq!(
            run_raw(&mut c, b"SELECT pg_is_in_recovery()"),
            (vec!["t".into()], None),
            "{pool}: small"
        );
        assert_eq!(run_raw(&mut c, &large), (vec!["t".into()], None), "{pool}");
        assert_eq!(run_raw(&mut c, b"COMMIT").1, None);
    }
}
