//! The walk over sqlparser's syntax tree.

use crate::decision::{set_config_replay, ConfigArg};
use crate::decision::{Classification, PinReason, Route, Rule, SessionChange, TxControl};
use crate::functions::{FunctionKind, FunctionPolicy};
use sqlparser::ast::{
    ContextModifier, CopySource, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, Query, Set, SetExpr, Statement, TableFactor, TransactionAccessMode,
    TransactionMode, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Classifies a statement string (one or more statements).
pub(crate) fn classify(sql: &str, policy: &FunctionPolicy) -> Classification {
    if is_blank(sql) {
        return Classification::new(Route::Read, Rule::Empty);
    }
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return Classification::new(Route::Read, Rule::Empty),
        Err(_) => return unparsable(sql),
    };
    let mut parts = statements.iter().map(|s| statement(s, policy));
    // invariant: at least one statement was parsed.
    let Some(mut combined) = parts.next() else {
        return Classification::new(Route::Primary, Rule::Unparsable);
    };
    for part in parts {
        combined = combine(combined, part);
    }
    combined
}

/// Several statements in one string run on one node: any that is not a read sends all to the
/// primary; effects accumulate in order.
fn combine(mut a: Classification, b: Classification) -> Classification {
    let (route, rule) = match (a.route, b.route) {
        (Route::Read, Route::Read) => (Route::Read, a.rule),
        (Route::Read, _) => (Route::Primary, b.rule),
        _ => (Route::Primary, a.rule),
    };
    // A session change inside a multi-statement string is executed on the primary and replayed
    // elsewhere, like any other.
    a.route = route;
    a.rule = rule;
    a.effects.transaction.extend(b.effects.transaction);
    a.effects.session.extend(b.effects.session);
    a.effects.pin = a.effects.pin.or(b.effects.pin);
    a.effects.executes = a.effects.executes.or(b.effects.executes);
    a.effects.untracked |= b.effects.untracked;
    a.check_functions.extend(b.check_functions);
    if a.route != Route::Read {
        a.check_functions.clear();
    }
    a
}

/// One statement: its route and rule ([`statement_kind`]), plus what its function calls do to the
/// session ([`SessionScan`]).
fn statement(stmt: &Statement, policy: &FunctionPolicy) -> Classification {
    let mut c = statement_kind(stmt, policy);
    match stmt {
        // The body of a PREPARE runs at EXECUTE (which is `untracked`); EXPLAIN without
        // ANALYZE runs nothing.
        Statement::Prepare { .. } => return c,
        Statement::Explain { analyze: false, .. } => return c,
        // SET and friends call no functions; their effects are already known.
        Statement::Set(_) | Statement::Reset(_) | Statement::Discard { .. } => return c,
        _ => {}
    }
    let mut scan = SessionScan::new(policy);
    let _ = stmt.visit(&mut scan);
    if !scan.replays.is_empty() && c.route == Route::Read {
        // Only reached for a read with set_config in it, which `Scan` already sends to the
        // primary; kept for safety.
        c.route = Route::Primary;
    }
    c.effects.session.extend(scan.replays);
    c.effects.pin = c.effects.pin.or(scan.pin);
    // A read's unknown functions are looked up in pg_proc by the proxy (`check_functions`): a
    // function declared STABLE or IMMUTABLE is trusted not to change the session either.
    c.effects.untracked |= scan.untracked
        || (scan.user_functions && c.route != Route::Read)
        || matches!(stmt, Statement::Call(_))
        || c.rule == Rule::ExplainWrite;
    c
}

