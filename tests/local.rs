//! Local hardening (issue 11, L9) through the real binary: `keys.json`
//! permissions, the API's `Host` allow-list, RED text kept out of argv,
//! and paginated `list`/`search`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Org, consortium};

#[cfg(unix)]
#[test]
fn keys_json_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    let org = &mut members[0];
    let keys = org.dir.join("keys.json");
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600,
        "init writes keys.json 0600"
    );
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = org.fails(&["run"]);
        assert!(error.contains("keys.json"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
        assert!(error.contains(&format!("{mode:04o}")), "{error}");
        assert_eq!(
            std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
            mode,
            "the refusal changes nothing"
        );
    }
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    org.start();
    assert_eq!(org.status()["org_id"], "port-authority");
}

/// One raw request with the given `Host` header (`None`: no header at all,
/// which HTTP/1.0 allows).
fn with_host(org: &Org, host: Option<&str>, path: &str, token: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", org.api)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (version, host) = match host {
        Some(host) => ("HTTP/1.1", format!("Host: {host}\r\n")),
        None => ("HTTP/1.0", String::new()),
    };
    let head = format!(
        "GET {path} {version}\r\n{host}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn api_answers_only_to_loopback_host_names() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    let org = &members[0];
    let token = org.token();
    let port = org.api;
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        "127.0.0.1".to_string(),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = with_host(org, Some(&host), "/v1/status", &token);
        assert_eq!(status, 200, "{host}: {body}");
    }
    for host in [
        Some(format!("rebind.attacker.example:{port}")),
        Some("attacker.example".to_string()),
        Some(format!("localhost.attacker.example:{port}")),
        Some(format!("192.0.2.1:{port}")),
        None,
    ] {
        for path in ["/v1/status", "/v1/bulletins", "/v1/hello?nonce=00"] {
            let (status, body) = with_host(org, host.as_deref(), path, &token);
            assert_eq!(status, 421, "{host:?} {path}: {body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert!(
                error["error"].as_str().unwrap().contains("localhost"),
                "{body}"
            );
        }
    }
    // The bearer token is still required under an allowed name.
    let (status, _) = with_host(org, Some("localhost"), "/v1/status", "wrong");
    assert_eq!(status, 401);
}

#[test]
fn summary_file_keeps_red_text_out_of_argv_and_list_pages() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    let org = &members[0];
    let secret = "names of suspects: J. Doe, gate 4\nsecond line";
    let file = root.path().join("summary.txt");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let id = org
        .ok(&[
            "publish",
            "--tlp",
            "red",
            "--to",
            "railroad",
            "--severity",
            "critical",
            "--title",
            "insider",
            "--summary-file",
            file.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let detail: Value = serde_json::from_str(&org.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(detail["body"]["bulletin"]["summary"], secret, "{detail}");

    // --summary and --summary-file together are refused (by clap).
    let out = org.cmd(&[
        "publish",
        "--tlp",
        "green",
        "--severity",
        "low",
        "--title",
        "t",
        "--summary",
        "x",
        "--summary-file",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--summary-file"),
        "{out:?}"
    );
    let error = org.fails(&[
        "publish",
        "--tlp",
        "green",
        "--severity",
        "low",
        "--title",
        "t",
        "--summary-file",
        root.path().join("missing.txt").to_str().unwrap(),
    ]);
    assert!(error.contains("missing.txt"), "{error}");

    // Pagination: five more bulletins, newest first, pages do not overlap.
    for i in 0..5 {
        org.ok(&[
            "publish",
            "--tlp",
            "green",
            "--severity",
            "low",
            "--title",
            &format!("b{i}"),
            "--indicator",
            "ipv4:192.0.2.77",
        ]);
    }
    let ids = |args: &[&str]| -> Vec<String> {
        let items: Vec<Value> = serde_json::from_str(&org.ok(args)).unwrap();
        items
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ids(&["list", "--json"]);
    assert_eq!(all.len(), 6);
    let first = ids(&["list", "--json", "--limit", "4"]);
    let rest = ids(&["list", "--json", "--limit", "4", "--offset", "4"]);
    assert_eq!(first, all[..4]);
    assert_eq!(rest, all[4..]);
    let found = ids(&["search", "ipv4:192.0.2.77", "--json"]);
    assert_eq!(found.len(), 5);
    let page = ids(&[
        "search",
        "ipv4:192.0.2.77",
        "--json",
        "--limit",
        "2",
        "--offset",
        "1",
    ]);
    assert_eq!(page, found[1..3]);
    let out = org.cmd(&["list", "--limit", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--limit"),
        "{out:?}"
    );
    let stderr = org.ok_stderr(&["list", "--limit", "2"]);
    assert!(stderr.contains("--offset 2"), "{stderr}");
}
