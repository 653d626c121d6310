//! The TAXII 2.1 server, off unless `config.json` has a `"taxii"` block
//! (`breakwater taxii enable` writes one): discovery at `/taxii2/`, one API
//! root (`/taxii2/breakwater/`), read collections that serve the STIX
//! objects of the envelopes this node opens, never above a collection's
//! cap ([`breakwater_protocol::egress_allowed`] decides), and write
//! (inbox) collections that publish a posted bundle as this organisation.
//!
//! It has its own listener and its own token (`DATA_DIR/taxii-token`, HTTP
//! Basic with any user name and the token as password, or `Bearer` /
//! `Token`): a TAXII reader cannot reach the local API. Media types, status
//! codes and error bodies follow TAXII 2.1 as taxii2-client, OpenCTI and
//! MISP use it (PROTOCOL.md §22).

mod inbox;
mod objects;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use breakwater_protocol::stix::{parse_timestamp, sdo_id};
use breakwater_protocol::{Digest, EgressCap, OrgId, Roster, Tlp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use self::inbox::{Inbox, Statuses};
use self::objects::{Cursor, Filters, Served, VersionMatch};
use crate::config::DataDir;
use crate::handle::{NodeHandle, RequestError};

pub use self::objects::version_of;

/// The one API root's name: `/taxii2/breakwater/`.
pub const API_ROOT: &str = "breakwater";
/// TAXII's media type, on every answer.
pub const TAXII_MEDIA: &str = "application/taxii+json;version=2.1";
/// STIX's media type, in collections and manifests.
pub const STIX_MEDIA: &str = "application/stix+json;version=2.1";
/// Objects per page when the client sets no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// Most objects per page (a larger `limit` is lowered to it).
pub const MAX_PAGE: usize = 1000;
/// Largest POST body (the API root's `max_content_length`).
pub const MAX_CONTENT_LENGTH: usize = 4 * 1024 * 1024;
/// The default listen address of `breakwater taxii enable`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

/// The `"taxii"` block of `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxiiConfig {
    /// The TAXII listener (loopback by default; behind a TLS reverse proxy
    /// when consumers are elsewhere).
    pub listen: SocketAddr,
    /// The URL consumers reach the server at (discovery's absolute API-root
    /// URLs start with it).
    pub public_url: String,
    /// The collections.
    pub collections: Vec<CollectionConfig>,
}

/// One collection of the `"taxii"` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Its name: the collection's title, which OpenCTI's connector matches.
    pub name: String,
    /// The strictest label it serves (a write collection: accepts).
    pub max_tlp: Tlp,
    /// A write (inbox) collection: POSTed bundles are published; it serves
    /// nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
    /// A write collection's recipient organisations for AMBER, AMBER+STRICT
    /// and RED posts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_to: Vec<String>,
    /// RED may pass (needs `max_tlp` red too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_red: bool,
}

impl CollectionConfig {
    /// Its egress cap.
    pub fn cap(&self) -> Result<EgressCap, String> {
        EgressCap::new(self.max_tlp, self.allow_red)
            .map_err(|e| format!("taxii collection {:?}: {e}", self.name))
    }
}

impl TaxiiConfig {
    /// The block `breakwater taxii enable` writes: `shared` (up to
    /// AMBER+STRICT), `clear`, and the write collection `inbox` (up to
    /// AMBER, no recipients named: set `default_to` to seal AMBER posts to
    /// other organisations).
    pub fn default_at(listen: SocketAddr, public_url: Option<String>) -> TaxiiConfig {
        let public_url = public_url.unwrap_or_else(|| format!("http://{listen}/"));
        let collection = |name: &str, max_tlp, write| CollectionConfig {
            name: name.to_string(),
            max_tlp,
            write,
            default_to: Vec::new(),
            allow_red: false,
        };
        TaxiiConfig {
            listen,
            public_url,
            collections: vec![
                collection("shared", Tlp::AmberStrict, false),
                collection("clear", Tlp::Clear, false),
                collection("inbox", Tlp::Amber, true),
            ],
        }
    }

