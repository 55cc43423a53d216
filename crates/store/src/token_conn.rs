//! The connection the token endpoint's batches run on, kept while the endpoint is busy.
//!
//! Kept, because the pool hands out its least recently used connection: a kept one keeps its
//! prepared statements and backend process (PostgreSQL) or page cache (SQLite) warm. Measured
//! when it was introduced: PostgreSQL code exchanges went from about 5,300/s to 8,000/s.
//!
//! On PostgreSQL the connection is the endpoint's own: taken out of the pool (`detach`; the
//! pool may open another in its place, so `--db-max-connections N` means up to N + 1) and set
//! up for the batch statements, which only ever look rows up and write them by key. Each is
//! prepared once and, after five runs, PostgreSQL may keep a generic plan for it, chosen from
//! the table's size at that moment. On a fresh database under load the token tables grow from
//! a few rows to tens of thousands within seconds, before autovacuum analyzes them, and a plan
//! chosen while they were small (a sequential scan and a hash join: cheaper for a few rows)
//! stayed: a refresh batch took 18 ms instead of 0.7 ms at 50,000 rows, and throughput halved
//! over a 32,000-refresh run. With sequential scans, hash and merge joins off for this
//! session, every plan the statements can get is index lookups in nested loops, right at any
//! size. The settings stay on this connection: it never goes back to the pool.
//!
//! Elsewhere (SQLite through sqlx: in memory, or on a current-thread runtime) the connection
//! is a pool connection, given back after `POOLED_IDLE` unused, and a pool of one connection
//! is never held.

use crate::rows::backend;
use ezforge_core::store::StoreResult;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a pool connection stays held unused.
const POOLED_IDLE: Duration = Duration::from_secs(1);
/// How long the endpoint's own PostgreSQL connection stays open unused: long enough that
/// a trickle of requests does not open a backend each, short enough to let go of one nobody
/// uses. Unused for more than `POOLED_IDLE`, it is checked before a batch runs on it.
const OWN_IDLE: Duration = Duration::from_secs(60);

/// The planner settings of the endpoint's own PostgreSQL connection (see the module's comment).
const OWN_SESSION: &str = "SELECT set_config('enable_seqscan', 'off', false), \
    set_config('enable_hashjoin', 'off', false), set_config('enable_mergejoin', 'off', false)";

pub(crate) enum TokenConn {
    Pooled(PoolConnection<Any>),
    Own(AnyConnection),
}

impl Deref for TokenConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            TokenConn::Pooled(c) => c,
            TokenConn::Own(c) => c,
        }
    }
}

impl DerefMut for TokenConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            TokenConn::Pooled(c) => c,
            TokenConn::Own(c) => c,
        }
    }
}

impl TokenConn {
    fn idle_limit(&self) -> Duration {
        match self {
            TokenConn::Pooled(_) => POOLED_IDLE,
            TokenConn::Own(_) => OWN_IDLE,
        }
    }

    /// Lets go of it: a pool connection goes back to the pool; an own connection is closed
    /// (told to the server, so that it does not log a connection lost).
    async fn release(self) {
        if let TokenConn::Own(c) = self
            && let Err(e) = c.close().await
        {
            tracing::debug!(error = %e, "closing the token endpoint's connection");
        }
    }
}

/// A connection kept, and when it was last used.
type Held = (TokenConn, Instant);

#[derive(Clone, Default)]
pub(crate) struct TokenConnSlot {
    held: Arc<Mutex<Option<Held>>>,
    /// Whether a task is watching the kept connection, to let go of it once idle.
    reaper: Arc<AtomicBool>,
    /// Set by `close`: a batch that ends afterwards lets go of its connection.
    closed: Arc<AtomicBool>,
}

impl TokenConnSlot {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        // A panic while holding the lock cannot leave the slot half-written.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection for the endpoint's next batch: the kept one if it is still fresh, else
    /// a new one from `pool`.
    pub(crate) async fn take(&self, pool: &AnyPool, postgres: bool) -> StoreResult<TokenConn> {
        let held = self.held().take();
        if let Some((mut conn, used)) = held {
            let idle = used.elapsed();
            if idle < POOLED_IDLE {
                return Ok(conn);
            }
            // The pool checks its connections before it hands them out; so does this.
            if idle < conn.idle_limit() && conn.ping().await.is_ok() {
                return Ok(conn);
            }
            conn.release().await;
        }
        let conn = pool.acquire().await.map_err(backend)?;
        if !postgres {
            return Ok(TokenConn::Pooled(conn));
        }
        let mut own = conn.detach();
        if let Err(e) = own.execute(OWN_SESSION).await {
            TokenConn::Own(own).release().await;
            return Err(backend(e));
        }
        Ok(TokenConn::Own(own))
    }

