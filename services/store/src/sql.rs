//! What differs between the two SQL dialects, behind one small trait.
//!
//! The statements themselves are written once, in `ops`, against [`Sql`]. Placeholders
//! (`?` vs `$n`) are handled by sqlx's `QueryBuilder`; the rest (regular-expression operator,
//! row locks, binding lists of ids, locking an audit log) is here.

use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::{Database, IntoArguments, Postgres, QueryBuilder, Row, Sqlite};
use std::fmt::Write as _;

use crate::ops::{EntryRow, LeafRow};
use crate::{BBox, ContextRecord, EntityRecord, Error, RegistrationRecord};

/// The entity columns every `SELECT` returns, in the order [`EntityRow`] decodes them.
pub(crate) const ENTITY_COLUMNS: &str = "e.id, e.types, e.scopes, e.attributes, e.created_at, \
     e.modified_at, e.min_lon, e.min_lat, e.max_lon, e.max_lat, e.first_observed_at, e.body";

/// The registration columns every `SELECT` returns, in the order [`RegistrationRow`] decodes them.
pub(crate) const REGISTRATION_COLUMNS: &str = "id, body, created_at, modified_at";

/// The context columns every `SELECT` returns, in the order [`ContextRow`] decodes them.
pub(crate) const CONTEXT_COLUMNS: &str = "id, url, kind, body, created_at";

/// Lists longer than this are bound as one JSON array on SQLite rather than one placeholder
/// each; callers that write also cut their id lists into chunks of this size.
pub(crate) const IN_LIST_CHUNK: usize = 1000;

/// A database dialect the store speaks.
pub(crate) trait Sql: Database<Arguments: IntoArguments<Self>> + HasStatementCache {
    /// The infix operator matching a string against a regular expression.
    const REGEX_MATCH: &'static str;
    /// The clause locking the selected rows until the transaction ends (empty when the whole
    /// database is already locked by the write transaction).
    const FOR_UPDATE: &'static str;

    fn push_text(query: &mut QueryBuilder<Self>, value: &str);
    fn push_integer(query: &mut QueryBuilder<Self>, value: i64);
    fn push_optional_integer(query: &mut QueryBuilder<Self>, value: Option<i64>);
    fn push_real(query: &mut QueryBuilder<Self>, value: Option<f64>);
    /// Binds a byte string (`BLOB` on SQLite, `BYTEA` on PostgreSQL).
    fn push_bytes(query: &mut QueryBuilder<Self>, value: &[u8]);
    /// Pushes a statement taking a lock on the audit log `log` that is held until the
    /// transaction ends, so that appends to one log happen one after the other; returns `false`
    /// (and pushes nothing) where a write transaction already excludes every other writer.
    fn push_lock_audit_log(query: &mut QueryBuilder<Self>, log: &str) -> bool;
    /// Pushes an `INSERT INTO audit_entries` of `rows` ([`crate::ops::entry_rows`]) at
    /// `first_index` of `log` that fails, inserting nothing, unless the log then holds exactly
    /// `first_index` entries (the first index becomes -1, which the table's CHECK refuses). Its
    /// text is the same whatever the number and length of the rows, so it is prepared once per
    /// connection.
    fn push_audit_entries(
        query: &mut QueryBuilder<Self>,
        log: &str,
        first_index: i64,
        rows: &[EntryRow],
    );
    /// Pushes an `INSERT INTO audit_leaves` of `rows` ([`crate::ops::split_leaves`]) of `log`;
    /// its text is the same whatever their number.
    fn push_audit_leaves(query: &mut QueryBuilder<Self>, log: &str, rows: &[LeafRow]);
    /// Pushes an `INSERT INTO audit_hashes` of `hashes`, each `(level, index, hash)` with a
    /// level above 0, of `log`; its text is the same whatever their number.
    fn push_audit_hashes(
        query: &mut QueryBuilder<Self>,
        log: &str,
        hashes: &[(i16, i64, [u8; 32])],
    );
    /// Pushes what appends `entries` at `first_index` of `log` and stores `hashes` (none stored
    /// yet) all or nothing, in one round trip, on a connection outside any transaction: the
    /// statements of [`Sql::push_audit_entries`], [`Sql::push_audit_leaves`] (the leaf hashes)
    /// and [`Sql::push_audit_hashes`] (the others), in a
    /// transaction of their own. Returns `true` if a failure can leave that transaction open
    /// (then `ROLLBACK` ends it).
    fn push_audit_append(
        query: &mut QueryBuilder<Self>,
        log: &str,
        first_index: i64,
        entries: &[Vec<u8>],
        hashes: &[(i16, i64, [u8; 32])],
    ) -> bool;
    /// Whether lists (ids, rows of a bulk insert) are bound as arrays, which keeps the text of
    /// a statement independent of their length.
    const LISTS_ARE_ARRAYS: bool;

