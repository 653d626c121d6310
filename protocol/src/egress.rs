//! The one egress policy: which TLP labels may leave a node as plaintext
//! through a channel (local API, dashboard, TAXII collection, MISP feed,
//! STIX export, webhook). Every channel asks [`egress_allowed`] with its
//! [`EgressCap`]; no channel has its own rule.
//!
//! RED leaves only through a cap that says so explicitly (`max_tlp: red`
//! *and* `allow_red: true`); every other label leaves when it is at most the
//! cap's `max_tlp`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tlp::Tlp;

/// How far plaintext may go out through one channel: labels up to
/// `max_tlp`, and RED only when `allow_red` is set too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EgressCap {
    /// The strictest label that may leave.
    pub max_tlp: Tlp,
    /// RED may leave (needs `max_tlp` red as well). Off unless set: TLP:RED
    /// is for named individuals, so no channel carries it by default.
    #[serde(default)]
    pub allow_red: bool,
}

/// A cap that names RED inconsistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EgressCapError {
    /// `max_tlp` is red but `allow_red` is not set.
    #[error(
        "max_tlp red needs allow_red: TLP:RED is for named individuals and leaves only when explicitly allowed"
    )]
    RedNotAllowed,
    /// `allow_red` is set but `max_tlp` is below red.
    #[error("allow_red needs max_tlp red (max_tlp is {0})")]
    RedAboveCap(Tlp),
}

impl EgressCap {
    /// A cap up to `max_tlp`, without RED (a `max_tlp` of red therefore lets
    /// out up to AMBER+STRICT).
    pub const fn up_to(max_tlp: Tlp) -> EgressCap {
        EgressCap {
            max_tlp,
            allow_red: false,
        }
    }

    /// The cap that lets everything out, RED included: the operator's own
    /// views (local API, dashboard), which only the API token opens.
    pub const ALL: EgressCap = EgressCap {
        max_tlp: Tlp::Red,
        allow_red: true,
    };

    /// A cap from a channel's setting (`--max-tlp LEVEL [--allow-red]`, a
    /// TAXII collection's `max_tlp` and `allow_red`), refusing the two
    /// inconsistent combinations, so a typo cannot silently widen or narrow
    /// a channel.
    pub fn new(max_tlp: Tlp, allow_red: bool) -> Result<EgressCap, EgressCapError> {
        let cap = EgressCap { max_tlp, allow_red };
        cap.check()?;
        Ok(cap)
    }

    /// Refuses `max_tlp: red` without `allow_red`, and `allow_red` with a
    /// lower `max_tlp` (for caps read from configuration).
    pub fn check(&self) -> Result<(), EgressCapError> {
        match (self.max_tlp, self.allow_red) {
            (Tlp::Red, false) => Err(EgressCapError::RedNotAllowed),
            (tlp, true) if tlp != Tlp::Red => Err(EgressCapError::RedAboveCap(tlp)),
            _ => Ok(()),
        }
    }

    /// [`egress_allowed`]`(tlp, self)`.
    pub fn allows(&self, tlp: Tlp) -> bool {
        egress_allowed(tlp, *self)
    }

    /// The labels this cap lets out, least strict first.
    pub fn levels(&self) -> impl Iterator<Item = Tlp> + '_ {
        Tlp::ALL.into_iter().filter(|&tlp| self.allows(tlp))
    }
}

impl fmt::Display for EgressCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_red && self.max_tlp == Tlp::Red {
            f.write_str("up to red")
        } else {
            write!(f, "up to {}", self.max_tlp.min(Tlp::AmberStrict))
        }
    }
}

/// True when plaintext labelled `tlp` may leave through a channel capped at
/// `cap`: RED only when the cap is red *and* allows RED explicitly; every
/// other label when it is at most `cap.max_tlp`.
pub fn egress_allowed(tlp: Tlp, cap: EgressCap) -> bool {
    match tlp {
        Tlp::Red => cap.allow_red && cap.max_tlp == Tlp::Red,
        other => other <= cap.max_tlp,
    }
}

/// A way plaintext leaves a node. Each has a default cap; configuration
/// may only set another cap through [`EgressCap::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The local HTTP API, opened by the operator's token.
    LocalApi,
    /// The local dashboard (`/ui`), behind a login with the API token.
    Dashboard,
    /// A TAXII 2.1 collection (its cap is the collection's `max_tlp`).
    Taxii,
    /// `export misp-feed` (`--max-tlp`).
    MispFeed,
    /// `export stix` (`--max-tlp`).
    StixExport,
    /// An outgoing webhook (its `max_tlp`).
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 6] = [
        Channel::LocalApi,
        Channel::Dashboard,
        Channel::Taxii,
        Channel::MispFeed,
        Channel::StixExport,
        Channel::Webhook,
    ];

    /// Its name (the `channel` label of the egress metric).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::LocalApi => "api",
            Channel::Dashboard => "ui",
            Channel::Taxii => "taxii",
            Channel::MispFeed => "misp-feed",
            Channel::StixExport => "stix",
            Channel::Webhook => "webhook",
        }
    }

    /// The cap when nothing is configured: everything for the operator's
    /// own views (API and dashboard); AMBER+STRICT for TAXII collections
    /// (the default `shared` collection), feeds and STIX exports, which are
    /// files and servers the operator points somewhere; GREEN for webhooks,
    /// which post to third-party services.
    pub fn default_cap(self) -> EgressCap {
        match self {
            Channel::LocalApi | Channel::Dashboard => EgressCap::ALL,
            Channel::Taxii | Channel::MispFeed | Channel::StixExport => {
                EgressCap::up_to(Tlp::AmberStrict)
            }
            Channel::Webhook => EgressCap::up_to(Tlp::Green),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
