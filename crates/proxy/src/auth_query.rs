//! `auth_query`: users that are not listed under `users` are looked up on the primary, as
//! PgBouncer does. One connection (as `auth_query.user`) serves every look-up, one at a time,
//! so a flood of logins for unknown names costs the primary one busy connection at most. A user
//! found is cached for `auth_query.cache_lifetime` (or until its `VALID UNTIL`, if sooner); a
//! name not found is never cached, so a role created on the server can log in at once.
//!
//! What it must not do: build SQL from the user name (it is a parameter of the extended
//! protocol), tell a client whether a name exists (the caller fails an unknown user exactly
//! like a wrong password), or keep more than [`MAX_CACHED`] users.

use crate::context::{ProxyContext, UserEntry};
use bytes::BytesMut;
use pgrouter_config::{AuthMethod, AuthQueryConfig, StoredForm};
use pgrouter_conn::{Credential, ServerConn, ServerTarget};
use pgrouter_protocol::auth::scram::ScramSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most users kept in the cache.
pub const MAX_CACHED: usize = 10_000;

/// The look-up connection and the cache.
pub struct AuthQuery {
    /// The connection, the node it is on and the settings it was made with.
    conn: tokio::sync::Mutex<Option<(ServerConn, usize, AuthQueryConfig, BytesMut)>>,
    cache: std::sync::Mutex<HashMap<String, Cached>>,
    capacity: usize,
}

impl Default for AuthQuery {
    fn default() -> Self {
        Self {
            conn: tokio::sync::Mutex::default(),
            cache: std::sync::Mutex::default(),
            capacity: MAX_CACHED,
        }
    }
}

impl std::fmt::Debug for AuthQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthQuery")
    }
}

struct Cached {
    entry: Arc<UserEntry>,
    expires: Instant,
}

/// What a look-up found.
#[derive(Debug)]
pub enum Found {
    /// The user and its stored password.
    User(Arc<UserEntry>),
    /// No such user, or no password (`passwd` NULL).
    Unknown,
    /// The password's `VALID UNTIL` has passed.
    Expired,
}

impl AuthQuery {
    /// Forgets every cached user (a reload changed `auth_query` or the users).
    pub fn clear(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Looks `name` up: from the cache, else on the primary. `Err`: the look-up itself failed
    /// (no primary, login refused, query error), for the log.
    pub async fn lookup(&self, ctx: &ProxyContext, name: &str) -> Result<Found, String> {
        let Some(settings) = ctx.live().config.auth_query.clone() else {
            return Ok(Found::Unknown);
        };
        if let Some(entry) = self.cached(name) {
            return Ok(Found::User(entry));
        }
        let timeout = ctx.live().config.pool.connect_timeout.get();
        let mut slot = self.conn.lock().await;
        // Another login may have looked the same name up while this one waited.
        if let Some(entry) = self.cached(name) {
            return Ok(Found::User(entry));
        }
        let had_connection = slot.is_some();
        let mut row = tokio::time::timeout(timeout, query(ctx, &settings, &mut slot, name))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        if row.is_err() {
            // Whatever state the connection is in, start afresh. A connection kept from an
            // earlier look-up may have been closed meanwhile (a restart, idle_session_timeout):
            // the query only reads, so it is asked once more on a new one.
            *slot = None;
            if had_connection {
                row = tokio::time::timeout(timeout, query(ctx, &settings, &mut slot, name))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                if row.is_err() {
                    *slot = None;
                }
            }
        }
        drop(slot);
        let Some(row) = row? else {
            return Ok(Found::Unknown);
        };
        let (Some(Some(stored)), valid_until) = (row.get(1), row.get(2).cloned().flatten()) else {
            return Ok(Found::Unknown);
        };
        let lifetime = settings.cache_lifetime.get();
        let expires = match valid_until.as_deref().map(remaining) {
            Some(Some(left)) if left.is_zero() => return Ok(Found::Expired),
            Some(Some(left)) => Instant::now() + left.min(lifetime),
            // Unparsable or NULL: no end.
            _ => Instant::now() + lifetime,
        };
        let entry = Arc::new(entry_for(ctx, name, stored).await);
        self.insert(name, Arc::clone(&entry), expires);
        Ok(Found::User(entry))
    }

    fn cached(&self, name: &str) -> Option<Arc<UserEntry>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(name)
            .filter(|c| c.expires > Instant::now())
            .map(|c| Arc::clone(&c.entry))
    }

    fn insert(&self, name: &str, entry: Arc<UserEntry>, expires: Instant) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.capacity && !cache.contains_key(name) {
            let now = Instant::now();
            cache.retain(|_, c| c.expires > now);
        }
        if cache.len() >= self.capacity && !cache.contains_key(name) {
            // Still full of live entries: the one closest to expiring goes.
            if let Some(first) = cache
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&first);
            }
        }
        cache.insert(name.to_owned(), Cached { entry, expires });
    }
}

