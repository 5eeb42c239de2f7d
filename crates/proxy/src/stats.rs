//! Counters sessions bump on the hot path: plain relaxed atomics, read by the admin console and
//! copied into the Prometheus exposition at scrape time. The latency histograms are fixed
//! buckets of atomics too (`latency`), rendered at scrape time.

use pgrouter_sql::{Route, Rule};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Routing decisions, as counted per node: the statement's route.
pub const DECISIONS: [Route; 3] = [Route::Read, Route::Primary, Route::AllBackends];

/// Per-node counters.
#[derive(Debug)]
pub struct NodeStats {
    /// Statements run on this node, by route (indexed like [`DECISIONS`]).
    pub routed: [crate::per_worker::Counter; 3],
    /// Clients that waited `pool.checkout_timeout` for a server connection in vain.
    pub checkout_timeouts: AtomicU64,
    /// Time clients waited to check out a server connection of this node.
    pub checkout_wait: crate::latency::LatencyHistogram,
}

/// A node's counters summed over its slots (a re-addressed node has had more than one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTotals {
    /// Node name.
    pub name: String,
    /// Statements by route (indexed like [`DECISIONS`]).
    pub routed: [u64; 3],
    /// See [`NodeStats::checkout_timeouts`].
    pub checkout_timeouts: u64,
    /// See [`NodeStats::checkout_wait`].
    pub checkout_wait: crate::latency::Snapshot,
}

/// Everything sessions count.
#[derive(Debug)]
pub struct Stats {
    /// Indexed by node slot (see `pgrouter_slots`); grows when a reload adds nodes.
    pub nodes: pgrouter_slots::Slots<NodeStats>,
    /// Statements classified, by rule (indexed by `Rule as usize`).
    pub rules: [crate::per_worker::Counter; Rule::ALL.len()],
    /// Errors sent to clients, by SQLSTATE class (see [`class_index`]).
    errors: Vec<AtomicU64>,
    /// Client connections accepted.
    pub clients_accepted: AtomicU64,
    /// Logins refused for a wrong password or an unknown user.
    pub auth_failures: AtomicU64,
    /// Logins refused by the client limits.
    pub clients_refused: AtomicU64,
    /// Bytes received from and sent to clients that have disconnected (live clients keep their
    /// own counts, see `clients`).
    pub closed_bytes_received: AtomicU64,
    /// See `closed_bytes_received`.
    pub closed_bytes_sent: AtomicU64,
    /// Client requests answered (a simple query, or an extended-protocol segment up to `Sync`).
    pub requests: crate::per_worker::Counter,
    /// Transactions ended (committed or rolled back), explicit ones only.
    pub transactions: crate::per_worker::Counter,
    /// Requests and bytes of authenticated clients that have disconnected, per database (for the
    /// console's PgBouncer-style `SHOW STATS`); written once per session end, never per request.
    closed_by_database: std::sync::Mutex<std::collections::BTreeMap<String, DatabaseTotals>>,
    /// Request latency through pgrouter: request received → `ReadyForQuery` relayed.
    pub request_duration: crate::latency::LatencyHistogram,
    /// Transaction latency: first request of an explicit transaction → back to idle.
    pub transaction_duration: crate::latency::LatencyHistogram,
}

/// Requests answered and bytes exchanged by a database's clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatabaseTotals {
    /// Requests answered.
    pub requests: u64,
    /// Bytes received from clients.
    pub received: u64,
    /// Bytes sent to clients.
    pub sent: u64,
}

impl DatabaseTotals {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: DatabaseTotals) {
        self.requests += other.requests;
        self.received += other.received;
        self.sent += other.sent;
    }
}

/// Databases counted by name in [`Stats::closed_by_database`]; later ones share one row, so
/// clients naming databases at will cannot grow it without bound.
const MAX_COUNTED_DATABASES: usize = 1000;

/// The row of databases past [`MAX_COUNTED_DATABASES`].
pub const OTHER_DATABASES: &str = "(other)";

/// SQLSTATE classes are two characters of `0-9A-Z`.
const CLASS_SYMBOLS: usize = 36;

