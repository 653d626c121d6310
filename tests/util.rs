//! Helpers for the end-to-end tests: locating the real `breakwater` binary,
//! organisations in temporary data directories on free loopback ports, node
//! processes that are killed on drop, and deadline-bounded waits.
//!
//! The binary lives in the `breakwater-cli` package, so Cargo does not build
//! it for this package's tests. `breakwater()` therefore runs
//! `cargo build -p breakwater-cli --bin breakwater` once per test run (a
//! no-op when it is fresh; `.ci/run` builds it beforehand anyway) and then
//! uses `<target>/debug/breakwater` next to this test executable. Set
//! `BREAKWATER_BIN` to test another build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(40);

/// The `breakwater` binary under test.
pub fn breakwater() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("BREAKWATER_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/integration-HASH → target/<profile>/breakwater
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory");
        let bin = profile_dir.join(format!("breakwater{}", std::env::consts::EXE_SUFFIX));
        if std::env::var_os("BREAKWATER_SKIP_BUILD").is_none() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "breakwater-cli", "--bin", "breakwater"]);
            // Variables Cargo sets for this test process would otherwise
            // look like a changed environment and rebuild dependencies.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy().into_owned();
                let set_for_tests = name.starts_with("CARGO_PKG_")
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                    ]
                    .contains(&name.as_str());
                if set_for_tests {
                    build.env_remove(&name);
                }
            }
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p breakwater-cli failed");
        }
        assert!(
            bin.exists(),
            "{} missing: run `cargo build -p breakwater-cli` first",
            bin.display()
        );
        bin
    })
}

/// A loopback port that was free a moment ago, chosen below the kernel's
/// ephemeral range (32768+) so outgoing connections and port-0 binds of
/// other nodes cannot take it before our node binds it; unique within this
/// test process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 400) as u16 * 30,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free port found");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or fails the test at the deadline.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One organisation: its data directory, ports and (maybe) running node.
pub struct Org {
    pub org: String,
    pub dir: PathBuf,
    pub api: u16,
    child: Option<Child>,
}

impl Org {
    /// `breakwater init` in `root/<org>` on free ports, with quick sync and
    /// redial intervals so tests converge fast.
    pub fn init(root: &Path, org: &str) -> Org {
        Org::init_with(root, org, |p2p| {
            vec!["--listen".into(), format!("/ip4/127.0.0.1/tcp/{p2p}")]
        })
    }

    /// As [`Org::init`], with `addrs(p2p_port)` giving the address
    /// arguments (`--listen`, `--announce`) in place of the loopback listen.
    pub fn init_with(root: &Path, org: &str, addrs: impl FnOnce(u16) -> Vec<String>) -> Org {
        let dir = root.join(org);
        let (api, p2p) = (free_port(), free_port());
        let name = format!("{org} Ltd");
        let api_addr = format!("127.0.0.1:{api}");
        let addrs = addrs(p2p);
        let mut args = vec![
            "init",
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--org",
            org,
            "--name",
            &name,
            "--sector",
            "maritime",
            "--api",
            &api_addr,
        ];
        args.extend(addrs.iter().map(String::as_str));
        let out = run(&args);
        assert!(
            out.status.success(),
            "init {org}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config_path = dir.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
                .expect("json");
        config["sync_interval"] = 1000.into();
        config["max_redial_backoff"] = 1000.into();
        config["heartbeat"] = 200.into();
        std::fs::write(&config_path, config.to_string()).expect("write config");
        Org {
            org: org.to_string(),
            dir,
            api,
            child: None,
        }
    }

    /// `breakwater ARGS --data-dir DIR`.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", self.dir.to_str().expect("utf-8 path")]);
        run(&all)
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.succeeds(args).stdout).into_owned()
    }

    /// Runs a command that must succeed; returns stderr (what it reported).
    pub fn ok_stderr(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.succeeds(args).stderr).into_owned()
    }

    fn succeeds(&self, args: &[&str]) -> Output {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.org,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command that must fail with a one-line error; returns it.
    pub fn fails(&self, args: &[&str]) -> String {
        expect_failure(self.cmd(args), args)
    }

    /// Starts `breakwater run` and waits until its API answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.org);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("log file");
        let child = Command::new(breakwater())
            .args(["run", "--data-dir", self.dir.to_str().expect("utf-8 path")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn breakwater run");
        self.child = Some(child);
        wait_for(&format!("{} to answer on its API", self.org), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited with {status}: {}", self.org, self.log());
            }
            self.cmd(&["status"]).status.success().then_some(())
        });
    }

    /// SIGKILL, no shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running node's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node's exit status once it has exited (and forgets the process).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status json")
    }

    /// `list --all --json`.
    pub fn list_all(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["list", "--all", "--json"])).expect("list json")
    }

    /// The listed item with this id, if the node holds it.
    pub fn item(&self, id: &str) -> Option<Value> {
        self.list_all().into_iter().find(|item| item["id"] == id)
    }

    /// The API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("api-token"))
            .expect("token")
            .trim()
            .to_string()
    }
}

