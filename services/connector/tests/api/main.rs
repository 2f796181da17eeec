//! The connector's integration tests: the real server on `127.0.0.1:0`, a fresh database per test,
//! every behaviour checked on SQLite and (when `CIVITAS_TEST_POSTGRES_URL` is set) PostgreSQL.

mod audit;
mod audit_api;
mod auth;
mod batch;
mod contexts;
mod csource_subscriptions;
mod entities;
mod errors;
mod federation;
mod helpers;
mod query;
mod registrations;
mod remote_contexts;
mod types;
mod witness;
