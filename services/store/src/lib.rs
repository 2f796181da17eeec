//! Entity storage for the Civitas connector: one [`Store`] over embedded SQLite or PostgreSQL.
#![doc = include_str!("../README.md")]

mod error;
mod migrations;
mod ops;
mod record;
mod sql;

use std::slice;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite};

pub use crate::error::Error;
pub use crate::ops::Documents;
pub use crate::record::{
    BBox, ContextRecord, EntityQuery, EntityRecord, Extent, QueryPage, RegistrationRecord,
};
use crate::sql::Sql;

/// Reader connections of a SQLite store; writes go through one separate connection.
const SQLITE_READERS: u32 = 4;
/// How long a SQLite statement waits for a lock held by another process before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections of a PostgreSQL store.
const POSTGRES_CONNECTIONS: u32 = 16;

/// The entity store: a handle to a database of one of the supported kinds.
///
/// Cloning is cheap and shares the connection pools.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    /// SQLite allows one writer at a time. Writes queue for the single `writer` connection
    /// (fairly, inside the pool) instead of spinning in SQLite's busy handler; reads use
    /// `readers`, which WAL mode never blocks.
    Sqlite {
        readers: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
}

/// A borrowed pool, whichever the backend.
enum PoolRef<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

/// Runs `$body` on a connection from `$pool`, with `$db` naming the backend's sqlx database.
macro_rules! on_pool {
    ($pool:expr, |$connection:ident, $db:ident| $body:expr) => {
        match $pool {
            PoolRef::Sqlite(pool) => {
                type $db = Sqlite;
                let mut $connection = pool.acquire().await?;
                $body
            }
            PoolRef::Postgres(pool) => {
                type $db = Postgres;
                let mut $connection = pool.acquire().await?;
                $body
            }
        }
    };
}

/// Runs `$body` on the connection of the transaction `$transaction`.
macro_rules! on_transaction {
    ($transaction:expr, |$connection:ident, $db:ident| $body:expr) => {
        match &mut $transaction.inner {
            TransactionInner::Sqlite(transaction) => {
                type $db = Sqlite;
                let $connection = &mut **transaction;
                $body
            }
            TransactionInner::Postgres(transaction) => {
                type $db = Postgres;
                let $connection = &mut **transaction;
                $body
            }
        }
    };
}

