//! Patroni's own view of a node (`GET /patroni` on that node's REST API), and the cluster's
//! members as Patroni lists them (`GET /cluster`).

use crate::http;
use crate::observation::{ManagerRole, ManagerView, Member};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct PatroniStatus {
    state: Option<String>,
    role: Option<String>,
    timeline: Option<u32>,
    xlog: Option<Xlog>,
    #[serde(default)]
    tags: serde_json::Map<String, serde_json::Value>,
}

/// A Patroni tag is on when it is `true`, or a string Patroni reads as true.
fn tag_on(tags: &serde_json::Map<String, serde_json::Value>, name: &str) -> bool {
    match tags.get(name) {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
        }
        Some(serde_json::Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

#[derive(Debug, Deserialize)]
struct Xlog {
    location: Option<u64>,
    replayed_location: Option<u64>,
}

/// Fetches and interprets `/patroni`.
pub(super) async fn fetch(client: &http::HttpClient, url: &str) -> Result<ManagerView, String> {
    let (status, body) = http::get(client, url, "/patroni")
        .await
        .map_err(|e| e.to_string())?;
    parse(&body).ok_or_else(|| format!("unexpected answer from {url}/patroni (HTTP {status})"))
}

#[derive(Debug, Deserialize)]
struct ClusterStatus {
    members: Vec<ClusterMember>,
}

#[derive(Debug, Deserialize)]
struct ClusterMember {
    name: String,
    host: Option<String>,
    port: Option<u16>,
    api_url: Option<String>,
}

/// Fetches the member list, `GET /cluster` (Patroni 1.6+).
pub(super) async fn fetch_members(
    client: &http::HttpClient,
    url: &str,
) -> Result<Vec<Member>, String> {
    let (status, body) = http::get(client, url, "/cluster")
        .await
        .map_err(|e| e.to_string())?;
    parse_members(&body)
        .ok_or_else(|| format!("unexpected answer from {url}/cluster (HTTP {status})"))
}

/// Members with an address; `api_url` loses its `/patroni` path.
fn parse_members(body: &[u8]) -> Option<Vec<Member>> {
    let s: ClusterStatus = serde_json::from_slice(body).ok()?;
    Some(
        s.members
            .into_iter()
            .filter_map(|m| {
                Some(Member {
                    host: m.host?,
                    port: m.port?,
                    patroni_url: m.api_url.map(|u| u.trim_end_matches("/patroni").to_owned()),
                    name: m.name,
                })
            })
            .collect(),
    )
}

/// Patroni 3.0 calls its leader `master`; later versions `primary`; `standby_leader` leads a
/// standby cluster and is not a primary.
fn parse(body: &[u8]) -> Option<ManagerView> {
    let s: PatroniStatus = serde_json::from_slice(body).ok()?;
    let role = match s.role.as_deref()? {
        "master" | "primary" | "leader" => ManagerRole::Leader,
        _ => ManagerRole::Replica,
    };
    let wal_position = s.xlog.and_then(|x| match role {
        ManagerRole::Leader => x.location,
        ManagerRole::Replica => x.replayed_location,
    });
    Some(ManagerView {
        role,
        state: s.state.unwrap_or_else(|| "unknown".into()),
        timeline: s.timeline,
        wal_position,
        no_load_balance: tag_on(&s.tags, "noloadbalance"),
        no_failover: tag_on(&s.tags, "nofailover"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_and_replica() {
        let leader = br#"{"state": "running", "role": "master", "timeline": 2,
            "xlog": {"location": 67109208}, "patroni": {"version": "3.0.2", "scope": "t"}}"#;
        let v = parse(leader).unwrap();
        assert_eq!(v.role, ManagerRole::Leader);
        assert!(v.running());
        assert_eq!((v.timeline, v.wal_position), (Some(2), Some(67109208)));

        let replica = br#"{"state": "running", "role": "replica", "timeline": 2,
            "xlog": {"received_location": 500, "replayed_location": 400, "paused": false}}"#;
        let v = parse(replica).unwrap();
        assert_eq!((v.role, v.wal_position), (ManagerRole::Replica, Some(400)));

        assert!(!v.no_load_balance && !v.no_failover);

        let tagged = br#"{"state": "running", "role": "replica", "tags": {"noloadbalance": true, "nofailover": "on", "clonefrom": true}}"#;
        let v = parse(tagged).unwrap();
        assert!(v.no_load_balance && v.no_failover);
        let off = br#"{"state": "running", "role": "replica", "tags": {"noloadbalance": false, "nofailover": "false"}}"#;
        let v = parse(off).unwrap();
        assert!(!v.no_load_balance && !v.no_failover);

        let cluster = br#"{"members": [
            {"name": "pg0", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:36442/patroni", "host": "127.0.0.1", "port": 36432, "timeline": 1},
            {"name": "pg3", "role": "replica", "state": "running", "api_url": "http://10.0.0.3:8008/patroni", "host": "10.0.0.3", "port": 5432, "tags": {"noloadbalance": true}, "lag": 0},
            {"name": "starting", "role": "replica", "state": "starting"}]}"#;
        let members = parse_members(cluster).unwrap();
        assert_eq!(members.len(), 2, "a member without an address is left out");
        assert_eq!(
            members[1],
            Member {
                name: "pg3".into(),
                host: "10.0.0.3".into(),
                port: 5432,
                patroni_url: Some("http://10.0.0.3:8008".into()),
            }
        );
        assert!(parse_members(b"{}").is_none());

        let stopped = br#"{"state": "stopped", "role": "replica"}"#;
        assert!(!parse(stopped).unwrap().running());
        assert!(parse(b"not json").is_none());
        assert!(parse(br#"{"state": "running"}"#).is_none(), "no role");
    }
}
