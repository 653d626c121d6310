//! Member cards: the public part of an organisation (its slug, name, sector
//! and nodes), exchanged as JSON when a consortium is convened.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bytes::{NodePublicKey, SealingPublicKey};

/// Why a card or an org id is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The org id is not a short slug.
    #[error(
        "org id {0:?} must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadOrgId(String),
    /// A required text field is empty or too long.
    #[error("card field {field} must be 1-{max} characters")]
    BadField {
        /// The field.
        field: &'static str,
        /// Its maximum length.
        max: usize,
    },
    /// The card lists no node.
    #[error("card for {0} lists no node")]
    NoNodes(OrgId),
    /// A node key is not a valid ed25519 public key.
    #[error("card for {org} has an invalid node key {key}")]
    BadNodeKey {
        /// The organisation.
        org: OrgId,
        /// The key.
        key: NodePublicKey,
    },
    /// A card lists more nodes than a card may carry.
    #[error("card for {org} lists {found} nodes, at most {max} are allowed")]
    TooManyNodes {
        /// The organisation.
        org: OrgId,
        /// Nodes listed.
        found: usize,
        /// The bound.
        max: usize,
    },
    /// A node lists more addresses than a node may carry.
    #[error("node {key} lists {found} addresses, at most {max} are allowed")]
    TooManyAddrs {
        /// The node.
        key: NodePublicKey,
        /// Addresses listed.
        found: usize,
        /// The bound.
        max: usize,
    },
    /// A text field carries a control or bidi-override character.
    #[error("card field {field} contains a control or bidi-override character")]
    ForbiddenChar {
        /// The field.
        field: &'static str,
    },
    /// A sealing key is not a canonical X25519 key or is of low order.
    #[error(
        "card for {org} has an unusable sealing key {key} (low-order, all-zero or non-canonical)"
    )]
    BadSealingKey {
        /// The organisation.
        org: OrgId,
        /// The key.
        key: SealingPublicKey,
    },
    /// The same sealing key appears twice.
    #[error("sealing key {0} appears more than once")]
    DuplicateSealingKey(SealingPublicKey),
    /// The same node key appears twice.
    #[error("node key {0} appears more than once")]
    DuplicateNode(NodePublicKey),
    /// The JSON is malformed.
    #[error("malformed member card: {0}")]
    Json(String),
    /// A node address is not one of the shapes a node dials (see
    /// [`check_addr`]).
    #[error("address {addr:?} is not dialable: {reason}")]
    BadAddr {
        /// The address (at most 64 characters of it).
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// An organisation's short slug, e.g. `polb` or `maersk-apm`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for OrgId {
    type Err = CardError;
    fn from_str(s: &str) -> Result<OrgId, CardError> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(OrgId(s.to_string()))
        } else {
            Err(CardError::BadOrgId(s.to_string()))
        }
    }
}

impl TryFrom<String> for OrgId {
    type Error = CardError;
    fn try_from(s: String) -> Result<OrgId, CardError> {
        s.parse()
    }
}

