//! The dashboard's pages and fragments: each handler asks the node through
//! the same [`crate::handle::NodeHandle`] calls as the `/v1/` API, checks
//! the egress policy before it renders plaintext, and renders with
//! [`super::view`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Mutex;

use axum::Extension;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use breakwater_protocol::{Body, Indicator, NodePublicKey, Severity, Tlp};
use futures::Stream;
use maud::{Markup, html};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use super::view::{self, Nav};
use super::{SharedUi, Signed, markdown, shown};
use crate::api::PublishBody;
use crate::handle::{ListFilter, NodeEvent, NodeHandle, RequestError, Summary};

/// Envelopes per feed page.
pub(crate) const PAGE_SIZE: usize = 25;

/// Most sightings a bulletin page lists.
const MAX_SIGHTINGS: usize = 50;

/// An error page with its status.
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn invalid(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<RequestError> for PageError {
    fn from(error: RequestError) -> PageError {
        let status = match error {
            RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        };
        PageError {
            status,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = view::page(
            "Error",
            Nav::None,
            None,
            "",
            false,
            html! { p.card.alarm role="alert" { (self.message) } p { a href="/ui/" { "Back to the feed" } } },
        );
        (self.status, Html(body.into_string())).into_response()
    }
}

type PageResult = Result<Response, PageError>;

/// This node's organisation, for page headers.
async fn org(ui: &SharedUi) -> String {
    ui.handle
        .roster()
        .await
        .ok()
        .and_then(|roster| {
            let me = NodePublicKey::from_peer_id(&ui.handle.peer_id())?;
            roster
                .roster
                .members
                .iter()
                .find(|member| member.card.nodes.iter().any(|node| node.node_key == me))
                .map(|member| member.card.org_id.to_string())
        })
        .unwrap_or_default()
}

async fn page(
    ui: &SharedUi,
    title: &str,
    nav: Nav,
    signed: &Signed,
    live: bool,
    content: Markup,
) -> Response {
    let org = org(ui).await;
    Html(view::page(title, nav, Some(&signed.csrf), &org, live, content).into_string())
        .into_response()
}

/// `GET /ui` → `/ui/`.
pub(crate) async fn to_feed() -> Redirect {
    Redirect::permanent("/ui/")
}

/// Any other `/ui/…` path.
pub(crate) async fn not_found() -> PageError {
    PageError {
        status: StatusCode::NOT_FOUND,
        message: "no such page".to_string(),
    }
}

// ---------------------------------------------------------------- login

/// The login form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    secret: String,
    #[serde(default)]
    csrf: String,
}

fn login_form(csrf: &str, problem: Option<&str>) -> Markup {
    view::page(
        "Log in",
        Nav::None,
        None,
        "",
        false,
        html! {
            @if let Some(problem) = problem {
                p.card.alarm role="alert" id="login-error" { (problem) }
            }
            form.card method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="secret" { "API token or one-time code" }
                    input type="password" id="secret" name="secret" autocomplete="off" required autofocus aria-describedby="secret-hint";
                    span.hint id="secret-hint" {
                        "The token is in the data directory's " code { "api-token" } " file; "
                        code { "breakwater ui" } " prints a one-time code."
                    }
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `GET /ui/login`: the form, with a fresh login CSRF cookie.
pub(crate) async fn login_page(
    State(ui): State<SharedUi>,
    signed: Option<Extension<Signed>>,
) -> Response {
    if signed.is_some() {
        return Redirect::to("/ui/").into_response();
    }
    let csrf = super::session::random_hex::<32>();
    let cookie = format!(
        "{}={csrf}; HttpOnly; SameSite=Strict; Path=/ui",
        super::login_cookie_name(&ui.cookie_suffix)
    );
    (
        [(header::SET_COOKIE, cookie)],
        Html(login_form(&csrf, None).into_string()),
    )
        .into_response()
}

/// `POST /ui/login`: the API token or a one-time code for a session cookie.
/// The form's CSRF field must match the login cookie (double submit).
pub(crate) async fn login(State(ui): State<SharedUi>, request: Request) -> Response {
    let expected = super::cookie(&request, &super::login_cookie_name(&ui.cookie_suffix));
    let form = match <Form<LoginForm> as axum::extract::FromRequest<()>>::from_request(request, &())
        .await
    {
        Ok(Form(form)) => form,
        Err(_) => return super::refusal(StatusCode::BAD_REQUEST, "malformed login form"),
    };
    let csrf_ok = expected.is_some_and(|expected| {
        crate::api::constant_time_eq(form.csrf.as_bytes(), expected.as_bytes())
    });
    if !csrf_ok {
        return super::refusal(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the login page and try again",
        );
    }
    let secret = form.secret.trim();
    let by_token = crate::api::constant_time_eq(secret.as_bytes(), ui.token.as_bytes());
    if !by_token && !ui.sessions.spend_code(secret) {
        tracing::info!("ui: refused a login (wrong token or code)");
        return (
            StatusCode::UNAUTHORIZED,
            Html(
                login_form(
                    &form.csrf,
                    Some("Wrong token or code (outstanding codes are now void)."),
                )
                .into_string(),
            ),
        )
            .into_response();
    }
    let id = ui.sessions.open();
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}",
        super::session_cookie_name(&ui.cookie_suffix),
        super::SESSION_TTL.as_secs()
    );
    let clear_login = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0",
        super::login_cookie_name(&ui.cookie_suffix)
    );
    // `AppendHeaders`: an array of pairs would keep only the last cookie.
    (
        StatusCode::SEE_OTHER,
        AppendHeaders([
            (header::SET_COOKIE, cookie),
            (header::SET_COOKIE, clear_login),
            (header::LOCATION, "/ui/".to_string()),
        ]),
    )
        .into_response()
}

/// `POST /ui/logout`.
pub(crate) async fn logout(State(ui): State<SharedUi>, request: Request) -> Response {
    if let Some(id) = super::session_cookie(&request, &ui.cookie_suffix) {
        ui.sessions.close(&id);
    }
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0",
        super::session_cookie_name(&ui.cookie_suffix)
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/ui/login".to_string()),
        ],
    )
        .into_response()
}

