//! High availability against real clusters of their own (they are broken on purpose): the SQL
//! discovery on a plain streaming cluster, repmgr with repmgrd, Patroni with etcd.
//!
//! The tests run one at a time (they measure failover gaps on a 2-core machine), each with a
//! writer that inserts a counter in a loop and readers that ask `inet_server_port()`, all through
//! pgrouter.

#![allow(unreachable_pub, dead_code)]

mod managers;
mod sql;
mod switchover;

use crate::harness::{connect, destroy_at_exit, free_port_block, postgres_available, repo};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One HA test at a time.
pub static HA_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster made by one of the cluster scripts, destroyed when dropped (or at exit).
pub struct ScriptCluster {
    script: &'static str,
    /// Arguments before the command (`repmgr` / `patroni` for ha-cluster.sh).
    script_args: &'static [&'static str],
    pub dir: PathBuf,
    pub base_port: u16,
}

impl ScriptCluster {
    /// Creates the cluster with `script up`; `None` when PostgreSQL is not installed (outside
    /// CI), like the other real-server tests.
    pub fn up(
        script: &'static str,
        name: &str,
        ports: u16,
        script_args: &'static [&'static str],
    ) -> Option<ScriptCluster> {
        Self::up_with(script, name, ports, script_args, &[])
    }

    /// As [`ScriptCluster::up`], with `env` for the script's `up`.
    pub fn up_with(
        script: &'static str,
        name: &str,
        ports: u16,
        script_args: &'static [&'static str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Option<ScriptCluster> {
        if !postgres_available() {
            crate::harness::missing("PostgreSQL is not installed; the HA tests");
            return None;
        }
        let base_port = free_port_block(ports);
        let dir = std::env::temp_dir().join(format!(
            "pgrouter-test-{}-{name}-{base_port}",
            std::process::id()
        ));
        let cluster = ScriptCluster {
            script,
            script_args,
            dir,
            base_port,
        };
        destroy_at_exit(script, script_args, &cluster.dir, base_port);
        let out = cluster.run_with(&["up"], env);
        assert!(out.0, "{script} up failed:\n{}", out.1);
        Some(cluster)
    }

    /// Runs the script with a command; returns (success, stdout + stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (bool, String) {
        let out = Command::new("bash")
            .arg(repo().join(self.script))
            .args(self.script_args)
            .args(args)
            .env("PGR_CLUSTER_DIR", &self.dir)
            .env("PGR_BASE_PORT", self.base_port.to_string())
            .envs(env.iter().copied())
            .output()
            .expect("cluster script runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `script ACTION NODE`, which must succeed.
    pub fn node(&self, action: &str, node: &str) {
        let (ok, out) = self.run(&[action, node]);
        assert!(ok, "{} {action} {node} failed:\n{out}", self.script);
    }

    pub fn port(&self, node: usize) -> u16 {
        self.base_port + node as u16
    }

    /// The three nodes as pgrouter configuration, with `per_node(i)` appended inside each entry.
    pub fn nodes_yaml(&self, per_node: impl Fn(usize) -> String) -> String {
        let mut yaml = String::from("nodes:\n");
        for i in 0..3 {
            yaml.push_str(&format!(
                "  - {{name: pg{i}, host: 127.0.0.1, port: {}{}}}\n",
                self.port(i),
                per_node(i)
            ));
        }
        yaml
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        let _ = self.run(&["destroy"]);
    }
}

/// What one client of the workload saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Writes acknowledged: (counter value, when, port that answered).
    pub acked: Vec<(i64, Instant, u16)>,
    /// Reads answered: (when, port, whether that node was in recovery).
    pub reads: Vec<(Instant, u16, bool)>,
    /// Errors: (when, text).
    pub errors: Vec<(Instant, String)>,
    /// Writes answered by a node in recovery (must never happen).
    pub writes_on_standby: usize,
}

/// Counts of what the workload's clients got answered.
#[derive(Debug, Default)]
struct Progress {
    writes: std::sync::atomic::AtomicUsize,
    reads: std::sync::atomic::AtomicUsize,
}

/// A writer and readers running through pgrouter until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// Writes acknowledged and reads answered so far, by all clients.
    progress: Arc<Progress>,
    writer: tokio::task::JoinHandle<ClientLog>,
    readers: Vec<tokio::task::JoinHandle<ClientLog>>,
}

