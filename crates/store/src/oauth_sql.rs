//! SQL for the authorization server's tables. Called from the `Store` impl in `sql.rs`.

use crate::oauth_rows as rows;
use crate::rows::{backend, err};
use ezforge_core::oauth::model::*;
use ezforge_core::store::StoreResult;
use ezforge_core::store::{IssueRefresh, Renew};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};
use std::collections::{HashMap, HashSet};

macro_rules! client_cols {
    () => {
        "client_id, kind, project_id, client_name, redirect_uris, grant_types, token_endpoint_auth_method, application_type, metadata, metadata_hash, secret_hash, created_by, created_at, last_used_at, expires_at"
    };
}
macro_rules! grant_cols {
    () => {
        "id, user_id, client_id, server_id, resource, scope, created_at, last_used_at, revoked_at, revoked_reason"
    };
}
macro_rules! code_cols {
    () => {
        "code_hash, grant_id, client_id, redirect_uri, code_challenge, created_at, expires_at, used_at"
    };
}
macro_rules! refresh_cols {
    () => {
        "token_hash, grant_id, scope, created_at, expires_at, used_at, successor_hash, generation"
    };
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

pub(crate) async fn signing_keys(pool: &AnyPool) -> StoreResult<Vec<SigningKeyRow>> {
    let rs = sqlx::query("SELECT kid, public_jwk, private_key, created_at, signs_from, retired_at FROM signing_keys ORDER BY created_at, kid")
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    rs.iter()
        .map(|r| rows::signing_key(r).map_err(backend))
        .collect()
}

pub(crate) async fn insert_signing_key(pool: &AnyPool, k: &SigningKeyRow) -> StoreResult<()> {
    sqlx::query("INSERT INTO signing_keys (kid, public_jwk, private_key, created_at, signs_from, retired_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&k.kid)
        .bind(&k.public_jwk)
        .bind(&k.private_key)
        .bind(k.created_at)
        .bind(k.signs_from)
        .bind(k.retired_at)
        .execute(pool)
        .await
        .map_err(err("signing key"))?;
    Ok(())
}

pub(crate) async fn retire_signing_keys(pool: &AnyPool, except: &str, at: i64) -> StoreResult<u64> {
    let r = sqlx::query(
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2",
    )
    .bind(at)
    .bind(except)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(r.rows_affected())
}

pub(crate) async fn delete_signing_key(pool: &AnyPool, kid: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(crate) async fn insert_client(pool: &AnyPool, c: &ClientRow) -> StoreResult<()> {
    sqlx::query(concat!(
        "INSERT INTO oauth_clients (",
        client_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(&c.client_id)
    .bind(c.kind.as_str())
    .bind(&c.project_id)
    .bind(&c.client_name)
    .bind(json(&c.redirect_uris))
    .bind(json(&c.grant_types))
    .bind(&c.token_endpoint_auth_method)
    .bind(&c.application_type)
    .bind(c.metadata.to_string())
    .bind(&c.metadata_hash)
    .bind(&c.secret_hash)
    .bind(&c.created_by)
    .bind(c.created_at)
    .bind(c.last_used_at)
    .bind(c.expires_at)
    .execute(pool)
    .await
    .map_err(err("client"))?;
    Ok(())
}

pub(crate) async fn client(pool: &AnyPool, id: &str) -> StoreResult<Option<ClientRow>> {
    let r = sqlx::query(concat!(
        "SELECT ",
        client_cols!(),
        " FROM oauth_clients WHERE client_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    r.map(|r| rows::client(&r).map_err(backend)).transpose()
}

pub(crate) async fn dynamic_client_by_metadata(
    pool: &AnyPool,
    hash: &str,
    now: i64,
) -> StoreResult<Option<ClientRow>> {
    let r = sqlx::query(concat!(
        "SELECT ",
        client_cols!(),
        " FROM oauth_clients WHERE metadata_hash = $1 AND kind = 'dynamic' AND token_endpoint_auth_method = 'none'
          AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(hash)
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    r.map(|r| rows::client(&r).map_err(backend)).transpose()
}

pub(crate) async fn extend_unused_client(
    pool: &AnyPool,
    id: &str,
    expires_at: i64,
    now: i64,
) -> StoreResult<bool> {
    let r = sqlx::query(
        "UPDATE oauth_clients SET expires_at = $1 WHERE client_id = $2 AND expires_at IS NOT NULL AND expires_at > $3",
    )
    .bind(expires_at)
    .bind(id)
    .bind(now)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(r.rows_affected() == 1)
}

pub(crate) async fn touch_client(pool: &AnyPool, id: &str, now: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE oauth_clients SET last_used_at = $1, expires_at = NULL WHERE client_id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn clients_of_project(
    pool: &AnyPool,
    project_id: &str,
) -> StoreResult<Vec<ClientRow>> {
    let rs = sqlx::query(concat!(
        "SELECT ",
        client_cols!(),
        " FROM oauth_clients WHERE project_id = $1 ORDER BY created_at"
    ))
    .bind(project_id)
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rs.iter()
        .map(|r| rows::client(r).map_err(backend))
        .collect()
}

pub(crate) async fn delete_client(pool: &AnyPool, id: &str) -> StoreResult<bool> {
    let r = sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(r.rows_affected() > 0)
}

pub(crate) async fn purge_expired_clients(pool: &AnyPool, now: i64) -> StoreResult<u64> {
    let r =
        sqlx::query("DELETE FROM oauth_clients WHERE expires_at IS NOT NULL AND expires_at < $1")
            .bind(now)
            .execute(pool)
            .await
            .map_err(backend)?;
    Ok(r.rows_affected())
}

pub(crate) async fn insert_grant_with_code(
    pool: &AnyPool,
    g: &GrantRow,
    c: &CodeRow,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query(concat!(
        "INSERT INTO oauth_grants (",
        grant_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(&g.id)
    .bind(&g.user_id)
    .bind(&g.client_id)
    .bind(&g.server_id)
    .bind(&g.resource)
    .bind(&g.scope)
    .bind(g.created_at)
    .bind(g.last_used_at)
    .bind(g.revoked_at)
    .bind(&g.revoked_reason)
    .execute(&mut *tx)
    .await
    .map_err(err("grant"))?;
    sqlx::query(concat!(
        "INSERT INTO oauth_codes (",
        code_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&c.code_hash)
    .bind(&c.grant_id)
    .bind(&c.client_id)
    .bind(&c.redirect_uri)
    .bind(&c.code_challenge)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.used_at)
    .execute(&mut *tx)
    .await
    .map_err(err("code"))?;
    tx.commit().await.map_err(backend)
}

pub(crate) async fn grant(pool: &AnyPool, id: &str) -> StoreResult<Option<GrantRow>> {
    let r = sqlx::query(concat!(
        "SELECT ",
        grant_cols!(),
        " FROM oauth_grants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    r.map(|r| rows::grant(&r).map_err(backend)).transpose()
}

pub(crate) async fn grants_of_server(
    pool: &AnyPool,
    server_id: &str,
) -> StoreResult<Vec<GrantRow>> {
    let rs = sqlx::query(concat!(
        "SELECT ",
        grant_cols!(),
        " FROM oauth_grants WHERE server_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(server_id)
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    rs.iter().map(|r| rows::grant(r).map_err(backend)).collect()
}

pub(crate) async fn cross_project_grants(pool: &AnyPool) -> StoreResult<Vec<String>> {
    sqlx::query_scalar(
        "SELECT g.id FROM oauth_grants g
         JOIN oauth_clients c ON c.client_id = g.client_id
         JOIN servers s ON s.id = g.server_id
         WHERE g.revoked_at IS NULL AND c.kind = 'registered'
           AND (c.project_id IS NULL OR c.project_id <> s.project_id)
         ORDER BY g.id",
    )
    .fetch_all(pool)
    .await
    .map_err(backend)
}

pub(crate) async fn revoke_grant(
    pool: &AnyPool,
    id: &str,
    now: i64,
    reason: &str,
) -> StoreResult<bool> {
    let r = sqlx::query("UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(r.rows_affected() > 0)
}

// The token endpoint's statements take many codes or tokens at once (see
// `ezforge_core::oauth::batch`). A list is cut into chunks of at most `CHUNK` items, and each
// chunk is padded to a power of two by repeating its last item, so that a handful of
// statement texts serve every batch size and stay in each connection's prepared-statement
// cache. Repeating an item changes nothing: the lists are `IN` lists, `OR`ed conditions and
// `ON CONFLICT DO NOTHING` rows. The texts are made of numbered placeholders only: nothing a
// client sends reaches them.

/// Items per statement, at most.
pub(crate) const CHUNK: usize = 32;

/// `chunk` followed by copies of its last item, up to the next power of two.
pub(crate) fn padded<T>(chunk: &[T]) -> impl Iterator<Item = &T> {
    let size = chunk.len().next_power_of_two();
    chunk
        .iter()
        .chain(std::iter::repeat_n(chunk.last(), size - chunk.len()).flatten())
}

/// `$first, $first+1, …` — `n` numbered placeholders.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a transaction for the token endpoint begins: on SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`), because a transaction that reads first and writes later fails, rather
/// than waits, when another connection wrote in between.
async fn begin_write(
    conn: &mut AnyConnection,
    sqlite: bool,
) -> StoreResult<sqlx::Transaction<'_, sqlx::Any>> {
    use sqlx::Connection;
    if sqlite {
        conn.begin_with("BEGIN IMMEDIATE").await
    } else {
        conn.begin().await
    }
    .map_err(backend)
}

pub(crate) async fn exchange_codes(
    conn: &mut AnyConnection,
    sqlite: bool,
    attempts: &[CodeAttempt],
    now: i64,
    issue: &mut IssueRefresh<'_>,
) -> StoreResult<Vec<CodeUse>> {
    if !sqlite {
        return crate::pg_tokens::exchange_codes(conn, attempts, now, issue).await;
    }
    let mut tx = begin_write(conn, sqlite).await?;
    let mut uses = Vec::with_capacity(attempts.len());
    for chunk in attempts.chunks(CHUNK) {
        uses.extend(use_codes_chunk(&mut tx, chunk, now).await?);
    }
    let spent: Vec<&str> = uses
        .iter()
        .filter_map(|u| match u {
            CodeUse::First(code) => Some(code.grant_id.as_str()),
            _ => None,
        })
        .collect();
    let grants = self::grants(&mut tx, &spent).await?;
    let mut issued = Vec::new();
    for (i, u) in uses.iter().enumerate() {
        if let CodeUse::First(code) = u
            && let Some(row) = issue(i, code, grants.get(&code.grant_id))
        {
            issued.push(row);
        }
    }
    insert_refreshes(&mut tx, &issued).await?;
    tx.commit().await.map_err(backend)?;
    Ok(uses)
}

/// Spends a chunk's codes (SQLite through sqlx: in-memory databases).
async fn use_codes_chunk(
    conn: &mut AnyConnection,
    chunk: &[CodeAttempt],
    now: i64,
) -> StoreResult<Vec<CodeUse>> {
    // One statement on the hot path. A code is spent only by its own client with the right
    // PKCE challenge, so a stolen code presented by anyone else does not burn it.
    let n = chunk.len().next_power_of_two();
    let matches = (0..n)
        .map(|i| {
            let b = 2 + 3 * i;
            format!(
                "(code_hash = ${b} AND client_id = ${} AND code_challenge = ${})",
                b + 1,
                b + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "UPDATE oauth_codes SET used_at = $1 WHERE used_at IS NULL AND ({matches}) RETURNING {}",
        code_cols!()
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for a in padded(chunk) {
        q = q
            .bind(&a.code_hash)
            .bind(&a.client_id)
            .bind(&a.code_challenge);
    }
    let mut spent = HashMap::new();
    for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
        let code = rows::code(&r).map_err(backend)?;
        spent.insert(code.code_hash.clone(), code);
    }
    code_uses(conn, chunk, &spent).await
}

/// How each attempt of a chunk went, given the codes the chunk's statement spent (by hash).
/// Only refusals need to know more: whether an unspent code exists at all (one more read).
/// Each attempt is answered as if the chunk had arrived one request after another, in order:
/// before the one that spent a code, a mismatched attempt found it unspent.
pub(crate) async fn code_uses(
    conn: &mut AnyConnection,
    chunk: &[CodeAttempt],
    spent: &HashMap<String, CodeRow>,
) -> StoreResult<Vec<CodeUse>> {
    let missed: Vec<&str> = chunk
        .iter()
        .filter(|a| !spent.contains_key(&a.code_hash))
        .map(|a| a.code_hash.as_str())
        .collect();
    let known = codes(conn, &missed).await?;
    let mut first = HashSet::new();
    Ok(chunk
        .iter()
        .map(|a| match spent.get(&a.code_hash) {
            Some(code) => {
                let matches =
                    code.client_id == a.client_id && code.code_challenge == a.code_challenge;
                if matches && first.insert(a.code_hash.as_str()) {
                    CodeUse::First(code.clone())
                } else if !matches && !first.contains(a.code_hash.as_str()) {
                    CodeUse::Mismatch(CodeRow {
                        used_at: None,
                        ..code.clone()
                    })
                } else {
                    CodeUse::Replayed(code.clone())
                }
            }
            None => match known.get(&a.code_hash) {
                Some(code) if code.used_at.is_some() => CodeUse::Replayed(code.clone()),
                Some(code) => CodeUse::Mismatch(code.clone()),
                None => CodeUse::Unknown,
            },
        })
        .collect())
}

/// The codes with these hashes, by hash.
async fn codes(conn: &mut AnyConnection, hashes: &[&str]) -> StoreResult<HashMap<String, CodeRow>> {
    let mut out = HashMap::new();
    for chunk in hashes.chunks(CHUNK) {
        let sql = format!(
            "SELECT {} FROM oauth_codes WHERE code_hash IN ({})",
            code_cols!(),
            placeholders(1, chunk.len().next_power_of_two())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for h in padded(chunk) {
            q = q.bind(*h);
        }
        for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
            let code = rows::code(&r).map_err(backend)?;
            out.insert(code.code_hash.clone(), code);
        }
    }
    Ok(out)
}

/// The grants with these ids that exist, by id.
async fn grants(conn: &mut AnyConnection, ids: &[&str]) -> StoreResult<HashMap<String, GrantRow>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT {} FROM oauth_grants WHERE id IN ({})",
            grant_cols!(),
            placeholders(1, chunk.len().next_power_of_two())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in padded(chunk) {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
            let grant = rows::grant(&r).map_err(backend)?;
            out.insert(grant.id.clone(), grant);
        }
    }
    Ok(out)
}

/// Stores refresh tokens; a token already stored is left as it is.
pub(crate) async fn insert_refreshes(
    conn: &mut AnyConnection,
    tokens: &[RefreshRow],
) -> StoreResult<()> {
    // In one order everywhere, so that two nodes inserting the same successors cannot wait on
    // each other's half of them (a deadlock on PostgreSQL).
    let mut tokens: Vec<&RefreshRow> = tokens.iter().collect();
    tokens.sort_by(|a, b| a.token_hash.cmp(&b.token_hash));
    for chunk in tokens.chunks(CHUNK) {
        let values = (0..chunk.len().next_power_of_two())
            .map(|i| format!("({})", placeholders(1 + 8 * i, 8)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO oauth_refresh_tokens ({}) VALUES {values} ON CONFLICT (token_hash) DO NOTHING",
            refresh_cols!()
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for t in padded(chunk) {
            q = bind_refresh(q, t);
        }
        q.execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a refresh token's columns, in `refresh_cols!` order (8 placeholders).
pub(crate) fn bind_refresh<'q>(q: AnyQuery<'q>, t: &'q RefreshRow) -> AnyQuery<'q> {
    q.bind(&t.token_hash)
        .bind(&t.grant_id)
        .bind(&t.scope)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(&t.successor_hash)
        .bind(t.generation)
}

pub(crate) async fn refresh(pool: &AnyPool, hash: &str) -> StoreResult<Option<RefreshRow>> {
    let r = sqlx::query(concat!(
        "SELECT ",
        refresh_cols!(),
        " FROM oauth_refresh_tokens WHERE token_hash = $1"
    ))
    .bind(hash)
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    r.map(|r| rows::refresh(&r).map_err(backend)).transpose()
}

/// The refresh tokens with these hashes, by hash.
pub(crate) async fn refreshes(
    conn: &mut AnyConnection,
    hashes: &[&str],
) -> StoreResult<HashMap<String, RefreshRow>> {
    let mut out = HashMap::new();
    for chunk in hashes.chunks(CHUNK) {
        let sql = format!(
            "SELECT {} FROM oauth_refresh_tokens WHERE token_hash IN ({})",
            refresh_cols!(),
            placeholders(1, chunk.len().next_power_of_two())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for h in padded(chunk) {
            q = q.bind(*h);
        }
        for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
            let row = rows::refresh(&r).map_err(backend)?;
            out.insert(row.token_hash.clone(), row);
        }
    }
    Ok(out)
}

pub(crate) async fn renew_refreshes(
    conn: &mut AnyConnection,
    sqlite: bool,
    presented: &[RefreshPresented],
    now: i64,
    renew: &mut Renew<'_>,
) -> StoreResult<Vec<Option<Rotation>>> {
    if !sqlite {
        return crate::pg_tokens::renew_refreshes(conn, presented, now, renew).await;
    }
    let hashes: Vec<&str> = presented.iter().map(|p| p.token_hash.as_str()).collect();
    let mut tx = begin_write(conn, sqlite).await?;
    let found = refreshes_with_grants(&mut tx, &hashes).await?;
    let renewals = Renewals::decide(found, renew);
    let mut rotations = Vec::with_capacity(renewals.attempts.len());
    for chunk in renewals.attempts.chunks(CHUNK) {
        rotations.extend(rotate_chunk(&mut tx, chunk, now).await?);
    }
    tx.commit().await.map_err(backend)?;
    Ok(renewals.answer(presented.len(), rotations))
}

/// The rotations `renew` asked for, and which of the presented tokens each is for.
pub(crate) struct Renewals {
    which: Vec<usize>,
    pub(crate) attempts: Vec<RotationAttempt>,
}

impl Renewals {
    pub(crate) fn decide(
        found: Vec<Option<(RefreshRow, GrantRow)>>,
        renew: &mut Renew<'_>,
    ) -> Renewals {
        let (mut which, mut attempts) = (Vec::new(), Vec::new());
        for (i, stored) in found.into_iter().enumerate() {
            if let Some(attempt) = renew(i, stored) {
                which.push(i);
                attempts.push(attempt);
            }
        }
        Renewals { which, attempts }
    }

    /// Each of `presented` tokens' rotation, `None` where `renew` declined.
    pub(crate) fn answer(
        self,
        presented: usize,
        rotations: Vec<Rotation>,
    ) -> Vec<Option<Rotation>> {
        let mut out = vec![None; presented];
        for (i, rotation) in self.which.into_iter().zip(rotations) {
            out[i] = Some(rotation);
        }
        out
    }
}

/// `CASE token_hash WHEN $b THEN $b+1 …` (each parent's successor) and `$b, $b+2, …` (the
/// parents), for `n` (parent, successor) pairs bound from placeholder `base` on.
pub(crate) fn successor_cases(base: usize, n: usize) -> (String, String) {
    let cases = (0..n)
        .map(|i| format!("WHEN ${} THEN ${}", base + 2 * i, base + 1 + 2 * i))
        .collect::<Vec<_>>()
        .join(" ");
    let list = (0..n)
        .map(|i| format!("${}", base + 2 * i))
        .collect::<Vec<_>>()
        .join(", ");
    (format!("CASE token_hash {cases} END"), list)
}

/// Runs a rotation statement (it returns the rows it spent) and answers each attempt.
pub(crate) async fn spend_refreshes(
    conn: &mut AnyConnection,
    q: AnyQuery<'_>,
    chunk: &[RotationAttempt],
) -> StoreResult<Vec<Rotation>> {
    let spent = q
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| rows::refresh(r).map(|t| (t.token_hash.clone(), t)))
        .collect::<Result<HashMap<_, _>, _>>()
        .map_err(backend)?;
    rotations(conn, chunk, &spent).await
}

/// Rotates a chunk in the same transaction: families' rows move to their next generation
/// (`advance_families`), tokens of the old kind are spent for their successors
/// (`spend_chunk`). Answers in the chunk's order.
async fn rotate_chunk(
    conn: &mut AnyConnection,
    chunk: &[RotationAttempt],
    now: i64,
) -> StoreResult<Vec<Rotation>> {
    let mut rotated = advance_families_of(conn, chunk).await?;
    if !rotated.legacy.is_empty() {
        let spent = spend_chunk(conn, &rotated.legacy_attempts(chunk), now).await?;
        rotated.answer_legacy(spent);
    }
    Ok(rotated.out)
}

/// A chunk's answers once its families have moved (`advance_families_of`); the attempts of the
/// old kind, at `legacy`, are left for the caller's own statement (`answer_legacy`).
pub(crate) struct FamiliesMoved {
    pub(crate) out: Vec<Rotation>,
    pub(crate) legacy: Vec<usize>,
}

impl FamiliesMoved {
    pub(crate) fn legacy_attempts(&self, chunk: &[RotationAttempt]) -> Vec<RotationAttempt> {
        self.legacy.iter().map(|&i| chunk[i].clone()).collect()
    }

    /// Places the answers of the old kind's attempts, in `legacy`'s order.
    pub(crate) fn answer_legacy(&mut self, rotations: Vec<Rotation>) {
        for (i, r) in self.legacy.iter().zip(rotations) {
            self.out[*i] = r;
        }
    }
}

/// Moves a chunk's families (`advance_families`) and answers them in the chunk's order.
pub(crate) async fn advance_families_of(
    conn: &mut AnyConnection,
    chunk: &[RotationAttempt],
) -> StoreResult<FamiliesMoved> {
    let (families, legacy): (Vec<usize>, Vec<usize>) =
        (0..chunk.len()).partition(|&i| chunk[i].generation.is_some());
    let mut out = vec![Rotation::Unknown; chunk.len()];
    let attempts: Vec<&RotationAttempt> = families.iter().map(|&i| &chunk[i]).collect();
    for (i, r) in families
        .iter()
        .zip(advance_families(conn, &attempts).await?)
    {
        out[*i] = r;
    }
    Ok(FamiliesMoved { out, legacy })
}

/// Moves each family's row to the attempt's next generation if it is still at the attempt's
/// own, one statement each, and answers each attempt: the row as moved, or as found (spent
/// for that generation), or unknown. A family is presented here only when a batch's first
/// pass did not rotate it (on PostgreSQL), or on SQLite without the token connection.
async fn advance_families(
    conn: &mut AnyConnection,
    attempts: &[&RotationAttempt],
) -> StoreResult<Vec<Rotation>> {
    let mut out = Vec::with_capacity(attempts.len());
    for a in attempts {
        let row = sqlx::query(concat!(
            "UPDATE oauth_refresh_tokens SET generation = $1, created_at = $2, expires_at = $3 WHERE token_hash = $4 AND generation = $5 AND used_at IS NULL RETURNING ",
            refresh_cols!()
        ))
        .bind(a.successor.generation)
        .bind(a.successor.created_at)
        .bind(a.successor.expires_at)
        .bind(&a.token_hash)
        .bind(a.generation)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        out.push(match row {
            Some(r) => Rotation::Rotated(rows::refresh(&r).map_err(backend)?),
            None => match refreshes(conn, &[a.token_hash.as_str()])
                .await?
                .remove(&a.token_hash)
            {
                Some(row) => Rotation::AlreadyUsed(row),
                None => Rotation::Unknown,
            },
        });
    }
    Ok(out)
}

/// Spends a chunk's tokens of the old kind, storing their successors first (in the same
/// transaction).
async fn spend_chunk(
    conn: &mut AnyConnection,
    chunk: &[RotationAttempt],
    now: i64,
) -> StoreResult<Vec<Rotation>> {
    // A successor is derived from its parent token, so inserting it is idempotent. It is
    // inserted before the parent is locked, as on PostgreSQL (see `pg_tokens`).
    let successors: Vec<RefreshRow> = chunk.iter().map(|a| a.successor.clone()).collect();
    insert_refreshes(conn, &successors).await?;
    let (cases, list) = successor_cases(2, chunk.len().next_power_of_two());
    let sql = format!(
        "UPDATE oauth_refresh_tokens SET used_at = $1, successor_hash = {cases} WHERE used_at IS NULL AND generation IS NULL AND token_hash IN ({list}) RETURNING {}",
        refresh_cols!()
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for a in padded(chunk) {
        q = q.bind(&a.token_hash).bind(&a.successor.token_hash);
    }
    spend_refreshes(conn, q, chunk).await
}

/// How each attempt of a chunk went, given the tokens the chunk's statement spent (by hash);
/// only the ones it did not spend need another read.
async fn rotations(
    conn: &mut AnyConnection,
    chunk: &[RotationAttempt],
    spent: &HashMap<String, RefreshRow>,
) -> StoreResult<Vec<Rotation>> {
    let missed: Vec<&str> = chunk
        .iter()
        .filter(|a| !spent.contains_key(&a.token_hash))
        .map(|a| a.token_hash.as_str())
        .collect();
    let known = refreshes(conn, &missed).await?;
    let mut first = HashSet::new();
    Ok(chunk
        .iter()
        .map(|a| match spent.get(&a.token_hash) {
            // A second presentation in the same batch finds the token spent, as it would a
            // moment later.
            Some(row) if first.insert(a.token_hash.as_str()) => Rotation::Rotated(row.clone()),
            Some(row) => Rotation::AlreadyUsed(row.clone()),
            None => match known.get(&a.token_hash) {
                Some(row) => Rotation::AlreadyUsed(row.clone()),
                None => Rotation::Unknown,
            },
        })
        .collect())
}

/// Each refresh token with its grant, in one query.
pub(crate) async fn refreshes_with_grants(
    conn: &mut AnyConnection,
    hashes: &[&str],
) -> StoreResult<Vec<Option<(RefreshRow, GrantRow)>>> {
    let mut found = HashMap::new();
    for chunk in hashes.chunks(CHUNK) {
        let sql = format!(
            "SELECT r.token_hash, r.grant_id, r.scope AS r_scope, r.created_at AS r_created_at, r.expires_at, r.used_at, r.successor_hash, r.generation,
                    g.id, g.user_id, g.client_id, g.server_id, g.resource, g.scope, g.created_at, g.last_used_at, g.revoked_at, g.revoked_reason
             FROM oauth_refresh_tokens r JOIN oauth_grants g ON g.id = r.grant_id WHERE r.token_hash IN ({})",
            placeholders(1, chunk.len().next_power_of_two())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for h in padded(chunk) {
            q = q.bind(h);
        }
        for r in q.fetch_all(&mut *conn).await.map_err(backend)? {
            let grant = rows::grant(&r).map_err(backend)?;
            let refresh = RefreshRow {
                token_hash: sqlx::Row::try_get(&r, "token_hash").map_err(backend)?,
                grant_id: sqlx::Row::try_get(&r, "grant_id").map_err(backend)?,
                scope: sqlx::Row::try_get(&r, "r_scope").map_err(backend)?,
                created_at: sqlx::Row::try_get(&r, "r_created_at").map_err(backend)?,
                expires_at: sqlx::Row::try_get(&r, "expires_at").map_err(backend)?,
                used_at: sqlx::Row::try_get(&r, "used_at").map_err(backend)?,
                successor_hash: sqlx::Row::try_get(&r, "successor_hash").map_err(backend)?,
                generation: sqlx::Row::try_get(&r, "generation").map_err(backend)?,
            };
            found.insert(refresh.token_hash.clone(), (refresh, grant));
        }
    }
    Ok(hashes.iter().map(|h| found.get(*h).cloned()).collect())
}

pub(crate) async fn consent(
    pool: &AnyPool,
    user: &str,
    client: &str,
    server: &str,
) -> StoreResult<Option<ConsentRow>> {
    let r = sqlx::query("SELECT user_id, client_id, server_id, scope, created_at FROM oauth_consents WHERE user_id = $1 AND client_id = $2 AND server_id = $3")
        .bind(user)
        .bind(client)
        .bind(server)
        .fetch_optional(pool)
        .await
        .map_err(backend)?;
    r.map(|r| rows::consent(&r).map_err(backend)).transpose()
}

pub(crate) async fn upsert_consent(pool: &AnyPool, c: &ConsentRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO oauth_consents (user_id, client_id, server_id, scope, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, client_id, server_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at",
    )
    .bind(&c.user_id)
    .bind(&c.client_id)
    .bind(&c.server_id)
    .bind(&c.scope)
    .bind(c.created_at)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn delete_consent(
    pool: &AnyPool,
    user: &str,
    client: &str,
    server: &str,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2 AND server_id = $3",
    )
    .bind(user)
    .bind(client)
    .bind(server)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn revoke_user_grants_in_project(
    pool: &AnyPool,
    user: &str,
    project: &str,
    now: i64,
    reason: &str,
) -> StoreResult<u64> {
    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query(
        "DELETE FROM oauth_consents WHERE user_id = $1 AND server_id IN (SELECT id FROM servers WHERE project_id = $2)",
    )
    .bind(user)
    .bind(project)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    let r = sqlx::query(
        "UPDATE oauth_grants SET revoked_at = $1, revoked_reason = $2
         WHERE user_id = $3 AND revoked_at IS NULL AND server_id IN (SELECT id FROM servers WHERE project_id = $4)",
    )
    .bind(now)
    .bind(reason)
    .bind(user)
    .bind(project)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    Ok(r.rows_affected())
}
