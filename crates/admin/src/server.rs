//! The admin HTTP listener: `/metrics`, `/health`, `/ready`, `/nodes`.

use crate::exporter::Exporter;
use crate::http::{self, Method};
use pgrouter_proxy::ProxyContext;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections open at once (reading a request, or answering one); more are closed at once.
/// Far above what probes and scrapers need, far below what would exhaust file descriptors.
const MAX_CONNECTIONS: usize = 1024;
/// A client has this long to send its request head: a slow sender cannot hold a slot for long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// And this long to read the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `/metrics` and `/nodes` rendered at once; more get 503 at once. The probes (`/health`,
/// `/ready`) need no slot: nothing else can make them wait.
const MAX_RENDERS: usize = 4;

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    exporter: Arc<Exporter>,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let renders = Arc::new(Semaphore::new(MAX_RENDERS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                // Full: this connection is closed at once rather than queued behind others.
                let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                    tracing::debug!("admin HTTP: too many connections; closing a new one");
                    continue;
                };
                let ctx = Arc::clone(&ctx);
                let exporter = Arc::clone(&exporter);
                let renders = Arc::clone(&renders);
                tokio::spawn(async move {
                    let _permit = permit;
                    answer(stream, &ctx, &exporter, &renders).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Option<Result<http::Request, http::BadRequest>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        match http::parse_head(&buf) {
            Ok(Some(r)) => return Some(Ok(r)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn answer(stream: TcpStream, ctx: &ProxyContext, exporter: &Exporter, renders: &Semaphore) {
    // https (admin.https): the first byte of a TLS handshake, within the header timeout.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!("admin HTTP client too slow to send its request; closed");
            return;
        }
    }
    let tls = match ctx.tls_acceptor() {
        Some(acceptor) if first[0] == 0x16 && ctx.config().admin.https => acceptor,
        _ => return exchange(stream, false, ctx, exporter, renders).await,
    };
    match tokio::time::timeout(HEADER_TIMEOUT, tls.https.accept(stream)).await {
        Ok(Ok(tls_stream)) => exchange(tls_stream, true, ctx, exporter, renders).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "admin https handshake failed"),
        Err(_) => tracing::debug!("admin https handshake too slow; closed"),
    }
}

/// One request and its answer, on a plain or a TLS stream.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    over_tls: bool,
    ctx: &ProxyContext,
    exporter: &Exporter,
    renders: &Semaphore,
) {
    let request = match tokio::time::timeout(HEADER_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!("admin HTTP client too slow to send its request; closed");
            return;
        }
    };
    let response = match request {
        Err(e) => http::response(e.status(), "text/plain", format!("{e}\n").as_bytes(), false),
        Ok(r) => {
            let head = r.method == Method::Head;
            let protected = matches!(r.path.as_str(), "/metrics" | "/nodes");
            if protected && !over_tls && ctx.config().admin.https {
                http::response(
                    (403, "Forbidden"),
                    "text/plain",
                    b"https only: admin.https is on\n",
                    head,
                )
            } else if protected && !authorized(ctx, r.authorization.as_deref()) {
                http::response_with(
                    (401, "Unauthorized"),
                    "text/plain",
                    "WWW-Authenticate: Basic realm=\"pgrouter\"\r\n",
                    b"authentication required: admin.http_auth\n",
                    head,
                )
            } else if protected {
                match renders.try_acquire() {
                    Ok(_rendering) => {
                        let (status, content_type, body) = route(&r.path, ctx, exporter);
                        http::response(status, content_type, body.as_bytes(), head)
                    }
                    Err(_) => http::response(
                        UNAVAILABLE,
                        "text/plain",
                        b"busy: too many /metrics and /nodes requests at once\n",
                        head,
                    ),
                }
            } else {
                let (status, content_type, body) = route(&r.path, ctx, exporter);
                http::response(status, content_type, body.as_bytes(), head)
            }
        }
    };
    let write = async {
        let _ = stream.write_all(&response).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    };
    if tokio::time::timeout(WRITE_TIMEOUT, write).await.is_err() {
        tracing::debug!("admin HTTP client too slow to read its answer; closed");
    }
}

/// Whether the request may see `/metrics` and `/nodes`: always without `admin.http_auth`, else
/// with its bearer token or its user and password (compared in constant time).
fn authorized(ctx: &ProxyContext, authorization: Option<&str>) -> bool {
    let config = ctx.config();
    let Some(auth) = &config.admin.http_auth else {
        return true;
    };
    let Some(given) = authorization else {
        return false;
    };
    let same = |a: &str, b: &str| {
        use subtle::ConstantTimeEq;
        a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    };
    let (scheme, value) = given.split_once(' ').unwrap_or((given, ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return auth
            .bearer_token
            .as_ref()
            .is_some_and(|token| same(value, token.expose()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let (Some(user), Some(password)) = (&auth.username, &auth.password) else {
            return false;
        };
        let expected = crate::http::base64(format!("{user}:{}", password.expose()).as_bytes());
        return same(value, &expected);
    }
    false
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
