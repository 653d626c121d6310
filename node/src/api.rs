//! The local HTTP API that `breakwater run` serves on loopback: bearer-token
//! authenticated JSON endpoints under `/v1/` and a server-sent-events stream,
//! each a thin translation between HTTP and one [`NodeHandle`] call.
//!
//! Every request body is parsed and validated here, so a malformed or
//! invalid request is answered with a 4xx `{"error": "…"}` and never
//! reaches the node.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use breakwater_protocol::{Bulletin, Indicator, OrgId, Severity, SignedRoster, Tlp};
use futures::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::handle::{ListFilter, NodeHandle, PublishRequest, RequestError};

/// Largest request body accepted (a roster file is at most 1 MiB encoded;
/// its JSON form is larger).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Refuses any address that is not loopback: the API must never be reachable
/// from the network.
pub fn check_loopback(addr: &SocketAddr) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the local API must listen on a loopback address, not {addr}"),
        ))
    }
}

/// Most API connections served at once. Further connections wait in the
/// kernel's listen backlog (they cost the node no file descriptor) until a
/// slot frees.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send a complete request head; this
/// is also how long a keep-alive connection may sit idle between requests.
/// A silent or slowloris connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// How long shutdown lets requests in flight finish before it closes their
/// connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The proof a node gives, in `GET /v1/hello?nonce=…`, that it holds the
/// API token, before a client sends the token: a BLAKE3 MAC of the
/// client's nonce under a key derived from the token. It reveals nothing
/// about the token, and a listener without the token cannot compute it.
pub fn api_proof(token: &str, nonce: &[u8; 32]) -> [u8; 32] {
    let key = blake3::derive_key("breakwater/api-proof/v1", token.trim().as_bytes());
    *blake3::keyed_hash(&key, nonce).as_bytes()
}

/// Serves the API on `listener` until `shutdown` completes. Refuses a
/// listener that is not bound to a loopback address. At most
/// [`MAX_CONNECTIONS`] connections are served at once, each must send its
/// request heads within [`HEADER_TIMEOUT`], and after `shutdown` this
/// returns within [`SHUTDOWN_GRACE`] (plus scheduling), whatever clients do.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    check_loopback(&local)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ui = crate::ui::state(handle.clone(), token.clone(), local, stop_rx.clone());
    let state = Arc::new(ApiState {
        handle,
        token,
        local,
        stop: stop_rx.clone(),
    });
    let app = router(state, ui);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    serve_router(listener, app, stop_rx).await;
    Ok(())
}

/// Serves `app` on `listener` until `stop_rx` turns true, with the API's
/// limits: at most [`MAX_CONNECTIONS`] connections at once, request heads
/// within [`HEADER_TIMEOUT`], and [`SHUTDOWN_GRACE`] for requests in flight
/// at the stop. The TAXII server ([`crate::taxii`]) serves through it too.
pub(crate) async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    stop_rx: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let stopped = wait_stopped(stop_rx.clone());
    tokio::pin!(stopped);
    loop {
        // Take a slot before accepting, so excess connections stay in the
        // backlog instead of holding descriptors.
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of descriptors: back off instead of spinning.
                    tracing::warn!("api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(app.clone());
        let conn_stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = wait_stopped(conn_stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            "api: closing {} connection(s) still open after {SHUTDOWN_GRACE:?}",
            connections.len()
        );
    }
    connections.abort_all();
}

async fn wait_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

struct ApiState {
    handle: NodeHandle,
    token: String,
    /// The address the API listens on: its IP is accepted as a `Host`.
    local: SocketAddr,
    /// Becomes true at shutdown, so open event streams end.
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("handle", &self.handle)
            .field("token", &"<redacted>")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

type Shared = Arc<ApiState>;

fn router(state: Shared, ui: crate::ui::SharedUi) -> Router {
    Router::new()
        .route("/v1/hello", get(hello))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/roster", get(roster).post(join))
        .route("/v1/publish", post(publish))
        .route("/v1/bulletins", get(list))
        .route("/v1/bulletins/{id}", get(show))
        .route("/v1/bulletins/{id}/retract", post(retract))
        .route("/v1/bulletins/{id}/sightings", post(sight))
        .route("/v1/search", get(search))
        .route("/v1/events", get(events))
        .route("/v1/export", get(export))
        .route("/v1/import", post(import))
        .merge(crate::ui::api_routes(ui.clone()))
        .merge(crate::metrics::router(state.handle.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
        // The dashboard has its own Host, session and CSRF checks, not the
        // bearer check above.
        .merge(crate::ui::router(ui))
}

/// An error answered as `{"error": "…"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> ApiError {
        let status = match error {
            RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string())
    }
}

/// A JSON body whose rejection is itself JSON.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = match rejection {
        JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => rejection.status(),
    };
    let status = if status.is_success() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(
        status,
        format!("invalid request body: {}", rejection.body_text()),
    )
}

