//! The recorded history of a chaos run, Jepsen-style: every client
//! operation with its start and end time and what the client was told
//! (acknowledged with an id, refused with an error, or indeterminate when
//! the answer was lost), every read, every fault as it was applied, and
//! the convergence probes. Written as `history.jsonl`, one event a line.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What a writer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A GREEN bulletin.
    Green,
    /// An AMBER bulletin to some organisations.
    Amber,
    /// A retraction of one of the writer's own bulletins.
    Retract,
    /// A sighting of a readable bulletin's indicator.
    Sight,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Acknowledged with this envelope id: a promise.
    Ack {
        /// Envelope id, hex.
        id: String,
    },
    /// Refused with an error the node (or the CLI) gave: nothing may be stored.
    Refused {
        /// The error line.
        error: String,
    },
    /// The answer was lost (the process died mid-request): may or may not
    /// be stored.
    Indeterminate {
        /// The error line.
        error: String,
    },
}

/// One client operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    /// Its number (in the title or reason, so stored envelopes can be
    /// traced back to it).
    pub op: u64,
    /// The node it was sent to.
    pub node: usize,
    /// That node's organisation.
    pub org: String,
    /// What it asked for.
    pub kind: OpKind,
    /// AMBER recipients (organisations).
    pub to: Vec<String>,
    /// Retraction or sighting target (id, hex).
    pub target: Option<String>,
    /// Sent, ms since the run started.
    pub start_ms: u64,
    /// Answered, ms since the run started.
    pub end_ms: u64,
    /// The answer.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One read by a concurrent reader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Read {
    /// The node read.
    pub node: usize,
    /// ms since the run started.
    pub t_ms: u64,
    /// Envelopes the node listed, or `None` when the read failed.
    pub stored: Option<usize>,
    /// Of which readable.
    pub readable: Option<usize>,
}

/// One fault as applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill`, `partition`, `link_down`, `loss`, `bandwidth`, `disk_full`, `clock_skew`.
    pub kind: String,
    /// Nodes affected.
    pub nodes: Vec<usize>,
    /// Started, ms since the run started.
    pub start_ms: u64,
    /// Healed, ms since the run started.
    pub end_ms: u64,
    /// Details (groups, percent, rate, whether a publish was in flight).
    pub detail: String,
}

/// Everything recorded.
#[derive(Debug, Default)]
pub struct History {
    /// Writes.
    pub ops: Mutex<Vec<Op>>,
    /// Reads.
    pub reads: Mutex<Vec<Read>>,
    /// Faults.
    pub faults: Mutex<Vec<FaultRecord>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Op(&'a Op),
    Read(&'a Read),
    Fault(&'a FaultRecord),
}

impl History {
    /// Records a write.
    pub fn op(&self, op: Op) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// Records a read.
    pub fn read(&self, read: Read) {
        if let Ok(mut reads) = self.reads.lock() {
            reads.push(read);
        }
    }

    /// Records a fault.
    pub fn fault(&self, fault: FaultRecord) {
        if let Ok(mut faults) = self.faults.lock() {
            faults.push(fault);
        }
    }

    /// A copy of the writes.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// A copy of the reads.
    pub fn reads(&self) -> Vec<Read> {
        self.reads.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// A copy of the faults.
    pub fn faults(&self) -> Vec<FaultRecord> {
        self.faults.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Writes `history.jsonl`, ordered by time.
    pub fn write(&self, path: &Path) -> Result<()> {
        let (ops, reads, faults) = (self.ops(), self.reads(), self.faults());
        let mut lines: Vec<(u64, String)> = Vec::new();
        for op in &ops {
            lines.push((op.start_ms, serde_json::to_string(&Line::Op(op))?));
        }
        for read in &reads {
            lines.push((read.t_ms, serde_json::to_string(&Line::Read(read))?));
        }
        for fault in &faults {
            lines.push((fault.start_ms, serde_json::to_string(&Line::Fault(fault))?));
        }
        lines.sort_by_key(|(t, _)| *t);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        for (_, line) in lines {
            writeln!(file, "{line}")?;
        }
        file.flush()?;
        Ok(())
    }
}
