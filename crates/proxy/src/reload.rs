//! What a configuration reload may change while clients stay connected, and what it reports.
//!
//! Everything a session reads per decision (the node list, users, routing, limits, pool and
//! health-check settings, node weights) changes live. What is bound at start-up (the listeners,
//! the worker threads and the discovery mode) keeps its old value and is reported as needing a
//! restart.

use pgrouter_config::Config;
use pgrouter_topology::{MonitorSettings, Policy};

/// Keeps in `new` the old value of every setting that cannot change while running; returns one
/// line per setting that was changed in the file but not applied.
pub fn restart_only(old: &Config, new: &mut Config) -> Vec<String> {
    let mut report = Vec::new();
    let mut keep = |name: &str, changed: bool| {
        if changed {
            report.push(format!(
                "{name} changed in the file: it needs a restart (the old value stays in force)"
            ));
        }
        changed
    };
    if keep("listen", old.listen != new.listen) {
        new.listen = old.listen;
    }
    if keep("admin_listen", old.admin_listen != new.admin_listen) {
        new.admin_listen = old.admin_listen;
    }
    if keep("primary_listen", old.primary_listen != new.primary_listen) {
        new.primary_listen = old.primary_listen;
    }
    if keep(
        "read_only_listen",
        old.read_only_listen != new.read_only_listen,
    ) {
        new.read_only_listen = old.read_only_listen;
    }
    if keep(
        "unix_socket_dir",
        old.unix_socket_path() != new.unix_socket_path(),
    ) {
        new.unix_socket_dir.clone_from(&old.unix_socket_dir);
        new.unix_socket_port = old.unix_socket_port;
    }
    if keep("peer_id", old.peer_id != new.peer_id) {
        new.peer_id = old.peer_id;
    }
    if keep("worker_threads", old.worker_threads != new.worker_threads) {
        new.worker_threads = old.worker_threads;
    }
    if keep(
        "topology.discovery",
        old.topology.discovery != new.topology.discovery,
    ) {
        new.topology.discovery = old.topology.discovery;
    }
    if keep(
        "topology.discover_members",
        old.topology.discover_members != new.topology.discover_members,
    ) {
        new.topology.discover_members = old.topology.discover_members;
    }
    report
}

/// The settings that differ, as `key: old -> new` (secrets masked). Nodes are compared by
/// name (`nodes[pg1].weight: 1 -> 2`, `nodes[pg3]: added`), so reordering them is no change.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let flat = |c: &Config| {
        let mut out = Vec::new();
        let mut value = serde_json::to_value(c).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("nodes");
        }
        flatten("", &value, &mut out);
        out
    };
    let (before, after) = (flat(old), flat(new));
    let mut report = Vec::new();
    for (key, value) in &after {
        match before.iter().find(|(k, _)| k == key) {
            Some((_, was)) if was == value => {}
            Some((_, was)) => report.push(format!("{key}: {was} -> {value}")),
            None => report.push(format!("{key}: (unset) -> {value}")),
        }
    }
    for (key, was) in &before {
        if !after.iter().any(|(k, _)| k == key) {
            report.push(format!("{key}: {was} -> (unset)"));
        }
    }
    report.extend(node_changes(old, new));
    // A password change shows as nothing (both are masked): say so.
    for u in &new.users {
        let changed = old
            .users
            .iter()
            .find(|o| o.name == u.name)
            .is_some_and(|o| o.password() != u.password());
        if changed {
            report.push(format!("users[{}]: password changed", u.name));
        }
    }
    report
}

/// Nodes added, removed, and changed settings of the others, by name.
fn node_changes(old: &Config, new: &Config) -> Vec<String> {
    let flat = |n: &pgrouter_config::NodeConfig| {
        let mut out = Vec::new();
        flatten("", &serde_json::to_value(n).unwrap_or_default(), &mut out);
        out
    };
    let mut report = Vec::new();
    for n in &new.nodes {
        let Some(was) = old.nodes.iter().find(|o| o.name == n.name) else {
            report.push(format!("nodes[{}]: added ({}:{})", n.name, n.host, n.port));
            continue;
        };
        let (before, after) = (flat(was), flat(n));
        for (key, value) in &after {
            let old_value = before
                .iter()
                .find(|(k, _)| k == key)
                .map_or("(unset)", |(_, v)| v.as_str());
            if old_value != value {
                report.push(format!("nodes[{}].{key}: {old_value} -> {value}", n.name));
            }
        }
        for (key, old_value) in &before {
            if !after.iter().any(|(k, _)| k == key) {
                report.push(format!("nodes[{}].{key}: {old_value} -> (unset)", n.name));
            }
        }
    }
    for o in &old.nodes {
        if !new.nodes.iter().any(|n| n.name == o.name) {
            report.push(format!("nodes[{}]: removed", o.name));
        }
    }
    report
}

