//! Loading: YAML → model, `${VAR}` and file secrets, validation. Every error names the key and,
//! where the YAML parser knows it, the line.

use crate::model::{AuthMethod, Config, Discovery, StoredForm};
use crate::values::Secret;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where `${VAR}` references are resolved. The process environment in production, a map in tests.
pub trait Env {
    /// The value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A configuration error, with the key path and the line when known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or a value has the wrong type or an unknown key.
    #[error("{key}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Syntax {
        /// Path of the offending key, e.g. `nodes[1].port`.
        key: String,
        /// Line in the file, 1-based.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{key}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// Path of the offending key.
        key: String,
        /// Line in the file where the key sits, 1-based, when it can be found.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// Loads and validates a configuration file.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    from_yaml(&text, base, env)
}

/// Parses and validates configuration text; relative `password_file`s are resolved against `base`.
pub fn from_yaml(text: &str, base: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = display_path(&e.path().to_string());
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let message = strip_location(&inner.to_string());
        ConfigError::Syntax { key, line, message }
    })?;
    resolve_secrets(&mut config, base, env, text)?;
    // Certificate and key paths are relative to the configuration file, like password files.
    for path in [
        &mut config.tls.cert_file,
        &mut config.tls.key_file,
        &mut config.tls.ca_file,
        &mut config.server_tls.ca_file,
        &mut config.server_tls.cert_file,
        &mut config.server_tls.key_file,
        &mut config.topology.patroni.ca_file,
        &mut config.topology.patroni.cert_file,
        &mut config.topology.patroni.key_file,
    ]
    .into_iter()
    .flatten()
    {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
    validate(&config, text)?;
    Ok(config)
}

fn display_path(p: &str) -> String {
    if p.is_empty() || p == "." {
        "(top level)".into()
    } else {
        p.to_string()
    }
}

/// serde_yaml_ng prefixes its own key path and appends " at line X column Y"; both are reported
/// separately.
fn strip_location(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_string(),
        _ => msg.to_string(),
    }
}

fn invalid(text: &str, key: String, message: impl Into<String>) -> ConfigError {
    let line = find_line(text, &key);
    ConfigError::Invalid {
        key,
        line,
        message: message.into(),
    }
}

/// Finds the line of a key path such as `users[1].password` in block-style YAML: good enough to
/// point an operator at the right place; `None` when the layout is unusual.
fn find_line(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // Each line as (indentation of its key, the key text after an optional "- ").
    let entry = |i: usize| -> (usize, &str, bool) {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match trimmed.strip_prefix("- ") {
            Some(rest) => (indent + 2, rest, true),
            None => (indent, trimmed, false),
        }
    };
    let mut cursor = 0usize;
    let mut min_indent = 0usize;
    let mut found = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, i)) => (n, Some(i.trim_end_matches(']').parse::<usize>().ok()?)),
            None => (segment, None),
        };
        let at = (cursor..lines.len()).find(|&i| {
            let (indent, body, _) = entry(i);
            indent >= min_indent
                && body.starts_with(name)
                && body[name.len()..].trim_start().starts_with(':')
        });
        let Some(at) = at else {
            // A list item written as a flow mapping (`- {name: a, port: 1}`): its keys are on
            // the item's own line.
            return found
                .filter(|&item: &usize| {
                    let line: &str = lines[item];
                    line.contains('{') && line.contains(&format!("{name}:"))
                })
                .map(|i| i + 1);
        };
        let key_indent = entry(at).0;
        found = Some(at);
        cursor = at + 1;
        min_indent = key_indent + 1;
        if let Some(index) = index {
            let item = (cursor..lines.len())
                .filter(|&i| {
                    let (indent, _, dash) = entry(i);
                    dash && indent >= key_indent
                })
                .nth(index)?;
            found = Some(item);
            // The item's first key may sit on the dash line itself.
            cursor = item;
            min_indent = entry(item).0;
        }
    }
    found.map(|i| i + 1)
}

