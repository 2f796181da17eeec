//! The statements, written once for both dialects.
//!
//! Every function takes a connection (a pooled one for reads, the transaction's for writes).
//! Batch functions cut their input into chunks written by one statement each (multi-row
//! `VALUES` on SQLite, unnested arrays on PostgreSQL), so that a batch of a thousand records
//! costs a handful of round trips, not thousands.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, QueryBuilder};

use crate::sql::{
    CONTEXT_COLUMNS, ENTITY_COLUMNS, IN_LIST_CHUNK, REGISTRATION_COLUMNS, Sql, encode_list,
    to_micros,
};
use crate::{ContextRecord, EntityQuery, EntityRecord, Error, QueryPage, RegistrationRecord};

/// Rows per multi-row `INSERT INTO entities` (13 parameters each; SQLite allows 32766).
const ENTITY_CHUNK: usize = 500;
/// Rows per multi-row `INSERT` into an index table (3 parameters each).
const INDEX_CHUNK: usize = 2000;

/// The index tables.
const INDEX_TABLES: [IndexTable; 3] = [
    ("entity_types", "type", |record| &record.types),
    ("entity_attributes", "attribute", |record| {
        &record.attributes
    }),
    ("entity_scopes", "scope", |record| &record.scopes),
];

const INSERT_ENTITIES: &str = "INSERT INTO entities (tenant, id, types, scopes, attributes, \
     created_at, modified_at, min_lon, min_lat, max_lon, max_lat, first_observed_at, body) ";

/// A statement is kept prepared in the connection's cache only if its text will recur: always
/// when lists are bound as arrays, else for single rows and full chunks. The ragged last chunk
/// of a batch is prepared once and dropped.
fn recurring<DB: Sql>(rows: usize, chunk: usize) -> bool {
    DB::LISTS_ARE_ARRAYS || rows == 1 || rows == chunk
}

async fn fetch_records<DB: Sql>(
    connection: &mut DB::Connection,
    query: &mut QueryBuilder<DB>,
) -> Result<Vec<EntityRecord>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter()
        .map(|row| DB::entity_row(row)?.into_record())
        .collect()
}

/// The ids returned by a statement ending in `RETURNING id`.
async fn fetch_ids<DB: Sql>(
    connection: &mut DB::Connection,
    query: &mut QueryBuilder<DB>,
    persistent: bool,
) -> Result<Vec<String>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let rows = query
        .build()
        .persistent(persistent)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .iter()
        .map(|row| DB::first_text(row))
        .collect::<Result<_, _>>()?)
}

/// Sorted, deduplicated ids, so that chunks are id ranges and rows are locked in id order
/// (two batches locking overlapping rows in different orders could deadlock on PostgreSQL).
fn sorted_ids(ids: &[String]) -> Vec<&str> {
    let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// The records with these ids, in id order; `suffix` is `""` or `DB::FOR_UPDATE`.
pub(crate) async fn get_many<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    ids: &[String],
    suffix: &str,
) -> Result<Vec<EntityRecord>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let ids = sorted_ids(ids);
    let mut records = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        let mut query = QueryBuilder::new(format!(
            "SELECT {ENTITY_COLUMNS} FROM entities e WHERE e.tenant = "
        ));
        DB::push_text(&mut query, tenant);
        query.push(" AND e.id ");
        DB::push_in_list(&mut query, chunk);
        query.push(" ORDER BY e.id");
        query.push(suffix);
        records.extend(fetch_records(connection, &mut query).await?);
    }
    Ok(records)
}

/// Rejects a pattern the database would reject, before it can abort a transaction.
fn check_pattern(query: &EntityQuery) -> Result<(), Error> {
    match &query.id_pattern {
        Some(pattern) => regex::Regex::new(pattern)
            .map(drop)
            .map_err(|error| Error::InvalidPattern(error.to_string())),
        None => Ok(()),
    }
}

/// Pushes `AND (EXISTS (…) OR …)`: the entity has one of `values` in the index `table`.
///
/// One `EXISTS` per value, each a probe of a unique key: the bundled SQLite turns a correlated
/// `EXISTS (… IN (a, b))` into a join that yields the entity once per value it has, so `OFFSET`
/// counted duplicates and pages skipped entities.
fn push_exists<DB: Sql>(
    query: &mut QueryBuilder<DB>,
    table: &str,
    column: &str,
    values: &[String],
) {
    if values.is_empty() {
        return;
    }
    query.push(" AND (");
    for (position, value) in values.iter().enumerate() {
        if position > 0 {
            query.push(" OR ");
        }
        query.push(format!(
            "EXISTS (SELECT 1 FROM {table} x WHERE x.tenant = e.tenant AND x.entity_id = e.id \
             AND x.{column} = "
        ));
        DB::push_text(query, value);
        query.push(")");
    }
    query.push(")");
}

/// Pushes ` FROM … WHERE …` selecting the matches as `e`, and returns the column to order by.
///
/// The plan is chosen here rather than left to the planner (SQLite has no statistics):
/// - ids given: point lookups on the primary key;
/// - else one type (or one attribute): walk the index table's `(tenant, type, entity_id)` range,
///   which is already in id order, so `LIMIT` stops early;
/// - else several types (or attributes): the matching ids as a subquery;
/// - else a range scan of the tenant on the primary key.
///
/// The remaining filters are checked per candidate.
fn push_from_where<DB: Sql>(
    query: &mut QueryBuilder<DB>,
    tenant: &str,
    filter: &EntityQuery,
) -> &'static str {
    let mut order = "e.id";
    let mut types = filter.types.as_slice();
    let mut attributes = filter.attributes.as_slice();
    if !filter.ids.is_empty() || (types.is_empty() && attributes.is_empty()) {
        query.push(" FROM entities e WHERE e.tenant = ");
        DB::push_text(query, tenant);
        if !filter.ids.is_empty() {
            let ids: Vec<&str> = filter.ids.iter().map(String::as_str).collect();
            query.push(" AND e.id ");
            DB::push_in_list(query, &ids);
        }
    } else {
        let (table, column, values) = if types.is_empty() {
            let values = attributes;
            attributes = &[];
            ("entity_attributes", "attribute", values)
        } else {
            let values = types;
            types = &[];
            ("entity_types", "type", values)
        };
        if let [value] = values {
            order = "d.entity_id";
            query.push(format!(
                " FROM {table} d JOIN entities e ON e.tenant = d.tenant AND e.id = d.entity_id \
                 WHERE d.tenant = "
            ));
            DB::push_text(query, tenant);
            query.push(format!(" AND d.{column} = "));
            DB::push_text(query, value);
        } else {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            query.push(" FROM entities e WHERE e.tenant = ");
            DB::push_text(query, tenant);
            query.push(format!(
                " AND e.id IN (SELECT d.entity_id FROM {table} d WHERE d.tenant = "
            ));
            DB::push_text(query, tenant);
            query.push(format!(" AND d.{column} "));
            DB::push_in_list(query, &values);
            query.push(")");
        }
    }
    push_exists(query, "entity_types", "type", types);
    push_exists(query, "entity_attributes", "attribute", attributes);
    if let Some(pattern) = &filter.id_pattern {
        query.push(format!(" AND e.id {} ", DB::REGEX_MATCH));
        DB::push_text(query, pattern);
    }
    // On the column the matches are ordered by, so that an index range starts there.
    if let Some(after) = &filter.after {
        query.push(format!(" AND {order} > "));
        DB::push_text(query, after);
    }
    order
}

/// Pushes the `SELECT` of one page of matches.
fn push_select_page<DB: Sql>(query: &mut QueryBuilder<DB>, tenant: &str, filter: &EntityQuery) {
    query.push(format!("SELECT {ENTITY_COLUMNS}"));
    let order = push_from_where(query, tenant, filter);
    query.push(format!(" ORDER BY {order} LIMIT "));
    DB::push_integer(query, i64::from(filter.limit));
    query.push(" OFFSET ");
    DB::push_integer(query, i64::from(filter.offset));
}

/// Pushes the `SELECT COUNT(*)` of the matches.
fn push_count<DB: Sql>(query: &mut QueryBuilder<DB>, tenant: &str, filter: &EntityQuery) {
    // One type (or one attribute) and nothing else: the index range alone has the answer.
    let single = match (filter.types.as_slice(), filter.attributes.as_slice()) {
        ([value], []) => Some(("entity_types", "type", value)),
        ([], [value]) => Some(("entity_attributes", "attribute", value)),
        _ => None,
    };
    match single {
        Some((table, column, value))
            if filter.ids.is_empty() && filter.id_pattern.is_none() && filter.after.is_none() =>
        {
            query.push(format!("SELECT COUNT(*) FROM {table} d WHERE d.tenant = "));
            DB::push_text(query, tenant);
            query.push(format!(" AND d.{column} = "));
            DB::push_text(query, value);
        }
        _ => {
            query.push("SELECT COUNT(*)");
            push_from_where(query, tenant, filter);
        }
    }
}

