//! The token endpoint's batches on PostgreSQL, in as few round trips as they can take.
//!
//! Under load the token endpoint's executor waits on PostgreSQL, and it waits per round trip
//! more than per row: on two busy cores each statement costs a wake-up on both sides (a probe
//! measured 400–600 µs for each of `BEGIN`, the `UPDATE`, the `INSERT` and `COMMIT`). So a
//! chunk of code exchanges is one statement, in autocommit, which is atomic on its own: it
//! spends the codes, reads their grants and stores the refresh tokens they would issue (the
//! attempts' offers, see `Store::exchange_codes`): codes locked first, in hash order, then the
//! new rows with their grants' key-share locks.
//!
//! The checks still decide, after the statement: an offer they do not issue (a refused
//! exchange, say a `redirect_uri` that differs) is deleted, and a refresh token they issue that
//! the statement did not store is inserted. Neither happens on a successful exchange; the
//! statement's conditions (code unexpired, grant live and granted `offline_access`) are the
//! ones the checks apply. An offer is a random token that was never shown to anyone, so one
//! left behind for a moment (or, if its deletion fails, until it expires) cannot be used.
//!
//! What this gives up against one transaction: a statement that fails changes nothing, as
//! before, but a failure after it (the read that tells a replayed code from an unknown one,
//! tried twice, or the insert above) fails the batch with its codes spent. A client that then
//! retries presents a spent code, a replay, which revokes its grant: its user authorizes
//! again. Safe, and only on a database failure between two statements.
//! Refreshes: the tokens are read by one statement and rotated by another (successors stored
//! and parents spent together); a rotation only spends a token still unspent, so a token spent
//! in between is answered as spent, as it was in the transaction under `READ COMMITTED`.

use crate::oauth_rows as rows;
use crate::oauth_sql::{
    Renewals, bind_refresh, code_uses, insert_refreshes, padded, placeholders,
    refreshes_with_grants, spend_refreshes, successor_cases,
};
use crate::rows::backend;
use ezforge_core::oauth::model::*;
use ezforge_core::oauth::scope::OFFLINE_ACCESS;
use ezforge_core::store::{IssueRefresh, Renew, StoreResult};
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use std::collections::{HashMap, HashSet};

/// Attempts per statement, at most: as many as the executor hands over in one batch
/// (`oauth::batch`), so that a batch is one statement and all or nothing. Larger lists are cut,
/// and each part commits on its own.
const CHUNK: usize = 64;

/// What one chunk's statement did for a code it spent.
struct Spent {
    code: CodeRow,
    grant: Option<GrantRow>,
    /// The refresh token stored for it (its attempt's offer), if the statement stored one.
    stored: Option<RefreshRow>,
}

pub(crate) async fn exchange_codes(
    conn: &mut AnyConnection,
    attempts: &[CodeAttempt],
    now: i64,
    issue: &mut IssueRefresh<'_>,
) -> StoreResult<Vec<CodeUse>> {
    let mut uses = Vec::with_capacity(attempts.len());
    let mut spent = HashMap::new();
    for chunk in attempts.chunks(CHUNK) {
        let chunk_spent = spend_codes(conn, chunk, now).await?;
        let codes = chunk_spent
            .iter()
            .map(|(hash, s)| (hash.clone(), s.code.clone()))
            .collect();
        // The codes are spent now: a failure here fails requests that spent theirs, and their
        // clients' retries are replays, which revoke the grants. So try the read twice.
        let chunk_uses = match code_uses(conn, chunk, &codes).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "reading refused codes failed; trying again");
                code_uses(conn, chunk, &codes).await?
            }
        };
        uses.extend(chunk_uses);
        spent.extend(chunk_spent);
    }
    let (mut missing, mut unissued) = (Vec::new(), Vec::new());
    for (i, u) in uses.iter().enumerate() {
        let CodeUse::First(code) = u else { continue };
        let Some(s) = spent.get_mut(&code.code_hash) else {
            continue;
        };
        let wanted = issue(i, code, s.grant.as_ref());
        match (wanted, s.stored.take()) {
            (Some(w), Some(stored)) if w == stored => {}
            (wanted, stored) => {
                missing.extend(wanted);
                unissued.extend(stored.map(|r| r.token_hash));
            }
        }
    }
    // Deleted first: an offer stored with other values than the checks chose (same hash) is
    // replaced, not kept.
    if let Err(e) = delete_refreshes(conn, &unissued).await {
        if missing.iter().any(|m| unissued.contains(&m.token_hash)) {
            return Err(e);
        }
        // Unusable rows (nobody holds their tokens); they go when they expire.
        tracing::warn!(error = %e, "cannot delete refresh tokens that were not issued");
    }
    if !missing.is_empty() {
        // Not reached by any exchange the checks accept (see the module's comment); kept so
        // that a refresh token handed out is always stored.
        tracing::warn!(
            count = missing.len(),
            "refresh tokens stored after their codes were spent"
        );
        insert_refreshes(conn, &missing).await?;
    }
    Ok(uses)
}

