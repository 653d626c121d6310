//! `breakwater doctor`: checks one node's set-up and prints what to fix.
//! It reads the data directory (permissions, keys, config, roster), asks
//! the node's API when it runs, binds the API and P2P addresses when it
//! does not, and dials the roster's other nodes. Exits non-zero when
//! something is wrong; an unreachable member is only a warning, unless no
//! other member is reachable at all. The clock offset against connected
//! peers is the node's own measurement, read from its API.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use breakwater_node::{Config, DataDir, Status};
use breakwater_protocol::{NodePublicKey, SignedRoster};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::client::Client;

/// The largest clock offset against a peer that passes: well inside the
/// five minutes the protocol tolerates.
const MAX_CLOCK_OFFSET: Duration = Duration::from_secs(30);

/// How long a dial to a roster address may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// The findings so far, printed as they come.
#[derive(Debug, Default)]
struct Report {
    problems: usize,
    warnings: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("ok    {what}");
    }

    fn warn(&mut self, what: &str, fix: &str) {
        self.warnings += 1;
        println!("warn  {what}\n      fix: {fix}");
    }

    fn fail(&mut self, what: &str, fix: &str) {
        self.problems += 1;
        println!("FAIL  {what}\n      fix: {fix}");
    }
}

/// Runs every check on `data_dir`; fails when one found a problem.
pub async fn run(data_dir: &DataDir) -> Result<()> {
    let mut report = Report::default();
    check(data_dir, &mut report).await;
    match (report.problems, report.warnings) {
        (0, 0) => {
            println!("all checks passed");
            Ok(())
        }
        (0, warnings) => {
            println!("no problem found; {warnings} warning(s) above");
            Ok(())
        }
        (problems, _) => bail!("doctor found {problems} problem(s); each is followed by its fix"),
    }
}

async fn check(data_dir: &DataDir, report: &mut Report) {
    let root = data_dir.root();
    if !data_dir.is_initialised() {
        report.fail(
            &format!("no node in {} (no keys.json)", root.display()),
            &format!("run `breakwater init --data-dir {}`", root.display()),
        );
        return;
    }
    check_files(data_dir, report);
    let keys = match data_dir.keys() {
        Ok(keys) => {
            report.ok(&format!(
                "keys.json is private (node key {})",
                keys.node_public()
            ));
            Some(keys)
        }
        Err(e) => {
            let fix = match &e {
                breakwater_node::ConfigError::TooOpen { path, .. } => {
                    format!("chmod 600 {}", path.display())
                }
                _ => format!(
                    "restore keys.json of {} from its backup",
                    data_dir.root().display()
                ),
            };
            report.fail(&e.to_string(), &fix);
            None
        }
    };
    let config = match data_dir.config() {
        Ok(config) => {
            report.ok("config.json is valid");
            config
        }
        Err(e) => {
            report.fail(
                &e.to_string(),
                &format!(
                    "edit {} (its keys are listed in docs/PROTOCOL.md)",
                    data_dir.config_path().display()
                ),
            );
            return;
        }
    };
    let running = running_status(data_dir).await;
    check_ports(&config, running.as_ref(), report).await;
    let roster = match crate::roster_in_force(data_dir).await {
        Ok(Some(roster)) => {
            report.ok(&format!(
                "roster version {} of {} in force",
                roster.roster.version, roster.roster.name
            ));
            roster
        }
        Ok(None) => {
            report.fail(
                "this node has joined no consortium",
                "run `breakwater join ROSTER` with the roster the convenor sent",
            );
            return;
        }
        Err(e) => {
            report.fail(
                &format!("cannot read the roster: {e:#}"),
                "stop whatever else holds the store, or start the node",
            );
            return;
        }
    };
    let own = keys.map(|keys| keys.node_public());
    check_peers(&roster, own, running.as_ref(), report).await;
    check_clocks(running.as_ref(), report);
}

