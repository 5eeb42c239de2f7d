//! What a session remembers so that it can move between server connections without the client
//! noticing: transaction status, pins, session changes to replay, prepared statements.

use bytes::Bytes;
use pgrouter_protocol::backend::TransactionStatus;
use pgrouter_sql::{Classification, PinReason, Route, SessionChange, TxControl};
use std::collections::HashMap;
use std::sync::Arc;

/// A protocol-level prepared statement as the client created it.
#[derive(Debug)]
pub(crate) struct StoredStatement {
    /// The client's complete `Parse` message, replayed on other connections.
    pub(crate) parse: Bytes,
    /// How statements using it route.
    pub(crate) route: Route,
    /// Distinguishes re-definitions of the same name.
    pub(crate) version: u64,
}

/// Session state that outlives any one server connection.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// As last reported by the server (or implied by a deferred `BEGIN`).
    pub(crate) tx_status: TransactionStatus,
    /// Set once the session must stay on the primary.
    pub(crate) pin: Option<PinReason>,
    /// `default_transaction_read_only` for the session.
    pub(crate) default_read_only: bool,
    /// Session-scope statements, in order, replayed on connections opened or used later.
    pub(crate) replay: Vec<String>,
    /// SQL-level `PREPARE`d statements: how `EXECUTE name` routes.
    pub(crate) sql_prepared: HashMap<String, Route>,
    /// Protocol-level statements by name (`""` is the unnamed one).
    pub(crate) statements: HashMap<String, Arc<StoredStatement>>,
    next_version: u64,
    /// Changes made inside the current transaction, kept until it commits.
    tx_changes: Vec<SessionChange>,
    /// The current transaction failed at some point (its changes are discarded).
    tx_failed: bool,
}

impl SessionState {
    pub(crate) fn new() -> Self {
        Self {
            tx_status: TransactionStatus::Idle,
            pin: None,
            default_read_only: false,
            replay: Vec::new(),
            sql_prepared: HashMap::new(),
            statements: HashMap::new(),
            next_version: 1,
            tx_changes: Vec::new(),
            tx_failed: false,
        }
    }

    /// Remembers a client `Parse`; returns the version now current for the name.
    pub(crate) fn store_statement(&mut self, name: &str, parse: Bytes, route: Route) -> u64 {
        let version = self.next_version;
        self.next_version += 1;
        self.statements.insert(
            name.to_owned(),
            Arc::new(StoredStatement {
                parse,
                route,
                version,
            }),
        );
        version
    }

    /// Applies the effects of requests that completed; `failed` when an error occurred, `status`
    /// the transaction status reported at the end.
    pub(crate) fn complete(
        &mut self,
        done: &[Arc<Classification>],
        failed: bool,
        status: TransactionStatus,
    ) {
        // Changes inside a transaction block (one that was open, or that these requests opened)
        // only last if it commits.
        let was_in_tx = self.tx_status != TransactionStatus::Idle
            || done.iter().any(|c| {
                c.effects
                    .transaction
                    .iter()
                    .any(|t| matches!(t, TxControl::Begin { .. }))
            });
        if status == TransactionStatus::Failed || failed {
            self.tx_failed = self.tx_failed || status != TransactionStatus::Idle || was_in_tx;
        }
        for c in done {
            if !failed {
                if let Some(pin) = c.effects.pin {
                    self.pin.get_or_insert(pin);
                }
            }
            for change in &c.effects.session {
                if failed {
                    continue;
                }
                if status == TransactionStatus::Idle && !was_in_tx {
                    self.apply(change.clone());
                } else {
                    self.tx_changes.push(change.clone());
                }
            }
        }
        if status == TransactionStatus::Idle {
            let committed = !self.tx_failed
                && !failed
                && done
                    .iter()
                    .flat_map(|c| c.effects.transaction.iter())
                    .all(|t| *t != TxControl::Rollback);
            let changes = std::mem::take(&mut self.tx_changes);
            if committed {
                for change in changes {
                    self.apply(change);
                }
            }
            self.tx_failed = false;
        }
        self.tx_status = status;
    }

    fn apply(&mut self, change: SessionChange) {
        match change {
            SessionChange::Replay(sql) => self.replay.push(sql),
            SessionChange::DiscardAll => {
                // Every connection of the session must forget too: DISCARD ALL is replayed like any
                // other statement, and the log before it no longer matters to new connections, but
                // connections that replayed part of it must still see the DISCARD.
                self.replay.push("DISCARD ALL".to_owned());
                self.sql_prepared.clear();
                self.default_read_only = false;
            }
            SessionChange::Prepare { name, sql, route } => {
                self.sql_prepared.insert(name, route);
                self.replay.push(sql);
            }
            SessionChange::Deallocate(name) => match &name {
                Some(n) => {
                    self.sql_prepared.remove(n);
                    self.replay
                        .push(format!("DEALLOCATE \"{}\"", n.replace('"', "\"\"")));
                }
                None => {
                    self.sql_prepared.clear();
                    self.replay.push("DEALLOCATE ALL".to_owned());
                }
            },
            SessionChange::DefaultReadOnly(on) => self.default_read_only = on,
        }
    }
}