fn statement_kind(stmt: &Statement, policy: &FunctionPolicy) -> Classification {
    match stmt {
        Statement::Query(q) => query(q, policy, Rule::ReadOnlyQuery),
        Statement::Explain {
            statement: inner, ..
        } => {
            let c = statement(inner, policy);
            match c.route {
                Route::Read => Classification {
                    rule: Rule::Explain,
                    ..c
                },
                _ => Classification::new(Route::Primary, Rule::ExplainWrite),
            }
        }
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => {
            Classification::new(Route::Read, Rule::Show)
        }
        Statement::Copy { source, to, .. } => {
            if !to {
                return Classification::new(Route::Primary, Rule::Write);
            }
            match source {
                CopySource::Query(q) => query(q, policy, Rule::CopyTo),
                CopySource::Table { .. } => Classification::new(Route::Read, Rule::CopyTo),
            }
        }
        Statement::StartTransaction { modes, .. } => {
            let read_only = read_only_mode(modes).unwrap_or(false);
            let mut c = Classification::new(
                if read_only {
                    Route::Read
                } else {
                    Route::Primary
                },
                Rule::TransactionControl,
            );
            c.effects.transaction.push(TxControl::Begin { read_only });
            c
        }
        Statement::Commit { .. } => tx(TxControl::Commit),
        Statement::Rollback { savepoint, .. } => match savepoint {
            None => tx(TxControl::Rollback),
            Some(_) => Classification::new(Route::Primary, Rule::TransactionControl),
        },
        Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } => {
            Classification::new(Route::Primary, Rule::TransactionControl)
        }
        Statement::Set(set) => set_statement(stmt, set),
        Statement::Reset(_) => session(SessionChange::Replay(stmt.to_string())),
        Statement::Discard { object_type } => {
            let all = object_type.to_string().eq_ignore_ascii_case("ALL");
            session(if all {
                SessionChange::DiscardAll
            } else {
                SessionChange::Replay(stmt.to_string())
            })
        }
        Statement::Prepare {
            name,
            statement: body,
            ..
        } => {
            let body = statement(body, policy);
            session(SessionChange::Prepare {
                name: ident_name(name.value.as_str(), name.quote_style.is_some()),
                sql: stmt.to_string(),
                route: body.route,
            })
        }
        Statement::Execute { name, .. } => {
            let mut c = Classification::new(Route::Primary, Rule::ExecutePrepared);
            c.effects.executes = name.as_ref().and_then(last_part);
            c
        }
        Statement::Deallocate { name, .. } => {
            let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
            session(SessionChange::Deallocate(if all {
                None
            } else {
                Some(ident_name(&name.value, name.quote_style.is_some()))
            }))
        }
        Statement::LISTEN { .. } => {
            let mut c = Classification::new(Route::Primary, Rule::Notification);
            c.effects.pin = Some(PinReason::Listen);
            c
        }
        Statement::UNLISTEN { .. } | Statement::NOTIFY { .. } => {
            Classification::new(Route::Primary, Rule::Notification)
        }
        Statement::Declare { stmts } => {
            let mut c = Classification::new(Route::Primary, Rule::Cursor);
            if stmts.iter().any(|d| d.hold == Some(true)) {
                c.effects.pin = Some(PinReason::HoldCursor);
            }
            c
        }
        Statement::Fetch { .. } | Statement::Close { .. } => {
            Classification::new(Route::Primary, Rule::Cursor)
        }
        other => {
            let mut c = Classification::new(Route::Primary, Rule::Write);
            if creates_temp_object(other) {
                c.effects.pin = Some(PinReason::TempObject);
            }
            // Functions inside writes still matter for pins (e.g. an advisory lock in an UPDATE).
            let mut scan = Scan::new(policy);
            let _ = other.visit(&mut scan);
            c.effects.pin = c.effects.pin.or(scan.pin);
            c
        }
    }
}

fn tx(control: TxControl) -> Classification {
    let mut c = Classification::new(Route::Primary, Rule::TransactionControl);
    c.effects.transaction.push(control);
    c
}

fn session(change: SessionChange) -> Classification {
    let mut c = Classification::new(Route::AllBackends, Rule::SessionState);
    c.effects.session.push(change);
    c
}

fn set_statement(stmt: &Statement, set: &Set) -> Classification {
    match set {
        Set::SetTransaction {
            modes,
            session: false,
            ..
        } => {
            let mut c = Classification::new(Route::Primary, Rule::TransactionControl);
            if let Some(ro) = read_only_mode(modes) {
                c.effects.transaction.push(TxControl::SetReadOnly(ro));
            }
            c
        }
        Set::SingleAssignment {
            scope: Some(ContextModifier::Local),
            ..
        } => {
            // SET LOCAL lives and dies with its transaction: no replay.
            Classification::new(Route::Primary, Rule::SessionState)
        }
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let mut c = session(SessionChange::Replay(stmt.to_string()));
            let name = variable.to_string().to_ascii_lowercase();
            if name == "default_transaction_read_only" || name == "session characteristics" {
                if let Some(v) = values.first().and_then(bool_value) {
                    c.effects.session.push(SessionChange::DefaultReadOnly(v));
                }
            }
            c
        }
        Set::SetTimeZone { local: true, .. } => {
            Classification::new(Route::Primary, Rule::SessionState)
        }
        Set::SetRole {
            context_modifier: Some(ContextModifier::Local),
            ..
        } => Classification::new(Route::Primary, Rule::SessionState),
        _ => session(SessionChange::Replay(stmt.to_string())),
    }
}

fn bool_value(e: &Expr) -> Option<bool> {
    bool_text(e.to_string().trim_matches('\''))
}

fn read_only_mode(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        _ => None,
    })
}

fn creates_temp_object(stmt: &Statement) -> bool {
    match stmt {
        Statement::CreateTable(t) => t.temporary,
        Statement::CreateView(v) => v.temporary,
        Statement::CreateSequence { temporary, .. } => *temporary,
        _ => false,
    }
}