/// Pushes the `DELETE` of every match.
fn push_purge<DB: Sql>(query: &mut QueryBuilder<DB>, tenant: &str, filter: &EntityQuery) {
    query.push("DELETE FROM entities WHERE tenant = ");
    DB::push_text(query, tenant);
    query.push(" AND id IN (SELECT e.id");
    push_from_where(query, tenant, filter);
    query.push(")");
}

pub(crate) async fn query<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    filter: &EntityQuery,
) -> Result<QueryPage, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    check_pattern(filter)?;
    let records = if filter.limit == 0 {
        Vec::new()
    } else {
        let mut query = QueryBuilder::new("");
        push_select_page(&mut query, tenant, filter);
        fetch_records(connection, &mut query).await?
    };
    let total = if filter.count {
        let mut query = QueryBuilder::new("");
        push_count(&mut query, tenant, filter);
        let row = query.build().fetch_one(&mut *connection).await?;
        let count = DB::first_integer(&row)?;
        Some(u64::try_from(count).map_err(|_| Error::Corrupt(format!("count {count}")))?)
    } else {
        None
    };
    Ok(QueryPage { records, total })
}

/// An index table: its name, its value column, and the list of a record that fills it.
type IndexTable = (&'static str, &'static str, fn(&EntityRecord) -> &[String]);

/// Inserts the rows of one index table for `records`.
async fn insert_index_rows<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    (table, column, values_of): IndexTable,
    records: &[&EntityRecord],
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let rows: Vec<(&str, &str)> = records
        .iter()
        .flat_map(|record| {
            values_of(record)
                .iter()
                .map(|value| (value.as_str(), record.id.as_str()))
        })
        .collect();
    for chunk in rows.chunks(INDEX_CHUNK) {
        let mut query = QueryBuilder::new(format!(
            "INSERT INTO {table} (tenant, {column}, entity_id) "
        ));
        DB::push_index_rows(&mut query, tenant, chunk);
        // A record may list the same type twice; the index holds it once.
        query.push(" ON CONFLICT DO NOTHING");
        query
            .build()
            .persistent(recurring::<DB>(chunk.len(), INDEX_CHUNK))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Brings the index rows of `records`, whose entity rows were just written, in line with them.
///
/// Most updates keep the set of types, attributes and scopes, so the current index rows are
/// read and only entities whose set changed are rewritten: a read of the index is much cheaper
/// than deleting and re-inserting thousands of rows. Reading after the entity rows were written
/// is what makes this safe under PostgreSQL's READ COMMITTED: every writer of an entity's index
/// rows first writes (and so locks) its entity row, so nobody can change them between this read
/// and the end of the transaction.
async fn sync_index_rows<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    records: &[&EntityRecord],
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let ids: Vec<&str> = records.iter().map(|record| record.id.as_str()).collect();
    for index_table in INDEX_TABLES {
        let (table, column, values_of) = index_table;
        let mut current: HashMap<String, BTreeSet<String>> = HashMap::new();
        for chunk in ids.chunks(IN_LIST_CHUNK) {
            let mut query = QueryBuilder::new(format!(
                "SELECT entity_id, {column} FROM {table} WHERE tenant = "
            ));
            DB::push_text(&mut query, tenant);
            query.push(" AND entity_id ");
            DB::push_in_list(&mut query, chunk);
            let rows = query
                .build()
                .persistent(recurring::<DB>(chunk.len(), IN_LIST_CHUNK))
                .fetch_all(&mut *connection)
                .await?;
            for row in &rows {
                let (id, value) = DB::two_texts(row)?;
                current.entry(id).or_default().insert(value);
            }
        }
        let mut stale: Vec<&str> = Vec::new();
        let mut changed: Vec<&EntityRecord> = Vec::new();
        for record in records {
            let wanted: BTreeSet<&str> = values_of(record).iter().map(String::as_str).collect();
            let have = current.get(&record.id);
            let same = match have {
                Some(have) => have.iter().map(String::as_str).eq(wanted.iter().copied()),
                None => wanted.is_empty(),
            };
            if !same {
                if have.is_some() {
                    stale.push(&record.id);
                }
                changed.push(record);
            }
        }
        for chunk in stale.chunks(IN_LIST_CHUNK) {
            let mut query = QueryBuilder::new(format!("DELETE FROM {table} WHERE tenant = "));
            DB::push_text(&mut query, tenant);
            query.push(" AND entity_id ");
            DB::push_in_list(&mut query, chunk);
            query
                .build()
                .persistent(recurring::<DB>(chunk.len(), IN_LIST_CHUNK))
                .execute(&mut *connection)
                .await?;
        }
        insert_index_rows(connection, tenant, index_table, &changed).await?;
    }
    Ok(())
}

/// Inserts the records that do not exist yet; returns, per record, whether it was inserted.
/// Of several records with the same id only the first can be inserted.
pub(crate) async fn insert_many<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    records: &[EntityRecord],
) -> Result<Vec<bool>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut inserted: HashSet<String> = HashSet::with_capacity(records.len());
    for chunk in records.chunks(ENTITY_CHUNK) {
        let mut query = QueryBuilder::new(INSERT_ENTITIES);
        DB::push_entity_rows(&mut query, tenant, &chunk.iter().collect::<Vec<_>>());
        // DO NOTHING rather than failing on the duplicate key: a failed statement would abort
        // the whole transaction on PostgreSQL.
        query.push(" ON CONFLICT (tenant, id) DO NOTHING RETURNING id");
        let persistent = recurring::<DB>(chunk.len(), ENTITY_CHUNK);
        inserted.extend(fetch_ids(connection, &mut query, persistent).await?);
    }
    let mut outcome = Vec::with_capacity(records.len());
    let mut fresh = Vec::with_capacity(inserted.len());
    for record in records {
        // `remove`, so that a later record with the same id counts as not inserted.
        let was_inserted = inserted.remove(&record.id);
        outcome.push(was_inserted);
        if was_inserted {
            fresh.push(record);
        }
    }
    // Fresh entities have no index rows: a deleted entity's went with it by cascade.
    for index_table in INDEX_TABLES {
        insert_index_rows(connection, tenant, index_table, &fresh).await?;
    }
    Ok(outcome)
}

const UPSERT_TAIL: &str = " ON CONFLICT (tenant, id) DO UPDATE SET types = excluded.types, \
     scopes = excluded.scopes, attributes = excluded.attributes, \
     created_at = excluded.created_at, modified_at = excluded.modified_at, \
     min_lon = excluded.min_lon, min_lat = excluded.min_lat, \
     max_lon = excluded.max_lon, max_lat = excluded.max_lat, \
     first_observed_at = excluded.first_observed_at, body = excluded.body";

/// Inserts or entirely replaces the records. Of several records with the same id the last wins.
pub(crate) async fn upsert_many<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    records: &[EntityRecord],
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    // PostgreSQL refuses to update one row twice in a statement, so keep the last of each id.
    let mut seen = HashSet::with_capacity(records.len());
    let mut unique: Vec<&EntityRecord> = records
        .iter()
        .rev()
        .filter(|record| seen.insert(record.id.as_str()))
        .collect();
    unique.reverse();
    for chunk in unique.chunks(ENTITY_CHUNK) {
        let mut query = QueryBuilder::new(INSERT_ENTITIES);
        DB::push_entity_rows(&mut query, tenant, chunk);
        query.push(UPSERT_TAIL);
        query
            .build()
            .persistent(recurring::<DB>(chunk.len(), ENTITY_CHUNK))
            .execute(&mut *connection)
            .await?;
    }
    sync_index_rows(connection, tenant, &unique).await
}

/// Replaces an existing record; `Error::NotFound` if there is none.
pub(crate) async fn update<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    record: &EntityRecord,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let bbox = record.location;
    let mut query = QueryBuilder::new("UPDATE entities SET types = ");
    DB::push_text(&mut query, &encode_list(&record.types));
    query.push(", scopes = ");
    DB::push_text(&mut query, &encode_list(&record.scopes));
    query.push(", attributes = ");
    DB::push_text(&mut query, &encode_list(&record.attributes));
    query.push(", created_at = ");
    DB::push_integer(&mut query, to_micros(record.created_at));
    query.push(", modified_at = ");
    DB::push_integer(&mut query, to_micros(record.modified_at));
    query.push(", min_lon = ");
    DB::push_real(&mut query, bbox.map(|b| b.min_lon));
    query.push(", min_lat = ");
    DB::push_real(&mut query, bbox.map(|b| b.min_lat));
    query.push(", max_lon = ");
    DB::push_real(&mut query, bbox.map(|b| b.max_lon));
    query.push(", max_lat = ");
    DB::push_real(&mut query, bbox.map(|b| b.max_lat));
    query.push(", first_observed_at = ");
    DB::push_optional_integer(&mut query, record.first_observed.map(to_micros));
    query.push(", body = ");
    DB::push_text(&mut query, &record.body);
    query.push(" WHERE tenant = ");
    DB::push_text(&mut query, tenant);
    query.push(" AND id = ");
    DB::push_text(&mut query, &record.id);
    let result = query.build().execute(&mut *connection).await?;
    if DB::rows_affected(&result) == 0 {
        return Err(Error::NotFound);
    }
    sync_index_rows(connection, tenant, &[record]).await
}

