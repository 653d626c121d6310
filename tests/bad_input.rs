//! Bad input to the `breakwater` binary: each case exits non-zero with a
//! one-line error that names the problem, and changes nothing.

use serde_json::Value;

use crate::util::{Org, consortium, expect_failure, run};

fn envelopes(org: &Org) -> usize {
    org.list_all().len()
}

#[test]
fn bad_publish_input_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);
    members[0].start();
    let org = &members[0];

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--tlp",
                "amber",
                "--to",
                "nobody",
                "--severity",
                "high",
                "--title",
                "t",
            ],
            "nobody",
        ),
        (
            &["--tlp", "purple", "--severity", "high", "--title", "t"],
            "purple",
        ),
        (
            &["--tlp", "green", "--severity", "extreme", "--title", "t"],
            "extreme",
        ),
        (
            &[
                "--tlp",
                "green",
                "--severity",
                "high",
                "--title",
                "t",
                "--indicator",
                "ipv4:999.1.1.1",
            ],
            "999.1.1.1",
        ),
        (
            &[
                "--tlp",
                "green",
                "--severity",
                "high",
                "--title",
                "t",
                "--expires",
                "soon",
            ],
            "soon",
        ),
        // H4: a lifetime longer than the protocol's one year.
        (
            &[
                "--tlp",
                "green",
                "--severity",
                "high",
                "--title",
                "t",
                "--expires",
                "5200w",
            ],
            "365 days",
        ),
    ];
    for (args, named) in cases {
        let mut all = vec!["publish"];
        all.extend_from_slice(args);
        let error = org.fails(&all);
        assert!(error.contains(named), "{error} should name {named}");
    }

    let stix = root.path().join("stix.txt");
    std::fs::write(&stix, "this is not json").unwrap();
    let error = org.fails(&[
        "publish",
        "--tlp",
        "green",
        "--severity",
        "high",
        "--title",
        "t",
        "--stix",
        stix.to_str().unwrap(),
    ]);
    assert!(
        error.contains("stix.txt") && error.contains("JSON"),
        "{error}"
    );

    assert_eq!(envelopes(org), 0, "nothing was published");
    assert_eq!(org.status()["envelopes"], 0);
}

#[test]
fn init_on_an_initialised_directory_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let org = Org::init(root.path(), "trucking");
    let keys = std::fs::read(org.dir.join("keys.json")).unwrap();
    let token = org.token();
    let error = expect_failure(
        run(&[
            "init",
            "--data-dir",
            org.dir.to_str().unwrap(),
            "--org",
            "other",
            "--name",
            "O",
            "--sector",
            "s",
        ]),
        &["init"],
    );
    assert!(error.contains("already initialised"), "{error}");
    assert_eq!(std::fs::read(org.dir.join("keys.json")).unwrap(), keys);
    assert_eq!(org.token(), token);
    let card: Value = serde_json::from_str(&org.ok(&["card"])).unwrap();
    assert_eq!(card["org_id"], "trucking");
}

#[test]
fn bad_rosters_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);

    // Another consortium whose roster lists the same node.
    let other_dir = root.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let card = root.path().join("port-authority.card.json");
    let other_roster = root.path().join("other-roster.json");
    members[0].ok(&[
        "consortium",
        "create",
        "--name",
        "Elsewhere",
        "--card",
        card.to_str().unwrap(),
        "--out",
        other_roster.to_str().unwrap(),
    ]);

    let corrupted = root.path().join("corrupted.json");
    let mut text = std::fs::read_to_string(root.path().join("roster.json")).unwrap();
    text.truncate(text.len() / 2);
    std::fs::write(&corrupted, text).unwrap();
    let tampered = root.path().join("tampered.json");
    let text = std::fs::read_to_string(root.path().join("roster.json")).unwrap();
    std::fs::write(&tampered, text.replace("Test Bay", "Evil Bay")).unwrap();

    // Offline (no node running) and online (through the API).
    for online in [false, true] {
        if online {
            members[0].start();
        }
        let error = members[0].fails(&["join", corrupted.to_str().unwrap()]);
        assert!(error.contains("corrupted.json"), "{error}");
        let error = members[0].fails(&["join", other_roster.to_str().unwrap()]);
        assert!(
            error.contains("consortium") || error.contains("version"),
            "{error}"
        );
        let error = members[0].fails(&["join", tampered.to_str().unwrap()]);
        assert!(error.contains("tampered.json"), "{error}");
        let error = members[0].fails(&["join", root.path().join("missing.json").to_str().unwrap()]);
        assert!(error.contains("missing.json"), "{error}");
    }
    let status = members[0].status();
    assert_eq!(status["roster_version"], 1);
    let roster: Value =
        serde_json::from_str(&std::fs::read_to_string(root.path().join("roster.json")).unwrap())
            .unwrap();
    assert_eq!(roster["roster"]["name"], "Test Bay");
    members[0].kill9();

    // A fresh node refuses a corrupted genesis and can still join the real one.
    let fresh = Org::init(root.path(), "fresh");
    let error = fresh.fails(&["join", corrupted.to_str().unwrap()]);
    assert!(error.contains("corrupted.json"), "{error}");
    let error = fresh.fails(&["join", root.path().join("roster.json").to_str().unwrap()]);
    assert!(error.contains("does not list this node"), "{error}");
}

#[test]
fn token_and_node_problems() {
    let root = tempfile::tempdir().unwrap();
    let mut members = consortium(root.path(), &["port-authority", "railroad"]);

    // No node running: the error names the address.
    let error = members[0].fails(&["status"]);
    assert!(
        error.contains("no node running")
            && error.contains(&format!("127.0.0.1:{}", members[0].api)),
        "{error}"
    );
    let error = members[0].fails(&["list"]);
    assert!(error.contains("no node running"), "{error}");

    members[0].start();
    let token_path = members[0].dir.join("api-token");
    let token = members[0].token();

    std::fs::write(&token_path, "0".repeat(64)).unwrap();
    let error = members[0].fails(&[
        "publish",
        "--tlp",
        "green",
        "--severity",
        "low",
        "--title",
        "t",
    ]);
    assert!(error.contains("token"), "{error}");
    let error = members[0].fails(&["status"]);
    assert!(error.contains("token"), "{error}");

    std::fs::remove_file(&token_path).unwrap();
    let error = members[0].fails(&["status"]);
    assert!(error.contains("api-token"), "{error}");

    std::fs::write(&token_path, &token).unwrap();
    assert_eq!(members[0].status()["envelopes"], 0, "nothing was published");

    // A data directory that holds no node.
    let error = expect_failure(
        run(&[
            "status",
            "--data-dir",
            root.path().join("nowhere").to_str().unwrap(),
        ]),
        &["status"],
    );
    assert!(error.contains("not initialised"), "{error}");
}
