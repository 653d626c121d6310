//! Security-review hardening (2026-11), end to end: the API's connection
//! cap and timeouts (M5), the CLI never handing its token to a port squatter
//! (M6), the threshold default and duplicate admins of `consortium create`
//! (H2, L8), a node that starts after an undecodable newest roster (H3), and
//! a node on a full disk that refuses writes and keeps serving reads (H4).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Org, consortium};

fn roster_threshold(path: &std::path::Path) -> u64 {
    let roster: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    roster["roster"]["threshold"].as_u64().unwrap()
}

fn cards(root: &std::path::Path, orgs: &[&Org]) -> Vec<String> {
    orgs.iter()
        .map(|org| {
            let card = root.join(format!("{}.card.json", org.org));
            std::fs::write(&card, org.ok(&["card"])).unwrap();
            card.to_str().unwrap().to_string()
        })
        .collect()
}

/// H2: with three admins and no `--threshold`, an update needs two of them.
#[test]
fn h2_create_defaults_to_a_majority_of_the_admins() {
    let root = tempfile::tempdir().unwrap();
    let orgs: Vec<Org> = ["ha", "hb", "hc"]
        .iter()
        .map(|o| Org::init(root.path(), o))
        .collect();
    let cards = cards(root.path(), &orgs.iter().collect::<Vec<_>>());
    let out = root.path().join("roster.json");
    let mut args = vec!["consortium", "create", "--name", "Bay", "--out"];
    args.push(out.to_str().unwrap());
    for card in &cards {
        args.extend(["--card", card.as_str()]);
    }
    args.extend(["--admin", "ha", "--admin", "hb", "--admin", "hc"]);
    orgs[0].ok(&args);
    assert_eq!(roster_threshold(&out), 2, "3 admins: majority is 2");

    // Two admins: both must sign.
    let out2 = root.path().join("roster2.json");
    let mut args = vec!["consortium", "create", "--name", "Bay", "--out"];
    args.push(out2.to_str().unwrap());
    for card in &cards {
        args.extend(["--card", card.as_str()]);
    }
    args.extend(["--admin", "ha", "--admin", "hb"]);
    orgs[0].ok(&args);
    assert_eq!(roster_threshold(&out2), 2, "2 admins: majority is 2");
}

/// L8: an admin named twice is an error, not silently one admin.
#[test]
fn l8_create_refuses_a_duplicate_admin() {
    let root = tempfile::tempdir().unwrap();
    let orgs: Vec<Org> = ["da", "db"]
        .iter()
        .map(|o| Org::init(root.path(), o))
        .collect();
    let cards = cards(root.path(), &orgs.iter().collect::<Vec<_>>());
    let out = root.path().join("roster.json");
    let mut args = vec!["consortium", "create", "--name", "Bay", "--out"];
    args.push(out.to_str().unwrap());
    for card in &cards {
        args.extend(["--card", card.as_str()]);
    }
    args.extend(["--admin", "da", "--admin", "da", "--threshold", "1"]);
    let error = orgs[0].fails(&args);
    assert!(error.contains("more than once"), "{error}");
    assert!(!out.exists(), "a roster was written");
}

/// A listener on the API port that answers every request with a
/// plausible JSON 200 and records every byte it receives.
fn squatter(port: u16) -> Arc<Mutex<Vec<u8>>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let record = record.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    let body = format!("{{\"proof\":\"{}\",\"version\":1}}", "ab".repeat(32));
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    seen
}

