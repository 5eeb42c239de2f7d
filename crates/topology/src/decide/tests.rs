//! The election and exclusion rules, one row per situation.

use super::*;
use crate::observation::ManagerView;

fn primary(tl: u32, pos: u64) -> Observation {
    Observation {
        in_recovery: false,
        timeline: Some(tl),
        wal_position: Some(pos),
        ..Observation::default()
    }
}

fn replica(tl: Option<u32>, pos: u64, delay: f64) -> Observation {
    Observation {
        in_recovery: true,
        timeline: tl,
        wal_position: Some(pos),
        replay_delay: Some(delay),
        streaming: Some(true),
        ..Observation::default()
    }
}

fn patroni(mut o: Observation, role: ManagerRole, state: &str) -> Observation {
    o.manager = Some(ManagerView {
        role,
        state: state.into(),
        timeline: o.timeline,
        wal_position: o.wal_position,
        no_load_balance: false,
        no_failover: false,
    });
    o
}

/// The same, tagged `noloadbalance` in Patroni.
fn no_load_balance(mut o: Observation) -> Observation {
    if let Some(m) = o.manager.as_mut() {
        m.no_load_balance = true;
    }
    o
}

fn repmgr(mut o: Observation, rows: &[(&str, &str, bool)]) -> Observation {
    o.repmgr = Some(
        rows.iter()
            .map(|(name, kind, active)| RepmgrRow {
                name: (*name).into(),
                kind: (*kind).into(),
                active: *active,
                host: None,
                port: None,
            })
            .collect(),
    );
    o
}

/// A node: its health and latest observation.
type Node = (HealthState, Option<Observation>);

fn up(o: Observation) -> Node {
    (HealthState::Up, Some(o))
}

fn down() -> Node {
    (HealthState::Down, None)
}

const NAMES: [&str; 3] = ["pg0", "pg1", "pg2"];

fn run(mode: Discovery, nodes: &[Node], seen: u32) -> RoutingTable {
    let inputs: Vec<NodeInput<'_>> = nodes
        .iter()
        .enumerate()
        .map(|(i, (health, obs))| NodeInput {
            name: NAMES[i],
            host: "127.0.0.1",
            port: 5432 + i as u16,
            weight: 1,
            health: *health,
            observation: obs.as_ref(),
            last_error: (*health == HealthState::Down).then_some("connection refused"),
            disabled: false,
            removed: false,
        })
        .collect();
    let policy = Policy {
        discovery: mode,
        max_lag_bytes: 1000,
        max_lag_seconds: Some(10.0),
    };
    decide(&inputs, &policy, seen)
}

/// (why, mode, nodes, timeline seen before, expected primary, expected readers, expected states)
type Case = (
    &'static str,
    Discovery,
    Vec<Node>,
    u32,
    Option<usize>,
    Vec<usize>,
    [NodeState; 3],
);

