//! `breakwater run` as a service: the log format (plain for journald and
//! pipes, JSON on request) and the systemd notification protocol
//! (`Type=notify`): READY once the store, the API and P2P are up, STATUS
//! with peers and roster version, WATCHDOG pings while the event loop
//! answers, STOPPING on shutdown.
//!
//! The notification protocol is one datagram per message to the unix
//! socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace); without that variable every notification is a no-op.

use std::io::IsTerminal;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use breakwater_node::{DataDir, NodeEvent, NodeHandle, Status};
use tokio::sync::{broadcast, watch};

use crate::client::Client;

/// How often the STATUS line is refreshed even without a peer or roster
/// event.
pub const STATUS_REFRESH: Duration = Duration::from_secs(5);

/// How `run` writes its logs to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber for `run`. Under journald (`JOURNAL_STREAM`
/// set) or when stderr is not a terminal, lines carry no ANSI colours and no
/// timestamps of their own: journald and other collectors stamp each line
/// on arrival.
pub fn init_logging(format: LogFormat) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let plain = journald || !std::io::stderr().is_terminal();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(!plain);
    // A subscriber already installed (never, in the binary) keeps its place.
    let _ = match (format, plain) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, true) => builder.json().flatten_event(true).without_time().try_init(),
    };
}

/// The service manager's notification socket, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a no-op notifier without it (or when it names
    /// no usable address, which is logged).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let name = name.to_string_lossy().into_owned();
        let target = notify_addr(&name).and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        match target {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={name} is unusable ({e}); not notifying systemd");
                Notifier { target: None }
            }
        }
    }

    /// Sends one notification, e.g. `READY=1`; failures are logged.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!("cannot notify systemd ({e})");
        }
    }

    /// True when a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }
}

fn notify_addr(name: &str) -> std::io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(abstract_name.as_bytes());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(std::io::Error::other("abstract sockets need Linux"));
        }
    }
    SocketAddr::from_pathname(name)
}

/// How often systemd wants a watchdog ping (half its `WATCHDOG_USEC`), when
/// the watchdog is on for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The `STATUS=` line.
pub fn status_line(status: &Status) -> String {
    format!(
        "STATUS={} peers connected, roster version {}",
        status.peers.len(),
        status.roster_version
    )
}

/// Waits until the node's own API answers with a status that lists at
/// least one P2P listen address (or `deadline` passes, which is logged);
/// returns the last status seen.
pub async fn wait_until_up(data_dir: &DataDir, deadline: Duration) -> Option<Status> {
    let start = tokio::time::Instant::now();
    loop {
        let last_error;
        match Client::for_data_dir(data_dir) {
            Ok(client) => match client.get::<Status>("/v1/status").await {
                Ok(status) if !status.listen.is_empty() => return Some(status),
                Ok(_) => last_error = "no P2P listen address yet".into(),
                Err(e) => last_error = format!("{e:#}"),
            },
            Err(e) => last_error = format!("{e:#}"),
        }
        if start.elapsed() > deadline {
            tracing::warn!("the node is not fully up after {deadline:?} ({last_error})");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps systemd informed until `stop`: a new STATUS line whenever peers or
/// the roster change (checked on those events and every
/// [`STATUS_REFRESH`]; `last` is the line sent with READY), and a WATCHDOG ping each `watchdog` interval while
/// the node answers a query within it (a wedged event loop stops the pings,
/// and systemd restarts the service).
pub async fn supervise(
    notifier: std::sync::Arc<Notifier>,
    handle: NodeHandle,
    watchdog: Option<Duration>,
    mut last: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = handle.subscribe();
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut refresh_tick = tokio::time::interval(STATUS_REFRESH);
    loop {
        let refresh = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                false
            }
            event = events.recv() => match event {
                Ok(NodeEvent::PeerConnected { .. } | NodeEvent::PeerDisconnected { .. } | NodeEvent::RosterApplied { .. }) => true,
                Ok(_) => false,
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = refresh_tick.tick() => true,
            _ = ping.tick() => {
                if let Some(interval) = watchdog {
                    match tokio::time::timeout(interval, handle.peers()).await {
                        Ok(Ok(_)) => notifier.notify("WATCHDOG=1"),
                        _ => tracing::warn!("the node did not answer within {interval:?}: no watchdog ping"),
                    }
                }
                false
            }
        };
        if refresh && let Ok(status) = handle.status().await {
            let line = status_line(&status);
            if line != last {
                notifier.notify(&line);
                last = line;
            }
        }
    }
}
