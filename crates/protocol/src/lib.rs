//! Sans-IO pieces of the PostgreSQL v3 wire protocol that pgrouter needs.
//!
//! This crate turns bytes into typed protocol facts and typed replies into bytes. It never performs
//! I/O, never spawns tasks and never depends on tokio: every function works on caller-owned buffers,
//! so the same code is used by the proxy, by tests and by fuzz/property tests.
//!
//! What it must not do: decide routing, hold sessions, or copy message payloads it does not need to
//! look at. Relaying code walks frames with [`frame`] and forwards the original bytes.
//!
//! Backend messages *from a server* during pgrouter's own logins are parsed with the
//! `postgres-protocol` crate (see `pgrouter-conn`); this crate writes what pgrouter itself says to a
//! client ([`backend`]) and parses what a client says ([`startup`], [`frontend`]).
//!
//! # Layout
//! - [`frame`]: message header scanning, size limits, a streaming walker over relayed bytes.
//! - [`startup`]: the untagged startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest,
//!   CancelRequest).
//! - [`frontend`]: client message tags and the few bodies pgrouter decodes.
//! - [`backend`]: writers for messages pgrouter sends to clients, backend tags.
//! - [`error`]: `ErrorResponse`/`NoticeResponse` construction and the SQLSTATE codes pgrouter uses.
//! - [`auth`]: server-side SCRAM-SHA-256 and MD5 verification of clients.

pub mod auth;
pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use error::{ErrorResponse, Severity, SqlState};
pub use frame::FrameError;