    /// Refuses a block the server could not serve as written.
    pub fn check(&self) -> Result<(), String> {
        let url = self.public_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "taxii public_url {url:?} must start with http:// or https://"
            ));
        }
        if self.collections.is_empty() {
            return Err("taxii collections is empty: name at least one".into());
        }
        let mut names = std::collections::HashSet::new();
        for collection in &self.collections {
            let name = &collection.name;
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err(format!(
                    "taxii collection name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(format!("taxii collection name {name:?} is used twice"));
            }
            collection.cap()?;
            if !collection.write && !collection.default_to.is_empty() {
                return Err(format!(
                    "taxii collection {name:?}: default_to is for write collections"
                ));
            }
            for org in &collection.default_to {
                org.parse::<OrgId>()
                    .map_err(|e| format!("taxii collection {name:?}: default_to {org:?}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The API root's absolute URL.
    pub fn api_root_url(&self) -> String {
        format!(
            "{}/taxii2/{API_ROOT}/",
            self.public_url.trim().trim_end_matches('/')
        )
    }
}

/// The TAXII token file.
pub fn token_path(data_dir: &DataDir) -> std::path::PathBuf {
    data_dir.root().join("taxii-token")
}

/// A collection as served.
#[derive(Debug, Clone)]
struct Collection {
    id: String,
    config: CollectionConfig,
    cap: EgressCap,
}

/// A collection's id: a UUID derived from the consortium and its name, so
/// it is the same on every node and across restarts.
pub fn collection_id(consortium: &Digest, name: &str) -> String {
    let id = sdo_id(
        "collection",
        "taxii-collection",
        &[consortium.0.as_slice(), name.as_bytes()],
    );
    id.trim_start_matches("collection--").to_string()
}

struct TaxiiState {
    handle: NodeHandle,
    token: String,
    config: TaxiiConfig,
    collections: Vec<Collection>,
    statuses: Statuses,
}

impl std::fmt::Debug for TaxiiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaxiiState")
            .field("token", &"<redacted>")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Shared = Arc<TaxiiState>;

/// Serves TAXII on `listener` until `shutdown` completes, with the
/// collections of `config` and `token` as the credential.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    config: TaxiiConfig,
    token: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    config.check()?;
    if token.trim().len() < 16 {
        return Err("the TAXII token is shorter than 16 characters".into());
    }
    let roster = handle.roster().await.map_err(|e| e.to_string())?;
    let consortium = roster.roster.consortium_id();
    let mut collections = Vec::new();
    for c in &config.collections {
        collections.push(Collection {
            id: collection_id(&consortium, &c.name),
            cap: c.cap()?,
            config: c.clone(),
        });
    }
    let state = Arc::new(TaxiiState {
        handle,
        token: token.trim().to_string(),
        config,
        collections,
        statuses: Statuses::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    crate::api::serve_router(listener, router(state), stop_rx).await;
    Ok(())
}

/// Starts the TAXII server of `data_dir` if its config has a `"taxii"`
/// block: binds the listener and reads the token first, so a bad address or
/// a missing or open token file fails here, in one line.
pub async fn start(
    data_dir: &DataDir,
    config: Option<TaxiiConfig>,
    handle: NodeHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<Result<(), String>>>, String> {
    let Some(config) = config else {
        return Ok(None);
    };
    config.check()?;
    let path = token_path(data_dir);
    let token = read_token(&path)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on the TAXII address {}: {e}", config.listen))?;
    if !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "TAXII listens beyond loopback over plain HTTP: put a TLS reverse proxy in front of it"
        );
    }
    tracing::info!(listen = %config.listen, url = %config.api_root_url(), "TAXII 2.1 server on");
    Ok(Some(tokio::spawn(async move {
        let served = serve(listener, handle, config, token, shutdown).await;
        if let Err(e) = &served {
            tracing::error!("the TAXII server stopped: {e}");
        }
        served
    })))
}

/// Reads the TAXII token, refusing a file its group or others may read.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "{}: {e} (run `breakwater taxii enable` to create it)",
                path.display()
            )
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} holds the TAXII token but its mode is {mode:04o}; run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(format!(
            "{}: the TAXII token is shorter than 16 characters",
            path.display()
        ));
    }
    Ok(token)
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/taxii2/", get(discovery))
        .route("/taxii2/{root}/", get(api_root))
        .route("/taxii2/{root}/status/{status}/", get(status))
        .route("/taxii2/{root}/collections/", get(collections))
        .route("/taxii2/{root}/collections/{id}/", get(collection))
        .route(
            "/taxii2/{root}/collections/{id}/objects/",
            get(objects).post(add_objects),
        )
        .route(
            "/taxii2/{root}/collections/{id}/objects/{object}/",
            get(object).delete(delete_object),
        )
        .route(
            "/taxii2/{root}/collections/{id}/objects/{object}/versions/",
            get(versions),
        )
        .route("/taxii2/{root}/collections/{id}/manifest/", get(manifest))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_CONTENT_LENGTH))
        .with_state(state)
}

