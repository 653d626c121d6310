//! The chaos harness's network: one bridge namespace and one namespace per
//! node, joined by veth pairs, addressed from 198.18.0.0/15 (RFC 2544) with
//! no default route, plus the fault knobs on them (iptables DROP and
//! `statistic` loss in a per-namespace chain, `tc tbf` caps, link down).
//! [`Net`] removes every namespace it made when dropped, and [`Net::create`]
//! first removes namespaces left by harness processes that no longer run.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Every namespace the harness makes starts with this.
pub const PREFIX: &str = "bwchaos-";

/// The iptables chain that holds the injected faults in each node namespace.
const CHAIN: &str = "BWCHAOS";

/// Runs `program args`, failing with its stderr on one line.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why this machine cannot run the harness, if it cannot: not root, or
/// `ip`, `tc` or `iptables` (with the `statistic` match) missing.
pub fn unavailable() -> Option<String> {
    match sh("id", &["-u"]) {
        Ok(uid) if uid.trim() == "0" => {}
        Ok(_) => {
            return Some(
                "the chaos harness needs root (network namespaces, iptables, tc, tmpfs)".into(),
            );
        }
        Err(e) => return Some(format!("cannot tell whether this is root: {e}")),
    }
    for (tool, args, hint) in [
        ("ip", &["netns", "list"][..], "iproute2"),
        ("tc", &["-V"][..], "iproute2"),
        (
            "iptables",
            &["--version"][..],
            "iptables (apt-get install -y iptables)",
        ),
    ] {
        if let Err(e) = sh(tool, args) {
            return Some(format!("`{tool}` is not usable ({e}); install {hint}"));
        }
    }
    None
}

/// The network faults active on one node's link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Nodes this one cannot exchange packets with (a partition).
    pub blocked: Vec<usize>,
    /// Random loss on the link, in percent.
    pub loss_percent: Option<u32>,
    /// Outgoing bandwidth cap (tbf), kbit/s.
    pub cap_kbit: Option<u32>,
    /// The link is down.
    pub down: bool,
}

/// The namespaces of one harness run.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    nodes: Vec<String>,
}

/// A node's address on the harness network.
pub fn node_ip(i: usize) -> String {
    format!("198.18.0.{}", 10 + i)
}

impl Net {
    /// Removes namespaces of dead harness processes, then creates the bridge
    /// namespace and `n` node namespaces.
    pub fn create(n: usize) -> Result<Net> {
        if n > 200 {
            bail!("at most 200 nodes fit the harness subnet");
        }
        remove_stale();
        let pid = std::process::id();
        let mut net = Net {
            bridge: format!("{PREFIX}{pid}-br"),
            nodes: Vec::new(),
        };
        // From here on, Drop removes whatever exists.
        sh("ip", &["netns", "add", &net.bridge])?;
        let br = net.bridge.clone();
        sh("ip", &["-n", &br, "link", "set", "lo", "up"])?;
        sh("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("{PREFIX}{pid}-n{i}");
            sh("ip", &["netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            let port = format!("v{i}");
            sh(
                "ip",
                &[
                    "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            sh(
                "ip",
                &["-n", &br, "link", "set", &port, "master", "br0", "up"],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", node_ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            for table in [
                &["-N", CHAIN][..],
                &["-I", "INPUT", "-j", CHAIN],
                &["-I", "OUTPUT", "-j", CHAIN],
            ] {
                net.iptables(i, table)?;
            }
        }
        net.check_isolated()?;
        Ok(net)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> &str {
        self.nodes.get(i).map(String::as_str).unwrap_or("")
    }

    /// Checks the promises about addresses: only 198.18.0.0/15, no default
    /// route, in every namespace.
    fn check_isolated(&self) -> Result<()> {
        for ns in self.nodes.iter().chain(std::iter::once(&self.bridge)) {
            let routes = sh("ip", &["-n", ns, "-4", "route", "show"])?;
            if routes.lines().any(|l| l.starts_with("default")) {
                bail!("namespace {ns} has a default route");
            }
            let addrs = sh("ip", &["-n", ns, "-4", "-o", "addr", "show"])?;
            for line in addrs.lines() {
                let Some(addr) = line.split_whitespace().skip_while(|w| *w != "inet").nth(1) else {
                    continue;
                };
                if !(addr.starts_with("127.")
                    || addr.starts_with("198.18.")
                    || addr.starts_with("198.19."))
                {
                    bail!("namespace {ns} has address {addr} outside 198.18.0.0/15");
                }
            }
        }
        Ok(())
    }

    fn iptables(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", self.ns(i), "iptables", "-w"];
        all.extend(args);
        sh("ip", &all)
    }

    /// Drops `percent`% of the packets entering and leaving node `i`'s link.
    fn loss(&self, i: usize, percent: u32) -> Result<()> {
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        for dir in ["-i", "-o"] {
            self.iptables(
                i,
                &[
                    "-A",
                    CHAIN,
                    dir,
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Caps node `i`'s outgoing bandwidth with a token bucket.
    fn cap(&self, i: usize, kbit: u32) -> Result<()> {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                self.ns(i),
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "16kb",
                "latency",
                "300ms",
            ],
        )
        .map(|_| ())
    }

    /// Sets node `i`'s link down or up.
    fn link(&self, i: usize, up: bool) -> Result<()> {
        sh(
            "ip",
            &[
                "-n",
                self.ns(i),
                "link",
                "set",
                "eth0",
                if up { "up" } else { "down" },
            ],
        )
        .map(|_| ())
    }

    /// Sets node `i`'s faults to exactly `faults`: flushes its chain and
    /// qdisc, then applies what is active (faults overlap, so every change
    /// re-applies the whole set).
    pub fn apply(&self, i: usize, faults: &LinkFaults) -> Result<()> {
        self.iptables(i, &["-F", CHAIN])?;
        let _ = sh(
            "ip",
            &[
                "netns",
                "exec",
                self.ns(i),
                "tc",
                "qdisc",
                "del",
                "dev",
                "eth0",
                "root",
            ],
        );
        for &j in &faults.blocked {
            let peer = node_ip(j);
            self.iptables(i, &["-A", CHAIN, "-s", &peer, "-j", "DROP"])?;
            self.iptables(i, &["-A", CHAIN, "-d", &peer, "-j", "DROP"])?;
        }
        if let Some(percent) = faults.loss_percent {
            self.loss(i, percent)?;
        }
        if let Some(kbit) = faults.cap_kbit {
            self.cap(i, kbit)?;
        }
        self.link(i, !faults.down)
    }

    /// The number of node namespaces.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no node namespaces.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.bridge)) {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

/// Removes `bwchaos-PID-*` namespaces whose harness process is gone.
fn remove_stale() {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh("ip", &["netns", "del", name]);
        }
    }
}
