//! Breakwater's pure core: identities, the bulletin body, the signed and sealed
//! envelope, the roster, validation verdicts and sync messages.
//!
//! Architecture invariant: this crate never does I/O and never reads the clock.
//! Time is always a parameter (`now`, unix milliseconds) and randomness always
//! comes from a caller-supplied RNG, so every function here is deterministic
//! given its inputs and can be tested with fixed keys.

#![deny(missing_docs)]

pub mod airgap;
pub mod body;
pub mod bytes;
pub mod card;
pub mod egress;
pub mod envelope;
pub mod fixture;
pub mod green;
pub mod keys;
pub mod misp;
pub mod roster;
pub mod seal;
pub mod stix;
pub mod sync;
pub mod tlp;
pub mod validate;
mod wire;

pub use body::{Body, BodyError, Bulletin, Indicator, IndicatorError, IndicatorKind, Severity};
pub use bytes::{Digest, KeyId, NodePublicKey, SealingPublicKey, Signature};
pub use card::{CardError, MemberCard, NodeEntry, OrgId, check_addr};
pub use egress::{Channel, EgressCap, EgressCapError, egress_allowed};
pub use envelope::{DecodeError, Envelope, Header, Kind, MAX_ENVELOPE_BYTES, Recipient, Seal};
pub use green::{EpochKey, EpochKeyError, EpochKeys, audit_package, open_epoch_key};
pub use keys::{KeyError, NodeKeys};
pub use roster::{GreenKeyPackage, Member, Roster, RosterError, SignedRoster};
pub use seal::{
    Draft, OpenError, SealError, open, open_with, recipients_for, seal, seal_to, seal_to_in,
    seal_with, seal_with_in,
};
pub use sync::{Frontier, SeqRange, SyncRequest, SyncResponse};
pub use tlp::Tlp;
pub use validate::{
    Accepted, AuthorState, Equivocation, IgnoreReason, MAX_LIFETIME_MS, Prechecked, Rejection,
    Verdict, precheck, precheck_batch, precheck_batch_in, precheck_in, validate,
    validate_prechecked,
};

/// Version byte that leads every encoding this crate puts on the wire or on disk.
pub const FORMAT_VERSION: u8 = 1;
