//! Patroni's own view of a node: `GET /patroni` on that node's REST API.

use crate::http;
use crate::observation::{ManagerRole, ManagerView};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct PatroniStatus {
    state: Option<String>,
    role: Option<String>,
    timeline: Option<u32>,
    xlog: Option<Xlog>,
}

#[derive(Debug, Deserialize)]
struct Xlog {
    location: Option<u64>,
    replayed_location: Option<u64>,
}

/// Fetches and interprets `/patroni`.
pub(super) async fn fetch(url: &str) -> Result<ManagerView, String> {
    let (status, body) = http::get(url, "/patroni")
        .await
        .map_err(|e| e.to_string())?;
    parse(&body).ok_or_else(|| format!("unexpected answer from {url}/patroni (HTTP {status})"))
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

        let stopped = br#"{"state": "stopped", "role": "replica"}"#;
        assert!(!parse(stopped).unwrap().running());
        assert!(parse(b"not json").is_none());
        assert!(parse(br#"{"state": "running"}"#).is_none(), "no role");
    }
}