/// A TAXII error message, as the answer body.
#[derive(Debug)]
struct TaxiiError {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl TaxiiError {
    fn new(status: StatusCode, title: &'static str, description: impl Into<String>) -> TaxiiError {
        TaxiiError {
            status,
            title,
            description: description.into(),
        }
    }
}

impl From<RequestError> for TaxiiError {
    fn from(e: RequestError) -> TaxiiError {
        TaxiiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Node unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_u16().to_string(),
        });
        let mut response = taxii_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"breakwater-taxii\""),
            );
        }
        response
    }
}

/// A JSON answer with TAXII's media type.
fn taxii_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, serde_json::to_string(body).unwrap_or_default()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TAXII_MEDIA));
    response
}

/// Authentication and content negotiation, before any handler.
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if !authorised(request.headers(), &state.token) {
        return TaxiiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "send HTTP Basic credentials with the TAXII token (DATA_DIR/taxii-token) as the password, or Authorization: Bearer <token>",
        )
        .into_response();
    }
    if let Some(accept) = request.headers().get(header::ACCEPT)
        && !accepts_taxii(accept.to_str().unwrap_or(""))
    {
        return TaxiiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable",
            format!("this server answers {TAXII_MEDIA} only"),
        )
        .into_response();
    }
    next.run(request).await
}

/// True when the `Authorization` header carries `token`: Basic with any
/// user name, `Bearer` or `Token`.
fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, credential) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credential = credential.trim();
    let offered = match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => credential.to_string(),
        "basic" => {
            let Some(decoded) = base64_decode(credential) else {
                return false;
            };
            let text = String::from_utf8_lossy(&decoded).into_owned();
            match text.split_once(':') {
                Some((_, password)) => password.to_string(),
                None => return false,
            }
        }
        _ => return false,
    };
    crate::api::constant_time_eq(offered.as_bytes(), token.as_bytes())
}

/// Standard base64 (with or without padding), for HTTP Basic.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for byte in text.trim_end_matches('=').bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// True when an `Accept` header admits TAXII 2.1 JSON (or anything).
fn accepts_taxii(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let range = range.replace(' ', "").to_ascii_lowercase();
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("");
        let params: Vec<&str> = parts.filter(|p| !p.starts_with("q=")).collect();
        match media {
            "*/*" | "application/*" => true,
            "application/taxii+json" => params.iter().all(|p| *p == "version=2.1"),
            _ => false,
        }
    })
}

async fn not_found() -> TaxiiError {
    TaxiiError::new(
        StatusCode::NOT_FOUND,
        "Not Found",
        "no such TAXII resource (paths end with '/')",
    )
}

async fn method_not_allowed() -> TaxiiError {
    TaxiiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "this TAXII resource does not take that method",
    )
}

fn check_root(root: &str) -> Result<(), TaxiiError> {
    if root == API_ROOT {
        Ok(())
    } else {
        Err(TaxiiError::new(
            StatusCode::NOT_FOUND,
            "Unknown API root",
            format!("this server has one API root, {API_ROOT}"),
        ))
    }
}

impl TaxiiState {
    fn collection(&self, root: &str, id: &str) -> Result<&Collection, TaxiiError> {
        check_root(root)?;
        self.collections.iter().find(|c| c.id == id).ok_or_else(|| {
            TaxiiError::new(
                StatusCode::NOT_FOUND,
                "Unknown collection",
                format!("no collection {id}"),
            )
        })
    }

    /// The collection `id`, which must be readable.
    fn readable(&self, root: &str, id: &str) -> Result<&Collection, TaxiiError> {
        let collection = self.collection(root, id)?;
        if collection.config.write {
            return Err(TaxiiError::new(
                StatusCode::FORBIDDEN,
                "Not readable",
                format!(
                    "collection {} is a write (inbox) collection",
                    collection.config.name
                ),
            ));
        }
        Ok(collection)
    }

    async fn roster(&self) -> Result<Roster, TaxiiError> {
        Ok(self.handle.roster().await?.roster)
    }
}