    /// Pushes a predicate: the byte string `column` holds `value` somewhere.
    fn push_contains_bytes(query: &mut QueryBuilder<Self>, column: &str, value: &[u8]);
    /// Pushes a predicate tail matching any of `values` (not empty): `= x`, `IN (…)`, `= ANY(…)`.
    fn push_in_list(query: &mut QueryBuilder<Self>, values: &[&str]);
    /// Pushes the source rows of `INSERT INTO entities (tenant, id, …, body)`.
    fn push_entity_rows(query: &mut QueryBuilder<Self>, tenant: &str, records: &[&EntityRecord]);
    /// Pushes the source rows of `INSERT INTO <index table> (tenant, <value>, entity_id)` from
    /// `(value, entity_id)` pairs.
    fn push_index_rows(query: &mut QueryBuilder<Self>, tenant: &str, rows: &[(&str, &str)]);
    fn rows_affected(result: &Self::QueryResult) -> u64;

    fn entity_row(row: &Self::Row) -> Result<EntityRow, sqlx::Error>;
    fn context_row(row: &Self::Row) -> Result<ContextRow, sqlx::Error>;
    fn registration_row(row: &Self::Row) -> Result<RegistrationRow, sqlx::Error>;
    /// The first column as an integer.
    fn first_integer(row: &Self::Row) -> Result<i64, sqlx::Error>;
    /// The first column as a string.
    fn first_text(row: &Self::Row) -> Result<String, sqlx::Error>;
    /// The first two columns as strings.
    fn two_texts(row: &Self::Row) -> Result<(String, String), sqlx::Error>;
    /// Two texts and a nullable one.
    fn two_texts_and_maybe_one(
        row: &Self::Row,
    ) -> Result<(String, String, Option<String>), sqlx::Error>;
    /// The first column as an integer, the second as a string.
    fn integer_and_text(row: &Self::Row) -> Result<(i64, String), sqlx::Error>;
    /// The first column as bytes.
    fn first_bytes(row: &Self::Row) -> Result<Vec<u8>, sqlx::Error>;
    /// An `audit_entries` or `audit_leaves` row: `idx`, `width`, and the packed bytes.
    fn packed_row(row: &Self::Row) -> Result<(i64, i64, Vec<u8>), sqlx::Error>;
    /// An `audit_hashes` row: `level` (`SMALLINT`), `idx`, `hash`.
    fn hash_row(row: &Self::Row) -> Result<(i16, i64, Vec<u8>), sqlx::Error>;
    /// Four nullable reals and two nullable integers (a bounding box and two times).
    fn extent_row(row: &Self::Row) -> Result<ExtentRow, sqlx::Error>;
}

/// The first key of the PostgreSQL advisory locks serialising appends to an audit log (the
/// second is a hash of the log's name): the bytes of `"AUDT"`, so that the locks do not collide
/// with any other use of two-key advisory locks.
const AUDIT_LOCK_CLASS: i32 = 0x4155_4454;

/// The aggregates of a tenant's `entities` rows: a bounding box, the earliest creation and the
/// earliest observation.
pub(crate) type ExtentRow = ([Option<f64>; 4], [Option<i64>; 2]);

/// The raw columns of an `entities` row.
pub(crate) struct EntityRow {
    id: String,
    types: String,
    scopes: String,
    attributes: String,
    created_at: i64,
    modified_at: i64,
    bbox: [Option<f64>; 4],
    first_observed_at: Option<i64>,
    body: String,
}

/// The raw columns of a `jsonld_contexts` row.
pub(crate) struct ContextRow {
    id: String,
    url: String,
    kind: String,
    body: String,
    created_at: i64,
}

