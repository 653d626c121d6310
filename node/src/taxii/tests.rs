//! Unit tests of the TAXII server's pure parts: credentials, content
//! negotiation, query parsing, `next` cursors and the configuration check.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn basic_bearer_and_token_authorise_and_nothing_else_does() {
    let token = "0123456789abcdef0123";
    let with = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        authorised(&headers, token)
    };
    // "anyone:0123456789abcdef0123"
    assert!(with("Basic YW55b25lOjAxMjM0NTY3ODlhYmNkZWYwMTIz"));
    assert!(with("Bearer 0123456789abcdef0123"));
    assert!(with("Token 0123456789abcdef0123"));
    assert!(!with("Basic YW55b25lOndyb25n"));
    assert!(!with("Bearer wrong"));
    assert!(!with("Digest 0123456789abcdef0123"));
    assert!(!with("Basic !!!"));
    assert!(!authorised(&HeaderMap::new(), token));
}

#[test]
fn accept_admits_taxii_21_and_wildcards_only() {
    for ok in [
        "application/taxii+json;version=2.1",
        "application/taxii+json; version=2.1",
        "application/taxii+json",
        "*/*",
        "text/html, application/taxii+json;version=2.1;q=0.9",
    ] {
        assert!(accepts_taxii(ok), "{ok}");
    }
    for refused in [
        "application/json",
        "application/taxii+json;version=2.0",
        "application/stix+json;version=2.1",
    ] {
        assert!(!accepts_taxii(refused), "{refused}");
    }
}

#[test]
fn queries_parse_and_bad_values_are_400() {
    let q = parse_query(Some(
        "added_after=2026-01-01T00:00:00.000001Z&limit=5000&match%5Btype%5D=indicator,report&match[version]=all",
    ))
    .unwrap();
    assert_eq!(q.limit, MAX_PAGE);
    assert_eq!(
        q.added_after,
        parse_timestamp("2026-01-01T00:00:00.000001Z")
    );
    assert_eq!(q.filters.types, vec!["indicator", "report"]);
    assert_eq!(q.filters.version, VersionMatch::All);
    for bad in [
        "limit=-20",
        "limit=0",
        "limit=x",
        "added_after=yesterday",
        "match[version]=newest",
    ] {
        let e = parse_query(Some(bad)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[test]
fn next_is_bound_to_its_filters() {
    let cursor = Cursor { from: 42, skip: 3 };
    let filters = Filters::default();
    let token = cursor.token(filters.digest("c"));
    assert_eq!(Cursor::parse(&token, filters.digest("c")), Some(cursor));
    let other = Filters {
        types: vec!["indicator".into()],
        ..Filters::default()
    };
    assert_eq!(Cursor::parse(&token, other.digest("c")), None);
    assert_eq!(Cursor::parse(&token, filters.digest("d")), None);
    assert_eq!(Cursor::parse("zz", filters.digest("c")), None);
}

#[test]
fn config_checks_names_caps_and_urls() {
    let listen: SocketAddr = DEFAULT_LISTEN.parse().unwrap();
    let good = TaxiiConfig::default_at(listen, None);
    assert_eq!(good.check(), Ok(()));
    assert_eq!(
        good.api_root_url(),
        "http://127.0.0.1:7480/taxii2/breakwater/"
    );
    let mut red = good.clone();
    red.collections[0].max_tlp = Tlp::Red;
    assert!(red.check().unwrap_err().contains("allow_red"));
    let mut twice = good.clone();
    twice.collections[1].name = "shared".into();
    assert!(twice.check().unwrap_err().contains("twice"));
    let mut url = good.clone();
    url.public_url = "taxii.example".into();
    assert!(url.check().is_err());
    let mut to = good;
    to.collections[0].default_to = vec!["port-authority".into()];
    assert!(to.check().unwrap_err().contains("write collections"));
}