/// A read-only query unless the walk finds otherwise.
fn query(q: &Query, policy: &FunctionPolicy, read_rule: Rule) -> Classification {
    let mut scan = Scan::new(policy);
    match q.visit(&mut scan) {
        ControlFlow::Break(rule) => {
            let mut c = Classification::new(Route::Primary, rule);
            c.effects.pin = scan.pin;
            c
        }
        ControlFlow::Continue(()) => {
            let mut c = Classification::new(Route::Read, read_rule);
            c.check_functions = scan.unknown;
            c
        }
    }
}

/// Finds anything in a query that makes it a write.
struct Scan<'p> {
    policy: &'p FunctionPolicy,
    unknown: Vec<String>,
    pin: Option<PinReason>,
}

impl<'p> Scan<'p> {
    fn new(policy: &'p FunctionPolicy) -> Self {
        Self {
            policy,
            unknown: Vec::new(),
            pin: None,
        }
    }

    fn function(&mut self, name: &ObjectName) -> ControlFlow<Rule> {
        let Some(name) = last_part(name) else {
            return ControlFlow::Continue(());
        };
        if crate::functions::names_backends(&name, false) {
            return ControlFlow::Break(Rule::BackendIdentity);
        }
        match self.policy.kind(&name) {
            FunctionKind::Read => ControlFlow::Continue(()),
            FunctionKind::Write { session_lock } => {
                if session_lock {
                    self.pin = Some(PinReason::AdvisoryLock);
                }
                ControlFlow::Break(Rule::WriteFunction)
            }
            FunctionKind::NotListedReadOnly => ControlFlow::Break(Rule::FunctionNotReadOnly),
            FunctionKind::Unknown => {
                if !self.unknown.contains(&name) {
                    self.unknown.push(name);
                }
                ControlFlow::Continue(())
            }
        }
    }
}