/// Deletes the entities with these ids (their index rows go by cascade); returns, per id,
/// whether it existed. Of repeated ids only the first counts as deleted.
pub(crate) async fn delete_many<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<bool>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut deleted: HashSet<String> = HashSet::with_capacity(ids.len());
    for chunk in sorted_ids(ids).chunks(IN_LIST_CHUNK) {
        let mut query = QueryBuilder::new("DELETE FROM entities WHERE tenant = ");
        DB::push_text(&mut query, tenant);
        query.push(" AND id ");
        DB::push_in_list(&mut query, chunk);
        query.push(" RETURNING id");
        let persistent = recurring::<DB>(chunk.len(), IN_LIST_CHUNK);
        deleted.extend(fetch_ids(connection, &mut query, persistent).await?);
    }
    Ok(ids.iter().map(|id| deleted.remove(id)).collect())
}

/// Deletes every match of `filter` (limit and offset ignored); returns how many.
pub(crate) async fn purge<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    filter: &EntityQuery,
) -> Result<u64, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    check_pattern(filter)?;
    let mut query = QueryBuilder::new("");
    push_purge(&mut query, tenant, filter);
    let result = query.build().execute(&mut *connection).await?;
    Ok(DB::rows_affected(&result))
}

pub(crate) async fn put_context<DB: Sql>(
    connection: &mut DB::Connection,
    record: &ContextRecord,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!(
        "INSERT INTO jsonld_contexts ({CONTEXT_COLUMNS}) VALUES ("
    ));
    DB::push_text(&mut query, &record.id);
    query.push(", ");
    DB::push_text(&mut query, &record.url);
    query.push(", ");
    DB::push_text(&mut query, &record.kind);
    query.push(", ");
    DB::push_text(&mut query, &record.body);
    query.push(", ");
    DB::push_integer(&mut query, to_micros(record.created_at));
    query.push(") ON CONFLICT (id) DO NOTHING");
    let result = query.build().execute(&mut *connection).await?;
    if DB::rows_affected(&result) == 0 {
        return Err(Error::AlreadyExists);
    }
    Ok(())
}

/// The contexts with this id (none or one), or all of them when `id` is `None`, oldest first.
pub(crate) async fn get_contexts<DB: Sql>(
    connection: &mut DB::Connection,
    id: Option<&str>,
) -> Result<Vec<ContextRecord>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!("SELECT {CONTEXT_COLUMNS} FROM jsonld_contexts"));
    if let Some(id) = id {
        query.push(" WHERE id = ");
        DB::push_text(&mut query, id);
    }
    query.push(" ORDER BY created_at, id");
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter()
        .map(|row| DB::context_row(row)?.into_record())
        .collect()
}

pub(crate) async fn delete_context<DB: Sql>(
    connection: &mut DB::Connection,
    id: &str,
) -> Result<bool, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("DELETE FROM jsonld_contexts WHERE id = ");
    DB::push_text(&mut query, id);
    let result = query.build().execute(&mut *connection).await?;
    Ok(DB::rows_affected(&result) > 0)
}

pub(crate) async fn revoke<DB: Sql>(
    connection: &mut DB::Connection,
    ids: &[String],
    revoked_at: i64,
    reason: &str,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    for chunk in ids.chunks(INDEX_CHUNK / 2) {
        let mut query = QueryBuilder::new(
            "INSERT INTO revoked_tokens (revocation_id, revoked_at, reason) VALUES ",
        );
        for (index, id) in chunk.iter().enumerate() {
            query.push(if index == 0 { "(" } else { ", (" });
            DB::push_text(&mut query, id);
            query.push(", ");
            DB::push_integer(&mut query, revoked_at);
            query.push(", ");
            DB::push_text(&mut query, reason);
            query.push(")");
        }
        query.push(" ON CONFLICT (revocation_id) DO NOTHING");
        query.build().execute(&mut *connection).await?;
    }
    Ok(())
}

pub(crate) async fn revoked_among<DB: Sql>(
    connection: &mut DB::Connection,
    ids: &[String],
) -> Result<Vec<String>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut revoked = Vec::new();
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        let values: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut query =
            QueryBuilder::new("SELECT revocation_id FROM revoked_tokens WHERE revocation_id ");
        DB::push_in_list(&mut query, &values);
        let rows = query.build().fetch_all(&mut *connection).await?;
        for row in &rows {
            revoked.push(DB::first_text(row)?);
        }
    }
    revoked.sort();
    Ok(revoked)
}

pub(crate) async fn all_revoked<DB: Sql>(
    connection: &mut DB::Connection,
) -> Result<Vec<String>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query =
        QueryBuilder::new("SELECT revocation_id FROM revoked_tokens ORDER BY revocation_id");
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter().map(|row| Ok(DB::first_text(row)?)).collect()
}

/// Entries or hashes per `INSERT` into an audit table (a few parameters per statement, whatever
/// their number), and subtrees per hash lookup (2 parameters each, far below SQLite's 32766
/// and PostgreSQL's 65535).
const AUDIT_CHUNK: usize = 1000;

/// A subtree in tlog-tiles numbering: level and index.
type Subtree = (u8, u64);

/// The stored form of an audit-log index or size.
fn audit_index(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::AuditOutOfRange(format!("index {value}")))
}

/// Whether the subtree `(level, index)`, over the leaves `[index·2^level, (index+1)·2^level)`,
/// is complete in a log of `size` entries.
fn is_complete((level, index): Subtree, size: u64) -> bool {
    1u64.checked_shl(u32::from(level))
        .and_then(|width| index.checked_add(1)?.checked_mul(width))
        .is_some_and(|end| end <= size)
}

fn hash_name((level, index): Subtree) -> String {
    format!("the hash at level {level}, index {index}")
}

/// The most entries one `audit_entries` row holds: a tlog-tiles entry bundle. Rows never cross
/// a bundle's boundary (a multiple of 256), so a bundle is read from its own rows alone.
const MAX_ROW_WIDTH: usize = 256;

/// A row of `audit_entries` about to be written: `width` entries from `offset` after the
/// append's first index, packed into `data` ([`pack_entries`]).
pub(crate) struct EntryRow {
    pub(crate) offset: i64,
    pub(crate) width: i64,
    pub(crate) data: Vec<u8>,
}

/// The rows that store `entries` appended at `first_index`: runs of entries up to each bundle
/// boundary.
pub(crate) fn entry_rows(first_index: i64, entries: &[Vec<u8>]) -> Vec<EntryRow> {
    let bundle = MAX_ROW_WIDTH as i64;
    let mut rows = Vec::new();
    let mut offset = 0;
    while let Some(rest) = entries.get(offset..).filter(|rest| !rest.is_empty()) {
        let index = first_index + offset as i64;
        let room = usize::try_from(bundle - index.rem_euclid(bundle)).unwrap_or(MAX_ROW_WIDTH);
        let run = &rest[..room.min(rest.len())];
        let (width, data) = pack_entries(run);
        rows.push(EntryRow {
            offset: offset as i64,
            width,
            data,
        });
        offset += run.len();
    }
    rows
}

/// A row of `audit_leaves` about to be written: `width` leaf hashes from `index`, one after the
/// other in `hashes`.
pub(crate) struct LeafRow {
    pub(crate) index: i64,
    pub(crate) width: i64,
    pub(crate) hashes: Vec<u8>,
}

/// A hash to store: `(level, index, hash)`.
pub(crate) type StoredHash = (i16, i64, [u8; 32]);

/// Splits `hashes` into the leaf hashes (level 0), as the [`LeafRow`]s that store them (runs of
/// consecutive indexes, cut at each multiple of 256), and the hashes of the other levels.
pub(crate) fn split_leaves(hashes: &[StoredHash]) -> (Vec<LeafRow>, Vec<StoredHash>) {
    let (mut leaves, others): (Vec<StoredHash>, Vec<StoredHash>) =
        hashes.iter().partition(|(level, _, _)| *level == 0);
    leaves.sort_unstable_by_key(|&(_, index, _)| index);
    let bundle = MAX_ROW_WIDTH as i64;
    let mut rows: Vec<LeafRow> = Vec::new();
    for (_, index, hash) in leaves {
        match rows.last_mut() {
            Some(row) if row.index + row.width == index && index.rem_euclid(bundle) != 0 => {
                row.width += 1;
                row.hashes.extend_from_slice(&hash);
            }
            _ => rows.push(LeafRow {
                index,
                width: 1,
                hashes: hash.to_vec(),
            }),
        }
    }
    (rows, others)
}

