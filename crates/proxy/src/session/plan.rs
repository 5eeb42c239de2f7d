//! Where a unit goes: what its statements are (classified once each, [`Session::classify_unit`]),
//! and the plan that picks a slot for it. The decision itself is a pure function,
//! [`decide`], of the unit and of [`PlanInputs`] (what the session and the routing table say,
//! as values); [`Session::plan`] only gathers those.

use super::backend::Slot;
use super::relay::Session;
use super::unit::{body, bound_classification, classify_text, effective_route, frames, name_key};
use crate::context::ProxyContext;
use crate::routing::{self, Target};
use pgrouter_protocol::backend::TransactionStatus;
use pgrouter_protocol::{frontend as fe, ErrorResponse};
use pgrouter_sql::{Classification, Route, Rule, TxControl};
use std::sync::Arc;

/// Where a unit goes and what it is.
pub(super) struct Plan {
    /// Only reads, outside a transaction: safe to re-run elsewhere if its connection breaks.
    pub(super) is_read: bool,
    /// The unit cannot be served now (reads with no replica and no fallback to the primary).
    pub(super) unavailable: Option<ErrorResponse>,
    /// `None`: nothing to route, stay on the current connection.
    pub(super) slot: Option<Slot>,
    /// The statements the unit runs.
    pub(super) parts: Vec<Arc<Classification>>,
    /// Every `Parse` in it, classified, in message order (the statements it prepares).
    pub(super) parsed: Vec<Arc<Classification>>,
    /// A lone `BEGIN` that pgrouter answers itself.
    pub(super) deferred_begin: bool,
}

/// What [`Session::classify_unit`] found in a unit.
pub(super) struct UnitClass {
    /// The combined route of everything in it.
    pub(super) route: Route,
    /// The statements it runs, in order (what their completion changes in the session).
    pub(super) runs: Vec<Arc<Classification>>,
    /// Every `Parse` in it, classified, in message order: routing looks at them now, and
    /// `send` stores them without classifying again.
    pub(super) parsed: Vec<Arc<Classification>>,
    /// The first statement's transaction control (`BEGIN`, `SET TRANSACTION READ ONLY`).
    pub(super) first_tx: Option<TxControl>,
    /// It binds or describes the unnamed statement made by an earlier request.
    pub(super) needs_unnamed: bool,
    /// It has anything to route (not only `Sync`, `Close`, …).
    pub(super) routable: bool,
    /// It is one simple `Query` holding one statement (a lone `BEGIN` may be deferred).
    pub(super) lone_statement: bool,
}

/// What a plan needs besides the unit, read from the session and the routing table.
#[derive(Debug, Clone, Copy)]
pub(super) struct PlanInputs {
    pub(super) facts: routing::SessionFacts,
    /// No transaction is open (`ReadyForQuery` said idle) and none is deferred.
    pub(super) idle: bool,
    /// pgrouter answered a lone `BEGIN` and has not sent it yet.
    pub(super) begin_deferred: bool,
    /// The slot reads go to: the read slot when the session's read node is a replica other than
    /// the primary, else the primary.
    pub(super) read_slot: Slot,
    /// No node serves reads and `routing.reads_fallback_to_primary` is off.
    pub(super) reads_refused: bool,
    /// The slot whose connection holds the client's current unnamed statement, if any.
    pub(super) unnamed_holder: Option<Slot>,
}