    /// Keeps the connection for the next batch, unless the batch failed (a pool connection
    /// goes back to the pool, which tests it; an own one is closed), it is the one connection
    /// of a pool of one, another is kept already (batches that ran at once, which the
    /// endpoint's one executor does not do but a store's other callers may), or the store is
    /// closing. A task lets go of it once unused for its idle limit.
    pub(crate) fn keep<T>(
        &self,
        conn: TokenConn,
        result: &StoreResult<T>,
        pool: &AnyPool,
        max_connections: u32,
    ) {
        let pooled_alone = matches!(conn, TokenConn::Pooled(_)) && max_connections < 2;
        {
            // `closed` is read under the lock that `close` takes after setting it: either this
            // sees it, or `close` finds the connection here.
            let mut held = self.held();
            if result.is_err()
                || pooled_alone
                || pool.is_closed()
                || self.closed.load(Ordering::Acquire)
                || held.is_some()
            {
                drop(held);
                tokio::spawn(conn.release());
                return;
            }
            *held = Some((conn, Instant::now()));
        }
        if !self.reaper.swap(true, Ordering::AcqRel) {
            let slot = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(POOLED_IDLE).await;
                    let idle = {
                        let mut held = slot.held();
                        let idle = held
                            .as_ref()
                            .is_none_or(|(c, used)| used.elapsed() >= c.idle_limit());
                        if idle {
                            // Cleared under the lock: a connection kept after this starts a
                            // new task.
                            slot.reaper.store(false, Ordering::Release);
                            held.take()
                        } else {
                            continue;
                        }
                    };
                    if let Some((conn, _)) = idle {
                        conn.release().await;
                    }
                    return;
                }
            });
        }
    }

    /// Lets go of the kept connection, and of any a batch still running ends with (the store is
    /// closing).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let held = self.held().take();
        if let Some((conn, _)) = held {
            conn.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan a statement prepared on `conn` gets, made while the table was small, once the
    /// table has grown.
    async fn plan_after_growth(conn: &mut AnyConnection, table: &str) -> String {
        // The shape of the batch statements: a list of keys joined to the table.
        const KEYS: usize = 16;
        let values = (1..=KEYS).map(|i| format!("(${i})")).collect::<Vec<_>>();
        let q = format!(
            "PREPARE q_{table} ({}) AS SELECT t.v FROM (VALUES {}) a (k) JOIN {table} t ON t.k = a.k",
            vec!["text"; KEYS].join(", "),
            values.join(", ")
        );
        let args = |first: usize| {
            (first..first + KEYS)
                .map(|i| format!("'k{i}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(q))
            .execute(&mut *conn)
            .await
            .unwrap();
        // Five custom plans, then PostgreSQL settles on a generic one.
        for i in 0..8 {
            let run = format!("EXECUTE q_{table} ({})", args(i * KEYS));
            sqlx::raw_sql(sqlx::AssertSqlSafe(run))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let grow =
            format!("INSERT INTO {table} SELECT 'x' || i, i FROM generate_series(1, 50000) i");
        sqlx::raw_sql(sqlx::AssertSqlSafe(grow))
            .execute(&mut *conn)
            .await
            .unwrap();
        let explain = format!("EXPLAIN EXECUTE q_{table} ({})", args(3));
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(explain))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        rows.iter()
            .map(|r| sqlx::Row::get::<String, _>(r, 0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A fresh PostgreSQL database (kept while the test holds it) and a pool on it; `None`
    /// where the test kit skips PostgreSQL.
    async fn postgres_pool() -> Option<(ezforge_testkit::TestDb, AnyPool)> {
        let db = ezforge_testkit::TestDb::postgres().await?;
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&db.url).await.unwrap();
        Some((db, pool))
    }

    /// The endpoint's own PostgreSQL connection keeps index lookups for statements whose plans
    /// were made while their tables were small; a pool connection keeps the sequential scan
    /// (what this guards against, shown so that the test shows something).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_made_on_small_tables_stay_index_lookups_on_postgres() {
        let Some((_db, pool)) = postgres_pool().await else {
            return;
        };
        for table in ["own_t", "pooled_t"] {
            // Autovacuum stays away: an ANALYZE would replan both.
            let create = format!(
                "CREATE TABLE {table} (k text PRIMARY KEY, v int) WITH (autovacuum_enabled = false); \
                 INSERT INTO {table} SELECT 'k' || i, i FROM generate_series(1, 200) i"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&pool)
                .await
                .unwrap();
        }
        let slot = TokenConnSlot::default();
        let mut own = slot.take(&pool, true).await.unwrap();
        assert!(matches!(own, TokenConn::Own(_)));
        let own_plan = plan_after_growth(&mut own, "own_t").await;
        let mut pooled = pool.acquire().await.unwrap();
        let pooled_plan = plan_after_growth(&mut pooled, "pooled_t").await;
        assert!(
            own_plan.contains("Index Scan") && !own_plan.contains("Seq Scan"),
            "{own_plan}"
        );
        assert!(pooled_plan.contains("Seq Scan"), "{pooled_plan}");
        slot.keep(own, &Ok(()), &pool, 2);
        slot.close().await;
    }

    async fn backend_pid(conn: &mut AnyConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// Two batches at once take two connections; of the two given back, the first is kept and
    /// the second closed (told to the server), not dropped on the floor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_connection_is_kept_and_a_second_is_closed() {
        let Some((_db, pool)) = postgres_pool().await else {
            return;
        };
        let slot = TokenConnSlot::default();
        let (mut first, mut second) = (
            slot.take(&pool, true).await.unwrap(),
            slot.take(&pool, true).await.unwrap(),
        );
        let (kept, extra) = (
            backend_pid(&mut first).await,
            backend_pid(&mut second).await,
        );
        assert_ne!(kept, extra);
        slot.keep(first, &Ok(()), &pool, 10);
        slot.keep(second, &Ok(()), &pool, 10);
        let mut again = slot.take(&pool, true).await.unwrap();
        assert_eq!(backend_pid(&mut again).await, kept);
        // Closed by a task: the server notices soon after.
        let mut open = true;
        for _ in 0..50 {
            open = sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
            )
            .bind(extra)
            .fetch_one(&pool)
            .await
            .unwrap();
            if !open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!open, "backend {extra} still open");
        slot.keep(again, &Ok(()), &pool, 10);
        slot.close().await;
    }
}