/// The leaf hashes of an `audit_leaves` row of `width` from `index`, with their indexes; `None`
/// if `hashes` does not hold exactly that many.
fn unpack_leaves(
    index: i64,
    width: i64,
    hashes: &[u8],
) -> Option<impl Iterator<Item = (i64, [u8; 32])> + '_> {
    let (chunks, rest) = hashes.as_chunks::<32>();
    (rest.is_empty() && i64::try_from(chunks.len()).ok() == Some(width))
        .then(|| (index..).zip(chunks.iter().copied()))
}

/// Pushes the `SELECT` of the size of `log`.
pub(crate) fn push_audit_size<DB: Sql>(query: &mut QueryBuilder<DB>, log: &str) {
    // The last row's end: one step down the primary key instead of a walk along the log.
    query.push("SELECT COALESCE((SELECT idx + width FROM audit_entries WHERE log = ");
    DB::push_text(query, log);
    query.push(" ORDER BY idx DESC LIMIT 1), 0)");
}

/// Pushes the `SELECT idx, width, data` of the rows of `log` that may hold entries of
/// `first..end`, in order: those starting within a row's width before `first`, and after.
fn push_select_entries<DB: Sql>(query: &mut QueryBuilder<DB>, log: &str, first: i64, end: i64) {
    query.push("SELECT idx, width, data FROM audit_entries WHERE log = ");
    DB::push_text(query, log);
    query.push(" AND idx > ");
    DB::push_integer(query, first.saturating_sub(MAX_ROW_WIDTH as i64));
    query.push(" AND idx < ");
    DB::push_integer(query, end);
    query.push(" ORDER BY idx");
}

/// The `width` and `data` of the row storing `entries` (at most [`MAX_ROW_WIDTH`], each shorter
/// than 4 GiB): one entry as it is; several as each one's length (`u32`, big-endian) and bytes.
fn pack_entries(entries: &[Vec<u8>]) -> (i64, Vec<u8>) {
    if let [entry] = entries {
        return (1, entry.clone());
    }
    let mut data = Vec::with_capacity(entries.iter().map(|entry| 4 + entry.len()).sum());
    for entry in entries {
        let length = u32::try_from(entry.len()).unwrap_or(u32::MAX);
        data.extend_from_slice(&length.to_be_bytes());
        data.extend_from_slice(entry);
    }
    (entries.len() as i64, data)
}

/// The entries of a row of `width` entries (see [`pack_entries`]); `None` if `data` does not
/// hold exactly that many.
fn unpack_entries(width: i64, data: Vec<u8>) -> Option<Vec<Vec<u8>>> {
    if width == 1 {
        return Some(vec![data]);
    }
    let width = usize::try_from(width)
        .ok()
        .filter(|width| (1..=MAX_ROW_WIDTH).contains(width))?;
    let mut entries = Vec::with_capacity(width);
    let mut rest = data.as_slice();
    while let Some((length, after)) = rest.split_first_chunk::<4>() {
        let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
        let entry = after.get(..length)?;
        entries.push(entry.to_vec());
        rest = &after[length..];
    }
    (rest.is_empty() && entries.len() == width).then_some(entries)
}

/// The number of entries of `log`: one more than its highest index (entries have no gaps).
pub(crate) async fn audit_size<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
) -> Result<u64, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("");
    push_audit_size(&mut query, log);
    let row = query.build().fetch_one(&mut *connection).await?;
    let size = DB::first_integer(&row)?;
    u64::try_from(size).map_err(|_| Error::Corrupt(format!("size {size} of audit log {log}")))
}

/// An audit append, checked before anything is stored: the hashes of subtrees that cover a new
/// entry (`fresh`, so not stored yet) and of subtrees complete before it (`old`, which may be
/// stored already).
pub(crate) struct AuditAppend {
    /// The log's size after the append, if it is one the store can hold.
    new_size: Option<u64>,
    fresh: Vec<StoredHash>,
    old: Vec<(Subtree, [u8; 32])>,
}

impl AuditAppend {
    /// Checks that every hash is of a subtree complete in the grown log, and given once.
    pub(crate) fn plan(
        first_index: u64,
        entries: &[Vec<u8>],
        hashes: &[(u8, u64, [u8; 32])],
    ) -> Result<AuditAppend, Error> {
        if entries
            .iter()
            .any(|entry| u32::try_from(entry.len()).is_err())
        {
            return Err(Error::AuditOutOfRange(
                "an entry of 4 GiB or more".to_owned(),
            ));
        }
        let new_size = u64::try_from(entries.len())
            .ok()
            .and_then(|added| first_index.checked_add(added))
            .filter(|&new_size| audit_index(new_size).is_ok());
        let mut plan = AuditAppend {
            new_size,
            fresh: Vec::new(),
            old: Vec::new(),
        };
        // Checked against the grown log; without one, the append fails anyway.
        let Some(new_size) = new_size else {
            return Ok(plan);
        };
        // Each subtree once, complete in the grown log, and with one value.
        let mut wanted: BTreeMap<Subtree, [u8; 32]> = BTreeMap::new();
        for &(level, index, hash) in hashes {
            let subtree = (level, index);
            if !is_complete(subtree, new_size) {
                return Err(Error::AuditOutOfRange(format!(
                    "{} is not of a complete subtree of {new_size} entries",
                    hash_name(subtree)
                )));
            }
            if wanted
                .insert(subtree, hash)
                .is_some_and(|other| other != hash)
            {
                return Err(Error::AuditOverwrite(format!(
                    "{} (given twice)",
                    hash_name(subtree)
                )));
            }
        }
        // Only subtrees within the old size can be stored already: one that covers a new entry
        // is stored with that entry, and no entry at or after `first_index` exists when the
        // append succeeds. So only those need a look-up, which is none in the appender's usual
        // batch.
        for (subtree, hash) in wanted {
            if is_complete(subtree, first_index) {
                plan.old.push((subtree, hash));
            } else {
                plan.fresh
                    .push((i16::from(subtree.0), audit_index(subtree.1)?, hash));
            }
        }
        Ok(plan)
    }

    /// Whether [`audit_append_at_once`] can store it: some entries (a bounded number), and no
    /// hash to compare with a stored one.
    pub(crate) fn at_once(&self, entries: &[Vec<u8>]) -> bool {
        self.new_size.is_some()
            && !entries.is_empty()
            && entries.len() <= AUDIT_CHUNK
            && self.old.is_empty()
    }
}

/// The appender's usual batch, `plan` (for which [`AuditAppend::at_once`] holds), in one round
/// trip on `connection`, which is in no transaction: all or nothing, and
/// [`Error::AuditConflict`] unless the log holds exactly `first_index` entries.
///
/// If the future is dropped before the statements have finished, or a failed transaction
/// cannot be rolled back, the connection is closed instead of going back to its pool.
pub(crate) async fn audit_append_at_once<DB: Sql>(
    connection: &mut PoolConnection<DB>,
    log: &str,
    first_index: u64,
    entries: &[Vec<u8>],
    plan: &AuditAppend,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Closes the connection when dropped armed.
    struct CloseUnlessDone<'a, DB: Database>(&'a mut PoolConnection<DB>, bool);
    impl<DB: Database> Drop for CloseUnlessDone<'_, DB> {
        fn drop(&mut self) {
            if self.1 {
                self.0.close_on_drop();
            }
        }
    }

    let mut query = QueryBuilder::new("");
    let rollback = DB::push_audit_append(
        &mut query,
        log,
        audit_index(first_index)?,
        entries,
        &plan.fresh,
    );
    let mut guard = CloseUnlessDone(connection, true);
    let failed = match query.build().execute(&mut **guard.0).await {
        Ok(_) => {
            guard.1 = false;
            return Ok(());
        }
        Err(error) => error,
    };
    if rollback {
        // Fails harmlessly when the transaction never began; the connection is closed then.
        if sqlx::query("ROLLBACK")
            .execute(&mut **guard.0)
            .await
            .is_ok()
        {
            guard.1 = false;
        }
    } else {
        guard.1 = false;
    }
    // A log that does not end at `first_index`, or a second writer that took the index first,
    // is a conflict; anything else is told as it is.
    if !guard.1 {
        check_audit_size(&mut **guard.0, log, first_index).await?;
    }
    Err(failed.into())
}

