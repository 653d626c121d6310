//! The analyst's web dashboard, served at `/ui/` on the local API listener
//! (loopback only): server-rendered pages ([`pages`], templates in
//! [`view`]) that call the same [`NodeHandle`] queries as the `/v1/` API,
//! with htmx and the dashboard's own script and style vendored into the
//! binary ([`assets`]).
//!
//! Who may use it: a browser that logged in with the API token or with a
//! one-time code from `breakwater ui` ([`session`]) and holds the session
//! cookie (`HttpOnly`, `SameSite=Strict`). Every POST carries the session's
//! CSRF token; every request must name a loopback `Host` (the API's own
//! allow-list, [`crate::api::host_allowed`]), which defeats DNS rebinding;
//! every response carries `Content-Security-Policy: default-src 'self'`.
//! The `/v1/` API stays bearer-only: a session cookie opens nothing there.
//!
//! Plaintext leaves through the dashboard only when the one egress policy
//! lets it out through [`Channel::Dashboard`] ([`cap`]).

mod assets;
mod markdown;
mod pages;
mod session;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use breakwater_protocol::Tlp;
use breakwater_protocol::egress::{Channel, EgressCap};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::handle::NodeHandle;

pub use session::{CODE_TTL, SESSION_TTL};

/// The `Content-Security-Policy` of every dashboard response: nothing but
/// this origin, no inline script or style, no framing, forms post only here.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's egress cap: the local analyst's own screen, opened only
/// by the API token (or a code the token holder printed), so the same cap
/// as the local API (everything, RED included). Every label shown in
/// plaintext is checked against it.
pub fn cap() -> EgressCap {
    Channel::Dashboard.default_cap()
}

/// Whether plaintext labelled `tlp` may be shown on the dashboard.
fn shown(tlp: Tlp) -> bool {
    cap().allows(tlp)
}

/// What the dashboard's handlers share.
pub(crate) struct Ui {
    handle: NodeHandle,
    token: String,
    local: SocketAddr,
    stop: watch::Receiver<bool>,
    sessions: session::Sessions,
    /// Names the cookies of this node, so dashboards of several nodes
    /// reached under one host name (tunnels to `localhost:PORT`) keep their
    /// sessions apart: browsers do not separate cookies by port.
    cookie_suffix: String,
    mesh: pages::MeshTracker,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("local", &self.local)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The dashboard's shared state.
pub(crate) type SharedUi = Arc<Ui>;

/// The dashboard's state for a node's API listener at `local`; starts the
/// task that notes when peers come and go (for the mesh page).
pub(crate) fn state(
    handle: NodeHandle,
    token: String,
    local: SocketAddr,
    stop: watch::Receiver<bool>,
) -> SharedUi {
    let peer_hash = blake3::hash(handle.peer_id().to_bytes().as_slice());
    let cookie_suffix = hex::encode(&peer_hash.as_bytes()[..6]);
    let mesh = pages::MeshTracker::start(&handle, stop.clone());
    Arc::new(Ui {
        handle,
        token,
        local,
        stop,
        sessions: session::Sessions::default(),
        cookie_suffix,
        mesh,
    })
}

/// `POST /v1/ui/code`: a fresh one-time login code, for `breakwater ui`.
/// Mounted among the `/v1/` routes, so the API's bearer check guards it.
pub(crate) fn api_routes<S: Clone + Send + Sync + 'static>(ui: SharedUi) -> Router<S> {
    Router::new()
        .route("/v1/ui/code", post(new_code))
        .with_state(ui)
}

/// The answer of `POST /v1/ui/code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginCode {
    /// The code, to type on the dashboard's login page.
    pub code: String,
    /// Seconds it stays valid (it is also spent by its first use).
    pub expires_in_s: u64,
}

async fn new_code(State(ui): State<SharedUi>) -> axum::Json<LoginCode> {
    axum::Json(LoginCode {
        code: ui.sessions.new_code(),
        expires_in_s: CODE_TTL.as_secs(),
    })
}