impl Store {
    /// Connects to `url` and applies the embedded migrations.
    ///
    /// - `sqlite://PATH` (or `sqlite:PATH`): the file and its directory are created if missing;
    ///   WAL journal, `synchronous = NORMAL`, foreign keys on, 5 s busy timeout.
    ///   `sqlite::memory:` gives a private in-memory database on one connection.
    /// - `postgres://…` or `postgresql://…`.
    pub async fn open(url: &str) -> Result<Store, Error> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("sqlite") => Self::open_sqlite(url).await,
            Some("postgres" | "postgresql") => Self::open_postgres(url).await,
            _ => Err(Error::UnsupportedUrl),
        }
    }

    async fn open_sqlite(url: &str) -> Result<Store, Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .with_regexp();
        let migrator = migrations::migrator(migrations::SQLITE);
        if url.contains(":memory:") || url.contains("mode=memory") {
            // The database lives as long as its last connection: keep exactly one, forever.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?;
            migrator.run(&pool).await?;
            return Ok(Store {
                backend: Backend::Sqlite {
                    readers: pool.clone(),
                    writer: pool,
                },
            });
        }
        if let Some(directory) = options.get_filename().parent()
            && !directory.as_os_str().is_empty()
        {
            std::fs::create_dir_all(directory).map_err(Error::CreateDirectory)?;
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        // No ping before each use: an embedded connection cannot have been lost, and the ping is
        // a round trip to the connection's worker thread on every store call.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        migrator.run(&writer).await?;
        // `query_only` makes a write through a reader fail at once instead of taking the lock.
        let path = options.get_filename().display().to_string();
        let readers = SqlitePoolOptions::new()
            .max_connections(SQLITE_READERS)
            .test_before_acquire(false)
            .connect_with(options.create_if_missing(false).pragma("query_only", "ON"))
            .await?;
        tracing::info!(backend = "sqlite", %path, "entity store opened");
        Ok(Store {
            backend: Backend::Sqlite { readers, writer },
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, Error> {
        let options = PgConnectOptions::from_str(url)?;
        // Host and database only: the URL may carry a password.
        let (host, database) = (
            options.get_host().to_owned(),
            options.get_database().unwrap_or_default().to_owned(),
        );
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .connect_with(options)
            .await?;
        migrations::migrator(migrations::POSTGRES)
            .run(&pool)
            .await?;
        tracing::info!(backend = "postgres", %host, %database, "entity store opened");
        Ok(Store {
            backend: Backend::Postgres(pool),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn readers(&self) -> PoolRef<'_> {
        match &self.backend {
            Backend::Sqlite { readers, .. } => PoolRef::Sqlite(readers),
            Backend::Postgres(pool) => PoolRef::Postgres(pool),
        }
    }

    fn writer(&self) -> PoolRef<'_> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => PoolRef::Sqlite(writer),
            Backend::Postgres(pool) => PoolRef::Postgres(pool),
        }
    }

    /// Checks that the database answers (for `GET /ready`).
    pub async fn ping(&self) -> Result<(), Error> {
        on_pool!(self.readers(), |connection, Db| {
            sqlx::query::<Db>("SELECT 1")
                .execute(&mut *connection)
                .await?;
            Ok(())
        })
    }

    /// The entity `id` of `tenant`, if stored.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<EntityRecord>, Error> {
        let ids = [id.to_owned()];
        let records = on_pool!(self.readers(), |connection, Db| {
            ops::get_many::<Db>(&mut connection, tenant, &ids, "").await?
        });
        Ok(records.into_iter().next())
    }

    /// The entities of `tenant` with these ids, in id order; missing ids are skipped.
    pub async fn get_many(&self, tenant: &str, ids: &[String]) -> Result<Vec<EntityRecord>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::get_many::<Db>(&mut connection, tenant, ids, "").await
        })
    }

    /// One page of the entities of `tenant` matching `query`, in ascending id order.
    ///
    /// The page and the count are two statements; a write committed between them can make them
    /// disagree by that write.
    pub async fn query(&self, tenant: &str, query: &EntityQuery) -> Result<QueryPage, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::query::<Db>(&mut connection, tenant, query).await
        })
    }

    /// Starts a write transaction. Dropping it without [`Transaction::commit`] rolls it back.
    ///
    /// On SQLite there is one writer at a time: this waits until the previous transaction ends,
    /// so never call it while holding another `Transaction` of the same store.
    pub async fn begin(&self) -> Result<Transaction, Error> {
        let inner = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                // IMMEDIATE takes the write lock now, so the transaction never has to upgrade a
                // read lock later (which can fail with SQLITE_BUSY regardless of the timeout).
                TransactionInner::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres(pool) => TransactionInner::Postgres(pool.begin().await?),
        };
        Ok(Transaction { inner })
    }

    /// Stores a hosted `@context` (ETSI GS CIM 009, clause 5.13.2); `Error::AlreadyExists` if
    /// its id is taken.
    pub async fn put_context(&self, record: &ContextRecord) -> Result<(), Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::put_context::<Db>(&mut connection, record).await
        })
    }

    /// The hosted `@context` with this id, if any.
    pub async fn get_context(&self, id: &str) -> Result<Option<ContextRecord>, Error> {
        let records = on_pool!(self.readers(), |connection, Db| {
            ops::get_contexts::<Db>(&mut connection, Some(id)).await?
        });
        Ok(records.into_iter().next())
    }

    /// All hosted `@context`s, oldest first.
    pub async fn list_contexts(&self) -> Result<Vec<ContextRecord>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::get_contexts::<Db>(&mut connection, None).await
        })
    }

    /// Deletes a hosted `@context`; `false` if there was none with this id.
    pub async fn delete_context(&self, id: &str) -> Result<bool, Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::delete_context::<Db>(&mut connection, id).await
        })
    }

    /// Stores a new document (a context source registration, clause 5.9.2, or a registration
    /// subscription, clause 5.11.2) of `tenant`; `Error::AlreadyExists` if its id is taken.
    pub async fn put_document(
        &self,
        documents: Documents,
        tenant: &str,
        record: &RegistrationRecord,
    ) -> Result<(), Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::put_document::<Db>(&mut connection, documents, tenant, record).await
        })
    }

    /// Replaces a document's body and modification time, if it was last modified at `expected`;
    /// `false` if it is gone or was modified since (the caller reads it again).
    pub async fn replace_document(
        &self,
        documents: Documents,
        tenant: &str,
        record: &RegistrationRecord,
        expected: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::replace_document::<Db>(&mut connection, documents, tenant, record, expected).await
        })
    }

    /// The document `id` of `tenant`, if stored.
    pub async fn get_document(
        &self,
        documents: Documents,
        tenant: &str,
        id: &str,
    ) -> Result<Option<RegistrationRecord>, Error> {
        let records = on_pool!(self.readers(), |connection, Db| {
            ops::get_documents::<Db>(&mut connection, documents, tenant, Some(id)).await?
        });
        Ok(records.into_iter().next())
    }

    /// All documents of `tenant`, in id order.
    pub async fn list_documents(
        &self,
        documents: Documents,
        tenant: &str,
    ) -> Result<Vec<RegistrationRecord>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::get_documents::<Db>(&mut connection, documents, tenant, None).await
        })
    }

    /// Deletes a document; `false` if there was none with this id.
    pub async fn delete_document(
        &self,
        documents: Documents,
        tenant: &str,
        id: &str,
    ) -> Result<bool, Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::delete_document::<Db>(&mut connection, documents, tenant, id).await
        })
    }

    /// Every tenant with at least one document.
    pub async fn document_tenants(&self, documents: Documents) -> Result<Vec<String>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::document_tenants::<Db>(&mut connection, documents).await
        })
    }

    /// Every entity type of `tenant` with its number of entities, in type order.
    pub async fn type_counts(&self, tenant: &str) -> Result<Vec<(String, i64)>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::type_counts::<Db>(&mut connection, tenant).await
        })
    }

    /// Where and since when `tenant` holds entities: the bounding box of their `location`s, the
    /// earliest creation and the earliest observation. One pass over the tenant's rows.
    pub async fn extent(&self, tenant: &str) -> Result<Extent, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::extent::<Db>(&mut connection, tenant).await
        })
    }

    /// Up to `limit` entities stored before the store kept their first observation
    /// ([`EntityRecord::first_observed`], migration 11): tenant, id and body (`None` for one
    /// deleted meanwhile). The store does not read bodies: the caller computes each one's first
    /// observation and stores it with [`Store::set_first_observed`], which takes it off this
    /// list. Empty once all are done.
    pub async fn observations_pending(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, String, Option<String>)>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::observations_pending::<Db>(&mut connection, limit).await
        })
    }

    /// How many entities [`Store::observations_pending`] has left to list.
    pub async fn observations_pending_count(&self) -> Result<u64, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::observations_pending_count::<Db>(&mut connection).await
        })
    }

    /// Stores the first observations of entities of `tenant` listed by
    /// [`Store::observations_pending`], and takes them off that list, in one transaction.
    pub async fn set_first_observed(
        &self,
        tenant: &str,
        values: &[(String, Option<chrono::DateTime<chrono::Utc>>)],
    ) -> Result<(), Error> {
        let values: Vec<(String, Option<i64>)> = values
            .iter()
            .map(|(id, observed)| (id.clone(), observed.map(crate::sql::to_micros)))
            .collect();
        let mut transaction = self.begin().await?;
        on_transaction!(transaction, |connection, Db| {
            ops::set_first_observed::<Db>(connection, tenant, &values).await
        })?;
        transaction.commit().await
    }

    /// Every (entity type, attribute name) pair some entity of `tenant` has, in that order.
    pub async fn type_attribute_pairs(&self, tenant: &str) -> Result<Vec<(String, String)>, Error> {
        let mut shapes = self.type_shapes(tenant).await?;
        shapes.retain(|(_, attribute)| !attribute.is_empty());
        Ok(shapes)
    }

    /// What `tenant`'s entities are made of: every (entity type, attribute name) pair some entity
    /// has, and `(type, "")` for a type with an entity that has no attribute, in that order.
    pub async fn type_shapes(&self, tenant: &str) -> Result<Vec<(String, String)>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::type_shapes::<Db>(&mut connection, tenant).await
        })
    }

    /// Records capability-token revocation ids (hex) as revoked; ids already revoked stay as
    /// they were.
    pub async fn revoke(
        &self,
        revocation_ids: &[String],
        at: chrono::DateTime<chrono::Utc>,
        reason: &str,
    ) -> Result<(), Error> {
        let at = crate::sql::to_micros(at);
        on_pool!(self.writer(), |connection, Db| {
            ops::revoke::<Db>(&mut connection, revocation_ids, at, reason).await
        })
    }

    /// Which of these revocation ids are revoked (sorted).
    pub async fn revoked_among(&self, revocation_ids: &[String]) -> Result<Vec<String>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::revoked_among::<Db>(&mut connection, revocation_ids).await
        })
    }

    /// Every revoked id (sorted), to fill a service's in-memory list at start-up.
    pub async fn all_revoked(&self) -> Result<Vec<String>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::all_revoked::<Db>(&mut connection).await
        })
    }
}

