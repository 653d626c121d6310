//! Three organisations as separate `breakwater` processes on loopback, going
//! through the README walkthrough: init → card → consortium create → join →
//! run → publish → list/show/search → retract, plus TLP delivery and a
//! `kill -9` right after an acknowledged publish.

use serde_json::Value;

use crate::util::{Org, consortium, start_all, wait_for};

const ORGS: [&str; 3] = ["port-authority", "shipping-line", "terminal-operator"];

fn publish(org: &Org, args: &[&str]) -> String {
    let mut all = vec!["publish"];
    all.extend_from_slice(args);
    let id = org.ok(&all).trim().to_string();
    assert_eq!(id.len(), 64, "publish prints the envelope id, got {id:?}");
    id
}

fn wait_item(org: &Org, id: &str) -> Value {
    wait_for(&format!("{} to receive {id}", org.org), || org.item(id))
}

#[test]
fn three_orgs_walkthrough() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &ORGS);
    start_all(&mut members);
    let [authority, shipping, terminal] = &members[..] else {
        unreachable!()
    };

    let stix = root.path().join("bundle.json");
    std::fs::write(
        &stix,
        r#"{"type": "bundle", "id": "bundle--1", "objects": []}"#,
    )
    .unwrap();
    let id = publish(
        authority,
        &[
            "--tlp",
            "green",
            "--severity",
            "high",
            "--title",
            "Phishing wave against the drayage portal",
            "--summary",
            "Credential-harvesting mails.",
            "--indicator",
            "ipv4:203.0.113.7",
            "--indicator",
            "domain:drayage-appointments.example",
            "--tag",
            "phishing",
            "--stix",
            stix.to_str().unwrap(),
            "--expires",
            "30d",
        ],
    );

    for member in &members {
        let item = wait_item(member, &id);
        assert_eq!(item["readable"], true, "{}", member.org);
        assert_eq!(item["tlp"], "green");
        assert_eq!(item["severity"], "high");
        assert_eq!(item["author_org"], "port-authority");
        assert_eq!(item["title"], "Phishing wave against the drayage portal");
        assert_eq!(item["retracted"], false);
        assert!(item["created_at"].as_u64().unwrap() > 0);
        assert!(
            item["indicators"]
                .as_array()
                .is_some_and(|list| list.len() == 2)
        );
    }

    // Human list shows the title in aligned columns.
    let listing = shipping.ok(&["list"]);
    assert!(
        listing.lines().next().unwrap().starts_with("ID"),
        "{listing}"
    );
    assert!(listing.contains("Phishing wave"), "{listing}");

    // Filters.
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let items: Vec<Value> = serde_json::from_str(&shipping.ok(&all)).unwrap();
        items
            .iter()
            .map(|item| item["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ids(&["--since", "1h"]).contains(&id));
    assert!(ids(&["--severity", "medium"]).contains(&id));
    assert!(!ids(&["--severity", "critical"]).contains(&id));
    assert!(ids(&["--tlp", "green"]).contains(&id));
    assert!(!ids(&["--tlp", "amber"]).contains(&id));

    // show --json: the full body and the envelope metadata.
    let detail: Value = serde_json::from_str(&terminal.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(detail["id"], id.as_str());
    assert_eq!(
        detail["body"]["bulletin"]["summary"],
        "Credential-harvesting mails."
    );
    assert!(
        detail["body"]["bulletin"]["stix"]
            .as_str()
            .unwrap()
            .contains("bundle")
    );
    let human = terminal.ok(&["show", &id[..12]]);
    assert!(human.contains("ipv4:203.0.113.7"), "{human}");

    // search by indicator, on another org's node.
    let found: Vec<Value> =
        serde_json::from_str(&terminal.ok(&["search", "ipv4:203.0.113.7", "--json"])).unwrap();
    assert!(
        found.iter().any(|item| item["id"] == id.as_str()),
        "{found:?}"
    );
    let none: Vec<Value> =
        serde_json::from_str(&terminal.ok(&["search", "ipv4:203.0.113.8", "--json"])).unwrap();
    assert!(none.is_empty());

    // a sighting, then the retraction by the author.
    shipping.ok(&["sight", &id, "--indicator", "ipv4:203.0.113.7"]);
    let retraction = authority
        .ok(&["retract", &id, "--reason", "false positive"])
        .trim()
        .to_string();
    assert_eq!(retraction.len(), 64);
    for member in &members {
        wait_for(&format!("{} to see the retraction", member.org), || {
            (member.item(&id)?["retracted"] == true).then_some(())
        });
    }
    let found: Vec<Value> =
        serde_json::from_str(&terminal.ok(&["search", "ipv4:203.0.113.7", "--json"])).unwrap();
    assert!(
        found.iter().all(|item| item["id"] != id.as_str()),
        "retracted bulletins leave search"
    );

    // status and peers answer.
    let status = authority.status();
    assert_eq!(status["org_id"], "port-authority");
    assert_eq!(status["roster_version"], 1);
    let peers: Vec<Value> = serde_json::from_str(&authority.ok(&["peers", "--json"])).unwrap();
    assert_eq!(peers.len(), 2);
}

#[test]
fn amber_to_one_org_is_sealed_for_the_others() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &ORGS);
    start_all(&mut members);
    let [authority, shipping, terminal] = &members[..] else {
        unreachable!()
    };

    let id = publish(
        shipping,
        &[
            "--tlp",
            "amber",
            "--to",
            "terminal-operator",
            "--severity",
            "critical",
            "--title",
            "Crane controller VPN credentials exposed",
            "--indicator",
            "ipv4:198.51.100.23",
        ],
    );
    let opened = wait_item(terminal, &id);
    assert_eq!(opened["readable"], true);
    assert_eq!(opened["title"], "Crane controller VPN credentials exposed");
    assert_eq!(opened["tlp"], "amber");

    let sealed = wait_item(authority, &id);
    assert_eq!(sealed["readable"], false);
    assert_eq!(sealed["tlp"], "amber");
    assert_eq!(sealed["author_org"], "shipping-line");
    assert!(sealed["title"].is_null(), "{sealed}");
    assert!(sealed["indicators"].is_null(), "{sealed}");
    // Without --all the sealed envelope is not listed, and search finds nothing.
    let readable: Vec<Value> = serde_json::from_str(&authority.ok(&["list", "--json"])).unwrap();
    assert!(readable.iter().all(|item| item["id"] != id.as_str()));
    let found: Vec<Value> =
        serde_json::from_str(&authority.ok(&["search", "ipv4:198.51.100.23", "--json"])).unwrap();
    assert!(found.is_empty());
    let found: Vec<Value> =
        serde_json::from_str(&terminal.ok(&["search", "ipv4:198.51.100.23", "--json"])).unwrap();
    assert_eq!(found.len(), 1);
    // The author can read its own.
    assert_eq!(shipping.item(&id).unwrap()["readable"], true);
}

