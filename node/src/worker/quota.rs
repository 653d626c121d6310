//! Bounded storage at ingest: the node's storage policy (per-author quotas,
//! its own lifetime cap, the grace before expired ciphertext is deleted, the
//! purge of revoked organisations) and each author's usage against it. Ingest
//! and publish ask [`Worker::over_quota`] before storing; an author over its
//! quota is ignored (never rejected: the verdict depends on this node's
//! state) and its feed is not requested by sync until its window ends.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use breakwater_protocol::{MAX_LIFETIME_MS, NodePublicKey};
use tracing::warn;

use super::Worker;
use crate::config::Config;

/// What this node stores, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePolicy {
    /// Length of a quota window, in ms.
    pub window_ms: u64,
    /// Most new envelopes stored per author per window.
    pub envelopes_per_window: u64,
    /// Most new ciphertext bytes stored per author per window.
    pub bytes_per_window: u64,
    /// Most ciphertext bytes kept per author at any time.
    pub bytes_per_author: u64,
    /// Longest lifetime this node stores (at most the protocol's one year).
    pub max_lifetime_ms: u64,
    /// How long expired ciphertext is kept before it is deleted.
    pub expired_grace_ms: u64,
    /// How long after an organisation's revocation its data is deleted.
    pub revoked_purge_after_ms: u64,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        StoragePolicy::from_config(&Config::default())
    }
}

impl StoragePolicy {
    /// The policy `config` sets.
    pub fn from_config(config: &Config) -> StoragePolicy {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        StoragePolicy {
            window_ms: ms(config.quota_window).max(1),
            envelopes_per_window: config.quota_envelopes_per_window,
            bytes_per_window: config.quota_bytes_per_window,
            bytes_per_author: config.quota_bytes_per_author,
            max_lifetime_ms: ms(config.max_lifetime).min(MAX_LIFETIME_MS),
            expired_grace_ms: ms(config.expired_grace),
            revoked_purge_after_ms: config
                .revoked_purge_after_days
                .saturating_mul(24 * 3600 * 1000),
        }
    }
}

/// One author's usage, in memory: stored ciphertext (read from the store
/// the first time the author is seen) and the current window's arrivals.
#[derive(Debug, Clone, Default)]
pub(super) struct Usage {
    stored_bytes: u64,
    window_start: u64,
    window_envelopes: u64,
    window_bytes: u64,
    /// The window in which an over-quota warning was logged.
    warned_window: Option<u64>,
}

/// Per-author usage of the storage policy.
#[derive(Debug, Default)]
pub(super) struct Quotas {
    usage: HashMap<NodePublicKey, Usage>,
}

/// Why an envelope is not stored under the storage policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaExceeded {
    /// Too many envelopes in the current window.
    #[error(
        "quota of {limit} envelopes per {window_s} s used up for author {author} (resets in {resets_in_s} s)"
    )]
    Envelopes {
        author: NodePublicKey,
        limit: u64,
        window_s: u64,
        resets_in_s: u64,
    },
    /// Too many bytes in the current window.
    #[error(
        "quota of {limit} bytes per {window_s} s used up for author {author} (resets in {resets_in_s} s)"
    )]
    WindowBytes {
        author: NodePublicKey,
        limit: u64,
        window_s: u64,
        resets_in_s: u64,
    },
    /// Too many bytes stored in all.
    #[error("author {author} already stores {stored} bytes; the quota is {limit} bytes")]
    StoredBytes {
        author: NodePublicKey,
        stored: u64,
        limit: u64,
    },
}

impl Worker {
    /// The usage of `author`, its window moved on to `now` if it ended.
    fn usage(&mut self, author: &NodePublicKey, now: u64) -> &mut Usage {
        let window_ms = self.policy.window_ms;
        let store = &self.store;
        let usage = self.quotas.usage.entry(*author).or_insert_with(|| Usage {
            stored_bytes: store.feed_usage(&author.0).map_or(0, |(bytes, _)| bytes),
            window_start: now,
            ..Usage::default()
        });
        if now.saturating_sub(usage.window_start) >= window_ms {
            usage.window_start = now;
            usage.window_envelopes = 0;
            usage.window_bytes = 0;
        }
        usage
    }

    /// Whether storing `bytes` more ciphertext bytes (0 for a tombstone) of
    /// `author` at `now` would break the storage policy. Logs the first
    /// refusal of each window.
    pub(super) fn over_quota(
        &mut self,
        author: &NodePublicKey,
        bytes: u64,
        now: u64,
    ) -> Option<QuotaExceeded> {
        let policy = self.policy.clone();
        let usage = self.usage(author, now);
        let window_s = policy.window_ms / 1000;
        let resets_in_s = (usage.window_start + policy.window_ms).saturating_sub(now) / 1000;
        let exceeded = if usage.window_envelopes >= policy.envelopes_per_window {
            Some(QuotaExceeded::Envelopes {
                author: *author,
                limit: policy.envelopes_per_window,
                window_s,
                resets_in_s,
            })
        } else if usage.window_bytes.saturating_add(bytes) > policy.bytes_per_window {
            Some(QuotaExceeded::WindowBytes {
                author: *author,
                limit: policy.bytes_per_window,
                window_s,
                resets_in_s,
            })
        } else if usage.stored_bytes.saturating_add(bytes) > policy.bytes_per_author {
            Some(QuotaExceeded::StoredBytes {
                author: *author,
                stored: usage.stored_bytes,
                limit: policy.bytes_per_author,
            })
        } else {
            None
        };
        if let Some(exceeded) = &exceeded
            && usage.warned_window != Some(usage.window_start)
        {
            usage.warned_window = Some(usage.window_start);
            warn!("ignoring envelopes over the storage quota: {exceeded}");
        }
        exceeded
    }

    /// Counts an envelope of `author` with `bytes` of ciphertext (0 for a
    /// tombstone) as stored at `now`.
    pub(super) fn count_stored(&mut self, author: &NodePublicKey, bytes: u64, now: u64) {
        let usage = self.usage(author, now);
        usage.window_envelopes += 1;
        usage.window_bytes = usage.window_bytes.saturating_add(bytes);
        usage.stored_bytes = usage.stored_bytes.saturating_add(bytes);
    }

    /// Counts `bytes` of `author`'s ciphertext as deleted.
    pub(super) fn count_deleted(&mut self, author: &NodePublicKey, bytes: u64) {
        if let Some(usage) = self.quotas.usage.get_mut(author) {
            usage.stored_bytes = usage.stored_bytes.saturating_sub(bytes);
        }
    }

    /// Whether sync should leave `author`'s feed alone for now (back-off):
    /// its quota is used up until its window ends.
    pub(super) fn backing_off(&self, author: &NodePublicKey, now: u64) -> bool {
        self.quotas.usage.get(author).is_some_and(|usage| {
            usage.warned_window == Some(usage.window_start)
                && now.saturating_sub(usage.window_start) < self.policy.window_ms
        })
    }

    /// Every author sync leaves alone for now ([`Worker::backing_off`]).
    pub(super) fn backed_off(&self, now: u64) -> HashSet<NodePublicKey> {
        self.quotas
            .usage
            .keys()
            .filter(|author| self.backing_off(author, now))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests;
