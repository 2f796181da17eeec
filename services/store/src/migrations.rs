//! The schema migrations, embedded in the binary so that it is self-contained.
//!
//! Each backend has its own SQL files under `migrations/{sqlite,postgres}/`, with the same
//! versions in both. A test checks that every file there is listed here.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One embedded migration: version, description, SQL.
pub(crate) type Embedded = (i64, &'static str, &'static str);

pub(crate) const SQLITE: &[Embedded] = &[
    (
        1,
        "entities",
        include_str!("../migrations/sqlite/0001_entities.sql"),
    ),
    (
        2,
        "jsonld contexts",
        include_str!("../migrations/sqlite/0002_jsonld_contexts.sql"),
    ),
    (
        3,
        "revoked tokens",
        include_str!("../migrations/sqlite/0003_revoked_tokens.sql"),
    ),
    (
        4,
        "audit log",
        include_str!("../migrations/sqlite/0004_audit_log.sql"),
    ),
    (
        5,
        "audit keys",
        include_str!("../migrations/sqlite/0005_audit_keys.sql"),
    ),
    (
        6,
        "audit witness",
        include_str!("../migrations/sqlite/0006_audit_witness.sql"),
    ),
    (
        7,
        "csource registrations",
        include_str!("../migrations/sqlite/0007_csource_registrations.sql"),
    ),
    (
        8,
        "csource subscriptions",
        include_str!("../migrations/sqlite/0008_csource_subscriptions.sql"),
    ),
    (
        9,
        "audit entry rows",
        include_str!("../migrations/sqlite/0009_audit_entry_rows.sql"),
    ),
    (
        10,
        "audit leaf rows",
        include_str!("../migrations/sqlite/0010_audit_leaf_rows.sql"),
    ),
    (
        11,
        "entity observations",
        include_str!("../migrations/sqlite/0011_entity_observations.sql"),
    ),
];

pub(crate) const POSTGRES: &[Embedded] = &[
    (
        1,
        "entities",
        include_str!("../migrations/postgres/0001_entities.sql"),
    ),
    (
        2,
        "jsonld contexts",
        include_str!("../migrations/postgres/0002_jsonld_contexts.sql"),
    ),
    (
        3,
        "revoked tokens",
        include_str!("../migrations/postgres/0003_revoked_tokens.sql"),
    ),
    (
        4,
        "audit log",
        include_str!("../migrations/postgres/0004_audit_log.sql"),
    ),
    (
        5,
        "audit keys",
        include_str!("../migrations/postgres/0005_audit_keys.sql"),
    ),
    (
        6,
        "audit witness",
        include_str!("../migrations/postgres/0006_audit_witness.sql"),
    ),
    (
        7,
        "csource registrations",
        include_str!("../migrations/postgres/0007_csource_registrations.sql"),
    ),
    (
        8,
        "csource subscriptions",
        include_str!("../migrations/postgres/0008_csource_subscriptions.sql"),
    ),
    (
        9,
        "audit entry rows",
        include_str!("../migrations/postgres/0009_audit_entry_rows.sql"),
    ),
    (
        10,
        "audit leaf rows",
        include_str!("../migrations/postgres/0010_audit_leaf_rows.sql"),
    ),
    (
        11,
        "entity observations",
        include_str!("../migrations/postgres/0011_entity_observations.sql"),
    ),
];

/// Builds sqlx's migrator from an embedded list.
pub(crate) fn migrator(embedded: &[Embedded]) -> Migrator {
    Migrator::with_migrations(
        embedded
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.sql` file on disk is embedded, under the version its name starts with, and the two
    /// backends have the same versions.
    fn check(directory: &str, embedded: &[Embedded]) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(directory);
        let mut on_disk: Vec<(i64, String)> = std::fs::read_dir(&path)
            .expect("migration directory is readable")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "sql"))
            .map(|path| {
                let name = path.file_name().expect("file name").to_string_lossy();
                let version = name
                    .split('_')
                    .next()
                    .and_then(|digits| digits.parse().ok())
                    .expect("migration file names start with a version");
                let sql = std::fs::read_to_string(&path).expect("migration is readable");
                (version, sql)
            })
            .collect();
        on_disk.sort();
        let listed: Vec<(i64, String)> = embedded
            .iter()
            .map(|&(version, _, sql)| (version, sql.to_owned()))
            .collect();
        assert_eq!(
            on_disk, listed,
            "migrations/{directory} and the embedded list differ"
        );
    }

    #[test]
    fn embedded_migrations_match_the_files() {
        check("sqlite", SQLITE);
        check("postgres", POSTGRES);
        let versions = |list: &[Embedded]| list.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
    }
}
