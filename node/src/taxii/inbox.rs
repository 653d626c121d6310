//! Write (inbox) collections: a STIX envelope posted by a TAXII client
//! (MISP's TAXII push, a SOAR) becomes one bulletin published as this
//! organisation, exactly as `breakwater publish --from-stix` would make it,
//! and the answer is a TAXII status resource. Status records are kept in
//! memory for [`STATUS_TTL`] (at most [`MAX_STATUSES`]); a restart forgets
//! them (their publications stay, of course).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use breakwater_protocol::stix::{self, timestamp};
use breakwater_protocol::{EgressCap, OrgId, Severity};
use serde_json::{Value, json};

use super::objects::version_of;
use crate::handle::{NodeHandle, PublishRequest};

/// How long a status resource can be read after its POST.
pub const STATUS_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most status resources kept; the oldest go first.
pub const MAX_STATUSES: usize = 1000;

/// The status resources of recent POSTs.
#[derive(Debug, Default)]
pub struct Statuses {
    inner: Mutex<HashMap<String, (Instant, Value)>>,
}

impl Statuses {
    /// Keeps `status` under its `id`.
    pub fn put(&self, status: &Value) {
        let Some(id) = status.get("id").and_then(Value::as_str) else {
            return;
        };
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (at, _)| at.elapsed() < STATUS_TTL);
        while map.len() >= MAX_STATUSES {
            let oldest = map
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => map.remove(&oldest),
                None => break,
            };
        }
        map.insert(id.to_string(), (Instant::now(), status.clone()));
    }

    /// The status resource `id`, if kept.
    pub fn get(&self, id: &str) -> Option<Value> {
        let map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(id)
            .filter(|(at, _)| at.elapsed() < STATUS_TTL)
            .map(|(_, status)| status.clone())
    }
}

/// What a write collection publishes as: its name, cap and recipients.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// The collection's name (the fallback title names it).
    pub name: String,
    /// The strictest label a post may carry.
    pub cap: EgressCap,
    /// Recipient organisations of AMBER, AMBER+STRICT and RED posts.
    pub default_to: Vec<OrgId>,
}

/// Publishes the posted `objects` as one bulletin and returns the status
/// resource (`complete`: the envelope is on disk when this returns, or
/// every object failed with the reason).
pub async fn post(handle: &NodeHandle, inbox: &Inbox, objects: &[Value], now_ms: u64) -> Value {
    let id = status_id(objects, now_ms);
    let refs: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({
                "id": o.get("id").and_then(Value::as_str).unwrap_or(""),
                "version": version_of(o),
            })
        })
        .collect();
    let outcome = publish(handle, inbox, objects).await;
    let (successes, failures) = match &outcome {
        Ok(published) => (
            refs.iter()
                .map(|r| {
                    let mut r = r.clone();
                    if let Some(map) = r.as_object_mut() {
                        map.insert(
                            "message".into(),
                            json!(format!("published in envelope {published}")),
                        );
                    }
                    r
                })
                .collect(),
            Vec::new(),
        ),
        Err(why) => (
            Vec::new(),
            refs.iter()
                .map(|r| {
                    let mut r = r.clone();
                    if let Some(map) = r.as_object_mut() {
                        map.insert("message".into(), json!(why));
                    }
                    r
                })
                .collect::<Vec<Value>>(),
        ),
    };
    json!({
        "id": id,
        "status": "complete",
        "request_timestamp": timestamp(now_ms),
        "total_count": refs.len(),
        "success_count": successes.len(),
        "successes": successes,
        "failure_count": failures.len(),
        "failures": failures,
        "pending_count": 0,
        "pendings": [],
    })
}

/// A status id (a UUID) derived from the post and its time.
fn status_id(objects: &[Value], now_ms: u64) -> String {
    let text = serde_json::to_string(objects).unwrap_or_default();
    let now = now_ms.to_be_bytes();
    let nonce: [u8; 16] = rand::random();
    let id = stix::sdo_id("status", "taxii-status", &[text.as_bytes(), &now, &nonce]);
    id.trim_start_matches("status--").to_string()
}

/// Imports the objects (TLP from their markings; unmarked is refused) and
/// publishes the bulletin; the envelope id, or why not.
async fn publish(handle: &NodeHandle, inbox: &Inbox, objects: &[Value]) -> Result<String, String> {
    let imported = stix::import_objects(objects, None).map_err(|e| e.to_string())?;
    if !inbox.cap.allows(imported.tlp) {
        return Err(format!(
            "the bundle is marked TLP:{}, above this collection's max_tlp {}{}",
            imported.tlp.as_str().to_uppercase(),
            inbox.cap.max_tlp,
            if imported.tlp == breakwater_protocol::Tlp::Red {
                " (RED needs allow_red)"
            } else {
                ""
            }
        ));
    }
    let bulletin = imported
        .to_bulletin(
            &format!("Posted to TAXII collection {}", inbox.name),
            Severity::Medium,
        )
        .map_err(|e| e.to_string())?;
    let request = PublishRequest {
        tlp: imported.tlp,
        to: if imported.tlp.names_recipients() {
            inbox.default_to.clone()
        } else {
            Vec::new()
        },
        bulletin,
        ttl_ms: None,
    };
    handle
        .publish(request)
        .await
        .map(|published| published.id.to_hex())
        .map_err(|e| e.to_string())
}
