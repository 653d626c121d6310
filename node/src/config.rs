//! Node configuration and the data directory: `config.json`, the secret
//! keys (`keys.json`, mode 0600), the API token (`api-token`, mode 0600) and
//! the sled store (`store/`). Read by `spawn` and by the CLI.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use breakwater_protocol::NodeKeys;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Why the data directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is malformed.
    #[error("{path}: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A setting is out of range.
    #[error("config.json: {0}")]
    Invalid(String),
    /// `init` on a directory that already holds a node.
    #[error("{0} is already initialised (keys.json exists); refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    /// The directory holds no node.
    #[error("{0} is not initialised: run `breakwater init --data-dir {0}` first")]
    NotInitialised(PathBuf),
    /// A secret file is open to the group or to others (ssh-style refusal).
    #[error(
        "{path} holds secret keys but its mode is {mode:04o} (group or others may access it); run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Node settings, stored as `config.json` in the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Organisation this node belongs to.
    pub org_id: String,
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Extra peers to dial besides the roster's addresses.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses other members dial this node at, put in its member card in
    /// place of the `listen` addresses: for a node behind NAT, or one that
    /// listens on 0.0.0.0. Empty: the card carries the `listen` addresses
    /// that are dialable.
    pub announce: Vec<Multiaddr>,
    /// Organisations whose nodes this node dials (by their roster addresses);
    /// `null` (the default) dials every member. Members left out may still
    /// connect in. A large consortium sets this to a few neighbours each.
    pub dial_orgs: Option<Vec<String>>,
    /// Local API address (loopback only).
    pub api: SocketAddr,
    /// Anti-entropy interval.
    #[serde(with = "millis")]
    pub sync_interval: Duration,
    /// Gossipsub heartbeat.
    #[serde(with = "millis")]
    pub heartbeat: Duration,
    /// Longest redial backoff.
    #[serde(with = "millis")]
    pub max_redial_backoff: Duration,
    /// Default lifetime of a published envelope.
    #[serde(with = "millis")]
    pub default_ttl: Duration,
    /// Discover peers with mDNS (opt-in).
    pub mdns: bool,
    /// How long after start a publish (or retraction, or sighting) waits
    /// for this node's first completed sync round with a peer, so that a
    /// node restored from an older copy of its data learns the seqs it
    /// already used before it signs a new one (L7). Past it, publishing
    /// goes ahead unsynced. 0 turns the wait off (the operator override).
    /// A node whose roster lists no other node never waits.
    #[serde(with = "millis")]
    pub publish_sync_wait: Duration,
    /// Length of the per-author quota window.
    #[serde(with = "millis")]
    pub quota_window: Duration,
    /// Most new envelopes stored per author per quota window; more are
    /// ignored until the window ends.
    pub quota_envelopes_per_window: u64,
    /// Most new ciphertext bytes stored per author per quota window.
    pub quota_bytes_per_window: u64,
    /// Most ciphertext bytes kept per author at any time.
    pub quota_bytes_per_author: u64,
    /// Longest envelope lifetime this node stores (at most one year, the
    /// protocol's limit); longer ones are ignored, their feed position kept.
    #[serde(with = "millis")]
    pub max_lifetime: Duration,
    /// How long expired ciphertext is kept before it is deleted (a
    /// tombstone keeps its feed position).
    #[serde(with = "millis")]
    pub expired_grace: Duration,
    /// Days after an organisation's revocation (as first seen by this node)
    /// when its envelopes' ciphertext is deleted, tombstones kept.
    pub revoked_purge_after_days: u64,
    /// Free space, in MiB, the store leaves on its filesystem: a write that
    /// finds less refuses with one line and writes nothing, so the store
    /// keeps serving reads on a full disk (0 turns the check off).
    pub min_free_disk_mb: u64,
    /// The TAXII 2.1 server (off when absent; `breakwater taxii enable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taxii: Option<crate::taxii::TaxiiConfig>,
    /// Prometheus `/metrics` (always on the API behind the token; also on
    /// `metrics.listen`, loopback, without one).
    pub metrics: MetricsConfig,
    /// Signed webhooks (see [`crate::webhook`]).
    pub webhooks: Vec<crate::webhook::WebhookConfig>,
    /// Longest wait between two attempts of one webhook delivery.
    #[serde(with = "millis")]
    pub webhook_max_backoff: Duration,
}

/// `config.json`'s `metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A loopback address serving `/metrics` without a token.
    pub listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            org_id: String::new(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            announce: Vec::new(),
            dial_orgs: None,
            api: SocketAddr::from(([127, 0, 0, 1], 7475)),
            sync_interval: Duration::from_secs(15),
            heartbeat: Duration::from_secs(1),
            max_redial_backoff: Duration::from_secs(60),
            default_ttl: Duration::from_secs(90 * 24 * 3600),
            mdns: false,
            publish_sync_wait: Duration::from_secs(10),
            quota_window: Duration::from_secs(3600),
            quota_envelopes_per_window: 100_000,
            quota_bytes_per_window: 2 * 1024 * 1024 * 1024,
            quota_bytes_per_author: 4 * 1024 * 1024 * 1024,
            max_lifetime: Duration::from_millis(breakwater_protocol::MAX_LIFETIME_MS),
            expired_grace: Duration::from_secs(7 * 24 * 3600),
            revoked_purge_after_days: 30,
            min_free_disk_mb: 64,
            taxii: None,
            metrics: MetricsConfig::default(),
            webhooks: Vec::new(),
            webhook_max_backoff: Duration::from_secs(300),
        }
    }
}

