//! Scenario files (TOML, `simulations/scenarios/`) and the [`Plan`] a seed
//! turns one into: the topology, which nodes are hostile or join late, and a
//! time-ordered list of [`Action`]s for the driver in `run`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use anyhow::{Context as _, bail};
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::network::{Links, Shape};

/// A scenario as written in its TOML file. Times are seconds after the
/// warm-up (t = 0), when every initial node is up and connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (`port-split`).
    pub name: String,
    /// One line for the report.
    #[serde(default)]
    pub description: String,
    /// Number of nodes (one organisation each), hostile ones included.
    pub nodes: usize,
    /// Length of the scripted part.
    pub duration_s: f64,
    /// After the script every impairment is lifted; how long to wait at most
    /// for full delivery then.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// Quiet time before t = 0, used to measure idle traffic.
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    /// Node settings.
    #[serde(default)]
    pub node: NodeSettings,
    /// Who may connect to whom.
    #[serde(default)]
    pub topology: Topology,
    /// How every link behaves outside impairment windows (and in the
    /// baseline).
    #[serde(default)]
    pub link: LinkSettings,
    /// Steady publishing.
    #[serde(default)]
    pub publish: Option<Publishing>,
    /// Bursts of bulletins from one node.
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// Windows of degraded links.
    #[serde(default)]
    pub impairments: Vec<Impairment>,
    /// Windows of partition.
    #[serde(default)]
    pub partitions: Vec<Partition>,
    /// Nodes that crash and come back.
    #[serde(default)]
    pub crashes: Vec<Crash>,
    /// Nodes that start late.
    #[serde(default)]
    pub late_joiners: Option<LateJoiners>,
    /// Hostile members.
    #[serde(default)]
    pub hostile: Option<Hostile>,
    /// A member that otherwise behaves well but signs one seq twice.
    #[serde(default)]
    pub equivocator: Option<Equivocator>,
}

fn default_drain() -> f64 {
    60.0
}

fn default_warmup() -> f64 {
    3.0
}

/// Intervals of every node, scaled down from production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// Anti-entropy interval.
    pub sync_interval_ms: u64,
    /// Gossipsub heartbeat.
    pub heartbeat_ms: u64,
    /// Longest redial backoff (also how often refused non-neighbours are retried).
    pub max_redial_backoff_ms: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            sync_interval_ms: 2000,
            heartbeat_ms: 500,
            max_redial_backoff_ms: 2000,
        }
    }
}

/// The healthy shape of every link; default: no added delay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSettings {
    /// One-way delay, ms.
    pub latency_ms: f64,
    /// Uniform jitter on the delay, ± ms.
    pub jitter_ms: f64,
}

impl LinkSettings {
    /// The link shape outside impairment windows.
    pub fn shape(&self) -> Shape {
        Shape {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            ..Shape::default()
        }
    }
}

/// Who may connect to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// `random`: each node links to `degree` random others (links are
    /// undirected, so degrees vary); `full`: every pair.
    pub kind: TopologyKind,
    /// Links each node picks.
    pub degree: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            kind: TopologyKind::Random,
            degree: 6,
        }
    }
}

/// Topology kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// A ring (so the graph is connected) plus random links.
    Random,
    /// Every node knows every other.
    Full,
}

/// Steady publishing by random live honest nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publishing {
    /// From.
    #[serde(default)]
    pub start_s: f64,
    /// Until (default: the end of the script).
    #[serde(default)]
    pub end_s: Option<f64>,
    /// Bulletins per second over the whole consortium.
    pub rate_per_s: f64,
    /// Share sealed AMBER to a few organisations (the rest is GREEN).
    #[serde(default)]
    pub amber_fraction: f64,
    /// Organisations an AMBER bulletin names besides the author's.
    #[serde(default = "default_amber_orgs")]
    pub amber_orgs: usize,
}

fn default_amber_orgs() -> usize {
    2
}

/// A burst of bulletins from one node, such as an IOC dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// When.
    pub at_s: f64,
    /// How many.
    pub count: usize,
    /// Node index (default: a random live honest node).
    #[serde(default)]
    pub from: Option<usize>,
}

