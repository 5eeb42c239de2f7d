//! Client access rules (`access:`), like `pg_hba.conf` lines: which clients may log in, from
//! where, to which database, as whom, and how they prove it. The first rule that matches decides;
//! with rules configured, a client no rule matches is refused. This module holds the rules and the
//! pure decision; the proxy applies it at login.

use crate::model::AuthMethod;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Which connections a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    /// Any TCP connection, with or without TLS.
    #[default]
    Host,
    /// Connections through the Unix-domain socket (`unix_socket_dir`); `address` is not
    /// looked at.
    Local,
    /// Only connections with TLS.
    Hostssl,
    /// Only connections without TLS.
    Hostnossl,
}

/// How a client that matches a rule logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AccessMethod {
    /// SCRAM-SHA-256 with the user's password.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Salted MD5 with the user's password.
    #[serde(rename = "md5")]
    Md5,
    /// A client certificate (needs TLS towards clients).
    #[serde(rename = "cert")]
    Cert,
    /// No password.
    #[serde(rename = "trust")]
    Trust,
    /// Refused.
    #[serde(rename = "reject")]
    Reject,
}

/// One access rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// `host` (default), `hostssl`, `hostnossl` or `local`.
    #[serde(rename = "type", default)]
    pub kind: ConnectionType,
    /// `all`, a database name, or names separated by commas.
    #[serde(default = "all")]
    pub database: String,
    /// `all`, a user name, or names separated by commas.
    #[serde(default = "all")]
    pub user: String,
    /// `all`, an address in CIDR form (`10.0.0.0/8`, `::1/128`), or one address.
    #[serde(default = "all")]
    pub address: String,
    /// How the client proves who it is.
    pub method: AccessMethod,
}

fn all() -> String {
    "all".into()
}

/// Who is logging in, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The client's address (unspecified for a Unix-domain socket client).
    pub address: IpAddr,
    /// The client came through the Unix-domain socket.
    pub local: bool,
    /// The user name in the start-up message.
    pub user: &'a str,
    /// The database in the start-up message.
    pub database: &'a str,
    /// The connection uses TLS.
    pub tls: bool,
}

/// What the rules say about a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log in with this method (from the first matching rule; `cert` included).
    Method(AuthMethod),
    /// The first matching rule is `reject`.
    Rejected,
    /// No rule matches.
    NoEntry,
}

/// The first matching rule's verdict; `None` when no rules are configured (then each user's own
/// `auth` applies, as before rules existed).
pub fn decide(rules: &[AccessRule], login: &Login<'_>) -> Option<Verdict> {
    if rules.is_empty() {
        return None;
    }
    let Some(rule) = rules.iter().find(|r| r.matches(login)) else {
        return Some(Verdict::NoEntry);
    };
    Some(match rule.method {
        AccessMethod::ScramSha256 => Verdict::Method(AuthMethod::ScramSha256),
        AccessMethod::Md5 => Verdict::Method(AuthMethod::Md5),
        AccessMethod::Trust => Verdict::Method(AuthMethod::Trust),
        AccessMethod::Cert => Verdict::Method(AuthMethod::Cert),
        AccessMethod::Reject => Verdict::Rejected,
    })
}

impl AccessRule {
    /// Whether the rule applies to `login`.
    pub fn matches(&self, login: &Login<'_>) -> bool {
        // As pg_hba.conf: `host*` lines are for TCP clients, `local` lines for socket clients.
        let kind = match self.kind {
            ConnectionType::Local => login.local,
            _ if login.local => false,
            ConnectionType::Host => true,
            ConnectionType::Hostssl => login.tls,
            ConnectionType::Hostnossl => !login.tls,
        };
        let address = login.local
            || parse_address(&self.address).is_some_and(|net| net.contains(login.address));
        kind && names_match(&self.database, login.database)
            && names_match(&self.user, login.user)
            && address
    }
}

/// The admin console's virtual database (rules name it like any database).
pub const CONSOLE_DATABASE: &str = "pgrouter";

impl AccessRule {
    /// Whether `name` is in the rule's list `list` (its `database` or `user`).
    pub fn matches_name(&self, list: &str, name: &str) -> bool {
        names_match(list, name)
    }
}

/// What `pgrouter check` and start-up warn about: rules that are allowed but probably not meant.
pub fn warnings(rules: &[AccessRule], tls_on: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let network = parse_address(&rule.address);
        let on_this_machine =
            rule.kind == ConnectionType::Local || network.is_some_and(|n| n.is_loopback());
        if rule.method == AccessMethod::Trust && !on_this_machine {
            out.push(format!(
                "access[{i}]: trust from {} lets anyone who can reach pgrouter there log in as {} without a password",
                rule.address, rule.user
            ));
        }
        if rule.kind == ConnectionType::Hostssl && !tls_on {
            out.push(format!(
                "access[{i}]: hostssl never matches while tls.mode is disable"
            ));
        }
    }
    out
}

fn names_match(list: &str, name: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|n| n == "all" || n == name)
}

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Every address.
    All,
    /// `address/prefix`.
    Cidr(IpAddr, u8),
}

