//! pgrouter: a PostgreSQL read/write-splitting and high-availability router.
//!
//! This library is the wiring between the crates, so tests (and the binary in `main.rs`) can start
//! a router in-process. It holds no logic of its own.
//!
//! # Layout
//! - `crates/protocol`: sans-IO wire protocol (framing, start-up, errors, SCRAM/MD5 server side).
//! - `crates/config`: the YAML configuration model and its validation.
//! - `crates/conn`: logging in to PostgreSQL servers.
//! - `crates/proxy`: listener and client sessions.

use pgrouter_config::Config;
use pgrouter_proxy::ProxyContext;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use pgrouter_config as config;

/// Binds the client listener named in the configuration.
pub async fn bind(config: &Config) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen).await
}

/// Serves clients on `listener` until `shutdown` is cancelled and every session has ended.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) {
    let ctx = Arc::new(ProxyContext::new(&config));
    pgrouter_proxy::serve(listener, ctx, shutdown).await;
}
