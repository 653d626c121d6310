//! `breakwater`: the operator command line. Offline commands (init, card,
//! consortium, join) work on the data directory; `run` starts the node and
//! its local API; the others are clients of that API.

mod client;
mod consortium;
mod demo;
mod dirs;
mod doctor;
mod interop;
mod output;
mod service;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use breakwater_node::api::{PublishBody, check_loopback};
use breakwater_node::{
    Config, DataDir, Detail, NodeEvent, PeerInfo, Published, Status, Summary, TransportKind,
};
use breakwater_protocol::{Indicator, MemberCard, NodeEntry, NodeKeys, OrgId, SignedRoster};
use clap::{Args, CommandFactory, Parser, Subcommand};
use libp2p::Multiaddr;
use rand::Rng;
use tokio::sync::watch;

use crate::client::{Client, encode_query};
use crate::output::{Table, colour, now_ms, paint, parse_duration, short_id, time};

/// Breakwater: peer-to-peer threat sharing for a port community.
#[derive(Debug, Parser)]
#[command(name = "breakwater", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The node's data directory.
#[derive(Debug, Args)]
pub(crate) struct Dir {
    /// The node's data directory [default: $STATE_DIRECTORY under systemd,
    /// else $XDG_DATA_HOME/breakwater, else ~/.local/share/breakwater].
    #[arg(long, env = "BREAKWATER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl Dir {
    /// The data directory given, or the default one ([`dirs::resolve`]).
    fn get(&self) -> Result<DataDir> {
        let root = dirs::resolve(self.data_dir.as_deref(), |name| std::env::var_os(name))?;
        Ok(DataDir::new(root))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a node: keys, API token, config and member card.
    Init {
        #[command(flatten)]
        dir: Dir,
        /// Organisation slug, e.g. `port-authority`.
        #[arg(long)]
        org: String,
        /// Organisation display name.
        #[arg(long)]
        name: String,
        /// Sector, e.g. `terminal-operator`.
        #[arg(long)]
        sector: String,
        /// Multiaddr to listen on (repeatable; also published in the card,
        /// unless --announce is given).
        #[arg(long)]
        listen: Vec<String>,
        /// Multiaddr other members dial this node at (repeatable): put in
        /// the card in place of the listen addresses, for a node behind NAT
        /// or one listening on 0.0.0.0. Kept as `announce` in config.json.
        #[arg(long, value_name = "ADDR")]
        announce: Vec<String>,
        /// Local API address (loopback only).
        #[arg(long, default_value = "127.0.0.1:7475")]
        api: String,
    },
    /// Prints this organisation's member card (JSON).
    Card {
        #[command(flatten)]
        dir: Dir,
    },
    /// Convenes and changes the consortium's roster.
    #[command(subcommand)]
    Consortium(consortium::Consortium),
    /// Joins a consortium (first roster) or applies a newer roster version.
    Join {
        #[command(flatten)]
        dir: Dir,
        /// The roster file; several are applied in order (e.g. a newcomer's
        /// genesis followed by the version that added it).
        #[arg(required = true)]
        roster: Vec<PathBuf>,
    },
    /// Runs the node in the foreground; logs go to stderr. Under systemd
    /// (`Type=notify`) it reports READY, STATUS, STOPPING and watchdog pings.
    Run {
        #[command(flatten)]
        dir: Dir,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t)]
        log_format: service::LogFormat,
    },
    /// Publishes a bulletin; prints its envelope id.
    Publish {
        #[command(flatten)]
        dir: Dir,
        /// clear, green, amber, amber+strict or red (with --from-stix: only
        /// to tighten the bundle's marking).
        #[arg(long, required_unless_present = "from_stix")]
        tlp: Option<String>,
        /// Recipient organisations (amber and stricter).
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
        /// low, medium, high or critical.
        #[arg(long, required_unless_present = "from_stix")]
        severity: Option<String>,
        /// One-line title.
        #[arg(long, required_unless_present = "from_stix")]
        title: Option<String>,
        /// Summary text. Anything in argv is visible to other local users
        /// (`ps`, /proc): use --summary-file for RED or sensitive text.
        #[arg(long, conflicts_with = "summary_file")]
        summary: Option<String>,
        /// Reads the summary from FILE, or from standard input with `-`,
        /// so that its text never appears in argv.
        #[arg(long, value_name = "FILE|-")]
        summary_file: Option<PathBuf>,
        /// An indicator, KIND:VALUE (repeatable).
        #[arg(long)]
        indicator: Vec<String>,
        /// A tag (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// A STIX 2.1 bundle file to attach.
        #[arg(long)]
        stix: Option<PathBuf>,
        /// Lifetime, e.g. 30d (default: the node's).
        #[arg(long)]
        expires: Option<String>,
        /// Publishes a STIX 2.1 bundle's indicators and vulnerabilities,
        /// its TLP taken from its markings (the strictest); objects that
        /// cannot be mapped travel in the attached bundle.
        #[arg(long, conflicts_with_all = ["stix", "indicator", "summary"])]
        from_stix: Option<PathBuf>,
    },
    /// Exports bulletins as STIX 2.1, as MISP feeds, or as an air-gap
    /// bundle of envelopes.
    #[command(subcommand)]
    Export(interop::Export),
    /// Runs this node's TAXII 2.1 server (opt-in).
    #[command(subcommand)]
    Taxii(interop::Taxii),
    /// Imports an air-gap bundle (`export envelopes`): every envelope is
    /// validated as sync does and stored; prints accepted, already held
    /// and refused with each reason.
    Import {
        #[command(flatten)]
        dir: Dir,
        /// The bundle file.
        file: PathBuf,
    },
    /// Lists envelopes, newest first.
    List {
        #[command(flatten)]
        dir: Dir,
        /// Include envelopes this node cannot open.
        #[arg(long)]
        all: bool,
        /// Only those created within this duration, e.g. 24h.
        #[arg(long)]
        since: Option<String>,
        /// Only bulletins of at least this severity.
        #[arg(long)]
        severity: Option<String>,
        /// Only this TLP.
        #[arg(long)]
        tlp: Option<String>,
        #[command(flatten)]
        page: Page,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Shows one envelope in full.
    Show {
        #[command(flatten)]
        dir: Dir,
        /// Envelope id (or a unique prefix).
        id: String,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Finds readable bulletins carrying an indicator.
    Search {
        #[command(flatten)]
        dir: Dir,
        /// KIND:VALUE, e.g. ipv4:203.0.113.7.
        indicator: String,
        #[command(flatten)]
        page: Page,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retracts one of this organisation's bulletins.
    Retract {
        #[command(flatten)]
        dir: Dir,
        /// Envelope id (or a unique prefix).
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Reports a sighting of one of a bulletin's indicators.
    Sight {
        #[command(flatten)]
        dir: Dir,
        /// Envelope id (or a unique prefix).
        id: String,
        /// KIND:VALUE seen.
        #[arg(long)]
        indicator: String,
    },
    /// Node status.
    Status {
        #[command(flatten)]
        dir: Dir,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connected peers.
    Peers {
        #[command(flatten)]
        dir: Dir,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follows the node's events.
    Watch {
        #[command(flatten)]
        dir: Dir,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Checks this node's set-up: permissions, config, ports, reachable
    /// members; prints what to fix and fails when something is wrong.
    Doctor {
        #[command(flatten)]
        dir: Dir,
    },
    /// Prints a shell completion script, e.g. `breakwater completions bash
    /// > /usr/share/bash-completion/completions/breakwater`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff), e.g. `breakwater man > breakwater.1`.
    Man,
    /// Prints the web dashboard's address and a one-time login code.
    Ui {
        #[command(flatten)]
        dir: Dir,
    },
    /// Runs a San Pedro Bay consortium on loopback in this process.
    Demo {
        /// Number of organisations.
        #[arg(long, default_value_t = 5)]
        orgs: usize,
        /// Stop after this long (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init {
            dir,
            org,
            name,
            sector,
            listen,
            announce,
            api,
        } => init(&dir.get()?, &org, &name, &sector, &listen, &announce, &api),
        Command::Card { dir } => {
            print!("{}", read_card(&dir.get()?)?.to_json());
            println!();
            Ok(())
        }
        Command::Consortium(command) => consortium::run(command).await,
        Command::Join { dir, roster } => join(&dir.get()?, &roster).await,
        Command::Run { dir, log_format } => {
            service::init_logging(log_format);
            run(&dir.get()?).await
        }
        Command::Publish {
            dir,
            tlp,
            to,
            severity,
            title,
            summary,
            summary_file,
            indicator,
            tag,
            stix,
            expires,
            from_stix,
        } => {
            let summary = match summary_file {
                Some(path) => Some(
                    read_text_arg(&path)
                        .context("--summary-file")?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ),
                None => summary,
            };
            let ttl_ms = match expires {
                Some(text) => {
                    let ms = parse_duration(&text).context("--expires")?.as_millis() as u64;
                    if ms > breakwater_protocol::MAX_LIFETIME_MS {
                        bail!("--expires {text}: a bulletin may live at most 365 days");
                    }
                    Some(ms)
                }
                None => None,
            };
            if let Some(path) = from_stix {
                let from = interop::FromStix {
                    path: &path,
                    tlp,
                    to,
                    severity,
                    title,
                    tags: tag,
                    ttl_ms,
                };
                return interop::publish_from_stix(&dir.get()?, from).await;
            }
            let stix = match stix {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read STIX file {}", path.display()))?;
                    breakwater_protocol::body::check_stix(&text)
                        .with_context(|| format!("STIX file {}", path.display()))?;
                    Some(text)
                }
                None => None,
            };
            let body = PublishBody {
                tlp: tlp.unwrap_or_default(),
                to,
                severity: severity.unwrap_or_default(),
                title: title.unwrap_or_default(),
                summary: summary.unwrap_or_default(),
                indicators: indicator,
                tags: tag,
                sectors: Vec::new(),
                references: Vec::new(),
                stix,
                ttl_ms,
            };
            // Check locally first, so bad input fails even with no node running.
            let request = serde_json::to_value(&body)?;
            body.into_request().map_err(anyhow::Error::msg)?;
            let published: Published = Client::for_data_dir(&dir.get()?)?
                .post("/v1/publish", &request)
                .await?;
            println!("{}", published.id);
            eprintln!(
                "published (seq {}, {})",
                published.seq,
                match published.recipients {
                    0 => "not sealed".to_string(),
                    n => format!("sealed to {n} node(s)"),
                }
            );
            Ok(())
        }
        Command::List {
            dir,
            all,
            since,
            severity,
            tlp,
            page,
            json,
        } => {
            let mut query = vec![format!("all={all}")];
            query.extend(page.query());
            if let Some(since) = since {
                let window = parse_duration(&since).context("--since")?;
                query.push(format!(
                    "since={}",
                    now_ms().saturating_sub(window.as_millis() as u64)
                ));
            }
            if let Some(severity) = severity {
                severity.parse::<breakwater_protocol::Severity>()?;
                query.push(format!("severity={}", encode_query(&severity)));
            }
            if let Some(tlp) = tlp {
                tlp.parse::<breakwater_protocol::Tlp>()?;
                query.push(format!("tlp={}", encode_query(&tlp)));
            }
            let client = Client::for_data_dir(&dir.get()?)?;
            let items: Vec<Summary> = client
                .get(&format!("/v1/bulletins?{}", query.join("&")))
                .await?;
            print_summaries(&items, json)?;
            page.note_more(items.len());
            Ok(())
        }
        Command::Show { dir, id, json } => {
            let client = Client::for_data_dir(&dir.get()?)?;
            let detail: Detail = client
                .get(&format!("/v1/bulletins/{}", encode_query(&id)))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print!("{}", show_detail(&detail, colour()));
            }
            Ok(())
        }
        Command::Search {
            dir,
            indicator,
            page,
            json,
        } => {
            Indicator::parse(&indicator)?;
            let client = Client::for_data_dir(&dir.get()?)?;
            let mut query = vec![format!("indicator={}", encode_query(&indicator))];
            query.extend(page.query());
            let items: Vec<Summary> = client
                .get(&format!("/v1/search?{}", query.join("&")))
                .await?;
            print_summaries(&items, json)?;
            page.note_more(items.len());
            Ok(())
        }
        Command::Retract { dir, id, reason } => {
            let client = Client::for_data_dir(&dir.get()?)?;
            let body = serde_json::json!({ "reason": reason });
            let published: Published = client
                .post(
                    &format!("/v1/bulletins/{}/retract", encode_query(&id)),
                    &body,
                )
                .await?;
            println!("{}", published.id);
            Ok(())
        }
        Command::Sight { dir, id, indicator } => {
            Indicator::parse(&indicator)?;
            let client = Client::for_data_dir(&dir.get()?)?;
            let body = serde_json::json!({ "indicator": indicator });
            let published: Published = client
                .post(
                    &format!("/v1/bulletins/{}/sightings", encode_query(&id)),
                    &body,
                )
                .await?;
            println!("{}", published.id);
            Ok(())
        }
        Command::Status { dir, json } => {
            let status: Status = Client::for_data_dir(&dir.get()?)?.get("/v1/status").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", show_status(&status));
            }
            Ok(())
        }
        Command::Peers { dir, json } => {
            let peers: Vec<PeerInfo> = Client::for_data_dir(&dir.get()?)?.get("/v1/peers").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                print!("{}", show_peers(&peers, colour()));
            }
            Ok(())
        }
        Command::Watch { dir, json } => {
            let client = Client::for_data_dir(&dir.get()?)?;
            let on = colour();
            client
                .follow("/v1/events", |data| {
                    if json {
                        println!("{data}");
                    } else {
                        match serde_json::from_str::<NodeEvent>(data) {
                            Ok(event) => println!("{}", show_event(&event, on)),
                            Err(_) => println!("{data}"),
                        }
                    }
                    Ok(())
                })
                .await?;
            bail!("the node at {} closed the event stream", client.addr())
        }
        Command::Ui { dir } => ui(&dir.get()?).await,
        Command::Export(command) => interop::export(command).await,
        Command::Taxii(command) => interop::taxii(command),
        Command::Import { dir, file } => interop::import(&dir.get()?, &file).await,
        Command::Doctor { dir } => doctor::run(&dir.get()?).await,
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "breakwater", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)?;
            Ok(())
        }
        Command::Demo { orgs, duration } => {
            let duration = duration
                .map(|d| parse_duration(&d).context("--duration"))
                .transpose()?;
            demo::run(orgs, duration).await
        }
    }
}

