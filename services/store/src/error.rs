//! The store's one error type.

/// Everything that can go wrong in the store.
///
/// `Display` never contains SQL text, file paths or connection strings; the cause, when there is
/// one, is available through [`std::error::Error::source`] for logging.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An entity with this tenant and id, or a context with this id, is already stored.
    #[error("already exists")]
    AlreadyExists,
    /// The entity to update does not exist.
    #[error("not found")]
    NotFound,
    /// The `id_pattern` of a query is not a valid regular expression.
    #[error("invalid id pattern: {0}")]
    InvalidPattern(String),
    /// The database URL names neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL scheme (expected sqlite: or postgres:)")]
    UnsupportedUrl,
    /// The directory of the SQLite database file could not be created.
    #[error("cannot create the database directory")]
    CreateDirectory(#[source] std::io::Error),
    /// Applying the embedded schema migrations failed.
    #[error("database migration failed")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// An append to an audit log did not start at its end: `expected` is the log's size, the
    /// only index an append may start at, `found` the index it started at. Nothing was written.
    #[error("audit log append at index {found}, but the log has {expected} entries")]
    AuditConflict {
        /// The log's size when the append was tried.
        expected: u64,
        /// The first index of the refused append.
        found: u64,
    },
    /// A write would change what an audit log already holds (a subtree hash, or the checkpoint
    /// note of a tree size); the log is append-only. Nothing was written.
    #[error("audit log is append-only: {0} would change")]
    AuditOverwrite(String),
    /// An audit-log range or index the log cannot have: a range ending before it starts, an
    /// index beyond 2^63 − 1, the hash of a subtree the log does not complete, a checkpoint of a
    /// size the log has not reached.
    #[error("audit log index out of range: {0}")]
    AuditOutOfRange(String),
    /// A stored row could not be turned back into a record (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database error (connection, I/O, constraint, timeout).
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        // PostgreSQL rejects a malformed regular expression with SQLSTATE 2201B
        // (invalid_regular_expression); report it like the up-front check does.
        if let sqlx::Error::Database(database_error) = &error
            && database_error.code().as_deref() == Some("2201B")
        {
            return Error::InvalidPattern(database_error.message().to_owned());
        }
        Error::Database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Error::Migration(error)
    }
}
