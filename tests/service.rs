//! `breakwater` as a service and as a command-line tool, end to end on the
//! real binary: the systemd notification protocol of `run` (READY, STATUS,
//! WATCHDOG, STOPPING) over a unix datagram socket the test binds, plain and
//! JSON logs on a pipe, colours and timestamps on a terminal but not under
//! journald, the packaged unit under `systemd-analyze verify`,
//! `init --announce`, the default data directory, completions and man page.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{DEADLINE, Org, breakwater, consortium, consortium_of, run, wait_for};

/// A `breakwater run` started by the test itself; killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notification datagram, or `None` at the deadline.
fn next_message(socket: &UnixDatagram, until: Instant) -> Option<String> {
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match socket.recv(&mut buf) {
            Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    None
}

/// Waits for a datagram that `wanted` accepts; returns it and every one
/// seen before it.
fn wait_message(socket: &UnixDatagram, what: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let until = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let Some(message) = next_message(socket, until) else {
            panic!("timed out waiting for {what}; got {seen:?}");
        };
        let done = wanted(&message);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[test]
fn run_notifies_systemd_ready_status_watchdog_and_stopping() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[1].start();
    let org = &members[0];
    let socket_path = root.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(root.path().join("run.log")).unwrap();
    let mut node = Running(
        Command::new(breakwater())
            .args(["run", "--log-format", "json", "--data-dir"])
            .arg(&org.dir)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // READY is the first notification, and by then the API answers and P2P
    // listens; it carries the first STATUS.
    let seen = wait_message(&socket, "READY=1", |m| m.contains("READY=1"));
    let ready = seen.last().unwrap();
    assert_eq!(seen.len(), 1, "READY must come first: {seen:?}");
    let status = org.status();
    assert!(!status["listen"].as_array().unwrap().is_empty(), "{status}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("roster version 1")),
        "{ready}"
    );

    // STATUS follows the peers: the other member connects.
    let one_peer = "STATUS=1 peers connected, roster version 1";
    if !ready.contains(one_peer) {
        wait_message(&socket, "STATUS with one peer", |m| m.contains(one_peer));
    }
    wait_for("the API to list the peer", || {
        (org.status()["peers"].as_array().map(Vec::len) == Some(1)).then_some(())
    });

    // The watchdog is pinged every WATCHDOG_USEC / 2 while the node answers.
    let started = Instant::now();
    for _ in 0..3 {
        wait_message(&socket, "WATCHDOG=1", |m| m == "WATCHDOG=1");
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // SIGTERM: STOPPING, then a clean exit.
    let term = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait_message(&socket, "STOPPING=1", |m| m.contains("STOPPING=1"));
    let code = wait_for("the node to exit after SIGTERM", || {
        node.0.try_wait().unwrap()
    });
    assert!(code.success(), "exit status {code}");

    // --log-format json: one object per line, no timestamps of our own on
    // a pipe.
    let log = std::fs::read_to_string(root.path().join("run.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "listening"), "{log}");
    for line in &lines {
        assert!(line["level"].is_string(), "{line}");
        assert!(line.get("timestamp").is_none(), "{line}");
    }
}

#[test]
fn logs_on_a_pipe_carry_no_colours_or_timestamps() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority"]);
    members[0].start();
    let log = wait_for("the node to log that it listens", || {
        let log = members[0].log();
        log.contains("listening").then_some(log)
    });
    assert!(!log.contains('\u{1b}'), "ANSI escape in {log:?}");
    for line in log.lines().filter(|l| !l.is_empty()) {
        let first = line.split_whitespace().next().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&first),
            "a line should start with its level, not a timestamp: {line:?}"
        );
    }
}

/// `breakwater run` on a terminal (a pty from util-linux `script`) with
/// `extra` in its environment, until it logs that it listens; returns what
/// it wrote to the terminal.
fn run_on_a_terminal(org: &Org, extra: &[(&str, &str)]) -> String {
    let command = format!(
        "{} run --data-dir {}",
        breakwater().display(),
        org.dir.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qfec", &command, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in extra {
        script.env(name, value);
    }
    let mut child = Running(script.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + DEADLINE;
    let mut text = String::new();
    while !text.contains("listening") {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                text.push_str(line.trim_end_matches('\r'));
                text.push('\n');
            }
            Err(_) => panic!("no `listening` line on the terminal: {text:?}"),
        }
    }
    // script hangs up its session: the node goes, releasing its store.
    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let _ = child.0.wait();
    wait_for("the node on the terminal to stop", || {
        (!org.cmd(&["status"]).status.success()).then_some(())
    });
    text
}

#[test]
fn logs_on_a_terminal_are_coloured_and_timed_unless_under_journald() {
    if Command::new("script").arg("--version").output().is_err() {
        let why = "util-linux `script` is missing: no terminal to run the node on";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let members = consortium(root.path(), &["port-authority"]);
    // Whether a line, colours taken out, starts with an RFC 3339 date.
    let timestamp = |line: &str| {
        let mut plain = String::new();
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (true, 'm') => in_escape = false,
                (false, c) => plain.push(c),
                (true, _) => {}
            }
        }
        let bytes = plain.trim_start().as_bytes();
        bytes.len() > 11
            && bytes[..4].iter().all(u8::is_ascii_digit)
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b'T'
    };

    let terminal = run_on_a_terminal(&members[0], &[]);
    assert!(
        terminal.contains('\u{1b}'),
        "no colour on a terminal: {terminal:?}"
    );
    assert!(
        terminal
            .lines()
            .any(|line| line.contains("listening") && timestamp(line)),
        "no timestamp on a terminal: {terminal:?}"
    );

    let journald = run_on_a_terminal(&members[0], &[("JOURNAL_STREAM", "8:12345")]);
    assert!(
        !journald.contains('\u{1b}'),
        "colour under journald: {journald:?}"
    );
    for line in journald.lines().filter(|line| !line.is_empty()) {
        assert!(!timestamp(line), "a timestamp under journald: {line:?}");
    }
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/breakwater.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/breakwater run",
        "User=breakwater",
        "StateDirectory=breakwater",
        "StateDirectoryMode=0700",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "WatchdogSec=60s",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    // No writable path besides the state directory.
    assert!(!unit.contains("ReadWritePaths"), "{unit}");

    let present = || {
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok()
    };
    if let Err(why) = crate::util::ensure_apt("systemd", present) {
        let why = format!("{why}: the unit was not verified by systemd-analyze");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    // verify wants ExecStart's binary to exist: point it at the one built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("breakwater.service");
    let bin = breakwater().to_str().unwrap();
    std::fs::write(&copy, unit.replace("/usr/bin/breakwater", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // An unknown or misspelt key is only warned about: none may appear.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("breakwater.service"))
        .collect();
    assert!(own.is_empty(), "systemd-analyze verify: {stderr}");

    // The check can fail: a misspelt key is reported.
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/breakwater", bin)
            .replace("ProtectSystem=", "ProtectSistem="),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ProtectSistem"),
        "a misspelt key should be reported"
    );
}

#[test]
fn announce_puts_reachable_addresses_in_the_card() {
    let root = tempfile::tempdir().unwrap();
    // A node listening on 0.0.0.0 that announces its loopback address.
    let announcing = Org::init_with(root.path(), "port-authority", |p2p| {
        vec![
            "--listen".into(),
            format!("/ip4/0.0.0.0/tcp/{p2p}"),
            "--announce".into(),
            format!("/ip4/127.0.0.1/tcp/{p2p}"),
            "--announce".into(),
            "/dns4/node.port-authority.example/tcp/7400".into(),
        ]
    });
    let card: Value = serde_json::from_str(&announcing.ok(&["card"])).unwrap();
    let addrs = card["nodes"][0]["addrs"].as_array().unwrap().clone();
    assert_eq!(addrs.len(), 2, "{card}");
    assert!(
        addrs[0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/")
    );
    assert_eq!(addrs[1], "/dns4/node.port-authority.example/tcp/7400");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(announcing.dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["announce"], Value::Array(addrs.clone()));

    // The other member dials the announced address and connects.
    let other = Org::init(root.path(), "railroad");
    let mut members = consortium_of(root.path(), vec![announcing, other]);
    crate::util::start_all(&mut members);

    // An unspecified address is refused, and nothing is created.
    let dir = root.path().join("bad");
    let out = run(&[
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--org",
        "bad",
        "--name",
        "Bad",
        "--sector",
        "maritime",
        "--announce",
        "/ip4/0.0.0.0/tcp/7400",
    ]);
    let error = crate::util::expect_failure(out, &["init", "--announce"]);
    assert!(
        error.contains("--announce /ip4/0.0.0.0/tcp/7400"),
        "{error}"
    );
    assert!(!dir.exists());

    // The `announce` key in config.json is what the card carries.
    let org = &members[1];
    let config_path = org.dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["announce"] = serde_json::json!(["/dns4/rail.example/tcp/7400"]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let card: Value = serde_json::from_str(&org.ok(&["card"])).unwrap();
    assert_eq!(
        card["nodes"][0]["addrs"],
        serde_json::json!(["/dns4/rail.example/tcp/7400"])
    );
    config["announce"] = serde_json::json!(["/ip4/224.0.0.1/tcp/7400"]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let error = org.fails(&["card"]);
    assert!(error.contains("announce"), "{error}");
}

/// `breakwater ARGS` with only the variables in `env` to find its data
/// directory by.
fn without_data_dir(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = Command::new(breakwater());
    command.args(args).stdin(Stdio::null());
    for name in [
        "BREAKWATER_DATA_DIR",
        "STATE_DIRECTORY",
        "XDG_DATA_HOME",
        "HOME",
    ] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// `breakwater init`, then `card` finding the same directory.
fn init_in(env: &[(&str, &Path)]) {
    let init = [
        "init", "--org", "tugs", "--name", "Tugs", "--sector", "maritime",
    ];
    for args in [&init[..], &["card"]] {
        let out = without_data_dir(args, env);
        assert!(
            out.status.success(),
            "{args:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn data_dir_defaults_to_state_directory_or_xdg_data_home() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let xdg = root.path().join("xdg");
    let state = root.path().join("state");

    init_in(&[("HOME", &home)]);
    assert!(home.join(".local/share/breakwater/keys.json").exists());

    init_in(&[("HOME", &home), ("XDG_DATA_HOME", &xdg)]);
    assert!(xdg.join("breakwater/keys.json").exists());

    init_in(&[
        ("HOME", &home),
        ("XDG_DATA_HOME", &xdg),
        ("STATE_DIRECTORY", &state),
    ]);
    assert!(state.join("keys.json").exists());

    // Nowhere to go: one line saying what to pass.
    let error = crate::util::expect_failure(without_data_dir(&["card"], &[]), &["card"]);
    assert!(error.contains("--data-dir"), "{error}");
}

#[test]
fn completions_and_man_page() {
    let subcommands = ["init", "run", "publish", "doctor", "completions", "man"];
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in subcommands {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // The bash script parses.
    let script = run(&["completions", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakwater.bash");
    std::fs::write(&path, script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(check.success(), "bash -n rejects the completion script");
    // An unknown shell is refused.
    assert!(!run(&["completions", "cmd.exe"]).status.success());

    let out = run(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH breakwater 1"),
        "{page}"
    );
    assert!(page.contains(".TH breakwater 1"), "{page}");
    for sub in subcommands {
        assert!(page.contains(sub), "the man page lacks {sub}");
    }
}