/// Where `init` keeps the card.
fn card_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("card.json")
}

fn read_card(data_dir: &DataDir) -> Result<MemberCard> {
    if !data_dir.is_initialised() {
        bail!(
            "{} is not initialised: run `breakwater init --data-dir {}` first",
            data_dir.root().display(),
            data_dir.root().display()
        );
    }
    let path = card_path(data_dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut card = MemberCard::from_json(&text).with_context(|| path.display().to_string())?;
    // The addresses follow config.json (`announce`, else `listen`), so an
    // edited `announce` shows in the card given to the convenor.
    if let [node] = card.nodes.as_mut_slice() {
        node.addrs = card_addrs(&data_dir.config()?);
        card.check()
            .with_context(|| format!("the card of {}", data_dir.root().display()))?;
    }
    Ok(card)
}

/// The addresses a node's card carries: `announce`, or else the `listen`
/// addresses other nodes can dial (not 0.0.0.0 or ::).
fn card_addrs(config: &Config) -> Vec<String> {
    let addrs = if config.announce.is_empty() {
        &config.listen
    } else {
        &config.announce
    };
    addrs
        .iter()
        .map(|addr| addr.to_string())
        .filter(|addr| breakwater_protocol::check_addr(addr).is_ok())
        .collect()
}

/// A fresh API token: 32 random bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What `init` and the demo need to create a node.
#[derive(Debug)]
pub struct NewNode<'a> {
    /// Org slug.
    pub org: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Sector.
    pub sector: &'a str,
    /// Listen multiaddrs.
    pub listen: Vec<Multiaddr>,
    /// API address.
    pub api: SocketAddr,
}

