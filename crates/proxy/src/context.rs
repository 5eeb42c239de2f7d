//! What every session shares, built once from the configuration.

use crate::cancel::CancelRegistry;
use pgrouter_config::{AuthMethod, ClientConfig, Config, NodeConfig, PoolConfig, RoutingConfig};
use pgrouter_protocol::auth::scram::ScramSecret;
use pgrouter_sql::{Classifier, FunctionPolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
    /// Read/write splitting settings.
    pub routing: RoutingConfig,
    /// Statement classification under the configured function policy.
    pub classifier: Classifier,
    /// Volatility of functions looked up in `pg_proc` (`true` = VOLATILE), shared by sessions.
    /// Touched only for statements calling functions pgrouter does not know, never per message.
    pub function_volatility: Mutex<HashMap<String, bool>>,
    read_weights: Vec<u32>,
    sessions_started: AtomicU64,
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
            routing: config.routing.clone(),
            classifier: Classifier::new(FunctionPolicy::from_lists(
                &config.routing.write_functions,
                config.routing.read_only_functions.as_deref(),
            )),
            function_volatility: Mutex::new(HashMap::new()),
            read_weights: config.nodes.iter().map(|n| n.weight).collect(),
            sessions_started: AtomicU64::new(0),
        }
    }

    /// The node that receives writes. Until role discovery lands it is the first configured node.
    pub fn primary_node(&self) -> usize {
        0
    }

    /// Picks a session's read node by weight (the primary included, with its own weight).
    pub fn pick_read_node(&self) -> Option<usize> {
        let ticket = self.sessions_started.fetch_add(1, Ordering::Relaxed);
        crate::routing::pick_read_node(&self.read_weights, ticket)
    }

    /// Whether every named function is known to be non-volatile (`Some(false)`), some is volatile
    /// (`Some(true)`), or some has not been looked up yet (`None`).
    pub fn any_volatile(&self, names: &[String]) -> Option<bool> {
        if names.is_empty() {
            return Some(false);
        }
        let cache = self
            .function_volatility
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut any = false;
        for n in names {
            any |= *cache.get(n)?;
        }
        Some(any)
    }

    /// Records looked-up volatilities.
    pub fn remember_volatility(&self, found: impl IntoIterator<Item = (String, bool)>) {
        let mut cache = self
            .function_volatility
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded: a client inventing function names must not grow it forever.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.extend(found);
    }

    /// Largest client message accepted, in bytes.
    pub fn max_message_size(&self) -> usize {
        usize::try_from(self.client.max_message_size.bytes()).unwrap_or(usize::MAX)
    }
}
