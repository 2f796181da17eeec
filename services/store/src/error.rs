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