/// # Audit logs
///
/// Storage for the audit logs (issue 4): per named log (for example a department), an
/// append-only RFC 9162 Merkle tree served as C2SP tlog-tiles. The store keeps three things
/// and computes nothing:
///
/// - the **entries**, numbered from 0 without gaps; the log's size is their number;
/// - the **hashes of complete subtrees** in tlog-tiles numbering, `(level, index, hash)`: level
///   `L`, index `N` is the hash of the leaves `[N·2^L, (N+1)·2^L)`, level 0 the leaf hashes;
/// - the signed **checkpoints**, one note per tree size.
///
/// Nothing is ever changed or deleted: [`Error::AuditConflict`] refuses an append that does not
/// start at the log's end and [`Error::AuditOverwrite`] a hash or checkpoint that differs from
/// the stored one. Hashes are plain `[u8; 32]` (SHA-256); the Merkle arithmetic is
/// `civitas-audit`'s. Logs are independent of each other and of the entities.
impl Store {
    /// Appends `entries` to `log` at indexes `first_index..` and stores `hashes`, each
    /// `(level, index, hash)`, in one write transaction: all of it or nothing.
    ///
    /// - [`Error::AuditConflict`] unless `first_index` is the log's current size (another
    ///   writer appended first, or the caller's view of the log is stale);
    /// - [`Error::AuditOverwrite`] if a hash is already stored, or given twice, with another
    ///   value (the same value again is accepted and stored once);
    /// - [`Error::AuditOutOfRange`] for a hash of a subtree the grown log does not complete, or
    ///   a size beyond 2^63 − 1.
    ///
    /// Batches of any length are written in chunks of a thousand rows per statement.
    pub async fn audit_append(
        &self,
        log: &str,
        first_index: u64,
        entries: &[Vec<u8>],
        hashes: &[(u8, u64, [u8; 32])],
    ) -> Result<(), Error> {
        let plan = ops::AuditAppend::plan(first_index, entries, hashes)?;
        if plan.at_once(entries) {
            // The appender's usual batch: one round trip, its own transaction.
            return on_pool!(self.writer(), |connection, Db| {
                ops::audit_append_at_once::<Db>(&mut connection, log, first_index, entries, &plan)
                    .await
            });
        }
        let mut transaction = self.begin().await?;
        on_transaction!(transaction, |connection, Db| {
            ops::audit_append::<Db>(connection, log, first_index, entries, plan).await
        })?;
        transaction.commit().await
    }