/// The raw columns of a `csource_registrations` row.
pub(crate) struct RegistrationRow {
    id: String,
    body: String,
    created_at: i64,
    modified_at: i64,
}

/// Row decoding is the same code for both backends, only the types differ.
macro_rules! decode_rows {
    () => {
        fn entity_row(row: &Self::Row) -> Result<EntityRow, sqlx::Error> {
            Ok(EntityRow {
                id: row.try_get(0)?,
                types: row.try_get(1)?,
                scopes: row.try_get(2)?,
                attributes: row.try_get(3)?,
                created_at: row.try_get(4)?,
                modified_at: row.try_get(5)?,
                bbox: [
                    row.try_get(6)?,
                    row.try_get(7)?,
                    row.try_get(8)?,
                    row.try_get(9)?,
                ],
                first_observed_at: row.try_get(10)?,
                body: row.try_get(11)?,
            })
        }

        fn context_row(row: &Self::Row) -> Result<ContextRow, sqlx::Error> {
            Ok(ContextRow {
                id: row.try_get(0)?,
                url: row.try_get(1)?,
                kind: row.try_get(2)?,
                body: row.try_get(3)?,
                created_at: row.try_get(4)?,
            })
        }

        fn registration_row(row: &Self::Row) -> Result<RegistrationRow, sqlx::Error> {
            Ok(RegistrationRow {
                id: row.try_get(0)?,
                body: row.try_get(1)?,
                created_at: row.try_get(2)?,
                modified_at: row.try_get(3)?,
            })
        }

        fn first_integer(row: &Self::Row) -> Result<i64, sqlx::Error> {
            row.try_get(0)
        }

        fn first_text(row: &Self::Row) -> Result<String, sqlx::Error> {
            row.try_get(0)
        }

        fn two_texts(row: &Self::Row) -> Result<(String, String), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        }

        fn two_texts_and_maybe_one(
            row: &Self::Row,
        ) -> Result<(String, String, Option<String>), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        }

        fn integer_and_text(row: &Self::Row) -> Result<(i64, String), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?))
        }

        fn first_bytes(row: &Self::Row) -> Result<Vec<u8>, sqlx::Error> {
            row.try_get(0)
        }

        fn packed_row(row: &Self::Row) -> Result<(i64, i64, Vec<u8>), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        }

        fn hash_row(row: &Self::Row) -> Result<(i16, i64, Vec<u8>), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        }

        fn extent_row(row: &Self::Row) -> Result<ExtentRow, sqlx::Error> {
            Ok((
                [
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ],
                [row.try_get(4)?, row.try_get(5)?],
            ))
        }
    };
}

impl Sql for Sqlite {
    // The REGEXP function is registered on every connection by `with_regexp()`, backed by the
    // same `regex` crate that validates patterns up front.
    const REGEX_MATCH: &'static str = "REGEXP";
    // Write transactions start with BEGIN IMMEDIATE and hold the database's write lock.
    const FOR_UPDATE: &'static str = "";
    const LISTS_ARE_ARRAYS: bool = false;

    fn push_text(query: &mut QueryBuilder<Self>, value: &str) {
        query.push_bind(value.to_owned());
    }

    fn push_integer(query: &mut QueryBuilder<Self>, value: i64) {
        query.push_bind(value);
    }

    fn push_optional_integer(query: &mut QueryBuilder<Self>, value: Option<i64>) {
        query.push_bind(value);
    }

    fn push_real(query: &mut QueryBuilder<Self>, value: Option<f64>) {
        query.push_bind(value);
    }

    fn push_bytes(query: &mut QueryBuilder<Self>, value: &[u8]) {
        query.push_bind(value.to_vec());
    }

    // The write transaction (BEGIN IMMEDIATE) holds the database's write lock.
    fn push_lock_audit_log(_query: &mut QueryBuilder<Self>, _log: &str) -> bool {
        false
    }