/// The codes' columns as the statement returns them (`c_` + name), beside the grant's own
/// and the stored refresh token's (`r_` + name).
const CODE_COLS: &str = "c.code_hash AS c_code_hash, c.grant_id AS c_grant_id, c.client_id AS c_client_id, c.redirect_uri AS c_redirect_uri, c.code_challenge AS c_code_challenge, c.created_at AS c_created_at, c.expires_at AS c_expires_at, c.used_at AS c_used_at";
const GRANT_COLS: &str = "g.id, g.user_id, g.client_id, g.server_id, g.resource, g.scope, g.created_at, g.last_used_at, g.revoked_at, g.revoked_reason";
const REFRESH_COLS: &str = "token_hash AS r_token_hash, grant_id AS r_grant_id, scope AS r_scope, created_at AS r_created_at, expires_at AS r_expires_at, used_at AS r_used_at, successor_hash AS r_successor_hash";

/// Spends a chunk's codes, reads their grants and stores their offers, in one statement.
/// Returns what it did for each code it spent, by code hash.
async fn spend_codes(
    conn: &mut AnyConnection,
    chunk: &[CodeAttempt],
    now: i64,
) -> StoreResult<HashMap<String, Spent>> {
    // `UPDATE … FROM` joins each code to one of the attempts that match it, which one is not
    // defined; so a code's first matching attempt stands for it (its offer is the one stored).
    // Attempts that differ in client or challenge never match the same code.
    let mut seen = HashSet::new();
    let mut unique: Vec<&CodeAttempt> = chunk
        .iter()
        .filter(|a| seen.insert((&a.code_hash, &a.client_id, &a.code_challenge)))
        .collect();
    // The join visits the list in order, locking codes as it goes: in hash order everywhere,
    // two nodes spending the same codes cannot each hold one the other waits for.
    unique.sort_by(|a, b| a.code_hash.cmp(&b.code_hash));
    let n = unique.len().next_power_of_two();
    let values = (0..n)
        .map(|i| {
            let b = 2 + 5 * i;
            format!("(${b}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH a (code_hash, client_id, code_challenge, offer_hash, offer_ttl) AS (VALUES {values}), \
         spent AS (UPDATE oauth_codes c SET used_at = $1 FROM a \
           WHERE c.used_at IS NULL AND c.code_hash = a.code_hash AND c.client_id = a.client_id AND c.code_challenge = a.code_challenge \
           RETURNING {CODE_COLS}, a.offer_hash, a.offer_ttl), \
         stored AS (INSERT INTO oauth_refresh_tokens (token_hash, grant_id, scope, created_at, expires_at, used_at, successor_hash) \
           SELECT s.offer_hash, g.id, g.scope, $1, $1 + s.offer_ttl, NULL, NULL \
           FROM spent s JOIN oauth_grants g ON g.id = s.c_grant_id \
           WHERE s.offer_hash IS NOT NULL AND s.c_expires_at > $1 AND g.revoked_at IS NULL \
             AND '{OFFLINE_ACCESS}' = ANY (string_to_array(g.scope, ' ')) \
           ORDER BY s.offer_hash \
           ON CONFLICT (token_hash) DO NOTHING \
           RETURNING {REFRESH_COLS}) \
         SELECT spent.*, {GRANT_COLS}, stored.* FROM spent \
           LEFT JOIN oauth_grants g ON g.id = spent.c_grant_id \
           LEFT JOIN stored ON stored.r_token_hash = spent.offer_hash"
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for a in padded(&unique) {
        let offer = a.refresh.as_ref();
        q = q
            .bind(&a.code_hash)
            .bind(&a.client_id)
            .bind(&a.code_challenge)
            .bind(offer.map(|o| o.token_hash.clone()))
            .bind(offer.map(|o| o.ttl_secs));
    }
    let mut out = HashMap::new();
    for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
        let s = spent_row(&r).map_err(backend)?;
        out.insert(s.code.code_hash.clone(), s);
    }
    Ok(out)
}

fn spent_row(r: &sqlx::any::AnyRow) -> Result<Spent, sqlx::Error> {
    let code = CodeRow {
        code_hash: r.try_get("c_code_hash")?,
        grant_id: r.try_get("c_grant_id")?,
        client_id: r.try_get("c_client_id")?,
        redirect_uri: r.try_get("c_redirect_uri")?,
        code_challenge: r.try_get("c_code_challenge")?,
        created_at: r.try_get("c_created_at")?,
        expires_at: r.try_get("c_expires_at")?,
        used_at: r.try_get("c_used_at")?,
    };
    // A grant deleted since the code was issued comes back as NULLs; so does an offer the
    // statement did not store.
    let grant = match r.try_get::<Option<String>, _>("id")? {
        Some(_) => Some(rows::grant(r)?),
        None => None,
    };
    let stored = match r.try_get::<Option<String>, _>("r_token_hash")? {
        Some(token_hash) => Some(RefreshRow {
            token_hash,
            grant_id: r.try_get("r_grant_id")?,
            scope: r.try_get("r_scope")?,
            created_at: r.try_get("r_created_at")?,
            expires_at: r.try_get("r_expires_at")?,
            used_at: r.try_get("r_used_at")?,
            successor_hash: r.try_get("r_successor_hash")?,
        }),
        None => None,
    };
    Ok(Spent {
        code,
        grant,
        stored,
    })
}

/// Deletes the refresh tokens with these hashes (offers their exchanges did not issue).
async fn delete_refreshes(conn: &mut AnyConnection, hashes: &[String]) -> StoreResult<()> {
    for chunk in hashes.chunks(CHUNK) {
        let sql = format!(
            "DELETE FROM oauth_refresh_tokens WHERE token_hash IN ({})",
            placeholders(1, chunk.len().next_power_of_two())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for h in padded(chunk) {
            q = q.bind(h);
        }
        q.execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

/// Reads the tokens with their grants (a statement of its own: under `READ COMMITTED` the
/// transaction this was part of gave it no other view), lets `renew` decide, then rotates
/// each chunk in one statement.
pub(crate) async fn renew_refreshes(
    conn: &mut AnyConnection,
    hashes: &[String],
    now: i64,
    renew: &mut Renew<'_>,
) -> StoreResult<Vec<Option<Rotation>>> {
    let found = refreshes_with_grants(conn, hashes).await?;
    let renewals = Renewals::decide(found, renew);
    let mut done = Vec::with_capacity(renewals.attempts.len());
    for chunk in renewals.attempts.chunks(CHUNK) {
        done.extend(rotate(conn, chunk, now).await?);
    }
    Ok(renewals.answer(hashes.len(), done))
}

/// Stores a chunk's successors and spends their parents, in one statement, which is atomic
/// on its own. The successors go first: the `UPDATE` waits for the count of the rows the
/// `INSERT` returns (an init plan, run before the first parent is read), so the parents are
/// locked after the successors are written, in the order every release has used; the
/// successors are inserted in hash order, so two nodes inserting the same ones cannot each
/// hold a part the other waits for. Successors are derived from their parents: inserting one
/// again is a no-op.
async fn rotate(
    conn: &mut AnyConnection,
    chunk: &[RotationAttempt],
    now: i64,
) -> StoreResult<Vec<Rotation>> {
    let mut successors: Vec<&RefreshRow> = chunk.iter().map(|a| &a.successor).collect();
    successors.sort_by(|a, b| a.token_hash.cmp(&b.token_hash));
    let n = chunk.len().next_power_of_two();
    let values = (0..n)
        .map(|i| format!("({})", placeholders(2 + 7 * i, 7)))
        .collect::<Vec<_>>()
        .join(", ");
    let (cases, list) = successor_cases(2 + 7 * n, n);
    let sql = format!(
        "WITH successors AS (INSERT INTO oauth_refresh_tokens ({cols}) VALUES {values} \
           ON CONFLICT (token_hash) DO NOTHING RETURNING token_hash) \
         UPDATE oauth_refresh_tokens SET used_at = $1, successor_hash = {cases} \
         WHERE (SELECT count(*) FROM successors) >= 0 AND used_at IS NULL AND token_hash IN ({list}) \
         RETURNING {cols}",
        cols = refresh_cols!(),
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for t in padded(&successors) {
        q = bind_refresh(q, t);
    }
    for a in padded(chunk) {
        q = q.bind(&a.token_hash).bind(&a.successor.token_hash);
    }
    spend_refreshes(conn, q, chunk).await
}
