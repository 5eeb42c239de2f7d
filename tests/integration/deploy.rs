//! The deployment files, validated without a Docker engine or a cluster (there is none on the
//! development and CI machines): the Dockerfiles with hadolint, docker-compose.yml with
//! docker-compose's own validation, and the Helm chart rendered by the real Helm (defaults and a
//! full example), checked against the Kubernetes schemas, with the pgrouter configuration it
//! renders passing `pgrouter check`. The tools come from `scripts/deploy-tools.sh`.

use crate::harness::repo;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The tools' directory, or `None` (a loud skip outside CI) when they are not installed.
fn tools() -> Option<PathBuf> {
    let bin = std::env::var_os("PGR_DEPLOY_TOOLS")
        .map_or_else(|| repo().join("target/deploy-tools"), PathBuf::from)
        .join("bin");
    if bin.join("helm").exists() {
        return Some(bin);
    }
    crate::harness::missing(
        "the deployment tools are not installed: run scripts/deploy-tools.sh (scripts/test.sh does)",
    );
    None
}

fn run(program: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pgrouter_check(config: &std::path::Path, env: &[(String, String)]) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .args(["check", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgrouter check {}:\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfiles_pass_hadolint() {
    let Some(bin) = tools() else { return };
    run(
        &bin.join("hadolint"),
        &["Dockerfile", "docker/patroni/Dockerfile"],
    );
}

#[test]
fn compose_file_is_valid_and_its_pgrouter_config_passes_check() {
    let Some(bin) = tools() else { return };
    let out = run(
        &bin.join("docker-compose"),
        &["-f", "docker-compose.yml", "config"],
    );
    let resolved = String::from_utf8_lossy(&out.stdout);
    for service in [
        "etcd:",
        "pg0:",
        "pg1:",
        "pg2:",
        "pgrouter:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            resolved.contains(service),
            "no {service} in docker-compose.yml"
        );
    }
    assert!(resolved.contains("docker/pgrouter.yaml"));
    // pgrouter reads its certificate from the directory the certs service fills; a pair made
    // here with openssl stands in for it next to a copy of the configuration.
    assert!(resolved.contains("/etc/pgrouter/tls"), "{resolved}");
    assert!(resolved.contains("service_completed_successfully"));
    let dir = std::env::temp_dir().join(format!("pgrouter-compose-{}", std::process::id()));
    let certs = crate::harness::make_certificates(&dir, "tls");
    std::fs::copy(
        repo().join("docker/pgrouter.yaml"),
        dir.join("pgrouter.yaml"),
    )
    .unwrap();
    assert_eq!(certs.dir, dir.join("tls"));
    pgrouter_check(&dir.join("pgrouter.yaml"), &[]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The documents of a rendered chart, parsed.
fn render(bin: &std::path::Path, values: Option<&str>) -> Vec<serde_yaml_ng::Value> {
    let mut args = vec!["template", "demo", "charts/pgrouter", "--namespace", "db"];
    if let Some(v) = values {
        args.extend(["-f", v]);
    }
    let out = run(&bin.join("helm"), &args);
    let text = String::from_utf8(out.stdout).unwrap();
    let file = std::env::temp_dir().join(format!(
        "pgrouter-chart-{}-{}.yaml",
        std::process::id(),
        values.is_some()
    ));
    std::fs::write(&file, &text).unwrap();
    // Every built-in object against the Kubernetes schemas (the Prometheus operator's CRDs are
    // not in them: those are checked below by hand).
    run(
        &bin.join("kubernetes-validate"),
        &[
            "-k",
            "1.30.0",
            "--strict",
            "--quiet",
            file.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&file);
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(doc).ok())
        .filter(|v| v.get("kind").is_some())
        .collect()
}

/// Where the pod's volume `name` is mounted in `container`, and the Secret it holds.
fn mounted_secret<'a>(
    container: &'a serde_yaml_ng::Value,
    pod: &'a serde_yaml_ng::Value,
    name: &str,
) -> (&'a str, &'a str) {
    let named = |list: &'a serde_yaml_ng::Value| {
        list.as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume or mount {name}"))
    };
    let mount = named(&container["volumeMounts"]);
    let volume = named(&pod["volumes"]);
    (
        mount["mountPath"].as_str().unwrap(),
        volume["secret"]["secretName"].as_str().unwrap(),
    )
}

fn find<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> Option<&'a serde_yaml_ng::Value> {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind))
}

#[test]
fn helm_chart_renders_valid_objects_and_a_valid_pgrouter_config() {
    let Some(bin) = tools() else { return };
    run(&bin.join("helm"), &["lint", "--strict", "charts/pgrouter"]);
    run(
        &bin.join("helm"),
        &[
            "lint",
            "--strict",
            "charts/pgrouter",
            "-f",
            "charts/pgrouter/ci/full-values.yaml",
        ],
    );
    // The chart's copies of the dashboard and alert rules are the ones in docs/.
    for file in ["grafana-dashboard.json", "pgrouter-alerts.yml"] {
        assert_eq!(
            std::fs::read_to_string(repo().join("charts/pgrouter/files").join(file)).unwrap(),
            std::fs::read_to_string(repo().join("docs/monitoring").join(file)).unwrap(),
            "charts/pgrouter/files/{file} differs from docs/monitoring/{file}"
        );
    }
    for values in [None, Some("charts/pgrouter/ci/full-values.yaml")] {
        let docs = render(&bin, values);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in [
            "Deployment",
            "Service",
            "ConfigMap",
            "Secret",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(&kind), "{values:?}: no {kind} in {kinds:?}");
        }
        if values.is_some() {
            for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
                assert!(kinds.contains(&kind), "full values: no {kind}");
            }
        }
        // The optional primary and read-only endpoints: one Service each, aimed at a container
        // port that exists, and the matching listener in pgrouter's configuration.
        let services: Vec<&serde_yaml_ng::Value> = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("Service"))
            .collect();
        let container_ports: Vec<&str> = find(&docs, "Deployment").unwrap()["spec"]["template"]
            ["spec"]["containers"][0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for service in &services {
            for port in service["spec"]["ports"].as_sequence().unwrap() {
                let target = port["targetPort"].as_str().unwrap();
                assert!(
                    container_ports.contains(&target),
                    "{target} not in {container_ports:?}"
                );
            }
        }
        let names: Vec<&str> = services
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str())
            .collect();
        let expected_services = if values.is_some() {
            vec![
                "demo-pgrouter",
                "demo-pgrouter-primary",
                "demo-pgrouter-read-only",
                "demo-pgrouter-peers",
            ]
        } else {
            vec!["demo-pgrouter", "demo-pgrouter-peers"]
        };
        assert_eq!(names, expected_services);
        // Cancel requests that reach the wrong pod go to every pod, draining ones included.
        let peers = docs
            .iter()
            .find(|d| d["metadata"]["name"].as_str() == Some("demo-pgrouter-peers"))
            .unwrap();
        assert_eq!(peers["spec"]["clusterIP"].as_str(), Some("None"));
        assert_eq!(
            peers["spec"]["publishNotReadyAddresses"].as_bool(),
            Some(true)
        );

        let deployment = find(&docs, "Deployment").unwrap();
        let spec = &deployment["spec"];
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
            Some(0)
        );
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/ready")
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/health")
        );
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true)
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert!(container["lifecycle"]["preStop"]["exec"]["command"].is_sequence());
        assert!(spec["template"]["metadata"]["annotations"]["checksum/config"].is_string());

        // The rendered pgrouter configuration passes `pgrouter check`, with the passwords the
        // Deployment would put in the environment.
        let configmap = docs
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some("ConfigMap") && d["data"]["pgrouter.yaml"].is_string()
            })
            .unwrap();
        let config_text = configmap["data"]["pgrouter.yaml"].as_str().unwrap();
        let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(config_text).unwrap();
        let endpoints_on = values.is_some();
        assert_eq!(config["primary_listen"].as_str().is_some(), endpoints_on);
        assert_eq!(config["read_only_listen"].as_str().is_some(), endpoints_on);
        let env: Vec<(String, String)> = container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), "secret".to_owned()))
            .collect();
        assert_eq!(env.len(), config["users"].as_sequence().unwrap().len());
        // TLS: the Secret is mounted where the configuration reads the certificate and key.
        let mut config_text = config_text.to_owned();
        let tls_dir =
            std::env::temp_dir().join(format!("pgrouter-chart-tls-{}", std::process::id()));
        if let Some(cert) = config["tls"]["cert_file"].as_str() {
            let (at, secret) = mounted_secret(container, pod, "tls");
            assert!(cert.starts_with(at), "{cert} is under {at}");
            assert_eq!(Some(secret), values.and(Some("pgrouter-tls")));
            // `pgrouter check` reads the files: a real pair made with openssl stands in.
            std::fs::create_dir_all(&tls_dir).unwrap();
            crate::harness::openssl(
                &tls_dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "tls.key",
                    "-out",
                    "tls.crt",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=pgrouter",
                ],
            );
            config_text = config_text.replace(at, &tls_dir.display().to_string());
        }
        // Server TLS: the CA Secret is mounted where server_tls.ca_file points.
        assert!(config["server_tls"]["mode"].is_string());
        if let Some(ca) = config["server_tls"]["ca_file"].as_str() {
            let (at, secret) = mounted_secret(container, pod, "server-ca");
            assert!(ca.starts_with(at), "{ca} is under {at}");
            assert_eq!(secret, "postgres-ca");
            // A self-signed certificate made here stands in for the CA.
            let ca_dir = tls_dir.join("server-ca");
            std::fs::create_dir_all(&ca_dir).unwrap();
            crate::harness::openssl(
                &ca_dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=postgres CA",
                ],
            );
            config_text = config_text.replace(at, &ca_dir.display().to_string());
        }
        let file =
            std::env::temp_dir().join(format!("pgrouter-chart-config-{}.yaml", std::process::id()));
        std::fs::write(&file, &config_text).unwrap();
        pgrouter_check(&file, &env);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_dir_all(&tls_dir);

        // The grace period covers shutdown_timeout (and the preStop pause).
        let shutdown = config["shutdown_timeout"].as_str().unwrap();
        let seconds: u64 = shutdown.trim_end_matches('s').parse().unwrap();
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace > seconds + 5,
            "grace {grace}s for shutdown_timeout {shutdown}"
        );

        // cert-manager writes the Secret the Deployment mounts, for the Service's names.
        if let Some(certificate) = find(&docs, "Certificate") {
            assert_eq!(
                certificate["spec"]["secretName"].as_str(),
                Some("pgrouter-tls")
            );
            let names: Vec<&str> = certificate["spec"]["dnsNames"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_str())
                .collect();
            // Every Service clients use (the peers' one carries only cancel requests, which
            // are never encrypted).
            for service in docs
                .iter()
                .filter(|d| d["kind"].as_str() == Some("Service"))
            {
                let name = service["metadata"]["name"].as_str().unwrap();
                if name.ends_with("-peers") {
                    continue;
                }
                assert!(
                    names.contains(&format!("{name}.db.svc").as_str()),
                    "{name} not in {names:?}"
                );
            }
            assert_eq!(
                certificate["spec"]["issuerRef"]["kind"].as_str(),
                Some("ClusterIssuer")
            );
        } else {
            assert!(values.is_none(), "full values enable cert-manager");
        }
        if let Some(rule) = find(&docs, "PrometheusRule") {
            assert!(!rule["spec"]["groups"][0]["rules"]
                .as_sequence()
                .unwrap()
                .is_empty());
        }
    }
}