    /// The number of entries of `log` (0 for a log never appended to).
    pub async fn audit_size(&self, log: &str) -> Result<u64, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_size::<Db>(&mut connection, log).await
        })
    }

    /// The entries `start..end` of `log` (half-open), in order: fewer, or none, where the range
    /// goes beyond the log's end. [`Error::AuditOutOfRange`] if `end < start`.
    pub async fn audit_entries(
        &self,
        log: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Vec<u8>>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_entries::<Db>(&mut connection, log, start, end).await
        })
    }

    /// The stored hashes of the subtrees `(level, index)` of `log`, in the order asked, `None`
    /// for a subtree whose hash is not stored. A few statements however many are asked for.
    pub async fn audit_hashes(
        &self,
        log: &str,
        subtrees: &[(u8, u64)],
    ) -> Result<Vec<Option<[u8; 32]>>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_hashes::<Db>(&mut connection, log, subtrees).await
        })
    }

    /// Stores the checkpoint `note` of `log` at tree size `size`, created `at`.
    ///
    /// Storing the same note again is a no-op; [`Error::AuditOverwrite`] if another note is
    /// stored for this size, [`Error::AuditOutOfRange`] if the log has fewer than `size`
    /// entries.
    pub async fn audit_put_checkpoint(
        &self,
        log: &str,
        size: u64,
        note: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Error> {
        let at = crate::sql::to_micros(at);
        on_pool!(self.writer(), |connection, Db| {
            ops::audit_put_checkpoint::<Db>(&mut connection, log, size, note, at).await
        })
    }

    /// The checkpoint of `log` with the largest tree size, as `(size, note)`.
    pub async fn audit_latest_checkpoint(&self, log: &str) -> Result<Option<(u64, String)>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_latest_checkpoint::<Db>(&mut connection, log).await
        })
    }

    /// The signing seed of `log`: the one stored, else `candidate`, stored now. Concurrent first
    /// calls agree: the first stored seed wins and is returned to every caller.
    pub async fn audit_key_seed(&self, log: &str, candidate: &[u8; 32]) -> Result<[u8; 32], Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::audit_key_seed::<Db>(&mut connection, log, candidate).await
        })
    }

    /// The latest checkpoint this service witnessed of the log `origin`: its size and note.
    pub async fn audit_witnessed(&self, origin: &str) -> Result<Option<(u64, String)>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_witnessed::<Db>(&mut connection, origin).await
        })
    }

    /// Remembers the checkpoint `note` (of `size` entries) of the log `origin` as witnessed, if
    /// the size remembered is still `expected` (`None`: nothing yet); whether it did.
    pub async fn audit_put_witnessed(
        &self,
        origin: &str,
        expected: Option<u64>,
        size: u64,
        note: &str,
    ) -> Result<bool, Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::audit_put_witnessed::<Db>(&mut connection, origin, expected, size, note).await
        })
    }

    /// Stores a witness's cosignature line for the checkpoint of `log` at `size`.
    pub async fn audit_put_cosignature(
        &self,
        log: &str,
        size: u64,
        witness: &str,
        line: &str,
    ) -> Result<(), Error> {
        on_pool!(self.writer(), |connection, Db| {
            ops::audit_put_cosignature::<Db>(&mut connection, log, size, witness, line).await
        })
    }

    /// The cosignature lines stored for the checkpoint of `log` at `size`.
    pub async fn audit_cosignatures(&self, log: &str, size: u64) -> Result<Vec<String>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_cosignatures::<Db>(&mut connection, log, size).await
        })
    }

    /// The lowest index of `log` whose leaf hash is `hash`, if any (a scan of the log's leaves).
    pub async fn audit_leaf_index(&self, log: &str, hash: &[u8; 32]) -> Result<Option<u64>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_leaf_index::<Db>(&mut connection, log, hash).await
        })
    }

    /// The checkpoint note of `log` at tree size `size`, if one was stored.
    pub async fn audit_checkpoint(&self, log: &str, size: u64) -> Result<Option<String>, Error> {
        on_pool!(self.readers(), |connection, Db| {
            ops::audit_checkpoint::<Db>(&mut connection, log, size).await
        })
    }
}

