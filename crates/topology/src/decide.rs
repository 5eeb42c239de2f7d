//! From probe results to a routing table: a pure function, so every rule is table-tested.
//!
//! Rules, in order:
//! 1. A node that is not up (health hysteresis) or not probed yet is down.
//! 2. A node out of recovery claims to be primary. The HA manager must back the claim: in
//!    `patroni` mode the node's Patroni must report it as the running leader; in `repmgr` mode
//!    the newest copy of `repmgr.nodes` (from the node on the highest timeline) must name it as
//!    the active primary. In `sql` mode every claim is backed.
//! 3. A claim on a timeline older than the newest seen is a false primary (a former primary back
//!    without rewind) and is never used, not even for reads.
//! 4. Of several backed claims the highest timeline wins; if the highest is shared, nobody is
//!    primary and writes are refused (split brain).
//! 5. A standby serves reads unless its HA manager has it out (repmgr: inactive; Patroni: not
//!    running, or tagged `noloadbalance`), it is on an older timeline than the primary, or it
//!    lags more than `max_lag_bytes` / `max_lag_seconds`. A primary tagged `noloadbalance`
//!    serves no reads either.

use crate::health::HealthState;
use crate::observation::{ManagerRole, Observation, RepmgrRow};
use crate::table::{NodeState, NodeStatus, Role, RoutingTable};
use pgrouter_config::Discovery;

/// One node as the aggregator knows it.
#[derive(Debug, Clone)]
pub struct NodeInput<'a> {
    /// Configured name.
    pub name: &'a str,
    /// Configured host.
    pub host: &'a str,
    /// Configured port.
    pub port: u16,
    /// Configured read weight.
    pub weight: u32,
    /// Health after hysteresis.
    pub health: HealthState,
    /// The latest successful probe.
    pub observation: Option<&'a Observation>,
    /// Why the latest probe failed, if it did.
    pub last_error: Option<&'a str>,
    /// Taken out of rotation by an operator (reads only: a disabled primary still takes writes).
    pub disabled: bool,
    /// No longer in the configuration: never primary, never read from, whatever it reports.
    pub removed: bool,
}

/// The thresholds and the discovery mode.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Where roles come from.
    pub discovery: Discovery,
    /// Replicas further behind than this many bytes serve no reads (0: no limit).
    pub max_lag_bytes: u64,
    /// Replicas further behind than this many seconds serve no reads (`None`: no limit).
    pub max_lag_seconds: Option<f64>,
}

