//! What an operator runs beside the node, on the real binary over real
//! HTTP: `/metrics` read by a real OpenMetrics parser (Python's
//! `prometheus_client`), on the API behind the token and on the token-less
//! `metrics.listen`; and signed webhooks delivered at least once to a local
//! receiver that checks every signature, across a `kill -9` of the node and
//! a receiver that is down for a minute.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::util::{Org, consortium, free_port, start_all, wait_for};

/// `GET path` on 127.0.0.1:`port`, with a bearer token if given; status and body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked answer: {head}"
    );
    (status, body.to_string())
}

/// The venv of `scripts/prom-venv.sh`, made if missing.
fn prom_python() -> Option<PathBuf> {
    crate::util::venv_python(
        "PROM_VENV",
        "prom-venv",
        "prometheus_client.openmetrics.parser",
    )
}

/// Parses `text` with prometheus_client's OpenMetrics parser (strict: it
/// raises on anything out of the format); every sample as
/// `name{labels}` → value, and every family as name → type.
fn parse_openmetrics(
    python: &Path,
    text: &str,
) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families, samples = {}, {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"families": families, "samples": samples}))
"#;
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = parsed["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    let families = parsed["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (samples, families)
}

fn publish(org: &Org, tlp: &str, title: &str, to: Option<&str>) -> String {
    let mut args = vec![
        "publish",
        "--tlp",
        tlp,
        "--severity",
        "high",
        "--title",
        title,
        "--indicator",
        "ipv4:203.0.113.7",
    ];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    org.ok(&args).trim().to_string()
}

