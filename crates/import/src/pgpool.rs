//! `pgpool.conf` parameters to pgrouter settings: the mapping table and its decisions.

use crate::{conf, hba, passwd, Outcome, ReportLine};
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

/// The files to import, as text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// `pgpool.conf`.
    pub pgpool_conf: &'a str,
    /// `pool_hba.conf`, if given.
    pub pool_hba: Option<&'a str>,
    /// `pool_passwd`, if given.
    pub pool_passwd: Option<&'a str>,
    /// Pgpool-II's AES key (the `.pgpoolkey` file's first line), for `AES` entries.
    pub pgpool_key: Option<&'a str>,
}

/// The result: pgrouter's configuration and what became of every parameter.
#[derive(Debug, Clone)]
pub struct Import {
    /// pgrouter's configuration, as YAML.
    pub yaml: String,
    /// One line per parameter set (and per `pool_hba.conf` and `pool_passwd` line).
    pub report: Vec<ReportLine>,
}

/// Why nothing could be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// `pgpool.conf` does not parse.
    #[error("pgpool.conf: {0}")]
    Conf(#[from] conf::ConfError),
    /// No `backend_hostnameN`/`backend_portN`: there are no nodes to route to.
    #[error("pgpool.conf names no backend (backend_hostname0, backend_port0, ...)")]
    NoBackends,
    /// The YAML could not be written.
    #[error("writing the configuration: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// Parameters pgrouter does not need, by prefix or name, and why.
const NOT_NEEDED: &[(&str, &str)] = &[
    ("backend_data_directory", "pgrouter never runs commands on the servers' hosts"),
    ("backend_flag", "pgrouter never promotes nor detaches a node: it follows the HA manager (topology.discovery)"),
    ("failover_", "pgrouter never promotes: it follows the HA manager (Patroni, repmgr) and reroutes within seconds"),
    ("failback_command", "pgrouter never promotes: it follows the HA manager"),
    ("follow_primary_", "pgrouter never promotes: it follows the HA manager"),
    ("auto_failback", "a node that comes back serves again after health_check.min_successes checks"),
    ("search_primary_node_timeout", "the primary is found by every health check; topology.failover_timeout bounds the wait for one"),
    ("detach_false_primary", "pgrouter never routes writes to two primaries: with two, it follows the HA manager or waits"),
    ("sr_check_period", "replication lag is read by every health check"),
    ("sr_check_database", "health_check.database is used"),
    ("health_check_retry_delay", "a failed check is retried at the next interval; health_check.max_failures counts them"),
    ("health_check_max_retries", "mapped to health_check.max_failures"),
    ("statement_level_load_balance", "pgrouter balances every statement outside transactions already"),
    ("use_watchdog", "run several pgrouter instances behind a Service or load balancer; there is no VIP to move"),
    ("wd_", "no watchdog: pgrouter instances share nothing"),
    ("heartbeat_", "no watchdog: pgrouter instances share nothing"),
    ("delegate_ip", "no watchdog or VIP: put pgrouter behind a Service or load balancer"),
    ("if_", "no watchdog or VIP"),
    ("arping_", "no watchdog or VIP"),
    ("trusted_servers", "no watchdog"),
    ("ping_path", "no watchdog"),
    ("other_pgpool_", "no watchdog"),
    ("hostname0", "no watchdog"),
    ("pgpool_port", "no watchdog"),
    ("log_", "pgrouter logs to stderr (--log-format text|json, --log-level)"),
    ("logging_collector", "pgrouter logs to stderr"),
    ("logdir", "pgrouter logs to stderr"),
    ("syslog_", "pgrouter logs to stderr"),
    ("client_min_messages", "pgrouter relays the servers' notices as they are"),
    ("pcp_", "pgrouter has an admin console (database pgrouter) and HTTP endpoints instead of PCP"),
    ("pid_file_name", "pgrouter runs in the foreground (systemd, containers)"),
    ("listen_backlog_multiplier", "the kernel's backlog is used"),
    ("serialize_accept", "one process accepts every client"),
    ("reserved_connections", "client.max_connections refuses beyond the limit with PostgreSQL's error 53300"),
    ("child_life_time", "pgrouter has no child processes"),
    ("child_max_connections", "pgrouter has no child processes"),
    ("process_management_", "pgrouter has no child processes"),
    ("max_pool", "pgrouter pools per database and user, max_server_connections per node (from num_init_children)"),
    ("connection_cache", "pgrouter always pools server connections (pool.mode: session is Pgpool-II's connection cache)"),
    ("reset_query_list", "pgrouter resets connections with pool.reset_query (DISCARD ALL) as needed"),
    ("ignore_leading_white_space", "pgrouter's classifier ignores white space and comments"),
    ("allow_sql_comments", "pgrouter's classifier ignores comments except its routing hints"),
    ("enable_pool_hba", "access rules come from pool_hba.conf when given (--pool-hba)"),
    ("pool_passwd", "users come from pool_passwd when given (--pool-passwd)"),
    ("authentication_timeout", "mapped to client.login_timeout"),
    ("backend_clustering_mode", "streaming replication is pgrouter's only mode"),
    ("master_slave_mode", "streaming replication is pgrouter's only mode"),
    ("master_slave_sub_mode", "streaming replication is pgrouter's only mode"),
    ("check_temp_table", "pgrouter pins a session that creates temporary tables to its primary connection"),
    ("check_unlogged_table", "unlogged tables are only on the primary: reads of them fail on replicas, see docs/migrating-from-pgpool.md"),
    ("relcache_", "pgrouter keeps no relation cache"),
    ("enable_shared_relcache", "pgrouter keeps no relation cache"),
    ("allow_multiple_failover_requests_from_node", "no watchdog"),
    ("enable_consensus_with_half_votes", "no watchdog"),
    ("failover_when_quorum_exists", "no watchdog"),
    ("failover_require_consensus", "no watchdog"),
    ("unix_socket_group", "use the socket directory's ownership"),
    ("unix_socket_permissions", "the socket is 0777 as PostgreSQL's default; protect its directory"),
    ("ssl_ciphers", "rustls chooses among its safe suites"),
    ("ssl_prefer_server_ciphers", "rustls chooses among its safe suites"),
    ("ssl_ecdh_curve", "rustls chooses among its safe curves"),
    ("ssl_dh_params_file", "rustls has no finite-field Diffie-Hellman"),
    ("ssl_passphrase_command", "give pgrouter an unencrypted key file readable only by it"),
    ("ssl_crl_file", "not checked"),
    ("ssl_ca_cert_dir", "use ssl_ca_cert (one file)"),
];

/// Parameters that ask for something pgrouter does not do, and what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("memory_cache_enabled", "pgrouter has no query result cache"),
    ("memqcache_", "pgrouter has no query result cache"),
    (
        "replication_mode",
        "pgrouter routes to a streaming-replication cluster; it never writes to several servers",
    ),
    (
        "replicate_select",
        "pgrouter never writes to several servers",
    ),
    ("insert_lock", "pgrouter never writes to several servers"),
    (
        "lobj_lock_table",
        "pgrouter never writes to several servers",
    ),
    (
        "prefer_lower_delay_standby",
        "pgrouter balances by weight among the replicas within the lag limits",
    ),
    (
        "allow_clear_text_frontend_auth",
        "clients log in with SCRAM or MD5",
    ),
    (
        "dml_adaptive_object_relationship_list",
        "pgrouter does not track tables written per session",
    ),
    (
        "black_query_pattern_list",
        "use the /* pgrouter: primary */ hint",
    ),
    (
        "white_memqcache_table_list",
        "pgrouter has no query result cache",
    ),
    (
        "black_memqcache_table_list",
        "pgrouter has no query result cache",
    ),
];

