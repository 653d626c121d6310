//! The webhook dispatcher: one tokio task per configured webhook that reads
//! its outbox entries from the store in order, POSTs each (signed with
//! HMAC-SHA256) over HTTP/1.1, and removes it once the receiver answered
//! 2xx. A failure is retried after an exponential back-off (1 s, doubling,
//! capped at `webhook_max_backoff`), forever: nothing is dropped, and the
//! backlog shows in `status`.
//!
//! The dispatcher is the one writer besides the store worker: it removes
//! delivered entries and records the hook's last success, both store meta
//! keys that nothing else writes (the store's writer lock still serialises
//! them). A removal not yet flushed when the process dies is undone by the
//! crash, and the entry is delivered again with the same delivery id.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::{Entry, Hook, Hooks, WebhookFormat, last_success_key, outbox_prefix, signature};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::store::Store;

/// First wait after a failed delivery.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long a connection and a request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle dispatcher looks at its outbox even unwoken.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Starts one dispatcher per hook. Each stops once the store worker has
/// stopped (`alive`'s receiver is gone).
pub(crate) fn spawn(
    hooks: &Hooks,
    store: Store,
    metrics: Metrics,
    max_backoff: Duration,
    alive: mpsc::Sender<Job>,
) {
    for index in 0..hooks.hooks.len() {
        let dispatcher = Dispatcher {
            hooks: hooks.clone(),
            index,
            store: store.clone(),
            metrics: metrics.clone(),
            max_backoff: max_backoff.max(FIRST_BACKOFF),
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = dispatcher.run() => {}
                () = alive.closed() => {}
            }
        });
    }
}

struct Dispatcher {
    hooks: Hooks,
    index: usize,
    store: Store,
    metrics: Metrics,
    max_backoff: Duration,
}

impl Dispatcher {
    fn hook(&self) -> Option<&Hook> {
        self.hooks.hooks.get(self.index)
    }

    async fn run(self) {
        let Some(hook) = self.hook() else { return };
        let prefix = outbox_prefix(hook);
        loop {
            let store = self.store.clone();
            let scan = prefix.clone();
            let entries =
                match tokio::task::spawn_blocking(move || store.meta_with_prefix(&scan)).await {
                    Ok(Ok(entries)) => entries,
                    Ok(Err(e)) => {
                        tracing::warn!(url = %hook.url, "webhook outbox unreadable: {e}");
                        Vec::new()
                    }
                    Err(_) => return,
                };
            if entries.is_empty() {
                tokio::select! {
                    () = self.hooks.queued.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            for (name, value) in entries {
                let key = name.clone();
                let Ok(entry) = serde_json::from_slice::<Entry>(&value) else {
                    tracing::warn!(url = %hook.url, "dropping a malformed webhook outbox entry {key}");
                    self.remove(key, None).await;
                    continue;
                };
                self.deliver(hook, &entry).await;
                self.remove(key, Some(crate::worker::now_ms())).await;
            }
        }
    }

    /// Sends `entry` until the receiver takes it.
    async fn deliver(&self, hook: &Hook, entry: &Entry) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match send(hook, entry).await {
                Ok(()) => {
                    self.metrics
                        .webhook_attempt(self.index, &host_port(hook), true);
                    self.set_error(hook, None);
                    return;
                }
                Err(e) => {
                    self.metrics
                        .webhook_attempt(self.index, &host_port(hook), false);
                    tracing::warn!(
                        url = %hook.url,
                        delivery = %entry.delivery,
                        "webhook delivery failed, retrying in {backoff:?}: {e}"
                    );
                    self.set_error(hook, Some(e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    fn set_error(&self, hook: &Hook, error: Option<String>) {
        let mut errors = self
            .hooks
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            Some(error) => errors.insert(hook.key.clone(), error),
            None => errors.remove(&hook.key),
        };
    }

    /// Removes a delivered entry and records the success time.
    async fn remove(&self, key: String, delivered_at: Option<u64>) {
        let Some(hook) = self.hook() else { return };
        let ok_key = last_success_key(hook);
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(at) = delivered_at {
                store.put_meta(&ok_key, &at.to_be_bytes())?;
            }
            store.remove_meta(&key)
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(url = %hook.url, "cannot remove a delivered webhook entry: {e}");
        }
    }
}

/// `host:port` of `hook`, its metrics label.
fn host_port(hook: &Hook) -> String {
    super::host_of(&hook.url)
}

/// One POST of `entry` to `hook`; `Ok` when the receiver took it.
async fn send(hook: &Hook, entry: &Entry) -> Result<(), String> {
    let connect = tokio::net::TcpStream::connect((hook.host.as_str(), hook.port));
    let stream = tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let authority = if hook.port == 80 {
        hook.host.clone()
    } else if hook.host.contains(':') {
        format!("[{}]:{}", hook.host, hook.port)
    } else {
        format!("{}:{}", hook.host, hook.port)
    };
    let body = entry.body.as_bytes();
    let mut request = Request::post(hook.path.as_str())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("breakwater/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Breakwater-Event", entry.event.as_str())
        .header("X-Breakwater-Delivery", entry.delivery.as_str())
        .header("X-Breakwater-Signature", signature(&hook.secret, body));
    if hook.format == WebhookFormat::Thehive {
        let key = String::from_utf8_lossy(&hook.secret);
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = tokio::time::timeout(TIMEOUT, Limited::new(response.into_body(), 4096).collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
        .unwrap_or_default();
    // TheHive refuses a second alert with the same type, source and
    // sourceRef: that alert is there already, so this delivery is done.
    if hook.format == WebhookFormat::Thehive
        && status.is_client_error()
        && text.contains("already exists")
    {
        return Ok(());
    }
    Err(format!("receiver answered {status}"))
}
