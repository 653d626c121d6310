//! Fixed-size byte strings that travel on the wire: digests, public keys, key
//! ids and signatures. Binary formats carry them as bytes; human-readable ones
//! (JSON cards and roster files) as lower-case hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A hex string did not hold the expected number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex-encoded bytes, got {found:?}")]
pub struct HexError {
    /// Bytes expected.
    pub expected: usize,
    /// What was found (truncated).
    pub found: String,
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Builds from a slice of exactly `LEN` bytes.
            pub fn from_slice(slice: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(slice).ok().map(Self)
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                let err = || HexError { expected: $len, found: s.chars().take(80).collect() };
                let raw = hex::decode(s.trim()).map_err(|_| err())?;
                Self::from_slice(&raw).ok_or_else(err)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hex = self.to_hex();
                write!(f, "{}({}…)", stringify!($name), &hex[..hex.len().min(16)])
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} bytes", $len)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        $name::from_slice(v).ok_or_else(|| E::invalid_length(v.len(), &self))
                    }
                }
                if d.is_human_readable() {
                    d.deserialize_str(V)
                } else {
                    d.deserialize_bytes(V)
                }
            }
        }
    };
}

fixed_bytes!(
    /// A 32-byte BLAKE3 digest: envelope ids, roster hashes, consortium ids.
    Digest,
    32
);
fixed_bytes!(
    /// An ed25519 node public key (the libp2p identity of a node).
    NodePublicKey,
    32
);
fixed_bytes!(
    /// A static X25519 public key used to wrap content keys for a node.
    SealingPublicKey,
    32
);
fixed_bytes!(
    /// A short identifier of a sealing key, naming a recipient in a header.
    KeyId,
    8
);
fixed_bytes!(
    /// An ed25519 signature.
    Signature,
    64
);

impl Digest {
    /// The all-zero digest: `prev` of a first envelope or a genesis roster.
    pub const ZERO: Digest = Digest([0; 32]);

    /// True for [`Digest::ZERO`].
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}
