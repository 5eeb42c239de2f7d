//! Where a unit goes: what its statements are (classified once each), and the plan that picks a
//! slot for it from the session's state and the routing table.

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
                    let c = classify_text(self.ctx, fe::query_text(body(msg)).unwrap_or_default());
                    demote(self.effective_route(&c), &mut route);
                    runs.push(c);
                }
                fe::PARSE => {
                    if let Some((name, sql)) = fe::parse_parse(body(msg)) {
                        let c = classify_text(self.ctx, sql);
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
        UnitClass {
            route,
            runs,
            parsed: parses,
            first_tx,
            needs_unnamed,
            routable,
        }
    }

    /// The route of one statement once session knowledge is added.
    pub(super) fn effective_route(&self, c: &Classification) -> Route {
        effective_route(self.ctx, &self.state, c)
    }

    /// Decides where a unit goes (without side effects).
    pub(super) fn plan(&self, bytes: &[u8]) -> Plan {
        let UnitClass {
            route,
            runs: parts,
            parsed,
            first_tx,
            needs_unnamed,
            routable,
        } = self.classify_unit(bytes);
        let facts = self.facts();
        let deferred_begin = self.deferred_begin.is_none()
            && self.state.tx_status == TransactionStatus::Idle
            && parts.len() == 1
            && parts[0].rule == Rule::TransactionControl
            && parts[0].effects.transaction == [TxControl::Begin { read_only: false }]
            && frames(bytes).count() == 1
            && bytes.first() == Some(&fe::QUERY)
            && is_single_statement(bytes)
            && !facts.pinned
            && facts.load_balance
            && !facts.default_read_only;
        let (begins, begins_ro) = match (&self.deferred_begin, first_tx) {
            (Some(_), Some(TxControl::SetReadOnly(ro))) => (true, ro),
            (Some(_), _) => (true, false),
            (None, Some(TxControl::Begin { read_only })) => (true, read_only),
            _ => (false, false),
        };
        let mut unavailable = None;
        let mut target = None;
        let mut slot = if routable || self.deferred_begin.is_some() {
            let chosen = routing::choose(route, begins, begins_ro, facts);
            target = Some(chosen);
            unavailable = self.reads_unavailable(chosen);
            Some(self.slot_for(chosen))
        } else {
            // Nothing to route (e.g. only Close/Sync): stay where the session is.
            None
        };
        if needs_unnamed && target != Some(Target::Primary) {
            // The unnamed statement the client made last lives on one connection: a read may use
            // it there (else it is prepared again where the unit goes). What must run on the
            // primary goes there whatever holds the statement.
            let current = self.state.statements.get("").map(|s| s.version);
            let holder = [Slot::Primary, Slot::Read].into_iter().find(|s| {
                let b = match s {
                    Slot::Primary => self.primary.as_ref(),
                    Slot::Read => self.read.as_ref(),
                };
                current.is_some() && b.and_then(|b| b.prepared.get("")).copied() == current
            });
            if holder.is_some() {
                slot = holder;
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
