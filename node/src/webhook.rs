//! Signed webhooks: `config.json`'s `webhooks` (each a URL, the events it
//! takes, a severity floor, an egress cap, an HMAC secret file and a body
//! format), the outbox entries the store worker stages with each new
//! envelope, and the request bodies (`generic` JSON or a TheHive 5 alert).
//!
//! An entry is staged in the same `WriteBatch` as the envelope it reports
//! (store meta `webhook/<hook>/<order>`), so a stored envelope has its
//! deliveries queued exactly when it is durable, whatever crashes. The
//! dispatcher (`webhook/dispatch.rs`) sends each hook's entries in order,
//! retrying with exponential back-off, and removes an entry once the
//! receiver answered 2xx: at least once, with one delivery id per entry
//! across retries and restarts.
//!
//! What a webhook carries is plaintext, so it passes the one egress policy
//! ([`breakwater_protocol::egress_allowed`]) with the hook's `max_tlp` (and
//! `allow_red`) as its cap; envelopes this node cannot open are not sent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use breakwater_protocol::{
    Body, Digest, EgressCap, Header, Indicator, IndicatorKind, Kind, Severity, Tlp,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use zeroize::Zeroizing;

use crate::config::ConfigError;

pub(crate) mod dispatch;

/// Event: a new bulletin this node can read.
pub const BULLETIN_STORED: &str = "bulletin.stored";
/// Event: a bulletin was retracted by its organisation.
pub const BULLETIN_RETRACTED: &str = "bulletin.retracted";
/// Event: a member reported a sighting of a bulletin's indicator.
pub const SIGHTING: &str = "sighting";
/// Every event a webhook may take.
pub const EVENTS: [&str; 3] = [BULLETIN_STORED, BULLETIN_RETRACTED, SIGHTING];

/// Store meta prefix of outbox entries.
const OUTBOX: &str = "webhook/";
/// Store meta prefix of each hook's last success (unix ms, 8 bytes BE).
const LAST_SUCCESS: &str = "webhook-ok/";

/// The body format of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Breakwater's own JSON.
    #[default]
    Generic,
    /// A TheHive 5 alert (`POST {base}/api/v1/alert`).
    Thehive,
}

impl WebhookFormat {
    /// `generic` or `thehive`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Thehive => "thehive",
        }
    }
}

/// One entry of `config.json`'s `webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (`http://` only).
    pub url: String,
    /// Events sent (default: every event for `generic`, `bulletin.stored`
    /// for `thehive`, which takes only that one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Bulletins below this severity are not sent (default: `low`, all).
    #[serde(default = "default_severity")]
    pub min_severity: Severity,
    /// The strictest label sent (default: `green`).
    #[serde(default = "default_max_tlp")]
    pub max_tlp: Tlp,
    /// RED may be sent (needs `max_tlp: red`).
    #[serde(default)]
    pub allow_red: bool,
    /// File holding the HMAC-SHA256 secret (for `thehive`, also TheHive's
    /// API key); relative to the data directory.
    pub secret_file: PathBuf,
    /// `generic` (default) or `thehive`.
    #[serde(default)]
    pub format: WebhookFormat,
}

fn default_severity() -> Severity {
    Severity::Low
}

fn default_max_tlp() -> Tlp {
    Tlp::Green
}

/// A webhook's state as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStatus {
    /// Its URL.
    pub url: String,
    /// `generic` or `thehive`.
    pub format: WebhookFormat,
    /// Deliveries waiting in its outbox.
    pub backlog: u64,
    /// When a delivery last succeeded (unix ms), if ever.
    pub last_success: Option<u64>,
    /// Why the last attempt failed, while deliveries are failing.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl WebhookConfig {
    /// The events sent: as configured, or the format's default.
    pub fn events(&self) -> Vec<String> {
        match (&self.events, self.format) {
            (Some(events), _) => events.clone(),
            (None, WebhookFormat::Generic) => EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            (None, WebhookFormat::Thehive) => vec![BULLETIN_STORED.to_owned()],
        }
    }

    /// Checks what needs no file: the URL, the events and the egress cap.
    pub fn check(&self, n: usize) -> Result<(), ConfigError> {
        let bad = |what: String| ConfigError::Invalid(format!("webhooks[{n}]: {what}"));
        target_of(&self.url).map_err(bad)?;
        let events = self.events();
        for event in &events {
            if !EVENTS.contains(&event.as_str()) {
                return Err(bad(format!(
                    "unknown event {event:?} (known: {})",
                    EVENTS.join(", ")
                )));
            }
            if self.format == WebhookFormat::Thehive && event != BULLETIN_STORED {
                return Err(bad(format!(
                    "a thehive webhook takes only {BULLETIN_STORED}, not {event}"
                )));
            }
        }
        if events.is_empty() {
            return Err(bad("events is empty".to_owned()));
        }
        EgressCap::new(self.max_tlp, self.allow_red).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }
}