impl Network {
    /// Whether `ip` is in the range. IPv4 clients of an IPv6 listener (`::ffff:a.b.c.d`) count
    /// as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (*self, ip) {
            (Network::All, _) => true,
            (Network::Cidr(IpAddr::V4(net), bits), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (Network::Cidr(IpAddr::V6(net), bits), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Only loopback addresses.
    pub fn is_loopback(&self) -> bool {
        match *self {
            Network::All => false,
            Network::Cidr(IpAddr::V4(net), bits) => bits >= 8 && net.octets()[0] == 127,
            Network::Cidr(IpAddr::V6(net), bits) => bits == 128 && net.is_loopback(),
        }
    }
}

/// Parses `all`, `a.b.c.d/n`, `x::y/n`, or one address (a range of one).
pub fn parse_address(text: &str) -> Option<Network> {
    let text = text.trim();
    if text == "all" {
        return Some(Network::All);
    }
    let (ip, bits) = match text.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some(Network::Cidr(ip, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        kind: ConnectionType,
        database: &str,
        user: &str,
        address: &str,
        method: AccessMethod,
    ) -> AccessRule {
        AccessRule {
            kind,
            database: database.into(),
            user: user.into(),
            address: address.into(),
            method,
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        use AccessMethod::*;
        use ConnectionType::*;
        let rules = vec![
            rule(Host, "all", "all", "127.0.0.2", Reject),
            rule(Hostssl, "all", "all", "all", Cert),
            rule(Host, "app,reports", "app", "127.0.0.0/8", Md5),
            rule(Hostnossl, "all", "ops", "10.1.0.0/16", Trust),
            rule(Host, "all", "all", "::1/128", ScramSha256),
        ];
        let at = |address: &str, user: &'static str, database: &'static str, tls: bool| Login {
            address: address.parse().unwrap(),
            local: false,
            user,
            database,
            tls,
        };
        #[rustfmt::skip]
        let cases = [
            ("a rejected address", at("127.0.0.2", "app", "app", false), Some(Verdict::Rejected)),
            ("TLS clients need a certificate", at("127.0.0.1", "app", "app", true), Some(Verdict::Method(AuthMethod::Cert))),
            ("database in a list, loopback range", at("127.0.0.3", "app", "reports", false), Some(Verdict::Method(AuthMethod::Md5))),
            ("database not listed", at("127.0.0.3", "app", "other", false), Some(Verdict::NoEntry)),
            ("user not listed", at("127.0.0.3", "bob", "app", false), Some(Verdict::NoEntry)),
            ("hostnossl in range", at("10.1.200.3", "ops", "x", false), Some(Verdict::Method(AuthMethod::Trust))),
            ("out of range", at("10.2.0.1", "ops", "x", false), Some(Verdict::NoEntry)),
            ("IPv6 loopback", at("::1", "anyone", "any", false), Some(Verdict::Method(AuthMethod::ScramSha256))),
            ("IPv4 client of an IPv6 listener", at("::ffff:127.0.0.2", "app", "app", false), Some(Verdict::Rejected)),
        ];
        for (what, login, want) in cases {
            assert_eq!(decide(&rules, &login), want, "{what}");
        }
        assert_eq!(
            decide(&[], &at("1.2.3.4", "u", "d", false)),
            None,
            "no rules: users' own auth"
        );
    }

    #[test]
    fn local_rules_are_for_socket_clients_only() {
        use AccessMethod::*;
        use ConnectionType::*;
        let rules = vec![
            rule(Local, "all", "postgres", "all", Reject),
            rule(Local, "all", "all", "all", Trust),
            rule(Host, "all", "all", "all", ScramSha256),
        ];
        let login = |local: bool, user: &'static str| Login {
            address: if local { "0.0.0.0" } else { "127.0.0.1" }.parse().unwrap(),
            local,
            user,
            database: "app",
            tls: false,
        };
        #[rustfmt::skip]
        let cases = [
            ("socket client, rejected user", login(true, "postgres"), Some(Verdict::Rejected)),
            ("socket client", login(true, "app"), Some(Verdict::Method(AuthMethod::Trust))),
            ("TCP client skips local lines", login(false, "postgres"), Some(Verdict::Method(AuthMethod::ScramSha256))),
        ];
        for (what, login, want) in cases {
            assert_eq!(decide(&rules, &login), want, "{what}");
        }
        let host_only = [rule(Host, "all", "all", "all", Trust)];
        assert_eq!(
            decide(&host_only, &login(true, "app")),
            Some(Verdict::NoEntry),
            "host lines are not for socket clients"
        );
    }

    #[test]
    fn addresses() {
        #[rustfmt::skip]
        let cases = [
            ("all", Some(Network::All)),
            ("10.0.0.0/8", Some(Network::Cidr("10.0.0.0".parse().unwrap(), 8))),
            ("192.168.1.7", Some(Network::Cidr("192.168.1.7".parse().unwrap(), 32))),
            ("::1", Some(Network::Cidr("::1".parse().unwrap(), 128))),
            ("0.0.0.0/0", Some(Network::Cidr("0.0.0.0".parse().unwrap(), 0))),
            ("10.0.0.0/33", None),
            ("10.0.0.0/x", None),
            ("samenet", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_address(text), want, "{text}");
        }
        let any = parse_address("0.0.0.0/0").unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
        assert!(!any.contains("2001:db8::1".parse().unwrap()));
        assert!(parse_address("127.0.0.0/8").unwrap().is_loopback());
        assert!(!parse_address("0.0.0.0/0").unwrap().is_loopback());
        assert!(parse_address("::1").unwrap().is_loopback());
    }
}
