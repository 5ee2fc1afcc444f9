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
}

impl StoreError {
    /// Whether the failure is a full disk (or a database at its size limit):
    /// nothing was written, and retrying after freeing space will work.
    pub fn is_disk_full(&self) -> bool {
        let e = match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => e,
            _ => return false,
        };
        // SQLITE_FULL, or SQLITE_IOERR_WRITE (10 | 3 << 8), which some write
        // paths report for ENOSPC.
        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
            || matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == 778)
    }
}
