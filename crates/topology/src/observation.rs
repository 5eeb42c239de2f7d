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
    /// The newest row of `repmgr.events` on this node (repmgr discovery), when the probe's role
    /// may read it.
    pub repmgr_event: Option<RepmgrEvent>,
    /// The cluster's members as Patroni lists them (`GET /cluster`), when
    /// `topology.discover_members` is on.
    pub members: Option<Vec<Member>>,
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
    /// Patroni tag `noloadbalance`: the node takes no read traffic (Patroni's `/replica` check
    /// fails for it). pgrouter sends it no reads, as a replica or as the leader.
    pub no_load_balance: bool,
    /// Patroni tag `nofailover`: Patroni never promotes the node. pgrouter, which promotes
    /// nothing, still takes the node as primary only while it is Patroni's running leader (as
    /// for every node); the tag is shown in the node's state.
    pub no_failover: bool,
}

impl ManagerView {
    /// Patroni runs PostgreSQL there normally.
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// A member of the cluster as its HA manager lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The manager's name for it.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Its Patroni REST API, without a path (Patroni only).
    pub patroni_url: Option<String>,
}

/// One row of `repmgr.events`: what repmgr last did (a promotion, a follow, a rejoin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepmgrEvent {
    /// `node_id` of the node it happened on.
    pub node_id: i64,
    /// `event`, e.g. `standby_promote`, `repmgrd_failover_promote`, `standby_follow`.
    pub event: String,
    /// `successful`.
    pub successful: bool,
    /// `event_timestamp`, as the server prints it.
    pub at: String,
    /// `details`.
    pub details: String,
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
