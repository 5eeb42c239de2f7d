//! `topology.discover_members`: which cluster members the HA manager lists that the
//! configuration does not, and which members found that way it no longer lists. Pure functions;
//! the monitor applies them.
//!
//! A listed member is the same node as a known one when it has the same name, the same host and
//! port, or the same Patroni API. A member found this way is probed and routed to like a
//! configured node (it may become primary only as every node does: backed by the manager and on
//! the newest timeline).

use crate::decide::node_on_newest_timeline;
use crate::observation::{Member, Observation};
use pgrouter_config::Discovery;

/// A node pgrouter knows, as far as matching goes.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// Name.
    pub name: &'a str,
    /// Host.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Patroni API.
    pub patroni_url: Option<&'a str>,
    /// Found from the member list (not configured).
    pub discovered: bool,
    /// No longer routed to.
    pub removed: bool,
}

impl Known<'_> {
    fn is(&self, m: &Member) -> bool {
        self.name == m.name
            || (self.host == m.host && self.port == m.port)
            || (self.patroni_url.is_some()
                && self.patroni_url.map(|u| u.trim_end_matches('/'))
                    == m.patroni_url.as_deref().map(|u| u.trim_end_matches('/')))
    }
}

/// What to change: members to add, and the indexes of discovered nodes to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChanges {
    /// Listed, unknown.
    pub add: Vec<Member>,
    /// Discovered earlier, no longer listed.
    pub remove: Vec<usize>,
}

/// Compares the manager's list with the known nodes.
pub fn compare(known: &[Known<'_>], listed: &[Member]) -> MemberChanges {
    let live = || known.iter().filter(|k| !k.removed);
    let add = listed.iter().filter(|m| !live().any(|k| k.is(m))).fold(
        Vec::<Member>::new(),
        |mut add, m| {
            if !add.iter().any(|a| a.name == m.name) {
                add.push(m.clone());
            }
            add
        },
    );
    let remove = known
        .iter()
        .enumerate()
        .filter(|(_, k)| k.discovered && !k.removed && !listed.iter().any(|m| k.is(m)))
        .map(|(i, _)| i)
        .collect();
    MemberChanges { add, remove }
}

/// The member list to follow, from the latest observations: Patroni's `/cluster` as the node on
/// the newest timeline saw it; repmgr's active, non-witness rows of `repmgr.nodes` from that node
/// (after a failover the old primary's copy is stale). `None` while no list is known, or the list
/// is empty (a manager between states, e.g. Patroni without its DCS): then nothing is removed.
pub fn listed(discovery: Discovery, latest: &[Option<&Observation>]) -> Option<Vec<Member>> {
    listed_as_is(discovery, latest).filter(|members| !members.is_empty())
}

fn listed_as_is(discovery: Discovery, latest: &[Option<&Observation>]) -> Option<Vec<Member>> {
    let with_list = |o: &&Observation| match discovery {
        Discovery::Patroni => o.members.is_some(),
        Discovery::Repmgr => o.repmgr.as_ref().is_some_and(|r| !r.is_empty()),
        Discovery::Sql => false,
    };
    let source = node_on_newest_timeline(latest.iter().map(|o| o.filter(with_list)))?;
    match discovery {
        Discovery::Patroni => source.members.clone(),
        Discovery::Repmgr => Some(
            source
                .repmgr
                .iter()
                .flatten()
                .filter(|r| r.active && r.kind != "witness")
                .filter_map(|r| {
                    Some(Member {
                        name: r.name.clone(),
                        host: r.host.clone()?,
                        port: r.port.unwrap_or(5432),
                        patroni_url: None,
                    })
                })
                .collect(),
        ),
        Discovery::Sql => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, host: &str, port: u16) -> Member {
        Member {
            name: name.into(),
            host: host.into(),
            port,
            patroni_url: Some(format!("http://{host}:8008")),
        }
    }

    fn known<'a>(name: &'a str, host: &'a str, port: u16, discovered: bool) -> Known<'a> {
        Known {
            name,
            host,
            port,
            patroni_url: None,
            discovered,
            removed: false,
        }
    }

    #[test]
    fn the_list_comes_from_the_newest_timeline_and_an_empty_one_is_ignored() {
        let with = |timeline: u32, members: Vec<Member>| Observation {
            timeline: Some(timeline),
            members: Some(members),
            ..Observation::default()
        };
        let old = with(1, vec![member("pg0", "10.0.0.1", 5432)]);
        let new = with(
            2,
            vec![
                member("pg1", "10.0.0.2", 5432),
                member("pg2", "10.0.0.3", 5432),
            ],
        );
        let names =
            |l: Option<Vec<Member>>| l.map(|l| l.into_iter().map(|m| m.name).collect::<Vec<_>>());
        assert_eq!(
            names(listed(Discovery::Patroni, &[Some(&old), Some(&new), None])),
            Some(vec!["pg1".to_owned(), "pg2".to_owned()])
        );
        let empty = with(3, vec![]);
        assert_eq!(
            names(listed(Discovery::Patroni, &[Some(&new), Some(&empty)])),
            None
        );
        assert_eq!(names(listed(Discovery::Sql, &[Some(&new)])), None);
    }

    #[test]
    fn members_to_add_and_remove() {
        let configured = [
            known("pg0", "10.0.0.1", 5432, false),
            known("pg1", "10.0.0.2", 5432, false),
        ];
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<Known<'_>>, Vec<Member>, Vec<&str>, Vec<usize>)> = vec![
            ("everything configured", configured.to_vec(),
                vec![member("pg0", "10.0.0.1", 5432), member("pg1", "10.0.0.2", 5432)], vec![], vec![]),
            ("a new replica", configured.to_vec(),
                vec![member("pg0", "10.0.0.1", 5432), member("pg1", "10.0.0.2", 5432), member("pg2", "10.0.0.3", 5432)],
                vec!["pg2"], vec![]),
            ("configured under another name: same address", configured.to_vec(),
                vec![member("node-a", "10.0.0.1", 5432), member("node-b", "10.0.0.2", 5432)], vec![], vec![]),
            ("configured under another name and address: same Patroni API",
                vec![Known { patroni_url: Some("http://10.0.0.3:8008/"), ..known("db3", "db3.internal", 5432, false) }],
                vec![member("pg3", "10.0.0.3", 5432)], vec![], vec![]),
            ("a discovered member left the cluster",
                vec![known("pg0", "10.0.0.1", 5432, false), known("pg2", "10.0.0.3", 5432, true)],
                vec![member("pg0", "10.0.0.1", 5432)], vec![], vec![1]),
            ("a configured node missing from the list stays",
                configured.to_vec(), vec![member("pg0", "10.0.0.1", 5432)], vec![], vec![]),
            ("a removed slot does not count as known",
                vec![Known { removed: true, ..known("pg2", "10.0.0.3", 5432, true) }],
                vec![member("pg2", "10.0.0.3", 5432)], vec!["pg2"], vec![]),
            ("a name listed twice is added once", vec![],
                vec![member("pg2", "10.0.0.3", 5432), member("pg2", "10.0.0.3", 5432)], vec!["pg2"], vec![]),
        ];
        for (what, known, listed, add, remove) in cases {
            let changes = compare(&known, &listed);
            let added: Vec<&str> = changes.add.iter().map(|m| m.name.as_str()).collect();
            assert_eq!((added, changes.remove), (add, remove), "{what}");
        }
    }
}
