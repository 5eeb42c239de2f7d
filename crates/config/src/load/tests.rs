use super::*;
use crate::values::Duration;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    from_yaml(text, Path::new("."), &env(&[("APP_PW", "from-env")]))
}

const MINIMAL: &str =
    "nodes:\n  - name: a\n    host: 127.0.0.1\nusers:\n  - name: app\n    password: x\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9930");
    assert_eq!(c.worker_threads, 1);
    assert_eq!(c.nodes[0].port, 5432);
    assert_eq!(c.nodes[0].weight, 1);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    assert_eq!(c.client.login_timeout, Duration::from_secs(60));
    assert_eq!(c.pool.connect_timeout, Duration::from_secs(5));
}

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.yaml");
    let c = load(&path, &ProcessEnv).unwrap();
    assert!(c.nodes.len() >= 3);
    assert!(c.users.iter().any(|u| u.auth == AuthMethod::Md5));
}

#[test]
fn secrets_from_env_and_file() {
    let dir = std::env::temp_dir().join(format!("pgrouter-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), "from-file\n").unwrap();
    let text = "nodes:\n  - {name: a, host: h}\nusers:\n  - name: u1\n    password: ${APP_PW}\n  - name: u2\n    password_file: pw\n  - name: u3\n    password: a$$b$c\n  - name: u4\n    password: ${UNSET:-dflt}\n";
    let c = from_yaml(text, &dir, &env(&[("APP_PW", "from-env")])).unwrap();
    assert_eq!(c.users[0].password(), "from-env");
    assert_eq!(c.users[1].password(), "from-file");
    assert_eq!(c.users[2].password(), "a$b$c");
    assert_eq!(c.users[3].password(), "dflt");
    let shown = serde_yaml_ng::to_string(&c).unwrap();
    assert!(
        !shown.contains("from-env") && !shown.contains("from-file"),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Each bad file gives an error naming the key (and the line where known).
#[test]
fn errors_name_key_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "nodes:\n  - name: a\n    host: h\n    prot: 1\nusers: []\n",
            "nodes[0].prot: unknown field `prot`, expected one of `name`, `host`, `port`, `weight`, `patroni_url` (line 4)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\n    port: many\nusers: []\n",
            "nodes[0].port: invalid type: string \"many\", expected u16 (line 4)",
        ),
        (
            "listen: nowhere\nnodes: []\nusers: []\n",
            "listen: invalid socket address syntax (line 1)",
        ),
        ("nodes: []\nusers: []\n", "nodes: at least one node is required (line 1)"),
        (
            "nodes:\n  - name: a\n    host: h\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\n",
            "nodes[1].name: duplicate node name \"a\" (line 4)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\n  - name: v\n    password: ${NOPE}\n",
            "users[1].password: environment variable NOPE is not set (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n",
            "users[0]: a password or password_file is required (pgrouter also logs in to the servers with it) (line 5)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\n    auth: kerberos\n",
            "users[0].auth: unknown variant `kerberos`, expected one of `scram-sha-256`, `md5`, `trust`, `cert` (line 7)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nclient:\n  login_timeout: 10\n",
            "client.login_timeout: invalid duration \"10\": a unit is required (us, ms, s, m, h) (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nclient:\n  max_message_size: 10\n",
            "client.max_message_size: must be between 1kB and 1GB (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\ntopology:\n  discovery: patroni\n",
            "nodes[0]: patroni_url is required with topology.discovery: patroni (line 2)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\n    patroni_url: https://h:8008\nusers:\n  - name: u\n    password: p\ntopology:\n  discovery: patroni\n",
            "nodes[0].patroni_url: https needs topology.patroni.ca_file (the CA Patroni's certificate chains to) (line 4)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\ntopology:\n  discovery: consul\n",
            "topology.discovery: unknown variant `consul`, expected one of `sql`, `patroni`, `repmgr` (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nhealth_check:\n  max_failures: 0\n",
            "health_check.max_failures: must be at least 1 (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nhealth_check:\n  user: monitor\n",
            "health_check.password: required: \"monitor\" is not listed under users",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nadmin:\n  users:\n    - u\n    - boss\n",
            "admin.users[1]: \"boss\" is not listed under users (its password comes from there) (line 10)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\ntopology:\n  discover_members: true\n",
            "topology.discover_members: needs topology.discovery patroni or repmgr: only an HA manager lists the cluster's members (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\naccess:\n  - {address: 10.0.0.0/33, method: md5}\n",
            "access[0].address: \"10.0.0.0/33\" is not an address or CIDR range (e.g. all, 10.0.0.0/8, 192.168.1.7, ::1/128) (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\naccess:\n  - {method: cert}\n",
            "access[0].method: cert needs tls.ca_file (the CA client certificates must chain to) (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nadmin:\n  users: [u]\naccess:\n  - {user: 'x,u', database: pgrouter, address: 127.0.0.1, method: trust}\n",
            "access[0].method: trust is not allowed for the admin console's users (\"u\" would log in to database pgrouter without a password); limit database or user (line 10)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\naccess:\n  - {method: ident}\n",
            "access[0].method: unknown variant `ident`, expected one of `scram-sha-256`, `md5`, `cert`, `trust`, `reject` (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$7ttr1QEMHmJRYyDGDrDeD/Ow6ZzT1rjWrwTW3VgwcHU=:4VRSOWDbxDtoKGq0FFDajFY+kWG8h4lLEgBjxHN0YyQ=\n    auth: md5\n",
            "users[0].password: a SCRAM verifier cannot check md5 logins: use auth: scram-sha-256 (line 6)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: md50123456789abcdef0123456789abcdef\n",
            "users[0].password: an md5 hash cannot check SCRAM logins: use auth: md5, or give the password or its SCRAM verifier (line 6)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$7ttr1QEMHmJRYyDGDrDeD/Ow6ZzT1rjWrwTW3VgwcHU=:4VRSOWDbxDtoKGq0FFDajFY+kWG8h4lLEgBjxHN0YyQ=\n",
            "health_check.password: the health checks need \"u\"'s password itself, and a verifier or hash is configured: set health_check.user and health_check.password",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    auth: cert\n",
            "users[0].auth: cert needs tls.ca_file (the CA client certificates must chain to) (line 6)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\ntls: {mode: prefer, cert_file: c, key_file: k, ca_file: ca}\naccess:\n  - {type: host, method: cert}\n",
            "access[0].method: cert is only supported on hostssl rules (line 9)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nserver_tls:\n  mode: verify-full\n",
            "server_tls.mode: verify-full needs server_tls.ca_file (the CA the servers' certificates chain to) (line 8)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nserver_tls:\n  mode: require\n  cert_file: c.pem\n",
            "server_tls.cert_file: cert_file and key_file go together (line 9)",
        ),
        (
            "nodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\nserver_tls:\n  mode: verify_full\n",
            "server_tls.mode: unknown variant `verify_full`, expected one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full` (line 8)",
        ),
        (
            "listen: 127.0.0.1:6432\nread_only_listen: 127.0.0.1:6432\nnodes:\n  - name: a\n    host: h\nusers:\n  - name: u\n    password: p\n",
            "read_only_listen: 127.0.0.1:6432 is already listen's address (line 2)",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).expect_err(text).to_string();
        assert_eq!(&err, expected, "for:\n{text}");
    }
}

#[test]
fn health_check_login_defaults() {
    let c = parse(MINIMAL).unwrap();
    let login = c.health_check_login();
    assert_eq!(
        (
            login.user.as_str(),
            login.password.as_str(),
            login.database.as_str()
        ),
        ("app", "x", "postgres")
    );
    let c = parse(&format!(
        "{MINIMAL}health_check:\n  user: monitor\n  password: ${{APP_PW}}\ntopology:\n  discovery: repmgr\n"
    ))
    .unwrap();
    let login = c.health_check_login();
    assert_eq!(
        (
            login.user.as_str(),
            login.password.as_str(),
            login.database.as_str()
        ),
        ("monitor", "from-env", "repmgr")
    );
    assert_eq!(c.health_check.max_failures, 3);
    assert_eq!(c.topology.failover_timeout, Duration::from_secs(30));
}

#[test]
fn pool_modes_per_user_and_database() {
    let c = parse(&format!(
        "{MINIMAL}  - {{name: batch, password: y, pool_mode: session}}\npool:\n  mode: transaction\n  database_modes: {{reporting: session}}\n"
    ))
    .unwrap();
    assert_eq!(c.pool.mode, crate::model::PoolMode::Transaction);
    assert_eq!(
        c.pool.database_modes.get("reporting"),
        Some(&crate::model::PoolMode::Session)
    );
    assert_eq!(c.users[1].pool_mode, Some(crate::model::PoolMode::Session));
    assert_eq!(c.users[0].pool_mode, None);
}

#[test]
fn no_trust_user_needs_no_password() {
    let c = parse("nodes:\n  - {name: a, host: h}\nusers:\n  - {name: t, auth: trust}\n").unwrap();
    assert_eq!(c.users[0].password(), "");
}