impl From<OrgId> for String {
    fn from(id: OrgId) -> String {
        id.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most nodes one card may list.
pub const MAX_NODES_PER_CARD: usize = 16;
/// Most addresses one node may list.
pub const MAX_ADDRS_PER_NODE: usize = 16;

/// One node of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// ed25519 node key (its PeerId).
    pub node_key: NodePublicKey,
    /// X25519 sealing key.
    pub sealing_key: SealingPublicKey,
    /// Multiaddrs where the node listens, as strings.
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// The public part of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCard {
    /// Short slug.
    pub org_id: OrgId,
    /// Display name.
    pub name: String,
    /// Sector, e.g. `port-authority`, `shipping-line`, `terminal-operator`.
    pub sector: String,
    /// The organisation's nodes.
    pub nodes: Vec<NodeEntry>,
}

impl MemberCard {
    /// Checks field lengths and characters, that there are 1 to
    /// [`MAX_NODES_PER_CARD`] nodes with at most [`MAX_ADDRS_PER_NODE`]
    /// addresses each, every address of a dialable shape ([`check_addr`]),
    /// that every node key is a valid, distinct ed25519 key
    /// and every sealing key a usable, distinct X25519 key.
    pub fn check(&self) -> Result<(), CardError> {
        check_text("name", &self.name, 128)?;
        check_text("sector", &self.sector, 64)?;
        if self.nodes.is_empty() {
            return Err(CardError::NoNodes(self.org_id.clone()));
        }
        if self.nodes.len() > MAX_NODES_PER_CARD {
            return Err(CardError::TooManyNodes {
                org: self.org_id.clone(),
                found: self.nodes.len(),
                max: MAX_NODES_PER_CARD,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut sealing = std::collections::BTreeSet::new();
        for node in &self.nodes {
            if !node.sealing_key.is_valid() {
                return Err(CardError::BadSealingKey {
                    org: self.org_id.clone(),
                    key: node.sealing_key,
                });
            }
            if !sealing.insert(node.sealing_key) {
                return Err(CardError::DuplicateSealingKey(node.sealing_key));
            }
            if node.addrs.len() > MAX_ADDRS_PER_NODE {
                return Err(CardError::TooManyAddrs {
                    key: node.node_key,
                    found: node.addrs.len(),
                    max: MAX_ADDRS_PER_NODE,
                });
            }
            if !node.node_key.is_valid() {
                return Err(CardError::BadNodeKey {
                    org: self.org_id.clone(),
                    key: node.node_key,
                });
            }
            if !seen.insert(node.node_key) {
                return Err(CardError::DuplicateNode(node.node_key));
            }
            for addr in &node.addrs {
                check_text("addrs", addr, 256)?;
                check_addr(addr)?;
            }
        }
        Ok(())
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and checks a card.
    pub fn from_json(text: &str) -> Result<MemberCard, CardError> {
        let card: MemberCard =
            serde_json::from_str(text).map_err(|e| CardError::Json(e.to_string()))?;
        card.check()?;
        Ok(card)
    }
}

/// A one-line text field of 1 to `max` characters without control or
/// bidi-override characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), CardError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(CardError::BadField { field, max });
    }
    if crate::body::has_forbidden_char(value, false) {
        return Err(CardError::ForbiddenChar { field });
    }
    Ok(())
}

/// Checks that `addr` is a multiaddr of a shape every node dials:
///
/// - `/ip4/<address>`, `/ip6/<address>`, `/dns/<name>`, `/dns4/<name>` or
///   `/dns6/<name>`, then
/// - `/tcp/<port>` or `/udp/<port>/quic-v1` (port 1-65535), then
/// - optionally `/p2p/<peer id>`;
///
/// or `/memory/<port>`, libp2p's in-process transport that tests and
/// simulations use (it never leaves the process).
///
/// Unspecified (`0.0.0.0`, `::`), multicast and broadcast addresses are
/// refused: nothing listens there. Private, loopback and link-local ranges
/// are accepted, since a consortium may well run on a private network (and
/// tests and simulations run on loopback and 198.18.0.0/15); a node dials
/// only the roster's addresses of the roster's members, and never learns
/// addresses from peers.
pub fn check_addr(addr: &str) -> Result<(), CardError> {
    let bad = |reason| CardError::BadAddr {
        addr: addr.chars().take(64).collect(),
        reason,
    };
    let Some(rest) = addr.strip_prefix('/') else {
        return Err(bad("a multiaddr starts with '/'"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["memory", port] => port
            .parse::<u64>()
            .ok()
            .filter(|p| *p > 0)
            .map(|_| ())
            .ok_or_else(|| bad("bad memory port")),
        [host_kind, host, tail @ ..] => {
            match *host_kind {
                "ip4" => {
                    let ip: std::net::Ipv4Addr =
                        host.parse().map_err(|_| bad("bad IPv4 address"))?;
                    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                        return Err(bad("unspecified, multicast or broadcast IPv4 address"));
                    }
                }
                "ip6" => {
                    let ip: std::net::Ipv6Addr =
                        host.parse().map_err(|_| bad("bad IPv6 address"))?;
                    if ip.is_unspecified() || ip.is_multicast() {
                        return Err(bad("unspecified or multicast IPv6 address"));
                    }
                }
                "dns" | "dns4" | "dns6" => {
                    if !is_dns_name(host) {
                        return Err(bad("bad DNS name"));
                    }
                }
                _ => return Err(bad("must start with /ip4, /ip6, /dns, /dns4 or /dns6")),
            }
            let tail = match tail {
                ["tcp", port, tail @ ..] => {
                    check_port(port).ok_or_else(|| bad("bad TCP port"))?;
                    tail
                }
                ["udp", port, "quic-v1", tail @ ..] => {
                    check_port(port).ok_or_else(|| bad("bad UDP port"))?;
                    tail
                }
                _ => return Err(bad("must continue /tcp/<port> or /udp/<port>/quic-v1")),
            };
            match tail {
                [] => Ok(()),
                ["p2p", peer] if is_peer_id(peer) => Ok(()),
                _ => Err(bad("may end only in /p2p/<peer id>")),
            }
        }
        _ => Err(bad("must start with /ip4, /ip6, /dns, /dns4 or /dns6")),
    }
}

/// A port 1-65535 in decimal.
fn check_port(port: &str) -> Option<u16> {
    port.parse::<u16>().ok().filter(|p| *p > 0)
}

/// A DNS name of 1-253 characters: dot-separated, non-empty labels of ASCII
/// letters, digits and hyphens, not starting or ending with a hyphen.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A base58 peer id of plausible length.
fn is_peer_id(peer: &str) -> bool {
    (32..=64).contains(&peer.len())
        && peer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
}
