//! Shared wire framing: a leading format-version byte, a size cap, and
//! postcard, with strict "no trailing bytes" and canonical-encoding checks.

use serde::{Serialize, de::DeserializeOwned};

use crate::FORMAT_VERSION;

/// Why a framed value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Input is longer than the cap for this message type.
    #[error("{len} bytes exceeds the {cap}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Cap for this type.
        cap: usize,
    },
    /// Input is empty.
    #[error("empty input")]
    Empty,
    /// The leading byte names a format this build does not speak.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// postcard could not decode the body.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// The value decodes, but is not in its one canonical encoding.
    #[error("non-canonical encoding")]
    NonCanonical,
}

/// Encodes `value` behind the format-version byte.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    encode_as(FORMAT_VERSION, value)
}

/// Encodes `value` behind an explicit format byte (rosters with a GREEN key
/// package use format 2, so that format-1 rosters keep their bytes and hashes).
pub(crate) fn encode_as<T: Serialize + ?Sized>(format: u8, value: &T) -> Vec<u8> {
    let out = vec![format];
    // postcard only fails to serialize into a Vec for types of unknown length,
    // which none of this crate's wire types are.
    #[allow(clippy::expect_used)]
    postcard::to_extend(value, out).expect("postcard encoding into a Vec is infallible") // ok: infallible for derived wire types
}

/// Checks the cap and returns the leading format byte, without decoding.
pub(crate) fn peek_format(bytes: &[u8], cap: usize) -> Result<u8, FrameError> {
    if bytes.len() > cap {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            cap,
        });
    }
    bytes.first().copied().ok_or(FrameError::Empty)
}

/// Decodes a value framed by [`encode`], enforcing `cap`, the version byte, no
/// trailing bytes and (when `canonical`) that re-encoding gives the same bytes.
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    cap: usize,
    canonical: bool,
) -> Result<T, FrameError> {
    decode_as(FORMAT_VERSION, bytes, cap, canonical)
}

/// [`decode`] for a value framed by [`encode_as`] with format byte `format`.
pub(crate) fn decode_as<T: Serialize + DeserializeOwned>(
    format: u8,
    bytes: &[u8],
    cap: usize,
    canonical: bool,
) -> Result<T, FrameError> {
    let version = peek_format(bytes, cap)?;
    if version != format {
        return Err(FrameError::UnknownVersion(version));
    }
    let rest = bytes.get(1..).unwrap_or_default();
    let (value, trailing) =
        postcard::take_from_bytes::<T>(rest).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(FrameError::Trailing(trailing.len()));
    }
    if canonical && encode_as(format, &value) != bytes {
        return Err(FrameError::NonCanonical);
    }
    Ok(value)
}

/// Domain-separated BLAKE3 over a sequence of byte strings.
pub(crate) fn hash(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(domain);
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}