/// M6: while the node is down, whatever squats its API port never receives
/// the token or a bulletin, and the CLI says so in one line.
#[test]
fn m6_cli_never_sends_the_token_to_a_squatter() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["sq-a", "sq-b"]);
    // Prove the real node passes the check first.
    members[0].start();
    members[0].ok(&["status"]);
    members[0].kill9();
    let token = members[0].token();
    let seen = squatter(members[0].api);
    let error = members[0].fails(&["status"]);
    assert!(
        error.contains("did not prove"),
        "unexpected error for a squatter: {error}"
    );
    members[0].fails(&[
        "publish",
        "--tlp",
        "red",
        "--title",
        "RED: insider at gate 4",
        "--summary",
        "names of suspects",
        "--severity",
        "high",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(!seen.is_empty(), "the CLI did not connect to the squatter");
    assert!(!seen.contains(&token), "the squatter received the token");
    assert!(
        !seen.contains("insider"),
        "the squatter received the bulletin"
    );
}

fn sigterm(org: &Org) {
    let pid = org.pid().unwrap().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
}

fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => true, // an error answer (408) then close also frees it
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// M5: hundreds of idle connections and a slowloris neither starve the API
/// for long nor keep the node from shutting down promptly.
#[test]
fn m5_idle_connections_and_slowloris_are_bounded() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["m5-a", "m5-b"]);
    members[0].start();
    let api = members[0].api;

    // A silent connection is closed by the node, not held forever.
    let mut silent = TcpStream::connect(("127.0.0.1", api)).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "an idle connection was still open after 10 s"
    );

    // 200 idle connections, more than the cap: the API still answers.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", api)).ok())
        .collect();
    assert!(idle.len() > 100);
    let started = Instant::now();
    members[0].ok(&["status"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "status took {:?} behind idle connections",
        started.elapsed()
    );
    drop(idle);

    // A partial request head, an open event stream, then SIGTERM: the node
    // exits within a bound.
    let mut partial = TcpStream::connect(("127.0.0.1", api)).unwrap();
    partial
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut watch = TcpStream::connect(("127.0.0.1", api)).unwrap();
    let token = members[0].token();
    watch
        .write_all(
            format!(
                "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let idle: Vec<TcpStream> = (0..50)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", api)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&members[0]);
    let started = Instant::now();
    loop {
        if members[0].try_exit().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node was still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((partial, watch, idle));
}

/// H3: a stored newest roster the decoder refuses (as a node could store
/// before rosters were size-checked) no longer bricks the node: it starts on
/// the last version that decodes and says why.
#[test]
fn h3_node_starts_on_the_last_roster_that_decodes() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["h3-a", "h3-b"]);
    {
        let data_dir = breakwater_node::DataDir::new(&members[0].dir);
        let store = breakwater_node::store::Store::open(&data_dir.store_path()).unwrap();
        // Format byte 1 and 1.2 MB: over MAX_ROSTER_BYTES, like H3's roster.
        let mut junk = vec![1u8];
        junk.resize(1_250_000, 0);
        store.put_roster(2, &junk).unwrap();
    }
    members[0].start();
    assert_eq!(members[0].status()["roster_version"], 1);
    assert!(
        members[0].log().contains("cannot be decoded"),
        "no warning in the log: {}",
        members[0].log()
    );
}

/// H2 end to end: the admin signs two different versions 2 (`rekey` twice);
/// each node joins one. `status --json` shows `roster_fork` on both and
/// `status` prints it; `consortium resolve-fork` refuses while the node
/// runs, then re-bases the losing node onto the kept version, which keeps
/// its envelopes.
#[test]
fn h2_roster_fork_in_status_and_resolve_fork() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["fa", "fb"]);
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let (v1, v2a, v2b) = (path("roster.json"), path("v2a.json"), path("v2b.json"));
    members[0].ok(&["consortium", "rekey", "--roster", &v1, "--out", &v2a]);
    members[0].ok(&["consortium", "rekey", "--roster", &v1, "--out", &v2b]);
    members[0].ok(&["join", &v2a]);
    members[1].ok(&["join", &v2b]);
    members[1].start();
    let id = members[1]
        .ok(&[
            "publish",
            "--tlp",
            "green",
            "--severity",
            "low",
            "--title",
            "b-side bulletin",
        ])
        .trim()
        .to_string();
    members[0].start();
    for member in &members {
        let fork = crate::util::wait_for(&format!("{} reports the fork", member.org), || {
            let fork = member.status()["roster_fork"].clone();
            (!fork.is_null()).then_some(fork)
        });
        assert_eq!(fork["version"], 2, "{fork}");
        assert_ne!(fork["ours"], fork["theirs"]);
        assert!(fork["detected_at"].as_u64().unwrap() > 0);
        let shown = member.ok(&["status"]);
        assert!(shown.starts_with("ROSTER FORK"), "{shown}");
        assert!(member.log().contains("ROSTER FORK"));
    }
    let running = members[1].fails(&["consortium", "resolve-fork", "--keep", &v2a]);
    assert!(running.contains("stop it first"), "{running}");

    // The admins keep branch a: both nodes resolve; b re-bases.
    for member in members.iter_mut() {
        member.kill9();
    }
    let said = members[1].ok_stderr(&["consortium", "resolve-fork", "--keep", &v2a]);
    assert!(said.contains("re-based"), "{said}");
    let said = members[0].ok_stderr(&["consortium", "resolve-fork", "--keep", &v2a]);
    assert!(said.contains("already holds"), "{said}");
    // Nothing left to resolve.
    members[0].fails(&["consortium", "resolve-fork", "--keep", &v2a]);
    for member in members.iter_mut() {
        member.start();
    }
    for member in &members {
        let status = member.status();
        assert!(status["roster_fork"].is_null(), "{status}");
        assert_eq!(status["roster_version"], 2);
    }
    let item = members[1].item(&id).expect("b keeps its bulletin");
    assert_eq!(item["readable"], true);
    // Updates resume: a successor of v2a reaches b, so b holds v2a.
    let v3 = path("v3.json");
    members[0].ok(&["consortium", "rekey", "--roster", &v2a, "--out", &v3]);
    members[0].ok(&["join", &v3]);
    crate::util::wait_for("b applies version 3", || {
        (members[1].status()["roster_version"] == 3).then_some(())
    });
}

