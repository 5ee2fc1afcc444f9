//! Errors of the domain layer, named for what failed.

use thiserror::Error;

/// Why a presented string is not a well-formed keyward key. The variants never
/// carry the presented string itself: it may be a real key with one typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyFormatError {
    #[error("key has the wrong length")]
    Length,
    #[error("key contains a character outside its alphabet")]
    Alphabet,
    #[error("key has no valid prefix")]
    Prefix,
    #[error("key checksum does not match")]
    Checksum,
}

/// Why a keyspace prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrefixError {
    #[error("prefix must be 2 to 32 characters long, got {0}")]
    Length(usize),
    #[error("prefix must start with a lowercase letter and contain only a-z, 0-9 and single '_' between words")]
    Charset,
}

/// A pepper (the server secret keying the hash) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PepperError {
    #[error("pepper must be 64 hex characters (32 bytes)")]
    Format,
}

/// A sealed secret or a wrapped data key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("a master key must be 64 hex characters (32 bytes)")]
    Format,
    #[error("sealed data is damaged, or was sealed under another key")]
    Open,
}
