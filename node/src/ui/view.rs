//! The dashboard's templates (maud: checked when the crate compiles,
//! escaped by default): the page layout and the pieces several pages share.

use breakwater_protocol::{Severity, Tlp};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::handle::Summary;

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Feed,
    Publish,
    Search,
    Mesh,
    Roster,
    None,
}

/// A whole page: skip link, navigation (when signed in), main content.
/// `live` pages follow the node's events and refresh their feed.
pub(crate) fn page(
    title: &str,
    nav: Nav,
    csrf: Option<&str>,
    org: &str,
    live: bool,
    content: Markup,
) -> Markup {
    let entries = [
        (Nav::Feed, "/ui/", "Feed"),
        (Nav::Publish, "/ui/publish", "Publish"),
        (Nav::Search, "/ui/search", "Search"),
        (Nav::Mesh, "/ui/mesh", "Mesh health"),
        (Nav::Roster, "/ui/roster", "Roster"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · Breakwater" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/htmx.min.js" defer {}
                script src="/ui/static/app.js" defer {}
            }
            body data-live=(if live { "1" } else { "0" }) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Breakwater" @if !org.is_empty() { " · " (org) } }
                    @if let Some(csrf) = csrf {
                        nav aria-label="Main" {
                            ul {
                                @for (entry, href, label) in entries {
                                    li {
                                        @if entry == nav {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The CSS class of a label's badge.
pub(crate) fn tlp_class(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "tlp tlp-clear",
        Tlp::Green => "tlp tlp-green",
        Tlp::Amber => "tlp tlp-amber",
        Tlp::AmberStrict => "tlp tlp-amber-strict",
        Tlp::Red => "tlp tlp-red",
    }
}

/// What a label means, in FIRST's TLP 2.0 words.
pub(crate) fn tlp_meaning(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => "Recipients can spread this to the world; there is no limit on disclosure.",
        Tlp::Green => {
            "Limited disclosure: recipients can spread this within their community, but not via publicly accessible channels."
        }
        Tlp::Amber => {
            "Limited disclosure: recipients can only spread this on a need-to-know basis within their organisation and its clients."
        }
        Tlp::AmberStrict => {
            "Limited disclosure: recipients can only spread this on a need-to-know basis within their organisation, not to its clients."
        }
        Tlp::Red => "For the eyes and ears of individual recipients only, no further disclosure.",
    }
}

/// Who can read an envelope with this label, in Breakwater.
pub(crate) fn tlp_readers(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear => {
            "Signed, not encrypted: every node, and anyone it is passed on to, can read it."
        }
        Tlp::Green => "Sealed to the consortium: every node of every current member can read it.",
        Tlp::Amber | Tlp::AmberStrict | Tlp::Red => {
            "Sealed to the organisations you tick below: only their nodes can read it; every other member relays it sealed."
        }
    }
}

/// A TLP badge in FIRST's colours, with the label's meaning as its title.
pub(crate) fn tlp_badge(tlp: Tlp) -> Markup {
    html! {
        span class=(tlp_class(tlp)) title=(tlp_meaning(tlp)) { "TLP:" (tlp.as_str().to_ascii_uppercase()) }
    }
}

/// A unix-ms time as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = breakwater_protocol::stix::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Severity as a word.
pub(crate) fn severity(severity: Option<Severity>) -> String {
    severity
        .map(|s| format!("{s:?}").to_ascii_lowercase())
        .unwrap_or_default()
}

/// The feed's table of envelopes. `shown` says whether a label's plaintext
/// may be shown (the egress policy).
pub(crate) fn rows(items: &[Summary], shown: impl Fn(Tlp) -> bool) -> Markup {
    html! {
        @if items.is_empty() {
            p { "Nothing matches." }
        } @else {
            div.table-wrap {
                table.feed {
                    thead { tr { th { "Created" } th { "Organisation" } th { "Kind" } th { "TLP" } th { "Severity" } th { "Title" } } }
                    tbody {
                        @for item in items {
                            @let id = item.id.to_hex();
                            tr id={ "row-" (id) } data-id=(id) data-readable=(if item.readable { "1" } else { "0" }) {
                                td { (time(item.created_at)) }
                                td { (item.author_org) }
                                td { (item.kind) }
                                td { (tlp_badge(item.tlp)) }
                                td { (severity(item.severity)) }
                                td.retracted[item.retracted] {
                                    a href={ "/ui/b/" (id) } {
                                        @match (&item.title, item.readable && shown(item.tlp)) {
                                            (Some(title), true) => (title),
                                            (_, true) => { (item.kind) " " (&id[..12]) },
                                            (_, false) => span.sealed { "sealed " (&id[..12]) },
                                        }
                                    }
                                    @if item.retracted { " " span.tag { "retracted" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Trusted HTML (from [`super::markdown::render`], which escapes).
pub(crate) fn trusted(html: String) -> Markup {
    PreEscaped(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
    }

    #[test]
    fn titles_are_escaped() {
        let page = page(
            "<script>x</script>",
            Nav::None,
            None,
            "a&b",
            false,
            html! {},
        );
        let text = page.into_string();
        assert!(!text.contains("<script>x"), "{text}");
        assert!(text.contains("&lt;script&gt;x"), "{text}");
    }
}
