//! Rate-limit windows shared by every node (`rate_windows`): one upsert counts an event and
//! reads the count back atomically, so parallel requests on any nodes each see their own count.

use crate::rows::backend;
use ezforge_core::store::StoreResult;
use sqlx::{AnyPool, Row};

pub(crate) async fn count(
    pool: &AnyPool,
    key: &str,
    now: i64,
    window_secs: i64,
) -> StoreResult<(i64, i64)> {
    // A window that has ended is replaced by a new one from `now`. The `SET` expressions read
    // the row as it was (SQLite and PostgreSQL alike).
    let row = sqlx::query(
        "INSERT INTO rate_windows (key, ends_at, count) VALUES ($1, $2, 1) \
         ON CONFLICT (key) DO UPDATE SET \
           count = CASE WHEN rate_windows.ends_at > $3 THEN rate_windows.count + 1 ELSE 1 END, \
           ends_at = CASE WHEN rate_windows.ends_at > $3 THEN rate_windows.ends_at ELSE $2 END \
         RETURNING count, ends_at",
    )
    .bind(key)
    .bind(now.saturating_add(window_secs.max(1)))
    .bind(now)
    .fetch_one(pool)
    .await
    .map_err(backend)?;
    Ok((
        row.try_get("count").map_err(backend)?,
        row.try_get("ends_at").map_err(backend)?,
    ))
}

pub(crate) async fn uncount(pool: &AnyPool, key: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE rate_windows SET count = count - 1 WHERE key = $1 AND ends_at > $2 AND count > 0",
    )
    .bind(key)
    .bind(now)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn clear(pool: &AnyPool, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM rate_windows WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(crate) async fn purge(pool: &AnyPool, now: i64) -> StoreResult<u64> {
    let r = sqlx::query("DELETE FROM rate_windows WHERE ends_at <= $1")
        .bind(now)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(r.rows_affected())
}
