//! The admin HTTP listener: `/metrics`, `/health`, `/ready`, `/nodes`.

use crate::exporter::Exporter;
use crate::http::{self, Method};
use pgrouter_proxy::ProxyContext;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    exporter: Arc<Exporter>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let ctx = Arc::clone(&ctx);
                let exporter = Arc::clone(&exporter);
                tokio::spawn(async move {
                    let _permit = permit;
                    if tokio::time::timeout(IO_TIMEOUT, answer(stream, &ctx, &exporter))
                        .await
                        .is_err()
                    {
                        tracing::debug!("admin HTTP client too slow; closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, ctx: &ProxyContext, exporter: &Exporter) {
    let mut buf = Vec::with_capacity(1024);
    let request = loop {
        match http::parse_head(&buf) {
            Ok(Some(r)) => break Ok(r),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let response = match request {
        Err(e) => http::response(e.status(), "text/plain", format!("{e}\n").as_bytes(), false),
        Ok(r) => {
            let head = r.method == Method::Head;
            let (status, content_type, body) = route(&r.path, ctx, exporter);
            http::response(status, content_type, body.as_bytes(), head)
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

const OK: (u16, &str) = (200, "OK");
const UNAVAILABLE: (u16, &str) = (503, "Service Unavailable");

/// The answer for a path: status, content type, body.
fn route(
    path: &str,
    ctx: &ProxyContext,
    exporter: &Exporter,
) -> ((u16, &'static str), &'static str, String) {
    match path {
        "/metrics" => (
            OK,
            "text/plain; version=0.0.4; charset=utf-8",
            exporter.render(ctx),
        ),
        "/health" | "/healthz" | "/live" => (OK, "text/plain", "ok\n".into()),
        "/ready" | "/readyz" => {
            let (ready, why) = readiness(ctx);
            (
                if ready { OK } else { UNAVAILABLE },
                "text/plain",
                format!("{why}\n"),
            )
        }
        "/nodes" => {
            let table = ctx.topology.load();
            let body = serde_json::to_string_pretty(&**table).unwrap_or_else(|_| "{}".into());
            (OK, "application/json", body + "\n")
        }
        _ => (
            (404, "Not Found"),
            "text/plain",
            "not found: try /metrics, /health, /ready or /nodes\n".into(),
        ),
    }
}

/// Ready: not draining, and a primary is known (or, with `admin.ready_without_primary`, some
/// node serves reads).
pub fn readiness(ctx: &ProxyContext) -> (bool, &'static str) {
    if ctx.draining.load(Ordering::Relaxed) {
        return (false, "draining: shutting down");
    }
    let table = ctx.topology.load();
    if table.primary.is_some() {
        return (true, "ready");
    }
    if ctx.config().admin.ready_without_primary && !table.readers.is_empty() {
        return (true, "ready for reads: no primary");
    }
    (false, "no primary known")
}