/// Appends `entries` at `first_index` and stores `hashes` (checked into `plan`), all or
/// nothing: `connection` is in a write transaction, which the caller rolls back on error. For
/// what [`audit_append_at_once`] cannot do: no entries, hashes to compare with stored ones, or
/// more entries than one statement takes.
pub(crate) async fn audit_append<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    first_index: u64,
    entries: &[Vec<u8>],
    plan: AuditAppend,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut lock = QueryBuilder::new("");
    if DB::push_lock_audit_log(&mut lock, log) {
        lock.build().execute(&mut *connection).await?;
    }
    // The size is checked first, so that a stale view of the log is told as such and not as a
    // changed hash; under the lock it cannot change until the transaction ends.
    check_audit_size(connection, log, first_index).await?;
    if plan.new_size.is_none() {
        return Err(Error::AuditOutOfRange(format!(
            "{} entries after {first_index}",
            entries.len()
        )));
    }
    let AuditAppend { mut fresh, old, .. } = plan;
    if !old.is_empty() {
        let subtrees: Vec<Subtree> = old.iter().map(|(subtree, _)| *subtree).collect();
        let stored = audit_hashes(connection, log, &subtrees).await?;
        for ((subtree, hash), stored) in old.into_iter().zip(stored) {
            match stored {
                None => fresh.push((i16::from(subtree.0), audit_index(subtree.1)?, hash)),
                Some(stored) if stored == hash => {}
                Some(_) => return Err(Error::AuditOverwrite(hash_name(subtree))),
            }
        }
    }
    // No ON CONFLICT: an index taken anyway makes the statement fail rather than skip it.
    let mut index = audit_index(first_index)?;
    for chunk in entries.chunks(AUDIT_CHUNK) {
        let mut query = QueryBuilder::new("");
        DB::push_audit_entries(&mut query, log, index, &entry_rows(index, chunk));
        query.build().execute(&mut *connection).await?;
        index += chunk.len() as i64;
    }
    let (leaves, fresh) = split_leaves(&fresh);
    for chunk in leaves.chunks(AUDIT_CHUNK / MAX_ROW_WIDTH) {
        let mut query = QueryBuilder::new("");
        DB::push_audit_leaves(&mut query, log, chunk);
        query.build().execute(&mut *connection).await?;
    }
    for chunk in fresh.chunks(AUDIT_CHUNK) {
        let mut query = QueryBuilder::new("");
        DB::push_audit_hashes(&mut query, log, chunk);
        query.build().execute(&mut *connection).await?;
    }
    Ok(())
}

/// [`Error::AuditConflict`] unless `log` holds exactly `first_index` entries.
async fn check_audit_size<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    first_index: u64,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let size = audit_size(connection, log).await?;
    if first_index != size {
        return Err(Error::AuditConflict {
            expected: size,
            found: first_index,
        });
    }
    Ok(())
}

/// The entries `start..end` of `log` that exist, in index order.
pub(crate) async fn audit_entries<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    start: u64,
    end: u64,
) -> Result<Vec<Vec<u8>>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    if end < start {
        return Err(Error::AuditOutOfRange(format!(
            "range {start}..{end} ends before it starts"
        )));
    }
    // Nothing is stored beyond the largest index the tables can hold.
    let Ok(first) = i64::try_from(start) else {
        return Ok(Vec::new());
    };
    if start == end {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::new("");
    push_select_entries(
        &mut query,
        log,
        first,
        i64::try_from(end).unwrap_or(i64::MAX),
    );
    let end = i64::try_from(end).unwrap_or(i64::MAX);
    let rows = query.build().fetch_all(&mut *connection).await?;
    let mut entries = Vec::new();
    let mut expected = first;
    for row in &rows {
        let (index, width, data) = DB::packed_row(row)?;
        if index.saturating_add(width) <= first {
            continue;
        }
        if index > expected {
            return Err(Error::Corrupt(format!(
                "audit log {log} has no entry {expected}"
            )));
        }
        let stored = unpack_entries(width, data).ok_or_else(|| {
            Error::Corrupt(format!(
                "the row of {width} entries from {index} of audit log {log}"
            ))
        })?;
        let skip = usize::try_from(expected - index).unwrap_or(usize::MAX);
        let take = usize::try_from(end - expected).unwrap_or(usize::MAX);
        for entry in stored.into_iter().skip(skip).take(take) {
            entries.push(entry);
            expected += 1;
        }
    }
    Ok(entries)
}

/// Pushes the `SELECT level, idx, hash` of the stored ones among `subtrees` (not empty).
fn push_select_hashes<DB: Sql>(query: &mut QueryBuilder<DB>, log: &str, subtrees: &[(i64, i64)]) {
    // The list drives a primary-key lookup per subtree. `CROSS JOIN` makes SQLite, which has no
    // statistics, take the list as the outer loop; PostgreSQL plans it like any join.
    query.push("SELECT h.level, h.idx, h.hash FROM (VALUES ");
    for (position, (level, index)) in subtrees.iter().enumerate() {
        query.push(if position == 0 { "(" } else { ", (" });
        DB::push_integer(query, *level);
        query.push(", ");
        DB::push_integer(query, *index);
        query.push(")");
    }
    query.push(") AS v CROSS JOIN audit_hashes h WHERE h.log = ");
    DB::push_text(query, log);
    query.push(" AND h.level = v.column1 AND h.idx = v.column2");
}

/// Pushes the `SELECT idx, width, hashes` of the `audit_leaves` rows of `log` in the 256-leaf
/// `bundles` (not empty).
fn push_select_leaves<DB: Sql>(query: &mut QueryBuilder<DB>, log: &str, bundles: &[i64]) {
    // A range scan of the primary key per bundle; a row never crosses a bundle's boundary.
    query.push("SELECT l.idx, l.width, l.hashes FROM (VALUES ");
    for (position, bundle) in bundles.iter().enumerate() {
        query.push(if position == 0 { "(" } else { ", (" });
        DB::push_integer(query, bundle * MAX_ROW_WIDTH as i64);
        query.push(")");
    }
    query.push(") AS v CROSS JOIN audit_leaves l WHERE l.log = ");
    DB::push_text(query, log);
    query.push(" AND l.idx >= v.column1 AND l.idx < v.column1 + ");
    DB::push_integer(query, MAX_ROW_WIDTH as i64);
}

/// The rows of the `SELECT`s that `push` makes of `items`, [`AUDIT_CHUNK`] at a time; a full
/// chunk's statement is kept prepared.
async fn fetch_in_chunks<DB: Sql, T>(
    connection: &mut DB::Connection,
    items: &[T],
    push: impl Fn(&mut QueryBuilder<DB>, &[T]),
) -> Result<Vec<DB::Row>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut rows = Vec::new();
    for chunk in items.chunks(AUDIT_CHUNK) {
        let mut query = QueryBuilder::new("");
        push(&mut query, chunk);
        rows.extend(
            query
                .build()
                .persistent(chunk.len() == AUDIT_CHUNK)
                .fetch_all(&mut *connection)
                .await?,
        );
    }
    Ok(rows)
}

/// The stored hashes of `subtrees`, in the order asked, `None` for those not stored.
pub(crate) async fn audit_hashes<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    subtrees: &[Subtree],
) -> Result<Vec<Option<[u8; 32]>>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    // Each subtree once; an index beyond the tables' range cannot be stored.
    let mut asked: Vec<(i64, i64)> = subtrees
        .iter()
        .filter_map(|&(level, index)| Some((i64::from(level), i64::try_from(index).ok()?)))
        .collect();
    asked.sort_unstable();
    asked.dedup();
    // Leaf hashes are in `audit_hashes` only below the first row of `audit_leaves`: those were
    // stored before that table existed. Above it, none is looked for there.
    let legacy_below = if asked.iter().any(|&(level, _)| level == 0) {
        let mut query =
            QueryBuilder::new("SELECT COALESCE(MIN(idx), -1) FROM audit_leaves WHERE log = ");
        DB::push_text(&mut query, log);
        let row = query.build().fetch_one(&mut *connection).await?;
        match DB::first_integer(&row)? {
            -1 => i64::MAX,
            first => first,
        }
    } else {
        i64::MAX
    };
    let in_hashes: Vec<(i64, i64)> = asked
        .iter()
        .filter(|&&(level, index)| level > 0 || index < legacy_below)
        .copied()
        .collect();
    let mut found: HashMap<Subtree, [u8; 32]> = HashMap::with_capacity(asked.len());
    for row in fetch_in_chunks(connection, &in_hashes, |query, chunk| {
        push_select_hashes(query, log, chunk);
    })
    .await?
    {
        let (level, index, hash) = DB::hash_row(&row)?;
        let corrupt = || Error::Corrupt(format!("hash at level {level}, index {index}"));
        let subtree = (
            u8::try_from(level).map_err(|_| corrupt())?,
            u64::try_from(index).map_err(|_| corrupt())?,
        );
        found.insert(subtree, hash.try_into().map_err(|_| corrupt())?);
    }
    // Leaf hashes not in `audit_hashes` are in the rows of `audit_leaves`, each within the
    // 256-leaf bundle of its index.
    let mut bundles: Vec<i64> = asked
        .iter()
        .filter(|&&(level, index)| level == 0 && !found.contains_key(&(0, index.unsigned_abs())))
        .map(|&(_, index)| index.div_euclid(MAX_ROW_WIDTH as i64))
        .collect();
    bundles.dedup();
    for row in fetch_in_chunks(connection, &bundles, |query, chunk| {
        push_select_leaves(query, log, chunk);
    })
    .await?
    {
        let (index, width, hashes) = DB::packed_row(&row)?;
        let corrupt = || {
            Error::Corrupt(format!(
                "the row of {width} leaf hashes from {index} of audit log {log}"
            ))
        };
        for (index, hash) in unpack_leaves(index, width, &hashes).ok_or_else(corrupt)? {
            found.insert((0, u64::try_from(index).map_err(|_| corrupt())?), hash);
        }
    }
    Ok(subtrees
        .iter()
        .map(|subtree| found.get(subtree).copied())
        .collect())
}

