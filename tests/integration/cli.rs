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