/// A query string whose rejection is JSON.
struct Query<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(format!("invalid query: {}", rejection.body_text()))
}

/// Whether a `Host` header names this loopback API: `localhost`,
/// `127.0.0.1`, `[::1]` or the IP the API listens on, with or without a
/// port. Anything else (a DNS-rebinding name, another host) is refused.
pub fn host_allowed(host: &str, local: &SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => ip,
            Some((ip, port)) if port.strip_prefix(':').is_some_and(is_port) => ip,
            _ => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    if name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1" {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == local.ip())
}

fn is_port(digits: &str) -> bool {
    !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
}

async fn authenticate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    // Defence in depth against DNS rebinding: a page that got a browser to
    // call this port under its own name is refused before anything else.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    match host {
        Some(host) if host_allowed(host, &state.local) => {}
        Some(host) => {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "host {host:?} is not this node's local API (use localhost, 127.0.0.1 or [::1])"
                ),
            )
            .into_response();
        }
        None => {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "missing Host header (use localhost, 127.0.0.1 or [::1])",
            )
            .into_response();
        }
    }
    // The one unauthenticated endpoint: the node proves itself before the
    // client sends the token.
    if request.uri().path() == "/v1/hello" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong API token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API token (send Authorization: Bearer <token from the data directory's api-token>)",
        )
        .into_response(),
    }
}

/// Compares without an early exit, so timing does not reveal a prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

type Json<T> = Result<axum::Json<T>, ApiError>;

/// Query of `GET /v1/hello`.
#[derive(Deserialize)]
struct HelloQuery {
    /// 32 random bytes, hex.
    nonce: String,
}

/// Answer of `GET /v1/hello`.
#[derive(Serialize)]
struct Hello {
    /// [`api_proof`] of the nonce, hex.
    proof: String,
}

async fn hello(State(state): State<Shared>, Query(query): Query<HelloQuery>) -> Json<Hello> {
    let nonce = hex::decode(&query.nonce)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| ApiError::invalid("nonce must be 64 hex characters"))?;
    Ok(axum::Json(Hello {
        proof: hex::encode(api_proof(&state.token, &nonce)),
    }))
}

async fn status(State(state): State<Shared>) -> Json<crate::handle::Status> {
    Ok(axum::Json(state.handle.status().await?))
}

async fn peers(State(state): State<Shared>) -> Json<Vec<crate::handle::PeerInfo>> {
    Ok(axum::Json(state.handle.peers().await?))
}

async fn roster(State(state): State<Shared>) -> Json<SignedRoster> {
    Ok(axum::Json(state.handle.roster().await?))
}

#[derive(Serialize)]
struct Joined {
    version: u64,
}

async fn join(State(state): State<Shared>, Body(roster): Body<SignedRoster>) -> Json<Joined> {
    let version = state.handle.join(roster).await?;
    Ok(axum::Json(Joined { version }))
}

/// The body of `POST /v1/publish`: labels and indicators as operators type
/// them, each checked here so the error names the problem.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// `clear`, `green`, `amber`, `amber+strict` or `red`.
    pub tlp: String,
    /// Recipient organisations (AMBER and stricter).
    #[serde(default)]
    pub to: Vec<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// One-line title.
    pub title: String,
    /// Summary text.
    #[serde(default)]
    pub summary: String,
    /// Indicators as `kind:value`.
    #[serde(default)]
    pub indicators: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Sectors concerned.
    #[serde(default)]
    pub sectors: Vec<String>,
    /// References.
    #[serde(default)]
    pub references: Vec<String>,
    /// A STIX 2.1 bundle as JSON text.
    #[serde(default)]
    pub stix: Option<String>,
    /// Lifetime in milliseconds.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