impl Workload {
    /// Starts one writer (into `ha_counter`, created if needed) and `readers` readers.
    pub async fn start(conninfo: &str, readers: usize) -> Workload {
        Self::start_at(conninfo, readers, 1).await
    }

    /// Like [`Workload::start`], the writer counting from `first` (workloads that run side by
    /// side into one table count in ranges of their own).
    pub async fn start_at(conninfo: &str, readers: usize, first: i64) -> Workload {
        let setup = connect(conninfo).await.unwrap();
        setup
            .batch_execute("CREATE TABLE IF NOT EXISTS ha_counter (v bigint PRIMARY KEY)")
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let writer = tokio::spawn(client_loop(
            conninfo.to_owned(),
            stop.clone(),
            progress.clone(),
            Some(first),
        ));
        let readers = (0..readers)
            .map(|_| {
                tokio::spawn(client_loop(
                    conninfo.to_owned(),
                    stop.clone(),
                    progress.clone(),
                    None,
                ))
            })
            .collect();
        Workload {
            stop,
            progress,
            writer,
            readers,
        }
    }

    /// Waits until `writes` more writes are acknowledged and `reads` more reads answered (from
    /// now): the workload demonstrably runs, instead of a fixed sleep. Panics after 60 s.
    pub async fn wait_for(&self, writes: usize, reads: usize) {
        let (w0, r0) = (
            self.progress.writes.load(Ordering::Relaxed),
            self.progress.reads.load(Ordering::Relaxed),
        );
        let done = crate::harness::eventually_async(Duration::from_secs(60), || {
            self.progress.writes.load(Ordering::Relaxed) >= w0 + writes
                && self.progress.reads.load(Ordering::Relaxed) >= r0 + reads
        })
        .await;
        assert!(
            done,
            "the workload made no progress ({writes} writes, {reads} reads wanted)"
        );
    }

    /// Stops every client; returns the writer's log and the readers' logs.
    pub async fn finish(self) -> (ClientLog, Vec<ClientLog>) {
        self.stop.store(true, Ordering::Relaxed);
        let writer = self.writer.await.unwrap();
        let mut readers = Vec::new();
        for r in self.readers {
            readers.push(r.await.unwrap());
        }
        (writer, readers)
    }
}

