//! The token endpoint's transactions on an SQLite file, on a connection of their own, run
//! synchronously.
//!
//! Through sqlx, every statement on SQLite is a trip to the connection's worker thread and
//! back, and every multi-row statement inside a transaction keeps a statement journal. The token
//! endpoint's batch (`core::oauth::batch`) runs one transaction at a time, so those trips are
//! its critical path. Here the whole transaction runs in one go on the calling thread, item by
//! item with prepared single-row statements: no trips, no statement journal, and the items are
//! handled in arrival order, which is the order the answers must follow anyway.
//!
//! It is a second connection to the same file, beside the pool (WAL mode, `BEGIN IMMEDIATE`
//! and the busy timeout settle who writes). Its commits checkpoint the WAL only rarely: a
//! thread of its own does, soon after each (`checkpointer`). The semantics are those of the generic SQL in
//! `oauth_sql.rs`, which PostgreSQL and in-memory SQLite use; the store test suite holds both
//! to the same tests.

use crate::checkpointer::{CheckpointRecord, Checkpointer, WRITER_CHECKPOINT_PAGES};
use ezforge_core::oauth::model::*;
use ezforge_core::store::{IssueRefresh, Renew, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::path::Path;
use std::sync::Mutex;

const CODE_COLS: &str =
    "code_hash, grant_id, client_id, redirect_uri, code_challenge, created_at, expires_at, used_at";
const REFRESH_COLS: &str =
    "token_hash, grant_id, scope, created_at, expires_at, used_at, successor_hash, generation";
const GRANT_COLS: &str = "id, user_id, client_id, server_id, resource, scope, created_at, last_used_at, revoked_at, revoked_reason";

pub(crate) struct TokenDb {
    /// `None` once the store is closed.
    conn: Mutex<Option<Connection>>,
    /// Checkpoints the WAL off this connection's commits (see `checkpointer`); `None` if it
    /// could not start, and then this connection checkpoints as SQLite does by default.
    checkpointer: Option<Checkpointer>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn closed() -> StoreError {
    StoreError::Backend("the database is closed".into())
}

impl TokenDb {
    /// Opens `path`, an existing database that the pool has already migrated.
    pub(crate) fn open(path: &Path) -> StoreResult<TokenDb> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(backend)?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;",
        )
        .map_err(backend)?;
        let checkpointer = match Checkpointer::start(path) {
            Ok(c) => {
                conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
                    .map_err(backend)?;
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the SQLite checkpoint thread; the token endpoint's commits will checkpoint the WAL themselves");
                None
            }
        };
        Ok(TokenDb {
            conn: Mutex::new(Some(conn)),
            checkpointer,
        })
    }

    /// The checkpoint thread's record, if it runs (for tests and diagnostics).
    pub(crate) fn checkpoints(&self) -> Option<CheckpointRecord> {
        self.checkpointer.as_ref().map(Checkpointer::record)
    }

    /// After a commit: the WAL it grew is checkpointed soon, off this thread.
    fn committed(&self) {
        if let Some(c) = &self.checkpointer {
            c.nudge();
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        // A panic mid-transaction drops the transaction, which rolls it back.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection (with the pool, when the store closes).
    pub(crate) fn close(&self) {
        drop(self.slot().take());
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
    }

    /// `Store::exchange_codes`, one attempt after another in one transaction.
    pub(crate) fn exchange_codes(
        &self,
        attempts: &[CodeAttempt],
        now: i64,
        issue: &mut IssueRefresh<'_>,
    ) -> StoreResult<Vec<CodeUse>> {
        let mut slot = self.slot();
        let tx = begin(slot.as_mut().ok_or_else(closed)?)?;
        let mut uses = Vec::with_capacity(attempts.len());
        {
            // A code is spent only by its own client with the right PKCE challenge, so a stolen
            // code presented by anyone else does not burn it.
            let mut spend = tx
                .prepare_cached(&format!(
                    "UPDATE oauth_codes SET used_at = ?1 WHERE code_hash = ?2 AND client_id = ?3 AND code_challenge = ?4 AND used_at IS NULL RETURNING {CODE_COLS}"
                ))
                .map_err(backend)?;
            let mut read = tx
                .prepare_cached(&format!(
                    "SELECT {CODE_COLS} FROM oauth_codes WHERE code_hash = ?1"
                ))
                .map_err(backend)?;
            let mut grant = tx
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLS} FROM oauth_grants WHERE id = ?1"
                ))
                .map_err(backend)?;
            let mut insert = insert_refresh(&tx)?;
            for (i, a) in attempts.iter().enumerate() {
                let spent = spend
                    .query_row(
                        params![now, a.code_hash, a.client_id, a.code_challenge],
                        code_row,
                    )
                    .optional()
                    .map_err(backend)?;
                let code_use = match spent {
                    Some(code) => {
                        let g = grant
                            .query_row([&code.grant_id], grant_row)
                            .optional()
                            .map_err(backend)?;
                        if let Some(row) = issue(i, &code, g.as_ref()) {
                            insert_refresh_row(&mut insert, &row)?;
                        }
                        CodeUse::First(code)
                    }
                    None => match read
                        .query_row([&a.code_hash], code_row)
                        .optional()
                        .map_err(backend)?
                    {
                        Some(code) if code.used_at.is_some() => CodeUse::Replayed(code),
                        Some(code) => CodeUse::Mismatch(code),
                        None => CodeUse::Unknown,
                    },
                };
                uses.push(code_use);
            }
        }
        tx.commit().map_err(backend)?;
        drop(slot);
        self.committed();
        Ok(uses)
    }

    /// `Store::renew_refreshes`: every token is read before anything is written, then the
    /// rotations go one after another, so a second presentation finds the token spent. The
    /// presentations' terms are not used: a transaction here costs no round trips.
    pub(crate) fn renew_refreshes(
        &self,
        presented: &[RefreshPresented],
        now: i64,
        renew: &mut Renew<'_>,
    ) -> StoreResult<Vec<Option<Rotation>>> {
        let mut slot = self.slot();
        let tx = begin(slot.as_mut().ok_or_else(closed)?)?;
        let mut out = Vec::with_capacity(presented.len());
        {
            let mut read_with_grant = tx
                .prepare_cached(&format!(
                    "SELECT r.token_hash, r.grant_id, r.scope, r.created_at, r.expires_at, r.used_at, r.successor_hash, r.generation, {}
                     FROM oauth_refresh_tokens r JOIN oauth_grants g ON g.id = r.grant_id WHERE r.token_hash = ?1",
                    GRANT_COLS.split(", ").map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", ")
                ))
                .map_err(backend)?;
            let mut attempts = Vec::with_capacity(presented.len());
            for (i, p) in presented.iter().enumerate() {
                let stored = read_with_grant
                    .query_row([&p.token_hash], |r| {
                        Ok((refresh_row(r, 0)?, grant_at(r, 8)?))
                    })
                    .optional()
                    .map_err(backend)?;
                attempts.push(renew(i, stored));
            }
            let mut insert = insert_refresh(&tx)?;
            let mut spend = tx
                .prepare_cached(&format!(
                    "UPDATE oauth_refresh_tokens SET used_at = ?1, successor_hash = ?2 WHERE token_hash = ?3 AND used_at IS NULL AND generation IS NULL RETURNING {REFRESH_COLS}"
                ))
                .map_err(backend)?;
            let mut advance = tx
                .prepare_cached(&format!(
                    "UPDATE oauth_refresh_tokens SET generation = ?1, created_at = ?2, expires_at = ?3 WHERE token_hash = ?4 AND generation = ?5 AND used_at IS NULL RETURNING {REFRESH_COLS}"
                ))
                .map_err(backend)?;
            let mut read = tx
                .prepare_cached(&format!(
                    "SELECT {REFRESH_COLS} FROM oauth_refresh_tokens WHERE token_hash = ?1"
                ))
                .map_err(backend)?;
            for attempt in attempts {
                let Some(a) = attempt else {
                    out.push(None);
                    continue;
                };
                let spent = match a.generation {
                    // A family's row moves to the next generation, if it is still at this one.
                    Some(generation) => advance
                        .query_row(
                            params![
                                a.successor.generation,
                                a.successor.created_at,
                                a.successor.expires_at,
                                a.token_hash,
                                generation
                            ],
                            |r| refresh_row(r, 0),
                        )
                        .optional()
                        .map_err(backend)?,
                    None => {
                        // A successor is derived from its parent token, so inserting it is
                        // idempotent; it is inserted before the parent is spent.
                        insert_refresh_row(&mut insert, &a.successor)?;
                        spend
                            .query_row(params![now, a.successor.token_hash, a.token_hash], |r| {
                                refresh_row(r, 0)
                            })
                            .optional()
                            .map_err(backend)?
                    }
                };
                let rotation = match spent {
                    Some(row) => Rotation::Rotated(row),
                    None => match read
                        .query_row([&a.token_hash], |r| refresh_row(r, 0))
                        .optional()
                        .map_err(backend)?
                    {
                        Some(row) => Rotation::AlreadyUsed(row),
                        None => Rotation::Unknown,
                    },
                };
                out.push(Some(rotation));
            }
        }
        tx.commit().map_err(backend)?;
        drop(slot);
        self.committed();
        Ok(out)
    }
}