impl PublishBody {
    /// Parses and checks every field into a node request.
    pub fn into_request(self) -> Result<PublishRequest, String> {
        let tlp: Tlp = self.tlp.parse().map_err(|e| format!("{e}"))?;
        let severity: Severity = self.severity.parse().map_err(|e| format!("{e}"))?;
        let to = self
            .to
            .iter()
            .map(|org| org.parse::<OrgId>().map_err(|e| format!("--to: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if !to.is_empty() && !tlp.names_recipients() {
            return Err(format!(
                "TLP {tlp} goes to every member; --to is only for amber, amber+strict and red"
            ));
        }
        if to.is_empty() && tlp.names_recipients() {
            return Err(format!(
                "TLP {tlp} needs at least one recipient organisation (--to)"
            ));
        }
        let indicators = self
            .indicators
            .iter()
            .map(|text| Indicator::parse(text).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if self.ttl_ms == Some(0) {
            return Err("expiry must be in the future".to_string());
        }
        let mut bulletin = Bulletin::new(&self.title, severity);
        bulletin.summary = self.summary;
        bulletin.indicators = indicators;
        bulletin.tags = self.tags;
        bulletin.sectors = self.sectors;
        bulletin.references = self.references;
        bulletin.stix = self.stix;
        bulletin.check().map_err(|e| e.to_string())?;
        Ok(PublishRequest {
            tlp,
            to,
            bulletin,
            ttl_ms: self.ttl_ms,
        })
    }
}

async fn publish(
    State(state): State<Shared>,
    Body(body): Body<PublishBody>,
) -> Json<crate::handle::Published> {
    let request = body.into_request().map_err(ApiError::invalid)?;
    check_recipients(&state.handle, &request.to).await?;
    Ok(axum::Json(state.handle.publish(request).await?))
}

/// Refuses recipients that are not current members of the roster.
pub(crate) async fn check_recipients(
    handle: &NodeHandle,
    to: &[OrgId],
) -> Result<(), RequestError> {
    if to.is_empty() {
        return Ok(());
    }
    let roster = handle.roster().await?;
    for org in to {
        match roster.roster.member(org) {
            Some(member) if !member.revoked => {}
            Some(_) => return Err(RequestError::Invalid(format!("org {org} is revoked"))),
            None => {
                return Err(RequestError::Invalid(format!(
                    "unknown org {org} (not in the roster)"
                )));
            }
        }
    }
    Ok(())
}

/// Matches `GET /v1/bulletins` and `GET /v1/search` return when the query
/// names no `limit`.
pub const DEFAULT_PAGE: usize = 200;
/// Largest `limit` a query may ask for.
pub const MAX_PAGE: usize = 5000;

/// Checks a query's `offset`/`limit` and applies the defaults.
fn page_of(offset: Option<usize>, limit: Option<usize>) -> Result<(usize, usize), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok((offset.unwrap_or(0), limit))
}

/// Query of `GET /v1/bulletins`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    since: Option<u64>,
    severity: Option<String>,
    tlp: Option<String>,
    all: Option<bool>,
    hide_retracted: Option<bool>,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Json<Vec<crate::handle::Summary>> {
    let severity = match query.severity {
        Some(text) => Some(
            text.parse::<Severity>()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
        ),
        None => None,
    };
    let tlp = match query.tlp {
        Some(text) => Some(
            text.parse::<Tlp>()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
        ),
        None => None,
    };
    let (offset, limit) = page_of(query.offset, query.limit)?;
    let filter = ListFilter {
        since: query.since,
        severity,
        tlp,
        all: query.all.unwrap_or(false),
        hide_retracted: query.hide_retracted.unwrap_or(false),
        offset,
        limit: Some(limit),
    };
    Ok(axum::Json(state.handle.list(filter).await?))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(format!("envelope id {id:?} is not hex")));
    }
    Ok(())
}