/// Host, port and path of an `http://` URL.
pub(crate) fn target_of(url: &str) -> Result<(String, u16, String), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("url {url:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "url {url:?}: https is not supported yet; send to an http:// receiver on a trusted network (e.g. a local TLS-terminating relay)"
            ));
        }
        _ => return Err(format!("url {url:?} must start with http://")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("url {url:?} has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok((host, uri.port_u16().unwrap_or(80), path))
}

/// `host:port` of a webhook URL (its metrics label: never the path, which
/// may hold a secret such as a SOAR's webhook token).
pub(crate) fn host_of(url: &str) -> String {
    match target_of(url) {
        Ok((host, port, _)) if host.contains(':') => format!("[{host}]:{port}"),
        Ok((host, port, _)) => format!("{host}:{port}"),
        Err(_) => "invalid".to_owned(),
    }
}

/// One configured webhook, ready to filter and sign.
pub(crate) struct Hook {
    /// Names its outbox entries: the first 8 bytes of BLAKE3(url), hex.
    pub key: String,
    pub url: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub events: Vec<String>,
    pub min_severity: Severity,
    pub cap: EgressCap,
    pub secret: Zeroizing<Vec<u8>>,
    pub format: WebhookFormat,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The configured webhooks, shared by the store worker (which stages
/// entries) and the dispatcher (which sends them). Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub(crate) hooks: Arc<Vec<Hook>>,
    /// Wakes the dispatchers after a write that may have queued entries.
    pub(crate) queued: Arc<Notify>,
    /// Orders entries: unix ms × 2^16 at start, then one more per entry.
    next: Arc<AtomicU64>,
    /// Why each hook's last attempt failed, while failing.
    pub(crate) errors: Arc<Mutex<HashMap<String, String>>>,
}

impl Hooks {
    /// Loads `webhooks`: checks each and reads its secret file (a relative
    /// path is taken from `data_dir`). An unreadable or empty secret file is
    /// an error.
    pub fn load(configs: &[WebhookConfig], data_dir: &Path) -> Result<Hooks, ConfigError> {
        let mut hooks = Vec::new();
        for (n, config) in configs.iter().enumerate() {
            config.check(n)?;
            let (host, port, path) = target_of(&config.url)
                .map_err(|e| ConfigError::Invalid(format!("webhooks[{n}]: {e}")))?;
            let file = data_dir.join(&config.secret_file);
            let secret = std::fs::read(&file).map_err(|e| {
                ConfigError::Invalid(format!(
                    "webhooks[{n}]: cannot read secret_file {}: {e}",
                    file.display()
                ))
            })?;
            let secret = Zeroizing::new(secret.trim_ascii().to_vec());
            if secret.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "webhooks[{n}]: secret_file {} is empty",
                    file.display()
                )));
            }
            // TheHive's API key travels in a header.
            if config.format == WebhookFormat::Thehive && !secret.iter().all(u8::is_ascii_graphic) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks[{n}]: secret_file {} of a thehive webhook must be an API key (printable ASCII, no spaces)",
                    file.display()
                )));
            }
            let key = hex::encode(&blake3::hash(config.url.as_bytes()).as_bytes()[..8]);
            if hooks.iter().any(|h: &Hook| h.key == key) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks[{n}]: url {} is listed twice",
                    config.url
                )));
            }
            hooks.push(Hook {
                key,
                url: config.url.clone(),
                host,
                port,
                path,
                events: config.events(),
                min_severity: config.min_severity,
                cap: EgressCap {
                    max_tlp: config.max_tlp,
                    allow_red: config.allow_red,
                },
                secret,
                format: config.format,
            });
        }
        Ok(Hooks {
            hooks: Arc::new(hooks),
            queued: Arc::new(Notify::new()),
            next: Arc::new(AtomicU64::new(crate::worker::now_ms() << 16)),
            errors: Arc::default(),
        })
    }

    /// No webhook is configured.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The outbox entries (store meta key and value) a new envelope calls
    /// for: one per hook that takes its event, its label and its severity.
    /// Envelopes this node cannot open (`body` is `None`) call for none.
    pub(crate) fn entries(
        &self,
        id: Digest,
        header: &Header,
        body: Option<&Body>,
        author_org: &str,
    ) -> Vec<(String, Vec<u8>)> {
        let Some(body) = body else {
            return Vec::new();
        };
        let (event, severity) = match (&header.kind, body) {
            (Kind::Bulletin, Body::Bulletin(bulletin)) => {
                (BULLETIN_STORED, Some(bulletin.severity))
            }
            (Kind::Retraction { .. }, Body::Retraction { .. }) => (BULLETIN_RETRACTED, None),
            (Kind::Sighting { .. }, Body::Sighting { .. }) => (SIGHTING, None),
            _ => return Vec::new(),
        };
        let mut entries = Vec::new();
        for hook in self.hooks.iter() {
            let wanted = hook.events.iter().any(|e| e == event)
                && hook.cap.allows(header.tlp)
                && severity.is_none_or(|s| s >= hook.min_severity);
            if !wanted {
                continue;
            }
            let delivery = delivery_id(&hook.key, event, &id);
            let request = match hook.format {
                WebhookFormat::Generic => generic(event, &delivery, id, header, body, author_org),
                WebhookFormat::Thehive => thehive(id, header, body, author_org),
            };
            let entry = Entry {
                delivery,
                event: event.to_owned(),
                body: request.to_string(),
            };
            let order = self.next.fetch_add(1, Ordering::Relaxed);
            let key = format!("{OUTBOX}{}/{order:020}", hook.key);
            entries.push((key, serde_json::to_vec(&entry).unwrap_or_default()));
        }
        entries
    }

    /// Each hook's status, read from the store.
    pub(crate) fn status(&self, store: &crate::store::Store) -> Vec<WebhookStatus> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        self.hooks
            .iter()
            .map(|hook| WebhookStatus {
                url: hook.url.clone(),
                format: hook.format,
                backlog: store
                    .meta_with_prefix(&outbox_prefix(hook))
                    .map_or(0, |entries| entries.len() as u64),
                last_success: last_success(store, hook),
                last_error: errors.get(&hook.key).cloned(),
            })
            .collect()
    }
}

