//! The interop commands, thin wrappers around the protocol crate's pure
//! conversions: `export stix` (STIX 2.1 bundle), `export misp-feed` (MISP
//! feed directories), `export envelopes` (air-gap bundle), `import` (an
//! air-gap bundle into this node) and `publish --from-stix`. Envelopes and
//! their opened bodies come from the running node (`GET /v1/export`) or,
//! when it is stopped, from its store; every plaintext export applies the
//! one egress policy (`breakwater_protocol::egress`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use breakwater_node::api::PublishBody;
use breakwater_node::export::{ExportFilter, Exported, ImportReport, ImportRequest};
use breakwater_node::{DataDir, Published};
use breakwater_protocol::misp::{self, Feed};
use breakwater_protocol::{
    Body, Channel, Digest, EgressCap, Envelope, Kind, Severity, Tlp, airgap, stix,
};
use clap::Subcommand;

use crate::Dir;
use crate::client::{Client, encode_query};
use crate::output::{now_ms, parse_duration};

/// `breakwater export …`.
#[derive(Debug, Subcommand)]
pub enum Export {
    /// Writes one STIX 2.1 bundle of the bulletins and sightings this node
    /// can read (up to AMBER+STRICT unless --max-tlp says otherwise).
    Stix {
        #[command(flatten)]
        dir: Dir,
        /// Envelope ids (or unique prefixes); every readable one if none.
        ids: Vec<String>,
        /// Only those created within this duration, e.g. 24h.
        #[arg(long)]
        since: Option<String>,
        /// The strictest TLP to let out: clear, green, amber, amber+strict
        /// (default), or red with --allow-red.
        #[arg(long)]
        max_tlp: Option<String>,
        /// Let TLP:RED out too (needs --max-tlp red).
        #[arg(long)]
        allow_red: bool,
        /// Write the bundle here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Writes MISP feed directories (clear/, green/, amber/, amber+strict/)
    /// under DIR; a re-run updates them in place.
    MispFeed {
        #[command(flatten)]
        dir: Dir,
        /// The directory holding the feed directories.
        #[arg(long)]
        out: PathBuf,
        /// Only those created within this duration, e.g. 24h.
        #[arg(long)]
        since: Option<String>,
        /// The strictest TLP to let out (default amber+strict; red needs
        /// --allow-red).
        #[arg(long)]
        max_tlp: Option<String>,
        /// Write a red/ feed too (needs --max-tlp red).
        #[arg(long)]
        allow_red: bool,
    },
    /// Writes an air-gap bundle: the ciphertext envelopes and the rosters
    /// they need, for `breakwater import` on a node with no network path.
    Envelopes {
        #[command(flatten)]
        dir: Dir,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Only those created within this duration, e.g. 24h.
        #[arg(long)]
        since: Option<String>,
        /// Only envelopes authored by this organisation.
        #[arg(long)]
        author: Option<String>,
    },
}

/// Runs an `export` command.
pub async fn export(command: Export) -> Result<()> {
    match command {
        Export::Stix {
            dir,
            ids,
            since,
            max_tlp,
            allow_red,
            out,
        } => {
            let cap = cap_of(Channel::StixExport, max_tlp.as_deref(), allow_red)?;
            let filter = ExportFilter {
                since: since_ms(since.as_deref())?,
                ids: ids.join(","),
                author: None,
                all: false,
            };
            for id in &ids {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("envelope id {id:?} is not hex");
                }
            }
            let exported = fetch(&dir.get()?, filter).await?;
            export_stix(&exported, cap, &ids, out.as_deref())
        }
        Export::MispFeed {
            dir,
            out,
            since,
            max_tlp,
            allow_red,
        } => {
            let cap = cap_of(Channel::MispFeed, max_tlp.as_deref(), allow_red)?;
            let filter = ExportFilter {
                since: since_ms(since.as_deref())?,
                all: true,
                ..ExportFilter::default()
            };
            let exported = fetch(&dir.get()?, filter).await?;
            export_misp(&exported, cap, &out)
        }
        Export::Envelopes {
            dir,
            out,
            since,
            author,
        } => {
            if let Some(org) = &author {
                org.parse::<breakwater_protocol::OrgId>()
                    .map_err(|e| anyhow!("--author: {e}"))?;
            }
            let filter = ExportFilter {
                since: since_ms(since.as_deref())?,
                author,
                all: true,
                ..ExportFilter::default()
            };
            let exported = fetch(&dir.get()?, filter).await?;
            export_envelopes(&exported, &out)
        }
    }
}

