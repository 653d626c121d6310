//! The interop commands against real nodes and the real binary: `export
//! stix` and `publish --from-stix` (round trip, unmarked bundles refused,
//! the egress cap), `export misp-feed` (directories, in-place re-runs),
//! `export envelopes` / `import` (an air-gap bundle between nodes that share
//! no network, a tampered bundle refused envelope by envelope), and, where
//! the Python venvs exist, the reference clients (stix2-validator, PyMISP)
//! over what the binary wrote.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use breakwater_protocol::Tlp;
use breakwater_protocol::stix::marking_id;
use serde_json::Value;

use crate::util::{Org, consortium, start_all, venv_python, wait_for};

fn publish(org: &Org, args: &[&str]) -> String {
    let mut all = vec!["publish"];
    all.extend_from_slice(args);
    let id = org.ok(&all).trim().to_string();
    assert_eq!(id.len(), 64, "publish prints the envelope id, got {id:?}");
    id
}

fn bulletin(org: &Org, tlp: &str, to: Option<&str>, title: &str, indicators: &[&str]) -> String {
    let mut args = vec!["--tlp", tlp, "--severity", "high", "--title", title];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    for indicator in indicators {
        args.extend(["--indicator", indicator]);
    }
    publish(org, &args)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn show(org: &Org, id: &str) -> Value {
    serde_json::from_str(&org.ok(&["show", id, "--json"])).unwrap()
}

fn indicators_of(detail: &Value) -> BTreeSet<String> {
    detail["body"]["bulletin"]["indicators"]
        .as_array()
        .unwrap_or_else(|| panic!("no indicators in {detail}"))
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["kind"].as_str().unwrap(),
                i["value"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every marking-definition id the bundle's objects reference.
fn marking_refs(bundle: &Value) -> BTreeSet<String> {
    bundle["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| {
            o["object_marking_refs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

fn report_names(bundle: &Value) -> BTreeSet<String> {
    bundle["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "report")
        .filter_map(|o| o["name"].as_str().map(str::to_string))
        .collect()
}

fn run_python(python: &Path, script: &str, args: &[&Path]) {
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn stix_round_trip_cap_and_unmarked_refusal() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "shipping-line"]);
    start_all(&mut members);
    let [authority, shipping] = &members[..] else {
        unreachable!()
    };
    let indicators = [
        "ipv4:203.0.113.7",
        "domain:drayage-appointments.example",
        "url:https://drayage-appointments.example/login",
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    let green = bulletin(authority, "green", None, "Phishing wave", &indicators);
    bulletin(
        authority,
        "clear",
        None,
        "Public advisory",
        &["ipv4:198.51.100.1"],
    );
    bulletin(
        authority,
        "amber",
        Some("shipping-line"),
        "Amber note",
        &["ipv4:198.51.100.2"],
    );
    bulletin(
        authority,
        "amber+strict",
        Some("port-authority"),
        "Strict note",
        &["ipv4:198.51.100.3"],
    );
    bulletin(
        authority,
        "red",
        Some("port-authority"),
        "Red note",
        &["ipv4:198.51.100.4"],
    );

    // Default cap: up to AMBER+STRICT, never RED.
    let all = root.path().join("all.json");
    let said = authority.ok_stderr(&["export", "stix", "--out", path(&all)]);
    assert!(said.contains("withheld above the cap"), "{said}");
    let bundle = read_json(&all);
    assert_eq!(bundle["type"], "bundle");
    let refs = marking_refs(&bundle);
    assert!(!refs.contains(marking_id(Tlp::Red)), "RED left: {refs:?}");
    assert!(refs.contains(marking_id(Tlp::AmberStrict)), "{refs:?}");
    let names = report_names(&bundle);
    for title in [
        "Phishing wave",
        "Public advisory",
        "Amber note",
        "Strict note",
    ] {
        assert!(names.contains(title), "{title} missing from {names:?}");
    }
    assert!(!names.contains("Red note"), "{names:?}");

    // --max-tlp green: nothing AMBER or above.
    let green_only = root.path().join("green.json");
    authority.ok(&[
        "export",
        "stix",
        "--max-tlp",
        "green",
        "--out",
        path(&green_only),
    ]);
    let bundle = read_json(&green_only);
    let refs = marking_refs(&bundle);
    for tlp in [Tlp::Amber, Tlp::AmberStrict, Tlp::Red] {
        assert!(!refs.contains(marking_id(tlp)), "{tlp} left: {refs:?}");
    }
    assert_eq!(
        report_names(&bundle),
        BTreeSet::from(["Phishing wave", "Public advisory"].map(String::from))
    );
    // RED only when asked twice over.
    let err = authority.fails(&["export", "stix", "--max-tlp", "red"]);
    assert!(err.contains("allow_red"), "{err}");
    let red = root.path().join("red.json");
    authority.ok(&[
        "export",
        "stix",
        "--max-tlp",
        "red",
        "--allow-red",
        "--out",
        path(&red),
    ]);
    assert!(report_names(&read_json(&red)).contains("Red note"));

    // Round trip: one bulletin exported at A, published from STIX at B.
    let one = root.path().join("one.json");
    authority.ok(&["export", "stix", &green, "--out", path(&one)]);
    let out = shipping.cmd(&["publish", "--from-stix", path(&one)]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("mapped") && said.contains("kept"), "{said}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reposted = stdout.trim();
    let original = show(authority, &green);
    let copy = show(shipping, reposted);
    assert_eq!(indicators_of(&copy), indicators_of(&original));
    assert_eq!(copy["tlp"], "green");
    assert_eq!(copy["body"]["bulletin"]["title"], "Phishing wave");
    wait_for("the re-published bulletin to reach A", || {
        authority.item(reposted)
    });

    // --tlp may only tighten; an unmarked bundle is refused.
    let err = shipping.fails(&["publish", "--from-stix", path(&one), "--tlp", "clear"]);
    assert!(err.contains("looser"), "{err}");
    let unmarked = root.path().join("unmarked.json");
    std::fs::write(
        &unmarked,
        r#"{"type":"bundle","id":"bundle--6d1a7a4e-0f43-4cb6-9b3e-1f1a2d3c4b5a","objects":[
        {"type":"indicator","spec_version":"2.1","id":"indicator--0b4a1d7e-2c3f-4e5d-8a9b-1c2d3e4f5a6b",
         "created":"2026-11-01T00:00:00.000Z","modified":"2026-11-01T00:00:00.000Z",
         "pattern":"[ipv4-addr:value = '203.0.113.9']","pattern_type":"stix","valid_from":"2026-11-01T00:00:00Z"}]}"#,
    )
    .unwrap();
    let before = shipping.list_all().len();
    let err = shipping.fails(&["publish", "--from-stix", path(&unmarked)]);
    assert!(err.contains("no TLP marking"), "{err}");
    assert_eq!(
        shipping.list_all().len(),
        before,
        "a refused import published"
    );

    // The reference validator accepts what the binary wrote.
    if let Some(python) = venv_python("STIX_VENV", "stix-venv", "stix2validator, stix2") {
        let script = r#"
import json, sys
import stix2
from stix2validator import ValidationOptions, validate_parsed_json
for path in sys.argv[1:]:
    bundle = json.load(open(path))
    result = validate_parsed_json(bundle, ValidationOptions(version="2.1", disabled=["302"]))
    for e in result.errors:
        print(f"{path}: error: {e}")
    assert result.is_valid and not result.errors, path
    stix2.parse(bundle, allow_custom=False)
"#;
        run_python(&python, script, &[&all, &green_only, &red, &one]);
    }
}

#[test]
fn misp_feed_directories_updated_in_place() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "shipping-line"]);
    start_all(&mut members);
    let [authority, _shipping] = &members[..] else {
        unreachable!()
    };
    let green = bulletin(
        authority,
        "green",
        None,
        "Phishing wave",
        &["ipv4:203.0.113.7"],
    );
    bulletin(
        authority,
        "amber",
        Some("shipping-line"),
        "Amber note",
        &["domain:bad.example"],
    );
    bulletin(
        authority,
        "red",
        Some("port-authority"),
        "Red note",
        &["ipv4:198.51.100.4"],
    );
    let feed = root.path().join("feed");
    authority.ok(&["export", "misp-feed", "--out", path(&feed)]);
    for dir in ["clear", "green", "amber", "amber+strict"] {
        for file in ["manifest.json", "hashes.csv"] {
            assert!(feed.join(dir).join(file).exists(), "{dir}/{file}");
        }
    }
    assert!(!feed.join("red").exists(), "a red feed without --allow-red");
    let events = |dir: &str| -> Vec<PathBuf> {
        std::fs::read_dir(feed.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with("manifest.json") && p.extension().is_some_and(|e| e == "json"))
            .collect()
    };
    assert_eq!(events("green").len(), 1);
    assert_eq!(events("amber").len(), 1);
    assert!(events("clear").is_empty());
    let manifest = read_json(&feed.join("green").join("manifest.json"));
    assert_eq!(manifest.as_object().unwrap().len(), 1);
    let event_file = events("green").remove(0);
    let event = read_json(&event_file);
    assert_eq!(event["Event"]["info"], "Phishing wave");

    // Re-run after a retraction: the same event file, updated in place.
    let first_ts = manifest.as_object().unwrap().values().next().unwrap()["timestamp"].clone();
    authority.ok(&["retract", &green, "--reason", "false positive"]);
    authority.ok(&["export", "misp-feed", "--out", path(&feed)]);
    assert_eq!(
        events("green"),
        vec![event_file.clone()],
        "one event, not two"
    );
    let manifest = read_json(&feed.join("green").join("manifest.json"));
    assert_eq!(manifest.as_object().unwrap().len(), 1);
    let ts = manifest.as_object().unwrap().values().next().unwrap()["timestamp"].clone();
    assert_ne!(
        ts, first_ts,
        "a retraction re-exports with a newer timestamp"
    );
    let event = read_json(&event_file);
    let attributes = event["Event"]["Attribute"].as_array().unwrap();
    assert!(
        attributes
            .iter()
            .all(|a| a["deleted"] == true && a["to_ids"] == false)
    );

    if let Some(python) = venv_python("MISP_VENV", "misp-venv", "pymisp") {
        let script = r#"
import sys, glob, os
from pymisp import MISPEvent
n = 0
for d in sys.argv[1:]:
    for path in glob.glob(os.path.join(d, "*", "*.json")):
        if path.endswith("manifest.json"):
            continue
        MISPEvent().load_file(path)
        n += 1
assert n == 2, n
"#;
        run_python(&python, script, &[&feed]);
    }
}

#[test]
fn airgap_bundle_between_nodes_without_a_network_and_tampering_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(
        root.path(),
        &["port-authority", "shipping-line", "tug-company"],
    );
    let (authority, rest) = members.split_first_mut().unwrap();
    let [shipping, tug] = rest else {
        unreachable!()
    };
    // Only A runs: B and C never share a network with it.
    authority.start();
    let green = bulletin(
        authority,
        "green",
        None,
        "Phishing wave",
        &["ipv4:203.0.113.7"],
    );
    let amber = bulletin(
        authority,
        "amber",
        Some("shipping-line"),
        "For shipping",
        &["domain:bad.example"],
    );
    let strict = bulletin(
        authority,
        "amber+strict",
        Some("port-authority"),
        "Ours only",
        &["ipv4:198.51.100.3"],
    );
    let file = root.path().join("usb.bwair");
    let said = authority.ok_stderr(&["export", "envelopes", "--out", path(&file)]);
    assert!(said.contains("3 envelope(s)"), "{said}");

    // Offline into B's store, then again into the running B. The file's
    // roster (version 1) is already held everywhere: counted as such.
    let out = shipping.ok(&["import", path(&file)]);
    assert!(
        out.starts_with("3 accepted, 1 already held, 0 refused"),
        "{out}"
    );
    authority.kill9();
    shipping.start();
    assert_eq!(shipping.status()["peers"].as_array().map(Vec::len), Some(0));
    let out = shipping.ok(&["import", path(&file)]);
    assert!(
        out.starts_with("0 accepted, 4 already held, 0 refused"),
        "{out}"
    );
    // Readable exactly as via sync: what A's sealing lets B open.
    let at_b = [show(shipping, &green), show(shipping, &amber)];
    let strict_at_b = show(shipping, &strict);
    assert_eq!(
        strict_at_b["readable"], false,
        "nothing becomes readable that was not"
    );
    assert!(strict_at_b["body"].is_null());
    authority.start();
    for (id, at_b) in [&green, &amber].into_iter().zip(at_b) {
        let at_a = show(authority, id);
        assert_eq!(at_b["readable"], true, "{id}");
        assert_eq!(at_b["body"], at_a["body"], "{id}");
        assert_eq!(at_b["author_org"], "port-authority");
    }
    authority.kill9();
    shipping.kill9();

    // A tampered byte in the last envelope: that one refused, with a reason.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x01;
    let tampered = root.path().join("tampered.bwair");
    std::fs::write(&tampered, bytes).unwrap();
    let out = tug.ok(&["import", path(&tampered)]);
    assert!(
        out.starts_with("2 accepted, 1 already held, 1 refused"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("item #")),
        "{out}"
    );
    tug.start();
    assert!(tug.item(&green).is_some());
    assert!(
        tug.item(&strict).is_none(),
        "the tampered envelope was stored"
    );
}

/// What `taxii2-client` (the OASIS TAXII 2.1 client) and `requests` see of
/// node A's TAXII server: the walk discovery → API root → collections →
/// objects in pages of 3, the manifest, one object and its versions, the
/// date headers, the refusals, and a post to the inbox.
const TAXII_WALK: &str = r#"
import json, sys, requests
from taxii2client.v21 import Server, as_pages
url, token, api, out = sys.argv[1:5]
auth = ("opencti", token)
accept = {"Accept": "application/taxii+json;version=2.1"}
server = Server(url, user="opencti", password=token)
root = server.default
res = {"title": server.title, "roots": [r.url for r in server.api_roots],
       "max_content_length": root.max_content_length}
cols = {c.title: c for c in root.collections}
res["collections"] = {t: {"id": c.id, "can_read": c.can_read, "can_write": c.can_write}
                      for t, c in cols.items()}
for name in ("shared", "clear"):
    pages, objects = [], []
    for envelope in as_pages(cols[name].get_objects, per_request=3):
        pages.append(len(envelope.get("objects", [])))
        objects += envelope.get("objects", [])
    res[name] = {"pages": pages, "objects": objects}
res["manifest"] = cols["shared"].get_manifest().get("objects", [])
report = next(o for o in res["shared"]["objects"] if o["type"] == "report")
res["one"] = cols["shared"].get_object(report["id"]).get("objects", [])
res["versions"] = cols["shared"].object_versions(report["id"]).get("versions", [])
objects_url = cols["shared"].url + "objects/"
r = requests.get(objects_url, headers=accept, auth=auth)
res["content_type"] = r.headers.get("Content-Type")
res["first"] = r.headers.get("X-TAXII-Date-Added-First")
res["last"] = r.headers.get("X-TAXII-Date-Added-Last")
after = requests.get(objects_url, headers=accept, auth=auth, params={"added_after": res["last"]})
res["after_last"] = after.json().get("objects", [])
plain = requests.get(url, headers=accept)
res["no_auth"] = [plain.status_code, plain.headers.get("WWW-Authenticate")]
res["wrong_password"] = requests.get(url, headers=accept, auth=("x", "wrong")).status_code
res["bad_accept"] = requests.get(url, headers={"Accept": "application/json"}, auth=auth).status_code
res["api_with_taxii_token"] = requests.get(api + "/v1/status",
    headers={"Authorization": "Bearer " + token}).status_code
res["bad_limit"] = requests.get(objects_url, headers=accept, auth=auth, params={"limit": "-20"}).status_code
first_page = requests.get(objects_url, headers=accept, auth=auth, params={"limit": "2"}).json()
res["next_other_filter"] = requests.get(objects_url, headers=accept, auth=auth,
    params={"next": first_page["next"], "match[type]": "indicator"}).status_code
res["post_to_read"] = requests.post(objects_url, auth=auth, data="{}",
    headers={**accept, "Content-Type": "application/taxii+json;version=2.1"}).status_code
res["delete"] = requests.delete(cols["shared"].url + "objects/" + report["id"] + "/",
    headers=accept, auth=auth).status_code
green = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"
bundle = {"type": "bundle", "id": "bundle--1f0c5a3e-6c1d-4c3a-9a55-3b1f7c1d2e4a", "objects": [
    {"type": "report", "spec_version": "2.1", "id": "report--8a3c1f0e-2b4d-4e6f-8a1b-2c3d4e5f6a7b",
     "created": "2026-11-30T08:00:00.000Z", "modified": "2026-11-30T08:00:00.000Z",
     "name": "Posted through the TAXII inbox", "published": "2026-11-30T08:00:00.000Z",
     "object_refs": ["indicator--5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"],
     "object_marking_refs": [green]},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
     "created": "2026-11-30T08:00:00.000Z", "modified": "2026-11-30T08:00:00.000Z",
     "pattern": "[ipv4-addr:value = '192.0.2.77']", "pattern_type": "stix",
     "valid_from": "2026-11-30T08:00:00Z", "object_marking_refs": [green]}]}