/// Builds the routing table. `max_timeline_seen` is the newest timeline any probe has reported so
/// far (the aggregator remembers it across probes, so a false primary stays out even while the
/// real one is down). The result's `generation` is left at 0 for the caller to set.
pub fn decide(nodes: &[NodeInput<'_>], policy: &Policy, max_timeline_seen: u32) -> RoutingTable {
    let mut rows: Vec<NodeStatus> = nodes.iter().map(initial_row).collect();
    let live: Vec<Option<&Observation>> = nodes
        .iter()
        .map(|n| {
            n.observation
                .filter(|_| n.health == HealthState::Up && !n.removed)
        })
        .collect();
    let newest_timeline = live
        .iter()
        .flatten()
        .filter_map(|o| o.timeline)
        .chain([max_timeline_seen])
        .max()
        .unwrap_or(0);
    let repmgr_primary = match policy.discovery {
        Discovery::Repmgr => Some(repmgr_primary(nodes, &live)),
        Discovery::Sql | Discovery::Patroni => None,
    };

    // Rules 2 and 3: backed claims that are not false primaries.
    let mut candidates = Vec::new();
    for (i, obs) in live.iter().enumerate() {
        let Some(obs) = obs.filter(|o| !o.in_recovery) else {
            continue;
        };
        let row = &mut rows[i];
        row.role = Role::Primary;
        let not_backed = match (policy.discovery, &repmgr_primary) {
            (Discovery::Patroni, _) => match &obs.manager {
                Some(m) if m.role == ManagerRole::Leader && m.running() => None,
                Some(m) => Some(format!(
                    "out of recovery, but Patroni reports it as {} ({})",
                    if m.role == ManagerRole::Leader {
                        "leader"
                    } else {
                        "replica"
                    },
                    m.state
                )),
                None => Some("out of recovery, but its Patroni did not answer".into()),
            },
            (Discovery::Repmgr, Some(Ok(p))) if *p == i => None,
            (Discovery::Repmgr, Some(Ok(p))) => Some(format!(
                "out of recovery, but repmgr's primary is {}",
                nodes[*p].name
            )),
            (Discovery::Repmgr, Some(Err(why))) => Some(format!("out of recovery, but {why}")),
            _ => None,
        };
        if let Some(why) = not_backed {
            exclude(row, why);
            continue;
        }
        match obs.timeline {
            Some(tl) if tl < newest_timeline => exclude(
                row,
                format!(
                    "false primary: writable on timeline {tl}, but timeline {newest_timeline} exists (not rewound?)"
                ),
            ),
            _ => candidates.push(i),
        }
    }

    // Rule 4.
    let (primary, no_primary_reason) = elect(nodes, &live, &candidates, &mut rows);
    if let Some(p) = primary {
        rows[p].state = NodeState::Up;
        rows[p].reason = match policy.discovery {
            Discovery::Sql => "writable".into(),
            Discovery::Patroni => "Patroni leader".into(),
            Discovery::Repmgr => "repmgr primary".into(),
        };
        let no_load_balance = live[p]
            .and_then(|o| o.manager.as_ref())
            .is_some_and(|m| m.no_load_balance);
        if nodes[p].disabled {
            rows[p].reason.push_str("; disabled for reads");
        } else if no_load_balance {
            rows[p]
                .reason
                .push_str("; Patroni tag noloadbalance: no reads");
        } else {
            rows[p].weight = nodes[p].weight;
        }
    }

    // Rule 5.
    let primary_position = primary.and_then(|p| live[p]).and_then(wal_position);
    let primary_timeline = primary.and_then(|p| live[p]).and_then(|o| o.timeline);
    for (i, obs) in live.iter().enumerate() {
        let Some(obs) = obs.filter(|o| o.in_recovery) else {
            continue;
        };
        let row = &mut rows[i];
        row.role = Role::Replica;
        row.lag_bytes = primary_position
            .zip(wal_position(obs))
            .map(|(p, r)| p.saturating_sub(r));
        row.lag_seconds = obs.replay_delay;
        if let Some(why) = replica_exclusion(policy, nodes, i, obs) {
            exclude(row, why);
            continue;
        }
        match (obs.timeline, primary_timeline) {
            (Some(tl), Some(ptl)) if tl < ptl => {
                exclude(row, format!("on timeline {tl}, the primary is on {ptl}"));
                continue;
            }
            _ => {}
        }
        if let Some(lag) = row
            .lag_bytes
            .filter(|l| policy.max_lag_bytes > 0 && *l > policy.max_lag_bytes)
        {
            row.state = NodeState::Lagging;
            row.reason = format!("{lag} bytes behind (limit {})", policy.max_lag_bytes);
            continue;
        }
        if let Some((lag, max)) = row
            .lag_seconds
            .zip(policy.max_lag_seconds)
            .filter(|(l, m)| l > m)
        {
            row.state = NodeState::Lagging;
            row.reason = format!("{lag:.1}s behind (limit {max:.1}s)");
            continue;
        }
        if nodes[i].disabled {
            row.state = NodeState::Disabled;
            row.reason = "disabled by an operator".into();
            continue;
        }
        row.state = NodeState::Up;
        row.weight = nodes[i].weight;
        row.reason = "streaming replica".into();
        if obs.streaming == Some(false) {
            row.reason = "replica (WAL receiver not streaming)".into();
        }
        if obs.manager.as_ref().is_some_and(|m| m.no_failover) {
            row.reason.push_str("; Patroni tag nofailover");
        }
    }

    let readers = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == NodeState::Up && r.weight > 0)
        .map(|(i, r)| (i, r.weight))
        .collect();
    RoutingTable {
        generation: 0,
        primary,
        no_primary_reason,
        nodes: rows,
        readers,
    }
}

fn initial_row(n: &NodeInput<'_>) -> NodeStatus {
    let (state, reason) = match (n.health, n.observation) {
        _ if n.removed => (
            NodeState::Removed,
            "removed from the configuration".to_owned(),
        ),
        (HealthState::Up, Some(_)) => (NodeState::Up, String::new()),
        (HealthState::Unknown, _) | (_, None) if n.last_error.is_none() => {
            (NodeState::Down, "not checked yet".to_owned())
        }
        _ => (
            NodeState::Down,
            n.last_error.unwrap_or("health check failing").to_owned(),
        ),
    };
    NodeStatus {
        name: n.name.to_owned(),
        host: n.host.to_owned(),
        port: n.port,
        role: Role::Unknown,
        state,
        weight: 0,
        lag_bytes: None,
        lag_seconds: None,
        wal_position: n.observation.and_then(wal_position),
        timeline: n
            .observation
            .and_then(|o| o.timeline.or(o.manager.as_ref().and_then(|m| m.timeline))),
        reason,
        // Stamped when the table is published.
        last_change: 0,
    }
}

fn exclude(row: &mut NodeStatus, why: String) {
    row.state = NodeState::Excluded;
    row.reason = why;
}