impl Visitor for Scan<'_> {
    type Break = Rule;

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<Rule> {
        match stmt {
            Statement::Query(_) => ControlFlow::Continue(()),
            // DML nested in a query: a data-modifying CTE.
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_) => ControlFlow::Break(Rule::DataModifyingCte),
            _ => ControlFlow::Break(Rule::Write),
        }
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Rule> {
        if !q.locks.is_empty() {
            return ControlFlow::Break(Rule::LockingClause);
        }
        if let SetExpr::Select(s) = q.body.as_ref() {
            if s.into.is_some() {
                return ControlFlow::Break(Rule::SelectInto);
            }
        }
        if matches!(
            q.body.as_ref(),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        ) {
            return ControlFlow::Break(Rule::DataModifyingCte);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Rule> {
        match e {
            Expr::Function(f) => self.function(&f.name),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<Rule> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.function(name),
            TableFactor::Table { name, .. }
                if last_part(name).is_some_and(|n| crate::functions::names_backends(&n, true)) =>
            {
                ControlFlow::Break(Rule::BackendIdentity)
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// What a statement's function calls do to the session: `set_config(name, value, false)` with
/// literal arguments becomes a change to replay; with run-time arguments it pins the session;
/// other calls that may keep state make the statement `untracked`.
struct SessionScan<'p> {
    policy: &'p FunctionPolicy,
    replays: Vec<SessionChange>,
    pin: Option<PinReason>,
    untracked: bool,
    /// A function pgrouter does not know (user-defined, or not in `read_only_functions`).
    user_functions: bool,
}

impl<'p> SessionScan<'p> {
    fn new(policy: &'p FunctionPolicy) -> Self {
        Self {
            policy,
            replays: Vec::new(),
            pin: None,
            untracked: false,
            user_functions: false,
        }
    }

    fn call(&mut self, name: &ObjectName, args: Option<&FunctionArguments>) {
        let Some(name) = last_part(name) else {
            self.untracked = true;
            return;
        };
        if name.eq_ignore_ascii_case("set_config") {
            match args.map_or(SetConfigCall::RunTime, set_config_call) {
                SetConfigCall::Session(change) => self.replays.push(change),
                SetConfigCall::Local => {}
                SetConfigCall::RunTime => self.pin = Some(PinReason::SessionFunction),
            }
            return;
        }
        if crate::functions::keeps_session_state(&name) {
            self.untracked = true;
        }
        if matches!(
            self.policy.kind(&name),
            FunctionKind::Unknown | FunctionKind::NotListedReadOnly
        ) {
            self.user_functions = true;
        }
    }
}

impl Visitor for SessionScan<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.call(&f.name, Some(&f.args));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.call(name, None),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// What a `set_config(name, value, is_local)` call does to the session.
enum SetConfigCall {
    /// A session setting to replay (literal arguments), or to read from each `Bind`.
    Session(SessionChange),
    /// `is_local = true`: it ends with the transaction.
    Local,
    /// An argument known only when the statement runs (an expression): pins the session.
    RunTime,
}

/// Classifies a `set_config` call by its arguments: string literals and bind parameters for the
/// name and value, a literal for `is_local`.
fn set_config_call(args: &FunctionArguments) -> SetConfigCall {
    let FunctionArguments::List(list) = args else {
        return SetConfigCall::RunTime;
    };
    let values: Option<Vec<&Value>> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => Some(&v.value),
            _ => None,
        })
        .collect();
    let Some([name, value, local]) = values.as_deref() else {
        return SetConfigCall::RunTime;
    };
    let local = match local {
        Value::Boolean(b) => Some(*b),
        Value::SingleQuotedString(s) => bool_text(s),
        _ => None,
    };
    match local {
        Some(true) => return SetConfigCall::Local,
        Some(false) => {}
        None => return SetConfigCall::RunTime,
    }
    let arg = |v: &Value| match v {
        Value::SingleQuotedString(s) => Some(ConfigArg::Text(s.clone())),
        Value::Placeholder(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .map(ConfigArg::Param),
        _ => None,
    };
    match (arg(name), arg(value)) {
        (Some(ConfigArg::Text(name)), Some(ConfigArg::Text(value))) => {
            SetConfigCall::Session(SessionChange::Replay(set_config_replay(&name, &value)))
        }
        (Some(name), Some(value)) => {
            SetConfigCall::Session(SessionChange::SetConfigBound { name, value })
        }
        _ => SetConfigCall::RunTime,
    }
}

/// A PostgreSQL boolean spelled as text (`on`, `false`, `1`, …).
fn bool_text(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" => Some(true),
        "off" | "false" | "no" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// The unqualified, case-folded name (`pg_catalog.NextVal` → `nextval`; quoted names keep case).
fn last_part(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(id) => Some(ident_name(&id.value, id.quote_style.is_some())),
        _ => None,
    }
}

fn ident_name(value: &str, quoted: bool) -> String {
    if quoted {
        value.to_owned()
    } else {
        value.to_ascii_lowercase()
    }
}

fn is_blank(sql: &str) -> bool {
    let mut rest = sql.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    loop {
        if let Some(body) = rest.strip_prefix("--") {
            rest = body.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(body) = rest.strip_prefix("/*") {
            match body.find("*/") {
                Some(end) => rest = &body[end + 2..],
                None => return false,
            }
        } else {
            return rest.is_empty();
        }
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    }
}

/// The parser gave up. Route to the primary; still recognise transaction and session statements
/// by their first keyword so their effects on the session are not lost.
pub(crate) fn unparsable(sql: &str) -> Classification {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty())
        .take(5)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    let single = !sql.trim().trim_end_matches(';').contains(';');
    let mut c = Classification::new(Route::Primary, Rule::Unparsable);
    match first {
        "BEGIN" | "START" if single => {
            let read_only = words.windows(2).any(|w| w[0] == "READ" && w[1] == "ONLY")
                || sql.to_ascii_uppercase().contains("READ ONLY");
            c.rule = Rule::TransactionControl;
            c.effects.transaction.push(TxControl::Begin { read_only });
            if read_only {
                c.route = Route::Read;
            }
        }
        "COMMIT" | "END" if single => {
            c.rule = Rule::TransactionControl;
            c.effects.transaction.push(TxControl::Commit);
        }
        "ROLLBACK" | "ABORT" if single && second != "TO" => {
            c.rule = Rule::TransactionControl;
            c.effects.transaction.push(TxControl::Rollback);
        }
        "SET" | "RESET" if single && second != "LOCAL" && second != "TRANSACTION" => {
            c.route = Route::AllBackends;
            c.rule = Rule::SessionState;
            c.effects.session.push(SessionChange::Replay(
                sql.trim().trim_end_matches(';').to_owned(),
            ));
        }
        // `TABLE [ONLY] name [*]`, which sqlparser does not know: a plain read.
        "TABLE"
            if single
                && (2..=4).contains(&words.len())
                && words[1..].iter().all(|w| {
                    w.chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '"' | '*'))
                }) =>
        {
            c.route = Route::Read;
            c.rule = Rule::ReadOnlyQuery;
        }
        "SELECT" | "WITH" => {
            let upper = sql.to_ascii_uppercase();
            if upper.contains("FOR NO KEY UPDATE") || upper.contains("FOR KEY SHARE") {
                c.rule = Rule::LockingClause;
            }
        }
        "LISTEN" => c.effects.pin = Some(PinReason::Listen),
        "CREATE" if words.iter().any(|w| w == "TEMP" || w == "TEMPORARY") => {
            c.effects.pin = Some(PinReason::TempObject)
        }
        _ => {}
    }
    c
}