/// A window of degraded links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impairment {
    /// From.
    pub start_s: f64,
    /// Until.
    pub end_s: f64,
    /// One-way latency, ms.
    #[serde(default)]
    pub latency_ms: f64,
    /// Jitter, ± ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Bandwidth cap per connection and direction, Mbit/s.
    #[serde(default)]
    pub bandwidth_mbit: Option<f64>,
    /// Share of live connections reset per minute.
    #[serde(default)]
    pub resets_per_min: f64,
    /// Share of live connections stalled per minute.
    #[serde(default)]
    pub stalls_per_min: f64,
    /// Length of a stall.
    #[serde(default = "default_stall")]
    pub stall_ms: u64,
    /// Probability that a dial is refused.
    #[serde(default)]
    pub refuse_dial: f64,
}

fn default_stall() -> u64 {
    2000
}

impl Impairment {
    /// The link shape while this window is open.
    pub fn shape(&self) -> Shape {
        Shape {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            bandwidth_mbit: self.bandwidth_mbit,
            refuse_dial: self.refuse_dial,
        }
    }
}

/// A window during which the nodes are split into groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Split at.
    pub start_s: f64,
    /// Heal at.
    pub end_s: f64,
    /// Number of groups (random, even sizes).
    #[serde(default = "default_groups")]
    pub groups: usize,
}

fn default_groups() -> usize {
    2
}

/// Nodes that crash and restart on the same store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    /// Crash at.
    pub at_s: f64,
    /// Restart at (default: the end of the script).
    #[serde(default)]
    pub restart_s: Option<f64>,
    /// Share of the honest nodes.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Or a number of nodes.
    #[serde(default)]
    pub count: Option<usize>,
    /// Which ones.
    #[serde(default)]
    pub select: CrashSelect,
}

/// How crashed nodes are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashSelect {
    /// Highest degree first.
    BestConnected,
    /// At random.
    #[default]
    Random,
}

/// Nodes that start after t = 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateJoiners {
    /// How many.
    pub count: usize,
    /// When they start.
    pub at_s: f64,
}

/// Hostile members: raw swarms with valid member keys that flood garbage,
/// forged signatures and equivocating envelopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostile {
    /// How many.
    pub count: usize,
    /// Attack from.
    #[serde(default)]
    pub start_s: f64,
    /// Messages per second per hostile node.
    #[serde(default = "default_hostile_rate")]
    pub rate_per_s: f64,
}

/// An equivocator: a member (not running a node) whose valid feed is pushed
/// straight into honest nodes, sync-free, as an air-gap import would: seqs
/// `1..fork_seq` to all of them, then two branches from `fork_seq` on, one to
/// each half. Branch B is one envelope longer, so that a node holding branch
/// A meets the fork through sync too (equal-length branches are invisible to
/// frontiers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Equivocator {
    /// When the feed is pushed.
    pub at_s: f64,
    /// The seq signed twice (at least 1).
    #[serde(default = "default_fork_seq")]
    pub fork_seq: u64,
}

fn default_fork_seq() -> u64 {
    3
}

fn default_hostile_rate() -> f64 {
    20.0
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let scenario: Scenario =
            toml::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Rejects scenarios that cannot run.
    pub fn check(&self) -> anyhow::Result<()> {
        let hostile =
            self.hostile.as_ref().map_or(0, |h| h.count) + usize::from(self.equivocator.is_some());
        if self.nodes < 2 + hostile {
            bail!("a scenario needs at least two honest nodes");
        }
        if self.duration_s <= 0.0 {
            bail!("duration_s must be positive");
        }
        for p in &self.partitions {
            if p.groups < 2 || p.end_s < p.start_s {
                bail!("a partition needs at least two groups and end_s >= start_s");
            }
        }
        for w in &self.impairments {
            if w.end_s < w.start_s {
                bail!("an impairment window needs end_s >= start_s");
            }
        }
        if self.equivocator.as_ref().is_some_and(|e| e.fork_seq == 0) {
            bail!("equivocator.fork_seq must be at least 1");
        }
        if let Some(publish) = &self.publish
            && publish.rate_per_s <= 0.0
        {
            bail!("publish.rate_per_s must be positive");
        }
        Ok(())
    }

    /// The same scenario without any impairment, partition, crash, late
    /// joiner or hostile member: what `baseline` is measured on.
    pub fn unimpaired(&self) -> Scenario {
        let mut clean = self.clone();
        clean.impairments.clear();
        clean.partitions.clear();
        clean.crashes.clear();
        clean.late_joiners = None;
        clean.hostile = None;
        clean.equivocator = None;
        clean
    }

    /// True when the scenario has something for a baseline to differ from.
    pub fn is_impaired(&self) -> bool {
        *self != self.unimpaired()
    }
}

