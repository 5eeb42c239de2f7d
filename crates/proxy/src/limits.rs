//! Client connection limits (`client.max_connections`, per user, per database), refused with
//! PostgreSQL's own errors.

use pgrouter_config::ClientConfig;
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Counts clients; touched at login and logout only.
#[derive(Debug, Default)]
pub struct ClientLimits {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_user: HashMap<String, u32>,
    per_database: HashMap<String, u32>,
}

/// A client counted against the limits until dropped.
#[derive(Debug)]
pub struct Admitted<'a> {
    limits: &'a ClientLimits,
    user: String,
    database: String,
}

impl ClientLimits {
    /// Counts a client in, or refuses it as PostgreSQL would (`53300`).
    pub fn admit<'a>(
        &'a self,
        config: &ClientConfig,
        user: &str,
        database: &str,
    ) -> Result<Admitted<'a>, ErrorResponse> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let over = |limit: u32, n: u32| limit > 0 && n >= limit;
        if over(config.max_connections, c.total) {
            return Err(ErrorResponse::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            ));
        }
        if over(
            config.max_connections_per_user,
            c.per_user.get(user).copied().unwrap_or(0),
        ) {
            return Err(ErrorResponse::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!("too many connections for role \"{user}\""),
            ));
        }
        if over(
            config.max_connections_per_database,
            c.per_database.get(database).copied().unwrap_or(0),
        ) {
            return Err(ErrorResponse::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!("too many connections for database \"{database}\""),
            ));
        }
        c.total += 1;
        *c.per_user.entry(user.to_owned()).or_default() += 1;
        *c.per_database.entry(database.to_owned()).or_default() += 1;
        Ok(Admitted {
            limits: self,
            user: user.to_owned(),
            database: database.to_owned(),
        })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut c = self
            .limits
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        release(&mut c.per_user, &self.user);
        release(&mut c.per_database, &self.database);
    }
}

fn release(map: &mut HashMap<String, u32>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let config = ClientConfig {
            max_connections: 3,
            max_connections_per_user: 2,
            max_connections_per_database: 0,
            ..ClientConfig::default()
        };
        let limits = ClientLimits::default();
        let a = limits.admit(&config, "u", "d").unwrap();
        let _b = limits.admit(&config, "u", "d").unwrap();
        let err = limits.admit(&config, "u", "d").unwrap_err();
        assert_eq!(err.message, "too many connections for role \"u\"");
        let _c = limits.admit(&config, "v", "d").unwrap();
        let err = limits.admit(&config, "w", "d").unwrap_err();
        assert_eq!(
            (err.code.code(), err.message.as_str()),
            ("53300", "sorry, too many clients already")
        );
        drop(a);
        limits.admit(&config, "u", "d").unwrap();
    }
}
