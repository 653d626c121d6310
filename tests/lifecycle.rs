//! The long-running commands as an operator uses them: `run` stops cleanly
//! on Ctrl-C (SIGINT) and `demo` convenes a consortium, delivers GREEN to
//! everyone and AMBER to its recipient only, then stops at `--duration`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{DEADLINE, breakwater, consortium, wait_for};

#[test]
fn run_stops_on_ctrl_c() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    let pid = members[0].pid().unwrap();
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = wait_for("the node to exit after SIGINT", || members[0].try_exit());
    assert!(code.success(), "exit status {code}: {}", members[0].log());
    // The store was closed cleanly: the node starts again at once.
    members[0].start();
}

#[test]
fn demo_delivers_by_tlp_and_stops_after_duration() {
    let started = Instant::now();
    let out = Command::new(breakwater())
        .args(["demo", "--orgs", "3", "--duration", "2s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < DEADLINE + Duration::from_secs(20));
    for org in ["port-authority", "shipping-line", "terminal-operator"] {
        assert!(stdout.contains(org), "{stdout}");
    }
    // GREEN reaches all three; AMBER is sealed for the one it was not sent to.
    assert_eq!(stdout.matches("received, readable").count(), 5, "{stdout}");
    assert_eq!(stdout.matches("received, sealed").count(), 1, "{stdout}");
    assert!(
        stdout.contains("127.0.0.1:"),
        "API addresses are printed: {stdout}"
    );
    assert!(stdout.contains("BREAKWATER_DATA_DIR="), "{stdout}");
}