/// Creates keys, token, config and card in `data_dir`; returns the card.
pub fn create_node(
    data_dir: &DataDir,
    new: NewNode<'_>,
    edit: impl FnOnce(&mut Config),
) -> Result<MemberCard> {
    if data_dir.is_initialised() {
        bail!(
            "{} is already initialised (keys.json exists); refusing to overwrite it",
            data_dir.root().display()
        );
    }
    let org_id: OrgId = new.org.parse()?;
    check_loopback(&new.api)?;
    let mut config = Config {
        org_id: org_id.to_string(),
        listen: new.listen,
        api: new.api,
        ..Config::default()
    };
    edit(&mut config);
    config.check()?;
    let keys = NodeKeys::generate(&mut rand::rng());
    let addrs = card_addrs(&config);
    let card = MemberCard {
        org_id: org_id.clone(),
        name: new.name.to_string(),
        sector: new.sector.to_string(),
        nodes: vec![NodeEntry {
            node_key: keys.node_public(),
            sealing_key: keys.sealing_public(),
            addrs,
        }],
    };
    card.check()?;
    data_dir.init(&config, &keys, &new_token())?;
    let path = card_path(data_dir);
    std::fs::write(&path, format!("{}\n", card.to_json()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(card)
}

fn init(
    data_dir: &DataDir,
    org: &str,
    name: &str,
    sector: &str,
    listen: &[String],
    announce: &[String],
    api: &str,
) -> Result<()> {
    let api: SocketAddr = api
        .parse()
        .with_context(|| format!("--api {api:?} is not an address like 127.0.0.1:7475"))?;
    let listen = if listen.is_empty() {
        vec!["/ip4/127.0.0.1/tcp/7400".to_string()]
    } else {
        listen.to_vec()
    };
    let listen = listen
        .iter()
        .map(|addr| {
            addr.parse::<Multiaddr>()
                .with_context(|| format!("--listen {addr:?} is not a multiaddr"))
        })
        .collect::<Result<Vec<_>>>()?;
    let announce = announce
        .iter()
        .map(|addr| {
            breakwater_protocol::check_addr(addr).with_context(|| format!("--announce {addr}"))?;
            addr.parse::<Multiaddr>()
                .with_context(|| format!("--announce {addr:?} is not a multiaddr"))
        })
        .collect::<Result<Vec<_>>>()?;
    let card = create_node(
        data_dir,
        NewNode {
            org,
            name,
            sector,
            listen,
            api,
        },
        |config| config.announce = announce,
    )?;
    if card.nodes.iter().all(|node| node.addrs.is_empty()) {
        eprintln!(
            "note: the card carries no address other members can dial (listening on 0.0.0.0 or ::): give one with `announce` in config.json"
        );
    }
    eprintln!(
        "initialised {} for {} (node key {}); share `breakwater card --data-dir {}` with the consortium convenor",
        data_dir.root().display(),
        card.org_id,
        card.nodes
            .first()
            .map(|n| n.node_key.to_string())
            .unwrap_or_default(),
        data_dir.root().display()
    );
    Ok(())
}

/// Reads and parses a roster file; the error names the file.
pub fn read_roster(path: &Path) -> Result<SignedRoster> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read roster {}", path.display()))?;
    SignedRoster::from_json(&text).with_context(|| format!("roster {}", path.display()))
}

/// Checks the whole chain `offered` on top of `current` before anything is
/// applied; returns the versions that are new.
fn check_chain(
    current: Option<SignedRoster>,
    offered: &[(PathBuf, SignedRoster)],
) -> Result<Vec<(PathBuf, SignedRoster)>> {
    let mut current = current;
    let mut new = Vec::new();
    for (path, roster) in offered {
        let context = || format!("roster {}", path.display());
        match &current {
            Some(held) if held.roster == roster.roster => continue,
            Some(held) => {
                if roster.roster.consortium_id() != held.roster.consortium_id() {
                    bail!(
                        "roster {}: roster belongs to consortium {}, not {}",
                        path.display(),
                        roster.roster.consortium_id(),
                        held.roster.consortium_id()
                    );
                }
                if roster.roster.version <= held.roster.version {
                    bail!(
                        "roster {}: version {} is older than the one in force ({})",
                        path.display(),
                        roster.roster.version,
                        held.roster.version
                    );
                }
                SignedRoster::verify_update(&held.roster, roster).with_context(context)?;
            }
            None => roster.verify_genesis().with_context(context)?,
        }
        current = Some(roster.clone());
        new.push((path.clone(), roster.clone()));
    }
    Ok(new)
}

/// The roster in force at this node: asked of the running node, or read
/// from the store when it is not running (`None` before the first join).
pub async fn roster_in_force(data_dir: &DataDir) -> Result<Option<SignedRoster>> {
    let client = Client::for_data_dir(data_dir)?;
    if client.reachable().await {
        Ok(Some(client.get::<SignedRoster>("/v1/roster").await?))
    } else {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || breakwater_node::node::roster_offline(&dir))
            .await?
            .map_err(Into::into)
    }
}