/// The dashboard's routes, `/ui` and below, with their own Host check,
/// session check and CSRF check (not the API's bearer check).
pub(crate) fn router(ui: SharedUi) -> Router {
    Router::new()
        .route("/ui", get(pages::to_feed))
        .route("/ui/", get(pages::feed))
        .route("/ui/feed/rows", get(pages::feed_rows))
        .route("/ui/events", get(pages::events))
        .route("/ui/login", get(pages::login_page).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/b/{id}", get(pages::bulletin))
        .route("/ui/b/{id}/stix", get(pages::stix))
        .route("/ui/b/{id}/retract", post(pages::retract))
        .route("/ui/b/{id}/sightings", post(pages::sight))
        .route("/ui/publish", get(pages::publish_page).post(pages::publish))
        .route("/ui/publish/check", get(pages::check_indicators))
        .route("/ui/publish/preview", get(pages::preview))
        .route("/ui/search", get(pages::search))
        .route("/ui/mesh", get(pages::mesh))
        .route("/ui/roster", get(pages::roster))
        .route("/ui/static/{file}", get(assets::serve))
        .route("/ui/{*rest}", get(pages::not_found).post(pages::not_found))
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

/// The signed-in session a request belongs to (an extension set by
/// [`guard`]).
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    /// The token every form of this session carries.
    csrf: String,
}

/// The CSRF field of a posted form (other fields ignored here).
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Largest form body the dashboard reads.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Host check, security headers, session and CSRF checks for every `/ui`
/// request.
async fn guard(State(ui): State<SharedUi>, request: Request, next: Next) -> Response {
    let mut response = check(&ui, request, next).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn check(ui: &Ui, mut request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    if !host.is_some_and(|host| crate::api::host_allowed(host, &ui.local)) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only to localhost, 127.0.0.1 or [::1] (DNS rebinding is refused)",
        );
    }
    let path = request.uri().path();
    // The login form checks its own CSRF token (the login cookie's).
    let public = path.starts_with("/ui/static/") || path == "/ui/login";
    let session = session_cookie(&request, &ui.cookie_suffix)
        .and_then(|id| ui.sessions.find(&id))
        .map(|csrf| Signed { csrf });
    let session = match (session, public) {
        (Some(session), _) => session,
        (None, true) => return next.run(request).await,
        // An htmx request of a page whose session ended: htmx sends the
        // whole page to the login form instead of swapping it into a part.
        (None, false) if request.headers().contains_key("hx-request") => {
            return (
                StatusCode::UNAUTHORIZED,
                [("hx-redirect", "/ui/login")],
                "log in first",
            )
                .into_response();
        }
        (None, false) if request.method() == Method::GET => {
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/ui/login")],
                "log in first",
            )
                .into_response();
        }
        (None, false) => {
            return refusal(StatusCode::UNAUTHORIZED, "log in first");
        }
    };
    if request.method() == Method::POST && !public {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => return refusal(StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
        };
        let probe = Request::from_parts(parts.clone(), axum::body::Body::from(bytes.clone()));
        let sent = axum::Form::<CsrfField>::from_request(probe, &())
            .await
            .map(|form| form.0.csrf)
            .unwrap_or_default();
        if !crate::api::constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return refusal(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: reload the page and try again",
            );
        }
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// A short plain-text refusal.
fn refusal(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// The name of this node's session cookie.
fn session_cookie_name(suffix: &str) -> String {
    format!("bw_session_{suffix}")
}

/// The name of this node's login (pre-session CSRF) cookie.
fn login_cookie_name(suffix: &str) -> String {
    format!("bw_login_{suffix}")
}

fn session_cookie(request: &Request, suffix: &str) -> Option<String> {
    cookie(request, &session_cookie_name(suffix))
}

/// The value of the cookie `name`, if the request sends it.
fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let request = Request::builder()
            .header(header::COOKIE, "bw_session_ab=1; bw_session_abc=2")
            .header(header::COOKIE, "other=3")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        assert_eq!(cookie(&request, "bw_session_abc").as_deref(), Some("2"));
        assert_eq!(cookie(&request, "bw_session_ab").as_deref(), Some("1"));
        assert_eq!(cookie(&request, "other").as_deref(), Some("3"));
        assert_eq!(cookie(&request, "bw_session"), None);
    }

    #[test]
    fn the_dashboard_cap_is_the_local_apis() {
        assert_eq!(cap(), Channel::LocalApi.default_cap());
        assert!(shown(Tlp::Amber));
    }
}
