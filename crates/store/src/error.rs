//! Store failures, named for what went wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The row to change does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken (e.g. the same key hash twice).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database is newer than this binary understands.
    #[error("database schema version {found} is newer than this binary's {supported}; upgrade keyward")]
    TooNew { found: i64, supported: i64 },
    /// A stored value could not be read back.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("opening the store at {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    /// The file is not a database this key opens: encrypted without a key
    /// given, or under another key, or damaged.
    #[error("{path} cannot be read: {}", if *keyed {
        "it is not encrypted with this data dir's key (a file from another data dir, or damaged)"
    } else {
        "it is encrypted or damaged; if the data dir is encrypted, configure its master key (KEYWARD_MASTER_KEY)"
    })]
    Unreadable { path: String, keyed: bool },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// PostgreSQL failed while doing `context`.
    #[error("postgres, {context}: {source}")]
    Postgres { context: &'static str, source: postgres::Error },
    /// No connection to PostgreSQL could be had from the pool in time.
    #[error("postgres: no connection available: {0}; check that the database is up and reachable")]
    Pool(String),
}

/// A PostgreSQL failure; the store names what it was doing with [`StoreError::in_context`].
impl From<postgres::Error> for StoreError {
    fn from(source: postgres::Error) -> Self {
        StoreError::Postgres { context: "", source }
    }
}

impl StoreError {
    /// Names what the store was doing, on a PostgreSQL failure that does not say yet.
    pub(crate) fn in_context(self, context: &'static str) -> Self {
        match self {
            StoreError::Postgres { context: "", source } => StoreError::Postgres { context, source },
            e => e,
        }
    }

    /// Whether the database could not be reached (no connection, or it closed):
    /// nothing was written, and retrying later may work.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Postgres { source, .. } => {
                source.is_closed()
                    || source
                        .code()
                        .is_some_and(|c| c.code().starts_with("08") || *c == postgres::error::SqlState::ADMIN_SHUTDOWN)
                    || std::error::Error::source(source).is_some_and(|s| s.is::<std::io::Error>())
            }
            _ => false,
        }
    }

    /// Whether the failure is a full disk (or a database at its size limit):
    /// nothing was written, and retrying after freeing space will work.
    pub fn is_disk_full(&self) -> bool {
        let e = match self {
            StoreError::Postgres { source, .. } => {
                return source.code() == Some(&postgres::error::SqlState::DISK_FULL);
            }
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => e,
            _ => return false,
        };
        // SQLITE_FULL, or SQLITE_IOERR_WRITE (10 | 3 << 8), which some write
        // paths report for ENOSPC.
        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
            || matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == 778)
    }
}

/// The data dir's keyring (data keys wrapped by the master key) could not be
/// used. Every message says what to do next; none carries key material.
#[derive(Debug, Error)]
pub enum KeyringError {
    #[error(
        "data dir {dir} is encrypted (it has keyring.json) but no master key is configured; \
         set KEYWARD_MASTER_KEY, KEYWARD_MASTER_KEY_FILE or KEYWARD_MASTER_KEY_COMMAND to the master key with id {wanted}"
    )]
    MasterKeyMissing { dir: String, wanted: String },
    #[error(
        "the master key given (id {given}) does not open {dir}: its data keys are wrapped by the master key with id {wanted}; \
         give that key, or list it in KEYWARD_MASTER_KEY_PREVIOUS while the new one is current"
    )]
    WrongMasterKey { dir: String, given: String, wanted: String },
    #[error("keyring {path} is damaged: {detail}; restore it from the backup of the data dir")]
    Damaged { path: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the new master key is the current one (id {0}); generate another with `keyward master-key generate`")]
    SameKey(String),
    /// The shared store that keeps a cluster's keyring failed.
    #[error("the cluster's keyring could not be read or written: {0}")]
    Shared(String),
}
