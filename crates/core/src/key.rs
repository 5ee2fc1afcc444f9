//! The key format: `<prefix>_<random><checksum>`.
//!
//! * `prefix`: per keyspace, e.g. `kw_live` or `sk_test` (see [`KeyPrefix`]).
//! * `random`: [`RANDOM_LEN`] base62 characters from the OS CSPRNG (190.5 bits).
//! * `checksum`: CRC-32 of `<prefix>_<random>`, as [`CHECKSUM_LEN`] base62 digits.
//!
//! The checksum lets a scanner or the verify path tell a real key from look-alike
//! text without a store lookup; it is not a secret and adds no strength. CRC-32
//! catches every single-character change (a one-byte burst) and every change
//! confined to 32 consecutive bits.
//!
//! Invariant: the raw key lives only in [`RawKey`]; its `Debug`/`Display` print
//! the hint (prefix and last four characters).

use std::fmt;

use crate::error::{KeyFormatError, PrefixError};

/// base62 digits in ascending value.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters per key: 32 × log2(62) ≈ 190.5 bits.
pub const RANDOM_LEN: usize = 32;
/// base62 digits of the CRC-32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Longest prefix a keyspace may use.
pub const MAX_PREFIX_LEN: usize = 32;
/// Longest string that can be a key; longer input is refused before any work.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + RANDOM_LEN + CHECKSUM_LEN;
const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;

/// The prefix of the root keys that authenticate the management API.
pub const ROOT_PREFIX: &str = "kw_root";
/// The prefix a keyspace gets when none is given.
pub const DEFAULT_PREFIX: &str = "kw_live";

/// A validated keyspace prefix: 2–32 characters, lowercase words of `a-z0-9`
/// joined by single underscores, starting with a letter (`sk_live`, `pk_test`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn new(s: &str) -> Result<Self, PrefixError> {
        if !(2..=MAX_PREFIX_LEN).contains(&s.len()) {
            return Err(PrefixError::Length(s.len()));
        }
        if is_valid_prefix(s) { Ok(KeyPrefix(s.to_owned())) } else { Err(PrefixError::Charset) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of root keys, `kw_root`.
    pub fn root() -> KeyPrefix {
        KeyPrefix(ROOT_PREFIX.to_owned())
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_valid_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() || b[b.len() - 1] == b'_' {
        return false;
    }
    let mut prev_underscore = false;
    for &c in b {
        match c {
            b'a'..=b'z' | b'0'..=b'9' => prev_underscore = false,
            b'_' if !prev_underscore => prev_underscore = true,
            _ => return false,
        }
    }
    true
}

/// A raw API key. Shown once to its owner, then dropped; only its hash is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct RawKey(String);

impl RawKey {
    /// A fresh key under `prefix` from the OS CSPRNG.
    pub fn generate(prefix: &KeyPrefix) -> RawKey {
        let mut s = String::with_capacity(prefix.0.len() + 1 + BODY_LEN);
        s.push_str(&prefix.0);
        s.push('_');
        s.push_str(&random_base62(RANDOM_LEN));
        let sum = crc32fast::hash(s.as_bytes());
        push_base62_fixed(&mut s, sum);
        RawKey(s)
    }

    /// Checks the format and checksum of a presented string.
    pub fn parse(s: &str) -> Result<RawKey, KeyFormatError> {
        check_format(s)?;
        Ok(RawKey(s.to_owned()))
    }

    /// The secret itself: for hashing and for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The part before the random body, e.g. `kw_live`.
    pub fn prefix(&self) -> &str {
        &self.0[..self.0.len() - BODY_LEN - 1]
    }

    /// The display hint: prefix and the last four characters, e.g. `kw_live_…x9Qz`.
    pub fn hint(&self) -> String {
        hint_of(&self.0)
    }
}

impl fmt::Debug for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawKey({})", self.hint())
    }
}

impl fmt::Display for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

/// The hint of a string already known to be a well-formed key.
fn hint_of(s: &str) -> String {
    let prefix = &s[..s.len() - BODY_LEN - 1];
    format!("{prefix}_…{}", &s[s.len() - 4..])
}

/// Validates format and checksum without allocating: the first thing the
/// verify path does, so malformed input never reaches a lookup.
pub fn check_format(s: &str) -> Result<(), KeyFormatError> {
    let b = s.as_bytes();
    if b.len() > MAX_KEY_LEN || b.len() < 2 + 1 + BODY_LEN {
        return Err(KeyFormatError::Length);
    }
    let body_start = b.len() - BODY_LEN;
    if b[body_start - 1] != b'_' {
        return Err(KeyFormatError::Prefix);
    }
    if !b[body_start..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(KeyFormatError::Alphabet);
    }
    // The body is ASCII, so these slices fall on char boundaries.
    let prefix = &s[..body_start - 1];
    if !is_valid_prefix(prefix) {
        return Err(KeyFormatError::Prefix);
    }
    let sum_start = b.len() - CHECKSUM_LEN;
    let expected = decode_base62(&b[sum_start..]).ok_or(KeyFormatError::Checksum)?;
    if crc32fast::hash(&b[..sum_start]) != expected {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// Finds candidate keys in arbitrary text: runs of `[a-z0-9_]` followed by a
/// base62 body, kept only when the checksum holds. Returns byte ranges.
pub fn find_keys(text: &str) -> Vec<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // A token is a maximal run of ASCII alphanumerics and underscores.
        if !(b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let token = &text[start..i];
        if check_format(token).is_ok() {
            found.push(start..i);
        }
    }
    found
}

/// `n` uniformly random base62 characters from the OS CSPRNG, by rejection
/// sampling (bytes ≥ 248 are dropped so that `b % 62` has no bias).
pub fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).expect("the OS random number generator failed");
        for &byte in &buf {
            if byte < 248 && out.len() < n {
                out.push(ALPHABET[(byte % 62) as usize] as char);
            }
        }
    }
    out
}

fn push_base62_fixed(out: &mut String, mut v: u32) {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    out.extend(digits.iter().map(|&d| d as char));
}

fn decode_base62(digits: &[u8]) -> Option<u32> {
    let mut v: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return None,
        };
        v = v * 62 + d as u64;
    }
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests;