impl Drop for Org {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the binary.
pub fn run(args: &[&str]) -> Output {
    Command::new(breakwater())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run breakwater")
}

/// Asserts a non-zero exit with exactly one line on stderr; returns it.
pub fn expect_failure(out: Output, args: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(
        !out.status.success(),
        "{args:?} should fail, printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: error should be one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    stderr
}

/// A consortium of `orgs` convened by the first, every member joined, no
/// node running yet.
pub fn consortium(root: &Path, orgs: &[&str]) -> Vec<Org> {
    let members: Vec<Org> = orgs.iter().map(|org| Org::init(root, org)).collect();
    consortium_of(root, members)
}

/// A consortium of these initialised organisations, convened by the first,
/// every member joined, no node running yet.
pub fn consortium_of(root: &Path, members: Vec<Org>) -> Vec<Org> {
    let mut cards = Vec::new();
    for member in &members {
        let card = root.join(format!("{}.card.json", member.org));
        std::fs::write(&card, member.ok(&["card"])).expect("write card");
        cards.push(card);
    }
    let roster = root.join("roster.json");
    let mut args = vec![
        "consortium",
        "create",
        "--name",
        "Test Bay",
        "--out",
        roster.to_str().expect("utf-8"),
    ];
    for card in &cards {
        args.extend(["--card", card.to_str().expect("utf-8")]);
    }
    members[0].ok(&args);
    for member in &members {
        member.ok(&["join", roster.to_str().expect("utf-8")]);
    }
    members
}

/// Starts every node and waits until each sees all the others.
pub fn start_all(members: &mut [Org]) {
    for member in members.iter_mut() {
        member.start();
    }
    let n_others = members.len() - 1;
    for member in members.iter() {
        wait_for(
            &format!("{} to connect to {n_others} peers", member.org),
            || {
                let peers = member.status()["peers"]
                    .as_array()
                    .map(Vec::len)
                    .unwrap_or(0);
                (peers >= n_others).then_some(())
            },
        );
    }
}

/// Makes sure an apt package's tool is there: `present()` already, or after
/// `apt-get install PACKAGE` (as root, as CI runs). Returns why not
/// otherwise, for the test to skip (or, under `CI`, fail) with.
pub fn ensure_apt(package: &str, present: impl Fn() -> bool) -> Result<(), String> {
    if present() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if root {
        let installed = Command::new("sh")
            .args([
                "-c",
                &format!("apt-get update -qq && apt-get install -y -qq {package}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if installed && present() {
            return Ok(());
        }
    }
    Err(format!(
        "{package} is not installed and could not be (apt-get install {package})"
    ))
}

/// The Python of the venv a script under `scripts/` makes (`$VAR`, else
/// `target/<name>`), made by running `scripts/<name>.sh` if it cannot
/// import `modules` (comma-separated) yet, as the test command promises.
/// Off CI a venv that cannot be made (no network) skips the check, saying
/// why; with `CI` set it fails.
pub fn venv_python(var: &str, name: &str, modules: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join(name));
    let python = venv.join("bin").join("python");
    let works = |python: &Path| {
        python.exists()
            && Command::new(python)
                .args(["-c", &format!("import {modules}")])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !works(&python) {
        let _ = Command::new("sh")
            .arg(root.join("scripts").join(format!("{name}.sh")))
            .arg(&venv)
            .status();
    }
    if works(&python) {
        return Some(python);
    }
    let why = format!(
        "{} cannot import {modules}: run scripts/{name}.sh (or set {var})",
        python.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipping the reference-client check: {why}");
    None
}