/// Stores the checkpoint note of `log` at `size`; the same note again is a no-op.
pub(crate) async fn audit_put_checkpoint<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    size: u64,
    note: &str,
    created_at: i64,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    // Logs only grow, so a size reached now is still reached when the row is inserted.
    let current = audit_size(connection, log).await?;
    if size > current {
        return Err(Error::AuditOutOfRange(format!(
            "checkpoint of size {size} for a log of {current} entries"
        )));
    }
    let mut query =
        QueryBuilder::new("INSERT INTO audit_checkpoints (log, size, note, created_at) VALUES (");
    DB::push_text(&mut query, log);
    query.push(", ");
    DB::push_integer(&mut query, audit_index(size)?);
    query.push(", ");
    DB::push_text(&mut query, note);
    query.push(", ");
    DB::push_integer(&mut query, created_at);
    // DO NOTHING, then compare: a checkpoint row is never replaced.
    query.push(") ON CONFLICT (log, size) DO NOTHING");
    let result = query.build().execute(&mut *connection).await?;
    if DB::rows_affected(&result) == 0
        && audit_checkpoint(connection, log, size).await?.as_deref() != Some(note)
    {
        return Err(Error::AuditOverwrite(format!(
            "the checkpoint note of size {size}"
        )));
    }
    Ok(())
}

/// Pushes the `SELECT size, note` of the checkpoint of `log` with the largest size.
fn push_latest_checkpoint<DB: Sql>(query: &mut QueryBuilder<DB>, log: &str) {
    query.push("SELECT size, note FROM audit_checkpoints WHERE log = ");
    DB::push_text(query, log);
    query.push(" ORDER BY size DESC LIMIT 1");
}

/// The checkpoint of `log` with the largest size: `(size, note)`.
pub(crate) async fn audit_latest_checkpoint<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
) -> Result<Option<(u64, String)>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("");
    push_latest_checkpoint(&mut query, log);
    let Some(row) = query.build().fetch_optional(&mut *connection).await? else {
        return Ok(None);
    };
    let (size, note) = DB::integer_and_text(&row)?;
    let size = u64::try_from(size)
        .map_err(|_| Error::Corrupt(format!("checkpoint size {size} of audit log {log}")))?;
    Ok(Some((size, note)))
}

/// The checkpoint note of `log` at `size`, if one was stored.
pub(crate) async fn audit_checkpoint<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    size: u64,
) -> Result<Option<String>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let Ok(size) = i64::try_from(size) else {
        return Ok(None);
    };
    let mut query = QueryBuilder::new("SELECT note FROM audit_checkpoints WHERE log = ");
    DB::push_text(&mut query, log);
    query.push(" AND size = ");
    DB::push_integer(&mut query, size);
    let row = query.build().fetch_optional(&mut *connection).await?;
    Ok(row.map(|row| DB::first_text(&row)).transpose()?)
}

/// The lowest index of `log` whose leaf hash is `hash`, if any. Scans the log's leaf hashes (no
/// index on hashes is kept, so appends stay cheap); meant for auditors' occasional lookups.
pub(crate) async fn audit_leaf_index<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    hash: &[u8; 32],
) -> Result<Option<u64>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    // Leaf hashes stored one per row, before `audit_leaves` existed.
    let mut query = QueryBuilder::new("SELECT idx FROM audit_hashes WHERE log = ");
    DB::push_text(&mut query, log);
    query.push(" AND level = 0 AND hash = ");
    DB::push_bytes(&mut query, hash);
    query.push(" ORDER BY idx LIMIT 1");
    let row = query.build().fetch_optional(&mut *connection).await?;
    let single = row.map(|row| DB::first_integer(&row)).transpose()?;
    // Rows of leaf hashes whose bytes hold it somewhere; it is a leaf's only at a multiple of 32.
    let mut query = QueryBuilder::new("SELECT idx, width, hashes FROM audit_leaves WHERE log = ");
    DB::push_text(&mut query, log);
    query.push(" AND ");
    DB::push_contains_bytes(&mut query, "hashes", hash);
    query.push(" ORDER BY idx");
    let mut packed = None;
    for row in &query.build().fetch_all(&mut *connection).await? {
        let (index, width, hashes) = DB::packed_row(row)?;
        let mut leaves = unpack_leaves(index, width, &hashes).ok_or_else(|| {
            Error::Corrupt(format!(
                "the row of {width} leaf hashes from {index} of audit log {log}"
            ))
        })?;
        if let Some((index, _)) = leaves.find(|(_, leaf)| leaf == hash) {
            packed = Some(index);
            break;
        }
    }
    let index = match (single, packed) {
        (Some(single), Some(packed)) => Some(single.min(packed)),
        (single, packed) => single.or(packed),
    };
    index
        .map(|index| {
            u64::try_from(index).map_err(|_| Error::Corrupt(format!("leaf index {index}")))
        })
        .transpose()
}

/// The latest checkpoint witnessed of the log `origin`: its size and note.
pub(crate) async fn audit_witnessed<DB: Sql>(
    connection: &mut DB::Connection,
    origin: &str,
) -> Result<Option<(u64, String)>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("SELECT size, note FROM audit_witnessed WHERE origin = ");
    DB::push_text(&mut query, origin);
    let Some(row) = query.build().fetch_optional(&mut *connection).await? else {
        return Ok(None);
    };
    let (size, note) = DB::integer_and_text(&row)?;
    let size = u64::try_from(size)
        .map_err(|_| Error::Corrupt(format!("witnessed size {size} of {origin}")))?;
    Ok(Some((size, note)))
}

/// Records that the checkpoint `note` of size `size` of the log `origin` was witnessed, replacing
/// the one before, if the size remembered is still `expected` (`None`: nothing yet). Whether it
/// was recorded: one statement, so two witnessing processes cannot both replace the same state.
pub(crate) async fn audit_put_witnessed<DB: Sql>(
    connection: &mut DB::Connection,
    origin: &str,
    expected: Option<u64>,
    size: u64,
    note: &str,
) -> Result<bool, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("INSERT INTO audit_witnessed (origin, size, note) VALUES (");
    DB::push_text(&mut query, origin);
    query.push(", ");
    DB::push_integer(&mut query, audit_index(size)?);
    query.push(", ");
    DB::push_text(&mut query, note);
    if let Some(expected) = expected {
        query.push(
            ") ON CONFLICT (origin) DO UPDATE SET size = excluded.size, note = excluded.note \
             WHERE audit_witnessed.size = ",
        );
        DB::push_integer(&mut query, audit_index(expected)?);
    } else {
        query.push(") ON CONFLICT (origin) DO NOTHING");
    }
    let result = query.build().execute(&mut *connection).await?;
    Ok(DB::rows_affected(&result) == 1)
}

/// Stores the cosignature line `witness` returned for the checkpoint of `log` at `size`; a
/// second line from the same witness for the same checkpoint is ignored.
pub(crate) async fn audit_put_cosignature<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    size: u64,
    witness: &str,
    line: &str,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query =
        QueryBuilder::new("INSERT INTO audit_cosignatures (log, size, witness, line) VALUES (");
    DB::push_text(&mut query, log);
    query.push(", ");
    DB::push_integer(&mut query, audit_index(size)?);
    query.push(", ");
    DB::push_text(&mut query, witness);
    query.push(", ");
    DB::push_text(&mut query, line);
    query.push(") ON CONFLICT (log, size, witness) DO NOTHING");
    query.build().execute(&mut *connection).await?;
    Ok(())
}