async fn join(data_dir: &DataDir, paths: &[PathBuf]) -> Result<()> {
    let offered = paths
        .iter()
        .map(|path| Ok((path.clone(), read_roster(path)?)))
        .collect::<Result<Vec<_>>>()?;
    let keys = data_dir.keys()?;
    if let Some((path, last)) = offered.last()
        && last.roster.node(&keys.node_public()).is_none()
    {
        bail!(
            "roster {} does not list this node ({}): ask an admin to add its card",
            path.display(),
            keys.node_public()
        );
    }
    let client = Client::for_data_dir(data_dir)?;
    let running = client.reachable().await;
    let current = roster_in_force(data_dir).await?;
    let new = check_chain(current.clone(), &offered)?;
    if new.is_empty() {
        if let Some(current) = current {
            eprintln!(
                "roster version {} of {} is already in force",
                current.roster.version, current.roster.name
            );
        }
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Joined {
        version: u64,
    }
    for (path, roster) in new {
        let version = if running {
            let joined: Joined = client
                .post("/v1/roster", &roster)
                .await
                .with_context(|| format!("roster {}", path.display()))?;
            joined.version
        } else {
            let dir = data_dir.clone();
            let offered = roster.clone();
            tokio::task::spawn_blocking(move || breakwater_node::node::join_offline(&dir, &offered))
                .await?
                .with_context(|| format!("roster {}", path.display()))?
        };
        eprintln!(
            "joined consortium {} ({}) at roster version {version}",
            roster.roster.name,
            roster.roster.consortium_id()
        );
    }
    Ok(())
}

async fn run(data_dir: &DataDir) -> Result<()> {
    let notifier = std::sync::Arc::new(service::Notifier::from_env());
    let config = data_dir.config()?;
    let token = data_dir.token()?;
    check_loopback(&config.api)?;
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("cannot listen on the API address {}", config.api))?;
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on metrics.listen {addr}"))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let node = breakwater_node::spawn(
        data_dir,
        config.clone(),
        TransportKind::Production,
        stopped(stop_rx.clone()),
    )
    .await
    .with_context(|| format!("cannot start the node of {}", data_dir.root().display()))?;
    let taxii = match breakwater_node::taxii::start(
        data_dir,
        config.taxii.clone(),
        node.handle.clone(),
        stopped(stop_rx.clone()),
    )
    .await
    {
        Ok(taxii) => taxii,
        Err(e) => {
            let _ = stop_tx.send(true);
            node.wait().await;
            bail!("{e}");
        }
    };
    if let Some(listener) = metrics_listener {
        let serving = breakwater_node::metrics::serve(
            listener,
            node.handle.clone(),
            stopped(stop_rx.clone()),
        );
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::warn!("metrics: {e}");
            }
        });
    }
    let api = tokio::spawn(breakwater_node::api::serve(
        listener,
        node.handle.clone(),
        token,
        stopped(stop_rx.clone()),
    ));
    let supervisor = if notifier.enabled() {
        // READY only once the API answers and P2P listens.
        let up = service::wait_until_up(data_dir, Duration::from_secs(30)).await;
        let status = up.as_ref().map(service::status_line).unwrap_or_default();
        notifier.notify(&format!("READY=1\n{status}"));
        Some(tokio::spawn(service::supervise(
            notifier.clone(),
            node.handle.clone(),
            service::watchdog_interval(),
            status,
            stop_rx,
        )))
    } else {
        None
    };
    tracing::info!(org = %config.org_id, api = %config.api, peer_id = %node.handle.peer_id(), "node running; Ctrl-C stops it");
    shutdown_signal().await;
    tracing::info!("shutting down");
    notifier.notify("STOPPING=1");
    let _ = stop_tx.send(true);
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("api: {e}"),
        Err(e) => tracing::warn!("api task: {e}"),
    }
    if let Some(taxii) = taxii {
        match taxii.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("taxii: {e}"),
            Err(e) => tracing::warn!("taxii task: {e}"),
        }
    }
    node.wait().await;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Which page of a `list` or `search` to show.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Page {
    /// Show at most this many (newest first; the node's cap is 5000).
    #[arg(long, default_value_t = breakwater_node::api::DEFAULT_PAGE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=breakwater_node::api::MAX_PAGE as u64)
    )]
    limit: usize,
    /// Skip this many (newest first) before the first one shown.
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

