//! What each `SHOW` command answers, as text columns and rows.

use crate::context::ProxyContext;
use std::sync::atomic::Ordering;

/// A result set: column names, rows of text (or NULL), and the command tag.
#[derive(Debug)]
pub struct ResultSet {
    /// Column names.
    pub columns: Vec<&'static str>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    pub(crate) fn new(columns: &[&'static str]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, row: Vec<Option<String>>) {
        self.rows.push(row);
    }
}

fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// `SHOW NODES`.
pub fn nodes(ctx: &ProxyContext) -> ResultSet {
    let table = ctx.topology.load();
    let mut rs = ResultSet::new(&[
        "node",
        "host",
        "port",
        "status",
        "role",
        "weight",
        "lag_bytes",
        "lag_seconds",
        "timeline",
        "reads_served",
        "statements",
        "last_status_change",
        "reason",
    ]);
    for (i, n) in table.configured() {
        let statements: u64 = ctx
            .stats
            .nodes
            .with(i, |s| {
                s.routed.iter().map(crate::per_worker::Counter::get).sum()
            })
            .unwrap_or(0);
        rs.push(vec![
            text(&n.name),
            text(&n.host),
            text(n.port),
            text(n.state),
            text(n.role),
            text(n.weight),
            n.lag_bytes.map(|v| v.to_string()),
            n.lag_seconds.map(|v| format!("{v:.3}")),
            n.timeline.map(|v| v.to_string()),
            text(ctx.stats.reads_served(i)),
            text(statements),
            text(timestamp(n.last_change)),
            text(&n.reason),
        ]);
    }
    rs
}

/// `SHOW COUNTERS`: counters since start-up, one per row.
pub fn counters(ctx: &ProxyContext) -> ResultSet {
    let s = &ctx.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let clients = ctx.clients.snapshot();
    let (bytes_received, bytes_sent) = ctx.client_bytes(&clients);
    let topo = &ctx.topology.stats;
    let mut rows: Vec<(String, String)> = vec![
        (
            "uptime_seconds".into(),
            pgrouter_topology::table::unix_now()
                .saturating_sub(ctx.started_at)
                .to_string(),
        ),
        ("clients_connected".into(), clients.len().to_string()),
        (
            "clients_accepted".into(),
            load(&s.clients_accepted).to_string(),
        ),
        (
            "clients_refused".into(),
            load(&s.clients_refused).to_string(),
        ),
        ("auth_failures".into(), load(&s.auth_failures).to_string()),
        ("requests".into(), s.requests.get().to_string()),
        ("transactions".into(), s.transactions.get().to_string()),
        ("bytes_received".into(), bytes_received.to_string()),
        ("bytes_sent".into(), bytes_sent.to_string()),
        (
            "prepared_statement_hits".into(),
            load(&ctx.prepared_stats.hits).to_string(),
        ),
        (
            "prepared_statement_misses".into(),
            load(&ctx.prepared_stats.misses).to_string(),
        ),
        (
            "routing_table_swaps".into(),
            load(&topo.table_swaps).to_string(),
        ),
        ("failovers".into(), load(&topo.failovers).to_string()),
    ];
    for node in s.by_node_name(|i| ctx.node_name(i)) {
        let name = &node.name;
        for (d, route) in crate::stats::DECISIONS.iter().enumerate() {
            rows.push((
                format!("statements.{name}.{}", route.as_str()),
                node.routed[d].to_string(),
            ));
        }
        rows.push((
            format!("checkout_timeouts.{name}"),
            node.checkout_timeouts.to_string(),
        ));
    }
    for rule in pgrouter_sql::Rule::ALL {
        let n = s.rules[rule as usize].get();
        if n > 0 {
            rows.push((format!("rule.{}", rule.as_str()), n.to_string()));
        }
    }
    for (class, n) in s.errors_by_class() {
        rows.push((format!("errors.class_{class}"), n.to_string()));
    }
    let mut rs = ResultSet::new(&["stat", "value"]);
    for (k, v) in rows {
        rs.push(vec![Some(k), Some(v)]);
    }
    rs
}

/// `SHOW CONFIG`: every setting in force as `key = value`, secrets masked.
pub fn config(ctx: &ProxyContext) -> ResultSet {
    let mut rs = ResultSet::new(&["key", "value"]);
    let value = serde_json::to_value(&*ctx.config()).unwrap_or(serde_json::Value::Null);
    let mut flat = Vec::new();
    crate::reload::flatten("", &value, &mut flat);
    for (k, v) in flat {
        rs.push(vec![Some(k), Some(v)]);
    }
    rs
}

/// `SHOW VERSION`.
pub fn version() -> ResultSet {
    let mut rs = ResultSet::new(&["version"]);
    rs.push(vec![text(format!(
        "pgrouter {}",
        env!("CARGO_PKG_VERSION")
    ))]);
    rs
}

/// `SHOW HELP`.
pub fn help() -> ResultSet {
    let mut rs = ResultSet::new(&["command", "description"]);
    for (c, d) in super::command::COMMANDS {
        rs.push(vec![text(c), text(d)]);
    }
    rs
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS+00` (UTC), the way PostgreSQL prints a timestamptz.
pub fn timestamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00+00");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00:00+00");
        assert_eq!(timestamp(1_795_450_123), "2026-11-23 16:08:43+00");
    }

    #[test]
    fn config_is_flattened_to_keys() {
        let v = serde_json::json!({"a": {"b": 1, "c": ["x", "y"]}, "d": null, "e": []});
        let mut out = Vec::new();
        crate::reload::flatten("", &v, &mut out);
        assert_eq!(
            out,
            vec![
                ("a.b".to_owned(), "1".to_owned()),
                ("a.c[0]".to_owned(), "x".to_owned()),
                ("a.c[1]".to_owned(), "y".to_owned()),
                ("d".to_owned(), String::new()),
                ("e".to_owned(), "[]".to_owned()),
            ]
        );
    }
}
