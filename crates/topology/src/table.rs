//! The routing table: an immutable snapshot of who is primary and which nodes serve reads.

use serde::Serialize;
use std::fmt;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts writes (and is the one pgrouter sends them to).
    Primary,
    /// A standby.
    Replica,
    /// Not known (down, not probed yet, or excluded before its role mattered).
    Unknown,
}

/// Whether a node serves, and if not, the kind of reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// In the table: the primary, or a replica that serves reads.
    Up,
    /// Unreachable or failing its health checks (or not probed yet).
    Down,
    /// A replica too far behind the primary.
    Lagging,
    /// Reachable but not used: a false primary, the loser of a split brain, a node the HA manager
    /// does not back, or a replica on an older timeline.
    Excluded,
    /// Taken out of rotation by an operator.
    Disabled,
    /// No longer in the configuration (a reload removed or re-addressed it). Its row stays so
    /// that node indexes keep their meaning; views leave it out.
    Removed,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Lagging => "lagging",
            NodeState::Excluded => "excluded",
            NodeState::Disabled => "disabled",
            NodeState::Removed => "removed",
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unknown => "unknown",
        })
    }
}

/// One node's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// Configured name.
    pub name: String,
    /// Host as configured.
    pub host: String,
    /// Port as configured.
    pub port: u16,
    /// Role.
    pub role: Role,
    /// Serving or why not.
    pub state: NodeState,
    /// Share of reads (configured weight; 0 while it serves no reads).
    pub weight: u32,
    /// Bytes of WAL behind the primary (replicas, when known).
    pub lag_bytes: Option<u64>,
    /// Seconds behind (replicas, when known).
    pub lag_seconds: Option<f64>,
    /// WAL position at the last health check, in bytes: what a replica has replayed, or the
    /// primary's current position (for read-your-writes: a replica at or past a session's last
    /// write has it).
    pub wal_position: Option<u64>,
    /// Timeline, when known.
    pub timeline: Option<u32>,
    /// Why the node is in this state, in words.
    pub reason: String,
    /// When its role or state last changed (Unix seconds; the start of monitoring at first).
    pub last_change: u64,
}

/// Who gets what. Published whole; never changed after publication.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingTable {
    /// Increases whenever the primary, a node's role or a node's state changes.
    pub generation: u64,
    /// The node that receives writes, if one is known.
    pub primary: Option<usize>,
    /// Why there is no primary, when there is none.
    pub no_primary_reason: Option<String>,
    /// Every node slot, indexed like the topology's slots: the configured nodes in their first
    /// configuration's order, then those reloads added; removed ones stay as `Removed` rows.
    pub nodes: Vec<NodeStatus>,
    /// Nodes that serve reads (usable replicas, and the primary if its weight is not 0), each with
    /// its weight.
    pub readers: Vec<(usize, u32)>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RoutingTable {
    /// The table before any probe: nothing is known, nothing is served.
    pub fn unknown(nodes: &[(String, String, u16)]) -> Self {
        Self {
            generation: 0,
            primary: None,
            no_primary_reason: Some("no health check has completed yet".into()),
            nodes: nodes
                .iter()
                .map(|(name, host, port)| NodeStatus {
                    name: name.clone(),
                    host: host.clone(),
                    port: *port,
                    role: Role::Unknown,
                    state: NodeState::Down,
                    weight: 0,
                    lag_bytes: None,
                    lag_seconds: None,
                    wal_position: None,
                    timeline: None,
                    reason: "not checked yet".into(),
                    last_change: crate::table::unix_now(),
                })
                .collect(),
            readers: Vec::new(),
        }
    }

    /// The rows of configured nodes (not removed ones), with their indexes.
    pub fn configured(&self) -> impl Iterator<Item = (usize, &NodeStatus)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state != NodeState::Removed)
    }

    /// True when `node` serves reads in this table.
    pub fn serves_reads(&self, node: usize) -> bool {
        self.readers.iter().any(|(n, _)| *n == node)
    }

    /// The same routing decisions (primary, readers, each node's role and state): lag numbers
    /// and reasons may differ.
    pub fn same_shape(&self, other: &RoutingTable) -> bool {
        self.primary == other.primary
            && self.readers == other.readers
            && self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&other.nodes)
                .all(|(a, b)| a.role == b.role && a.state == b.state)
    }

    /// One line per node whose role or state changed from `before`, and one for the primary.
    pub fn describe_changes(&self, before: &RoutingTable) -> Vec<String> {
        let mut lines = Vec::new();
        let name = |t: &RoutingTable, i: Option<usize>| {
            i.and_then(|i| t.nodes.get(i))
                .map_or_else(|| "none".to_owned(), |n| n.name.clone())
        };
        if self.primary != before.primary {
            let why = match (&self.primary, &self.no_primary_reason) {
                (None, Some(r)) => format!(" ({r})"),
                _ => String::new(),
            };
            lines.push(format!(
                "primary: {} -> {}{why}",
                name(before, before.primary),
                name(self, self.primary)
            ));
        }
        for (i, now) in self.nodes.iter().enumerate() {
            let Some(was) = before.nodes.get(i) else {
                lines.push(format!(
                    "node {} added at {}:{}: {} {} ({})",
                    now.name, now.host, now.port, now.role, now.state, now.reason
                ));
                continue;
            };
            if was.role != now.role || was.state != now.state {
                lines.push(format!(
                    "node {}: {} {} -> {} {} ({})",
                    now.name, was.role, was.state, now.role, now.state, now.reason
                ));
            }
        }
        lines
    }
}
