//! The keyed hash stored in place of a key: HMAC-SHA256 of the whole key under
//! a server secret (the pepper). Peppers are versioned so that the secret can
//! change: each stored hash records the version it was made with.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::PepperError;

type HmacSha256 = Hmac<Sha256>;

/// 32 bytes of server secret. `Debug` never prints it.
#[derive(Clone)]
pub struct Pepper {
    version: u32,
    bytes: [u8; 32],
}

impl Pepper {
    pub fn new(version: u32, bytes: [u8; 32]) -> Self {
        Pepper { version, bytes }
    }

    /// A fresh pepper from the OS CSPRNG.
    pub fn generate(version: u32) -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        Pepper { version, bytes }
    }

    /// Reads 64 hex characters (surrounding white space ignored).
    pub fn from_hex(version: u32, s: &str) -> Result<Self, PepperError> {
        let v = hex::decode(s.trim()).map_err(|_| PepperError::Format)?;
        let bytes: [u8; 32] = v.try_into().map_err(|_| PepperError::Format)?;
        Ok(Pepper { version, bytes })
    }

    /// The secret itself, for sealing it at rest.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pepper(v{})", self.version)
    }
}

/// The stored form of a key: 32 bytes of HMAC output. Safe to log in short form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl std::hash::Hash for KeyHash {
    /// The bytes are already a keyed, uniform hash: eight of them are plenty
    /// for a hash table, and writing one `u64` lets a pass-through hasher work.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

impl KeyHash {
    pub fn from_slice(b: &[u8]) -> Option<KeyHash> {
        Some(KeyHash(b.try_into().ok()?))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..6]))
    }
}

/// Hashes keys under the current pepper, and under older ones still in use.
/// The HMAC state is keyed once at start and cloned per hash, which saves the
/// two key-pad compressions on every verify.
#[derive(Clone)]
pub struct KeyHasher {
    current: (u32, HmacSha256),
    older: Vec<(u32, HmacSha256)>,
}

impl KeyHasher {
    /// `current` hashes new keys; `older` peppers still verify keys made with them.
    pub fn new(current: &Pepper, older: &[Pepper]) -> Self {
        let mk = |p: &Pepper| (p.version, HmacSha256::new_from_slice(&p.bytes).expect("HMAC takes any key length"));
        KeyHasher { current: mk(current), older: older.iter().map(mk).collect() }
    }

    /// Every configured pepper version, current first.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.current.0).chain(self.older.iter().map(|(v, _)| *v))
    }

    /// The version of the pepper that new hashes use.
    pub fn current_version(&self) -> u32 {
        self.current.0
    }

    /// The hash of `key` under the current pepper.
    pub fn hash(&self, key: &str) -> KeyHash {
        Self::run(&self.current.1, key)
    }

    /// The hashes of `key` under the older peppers only (the current one is
    /// [`KeyHasher::hash`]), so the verify path hashes under each pepper once.
    pub fn hash_older<'a>(&'a self, key: &'a str) -> impl Iterator<Item = KeyHash> + 'a {
        self.older.iter().map(move |(_, m)| Self::run(m, key))
    }

    /// The hashes of `key` under every pepper, current first, with versions.
    pub fn hash_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (u32, KeyHash)> + 'a {
        std::iter::once(&self.current).chain(self.older.iter()).map(move |(v, m)| (*v, Self::run(m, key)))
    }

    /// A short, non-reversible fingerprint of any presented string, for
    /// correlating repeated bad attempts without keeping what was presented.
    pub fn fingerprint(&self, presented: &str) -> String {
        let mut m = self.current.1.clone();
        m.update(b"fingerprint\0");
        m.update(presented.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..8])
    }

    fn run(m: &HmacSha256, key: &str) -> KeyHash {
        let mut m = m.clone();
        m.update(key.as_bytes());
        KeyHash(m.finalize().into_bytes().into())
    }
}

/// The label stored beside each hash, naming its algorithm and pepper version.
pub fn hash_kind(version: u32) -> String {
    format!("hmac-sha256:v{version}")
}

/// 64-bit FNV-1a over `parts`, each followed by a 0 byte except the last:
/// a stable, cheap hash for indexes and bounded in-memory sets (not a secret).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = h.wrapping_mul(0x0000_0100_0000_01b3); // a 0 byte: h ^ 0 == h
        }
        for &b in part.iter() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod fnv_tests {
    use super::fnv1a;

    /// Stored index numbers depend on these values: they must never change.
    #[test]
    fn fnv1a_is_the_standard_64_bit_fnv1a() {
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(&[b"ws", b"v"]), fnv1a(&[b"ws\0v"]), "parts are joined by a 0 byte");
    }
}