/// The store meta prefix of `hook`'s outbox entries.
pub(crate) fn outbox_prefix(hook: &Hook) -> String {
    format!("{OUTBOX}{}/", hook.key)
}

/// The store meta key of `hook`'s last success.
pub(crate) fn last_success_key(hook: &Hook) -> String {
    format!("{LAST_SUCCESS}{}", hook.key)
}

fn last_success(store: &crate::store::Store, hook: &Hook) -> Option<u64> {
    let bytes = store.meta(&last_success_key(hook)).ok()??;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// One queued delivery, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Stays the same across retries (`X-Breakwater-Delivery`).
    pub delivery: String,
    /// `X-Breakwater-Event`.
    pub event: String,
    /// The exact JSON body signed and sent.
    pub body: String,
}

/// A delivery id in UUID form: BLAKE3 of the hook, the event and the
/// envelope id, so one envelope's event has one id per hook.
fn delivery_id(hook: &str, event: &str, id: &Digest) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("breakwater/webhook-delivery/v1");
    hasher.update(hook.as_bytes());
    hasher.update(&[0]);
    hasher.update(event.as_bytes());
    hasher.update(&[0]);
    hasher.update(&id.0);
    let mut b = [0u8; 16];
    b.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    b[6] = b[6] & 0x0f | 0x40;
    b[8] = b[8] & 0x3f | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, the `X-Breakwater-Signature`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .map(|mut mac| {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default();
    format!("sha256={mac}")
}

fn indicator_json(indicator: &Indicator) -> serde_json::Value {
    serde_json::json!({"kind": indicator.kind.as_str(), "value": indicator.value})
}

/// The `generic` body.
fn generic(
    event: &str,
    delivery: &str,
    id: Digest,
    header: &Header,
    body: &Body,
    author_org: &str,
) -> serde_json::Value {
    let mut json = serde_json::json!({
        "event": event,
        "delivery": delivery,
        "id": id.to_hex(),
        "tlp": header.tlp.as_str(),
        "author_org": author_org,
        "created_at": header.created_at,
        "expires_at": header.expires_at,
    });
    let target = match header.kind {
        Kind::Retraction { target } | Kind::Sighting { target } => Some(target),
        Kind::Bulletin => None,
    };
    let extra = match body {
        Body::Bulletin(bulletin) => serde_json::json!({
            "severity": bulletin.severity.as_str(),
            "title": bulletin.title,
            "summary": bulletin.summary,
            "tags": bulletin.tags,
            "sectors": bulletin.sectors,
            "references": bulletin.references,
            "indicators": bulletin.indicators.iter().map(indicator_json).collect::<Vec<_>>(),
            "api_path": format!("/v1/bulletins/{}", id.to_hex()),
        }),
        Body::Retraction { reason } => serde_json::json!({
            "target": target.map(|t| t.to_hex()),
            "reason": reason,
        }),
        Body::Sighting {
            indicator,
            seen_at,
            note,
        } => serde_json::json!({
            "target": target.map(|t| t.to_hex()),
            "indicator": indicator_json(indicator),
            "seen_at": seen_at,
            "note": note,
        }),
    };
    if let (Some(json), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
        json.extend(extra);
    }
    json
}

/// TheHive 5's TLP numbering.
pub fn thehive_tlp(tlp: Tlp) -> u8 {
    match tlp {
        Tlp::Clear => 0,
        Tlp::Green => 1,
        Tlp::Amber => 2,
        Tlp::AmberStrict => 3,
        Tlp::Red => 4,
    }
}

/// TheHive's severity numbering (1 low … 4 critical).
pub fn thehive_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

/// A TheHive 5 alert for a bulletin (`sourceRef` is the envelope id).
fn thehive(id: Digest, header: &Header, body: &Body, author_org: &str) -> serde_json::Value {
    let Body::Bulletin(bulletin) = body else {
        return serde_json::Value::Null;
    };
    let observables: Vec<serde_json::Value> = bulletin
        .indicators
        .iter()
        .map(|indicator| {
            let (data_type, tags): (&str, Vec<&str>) = match indicator.kind {
                IndicatorKind::Ipv4 | IndicatorKind::Ipv6 => ("ip", vec![]),
                IndicatorKind::Domain => ("domain", vec![]),
                IndicatorKind::Url => ("url", vec![]),
                IndicatorKind::Email => ("mail", vec![]),
                IndicatorKind::Md5 | IndicatorKind::Sha1 | IndicatorKind::Sha256 => {
                    ("hash", vec![indicator.kind.as_str()])
                }
                IndicatorKind::FileName => ("filename", vec![]),
                IndicatorKind::Cve => ("other", vec!["cve"]),
            };
            serde_json::json!({
                "dataType": data_type,
                "data": indicator.value,
                "ioc": true,
                "tags": tags,
            })
        })
        .collect();
    let mut tags: Vec<String> = bulletin.tags.clone();
    tags.push("breakwater".to_owned());
    tags.push(format!("tlp:{}", header.tlp.as_str()));
    let description = if bulletin.summary.is_empty() {
        bulletin.title.clone()
    } else {
        bulletin.summary.clone()
    };
    serde_json::json!({
        "type": "breakwater",
        "source": author_org,
        "sourceRef": id.to_hex(),
        "title": bulletin.title,
        "description": description,
        "date": header.created_at,
        "severity": thehive_severity(bulletin.severity),
        "tlp": thehive_tlp(header.tlp),
        "pap": 2,
        "tags": tags,
        "observables": observables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_github_style_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn config_is_checked() {
        let config = |url: &str, max_tlp: Tlp, allow_red: bool| WebhookConfig {
            url: url.to_owned(),
            events: None,
            min_severity: Severity::Low,
            max_tlp,
            allow_red,
            secret_file: "secret".into(),
            format: WebhookFormat::Generic,
        };
        assert!(
            config("http://127.0.0.1:9000/hook", Tlp::Green, false)
                .check(0)
                .is_ok()
        );
        for (url, tlp, red) in [
            ("ftp://x/", Tlp::Green, false),
            ("https://x/", Tlp::Green, false),
            ("not a url", Tlp::Green, false),
            ("http://x/", Tlp::Red, false),
            ("http://x/", Tlp::Amber, true),
        ] {
            assert!(config(url, tlp, red).check(0).is_err(), "{url} {tlp} {red}");
        }
        assert!(config("http://x/", Tlp::Red, true).check(0).is_ok());
        let mut hive = config("http://x/api/v1/alert", Tlp::Green, false);
        hive.format = WebhookFormat::Thehive;
        assert!(hive.check(0).is_ok());
        assert_eq!(hive.events(), vec![BULLETIN_STORED.to_owned()]);
        hive.events = Some(vec![SIGHTING.to_owned()]);
        assert!(hive.check(0).is_err());
        hive.events = Some(Vec::new());
        assert!(hive.check(0).is_err());
        let parsed: Result<WebhookConfig, _> =
            serde_json::from_str(r#"{"url":"http://x/","secret_file":"s","format":"splunk"}"#);
        assert!(parsed.is_err());
        let parsed: Result<WebhookConfig, _> =
            serde_json::from_str(r#"{"url":"http://x/","secret_file":"s"}"#);
        assert!(parsed.is_ok_and(|c| c.max_tlp == Tlp::Green && !c.allow_red));
    }

    #[test]
    fn delivery_ids_are_stable_uuids() {
        let a = delivery_id("k", BULLETIN_STORED, &Digest([1; 32]));
        assert_eq!(a, delivery_id("k", BULLETIN_STORED, &Digest([1; 32])));
        assert_ne!(a, delivery_id("k", SIGHTING, &Digest([1; 32])));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }
}
