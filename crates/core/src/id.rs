//! Identifiers: a short type prefix and 20 characters that sort by creation
//! time (10 for the millisecond clock, 10 random), e.g. `key_01JD3...`.
//! Ids are public; they carry no secret and no hash.

use crate::key::random_base62;
use crate::time::UnixMs;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new id with the given type prefix (`key`, `ks`, `ws`, `rk`, `aud`, `req`).
pub fn new_id(kind: &str, now: UnixMs) -> String {
    let mut out = timed(kind, now);
    out.push_str(&random_base62(10));
    out
}

/// `kind_` and the clock part of an id.
fn timed(kind: &str, now: UnixMs) -> String {
    let mut out = String::with_capacity(kind.len() + 21);
    out.push_str(kind);
    out.push('_');
    let t = now.max(0) as u64;
    for i in (0..10).rev() {
        out.push(CROCKFORD[((t >> (i * 5)) & 31) as usize] as char);
    }
    out
}

/// A new request id (`req_…`). Request ids are unique, not secret, so their
/// random part comes from a per-thread generator seeded once, not from the OS:
/// a `getrandom` syscall per request showed in issue 11's profile.
pub fn new_request_id(now: UnixMs) -> String {
    let mut out = timed("req", now);
    for _ in 0..10 {
        out.push(crate::key::ALPHABET[fastrand::usize(..62)] as char);
    }
    out
}

/// Whether `s` looks like an id of that kind (used to reject junk early).
pub fn is_id(kind: &str, s: &str) -> bool {
    s.len() == kind.len() + 21
        && s.starts_with(kind)
        && s.as_bytes()[kind.len()] == b'_'
        && s[kind.len() + 1..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_ids_and_differ() {
        let a = new_request_id(1_700_000_000_000);
        let b = new_request_id(1_700_000_000_000);
        assert!(is_id("req", &a), "{a}");
        assert_ne!(a, b);
        assert_eq!(a[..14], new_id("req", 1_700_000_000_000)[..14], "same clock part");
    }
}
