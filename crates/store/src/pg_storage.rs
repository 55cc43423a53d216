//! Storage parameters of PostgreSQL tables, set after the migrations (which SQLite shares, and
//! SQLite has no such parameters).
//!
//! An authorization code and a refresh token are each written once and updated once, when
//! they are spent. In pages filled to the brim (PostgreSQL's default) the spent version of a
//! row finds no room on its page: it goes to another page, and every index of the table gets
//! an entry for it — a random leaf of the text primary key, and for refresh tokens the grant
//! index too — each with its WAL. With pages left half empty, the spent version fits beside
//! the row as a heap-only (HOT) update: no index entry at all. Rotating 9,600 tokens in 32
//! interleaved chains, as the token endpoint's batches do, made 12 HOT updates in full pages and
//! 8,164 at a fill factor of 50 (6,529 at 60, 4,996 at 70). The tables take about twice the
//! pages they would; their rows are a few hundred bytes and leave when they expire.

use sqlx::AnyPool;

/// The tables whose rows are updated once each, and the fill factor they get.
const HALF_FILLED: [&str; 2] = ["oauth_codes", "oauth_refresh_tokens"];
const FILL_FACTOR: u32 = 50;

/// Sets the fill factor where none is set: an operator's own choice (`ALTER TABLE … SET
/// (fillfactor = …)`) stays, and a node starting beside running ones takes no lock. Applies to
/// pages filled from then on.
pub(crate) async fn apply(pool: &AnyPool) -> Result<(), sqlx::Error> {
    for table in HALF_FILLED {
        let set = options(pool, table).await?;
        if set.is_some_and(|o| o.split(',').any(|kv| kv.starts_with("fillfactor="))) {
            continue;
        }
        let sql = format!("ALTER TABLE {table} SET (fillfactor = {FILL_FACTOR})");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A table's storage parameters, comma-separated (`None` when it has none).
async fn options(pool: &AnyPool, table: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<Option<String>> = sqlx::query_scalar(
        "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = to_regclass($1)",
    )
    .bind(table)
    .fetch_optional(pool)
    .await?;
    Ok(row.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Acquire, Row};

    /// HOT updates among `rows` codes inserted and then spent, in a transaction rolled back
    /// afterwards (foreign keys off inside it: the rows name no grant).
    async fn hot_updates_of_spent_codes(pool: &AnyPool, rows: usize) -> i64 {
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        let before = hot_so_far(&mut tx).await;
        for i in 0..rows {
            sqlx::query(
                "INSERT INTO oauth_codes (code_hash, grant_id, client_id, redirect_uri, code_challenge, created_at, expires_at) \
                 VALUES ($1, 'grant', 'https://client.example/metadata.json', 'https://client.example/cb', $2, 1, 301)",
            )
            .bind(format!("{i:043}"))
            .bind(format!("challenge-{i:033}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        for i in 0..rows {
            sqlx::query("UPDATE oauth_codes SET used_at = 2 WHERE code_hash = $1")
                .bind(format!("{i:043}"))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let hot = hot_so_far(&mut tx).await - before;
        tx.rollback().await.unwrap();
        hot
    }

    /// The backend's count of HOT updates to `oauth_codes` not yet reported (it may still hold
    /// an earlier transaction's: hence a difference).
    async fn hot_so_far(conn: &mut sqlx::AnyConnection) -> i64 {
        sqlx::query("SELECT pg_stat_get_xact_tuples_hot_updated('oauth_codes'::regclass) AS hot")
            .fetch_one(conn)
            .await
            .unwrap()
            .get::<i64, _>("hot")
    }

    /// Spending a code or a refresh token updates its row in place, without an index entry,
    /// on a store opened as the server opens it; with PostgreSQL's default fill factor (the
    /// counterfactual) nearly every such update goes to another page.
    #[tokio::test]
    async fn spent_rows_stay_on_their_page_on_postgres() {
        let Some(db) = ezforge_testkit::TestDb::postgres().await else {
            return;
        };
        let store = crate::SqlStore::open(&db.url, 2).await.unwrap();
        let pool = store.pool();
        for table in HALF_FILLED {
            let set = options(pool, table).await.unwrap();
            assert_eq!(set.as_deref(), Some("fillfactor=50"), "{table}");
        }
        // An operator's own setting stays when another node starts.
        sqlx::raw_sql("ALTER TABLE oauth_refresh_tokens SET (fillfactor = 70)")
            .execute(pool)
            .await
            .unwrap();
        crate::SqlStore::open(&db.url, 2)
            .await
            .unwrap()
            .close()
            .await;
        let set = options(pool, "oauth_refresh_tokens").await.unwrap();
        assert_eq!(set.as_deref(), Some("fillfactor=70"));
        let rows = 300;
        let hot = hot_updates_of_spent_codes(pool, rows).await;
        assert!(hot >= 270, "{hot} of {rows} updates were HOT");
        sqlx::raw_sql("ALTER TABLE oauth_codes RESET (fillfactor)")
            .execute(pool)
            .await
            .unwrap();
        let hot = hot_updates_of_spent_codes(pool, rows).await;
        assert!(hot < 100, "{hot} of {rows} updates were HOT in full pages");
        store.close().await;
    }
}