#[test]
fn kill9_right_after_publish_then_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &ORGS);
    start_all(&mut members);

    // Stop the others first, so the bulletin can only reach them after the
    // author's restart.
    members[1].kill9();
    members[2].kill9();
    let id = publish(
        &members[0],
        &[
            "--tlp",
            "green",
            "--severity",
            "medium",
            "--title",
            "Rogue AIS transponder",
            "--indicator",
            "ipv4:192.0.2.44",
        ],
    );
    members[0].kill9();

    members[0].start();
    let item = members[0]
        .item(&id)
        .expect("acknowledged bulletin survives kill -9");
    assert_eq!(item["title"], "Rogue AIS transponder");

    members[1].start();
    members[2].start();
    for member in &members[1..] {
        assert_eq!(wait_item(member, &id)["readable"], true);
    }
    // The restarted author keeps publishing with fresh seqs that reach everyone.
    let next = publish(
        &members[0],
        &[
            "--tlp",
            "green",
            "--severity",
            "low",
            "--title",
            "Follow-up",
        ],
    );
    for member in &members[1..] {
        wait_item(member, &next);
    }
}

#[test]
fn consortium_add_sign_and_revoke_while_running() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &ORGS[..2]);
    start_all(&mut members);
    let roster = root.path().join("roster.json");
    let v2 = root.path().join("roster-v2.json");
    let v3 = root.path().join("roster-v3.json");

    // A newcomer: its card goes to the convenor, who signs version 2.
    let mut railroad = Org::init(root.path(), "railroad");
    let card = root.path().join("railroad.card.json");
    std::fs::write(&card, railroad.ok(&["card"])).unwrap();
    let p = |path: &std::path::Path| path.to_str().unwrap().to_string();
    members[0].ok(&[
        "consortium",
        "add",
        "--roster",
        &p(&roster),
        "--card",
        &p(&card),
        "--out",
        &p(&v2),
    ]);
    members[0].ok(&["consortium", "sign", "--roster", &p(&v2), "--out", &p(&v2)]);
    // A non-admin's signature would not count.
    let error = members[1].fails(&["consortium", "sign", "--roster", &p(&v2), "--out", &p(&v2)]);
    assert!(error.contains("not an admin"), "{error}");

    // Running nodes take the update through the API; the newcomer joins offline.
    for member in &members {
        member.ok(&["join", &p(&v2)]);
        assert_eq!(member.status()["roster_version"], 2);
    }
    railroad.ok(&["join", &p(&roster), &p(&v2)]);
    railroad.start();
    let id = publish(
        &members[1],
        &[
            "--tlp",
            "green",
            "--severity",
            "low",
            "--title",
            "Welcome aboard",
        ],
    );
    wait_item(&railroad, &id);

    // Revocation: version 3 without the railroad.
    members[0].ok(&[
        "consortium",
        "revoke",
        "--roster",
        &p(&v2),
        "--org",
        "railroad",
        "--out",
        &p(&v3),
    ]);
    for member in &members {
        member.ok(&["join", &p(&v3)]);
        assert_eq!(member.status()["roster_version"], 3);
    }
    // An old version is refused and changes nothing.
    let error = members[0].fails(&["join", &p(&v2)]);
    assert!(error.contains("roster-v2.json"), "{error}");
    assert_eq!(members[0].status()["roster_version"], 3);
    // Publishing to the revoked org is refused.
    let error = members[0].fails(&[
        "publish",
        "--tlp",
        "amber",
        "--to",
        "railroad",
        "--severity",
        "low",
        "--title",
        "t",
    ]);
    assert!(error.contains("railroad"), "{error}");
}