/// Imports `inputs`. Fails only when `pgpool.conf` does not parse or names no backend.
pub fn import(inputs: Inputs<'_>) -> Result<Import, ImportError> {
    let params = conf::parse(inputs.pgpool_conf)?;
    let mut m = Mapper {
        params: &params,
        done: BTreeMap::new(),
    };
    let mut root = Mapping::new();
    root.insert("nodes".into(), Value::Sequence(m.nodes()?));
    if let Some(listen) = m.listen() {
        root.insert("listen".into(), listen.into());
    }
    m.unix_socket(&mut root);
    let mut routing = Mapping::new();
    let mut health = Mapping::new();
    let mut client = Mapping::new();
    let mut pool = Mapping::new();
    m.routing(&mut routing);
    m.health_check(&mut health);
    m.limits(&mut client, &mut pool);
    let tls = m.tls();
    let mut report: Vec<ReportLine> = Vec::new();
    let users = match inputs.pool_passwd {
        Some(text) => {
            let (users, lines) = passwd::users(text, inputs.pgpool_key);
            report.extend(lines);
            users
        }
        None => Vec::new(),
    };
    root.insert("users".into(), Value::Sequence(users));
    for (key, section) in [
        ("client", client),
        ("pool", pool),
        ("routing", routing),
        ("health_check", health),
    ] {
        if !section.is_empty() {
            root.insert(key.into(), Value::Mapping(section));
        }
    }
    if let Some(tls) = tls {
        root.insert("tls".into(), Value::Mapping(tls));
    }
    if let Some(text) = inputs.pool_hba {
        let (rules, lines) = hba::rules(text);
        report.extend(lines);
        if !rules.is_empty() {
            root.insert("access".into(), Value::Sequence(rules));
        }
    }
    let mut params_report: Vec<ReportLine> = params
        .keys()
        .map(|name| ReportLine {
            what: name.clone(),
            outcome: m
                .done
                .remove(name)
                .unwrap_or_else(|| classify(name, m.get(name).unwrap_or_default())),
        })
        .collect();
    params_report.append(&mut report);
    Ok(Import {
        yaml: serde_yaml_ng::to_string(&Value::Mapping(root))?,
        report: params_report,
    })
}

