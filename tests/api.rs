//! The local HTTP API over real HTTP/1.1 on loopback: bearer-token
//! authentication, JSON errors with the right status for malformed or
//! invalid requests (which change nothing), and the event stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Org, consortium, wait_for};

/// Sends one request with `Connection: close`; returns status and body.
fn request(
    org: &Org,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", org.api)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    // The server may answer (413) and close before reading a huge body.
    let _ = stream.write_all(head.as_bytes());
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

fn error_of(body: &str) -> String {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_string()
}

#[test]
fn authentication_and_malformed_requests() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    let org = &members[0];
    let token = org.token();

    // 401 without a token, with a wrong one, or with another scheme.
    for path in [
        "/v1/status",
        "/v1/bulletins",
        "/v1/roster",
        "/v1/events",
        "/v1/nothing",
    ] {
        let (status, body) = request(org, "GET", path, None, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(error_of(&body).contains("token"));
        let (status, body) = request(org, "GET", path, Some("wrong"), None);
        assert_eq!(status, 401, "{path}: {body}");
        error_of(&body);
    }
    let (status, _) = request(
        org,
        "POST",
        "/v1/publish",
        Some(&"0".repeat(64)),
        Some(r#"{"tlp":"green","severity":"low","title":"t"}"#),
    );
    assert_eq!(status, 401);

    let (status, body) = request(org, "GET", "/v1/status", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    let status_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["org_id"], "port-authority");

    // Malformed and invalid bodies: 4xx with a JSON error naming the problem.
    let bad: &[(&str, &str, &str)] = &[
        ("/v1/publish", "{not json", "JSON"),
        ("/v1/publish", r#"{"tlp":"green"}"#, "severity"),
        (
            "/v1/publish",
            r#"{"tlp":"green","severity":"low","title":"t","colour":"red"}"#,
            "colour",
        ),
        (
            "/v1/publish",
            r#"{"tlp":"mauve","severity":"low","title":"t"}"#,
            "mauve",
        ),
        (
            "/v1/publish",
            r#"{"tlp":"green","severity":"low","title":"t","indicators":["ipv4:999.1.1.1"]}"#,
            "999.1.1.1",
        ),
        (
            "/v1/publish",
            r#"{"tlp":"amber","to":["nobody"],"severity":"low","title":"t"}"#,
            "nobody",
        ),
        (
            "/v1/publish",
            r#"{"tlp":"green","severity":"low","title":"t","stix":"nope"}"#,
            "JSON",
        ),
        ("/v1/publish", r#"[1,2,3]"#, ""),
        ("/v1/roster", r#"{"roster": 5}"#, ""),
        ("/v1/bulletins/00/retract", r#"{}"#, "reason"),
        ("/v1/bulletins/00/sightings", r#"{"indicator":"bogus"}"#, ""),
    ];
    for (path, body, named) in bad {
        let (status, answer) = request(org, "POST", path, Some(&token), Some(body));
        assert!(
            (400..500).contains(&status),
            "{path} {body}: {status} {answer}"
        );
        let error = error_of(&answer);
        assert!(
            error.contains(named),
            "{path} {body}: {error} should name {named}"
        );
    }
    let (status, body) = request(
        org,
        "GET",
        "/v1/bulletins?severity=extreme",
        Some(&token),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("extreme"));
    let (status, body) = request(
        org,
        "GET",
        "/v1/search?indicator=ipv4:999.1.1.1",
        Some(&token),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(org, "GET", "/v1/bulletins/zz", Some(&token), None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(
        org,
        "GET",
        &format!("/v1/bulletins/{}", "ab".repeat(32)),
        Some(&token),
        None,
    );
    assert_eq!(status, 404, "{body}");
    error_of(&body);
    let (status, body) = request(org, "GET", "/v1/nothing", Some(&token), None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = request(org, "DELETE", "/v1/status", Some(&token), None);
    assert_eq!(status, 405, "{body}");
    error_of(&body);

    // Oversized bodies are refused before parsing.
    let huge = format!(
        r#"{{"tlp":"green","severity":"low","title":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let (status, _) = request(org, "POST", "/v1/publish", Some(&token), Some(&huge));
    assert_eq!(status, 413);

    // None of it reached the node.
    let (_, body) = request(org, "GET", "/v1/bulletins?all=true", Some(&token), None);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&body).unwrap().len(),
        0,
        "{body}"
    );

    // A good request works.
    let (status, body) = request(
        org,
        "POST",
        "/v1/publish",
        Some(&token),
        Some(
            r#"{"tlp":"green","severity":"low","title":"API test","indicators":["domain:example.org"]}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = request(
        org,
        "GET",
        "/v1/search?indicator=domain%3Aexample.org",
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&id));
}

#[test]
fn event_stream_delivers_new_bulletins() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    let org = &members[0];
    let token = org.token();

    let mut stream = TcpStream::connect(("127.0.0.1", org.api)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(status_line.contains(" 200 "), "{status_line}");

    let id = org
        .ok(&[
            "publish",
            "--tlp",
            "clear",
            "--severity",
            "low",
            "--title",
            "streamed",
        ])
        .trim()
        .to_string();
    let event = wait_for("the stored event", || {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let data = line.trim().strip_prefix("data:")?.trim().to_string();
        let event: Value = serde_json::from_str(&data).ok()?;
        (event["event"] == "stored" && event["id"] == id.as_str()).then_some(event)
    });
    assert_eq!(event["title"], "streamed");
}
