//! Where a request goes: a pure function of the classification, the session and the nodes, so
//! every rule is table-tested without sockets.

use pgrouter_sql::Route;
use pgrouter_topology::RoutingTable;

/// What a listener offers, which decides where a session's main server connection goes (the
/// one routing's [`Target::Primary`] names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endpoint {
    /// `listen`: read/write splitting; the main connection is to the primary.
    #[default]
    Split,
    /// `primary_listen`: every statement on the primary.
    Primary,
    /// `read_only_listen`: every statement on a node that serves reads (a replica, or the
    /// primary when `routing.reads_fallback_to_primary` allows it), with
    /// `default_transaction_read_only` on.
    ReadOnly,
}

impl Endpoint {
    /// Whether statements are split between the primary and a read node.
    pub fn splits(self) -> bool {
        self == Endpoint::Split
    }

    /// Whether the main connection may stay on `node` under `table`.
    pub fn accepts(self, table: &RoutingTable, node: usize, fallback_to_primary: bool) -> bool {
        let is_primary = table.primary == Some(node);
        match self {
            Endpoint::Split | Endpoint::Primary => is_primary,
            Endpoint::ReadOnly => table.serves_reads(node) || (fallback_to_primary && is_primary),
        }
    }

    /// Whether a session's main connection on `node` should move at its next transaction
    /// boundary: the node is no longer accepted, or (read-only endpoint) it is the primary
    /// serving as a fallback while a replica serves reads again, and no server-side state
    /// (`pinned`) ties the session to it.
    pub fn should_move(
        self,
        table: &RoutingTable,
        node: usize,
        fallback_to_primary: bool,
        pinned: bool,
    ) -> bool {
        if !self.accepts(table, node, fallback_to_primary) {
            return true;
        }
        self == Endpoint::ReadOnly
            && !pinned
            && !table.serves_reads(node)
            && !table.readers.is_empty()
    }

    /// The node for a new main connection: the primary, or for [`Endpoint::ReadOnly`] the read
    /// node `pick_read` chooses (the primary when none and `fallback_to_primary`).
    pub fn pick(
        self,
        table: &RoutingTable,
        fallback_to_primary: bool,
        pick_read: impl FnOnce(&RoutingTable) -> Option<usize>,
    ) -> Option<usize> {
        match self {
            Endpoint::Split | Endpoint::Primary => table.primary,
            Endpoint::ReadOnly => {
                pick_read(table).or(table.primary.filter(|_| fallback_to_primary))
            }
        }
    }

    /// The endpoint's name in logs and `SHOW CLIENTS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Split => "split",
            Endpoint::Primary => "primary",
            Endpoint::ReadOnly => "read_only",
        }
    }
}

/// The backend a request is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The primary.
    Primary,
    /// The session's read node (a replica, or the primary when it was picked by weight).
    Read,
}

/// What the session knows when it routes a request at a transaction boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    /// The session is pinned to the primary (temp table, LISTEN, advisory lock, held cursor).
    pub pinned: bool,
    /// `routing.load_balance`.
    pub load_balance: bool,
    /// `default_transaction_read_only` is on for the session.
    pub default_read_only: bool,
}

/// Chooses the backend for a request that starts at a transaction boundary (nothing pending, not
/// in a transaction). `begins_read_only` is true for `BEGIN READ ONLY` and for a deferred `BEGIN`
/// followed by `SET TRANSACTION READ ONLY`; `begins` is true for any `BEGIN`.
pub fn choose(route: Route, begins: bool, begins_read_only: bool, facts: SessionFacts) -> Target {
    if facts.pinned || !facts.load_balance {
        return Target::Primary;
    }
    if begins {
        // A transaction runs on one node: a replica only when it is declared read-only.
        return if begins_read_only || facts.default_read_only {
            Target::Read
        } else {
            Target::Primary
        };
    }
    match route {
        Route::Read => Target::Read,
        Route::Primary | Route::AllBackends => Target::Primary,
    }
}