/// What a parameter the mapping did not handle is: not needed, unsupported, or unknown. A
/// feature pgrouter lacks that the file leaves off (`off`, `''`, `0`) is not needed.
fn classify(name: &str, value: &str) -> Outcome {
    let matches = |(prefix, _): &&(&str, &str)| {
        name == *prefix
            || (prefix.ends_with('_') && name.starts_with(prefix))
            || name
                .strip_suffix(|c: char| c.is_ascii_digit())
                .is_some_and(|n| n.trim_end_matches(|c: char| c.is_ascii_digit()) == *prefix)
    };
    if let Some((_, why)) = NOT_NEEDED.iter().find(matches) {
        return Outcome::NotNeeded((*why).to_owned());
    }
    let off = value.is_empty() || value == "0" || boolean(value) == Some(false);
    if let Some((_, why)) = UNSUPPORTED.iter().find(matches) {
        return if off {
            Outcome::NotNeeded(format!("off here ({why})"))
        } else {
            Outcome::Unsupported((*why).to_owned())
        };
    }
    if off {
        return Outcome::NotNeeded("off or empty here; pgrouter has no equivalent".to_owned());
    }
    Outcome::Unsupported("no pgrouter equivalent".to_owned())
}

/// Pgpool-II's booleans.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

struct Mapper<'a> {
    params: &'a BTreeMap<String, (String, usize)>,
    /// What became of the parameters handled so far.
    done: BTreeMap<String, Outcome>,
}