/// Shortest interval a timer may be set to.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl Config {
    /// Checks values that would stop a node from running.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("sync_interval", self.sync_interval),
            ("heartbeat", self.heartbeat),
            ("max_redial_backoff", self.max_redial_backoff),
            ("default_ttl", self.default_ttl),
            ("quota_window", self.quota_window),
            ("max_lifetime", self.max_lifetime),
            ("webhook_max_backoff", self.webhook_max_backoff),
        ] {
            if value < MIN_INTERVAL {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 10 ms"
                )));
            }
        }
        let year = Duration::from_millis(breakwater_protocol::MAX_LIFETIME_MS);
        if self.max_lifetime > year {
            return Err(ConfigError::Invalid(format!(
                "max_lifetime must be at most one year ({} ms)",
                year.as_millis()
            )));
        }
        if self.default_ttl > self.max_lifetime {
            return Err(ConfigError::Invalid(
                "default_ttl must be at most max_lifetime".to_owned(),
            ));
        }
        for addr in &self.announce {
            breakwater_protocol::check_addr(&addr.to_string())
                .map_err(|e| ConfigError::Invalid(format!("announce: {e}")))?;
        }
        if !self.api.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "api address {} is not loopback",
                self.api
            )));
        }
        if let Some(taxii) = &self.taxii {
            taxii.check().map_err(ConfigError::Invalid)?;
        }
        if let Some(listen) = self.metrics.listen
            && !listen.ip().is_loopback()
        {
            return Err(ConfigError::Invalid(format!(
                "metrics.listen {listen} is not loopback (metrics are served without a token)"
            )));
        }
        for (n, webhook) in self.webhooks.iter().enumerate() {
            webhook.check(n)?;
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The files of one node's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `keys.json`.
    pub fn keys_path(&self) -> PathBuf {
        self.root.join("keys.json")
    }

    /// `api-token`.
    pub fn token_path(&self) -> PathBuf {
        self.root.join("api-token")
    }

    /// The sled store directory.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store")
    }

    /// True when keys exist.
    pub fn is_initialised(&self) -> bool {
        self.keys_path().exists()
    }

    /// Creates a new node: keys, token and config. Refuses an initialised
    /// directory and changes nothing then.
    pub fn init(&self, config: &Config, keys: &NodeKeys, token: &str) -> Result<(), ConfigError> {
        if self.is_initialised() {
            return Err(ConfigError::AlreadyInitialised(self.root.clone()));
        }
        fs::create_dir_all(&self.root).map_err(|source| io(&self.root, source))?;
        // The store holds RED and AMBER+STRICT plaintext: owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .map_err(|source| io(&self.root, source))?;
        }
        write_private(&self.keys_path(), keys.to_secret_json().as_bytes())?;
        write_private(&self.token_path(), token.as_bytes())?;
        self.save_config(config)
    }

    /// Writes `config.json`.
    pub fn save_config(&self, config: &Config) -> Result<(), ConfigError> {
        let text = serde_json::to_string_pretty(config).unwrap_or_default();
        write_atomic(&self.config_path(), text.as_bytes(), false)
    }

    /// Reads `config.json`.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let path = self.config_path();
        let text = self.read(&path)?;
        let config: Config = serde_json::from_str(&text).map_err(|e| ConfigError::Malformed {
            path,
            detail: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads the node's secret keys. Refuses, as ssh does, a `keys.json`
    /// that its group or others may read or write: a restore or copy with
    /// the wrong mode should be fixed, not silently used.
    pub fn keys(&self) -> Result<NodeKeys, ConfigError> {
        let path = self.keys_path();
        if !self.is_initialised() {
            return Err(ConfigError::NotInitialised(self.root.clone()));
        }
        check_private(&path)?;
        let text = zeroize::Zeroizing::new(self.read(&path)?);
        NodeKeys::from_secret_json(&text).map_err(|e| ConfigError::Malformed {
            path,
            detail: e.to_string(),
        })
    }

    /// Reads the API token.
    pub fn token(&self) -> Result<String, ConfigError> {
        Ok(self.read(&self.token_path())?.trim().to_string())
    }

    fn read(&self, path: &Path) -> Result<String, ConfigError> {
        if !self.is_initialised() {
            return Err(ConfigError::NotInitialised(self.root.clone()));
        }
        fs::read_to_string(path).map_err(|source| io(path, source))
    }
}

/// Refuses a secret file whose mode grants the group or others any access.
pub fn check_private(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|source| io(path, source))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

fn io(path: &Path, source: std::io::Error) -> ConfigError {
    ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file readable by its owner only (mode 0600 from creation on).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    write_atomic(path, bytes, true)
}

fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), ConfigError> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(|source| io(&tmp, source))?;
    file.write_all(bytes).map_err(|source| io(&tmp, source))?;
    file.sync_all().map_err(|source| io(&tmp, source))?;
    fs::rename(&tmp, path).map_err(|source| io(path, source))
}
