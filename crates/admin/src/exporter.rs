//! The Prometheus exposition: the recorder for latency histograms, and, at each scrape, the
//! counters and gauges copied from what sessions and health checks counted.
//!
//! Labels are bounded: node names, roles and states from the configuration and the routing
//! table, users and databases of connected clients, routing rules, SQLSTATE classes. Never SQL.

use metrics::{counter, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use pgrouter_proxy::clients::ClientState;
use pgrouter_proxy::latency;
use pgrouter_proxy::ProxyContext;
use pgrouter_topology::{NodeState, Role};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Histogram buckets (seconds): from 100 µs to 30 s, the same as the sessions' own histograms.
const BUCKETS: &[f64] = &latency::BUCKETS;

/// The request latency histogram, recorded by sessions (`Stats::request_duration`).
const REQUEST_DURATION: (&str, &str) = (
    "pgrouter_request_duration_seconds",
    "Request latency through pgrouter, to ReadyForQuery",
);
/// The transaction latency histogram (`Stats::transaction_duration`).
const TRANSACTION_DURATION: (&str, &str) = (
    "pgrouter_transaction_duration_seconds",
    "Explicit transaction latency through pgrouter, first request to the end",
);
/// The checkout wait histograms, per node (`NodeStats::checkout_wait`).
const CHECKOUT_WAIT: (&str, &str) = (
    "pgrouter_pool_checkout_wait_seconds",
    "Time to get a server connection: queueing, plus the login when a new one is opened",
);

/// How long a gauge nobody sets stays in the exposition.
const STALE_GAUGE: std::time::Duration = std::time::Duration::from_secs(300);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The Prometheus builder refused its settings.
    #[error("cannot build the Prometheus recorder: {0}")]
    Build(String),
}

/// The user and database label value of clients that have not authenticated yet.
pub const UNAUTHENTICATED: &str = "(unauthenticated)";