impl Mapper<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(|(v, _)| v.as_str())
    }

    fn mapped(&mut self, name: &str, to: impl Into<String>) {
        if self.params.contains_key(name) {
            self.done
                .insert(name.to_owned(), Outcome::Mapped(to.into()));
        }
    }

    fn unsupported(&mut self, name: &str, why: impl Into<String>) {
        if self.params.contains_key(name) {
            self.done
                .insert(name.to_owned(), Outcome::Unsupported(why.into()));
        }
    }

    fn not_needed(&mut self, name: &str, why: impl Into<String>) {
        if self.params.contains_key(name) {
            self.done
                .insert(name.to_owned(), Outcome::NotNeeded(why.into()));
        }
    }

    /// `backend_hostnameN`, `backend_portN`, `backend_weightN`, `backend_application_nameN`.
    fn nodes(&mut self) -> Result<Vec<Value>, ImportError> {
        let mut ids: Vec<u32> = self
            .params
            .keys()
            .filter_map(|k| k.strip_prefix("backend_hostname")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut nodes = Vec::new();
        for id in ids {
            let host_key = format!("backend_hostname{id}");
            let Some(host) = self.get(&host_key).map(str::to_owned) else {
                continue;
            };
            let name = self
                .get(&format!("backend_application_name{id}"))
                .filter(|n| !n.is_empty())
                .map_or_else(|| format!("pg{id}"), str::to_owned);
            let port_key = format!("backend_port{id}");
            let port: u16 = self
                .get(&port_key)
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432);
            let weight_key = format!("backend_weight{id}");
            // Pgpool-II's weights are relative shares, often fractions: kept as shares out of 100.
            let weight = self.get(&weight_key).and_then(|w| w.parse::<f64>().ok());
            let mut node = Mapping::new();
            node.insert("name".into(), name.clone().into());
            node.insert("host".into(), host.into());
            node.insert("port".into(), u64::from(port).into());
            if let Some(w) = weight {
                node.insert(
                    "weight".into(),
                    ((w * 100.0).round().max(0.0) as u64).into(),
                );
            }
            nodes.push(Value::Mapping(node));
            self.mapped(&host_key, format!("nodes[{name}].host"));
            self.mapped(&port_key, format!("nodes[{name}].port"));
            self.mapped(
                &weight_key,
                format!("nodes[{name}].weight (× 100: pgrouter's weights are integers)"),
            );
            self.mapped(
                &format!("backend_application_name{id}"),
                format!("nodes[{name}].name"),
            );
        }
        if nodes.is_empty() {
            return Err(ImportError::NoBackends);
        }
        Ok(nodes)
    }

    /// `listen_addresses` and `port` to `listen` (one address).
    fn listen(&mut self) -> Option<String> {
        let port = self.get("port").unwrap_or("9999").to_owned();
        let addresses = self
            .get("listen_addresses")
            .unwrap_or("localhost")
            .to_owned();
        let mut list = addresses
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let first = list.next().unwrap_or("localhost");
        let ip = match first {
            "*" => "0.0.0.0".to_owned(),
            "localhost" => "127.0.0.1".to_owned(),
            ip if ip.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{ip}]"),
            ip => ip.to_owned(),
        };
        let extra = list.count();
        let note = if extra > 0 {
            format!("listen: {ip}:{port} (pgrouter listens on one address; the other {extra} are left out)")
        } else {
            format!("listen: {ip}:{port}")
        };
        self.mapped("listen_addresses", note.clone());
        self.mapped("port", note);
        (self.params.contains_key("listen_addresses") || self.params.contains_key("port"))
            .then(|| format!("{ip}:{port}"))
    }

    /// `unix_socket_directories` (the first) to `unix_socket_dir`, with `port`.
    fn unix_socket(&mut self, root: &mut Mapping) {
        let Some(dirs) = self.get("unix_socket_directories").map(str::to_owned) else {
            return;
        };
        let mut list = dirs.split(',').map(str::trim).filter(|d| !d.is_empty());
        if let Some(first) = list.next() {
            root.insert("unix_socket_dir".into(), first.into());
            let extra = list.count();
            self.mapped(
                "unix_socket_directories",
                if extra > 0 {
                    format!(
                        "unix_socket_dir: {first} (one directory; the other {extra} are left out)"
                    )
                } else {
                    format!("unix_socket_dir: {first}")
                },
            );
        }
    }

    fn routing(&mut self, routing: &mut Mapping) {
        if let Some(on) = self.get("load_balance_mode").and_then(boolean) {
            routing.insert("load_balance".into(), on.into());
            self.mapped("load_balance_mode", format!("routing.load_balance: {on}"));
        }
        let key = "disable_load_balance_on_write";
        match self.get(key) {
            Some("transaction") | None => self.mapped(
                key,
                "pgrouter's behaviour: after a write the rest of the transaction stays on the primary (and a transaction not declared read-only starts there)",
            ),
            Some("off") => self.unsupported(
                key,
                "off: pgrouter never sends the reads of a transaction that wrote to a replica (that would miss the transaction's writes)",
            ),
            Some(mode) => {
                routing.insert("reads_after_write".into(), "primary".into());
                let how = match mode {
                    "always" => "the same",
                    "trans_transaction" => "stricter: reads outside transactions after the write go to the primary too",
                    "dml_adaptive" => "stricter: reads of every table after the write go to the primary, not only of tables written",
                    _ => "the closest pgrouter has",
                };
                self.mapped(key, format!("{mode}: routing.reads_after_write: primary ({how})"));
            }
        }
        if let Some(list) = self
            .get("primary_routing_query_pattern_list")
            .map(str::to_owned)
        {
            // Pgpool-II separates these patterns with `;` (they may hold commas).
            let patterns: Vec<Value> = list
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(Into::into)
                .collect();
            let n = patterns.len();
            if n > 0 {
                routing.insert("primary_query_patterns".into(), Value::Sequence(patterns));
            }
            self.mapped(
                "primary_routing_query_pattern_list",
                format!(
                    "routing.primary_query_patterns ({n} patterns, whole text, case-insensitive)"
                ),
            );
        }
        self.redirect_list(
            routing,
            "database_redirect_preference_list",
            "primary_databases",
        );
        self.redirect_list(
            routing,
            "app_name_redirect_preference_list",
            "primary_applications",
        );
        if let Some(bytes) = self
            .get("delay_threshold")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if bytes > 0 {
                routing.insert("max_replica_lag_bytes".into(), format!("{bytes}B").into());
            }
            self.mapped(
                "delay_threshold",
                format!("routing.max_replica_lag_bytes: {bytes} (0: no limit)"),
            );
        }
        if let Some(ms) = self
            .get("delay_threshold_by_time")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if ms > 0 {
                routing.insert("max_replica_lag".into(), format!("{ms}ms").into());
            }
            self.mapped(
                "delay_threshold_by_time",
                format!("routing.max_replica_lag: {ms}ms (0: no limit)"),
            );
        }
        self.function_list(
            routing,
            &["write_function_list", "black_function_list"],
            "write_functions",
        );
        self.function_list(
            routing,
            &["read_only_function_list", "white_function_list"],
            "read_only_functions",
        );
    }

    /// A `*_redirect_preference_list` (`pattern:target` pairs, comma-separated): `primary`
    /// targets become `routing.{key}`; `standby` is pgrouter's default for reads; node numbers
    /// and weights have no equivalent.
    fn redirect_list(&mut self, routing: &mut Mapping, name: &str, key: &str) {
        let Some(list) = self.get(name).map(str::to_owned) else {
            return;
        };
        let mut primary = Vec::new();
        let mut left_out = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.rsplit_once(':') {
                Some((pattern, "primary")) => primary.push(Value::from(pattern)),
                Some((_, "standby")) => {}
                _ => left_out.push(entry.to_owned()),
            }
        }
        let n = primary.len();
        if n > 0 {
            routing.insert(key.into(), Value::Sequence(primary));
        }
        if left_out.is_empty() {
            self.mapped(name, format!("routing.{key} ({n} `primary` entries; `standby` entries are pgrouter's default for reads)"));
        } else {
            self.unsupported(name, format!("{n} `primary` entries became routing.{key}; left out, as pgrouter cannot send a session to one chosen node: {}", left_out.join(", ")));
        }
    }

    /// A function list; Pgpool-II reads entries as regular expressions, which pgrouter matches
    /// as such (anchored, as Pgpool-II anchors them).
    fn function_list(&mut self, routing: &mut Mapping, names: &[&str], key: &str) {
        for name in names {
            let Some(list) = self.get(name).map(str::to_owned) else {
                continue;
            };
            let entries: Vec<Value> = list
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| f.trim_matches('"').into())
                .collect();
            if entries.is_empty() {
                self.not_needed(name, "empty");
                continue;
            }
            if key == "read_only_functions" && routing.contains_key(key) {
                self.not_needed(name, format!("routing.{key} already set"));
                continue;
            }
            let n = entries.len();
            routing.insert(key.into(), Value::Sequence(entries));
            self.mapped(
                name,
                format!("routing.{key} ({n} entries, regular expressions as in Pgpool-II)"),
            );
        }
    }

    fn health_check(&mut self, health: &mut Mapping) {
        match self.get("health_check_period").and_then(|v| v.parse::<u64>().ok()) {
            Some(0) => self.not_needed("health_check_period", "0 turns Pgpool-II's checks off; pgrouter always checks (health_check.interval, 1s by default)"),
            Some(s) => {
                health.insert("interval".into(), format!("{s}s").into());
                self.mapped("health_check_period", format!("health_check.interval: {s}s"));
            }
            None => {}
        }
        match self.get("health_check_timeout").and_then(|v| v.parse::<u64>().ok()) {
            Some(0) => self.not_needed("health_check_timeout", "0 means no timeout in Pgpool-II; pgrouter always bounds a check (health_check.timeout)"),
            Some(s) => {
                health.insert("timeout".into(), format!("{s}s").into());
                self.mapped("health_check_timeout", format!("health_check.timeout: {s}s"));
            }
            None => {}
        }
        if let Some(retries) = self
            .get("health_check_max_retries")
            .and_then(|v| v.parse::<u32>().ok())
        {
            health.insert("max_failures".into(), (retries + 1).into());
            self.mapped(
                "health_check_max_retries",
                format!(
                    "health_check.max_failures: {} (the failed check and its retries)",
                    retries + 1
                ),
            );
        }
        for (field, names) in [
            ("user", ["health_check_user", "sr_check_user"]),
            ("password", ["health_check_password", "sr_check_password"]),
            ("database", ["health_check_database", "sr_check_database"]),
        ] {
            for name in names {
                let Some(value) = self.get(name).filter(|v| !v.is_empty()).map(str::to_owned)
                else {
                    continue;
                };
                if health.contains_key(field) {
                    self.not_needed(
                        name,
                        format!("health_check.{field} is set from {}", names[0]),
                    );
                    continue;
                }
                if field == "password" && (value.starts_with("md5") || value.starts_with("AES")) {
                    self.unsupported(name, "an encrypted password: give health_check.password in clear text (or leave it out: the probes then log in as the first user)");
                    continue;
                }
                health.insert(field.into(), value.into());
                self.mapped(name, format!("health_check.{field}"));
            }
        }
        // Per-node settings (health_check_period0, ...): pgrouter has one for every node.
        let per_node: Vec<String> = self
            .params
            .keys()
            .filter(|k| k.starts_with("health_check_") && k.ends_with(|c: char| c.is_ascii_digit()))
            .cloned()
            .collect();
        for name in per_node {
            self.unsupported(
                &name,
                "pgrouter has one health check setting for every node: the global one is used",
            );
        }
    }

    fn limits(&mut self, client: &mut Mapping, pool: &mut Mapping) {
        if let Some(n) = self
            .get("num_init_children")
            .and_then(|v| v.parse::<u64>().ok())
        {
            client.insert("max_connections".into(), n.into());
            pool.insert("max_server_connections".into(), n.into());
            self.mapped("num_init_children", format!("client.max_connections: {n} and pool.max_server_connections: {n} per node (Pgpool-II serves one client per child; pgrouter can take more clients than server connections in transaction pooling)"));
        }
        pool.insert("mode".into(), "session".into());
        if let Some(s) = self
            .get("client_idle_limit")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if s > 0 {
                client.insert("idle_timeout".into(), format!("{s}s").into());
            }
            self.mapped(
                "client_idle_limit",
                format!("client.idle_timeout: {s}s (0: none)"),
            );
        }
        if let Some(s) = self
            .get("connection_life_time")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if s > 0 {
                pool.insert("idle_timeout".into(), format!("{s}s").into());
            }
            self.mapped(
                "connection_life_time",
                format!("pool.idle_timeout: {s}s (0: none)"),
            );
        }
        if let Some(s) = self
            .get("authentication_timeout")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if s > 0 {
                client.insert("login_timeout".into(), format!("{s}s").into());
            }
            self.mapped(
                "authentication_timeout",
                format!("client.login_timeout: {s}s"),
            );
        }
    }

    fn tls(&mut self) -> Option<Mapping> {
        let on = self.get("ssl").and_then(boolean)?;
        if !on {
            self.not_needed("ssl", "off: pgrouter's tls.mode is disable by default");
            for name in ["ssl_cert", "ssl_key", "ssl_ca_cert"] {
                self.not_needed(name, "ssl is off");
            }
            return None;
        }
        let mut tls = Mapping::new();
        tls.insert("mode".into(), "prefer".into());
        self.mapped(
            "ssl",
            "tls.mode: prefer (offered, not required, as Pgpool-II's ssl = on)",
        );
        for (name, key) in [
            ("ssl_cert", "cert_file"),
            ("ssl_key", "key_file"),
            ("ssl_ca_cert", "ca_file"),
        ] {
            if let Some(path) = self.get(name).filter(|p| !p.is_empty()).map(str::to_owned) {
                tls.insert(key.into(), path.into());
                self.mapped(name, format!("tls.{key}"));
            }
        }
        Some(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written as the Pgpool-II documentation's streaming-replication example writes it.
    const DOCS_EXAMPLE: &str = "\
backend_clustering_mode = 'streaming_replication'
listen_addresses = '*'
port = 9999
unix_socket_directories = '/var/run/postgresql,/tmp'
sr_check_user = 'pgpool'
sr_check_password = ''
health_check_period = 5
health_check_timeout = 30
health_check_user = 'pgpool'
health_check_password = ''
health_check_max_retries = 3
health_check_period1 = 10
backend_hostname0 = 'server1'
backend_port0 = 5432
backend_weight0 = 1
backend_data_directory0 = '/var/lib/pgsql/15/data'
backend_flag0 = 'ALLOW_TO_FAILOVER'
backend_application_name0 = 'server1'
backend_hostname1 = 'server2'
backend_port1 = 5432
backend_weight1 = 0.5
backend_flag1 = 'ALLOW_TO_FAILOVER'
failover_command = '/etc/pgpool-II/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S'
follow_primary_command = '/etc/pgpool-II/follow_primary.sh %d %h %p %D %m %H %M %P %r %R'
load_balance_mode = on
statement_level_load_balance = on
disable_load_balance_on_write = 'always'
read_only_function_list = 'count,max,get_.*'
black_function_list = 'nextval,setval'
delay_threshold_by_time = 2000
prefer_lower_delay_standby = on
primary_routing_query_pattern_list = '.*DO NOT LOAD BALANCE.*'
database_redirect_preference_list = 'postgres:primary'
num_init_children = 64
max_pool = 2
client_idle_limit = 300
ssl = on
ssl_cert = '/etc/pgpool-II/server.crt'
ssl_key = '/etc/pgpool-II/server.key'
use_watchdog = on
memqcache_method = 'shmem'
";

    fn outcome<'a>(import: &'a Import, name: &str) -> &'a Outcome {
        &import
            .report
            .iter()
            .find(|l| l.what == name)
            .unwrap_or_else(|| panic!("{name} not reported"))
            .outcome
    }

    #[test]
    fn the_documentation_example_is_mapped_and_reported() {
        let import = import(Inputs {
            pgpool_conf: DOCS_EXAMPLE,
            ..Inputs::default()
        })
        .unwrap();
        let yaml = &import.yaml;
        for expected in [
            "name: server1",
            "host: server2",
            "weight: 50",
            "listen: 0.0.0.0:9999",
            "unix_socket_dir: /var/run/postgresql",
            "interval: 5s",
            "timeout: 30s",
            "max_failures: 4",
            "max_replica_lag: 2000ms",
            "max_connections: 64",
            "idle_timeout: 300s",
            "mode: prefer",
            "cert_file: /etc/pgpool-II/server.crt",
            "- get_.*",
            "- nextval",
        ] {
            assert!(yaml.contains(expected), "{expected:?} missing from\n{yaml}");
        }
        // Every parameter set is reported exactly once.
        let params = conf::parse(DOCS_EXAMPLE).unwrap();
        assert_eq!(import.report.len(), params.len());
        for name in [
            "backend_hostname0",
            "read_only_function_list",
            "black_function_list",
            "delay_threshold_by_time",
            "num_init_children",
        ] {
            assert!(
                matches!(outcome(&import, name), Outcome::Mapped(_)),
                "{name}"
            );
        }
        for name in [
            "backend_flag0",
            "failover_command",
            "follow_primary_command",
            "use_watchdog",
            "statement_level_load_balance",
            "backend_data_directory0",
            "max_pool",
        ] {
            assert!(
                matches!(outcome(&import, name), Outcome::NotNeeded(_)),
                "{name}"
            );
        }
        for name in [
            "disable_load_balance_on_write",
            "primary_routing_query_pattern_list",
            "database_redirect_preference_list",
        ] {
            assert!(
                matches!(outcome(&import, name), Outcome::Mapped(_)),
                "{name}"
            );
        }
        for expected in [
            "reads_after_write: primary",
            "primary_query_patterns:\n  - .*DO NOT LOAD BALANCE.*",
            "primary_databases:\n  - postgres",
        ] {
            assert!(yaml.contains(expected), "{expected:?} missing from\n{yaml}");
        }
        for name in [
            "prefer_lower_delay_standby",
            "health_check_period1",
            "memqcache_method",
        ] {
            assert!(
                matches!(outcome(&import, name), Outcome::Unsupported(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn a_file_without_backends_is_refused() {
        let error = import(Inputs {
            pgpool_conf: "port = 9999\n",
            ..Inputs::default()
        })
        .unwrap_err();
        assert!(matches!(error, ImportError::NoBackends));
    }
}