#[test]
fn election_and_rotation() {
    use Discovery::*;
    use ManagerRole::*;
    use NodeState::*;
    let r = |pos| replica(Some(1), pos, 0.0);
    let healthy_repmgr = [
        ("pg0", "primary", true),
        ("pg1", "standby", true),
        ("pg2", "standby", true),
    ];
    let failed_over = [
        ("pg0", "primary", false),
        ("pg1", "primary", true),
        ("pg2", "standby", true),
    ];
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("healthy cluster", Sql,
            vec![up(primary(1, 5000)), up(r(5000)), up(r(4900))], 1,
            Some(0), vec![0, 1, 2], [Up, Up, Up]),
        ("nothing probed", Sql,
            vec![(HealthState::Unknown, None), (HealthState::Unknown, None), (HealthState::Unknown, None)], 0,
            None, vec![], [Down, Down, Down]),
        ("primary down: replicas keep serving reads", Sql,
            vec![down(), up(r(5000)), up(r(5000))], 1,
            None, vec![1, 2], [Down, Up, Up]),
        ("promoted replica on a newer timeline", Sql,
            vec![down(), up(primary(2, 6000)), up(replica(Some(2), 6000, 0.0))], 1,
            Some(1), vec![1, 2], [Down, Up, Up]),
        ("old primary back unrewound is a false primary", Sql,
            vec![up(primary(1, 5000)), up(primary(2, 6000)), up(replica(Some(2), 6000, 0.0))], 2,
            Some(1), vec![1, 2], [Excluded, Up, Up]),
        ("false primary stays out while the real one is down", Sql,
            vec![up(primary(1, 5000)), down(), up(replica(Some(2), 6000, 0.0))], 2,
            None, vec![2], [Excluded, Down, Up]),
        ("split brain on one timeline: writes refused", Sql,
            vec![up(primary(2, 5000)), up(primary(2, 6000)), up(r(5000))], 2,
            None, vec![2], [Excluded, Excluded, Up]),
        ("replica on an older timeline than the primary", Sql,
            vec![down(), up(primary(2, 6000)), up(replica(Some(1), 5000, 0.0))], 1,
            Some(1), vec![1], [Down, Up, Excluded]),
        ("replica with unknown timeline is kept", Sql,
            vec![up(primary(1, 5000)), up(replica(None, 5000, 0.0)), up(r(5000))], 1,
            Some(0), vec![0, 1, 2], [Up, Up, Up]),
        ("lag in bytes over the limit", Sql,
            vec![up(primary(1, 5000)), up(r(3000)), up(r(4500))], 1,
            Some(0), vec![0, 2], [Up, Lagging, Up]),
        ("lag in seconds over the limit", Sql,
            vec![up(primary(1, 5000)), up(replica(Some(1), 5000, 30.0)), up(r(5000))], 1,
            Some(0), vec![0, 2], [Up, Lagging, Up]),
        ("patroni leader", Patroni,
            vec![up(patroni(primary(1, 5000), Leader, "running")), up(patroni(r(5000), Replica, "running")),
                 up(patroni(r(5000), Replica, "running"))], 1,
            Some(0), vec![0, 1, 2], [Up, Up, Up]),
        ("patroni: writable node that is not the leader", Patroni,
            vec![up(patroni(primary(1, 5000), Replica, "running")), up(patroni(r(5000), Replica, "running")),
                 up(patroni(r(5000), Replica, "running"))], 1,
            None, vec![1, 2], [Excluded, Up, Up]),
        ("patroni: replica not running", Patroni,
            vec![up(patroni(primary(1, 5000), Leader, "running")), up(patroni(r(5000), Replica, "starting")),
                 up(patroni(r(5000), Replica, "running"))], 1,
            Some(0), vec![0, 2], [Up, Excluded, Up]),
        ("patroni: a replica tagged noloadbalance serves no reads", Patroni,
            vec![up(patroni(primary(1, 5000), Leader, "running")), up(no_load_balance(patroni(r(5000), Replica, "running"))),
                 up(patroni(r(5000), Replica, "running"))], 1,
            Some(0), vec![0, 2], [Up, Excluded, Up]),
        ("patroni: a leader tagged noloadbalance is primary and serves no reads", Patroni,
            vec![up(no_load_balance(patroni(primary(1, 5000), Leader, "running"))), up(patroni(r(5000), Replica, "running")),
                 up(patroni(r(5000), Replica, "running"))], 1,
            Some(0), vec![1, 2], [Up, Up, Up]),
        ("patroni: stale leader view loses to the newer timeline", Patroni,
            vec![up(patroni(primary(1, 5000), Leader, "running")), up(patroni(primary(2, 5000), Leader, "running")),
                 up(patroni(replica(Some(2), 5000, 0.0), Replica, "running"))], 1,
            Some(1), vec![1, 2], [Excluded, Up, Up]),
        ("repmgr primary", Repmgr,
            vec![up(repmgr(primary(1, 5000), &healthy_repmgr)), up(repmgr(r(5000), &healthy_repmgr)),
                 up(repmgr(r(5000), &healthy_repmgr))], 1,
            Some(0), vec![0, 1, 2], [Up, Up, Up]),
        ("repmgr after failover; stale copy on the restarted old primary", Repmgr,
            vec![up(repmgr(primary(1, 5000), &healthy_repmgr)), up(repmgr(primary(2, 6000), &failed_over)),
                 up(repmgr(replica(Some(2), 6000, 0.0), &failed_over))], 2,
            Some(1), vec![1, 2], [Excluded, Up, Up]),
        ("repmgr: promoted before the metadata says so", Repmgr,
            vec![down(), up(repmgr(primary(2, 6000), &healthy_repmgr)), up(repmgr(r(5000), &healthy_repmgr))], 1,
            None, vec![2], [Down, Excluded, Up]),
        ("repmgr: inactive standby", Repmgr,
            vec![up(repmgr(primary(1, 5000), &[("pg0", "primary", true), ("pg1", "standby", false), ("pg2", "standby", true)])),
                 up(repmgr(r(5000), &[("pg0", "primary", true), ("pg1", "standby", false), ("pg2", "standby", true)])),
                 up(r(5000))], 1,
            Some(0), vec![0, 2], [Up, Excluded, Up]),
    ];
    for (why, mode, nodes, seen, primary, readers, states) in cases {
        let t = run(mode, &nodes, seen);
        assert_eq!(t.primary, primary, "{why}: primary ({t:#?})");
        let got: Vec<usize> = t.readers.iter().map(|(n, _)| *n).collect();
        assert_eq!(got, readers, "{why}: readers ({t:#?})");
        let got_states: Vec<NodeState> = t.nodes.iter().map(|n| n.state).collect();
        assert_eq!(got_states, states, "{why}: states ({t:#?})");
        assert_eq!(
            t.primary.is_none(),
            t.no_primary_reason.is_some(),
            "{why}: reason"
        );
    }
}

