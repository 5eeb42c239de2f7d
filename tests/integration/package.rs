//! Packages for VM users: the Debian package built by scripts/build-deb.sh installs, runs as its
//! own user and uninstalls cleanly, its systemd unit passes `systemd-analyze verify`, and pgrouter
//! speaks systemd's notification protocol (`Type=notify`: READY, WATCHDOG, RELOADING, STOPPING)
//! to a real datagram socket, as systemd would listen.

use crate::harness::{cluster, free_port_block, missing, repo, router_config};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Installing a package changes the machine: done where that is expected (CI, or
/// PGR_TEST_DEB_INSTALL=1) and only as root.
fn may_install() -> bool {
    let wanted = ["CI", "PGR_TEST_DEB_INSTALL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty() && x != "0" && x != "false"));
    let root = run("id", &["-u"]).1.trim() == "0";
    wanted && root
}

#[test]
fn the_debian_package_installs_runs_and_uninstalls() {
    if !run("sh", &["-c", "command -v dpkg-deb"]).0 {
        missing("dpkg-deb is not installed (Debian's dpkg)");
        return;
    }
    let out = std::env::temp_dir().join(format!("pgrouter-deb-{}", std::process::id()));
    let script = repo().join("scripts/build-deb.sh");
    let (ok, text) = run(
        script.to_str().unwrap(),
        &[
            "--binary",
            env!("CARGO_BIN_EXE_pgrouter"),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "build-deb.sh: {text}");
    let deb = text
        .lines()
        .find(|l| l.starts_with('/') && l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("no package path printed: {text}"))
        .to_owned();
    let (_, info) = run("dpkg-deb", &["-I", &deb]);
    assert!(
        info.contains("Package: pgrouter") && info.contains("conffiles"),
        "{info}"
    );
    let (_, contents) = run("dpkg-deb", &["-c", &deb]);
    for file in [
        "./usr/bin/pgrouter",
        "./lib/systemd/system/pgrouter.service",
        "./etc/pgrouter/pgrouter.yaml",
        "./usr/share/man/man1/pgrouter.1.gz",
        "./usr/share/bash-completion/completions/pgrouter",
        "./usr/share/zsh/vendor-completions/_pgrouter",
        "./usr/share/fish/vendor_completions.d/pgrouter.fish",
        "./usr/share/doc/pgrouter/copyright",
    ] {
        assert!(
            contents.contains(file),
            "{file} not in the package:\n{contents}"
        );
    }
    if !may_install() {
        eprintln!("not installing the package here (set PGR_TEST_DEB_INSTALL=1, as root)");
        std::fs::remove_dir_all(&out).ok();
        return;
    }
    let (ok, text) = run("dpkg", &["-i", &deb]);
    assert!(ok, "dpkg -i: {text}");
    // Checked with the package installed; purged whatever the outcome.
    let checked = std::panic::catch_unwind(|| {
        let (ok, version) = run("/usr/bin/pgrouter", &["--version"]);
        assert!(ok && version.starts_with("pgrouter "), "{version}");
        let (ok, user) = run("id", &["-u", "pgrouter"]);
        assert!(ok, "the package makes a system user: {user}");
        let (_, mode) = run("stat", &["-c", "%a %U:%G", "/etc/pgrouter/pgrouter.yaml"]);
        assert_eq!(
            mode.trim(),
            "640 root:pgrouter",
            "the configuration is for the service only"
        );
        // The service's user can read and check its configuration.
        let (ok, check) = run(
            "runuser",
            &[
                "-u",
                "pgrouter",
                "--",
                "/usr/bin/pgrouter",
                "check",
                "--config",
                "/etc/pgrouter/pgrouter.yaml",
            ],
        );
        assert!(ok, "pgrouter check as the service user: {check}");
        if run("sh", &["-c", "command -v systemd-analyze"]).0 {
            let (ok, verify) = run(
                "systemd-analyze",
                &["verify", "/lib/systemd/system/pgrouter.service"],
            );
            let ours: Vec<&str> = verify
                .lines()
                .filter(|l| l.contains("pgrouter.service"))
                .collect();
            assert!(ok && ours.is_empty(), "systemd-analyze verify: {verify}");
        }
        let (ok, unit) = run("cat", &["/lib/systemd/system/pgrouter.service"]);
        assert!(
            ok && unit.contains("Type=notify") && unit.contains("WatchdogSec="),
            "{unit}"
        );
    });
    let (ok, text) = run("dpkg", &["--purge", "pgrouter"]);
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
    assert!(ok, "dpkg --purge: {text}");
    assert!(!std::path::Path::new("/usr/bin/pgrouter").exists());
    assert!(!std::path::Path::new("/etc/pgrouter/pgrouter.yaml").exists());
    std::fs::remove_dir_all(&out).ok();
}

/// The next notification within `limit`.
fn next(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits for a notification containing `what`, skipping others (watchdog pings interleave).
fn expect(socket: &UnixDatagram, what: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(message) = next(socket, Duration::from_millis(500)) {
            let found = message.contains(what);
            seen.push(message);
            if found {
                return;
            }
        }
    }
    panic!("no {what:?} from pgrouter; got {seen:?}");
}

#[test]
fn pgrouter_notifies_systemd() {
    let Some(cluster) = cluster() else { return };
    let dir = cluster.dir.join(format!("notify-{}", free_port_block(1)));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port_block(4);
    let config = dir.join("pgrouter.yaml");
    std::fs::write(&config, router_config(cluster, port, [1, 1, 1], "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    expect(&socket, "READY=1", &mut seen);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "READY=1 only once clients can connect"
    );
    expect(&socket, "WATCHDOG=1", &mut seen);
    expect(&socket, "WATCHDOG=1", &mut seen);
    run("kill", &["-HUP", &child.id().to_string()]);
    expect(&socket, "RELOADING=1", &mut seen);
    expect(&socket, "READY=1", &mut seen);
    run("kill", &["-TERM", &child.id().to_string()]);
    expect(&socket, "STOPPING=1", &mut seen);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "pgrouter did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Not started by systemd (no NOTIFY_SOCKET): nothing is sent, nothing fails.
    let mut plain = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pgrouter without systemd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(next(&socket, Duration::from_millis(300)), None);
    let _ = plain.kill();
    let _ = plain.wait();
}
