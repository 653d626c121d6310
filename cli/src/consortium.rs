//! `breakwater consortium …`: building and signing roster files offline with
//! this node's keys (genesis, add a member, revoke a member, co-sign).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use breakwater_node::DataDir;
use breakwater_protocol::{MemberCard, OrgId, Roster, SignedRoster};
use clap::Subcommand;

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
        /// Admin signatures an update needs.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
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
    /// Adds this node's signature to a roster version.
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

pub fn run(command: Consortium) -> Result<()> {
    match command {
        Consortium::Create {
            dir,
            name,
            card,
            admin,
            threshold,
            out,
        } => {
            let data_dir = dir.get();
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
            let roster = Roster::genesis(&name, cards, admins, threshold)?;
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
            let next = current.roster.with_member(card)?;
            let signed = sign(&dir.get(), &current.roster, SignedRoster::unsigned(next))?;
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
            let next = current.roster.with_revoked(&org)?;
            let signed = sign(&dir.get(), &current.roster, SignedRoster::unsigned(next))?;
            write_roster(&out, &signed)?;
            report(&signed, &current.roster, &out);
            Ok(())
        }
        Consortium::Sign { dir, roster, out } => {
            let data_dir = dir.get();
            let offered = read_roster(&roster)?;
            // The authority is the previous version, which we hold only if
            // this node has joined; the roster itself for a genesis.
            let authority = if offered.roster.version == 1 {
                offered.roster.clone()
            } else {
                match breakwater_node::node::roster_offline(&data_dir) {
                    Ok(Some(current)) if current.roster.version + 1 == offered.roster.version => {
                        current.roster
                    }
                    _ => offered.roster.clone(),
                }
            };
            let signed = sign(&data_dir, &authority, offered)?;
            write_roster(&out, &signed)?;
            report(&signed, &authority, &out);
            Ok(())
        }
    }
}