// ---------------------------------------------------------------- feed

/// The feed's filters, as the filter form sends them (empty = any).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct FeedQuery {
    tlp: String,
    severity: String,
    org: String,
    kind: String,
    /// `readable`, `sealed` or empty.
    readable: String,
    /// `hide`, `only` or empty.
    retracted: String,
    /// Text in the title, an indicator or the id.
    q: String,
    offset: usize,
}

impl FeedQuery {
    /// The query string of these filters at another offset.
    fn at(&self, offset: usize) -> String {
        let pairs = [
            ("tlp", self.tlp.as_str()),
            ("severity", self.severity.as_str()),
            ("org", self.org.as_str()),
            ("kind", self.kind.as_str()),
            ("readable", self.readable.as_str()),
            ("retracted", self.retracted.as_str()),
            ("q", self.q.as_str()),
        ];
        let mut query: Vec<String> = pairs
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect();
        query.push(format!("offset={offset}"));
        query.join("&")
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One page of the feed, newest first, and whether more follow.
/// Bulletins come from the node's list (as `GET /v1/bulletins`);
/// retractions and sightings, which that list leaves out, from its export
/// (as `GET /v1/export`), each page's rows then read as `GET
/// /v1/bulletins/{id}` reads them.
async fn feed_page(
    handle: &NodeHandle,
    query: &FeedQuery,
) -> Result<(Vec<Summary>, bool), PageError> {
    let tlp = match query.tlp.as_str() {
        "" => None,
        text => Some(
            text.parse::<Tlp>()
                .map_err(|e| PageError::invalid(e.to_string()))?,
        ),
    };
    let severity = match query.severity.as_str() {
        "" => None,
        text => Some(
            text.parse::<Severity>()
                .map_err(|e| PageError::invalid(e.to_string()))?,
        ),
    };
    match query.kind.as_str() {
        "" | "bulletin" => {}
        "retraction" | "sighting" => return follow_up_page(handle, query, tlp, severity).await,
        other => return Err(PageError::invalid(format!("unknown kind {other:?}"))),
    }
    let filter = ListFilter {
        tlp,
        severity,
        all: query.readable != "readable",
        hide_retracted: query.retracted == "hide",
        ..ListFilter::default()
    };
    let needle = query.q.trim().to_lowercase();
    let narrowed_here = !query.org.is_empty()
        || query.readable == "sealed"
        || query.retracted == "only"
        || !needle.is_empty();
    if !narrowed_here {
        // The store pages it: only one page (and one more item) is read.
        let mut items = handle
            .list(ListFilter {
                offset: query.offset,
                limit: Some(PAGE_SIZE + 1),
                ..filter
            })
            .await?;
        let more = items.len() > PAGE_SIZE;
        items.truncate(PAGE_SIZE);
        return Ok((items, more));
    }
    let matching: Vec<Summary> = handle
        .list(filter)
        .await?
        .into_iter()
        .filter(|item| query.org.is_empty() || item.author_org == query.org)
        .filter(|item| query.readable != "sealed" || !item.readable)
        .filter(|item| query.retracted != "only" || item.retracted)
        .filter(|item| needle.is_empty() || text_matches(item, &needle))
        .collect();
    let more = matching.len() > query.offset + PAGE_SIZE;
    let page = crate::handle::page(matching, query.offset, Some(PAGE_SIZE));
    Ok((page, more))
}

/// Stored retractions or sightings (`query.kind`) matching the filters
/// their headers answer, newest first, one page.
async fn follow_up_page(
    handle: &NodeHandle,
    query: &FeedQuery,
    tlp: Option<Tlp>,
    severity: Option<Severity>,
) -> Result<(Vec<Summary>, bool), PageError> {
    // Follow-ups have no severity, and are never retracted themselves.
    if severity.is_some() || query.retracted == "only" {
        return Ok((Vec::new(), false));
    }
    let needle = query.q.trim().to_lowercase();
    let exported = handle
        .export(crate::export::ExportFilter {
            all: query.readable != "readable",
            ..crate::export::ExportFilter::default()
        })
        .await?;
    let roster = &exported.roster.roster;
    let mut matching: Vec<(u64, String)> = follow_ups(&exported)
        .into_iter()
        .filter(|(_, envelope)| envelope.header.kind.as_str() == query.kind)
        .filter(|(item, _)| query.readable != "sealed" || item.body.is_none())
        .filter(|(_, envelope)| tlp.is_none_or(|tlp| envelope.header.tlp == tlp))
        .filter(|(_, envelope)| {
            query.org.is_empty()
                || roster
                    .org_of(&envelope.header.author)
                    .is_some_and(|org| org.to_string() == query.org)
        })
        .filter(|(item, _)| needle.is_empty() || item.id.to_hex().starts_with(&needle))
        .map(|(item, envelope)| (envelope.header.created_at, item.id.to_hex()))
        .collect();
    matching.sort_by(|a, b| b.cmp(a));
    let more = matching.len() > query.offset + PAGE_SIZE;
    let mut page = Vec::new();
    for (_, id) in crate::handle::page(matching, query.offset, Some(PAGE_SIZE)) {
        page.push(handle.get(id).await?.summary);
    }
    Ok((page, more))
}

/// The exported items that decode, with their envelopes.
fn follow_ups(
    exported: &crate::export::Exported,
) -> Vec<(&crate::export::ExportItem, breakwater_protocol::Envelope)> {
    exported
        .items
        .iter()
        .filter_map(|item| {
            let bytes = hex::decode(&item.envelope).ok()?;
            let envelope = breakwater_protocol::Envelope::decode(&bytes).ok()?;
            Some((item, envelope))
        })
        .collect()
}

/// Whether an envelope's id, or (when it may be shown) its title or an
/// indicator, contains `needle` (lower case).
fn text_matches(item: &Summary, needle: &str) -> bool {
    if item.id.to_hex().starts_with(needle) {
        return true;
    }
    if !(item.readable && shown(item.tlp)) {
        return false;
    }
    item.title
        .as_ref()
        .is_some_and(|title| title.to_lowercase().contains(needle))
        || item
            .indicators
            .iter()
            .flatten()
            .any(|indicator| indicator.to_string().to_lowercase().contains(needle))
}

fn feed_fragment(items: &[Summary], more: bool, query: &FeedQuery) -> Markup {
    html! {
        (view::rows(items, shown))
        nav.pager aria-label="Pages" {
            @if query.offset > 0 {
                a href={ "/ui/?" (query.at(query.offset.saturating_sub(PAGE_SIZE))) } { "← Newer" }
            }
            @if more {
                a href={ "/ui/?" (query.at(query.offset + PAGE_SIZE)) } { "Older →" }
            }
        }
    }
}

/// `GET /ui/`: the feed, with filters; refreshes live.
pub(crate) async fn feed(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
    Query(query): Query<FeedQuery>,
) -> PageResult {
    let (items, more) = feed_page(&ui.handle, &query).await?;
    let orgs = member_orgs(&ui.handle).await?;
    let select = |name: &str, label: &str, current: &str, options: &[(&str, &str)]| {
        html! {
            div {
                label for={ "f-" (name) } { (label) }
                select id={ "f-" (name) } name=(name) {
                    @for (value, text) in options {
                        option value=(value) selected[*value == current] { (text) }
                    }
                }
            }
        }
    };
    let org_options: Vec<(&str, &str)> = std::iter::once(("", "any"))
        .chain(orgs.iter().map(|org| (org.as_str(), org.as_str())))
        .collect();
    let content = html! {
        form.card.filters id="filters" method="get" action="/ui/"
            hx-get="/ui/feed/rows" hx-target="#feed" hx-trigger="change, submit, bw-update from:body delay:300ms" {
            (select("tlp", "TLP", &query.tlp, &[("", "any"), ("clear", "CLEAR"), ("green", "GREEN"), ("amber", "AMBER"), ("amber+strict", "AMBER+STRICT"), ("red", "RED")]))
            (select("severity", "Severity at least", &query.severity, &[("", "any"), ("low", "low"), ("medium", "medium"), ("high", "high"), ("critical", "critical")]))
            (select("org", "Organisation", &query.org, &org_options))
            (select("kind", "Kind", &query.kind, &[("", "bulletins"), ("retraction", "retractions"), ("sighting", "sightings")]))
            (select("readable", "Readable", &query.readable, &[("", "readable and sealed"), ("readable", "readable only"), ("sealed", "sealed only")]))
            (select("retracted", "Retracted", &query.retracted, &[("", "shown, marked"), ("hide", "hidden"), ("only", "only retracted")]))
            div {
                label for="f-q" { "Text" }
                input type="search" id="f-q" name="q" value=(query.q);
            }
            input type="hidden" name="offset" value=(query.offset);
            button type="submit" { "Filter" }
        }
        p.hint id="live-note" { "This list updates by itself as bulletins arrive." }
        div id="feed" aria-live="polite" { (feed_fragment(&items, more, &query)) }
    };
    Ok(page(&ui, "Feed", Nav::Feed, &signed, true, content).await)
}

/// `GET /ui/feed/rows`: the feed's rows alone (htmx swaps them in).
pub(crate) async fn feed_rows(
    State(ui): State<SharedUi>,
    Query(query): Query<FeedQuery>,
) -> PageResult {
    let (items, more) = feed_page(&ui.handle, &query).await?;
    Ok(Html(feed_fragment(&items, more, &query).into_string()).into_response())
}

/// `GET /ui/events`: one `update` event per node event (its kind only, no
/// content), for the page to refetch what it shows.
pub(crate) async fn events(
    State(ui): State<SharedUi>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = ui.handle.subscribe();
    let stop = ui.stop.clone();
    let stream = futures::stream::unfold((receiver, stop), |(mut receiver, mut stop)| async move {
        if *stop.borrow() {
            return None;
        }
        let next = tokio::select! {
            next = receiver.recv() => next,
            _ = stop.changed() => return None,
        };
        // A lagged receiver missed events: the page refetches all the same.
        let kind = match next {
            Ok(event) => event_kind(&event),
            Err(broadcast::error::RecvError::Lagged(_)) => "lagged",
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let event = Event::default().event("update").data(kind);
        Some((Ok(event), (receiver, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn event_kind(event: &NodeEvent) -> &'static str {
    match event {
        NodeEvent::Stored(_) => "stored",
        NodeEvent::Retracted { .. } => "retracted",
        NodeEvent::Equivocation { .. } => "equivocation",
        NodeEvent::RosterApplied { .. } => "roster",
        NodeEvent::GreenKeyProblem { .. } => "green-key-problem",
        NodeEvent::RosterFork { .. } => "roster-fork",
        NodeEvent::PeerConnected { .. } | NodeEvent::PeerDisconnected { .. } => "peer",
    }
}

async fn member_orgs(handle: &NodeHandle) -> Result<Vec<String>, PageError> {
    Ok(handle
        .roster()
        .await?
        .roster
        .members
        .iter()
        .map(|member| member.card.org_id.to_string())
        .collect())
}

// ---------------------------------------------------------------- bulletin

fn check_id(id: &str) -> Result<String, PageError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::invalid(format!("envelope id {id:?} is not hex")));
    }
    Ok(id.to_ascii_lowercase())
}

/// `GET /ui/b/{id}`: one envelope.
pub(crate) async fn bulletin(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
) -> PageResult {
    let detail = ui.handle.get(check_id(&id)?).await?;
    let summary = &detail.summary;
    let id = summary.id.to_hex();
    let open = summary.readable && shown(summary.tlp);
    let body = detail.body.as_ref().filter(|_| open);
    // Only the author's organisation may retract.
    let own = summary.author_org == org(&ui).await;
    let retraction = match detail.retracted_by {
        Some(by) => Some((by, ui.handle.get(by.to_hex()).await.ok())),
        None => None,
    };
    // Sightings refer to the bulletin, so its export brings them along.
    let mut sightings: Vec<(String, u64, Option<Indicator>)> = Vec::new();
    if summary.kind == "bulletin" {
        let exported = ui
            .handle
            .export(crate::export::ExportFilter {
                ids: id.clone(),
                all: true,
                ..crate::export::ExportFilter::default()
            })
            .await?;
        let roster = &exported.roster.roster;
        for (item, envelope) in follow_ups(&exported) {
            if !matches!(envelope.header.kind, breakwater_protocol::Kind::Sighting { target } if target == summary.id)
            {
                continue;
            }
            let org = roster
                .org_of(&envelope.header.author)
                .map(ToString::to_string)
                .unwrap_or_else(|| "unknown".to_string());
            let indicator = match &item.body {
                Some(Body::Sighting { indicator, .. }) if shown(envelope.header.tlp) => {
                    Some(indicator.clone())
                }
                _ => None,
            };
            sightings.push((org, envelope.header.created_at, indicator));
        }
        sightings.sort_by_key(|sighting| std::cmp::Reverse(sighting.1));
        sightings.truncate(MAX_SIGHTINGS);
    }
    let title = match (body, &summary.title) {
        (Some(_), Some(title)) => title.clone(),
        (Some(_), None) => format!("{} {}", summary.kind, &id[..12]),
        (None, _) => format!("Sealed {} {}", summary.kind, &id[..12]),
    };
    let content = html! {
        div.card {
            p { (view::tlp_badge(summary.tlp)) " " (view::tlp_meaning(summary.tlp)) }
            dl.meta {
                dt { "Envelope" } dd { code { (id) } }
                dt { "Organisation" } dd { (summary.author_org) }
                dt { "Kind" } dd { (summary.kind) }
                @if let Some(severity) = summary.severity.filter(|_| open) { dt { "Severity" } dd { (view::severity(Some(severity))) } }
                dt { "Created" } dd { (view::time(summary.created_at)) }
                dt { "Expires" } dd { (view::time(summary.expires_at)) }
                dt { "Recipients" } dd id="recipients" {
                    @if detail.recipients.is_empty() { "every member (" (summary.tlp.as_str().to_ascii_uppercase()) ")" }
                    @else { (detail.recipients.join(", ")) }
                }
                @if let Some(target) = summary.target { dt { "Target" } dd { a href={ "/ui/b/" (target.to_hex()) } { code { (target.to_hex()) } } } }
            }
        }
        @if let Some((by, retraction)) = &retraction {
            div.card.warn id="retraction" role="status" {
                strong { "Retracted" } " by " a href={ "/ui/b/" (by.to_hex()) } { code { (&by.to_hex()[..12]) } }
                @if let Some(Body::Retraction { reason }) = retraction.as_ref().filter(|r| shown(r.summary.tlp)).and_then(|r| r.body.as_ref()) {
                    ": " (reason)
                }
            }
        }
        @match body {
            None => p.card.sealed id="sealed" { "This node cannot read this envelope: it is sealed to other organisations. It is stored and relayed as ciphertext." },
            Some(Body::Bulletin(bulletin)) => {
                @if !bulletin.summary.is_empty() {
                    h2 { "Summary" }
                    div.card.markdown { (view::trusted(markdown::render(&bulletin.summary))) }
                }
                h2 { "Indicators" }
                @if bulletin.indicators.is_empty() { p { "None." } }
                ul.indicators {
                    @for indicator in &bulletin.indicators {
                        @let text = indicator.to_string();
                        li {
                            code { (text) }
                            @if let Some(note) = &indicator.note { span.hint { (note) } }
                            button.quiet type="button" data-copy=(indicator.value) aria-label={ "Copy " (text) } { "Copy" }
                        }
                    }
                }
                @if !bulletin.tags.is_empty() || !bulletin.sectors.is_empty() {
                    p { @for tag in &bulletin.tags { span.tag { (tag) } " " } @for sector in &bulletin.sectors { span.tag { "sector: " (sector) } " " } }
                }
                @if !bulletin.references.is_empty() {
                    h2 { "References" }
                    ul { @for reference in &bulletin.references { li { code { (reference) } } } }
                }
                h2 { "Sightings" }
                @if sightings.is_empty() { p id="sightings" { "No sightings reported." } }
                @else {
                    ul id="sightings" {
                        @for (org, at, indicator) in &sightings {
                            li {
                                (org) " · " (view::time(*at))
                                @if let Some(indicator) = indicator {
                                    " · " code { (indicator.to_string()) }
                                }
                            }
                        }
                    }
                }
                p { a.button href={ "/ui/b/" (id) "/stix" } download { "Download STIX 2.1" } }
                @if !bulletin.indicators.is_empty() {
                    form.card.filters method="post" action={ "/ui/b/" (id) "/sightings" } {
                        input type="hidden" name="csrf" value=(signed.csrf);
                        div {
                            label for="sighting" { "Report a sighting of" }
                            select id="sighting" name="indicator" {
                                @for indicator in &bulletin.indicators {
                                    option value=(indicator.to_string()) { (indicator.to_string()) }
                                }
                            }
                        }
                        button type="submit" { "Report sighting" }
                    }
                }
                @if own && retraction.is_none() {
                    form.card.filters method="post" action={ "/ui/b/" (id) "/retract" } {
                        input type="hidden" name="csrf" value=(signed.csrf);
                        div {
                            label for="reason" { "Retract: reason" }
                            input type="text" id="reason" name="reason" required maxlength="500";
                        }
                        button type="submit" { "Retract" }
                    }
                }
            },
            Some(Body::Retraction { reason }) => div.card { strong { "Reason: " } (reason) },
            Some(Body::Sighting { indicator, seen_at, note }) => div.card {
                p { "Seen " code { (indicator.to_string()) } " at " (view::time(*seen_at)) }
                @if let Some(note) = note { p { (note) } }
            },
        }
    };
    Ok(page(&ui, &title, Nav::Feed, &signed, false, content).await)
}

/// `GET /ui/b/{id}/stix`: the envelope (and its retraction) as a STIX 2.1
/// bundle, from the same export the CLI's `export stix` reads, capped at
/// the dashboard's egress cap.
pub(crate) async fn stix(State(ui): State<SharedUi>, Path(id): Path<String>) -> PageResult {
    let id = check_id(&id)?;
    let exported = ui
        .handle
        .export(crate::export::ExportFilter {
            ids: id.clone(),
            ..crate::export::ExportFilter::default()
        })
        .await?;
    let bundle = crate::export::stix_bundle(&exported, super::cap());
    if bundle.is_empty() {
        return Err(PageError::invalid(
            "nothing here may leave as STIX through the dashboard",
        ));
    }
    let file = format!(
        "attachment; filename=\"breakwater-{}.stix.json\"",
        &id[..id.len().min(12)]
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/stix+json;version=2.1".to_string(),
            ),
            (header::CONTENT_DISPOSITION, file),
        ],
        bundle.to_json(),
    )
        .into_response())
}

/// The retract form.
#[derive(Debug, Deserialize)]
pub(crate) struct RetractForm {
    #[serde(default)]
    reason: String,
}

/// `POST /ui/b/{id}/retract`: checked as `POST /v1/bulletins/{id}/retract`
/// checks it.
pub(crate) async fn retract(
    State(ui): State<SharedUi>,
    Path(id): Path<String>,
    Form(form): Form<RetractForm>,
) -> PageResult {
    let id = check_id(&id)?;
    let reason = crate::api::RetractBody {
        reason: form.reason.replace("\r\n", "\n"),
    }
    .into_reason()
    .map_err(PageError::invalid)?;
    let target = ui.handle.get(id).await?.summary.id;
    ui.handle.retract(target, reason).await?;
    Ok(Redirect::to(&format!("/ui/b/{}", target.to_hex())).into_response())
}

/// The sighting form.
#[derive(Debug, Deserialize)]
pub(crate) struct SightForm {
    #[serde(default)]
    indicator: String,
}

/// `POST /ui/b/{id}/sightings`: checked as `POST
/// /v1/bulletins/{id}/sightings` checks it.
pub(crate) async fn sight(
    State(ui): State<SharedUi>,
    Path(id): Path<String>,
    Form(form): Form<SightForm>,
) -> PageResult {
    let id = check_id(&id)?;
    let indicator = crate::api::SightBody {
        indicator: form.indicator,
    }
    .into_indicator()
    .map_err(PageError::invalid)?;
    let target = ui.handle.get(id).await?.summary.id;
    ui.handle.sight(target, indicator).await?;
    Ok(Redirect::to(&format!("/ui/b/{}", target.to_hex())).into_response())
}

// ---------------------------------------------------------------- publish

/// What the publish form sent, kept to show it again after an error.
#[derive(Debug, Default)]
struct Draft {
    tlp: String,
    to: Vec<String>,
    severity: String,
    title: String,
    summary: String,
    indicators: String,
}

impl Draft {
    fn from_pairs(pairs: Vec<(String, String)>) -> Draft {
        let mut draft = Draft::default();
        for (key, value) in pairs {
            // Browsers send text areas with CRLF line ends; bulletins
            // refuse control characters other than LF.
            let value = value.replace("\r\n", "\n");
            match key.as_str() {
                "tlp" => draft.tlp = value,
                "to" => draft.to.push(value),
                "severity" => draft.severity = value,
                "title" => draft.title = value,
                "summary" => draft.summary = value,
                "indicators" => draft.indicators = value,
                _ => {}
            }
        }
        draft
    }

    fn body(&self) -> PublishBody {
        PublishBody {
            tlp: self.tlp.clone(),
            to: self.to.clone(),
            severity: self.severity.clone(),
            title: self.title.clone(),
            summary: self.summary.clone(),
            indicators: indicator_lines(&self.indicators)
                .map(str::to_string)
                .collect(),
            tags: Vec::new(),
            sectors: Vec::new(),
            references: Vec::new(),
            stix: None,
            ttl_ms: None,
        }
    }
}

fn indicator_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty())
}