impl Stats {
    /// Zeroed counters for `nodes` (names used as metric labels).
    pub fn new(nodes: &[String]) -> Self {
        let stats = Self {
            nodes: pgrouter_slots::Slots::default(),
            rules: Default::default(),
            errors: (0..CLASS_SYMBOLS * CLASS_SYMBOLS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            clients_accepted: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            clients_refused: AtomicU64::new(0),
            closed_bytes_received: AtomicU64::new(0),
            closed_bytes_sent: AtomicU64::new(0),
            requests: Default::default(),
            transactions: Default::default(),
            closed_by_database: std::sync::Mutex::default(),
            request_duration: Default::default(),
            transaction_duration: Default::default(),
        };
        stats.grow_to(nodes.len());
        stats
    }

    /// Zeroed counters for node slots up to `len - 1` that have none yet (a reload added nodes).
    /// Metrics name a slot by its node's name at scrape time ([`Stats::by_node_name`]).
    pub fn grow_to(&self, len: usize) {
        self.nodes.grow_to(len, |_| NodeStats {
            routed: Default::default(),
            checkout_timeouts: AtomicU64::new(0),
            checkout_wait: Default::default(),
        });
    }

    /// Counts a statement that runs on `node`.
    pub fn routed(&self, node: usize, route: Route, rule: Rule) {
        let decision = match route {
            Route::Read => 0,
            Route::Primary => 1,
            Route::AllBackends => 2,
        };
        self.nodes.with(node, |n| {
            n.routed[decision].add(1);
        });
        self.rules[rule as usize].add(1);
    }

    /// Adds a disconnected client's counts to its database's.
    pub fn client_closed(&self, database: &str, totals: DatabaseTotals) {
        let mut map = self
            .closed_by_database
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if map.contains_key(database) || map.len() < MAX_COUNTED_DATABASES {
            database
        } else {
            OTHER_DATABASES
        };
        map.entry(key.to_owned()).or_default().add(totals);
    }

    /// Counts of disconnected clients, per database.
    pub fn closed_by_database(&self) -> std::collections::BTreeMap<String, DatabaseTotals> {
        self.closed_by_database
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Counts an error sent to a client, by the class of its SQLSTATE.
    pub fn error(&self, sqlstate: &[u8]) {
        if let Some(i) = class_index(sqlstate) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors counted so far, by class (only classes seen).
    pub fn errors_by_class(&self) -> Vec<(String, u64)> {
        const SYMBOLS: &[u8; CLASS_SYMBOLS] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        self.errors
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| {
                    let class = [SYMBOLS[i / CLASS_SYMBOLS], SYMBOLS[i % CLASS_SYMBOLS]];
                    (String::from_utf8_lossy(&class).into_owned(), n)
                })
            })
            .collect()
    }

    /// Records how long a checkout of `node` waited.
    pub fn checkout_waited(&self, node: usize, waited: Duration) {
        self.nodes.with(node, |n| {
            n.checkout_wait.record(waited);
        });
    }

    /// Counters per node name since start-up, removed nodes included, in the order names first
    /// appeared; `name` gives a slot's node name.
    pub fn by_node_name(&self, name: impl Fn(usize) -> String) -> Vec<NodeTotals> {
        let mut totals: Vec<NodeTotals> = Vec::new();
        for (i, node) in self.nodes.snapshot().iter().enumerate() {
            let name = name(i);
            let at = match totals.iter().position(|t| t.name == name) {
                Some(at) => at,
                None => {
                    totals.push(NodeTotals {
                        name,
                        routed: [0; 3],
                        checkout_timeouts: 0,
                        checkout_wait: Default::default(),
                    });
                    totals.len() - 1
                }
            };
            let total = &mut totals[at];
            for (sum, counter) in total.routed.iter_mut().zip(&node.routed) {
                *sum += counter.get();
            }
            total.checkout_timeouts += node.checkout_timeouts.load(Ordering::Relaxed);
            total.checkout_wait.add(&node.checkout_wait.snapshot());
        }
        totals
    }

    /// Reads (route `read`) that ran on `node`.
    pub fn reads_served(&self, node: usize) -> u64 {
        self.nodes.with(node, |n| n.routed[0].get()).unwrap_or(0)
    }
}

/// The counter slot of an SQLSTATE's class: its first two characters, each `0-9` or `A-Z`.
fn class_index(sqlstate: &[u8]) -> Option<usize> {
    let symbol = |c: u8| match c {
        b'0'..=b'9' => Some(usize::from(c - b'0')),
        b'A'..=b'Z' => Some(usize::from(c - b'A') + 10),
        _ => None,
    };
    match sqlstate {
        [a, b, ..] => Some(symbol(*a)? * CLASS_SYMBOLS + symbol(*b)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_class() {
        let stats = Stats::new(&["a".into()]);
        for code in [
            &b"08006"[..],
            b"08001",
            b"57P01",
            b"XX000",
            b"42601",
            b"",
            b"0",
            b"a1",
        ] {
            stats.error(code);
        }
        assert_eq!(
            stats.errors_by_class(),
            vec![
                ("08".to_owned(), 2),
                ("42".to_owned(), 1),
                ("57".to_owned(), 1),
                ("XX".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn statements_are_counted_by_node_route_and_rule() {
        let stats = Stats::new(&["a".into(), "b".into()]);
        stats.routed(1, Route::Read, Rule::ReadOnlyQuery);
        stats.routed(1, Route::Read, Rule::Show);
        stats.routed(0, Route::Primary, Rule::Write);
        stats.routed(7, Route::Primary, Rule::Write);
        assert_eq!(stats.reads_served(1), 2);
        assert_eq!(stats.reads_served(0), 0);
        assert_eq!(stats.nodes.with(0, |n| n.routed[1].get()), Some(1));
        assert_eq!(stats.rules[Rule::Write as usize].get(), 2);
    }
}
