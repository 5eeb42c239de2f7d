//! The command line as packagers use it: `--version` names the commit and build date, and the
//! shell completions and man page are generated from the command line definition.

use std::process::Command;

fn pgrouter(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .args(args)
        .output()
        .expect("pgrouter runs");
    assert!(
        out.status.success(),
        "pgrouter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn version_names_the_commit_and_build_date() {
    let version = pgrouter(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = head.as_deref().unwrap_or("unknown");
    let prefix = format!(
        "pgrouter {} (commit {commit}, built ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        version.starts_with(&prefix),
        "{version:?} should start with {prefix:?}"
    );
    let date = version[prefix.len()..].trim_end().trim_end_matches(')');
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "a YYYY-MM-DD date: {version:?}"
    );
}

#[test]
fn completions_and_man_page_cover_every_subcommand() {
    let subcommands = ["run", "check", "explain", "health", "completions", "man"];
    for shell in ["bash", "zsh", "fish"] {
        let script = pgrouter(&["completions", shell]);
        for sub in subcommands {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // The bash script is valid bash.
    let dir = std::env::temp_dir().join(format!("pgrouter-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgrouter.bash");
    std::fs::write(&file, pgrouter(&["completions", "bash"])).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(checked.success(), "bash -n refuses the completion script");
    let man = pgrouter(&["man"]);
    assert!(man.contains(".TH pgrouter 1"), "{man}");
    for sub in subcommands {
        assert!(man.contains(sub), "the man page lacks {sub}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `--log-level` takes `RUST_LOG`'s whole syntax: plain `target=level` directives are served by
/// a static filter (cheaper on every poll of a session), span directives by the dynamic one.
#[test]
fn a_log_filter_naming_a_span_shows_only_that_spans_events() {
    let dir = std::env::temp_dir().join(format!("pgrouter-log-filter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = crate::harness::free_port_block(1);
    let config = dir.join("pgrouter.yaml");
    // No server is needed: the client's start-up packet is refused before any server login.
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nnodes:\n  - {{name: pg0, host: 127.0.0.1, port: 9}}\n\
             users:\n  - {{name: app, password: app}}\n"
        ),
    )
    .unwrap();
    let log = dir.join("pgrouter.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgrouter"))
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg("[session]=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("pgrouter starts");
    let connected = crate::harness::eventually(std::time::Duration::from_secs(30), || {
        let Ok(mut client) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        // A start-up packet for protocol 0.0: refused with 0A000 inside the session's span.
        use std::io::{Read, Write};
        client.write_all(&[0, 0, 0, 8, 0, 0, 0, 0]).unwrap();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        answer.first() == Some(&b'E')
    });
    let logged = connected
        && crate::harness::eventually(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("session closed with error"))
        });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(connected, "pgrouter did not answer:\n{text}");
    assert!(logged, "the session's event is missing:\n{text}");
    assert!(
        text.lines()
            .all(|line| line.contains("session{") || line.trim().is_empty()),
        "events outside the session span are filtered out:\n{text}"
    );
}
