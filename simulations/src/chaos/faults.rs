//! The chaos fault schedule: drawn from the seed before the run (kills,
//! partitions, a link down, per-link loss, bandwidth caps, the disk-full
//! window), then played against the cluster in real time. Overlapping
//! network faults are kept as one desired state per link and re-applied on
//! every change. Every fault heals by the end of the schedule.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::cluster::Cluster;
use super::history::{FaultRecord, History};
use super::netns::LinkFaults;
use super::workload::Workload;

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `kill -9`, then a restart on the same data directory at the end;
    /// `mid_publish` waits (up to 3 s) for a write in flight at that node.
    Kill {
        /// The node.
        node: usize,
        /// Kill while a write is in flight.
        mid_publish: bool,
        /// How long after the write started (ms), so some kills land before
        /// the request reaches the node and some while it is handled.
        delay_ms: u64,
    },
    /// iptables DROP between the groups.
    Partition {
        /// The groups.
        groups: Vec<Vec<usize>>,
    },
    /// The node's link set down.
    LinkDown {
        /// The node.
        node: usize,
    },
    /// Random loss on the node's link.
    Loss {
        /// The node.
        node: usize,
        /// Percent, 5–30.
        percent: u32,
    },
    /// A tbf cap on the node's link.
    Bandwidth {
        /// The node.
        node: usize,
        /// kbit/s.
        kbit: u32,
    },
    /// The node's data-directory tmpfs is full.
    DiskFull {
        /// The node.
        node: usize,
    },
}

impl Kind {
    /// The name used in the history and the report.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Kill { .. } => "kill",
            Kind::Partition { .. } => "partition",
            Kind::LinkDown { .. } => "link_down",
            Kind::Loss { .. } => "loss",
            Kind::Bandwidth { .. } => "bandwidth",
            Kind::DiskFull { .. } => "disk_full",
        }
    }

    fn nodes(&self) -> Vec<usize> {
        match self {
            Kind::Kill { node, .. }
            | Kind::LinkDown { node }
            | Kind::Loss { node, .. }
            | Kind::Bandwidth { node, .. }
            | Kind::DiskFull { node } => vec![*node],
            Kind::Partition { groups } => groups.concat(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Kind::Kill { mid_publish, .. } => {
                if *mid_publish {
                    "kill -9 during a write".into()
                } else {
                    "kill -9".into()
                }
            }
            Kind::Partition { groups } => format!("groups {groups:?}"),
            Kind::LinkDown { .. } => "eth0 down".into(),
            Kind::Loss { percent, .. } => format!("{percent}% loss both ways"),
            Kind::Bandwidth { kbit, .. } => format!("tbf {kbit} kbit/s"),
            Kind::DiskFull { .. } => "tmpfs filled".into(),
        }
    }
}

/// A fault and its window, ms since the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Start.
    pub start_ms: u64,
    /// End (heal, or restart).
    pub end_ms: u64,
    /// What.
    pub kind: Kind,
}

