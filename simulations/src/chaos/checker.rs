//! The chaos checker: after the last fault has healed, compares what every
//! live node stores (`list --all --json`, `status --json`) with the recorded
//! history. Acknowledged envelopes must be stored everywhere and readable by
//! exactly their intended recipients, nothing may be stored that no client
//! was promised (or could have been: an indeterminate answer), retractions
//! must be applied everywhere and frontiers must be equal.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use breakwater_node::{Status, Summary};
use serde::{Deserialize, Serialize};

use super::history::{Op, OpKind, Outcome};

/// What one live node holds.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Its bulletins (`list --all --json`; follow-ups are not listed).
    pub items: Vec<Summary>,
    /// Its status.
    pub status: Status,
    /// Follow-ups looked up one by one (`show ID --json`), when swept:
    /// the ones it holds.
    pub followups: Option<HashMap<String, Summary>>,
}

/// Author key and seq of acknowledged follow-ups, as their author's node
/// shows them: a node holds the follow-up once its frontier for that author
/// reaches the seq (a seq is never reused once acknowledged).
pub type FollowUpSeqs = HashMap<String, (String, u64)>;

/// The checker's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Acknowledged writes.
    pub acknowledged: usize,
    /// Acknowledged envelopes missing at one live node or more.
    pub lost_acknowledged: usize,
    /// (envelope, node) pairs missing.
    pub lost_pairs: usize,
    /// Stored envelopes no client was promised and none could have been.
    pub unexpected_stored: usize,
    /// (envelope, node) pairs readable by a node that is not a recipient.
    pub readable_by_non_recipient: usize,
    /// (envelope, node) pairs a recipient node cannot read.
    pub unreadable_by_recipient: usize,
    /// (retracted target, node) pairs where the target is not marked retracted.
    pub unretracted: usize,
    /// Envelopes stored that came from writes with an indeterminate answer.
    pub indeterminate_stored: usize,
    /// Every live node reports the same frontier.
    pub frontiers_equal: bool,
    /// Every live node stores the same set of envelopes.
    pub stored_sets_equal: bool,
    /// Nodes that answered.
    pub live_nodes: usize,
    /// The first problems found, in words.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Whether the cluster has converged on everything it promised.
    pub fn converged(&self) -> bool {
        self.lost_pairs == 0
            && self.unretracted == 0
            && self.frontiers_equal
            && self.stored_sets_equal
    }

    /// Whether every promise was kept.
    pub fn clean(&self) -> bool {
        self.converged()
            && self.lost_acknowledged == 0
            && self.unexpected_stored == 0
            && self.readable_by_non_recipient == 0
            && self.unreadable_by_recipient == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// The op number in a title "chaos op N from ORG".
fn op_number(title: &str) -> Option<u64> {
    title
        .strip_prefix("chaos op ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Checks the nodes' views (`None`: the node did not answer) against `ops`;
/// `orgs[i]` is node i's organisation.
pub fn check(
    ops: &[Op],
    views: &[Option<NodeView>],
    orgs: &[String],
    seqs: &FollowUpSeqs,
) -> Verdict {
    let mut v = Verdict::default();
    let n = orgs.len();
    let by_op: HashMap<u64, &Op> = ops.iter().map(|op| (op.op, op)).collect();
    // Envelope id → the write it came from.
    let mut origin: HashMap<String, &Op> = HashMap::new();
    for op in ops {
        if let Outcome::Ack { id } = &op.outcome {
            v.acknowledged += 1;
            origin.insert(id.clone(), op);
        }
    }
    let acked: BTreeSet<String> = origin.keys().cloned().collect();
    let live: Vec<(usize, &NodeView)> = views
        .iter()
        .enumerate()
        .filter_map(|(i, view)| view.as_ref().map(|view| (i, view)))
        .collect();
    v.live_nodes = live.len();
    // Everything stored anywhere, with the author's own summary when held.
    let mut stored: BTreeMap<String, &Summary> = BTreeMap::new();
    for (i, view) in &live {
        for item in &view.items {
            let own = orgs.get(*i).is_some_and(|org| *org == item.author_org);
            let key = item.id.to_hex();
            if own || !stored.contains_key(&key) {
                stored.insert(key, item);
            }
        }
    }
    // Trace envelopes no ack names back to a write.
    for (id, item) in &stored {
        if acked.contains(id) {
            continue;
        }
        let candidate: Option<&Op> = match item.kind.as_str() {
            "bulletin" => item
                .title
                .as_deref()
                .and_then(op_number)
                .and_then(|n| by_op.get(&n).copied()),
            kind => {
                let kind = if kind == "retraction" {
                    OpKind::Retract
                } else {
                    OpKind::Sight
                };
                let target = item.target.map(|t| t.to_hex());
                ops.iter().find(|op| {
                    op.kind == kind
                        && op.org == item.author_org
                        && op.target == target
                        && matches!(op.outcome, Outcome::Indeterminate { .. })
                })
            }
        };
        match candidate {
            Some(op)
                if matches!(op.outcome, Outcome::Indeterminate { .. })
                    && op.org == item.author_org =>
            {
                v.indeterminate_stored += 1;
                origin.insert(id.clone(), op);
            }
            Some(op) => {
                v.unexpected_stored += 1;
                v.problem(format!(
                    "{id} ({} by {}) is stored but op {} was answered {:?}",
                    item.kind, item.author_org, op.op, op.outcome
                ));
            }
            None => {
                v.unexpected_stored += 1;
                v.problem(format!(
                    "{id} ({} by {}) is stored but matches no write in the history",
                    item.kind, item.author_org
                ));
            }
        }
    }
    // Who should read an envelope.
    let audience = |id: &str| -> Option<BTreeSet<usize>> {
        let mut id = id.to_string();
        for _ in 0..4 {
            let op = origin.get(&id)?;
            match op.kind {
                OpKind::Green => return Some((0..n).collect()),
                OpKind::Amber => {
                    return Some(
                        (0..n)
                            .filter(|&j| {
                                orgs.get(j)
                                    .is_some_and(|org| *org == op.org || op.to.contains(org))
                            })
                            .collect(),
                    );
                }
                OpKind::Retract | OpKind::Sight => id = op.target.clone()?,
            }
        }
        None
    };
    // Lost acknowledged envelopes.
    let holds = |view: &NodeView, id: &str| -> bool {
        let Some(op) = origin.get(id) else {
            return false;
        };
        match op.kind {
            OpKind::Green | OpKind::Amber => view.items.iter().any(|s| s.id.to_hex() == id),
            OpKind::Retract | OpKind::Sight => match &view.followups {
                Some(shown) => shown.contains_key(id),
                None => seqs.get(id).is_some_and(|(author, seq)| {
                    view.status
                        .frontier
                        .iter()
                        .any(|(k, s)| k.to_string() == *author && s >= seq)
                }),
            },
        }
    };
    for id in &acked {
        let missing: Vec<usize> = (0..n)
            .filter(|&i| {
                views
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_none_or(|view| !holds(view, id))
            })
            .collect();
        if !missing.is_empty() {
            v.lost_acknowledged += 1;
            v.lost_pairs += missing.len();
            v.problem(format!("acknowledged {id} is missing at nodes {missing:?}"));
        }
    }
    // Readability and retractions, node by node.
    let mut unexpected_followups = 0;
    for (i, view) in &live {
        let by_id: HashMap<String, &Summary> =
            view.items.iter().map(|s| (s.id.to_hex(), s)).collect();
        let shown = view.followups.iter().flat_map(|f| f.values());
        for item in view.items.iter().chain(shown) {
            let id = item.id.to_hex();
            let Some(intended) = audience(&id) else {
                continue;
            };
            if item.readable && !intended.contains(i) {
                v.readable_by_non_recipient += 1;
                v.problem(format!("{id} is readable at node {i}, not a recipient"));
            }
            if !item.readable && intended.contains(i) {
                v.unreadable_by_recipient += 1;
                v.problem(format!("{id} is not readable at node {i}, a recipient"));
            }
        }
        // Every acknowledged retraction is applied here.
        for op in ops.iter().filter(|op| op.kind == OpKind::Retract) {
            let (Outcome::Ack { id }, Some(target)) = (&op.outcome, &op.target) else {
                continue;
            };
            match by_id.get(target) {
                Some(t) if t.retracted => {}
                _ => {
                    v.unretracted += 1;
                    v.problem(format!(
                        "{target} is not retracted at node {i} (retraction {id})"
                    ));
                }
            }
        }
        // Follow-ups cannot be listed, so the rest is counted: envelopes
        // held beyond the bulletins listed and the acknowledged follow-ups
        // held must come from writes whose answer was lost.
        let followups_held = acked
            .iter()
            .filter(|id| {
                origin
                    .get(*id)
                    .is_some_and(|op| matches!(op.kind, OpKind::Retract | OpKind::Sight))
                    && holds(view, id)
            })
            .count();
        let unknown =
            (view.status.envelopes as usize).saturating_sub(view.items.len() + followups_held);
        let may_be = ops
            .iter()
            .filter(|op| {
                matches!(op.kind, OpKind::Retract | OpKind::Sight)
                    && matches!(op.outcome, Outcome::Indeterminate { .. })
            })
            .count();
        if unknown > may_be {
            unexpected_followups = unexpected_followups.max(unknown - may_be);
            v.problem(format!(
                "node {i} holds {} envelopes: {} bulletins listed, {followups_held} acknowledged follow-ups, and {unknown} more than the {may_be} writes with a lost answer explain",
                view.status.envelopes,
                view.items.len()
            ));
        }
    }
    v.unexpected_stored += unexpected_followups;
    // Same envelopes and frontiers everywhere.
    let sets: Vec<BTreeSet<String>> = live
        .iter()
        .map(|(_, view)| view.items.iter().map(|s| s.id.to_hex()).collect())
        .collect();
    v.stored_sets_equal = sets.windows(2).all(|w| w[0] == w[1]) && live.len() == n;
    let frontiers: Vec<Vec<(String, u64)>> = live
        .iter()
        .map(|(_, view)| {
            let mut f: Vec<(String, u64)> = view
                .status
                .frontier
                .iter()
                .map(|(k, s)| (k.to_string(), *s))
                .collect();
            f.sort();
            f
        })
        .collect();
    v.frontiers_equal = frontiers.windows(2).all(|w| w[0] == w[1]) && live.len() == n;
    if !v.frontiers_equal {
        v.problem("frontiers differ between nodes".into());
    }
    if !v.stored_sets_equal {
        v.problem("stored envelope sets differ between nodes".into());
    }
    v
}