/// The channel's cap, or the one `--max-tlp` / `--allow-red` ask for.
fn cap_of(channel: Channel, max_tlp: Option<&str>, allow_red: bool) -> Result<EgressCap> {
    match max_tlp {
        None if allow_red => bail!("--allow-red needs --max-tlp red"),
        None => Ok(channel.default_cap()),
        Some(text) => {
            let tlp: Tlp = text.parse().map_err(|e| anyhow!("--max-tlp: {e}"))?;
            EgressCap::new(tlp, allow_red).map_err(|e| anyhow!("--max-tlp: {e}"))
        }
    }
}

/// `--since`: a duration back from now (`24h`, `7d`) or an RFC 3339 UTC
/// timestamp (`2026-11-30T08:00:00Z`), as unix ms.
fn since_ms(since: Option<&str>) -> Result<Option<u64>> {
    since
        .map(|text| {
            if let Some(us) = stix::parse_timestamp(text.trim()) {
                return Ok(us / 1000);
            }
            let window = parse_duration(text).map_err(|_| {
                anyhow!(
                    "--since {text:?} is neither a duration (e.g. 24h, 7d) nor a UTC timestamp (e.g. 2026-11-30T08:00:00Z)"
                )
            })?;
            Ok::<u64, anyhow::Error>(now_ms().saturating_sub(window.as_millis() as u64))
        })
        .transpose()
}