/// The cosignature lines stored for the checkpoint of `log` at `size`, by witness name.
pub(crate) async fn audit_cosignatures<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    size: u64,
) -> Result<Vec<String>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("SELECT line FROM audit_cosignatures WHERE log = ");
    DB::push_text(&mut query, log);
    query.push(" AND size = ");
    DB::push_integer(&mut query, audit_index(size)?);
    query.push(" ORDER BY witness");
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter()
        .map(|row| DB::first_text(row).map_err(Error::from))
        .collect()
}

/// The seed stored for `log`, storing `candidate` first if there is none.
pub(crate) async fn audit_key_seed<DB: Sql>(
    connection: &mut DB::Connection,
    log: &str,
    candidate: &[u8; 32],
) -> Result<[u8; 32], Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut insert = QueryBuilder::new("INSERT INTO audit_keys (log, seed) VALUES (");
    DB::push_text(&mut insert, log);
    insert.push(", ");
    DB::push_bytes(&mut insert, candidate);
    // DO NOTHING: a seed, once stored, is never replaced.
    insert.push(") ON CONFLICT (log) DO NOTHING");
    insert.build().execute(&mut *connection).await?;
    let mut select = QueryBuilder::new("SELECT seed FROM audit_keys WHERE log = ");
    DB::push_text(&mut select, log);
    let row = select.build().fetch_one(&mut *connection).await?;
    DB::first_bytes(&row)?
        .try_into()
        .map_err(|_| Error::Corrupt(format!("the key seed of audit log {log} is not 32 bytes")))
}

/// Stores a new document (registration or subscription) in `table`; `Error::AlreadyExists` if
/// its id is taken.
pub(crate) async fn put_document<DB: Sql>(
    connection: &mut DB::Connection,
    table: Documents,
    tenant: &str,
    record: &RegistrationRecord,
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!(
        "INSERT INTO {} (tenant, {REGISTRATION_COLUMNS}) VALUES (",
        table.name()
    ));
    DB::push_text(&mut query, tenant);
    query.push(", ");
    DB::push_text(&mut query, &record.id);
    query.push(", ");
    DB::push_text(&mut query, &record.body);
    query.push(", ");
    DB::push_integer(&mut query, to_micros(record.created_at));
    query.push(", ");
    DB::push_integer(&mut query, to_micros(record.modified_at));
    query.push(") ON CONFLICT (tenant, id) DO NOTHING");
    let result = query.build().execute(&mut *connection).await?;
    if DB::rows_affected(&result) == 0 {
        return Err(Error::AlreadyExists);
    }
    Ok(())
}

/// Replaces the body and modification time of a stored document if its modification time
/// is still `expected` (so that two concurrent updates cannot both apply to the same state);
/// `false` if there is no such document or it changed.
pub(crate) async fn replace_document<DB: Sql>(
    connection: &mut DB::Connection,
    table: Documents,
    tenant: &str,
    record: &RegistrationRecord,
    expected: chrono::DateTime<chrono::Utc>,
) -> Result<bool, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!("UPDATE {} SET body = ", table.name()));
    DB::push_text(&mut query, &record.body);
    query.push(", modified_at = ");
    DB::push_integer(&mut query, to_micros(record.modified_at));
    query.push(" WHERE tenant = ");
    DB::push_text(&mut query, tenant);
    query.push(" AND id = ");
    DB::push_text(&mut query, &record.id);
    query.push(" AND modified_at = ");
    DB::push_integer(&mut query, to_micros(expected));
    let result = query.build().execute(&mut *connection).await?;
    Ok(DB::rows_affected(&result) > 0)
}

/// The documents of `tenant` in `table` with this id (none or one), or all of them when `id` is
/// `None`, in id order.
pub(crate) async fn get_documents<DB: Sql>(
    connection: &mut DB::Connection,
    table: Documents,
    tenant: &str,
    id: Option<&str>,
) -> Result<Vec<RegistrationRecord>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!(
        "SELECT {REGISTRATION_COLUMNS} FROM {} WHERE tenant = ",
        table.name()
    ));
    DB::push_text(&mut query, tenant);
    if let Some(id) = id {
        query.push(" AND id = ");
        DB::push_text(&mut query, id);
    }
    query.push(" ORDER BY id");
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter()
        .map(|row| DB::registration_row(row)?.into_record())
        .collect()
}

/// Every tenant with at least one document in `table`, in order.
pub(crate) async fn document_tenants<DB: Sql>(
    connection: &mut DB::Connection,
    table: Documents,
) -> Result<Vec<String>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!(
        "SELECT DISTINCT tenant FROM {} ORDER BY tenant",
        table.name()
    ));
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter()
        .map(|row| DB::first_text(row).map_err(Error::from))
        .collect()
}

/// Deletes a document; `false` if there was none with this id.
pub(crate) async fn delete_document<DB: Sql>(
    connection: &mut DB::Connection,
    table: Documents,
    tenant: &str,
    id: &str,
) -> Result<bool, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(format!("DELETE FROM {} WHERE tenant = ", table.name()));
    DB::push_text(&mut query, tenant);
    query.push(" AND id = ");
    DB::push_text(&mut query, id);
    let result = query.build().execute(&mut *connection).await?;
    Ok(DB::rows_affected(&result) > 0)
}

/// The kinds of JSON document kept by tenant and id, each in a table of its own with the same
/// columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Documents {
    /// Context source registrations (clause 5.2.9).
    Registrations,
    /// Context source registration subscriptions (clause 5.2.12).
    RegistrationSubscriptions,
}

impl Documents {
    fn name(self) -> &'static str {
        match self {
            Documents::Registrations => "csource_registrations",
            Documents::RegistrationSubscriptions => "csource_subscriptions",
        }
    }
}

/// Every entity type of `tenant` and how many entities have it, in type order (discovery,
/// clause 5.7.1).
pub(crate) async fn type_counts<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
) -> Result<Vec<(String, i64)>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("SELECT COUNT(*), type FROM entity_types WHERE tenant = ");
    DB::push_text(&mut query, tenant);
    query.push(" GROUP BY type ORDER BY type");
    let rows = query.build().fetch_all(&mut *connection).await?;
    rows.iter()
        .map(|row| {
            let (count, name) = DB::integer_and_text(row)?;
            Ok((name, count))
        })
        .collect()
}

/// Where and since when `tenant` holds entities (see [`crate::Extent`]).
pub(crate) async fn extent<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
) -> Result<crate::Extent, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(
        "SELECT MIN(min_lon), MIN(min_lat), MAX(max_lon), MAX(max_lat), MIN(created_at), \
         MIN(first_observed_at) FROM entities WHERE tenant = ",
    );
    DB::push_text(&mut query, tenant);
    let row = query.build().fetch_one(&mut *connection).await?;
    let (bbox, [created, observed]) = DB::extent_row(&row)?;
    let bbox = match bbox {
        [Some(min_lon), Some(min_lat), Some(max_lon), Some(max_lat)] => {
            Some([min_lon, min_lat, max_lon, max_lat])
        }
        _ => None,
    };
    Ok(crate::Extent {
        bbox,
        first_created: created.map(crate::sql::from_micros).transpose()?,
        first_observed: observed.map(crate::sql::from_micros).transpose()?,
    })
}

/// Up to `limit` entities whose first observation is not computed yet (they were stored before
/// the store kept it), in (tenant, id) order: tenant, id and body (`None` if the entity is gone).
pub(crate) async fn observations_pending<DB: Sql>(
    connection: &mut DB::Connection,
    limit: u32,
) -> Result<Vec<(String, String, Option<String>)>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new(
        "SELECT p.tenant, p.id, e.body FROM entity_observations_pending p \
         LEFT JOIN entities e ON e.tenant = p.tenant AND e.id = p.id \
         ORDER BY p.tenant, p.id LIMIT ",
    );
    DB::push_integer(&mut query, i64::from(limit));
    let rows = query.build().fetch_all(&mut *connection).await?;
    Ok(rows
        .iter()
        .map(|row| DB::two_texts_and_maybe_one(row))
        .collect::<Result<_, _>>()?)
}

/// How many entities wait for their first observation to be computed.
pub(crate) async fn observations_pending_count<DB: Sql>(
    connection: &mut DB::Connection,
) -> Result<u64, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::new("SELECT COUNT(*) FROM entity_observations_pending");
    let row = query.build().fetch_one(&mut *connection).await?;
    let count = DB::first_integer(&row)?;
    u64::try_from(count).map_err(|_| Error::Corrupt(format!("a count of {count}")))
}

