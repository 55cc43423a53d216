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
//!
//! Refreshes: a chunk is one statement too. Each presentation states its checks up front
//! (`RotationTerms`: client, resource, scope, plus the token unspent and unexpired and its
//! grant live); the statement reads every token with its grant and rotates those that meet
//! their terms: a family's row moves from the presented generation to the next, in place; a
//! token of the old kind has its successor stored, then is spent. The checks then run on the tokens as
//! read and, by the terms' promise, accept every rotation the statement made. A presentation
//! the checks accept that the statement did not rotate (no terms stated, a second presentation
//! of a token in the batch, a token another node spent in between) is rotated by a second
//! statement, which spends only a token still unspent; a token spent meanwhile is answered as
//! spent, as it was in the transaction under `READ COMMITTED`. Only terms that promised more
//! than the checks accept could spend a token for a refused request (logged as an error): the
//! terms are made beside the checks (`oauth::token`), and a test refuses a refresh each way and
//! then rotates the token.

use crate::oauth_rows as rows;
use crate::oauth_sql::{
    advance_families_of, bind_refresh, code_uses, insert_refreshes, padded, placeholders,
    spend_refreshes, successor_cases,
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
const REFRESH_COLS: &str = "token_hash AS r_token_hash, grant_id AS r_grant_id, scope AS r_scope, created_at AS r_created_at, expires_at AS r_expires_at, used_at AS r_used_at, successor_hash AS r_successor_hash, generation AS r_generation";

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
            let b = 2 + 6 * i;
            format!(
                "(${b}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH a (code_hash, client_id, code_challenge, offer_hash, offer_ttl, offer_generation) AS (VALUES {values}), \
         spent AS (UPDATE oauth_codes c SET used_at = $1 FROM a \
           WHERE c.used_at IS NULL AND c.code_hash = a.code_hash AND c.client_id = a.client_id AND c.code_challenge = a.code_challenge \
           RETURNING {CODE_COLS}, a.offer_hash, a.offer_ttl, a.offer_generation), \
         stored AS (INSERT INTO oauth_refresh_tokens (token_hash, grant_id, scope, created_at, expires_at, used_at, successor_hash, generation) \
           SELECT s.offer_hash, g.id, g.scope, $1, $1 + s.offer_ttl, NULL, NULL, s.offer_generation \
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
            .bind(offer.map(|o| o.ttl_secs))
            .bind(offer.and_then(|o| o.generation));
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
            generation: r.try_get("r_generation")?,
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

/// Reads a chunk's tokens with their grants and rotates those that meet their presentations'
/// terms, in one statement; lets `renew` decide on each token as read; then rotates, as
/// `rotate` does, the ones `renew` names that the statement did not (a presentation without
/// terms, a second presentation in the batch, a token another node spent in between).
pub(crate) async fn renew_refreshes(
    conn: &mut AnyConnection,
    presented: &[RefreshPresented],
    now: i64,
    renew: &mut Renew<'_>,
) -> StoreResult<Vec<Option<Rotation>>> {
    let mut out = vec![None; presented.len()];
    let mut later: Vec<(usize, RotationAttempt)> = Vec::new();
    for (c, chunk) in presented.chunks(CHUNK).enumerate() {
        let read = read_and_rotate(conn, chunk, now).await?;
        let mut answered = HashSet::new();
        for (j, p) in chunk.iter().enumerate() {
            let i = c * CHUNK + j;
            let found = read.get(&j);
            // The statement spends a token for the first of its presentations that meets its
            // terms; that one is the rotation.
            let rotated_here = found.is_some_and(|f| f.rotated && answered.insert(&p.token_hash));
            let decision = renew(i, found.map(|f| (f.row.clone(), f.grant.clone())));
            match (decision, found) {
                (Some(attempt), Some(f)) if rotated_here => {
                    let stored = p.terms.as_ref().map(|t| &t.successor_hash);
                    if stored == Some(&attempt.successor.token_hash) {
                        out[i] = Some(Rotation::Rotated(match p.generation {
                            // The family's row, as the statement moved it.
                            Some(_) => attempt.successor,
                            None => RefreshRow {
                                used_at: Some(now),
                                successor_hash: stored.cloned(),
                                ..f.row.clone()
                            },
                        }));
                    } else {
                        // The request fails (its rotation is not answered) rather than be
                        // handed a successor that was not stored.
                        tracing::error!(
                            "a refresh token was rotated to another successor than its checks chose"
                        );
                    }
                }
                (None, Some(_)) if rotated_here => {
                    // Terms that promised more than the checks accept: the token is spent and
                    // the request refused; its client must authorize again.
                    tracing::error!(
                        "a refresh token was rotated on terms its checks refused; the token is spent"
                    );
                }
                (Some(_), Some(f)) if f.row.spent_for(p.generation) => {
                    out[i] = Some(Rotation::AlreadyUsed(f.row.clone()));
                }
                (Some(attempt), _) => later.push((i, attempt)),
                (None, _) => {}
            }
        }
    }
    for chunk in later.chunks(CHUNK) {
        let attempts: Vec<RotationAttempt> = chunk.iter().map(|(_, a)| a.clone()).collect();
        let rotations = rotate(conn, &attempts, now).await?;
        for ((i, _), rotation) in chunk.iter().zip(rotations) {
            out[*i] = Some(rotation);
        }
    }
    Ok(out)
}

/// A presented token as `read_and_rotate` read it (before it spent it, if it did).
struct Found {
    row: RefreshRow,
    grant: GrantRow,
    /// Whether the statement spent it (for the first presentation that met its terms).
    rotated: bool,
}

/// One statement, atomic on its own: reads each presented token with its grant; for the
/// tokens that meet a presentation's terms (the first such presentation of each), rotates:
/// - a family's row moves to the next generation if it is still at the presented one. The
///   rows are found through a list, which the index scan walks in key order, so two
///   statements lock the families they share in the same order whatever their plans;
/// - a token of the old kind has its successor (a family's first row) stored and is then
///   spent, as `rotate` does and in its order: successors first, in hash order, then the
///   parents. Two statements spending the same parent insert the same successor first, so the
///   later one waits there for the earlier to commit before it locks any parent.
///
/// Returns what it read, by the presentation's index in `chunk`.
async fn read_and_rotate(
    conn: &mut AnyConnection,
    chunk: &[RefreshPresented],
    now: i64,
) -> StoreResult<HashMap<usize, Found>> {
    let values = (0..chunk.len().next_power_of_two())
        .map(|i| format!("({})", placeholders(2 + 8 * i, 8)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH a (i, token_hash, gen, next_hash, client_id, resource, scope, ttl) AS (VALUES {values}), \
         found AS (SELECT a.i, a.gen AS a_gen, a.next_hash, a.ttl, \
             r.token_hash, r.grant_id, r.scope AS r_scope, r.created_at AS r_created_at, r.expires_at, r.used_at, r.successor_hash, r.generation, {GRANT_COLS}, \
             (a.next_hash IS NOT NULL AND r.used_at IS NULL AND r.generation IS NOT DISTINCT FROM a.gen AND r.expires_at > $1 AND g.revoked_at IS NULL \
              AND g.client_id = a.client_id AND (a.resource IS NULL OR g.resource = a.resource) \
              AND (a.scope IS NULL OR string_to_array(a.scope, ' ') <@ string_to_array(r.scope, ' '))) AS ok \
           FROM a JOIN oauth_refresh_tokens r ON r.token_hash = a.token_hash JOIN oauth_grants g ON g.id = r.grant_id), \
         chosen AS (SELECT DISTINCT ON (token_hash) token_hash, a_gen, next_hash, grant_id, r_scope, ttl \
           FROM found WHERE ok ORDER BY token_hash, i), \
         successors AS (INSERT INTO oauth_refresh_tokens ({cols}) \
           SELECT next_hash, grant_id, r_scope, $1, $1 + ttl, NULL, NULL, 0 FROM chosen WHERE a_gen IS NULL ORDER BY next_hash \
           ON CONFLICT (token_hash) DO NOTHING RETURNING token_hash), \
         spent AS (UPDATE oauth_refresh_tokens t SET used_at = $1, \
             successor_hash = (SELECT c.next_hash FROM chosen c WHERE c.token_hash = t.token_hash) \
           WHERE (SELECT count(*) FROM successors) >= 0 AND t.used_at IS NULL AND t.generation IS NULL \
             AND t.token_hash = ANY (ARRAY (SELECT token_hash FROM chosen WHERE a_gen IS NULL)) \
           RETURNING t.token_hash), \
         advanced AS (UPDATE oauth_refresh_tokens t SET generation = t.generation + 1, created_at = $1, \
             expires_at = $1 + (SELECT c.ttl FROM chosen c WHERE c.token_hash = t.token_hash) \
           WHERE t.token_hash = ANY (ARRAY (SELECT token_hash FROM chosen WHERE a_gen IS NOT NULL)) \
             AND t.generation = (SELECT c.a_gen FROM chosen c WHERE c.token_hash = t.token_hash) AND t.used_at IS NULL \
           RETURNING t.token_hash) \
         SELECT found.*, COALESCE(ok AND (found.token_hash IN (SELECT token_hash FROM spent) \
             OR found.token_hash IN (SELECT token_hash FROM advanced)), false) AS rotated FROM found",
        cols = refresh_cols!(),
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for (i, p) in padded(&chunk.iter().enumerate().collect::<Vec<_>>()) {
        let t = p.terms.as_ref();
        q = q
            .bind(*i as i64)
            .bind(&p.token_hash)
            .bind(p.generation)
            .bind(t.map(|t| t.successor_hash.clone()))
            .bind(t.map(|t| t.client_id.clone()))
            .bind(t.and_then(|t| t.resource.clone()))
            .bind(t.and_then(|t| t.scope.clone()))
            .bind(t.map(|t| t.ttl_secs));
    }
    let mut out = HashMap::new();
    for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
        let i: i64 = r.try_get("i").map_err(backend)?;
        let found = Found {
            row: RefreshRow {
                token_hash: r.try_get("token_hash").map_err(backend)?,
                grant_id: r.try_get("grant_id").map_err(backend)?,
                scope: r.try_get("r_scope").map_err(backend)?,
                created_at: r.try_get("r_created_at").map_err(backend)?,
                expires_at: r.try_get("expires_at").map_err(backend)?,
                used_at: r.try_get("used_at").map_err(backend)?,
                successor_hash: r.try_get("successor_hash").map_err(backend)?,
                generation: r.try_get("generation").map_err(backend)?,
            },
            grant: rows::grant(&r).map_err(backend)?,
            rotated: r.try_get("rotated").map_err(backend)?,
        };
        out.insert(usize::try_from(i).unwrap_or(usize::MAX), found);
    }
    Ok(out)
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
    // Families' rows move one statement each (they get here only when the first pass did not
    // rotate them); tokens of the old kind go together as below.
    let mut rotated = advance_families_of(conn, chunk).await?;
    if !rotated.legacy.is_empty() {
        let spent = spend(conn, &rotated.legacy_attempts(chunk), now).await?;
        rotated.answer_legacy(spent);
    }
    Ok(rotated.out)
}

/// Stores the successors of tokens of the old kind and spends the tokens (see `rotate`).
async fn spend(
    conn: &mut AnyConnection,
    chunk: &[RotationAttempt],
    now: i64,
) -> StoreResult<Vec<Rotation>> {
    let mut successors: Vec<&RefreshRow> = chunk.iter().map(|a| &a.successor).collect();
    successors.sort_by(|a, b| a.token_hash.cmp(&b.token_hash));
    let n = chunk.len().next_power_of_two();
    let values = (0..n)
        .map(|i| format!("({})", placeholders(2 + 8 * i, 8)))
        .collect::<Vec<_>>()
        .join(", ");
    let (cases, list) = successor_cases(2 + 8 * n, n);
    let sql = format!(
        "WITH successors AS (INSERT INTO oauth_refresh_tokens ({cols}) VALUES {values} \
           ON CONFLICT (token_hash) DO NOTHING RETURNING token_hash) \
         UPDATE oauth_refresh_tokens SET used_at = $1, successor_hash = {cases} \
         WHERE (SELECT count(*) FROM successors) >= 0 AND used_at IS NULL AND generation IS NULL AND token_hash IN ({list}) \
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