/// `breakwater taxii …`.
#[derive(Debug, Subcommand)]
pub enum Taxii {
    /// Turns the TAXII 2.1 server on: writes a default "taxii" block to
    /// config.json (collections shared up to amber+strict, clear, and the
    /// write collection inbox) and creates DATA_DIR/taxii-token (0600), a
    /// credential separate from the API token. A running node serves it
    /// from its next start.
    Enable {
        #[command(flatten)]
        dir: Dir,
        /// The TAXII listener.
        #[arg(long, default_value = breakwater_node::taxii::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// The URL consumers reach it at, e.g. behind a TLS reverse proxy
        /// (default: http://LISTEN/).
        #[arg(long)]
        public_url: Option<String>,
        /// Replace an existing "taxii" block with the default one.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `breakwater taxii` command.
pub fn taxii(command: Taxii) -> Result<()> {
    let Taxii::Enable {
        dir,
        listen,
        public_url,
        force,
    } = command;
    let data_dir = dir.get()?;
    let mut config = data_dir.config()?;
    if config.taxii.is_some() && !force {
        bail!(
            "TAXII is already enabled in {} (edit its \"taxii\" block, or pass --force to replace it with the default)",
            data_dir.config_path().display()
        );
    }
    let block = breakwater_node::taxii::TaxiiConfig::default_at(listen, public_url);
    block.check().map_err(|e| anyhow!(e))?;
    let token_path = breakwater_node::taxii::token_path(&data_dir);
    if !token_path.exists() {
        let token = hex::encode(rand::random::<[u8; 32]>());
        breakwater_node::config::write_private(&token_path, token.as_bytes())?;
    }
    breakwater_node::taxii::read_token(&token_path).map_err(|e| anyhow!(e))?;
    let root = block.api_root_url();
    let discovery = format!("{}/taxii2/", block.public_url.trim_end_matches('/'));
    config.taxii = Some(block);
    data_dir.save_config(&config)?;
    println!("TAXII 2.1 enabled on {listen}: discovery {discovery}, API root {root}");
    println!(
        "collections: shared (up to amber+strict), clear, inbox (write); credential: HTTP Basic, any user, password from {}",
        token_path.display()
    );
    println!("(re)start the node to serve it");
    Ok(())
}

/// Stored envelopes with their opened bodies: from the running node, or
/// from the store when it is stopped.
async fn fetch(data_dir: &DataDir, filter: ExportFilter) -> Result<Exported> {
    let client = Client::for_data_dir(data_dir)?;
    if client.reachable().await {
        let mut query = vec![format!("all={}", filter.all)];
        if let Some(since) = filter.since {
            query.push(format!("since={since}"));
        }
        if !filter.ids.is_empty() {
            query.push(format!("ids={}", encode_query(&filter.ids)));
        }
        if let Some(author) = &filter.author {
            query.push(format!("author={}", encode_query(author)));
        }
        client.get(&format!("/v1/export?{}", query.join("&"))).await
    } else {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || breakwater_node::export::export_offline(&dir, &filter))
            .await?
            .map_err(Into::into)
    }
}

/// One exported envelope, decoded.
struct Item {
    id: Digest,
    bytes: Vec<u8>,
    envelope: Envelope,
    body: Option<Body>,
    retracted_by: Option<Digest>,
}

fn decode_items(exported: &Exported) -> Result<Vec<Item>> {
    exported
        .items
        .iter()
        .map(|item| {
            let bytes = hex::decode(&item.envelope)
                .with_context(|| format!("envelope {} is not hex", item.id.to_hex()))?;
            let envelope = Envelope::decode(&bytes)
                .with_context(|| format!("envelope {}", item.id.to_hex()))?;
            Ok(Item {
                id: item.id,
                bytes,
                envelope,
                body: item.body.clone(),
                retracted_by: item.retracted_by,
            })
        })
        .collect()
}

fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn export_stix(
    exported: &Exported,
    cap: EgressCap,
    ids: &[String],
    out: Option<&Path>,
) -> Result<()> {
    let items = decode_items(exported)?;
    for prefix in ids {
        let prefix = prefix.to_ascii_lowercase();
        if !items.iter().any(|i| i.id.to_hex().starts_with(&prefix)) {
            bail!("no envelope this node can read has an id starting with {prefix}");
        }
    }
    let by_id: HashMap<Digest, &Item> = items.iter().map(|i| (i.id, i)).collect();
    let roster = &exported.roster.roster;
    let mut bundle = stix::Bundle::capped(cap);
    let mut envelopes = 0;
    for item in &items {
        let Some(body) = &item.body else { continue };
        let target = match item.envelope.header.kind {
            Kind::Retraction { target } => match by_id.get(&target) {
                Some(Item {
                    envelope,
                    body: Some(body),
                    ..
                }) => Some((envelope, body)),
                _ => {
                    eprintln!(
                        "skipped retraction {}: its target is not readable here",
                        item.id.to_hex()
                    );
                    continue;
                }
            },
            _ => None,
        };
        match bundle.add_envelope(&item.envelope, body, target, roster) {
            Ok(()) => envelopes += 1,
            Err(e) => eprintln!("skipped {}: {e}", item.id.to_hex()),
        }
    }
    let withheld = bundle.withheld_envelopes();
    write_out(out, &bundle.to_json())?;
    eprintln!(
        "exported {} of {envelopes} envelope(s) as {} STIX object(s), {cap}; {withheld} envelope(s) and {} object(s) withheld above the cap",
        envelopes - withheld,
        bundle.len(),
        bundle.withheld_objects()
    );
    Ok(())
}

fn export_misp(exported: &Exported, cap: EgressCap, out: &Path) -> Result<()> {
    let items = decode_items(exported)?;
    let by_id: HashMap<Digest, &Item> = items.iter().map(|i| (i.id, i)).collect();
    let roster = &exported.roster.roster;
    let mut feeds: BTreeMap<Tlp, (PathBuf, Feed)> = BTreeMap::new();
    for (tlp, name) in misp::feed_dirs(cap) {
        let path = out.join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let read = |file: &str| std::fs::read_to_string(path.join(file)).ok();
        let (manifest, hashes) = (read("manifest.json"), read("hashes.csv"));
        let feed = Feed::load(tlp, manifest.as_deref(), hashes.as_deref())
            .with_context(|| format!("feed {}", path.display()))?;
        feeds.insert(tlp, (path, feed));
    }
    let (mut written, mut withheld) = (0, 0);
    for item in &items {
        let Some(body) = &item.body else { continue };
        if !matches!(item.envelope.header.kind, Kind::Bulletin) {
            continue;
        }
        if !cap.allows(item.envelope.header.tlp) {
            withheld += 1;
            continue;
        }
        let retraction = item
            .retracted_by
            .and_then(|r| by_id.get(&r))
            .map(|r| &r.envelope);
        let event = match misp::event_of(&item.envelope, body, retraction, roster) {
            Ok(event) => event,
            Err(e) => {
                eprintln!("skipped {}: {e}", item.id.to_hex());
                continue;
            }
        };
        let Some((path, feed)) = feeds.get_mut(&event.tlp) else {
            withheld += 1;
            continue;
        };
        let file = path.join(event.file_name());
        std::fs::write(&file, event.to_json())
            .with_context(|| format!("cannot write {}", file.display()))?;
        feed.add(&event)
            .with_context(|| format!("feed {}", path.display()))?;
        written += 1;
    }
    for (path, feed) in feeds.values() {
        for (name, text) in [
            ("manifest.json", feed.manifest_json()),
            ("hashes.csv", feed.hashes_csv()),
        ] {
            let file = path.join(name);
            std::fs::write(&file, text)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    eprintln!(
        "wrote {written} event(s) into {} feed directories under {}, {cap}; {withheld} bulletin(s) withheld above the cap",
        feeds.len(),
        out.display()
    );
    Ok(())
}

fn export_envelopes(exported: &Exported, out: &Path) -> Result<()> {
    let items = decode_items(exported)?;
    let mut writer = airgap::Writer::new();
    for roster in &exported.rosters {
        writer
            .add_roster(roster)
            .map_err(|e| anyhow!("roster version {}: {e}", roster.roster.version))?;
    }
    for item in &items {
        writer
            .add_envelope(&item.bytes)
            .map_err(|e| anyhow!("envelope {}: {e}", item.id.to_hex()))?;
    }
    std::fs::write(out, writer.to_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let (rosters, envelopes) = writer.counts();
    eprintln!(
        "wrote {envelopes} envelope(s) and {rosters} roster(s) to {}",
        out.display()
    );
    Ok(())
}

/// `breakwater import FILE`: an air-gap bundle into this node, every
/// envelope validated as sync does; prints the tally.
pub async fn import(data_dir: &DataDir, path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    airgap::check_file_size(len).with_context(|| path.display().to_string())?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let decoded = airgap::decode(&bytes).with_context(|| path.display().to_string())?;
    let rosters: Vec<(usize, String)> = decoded
        .rosters()
        .into_iter()
        .map(|(index, roster)| (index, hex::encode(roster.encode())))
        .collect();
    let envelopes: Vec<(usize, String)> = decoded
        .envelopes()
        .map(|(index, _, bytes)| (index, hex::encode(bytes)))
        .collect();
    let client = Client::for_data_dir(data_dir)?;
    let running = client.reachable().await;
    // The API takes bodies of at most 4 MiB: rosters first, then envelopes
    // in file order, in requests of at most IMPORT_CHUNK hex bytes.
    let mut requests = vec![ImportRequest {
        rosters,
        envelopes: Vec::new(),
    }];
    let mut size = 0;
    for (index, text) in envelopes {
        if size + text.len() > IMPORT_CHUNK && size > 0 {
            requests.push(ImportRequest::default());
            size = 0;
        }
        size += text.len();
        if let Some(last) = requests.last_mut() {
            last.envelopes.push((index, text));
        }
    }
    let mut tally = airgap::ImportTally::of(&decoded);
    for request in requests {
        let report: ImportReport = if running {
            client.post("/v1/import", &request).await?
        } else {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || {
                breakwater_node::export::import_offline(&dir, &request)
            })
            .await??
        };
        for (index, outcome) in report.outcomes {
            tally.record(index, outcome.into());
        }
    }
    println!("{tally}");
    Ok(())
}

/// Most hex bytes of envelopes in one `POST /v1/import`.
const IMPORT_CHUNK: usize = 3 * 1024 * 1024;

/// `breakwater publish --from-stix FILE`.
#[derive(Debug)]
pub struct FromStix<'a> {
    pub path: &'a Path,
    pub tlp: Option<String>,
    pub to: Vec<String>,
    pub severity: Option<String>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub ttl_ms: Option<u64>,
}

/// Publishes a STIX bundle's indicators and vulnerabilities as a bulletin;
/// what cannot be mapped travels in its attached bundle.
pub async fn publish_from_stix(data_dir: &DataDir, from: FromStix<'_>) -> Result<()> {
    let path = from.path;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read STIX file {}", path.display()))?;
    let requested = from
        .tlp
        .as_deref()
        .map(|t| t.parse::<Tlp>().map_err(|e| anyhow!("--tlp: {e}")))
        .transpose()?;
    let fallback_severity = from
        .severity
        .as_deref()
        .map(|s| {
            s.parse::<Severity>()
                .map_err(|e| anyhow!("--severity: {e}"))
        })
        .transpose()?
        .unwrap_or(Severity::Medium);
    let imported =
        stix::import(&text, requested).with_context(|| format!("STIX file {}", path.display()))?;
    let fallback_title = from
        .title
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", file_name(path)));
    let mut bulletin = imported
        .to_bulletin(&fallback_title, fallback_severity)
        .with_context(|| format!("STIX file {}", path.display()))?;
    if let Some(title) = from.title {
        bulletin.title = title;
    }
    for tag in from.tags {
        if !bulletin.tags.contains(&tag) {
            bulletin.tags.push(tag);
        }
    }
    let body = PublishBody {
        tlp: imported.tlp.to_string(),
        to: from.to,
        severity: from
            .severity
            .unwrap_or_else(|| bulletin.severity.to_string()),
        title: bulletin.title,
        summary: bulletin.summary,
        indicators: bulletin.indicators.iter().map(|i| i.to_string()).collect(),
        tags: bulletin.tags,
        sectors: bulletin.sectors,
        references: bulletin.references,
        stix: bulletin.stix,
        ttl_ms: from.ttl_ms,
    };
    let request = serde_json::to_value(&body)?;
    body.into_request().map_err(anyhow::Error::msg)?;
    let published: Published = Client::for_data_dir(data_dir)?
        .post("/v1/publish", &request)
        .await?;
    println!("{}", published.id);
    eprintln!(
        "published at tlp {} (marked {}): mapped {} object(s) to {} indicator(s), kept {} object(s) in the attached bundle",
        imported.tlp,
        imported.marked,
        imported.mapped,
        imported.indicators.len(),
        imported.kept_count
    );
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "a STIX bundle".into())
}