    // The rows go as one blob and a JSON array of `[offset, width, start, length]`, their place
    // in the append and their data's in the blob (`substr` counts bytes of a blob from 1), so
    // the statement has a few parameters however many rows there are. The size is an
    // uncorrelated subquery, which SQLite evaluates once, before the first row is inserted.
    fn push_audit_entries(
        query: &mut QueryBuilder<Self>,
        log: &str,
        first_index: i64,
        rows: &[EntryRow],
    ) {
        let mut blob = Vec::with_capacity(rows.iter().map(|row| row.data.len()).sum());
        let mut spans = String::with_capacity(2 + 32 * rows.len());
        spans.push('[');
        for (position, row) in rows.iter().enumerate() {
            if position > 0 {
                spans.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(
                spans,
                "[{},{},{},{}]",
                row.offset,
                row.width,
                blob.len() + 1,
                row.data.len()
            );
            blob.extend_from_slice(&row.data);
        }
        spans.push(']');
        query.push("INSERT INTO audit_entries (log, idx, width, data) SELECT ");
        Self::push_text(query, log);
        query.push(", CASE WHEN (");
        crate::ops::push_audit_size(query, log);
        query.push(") = ");
        Self::push_integer(query, first_index);
        query.push(" THEN ");
        Self::push_integer(query, first_index);
        // `substr` of an empty blob is NULL, hence the COALESCE for a row of one empty entry.
        query.push(" + (e.value ->> 0) ELSE -1 END, e.value ->> 1, COALESCE(substr(");
        query.push_bind(blob);
        query.push(", e.value ->> 2, e.value ->> 3), X'') FROM json_each(");
        query.push_bind(spans);
        query.push(") AS e");
    }

    // The rows go as one blob of their hashes and a JSON array of `[index, width, start]`.
    fn push_audit_leaves(query: &mut QueryBuilder<Self>, log: &str, rows: &[LeafRow]) {
        let mut blob = Vec::with_capacity(rows.iter().map(|row| row.hashes.len()).sum());
        let mut spans = String::with_capacity(2 + 24 * rows.len());
        spans.push('[');
        for (position, row) in rows.iter().enumerate() {
            if position > 0 {
                spans.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(spans, "[{},{},{}]", row.index, row.width, blob.len() + 1);
            blob.extend_from_slice(&row.hashes);
        }
        spans.push(']');
        query.push("INSERT INTO audit_leaves (log, idx, width, hashes) SELECT ");
        Self::push_text(query, log);
        query.push(", l.value ->> 0, l.value ->> 1, substr(");
        query.push_bind(blob);
        query.push(", l.value ->> 2, 32 * (l.value ->> 1)) FROM json_each(");
        query.push_bind(spans);
        query.push(") AS l");
    }

    // The hashes go as one blob of 32-byte hashes and a JSON array of `[level, index]` pairs.
    fn push_audit_hashes(
        query: &mut QueryBuilder<Self>,
        log: &str,
        hashes: &[(i16, i64, [u8; 32])],
    ) {
        let mut blob = Vec::with_capacity(32 * hashes.len());
        let mut subtrees = String::with_capacity(2 + 16 * hashes.len());
        subtrees.push('[');
        for (position, (level, index, hash)) in hashes.iter().enumerate() {
            if position > 0 {
                subtrees.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(subtrees, "[{level},{index}]");
            blob.extend_from_slice(hash);
        }
        subtrees.push(']');
        query.push("INSERT INTO audit_hashes (log, level, idx, hash) SELECT ");
        Self::push_text(query, log);
        query.push(", h.value ->> 0, h.value ->> 1, substr(");
        query.push_bind(blob);
        query.push(", 32 * h.key + 1, 32) FROM json_each(");
        query.push_bind(subtrees);
        query.push(") AS h");
    }

    // Statements separated by semicolons run in one call to the connection's worker thread,
    // each taking its own parameters in turn.
    fn push_audit_append(
        query: &mut QueryBuilder<Self>,
        log: &str,
        first_index: i64,
        entries: &[Vec<u8>],
        hashes: &[(i16, i64, [u8; 32])],
    ) -> bool {
        let (leaves, hashes) = crate::ops::split_leaves(hashes);
        query.push("BEGIN IMMEDIATE; ");
        Self::push_audit_entries(
            query,
            log,
            first_index,
            &crate::ops::entry_rows(first_index, entries),
        );
        query.push("; ");
        Self::push_audit_leaves(query, log, &leaves);
        query.push("; ");
        Self::push_audit_hashes(query, log, &hashes);
        query.push("; COMMIT");
        true
    }

    fn push_contains_bytes(query: &mut QueryBuilder<Self>, column: &str, value: &[u8]) {
        query.push(format!("instr({column}, "));
        Self::push_bytes(query, value);
        query.push(") > 0");
    }

    fn push_in_list(query: &mut QueryBuilder<Self>, values: &[&str]) {
        match values {
            [single] => {
                query.push("= ");
                Self::push_text(query, single);
            }
            _ if values.len() <= IN_LIST_CHUNK => {
                query.push("IN (");
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        query.push(", ");
                    }
                    Self::push_text(query, value);
                }
                query.push(")");
            }
            _ => {
                // Beyond SQLite's limit on bound parameters: one JSON array instead.
                query.push("IN (SELECT value FROM json_each(");
                Self::push_text(query, &serde_json::Value::from(values.to_vec()).to_string());
                query.push("))");
            }
        }
    }

    fn push_entity_rows(query: &mut QueryBuilder<Self>, tenant: &str, records: &[&EntityRecord]) {
        query.push("VALUES ");
        for (index, record) in records.iter().enumerate() {
            let bbox = record.location;
            query.push(if index == 0 { "(" } else { ", (" });
            Self::push_text(query, tenant);
            query.push(", ");
            Self::push_text(query, &record.id);
            query.push(", ");
            Self::push_text(query, &encode_list(&record.types));
            query.push(", ");
            Self::push_text(query, &encode_list(&record.scopes));
            query.push(", ");
            Self::push_text(query, &encode_list(&record.attributes));
            query.push(", ");
            Self::push_integer(query, to_micros(record.created_at));
            query.push(", ");
            Self::push_integer(query, to_micros(record.modified_at));
            for value in [
                bbox.map(|b| b.min_lon),
                bbox.map(|b| b.min_lat),
                bbox.map(|b| b.max_lon),
                bbox.map(|b| b.max_lat),
            ] {
                query.push(", ");
                Self::push_real(query, value);
            }
            query.push(", ");
            Self::push_optional_integer(query, record.first_observed.map(to_micros));
            query.push(", ");
            Self::push_text(query, &record.body);
            query.push(")");
        }
    }

    fn push_index_rows(query: &mut QueryBuilder<Self>, tenant: &str, rows: &[(&str, &str)]) {
        query.push("VALUES ");
        for (index, (value, id)) in rows.iter().enumerate() {
            query.push(if index == 0 { "(" } else { ", (" });
            Self::push_text(query, tenant);
            query.push(", ");
            Self::push_text(query, value);
            query.push(", ");
            Self::push_text(query, id);
            query.push(")");
        }
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    decode_rows!();
}

impl Sql for Postgres {
    const REGEX_MATCH: &'static str = "~";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const LISTS_ARE_ARRAYS: bool = true;

    fn push_text(query: &mut QueryBuilder<Self>, value: &str) {
        query.push_bind(value.to_owned());
    }

    fn push_integer(query: &mut QueryBuilder<Self>, value: i64) {
        query.push_bind(value);
    }

    fn push_optional_integer(query: &mut QueryBuilder<Self>, value: Option<i64>) {
        query.push_bind(value);
    }

    fn push_real(query: &mut QueryBuilder<Self>, value: Option<f64>) {
        query.push_bind(value);
    }

    fn push_bytes(query: &mut QueryBuilder<Self>, value: &[u8]) {
        query.push_bind(value.to_vec());
    }

    // Under READ COMMITTED two appenders could both read the same size; a transaction-scoped
    // advisory lock per log makes the second wait and then read the first one's size.
    fn push_lock_audit_log(query: &mut QueryBuilder<Self>, log: &str) -> bool {
        query.push(format!(
            "SELECT pg_advisory_xact_lock({AUDIT_LOCK_CLASS}, hashtext("
        ));
        Self::push_text(query, log);
        query.push("))");
        true
    }

    // One array parameter per column, unnested into rows. Within a statement PostgreSQL reads
    // the table as it was when the statement started, so the size check (an uncorrelated
    // subquery, evaluated once) sees none of the rows it inserts.
    fn push_audit_entries(
        query: &mut QueryBuilder<Self>,
        log: &str,
        first_index: i64,
        rows: &[EntryRow],
    ) {
        query.push("INSERT INTO audit_entries (log, idx, width, data) SELECT ");
        Self::push_text(query, log);
        query.push(", CASE WHEN (");
        crate::ops::push_audit_size(query, log);
        query.push(") = ");
        Self::push_integer(query, first_index);
        query.push(" THEN ");
        Self::push_integer(query, first_index);
        query.push(" + r.o ELSE -1 END, r.w, r.d FROM UNNEST(");
        query.push_bind(rows.iter().map(|row| row.offset).collect::<Vec<i64>>());
        query.push(", ");
        query.push_bind(rows.iter().map(|row| row.width).collect::<Vec<i64>>());
        query.push(", ");
        query.push_bind(
            rows.iter()
                .map(|row| row.data.clone())
                .collect::<Vec<Vec<u8>>>(),
        );
        query.push(") AS r(o, w, d)");
    }

    fn push_audit_leaves(query: &mut QueryBuilder<Self>, log: &str, rows: &[LeafRow]) {
        query.push("INSERT INTO audit_leaves (log, idx, width, hashes) SELECT ");
        Self::push_text(query, log);
        query.push(", * FROM UNNEST(");
        query.push_bind(rows.iter().map(|row| row.index).collect::<Vec<i64>>());
        query.push(", ");
        query.push_bind(rows.iter().map(|row| row.width).collect::<Vec<i64>>());
        query.push(", ");
        query.push_bind(
            rows.iter()
                .map(|row| row.hashes.clone())
                .collect::<Vec<Vec<u8>>>(),
        );
        query.push(")");
    }

    fn push_audit_hashes(
        query: &mut QueryBuilder<Self>,
        log: &str,
        hashes: &[(i16, i64, [u8; 32])],
    ) {
        query.push("INSERT INTO audit_hashes (log, level, idx, hash) SELECT ");
        Self::push_text(query, log);
        query.push(", * FROM UNNEST(");
        query.push_bind(hashes.iter().map(|h| h.0).collect::<Vec<i16>>());
        query.push(", ");
        query.push_bind(hashes.iter().map(|h| h.1).collect::<Vec<i64>>());
        query.push(", ");
        query.push_bind(hashes.iter().map(|h| h.2).collect::<Vec<[u8; 32]>>());
        query.push(")");
    }

    // One statement, atomic by itself: the entries' INSERT as a data-modifying WITH (always run
    // to completion, referenced or not), the hashes' INSERT as the main statement. A second
    // writer appending at the same index waits on the primary key and then fails.
    fn push_audit_append(
        query: &mut QueryBuilder<Self>,
        log: &str,
        first_index: i64,
        entries: &[Vec<u8>],
        hashes: &[(i16, i64, [u8; 32])],
    ) -> bool {
        let (leaves, hashes) = crate::ops::split_leaves(hashes);
        query.push("WITH appended AS (");
        Self::push_audit_entries(
            query,
            log,
            first_index,
            &crate::ops::entry_rows(first_index, entries),
        );
        query.push("), leaves AS (");
        Self::push_audit_leaves(query, log, &leaves);
        query.push(") ");
        Self::push_audit_hashes(query, log, &hashes);
        false
    }

    fn push_contains_bytes(query: &mut QueryBuilder<Self>, column: &str, value: &[u8]) {
        query.push("position(");
        Self::push_bytes(query, value);
        query.push(format!(" in {column}) > 0"));
    }

    fn push_in_list(query: &mut QueryBuilder<Self>, values: &[&str]) {
        if let [single] = values {
            query.push("= ");
            Self::push_text(query, single);
        } else {
            // One text[] parameter: the statement text does not depend on the list's length.
            query.push("= ANY(");
            query.push_bind(
                values
                    .iter()
                    .map(|value| (*value).to_owned())
                    .collect::<Vec<String>>(),
            );
            query.push(")");
        }
    }

    // One array per column, unnested into rows: a constant statement, prepared once, with 13
    // parameters however many rows there are.
    fn push_entity_rows(query: &mut QueryBuilder<Self>, tenant: &str, records: &[&EntityRecord]) {
        fn column<T>(records: &[&EntityRecord], value: impl Fn(&EntityRecord) -> T) -> Vec<T> {
            records.iter().map(|record| value(record)).collect()
        }
        query.push("SELECT ");
        Self::push_text(query, tenant);
        query.push(", * FROM UNNEST(");
        query.push_bind(column(records, |r| r.id.clone()));
        query.push(", ");
        query.push_bind(column(records, |r| encode_list(&r.types)));
        query.push(", ");
        query.push_bind(column(records, |r| encode_list(&r.scopes)));
        query.push(", ");
        query.push_bind(column(records, |r| encode_list(&r.attributes)));
        query.push(", ");
        query.push_bind(column(records, |r| to_micros(r.created_at)));
        query.push(", ");
        query.push_bind(column(records, |r| to_micros(r.modified_at)));
        query.push(", ");
        query.push_bind(column(records, |r| r.location.map(|b| b.min_lon)));
        query.push(", ");
        query.push_bind(column(records, |r| r.location.map(|b| b.min_lat)));
        query.push(", ");
        query.push_bind(column(records, |r| r.location.map(|b| b.max_lon)));
        query.push(", ");
        query.push_bind(column(records, |r| r.location.map(|b| b.max_lat)));
        query.push(", ");
        query.push_bind(column(records, |r| r.first_observed.map(to_micros)));
        query.push(", ");
        query.push_bind(column(records, |r| r.body.clone()));
        query.push(")");
    }

    fn push_index_rows(query: &mut QueryBuilder<Self>, tenant: &str, rows: &[(&str, &str)]) {
        query.push("SELECT ");
        Self::push_text(query, tenant);
        query.push(", * FROM UNNEST(");
        query.push_bind(
            rows.iter()
                .map(|(value, _)| (*value).to_owned())
                .collect::<Vec<_>>(),
        );
        query.push(", ");
        query.push_bind(
            rows.iter()
                .map(|(_, id)| (*id).to_owned())
                .collect::<Vec<_>>(),
        );
        query.push(")");
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    decode_rows!();
}

/// Microseconds since the Unix epoch, the stored form of every timestamp.
pub(crate) fn to_micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn from_micros(micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Corrupt(format!("timestamp {micros} is out of range")))
}

/// The stored form of a list of strings: a JSON array.
pub(crate) fn encode_list(values: &[String]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

fn decode_list(id: &str, column: &str, text: &str) -> Result<Vec<String>, Error> {
    serde_json::from_str(text)
        .map_err(|error| Error::Corrupt(format!("{column} of entity {id}: {error}")))
}

impl EntityRow {
    pub(crate) fn into_record(self) -> Result<EntityRecord, Error> {
        let location = match self.bbox {
            [Some(min_lon), Some(min_lat), Some(max_lon), Some(max_lat)] => Some(BBox {
                min_lon,
                min_lat,
                max_lon,
                max_lat,
            }),
            [None, None, None, None] => None,
            _ => {
                return Err(Error::Corrupt(format!(
                    "partial bounding box of entity {}",
                    self.id
                )));
            }
        };
        Ok(EntityRecord {
            types: decode_list(&self.id, "types", &self.types)?,
            scopes: decode_list(&self.id, "scopes", &self.scopes)?,
            attributes: decode_list(&self.id, "attributes", &self.attributes)?,
            created_at: from_micros(self.created_at)?,
            modified_at: from_micros(self.modified_at)?,
            location,
            first_observed: self.first_observed_at.map(from_micros).transpose()?,
            body: self.body,
            id: self.id,
        })
    }
}

impl ContextRow {
    pub(crate) fn into_record(self) -> Result<ContextRecord, Error> {
        Ok(ContextRecord {
            created_at: from_micros(self.created_at)?,
            id: self.id,
            url: self.url,
            kind: self.kind,
            body: self.body,
        })
    }
}

impl RegistrationRow {
    pub(crate) fn into_record(self) -> Result<RegistrationRecord, Error> {
        Ok(RegistrationRecord {
            created_at: from_micros(self.created_at)?,
            modified_at: from_micros(self.modified_at)?,
            id: self.id,
            body: self.body,
        })
    }
}
