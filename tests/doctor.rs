//! `breakwater doctor` on the real binary: a healthy running node passes;
//! a world-readable keys.json, a broken config.json, an API or P2P port
//! taken by another program, and a peer whose clock runs two minutes ahead
//! (libfaketime) each fail with the fix on the next line.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::util::{Org, breakwater, consortium, expect_failure, start_all, wait_for};

/// `doctor --data-dir DIR`: its stdout, and whether it succeeded.
fn doctor(org: &Org) -> (bool, String, Output) {
    let out = org.cmd(&["doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout, out)
}

/// The fix printed under the first FAIL line that contains `what`.
fn fix_for(stdout: &str, what: &str) -> String {
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("FAIL") && line.contains(what) {
            let fix = lines.next().unwrap_or_default().trim();
            assert!(fix.starts_with("fix: "), "no fix after {line:?}:\n{stdout}");
            return fix.to_string();
        }
    }
    panic!("no FAIL line with {what:?}:\n{stdout}");
}

#[test]
fn doctor_passes_a_healthy_running_node() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    start_all(&mut members);
    wait_for("the clock offset against the peer", || {
        let peers: Value = serde_json::from_str(&members[0].ok(&["peers", "--json"])).unwrap();
        peers[0]["clock_offset_ms"].as_i64()
    });
    let (ok, stdout, out) = doctor(&members[0]);
    assert!(ok, "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("is this node's (it runs)"), "{stdout}");
    assert!(stdout.contains("roster version 1"), "{stdout}");
    assert!(
        stdout.contains("railroad") && stdout.contains("reachable: connected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("clocks agree with 1 connected peer(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // Stopped, with its peer still up: ports free, the peer dialled.
    members[0].kill9();
    let (ok, stdout, _) = doctor(&members[0]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains(&format!(
        "the API address 127.0.0.1:{} is free",
        members[0].api
    )));
    assert!(stdout.contains("reachable: TCP connect to"), "{stdout}");
}

#[test]
fn doctor_finds_open_keys_broken_config_and_taken_ports() {
    let root = tempfile::tempdir().unwrap();
    let members = consortium(root.path(), &["port-authority", "railroad"]);
    let org = &members[0];

    // A world-readable keys.json.
    let keys = org.dir.join("keys.json");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, stdout, out) = doctor(org);
    assert!(!ok, "{stdout}");
    expect_failure(out, &["doctor"]);
    assert_eq!(
        fix_for(&stdout, "keys.json"),
        format!("fix: chmod 600 {}", keys.display())
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A data directory others may read.
    std::fs::set_permissions(&org.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, stdout, _) = doctor(org);
    assert!(!ok, "{stdout}");
    assert_eq!(
        fix_for(&stdout, "mode is 0755"),
        format!("fix: chmod 700 {}", org.dir.display())
    );
    std::fs::set_permissions(&org.dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // No node at all.
    let empty = root.path().join("empty");
    let out = crate::util::run(&["doctor", "--data-dir", empty.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    expect_failure(out, &["doctor", "empty"]);
    assert!(
        fix_for(&stdout, "no node in").contains("breakwater init"),
        "{stdout}"
    );

    // An API port taken by another program (the node is not running).
    let squatter = std::net::TcpListener::bind(("127.0.0.1", org.api)).unwrap();
    let (ok, stdout, _) = doctor(org);
    assert!(!ok, "{stdout}");
    let fix = fix_for(&stdout, &format!("the API address 127.0.0.1:{}", org.api));
    assert!(fix.contains("`api`"), "{fix}");
    drop(squatter);

    // A P2P port taken by another program.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(org.dir.join("config.json")).unwrap())
            .unwrap();
    let listen = config["listen"][0].as_str().unwrap().to_string();
    let port: u16 = listen.rsplit('/').next().unwrap().parse().unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (ok, stdout, _) = doctor(org);
    assert!(!ok, "{stdout}");
    let fix = fix_for(&stdout, &format!("the P2P address {listen}"));
    assert!(fix.contains("`listen`"), "{fix}");
    drop(squatter);

    // A broken config.json.
    std::fs::write(org.dir.join("config.json"), "{ not json").unwrap();
    let (ok, stdout, out) = doctor(org);
    assert!(!ok, "{stdout}");
    expect_failure(out, &["doctor"]);
    let fix = fix_for(&stdout, "config.json");
    assert!(fix.contains("edit") && fix.contains("config.json"), "{fix}");
}

/// A `breakwater run` under libfaketime; killed on drop.
struct Skewed(Child);

impl Drop for Skewed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn doctor_reports_a_peer_clock_two_minutes_ahead() {
    use breakwater_simulations::chaos::cluster::faketime_lib;
    let installed = crate::util::ensure_apt("faketime", || faketime_lib().is_some());
    let Some(lib) = installed.ok().and_then(|()| faketime_lib()) else {
        let why = "libfaketime is not installed and could not be (apt-get install faketime): the clock check was not tested";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    // The railroad's wall clock runs 120 s ahead (timers keep the real
    // monotonic clock).
    let _railroad = Skewed(
        Command::new(breakwater())
            .args(["run", "--data-dir"])
            .arg(&members[1].dir)
            .env("LD_PRELOAD", lib)
            .env("FAKETIME", "+120")
            .env("DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let offset = wait_for("the clock offset against the railroad", || {
        let peers: Value = serde_json::from_str(&members[0].ok(&["peers", "--json"])).unwrap();
        peers[0]["clock_offset_ms"].as_i64()
    });
    assert!((115_000..125_000).contains(&offset), "offset {offset} ms");
    let (ok, stdout, out) = doctor(&members[0]);
    assert!(!ok, "{stdout}");
    expect_failure(out, &["doctor"]);
    let fix = fix_for(&stdout, "railroad's clock is 1");
    assert!(fix.contains("NTP"), "{fix}");
    assert!(stdout.contains("s ahead of this node's"), "{stdout}");
}
