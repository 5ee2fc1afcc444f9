//! keyward's domain, with no IO and no async: the key format and its checksum
//! (`key`), the keyed hash stored in place of a key (`hash`), identifiers (`id`),
//! root-key roles (`role`), the verification outcome codes (`outcome`) and the
//! decision itself (`verify`), and envelope encryption's primitives (`seal`).
//!
//! Invariant: a raw key exists only inside [`key::RawKey`], whose `Debug` and
//! `Display` print the hint, never the secret.

pub mod error;
pub mod event;
pub mod hash;
pub mod histogram;
pub mod id;
pub mod key;
pub mod outcome;
pub mod policy;
pub mod redact;
pub mod role;
pub mod rollup;
pub mod seal;
pub mod time;
pub mod verify;
pub mod window;

pub use error::{KeyFormatError, PrefixError};
pub use hash::{KeyHash, KeyHasher, Pepper};
pub use key::{KeyPrefix, RawKey};
pub use outcome::Outcome;
pub use role::{Permission, Role};