impl Page {
    fn query(&self) -> [String; 2] {
        [
            format!("limit={}", self.limit),
            format!("offset={}", self.offset),
        ]
    }

    /// A full page may have more after it: say how to see them.
    fn note_more(&self, shown: usize) {
        if shown == self.limit {
            eprintln!(
                "showing {shown} from offset {}; more may follow: --offset {}",
                self.offset,
                self.offset + shown
            );
        }
    }
}

/// The text of FILE, or of standard input for `-`.
fn read_text_arg(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn print_summaries(items: &[Summary], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
    } else if items.is_empty() {
        eprintln!("nothing to show");
    } else {
        print!("{}", output::summaries(items, colour()));
    }
    Ok(())
}

fn show_detail(detail: &Detail, on: bool) -> String {
    let s = &detail.summary;
    let mut table = Table::default();
    let mut field = |name: &str, value: String, code: Option<&'static str>| {
        table.row(vec![(format!("{name}:"), Some("1")), (value, code)]);
    };
    field("id", s.id.to_hex(), None);
    field("kind", s.kind.clone(), None);
    field("tlp", s.tlp.to_string(), Some(output::tlp_colour(s.tlp)));
    field("author", format!("{} (seq {})", s.author_org, s.seq), None);
    field("created", time(s.created_at), None);
    field("expires", time(s.expires_at), None);
    if let Some(target) = s.target {
        field("target", target.to_hex(), None);
    }
    if !detail.recipients.is_empty() {
        field("recipients", detail.recipients.join(", "), None);
    }
    match detail.epoch {
        Some(epoch) => field(
            "sealed",
            format!("under the GREEN key of roster version {epoch}"),
            None,
        ),
        None if detail.seal == "nodes" => field("sealed", "to each recipient node".into(), None),
        None => {}
    }
    field("readable", s.readable.to_string(), None);
    if s.retracted {
        let by = detail
            .retracted_by
            .map(|d| format!(" by {}", d.to_hex()))
            .unwrap_or_default();
        field("retracted", format!("yes{by}"), Some("1;31"));
    }
    let mut summary = String::new();
    match &detail.body {
        Some(breakwater_protocol::Body::Bulletin(bulletin)) => {
            field("title", bulletin.title.clone(), Some("1"));
            field(
                "severity",
                bulletin.severity.to_string(),
                Some(output::severity_colour(bulletin.severity)),
            );
            if !bulletin.tags.is_empty() {
                field("tags", bulletin.tags.join(", "), None);
            }
            for indicator in &bulletin.indicators {
                field("indicator", indicator.to_string(), None);
            }
            if bulletin.stix.is_some() {
                field("stix", "attached (see --json)".into(), None);
            }
            if !bulletin.summary.is_empty() {
                summary = format!("\n{}\n", output::clean(&bulletin.summary, true));
            }
        }
        Some(other) => {
            summary = format!(
                "{}\n",
                output::clean(
                    &serde_json::to_string_pretty(other).unwrap_or_default(),
                    true
                )
            )
        }
        None => summary = paint("(sealed: this organisation is not a recipient)\n", "2", on),
    }
    let mut out = table.render(on);
    out.push_str(&summary);
    out
}

