//! Server-side authentication of clients: pgrouter plays the PostgreSQL server.
//!
//! - [`scram`]: SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL implements it, without channel binding.
//! - [`md5`]: PostgreSQL's salted MD5 challenge.
//! - [`scram_client`]: SCRAM towards a server with the keys a client's login revealed, for users
//!   configured by their verifier.
//!
//! Secrets are derived once (at configuration load) so a login costs two HMACs and a hash, never
//! the 4,096-round PBKDF2 of the stored verifier.

pub mod md5;
pub mod scram;
pub mod scram_client;