/// What the driver does at a moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Node `node` publishes; `to` lists AMBER recipient orgs (empty: GREEN).
    Publish {
        /// Author.
        node: usize,
        /// AMBER recipients besides the author's organisation.
        to: Vec<usize>,
    },
    /// Links take this shape, with chaos rates per minute.
    Impair {
        /// Index into the scenario's impairments.
        window: usize,
    },
    /// Links are clean again.
    Unimpair,
    /// Split into groups (`group[node]`).
    Split(Vec<usize>),
    /// End the partition.
    Heal,
    /// Crash these nodes.
    Crash(Vec<usize>),
    /// Restart these nodes on their stores.
    Restart(Vec<usize>),
    /// Start late joiners.
    Join(Vec<usize>),
    /// Hostile nodes start their attack.
    Attack,
    /// The equivocator's feed and its two branches are pushed.
    Equivocate,
}

/// One action at a time (ms after t = 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    /// When.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

/// A scenario resolved with a seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenario (with `nodes` overridden if asked).
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// Neighbours of each node.
    pub neighbours: Vec<Vec<usize>>,
    /// Undirected links (`None`: full mesh).
    pub links: Option<Links>,
    /// Hostile node indices.
    pub hostile: BTreeSet<usize>,
    /// The equivocator's index (never started, not honest).
    pub equivocator: Option<usize>,
    /// Nodes not started at t = 0.
    pub late: BTreeSet<usize>,
    /// The script, in time order.
    pub actions: Vec<Timed>,
}

fn ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

