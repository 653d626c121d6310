//! `breakwater demo`: a San Pedro Bay consortium of N real nodes on loopback
//! in this process, each with fresh keys, its own data directory and its own
//! local API, so a second terminal can use every other command against it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use breakwater_node::{DataDir, ListFilter, Node, NodeHandle, PublishRequest, TransportKind};
use breakwater_protocol::fixture::SAN_PEDRO_BAY;
use breakwater_protocol::{
    Bulletin, Digest, Indicator, OrgId, Roster, Severity, SignedRoster, Tlp,
};
use tokio::sync::watch;

use crate::output::{Table, colour, paint, short_id};
use crate::{NewNode, create_node};

/// How long the demo waits for delivery before reporting what arrived.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

struct DemoNode {
    org: String,
    data_dir: DataDir,
    api: SocketAddr,
    node: Node,
}

/// Free loopback ports for the nodes' listeners, below the kernel's
/// ephemeral range so that outgoing connections cannot take them first.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let start = 20_000 + (std::process::id() % 200) as u16 * 50;
    let ports: Vec<u16> = (start..32_000)
        .filter(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .take(n)
        .collect();
    if ports.len() < n {
        bail!("cannot find {n} free loopback ports");
    }
    Ok(ports)
}

fn cast(i: usize) -> (String, String, String) {
    match SAN_PEDRO_BAY.get(i) {
        Some((org, name, sector)) => (org.to_string(), name.to_string(), sector.to_string()),
        None => (
            format!("member-{}", i + 1),
            format!("Member {}", i + 1),
            "other".to_string(),
        ),
    }
}

