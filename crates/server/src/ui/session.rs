//! Dashboard sessions: in memory, one per login, each bound to the root key
//! it was opened with (re-checked on every request) and carrying its own
//! CSRF token. A restart logs everyone out, which is the safe direction.

use std::collections::HashMap;

use parking_lot::Mutex;

/// How long a session lives from login, ms (no sliding renewal: a stolen
/// cookie is worth at most this long).
pub const TTL_MS: i64 = 8 * 3600 * 1000;

/// The most sessions held at once; past it the oldest goes first.
pub const MAX_SESSIONS: usize = 10_000;

/// The cookie holding the session id.
pub const COOKIE: &str = "kw_session";

/// The cookie of the login form's CSRF token (double submit: no session yet).
pub const LOGIN_COOKIE: &str = "kw_login_csrf";

#[derive(Debug, Clone)]
pub struct Session {
    pub root_key_id: String,
    /// Every form of this session carries it as `csrf`.
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex: session ids and CSRF tokens.
pub fn token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

/// Compares two tokens in constant time (`subtle`; unequal lengths are unequal).
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for `root_key_id`; returns its id.
    pub fn open(&self, root_key_id: &str, now: i64) -> Result<(String, Session), getrandom::Error> {
        let id = token()?;
        let s =
            Session { root_key_id: root_key_id.to_owned(), csrf: token()?, created_at: now, expires_at: now + TTL_MS };
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires_at > now);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created_at).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    /// The live session `id`, if any (an expired one is dropped).
    pub fn get(&self, id: &str, now: i64) -> Option<Session> {
        let mut map = self.map.lock();
        match map.get(id) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.map.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_close_and_stay_bounded() {
        let s = Sessions::default();
        let (id, sess) = s.open("rk_1", 1_000).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(sess.csrf, id);
        assert_eq!(s.get(&id, 1_001).unwrap().root_key_id, "rk_1");
        assert!(s.get(&id, 1_000 + TTL_MS).is_none(), "expired at its deadline");
        assert!(s.is_empty(), "an expired session is dropped when seen");
        let (id, _) = s.open("rk_1", 2_000).unwrap();
        s.close(&id);
        assert!(s.get(&id, 2_001).is_none());
        for i in 0..MAX_SESSIONS + 5 {
            s.open("rk_1", 3_000 + i as i64).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abcd", "abc"));
        assert!(!same_token("", "a"));
    }
}
