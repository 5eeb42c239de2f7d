//! pgbench through pgrouter: initialisation, then 8 clients for 10 seconds in each query mode with
//! zero failed transactions.

use crate::harness::shared_router;
use std::process::Command;

fn pgbench(url: &str, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(args)
        .arg(url)
        .output()
        .expect("pgbench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[test]
fn pgbench_all_query_modes_without_failures() {
    let Some(router) = shared_router() else {
        return;
    };
    let url = router.url("app", "app");
    pgbench(&url, &["-i", "-s", "2", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(&url, &["-M", mode, "-c", "8", "-j", "2", "-T", "10"]);
        let processed = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no transaction count in:\n{out}"));
        assert!(processed > 0, "{out}");
        assert!(
            out.contains("number of failed transactions: 0 (0.000%)"),
            "mode {mode}:\n{out}"
        );
        eprintln!(
            "pgbench -M {mode} -c 8 -T 10 through pgrouter: {processed} transactions, 0 failed"
        );
    }
}