pub async fn run(n_orgs: usize, duration: Option<Duration>) -> Result<()> {
    if !(2..=64).contains(&n_orgs) {
        bail!("--orgs must be between 2 and 64, not {n_orgs}");
    }
    let root = tempfile::Builder::new()
        .prefix("breakwater-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let on = colour();
    println!(
        "{}",
        paint(
            &format!("San Pedro Bay consortium: {n_orgs} organisations on loopback"),
            "1",
            on
        )
    );

    // Data directories, keys and cards.
    let mut dirs = Vec::new();
    let mut cards = Vec::new();
    let mut api_listeners = Vec::new();
    let ports = free_ports(n_orgs)?;
    for (i, port) in ports.into_iter().enumerate() {
        let (org, name, sector) = cast(i);
        let data_dir = DataDir::new(root.path().join(&org));
        let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind an API port")?;
        let api = api_listener.local_addr()?;
        let listen = format!("/ip4/127.0.0.1/tcp/{port}").parse()?;
        let card = create_node(
            &data_dir,
            NewNode {
                org: &org,
                name: &name,
                sector: &sector,
                listen: vec![listen],
                api,
            },
            |config| config.sync_interval = Duration::from_secs(3),
        )?;
        cards.push(card);
        dirs.push((org, data_dir, api));
        api_listeners.push(api_listener);
    }

    // Genesis roster, signed by the port authority, joined by everyone.
    let convenor = dirs
        .first()
        .map(|(org, dir, _)| (org.clone(), dir.clone()))
        .context("no organisations")?;
    let genesis = Roster::genesis(
        "San Pedro Bay Maritime ISAC",
        cards,
        vec![convenor.0.parse::<OrgId>()?],
        1,
    )?
    .with_green_key(&crate::consortium::fresh_green_key())?;
    let mut roster = SignedRoster::unsigned(genesis);
    roster.sign(&convenor.1.keys()?);
    let roster_path = root.path().join("roster.json");
    std::fs::write(&roster_path, roster.to_json())?;
    for (_, data_dir, _) in &dirs {
        breakwater_node::node::join_offline(data_dir, &roster)?;
    }

    // Start every node and its API.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut nodes = Vec::new();
    let mut apis = Vec::new();
    for ((org, data_dir, api), listener) in dirs.into_iter().zip(api_listeners) {
        let config = data_dir.config()?;
        let node = breakwater_node::spawn(
            &data_dir,
            config,
            TransportKind::Production,
            stopped(stop_rx.clone()),
        )
        .await
        .with_context(|| format!("cannot start {org}"))?;
        let token = data_dir.token()?;
        apis.push(tokio::spawn(breakwater_node::api::serve(
            listener,
            node.handle.clone(),
            token,
            stopped(stop_rx.clone()),
        )));
        nodes.push(DemoNode {
            org,
            data_dir,
            api,
            node,
        });
    }

    let result = exercise(&nodes, on).await;
    if result.is_ok() {
        let mut table = Table::new(&["ORG", "API", "DATA DIR"]);
        for node in &nodes {
            table.row(vec![
                (node.org.clone(), None),
                (node.api.to_string(), None),
                (node.data_dir.root().display().to_string(), None),
            ]);
        }
        println!("\n{}", table.render(on));
        if let Some(first) = nodes.first() {
            println!("Try, in another terminal:");
            println!(
                "  export BREAKWATER_DATA_DIR={}",
                first.data_dir.root().display()
            );
            println!("  breakwater list --all");
            println!(
                "  breakwater publish --tlp green --severity high --title 'Suspicious badge clones at gate 4' --indicator ipv4:198.51.100.23"
            );
            println!("  breakwater watch");
            println!(
                "  breakwater ui        # the web dashboard's address and a one-time login code"
            );
        }
        println!("roster: {}", roster_path.display());
        match duration {
            Some(duration) => {
                println!("running for {}s (Ctrl-C stops earlier)", duration.as_secs());
                tokio::select! {
                    _ = crate::shutdown_signal() => {}
                    _ = tokio::time::sleep(duration) => {}
                }
            }
            None => {
                println!("running until Ctrl-C");
                crate::shutdown_signal().await;
            }
        }
    }
    let _ = stop_tx.send(true);
    for api in apis {
        let _ = api.await;
    }
    for node in nodes {
        node.node.wait().await;
    }
    drop(root);
    result
}

/// Publishes a GREEN and an AMBER bulletin, waits for delivery and prints
/// who received and who could open what.
async fn exercise(nodes: &[DemoNode], on: bool) -> Result<()> {
    let (Some(author), Some(amber_to)) = (nodes.first(), nodes.get(2).or_else(|| nodes.get(1)))
    else {
        bail!("the demo needs at least two organisations");
    };
    wait_connected(nodes).await;

    let mut green = Bulletin::new(
        "Phishing wave against drayage appointment portal",
        Severity::High,
    );
    green.summary =
        "Credential-harvesting mails impersonating the truck appointment system.".into();
    green.indicators = vec![
        Indicator::parse("domain:drayage-appointments.example")?,
        Indicator::parse("ipv4:203.0.113.7")?,
    ];
    let green = author
        .node
        .handle
        .publish(PublishRequest {
            tlp: Tlp::Green,
            to: vec![],
            bulletin: green,
            ttl_ms: None,
        })
        .await?;
    let mut amber = Bulletin::new(
        "Crane controller VPN credentials exposed",
        Severity::Critical,
    );
    amber.indicators = vec![Indicator::parse("ipv4:198.51.100.23")?];
    let amber_org: OrgId = amber_to.org.parse()?;
    let amber = author
        .node
        .handle
        .publish(PublishRequest {
            tlp: Tlp::Amber,
            to: vec![amber_org],
            bulletin: amber,
            ttl_ms: None,
        })
        .await?;
    println!(
        "{} published {} {} and {} {} (to {})",
        author.org,
        paint("GREEN", "1;32", on),
        short_id(&green.id.to_hex()),
        paint("AMBER", "1;33", on),
        short_id(&amber.id.to_hex()),
        amber_to.org
    );

    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    let mut seen;
    loop {
        seen = Vec::new();
        for node in nodes {
            seen.push((
                lookup(&node.node.handle, green.id).await,
                lookup(&node.node.handle, amber.id).await,
            ));
        }
        let all = seen.iter().all(|(g, a)| g.is_some() && a.is_some());
        if all || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut table = Table::new(&["ORG", "GREEN", "AMBER"]);
    let cell = |state: Option<bool>| match state {
        None => ("not received".to_string(), Some("2")),
        Some(true) => ("received, readable".to_string(), Some("32")),
        Some(false) => ("received, sealed".to_string(), Some("33")),
    };
    for (node, (g, a)) in nodes.iter().zip(&seen) {
        table.row(vec![(node.org.clone(), None), cell(*g), cell(*a)]);
    }
    println!("\n{}", table.render(on));
    Ok(())
}

/// Whether the node holds `id` and whether it can read it.
async fn lookup(handle: &NodeHandle, id: Digest) -> Option<bool> {
    let items = handle
        .list(ListFilter {
            all: true,
            ..ListFilter::default()
        })
        .await
        .ok()?;
    items.iter().find(|s| s.id == id).map(|s| s.readable)
}

/// Waits (bounded) until every node has at least one peer.
async fn wait_connected(nodes: &[DemoNode]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let mut ready = true;
        for node in nodes {
            if node
                .node
                .handle
                .peers()
                .await
                .map(|p| p.is_empty())
                .unwrap_or(true)
            {
                ready = false;
            }
        }
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