/// Runs the query for `name` on the primary, connecting (again) when needed. `Ok(None)`: no row.
async fn query(
    ctx: &ProxyContext,
    settings: &AuthQueryConfig,
    slot: &mut Option<(ServerConn, usize, AuthQueryConfig, BytesMut)>,
    name: &str,
) -> Result<Option<Vec<Option<String>>>, String> {
    // As a login's own server connection: a primary not known yet (pgrouter just started, or
    // a failover is under way) is waited for, up to topology.failover_timeout.
    let wait = ctx.config().topology.failover_timeout.get();
    let primary = ctx
        .topology
        .wait_for(wait, |table| table.primary)
        .await
        .ok_or("no primary server is available")?;
    if slot
        .as_ref()
        .is_some_and(|(_, node, made_with, _)| *node != primary || made_with != settings)
    {
        *slot = None;
    }
    if slot.is_none() {
        let node = ctx
            .topology
            .node(primary)
            .ok_or("the primary left the configuration")?;
        let config = ctx.config();
        let password = settings
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .or_else(|| {
                config
                    .users
                    .iter()
                    .find(|u| u.name == settings.user)
                    .map(|u| u.password().to_owned())
            })
            .unwrap_or_default();
        let params = [
            ("database".to_owned(), settings.database.clone()),
            (
                "application_name".to_owned(),
                "pgrouter auth_query".to_owned(),
            ),
        ];
        let server_tls = ctx.server_tls();
        let target = ServerTarget {
            host: &node.target.host,
            port: node.target.port,
            user: &settings.user,
            credential: Credential::Password(&password),
            params: &params,
            timeout: config.pool.connect_timeout.get(),
            tls: &server_tls,
            keepalive: ctx.keepalive(),
        };
        let conn = ServerConn::connect(&target)
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some((conn, primary, settings.clone(), BytesMut::new()));
    }
    let Some((conn, _, _, buf)) = slot.as_mut() else {
        return Err("no look-up connection".into());
    };
    let outcome = conn
        .query_with_params(buf, &settings.query, &[name])
        .await
        .map_err(|e| e.to_string())?;
    if let Some(error) = outcome.error {
        return Err(error);
    }
    Ok(outcome.rows.into_iter().next())
}

/// Time left before a `VALID UNTIL` given as Unix seconds (`Infinity` included); `None` when
/// the text is not a number.
fn remaining(valid_until: &str) -> Option<Duration> {
    let end: f64 = valid_until.trim().parse().ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let left = end - now;
    Some(if left <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(left).unwrap_or(Duration::MAX)
    })
}

/// A user entry from a stored password: a SCRAM verifier (SCRAM logins; the servers get the
/// key the client's proof reveals), an md5 hash (md5 logins), or, from a custom query, the
/// password itself.
async fn entry_for(ctx: &ProxyContext, name: &str, stored: &str) -> UserEntry {
    let form = StoredForm::of(stored);
    let (auth, scram) = match form {
        StoredForm::ScramVerifier => (
            AuthMethod::ScramSha256,
            ScramSecret::from_verifier(stored).unwrap_or_else(|| ScramSecret::generate(stored)),
        ),
        // No SCRAM login can succeed against an md5 hash: a random verifier fails them.
        StoredForm::Md5Hash => (
            AuthMethod::Md5,
            ScramSecret::generate(&format!("{:?}", rand::random::<[u8; 16]>())),
        ),
        StoredForm::Plain => {
            // PBKDF2 off the async threads.
            let password = stored.to_owned();
            let scram = tokio::task::spawn_blocking(move || ScramSecret::generate(&password))
                .await
                .unwrap_or_else(|_| {
                    ScramSecret::generate(&format!("{:?}", rand::random::<[u8; 16]>()))
                });
            (AuthMethod::ScramSha256, scram)
        }
    };
    let mode = ctx.live().config.pool.mode;
    UserEntry {
        name: name.to_owned(),
        password: stored.to_owned(),
        stored: form,
        auth,
        scram,
        client_key: std::sync::OnceLock::new(),
        transaction_pooling: mode == pgrouter_config::PoolMode::Transaction,
        pool_mode_set: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_bounded_and_drops_the_soonest_to_expire() {
        let cache = AuthQuery {
            capacity: 3,
            ..AuthQuery::default()
        };
        let entry = Arc::new(UserEntry {
            name: "u".into(),
            password: "md50123456789abcdef0123456789abcdef".into(),
            stored: StoredForm::Md5Hash,
            auth: AuthMethod::Md5,
            scram: ScramSecret::derive("x", b"salt", 1),
            client_key: std::sync::OnceLock::new(),
            transaction_pooling: false,
            pool_mode_set: false,
        });
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s);
        cache.insert("expired", Arc::clone(&entry), now);
        cache.insert("b", Arc::clone(&entry), at(20));
        cache.insert("c", Arc::clone(&entry), at(30));
        // Full: the expired one makes room.
        cache.insert("d", Arc::clone(&entry), at(40));
        assert!(cache.cached("expired").is_none());
        // Full of live ones: the soonest to expire goes.
        cache.insert("e", Arc::clone(&entry), at(50));
        assert!(cache.cached("b").is_none());
        for name in ["c", "d", "e"] {
            assert!(cache.cached(name).is_some(), "{name}");
        }
        // Refreshing a cached name evicts nothing.
        cache.insert("c", Arc::clone(&entry), at(60));
        assert_eq!(cache.cache.lock().unwrap().len(), 3);
        cache.clear();
        assert!(cache.cached("c").is_none());
    }

    #[test]
    fn validity_ends() {
        assert_eq!(remaining("0"), Some(Duration::ZERO));
        assert_eq!(remaining("1000000000.5"), Some(Duration::ZERO));
        assert_eq!(remaining("Infinity"), Some(Duration::MAX));
        assert_eq!(remaining("-Infinity"), Some(Duration::ZERO));
        assert_eq!(remaining("soon"), None);
        let in_an_hour = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 3600.0;
        let left = remaining(&in_an_hour.to_string()).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
    }
}