/// Draws the schedule for `n` nodes over `[warmup, duration)`.
pub fn schedule(seed: u64, n: usize, duration_ms: u64, disk_node: Option<usize>) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a0_5000);
    let warmup = 4_000u64;
    let end = duration_ms.saturating_sub(2_000).max(warmup + 8_000);
    let minutes = (duration_ms as f64 / 60_000.0).max(0.5);
    let mut faults = Vec::new();
    let window = |rng: &mut ChaCha8Rng, min: u64, max: u64| {
        let len = rng.random_range(min..=max).min(end - warmup);
        let start = rng.random_range(warmup..=end - len);
        (start, start + len)
    };
    // The disk-full window, ended by a kill of that node: writes it
    // acknowledged while its disk was full must survive the restart.
    let mut kill_windows: Vec<(usize, u64, u64)> = Vec::new();
    if let Some(node) = disk_node {
        let (start, stop) = window(&mut rng, 8_000, 15_000);
        faults.push(Fault {
            start_ms: start,
            end_ms: stop,
            kind: Kind::DiskFull { node },
        });
        let (kill, restart) = (stop.saturating_sub(600), stop + 1_500);
        kill_windows.push((node, kill, restart));
        faults.push(Fault {
            start_ms: kill,
            end_ms: restart,
            kind: Kind::Kill {
                node,
                mid_publish: false,
                delay_ms: 0,
            },
        });
    }
    // Kills: about three a minute, at least two more, two in three during a write.
    let kills = ((minutes * 3.0) as usize).max(2);
    let mut k = 0;
    let mut tries = 0;
    while k < kills && tries < 200 {
        tries += 1;
        let node = rng.random_range(0..n);
        let (start, stop) = window(&mut rng, 1_500, 5_000);
        // A node is killed at most once at a time, and at most half the
        // nodes are down together.
        let overlapping: Vec<_> = kill_windows
            .iter()
            .filter(|(_, s, e)| start < *e + 1_000 && *s < stop + 1_000)
            .collect();
        if overlapping.iter().any(|(m, _, _)| *m == node) || overlapping.len() + 1 > n / 2 {
            continue;
        }
        kill_windows.push((node, start, stop));
        faults.push(Fault {
            start_ms: start,
            end_ms: stop,
            kind: Kind::Kill {
                node,
                mid_publish: k % 3 != 2,
                delay_ms: rng.random_range(5..60),
            },
        });
        k += 1;
    }
    // Partitions: one a minute, at least one, into two groups.
    for _ in 0..(minutes as usize).max(1) {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let cut = rng.random_range(1..n.max(2));
        let (a, b) = order.split_at(cut.min(n));
        let mut groups = vec![a.to_vec(), b.to_vec()];
        for g in &mut groups {
            g.sort_unstable();
        }
        let (start, stop) = window(&mut rng, 8_000, 18_000);
        faults.push(Fault {
            start_ms: start,
            end_ms: stop,
            kind: Kind::Partition { groups },
        });
    }
    // One node's link down.
    let (start, stop) = window(&mut rng, 4_000, 10_000);
    faults.push(Fault {
        start_ms: start,
        end_ms: stop,
        kind: Kind::LinkDown {
            node: rng.random_range(0..n),
        },
    });
    // Loss: two windows a minute, at least two.
    for _ in 0..((minutes * 2.0) as usize).max(2) {
        let (start, stop) = window(&mut rng, 8_000, 20_000);
        faults.push(Fault {
            start_ms: start,
            end_ms: stop,
            kind: Kind::Loss {
                node: rng.random_range(0..n),
                percent: rng.random_range(5..=30),
            },
        });
    }
    // Bandwidth caps: one a minute, at least one.
    for _ in 0..(minutes as usize).max(1) {
        let (start, stop) = window(&mut rng, 8_000, 20_000);
        faults.push(Fault {
            start_ms: start,
            end_ms: stop,
            kind: Kind::Bandwidth {
                node: rng.random_range(0..n),
                kbit: [128, 256, 512][rng.random_range(0..3)],
            },
        });
    }
    faults.sort_by_key(|f| f.start_ms);
    faults
}

/// The network state every link should have while `active` faults hold.
fn links(n: usize, active: &[&Fault]) -> Vec<LinkFaults> {
    let mut links = vec![LinkFaults::default(); n];
    for fault in active {
        match &fault.kind {
            Kind::Partition { groups } => {
                for group in groups {
                    for &i in group {
                        for other in groups.iter().filter(|g| *g != group) {
                            if let Some(link) = links.get_mut(i) {
                                link.blocked.extend(other.iter().copied());
                            }
                        }
                    }
                }
            }
            Kind::LinkDown { node } => {
                if let Some(link) = links.get_mut(*node) {
                    link.down = true;
                }
            }
            Kind::Loss { node, percent } => {
                if let Some(link) = links.get_mut(*node) {
                    link.loss_percent =
                        Some(link.loss_percent.map_or(*percent, |p| p.max(*percent)));
                }
            }
            Kind::Bandwidth { node, kbit } => {
                if let Some(link) = links.get_mut(*node) {
                    link.cap_kbit = Some(link.cap_kbit.map_or(*kbit, |k| k.min(*kbit)));
                }
            }
            Kind::Kill { .. } | Kind::DiskFull { .. } => {}
        }
    }
    for link in &mut links {
        link.blocked.sort_unstable();
        link.blocked.dedup();
    }
    links
}