/// Decides where a unit goes, from what it is and what the session knows; no I/O, no session.
pub(super) fn decide(unit: UnitClass, inputs: &PlanInputs) -> Plan {
    let UnitClass {
        route,
        runs: parts,
        parsed,
        first_tx,
        needs_unnamed,
        routable,
        lone_statement,
    } = unit;
    let facts = inputs.facts;
    let deferred_begin = !inputs.begin_deferred
        && inputs.idle
        && parts.len() == 1
        && parts[0].rule == Rule::TransactionControl
        && parts[0].effects.transaction == [TxControl::Begin { read_only: false }]
        && lone_statement
        && !facts.pinned
        && facts.load_balance
        && !facts.default_read_only;
    let (begins, begins_ro) = match (inputs.begin_deferred, first_tx) {
        (true, Some(TxControl::SetReadOnly(ro))) => (true, ro),
        (true, _) => (true, false),
        (false, Some(TxControl::Begin { read_only })) => (true, read_only),
        _ => (false, false),
    };
    let mut unavailable = None;
    let mut target = None;
    let mut slot = if routable || inputs.begin_deferred {
        let chosen = routing::choose(route, begins, begins_ro, facts);
        target = Some(chosen);
        if chosen == Target::Read && inputs.reads_refused {
            unavailable = Some(reads_refused());
        }
        Some(match chosen {
            Target::Read => inputs.read_slot,
            Target::Primary => Slot::Primary,
        })
    } else {
        // Nothing to route (e.g. only Close/Sync): stay where the session is.
        None
    };
    if needs_unnamed && target != Some(Target::Primary) {
        // The unnamed statement the client made last lives on one connection: a read may use
        // it there (else it is prepared again where the unit goes). What must run on the
        // primary goes there whatever holds the statement.
        if inputs.unnamed_holder.is_some() {
            slot = inputs.unnamed_holder;
        }
    }
    Plan {
        is_read: routable && route == Route::Read && first_tx.is_none(),
        unavailable,
        slot,
        parts,
        parsed,
        deferred_begin,
    }
}

/// The error for a read when nothing serves reads and the primary may not.
fn reads_refused() -> ErrorResponse {
    ErrorResponse::error(
        pgrouter_protocol::SqlState::CANNOT_CONNECT_NOW,
        "no replica is available for reads",
    )
    .with_hint(
        "Every replica is down, lagging or excluded, and routing.reads_fallback_to_primary is off.",
    )
}

/// Functions called by a unit's read statements whose volatility is not known yet.
pub(super) fn unresolved_functions<'c>(
    ctx: &ProxyContext,
    parts: impl Iterator<Item = &'c Arc<Classification>>,
) -> Vec<String> {
    parts
        .filter(|c| c.route == Route::Read && !c.check_functions.is_empty())
        .filter(|c| ctx.any_volatile(&c.check_functions).is_none())
        .flat_map(|c| c.check_functions.iter().cloned())
        .collect()
}