/// Mounts a tmpfs of `mb` MiB at `at`; `Err` says why not (not root, no
/// `mount`), which fails the test under `CI` and skips it elsewhere.
fn mount_tmpfs(at: &std::path::Path, mb: u64) -> Result<(), String> {
    std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mb}m"),
            "breakwater-test",
        ])
        .arg(at)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount -t tmpfs: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` to the last byte with a filler file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

fn publish(org: &Org, title: &str) -> std::process::Output {
    org.cmd(&[
        "publish",
        "--tlp",
        "green",
        "--title",
        title,
        "--summary",
        "disk test",
        "--severity",
        "low",
    ])
}

/// H4: on a full disk a publish fails with one line and writes nothing, and
/// the node keeps answering `list`, `show` and `status` the whole time
/// (sled 0.34 would fail reads too once a flush had hit the full disk);
/// with space freed, writes work again and nothing acknowledged is lost.
#[test]
fn h4_a_full_disk_refuses_writes_in_one_line_and_keeps_serving_reads() {
    let root = tempfile::tempdir().unwrap();
    let disk = root.path().join("disk");
    if let Err(why) = mount_tmpfs(&disk, 96) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, so the full-disk test must run, but it cannot: {why}"
        );
        eprintln!("skipping the full-disk test: {why}");
        return;
    }
    let _unmount = Unmount(disk.clone());
    let org = Org::init(&disk, "full");
    let mut members = crate::util::consortium_of(root.path(), vec![org]);
    let org = &mut members[0];
    org.start();
    let kept = publish(org, "before the disk filled");
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    let id = org.list_all()[0]["id"].as_str().unwrap().to_string();

    let filler = fill(&disk);
    let error = crate::util::expect_failure(publish(org, "on a full disk"), &["publish"]);
    assert!(error.contains("disk is full"), "{error}");
    // Reads keep working, also after sled's background flush interval.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let items = org.list_all();
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(org.ok(&["show", &id]).contains("before the disk filled"));
        assert_eq!(org.status()["envelopes"], 1);
        std::thread::sleep(Duration::from_millis(500));
    }
    let error = crate::util::expect_failure(publish(org, "still full"), &["publish"]);
    assert!(error.contains("disk is full"), "{error}");

    // Space freed: writes work again; a kill -9 loses nothing acknowledged.
    std::fs::remove_file(filler).unwrap();
    let after = publish(org, "after space was freed");
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    org.kill9();
    org.start();
    let titles: Vec<String> = org
        .list_all()
        .iter()
        .map(|item| item["title"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(
        titles.iter().any(|t| t == "before the disk filled"),
        "{titles:?}"
    );
    assert!(
        titles.iter().any(|t| t == "after space was freed"),
        "{titles:?}"
    );
}