/// Sets the first observation of these entities of `tenant` and takes them off the pending list.
pub(crate) async fn set_first_observed<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
    values: &[(String, Option<i64>)],
) -> Result<(), Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    for chunk in values.chunks(IN_LIST_CHUNK) {
        // One statement per chunk: the list joined to the rows it names by primary key.
        let mut query =
            QueryBuilder::new("UPDATE entities SET first_observed_at = v.column2 FROM (VALUES ");
        for (position, (id, observed)) in chunk.iter().enumerate() {
            query.push(if position == 0 { "(" } else { ", (" });
            DB::push_text(&mut query, id);
            query.push(", ");
            DB::push_optional_integer(&mut query, *observed);
            query.push(")");
        }
        query.push(") AS v WHERE entities.tenant = ");
        DB::push_text(&mut query, tenant);
        query.push(" AND entities.id = v.column1");
        query.build().execute(&mut *connection).await?;

        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let mut query =
            QueryBuilder::new("DELETE FROM entity_observations_pending WHERE tenant = ");
        DB::push_text(&mut query, tenant);
        query.push(" AND id ");
        DB::push_in_list(&mut query, &ids);
        query.build().execute(&mut *connection).await?;
    }
    Ok(())
}

/// Every (entity type, attribute name) pair some entity of `tenant` has, and `(type, "")` for a
/// type with an entity that has no attribute at all, in that order.
pub(crate) async fn type_shapes<DB: Sql>(
    connection: &mut DB::Connection,
    tenant: &str,
) -> Result<Vec<(String, String)>, Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    // Attribute names are IRIs, never empty, so the empty string cannot be taken for one.
    let mut query = QueryBuilder::new(
        "SELECT DISTINCT t.type, COALESCE(a.attribute, '') FROM entity_types t \
         LEFT JOIN entity_attributes a ON a.tenant = t.tenant AND a.entity_id = t.entity_id \
         WHERE t.tenant = ",
    );
    DB::push_text(&mut query, tenant);
    let rows = query.build().fetch_all(&mut *connection).await?;
    // Sorted here: byte order whatever the database's collation.
    let mut shapes = rows
        .iter()
        .map(|row| DB::two_texts(row).map_err(Error::from))
        .collect::<Result<Vec<_>, _>>()?;
    shapes.sort_unstable();
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    //! The statements use the indexes on SQLite, which has no statistics to plan with.

    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{AssertSqlSafe, ConnectOptions, Row, Sqlite, SqliteConnection};

    use super::*;

    #[test]
    fn appended_entries_are_cut_into_rows_at_bundle_boundaries() {
        let entries = |n: usize| vec![b"e".to_vec(); n];
        let shape = |first: i64, n: usize| -> Vec<(i64, i64)> {
            entry_rows(first, &entries(n))
                .into_iter()
                .map(|row| (row.offset, row.width))
                .collect()
        };
        assert_eq!(shape(0, 1), [(0, 1)]);
        assert_eq!(shape(250, 10), [(0, 6), (6, 4)]);
        assert_eq!(shape(0, 600), [(0, 256), (256, 256), (512, 88)]);
        assert_eq!(shape(256, 256), [(0, 256)]);
        assert_eq!(shape(255, 2), [(0, 1), (1, 1)]);
        assert!(shape(7, 0).is_empty());
    }

    #[test]
    fn entries_pack_into_a_row_and_unpack_whole_or_not_at_all() {
        let entries = vec![b"first".to_vec(), Vec::new(), vec![7; 300]];
        let (width, data) = pack_entries(&entries);
        assert_eq!(width, 3);
        assert_eq!(unpack_entries(width, data.clone()), Some(entries));
        // One entry is stored as it is, and a width of 1 reads it so.
        assert_eq!(pack_entries(&[b"alone".to_vec()]), (1, b"alone".to_vec()));
        assert_eq!(
            unpack_entries(1, b"alone".to_vec()),
            Some(vec![b"alone".to_vec()])
        );
        // A wrong width, a cut row, trailing bytes, a width beyond any row: none reads.
        assert_eq!(unpack_entries(2, data.clone()), None);
        assert_eq!(unpack_entries(4, data.clone()), None);
        assert_eq!(unpack_entries(3, data[..data.len() - 1].to_vec()), None);
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(unpack_entries(3, longer), None);
        assert_eq!(unpack_entries(MAX_ROW_WIDTH as i64 + 1, data), None);
        assert_eq!(unpack_entries(0, Vec::new()), None);
    }

    /// Pushes one statement for `filter` after `EXPLAIN QUERY PLAN`.
    type Push = fn(&mut QueryBuilder<Sqlite>, &str, &EntityQuery);

    /// Pushes one audit-log statement after `EXPLAIN QUERY PLAN`.
    type AuditPush = fn(&mut QueryBuilder<Sqlite>);

    async fn plan(connection: &mut SqliteConnection, push: Push, filter: &EntityQuery) -> String {
        let mut query = QueryBuilder::new("EXPLAIN QUERY PLAN ");
        push(&mut query, "city", filter);
        let rows = query
            .build()
            .fetch_all(&mut *connection)
            .await
            .expect("EXPLAIN QUERY PLAN");
        rows.iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// No full scan of a table (only of the `json_each` list of ids) and no sort.
    fn check(plan: &str, what: &str) {
        for line in plan.lines() {
            let scans_a_table = line.contains("SCAN") && !line.contains("json_each");
            assert!(
                !scans_a_table && !line.contains("TEMP B-TREE"),
                "{what}: {line}\n{plan}"
            );
        }
    }

    #[tokio::test]
    async fn statements_use_the_indexes() {
        let mut connection = SqliteConnectOptions::from_str("sqlite::memory:")
            .expect("in-memory SQLite options")
            .with_regexp()
            .connect()
            .await
            .expect("in-memory SQLite");
        for (_, _, sql) in crate::migrations::SQLITE {
            sqlx::raw_sql(AssertSqlSafe(*sql))
                .execute(&mut connection)
                .await
                .expect("migration");
        }
        let strings = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect();
        let many_ids: Vec<String> = (0..IN_LIST_CHUNK + 1)
            .map(|i| format!("urn:x:{i}"))
            .collect();
        let filters = [
            EntityQuery::default(),
            EntityQuery {
                ids: strings(&["a"]),
                ..EntityQuery::default()
            },
            EntityQuery {
                ids: strings(&["a", "b"]),
                types: strings(&["T"]),
                ..EntityQuery::default()
            },
            EntityQuery {
                ids: many_ids,
                ..EntityQuery::default()
            },
            EntityQuery {
                types: strings(&["T"]),
                ..EntityQuery::default()
            },
            EntityQuery {
                types: strings(&["T", "U"]),
                ..EntityQuery::default()
            },
            EntityQuery {
                attributes: strings(&["A"]),
                ..EntityQuery::default()
            },
            EntityQuery {
                attributes: strings(&["A", "B"]),
                ..EntityQuery::default()
            },
            EntityQuery {
                types: strings(&["T"]),
                attributes: strings(&["A", "B"]),
                id_pattern: Some("x".to_owned()),
                ..EntityQuery::default()
            },
        ];
        let statements: [(&str, Push); 3] = [
            ("page", push_select_page),
            ("count", push_count),
            ("purge", push_purge),
        ];
        // The audit statements, each with the primary-key search it must make: the whole key,
        // not just the log (which would walk all of the log's rows).
        let audit_statements: [(AuditPush, &str); 5] = [
            (
                // The log's last row, down the primary key in reverse (no sort: no TEMP B-TREE).
                |query| push_audit_size(query, "log"),
                "SEARCH audit_entries USING INDEX sqlite_autoindex_audit_entries_1 (log=?)",
            ),
            (
                |query| push_select_entries(query, "log", 3, 300),
                "SEARCH audit_entries USING INDEX sqlite_autoindex_audit_entries_1 \
                 (log=? AND idx>? AND idx<?)",
            ),
            (
                |query| push_select_hashes(query, "log", &[(0, 7)]),
                "SEARCH h USING PRIMARY KEY (log=? AND level=? AND idx=?)",
            ),
            (
                |query| push_select_hashes(query, "log", &[(0, 7), (1, 2), (8, 0)]),
                "SEARCH h USING PRIMARY KEY (log=? AND level=? AND idx=?)",
            ),
            (
                |query| push_latest_checkpoint(query, "log"),
                "SEARCH audit_checkpoints USING INDEX sqlite_autoindex_audit_checkpoints_1 (log=?)",
            ),
        ];
        for (push, search) in audit_statements {
            let mut query = QueryBuilder::new("EXPLAIN QUERY PLAN ");
            push(&mut query);
            let rows = query
                .build()
                .fetch_all(&mut connection)
                .await
                .expect("EXPLAIN QUERY PLAN");
            let plan = rows
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                plan.contains(search) && !plan.contains("TEMP B-TREE"),
                "{search}\n{plan}"
            );
        }
        for filter in &filters {
            for (name, push) in statements {
                // Without any filter the count and purge walk the tenant's whole range, which is
                // the answer; only the page must not scan.
                if *filter == EntityQuery::default() && name != "page" {
                    continue;
                }
                let plan = plan(&mut connection, push, filter).await;
                check(&plan, &format!("{name} of {filter:?}"));
            }
        }
    }
}