status = cols["inbox"].add_objects(json.dumps(bundle), wait_for_completion=False)
res["post"] = {"status": status.status, "total": status.total_count,
               "success": status.success_count, "failure": status.failure_count}
res["status_again"] = root.get_status(status.id).status
unmarked = {"type": "bundle", "id": "bundle--2f0c5a3e-6c1d-4c3a-9a55-3b1f7c1d2e4a",
            "objects": [dict(bundle["objects"][1], object_marking_refs=[])]}
refused = cols["inbox"].add_objects(json.dumps(unmarked), wait_for_completion=False)
res["unmarked"] = {"success": refused.success_count, "failure": refused.failure_count,
                   "message": refused.failures[0].get("message") if refused.failures else None}
json.dump(res, open(out, "w"))
"#;

/// One poll of the `shared` collection after a `date_added` cursor, as
/// OpenCTI's ingestion makes it: the report names and the last header.
const TAXII_POLL: &str = r#"
import json, sys
from taxii2client.v21 import Server
url, token, after, out = sys.argv[1:5]
shared = next(c for c in Server(url, user="x", password=token).default.collections
              if c.title == "shared")
envelope = shared.get_objects(added_after=after)
json.dump({"names": [o["name"] for o in envelope.get("objects", []) if o["type"] == "report"],
           "created": {o["name"]: o["created"] for o in envelope.get("objects", [])
                       if o["type"] == "report"}}, open(out, "w"))