/// Healthy nodes with these observations, `disabled` and `removed` as `flags(index)` says, in
/// `sql` mode without lag limits.
fn decide_up(obs: &[Observation], flags: impl Fn(usize) -> (bool, bool)) -> RoutingTable {
    let inputs: Vec<NodeInput<'_>> = obs
        .iter()
        .enumerate()
        .map(|(i, o)| NodeInput {
            name: NAMES[i],
            host: "h",
            port: 1 + i as u16,
            weight: 1,
            health: HealthState::Up,
            observation: Some(o),
            last_error: None,
            disabled: flags(i).0,
            removed: flags(i).1,
        })
        .collect();
    let policy = Policy {
        discovery: Discovery::Sql,
        max_lag_bytes: 0,
        max_lag_seconds: None,
    };
    decide(&inputs, &policy, 0)
}

#[test]
fn disabled_nodes_serve_no_reads() {
    let obs = [primary(1, 10), replica(Some(1), 10, 0.0)];
    let t = decide_up(&obs, |_| (true, false));
    assert_eq!(t.primary, Some(0), "a disabled primary still takes writes");
    assert!(t.readers.is_empty());
    assert_eq!(t.nodes[1].state, NodeState::Disabled);
}

#[test]
fn changes_are_described_once() {
    let before = run(
        Discovery::Sql,
        &[
            up(primary(1, 5)),
            up(replica(Some(1), 5, 0.0)),
            up(replica(Some(1), 5, 0.0)),
        ],
        1,
    );
    let after = run(
        Discovery::Sql,
        &[down(), up(primary(2, 9)), up(replica(Some(2), 9, 0.0))],
        1,
    );
    assert!(before.same_shape(&before.clone()));
    assert!(!after.same_shape(&before));
    let lines = after.describe_changes(&before);
    assert_eq!(lines[0], "primary: pg0 -> pg1");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("node pg0: primary up -> unknown down")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("node pg1: replica up -> primary up")),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 3, "pg2 stays an up replica: {lines:?}");
}

#[test]
fn removed_nodes_are_never_routed_to() {
    // pg0 still answers as a writable primary, pg2 as a replica, but both left the
    // configuration; repmgr's row for pg2's address must not match the removed slot either.
    let obs = [
        primary(1, 10),
        replica(Some(1), 10, 0.0),
        replica(Some(1), 10, 0.0),
    ];
    let t = decide_up(&obs, |i| (false, i != 1));
    assert_eq!(t.primary, None);
    assert_eq!(t.readers, vec![(1, 1)]);
    assert_eq!(t.nodes[0].state, NodeState::Removed);
    assert_eq!(t.nodes[2].state, NodeState::Removed);
    assert_eq!(t.configured().map(|(i, _)| i).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        t.no_primary_reason.as_deref(),
        Some("no reachable node is out of recovery")
    );
}
