//! Where a request goes: a pure function of the classification, the session and the nodes, so
//! every rule is table-tested without sockets.

use pgrouter_sql::Route;

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