/// The clock offset against each connected peer (the node measures it over
/// `/breakwater/clock/1`): beyond [`MAX_CLOCK_OFFSET`] one side's clock is
/// wrong, and the mesh refuses envelopes dated more than five minutes ahead.
fn check_clocks(running: Option<&Status>, report: &mut Report) {
    let Some(status) = running else {
        report.warn(
            "the clock offset against peers was not measured: the node is not running",
            "start the node (`breakwater run`) and run doctor again",
        );
        return;
    };
    let measured: Vec<(String, i64)> = status
        .peers
        .iter()
        .filter_map(|peer| {
            let org = peer.org_id.clone().unwrap_or_else(|| peer.peer_id.clone());
            Some((org, peer.clock_offset_ms?))
        })
        .collect();
    if measured.is_empty() {
        report.warn(
            "the clock offset against peers was not measured: no connected peer has answered yet",
            "wait until peers are connected, then run doctor again",
        );
        return;
    }
    let mut agree = 0;
    for (org, offset) in &measured {
        if offset.unsigned_abs() > MAX_CLOCK_OFFSET.as_millis() as u64 {
            let side = if *offset > 0 { "ahead of" } else { "behind" };
            report.fail(
                &format!(
                    "{org}'s clock is {:.1} s {side} this node's",
                    offset.unsigned_abs() as f64 / 1000.0
                ),
                "synchronise both hosts' clocks with NTP (chrony or systemd-timesyncd); if most peers disagree with this host, it is this host's",
            );
        } else {
            agree += 1;
        }
    }
    if agree > 0 {
        let largest = measured
            .iter()
            .map(|(_, offset)| offset.unsigned_abs())
            .filter(|offset| *offset <= MAX_CLOCK_OFFSET.as_millis() as u64)
            .max()
            .unwrap_or_default();
        report.ok(&format!(
            "clocks agree with {agree} connected peer(s) (largest offset {largest} ms)"
        ));
    }
}

/// The data directory and the API token are for this node's user only.
fn check_files(data_dir: &DataDir, report: &mut Report) {
    let root = data_dir.root();
    match mode_of(root) {
        Ok(mode) if mode & 0o077 != 0 => report.fail(
            &format!(
                "{} holds the store and secrets but its mode is {mode:04o}",
                root.display()
            ),
            &format!("chmod 700 {}", root.display()),
        ),
        Ok(_) => report.ok(&format!("{} is private", root.display())),
        Err(e) => report.fail(
            &format!("cannot read {}: {e}", root.display()),
            "check the directory's owner",
        ),
    }
    let token = data_dir.token_path();
    match breakwater_node::config::check_private(&token) {
        Ok(()) => report.ok("api-token is private"),
        Err(e) => report.fail(&e.to_string(), &format!("chmod 600 {}", token.display())),
    }
}

fn mode_of(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// The running node's status, when the program at the API address proves
/// it holds this node's token.
async fn running_status(data_dir: &DataDir) -> Option<Status> {
    let client = Client::for_data_dir(data_dir).ok()?;
    client.get::<Status>("/v1/status").await.ok()
}

/// The API and P2P addresses are free, or held by this node.
async fn check_ports(config: &Config, running: Option<&Status>, report: &mut Report) {
    if let Some(status) = running {
        report.ok(&format!(
            "the API at {} is this node's (it runs)",
            config.api
        ));
        if status.listen.is_empty() {
            report.fail(
                "the running node listens on no P2P address",
                "read its log: a `listen` address in config.json is unusable",
            );
        } else {
            report.ok(&format!(
                "P2P is this node's: listening on {}",
                status.listen.join(", ")
            ));
        }
        return;
    }
    match std::net::TcpListener::bind(config.api) {
        Ok(_) => report.ok(&format!("the API address {} is free", config.api)),
        Err(e) => report.fail(
            &format!(
                "the API address {} is taken by another program ({e})",
                config.api
            ),
            "stop that program, or set another `api` address in config.json",
        ),
    }
    for addr in &config.listen {
        let Some((socket, udp)) = socket_of(addr) else {
            continue;
        };
        if socket.port() == 0 {
            continue;
        }
        let bound = if udp {
            std::net::UdpSocket::bind(socket).map(drop)
        } else {
            std::net::TcpListener::bind(socket).map(drop)
        };
        match bound {
            Ok(()) => report.ok(&format!("the P2P address {addr} is free")),
            Err(e) => report.fail(
                &format!("the P2P address {addr} is taken by another program ({e})"),
                "stop that program, or change `listen` in config.json (and the card's addresses with it)",
            ),
        }
    }
}

/// The socket address of an `/ip4|ip6/…/tcp/P` or `…/udp/P/quic-v1`
/// multiaddr, and whether it is UDP.
fn socket_of(addr: &Multiaddr) -> Option<(SocketAddr, bool)> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some((SocketAddr::new(ip, port), false)),
        Protocol::Udp(port) => Some((SocketAddr::new(ip, port), true)),
        _ => None,
    }
}

