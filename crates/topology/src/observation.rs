//! What one probe of one node saw.

use std::time::Duration;

/// A successful probe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// The timeline the node writes (primary) or receives (standby, when the probe's role may read
    /// `pg_stat_wal_receiver`; `None` otherwise).
    pub timeline: Option<u32>,
    /// WAL position in bytes: `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on
    /// a standby.
    pub wal_position: Option<u64>,
    /// Standby only: seconds since the last replayed transaction while WAL is still waiting to be
    /// replayed; 0 when everything received has been replayed.
    pub replay_delay: Option<f64>,
    /// The standby's WAL receiver is streaming.
    pub streaming: Option<bool>,
    /// What the HA manager says about this node (Patroni discovery).
    pub manager: Option<ManagerView>,
    /// repmgr's node list as this node's copy of `repmgr.nodes` has it (repmgr discovery).
    pub repmgr: Option<Vec<RepmgrRow>>,
    /// How long the probe took.
    pub latency: Duration,
}

/// A node's role as its HA manager reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerRole {
    /// Holds the leader lock (Patroni `master`/`primary`/`leader`).
    Leader,
    /// A replica (`replica`, `sync_standby`, `standby_leader` …).
    Replica,
}

/// Patroni's view of one node (`GET /patroni` on that node).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerView {
    /// Leader or replica.
    pub role: ManagerRole,
    /// Patroni's `state` (`running`, `starting`, `stopped`, `crashed` …).
    pub state: String,
    /// Timeline as Patroni reports it.
    pub timeline: Option<u32>,
    /// `xlog.location` on the leader, `xlog.replayed_location` on a replica.
    pub wal_position: Option<u64>,
}

impl ManagerView {
    /// Patroni runs PostgreSQL there normally.
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// One row of `repmgr.nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepmgrRow {
    /// `node_name`.
    pub name: String,
    /// `type`: `primary`, `standby` or `witness`.
    pub kind: String,
    /// `active`: false once repmgr considers the node failed.
    pub active: bool,
    /// `host` from the row's `conninfo`.
    pub host: Option<String>,
    /// `port` from the row's `conninfo`.
    pub port: Option<u16>,
}

impl RepmgrRow {
    /// Reads `host` and `port` out of a libpq key/value conninfo string.
    pub fn parse_conninfo(conninfo: &str) -> (Option<String>, Option<u16>) {
        let mut host = None;
        let mut port = None;
        for pair in conninfo.split_whitespace() {
            match pair.split_once('=') {
                Some(("host" | "hostaddr", v)) if host.is_none() => {
                    host = Some(v.trim_matches('\'').to_owned())
                }
                Some(("port", v)) => port = v.trim_matches('\'').parse().ok(),
                _ => {}
            }
        }
        (host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::RepmgrRow;

    #[test]
    fn conninfo_host_and_port() {
        #[rustfmt::skip]
        let cases = [
            ("host=127.0.0.1 port=25433 user=repmgr dbname=repmgr", Some("127.0.0.1"), Some(25433)),
            ("user=repmgr host='db1' port='5432'", Some("db1"), Some(5432)),
            ("hostaddr=10.0.0.1 dbname=repmgr", Some("10.0.0.1"), None),
            ("dbname=repmgr", None, None),
            ("port=notanumber host=h", Some("h"), None),
        ];
        for (conninfo, host, port) in cases {
            let (h, p) = RepmgrRow::parse_conninfo(conninfo);
            assert_eq!((h.as_deref(), p), (host, port), "{conninfo}");
        }
    }
}