/// A write transaction: the read-modify-write of one request. Dropping it rolls it back.
pub struct Transaction {
    inner: TransactionInner,
}

enum TransactionInner {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Transaction {
    /// The entity, locked until the transaction ends.
    pub async fn get_for_update(
        &mut self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<EntityRecord>, Error> {
        let ids = [id.to_owned()];
        let records = self.get_many_for_update(tenant, &ids).await?;
        Ok(records.into_iter().next())
    }

    /// The entities with these ids, in id order (missing ones skipped), locked until the
    /// transaction ends. Rows are locked in id order, so concurrent batches cannot deadlock.
    pub async fn get_many_for_update(
        &mut self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<EntityRecord>, Error> {
        on_transaction!(self, |connection, Db| {
            ops::get_many::<Db>(connection, tenant, ids, <Db as Sql>::FOR_UPDATE).await
        })
    }

    /// Inserts a new entity; `Error::AlreadyExists` if `(tenant, id)` is taken. The error leaves
    /// the transaction usable.
    pub async fn insert(&mut self, tenant: &str, record: &EntityRecord) -> Result<(), Error> {
        match self.insert_many(tenant, slice::from_ref(record)).await?[..] {
            [true] => Ok(()),
            _ => Err(Error::AlreadyExists),
        }
    }

    /// Inserts the entities that do not exist yet, in a few multi-row statements; returns, for
    /// each record, whether it was inserted (`false`: the id was taken, possibly by an earlier
    /// record of the same batch).
    pub async fn insert_many(
        &mut self,
        tenant: &str,
        records: &[EntityRecord],
    ) -> Result<Vec<bool>, Error> {
        on_transaction!(self, |connection, Db| {
            ops::insert_many::<Db>(connection, tenant, records).await
        })
    }

    /// Replaces an existing entity and its index rows; `Error::NotFound` if it does not exist.
    pub async fn update(&mut self, tenant: &str, record: &EntityRecord) -> Result<(), Error> {
        on_transaction!(self, |connection, Db| {
            ops::update::<Db>(connection, tenant, record).await
        })
    }

    /// Inserts the entity or replaces it entirely (`created_at` included).
    pub async fn upsert(&mut self, tenant: &str, record: &EntityRecord) -> Result<(), Error> {
        self.upsert_many(tenant, slice::from_ref(record)).await
    }

    /// Inserts or replaces many entities in a few multi-row statements; the way to write
    /// batches (ETSI GS CIM 009, clause 5.6.8). Of records with the same id, the last wins.
    pub async fn upsert_many(
        &mut self,
        tenant: &str,
        records: &[EntityRecord],
    ) -> Result<(), Error> {
        on_transaction!(self, |connection, Db| {
            ops::upsert_many::<Db>(connection, tenant, records).await
        })
    }

    /// Deletes the entity; `false` if it did not exist.
    pub async fn delete(&mut self, tenant: &str, id: &str) -> Result<bool, Error> {
        let ids = [id.to_owned()];
        Ok(self.delete_many(tenant, &ids).await? == [true])
    }

    /// Deletes the entities with these ids; returns, for each id, whether it existed.
    pub async fn delete_many(&mut self, tenant: &str, ids: &[String]) -> Result<Vec<bool>, Error> {
        on_transaction!(self, |connection, Db| {
            ops::delete_many::<Db>(connection, tenant, ids).await
        })
    }

    /// Deletes every entity of `tenant` matching `query` (limit, offset and count ignored; an
    /// empty query matches the whole tenant); returns how many were deleted.
    pub async fn purge(&mut self, tenant: &str, query: &EntityQuery) -> Result<u64, Error> {
        on_transaction!(self, |connection, Db| {
            ops::purge::<Db>(connection, tenant, query).await
        })
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), Error> {
        match self.inner {
            TransactionInner::Sqlite(transaction) => transaction.commit().await?,
            TransactionInner::Postgres(transaction) => transaction.commit().await?,
        }
        Ok(())
    }
}
