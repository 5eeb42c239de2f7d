//! pgrouter's admin HTTP server: Prometheus metrics (`/metrics`), liveness (`/health`),
//! readiness (`/ready`) and the routing table as JSON (`/nodes`), on `admin_listen`.
//!
//! It only reads what the proxy and the health checks keep (atomics, the routing table, the
//! client registry); it never touches a client session or a server connection, and nothing it
//! does can block the relay.
//!
//! # Layout
//! - [`http`]: bounded HTTP/1.x request parsing and responses.
//! - [`exporter`]: the Prometheus recorder and the scrape-time copy of counters and gauges.
//! - [`server`]: the listener and the endpoints.

pub mod exporter;
pub mod http;
pub mod server;

pub use exporter::Exporter;
pub use server::serve;