/// `BEGIN IMMEDIATE`: the write lock first, so that the reads and writes that follow cannot be
/// overtaken by another connection's write (a transaction that read first would fail, not
/// wait). A transaction left open by a rollback that failed (rusqlite ignores that error on
/// drop) is ended first, or every later batch would fail.
fn begin(conn: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK").map_err(backend)?;
    }
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)
}

fn insert_refresh<'c>(
    tx: &'c rusqlite::Transaction<'_>,
) -> StoreResult<rusqlite::CachedStatement<'c>> {
    tx.prepare_cached(&format!(
        "INSERT INTO oauth_refresh_tokens ({REFRESH_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (token_hash) DO NOTHING"
    ))
    .map_err(backend)
}

fn insert_refresh_row(
    insert: &mut rusqlite::CachedStatement<'_>,
    t: &RefreshRow,
) -> StoreResult<()> {
    insert
        .execute(params![
            t.token_hash,
            t.grant_id,
            t.scope,
            t.created_at,
            t.expires_at,
            t.used_at,
            t.successor_hash,
            t.generation
        ])
        .map_err(backend)?;
    Ok(())
}

fn code_row(r: &Row<'_>) -> rusqlite::Result<CodeRow> {
    Ok(CodeRow {
        code_hash: r.get(0)?,
        grant_id: r.get(1)?,
        client_id: r.get(2)?,
        redirect_uri: r.get(3)?,
        code_challenge: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        used_at: r.get(7)?,
    })
}

fn refresh_row(r: &Row<'_>, at: usize) -> rusqlite::Result<RefreshRow> {
    Ok(RefreshRow {
        token_hash: r.get(at)?,
        grant_id: r.get(at + 1)?,
        scope: r.get(at + 2)?,
        created_at: r.get(at + 3)?,
        expires_at: r.get(at + 4)?,
        used_at: r.get(at + 5)?,
        successor_hash: r.get(at + 6)?,
        generation: r.get(at + 7)?,
    })
}

fn grant_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    grant_at(r, 0)
}

fn grant_at(r: &Row<'_>, at: usize) -> rusqlite::Result<GrantRow> {
    Ok(GrantRow {
        id: r.get(at)?,
        user_id: r.get(at + 1)?,
        client_id: r.get(at + 2)?,
        server_id: r.get(at + 3)?,
        resource: r.get(at + 4)?,
        scope: r.get(at + 5)?,
        created_at: r.get(at + 6)?,
        last_used_at: r.get(at + 7)?,
        revoked_at: r.get(at + 8)?,
        revoked_reason: r.get(at + 9)?,
    })
}