async fn publish_form(
    ui: &SharedUi,
    signed: &Signed,
    draft: &Draft,
    problem: Option<&str>,
) -> Result<Markup, PageError> {
    let roster = ui.handle.roster().await?.roster;
    let me = org(ui).await;
    let members: Vec<_> = roster
        .members
        .iter()
        .filter(|member| !member.revoked)
        .collect();
    let tlp = if draft.tlp.is_empty() {
        "amber"
    } else {
        draft.tlp.as_str()
    };
    let severity = if draft.severity.is_empty() {
        "medium"
    } else {
        draft.severity.as_str()
    };
    Ok(html! {
        @if let Some(problem) = problem {
            p.card.alarm role="alert" id="publish-error" { (problem) }
        }
        form.card method="post" action="/ui/publish" {
            input type="hidden" name="csrf" value=(signed.csrf);
            fieldset {
                legend { "TLP: who will be able to read it" }
                @for label in Tlp::ALL {
                    @let value = label.as_str();
                    label.choice for={ "tlp-" (value) } {
                        input type="radio" id={ "tlp-" (value) } name="tlp" value=(value) checked[value == tlp];
                        " " (view::tlp_badge(label))
                        small { (view::tlp_readers(label)) " " (view::tlp_meaning(label)) }
                    }
                }
                p.hint { "GREEN reaches all " (members.len()) " current member organisations." }
            }
            fieldset {
                legend { "Recipient organisations (AMBER, AMBER+STRICT, RED)" }
                @for member in &members {
                    @let org_id = member.card.org_id.to_string();
                    label.choice for={ "to-" (org_id) } {
                        input type="checkbox" id={ "to-" (org_id) } name="to" value=(org_id) checked[draft.to.contains(&org_id)];
                        " " (org_id) " — " (member.card.name)
                        @if org_id == me { " (this organisation)" }
                    }
                }
            }
            div.field {
                label for="severity" { "Severity" }
                select id="severity" name="severity" {
                    @for value in ["low", "medium", "high", "critical"] {
                        option value=(value) selected[value == severity] { (value) }
                    }
                }
            }
            div.field {
                label for="title" { "Title" }
                input type="text" id="title" name="title" value=(draft.title) required maxlength="200";
            }
            div.field {
                label for="summary" { "Summary (Markdown)" }
                textarea id="summary" name="summary" aria-describedby="summary-hint"
                    hx-get="/ui/publish/preview" hx-trigger="input changed delay:400ms" hx-target="#preview" { (draft.summary) }
                span.hint id="summary-hint" { "Rendered safely: HTML shows as text and links are not followed." }
                div.markdown id="preview" aria-live="polite" {}
            }
            div.field {
                label for="indicators" { "Indicators, one per line as kind:value" }
                textarea id="indicators" name="indicators" aria-describedby="indicators-hint"
                    hx-get="/ui/publish/check" hx-trigger="input changed delay:300ms, load" hx-target="#indicator-check" { (draft.indicators) }
                span.hint id="indicators-hint" { "e.g. ipv4:203.0.113.7, domain:evil.example, sha256:…, cve:CVE-2024-1234" }
                div id="indicator-check" aria-live="polite" {}
            }
            button type="submit" id="publish" { "Sign and publish" }
        }
    })
}