fn edit_config(org: &Org, edit: impl FnOnce(&mut Value)) {
    let path = org.dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

#[test]
fn metrics_are_valid_openmetrics_on_the_api_and_on_metrics_listen() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    // A non-loopback metrics.listen is refused in one line; nothing starts.
    edit_config(&members[0], |c| {
        c["metrics"] = serde_json::json!({"listen": "0.0.0.0:9475"})
    });
    let error = members[0].fails(&["run"]);
    assert!(error.contains("metrics.listen"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    let metrics_port = free_port();
    edit_config(&members[0], |c| {
        c["metrics"] = serde_json::json!({"listen": format!("127.0.0.1:{metrics_port}")})
    });
    start_all(&mut members);

    const N: usize = 4;
    let ids: Vec<String> = (0..N)
        .map(|i| publish(&members[0], "green", &format!("metrics bulletin {i}"), None))
        .collect();
    wait_for("railroad to store every bulletin", || {
        ids.iter()
            .all(|id| members[1].item(id).is_some())
            .then_some(())
    });

    let org = &members[0];
    // Behind the token on the API listener.
    let (status, body) = get(org.api, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    let (status, api_text) = get(org.api, "/metrics", Some(&org.token()));
    assert_eq!(status, 200, "{api_text}");
    // Without one on metrics.listen, which serves nothing else.
    let (status, text) = get(metrics_port, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(get(metrics_port, "/v1/status", None).0, 404);
    assert!(text.ends_with("# EOF\n"), "{text}");

    let Some(python) = prom_python() else { return };
    let (samples, families) = parse_openmetrics(&python, &text);
    parse_openmetrics(&python, &api_text);
    for (family, kind) in [
        ("breakwater_envelopes_stored", "counter"),
        ("breakwater_envelopes_ignored", "counter"),
        ("breakwater_envelopes_rejected", "counter"),
        ("breakwater_publish_flush_seconds", "histogram"),
        ("breakwater_sync_rounds", "counter"),
        ("breakwater_sync_bytes", "counter"),
        ("breakwater_peers_connected", "gauge"),
        ("breakwater_queue_depth", "gauge"),
        ("breakwater_store_bytes", "gauge"),
        ("breakwater_pending_green", "gauge"),
        ("breakwater_evidence", "gauge"),
        ("breakwater_roster_version", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "family {family} missing or mistyped in:\n{text}"
        );
    }
    // libp2p's gossipsub series come out of the same registry.
    assert!(
        families.keys().any(|f| f.contains("gossipsub")),
        "no gossipsub family in:\n{text}"
    );
    let sample = |name: &str| samples.get(name).copied();
    assert!(
        sample("breakwater_envelopes_stored_total{source=\"local\"}").unwrap_or(0.0) >= N as f64,
        "{text}"
    );
    assert!(
        sample("breakwater_publish_flush_seconds_count{}").unwrap_or(0.0) >= N as f64,
        "{text}"
    );
    assert_eq!(
        sample("breakwater_peers_connected{org=\"railroad\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample("breakwater_sync_rounds_total{}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample("breakwater_store_bytes{}").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    let status = org.status();
    assert_eq!(
        sample("breakwater_roster_version{}"),
        status["roster_version"].as_f64(),
        "{text}"
    );
    assert_eq!(sample("breakwater_evidence{}"), Some(0.0), "{text}");
    assert_eq!(
        sample("breakwater_envelopes_rejected_total{reason=\"bad_signature\"}"),
        Some(0.0),
        "{text}"
    );

    // The receiving side counts what gossip and sync brought.
    let (status, text) = get(members[1].api, "/metrics", Some(&members[1].token()));
    assert_eq!(status, 200, "{text}");
    let (samples, _) = parse_openmetrics(&python, &text);
    let from_peers: f64 = ["gossip", "sync"]
        .iter()
        .filter_map(|s| {
            samples.get(&format!(
                "breakwater_envelopes_stored_total{{source=\"{s}\"}}"
            ))
        })
        .sum();
    assert!(from_peers >= N as f64, "{text}");
}

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    delivery: String,
    event: String,
    authorization: Option<String>,
    body: Value,
}

/// A webhook receiver on 127.0.0.1: checks each request's
/// `X-Breakwater-Signature` against the secret, records the good ones and
/// counts the bad; it can be stopped (connections refused) and restarted
/// on the same port.
struct Receiver {
    port: u16,
    secret: Vec<u8>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    bad_signatures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn new(port: u16, secret: &[u8]) -> Receiver {
        let mut receiver = Receiver {
            port,
            secret: secret.to_vec(),
            deliveries: Arc::default(),
            bad_signatures: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        receiver.start();
        receiver
    }

    fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (stop, deliveries, bad, secret) = (
            self.stop.clone(),
            self.deliveries.clone(),
            self.bad_signatures.clone(),
            self.secret.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => handle(stream, &secret, &deliveries, &bad),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }

    /// Closes the listening socket: deliveries are refused until `start`.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(
    mut stream: TcpStream,
    secret: &[u8],
    deliveries: &Mutex<Vec<Delivery>>,
    bad: &Mutex<Vec<String>>,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let body = &bytes[head_end..head_end + length];
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let presented = headers
        .get("x-breakwater-signature")
        .cloned()
        .unwrap_or_default();
    if presented != expected {
        bad.lock().unwrap().push(presented);
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    deliveries.lock().unwrap().push(Delivery {
        path,
        delivery: headers
            .get("x-breakwater-delivery")
            .cloned()
            .unwrap_or_default(),
        event: headers
            .get("x-breakwater-event")
            .cloned()
            .unwrap_or_default(),
        authorization: headers.get("authorization").cloned(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// The envelope id a delivery reports (`id` generic, `sourceRef` TheHive).
fn envelope_of(delivery: &Delivery) -> String {
    delivery.body["id"]
        .as_str()
        .or_else(|| delivery.body["sourceRef"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn webhooks_deliver_signed_at_least_once_across_kill_9_and_a_receiver_down_for_a_minute() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    let secret = b"0123456789abcdef-webhook-secret";
    let port = free_port();
    let mut receiver = Receiver::new(port, secret);
    let org = &mut members[0];
    std::fs::write(org.dir.join("webhook-secret"), secret).unwrap();

    // Bad webhook configurations are refused at start, in one line.
    for (bad, expect) in [
        (
            serde_json::json!({"url": format!("http://127.0.0.1:{port}/"), "secret_file": "webhook-secret", "format": "splunk"}),
            "splunk",
        ),
        (
            serde_json::json!({"url": format!("http://127.0.0.1:{port}/"), "secret_file": "missing-secret"}),
            "missing-secret",
        ),
        (
            serde_json::json!({"url": "ftp://127.0.0.1/", "secret_file": "webhook-secret"}),
            "http://",
        ),
        (
            serde_json::json!({"url": format!("http://127.0.0.1:{port}/"), "secret_file": "webhook-secret", "max_tlp": "red"}),
            "allow_red",
        ),
    ] {
        edit_config(org, |c| c["webhooks"] = serde_json::json!([bad]));
        let error = org.fails(&["run"]);
        assert!(error.contains(expect), "{error}");
    }

    edit_config(org, |c| {
        c["webhook_max_backoff"] = 2000.into();
        c["webhooks"] = serde_json::json!([
            {"url": format!("http://127.0.0.1:{port}/hooks/breakwater"), "secret_file": "webhook-secret"},
            {"url": format!("http://127.0.0.1:{port}/api/v1/alert"), "secret_file": "webhook-secret",
             "format": "thehive", "min_severity": "medium"},
        ]);
    });
    start_all(&mut members);
    let (head, tail) = members.split_at_mut(1);
    let (org, railroad) = (&mut head[0], &tail[0]);

    let mut expected = Vec::new();
    let mut withheld = Vec::new();
    let mut n = 0;
    let mut publish_green = |org: &Org, expected: &mut Vec<String>| {
        n += 1;
        let tlp = if n % 3 == 0 { "clear" } else { "green" };
        expected.push(publish(org, tlp, &format!("webhook bulletin {n}"), None));
    };
    for _ in 0..5 {
        publish_green(org, &mut expected);
    }
    // Bulletins that arrive from a peer go out too.
    for _ in 0..2 {
        publish_green(railroad, &mut expected);
    }
    // Above the default max_tlp (green): never sent.
    withheld.push(publish(
        org,
        "amber",
        "amber bulletin",
        Some("port-authority"),
    ));
    withheld.push(publish(org, "red", "red bulletin", Some("port-authority")));
    wait_for("the first bulletins to be delivered", || {
        let got: BTreeSet<String> = receiver.deliveries().iter().map(envelope_of).collect();
        expected.iter().all(|id| got.contains(id)).then_some(())
    });

    // kill -9 in mid-stream, then the same data directory again.
    for _ in 0..5 {
        publish_green(org, &mut expected);
    }
    org.kill9();
    org.start();
    for _ in 0..3 {
        publish_green(org, &mut expected);
    }

    // The receiver is down for a minute while publishing goes on, and the
    // node is killed once more while its outbox surely holds deliveries.
    receiver.stop();
    let down = Instant::now();
    let mut round = 0;
    while down.elapsed() < Duration::from_secs(60) {
        round += 1;
        if round == 3 {
            org.kill9();
            org.start();
        }
        publish_green(org, &mut expected);
        if round % 2 == 0 {
            publish_green(railroad, &mut expected);
        }
        std::thread::sleep(Duration::from_secs(10));
    }
    let status = org.status();
    let hooks = status["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "{status}");
    assert!(hooks[0]["backlog"].as_u64().unwrap() >= 1, "{status}");
    assert!(hooks[0]["last_error"].as_str().is_some(), "{status}");
    let human = org.ok(&["status"]);
    assert!(human.contains("backlog"), "{human}");
    receiver.start();

    wait_for("every bulletin to be delivered after the outage", || {
        let got: BTreeSet<String> = receiver.deliveries().iter().map(envelope_of).collect();
        expected.iter().all(|id| got.contains(id)).then_some(())
    });
    wait_for("both backlogs to drain", || {
        let status = org.status();
        status["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["backlog"] == 0 && h["last_success"].as_u64().is_some())
            .then_some(())
    });

    let (code, text) = get(org.api, "/metrics", Some(&org.token()));
    assert_eq!(code, 200, "{text}");
    // Labelled by index and host:port, never by the URL's path.
    assert!(
        text.contains(&format!(
            "breakwater_webhook_backlog{{webhook=\"0\",host=\"127.0.0.1:{port}\"}} 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "breakwater_webhook_deliveries_total{{webhook=\"1\",host=\"127.0.0.1:{port}\",outcome=\"failed\"}}"
        )),
        "{text}"
    );
    assert!(!text.contains("/hooks/breakwater"), "{text}");

    let deliveries = receiver.deliveries();
    assert!(
        receiver.bad_signatures.lock().unwrap().is_empty(),
        "requests with a bad signature"
    );
    // Every bulletin reached both hooks; a second copy is only ever a
    // retry of the same delivery id.
    for hook_path in ["/hooks/breakwater", "/api/v1/alert"] {
        let mut ids_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for d in deliveries.iter().filter(|d| d.path == hook_path) {
            ids_of
                .entry(envelope_of(d))
                .or_default()
                .insert(d.delivery.clone());
        }
        for id in &expected {
            let ids = ids_of
                .get(id)
                .unwrap_or_else(|| panic!("{id} not delivered to {hook_path}"));
            assert_eq!(
                ids.len(),
                1,
                "{id} delivered under several ids to {hook_path}: {ids:?}"
            );
        }
        for id in &withheld {
            assert!(
                !ids_of.contains_key(id),
                "{id} above max_tlp was sent to {hook_path}"
            );
        }
    }
    let mut seen = BTreeSet::new();
    for d in &deliveries {
        assert!(!d.delivery.is_empty());
        seen.insert((d.path.clone(), d.delivery.clone()));
    }
    let generic: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.path == "/hooks/breakwater")
        .collect();
    let first = generic
        .iter()
        .find(|d| d.body["id"] == expected[0].as_str())
        .unwrap();
    assert_eq!(first.event, "bulletin.stored");
    assert_eq!(first.body["event"], "bulletin.stored");
    assert_eq!(first.body["author_org"], "port-authority");
    let from_peer = generic
        .iter()
        .find(|d| d.body["author_org"] == "railroad")
        .unwrap();
    assert!(
        from_peer.body["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("webhook bulletin")),
        "{:?}",
        from_peer.body
    );
    assert_eq!(first.body["severity"], "high");
    assert_eq!(first.body["indicators"][0]["value"], "203.0.113.7");
    let alert = deliveries
        .iter()
        .find(|d| d.path == "/api/v1/alert" && d.body["sourceRef"] == expected[0].as_str())
        .unwrap();
    assert_eq!(alert.body["type"], "breakwater");
    assert_eq!(alert.body["source"], "port-authority");
    assert_eq!(alert.body["tlp"], 1, "TheHive numbers GREEN 1");
    assert_eq!(alert.body["severity"], 3, "TheHive numbers high 3");
    assert_eq!(alert.body["observables"][0]["dataType"], "ip");
    assert_eq!(
        alert.authorization.as_deref(),
        Some(format!("Bearer {}", String::from_utf8_lossy(secret)).as_str())
    );
    let clear = deliveries
        .iter()
        .find(|d| d.path == "/api/v1/alert" && d.body["sourceRef"] == expected[2].as_str())
        .unwrap();
    assert_eq!(clear.body["tlp"], 0, "TheHive numbers CLEAR 0");
    eprintln!(
        "{} deliveries for {} bulletins × 2 hooks ({} retries of a delivery id)",
        deliveries.len(),
        expected.len(),
        deliveries.len() - seen.len()
    );
}
