//! The chaos harness's nodes: real `breakwater run` processes, one per
//! network namespace, set up through the real CLI (init, card, consortium
//! create, join) and driven with `ip netns exec NS breakwater …`, since each
//! node's API listens on its own namespace's loopback. Also the process
//! monitor that tells injected kills from crashes, the small tmpfs that one
//! node's data directory sits on, and the skewed clock (libfaketime).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use breakwater_protocol::fixture::SAN_PEDRO_BAY;

use super::netns::{Net, node_ip, sh};

/// How long one CLI call may take before it is killed.
const CLI_TIMEOUT_S: &str = "20";
/// How long a (re)started node has to answer on its API.
const START_DEADLINE: Duration = Duration::from_secs(40);
/// Size of the tmpfs under the disk-full node's data directory for a run of
/// up to five minutes.
pub const TMPFS_MB: u64 = 48;

/// More tmpfs per minute of run beyond five: the workload's own writes
/// (about 2 MB a minute at the disk-full node in a 30-minute run) must not
/// fill the disk outside the disk-full window, or that node cannot even
/// restart after a kill (the 30-minute run of 2026-11-30 stopped so at 22
/// minutes, with a 48 MB tmpfs).
pub const TMPFS_MB_PER_MINUTE: u64 = 8;

/// The tmpfs size for a run of `duration`.
pub fn tmpfs_mb(duration: std::time::Duration) -> u64 {
    let minutes = duration.as_secs().div_ceil(60);
    TMPFS_MB + minutes.saturating_sub(5) * TMPFS_MB_PER_MINUTE
}

/// Where libfaketime may live.
const FAKETIME_LIBS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
];

/// The libfaketime library, if installed.
pub fn faketime_lib() -> Option<PathBuf> {
    FAKETIME_LIBS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// One node's files.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Organisation slug.
    pub org: String,
    /// Data directory.
    pub dir: PathBuf,
    /// Its log (stderr of every run, appended).
    pub log: PathBuf,
    /// Listens on QUIC (else TCP).
    pub quic: bool,
}

/// A node process that exited without being killed by the harness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Crash {
    /// Node index.
    pub node: usize,
    /// Organisation.
    pub org: String,
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// How it ended.
    pub status: String,
    /// The end of its log.
    pub log_tail: String,
}

/// The running consortium.
#[derive(Debug)]
pub struct Cluster {
    /// The `breakwater` binary.
    pub bin: PathBuf,
    /// The namespaces.
    pub net: Net,
    /// The nodes.
    pub slots: Vec<Slot>,
    /// When the run started.
    pub start: Instant,
    /// The same moment, unix ms (the harness's own, unskewed clock).
    pub start_unix_ms: u64,
    procs: Mutex<Vec<Option<Child>>>,
    crashes: Mutex<Vec<Crash>>,
    /// The node whose clock is skewed, by this many seconds.
    pub skew: Option<(usize, i64)>,
    faketime: Option<PathBuf>,
    /// The node whose data directory is on a small tmpfs, and the mount.
    pub tmpfs: Option<(usize, PathBuf)>,
}