async fn show(State(state): State<Shared>, Path(id): Path<String>) -> Json<crate::handle::Detail> {
    check_id(&id)?;
    Ok(axum::Json(state.handle.get(id.to_ascii_lowercase()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    indicator: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn search(
    State(state): State<Shared>,
    Query(query): Query<SearchQuery>,
) -> Json<Vec<crate::handle::Summary>> {
    let indicator =
        Indicator::parse(&query.indicator).map_err(|e| ApiError::invalid(e.to_string()))?;
    let (offset, limit) = page_of(query.offset, query.limit)?;
    Ok(axum::Json(
        state
            .handle
            .search_page(indicator, offset, Some(limit))
            .await?,
    ))
}

/// The body of `POST /v1/bulletins/{id}/retract`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetractBody {
    /// Why the bulletin is withdrawn.
    pub reason: String,
}

impl RetractBody {
    /// The reason, checked as the API checks it before asking the node.
    pub fn into_reason(self) -> Result<String, String> {
        if self.reason.trim().is_empty() {
            return Err("a retraction needs a reason".to_string());
        }
        Ok(self.reason)
    }
}

async fn retract(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Body(body): Body<RetractBody>,
) -> Json<crate::handle::Published> {
    check_id(&id)?;
    let reason = body.into_reason().map_err(ApiError::invalid)?;
    let target = state.handle.get(id.to_ascii_lowercase()).await?.summary.id;
    Ok(axum::Json(state.handle.retract(target, reason).await?))
}

/// The body of `POST /v1/bulletins/{id}/sightings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SightBody {
    /// The indicator seen, as `kind:value`.
    pub indicator: String,
}

impl SightBody {
    /// The indicator, checked as the API checks it before asking the node.
    pub fn into_indicator(self) -> Result<Indicator, String> {
        Indicator::parse(&self.indicator).map_err(|e| e.to_string())
    }
}

async fn sight(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Body(body): Body<SightBody>,
) -> Json<crate::handle::Published> {
    check_id(&id)?;
    let indicator = body.into_indicator().map_err(ApiError::invalid)?;
    let target = state.handle.get(id.to_ascii_lowercase()).await?.summary.id;
    Ok(axum::Json(state.handle.sight(target, indicator).await?))
}

/// `GET /v1/export?since=MS&ids=HEX,HEX&author=ORG&all=BOOL`: stored
/// envelopes (hex bytes) with the bodies this node opens and the roster,
/// for the CLI's interop exports, which apply the egress policy.
async fn export(
    State(state): State<Shared>,
    Query(filter): Query<crate::export::ExportFilter>,
) -> Json<crate::export::Exported> {
    Ok(axum::Json(state.handle.export(filter).await?))
}

/// `POST /v1/import`: an air-gap bundle's items (hex), validated and stored
/// as a sync answer is; one outcome per item.
async fn import(
    State(state): State<Shared>,
    Body(request): Body<crate::export::ImportRequest>,
) -> Json<crate::export::ImportReport> {
    Ok(axum::Json(state.handle.import(request).await?))
}

async fn events(State(state): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.handle.subscribe();
    let stop = state.stop.clone();
    let stream = futures::stream::unfold((receiver, stop), |(mut receiver, mut stop)| async move {
        loop {
            if *stop.borrow() {
                return None;
            }
            let next = tokio::select! {
                next = receiver.recv() => next,
                _ = stop.changed() => return None,
            };
            match next {
                Ok(event) => {
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    return Some((Ok(Event::default().data(data)), (receiver, stop)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn api_state_debug_redacts_the_token() {
        let (commands, _commands_rx) = tokio::sync::mpsc::channel(1);
        let (jobs, _jobs_rx) = tokio::sync::mpsc::channel(1);
        let (events, _) = broadcast::channel(1);
        let (_stop_tx, stop) = watch::channel(false);
        let token = "c874f18f0123456789abcdef0123456789abcdef0123456789abcdef0b66b4ce";
        let state = ApiState {
            handle: NodeHandle {
                commands,
                jobs,
                events,
                peer_id: libp2p::PeerId::random(),
                own_feed: watch::channel(true).1,
                publish_wait_until: tokio::time::Instant::now(),
                metrics: Default::default(),
            },
            token: token.to_string(),
            local: SocketAddr::from(([127, 0, 0, 1], 7475)),
            stop,
        };
        for text in [format!("{state:?}"), format!("{state:#?}")] {
            assert!(!text.contains(token), "{text}");
            assert!(!text.contains(&token[..16]), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn host_allow_list() {
        let v4 = SocketAddr::from(([127, 0, 0, 1], 7475));
        let other = SocketAddr::from(([127, 0, 0, 2], 7475));
        for host in [
            "localhost",
            "LOCALHOST:7475",
            "127.0.0.1",
            "127.0.0.1:7475",
            "[::1]",
            "[::1]:7475",
        ] {
            assert!(host_allowed(host, &v4), "{host}");
        }
        assert!(host_allowed("127.0.0.2:7475", &other));
        for host in [
            "",
            "evil.example",
            "evil.example:7475",
            "localhost.evil.example",
            "127.0.0.2:7475",
            "127.0.0.1:",
            "127.0.0.1:port",
            "127.0.0.1:7475:1",
            "::1",
            "[::1",
            "[::1]7475",
            "[::2]:7475",
            "0.0.0.0",
            "10.0.0.1:7475",
        ] {
            assert!(!host_allowed(host, &v4), "{host}");
        }
    }

    #[test]
    fn loopback_only() {
        assert!(
            check_loopback(
                &"127.0.0.1:7475"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
            )
            .is_ok()
        );
        assert!(check_loopback(&SocketAddr::from(([0, 0, 0, 0], 7475))).is_err());
    }

    #[test]
    fn publish_body_names_the_problem() {
        let body = |tlp: &str, severity: &str, indicator: &str| PublishBody {
            tlp: tlp.into(),
            to: vec![],
            severity: severity.into(),
            title: "t".into(),
            summary: String::new(),
            indicators: vec![indicator.into()],
            tags: vec![],
            sectors: vec![],
            references: vec![],
            stix: None,
            ttl_ms: None,
        };
        let err = body("purple", "high", "ipv4:1.2.3.4")
            .into_request()
            .err()
            .unwrap_or_default();
        assert!(err.contains("TLP"), "{err}");
        let err = body("green", "extreme", "ipv4:1.2.3.4")
            .into_request()
            .err()
            .unwrap_or_default();
        assert!(err.contains("extreme"), "{err}");
        let err = body("green", "high", "ipv4:999.1.1.1")
            .into_request()
            .err()
            .unwrap_or_default();
        assert!(err.contains("999.1.1.1"), "{err}");
        assert!(body("green", "high", "ipv4:1.2.3.4").into_request().is_ok());
    }
}