impl Session<'_> {
    /// Classifies a unit: its combined route, the statements it runs, and whether it starts a
    /// (read-only) transaction.
    pub(super) fn classify_unit(&self, unit: &[u8]) -> UnitClass {
        let mut routable = false;
        let mut route = Route::Read;
        // Statements that run in this unit: simple queries, and prepared statements it binds.
        // Their effects on the session apply when the unit completes.
        let mut runs = Vec::new();
        // Statements it only prepares: they route the unit (a `Parse` goes where it will run)
        // but change nothing until a later `Bind` runs them.
        let mut parsed: Vec<(&[u8], &[u8], Arc<Classification>)> = Vec::new();
        let mut parses = Vec::new();
        let mut needs_unnamed = false;
        let demote = |r: Route, route: &mut Route| {
            if r != Route::Read {
                *route = Route::Primary;
            }
        };
        for (tag, msg) in frames(unit) {
            routable |= matches!(
                tag,
                fe::QUERY | fe::PARSE | fe::BIND | fe::FUNCTION_CALL | fe::COPY_DATA
            );
            match tag {
                fe::QUERY => {
                    let c = classify_text(
                        self.ctx,
                        &self.live,
                        fe::query_text(body(msg)).unwrap_or_default(),
                    );
                    demote(self.effective_route(&c), &mut route);
                    runs.push(c);
                }
                fe::PARSE => {
                    if let Some((name, sql)) = fe::parse_parse(body(msg)) {
                        let c = classify_text(self.ctx, &self.live, sql);
                        demote(self.effective_route(&c), &mut route);
                        parsed.retain(|(n, _, _)| *n != name);
                        parses.push(Arc::clone(&c));
                        parsed.push((name, body(msg), c));
                    }
                }
                fe::BIND => {
                    let name = fe::bind_statement(body(msg)).unwrap_or_default();
                    if let Some((_, parse, c)) = parsed.iter().find(|(n, _, _)| *n == name) {
                        runs.push(bound_classification(c, body(msg), parse));
                    } else {
                        // A statement made by an earlier request (the unnamed one included)
                        // routes as it was classified; one this client never made goes to the
                        // primary, where it gets PostgreSQL's 26000.
                        needs_unnamed |= name.is_empty();
                        match self.state.statements.get(name_key(name).as_ref()) {
                            Some(stored) => {
                                demote(stored.route, &mut route);
                                runs.push(bound_classification(
                                    &stored.classification,
                                    body(msg),
                                    body(&stored.parse),
                                ));
                            }
                            None => demote(Route::Primary, &mut route),
                        }
                    }
                }
                // Describing the unnamed statement made by an earlier segment: it lives on one
                // connection only.
                fe::DESCRIBE
                    if fe::describe_target(body(msg)) == Some((fe::TARGET_STATEMENT, &b""[..]))
                        && !parsed.iter().any(|(n, _, _)| n.is_empty()) =>
                {
                    needs_unnamed = true;
                }
                fe::FUNCTION_CALL | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                    route = Route::Primary
                }
                _ => {}
            }
        }
        let first_tx = runs
            .first()
            .and_then(|c| c.effects.transaction.first().copied());
        // Only asked of a lone transaction-control statement (a `BEGIN` pgrouter may defer).
        let lone_statement = runs.len() == 1
            && runs[0].rule == Rule::TransactionControl
            && matches!(frames(unit).next(), Some((fe::QUERY, _)))
            && frames(unit).count() == 1
            && is_single_statement(unit);
        UnitClass {
            route,
            runs,
            parsed: parses,
            first_tx,
            needs_unnamed,
            routable,
            lone_statement,
        }
    }

    /// The route of one statement once session knowledge is added.
    pub(super) fn effective_route(&self, c: &Classification) -> Route {
        effective_route(self.ctx, &self.state, c)
    }

    /// Decides where a unit goes (without side effects): gathers what [`decide`] needs.
    pub(super) fn plan(&self, bytes: &[u8]) -> Plan {
        let unit = self.classify_unit(bytes);
        // Looked for only when the unit uses the unnamed statement of an earlier request.
        let current = unit
            .needs_unnamed
            .then(|| self.state.statements.get("").map(|s| s.version))
            .flatten();
        let unnamed_holder = [Slot::Primary, Slot::Read].into_iter().find(|s| {
            let b = match s {
                Slot::Primary => self.primary.as_ref(),
                Slot::Read => self.read.as_ref(),
            };
            current.is_some() && b.and_then(|b| b.prepared.get("")).copied() == current
        });
        let inputs = PlanInputs {
            facts: self.facts(),
            idle: self.state.tx_status == TransactionStatus::Idle,
            begin_deferred: self.deferred_begin.is_some(),
            read_slot: self.slot_for(Target::Read),
            reads_refused: self.reads_refused(),
            unnamed_holder,
        };
        decide(unit, &inputs)
    }
}