impl Plan {
    /// Resolves `scenario` with `seed`; the same inputs give the same plan.
    pub fn new(scenario: &Scenario, seed: u64) -> anyhow::Result<Plan> {
        scenario.check()?;
        let n = scenario.nodes;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (neighbours, links) = topology(&scenario.topology, n, &mut rng);

        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let n_hostile = scenario.hostile.as_ref().map_or(0, |h| h.count);
        let hostile: BTreeSet<usize> = order.iter().copied().take(n_hostile).collect();
        let equivocator = scenario
            .equivocator
            .as_ref()
            .and_then(|_| order.get(n_hostile).copied());
        let n_hostile = n_hostile + usize::from(equivocator.is_some());
        let honest: Vec<usize> = (0..n)
            .filter(|i| !hostile.contains(i) && Some(*i) != equivocator)
            .collect();
        let mut late = BTreeSet::new();
        let mut actions = Vec::new();
        if let Some(joiners) = &scenario.late_joiners {
            // Never node 0 of the honest ones, so someone is always up.
            late = order
                .iter()
                .copied()
                .skip(n_hostile)
                .filter(|i| Some(i) != honest.first())
                .take(joiners.count.min(honest.len().saturating_sub(1)))
                .collect();
            actions.push(Timed {
                at_ms: ms(joiners.at_s),
                action: Action::Join(late.iter().copied().collect()),
            });
        }
        let end_ms = ms(scenario.duration_s);

        for (window, w) in scenario.impairments.iter().enumerate() {
            actions.push(Timed {
                at_ms: ms(w.start_s),
                action: Action::Impair { window },
            });
            actions.push(Timed {
                at_ms: ms(w.end_s).min(end_ms),
                action: Action::Unimpair,
            });
        }
        for p in &scenario.partitions {
            let mut shuffled: Vec<usize> = (0..n).collect();
            shuffled.shuffle(&mut rng);
            let mut group = vec![0; n];
            for (k, node) in shuffled.into_iter().enumerate() {
                group[node] = k % p.groups;
            }
            actions.push(Timed {
                at_ms: ms(p.start_s),
                action: Action::Split(group),
            });
            actions.push(Timed {
                at_ms: ms(p.end_s).min(end_ms),
                action: Action::Heal,
            });
        }
        // Down intervals per node, to pick live publishers.
        let mut down: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n];
        for node in &late {
            if let Some(j) = &scenario.late_joiners {
                down[*node].push((0, ms(j.at_s)));
            }
        }
        for crash in &scenario.crashes {
            let mut candidates: Vec<usize> = honest
                .iter()
                .copied()
                .filter(|i| !late.contains(i))
                .collect();
            match crash.select {
                CrashSelect::Random => candidates.shuffle(&mut rng),
                CrashSelect::BestConnected => {
                    candidates.sort_by_key(|&i| (std::cmp::Reverse(neighbours[i].len()), i))
                }
            }
            let count = crash
                .count
                .or_else(|| {
                    crash
                        .fraction
                        .map(|f| (f * honest.len() as f64).round() as usize)
                })
                .unwrap_or(1)
                .min(candidates.len().saturating_sub(1));
            let chosen: Vec<usize> = candidates.into_iter().take(count).collect();
            let at = ms(crash.at_s);
            let back = crash.restart_s.map_or(end_ms, ms).min(end_ms);
            for &node in &chosen {
                down[node].push((at, back));
            }
            actions.push(Timed {
                at_ms: at,
                action: Action::Crash(chosen.clone()),
            });
            actions.push(Timed {
                at_ms: back,
                action: Action::Restart(chosen),
            });
        }
        let is_up = |node: usize, t: u64| !down[node].iter().any(|&(from, to)| t >= from && t < to);
        let pick_author = |t: u64, rng: &mut ChaCha8Rng| -> Option<usize> {
            let live: Vec<usize> = honest.iter().copied().filter(|&i| is_up(i, t)).collect();
            live.get(rng.random_range(0..live.len().max(1))).copied()
        };
        if let Some(publish) = &scenario.publish {
            let start = ms(publish.start_s);
            let stop = publish.end_s.map_or(end_ms, ms).min(end_ms);
            let gap = 1000.0 / publish.rate_per_s;
            let mut t = start as f64;
            while (t as u64) < stop {
                let at = t as u64;
                if let Some(node) = pick_author(at, &mut rng) {
                    let to = if rng.random_bool(publish.amber_fraction.clamp(0.0, 1.0)) {
                        let mut others: Vec<usize> =
                            honest.iter().copied().filter(|&o| o != node).collect();
                        others.shuffle(&mut rng);
                        others.truncate(publish.amber_orgs.max(1));
                        others
                    } else {
                        Vec::new()
                    };
                    actions.push(Timed {
                        at_ms: at,
                        action: Action::Publish { node, to },
                    });
                }
                // Exponential gaps: a Poisson stream of bulletins.
                let u: f64 = rng.random_range(1e-9..1.0);
                t += -gap * u.ln();
            }
        }
        for burst in &scenario.bursts {
            let at = ms(burst.at_s);
            let from = match burst.from {
                Some(node) if node < n && honest.contains(&node) => Some(node),
                Some(node) => bail!("burst from node {node}, which is hostile or out of range"),
                None => pick_author(at, &mut rng),
            };
            if let Some(node) = from {
                for _ in 0..burst.count {
                    actions.push(Timed {
                        at_ms: at,
                        action: Action::Publish {
                            node,
                            to: Vec::new(),
                        },
                    });
                }
            }
        }
        if let Some(h) = &scenario.hostile
            && h.count > 0
        {
            actions.push(Timed {
                at_ms: ms(h.start_s),
                action: Action::Attack,
            });
        }
        if let Some(e) = &scenario.equivocator {
            actions.push(Timed {
                at_ms: ms(e.at_s),
                action: Action::Equivocate,
            });
        }
        // Nothing happens after the script: the driver lifts what is left.
        actions.retain(|a| a.at_ms <= end_ms);
        // Stable sort: simultaneous actions keep their order of creation.
        actions.sort_by_key(|a| a.at_ms);
        Ok(Plan {
            scenario: scenario.clone(),
            seed,
            neighbours,
            links,
            hostile,
            equivocator,
            late,
            actions,
        })
    }

    /// The baseline of this plan: the same nodes, topology and publishing
    /// script, with every impairment, partition, crash, late start and
    /// hostile member removed (hostile members run as passive honest nodes).
    pub fn unimpaired(&self) -> Plan {
        Plan {
            scenario: self.scenario.unimpaired(),
            seed: self.seed,
            neighbours: self.neighbours.clone(),
            links: self.links.clone(),
            hostile: BTreeSet::new(),
            equivocator: None,
            late: BTreeSet::new(),
            actions: self
                .actions
                .iter()
                .filter(|a| matches!(a.action, Action::Publish { .. }))
                .cloned()
                .collect(),
        }
    }

    /// Number of nodes.
    pub fn n(&self) -> usize {
        self.scenario.nodes
    }

    /// Honest node indices.
    pub fn honest(&self) -> Vec<usize> {
        (0..self.n()).filter(|&i| self.is_honest(i)).collect()
    }

    /// Whether node `i` is honest (neither hostile nor the equivocator).
    pub fn is_honest(&self, i: usize) -> bool {
        !self.hostile.contains(&i) && Some(i) != self.equivocator
    }
}

