//! STIX 2.1 in and out, as pure conversions (no I/O, no clock): export of
//! opened envelopes to STIX objects and bundles with deterministic ids and
//! the official TLP 2.0 markings, and import of a STIX bundle into a
//! bulletin's indicators, text and TLP. The CLI's `export stix` and
//! `publish --from-stix`, and the TAXII inbox, are thin wrappers around
//! [`Bundle::add_envelope`] and [`import`] / [`import_objects`] with
//! [`Imported::to_bulletin`].
//!
//! The mapping follows `design/interop.md` §1 and is specified in
//! `docs/PROTOCOL.md` ("STIX 2.1").

pub mod export;
pub mod ids;
pub mod import;
pub mod marking;
pub mod pattern;

pub use export::{
    Bundle, ExportError, Exported, IDENTITY_CREATED, Opened, Org, bundle_of, export, identity_id,
    indicator_id, report_id, sighting_id, supersedes_id,
};
pub use ids::{
    canonical_json, civil_from_days, parse_timestamp, sco_id, sdo_id, timestamp, timestamp_micros,
};
pub use import::{ImportError, Imported, ReportFacts, import, import_objects};
pub use marking::{marking_definition, marking_id};
pub use pattern::{observable_of, parse_pattern, pattern_of};