"#;

/// Runs `script` with `args` and the path `out`, where it writes JSON.
fn python_json(python: &Path, script: &str, args: &[&str], out: &Path) -> Value {
    let mut all: Vec<&Path> = args.iter().map(Path::new).collect();
    all.push(out);
    run_python(python, script, &all);
    read_json(out)
}

fn report_names_of(objects: &Value) -> BTreeSet<String> {
    objects
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "report")
        .filter_map(|o| o["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn taxii_server_serves_capped_collections_to_taxii2_client_and_the_inbox_publishes() {
    let Some(python) = venv_python("STIX_VENV", "stix-venv", "taxii2client, requests") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "shipping-line"]);
    let port = crate::util::free_port();
    let listen = format!("127.0.0.1:{port}");
    let said = members[0].ok(&["taxii", "enable", "--listen", &listen]);
    assert!(said.contains("/taxii2/"), "{said}");
    // Enabling twice keeps the first block unless forced.
    let err = members[0].fails(&["taxii", "enable", "--listen", &listen]);
    assert!(err.contains("already enabled"), "{err}");
    let token_path = members[0].dir.join("taxii-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(token, members[0].token(), "the TAXII token is its own");
    {
        // Publishing right after a restart below should not wait for sync.
        let config_path = members[0].dir.join("config.json");
        let mut config = read_json(&config_path);
        config["publish_sync_wait"] = 0.into();
        std::fs::write(&config_path, config.to_string()).unwrap();
    }
    start_all(&mut members);
    let url = format!("http://{listen}/taxii2/");
    let api = format!("http://127.0.0.1:{}", members[0].api);
    let (authority, shipping) = (&members[0], &members[1]);
    let indicators = ["ipv4:203.0.113.70", "domain:berth-schedule.example"];
    bulletin(authority, "green", None, "Green wave", &indicators);
    bulletin(
        authority,
        "clear",
        None,
        "Clear advisory",
        &["ipv4:198.51.100.70"],
    );
    bulletin(
        authority,
        "amber",
        Some("shipping-line"),
        "Amber note",
        &["ipv4:198.51.100.71"],
    );
    bulletin(
        authority,
        "amber+strict",
        Some("port-authority"),
        "Strict note",
        &["ipv4:198.51.100.72"],
    );
    bulletin(
        authority,
        "red",
        Some("port-authority"),
        "Red note",
        &["ipv4:198.51.100.73"],
    );
    let withdrawn = bulletin(
        authority,
        "green",
        None,
        "Withdrawn",
        &["ipv4:198.51.100.74"],
    );
    authority.ok(&["retract", &withdrawn, "--reason", "false positive"]);
    let from_b = bulletin(
        shipping,
        "green",
        None,
        "From the shipping line",
        &["ipv4:198.51.100.75"],
    );
    wait_for("B's bulletin at A", || authority.item(&from_b));

    let out = root.path().join("walk.json");
    let res = python_json(&python, TAXII_WALK, &[&url, &token, &api], &out);
    assert_eq!(
        res["roots"][0],
        format!("http://{listen}/taxii2/breakwater/")
    );
    assert_eq!(res["collections"]["shared"]["can_read"], true);
    assert_eq!(res["collections"]["inbox"]["can_write"], true);
    assert_eq!(res["collections"]["inbox"]["can_read"], false);

    // shared: up to AMBER+STRICT, never RED, in pages of at most 3.
    let shared = &res["shared"]["objects"];
    let pages: Vec<u64> = res["shared"]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert!(
        pages.len() > 3 && pages.iter().all(|&n| n <= 3),
        "{pages:?}"
    );
    let refs = marking_refs(&serde_json::json!({ "objects": shared }));
    assert!(!refs.contains(marking_id(Tlp::Red)), "RED served: {refs:?}");
    assert!(refs.contains(marking_id(Tlp::AmberStrict)), "{refs:?}");
    let names = report_names_of(shared);
    for title in [
        "Green wave",
        "Clear advisory",
        "Amber note",
        "Strict note",
        "Withdrawn",
        "From the shipping line",
    ] {
        assert!(names.contains(title), "{title} missing from {names:?}");
    }
    assert!(!names.contains("Red note"), "{names:?}");
    let patterns: Vec<&str> = shared
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "indicator")
        .filter_map(|o| o["pattern"].as_str())
        .collect();
    for needle in ["203.0.113.70", "berth-schedule.example"] {
        assert!(
            patterns.iter().any(|p| p.contains(needle)),
            "{needle}: {patterns:?}"
        );
    }
    // match[version]=last (the default): the withdrawn report only revoked.
    let withdrawn_reports: Vec<&Value> = shared
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "report" && o["name"] == "Withdrawn")
        .collect();
    assert_eq!(withdrawn_reports.len(), 1, "{withdrawn_reports:?}");
    assert_eq!(withdrawn_reports[0]["revoked"], true);
    // Every object carries spec_version (OpenCTI's connector reads it).
    assert!(
        shared
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["spec_version"] == "2.1")
    );
    // clear: CLEAR only.
    let clear = &res["clear"]["objects"];
    assert_eq!(
        marking_refs(&serde_json::json!({ "objects": clear })),
        BTreeSet::from([marking_id(Tlp::Clear).to_string()])
    );
    assert_eq!(
        report_names_of(clear),
        BTreeSet::from(["Clear advisory".to_string()])
    );
    assert!(!res["manifest"].as_array().unwrap().is_empty());
    assert_eq!(res["one"].as_array().unwrap().len(), 1);
    assert!(!res["versions"].as_array().unwrap().is_empty());

    // Media type, date headers and refusals, as the notes give them.
    assert_eq!(res["content_type"], "application/taxii+json;version=2.1");
    assert!(res["first"].as_str().unwrap() <= res["last"].as_str().unwrap());
    assert_eq!(
        res["after_last"],
        serde_json::json!([]),
        "added_after is exclusive"
    );
    assert_eq!(res["no_auth"][0], 401);
    assert!(
        res["no_auth"][1]
            .as_str()
            .is_some_and(|h| h.starts_with("Basic")),
        "{}",
        res["no_auth"]
    );
    assert_eq!(res["wrong_password"], 401);
    assert_eq!(res["bad_accept"], 406);
    assert_eq!(
        res["api_with_taxii_token"], 401,
        "the TAXII token opens the API"
    );
    assert_eq!(res["bad_limit"], 400);
    assert_eq!(res["next_other_filter"], 400);
    assert_eq!(res["post_to_read"], 403);
    assert_eq!(res["delete"], 405);

    // The inbox: a post becomes a bulletin of A that B receives; an
    // unmarked one is refused in the status resource.
    assert_eq!(
        res["post"],
        serde_json::json!({"status": "complete", "total": 2, "success": 2, "failure": 0})
    );
    assert_eq!(res["status_again"], "complete");
    assert_eq!(res["unmarked"]["success"], 0);
    assert!(
        res["unmarked"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no TLP marking")),
        "{}",
        res["unmarked"]
    );
    let posted = wait_for("the inbox post at B", || {
        shipping
            .list_all()
            .into_iter()
            .find(|item| item["title"] == "Posted through the TAXII inbox")
    });
    assert_eq!(posted["author_org"], "port-authority");
    assert_eq!(posted["tlp"], "green");

    // date_added is A's arrival time: a bulletin B signed while A was down
    // reaches a poller whose cursor is past the bulletin's creation.
    members[0].kill9();
    let late = bulletin(
        &members[1],
        "green",
        None,
        "Signed during the outage",
        &["ipv4:198.51.100.76"],
    );
    members[1].kill9();
    members[0].start();
    bulletin(
        &members[0],
        "clear",
        None,
        "After the restart",
        &["ipv4:198.51.100.77"],
    );
    let out = root.path().join("poll1.json");
    let epoch = "1970-01-01T00:00:00Z";
    let first = python_json(&python, TAXII_POLL, &[&url, &token, epoch], &out);
    let cursor = first["created"]["After the restart"]
        .as_str()
        .unwrap()
        .to_string();
    members[1].start();
    wait_for("the outage bulletin at A", || members[0].item(&late));
    let out = root.path().join("poll2.json");
    let second = python_json(&python, TAXII_POLL, &[&url, &token, &cursor], &out);
    let names = &second["names"];
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "Signed during the outage"),
        "{second}"
    );
    let created = second["created"]["Signed during the outage"]
        .as_str()
        .unwrap();
    assert!(
        created < cursor.as_str(),
        "{created} is not before the cursor {cursor}"
    );
}