/// WAL position as the HA manager reports it (Patroni), else as SQL did.
fn wal_position(o: &Observation) -> Option<u64> {
    o.manager
        .as_ref()
        .and_then(|m| m.wal_position)
        .or(o.wal_position)
}

/// The single primary among backed claims, or why there is none.
fn elect(
    nodes: &[NodeInput<'_>],
    live: &[Option<&Observation>],
    candidates: &[usize],
    rows: &mut [NodeStatus],
) -> (Option<usize>, Option<String>) {
    match candidates {
        [] => {
            let why = if rows.iter().any(|r| r.role == Role::Primary) {
                "no node is a valid primary (see the nodes' reasons)"
            } else if live.iter().any(Option::is_some) {
                "no reachable node is out of recovery"
            } else {
                "no node is reachable"
            };
            (None, Some(why.into()))
        }
        [only] => (Some(*only), None),
        _ => {
            let timeline = |i: usize| live[i].and_then(|o| o.timeline).unwrap_or(0);
            let best = candidates.iter().map(|&i| timeline(i)).max().unwrap_or(0);
            let winners: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| timeline(i) == best)
                .collect();
            if let [winner] = winners[..] {
                for &i in candidates.iter().filter(|&&i| i != winner) {
                    exclude(
                        &mut rows[i],
                        format!(
                            "split brain: {} is primary on newer timeline {best}",
                            nodes[winner].name
                        ),
                    );
                }
                return (Some(winner), None);
            }
            let names: Vec<&str> = winners.iter().map(|&i| nodes[i].name).collect();
            let why = format!(
                "split brain: {} all claim to be primary on timeline {best}; writes refused",
                names.join(", ")
            );
            for &i in candidates {
                exclude(&mut rows[i], why.clone());
            }
            (None, Some(why))
        }
    }
}

/// repmgr's active primary, from the copy of `repmgr.nodes` on the node with the newest
/// timeline (the old primary's copy is stale after a failover).
fn repmgr_primary(nodes: &[NodeInput<'_>], live: &[Option<&Observation>]) -> Result<usize, String> {
    let newest = node_on_newest_timeline(
        live.iter()
            .map(|o| o.filter(|o| o.repmgr.as_ref().is_some_and(|r| !r.is_empty()))),
    )
    .and_then(|o| o.repmgr.as_ref())
    .ok_or_else(|| "repmgr's metadata could not be read from any node".to_owned())?;
    let row = newest
        .iter()
        .find(|r| r.kind == "primary" && r.active)
        .ok_or_else(|| "repmgr names no active primary".to_owned())?;
    node_of_row(nodes, row)
        .ok_or_else(|| format!("repmgr's primary {:?} is not a configured node", row.name))
}

/// Of the observations given, the one from the node on the newest timeline (then the furthest
/// WAL position): after a failover, the copy of the HA manager's metadata that is current.
pub(crate) fn node_on_newest_timeline<'a>(
    observations: impl Iterator<Item = Option<&'a Observation>>,
) -> Option<&'a Observation> {
    observations
        .flatten()
        .max_by_key(|o| (o.timeline.unwrap_or(0), wal_position(o).unwrap_or(0)))
}

/// The configured node a repmgr row describes: same name, else same host and port (removed
/// nodes are not configured any more).
fn node_of_row(nodes: &[NodeInput<'_>], row: &RepmgrRow) -> Option<usize> {
    let configured = |i: &usize| !nodes[*i].removed;
    let by_name = (0..nodes.len())
        .filter(configured)
        .find(|&i| nodes[i].name == row.name);
    by_name.or_else(|| {
        (0..nodes.len()).filter(configured).find(|&i| {
            row.host.as_deref() == Some(nodes[i].host) && row.port.unwrap_or(5432) == nodes[i].port
        })
    })
}

/// Why the HA manager keeps a standby out of rotation, if it does.
fn replica_exclusion(
    policy: &Policy,
    nodes: &[NodeInput<'_>],
    i: usize,
    obs: &Observation,
) -> Option<String> {
    match policy.discovery {
        Discovery::Sql => None,
        Discovery::Patroni => match &obs.manager {
            Some(m) if m.running() && m.no_load_balance => {
                Some("Patroni tag noloadbalance".to_owned())
            }
            Some(m) if m.running() => None,
            Some(m) => Some(format!("Patroni reports it {}", m.state)),
            None => Some("its Patroni did not answer".into()),
        },
        Discovery::Repmgr => {
            let row = obs
                .repmgr
                .as_ref()?
                .iter()
                .find(|r| node_of_row(nodes, r) == Some(i))?;
            (!row.active).then(|| "inactive in repmgr".to_owned())
        }
    }
}

#[cfg(test)]
mod tests;
