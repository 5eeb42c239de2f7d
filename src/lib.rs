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
//! - `crates/pool`: server connection pools.
//! - `crates/proxy`: listener, client sessions, the admin console, reloads.
//! - `crates/admin`: the admin HTTP endpoints and the Prometheus exporter.

pub mod systemd;

use pgrouter_config::Config;
use pgrouter_proxy::ProxyContext;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use pgrouter_config as config;
use pgrouter_proxy::listener::ClientListener;
use pgrouter_proxy::routing::Endpoint;

/// The sockets pgrouter serves: clients, and the admin HTTP endpoints.
#[derive(Debug)]
pub struct Listeners {
    /// `listen`, the optional `primary_listen` and `read_only_listen`, and the Unix-domain
    /// socket in `unix_socket_dir`, each with what it offers.
    pub clients: Vec<(ClientListener, Endpoint)>,
    /// `admin_listen`.
    pub admin: TcpListener,
    /// The Unix-domain socket's file, removed when pgrouter stops serving.
    pub unix_socket: Option<PathBuf>,
}

/// Binds the listeners named in the configuration; the error names the address that failed.
pub async fn bind(config: &Config) -> Result<Listeners, (String, std::io::Error)> {
    let bind = |address: std::net::SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|e| (address.to_string(), e))
    };
    // `listen` last: once it accepts connections (what a readiness probe or a test waits for),
    // every other listener, the Unix-domain socket included, is bound too.
    let mut clients = Vec::new();
    for (address, endpoint) in [
        (config.primary_listen, Endpoint::Primary),
        (config.read_only_listen, Endpoint::ReadOnly),
    ] {
        if let Some(address) = address {
            clients.push((ClientListener::Tcp(bind(address).await?), endpoint));
        }
    }
    let admin = bind(config.admin_listen).await?;
    let unix_socket = config.unix_socket_path();
    if let Some(path) = &unix_socket {
        let listener = bind_unix(path)
            .await
            .map_err(|e| (path.display().to_string(), e))?;
        clients.push((ClientListener::Unix(listener), Endpoint::Split));
    }
    match bind(config.listen).await {
        Ok(listener) => clients.push((ClientListener::Tcp(listener), Endpoint::Split)),
        Err(e) => {
            // Not serving: no socket file left behind for clients to find.
            if let Some(path) = &unix_socket {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    }
    Ok(Listeners {
        clients,
        admin,
        unix_socket,
    })
}

/// Binds the Unix-domain socket at `path`, replacing a socket file a stopped process left
/// behind (nobody accepts on it) but never one another server is listening on. As PostgreSQL's
/// default `unix_socket_permissions` (0777), who may connect is up to the directory's
/// permissions and the access rules.
async fn bind_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::io::ErrorKind;
    let listener = match tokio::net::UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(
                    ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ));
            }
            std::fs::remove_file(path)?;
            tokio::net::UnixListener::bind(path)?
        }
        other => other?,
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

/// Serves clients until `shutdown` is cancelled and every session has ended. The health checks
/// run meanwhile (and stop last, so draining sessions still follow failovers); the admin
/// endpoints answer until the end. `SIGHUP` reloads the configuration from `config_path`.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    listeners: Listeners,
    shutdown: CancellationToken,
) {
    // Installed before anything registers a histogram.
    let exporter = match pgrouter_admin::Exporter::install() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "metrics disabled");
            None
        }
    };
    let ctx = Arc::new(ProxyContext::new(&config, config_path));
    let monitor_stop = CancellationToken::new();
    let monitor = ctx
        .topology
        .start(ctx.monitor_settings(&config), monitor_stop.clone());
    let upkeep = {
        let ctx = Arc::clone(&ctx);
        let exporter = exporter.clone();
        let stop = monitor_stop.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {
                        ctx.maintain_pools();
                        ctx.record_primary_position();
                        if let Some(e) = &exporter {
                            e.upkeep();
                        }
                    }
                }
            }
        })
    };
    let admin = exporter.map(|e| {
        tokio::spawn(pgrouter_admin::serve(
            listeners.admin,
            Arc::clone(&ctx),
            e,
            monitor_stop.clone(),
        ))
    });
    let notifier = systemd::Notifier::from_env().map(Arc::new);
    tokio::spawn(reload_on_sighup(
        Arc::clone(&ctx),
        notifier.clone(),
        monitor_stop.clone(),
    ));
    {
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        let notifier = notifier.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            // Readiness turns false at once, before sessions are closed.
            ctx.draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(n) = &notifier {
                n.notify("STOPPING=1");
            }
        });
    }
    if let Some(n) = &notifier {
        // The listeners are bound and the accept loops start below: clients can connect now.
        n.notify("READY=1\nSTATUS=serving");
        if let Some(every) = systemd::Notifier::watchdog_interval() {
            // Pings from the runtime itself: a stuck runtime stops them and systemd restarts it.
            let n = Arc::clone(n);
            let stop = monitor_stop.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticks.tick() => n.notify("WATCHDOG=1"),
                    }
                }
            });
        }
    }
    pgrouter_proxy::serve(listeners.clients, Arc::clone(&ctx), shutdown).await;
    if let Some(path) = &listeners.unix_socket {
        // As PostgreSQL at shutdown: local clients get "no such file", not a dead socket.
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(error = %e, path = %path.display(), "could not remove the Unix-domain socket");
        }
    }
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
    if let Some(admin) = admin {
        let _ = admin.await;
    }
}

/// Each `SIGHUP` re-reads the configuration file; an invalid one is rejected whole.
async fn reload_on_sighup(
    ctx: Arc<ProxyContext>,
    notifier: Option<Arc<systemd::Notifier>>,
    stop: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler: reload only via the admin console");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        tracing::info!("SIGHUP: reloading the configuration");
        if let Some(n) = &notifier {
            n.notify("RELOADING=1");
        }
        let status = match ctx.reload() {
            Ok(_) => "READY=1\nSTATUS=serving (configuration reloaded)".to_owned(),
            Err(e) => {
                tracing::error!("configuration not reloaded, the old one stays in force: {e}");
                "READY=1\nSTATUS=serving (reload failed; the previous configuration is in force)"
                    .to_owned()
            }
        };
        if let Some(n) = &notifier {
            n.notify(&status);
        }
    }
}

/// Describes how a statement is classified and routed (`pgrouter explain`).
pub fn explain(routing: &pgrouter_config::RoutingConfig, sql: &str) -> String {
    use std::fmt::Write;
    let classifier = pgrouter_proxy::context::classifier(routing);
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
