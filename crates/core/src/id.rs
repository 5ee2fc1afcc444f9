//! Identifiers: a short type prefix and 20 characters that sort by creation
//! time (10 for the millisecond clock, 10 random), e.g. `key_01JD3...`.
//! Ids are public; they carry no secret and no hash.

use crate::key::random_base62;
use crate::time::UnixMs;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new id with the given type prefix (`key`, `ks`, `ws`, `rk`, `aud`, `req`).
pub fn new_id(kind: &str, now: UnixMs) -> String {
    let mut out = String::with_capacity(kind.len() + 21);
    out.push_str(kind);
    out.push('_');
    let t = now.max(0) as u64;
    for i in (0..10).rev() {
        out.push(CROCKFORD[((t >> (i * 5)) & 31) as usize] as char);
    }
    out.push_str(&random_base62(10));
    out
}

/// Whether `s` looks like an id of that kind (used to reject junk early).
pub fn is_id(kind: &str, s: &str) -> bool {
    s.len() == kind.len() + 21
        && s.starts_with(kind)
        && s.as_bytes()[kind.len()] == b'_'
        && s[kind.len() + 1..].bytes().all(|b| b.is_ascii_alphanumeric())
}