/// Which of the roster's other nodes this node reaches: connected ones when
/// it runs, else (and for the rest) by a TCP dial to their card addresses.
async fn check_peers(
    roster: &SignedRoster,
    own: Option<NodePublicKey>,
    running: Option<&Status>,
    report: &mut Report,
) {
    let connected: Vec<&str> = running
        .map(|status| status.peers.iter().map(|p| p.peer_id.as_str()).collect())
        .unwrap_or_default();
    let mut dials = Vec::new();
    for member in roster.roster.members.iter().filter(|m| !m.revoked) {
        for node in &member.card.nodes {
            if Some(node.node_key) == own {
                continue;
            }
            let org = member.card.org_id.to_string();
            let peer_id = node.node_key.peer_id().map(|id| id.to_string());
            let is_connected = peer_id.as_deref().is_some_and(|id| connected.contains(&id));
            let addrs = node.addrs.clone();
            dials.push(async move {
                let reached = if is_connected {
                    Some("connected".to_string())
                } else {
                    dial_any(&addrs).await
                };
                (org, node.node_key, addrs, reached)
            });
        }
    }
    if dials.is_empty() {
        report.ok("the roster lists no other node");
        return;
    }
    let results = futures::future::join_all(dials).await;
    let n_reached = results.iter().filter(|r| r.3.is_some()).count();
    for (org, key, addrs, reached) in &results {
        match reached {
            Some(how) => report.ok(&format!("{org} (node {key}) is reachable: {how}")),
            None if addrs.is_empty() => report.warn(
                &format!("{org} (node {key}) announces no address"),
                &format!("nothing to do here: {org} connects in (or announces an address)"),
            ),
            None => report.warn(
                &format!("{org} (node {key}) is unreachable at {}", addrs.join(", ")),
                &format!("ask {org} whether its node runs; check firewalls between you"),
            ),
        }
    }
    if n_reached == 0 && results.iter().any(|r| !r.2.is_empty()) {
        report.fail(
            "no other member's node is reachable",
            "check this host's network and firewall (outbound TCP to the roster's addresses)",
        );
    }
}

/// Dials each TCP address until one answers; says which.
async fn dial_any(addrs: &[String]) -> Option<String> {
    for addr in addrs {
        let Ok(multiaddr) = addr.parse::<Multiaddr>() else {
            continue;
        };
        let mut parts = multiaddr.iter();
        let host = match parts.next() {
            Some(Protocol::Ip4(ip)) => ip.to_string(),
            Some(Protocol::Ip6(ip)) => ip.to_string(),
            Some(Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name)) => {
                name.to_string()
            }
            _ => continue,
        };
        let Some(Protocol::Tcp(port)) = parts.next() else {
            continue;
        };
        let dial = tokio::net::TcpStream::connect((host.as_str(), port));
        if let Ok(Ok(_)) = tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            return Some(format!("TCP connect to {addr}"));
        }
    }
    None
}