fn show_status(status: &Status) -> String {
    let mut table = Table::default();
    let mut banner = String::new();
    if let Some(fork) = &status.roster_fork {
        banner = format!(
            "{}\n  version {}: ours {}, theirs {} (detected {}{})\n  no roster update is applied until the admins pick a branch and every\n  forked node runs `breakwater consortium resolve-fork --keep FILE`\n",
            paint(
                "ROSTER FORK: two valid rosters for one version",
                "1;31",
                colour()
            ),
            fork.version,
            fork.ours,
            fork.theirs,
            time(fork.detected_at),
            fork.peer
                .as_deref()
                .map(|p| format!(", from {p}"))
                .unwrap_or_default()
        );
    }
    let mut field =
        |name: &str, value: String| table.row(vec![(format!("{name}:"), Some("1")), (value, None)]);
    field("org", status.org_id.clone());
    field("peer id", status.peer_id.clone());
    field("node key", status.node_key.to_string());
    field("consortium", status.consortium.to_hex());
    field(
        "roster version",
        match &status.roster_fork {
            Some(fork) => format!(
                "{} (FORKED at version {}: updates stopped)",
                status.roster_version, fork.version
            ),
            None => status.roster_version.to_string(),
        },
    );
    field(
        "green key",
        match (&status.green_key_problem, status.green_epoch) {
            (Some(problem), _) => format!("ALARM: {problem}; GREEN is sealed per node"),
            (None, Some(epoch)) => format!("epoch {epoch}"),
            (None, None) => "none (GREEN is sealed per node)".into(),
        },
    );
    if status.pending_green > 0 {
        field(
            "pending green",
            format!("{} waiting for a newer roster", status.pending_green),
        );
    }
    field("listening", status.listen.join(", "));
    field("peers", status.peers.len().to_string());
    field(
        "envelopes",
        format!("{} ({} readable)", status.envelopes, status.readable),
    );
    field("evidence", status.evidence.to_string());
    for e in &status.equivocations {
        field(
            "equivocation",
            format!(
                "node {} signed two envelopes for seq {}; its feed is held there",
                e.author, e.seq
            ),
        );
    }
    field("disk", format!("{} bytes", status.disk_bytes));
    let t = &status.traffic;
    field(
        "received",
        format!(
            "{} new from peers, {} by gossip and {} by sync ({} duplicates)",
            t.stored_from_peers,
            t.gossip_received,
            t.sync_received,
            t.duplicates()
        ),
    );
    for hook in &status.webhooks {
        field(
            "webhook",
            format!(
                "{} ({}): backlog {}, last success {}{}",
                hook.url,
                hook.format.as_str(),
                hook.backlog,
                hook.last_success.map_or_else(|| "never".to_owned(), time),
                hook.last_error
                    .as_deref()
                    .map(|e| format!(", failing: {e}"))
                    .unwrap_or_default()
            ),
        );
    }
    banner + &table.render(colour())
}

