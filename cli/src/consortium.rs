//! `breakwater consortium …`: building and signing roster files offline with
//! this node's keys (genesis, add a member, revoke a member, rekey, co-sign).
//! Every version this writes carries a fresh GREEN epoch key drawn from the
//! OS, wrapped to every active node; `sign` opens this node's wrap and
//! recomputes every other wrap before it signs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use breakwater_node::DataDir;
use breakwater_protocol::{
    EpochKeyError, MemberCard, OrgId, Roster, RosterError, SignedRoster, audit_package,
    open_epoch_key,
};
use clap::Subcommand;
use rand::Rng;
use zeroize::Zeroizing;

use crate::{Dir, read_roster};

#[derive(Debug, Subcommand)]
pub enum Consortium {
    /// Creates the genesis roster from member cards, signed by this node.
    Create {
        #[command(flatten)]
        dir: Dir,
        /// Consortium name.
        #[arg(long)]
        name: String,
        /// A member card file (repeatable); this node's own card is added if missing.
        #[arg(long, required = true)]
        card: Vec<PathBuf>,
        /// An admin organisation (repeatable; default: this node's).
        #[arg(long)]
        admin: Vec<String>,
        /// Admin signatures an update needs (default: a strict majority of
        /// the admins, so two conflicting updates cannot both be signed
        /// without some admin signing both).
        #[arg(long)]
        threshold: Option<u32>,
        /// Where to write the roster.
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the next roster version with a new member, signed by this node.
    Add {
        #[command(flatten)]
        dir: Dir,
        /// The current roster.
        #[arg(long)]
        roster: PathBuf,
        /// The new member's card.
        #[arg(long)]
        card: PathBuf,
        /// Where to write the next version.
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the next roster version with a member revoked, signed by this node.
    Revoke {
        #[command(flatten)]
        dir: Dir,
        /// The current roster.
        #[arg(long)]
        roster: PathBuf,
        /// The organisation to revoke.
        #[arg(long)]
        org: String,
        /// Where to write the next version.
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the next roster version with the same members and a fresh
    /// GREEN key, signed by this node (incident response, or a periodic
    /// rotation). The first rekey of a consortium made before protocol v2 is
    /// its flag day: every node must run v2 first.
    Rekey {
        #[command(flatten)]
        dir: Dir,
        /// The current roster.
        #[arg(long)]
        roster: PathBuf,
        /// Where to write the next version.
        #[arg(long)]
        out: PathBuf,
    },
    /// Resolves a roster fork on this (stopped) node: keeps the branch
    /// whose version at the fork is in FILE (signed by a threshold of the
    /// admins of the version before it), re-bases this node's roster chain
    /// onto it and keeps every envelope. Run it on every node that reports
    /// the fork, then start the node: later versions arrive by sync.
    ResolveFork {
        #[command(flatten)]
        dir: Dir,
        /// The signed roster to keep: the version at the fork, on the
        /// branch the admins chose.
        #[arg(long)]
        keep: PathBuf,
    },
    /// Adds this node's signature to a roster version, after checking that
    /// it follows the roster in force and that its GREEN key package gives
    /// every node the same key.
    Sign {
        #[command(flatten)]
        dir: Dir,
        /// The roster to sign.
        #[arg(long)]
        roster: PathBuf,
        /// Where to write it (may be the same file).
        #[arg(long)]
        out: PathBuf,
    },
}

/// A strict majority of `admins`: floor(n/2) + 1.
pub fn majority(admins: usize) -> u32 {
    u32::try_from(admins / 2 + 1).unwrap_or(u32::MAX)
}

/// A fresh GREEN epoch key from the OS.
pub fn fresh_green_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    key
}

/// `roster` with a fresh GREEN key package.
fn keyed(roster: Roster) -> Result<Roster> {
    Ok(roster.with_green_key(&fresh_green_key())?)
}

/// Refuses to sign an offered version whose GREEN key package does not give
/// this node, and every other active node, the same committed key. Returns
/// a one-line note of what was checked.
fn audit(data_dir: &DataDir, offered: &Roster) -> Result<String> {
    if offered.green.is_none() {
        return Ok("no GREEN key package (GREEN stays sealed per node)".into());
    }
    offered.check()?;
    let keys = data_dir.keys()?;
    let key = match open_epoch_key(offered, &keys) {
        Ok(key) => key,
        Err(EpochKeyError::NotARecipient(version)) => bail!(
            "roster version {version} wraps no GREEN key to this node, so its package cannot be checked here; refusing to sign"
        ),
        Err(e) => bail!("refusing to sign: {e}"),
    };
    audit_package(offered, &key).map_err(|e| anyhow::anyhow!("refusing to sign: {e}"))?;
    Ok(format!(
        "GREEN key package checked: the same key for all {} active nodes",
        offered.green.as_ref().map_or(0, |g| g.wraps.len())
    ))
}

fn read_card_file(path: &Path) -> Result<MemberCard> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read card {}", path.display()))?;
    MemberCard::from_json(&text).with_context(|| format!("card {}", path.display()))
}

fn write_roster(path: &Path, roster: &SignedRoster) -> Result<()> {
    breakwater_node::config::write_private(path, format!("{}\n", roster.to_json()).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Roster files are public; write_private only gives the atomic write.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    Ok(())
}

/// Signs `roster` with this node's keys if its org is an admin of
/// `authority`, and reports how many signatures are still missing.
fn sign(data_dir: &DataDir, authority: &Roster, mut roster: SignedRoster) -> Result<SignedRoster> {
    let config = data_dir.config()?;
    let keys = data_dir.keys()?;
    let org: OrgId = config.org_id.parse()?;
    if !authority.is_admin(&org) {
        bail!(
            "this node's org {org} is not an admin of roster version {}, so its signature would not count",
            authority.version
        );
    }
    roster.sign(&keys);
    Ok(roster)
}

fn report(roster: &SignedRoster, authority: &Roster, out: &Path) {
    let signers = roster
        .signatures
        .iter()
        .filter_map(|s| authority.org_of(&s.signer))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let missing = (authority.threshold as usize).saturating_sub(signers);
    let more = if missing == 0 {
        "fully signed".to_string()
    } else {
        format!("needs {missing} more admin signature(s): `breakwater consortium sign`")
    };
    eprintln!(
        "wrote roster version {} of {} ({} members) to {}; {more}",
        roster.roster.version,
        roster.roster.name,
        roster.roster.members.len(),
        out.display()
    );
}

/// One line per change from `current` to `next`: members, node keys,
/// admins, threshold and the GREEN key.
fn changes(current: &Roster, next: &Roster) -> Vec<String> {
    let mut lines = Vec::new();
    for member in &next.members {
        let org = &member.card.org_id;
        match current.member(org) {
            None => lines.push(format!(
                "+ member {org} ({} node(s))",
                member.card.nodes.len()
            )),
            Some(old) if !old.revoked && member.revoked => {
                lines.push(format!("- member {org} revoked"))
            }
            Some(old) if old.card != member.card => {
                lines.push(format!("~ member {org}: card changed (keys or addresses)"))
            }
            Some(_) => {}
        }
    }
    for old in &current.members {
        if next.member(&old.card.org_id).is_none() {
            lines.push(format!("- member {} removed", old.card.org_id));
        }
    }
    if current.admins != next.admins {
        let names = |r: &Roster| {
            r.admins
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        lines.push(format!("~ admins: {} -> {}", names(current), names(next)));
    }
    if current.threshold != next.threshold {
        lines.push(format!(
            "~ threshold: {} -> {}",
            current.threshold, next.threshold
        ));
    }
    match (&current.green, &next.green) {
        (_, None) => lines.push("~ GREEN key: none in this version".into()),
        (None, Some(_)) => lines.push(
            "~ GREEN key: first keyed version (flag day: every node must run protocol v2)".into(),
        ),
        (Some(_), Some(_)) => lines.push("~ GREEN key: fresh key".into()),
    }
    lines
}

pub async fn run(command: Consortium) -> Result<()> {
    match command {
        Consortium::Create {
            dir,
            name,
            card,
            admin,
            threshold,
            out,
        } => {
            let data_dir = dir.get()?;
            let config = data_dir.config()?;
            let mut cards = card
                .iter()
                .map(|path| read_card_file(path))
                .collect::<Result<Vec<_>>>()?;
            if !cards.iter().any(|c| c.org_id.as_str() == config.org_id) {
                cards.push(crate::read_card(&data_dir)?);
            }
            let admins = if admin.is_empty() {
                vec![config.org_id.clone()]
            } else {
                admin
            };
            let admins = admins
                .iter()
                .map(|a| a.parse::<OrgId>())
                .collect::<Result<Vec<_>, _>>()?;
            for admin in &admins {
                if !cards.iter().any(|c| &c.org_id == admin) {
                    bail!("admin {admin} has no card among the members");
                }
            }
            let majority = majority(admins.len());
            let threshold = threshold.unwrap_or(majority);
            let n_admins = admins.len();
            let roster = keyed(Roster::genesis(&name, cards, admins, threshold)?)?;
            if threshold < majority {
                eprintln!(
                    "warning: threshold {threshold} of {n_admins} admins is not a majority: two groups of admins can each sign a different next version (a roster fork)"
                );
            }
            let signed = if roster.is_admin(&config.org_id.parse()?) {
                sign(&data_dir, &roster, SignedRoster::unsigned(roster.clone()))?
            } else {
                SignedRoster::unsigned(roster.clone())
            };
            write_roster(&out, &signed)?;
            report(&signed, &roster, &out);
            eprintln!("consortium id {}", roster.consortium_id());
            Ok(())
        }
        Consortium::Add {
            dir,
            roster,
            card,
            out,
        } => {
            let current = read_roster(&roster)?;
            let card = read_card_file(&card)?;
            let next = keyed(current.roster.with_member(card)?)?;
            let signed = sign(&dir.get()?, &current.roster, SignedRoster::unsigned(next))?;
            write_roster(&out, &signed)?;
            report(&signed, &current.roster, &out);
            Ok(())
        }
        Consortium::Revoke {
            dir,
            roster,
            org,
            out,
        } => {
            let current = read_roster(&roster)?;
            let org: OrgId = org.parse()?;
            let next = keyed(current.roster.with_revoked(&org)?)?;
            let signed = sign(&dir.get()?, &current.roster, SignedRoster::unsigned(next))?;
            write_roster(&out, &signed)?;
            report(&signed, &current.roster, &out);
            Ok(())
        }
        Consortium::Rekey { dir, roster, out } => {
            let current = read_roster(&roster)?;
            let next = keyed(current.roster.rekeyed())?;
            let signed = sign(&dir.get()?, &current.roster, SignedRoster::unsigned(next))?;
            write_roster(&out, &signed)?;
            report(&signed, &current.roster, &out);
            Ok(())
        }
        Consortium::ResolveFork { dir, keep } => {
            let data_dir = dir.get()?;
            let offered = read_roster(&keep)?;
            if crate::client::Client::for_data_dir(&data_dir)?
                .reachable()
                .await
            {
                bail!(
                    "the node of {} is running: stop it first, resolve-fork re-bases its store offline",
                    data_dir.root().display()
                );
            }
            let dir = data_dir.clone();
            let keep_roster = offered.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                breakwater_node::node::resolve_fork_offline(&dir, &keep_roster)
            })
            .await?
            .with_context(|| format!("roster {}", keep.display()))?;
            if resolved.kept_ours {
                eprintln!(
                    "roster fork at version {} resolved: this node already holds the kept version ({}); roster updates resume",
                    resolved.version,
                    offered.roster.hash()
                );
            } else {
                let dropped = resolved
                    .dropped
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                eprintln!(
                    "roster fork at version {} resolved: re-based onto {} (dropped this node's version(s) {dropped}, kept as evidence); envelopes kept; start the node to sync the rest",
                    resolved.version,
                    offered.roster.hash()
                );
            }
            Ok(())
        }
        Consortium::Sign { dir, roster, out } => {
            let data_dir = dir.get()?;
            let offered = read_roster(&roster)?;
            // The authority is the roster in force at this node (asked of the
            // running node, or read from its store); the roster itself for a
            // genesis.
            let authority = if offered.roster.version == 1 {
                offered.roster.clone()
            } else {
                match crate::roster_in_force(&data_dir).await? {
                    Some(current) if current.roster.version + 1 == offered.roster.version => {
                        current.roster
                    }
                    Some(current) => bail!(
                        "roster version {} does not follow version {} in force at this node; refusing to sign",
                        offered.roster.version,
                        current.roster.version
                    ),
                    None => bail!(
                        "this node holds no roster yet, so it cannot check version {}; join first",
                        offered.roster.version
                    ),
                }
            };
            if offered.roster.version > 1 {
                match SignedRoster::verify_update(&authority, &offered) {
                    Ok(()) | Err(RosterError::NotEnoughSignatures { .. }) => {}
                    Err(e) => bail!(
                        "refusing to sign roster version {}: {e}",
                        offered.roster.version
                    ),
                }
            } else {
                offered.roster.check()?;
            }
            let note = audit(&data_dir, &offered.roster)?;
            let changes = if offered.roster.version > 1 {
                changes(&authority, &offered.roster)
            } else {
                Vec::new()
            };
            let signed = sign(&data_dir, &authority, offered)?;
            write_roster(&out, &signed)?;
            for line in changes {
                eprintln!("{line}");
            }
            eprintln!("{note}");
            report(&signed, &authority, &out);
            Ok(())
        }
    }
}
