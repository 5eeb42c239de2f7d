//! What every session shares, built once from the configuration.

use crate::cancel::CancelRegistry;
use pgrouter_config::{AuthMethod, ClientConfig, Config, NodeConfig, PoolConfig};
use pgrouter_protocol::auth::scram::ScramSecret;
use std::collections::HashMap;
use std::sync::Arc;

/// A user as sessions need it: how to check the client, the derived SCRAM verifier, and the
/// password for pgrouter's own server login.
#[derive(Debug)]
pub struct UserEntry {
    /// Role name.
    pub name: String,
    /// Password (for the server login and for MD5 checks).
    pub password: String,
    /// How the client is authenticated.
    pub auth: AuthMethod,
    /// SCRAM verifier derived once at start-up.
    pub scram: ScramSecret,
}

/// Shared, read-only state for sessions.
#[derive(Debug)]
pub struct ProxyContext {
    /// Users by name.
    pub users: HashMap<String, UserEntry>,
    /// A verifier for users that do not exist, so their login fails exactly like a wrong password.
    pub mock_scram: ScramSecret,
    /// The servers. Until role discovery lands, the first one receives all traffic.
    pub nodes: Vec<NodeConfig>,
    /// Client limits.
    pub client: ClientConfig,
    /// Server connection settings.
    pub pool: PoolConfig,
    /// Client keys for cancel requests.
    pub cancels: Arc<CancelRegistry>,
}

impl ProxyContext {
    /// Builds the context, deriving every SCRAM verifier (PBKDF2) once, here.
    pub fn new(config: &Config) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                let entry = UserEntry {
                    name: u.name.clone(),
                    password: u.password().to_owned(),
                    auth: u.auth,
                    scram: ScramSecret::generate(u.password()),
                };
                (u.name.clone(), entry)
            })
            .collect();
        let mock_password: [u8; 16] = rand::random();
        Self {
            users,
            mock_scram: ScramSecret::generate(&format!("{mock_password:?}")),
            nodes: config.nodes.clone(),
            client: config.client.clone(),
            pool: config.pool.clone(),
            cancels: Arc::new(CancelRegistry::default()),
        }
    }

    /// Largest client message accepted, in bytes.
    pub fn max_message_size(&self) -> usize {
        usize::try_from(self.client.max_message_size.bytes()).unwrap_or(usize::MAX)
    }
}
