//! Client connection limits, refused with PostgreSQL's own errors: before authentication,
//! logins in progress (`client.max_pending_logins`) and connections per client address
//! (`client.max_connections_per_address`); after it, `client.max_connections`, per user and per
//! database, so that sockets that never finish a login cannot lock a user out.

use pgrouter_config::ClientConfig;
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::collections::HashMap;
use std::net::IpAddr;
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
    pending: u32,
    per_address: HashMap<IpAddr, u32>,
}

/// A connection counted against its address's limit until dropped.
#[derive(Debug)]
pub struct FromAddress<'a> {
    limits: &'a ClientLimits,
    address: IpAddr,
}

/// A login in progress, counted until dropped.
#[derive(Debug)]
pub struct Pending<'a> {
    limits: &'a ClientLimits,
}

fn too_many_clients() -> ErrorResponse {
    ErrorResponse::fatal(
        SqlState::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    )
}

/// A client counted against the limits until dropped.
#[derive(Debug)]
pub struct Admitted<'a> {
    limits: &'a ClientLimits,
    user: String,
    database: String,
}

impl ClientLimits {
    /// The counts, locked (a panic elsewhere while holding them leaves them usable).
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection in, before anything is read from it: once for its address (for
    /// its whole life), once as a login in progress (until its login ends). Refused, the client
    /// gets `53300` at once.
    pub fn accept<'a>(
        &'a self,
        config: &ClientConfig,
        address: IpAddr,
    ) -> Result<(FromAddress<'a>, Pending<'a>), ErrorResponse> {
        let mut c = self.counts();
        let over = |limit: u32, n: u32| limit > 0 && n >= limit;
        if over(config.max_pending_logins, c.pending) {
            return Err(too_many_clients());
        }
        if over(
            config.max_connections_per_address,
            c.per_address.get(&address).copied().unwrap_or(0),
        ) {
            return Err(ErrorResponse::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!("too many connections from host \"{address}\""),
            ));
        }
        c.pending += 1;
        *c.per_address.entry(address).or_default() += 1;
        Ok((
            FromAddress {
                limits: self,
                address,
            },
            Pending { limits: self },
        ))
    }

    /// Logins in progress now.
    pub fn pending(&self) -> u32 {
        self.counts().pending
    }

    /// Counts an authenticated client in, or refuses it as PostgreSQL would (`53300`).
    pub fn admit<'a>(
        &'a self,
        config: &ClientConfig,
        user: &str,
        database: &str,
    ) -> Result<Admitted<'a>, ErrorResponse> {
        let mut c = self.counts();
        let over = |limit: u32, n: u32| limit > 0 && n >= limit;
        if over(config.max_connections, c.total) {
            return Err(too_many_clients());
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
        let mut c = self.limits.counts();
        c.total = c.total.saturating_sub(1);
        release(&mut c.per_user, &self.user);
        release(&mut c.per_database, &self.database);
    }
}

impl Drop for FromAddress<'_> {
    fn drop(&mut self) {
        let mut c = self.limits.counts();
        release(&mut c.per_address, &self.address);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut c = self.limits.counts();
        c.pending = c.pending.saturating_sub(1);
    }
}

fn release<K>(map: &mut HashMap<K::Owned, u32>, key: &K)
where
    K: std::hash::Hash + Eq + ToOwned + ?Sized,
    K::Owned: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
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

    #[test]
    fn pending_logins_and_addresses() {
        let config = ClientConfig {
            max_pending_logins: 2,
            max_connections_per_address: 2,
            ..ClientConfig::default()
        };
        let limits = ClientLimits::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let (a1, a1_login) = limits.accept(&config, a).unwrap();
        let (_a2, a2_login) = limits.accept(&config, a).unwrap();
        // Two logins in progress: the next one waits for one to end.
        let err = limits.accept(&config, b).unwrap_err();
        assert_eq!(err.message, "sorry, too many clients already");
        drop(a1_login);
        drop(a2_login);
        assert_eq!(limits.pending(), 0);
        // Logged in, they still count for their address.
        let err = limits.accept(&config, a).unwrap_err();
        assert_eq!(
            (err.code.code(), err.message.as_str()),
            ("53300", "too many connections from host \"10.0.0.1\"")
        );
        let _b1 = limits.accept(&config, b).unwrap();
        drop(a1);
        let _a3 = limits.accept(&config, a).unwrap();
    }
}
