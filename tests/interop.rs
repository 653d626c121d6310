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

use crate::util::{Org, consortium, start_all, wait_for};

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

/// The venv a script under `scripts/` makes (`$VAR`, else
/// `target/<name>`), if its Python imports `module`. Off CI a missing venv
/// skips the check, saying why; with `CI` set it fails.
fn venv_python(var: &str, name: &str, module: &str) -> Option<PathBuf> {
    let venv = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(name)
    });
    let python = venv.join("bin").join("python");
    let works = python.exists()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    let why = format!(
        "{} cannot import {module}: run scripts/{}.sh (or set {var})",
        python.display(),
        name.trim_end_matches("-venv").to_string() + "-venv"
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipping the reference-client check: {why}");
    None
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