fn topology(
    topology: &Topology,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<Vec<usize>>, Option<Links>) {
    if topology.kind == TopologyKind::Full || topology.degree + 1 >= n {
        let neighbours = (0..n)
            .map(|i| (0..n).filter(|&j| j != i).collect())
            .collect();
        return (neighbours, None);
    }
    let mut links = HashSet::new();
    // A ring first: the graph is connected whatever the random links are.
    for i in 0..n {
        let j = (i + 1) % n;
        links.insert((i.min(j), i.max(j)));
    }
    for i in 0..n {
        let mut others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        others.shuffle(rng);
        for j in others.into_iter().take(topology.degree.saturating_sub(1)) {
            links.insert((i.min(j), i.max(j)));
        }
    }
    let mut neighbours = vec![Vec::new(); n];
    let mut sorted: Vec<&(usize, usize)> = links.iter().collect();
    sorted.sort();
    for &&(a, b) in &sorted {
        neighbours[a].push(b);
        neighbours[b].push(a);
    }
    (neighbours, Some(links))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn scenario() -> Scenario {
        toml::from_str(
            r#"
            name = "t"
            nodes = 20
            duration_s = 30
            [publish]
            rate_per_s = 2
            amber_fraction = 0.5
            [[partitions]]
            start_s = 5
            end_s = 10
            [[crashes]]
            at_s = 3
            restart_s = 20
            fraction = 0.25
            select = "best-connected"
            [hostile]
            count = 2
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_seed_makes_the_plan_repeatable() {
        let a = Plan::new(&scenario(), 7).unwrap();
        let b = Plan::new(&scenario(), 7).unwrap();
        let c = Plan::new(&scenario(), 8).unwrap();
        assert_eq!(a.actions, b.actions);
        assert_eq!(a.neighbours, b.neighbours);
        assert_ne!(a.actions, c.actions);
        assert_eq!(a.hostile.len(), 2);
    }

    #[test]
    fn publishers_are_live_honest_nodes() {
        let plan = Plan::new(&scenario(), 3).unwrap();
        let crashed: Vec<usize> = plan
            .actions
            .iter()
            .find_map(|a| match &a.action {
                Action::Crash(nodes) => Some(nodes.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(crashed.len(), 5);
        for timed in &plan.actions {
            if let Action::Publish { node, .. } = &timed.action {
                assert!(!plan.hostile.contains(node));
                if (3000..20000).contains(&timed.at_ms) {
                    assert!(!crashed.contains(node));
                }
            }
        }
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let scenario = Scenario::load(&path).unwrap();
                Plan::new(&scenario, 1).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 7);
    }
}
