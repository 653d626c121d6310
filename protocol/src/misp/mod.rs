//! MISP feeds, as pure conversions (no I/O, no clock): an opened bulletin
//! (and its retraction, if any) to a MISP event (`{"Event": {…}}`) with a
//! uuid derived from the envelope id, and the `manifest.json` and
//! `hashes.csv` of a feed directory, one directory per TLP level. The CLI's
//! `export misp-feed` is a thin wrapper: for each bulletin the egress cap
//! lets out, [`event_of`] → [`Feed::add`] on the feed of [`MispEvent::tlp`]
//! (loaded from the directory with [`Feed::load`]), then write
//! [`MispEvent::file_name`], [`Feed::manifest_json`] and
//! [`Feed::hashes_csv`].
//!
//! The mapping follows `design/interop.md` §3 and is specified in
//! `docs/PROTOCOL.md` ("MISP feeds").

pub mod event;
pub mod feed;

pub use event::{
    MISP_NAMESPACE, MispError, MispEvent, attribute_type, attribute_uuid, event, event_of,
    event_report_uuid, event_uuid, org_uuid,
};
pub use feed::{Feed, feed_dir, feed_dirs};