/// A simple-protocol `Query` holding one statement (`BEGIN;` but not `BEGIN; SELECT 1`, whose
/// results the client expects now). A `BEGIN` has no string literals, so any `;` before the end
/// means another statement.
pub(super) fn is_single_statement(query: &[u8]) -> bool {
    let text = fe::query_text(body(query)).unwrap_or_default();
    let trimmed = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(&text[..0], |end| &text[..=end]);
    !trimmed.contains(&b';')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use pgrouter_sql::Classifier;

    /// A unit of one simple query, classified as `classify_unit` would.
    fn unit(sql: &str) -> UnitClass {
        let c = Arc::new(Classifier::default().classify(sql));
        let route = if c.route == Route::Read {
            Route::Read
        } else {
            Route::Primary
        };
        let mut q = BytesMut::new();
        fe::write_query(&mut q, sql);
        UnitClass {
            route,
            first_tx: c.effects.transaction.first().copied(),
            lone_statement: c.rule == Rule::TransactionControl && is_single_statement(&q),
            runs: vec![c],
            parsed: Vec::new(),
            needs_unnamed: false,
            routable: true,
        }
    }

    const SPLIT: PlanInputs = PlanInputs {
        facts: routing::SessionFacts {
            pinned: false,
            load_balance: true,
            default_read_only: false,
        },
        idle: true,
        begin_deferred: false,
        read_slot: Slot::Read,
        reads_refused: false,
        unnamed_holder: None,
    };

    #[test]
    fn decisions() {
        let pinned = PlanInputs {
            facts: routing::SessionFacts {
                pinned: true,
                ..SPLIT.facts
            },
            ..SPLIT
        };
        let no_balance = PlanInputs {
            facts: routing::SessionFacts {
                load_balance: false,
                ..SPLIT.facts
            },
            ..SPLIT
        };
        let deferred = PlanInputs {
            begin_deferred: true,
            idle: false,
            ..SPLIT
        };
        let no_replica = PlanInputs {
            read_slot: Slot::Primary,
            ..SPLIT
        };
        let refused = PlanInputs {
            reads_refused: true,
            ..SPLIT
        };
        let read_only_default = PlanInputs {
            facts: routing::SessionFacts {
                default_read_only: true,
                ..SPLIT.facts
            },
            ..SPLIT
        };
        // (what, sql, inputs, slot, deferred BEGIN, is_read, refused)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &PlanInputs, Option<Slot>, bool, bool, bool)] = &[
            ("a read goes to the read slot", "SELECT 1 FROM t", &SPLIT, Some(Slot::Read), false, true, false),
            ("a write goes to the primary", "INSERT INTO t VALUES (1)", &SPLIT, Some(Slot::Primary), false, false, false),
            ("a pinned session reads on the primary", "SELECT 1 FROM t", &pinned, Some(Slot::Primary), false, true, false),
            ("load_balance off reads on the primary", "SELECT 1 FROM t", &no_balance, Some(Slot::Primary), false, true, false),
            ("reads with no replica go to the primary", "SELECT 1 FROM t", &no_replica, Some(Slot::Primary), false, true, false),
            ("reads refused when nothing serves them", "SELECT 1 FROM t", &refused, Some(Slot::Read), false, true, true),
            ("a lone BEGIN is deferred", "BEGIN", &SPLIT, Some(Slot::Primary), true, false, false),
            ("BEGIN; SELECT 1 is not", "BEGIN; SELECT 1", &SPLIT, Some(Slot::Primary), false, false, false),
            ("a pinned session's BEGIN is not deferred", "BEGIN", &pinned, Some(Slot::Primary), false, false, false),
            ("BEGIN READ ONLY runs on a replica", "BEGIN READ ONLY", &SPLIT, Some(Slot::Read), false, false, false),
            ("after a deferred BEGIN, SET TRANSACTION READ ONLY goes to a replica",
                "SET TRANSACTION READ ONLY", &deferred, Some(Slot::Read), false, false, false),
            ("after a deferred BEGIN, a read opens a read-write transaction on the primary",
                "SELECT 1 FROM t", &deferred, Some(Slot::Primary), false, true, false),
            ("default_transaction_read_only: BEGIN goes to a replica", "BEGIN", &read_only_default,
                Some(Slot::Read), false, false, false),
        ];
        for (what, sql, inputs, slot, deferred_begin, is_read, refused) in cases {
            let plan = decide(unit(sql), inputs);
            assert_eq!(plan.slot, *slot, "{what}: slot");
            assert_eq!(
                plan.deferred_begin, *deferred_begin,
                "{what}: deferred BEGIN"
            );
            assert_eq!(plan.is_read, *is_read, "{what}: is_read");
            assert_eq!(plan.unavailable.is_some(), *refused, "{what}: refused");
        }
    }

    #[test]
    fn the_unnamed_statement_holder_keeps_reads_not_writes() {
        let held = PlanInputs {
            unnamed_holder: Some(Slot::Primary),
            ..SPLIT
        };
        let mut read = unit("SELECT 1 FROM t");
        read.needs_unnamed = true;
        assert_eq!(decide(read, &held).slot, Some(Slot::Primary));
        let held_on_read = PlanInputs {
            unnamed_holder: Some(Slot::Read),
            ..SPLIT
        };
        let mut write = unit("INSERT INTO t VALUES (1)");
        write.needs_unnamed = true;
        assert_eq!(decide(write, &held_on_read).slot, Some(Slot::Primary));
        let mut sync_only = unit("SELECT 1");
        sync_only.routable = false;
        assert_eq!(decide(sync_only, &SPLIT).slot, None, "nothing to route");
    }

    #[test]
    fn single_statement_queries() {
        #[rustfmt::skip]
        let cases = [
            ("BEGIN", true), ("BEGIN;", true), ("begin ;  \n", true),
            ("BEGIN; SELECT 1", false), ("BEGIN;SELECT 1;", false), ("BEGIN;;", true),
        ];
        for (sql, single) in cases {
            let mut q = BytesMut::new();
            fe::write_query(&mut q, sql);
            assert_eq!(is_single_statement(&q), single, "{sql:?}");
        }
    }
}
