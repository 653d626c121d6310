//! Dashboard sessions and one-time login codes, held in memory only (a
//! restart logs everyone out and voids every code).
//!
//! A session is a random 256-bit id in a cookie; the node keeps only its
//! BLAKE3 hash, with the session's CSRF token and expiry. A login code is
//! 64 random bits, kept hashed, valid [`CODE_TTL`] and spent by its first
//! use; a wrong login voids every outstanding code, so guessing one needs
//! the operator to print a new code per guess.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a dashboard session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// How long a one-time login code from `breakwater ui` stays valid.
pub const CODE_TTL: Duration = Duration::from_secs(300);

/// Most sessions held at once; a new login evicts the oldest beyond it.
const MAX_SESSIONS: usize = 32;

/// Most login codes outstanding at once; a new code evicts the oldest.
const MAX_CODES: usize = 8;

/// Sessions and codes.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Hash of the session id → the session.
    sessions: HashMap<[u8; 32], Session>,
    /// Hashes of outstanding codes, with their expiry.
    codes: Vec<([u8; 32], Instant)>,
    /// Sessions opened so far (orders them for eviction).
    opened: u64,
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
    serial: u64,
}

fn hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// A fresh random secret, hex.
pub(crate) fn random_hex<const N: usize>() -> String {
    hex::encode(rand::random::<[u8; N]>())
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (each update is one insert or remove), so a poisoned lock is used.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new one-time code, formatted `xxxx-xxxx-xxxx-xxxx`.
    pub(crate) fn new_code(&self) -> String {
        let raw = random_hex::<8>();
        let code = raw
            .as_bytes()
            .chunks(4)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        let now = Instant::now();
        let mut inner = self.lock();
        inner.codes.retain(|(_, expires)| *expires > now);
        if inner.codes.len() >= MAX_CODES {
            inner.codes.remove(0);
        }
        inner
            .codes
            .push((hash(&normalise_code(&code)), now + CODE_TTL));
        code
    }

    /// Spends `code` if it is outstanding; a wrong code voids them all.
    pub(crate) fn spend_code(&self, code: &str) -> bool {
        let wanted = hash(&normalise_code(code));
        let now = Instant::now();
        let mut inner = self.lock();
        let found = inner
            .codes
            .iter()
            .position(|(hash, expires)| *hash == wanted && *expires > now);
        match found {
            Some(at) => {
                inner.codes.remove(at);
                true
            }
            None => {
                inner.codes.clear();
                false
            }
        }
    }

    /// Opens a session; returns its id (for the cookie).
    pub(crate) fn open(&self) -> String {
        let id = random_hex::<32>();
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sessions.retain(|_, session| session.expires > now);
        while inner.sessions.len() >= MAX_SESSIONS {
            let oldest = inner
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.serial)
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => inner.sessions.remove(&key),
                None => break,
            };
        }
        inner.opened += 1;
        let serial = inner.opened;
        inner.sessions.insert(
            hash(&id),
            Session {
                csrf: random_hex::<32>(),
                expires: now + SESSION_TTL,
                serial,
            },
        );
        id
    }

    /// The CSRF token of the live session `id`, if there is one.
    pub(crate) fn find(&self, id: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .sessions
            .get(&hash(id))
            .filter(|session| session.expires > Instant::now())
            .map(|session| session.csrf.clone())
    }

    /// Ends the session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.lock().sessions.remove(&hash(id));
    }
}

/// A code as typed: case and dashes do not matter.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once() {
        let sessions = Sessions::default();
        let code = sessions.new_code();
        assert_eq!(code.len(), 19, "{code}");
        assert!(sessions.spend_code(&code.to_uppercase().replace('-', " ")));
        assert!(!sessions.spend_code(&code));
    }

    #[test]
    fn a_wrong_code_voids_every_code() {
        let sessions = Sessions::default();
        let code = sessions.new_code();
        assert!(!sessions.spend_code("0000-0000-0000-0000"));
        assert!(!sessions.spend_code(&code));
    }

    #[test]
    fn sessions_open_find_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open();
        let csrf = sessions.find(&id);
        assert!(csrf.as_ref().is_some_and(|csrf| csrf.len() == 64));
        assert_eq!(sessions.find("nope"), None);
        sessions.close(&id);
        assert_eq!(sessions.find(&id), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.open();
        for _ in 0..MAX_SESSIONS {
            sessions.open();
        }
        assert_eq!(sessions.lock().sessions.len(), MAX_SESSIONS);
        assert_eq!(sessions.find(&first), None);
    }
}
