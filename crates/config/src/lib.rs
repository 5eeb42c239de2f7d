//! pgrouter's configuration: the serde model of `config.example.yaml`, its defaults, validation and
//! secret resolution.
//!
//! This is the only crate that knows YAML. Library crates receive their own section
//! (`&ClientConfig`, `&PoolConfig`, …), never the whole file and never a global.
//!
//! What it must not do: open sockets, read the process environment directly (it goes through the
//! [`Env`] seam so tests never call `set_var`), or keep secrets printable (see [`Secret`]).
//!
//! YAML is read with `serde_yaml_ng`, a maintained fork of the archived `serde_yaml` with the same
//! API and error locations (see `docs/configuration.md`).
//!
//! # Layout
//! - [`model`]: the configuration structs, one per section, each field documented.
//! - [`values`]: value types with their own syntax: durations (`1s`, `500ms`), byte sizes (`64MB`),
//!   and masked secrets.
//! - [`load`]: parsing, `${VAR}` / file secrets, validation, and errors that name key and line.

pub mod access;
pub mod load;
pub mod model;
pub mod values;

pub use access::{AccessMethod, AccessRule, ConnectionType};
pub use load::{from_yaml, load, ConfigError, Env, ProcessEnv};
pub use model::{
    function_pattern, whole_text_pattern, PeerConfig, ReadYourWrites, ReadsAfterWrite,
    DEFAULT_AUTH_QUERY,
};
pub use model::{
    AdminConfig, AdminHttpAuth, AuthMethod, AuthQueryConfig, ClientConfig, Config, Discovery,
    HealthCheckConfig, HealthCheckLogin, NodeConfig, PatroniApiConfig, PoolConfig, PoolMode,
    RoutingConfig, ServerTlsConfig, ServerTlsMode, StoredForm, TcpKeepaliveConfig, TlsConfig,
    TlsMode, TlsVersion, TopologyConfig, UserConfig,
};
pub use values::{ByteSize, Duration, Secret};