/// `GET /ui/publish`: the form.
pub(crate) async fn publish_page(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    let form = publish_form(&ui, &signed, &Draft::default(), None).await?;
    Ok(page(&ui, "Publish", Nav::Publish, &signed, false, form).await)
}

/// `POST /ui/publish`: checks the form as `POST /v1/publish` checks its
/// body, publishes, and shows the new bulletin.
pub(crate) async fn publish(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let draft = Draft::from_pairs(pairs);
    let outcome = async {
        let request = draft.body().into_request().map_err(RequestError::Invalid)?;
        crate::api::check_recipients(&ui.handle, &request.to).await?;
        ui.handle.publish(request).await
    }
    .await;
    match outcome {
        Ok(published) => {
            Ok(Redirect::to(&format!("/ui/b/{}", published.id.to_hex())).into_response())
        }
        Err(error) => {
            let form = publish_form(&ui, &signed, &draft, Some(&error.to_string())).await?;
            let mut response = page(&ui, "Publish", Nav::Publish, &signed, false, form).await;
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

/// Query of the inline checks.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DraftQuery {
    indicators: String,
    summary: String,
}

/// `GET /ui/publish/check`: each indicator line checked by the protocol's
/// own parser, with its normalised form or the problem.
pub(crate) async fn check_indicators(Query(query): Query<DraftQuery>) -> Html<String> {
    let markup = html! {
        ul.indicators {
            @for line in indicator_lines(&query.indicators) {
                @match Indicator::parse(line) {
                    Ok(indicator) => li.ok { "✓ " code { (indicator.to_string()) } },
                    Err(error) => li.bad { "✗ " code { (line) } " — " (error.to_string()) },
                }
            }
        }
    };
    Html(markup.into_string())
}

/// `GET /ui/publish/preview`: the summary rendered.
pub(crate) async fn preview(Query(query): Query<DraftQuery>) -> Html<String> {
    Html(markdown::render(&query.summary))
}

// ---------------------------------------------------------------- search

/// Query of the search page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SearchQuery {
    indicator: String,
}

/// `GET /ui/search?indicator=KIND:VALUE`.
pub(crate) async fn search(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
    Query(query): Query<SearchQuery>,
) -> PageResult {
    let wanted = query.indicator.trim();
    let result = if wanted.is_empty() {
        None
    } else {
        Some(match Indicator::parse(wanted) {
            Ok(indicator) => Ok(ui
                .handle
                .search_page(indicator, 0, Some(crate::api::DEFAULT_PAGE))
                .await?),
            Err(error) => Err(error.to_string()),
        })
    };
    let content = html! {
        form.card.filters method="get" action="/ui/search" role="search" {
            div {
                label for="indicator" { "Indicator (kind:value)" }
                input type="search" id="indicator" name="indicator" value=(wanted) required;
            }
            button type="submit" { "Search" }
        }
        @match result {
            None => {},
            Some(Err(problem)) => p.card.alarm role="alert" { (problem) },
            Some(Ok(items)) => (view::rows(&items, shown)),
        }
    };
    Ok(page(&ui, "Search", Nav::Search, &signed, false, content).await)
}

// ---------------------------------------------------------------- mesh

/// What the dashboard notes about the mesh as it goes: when each peer
/// last connected or left, and when the node's sync counter last moved.
#[derive(Debug, Default)]
pub(crate) struct MeshTracker {
    seen: std::sync::Arc<Mutex<MeshSeen>>,
}

#[derive(Debug, Default)]
struct MeshSeen {
    /// Peer id → unix ms it last connected or disconnected.
    peers: HashMap<String, u64>,
    /// The last sync count seen, and when it was first seen.
    sync: Option<(u64, u64)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MeshTracker {
    /// Follows the node's peer events until `stop`.
    pub(crate) fn start(handle: &NodeHandle, mut stop: watch::Receiver<bool>) -> MeshTracker {
        let tracker = MeshTracker::default();
        let seen = tracker.seen.clone();
        let mut events = handle.subscribe();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    _ = stop.changed() => return,
                };
                match event {
                    Ok(
                        NodeEvent::PeerConnected { peer } | NodeEvent::PeerDisconnected { peer },
                    ) => {
                        let mut seen = seen
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if seen.peers.len() < 4096 || seen.peers.contains_key(&peer) {
                            seen.peers.insert(peer, now_ms());
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        tracker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MeshSeen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the sync counter last moved, as far as the dashboard saw.
    fn sync_seen(&self, count: u64) -> Option<u64> {
        let mut seen = self.lock();
        match seen.sync {
            Some((last, at)) if last == count => Some(at),
            _ => {
                let first = seen.sync.is_none();
                seen.sync = Some((count, now_ms()));
                (!first).then(now_ms)
            }
        }
    }
}

/// `GET /ui/mesh`: peers, organisations last seen, frontier lag per
/// author, sync, equivocation evidence and roster forks.
pub(crate) async fn mesh(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    let status = ui.handle.status().await?;
    let roster = ui.handle.roster().await?.roster;
    let all = ui
        .handle
        .list(ListFilter {
            all: true,
            ..ListFilter::default()
        })
        .await?;
    let org_of_key = |key: &NodePublicKey| {
        roster
            .members
            .iter()
            .find(|member| member.card.nodes.iter().any(|node| node.node_key == *key))
            .map(|member| member.card.org_id.to_string())
    };
    let org_of_peer = |peer: &str| {
        peer.parse::<libp2p::PeerId>()
            .ok()
            .and_then(|peer| NodePublicKey::from_peer_id(&peer))
            .and_then(|key| org_of_key(&key))
    };
    // Highest seq stored per author, and newest envelope per organisation.
    let mut highest: BTreeMap<NodePublicKey, u64> = BTreeMap::new();
    let mut newest: HashMap<&str, u64> = HashMap::new();
    for item in &all {
        let seq = highest.entry(item.author).or_insert(0);
        *seq = (*seq).max(item.seq);
        let at = newest.entry(item.author_org.as_str()).or_insert(0);
        *at = (*at).max(item.created_at);
    }
    let last_change: HashMap<String, u64> = {
        let seen = ui.mesh.lock();
        let mut by_org: HashMap<String, u64> = HashMap::new();
        for (peer, at) in &seen.peers {
            if let Some(org) = org_of_peer(peer) {
                let entry = by_org.entry(org).or_insert(0);
                *entry = (*entry).max(*at);
            }
        }
        by_org
    };
    let connected: Vec<String> = status
        .peers
        .iter()
        .filter_map(|peer| peer.org_id.clone())
        .collect();
    let last_sync = ui.mesh.sync_seen(status.traffic.sync_requests);
    let me = status.org_id.clone();
    let frontier: HashMap<NodePublicKey, u64> = status.frontier.iter().copied().collect();
    let content = html! {
        @if let Some(fork) = &status.roster_fork {
            div.card.alarm role="alert" id="roster-fork" {
                strong { "Roster fork at version " (fork.version) } ": ours " code { (&fork.ours.to_hex()[..16]) } ", theirs " code { (&fork.theirs.to_hex()[..16]) }
                " (noticed " (view::time(fork.detected_at)) @if let Some(peer) = &fork.peer { " from " code { (peer) } } "). "
                "No roster update is applied until an operator runs " code { "breakwater consortium resolve-fork" } "."
            }
        }
        @if let Some(problem) = &status.green_key_problem {
            div.card.alarm role="alert" { strong { "GREEN key problem: " } (problem) }
        }
        @if let Some(error) = &status.store_write_error {
            div.card.alarm role="alert" { strong { "Store cannot write: " } (error) }
        }
        h2 { "Connected peers (" (status.peers.len()) ")" }
        div.table-wrap { table id="peers" {
            thead { tr { th { "Organisation" } th { "Peer" } th { "Addresses" } } }
            tbody { @for peer in &status.peers { tr { td { (peer.org_id.as_deref().unwrap_or("?")) } td.id { (peer.peer_id) } td.id { (peer.addrs.join(", ")) } } } }
        } }
        h2 { "Organisations" }
        div.table-wrap { table id="orgs" {
            thead { tr { th { "Organisation" } th { "Last seen" } th { "Newest envelope" } } }
            tbody {
                @for member in &roster.members {
                    @let org_id = member.card.org_id.to_string();
                    tr {
                        td { (org_id) @if member.revoked { " " span.tag { "revoked" } } }
                        td {
                            @if org_id == me { "this node" }
                            @else if connected.contains(&org_id) { "connected now" }
                            @else if let Some(at) = last_change.get(&org_id) { (view::time(*at)) }
                            @else { "not since this node started" }
                        }
                        td { @if let Some(at) = newest.get(org_id.as_str()) { (view::time(*at)) } @else { "none" } }
                    }
                }
            }
        } }
        h2 { "Frontier per author" }
        p.hint { "Contiguous: every envelope up to this seq is stored. Gap: envelopes missing below the highest seq stored; sync fills them." }
        div.table-wrap { table id="frontier" {
            thead { tr { th { "Organisation" } th { "Author node" } th { "Contiguous" } th { "Highest stored" } th { "Gap" } } }
            tbody {
                @for (author, top) in &highest {
                    @let contiguous = frontier.get(author).copied().unwrap_or(0);
                    tr {
                        td { (org_of_key(author).unwrap_or_else(|| "?".to_string())) }
                        td.id { (&author.to_hex()[..16]) }
                        td { (contiguous) }
                        td { (top) }
                        td { (top.saturating_sub(contiguous)) }
                    }
                }
            }
        } }
        h2 { "Sync" }
        dl.meta.card id="sync" {
            dt { "Sync rounds sent" } dd { (status.traffic.sync_requests) " (" (status.traffic.sync_in_sync) " found the peer in sync)" }
            dt { "Last sync" } dd {
                @match last_sync {
                    Some(at) => { "at or before " (view::time(at)) " (when this page last saw the count move; it looks every 5 s while open)" },
                    None => "not seen moving since this page opened",
                }
            }
            dt { "Envelopes from peers" } dd { (status.traffic.stored_from_peers) " new, " (status.traffic.duplicates()) " duplicate copies" }
        }
        h2 { "Equivocation evidence" }
        @if status.equivocations.is_empty() { p id="equivocations" { "None: no member signed two envelopes for one seq." } }
        @else {
            ul id="equivocations" {
                @for e in &status.equivocations {
                    li { (org_of_key(&e.author).unwrap_or_else(|| "?".to_string())) " node " code { (&e.author.to_hex()[..16]) } " signed two envelopes for seq " (e.seq) "; its feed is held there." }
                }
            }
        }
    };
    // The page refreshes its own content every few seconds.
    let content = html! {
        div id="mesh" hx-get="/ui/mesh" hx-select="#mesh" hx-swap="outerHTML" hx-trigger="every 5s" {
            (content)
        }
    };
    Ok(page(&ui, "Mesh health", Nav::Mesh, &signed, false, content).await)
}

// ---------------------------------------------------------------- roster

/// `GET /ui/roster`: members, stored versions, admins and threshold.
pub(crate) async fn roster(
    State(ui): State<SharedUi>,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    let current = ui.handle.roster().await?.roster;
    // Every stored version: the export of no envelope (since the end of
    // time) still lists the rosters.
    let versions = ui
        .handle
        .export(crate::export::ExportFilter {
            since: Some(u64::MAX),
            ..crate::export::ExportFilter::default()
        })
        .await?
        .rosters;
    let content = html! {
        dl.meta.card {
            dt { "Consortium" } dd { (current.name) " " code { (&current.consortium.to_hex()[..16]) } }
            dt { "Version in force" } dd { (current.version) }
            dt { "Admins" } dd id="admins" { (current.admins.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) }
            dt { "Threshold" } dd id="threshold" { (current.threshold) " admin signature(s) per update" }
        }
        h2 { "Members" }
        div.table-wrap { table id="members" {
            thead { tr { th { "Organisation" } th { "Name" } th { "Sector" } th { "Nodes" } th { "Status" } } }
            tbody {
                @for member in &current.members {
                    tr {
                        td { (member.card.org_id) @if current.admins.contains(&member.card.org_id) { " " span.tag { "admin" } } }
                        td { (member.card.name) }
                        td { (member.card.sector) }
                        td { (member.card.nodes.len()) }
                        td { @if member.revoked { "revoked" } @else { "member" } }
                    }
                }
            }
        } }
        h2 { "Versions" }
        div.table-wrap { table id="versions" {
            thead { tr { th { "Version" } th { "Members" } th { "Admins" } th { "Threshold" } th { "GREEN key" } } }
            tbody {
                @for signed_roster in versions.iter().rev() {
                    @let roster = &signed_roster.roster;
                    tr {
                        td { (roster.version) }
                        td { (roster.members.iter().filter(|m| !m.revoked).count()) }
                        td { (roster.admins.len()) }
                        td { (roster.threshold) }
                        td { @if roster.green.is_some() { "yes" } @else { "no" } }
                    }
                }
            }
        } }
    };
    Ok(page(&ui, "Roster", Nav::Roster, &signed, false, content).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_links_keep_the_filters() {
        let query = FeedQuery {
            tlp: "amber+strict".into(),
            q: "a b&c".into(),
            ..FeedQuery::default()
        };
        assert_eq!(query.at(25), "tlp=amber%2Bstrict&q=a%20b%26c&offset=25");
    }

    #[test]
    fn a_draft_reads_repeated_recipients() {
        let draft = Draft::from_pairs(vec![
            ("tlp".into(), "amber".into()),
            ("to".into(), "b".into()),
            ("to".into(), "c".into()),
            (
                "indicators".into(),
                "ipv4:1.2.3.4\n\n  domain:x.example \n".into(),
            ),
        ]);
        let body = draft.body();
        assert_eq!(body.to, ["b", "c"]);
        assert_eq!(body.indicators, ["ipv4:1.2.3.4", "domain:x.example"]);
    }
}