fn resolve_secrets(
    config: &mut Config,
    base: &Path,
    env: &dyn Env,
    text: &str,
) -> Result<(), ConfigError> {
    for (i, user) in config.users.iter_mut().enumerate() {
        match (&user.password, &user.password_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    text,
                    format!("users[{i}].password_file"),
                    "set either password or password_file, not both",
                ))
            }
            (Some(p), None) => {
                let key = format!("users[{i}].password");
                let value = expand_env(p.expose(), env).map_err(|m| invalid(text, key, m))?;
                user.password = Some(Secret::new(value));
            }
            (None, Some(file)) => {
                let path = base.join(file);
                let value = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        text,
                        format!("users[{i}].password_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let value = value.strip_suffix('\n').unwrap_or(&value);
                let value = value.strip_suffix('\r').unwrap_or(value);
                user.password = Some(Secret::new(value));
            }
            (None, None) if matches!(user.auth, AuthMethod::Trust | AuthMethod::Cert) => {}
            (None, None) => {
                return Err(invalid(
                    text,
                    format!("users[{i}]"),
                    "a password or password_file is required (pgrouter also logs in to the servers with it)",
                ))
            }
        }
    }
    if let Some(p) = &config.health_check.password {
        let value = expand_env(p.expose(), env)
            .map_err(|m| invalid(text, "health_check.password".into(), m))?;
        config.health_check.password = Some(Secret::new(value));
    }
    if let Some(auth) = &mut config.admin.http_auth {
        for (key, secret) in [
            ("admin.http_auth.bearer_token", &mut auth.bearer_token),
            ("admin.http_auth.password", &mut auth.password),
        ] {
            if let Some(p) = secret.as_ref() {
                let value =
                    expand_env(p.expose(), env).map_err(|m| invalid(text, key.into(), m))?;
                *secret = Some(Secret::new(value));
            }
        }
        if auth.bearer_token.is_none() && auth.username.is_none() {
            return Err(invalid(
                text,
                "admin.http_auth".into(),
                "set bearer_token, or username and password",
            ));
        }
        if auth.username.is_some() != auth.password.is_some() {
            return Err(invalid(
                text,
                "admin.http_auth.password".into(),
                "username and password go together",
            ));
        }
    }
    if let Some(p) = &config.topology.patroni.password {
        let value = expand_env(p.expose(), env)
            .map_err(|m| invalid(text, "topology.patroni.password".into(), m))?;
        config.topology.patroni.password = Some(Secret::new(value));
    }
    if let Some(aq) = &mut config.auth_query {
        if let Some(p) = &aq.password {
            let value = expand_env(p.expose(), env)
                .map_err(|m| invalid(text, "auth_query.password".into(), m))?;
            aq.password = Some(Secret::new(value));
        }
    }
    Ok(())
}