/// Renders `/metrics`.
pub struct Exporter {
    handle: PrometheusHandle,
    /// Label sets of per-user/database gauges seen at earlier scrapes: they are set to 0 when
    /// their clients are gone rather than left at a stale value.
    seen: Mutex<HashSet<Vec<(&'static str, String)>>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Installs the recorder and returns the handle that renders it. The `metrics` facade has
    /// one recorder per process, so a second call fails. Call it before the proxy context and the
    /// health checks are built, so their histograms are recorded.
    pub fn install() -> Result<Arc<Exporter>, ExporterError> {
        let handle = PrometheusBuilder::new()
            // Every gauge is set at each scrape: one left alone this long belongs to a node a
            // reload removed, and disappears rather than showing a frozen value.
            .idle_timeout(MetricKindMask::GAUGE, Some(STALE_GAUGE))
            .set_buckets(BUCKETS)
            .map_err(|e| ExporterError::Build(e.to_string()))?
            .install_recorder()
            .map_err(|e| ExporterError::Build(e.to_string()))?;
        describe();
        Ok(Arc::new(Exporter {
            handle,
            seen: Mutex::new(HashSet::new()),
        }))
    }

    /// Drains histogram buffers; call now and then so they do not grow between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition, with every counter and gauge brought up to date first.
    pub fn render(&self, ctx: &ProxyContext) -> String {
        self.update(ctx);
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        // The latency histograms sessions record themselves (`pgrouter_proxy::latency`).
        let stats = &ctx.stats;
        for (histogram, (name, help)) in [
            (&stats.request_duration, REQUEST_DURATION),
            (&stats.transaction_duration, TRANSACTION_DURATION),
        ] {
            latency::render(
                name,
                help,
                &[(String::new(), histogram.snapshot())],
                &mut text,
            );
        }
        let per_node: Vec<(String, latency::Snapshot)> = stats
            .by_node_name(|i| ctx.node_name(i))
            .into_iter()
            .map(|n| {
                let label = format!("node=\"{}\"", latency::label_value(&n.name));
                (label, n.checkout_wait)
            })
            .collect();
        let (name, help) = CHECKOUT_WAIT;
        latency::render(name, help, &per_node, &mut text);
        text
    }

    fn update(&self, ctx: &ProxyContext) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let table = ctx.topology.load();
        let topo = &ctx.topology.stats;
        gauge!("pgrouter_primary_known").set(f64::from(u8::from(table.primary.is_some())));
        gauge!("pgrouter_routing_table_generation").set(table.generation as f64);
        counter!("pgrouter_routing_table_swaps_total").absolute(load(&topo.table_swaps));
        counter!("pgrouter_failovers_total").absolute(load(&topo.failovers));
        for (i, n) in table.configured() {
            let node = n.name.clone();
            gauge!("pgrouter_node_up", "node" => node.clone())
                .set(f64::from(u8::from(n.state != NodeState::Down)));
            gauge!("pgrouter_node_serving_reads", "node" => node.clone())
                .set(f64::from(u8::from(table.serves_reads(i))));
            for role in [Role::Primary, Role::Replica, Role::Unknown] {
                gauge!("pgrouter_node_role", "node" => node.clone(), "role" => role.to_string())
                    .set(f64::from(u8::from(n.role == role)));
            }
            for state in [
                NodeState::Up,
                NodeState::Down,
                NodeState::Lagging,
                NodeState::Excluded,
                NodeState::Disabled,
            ] {
                gauge!("pgrouter_node_state", "node" => node.clone(), "state" => state.to_string())
                    .set(f64::from(u8::from(n.state == state)));
            }
            gauge!("pgrouter_node_weight", "node" => node.clone()).set(f64::from(n.weight));
            let (lag_bytes, lag_seconds) = match (n.role, n.lag_bytes, n.lag_seconds) {
                (Role::Primary, ..) => (Some(0.0), Some(0.0)),
                (_, b, s) => (b.map(|b| b as f64), s),
            };
            // Unknown lag is NaN rather than a stale or flattering number.
            gauge!("pgrouter_node_replica_lag_bytes", "node" => node.clone())
                .set(lag_bytes.unwrap_or(f64::NAN));
            gauge!("pgrouter_node_replica_lag_seconds", "node" => node.clone())
                .set(lag_seconds.unwrap_or(f64::NAN));
            gauge!("pgrouter_pool_max_server_connections", "node" => node)
                .set(f64::from(ctx.pools.settings().max_server_connections));
        }
        // Counters are summed per name over the node's slots (a re-addressed node has several),
        // and kept for removed nodes: they must never go down.
        let mut checks: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for slot in ctx.topology.nodes().iter() {
            let sum = checks.entry(slot.target.name.clone()).or_default();
            sum.0 += load(&slot.checks);
            sum.1 += load(&slot.check_failures);
        }
        for (node, (total, failed)) in checks {
            counter!("pgrouter_health_checks_total", "node" => node.clone()).absolute(total);
            counter!("pgrouter_health_check_failures_total", "node" => node).absolute(failed);
        }
        let stats = &ctx.stats;
        for n in stats.by_node_name(|i| ctx.node_name(i)) {
            for (d, route) in pgrouter_proxy::stats::DECISIONS.iter().enumerate() {
                counter!("pgrouter_statements_total", "node" => n.name.clone(), "decision" => route.as_str())
                    .absolute(n.routed[d]);
            }
            counter!("pgrouter_pool_checkout_timeouts_total", "node" => n.name)
                .absolute(n.checkout_timeouts);
        }
        for rule in pgrouter_sql::Rule::ALL {
            counter!("pgrouter_statements_by_rule_total", "rule" => rule.as_str())
                .absolute(stats.rules[rule as usize].get());
        }
        for (class, n) in stats.errors_by_class() {
            counter!("pgrouter_errors_total", "class" => class).absolute(n);
        }
        counter!("pgrouter_client_connections_accepted_total")
            .absolute(load(&stats.clients_accepted));
        counter!("pgrouter_client_connections_refused_total")
            .absolute(load(&stats.clients_refused));
        counter!("pgrouter_auth_failures_total").absolute(load(&stats.auth_failures));
        counter!("pgrouter_requests_total").absolute(stats.requests.get());
        counter!("pgrouter_transactions_total").absolute(stats.transactions.get());
        counter!("pgrouter_prepared_statement_hits_total").absolute(load(&ctx.prepared_stats.hits));
        counter!("pgrouter_prepared_statement_misses_total")
            .absolute(load(&ctx.prepared_stats.misses));
        gauge!("pgrouter_client_buffer_bytes").set(ctx.buffer_budget.used() as f64);
        gauge!("pgrouter_client_buffer_limit_bytes").set(ctx.buffer_budget.limit() as f64);
        gauge!("pgrouter_draining").set(f64::from(u8::from(ctx.draining.load(Ordering::Relaxed))));
        gauge!("pgrouter_start_time_seconds").set(ctx.started_at as f64);
        gauge!("pgrouter_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        self.update_connections(ctx);
    }

    /// Clients by state and server connections by state, per user and database (authenticated
    /// ones; clients still logging in are counted under [`UNAUTHENTICATED`]).
    fn update_connections(&self, ctx: &ProxyContext) {
        let mut gauges: BTreeMap<Vec<(&'static str, String)>, (&'static str, f64)> =
            BTreeMap::new();
        let clients = ctx.clients.snapshot();
        let (received, sent) = ctx.client_bytes(&clients);
        for c in &clients {
            let Some(login) = c.login.get() else { continue };
            // Names are label values only once the client has authenticated: before that they
            // are whatever a client made up, and would make series without bound.
            let (user, database) = if c.authenticated.load(std::sync::atomic::Ordering::Relaxed) {
                (login.user.clone(), login.database.clone())
            } else {
                (UNAUTHENTICATED.to_owned(), UNAUTHENTICATED.to_owned())
            };
            let key = vec![
                ("user", user.clone()),
                ("database", database.clone()),
                ("state", c.state().as_str().to_owned()),
            ];
            gauges
                .entry(key)
                .or_insert(("pgrouter_client_connections", 0.0))
                .1 += 1.0;
            for (node, _) in [c.primary.get(), c.read.get()].into_iter().flatten() {
                let key = vec![
                    ("node", ctx.node_name(node)),
                    ("user", user.clone()),
                    ("database", database.clone()),
                    ("state", "active".to_owned()),
                ];
                gauges
                    .entry(key)
                    .or_insert(("pgrouter_server_connections", 0.0))
                    .1 += 1.0;
            }
        }
        for idle in ctx.pools.idle_connections() {
            let key = vec![
                ("node", ctx.node_name(idle.key.node)),
                ("user", idle.key.login.user.clone()),
                ("database", idle.key.login.database.clone()),
                ("state", "idle".to_owned()),
            ];
            gauges
                .entry(key)
                .or_insert(("pgrouter_server_connections", 0.0))
                .1 += 1.0;
        }
        counter!("pgrouter_client_received_bytes_total").absolute(received);
        counter!("pgrouter_client_sent_bytes_total").absolute(sent);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Every client state appears for each user/database seen, so dashboards can sum them.
        let client_keys: Vec<_> = gauges
            .iter()
            .filter(|(_, (name, _))| *name == "pgrouter_client_connections")
            .map(|(k, _)| (k[0].1.clone(), k[1].1.clone()))
            .collect();
        for (user, database) in client_keys {
            for state in ClientState::ALL {
                let key = vec![
                    ("user", user.clone()),
                    ("database", database.clone()),
                    ("state", state.as_str().to_owned()),
                ];
                gauges
                    .entry(key)
                    .or_insert(("pgrouter_client_connections", 0.0));
            }
        }
        for key in seen.iter() {
            let name = if key.len() == 3 {
                "pgrouter_client_connections"
            } else {
                "pgrouter_server_connections"
            };
            gauges.entry(key.clone()).or_insert((name, 0.0));
        }
        // Bounded: label sets come from configured users and the databases they use; still,
        // forget them all if a client invents thousands of database names.
        if seen.len() > 10_000 {
            seen.clear();
        }
        for (key, (name, value)) in gauges {
            let labels: Vec<metrics::Label> = key
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            gauge!(name, labels).set(value);
            seen.insert(key);
        }
    }
}

/// `# HELP` texts and units.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "pgrouter_client_buffer_bytes",
        Unit::Bytes,
        "Client read buffers' growth beyond their first 16 kB, all clients together"
    );
    describe_gauge!(
        "pgrouter_client_buffer_limit_bytes",
        Unit::Bytes,
        "client.max_buffer_memory (0: no limit)"
    );
    describe_gauge!(
        "pgrouter_primary_known",
        "1 when the routing table has a primary"
    );
    describe_gauge!(
        "pgrouter_routing_table_generation",
        "Generation of the routing table in force"
    );
    describe_counter!(
        "pgrouter_routing_table_swaps_total",
        "Routing tables published with a changed primary, role or node state"
    );
    describe_counter!(
        "pgrouter_failovers_total",
        "Times the primary became a different node"
    );
    describe_gauge!(
        "pgrouter_node_up",
        "1 when the node passes its health checks"
    );
    describe_gauge!(
        "pgrouter_node_serving_reads",
        "1 when the node receives reads"
    );
    describe_gauge!("pgrouter_node_role", "1 for the node's current role");
    describe_gauge!(
        "pgrouter_node_state",
        "1 for the node's current state in the routing table"
    );
    describe_gauge!(
        "pgrouter_node_weight",
        "Share of reads the node gets (0 when it serves none)"
    );
    describe_gauge!(
        "pgrouter_node_replica_lag_bytes",
        Unit::Bytes,
        "WAL bytes the replica is behind the primary (NaN when unknown)"
    );
    describe_gauge!(
        "pgrouter_node_replica_lag_seconds",
        Unit::Seconds,
        "Replay delay of the replica (NaN when unknown)"
    );
    describe_counter!("pgrouter_health_checks_total", "Health checks run");
    describe_counter!(
        "pgrouter_health_checks_triggered_total",
        "Times every node was asked to be probed at once, by what signalled a possible role change"
    );
    describe_counter!(
        "pgrouter_health_check_failures_total",
        "Health checks that failed"
    );
    describe_histogram!(
        "pgrouter_health_check_duration_seconds",
        Unit::Seconds,
        "Time one health check took"
    );
    describe_counter!(
        "pgrouter_statements_total",
        "Statements run, by node and routing decision (read, primary, all)"
    );
    describe_counter!(
        "pgrouter_statements_by_rule_total",
        "Statements classified, by the rule that decided their route"
    );
    describe_counter!(
        "pgrouter_pool_checkout_timeouts_total",
        "Clients refused after waiting pool.checkout_timeout for a server connection"
    );
    describe_gauge!(
        "pgrouter_pool_max_server_connections",
        "pool.max_server_connections per node"
    );
    describe_counter!(
        "pgrouter_errors_total",
        "Errors sent to clients, by SQLSTATE class"
    );
    describe_counter!(
        "pgrouter_client_connections_accepted_total",
        "Client connections accepted"
    );
    describe_counter!(
        "pgrouter_client_connections_refused_total",
        "Client connections refused by client.max_connections limits"
    );
    describe_counter!(
        "pgrouter_auth_failures_total",
        "Client logins refused for a wrong password or an unknown user"
    );
    describe_counter!(
        "pgrouter_requests_total",
        "Client requests answered (simple queries and extended-protocol segments)"
    );
    describe_counter!("pgrouter_transactions_total", "Explicit transactions ended");
    describe_counter!(
        "pgrouter_prepared_statement_hits_total",
        "Prepared statement uses that found the statement on the server connection"
    );
    describe_counter!(
        "pgrouter_prepared_statement_misses_total",
        "Prepared statement uses that had pgrouter prepare it first"
    );
    describe_counter!(
        "pgrouter_client_received_bytes_total",
        Unit::Bytes,
        "Bytes received from clients"
    );
    describe_counter!(
        "pgrouter_client_sent_bytes_total",
        Unit::Bytes,
        "Bytes sent to clients"
    );
    describe_gauge!(
        "pgrouter_client_connections",
        "Client connections by user, database and state"
    );
    describe_gauge!(
        "pgrouter_server_connections",
        "Server connections by node, user, database and state"
    );
    describe_gauge!("pgrouter_draining", "1 while shutting down");
    describe_gauge!(
        "pgrouter_start_time_seconds",
        Unit::Seconds,
        "Start time of the process since the Unix epoch"
    );
    describe_gauge!("pgrouter_build_info", "pgrouter's version, as a label");
}