/// Flattens a JSON value into `a.b[0].c = value` pairs.
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Null => out.push((prefix.to_owned(), String::new())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// TCP keepalive for client and server sockets, `None` when `tcp_keepalive.enabled` is off.
pub fn keepalive(config: &Config) -> Option<pgrouter_conn::Keepalive> {
    let k = &config.tcp_keepalive;
    k.enabled.then(|| pgrouter_conn::Keepalive {
        idle: k.idle.get(),
        interval: k.interval.get(),
        count: k.count,
    })
}

/// The health checks' settings, from the configuration and the server TLS built from it.
pub fn monitor_settings(
    config: &Config,
    server_tls: std::sync::Arc<pgrouter_conn::ServerTls>,
    patroni_api: std::sync::Arc<pgrouter_topology::HttpClient>,
) -> MonitorSettings {
    let hc = &config.health_check;
    let max_lag = config.routing.max_replica_lag.get();
    MonitorSettings {
        discovery: config.topology.discovery,
        discover_members: config.topology.discover_members,
        interval: hc.interval.get(),
        timeout: hc.timeout.get(),
        max_failures: hc.max_failures,
        min_successes: hc.min_successes,
        login: config.health_check_login(),
        server_tls,
        patroni_api,
        keepalive: keepalive(config),
        policy: Policy {
            discovery: config.topology.discovery,
            max_lag_bytes: config.routing.max_replica_lag_bytes.bytes(),
            max_lag_seconds: (!max_lag.is_zero()).then_some(max_lag.as_secs_f64()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrouter_config::ProcessEnv;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        pgrouter_config::from_yaml(text, Path::new("."), &ProcessEnv).unwrap()
    }

    const BASE: &str = "listen: 127.0.0.1:6432\nnodes:\n  - {name: a, host: h, weight: 1}\n  - {name: b, host: h, port: 5433}\nusers:\n  - {name: u, password: p}\n";

    #[test]
    fn live_settings_are_reported_as_changes() {
        let old = parse(BASE);
        let mut new = parse(
            &BASE
                .replace("weight: 1", "weight: 5")
                .replace("password: p", "password: q"),
        );
        assert!(restart_only(&old, &mut new).is_empty());
        assert_eq!(
            changes(&old, &new),
            vec![
                "nodes[a].weight: 1 -> 5".to_owned(),
                "users[u]: password changed".to_owned()
            ]
        );
    }

    #[test]
    fn start_up_settings_keep_their_old_values() {
        let old = parse(BASE);
        let mut new = parse(&BASE.replace("127.0.0.1:6432", "0.0.0.0:7000"));
        let report = restart_only(&old, &mut new);
        assert_eq!(report.len(), 1, "{report:?}");
        assert!(report[0].starts_with("listen changed"));
        assert_eq!(new.listen, old.listen);
        assert!(changes(&old, &new).is_empty());
    }

    #[test]
    fn node_changes_are_reported_by_name() {
        let old = parse(BASE);
        let mut new = parse(
            "listen: 127.0.0.1:6432\nnodes:\n  - {name: b, host: h, port: 5433}\n  - {name: a, host: elsewhere, weight: 1}\n  - {name: c, host: h, port: 5434}\nusers:\n  - {name: u, password: p}\n",
        );
        assert!(restart_only(&old, &mut new).is_empty());
        assert_eq!(
            changes(&old, &new),
            vec![
                "nodes[a].host: h -> elsewhere".to_owned(),
                "nodes[c]: added (h:5434)".to_owned(),
            ]
        );
        let fewer = parse(&BASE.replace("  - {name: b, host: h, port: 5433}\n", ""));
        assert_eq!(changes(&old, &fewer), vec!["nodes[b]: removed".to_owned()]);
    }
}
