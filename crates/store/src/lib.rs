//! The [`Store`](ezforge_core::Store) on sqlx's Any driver: an embedded SQLite file (WAL mode)
//! by default, PostgreSQL for several nodes. One portable set of migrations and queries serves
//! both (`$N` placeholders, TEXT ids, BIGINT times and flags).

mod checkpointer;
mod invalidations;
mod oauth_rows;
// Its column lists (`refresh_cols!` …) serve `pg_tokens` too.
#[macro_use]
mod oauth_sql;
mod pg_storage;
mod pg_tokens;
mod rate_windows;
mod request_chunks;
mod rows;
mod sql;
mod sqlite_tokens;
mod telemetry_sql;
mod token_conn;

pub use invalidations::APPLICATION_NAME as INVALIDATION_LISTENER;
pub use sql::SqlStore;

/// Errors opening or migrating a database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot open the token endpoint's connection to the database: {0}")]
    Token(String),
}