#[test]
fn consortium_rekey_moves_green_to_a_new_epoch_and_sign_refuses_a_forged_package() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &ORGS);
    start_all(&mut members);
    let p = |path: &std::path::Path| path.to_str().unwrap().to_string();
    let roster = root.path().join("roster.json");
    let v2 = root.path().join("roster-v2.json");
    let forged = root.path().join("roster-v2-forged.json");
    assert_eq!(members[0].status()["green_epoch"], 1);
    members[0].ok(&[
        "consortium",
        "rekey",
        "--roster",
        &p(&roster),
        "--out",
        &p(&v2),
    ]);

    // Swap two nodes' wraps: each would open a key meant for another, and
    // one of them is the signer's or another node's: either way the package
    // does not give every node the same key.
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&v2).unwrap()).unwrap();
    let wraps = json["roster"]["green"]["wraps"].as_array_mut().unwrap();
    assert_eq!(wraps.len(), 3);
    let first = wraps[0]["wrap"].clone();
    wraps[0]["wrap"] = wraps[1]["wrap"].clone();
    wraps[1]["wrap"] = first;
    json["signatures"] = Value::Array(Vec::new());
    std::fs::write(&forged, json.to_string()).unwrap();
    let error = members[0].fails(&[
        "consortium",
        "sign",
        "--roster",
        &p(&forged),
        "--out",
        &p(&forged),
    ]);
    assert!(error.contains("refusing to sign"), "{error}");

    // The honest version is checked, signed, joined, and GREEN moves on.
    let signed =
        members[0].ok_stderr(&["consortium", "sign", "--roster", &p(&v2), "--out", &p(&v2)]);
    assert!(signed.contains("GREEN key package checked"), "{signed}");
    assert!(signed.contains("~ GREEN key: fresh key"), "{signed}");
    for member in &members {
        member.ok(&["join", &p(&v2)]);
        assert_eq!(member.status()["green_epoch"], 2);
    }
    let id = publish(
        &members[1],
        &[
            "--tlp",
            "green",
            "--severity",
            "low",
            "--title",
            "After the rekey",
        ],
    );
    for member in [&members[0], &members[2]] {
        let item = wait_item(member, &id);
        assert_eq!(item["readable"], true);
        assert_eq!(item["title"], "After the rekey");
    }
    let shown: Value = serde_json::from_str(&members[2].ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["seal"], "epoch");
    assert_eq!(shown["epoch"], 2);
}
