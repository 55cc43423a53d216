//! Test support shared by the store, server and CLI tests: a fresh database per test, on SQLite
//! (a real file in a temporary directory) or PostgreSQL (a new database with a random name,
//! dropped afterwards).
//!
//! PostgreSQL is found at `EZFORGE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; options such as `?sslmode=disable` carry over
//! to the test databases). When it cannot be reached, tests fail if
//! `CI=true` and are skipped with a loud message otherwise.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_database: Option<String>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("EZFORGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| (b'a' + rng.random_range(0..26)) as char)
        .collect()
}

impl TestDb {
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite file in its own temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ezforge.db").display()
        );
        TestDb {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            pg_database: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (outside CI) when PostgreSQL is unreachable.
    pub async fn postgres() -> Option<TestDb> {
        let admin = postgres_admin_url();
        let mut conn = match PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                if in_ci() {
                    panic!("PostgreSQL is unreachable at {admin} and CI=true: {e}");
                }
                eprintln!(
                    "SKIPPED: PostgreSQL unreachable at {admin} ({e}); set CI=true to make this a failure"
                );
                return None;
            }
        };
        let name = format!("ezf_test_{}", random_suffix());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        Some(TestDb {
            url: database_url(&admin, &name),
            backend: Backend::Postgres,
            _dir: None,
            pg_database: Some(name),
        })
    }

    /// The temporary directory holding the SQLite file, for tests that want a data directory.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }
}

/// `admin` with its database replaced by `name`: the same server and options (say
/// `?sslmode=disable`, or `?host=` naming a Unix socket's directory).
fn database_url(admin: &str, name: &str) -> String {
    let (path, query) = admin.split_once('?').unwrap_or((admin, ""));
    let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Expands each test into one per backend: `sqlite::name` and `postgres::name`, each given a
/// fresh [`TestDb`].
///
/// ```ignore
/// ezforge_testkit::backend_tests! {
///     async fn creates_a_user(db) { /* ... */ }
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($db:ident) $body:block )*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($db) = $crate::TestDb::new($crate::Backend::Sqlite).await else { return };
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($db) = $crate::TestDb::new($crate::Backend::Postgres).await else { return };
                    $body
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn a_test_database_keeps_the_servers_address_and_options() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "ezf_test_a"),
            "postgres://postgres@127.0.0.1:5432/ezf_test_a"
        );
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "ezf_test_a"
            ),
            "postgres://postgres@127.0.0.1:5432/ezf_test_a?sslmode=disable"
        );
        assert_eq!(
            database_url(
                "postgres://postgres@localhost/postgres?host=/var/run/postgresql",
                "ezf_test_a"
            ),
            "postgres://postgres@localhost/ezf_test_a?host=/var/run/postgresql"
        );
    }
}