/// Picks the read node for the `ticket`-th session: a smooth weighted rotation over the nodes
/// (the primary included, with its own weight), so that any run of sessions is spread in
/// proportion to the weights (random choice leaves a few sessions badly unbalanced). Returns
/// `None` when every weight is 0.
pub fn pick_read_node(weights: &[u32], ticket: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    // Smooth weighted round-robin (as nginx does), replayed for position `ticket % total`: each
    // step every node gains its weight and the richest node is chosen and pays the total.
    let step = ticket % total;
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut chosen = 0;
    for _ in 0..=step {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        chosen = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        current[chosen] -= total as i64;
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pg0 primary (weight 0), pg1 a reader, pg2 not serving.
    fn table() -> RoutingTable {
        let mut t = pgrouter_topology::RoutingTable::unknown(&[
            ("pg0".into(), "h".into(), 1),
            ("pg1".into(), "h".into(), 2),
            ("pg2".into(), "h".into(), 3),
        ]);
        t.primary = Some(0);
        t.readers = vec![(1, 1)];
        t
    }

    #[test]
    fn endpoints_accept_and_pick() {
        use Endpoint::*;
        let t = table();
        let first_reader = |t: &RoutingTable| t.readers.first().map(|(n, _)| *n);
        let none = |_: &RoutingTable| None;
        #[rustfmt::skip]
        let accepts: &[(Endpoint, usize, bool, bool)] = &[
            // endpoint, node, fallback, accepted
            (Split, 0, false, true), (Split, 1, false, false),
            (Primary, 0, false, true), (Primary, 1, true, false),
            (ReadOnly, 1, false, true), (ReadOnly, 2, true, false),
            (ReadOnly, 0, false, false), (ReadOnly, 0, true, true),
        ];
        for &(endpoint, node, fallback, accepted) in accepts {
            assert_eq!(
                endpoint.accepts(&t, node, fallback),
                accepted,
                "{endpoint:?} {node} {fallback}"
            );
        }
        assert_eq!(Split.pick(&t, false, first_reader), Some(0));
        assert_eq!(Primary.pick(&t, true, first_reader), Some(0));
        assert_eq!(ReadOnly.pick(&t, false, first_reader), Some(1));
        assert_eq!(
            ReadOnly.pick(&t, true, none),
            Some(0),
            "no reader: the primary"
        );
        assert_eq!(
            ReadOnly.pick(&t, false, none),
            None,
            "no reader, no fallback"
        );
        assert!(Split.splits() && !Primary.splits() && !ReadOnly.splits());
        #[rustfmt::skip]
        let moves: &[(Endpoint, usize, bool, bool, bool)] = &[
            // endpoint, node, fallback, pinned, moves
            (Split, 0, false, false, false), (Split, 1, false, true, true),
            (ReadOnly, 1, false, false, false), (ReadOnly, 2, true, false, true),
            // On the fallback primary while pg1 serves reads: back to a replica unless pinned.
            (ReadOnly, 0, true, false, true), (ReadOnly, 0, true, true, false),
            (ReadOnly, 0, false, true, true),
        ];
        for &(endpoint, node, fallback, pinned, moves) in moves {
            assert_eq!(
                endpoint.should_move(&t, node, fallback, pinned),
                moves,
                "{endpoint:?} {node} {fallback} {pinned}"
            );
        }
        let mut no_readers = t.clone();
        no_readers.readers.clear();
        assert!(
            !ReadOnly.should_move(&no_readers, 0, true, false),
            "the fallback stays while no replica serves"
        );
    }

    const FREE: SessionFacts = SessionFacts {
        pinned: false,
        load_balance: true,
        default_read_only: false,
    };

    #[test]
    fn choose_table() {
        let pinned = SessionFacts {
            pinned: true,
            ..FREE
        };
        let no_lb = SessionFacts {
            load_balance: false,
            ..FREE
        };
        let ro = SessionFacts {
            default_read_only: true,
            ..FREE
        };
        #[rustfmt::skip]
        let cases = [
            // (route, begins, begins_read_only, facts, expected, why)
            (Route::Read, false, false, FREE, Target::Read, "autocommit read"),
            (Route::Primary, false, false, FREE, Target::Primary, "write"),
            (Route::AllBackends, false, false, FREE, Target::Primary, "session state runs on the primary first"),
            (Route::Read, false, false, pinned, Target::Primary, "pinned session"),
            (Route::Read, false, false, no_lb, Target::Primary, "load balancing off"),
            (Route::Primary, true, false, FREE, Target::Primary, "BEGIN"),
            (Route::Read, true, true, FREE, Target::Read, "BEGIN READ ONLY"),
            (Route::Primary, true, false, ro, Target::Read, "BEGIN with default_transaction_read_only"),
            (Route::Read, true, true, pinned, Target::Primary, "read-only transaction of a pinned session"),
        ];
        for (route, begins, begins_ro, facts, expected, why) in cases {
            assert_eq!(choose(route, begins, begins_ro, facts), expected, "{why}");
        }
    }

    #[test]
    fn weighted_pick() {
        assert_eq!(pick_read_node(&[0, 0], 5), None);
        assert_eq!(pick_read_node(&[0, 1, 1], 0), Some(1));
        assert_eq!(pick_read_node(&[0, 1, 1], 1), Some(2));
        assert_eq!(pick_read_node(&[1, 1, 1], 2), Some(2));
        // Every window of `total` consecutive sessions matches the weights exactly.
        for weights in [[1u32, 2, 0], [0, 1, 1], [3, 1, 1], [1, 1, 1]] {
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            for start in 0..5 {
                let mut counts = [0u32; 3];
                for ticket in start..start + total {
                    counts[pick_read_node(&weights, ticket).unwrap()] += 1;
                }
                assert_eq!(counts, weights, "{weights:?} from {start}");
            }
        }
        // Interleaved, not in blocks.
        let seq: Vec<_> = (0..4)
            .map(|t| pick_read_node(&[0, 1, 1], t).unwrap())
            .collect();
        assert_eq!(seq, [1, 2, 1, 2]);
    }
}