/// The Deployment's grace period rendered for `config.shutdown_timeout = timeout`, or Helm's
/// error.
fn grace_period(bin: &std::path::Path, timeout: &str) -> Result<u64, String> {
    let out = Command::new(bin.join("helm"))
        .args(["template", "demo", "charts/pgrouter", "--namespace", "db"])
        .args([
            "--set-string",
            &format!("config.shutdown_timeout={timeout}"),
        ])
        .args(["--show-only", "templates/deployment.yaml"])
        .current_dir(repo())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let deployment: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&out.stdout).expect("the Deployment parses");
    Ok(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("a grace period"),
    )
}

/// Every duration form pgrouter's configuration accepts becomes the right grace period:
/// `shutdown_timeout` rounded up to whole seconds, plus 15 s for the preStop pause and a margin.
/// (`1m30s` used to render as 0 s, so Kubernetes killed pods with transactions open.)
#[test]
fn chart_grace_period_reads_every_duration_form() {
    let Some(bin) = tools() else { return };
    for (timeout, seconds) in [
        ("30s", 30),
        ("1m30s", 90),
        ("90s", 90),
        ("2m", 120),
        ("1min", 60),
        ("1h", 3600),
        ("1h2m3s", 3723),
        ("1500ms", 2),
        ("250us", 1),
        (" 45s ", 45),
    ] {
        // pgrouter itself reads the same text as this many seconds (rounded up).
        let parsed = pgrouter::config::Duration::parse(timeout).unwrap().get();
        assert_eq!(
            parsed.as_micros().div_ceil(1_000_000) as u64,
            seconds,
            "{timeout}"
        );
        assert_eq!(
            grace_period(&bin, timeout),
            Ok(seconds + 15),
            "shutdown_timeout {timeout:?}"
        );
    }
    for bad in ["soon", "30", "1x", "-5s"] {
        let error = grace_period(&bin, bad).expect_err(bad);
        assert!(error.contains("shutdown_timeout"), "{bad:?}: {error}");
    }
}