/// Plays `faults` against the cluster; returns when every fault has healed
/// and every killed node answers again. Errors applying a fault abort the run.
pub fn play(
    cluster: &Arc<Cluster>,
    workload: &Arc<Workload>,
    history: &History,
    faults: &[Fault],
    verbose: bool,
) -> Result<()> {
    let n = cluster.slots.len();
    // Points in time: (ms, fault index, starts?).
    let mut points: Vec<(u64, usize, bool)> = Vec::new();
    for (f, fault) in faults.iter().enumerate() {
        points.push((fault.start_ms, f, true));
        points.push((fault.end_ms, f, false));
    }
    points.sort_by_key(|&(t, f, start)| (t, !start, f));
    let mut active: Vec<usize> = Vec::new();
    let mut applied = vec![LinkFaults::default(); n];
    let mut started_at = vec![0u64; faults.len()];
    let mut mid_publish_hit = vec![false; faults.len()];
    let mut restarts: Vec<std::thread::JoinHandle<Result<()>>> = Vec::new();
    for (t, f, start) in points {
        let disk_full = active.iter().any(|&a| {
            faults
                .get(a)
                .is_some_and(|f| matches!(f.kind, Kind::DiskFull { .. }))
        });
        wait_until(cluster, t, disk_full)?;
        cluster.reap();
        let Some(fault) = faults.get(f) else { continue };
        if start {
            started_at[f] = cluster.now_ms();
            active.push(f);
        } else {
            active.retain(|&a| a != f);
        }
        if verbose {
            eprintln!(
                "[{:>6} ms] {} {} {}",
                cluster.now_ms(),
                if start { "start" } else { "heal " },
                fault.kind.name(),
                fault.kind.detail()
            );
        }
        match &fault.kind {
            Kind::Kill {
                node,
                mid_publish,
                delay_ms,
            } => {
                if start {
                    if *mid_publish {
                        let deadline = Instant::now() + Duration::from_secs(3);
                        while Instant::now() < deadline {
                            if workload
                                .in_flight
                                .get(*node)
                                .is_some_and(|w| w.load(Ordering::SeqCst))
                            {
                                std::thread::sleep(Duration::from_millis(*delay_ms));
                                mid_publish_hit[f] = true;
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    cluster.kill(*node);
                } else {
                    let cluster = Arc::clone(cluster);
                    let node = *node;
                    restarts.push(std::thread::spawn(move || cluster.start_node(node)));
                }
            }
            Kind::DiskFull { .. } => {
                if start {
                    cluster.fill_disk()?;
                } else {
                    cluster.free_disk()?;
                }
            }
            _ => {
                let now: Vec<&Fault> = active.iter().filter_map(|&a| faults.get(a)).collect();
                let wanted = links(n, &now);
                for (i, (want, have)) in wanted.iter().zip(applied.iter_mut()).enumerate() {
                    if want != have {
                        cluster.net.apply(i, want)?;
                        *have = want.clone();
                    }
                }
            }
        }
        if !start {
            let detail = match (&fault.kind, mid_publish_hit[f]) {
                (
                    Kind::Kill {
                        mid_publish: true, ..
                    },
                    false,
                ) => "kill -9 (no write was in flight within 3 s)".to_string(),
                _ => fault.kind.detail(),
            };
            history.fault(FaultRecord {
                kind: fault.kind.name().to_string(),
                nodes: fault.kind.nodes(),
                start_ms: started_at[f],
                end_ms: cluster.now_ms(),
                detail,
            });
        }
    }
    for restart in restarts {
        match restart.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("a restart thread panicked"),
        }
    }
    Ok(())
}

/// Waits until `t_ms`, keeping the disk full meanwhile if asked.
fn wait_until(cluster: &Cluster, t_ms: u64, disk_full: bool) -> Result<()> {
    loop {
        let now = cluster.now_ms();
        if now >= t_ms {
            return Ok(());
        }
        cluster.reap();
        if disk_full {
            cluster.fill_disk()?;
        }
        std::thread::sleep(Duration::from_millis((t_ms - now).min(100)));
    }
}