/// One client: writes the next counter value (from `first`, for a writer), or reads, in a loop;
/// reconnects when its connection is closed. Every request has a generous client-side timeout so a hang fails the
/// test instead of stalling it.
async fn client_loop(
    conninfo: String,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    first: Option<i64>,
) -> ClientLog {
    let writes = first.is_some();
    let mut log = ClientLog::default();
    let mut client = None;
    let mut next: i64 = first.unwrap_or(1);
    while !stop.load(Ordering::Relaxed) {
        let c = match &client {
            Some(c) => c,
            None => match connect(&conninfo).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    log.errors.push((Instant::now(), format!("connect: {e}")));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sql = if writes {
            format!("INSERT INTO ha_counter VALUES ({next}) RETURNING inet_server_port(), pg_is_in_recovery()")
        } else {
            "SELECT inet_server_port(), pg_is_in_recovery()".to_owned()
        };
        let result = tokio::time::timeout(Duration::from_secs(60), c.simple_query(&sql)).await;
        match result {
            Ok(Ok(messages)) => {
                let rows = crate::harness::rows(&messages);
                let port: u16 = rows[0].get(0).unwrap().parse().unwrap();
                let in_recovery = rows[0].get(1) == Some("t");
                if writes {
                    log.acked.push((next, Instant::now(), port));
                    log.writes_on_standby += usize::from(in_recovery);
                    next += 1;
                    progress.writes.fetch_add(1, Ordering::Relaxed);
                } else {
                    log.reads.push((Instant::now(), port, in_recovery));
                    progress.reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => {
                let text = match e.as_db_error() {
                    Some(db) => format!("{}: {}", db.code().code(), db.message()),
                    None => e.to_string(),
                };
                log.errors.push((Instant::now(), text));
                if writes {
                    // The value may or may not have been written: never reuse it.
                    next += 1;
                }
                if client.as_ref().is_some_and(|c| c.is_closed()) {
                    client = None;
                }
            }
            Err(_) => panic!("a request through pgrouter hung for 60 s"),
        }
        tokio::time::sleep(Duration::from_millis(if writes { 10 } else { 20 })).await;
    }
    log
}

/// The ports fresh sessions' reads land on, through `router`, over `sessions` sessions.
pub async fn read_ports(router: &crate::harness::Router, sessions: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..sessions {
        let c = connect(&router.conninfo("app", "app")).await.unwrap();
        let rows = tokio::time::timeout(
            Duration::from_secs(30),
            c.simple_query("SELECT inet_server_port()"),
        )
        .await
        .expect("a read through pgrouter hung")
        .unwrap();
        ports.push(crate::harness::first_value(&rows).parse().unwrap());
    }
    ports
}

/// Whether fresh sessions' reads reach `port`: `rounds` rounds of `sessions` sessions, 200 ms
/// apart (a node coming into rotation, or rotation reaching it).
pub async fn reads_reach(
    router: &crate::harness::Router,
    port: u16,
    rounds: usize,
    sessions: usize,
) -> bool {
    for _ in 0..rounds {
        if read_ports(router, sessions).await.contains(&port) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The acknowledged writes missing from `node`'s `ha_counter` (read over TCP as `app`).
pub async fn missing_writes(port: u16, acked: &[(i64, Instant, u16)]) -> Vec<i64> {
    let direct = connect(&format!(
        "host=127.0.0.1 port={port} user=app password=app dbname=app"
    ))
    .await
    .unwrap();
    let present: std::collections::HashSet<i64> = direct
        .query("SELECT v FROM ha_counter", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    acked
        .iter()
        .map(|(v, _, _)| *v)
        .filter(|v| !present.contains(v))
        .collect()
}

/// When the failover happened, as the test saw it.
pub struct FailoverTimes {
    /// Just before the primary was killed.
    pub kill_started: Instant,
    /// The kill command returned (requests answered before may have run on the old primary).
    pub killed_at: Instant,
    /// The new primary was out of recovery.
    pub promoted_at: Instant,
}

/// What every failover must come to: writes resumed within two check intervals (plus one for a
/// probe in flight and a margin for a loaded machine) of the promotion, never on a standby,
/// after the promotion only on the new primary, and every acknowledged one is there; readers
/// outside transactions saw no errors, and no read ran on the old primary as a primary after
/// the promotion. Returns the write gap from the kill and from the promotion.
pub async fn assert_failover_outcome(
    writer: &ClientLog,
    readers: &[ClientLog],
    times: &FailoverTimes,
    old_port: u16,
    new_port: u16,
    interval: Duration,
) -> (Duration, Duration) {
    let resumed = writer
        .acked
        .iter()
        .map(|(_, at, _)| *at)
        .find(|at| *at > times.killed_at)
        .expect("writes resumed");
    let after_promotion = resumed.saturating_duration_since(times.promoted_at);
    assert!(
        after_promotion < interval * 3 + Duration::from_secs(2),
        "writes resumed {after_promotion:?} after the promotion"
    );
    assert_eq!(writer.writes_on_standby, 0);
    assert!(
        writer
            .acked
            .iter()
            // Killing a postmaster leaves its backends running for a moment: writes acknowledged
            // between the kill and the promotion may come from the old primary (and, replicated
            // synchronously, are on the new one, as checked below).
            .filter(|(_, at, _)| *at > times.promoted_at)
            .all(|(_, _, port)| *port == new_port),
        "a write after the promotion ran somewhere else than the new primary"
    );
    let missing = missing_writes(new_port, &writer.acked).await;
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on the new primary: {missing:?}"
    );
    for r in readers {
        assert!(
            r.errors.is_empty(),
            "a reader saw errors during the failover: {:?}",
            r.errors
        );
        assert!(!r.reads.is_empty());
        assert!(
            r.reads
                .iter()
                .all(|(at, port, in_recovery)| *at < times.promoted_at
                    || *port != old_port
                    || *in_recovery),
            "a read ran on the old primary after the promotion"
        );
    }
    (resumed - times.kill_started, after_promotion)
}