/// Renders the chart with `--set` values; Helm's error when it refuses.
fn render_with(bin: &std::path::Path, sets: &[&str]) -> Result<String, String> {
    let mut command = Command::new(bin.join("helm"));
    command
        .args(["template", "demo", "charts/pgrouter", "--namespace", "db"])
        .current_dir(repo());
    for set in sets {
        command.args(["--set", set]);
    }
    let out = command.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The chart never lets the pods together open more server connections per node than the
/// declared budget: per-pod max_server_connections times the most pods (HPA maxReplicas or
/// replicaCount, plus the rolling update's extra pod).
#[test]
fn chart_keeps_server_connections_within_the_budget() {
    let Some(bin) = tools() else { return };
    // The defaults fit: 10 per pod x (8 + 1) pods = 90.
    render_with(&bin, &[]).expect("the defaults fit the default budget");
    let error = render_with(&bin, &["autoscaling.maxReplicas=16"]).unwrap_err();
    assert!(
        error.contains("10 per pod x 17 pods") && error.contains("over serverConnectionBudget 90"),
        "{error}"
    );
    let error = render_with(&bin, &["autoscaling.enabled=false", "replicaCount=10"]).unwrap_err();
    assert!(error.contains("= 110 per PostgreSQL node"), "{error}");
    render_with(
        &bin,
        &["autoscaling.maxReplicas=16", "serverConnectionBudget=170"],
    )
    .expect("within a larger budget");
    render_with(
        &bin,
        &[
            "autoscaling.maxReplicas=16",
            "config.pool.max_server_connections=5",
        ],
    )
    .expect("fewer connections per pod");
    render_with(
        &bin,
        &["autoscaling.maxReplicas=16", "serverConnectionBudget=0"],
    )
    .expect("0: not checked");
}