fn collection_resource(c: &Collection) -> Value {
    let mut description = format!(
        "Breakwater bulletins this node opens, up to TLP:{}",
        c.cap.max_tlp.as_str().to_uppercase()
    );
    if c.config.write {
        description = format!(
            "Write-only: a posted STIX bundle is published as one bulletin (up to TLP:{})",
            c.cap.max_tlp.as_str().to_uppercase()
        );
    }
    json!({
        "id": c.id,
        "title": c.config.name,
        "description": description,
        "can_read": !c.config.write,
        "can_write": c.config.write,
        "media_types": [STIX_MEDIA],
    })
}

async fn discovery(State(state): State<Shared>) -> Response {
    let root = state.config.api_root_url();
    taxii_json(
        StatusCode::OK,
        &json!({
            "title": "Breakwater TAXII 2.1",
            "description": "Threat bulletins of a Breakwater node, by collection and TLP cap",
            "default": root,
            "api_roots": [root],
        }),
    )
}

async fn api_root(Path(root): Path<String>) -> Result<Response, TaxiiError> {
    check_root(&root)?;
    Ok(taxii_json(
        StatusCode::OK,
        &json!({
            "title": "Breakwater",
            "description": "This node's collections",
            "versions": [TAXII_MEDIA],
            "max_content_length": MAX_CONTENT_LENGTH,
        }),
    ))
}

async fn status(
    State(state): State<Shared>,
    Path((root, id)): Path<(String, String)>,
) -> Result<Response, TaxiiError> {
    check_root(&root)?;
    let status = state.statuses.get(&id).ok_or_else(|| {
        TaxiiError::new(
            StatusCode::NOT_FOUND,
            "Unknown status",
            format!("no status {id} (status resources are kept 24 h, in memory)"),
        )
    })?;
    Ok(taxii_json(StatusCode::OK, &status))
}

async fn collections(
    State(state): State<Shared>,
    Path(root): Path<String>,
) -> Result<Response, TaxiiError> {
    check_root(&root)?;
    let all: Vec<Value> = state.collections.iter().map(collection_resource).collect();
    Ok(taxii_json(StatusCode::OK, &json!({ "collections": all })))
}

async fn collection(
    State(state): State<Shared>,
    Path((root, id)): Path<(String, String)>,
) -> Result<Response, TaxiiError> {
    let collection = state.collection(&root, &id)?;
    Ok(taxii_json(StatusCode::OK, &collection_resource(collection)))
}

/// The query of objects, manifest and versions: parsed by hand, because
/// `match[id]` and friends are not names serde's derive can take.
#[derive(Debug)]
struct Query {
    added_after: Option<u64>,
    limit: usize,
    next: Option<String>,
    filters: Filters,
}

fn bad_request(description: impl Into<String>) -> TaxiiError {
    TaxiiError::new(StatusCode::BAD_REQUEST, "Bad Request", description)
}

fn parse_query(raw: Option<&str>) -> Result<Query, TaxiiError> {
    let mut pairs: HashMap<String, String> = HashMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key).ok_or_else(|| bad_request("malformed query"))?;
        let value = percent_decode(value).ok_or_else(|| bad_request("malformed query"))?;
        pairs.insert(key, value);
    }
    let list = |name: &str| -> Vec<String> {
        pairs
            .get(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let added_after = match pairs.get("added_after") {
        Some(text) => Some(parse_timestamp(text).ok_or_else(|| {
            bad_request(format!(
                "added_after {text:?} is not a timestamp (YYYY-MM-DDTHH:MM:SS[.ffffff]Z)"
            ))
        })?),
        None => None,
    };
    let limit = match pairs.get("limit") {
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => (n as u64).min(MAX_PAGE as u64) as usize,
            _ => {
                return Err(bad_request(format!(
                    "limit {text:?} must be a positive integer"
                )));
            }
        },
        None => DEFAULT_PAGE,
    };
    let versions = list("match[version]");
    let version = match versions.as_slice() {
        [] => VersionMatch::Last,
        [one] if one == "last" => VersionMatch::Last,
        [one] if one == "first" => VersionMatch::First,
        [one] if one == "all" => VersionMatch::All,
        many => {
            for v in many {
                if parse_timestamp(v).is_none() {
                    return Err(bad_request(format!(
                        "match[version] {v:?} is not last, first, all or a timestamp"
                    )));
                }
            }
            VersionMatch::At(many.to_vec())
        }
    };
    Ok(Query {
        added_after,
        limit,
        next: pairs.get("next").cloned(),
        filters: Filters {
            ids: list("match[id]"),
            types: list("match[type]"),
            version,
            spec_versions: list("match[spec_version]"),
        },
    })
}

