//! Test helpers shared by the services' integration tests (a dev-dependency only).
//!
//! [`test_databases`] gives every behaviour test a fresh SQLite database and, when
//! `CIVITAS_TEST_POSTGRES_URL` is set, a fresh PostgreSQL database too, so that one test
//! function covers both backends:
//!
//! ```no_run
//! # async fn example() {
//! for database in civitas_testkit::test_databases().await {
//!     // let store = Store::open(&database.url).await?; …
//!     assert!(database.url.starts_with(database.kind));
//! }
//! # }
//! ```

use std::io::Write;
use std::str::FromStr;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The environment variable naming a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. Its user must be allowed to `CREATE DATABASE`.
pub const POSTGRES_URL_VARIABLE: &str = "CIVITAS_TEST_POSTGRES_URL";

/// Test databases are named `civitas_test_<unix seconds>_<process>_<sequence>`.
const DATABASE_PREFIX: &str = "civitas_test_";

/// Test databases older than this are left over from crashed runs and are dropped.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A fresh, empty database for one test. Dropping it removes the database (best effort).
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to give to `Store::open`.
    pub url: String,
    /// `"sqlite"` or `"postgres"`.
    pub kind: &'static str,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    /// The SQLite file lives in this directory, deleted with it.
    Directory(
        #[expect(dead_code, reason = "held only to delete the directory on drop")]
        tempfile::TempDir,
    ),
    /// Drop this database through the server's maintenance URL.
    Postgres { server_url: String, name: String },
}

impl TestDatabase {
    /// Runs `script` (one or more SQL statements) on this database, over a connection of its
    /// own: for a test that puts the database in a state the store's API cannot make, such as
    /// one written by an earlier version.
    ///
    /// # Panics
    ///
    /// When the database cannot be reached or a statement fails.
    pub async fn execute(&self, script: &'static str) {
        if self.kind == "sqlite" {
            run_script::<sqlx::SqliteConnection>(&self.url, script).await;
        } else {
            run_script::<PgConnection>(&self.url, script).await;
        }
    }
}

async fn run_script<C: Connection>(url: &str, script: &'static str)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    let mut connection = C::connect(url)
        .await
        .expect("the test database accepts a connection");
    sqlx::raw_sql(script)
        .execute(&mut connection)
        .await
        .expect(script);
    let _ = connection.close().await;
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { server_url, name } = &self.cleanup {
            let (server_url, name) = (server_url.clone(), name.clone());
            // Drop runs inside the test's runtime, where blocking on a future is not allowed:
            // use a thread with its own small runtime. Failure leaves a stale database that a
            // later run removes.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(mut connection) = connect(&server_url).await {
                        let _ = drop_database(&mut connection, &name).await;
                        let _ = connection.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh SQLite database in a temporary directory, plus a fresh PostgreSQL database when
/// [`POSTGRES_URL_VARIABLE`] is set. Without it, one line on stderr per process says that the
/// PostgreSQL variant is skipped.
///
/// # Panics
///
/// When a database cannot be created; this is test setup, and a loud failure is the point.
pub async fn test_databases() -> Vec<TestDatabase> {
    let mut databases = vec![sqlite_database()];
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(server_url) if !server_url.is_empty() => {
            databases.push(postgres_database(&server_url).await);
        }
        _ => warn_postgres_skipped(),
    }
    databases
}

/// A fixed instant, `2026-01-01T00:00:00Z` plus `seconds`: deterministic timestamps for
/// fixtures, without a clock.
pub fn fixed_time(seconds: i64) -> DateTime<Utc> {
    const BASE: i64 = 1_767_225_600;
    DateTime::from_timestamp(BASE.saturating_add(seconds), 0).unwrap_or(DateTime::UNIX_EPOCH)
}

fn sqlite_database() -> TestDatabase {
    let directory = tempfile::Builder::new()
        .prefix("civitas-test-")
        .tempdir()
        .expect("a temporary directory for the SQLite test database");
    let url = format!("sqlite://{}", directory.path().join("civitas.db").display());
    TestDatabase {
        url,
        kind: "sqlite",
        cleanup: Cleanup::Directory(directory),
    }
}

fn warn_postgres_skipped() {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        // Written to the process's stderr directly, not with `eprintln!`: the test harness
        // captures `eprintln!` of passing tests, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "*** PostgreSQL variant SKIPPED: set {POSTGRES_URL_VARIABLE}=postgres://postgres@127.0.0.1:5432/test to run it ***"
        );
    });
}

async fn connect(server_url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(server_url)?
        .disable_statement_logging()
        .connect()
        .await
}

async fn drop_database(connection: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    // FORCE (PostgreSQL 13+) also ends the pool connections a store may still hold.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
    )))
    .execute(connection)
    .await
    .map(drop)
}

/// The server's clock in seconds since the Unix epoch: names and ages of test databases are
/// measured on the server, which every test process shares.
async fn server_seconds(connection: &mut PgConnection) -> u64 {
    sqlx::query_scalar::<_, i64>("SELECT CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)")
        .fetch_one(&mut *connection)
        .await
        .ok()
        .and_then(|seconds| u64::try_from(seconds).ok())
        .unwrap_or(0)
}

/// Creates a randomly named database on the server and returns its URL.
async fn postgres_database(server_url: &str) -> TestDatabase {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static CLEANED: Once = Once::new();

    let mut connection = connect(server_url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {POSTGRES_URL_VARIABLE}: {error}"));
    let mut first = false;
    CLEANED.call_once(|| first = true);
    if first {
        drop_stale_databases(&mut connection).await;
    }
    let name = format!(
        "{DATABASE_PREFIX}{}_{}_{}",
        server_seconds(&mut connection).await,
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
    let _ = connection.close().await;

    let mut url = url::Url::parse(server_url)
        .unwrap_or_else(|error| panic!("{POSTGRES_URL_VARIABLE} is not a URL: {error}"));
    url.set_path(&name);
    TestDatabase {
        url: url.to_string(),
        kind: "postgres",
        cleanup: Cleanup::Postgres {
            server_url: server_url.to_owned(),
            name,
        },
    }
}

/// Drops the test databases that crashed or killed runs left behind (older than an hour, so
/// that the databases of a concurrent run are safe).
async fn drop_stale_databases(connection: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'civitas\\_test\\_%'",
    )
    .fetch_all(&mut *connection)
    .await
    .unwrap_or_default();
    let now = server_seconds(connection).await;
    for name in names {
        let created = name
            .strip_prefix(DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse::<u64>().ok());
        if created.is_some_and(|created| now.saturating_sub(created) > STALE_AFTER.as_secs()) {
            let _ = drop_database(connection, &name).await;
        }
    }
}