fn show_peers(peers: &[PeerInfo], on: bool) -> String {
    if peers.is_empty() {
        return "no peers connected\n".to_string();
    }
    let mut table = Table::new(&["ORG", "PEER ID", "ADDRESSES"]);
    for peer in peers {
        table.row(vec![
            (peer.org_id.clone().unwrap_or_else(|| "?".into()), None),
            (peer.peer_id.clone(), None),
            (peer.addrs.join(", "), None),
        ]);
    }
    table.render(on)
}

fn show_event(event: &NodeEvent, on: bool) -> String {
    let now = time(now_ms());
    match event {
        NodeEvent::Stored(s) => {
            let what = match &s.title {
                Some(title) => output::clean(title, false),
                None if !s.readable => "(sealed, not for this org)".into(),
                None => format!("({})", s.kind),
            };
            format!(
                "{now}  {}  {} {}  {}  {}",
                paint("stored", "1", on),
                short_id(&s.id.to_hex()),
                paint(s.tlp.as_str(), output::tlp_colour(s.tlp), on),
                output::clean(&s.author_org, false),
                what
            )
        }
        NodeEvent::Retracted { target, by } => {
            format!(
                "{now}  {}  {} by {}",
                paint("retracted", "1;31", on),
                short_id(&target.to_hex()),
                short_id(&by.to_hex())
            )
        }
        NodeEvent::Equivocation { author, seq } => {
            format!(
                "{now}  {}  author {author} signed two envelopes for seq {seq}",
                paint("equivocation", "1;31", on)
            )
        }
        NodeEvent::RosterApplied { version } => format!("{now}  roster version {version} in force"),
        NodeEvent::GreenKeyProblem { version, problem } => format!(
            "{now}  {}  roster version {version}: {}",
            paint("green key alarm", "1;31", on),
            output::clean(problem, false)
        ),
        NodeEvent::RosterFork {
            version,
            ours,
            theirs,
        } => format!(
            "{now}  {}  roster version {version}: ours {ours}, theirs {theirs}; roster updates stopped until `breakwater consortium resolve-fork`",
            paint("ROSTER FORK", "1;31", on)
        ),
        NodeEvent::PeerConnected { peer } => format!("{now}  peer connected {peer}"),
        NodeEvent::PeerDisconnected { peer } => format!("{now}  peer disconnected {peer}"),
    }
}

/// `breakwater ui`: asks the running node for a one-time login code.
async fn ui(data_dir: &DataDir) -> Result<()> {
    let client = Client::for_data_dir(data_dir)?;
    let code: breakwater_node::ui::LoginCode =
        client.post("/v1/ui/code", &serde_json::json!({})).await?;
    let port = client.addr().port();
    println!("dashboard: http://localhost:{port}/ui/");
    println!("one-time login code: {}", code.code);
    println!(
        "(valid {} s, spent by its first use; a wrong login voids it)",
        code.expires_in_s
    );
    println!(
        "from another machine: ssh -L {port}:localhost:{port} THIS-HOST, then open the address above"
    );
    Ok(())
}