/// Decodes `%XX` escapes and `+` (as a space).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Where a page starts: at `next`, else just after `added_after`, else at
/// the beginning. A `next` made for other filters is refused.
fn start_of(query: &Query, collection: &Collection) -> Result<Cursor, TaxiiError> {
    let digest = query.filters.digest(&collection.id);
    match &query.next {
        Some(token) => Cursor::parse(token, digest).ok_or_else(|| {
            bad_request("next is unknown here or was made for other filters (keep the match[...] parameters of the first page)")
        }),
        None => Ok(Cursor {
            from: query.added_after.map_or(0, |t| t.saturating_add(1)),
            skip: 0,
        }),
    }
}

/// Adds the date headers of `served` to `response`.
fn with_date_headers(mut response: Response, served: &[Served]) -> Response {
    let first = served.iter().min_by_key(|s| s.added);
    let last = served.iter().max_by_key(|s| s.added);
    if let (Some(first), Some(last)) = (first, last) {
        for (name, value) in [
            ("X-TAXII-Date-Added-First", first.date_added()),
            ("X-TAXII-Date-Added-Last", last.date_added()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// One page of a read collection for the objects or manifest endpoint:
/// the collection, the parsed query and the page.
async fn collection_page<'s>(
    state: &'s TaxiiState,
    root: &str,
    id: &str,
    raw_query: Option<&str>,
) -> Result<(&'s Collection, Query, objects::Page), TaxiiError> {
    let collection = state.readable(root, id)?;
    let query = parse_query(raw_query)?;
    let start = start_of(&query, collection)?;
    let roster = state.roster().await?;
    let page = objects::page(
        &state.handle,
        &roster,
        collection.cap,
        &query.filters,
        start,
        query.limit,
    )
    .await?;
    Ok((collection, query, page))
}

/// The answer of a page: `{more, next?, objects?}` with `records` as its
/// objects, and the date headers.
fn page_response(
    collection: &Collection,
    query: &Query,
    page: &objects::Page,
    records: Vec<Value>,
) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("more".into(), json!(page.next.is_some()));
    if let Some(next) = page.next {
        body.insert(
            "next".into(),
            json!(next.token(query.filters.digest(&collection.id))),
        );
    }
    if !records.is_empty() {
        body.insert("objects".into(), Value::Array(records));
    }
    let response = taxii_json(StatusCode::OK, &Value::Object(body));
    with_date_headers(response, &page.objects)
}

async fn objects(
    State(state): State<Shared>,
    Path((root, id)): Path<(String, String)>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, TaxiiError> {
    let (collection, query, page) =
        collection_page(&state, &root, &id, raw_query.as_deref()).await?;
    let records = page.objects.iter().map(|s| s.object.clone()).collect();
    Ok(page_response(collection, &query, &page, records))
}

async fn manifest(
    State(state): State<Shared>,
    Path((root, id)): Path<(String, String)>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, TaxiiError> {
    let (collection, query, page) =
        collection_page(&state, &root, &id, raw_query.as_deref()).await?;
    let records = page
        .objects
        .iter()
        .map(|s| {
            json!({
                "id": s.object.get("id").cloned().unwrap_or(Value::Null),
                "date_added": s.date_added(),
                "version": match version_of(&s.object) {
                    // An observable has no created/modified: its version is
                    // when it was added.
                    "" => s.date_added(),
                    version => version.to_string(),
                },
                "media_type": STIX_MEDIA,
            })
        })
        .collect();
    Ok(page_response(collection, &query, &page, records))
}

/// Every version of one object the collection serves (at most a page's
/// worth of the collection is kept per version; the object's own versions
/// are few).
async fn object_versions(
    state: &TaxiiState,
    collection: &Collection,
    object: &str,
    version: VersionMatch,
) -> Result<Vec<Served>, TaxiiError> {
    let filters = Filters {
        ids: vec![object.to_string()],
        version,
        ..Filters::default()
    };
    let roster = state.roster().await?;
    let mut served =
        objects::all(&state.handle, &roster, collection.cap, &filters, MAX_PAGE).await?;
    // The same version of one object (an identity, an observable) comes with
    // every envelope that names it: keep its first.
    let mut seen = std::collections::HashSet::new();
    served.retain(|s| seen.insert(version_of(&s.object).to_string()));
    if served.is_empty() {
        return Err(TaxiiError::new(
            StatusCode::NOT_FOUND,
            "Unknown object",
            format!("no object {object} in this collection"),
        ));
    }
    Ok(served)
}

async fn object(
    State(state): State<Shared>,
    Path((root, id, object)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, TaxiiError> {
    let collection = state.readable(&root, &id)?;
    let query = parse_query(request.uri().query())?;
    let mut served = object_versions(&state, collection, &object, VersionMatch::All).await?;
    served.sort_by(|a, b| version_of(&a.object).cmp(version_of(&b.object)));
    let chosen: Vec<Served> = match &query.filters.version {
        VersionMatch::All => served,
        VersionMatch::First => served.into_iter().take(1).collect(),
        VersionMatch::Last => served.pop().into_iter().collect(),
        VersionMatch::At(at) => served
            .into_iter()
            .filter(|s| at.iter().any(|t| t == version_of(&s.object)))
            .collect(),
    };
    let mut body = serde_json::Map::new();
    body.insert("more".into(), json!(false));
    if !chosen.is_empty() {
        body.insert(
            "objects".into(),
            Value::Array(chosen.iter().map(|s| s.object.clone()).collect()),
        );
    }
    let response = taxii_json(StatusCode::OK, &Value::Object(body));
    Ok(with_date_headers(response, &chosen))
}

async fn versions(
    State(state): State<Shared>,
    Path((root, id, object)): Path<(String, String, String)>,
) -> Result<Response, TaxiiError> {
    let collection = state.readable(&root, &id)?;
    let served = object_versions(&state, collection, &object, VersionMatch::All).await?;
    let mut versions: Vec<&str> = served.iter().map(|s| version_of(&s.object)).collect();
    versions.sort_unstable();
    let response = taxii_json(
        StatusCode::OK,
        &json!({ "more": false, "versions": versions }),
    );
    Ok(with_date_headers(response, &served))
}

async fn delete_object(
    State(state): State<Shared>,
    Path((root, id, _object)): Path<(String, String, String)>,
) -> Result<Response, TaxiiError> {
    state.collection(&root, &id)?;
    Err(TaxiiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "objects cannot be deleted: withdraw a bulletin with `breakwater retract`, a signed retraction",
    ))
}

async fn add_objects(
    State(state): State<Shared>,
    Path((root, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, TaxiiError> {
    let collection = state.collection(&root, &id)?;
    let body = body.map_err(|e| {
        let status = e.status();
        let title = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "Payload Too Large"
        } else {
            "Bad Request"
        };
        TaxiiError::new(
            status,
            title,
            format!("{e} (max_content_length is {MAX_CONTENT_LENGTH} bytes)"),
        )
    })?;
    if !collection.config.write {
        return Err(TaxiiError::new(
            StatusCode::FORBIDDEN,
            "Not writable",
            format!(
                "collection {} is read-only; post to a write collection",
                collection.config.name
            ),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .replace(' ', "")
        .to_ascii_lowercase();
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("");
    let version_ok = parts
        .filter(|p| p.starts_with("version="))
        .all(|p| p == "version=2.1");
    if media != "application/taxii+json" || !version_ok {
        return Err(TaxiiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            format!("POST a TAXII envelope as {TAXII_MEDIA}"),
        ));
    }
    let envelope: Value = serde_json::from_slice(&body).map_err(|e| {
        TaxiiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Entity",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Some(objects) = envelope
        .get("objects")
        .and_then(Value::as_array)
        .filter(|objects| !objects.is_empty())
    else {
        return Err(TaxiiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Entity",
            "the body is not a TAXII envelope with objects ({\"objects\": [...]})",
        ));
    };
    let mut default_to = Vec::new();
    for org in &collection.config.default_to {
        if let Ok(org) = org.parse::<OrgId>() {
            default_to.push(org);
        }
    }
    let inbox = Inbox {
        name: collection.config.name.clone(),
        cap: collection.cap,
        default_to,
    };
    let now = crate::worker::now_ms();
    let status = inbox::post(&state.handle, &inbox, objects, now).await;
    state.statuses.put(&status);
    Ok(taxii_json(StatusCode::ACCEPTED, &status))
}

#[cfg(test)]
mod tests;