/// Replaces every `${NAME}` with the variable's value (`${NAME:-default}` when it may be unset);
/// `$$` stands for a literal `$`.
fn expand_env(value: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated ${...} reference".to_string())?;
            let (name, default) = match tail[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&tail[..end], None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let v = env
                .var(name)
                .or_else(|| default.map(str::to_owned))
                .ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&v);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(config: &Config, text: &str) -> Result<(), ConfigError> {
    // Port 0 (any free port) may repeat.
    let mut addresses = vec![("listen", config.listen)];
    for (key, address) in [
        ("admin_listen", Some(config.admin_listen)),
        ("primary_listen", config.primary_listen),
        ("read_only_listen", config.read_only_listen),
    ] {
        let Some(address) = address else { continue };
        let taken = addresses
            .iter()
            .find(|(_, a)| *a == address && address.port() != 0);
        if let Some((other, _)) = taken {
            return Err(invalid(
                text,
                key.into(),
                format!("{address} is already {other}'s address"),
            ));
        }
        addresses.push((key, address));
    }
    let lists = [
        (
            "routing.write_functions",
            Some(&config.routing.write_functions),
        ),
        (
            "routing.read_only_functions",
            config.routing.read_only_functions.as_ref(),
        ),
    ];
    for (key, list) in lists {
        for (i, entry) in list.into_iter().flatten().enumerate() {
            let Some(pattern) = crate::model::function_pattern(entry) else {
                continue;
            };
            if let Err(e) = regex::Regex::new(&pattern) {
                return Err(invalid(
                    text,
                    format!("{key}[{i}]"),
                    format!("{entry:?} is not a valid regular expression: {e}"),
                ));
            }
        }
    }
    let whole_text_lists = [
        (
            "routing.primary_query_patterns",
            &config.routing.primary_query_patterns,
        ),
        (
            "routing.primary_databases",
            &config.routing.primary_databases,
        ),
        (
            "routing.primary_applications",
            &config.routing.primary_applications,
        ),
    ];
    for (key, list) in whole_text_lists {
        for (i, entry) in list.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&crate::model::whole_text_pattern(entry)) {
                return Err(invalid(
                    text,
                    format!("{key}[{i}]"),
                    format!("{entry:?} is not a valid regular expression: {e}"),
                ));
            }
        }
    }
    let mut peer_ids = std::collections::HashSet::new();
    for (i, peer) in config.peers.iter().enumerate() {
        if peer.id == 0 || !peer_ids.insert(peer.id) {
            return Err(invalid(
                text,
                format!("peers[{i}].id"),
                "must be 1-255 and unique",
            ));
        }
    }
    if !config.peers.is_empty() && config.peer_id == 0 {
        return Err(invalid(
            text,
            "peer_id".into(),
            "must be set (1-255) when peers are listed: it tells them which cancels are this instance's",
        ));
    }
    if let Some(dns) = &config.peers_dns {
        if dns
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid(text, "peers_dns".into(), "must be host:port"));
        }
    }
    if config.nodes.is_empty() {
        return Err(invalid(
            text,
            "nodes".into(),
            "at least one node is required",
        ));
    }
    let mut names = HashSet::new();
    for (i, node) in config.nodes.iter().enumerate() {
        if node.name.is_empty() {
            return Err(invalid(
                text,
                format!("nodes[{i}].name"),
                "must not be empty",
            ));
        }
        if !names.insert(node.name.as_str()) {
            return Err(invalid(
                text,
                format!("nodes[{i}].name"),
                format!("duplicate node name {:?}", node.name),
            ));
        }
        if node.host.is_empty() {
            return Err(invalid(
                text,
                format!("nodes[{i}].host"),
                "must not be empty",
            ));
        }
        if node.port == 0 {
            return Err(invalid(text, format!("nodes[{i}].port"), "must not be 0"));
        }
    }
    if config.users.is_empty() {
        return Err(invalid(
            text,
            "users".into(),
            "at least one user is required",
        ));
    }
    let mut users = HashSet::new();
    for (i, user) in config.users.iter().enumerate() {
        if user.name.is_empty() {
            return Err(invalid(
                text,
                format!("users[{i}].name"),
                "must not be empty",
            ));
        }
        if !users.insert(user.name.as_str()) {
            return Err(invalid(
                text,
                format!("users[{i}].name"),
                format!("duplicate user {:?}", user.name),
            ));
        }
        // A verifier checks SCRAM logins only, an md5 hash md5 logins only.
        let form = user.stored_form();
        let mismatch = match (form, user.auth) {
            (StoredForm::ScramVerifier, AuthMethod::Md5) => {
                Some("a SCRAM verifier cannot check md5 logins: use auth: scram-sha-256")
            }
            (StoredForm::Md5Hash, AuthMethod::ScramSha256) => Some(
                "an md5 hash cannot check SCRAM logins: use auth: md5, or give the password or its SCRAM verifier",
            ),
            _ => None,
        };
        if let Some(message) = mismatch {
            return Err(invalid(text, format!("users[{i}].password"), message));
        }
        if let Some(j) = config.access.iter().position(|rule| {
            rule.matches_name(&rule.user, &user.name)
                && matches!(
                    (form, rule.method),
                    (StoredForm::ScramVerifier, crate::access::AccessMethod::Md5)
                        | (
                            StoredForm::Md5Hash,
                            crate::access::AccessMethod::ScramSha256
                        )
                )
        }) {
            return Err(invalid(
                text,
                format!("access[{j}].method"),
                format!(
                    "{:?} is configured by {}, which cannot check this method's logins",
                    user.name,
                    if form == StoredForm::ScramVerifier {
                        "a SCRAM verifier"
                    } else {
                        "an md5 hash"
                    }
                ),
            ));
        }
    }
    if let Some(aq) = &config.auth_query {
        let listed = config.users.iter().find(|u| u.name == aq.user);
        let password = aq
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .or_else(|| listed.map(|u| u.password().to_owned()));
        match password {
            None => {
                return Err(invalid(
                    text,
                    "auth_query.password".into(),
                    format!("required: {:?} is not listed under users", aq.user),
                ))
            }
            Some(p) if StoredForm::of(&p) != StoredForm::Plain => {
                return Err(invalid(
                    text,
                    "auth_query.password".into(),
                    "the look-up logs in before any client: it needs the password itself, not a verifier or hash",
                ))
            }
            Some(_) => {}
        }
        if !aq.query.contains("$1") {
            return Err(invalid(
                text,
                "auth_query.query".into(),
                "must use $1, the user name being looked up",
            ));
        }
        if aq.cache_lifetime.get().is_zero() {
            return Err(invalid(
                text,
                "auth_query.cache_lifetime".into(),
                "must be positive",
            ));
        }
    }
    // The health checks log in before any client could reveal a key.
    let login = config.health_check_login();
    if StoredForm::of(&login.password) != StoredForm::Plain {
        return Err(invalid(
            text,
            "health_check.password".into(),
            format!(
                "the health checks need {:?}'s password itself, and a verifier or hash is configured: set health_check.user and health_check.password",
                login.user
            ),
        ));
    }
    for (i, admin) in config.admin.users.iter().enumerate() {
        if !users.contains(admin.as_str()) {
            return Err(invalid(
                text,
                format!("admin.users[{i}]"),
                format!("{admin:?} is not listed under users (its password comes from there)"),
            ));
        }
    }
    check_access(config, text)?;
    check_tls(config, text)?;
    let max = config.client.max_message_size.bytes();
    if !(1024..=(1 << 30)).contains(&max) {
        return Err(invalid(
            text,
            "client.max_message_size".into(),
            "must be between 1kB and 1GB",
        ));
    }
    if config.client.login_timeout.get().is_zero() {
        return Err(invalid(
            text,
            "client.login_timeout".into(),
            "must be positive",
        ));
    }
    let positive = [
        ("pool.connect_timeout", config.pool.connect_timeout),
        ("pool.checkout_timeout", config.pool.checkout_timeout),
        ("health_check.interval", config.health_check.interval),
        ("health_check.timeout", config.health_check.timeout),
        (
            "topology.failover_timeout",
            config.topology.failover_timeout,
        ),
    ];
    for (key, value) in positive {
        if value.get().is_zero() {
            return Err(invalid(text, key.into(), "must be positive"));
        }
    }
    let keepalive = &config.tcp_keepalive;
    if keepalive.enabled {
        for (key, value) in [
            ("tcp_keepalive.idle", keepalive.idle),
            ("tcp_keepalive.interval", keepalive.interval),
        ] {
            if value.get() < std::time::Duration::from_secs(1) {
                return Err(invalid(text, key.into(), "must be at least 1s"));
            }
        }
        if keepalive.count == 0 {
            return Err(invalid(
                text,
                "tcp_keepalive.count".into(),
                "must be at least 1",
            ));
        }
    }
    if config.topology.discover_members && config.topology.discovery == Discovery::Sql {
        return Err(invalid(
            text,
            "topology.discover_members".into(),
            "needs topology.discovery patroni or repmgr: only an HA manager lists the cluster's members",
        ));
    }
    for (key, value) in [
        (
            "health_check.max_failures",
            config.health_check.max_failures,
        ),
        (
            "health_check.min_successes",
            config.health_check.min_successes,
        ),
        (
            "pool.max_server_connections",
            config.pool.max_server_connections,
        ),
    ] {
        if value == 0 {
            return Err(invalid(text, key.into(), "must be at least 1"));
        }
    }
    let hc = &config.health_check;
    match &hc.user {
        Some(name) if hc.password.is_none() && !config.users.iter().any(|u| &u.name == name) => {
            return Err(invalid(
                text,
                "health_check.password".into(),
                format!("required: {name:?} is not listed under users"),
            ))
        }
        _ => {}
    }
    if config.topology.discovery == Discovery::Patroni {
        for (i, node) in config.nodes.iter().enumerate() {
            match node.patroni_url.as_deref() {
                None => {
                    return Err(invalid(
                        text,
                        format!("nodes[{i}]"),
                        "patroni_url is required with topology.discovery: patroni",
                    ))
                }
                Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                    return Err(invalid(
                        text,
                        format!("nodes[{i}].patroni_url"),
                        "must start with http:// or https:// (e.g. http://127.0.0.1:8008)",
                    ))
                }
                Some(url)
                    if url.starts_with("https://")
                        && config.topology.patroni.ca_file.is_none() =>
                {
                    return Err(invalid(
                        text,
                        format!("nodes[{i}].patroni_url"),
                        "https needs topology.patroni.ca_file (the CA Patroni's certificate chains to)",
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The access rules: addresses that parse, no method pgrouter cannot carry out, and no `trust` for
/// the admin console's users.
fn check_access(config: &Config, text: &str) -> Result<(), ConfigError> {
    use crate::access::{parse_address, AccessMethod};
    for (i, rule) in config.access.iter().enumerate() {
        if parse_address(&rule.address).is_none() {
            return Err(invalid(
                text,
                format!("access[{i}].address"),
                format!(
                    "{:?} is not an address or CIDR range (e.g. all, 10.0.0.0/8, 192.168.1.7, ::1/128)",
                    rule.address
                ),
            ));
        }
        if rule.method == AccessMethod::Cert && config.tls.ca_file.is_none() {
            return Err(invalid(
                text,
                format!("access[{i}].method"),
                "cert needs tls.ca_file (the CA client certificates must chain to)",
            ));
        }
        if rule.method == AccessMethod::Cert && rule.kind != crate::access::ConnectionType::Hostssl
        {
            // As PostgreSQL: "cert authentication is only supported on hostssl connections".
            return Err(invalid(
                text,
                format!("access[{i}].method"),
                "cert is only supported on hostssl rules",
            ));
        }
        let console = [crate::access::CONSOLE_DATABASE, "pgbouncer"]
            .iter()
            .any(|db| rule.matches_name(&rule.database, db));
        if rule.method == AccessMethod::Trust && console {
            if let Some(admin) = config
                .admin
                .users
                .iter()
                .find(|a| rule.matches_name(&rule.user, a))
            {
                return Err(invalid(
                    text,
                    format!("access[{i}].method"),
                    format!(
                        "trust is not allowed for the admin console's users ({admin:?} would log in to database pgrouter without a password); limit database or user"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `tls:` names its files when it is on; `server_tls:` has what its mode needs.
fn check_tls(config: &Config, text: &str) -> Result<(), ConfigError> {
    let tls = &config.tls;
    if tls.mode != crate::model::TlsMode::Disable {
        for (key, value) in [
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ] {
            if value.is_none() {
                return Err(invalid(
                    text,
                    key.into(),
                    format!("required with tls.mode: {:?}", tls.mode).to_lowercase(),
                ));
            }
        }
    } else if tls.ca_file.is_some() {
        return Err(invalid(
            text,
            "tls.ca_file".into(),
            "client certificates need TLS: set tls.mode, cert_file and key_file",
        ));
    }
    if let Some(i) = config.users.iter().position(|u| u.auth == AuthMethod::Cert) {
        if tls.ca_file.is_none() {
            return Err(invalid(
                text,
                format!("users[{i}].auth"),
                "cert needs tls.ca_file (the CA client certificates must chain to)",
            ));
        }
    }
    if config.admin.https && tls.mode == crate::model::TlsMode::Disable {
        return Err(invalid(
            text,
            "admin.https".into(),
            "needs tls (its certificate serves the admin port too)",
        ));
    }
    let server = &config.server_tls;
    use crate::model::ServerTlsMode;
    if matches!(
        server.mode,
        ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull
    ) && server.ca_file.is_none()
    {
        return Err(invalid(
            text,
            "server_tls.mode".into(),
            format!(
                "{} needs server_tls.ca_file (the CA the servers' certificates chain to)",
                if server.mode == ServerTlsMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ),
        ));
    }
    if server.cert_file.is_some() != server.key_file.is_some() {
        return Err(invalid(
            text,
            "server_tls.cert_file".into(),
            "cert_file and key_file go together",
        ));
    }
    Ok(())
}
