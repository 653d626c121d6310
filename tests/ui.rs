//! The web dashboard (`/ui/`) on real nodes: its refusals over plain HTTP
//! (wrong token, missing CSRF token, foreign Host, `/v1/` with only a
//! cookie, an escaped `<script>` title, no external URL on any page), and a
//! real headless Chromium, driven over the Chrome DevTools Protocol on a
//! pipe (no driver, no network), that publishes an AMBER bulletin on A's
//! dashboard and watches it arrive live on B's (readable) and C's (sealed).
//! Screenshots go to `target/ui-screenshots/`.
//!
//! Chromium comes from Debian's `chromium` package: the test installs it
//! when it is missing and it runs as root (as `.ci/run` does); under `CI`
//! a missing browser fails the test instead of skipping it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{DEADLINE, Org, consortium, start_all};

/// A response: status, headers (lower-case names, every value), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `name=value` of the first Set-Cookie whose name starts with `prefix`.
    fn cookie(&self, prefix: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(key, _)| key == "set-cookie")
            .map(|(_, value)| value.split(';').next().unwrap_or("").to_string())
            .find(|pair| pair.starts_with(prefix) && !pair.ends_with('='))
    }

    /// The value of the hidden `csrf` field of the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("csrf field")
            + 19;
        self.body[at..at + 64].to_string()
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port`, with `Connection: close`.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Form encoding of one value.
fn form(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in on `org`'s dashboard with `secret` (token or code); returns the
/// session cookie (`name=value`) and the reply.
fn login(org: &Org, secret: &str) -> (Option<String>, Reply) {
    let page = http(org.api, "GET", "/ui/login", &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let login_cookie = page.cookie("bw_login_").expect("login cookie");
    let body = format!("secret={}&csrf={}", form(secret), page.csrf());
    let reply = http(
        org.api,
        "POST",
        "/ui/login",
        &[("Cookie", &login_cookie)],
        &body,
    );
    (reply.cookie("bw_session_"), reply)
}

/// The one-time code `breakwater ui` prints.
fn one_time_code(org: &Org) -> String {
    let out = org.ok(&["ui"]);
    assert!(
        out.contains(&format!("http://localhost:{}/ui/", org.api)),
        "{out}"
    );
    out.lines()
        .find_map(|line| line.strip_prefix("one-time login code: "))
        .expect("code line")
        .trim()
        .to_string()
}

/// Every `src`, `href` and `action` value of an HTML page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in [" src=\"", " href=\"", " action=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            found.push(rest[..end].to_string());
        }
    }
    found
}

fn assert_self_contained(path: &str, html: &str) {
    for reference in references(html) {
        assert!(
            (reference.starts_with('/') && !reference.starts_with("//"))
                || reference.starts_with('#'),
            "{path} references {reference:?}"
        );
    }
    assert!(!html.contains("http://"), "{path} names an http URL");
    assert!(!html.contains("https://"), "{path} names an https URL");
}

#[test]
fn dashboard_refusals_escaping_and_no_external_url() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = consortium(tmp.path(), &["a", "b"]);
    start_all(&mut members);
    let a = &members[0];
    let token = a.token();

    // Not logged in: pages redirect to the login form, POSTs are refused.
    let anonymous = http(a.api, "GET", "/ui/", &[], "");
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/ui/login"));
    assert_eq!(
        http(a.api, "POST", "/ui/publish", &[], "title=x").status,
        401
    );

    // Every response carries the CSP.
    let login_page = http(a.api, "GET", "/ui/login", &[], "");
    let csp = login_page.header("content-security-policy").unwrap_or("");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");

    // A wrong token is refused and opens no session.
    let (session, reply) = login(a, "not-the-token");
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(session.is_none());
    // A login without its CSRF token is refused even with the right token.
    let bare = http(
        a.api,
        "POST",
        "/ui/login",
        &[],
        &format!("secret={}", form(&token)),
    );
    assert_eq!(bare.status, 403, "{}", bare.body);
    assert!(bare.cookie("bw_session_").is_none());

    // The token opens a session cookie, HttpOnly and SameSite=Strict.
    let (session, reply) = login(a, &token);
    assert_eq!(reply.status, 303, "{}", reply.body);
    let session = session.expect("session cookie");
    let set = reply
        .headers
        .iter()
        .find(|(key, value)| key == "set-cookie" && value.starts_with("bw_session_"))
        .map(|(_, value)| value.clone())
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = [("Cookie", session.as_str())];

    // A one-time code from `breakwater ui` works once.
    let code = one_time_code(a);
    let (by_code, reply) = login(a, &code);
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(by_code.is_some());
    let (again, reply) = login(a, &code);
    assert_eq!(reply.status, 401);
    assert!(again.is_none());

    // A foreign Host header is refused, session or not (DNS rebinding).
    for host in ["evil.example", "localhost.evil.example:80", "10.0.0.1"] {
        let reply = http(
            a.api,
            "GET",
            "/ui/",
            &[("Host", host), ("Cookie", &session)],
            "",
        );
        assert_eq!(reply.status, 421, "{host}: {}", reply.body);
    }
    // The session cookie opens nothing under /v1/: it stays bearer-only.
    assert_eq!(http(a.api, "GET", "/v1/status", &cookie, "").status, 401);

    // A POST without the session's CSRF token changes nothing.
    let before = a.list_all().len();
    let publish = |csrf: Option<&str>, title: &str| {
        let mut body = format!(
            "tlp=green&severity=high&title={}&indicators={}&summary={}",
            form(title),
            form("ipv4:203.0.113.9"),
            form("**Bold** <img src=x onerror=alert(1)>")
        );
        if let Some(csrf) = csrf {
            body.push_str(&format!("&csrf={csrf}"));
        }
        http(a.api, "POST", "/ui/publish", &cookie, &body)
    };
    assert_eq!(publish(None, "no csrf").status, 403);
    assert_eq!(publish(Some(&"0".repeat(64)), "wrong csrf").status, 403);
    assert_eq!(a.list_all().len(), before, "a refused POST published");

    // With it, the form publishes; a <script> title comes back escaped.
    let feed = http(a.api, "GET", "/ui/", &cookie, "");
    assert_eq!(feed.status, 200);
    let title = "<script>alert(1)</script> at berth 7";
    let published = publish(Some(&feed.csrf()), title);
    assert_eq!(published.status, 303, "{}", published.body);
    let location = published.header("location").unwrap().to_string();
    let id = location
        .strip_prefix("/ui/b/")
        .expect("bulletin page")
        .to_string();
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; at berth 7";
    let page = http(a.api, "GET", &location, &cookie, "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(escaped), "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(page.body.contains("<strong>Bold</strong>"), "{}", page.body);
    let feed = http(a.api, "GET", "/ui/", &cookie, "");
    assert!(feed.body.contains(escaped));
    assert!(!feed.body.contains("<script>alert"));

    // The STIX download of the bulletin goes through the export code path.
    let stix = http(a.api, "GET", &format!("{location}/stix"), &cookie, "");
    assert_eq!(stix.status, 200, "{}", stix.body);
    let bundle: Value = serde_json::from_str(&stix.body).expect("stix json");
    assert_eq!(bundle["type"], "bundle");
    assert!(stix.body.contains("203.0.113.9"));

    // No page references anything but this origin.
    assert_self_contained("/ui/login", &login_page.body);
    let pages = [
        "/ui/".to_string(),
        "/ui/?tlp=green&readable=readable&q=berth".to_string(),
        "/ui/feed/rows?kind=bulletin".to_string(),
        location.clone(),
        "/ui/publish".to_string(),
        "/ui/publish/check?indicators=ipv4%3A1.2.3.4%0Aipv4%3A999.1.1.1".to_string(),
        "/ui/search".to_string(),
        "/ui/search?indicator=ipv4%3A203.0.113.9".to_string(),
        "/ui/mesh".to_string(),
        "/ui/roster".to_string(),
        "/ui/static/app.js".to_string(),
        "/ui/static/app.css".to_string(),
        "/ui/static/htmx.min.js".to_string(),
    ];
    for path in &pages {
        let reply = http(a.api, "GET", path, &cookie, "");
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            reply
                .header("content-security-policy")
                .is_some_and(|csp| csp.starts_with("default-src 'self'")),
            "{path}"
        );
        assert_self_contained(path, &reply.body);
    }
    let search = http(
        a.api,
        "GET",
        "/ui/search?indicator=ipv4%3A203.0.113.9",
        &cookie,
        "",
    );
    assert!(
        search.body.contains(&format!("row-{id}")),
        "{}",
        search.body
    );

    // The feed's filters.
    let row = format!("row-{id}");
    let listed = |query: &str| {
        let reply = http(a.api, "GET", &format!("/ui/{query}"), &cookie, "");
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        reply.body.contains(&row)
    };
    for (query, present) in [
        ("", true),
        ("?q=BERTH", true),
        ("?q=203.0.113.9", true),
        ("?q=nothing-like-it", false),
        ("?org=a", true),
        ("?org=b", false),
        ("?readable=readable", true),
        ("?readable=sealed", false),
        ("?kind=bulletin", true),
        ("?kind=sighting", false),
        ("?kind=retraction", false),
        ("?tlp=green&severity=high", true),
        ("?tlp=amber", false),
        ("?severity=critical", false),
        ("?retracted=only", false),
    ] {
        assert_eq!(listed(query), present, "{query}");
    }
    assert_eq!(
        http(a.api, "GET", "/ui/?tlp=purple", &cookie, "").status,
        400
    );

    // Sightings and the retraction show on the bulletin page.
    // Through the page's own forms; without the CSRF token nothing happens.
    let csrf = feed.csrf();
    let post = |action: &str, body: String| {
        http(
            a.api,
            "POST",
            &format!("{location}/{action}"),
            &cookie,
            &body,
        )
    };
    let reason = form("false positive at berth 7");
    assert_eq!(post("retract", format!("reason={reason}")).status, 403);
    assert!(!listed("?retracted=only"), "a refused retraction retracted");
    let sighting = form("ipv4:203.0.113.9");
    let reply = post("sightings", format!("indicator={sighting}&csrf={csrf}"));
    assert_eq!(reply.status, 303, "{}", reply.body);
    let reply = post("retract", format!("reason={reason}&csrf={csrf}"));
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.header("location"), Some(location.as_str()));
    let page = http(a.api, "GET", &location, &cookie, "");
    assert!(
        page.body.contains("false positive at berth 7"),
        "{}",
        page.body
    );
    let sightings = page.body.split("id=\"sightings\"").nth(1).unwrap_or("");
    assert!(sightings.contains("ipv4:203.0.113.9"), "{}", page.body);
    assert!(listed("?retracted=only"));
    assert!(!listed("?retracted=hide"));
    // Sightings and retractions are listed under their kinds.
    for kind in ["sighting", "retraction"] {
        let reply = http(a.api, "GET", &format!("/ui/?kind={kind}"), &cookie, "");
        assert_eq!(reply.status, 200);
        assert!(!reply.body.contains(&row), "{kind}");
        assert_eq!(
            reply.body.matches(&format!("<td>{kind}</td>")).count(),
            1,
            "{kind}: {}",
            reply.body
        );
    }
    assert_eq!(
        http(a.api, "GET", "/ui/?kind=nonsense", &cookie, "").status,
        400
    );

    // Logging out ends the session.
    let logout = http(
        a.api,
        "POST",
        "/ui/logout",
        &cookie,
        &format!("csrf={}", feed.csrf()),
    );
    assert_eq!(logout.status, 303);
    assert_eq!(http(a.api, "GET", "/ui/", &cookie, "").status, 303);
    let htmx = http(
        a.api,
        "GET",
        "/ui/feed/rows",
        &[cookie[0], ("HX-Request", "true")],
        "",
    );
    assert_eq!(htmx.status, 401);
    assert_eq!(htmx.header("hx-redirect"), Some("/ui/login"));
}

/// Chromium's path, installing Debian's package when it is missing and we
/// are root. `None` (outside CI) when it cannot be had.
fn chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
    };
    if let Some(path) = find() {
        return Some(path);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if root {
        eprintln!("installing Debian's chromium package for the dashboard test");
        let _ = Command::new("sh")
            .args([
                "-c",
                "apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)",
            ])
            .status();
    }
    let found = find();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing and could not be installed (apt-get install chromium)"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
    }
    found
}

/// A headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands on its fd 3, answers on fd 4).
struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// One tab, in its own browser context (its own cookies).
struct Tab {
    session: String,
}

impl Browser {
    fn start(chromium: &Path, log: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(log).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start chromium");
        let commands = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(value) = serde_json::from_slice::<Value>(&message)
                            && sender.send(value).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Browser {
            child,
            commands,
            messages,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends a command (to a tab's session, or the browser) and waits for
    /// its answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let reply = self
                .messages
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// A new tab in a new browser context, `width`×`height`.
    fn tab(&mut self, width: u32, height: u32) -> Tab {
        let context =
            self.call(None, "Target.createBrowserContext", json!({}))["browserContextId"].clone();
        let target = self.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank", "browserContextId": context}),
        )["targetId"]
            .clone();
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        let tab = Tab { session };
        self.resize(&tab, width, height);
        tab
    }

    fn resize(&mut self, tab: &Tab, width: u32, height: u32) {
        self.call(
            Some(&tab.session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
    }

    /// Evaluates JavaScript in the tab; returns its value.
    fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let result = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the tab.
    fn wait(&mut self, tab: &Tab, what: &str, expression: &str) {
        let start = Instant::now();
        while self.eval(tab, &format!("!!({expression})")) != json!(true) {
            if start.elapsed() > DEADLINE {
                let page = self.eval(tab, "location.href + ' | ' + document.body.innerText");
                panic!("timed out after {DEADLINE:?} waiting for {what}; the page: {page}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Loads `url` and waits until the page has loaded.
    fn open(&mut self, tab: &Tab, url: &str) {
        self.call(Some(&tab.session), "Page.navigate", json!({"url": url}));
        self.wait(
            tab,
            &format!("{url} to load"),
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                json!(url)
            ),
        );
    }

    /// Types text into the focused element.
    fn type_text(&mut self, tab: &Tab, text: &str) {
        self.call(
            Some(&tab.session),
            "Input.insertText",
            json!({"text": text}),
        );
    }

    /// Presses a key (e.g. `Enter`, `Tab`).
    fn press(&mut self, tab: &Tab, key: &str, code: u32) {
        let text = if key == "Enter" { "\r" } else { "" };
        for kind in ["keyDown", "keyUp"] {
            self.call(
                Some(&tab.session),
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code, "text": if kind == "keyDown" { text } else { "" }}),
            );
        }
    }

    /// Saves a PNG of the tab under `dir`.
    fn screenshot(&mut self, tab: &Tab, dir: &Path, name: &str) {
        let shot = self.call(
            Some(&tab.session),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        let png = base64_decode(shot["data"].as_str().expect("png data"));
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Logs in with `secret` by keyboard: type it, press Enter.
    fn login(&mut self, tab: &Tab, api: u16, secret: &str) {
        self.open(tab, &format!("http://127.0.0.1:{api}/ui/login"));
        self.eval(tab, "document.getElementById('secret').focus()");
        self.type_text(tab, secret);
        self.press(tab, "Enter", 13);
        self.wait(
            tab,
            "the feed after login",
            "location.pathname === '/ui/' && document.readyState === 'complete' && document.getElementById('feed')",
        );
    }

    /// Inputs, selects and text areas of the page that have no label.
    fn unlabelled(&mut self, tab: &Tab) -> Value {
        self.eval(
            tab,
            "Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea')).filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id || e.name)",
        )
    }

    /// Whether the page is wider than the window (needs sideways scrolling).
    fn overflows(&mut self, tab: &Tab) -> bool {
        self.eval(
            tab,
            "document.documentElement.scrollWidth > window.innerWidth + 1",
        ) == json!(true)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        buffer = buffer << 6 | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// `target/ui-screenshots/`, next to the test executable's profile.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/integration-HASH → target
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn dashboard_in_a_real_browser_publishes_amber_live_to_b_sealed_on_c() {
    let Some(chromium) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut members = consortium(tmp.path(), &["a", "b", "c"]);
    start_all(&mut members);
    let shots = screenshot_dir();
    let mut browser = Browser::start(&chromium, &tmp.path().join("chromium.log"));
    let (a, b, c) = (&members[0], &members[1], &members[2]);

    // A logs in with the API token, B with a one-time code from
    // `breakwater ui`, C with its token; each in its own browser context.
    let tab_a = browser.tab(1280, 800);
    let tab_b = browser.tab(1280, 800);
    let tab_c = browser.tab(1280, 800);
    browser.login(&tab_a, a.api, &a.token());
    browser.login(&tab_b, b.api, &one_time_code(b));
    browser.login(&tab_c, c.api, &c.token());

    // Keyboard: the first Tab reaches the skip link.
    browser.eval(
        &tab_b,
        "document.activeElement && document.activeElement.blur()",
    );
    browser.press(&tab_b, "Tab", 9);
    assert_eq!(
        browser.eval(&tab_b, "document.activeElement.className"),
        json!("skip")
    );
    // B's and C's feeds stay open; a marker proves they never reload.
    for tab in [&tab_b, &tab_c] {
        browser.eval(tab, "window.bwMarker = 'no reload'");
        assert_eq!(browser.unlabelled(tab), json!([]));
    }

    // A fills in the publish form: AMBER to B, indicators checked inline.
    browser.open(&tab_a, &format!("http://127.0.0.1:{}/ui/publish", a.api));
    assert_eq!(browser.unlabelled(&tab_a), json!([]));
    let title = "Spoofed AIS beacons near berth 4";
    browser.eval(&tab_a, "document.getElementById('tlp-amber').click()");
    browser.eval(&tab_a, "document.getElementById('to-b').click()");
    browser.eval(&tab_a, "document.getElementById('severity').value = 'high'");
    browser.eval(&tab_a, "document.getElementById('title').focus()");
    browser.type_text(&tab_a, title);
    browser.eval(&tab_a, "document.getElementById('summary').focus()");
    browser.type_text(
        &tab_a,
        "**Block** the sender at the gateway.\n\n- check AIS logs",
    );
    browser.eval(&tab_a, "document.getElementById('indicators').focus()");
    browser.type_text(
        &tab_a,
        "ipv4:203.0.113.77\ndomain:Harbour-C2.example\nipv4:999.1.1.1",
    );
    browser.wait(
        &tab_a,
        "the inline indicator check",
        "document.querySelectorAll('#indicator-check li.ok').length === 2 && document.querySelectorAll('#indicator-check li.bad').length === 1",
    );
    assert!(
        browser
            .eval(
                &tab_a,
                "document.getElementById('indicator-check').innerText"
            )
            .as_str()
            .unwrap()
            .contains("domain:harbour-c2.example"),
        "the check shows the normalised form"
    );
    browser.wait(
        &tab_a,
        "the markdown preview",
        "document.querySelector('#preview strong') && document.querySelector('#preview li')",
    );
    browser.screenshot(&tab_a, &shots, "a-publish-1280x800");
    // The malformed indicator is refused by the protocol's rules; fix it.
    browser.eval(&tab_a, "document.getElementById('publish').click()");
    browser.wait(
        &tab_a,
        "the form to name the bad indicator",
        "document.getElementById('publish-error') && document.getElementById('publish-error').innerText.includes('999.1.1.1')",
    );
    browser.eval(
        &tab_a,
        "document.getElementById('indicators').value = 'ipv4:203.0.113.77\\ndomain:harbour-c2.example'",
    );
    browser.eval(&tab_a, "document.getElementById('publish').click()");
    browser.wait(
        &tab_a,
        "A's bulletin page",
        "location.pathname.startsWith('/ui/b/') && document.readyState === 'complete'",
    );
    let path = browser.eval(&tab_a, "location.pathname");
    let id = path
        .as_str()
        .unwrap()
        .trim_start_matches("/ui/b/")
        .to_string();
    let page_a = browser.eval(&tab_a, "document.body.innerText");
    let page_a = page_a.as_str().unwrap();
    assert!(page_a.contains(title), "{page_a}");
    assert!(page_a.contains("TLP:AMBER"), "{page_a}");
    // The author's own organisation is always among the recipients.
    assert_eq!(
        browser.eval(&tab_a, "document.getElementById('recipients').innerText"),
        json!("a, b")
    );
    assert_eq!(
        browser.eval(
            &tab_a,
            "document.querySelectorAll('button[data-copy]').length"
        ),
        json!(2)
    );
    assert_eq!(
        browser.eval(
            &tab_a,
            "getComputedStyle(document.querySelector('.tlp')).color"
        ),
        json!("rgb(255, 192, 0)"),
        "AMBER in FIRST's colour"
    );
    browser.screenshot(&tab_a, &shots, "a-bulletin-1280x800");

    // B sees it arrive live and readable; C sees it sealed. Neither reloads.
    let row = format!("document.getElementById('row-{id}')");
    browser.wait(
        &tab_b,
        "the bulletin on B's feed",
        &format!("{row} && {row}.innerText.includes({})", json!(title)),
    );
    assert_eq!(browser.eval(&tab_b, "window.bwMarker"), json!("no reload"));
    browser.wait(
        &tab_c,
        "the sealed envelope on C's feed",
        &format!("{row} && {row}.dataset.readable === '0' && {row}.innerText.includes('sealed')"),
    );
    assert_eq!(browser.eval(&tab_c, "window.bwMarker"), json!("no reload"));
    let row_c = browser.eval(&tab_c, &format!("{row}.innerText"));
    assert!(!row_c.as_str().unwrap().contains(title), "{row_c}");
    browser.screenshot(&tab_b, &shots, "b-feed-1280x800");
    browser.screenshot(&tab_c, &shots, "c-feed-sealed-1280x800");
    // C's page of the envelope says it is sealed and shows no plaintext.
    browser.eval(&tab_c, &format!("{row}.querySelector('a').click()"));
    browser.wait(
        &tab_c,
        "C's page of the sealed envelope",
        "location.pathname.startsWith('/ui/b/') && document.getElementById('sealed')",
    );
    let page_c = browser.eval(&tab_c, "document.body.innerText");
    let page_c = page_c.as_str().unwrap();
    assert!(
        !page_c.contains(title) && !page_c.contains("203.0.113.77"),
        "{page_c}"
    );
    assert!(page_c.contains("TLP:AMBER"), "{page_c}");

    // At phone width the pages need no sideways scrolling.
    browser.resize(&tab_b, 390, 844);
    for (page, name) in [
        ("/ui/".to_string(), "b-feed-phone"),
        (path.as_str().unwrap().to_string(), "b-bulletin-phone"),
        ("/ui/publish".to_string(), "b-publish-phone"),
        ("/ui/mesh".to_string(), "b-mesh-phone"),
    ] {
        browser.open(&tab_b, &format!("http://127.0.0.1:{}{page}", b.api));
        assert!(
            !browser.overflows(&tab_b),
            "{page} overflows at phone width"
        );
        assert_eq!(browser.unlabelled(&tab_b), json!([]), "{page}");
        browser.screenshot(&tab_b, &shots, name);
        if name == "b-bulletin-phone" {
            let text = browser.eval(&tab_b, "document.body.innerText");
            let text = text.as_str().unwrap();
            assert!(
                text.contains(title) && text.contains("203.0.113.77"),
                "{text}"
            );
        }
    }
    // Mesh health and roster at 1280×800.
    browser.resize(&tab_c, 1280, 800);
    let mut texts = HashMap::new();
    for (page, name) in [
        ("/ui/mesh", "c-mesh-1280x800"),
        ("/ui/roster", "c-roster-1280x800"),
    ] {
        browser.open(&tab_c, &format!("http://127.0.0.1:{}{page}", c.api));
        assert!(!browser.overflows(&tab_c), "{page} overflows at 1280");
        browser.screenshot(&tab_c, &shots, name);
        texts.insert(page, browser.eval(&tab_c, "document.body.innerText"));
    }
    // The mesh page refreshes itself: its sync counter moves without a reload.
    browser.open(&tab_c, &format!("http://127.0.0.1:{}/ui/mesh", c.api));
    browser.eval(&tab_c, "window.bwMarker = 'mesh'");
    let rounds = "document.querySelector('#sync dd').innerText";
    let before = browser.eval(&tab_c, rounds);
    browser.wait(
        &tab_c,
        "the mesh page to refresh its sync counter",
        &format!("{rounds} !== {before} && window.bwMarker === 'mesh'"),
    );
    let mesh = texts["/ui/mesh"].as_str().unwrap();
    assert!(mesh.contains("Connected peers (2)"), "{mesh}");
    assert!(mesh.contains("connected now"), "{mesh}");
    assert!(mesh.contains("this node"), "{mesh}");
    let roster = texts["/ui/roster"].as_str().unwrap();
    assert!(
        roster.contains("a Ltd") && roster.contains("c Ltd"),
        "{roster}"
    );
}
