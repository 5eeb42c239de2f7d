//! pgrouter: a PostgreSQL read/write-splitting and high-availability router.
//!
//! This library is the wiring between the crates, so tests (and the binary in `main.rs`) can start
//! a router in-process. It holds no logic of its own.
//!
//! # Layout
//! - `crates/protocol`: sans-IO wire protocol (framing, start-up, errors, SCRAM/MD5 server side).
//! - `crates/config`: the YAML configuration model and its validation.
//! - `crates/conn`: logging in to PostgreSQL servers.
//! - `crates/topology`: health checks, role discovery, the routing table.
//! - `crates/proxy`: listener and client sessions.

use pgrouter_config::Config;
use pgrouter_proxy::ProxyContext;
use pgrouter_topology::{MonitorSettings, Policy};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use pgrouter_config as config;

/// Binds the client listener named in the configuration.
pub async fn bind(config: &Config) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen).await
}

/// Serves clients on `listener` until `shutdown` is cancelled and every session has ended. The
/// health checks run meanwhile (and stop last, so draining sessions still follow failovers).
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) {
    let ctx = Arc::new(ProxyContext::new(&config));
    let monitor_stop = CancellationToken::new();
    let monitor = ctx
        .topology
        .start(monitor_settings(&config), monitor_stop.clone());
    let upkeep = {
        let ctx = Arc::clone(&ctx);
        let stop = monitor_stop.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => ctx.maintain_pools(),
                }
            }
        })
    };
    pgrouter_proxy::serve(listener, Arc::clone(&ctx), shutdown).await;
    let stats = &ctx.prepared_stats;
    let (hits, misses) = (
        stats.hits.load(std::sync::atomic::Ordering::Relaxed),
        stats.misses.load(std::sync::atomic::Ordering::Relaxed),
    );
    if hits + misses > 0 {
        tracing::info!(
            hits,
            misses,
            hit_rate = format!("{:.1}%", hits as f64 * 100.0 / (hits + misses) as f64),
            "prepared statements: uses that found the statement on the server connection"
        );
    }
    monitor_stop.cancel();
    let _ = monitor.await;
    let _ = upkeep.await;
}

/// The health checks' settings, from the configuration.
pub fn monitor_settings(config: &Config) -> MonitorSettings {
    let hc = &config.health_check;
    let max_lag = config.routing.max_replica_lag.get();
    MonitorSettings {
        discovery: config.topology.discovery,
        interval: hc.interval.get(),
        timeout: hc.timeout.get(),
        max_failures: hc.max_failures,
        min_successes: hc.min_successes,
        login: config.health_check_login(),
        policy: Policy {
            discovery: config.topology.discovery,
            max_lag_bytes: config.routing.max_replica_lag_bytes.bytes(),
            max_lag_seconds: (!max_lag.is_zero()).then_some(max_lag.as_secs_f64()),
        },
    }
}

/// Describes how a statement is classified and routed (`pgrouter explain`).
pub fn explain(routing: &pgrouter_config::RoutingConfig, sql: &str) -> String {
    use std::fmt::Write;
    let classifier = pgrouter_sql::Classifier::new(pgrouter_sql::FunctionPolicy::from_lists(
        &routing.write_functions,
        routing.read_only_functions.as_deref(),
    ));
    let c = classifier.classify(sql);
    let mut out = String::new();
    let target = match c.route {
        pgrouter_sql::Route::Read if !c.check_functions.is_empty() => {
            "primary (calls functions pgrouter does not know; see docs/routing.md)"
        }
        pgrouter_sql::Route::Read if !routing.load_balance => "primary (load_balance is off)",
        pgrouter_sql::Route::Read => "replica (or the primary, by weight)",
        pgrouter_sql::Route::Primary => "primary",
        pgrouter_sql::Route::AllBackends => "every server connection of the session (replayed)",
    };
    let _ = writeln!(out, "route:     {}", c.route.as_str());
    let _ = writeln!(out, "runs on:   {target}");
    let _ = writeln!(out, "rule:      {}", c.rule.as_str());
    for t in &c.effects.transaction {
        let _ = writeln!(out, "effect:    transaction {t:?}");
    }
    for s in &c.effects.session {
        let _ = writeln!(out, "effect:    session {s:?}");
    }
    if let Some(pin) = c.effects.pin {
        let _ = writeln!(
            out,
            "effect:    pins the session to the primary ({})",
            pin.as_str()
        );
    }
    if !c.check_functions.is_empty() {
        let _ = writeln!(out, "functions: {}", c.check_functions.join(", "));
    }
    out
}
