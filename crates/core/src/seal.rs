//! Envelope encryption's primitives: a 32-byte AES-256-GCM key ([`SecretKey`]),
//! used both as the master key (KEK) that wraps data keys and as a data key
//! (DEK) that seals secrets. A sealed value is `nonce (12) || ciphertext || tag (16)`
//! and is bound to its purpose by the associated data, so a sealed pepper cannot
//! be replayed as a sealed API key. Where keys live (the keyring file) is the
//! store's business; this module does no IO.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::SealError;

const NONCE: usize = 12;

/// 32 bytes of key material. `Debug` prints the key's id, never the key; the
/// bytes are wiped when it is dropped.
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl SecretKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the OS random number generator failed");
        SecretKey { bytes }
    }

    /// Reads 64 hex characters (surrounding white space ignored).
    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let v = Zeroizing::new(hex::decode(s.trim()).map_err(|_| SealError::Format)?);
        let mut bytes = Zeroizing::new([0u8; 32]);
        if v.len() != 32 {
            return Err(SealError::Format);
        }
        bytes.copy_from_slice(&v);
        Ok(SecretKey { bytes })
    }

    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        if raw.len() != 32 {
            return Err(SealError::Format);
        }
        bytes.copy_from_slice(raw);
        Ok(SecretKey { bytes })
    }

    /// The key as hex, for the one place that must hand it on (SQLCipher's
    /// `PRAGMA key`, `keyward master-key generate`). Wiped when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_ref()))
    }

    /// A public name for the key: 16 hex characters of SHA-256 over a label and
    /// the key. Written beside what it wraps, so that a wrong master key is
    /// named in the error rather than found by a failed decryption.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"keyward key id v1\0");
        h.update(self.bytes.as_ref());
        hex::encode(&h.finalize()[..8])
    }

    /// Encrypts `plain`, bound to `aad` (what the value is and whose it is).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(self.bytes.as_ref()).expect("32-byte key");
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let body = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts what [`SecretKey::seal`] made with the same `aad`. The result
    /// is wiped when dropped.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE + 16 {
            return Err(SealError::Open);
        }
        let cipher = Aes256Gcm::new_from_slice(self.bytes.as_ref()).expect("32-byte key");
        let (nonce, body) = sealed.split_at(NONCE);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }

    /// Wraps another key (a DEK under the master key).
    pub fn wrap(&self, aad: &[u8], key: &SecretKey) -> Vec<u8> {
        self.seal(aad, key.bytes.as_ref())
    }

    pub fn unwrap_key(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey, SealError> {
        let raw = self.open(aad, wrapped)?;
        SecretKey::from_bytes(&raw).map_err(|_| SealError::Open)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_its_aad() {
        let k = SecretKey::generate();
        let sealed = k.seal(b"pepper", b"secret bytes");
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(&k.open(b"pepper", &sealed).unwrap()[..], b"secret bytes");
        assert_eq!(k.open(b"key:1", &sealed), Err(SealError::Open));
        assert_eq!(SecretKey::generate().open(b"pepper", &sealed), Err(SealError::Open));
        let mut bent = sealed.clone();
        bent[20] ^= 1;
        assert_eq!(k.open(b"pepper", &bent), Err(SealError::Open));
        assert_eq!(k.open(b"pepper", &sealed[..10]), Err(SealError::Open));
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let k = SecretKey::generate();
        assert_ne!(k.seal(b"a", b"x"), k.seal(b"a", b"x"));
    }

    #[test]
    fn a_wrapped_key_unwraps_to_itself_and_ids_are_stable() {
        let kek = SecretKey::generate();
        let dek = SecretKey::generate();
        let w = kek.wrap(b"dek", &dek);
        assert_eq!(kek.unwrap_key(b"dek", &w).unwrap().id(), dek.id());
        let again = SecretKey::from_hex(&kek.to_hex()).unwrap();
        assert_eq!(again.id(), kek.id());
        assert_eq!(kek.id().len(), 16);
        assert!(!format!("{kek:?}").contains(kek.to_hex().as_str()));
        assert_eq!(SecretKey::from_hex("abcd").unwrap_err(), SealError::Format);
    }
}
