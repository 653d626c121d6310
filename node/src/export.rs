//! What the interop commands (`export stix`, `export misp-feed`, `export
//! envelopes`) take from a node: stored envelopes as their exact bytes,
//! with the bodies this node can open and the roster in force, from the
//! running node (`GET /v1/export`) or, when it is stopped, straight from the
//! store ([`export_offline`]). The conversions themselves are the protocol
//! crate's; the egress policy is applied by the caller to what this returns.

use std::collections::HashMap;

use breakwater_protocol::egress::EgressCap;
use breakwater_protocol::{Body, Digest, Envelope, Kind, SignedRoster, stix};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::config::DataDir;
use crate::node::{SpawnError, stored_roster};
use crate::store::Store;
use crate::worker::Worker;

/// Which stored envelopes to export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportFilter {
    /// Only envelopes created at or after this unix ms.
    pub since: Option<u64>,
    /// Only these envelope ids (hex, or unique prefixes), comma-separated;
    /// every envelope when empty. Retractions of the named envelopes come
    /// along.
    pub ids: String,
    /// Only envelopes whose author belongs to this organisation.
    pub author: Option<String>,
    /// Also envelopes this node cannot open (with no body): the air-gap
    /// export, which carries ciphertext only.
    pub all: bool,
}

/// One exported envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportItem {
    /// Its id.
    pub id: Digest,
    /// The envelope's exact bytes, hex.
    pub envelope: String,
    /// Its body, when this node can open it and it has not expired.
    pub body: Option<Body>,
    /// The retraction that withdrew it, if any (also among the items when it
    /// matches the filter).
    pub retracted_by: Option<Digest>,
}

/// The answer of `GET /v1/export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    /// The roster in force (authors are looked up in it).
    pub roster: SignedRoster,
    /// Every stored roster version, oldest first (for air-gap bundles).
    pub rosters: Vec<SignedRoster>,
    /// The envelopes, oldest first.
    pub items: Vec<ExportItem>,
}

/// The STIX 2.1 bundle of the readable envelopes of `exported`, letting out
/// only what `cap` allows (the dashboard's download; the conversion is the
/// protocol crate's). Items that do not decode, retractions whose target is
/// not readable here, and envelopes the conversion refuses are left out.
pub fn stix_bundle(exported: &Exported, cap: EgressCap) -> stix::Bundle {
    let decoded: Vec<(&ExportItem, Envelope)> = exported
        .items
        .iter()
        .filter_map(|item| {
            let bytes = hex::decode(&item.envelope).ok()?;
            Some((item, Envelope::decode(&bytes).ok()?))
        })
        .collect();
    let by_id: HashMap<Digest, (&Envelope, Option<&Body>)> = decoded
        .iter()
        .map(|(item, envelope)| (item.id, (envelope, item.body.as_ref())))
        .collect();
    let mut bundle = stix::Bundle::capped(cap);
    for (item, envelope) in &decoded {
        let Some(body) = &item.body else { continue };
        let target = match envelope.header.kind {
            Kind::Retraction { target } => match by_id.get(&target) {
                Some((target, Some(target_body))) => Some((*target, *target_body)),
                _ => continue,
            },
            _ => None,
        };
        if let Err(e) = bundle.add_envelope(envelope, body, target, &exported.roster.roster) {
            tracing::debug!("stix: left out {}: {e}", item.id.to_hex());
        }
    }
    bundle
}

/// [`Exported`] read from the store of a stopped node. Fails while a node
/// runs on this directory (the store is locked).
pub fn export_offline(data_dir: &DataDir, filter: &ExportFilter) -> Result<Exported, SpawnError> {
    let keys = data_dir.keys()?;
    let store = Store::open(&data_dir.store_path())?;
    let roster = stored_roster(&store)?.ok_or(SpawnError::NoRoster)?;
    let (events, _) = broadcast::channel(1);
    let (outcomes, _) = mpsc::channel(1);
    let worker = Worker::new(store, keys, roster, 0, events, outcomes);
    worker
        .export(filter)
        .map_err(|e| SpawnError::Roster(e.to_string()))
}

/// An air-gap bundle's well-formed items, for `POST /v1/import`: each with
/// its item index in the file, as hex bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportRequest {
    /// Signed rosters, in the order to apply them (ascending version).
    pub rosters: Vec<(usize, String)>,
    /// Envelopes, in file order.
    pub envelopes: Vec<(usize, String)>,
}

/// What the node did with one item of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemOutcome {
    /// Validated and stored (an envelope), or applied (a roster).
    Accepted,
    /// Already held.
    AlreadyHeld,
    /// Refused, with the reason validation gave.
    Refused(String),
}

impl From<ItemOutcome> for breakwater_protocol::airgap::Outcome {
    fn from(outcome: ItemOutcome) -> Self {
        match outcome {
            ItemOutcome::Accepted => Self::Accepted,
            ItemOutcome::AlreadyHeld => Self::AlreadyHeld,
            ItemOutcome::Refused(reason) => Self::Refused(reason),
        }
    }
}

/// The answer of `POST /v1/import`: one outcome per item, by item index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// (item index, outcome).
    pub outcomes: Vec<(usize, ItemOutcome)>,
}

/// Imports into the store of a stopped node, through the same validation
/// and storage path as a sync answer. Fails while a node runs on this
/// directory.
pub fn import_offline(
    data_dir: &DataDir,
    request: &ImportRequest,
) -> Result<ImportReport, SpawnError> {
    let keys = data_dir.keys()?;
    let store = Store::open(&data_dir.store_path())?;
    let roster = stored_roster(&store)?.ok_or(SpawnError::NoRoster)?;
    let (events, _) = broadcast::channel(1);
    let (outcomes, _) = mpsc::channel(1);
    let mut worker = Worker::new(store, keys, roster, 0, events, outcomes);
    let report = worker.import(request.clone());
    worker.store.flush().map_err(SpawnError::Store)?;
    report.map_err(|e| SpawnError::Roster(e.to_string()))
}
