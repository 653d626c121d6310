//! Traffic Light Protocol 2.0 labels, which decide who may read an envelope.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A TLP 2.0 label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tlp {
    /// Public: signed, not encrypted.
    Clear,
    /// The whole community: every node of every current member.
    Green,
    /// The named organisations (and their clients, on a need-to-know basis).
    Amber,
    /// The named organisations only.
    #[serde(rename = "amber+strict")]
    AmberStrict,
    /// The named recipients only, never further.
    Red,
}

impl Tlp {
    /// All labels, least restrictive first.
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    /// The label as operators type it: `clear`, `green`, `amber`, `amber+strict`, `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "clear",
            Tlp::Green => "green",
            Tlp::Amber => "amber",
            Tlp::AmberStrict => "amber+strict",
            Tlp::Red => "red",
        }
    }

    /// True when the body is encrypted (everything but CLEAR).
    pub fn is_sealed(self) -> bool {
        self != Tlp::Clear
    }

    /// True when recipients are the organisations the author names.
    pub fn names_recipients(self) -> bool {
        matches!(self, Tlp::Amber | Tlp::AmberStrict | Tlp::Red)
    }

    /// True when plaintext may only ever be shown to this node's own operator.
    pub fn operator_only(self) -> bool {
        matches!(self, Tlp::AmberStrict | Tlp::Red)
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown TLP label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLP {0:?} (expected clear, green, amber, amber+strict or red)")]
pub struct TlpError(pub String);

impl FromStr for Tlp {
    type Err = TlpError;
    fn from_str(s: &str) -> Result<Self, TlpError> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("tlp:").unwrap_or(&lower);
        Tlp::ALL
            .into_iter()
            .find(|tlp| tlp.as_str() == bare)
            .ok_or_else(|| TlpError(s.to_string()))
    }
}
