//! Prometheus metrics: Breakwater's own series, registered under the prefix
//! `breakwater` in the same `prometheus-client` registry that libp2p's
//! gossipsub fills, and `/metrics`, which encodes that registry in the
//! OpenMetrics text format.
//!
//! Counters are fed where the node already counts (the worker's ingest,
//! publish and sync paths; the event loop's full gossip queue). Gauges that
//! describe state (peers per organisation, store bytes, pending GREEN,
//! evidence, roster version, webhook backlogs) are set at each scrape from
//! the same [`Status`] that `breakwater status` shows, so the two never
//! disagree. `/metrics` is served on the API listener behind the token
//! ([`router`]) and, when `metrics.listen` is set, on a separate loopback
//! listener without one ([`serve`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use breakwater_protocol::Rejection;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::handle::{NodeHandle, Status};
use crate::job::QueueWatch;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One label.
type Label = [(&'static str, String); 1];
/// Two labels.
type Labels2 = [(&'static str, String); 2];
/// Three labels.
type Labels3 = [(&'static str, String); 3];

/// Breakwater's metric families. Cloning is cheap: every clone updates the
/// same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    stored: Family<Label, Counter>,
    ignored: Family<Label, Counter>,
    rejected: Family<Label, Counter>,
    publish_flush: Histogram,
    sync_rounds: Counter,
    sync_bytes: Family<Label, Counter>,
    peers: Family<Label, Gauge>,
    queue_depth: Family<Label, Gauge>,
    store_bytes: Gauge,
    envelopes: Gauge,
    readable: Gauge,
    pending_green: Gauge,
    evidence: Gauge,
    roster_version: Gauge,
    webhook_backlog: Family<Labels2, Gauge>,
    webhook_deliveries: Family<Labels3, Counter>,
    /// The worker's queues, read at each scrape.
    queues: Arc<OnceLock<QueueWatch>>,
}

impl Default for Metrics {
    /// Families in a registry of their own (for handles built without a
    /// node).
    fn default() -> Self {
        Metrics::new(Arc::new(Mutex::new(Registry::default())))
    }
}

impl Metrics {
    /// Registers Breakwater's families under `breakwater_` in `registry`
    /// (the one gossipsub fills).
    pub fn new(registry: Arc<Mutex<Registry>>) -> Metrics {
        let metrics = Metrics {
            registry: registry.clone(),
            stored: Family::default(),
            ignored: Family::default(),
            rejected: Family::default(),
            // 1 ms to about 16 s.
            publish_flush: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            sync_rounds: Counter::default(),
            sync_bytes: Family::default(),
            peers: Family::default(),
            queue_depth: Family::default(),
            store_bytes: Gauge::default(),
            envelopes: Gauge::default(),
            readable: Gauge::default(),
            pending_green: Gauge::default(),
            evidence: Gauge::default(),
            roster_version: Gauge::default(),
            webhook_backlog: Family::default(),
            webhook_deliveries: Family::default(),
            queues: Arc::default(),
        };
        let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
        let r = registry.sub_registry_with_prefix("breakwater");
        r.register(
            "envelopes_stored",
            "Envelopes newly stored, by source (gossip, sync, local)",
            metrics.stored.clone(),
        );
        r.register(
            "envelopes_ignored",
            "Envelopes received but not stored, by reason",
            metrics.ignored.clone(),
        );
        r.register(
            "envelopes_rejected",
            "Envelopes received and rejected as invalid, by reason",
            metrics.rejected.clone(),
        );
        r.register(
            "publish_flush_seconds",
            "Time from a publish request reaching the store worker to its envelope being flushed to disk",
            metrics.publish_flush.clone(),
        );
        r.register(
            "sync_rounds",
            "Anti-entropy rounds this node started",
            metrics.sync_rounds.clone(),
        );
        r.register(
            "sync_bytes",
            "Anti-entropy bytes, sent (our requests and answers we serve) and received (answers and peers' requests)",
            metrics.sync_bytes.clone(),
        );
        r.register(
            "peers_connected",
            "Connected peers, by organisation (from the roster; unknown for peers not in it)",
            metrics.peers.clone(),
        );
        r.register(
            "queue_depth",
            "Jobs waiting in the store worker's queues (gossip, serve, control)",
            metrics.queue_depth.clone(),
        );
        r.register(
            "store_bytes",
            "Size of the sled store on disk",
            metrics.store_bytes.clone(),
        );
        r.register(
            "envelopes",
            "Stored envelopes (tombstones included)",
            metrics.envelopes.clone(),
        );
        r.register(
            "envelopes_readable",
            "Stored envelopes this node can read",
            metrics.readable.clone(),
        );
        r.register(
            "pending_green",
            "Stored GREEN envelopes waiting for a newer roster's key",
            metrics.pending_green.clone(),
        );
        r.register(
            "evidence",
            "Equivocation evidence records held",
            metrics.evidence.clone(),
        );
        r.register(
            "roster_version",
            "Roster version in force",
            metrics.roster_version.clone(),
        );
        r.register(
            "webhook_backlog",
            "Deliveries waiting in a webhook's outbox, by webhook (its index in config.json) and host",
            metrics.webhook_backlog.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by webhook (its index in config.json), host and outcome (delivered, failed)",
            metrics.webhook_deliveries.clone(),
        );
        drop(registry);
        // Every known label value starts at zero, so a family is never
        // empty and a rate has a start.
        for source in ["gossip", "sync", "local"] {
            metrics.stored(source, 0);
        }
        for reason in IGNORE_REASONS {
            let _ = metrics
                .ignored
                .get_or_create(&[("reason", reason.to_owned())]);
        }
        for reason in REJECT_REASONS {
            let _ = metrics
                .rejected
                .get_or_create(&[("reason", reason.to_owned())]);
        }
        for direction in ["sent", "received"] {
            let _ = metrics
                .sync_bytes
                .get_or_create(&[("direction", direction.to_owned())]);
        }
        metrics
    }

    /// `n` envelopes newly stored from `source` (`gossip`, `sync`, `local`).
    pub(crate) fn stored(&self, source: &'static str, n: u64) {
        self.stored
            .get_or_create(&[("source", source.to_owned())])
            .inc_by(n);
    }

    /// One envelope ignored for `reason`.
    pub(crate) fn ignored(&self, reason: &'static str) {
        self.ignored
            .get_or_create(&[("reason", reason.to_owned())])
            .inc();
    }

    /// One envelope rejected.
    pub(crate) fn rejected(&self, rejection: &Rejection) {
        self.rejected
            .get_or_create(&[("reason", rejection_reason(rejection).to_owned())])
            .inc();
    }

    /// A publish took `seconds` from the worker taking it to its flush.
    pub(crate) fn publish_flushed(&self, seconds: f64) {
        self.publish_flush.observe(seconds);
    }

    /// A sync round started.
    pub(crate) fn sync_round(&self) {
        self.sync_rounds.inc();
    }

    /// `bytes` of sync traffic `sent` or received.
    pub(crate) fn sync_bytes(&self, sent: bool, bytes: usize) {
        let direction = if sent { "sent" } else { "received" };
        self.sync_bytes
            .get_or_create(&[("direction", direction.to_owned())])
            .inc_by(bytes as u64);
    }

    /// The worker's queues, whose depths each scrape reads.
    pub(crate) fn watch_queues(&self, queues: QueueWatch) {
        let _ = self.queues.set(queues);
    }

    /// One delivery attempt of webhook number `index` (in `config.json`)
    /// to `host` (`host:port`: never the URL's path, which may be a
    /// secret, since metrics may be served without a token).
    pub(crate) fn webhook_attempt(&self, index: usize, host: &str, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.webhook_deliveries
            .get_or_create(&[
                ("webhook", index.to_string()),
                ("host", host.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Sets the state gauges from `status`.
    pub(crate) fn observe_status(&self, status: &Status) {
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.store_bytes, status.disk_bytes);
        gauge(&self.envelopes, status.envelopes);
        gauge(&self.readable, status.readable);
        gauge(&self.pending_green, status.pending_green);
        gauge(&self.evidence, status.evidence);
        gauge(&self.roster_version, status.roster_version);
        self.peers.clear();
        for peer in &status.peers {
            let org = peer.org_id.clone().unwrap_or_else(|| "unknown".to_owned());
            self.peers.get_or_create(&[("org", org)]).inc();
        }
        for (queue, sender) in self.queues.get().into_iter().flatten() {
            let depth = sender
                .upgrade()
                .map_or(0, |sender| sender.max_capacity() - sender.capacity());
            gauge(
                &self
                    .queue_depth
                    .get_or_create(&[("queue", (*queue).to_owned())]),
                depth as u64,
            );
        }
        self.webhook_backlog.clear();
        for (index, hook) in status.webhooks.iter().enumerate() {
            let host = crate::webhook::host_of(&hook.url);
            gauge(
                &self
                    .webhook_backlog
                    .get_or_create(&[("webhook", index.to_string()), ("host", host)]),
                hook.backlog,
            );
        }
    }

    /// The registry in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        drop(registry);
        drop_negative_histograms(&text)
    }
}

/// Leaves out every histogram family with a negative bucket bound.
/// OpenMetrics forbids `_sum` on such a histogram, and prometheus-client
/// always writes one, so a strict parser refuses the whole exposition;
/// libp2p's `gossipsub_score_per_mesh` (peer scores go negative) is one.
fn drop_negative_histograms(text: &str) -> String {
    let negative: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" histogram"))
        .filter(|family| {
            let bucket = format!("{family}_bucket{{");
            text.lines()
                .any(|line| line.starts_with(&bucket) && line.contains("le=\"-"))
        })
        .collect();
    if negative.is_empty() {
        return text.to_owned();
    }
    let of_family = |line: &str| {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .or_else(|| line.strip_prefix("# UNIT "))
            .unwrap_or(line);
        let name = name.split([' ', '{']).next().unwrap_or_default();
        negative.iter().any(|family| {
            name.strip_prefix(family)
                .is_some_and(|rest| ["", "_bucket", "_sum", "_count", "_created"].contains(&rest))
        })
    };
    let mut kept = String::with_capacity(text.len());
    for line in text.lines().filter(|line| !of_family(line)) {
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// The `reason` labels of `breakwater_envelopes_ignored_total`.
pub const IGNORE_REASONS: [&str; 6] = [
    "duplicate",
    "expired",
    "quota",
    "lifetime",
    "fork_held",
    "queue_full",
];

/// The `reason` labels of `breakwater_envelopes_rejected_total`.
pub const REJECT_REASONS: [&str; 13] = [
    "decode",
    "wrong_consortium",
    "unknown_author",
    "revoked_author",
    "bad_signature",
    "from_the_future",
    "equivocation",
    "prev_mismatch",
    "next_mismatch",
    "foreign_retraction",
    "lifetime_too_long",
    "clear_body",
    "epoch_regression",
];

/// The `reason` label of a rejection (one of [`REJECT_REASONS`]).
pub fn rejection_reason(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::Decode(_) => "decode",
        Rejection::WrongConsortium { .. } => "wrong_consortium",
        Rejection::UnknownAuthor(_) => "unknown_author",
        Rejection::RevokedAuthor { .. } => "revoked_author",
        Rejection::BadSignature(_) => "bad_signature",
        Rejection::FromTheFuture { .. } => "from_the_future",
        Rejection::Equivocation(_) => "equivocation",
        Rejection::PrevMismatch { .. } => "prev_mismatch",
        Rejection::NextMismatch { .. } => "next_mismatch",
        Rejection::ForeignRetraction { .. } => "foreign_retraction",
        Rejection::LifetimeTooLong { .. } => "lifetime_too_long",
        Rejection::ClearBody(_) => "clear_body",
        Rejection::EpochRegression { .. } => "epoch_regression",
    }
}

/// Sets the state gauges from a fresh status and encodes the registry.
pub async fn scrape(handle: &NodeHandle) -> Response {
    match handle.status().await {
        Ok(status) => {
            handle.metrics.observe_status(&status);
            (
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                handle.metrics.encode(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn metrics_endpoint(State(handle): State<NodeHandle>) -> Response {
    scrape(&handle).await
}

/// `GET /metrics`, for merging into the API's router (behind its token).
pub fn router<S: Clone + Send + Sync + 'static>(handle: NodeHandle) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics_endpoint))
        .with_state(handle)
}

/// Refuses a `Host` that does not name this loopback listener (DNS
/// rebinding), as the API does.
async fn check_host(State(local): State<SocketAddr>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    match host {
        Some(host) if crate::api::host_allowed(host, &local) => next.run(request).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            "host is not this node's metrics listener",
        )
            .into_response(),
    }
}

/// Serves `/metrics` without a token on `listener` (`metrics.listen`, which
/// must be loopback) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("metrics.listen must be a loopback address, not {local}"),
        ));
    }
    let app: Router = router(handle)
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here") })
        .layer(middleware::from_fn_with_state(local, check_host));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_with_the_prefix_and_end_in_eof() {
        let metrics = Metrics::default();
        metrics.stored("local", 3);
        metrics.ignored("duplicate");
        metrics.sync_bytes(true, 10);
        metrics.publish_flushed(0.002);
        let text = metrics.encode();
        assert!(
            text.contains("breakwater_envelopes_stored_total{source=\"local\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("breakwater_envelopes_ignored_total{reason=\"duplicate\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("breakwater_sync_bytes_total{direction=\"sent\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("breakwater_publish_flush_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn histograms_with_negative_buckets_are_left_out() {
        let text = "# HELP a_score Scores.\n# TYPE a_score histogram\na_score_sum -3.0\na_score_count 1\na_score_bucket{le=\"-10.0\"} 0\na_score_bucket{le=\"+Inf\"} 1\n# HELP a_score_other Kept.\n# TYPE a_score_other counter\na_score_other_total 2\n# HELP b Kept.\n# TYPE b histogram\nb_sum 1.0\nb_count 1\nb_bucket{le=\"1.0\"} 1\nb_bucket{le=\"+Inf\"} 1\n# EOF\n";
        let kept = drop_negative_histograms(text);
        assert!(!kept.contains("a_score_sum"), "{kept}");
        assert!(!kept.contains("# TYPE a_score histogram"), "{kept}");
        assert!(kept.contains("a_score_other_total 2"), "{kept}");
        assert!(kept.contains("b_bucket{le=\"1.0\"} 1"), "{kept}");
        assert!(kept.ends_with("# EOF\n"), "{kept}");
    }
}