impl Cluster {
    /// Creates namespaces and data directories under `root` and convenes
    /// the consortium; no node runs yet.
    pub fn create(
        bin: &Path,
        root: &Path,
        n: usize,
        skew: Option<(usize, i64)>,
        tmpfs_node: Option<usize>,
        tmpfs_size_mb: u64,
    ) -> Result<Cluster> {
        let net = Net::create(n)?;
        let faketime = match skew {
            Some(_) => faketime_lib(),
            None => None,
        };
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            net,
            slots: Vec::new(),
            start: Instant::now(),
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            procs: Mutex::new((0..n).map(|_| None).collect()),
            crashes: Mutex::new(Vec::new()),
            skew: if faketime.is_some() { skew } else { None },
            faketime,
            tmpfs: None,
        };
        std::fs::create_dir_all(root.join("logs"))?;
        for i in 0..n {
            let org = match SAN_PEDRO_BAY.get(i) {
                Some((org, _, _)) => org.to_string(),
                None => format!("member-{}", i + 1),
            };
            let parent = if tmpfs_node == Some(i) {
                let mount = root.join("tmpfs");
                std::fs::create_dir_all(&mount)?;
                sh(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={tmpfs_size_mb}m"),
                        "breakwater-chaos",
                        mount.to_str().context("non-UTF-8 path")?,
                    ],
                )?;
                cluster.tmpfs = Some((i, mount.clone()));
                mount
            } else {
                root.to_path_buf()
            };
            cluster.slots.push(Slot {
                dir: parent.join(&org),
                log: root.join("logs").join(format!("{org}.log")),
                org,
                quic: i % 3 == 1,
            });
        }
        cluster.convene(root)?;
        Ok(cluster)
    }

    /// init, card, consortium create (by the first node), join: the real CLI.
    fn convene(&self, root: &Path) -> Result<()> {
        let mut cards = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let listen = if slot.quic {
                format!("/ip4/{}/udp/7401/quic-v1", node_ip(i))
            } else {
                format!("/ip4/{}/tcp/7400", node_ip(i))
            };
            self.offline(
                i,
                &[
                    "init",
                    "--org",
                    &slot.org,
                    "--name",
                    &format!("{} (chaos)", slot.org),
                    "--sector",
                    "maritime",
                    "--listen",
                    &listen,
                    "--api",
                    "127.0.0.1:7475",
                ],
            )?;
            let config_path = slot.dir.join("config.json");
            let mut config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
            config["sync_interval"] = 2000.into();
            config["max_redial_backoff"] = 2000.into();
            config["heartbeat"] = 500.into();
            // The disk-full node's tmpfs is sized for the run's own writes
            // plus this reserve (the default, 64 MiB, is for real disks).
            config["min_free_disk_mb"] = 8.into();
            std::fs::write(&config_path, config.to_string())?;
            let card = root.join(format!("{}.card.json", slot.org));
            std::fs::write(&card, self.offline(i, &["card"])?)?;
            cards.push(card);
        }
        let roster = root.join("roster.json");
        let roster_s = roster.to_str().context("non-UTF-8 path")?.to_string();
        let mut args = vec![
            "consortium".to_string(),
            "create".into(),
            "--name".into(),
            "Chaos Bay".into(),
            "--out".into(),
            roster_s.clone(),
        ];
        for card in &cards {
            args.push("--card".into());
            args.push(card.to_str().context("non-UTF-8 path")?.into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.offline(0, &args)?;
        for i in 0..self.slots.len() {
            self.offline(i, &["join", &roster_s])?;
        }
        Ok(())
    }

    fn slot(&self, i: usize) -> Result<&Slot> {
        self.slots.get(i).with_context(|| format!("no node {i}"))
    }

    /// An offline command on node `i`'s data directory; stdout.
    fn offline(&self, i: usize, args: &[&str]) -> Result<String> {
        let slot = self.slot(i)?;
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(&slot.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "breakwater {} ({}): {}",
                args.join(" "),
                slot.org,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `breakwater ARGS --data-dir DIR` inside node `i`'s namespace, killed
    /// after 20 s.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<Output> {
        let slot = self.slot(i)?;
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.net.ns(i),
                "timeout",
                "-s",
                "KILL",
                CLI_TIMEOUT_S,
            ])
            .arg(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(&slot.dir)
            .stdin(Stdio::null())
            .output()
            .context("cannot run ip netns exec")
    }

    /// A CLI call that must succeed; stdout.
    /// Every bulletin node `i` holds (`list --all --json`, page by page).
    /// Pages of 1,000, not the node's 5,000 maximum: each CLI call must end
    /// within the 20 s limit, and a debug node holding 14,000 envelopes on
    /// a loaded machine did not answer 5,000 in time (30-minute run 2).
    pub fn list_all(&self, i: usize) -> Result<Vec<breakwater_node::Summary>> {
        const PAGE: usize = 1000;
        let mut all = Vec::new();
        loop {
            let offset = all.len().to_string();
            let limit = PAGE.to_string();
            let text = self.cli_ok(
                i,
                &[
                    "list", "--all", "--json", "--limit", &limit, "--offset", &offset,
                ],
            )?;
            let page: Vec<breakwater_node::Summary> =
                serde_json::from_str(&text).context("list --json")?;
            let n = page.len();
            all.extend(page);
            if n < PAGE {
                return Ok(all);
            }
        }
    }

    pub fn cli_ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.cli(i, args)?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                self.slot(i)?.org,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Starts `breakwater run` for node `i` and waits until its API answers.
    pub fn start_node(&self, i: usize) -> Result<()> {
        let slot = self.slot(i)?;
        if self.is_running(i) {
            return Ok(());
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .with_context(|| format!("cannot open {}", slot.log.display()))?;
        writeln!(log, "=== chaos harness: start at {} ms ===", self.now_ms())?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.net.ns(i)])
            .arg(&self.bin)
            .arg("run")
            .arg("--data-dir")
            .arg(&slot.dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let (Some((node, seconds)), Some(lib)) = (self.skew, &self.faketime)
            && node == i
        {
            // Only the wall clock: tokio's timers keep the real monotonic clock.
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("{seconds:+}"))
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        let child = command.spawn().context("cannot spawn breakwater run")?;
        {
            let mut procs = self.procs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if let Some(slot) = procs.get_mut(i) {
                *slot = Some(child);
            }
        }
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if self.cli(i, &["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if !self.is_running(i) {
                bail!("{} exited while starting: {}", slot.org, tail(&slot.log));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer on its API within {START_DEADLINE:?}",
                    slot.org
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Whether node `i`'s process is running (as far as the harness knows).
    pub fn is_running(&self, i: usize) -> bool {
        self.procs
            .lock()
            .map(|p| p.get(i).is_some_and(Option::is_some))
            .unwrap_or(false)
    }

    /// `kill -9` of node `i`; returns whether it was running.
    pub fn kill(&self, i: usize) -> bool {
        let child = self
            .procs
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(i).and_then(Option::take));
        match child {
            Some(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                true
            }
            None => false,
        }
    }

    /// Notes every node process that exited on its own since the last call
    /// (a crash: the harness's kills take the process out first).
    pub fn reap(&self) {
        let Ok(mut procs) = self.procs.lock() else {
            return;
        };
        for (i, proc) in procs.iter_mut().enumerate() {
            let exited = match proc.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(format!("cannot wait: {e}")),
                _ => None,
            };
            if let Some(status) = exited {
                *proc = None;
                if let (Some(slot), Ok(mut crashes)) = (self.slots.get(i), self.crashes.lock()) {
                    crashes.push(Crash {
                        node: i,
                        org: slot.org.clone(),
                        t_ms: self.now_ms(),
                        status,
                        log_tail: tail(&slot.log),
                    });
                }
            }
        }
    }

    /// Crashes seen so far.
    pub fn crashes(&self) -> Vec<Crash> {
        self.crashes.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Fills the tmpfs (a filler file grown until the disk is full); called
    /// again while the window lasts, to take space the node frees.
    pub fn fill_disk(&self) -> Result<()> {
        let Some((_, mount)) = &self.tmpfs else {
            return Ok(());
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(mount.join("filler"))?;
        let chunk = vec![0u8; 256 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Whatever is left is smaller than a chunk: take it too.
        for _ in 0..1024 {
            if file.write_all(&[0u8; 256]).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Frees the tmpfs again.
    pub fn free_disk(&self) -> Result<()> {
        if let Some((_, mount)) = &self.tmpfs {
            let filler = mount.join("filler");
            if filler.exists() {
                std::fs::remove_file(filler)?;
            }
        }
        Ok(())
    }

    /// Stops every node (SIGKILL) and unmounts the tmpfs.
    pub fn shutdown(&self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
        if let Some((_, mount)) = &self.tmpfs
            && let Some(path) = mount.to_str()
        {
            let _ = sh("umount", &["-l", path]);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

#[cfg(test)]
mod tmpfs_tests {
    use super::*;

    #[test]
    fn the_tmpfs_grows_with_the_run_beyond_five_minutes() {
        assert_eq!(tmpfs_mb(std::time::Duration::from_secs(45)), TMPFS_MB);
        assert_eq!(tmpfs_mb(std::time::Duration::from_secs(300)), TMPFS_MB);
        assert_eq!(
            tmpfs_mb(std::time::Duration::from_secs(30 * 60)),
            48 + 25 * 8
        );
    }
}
