//! The SQL behind the store.

use crate::OpenError;
use crate::rows::{self, backend, err};
use async_trait::async_trait;
use ezforge_core::invalidation::Invalidation;
use ezforge_core::model::*;
use ezforge_core::oauth::model::*;
use ezforge_core::store::{IssueRefresh, Renew, Store, StoreResult, UserAdmission};
use ezforge_proto::{Environment, Role, Scope};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};
use std::sync::Arc;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Whether the token endpoint may open its own connection to the database behind `url`: a
/// read-write file with the default locking. Read-only, immutable, in-memory databases and other
/// VFSs keep to the pool (a second connection would write what the operator froze, or lock
/// differently from the pool's).
fn direct_sqlite_allowed(url: &str) -> bool {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    !query.split('&').any(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        matches!(k, "immutable" | "vfs") || (k == "mode" && !matches!(v, "rw" | "rwc"))
    })
}

/// The file the pool has open as its main database, as SQLite names it (absolute), if it is a
/// file; empty for an in-memory database.
async fn sqlite_main_file(pool: &AnyPool) -> Option<std::path::PathBuf> {
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(pool)
            .await
            .ok()??;
    let path = std::path::PathBuf::from(file);
    path.is_file().then_some(path)
}

/// Whether this task may block its thread on SQLite: on a multi-threaded runtime it can, after
/// handing its worker's other tasks on (`block_in_place`). On a current-thread runtime (some
/// tests and tools) it cannot: a task on that same thread may hold SQLite's write lock across
/// an `.await`, and would never get to release it; the generic async SQL is used there.
fn may_block() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

// Column lists as macros so that every query stays a `&'static str` (sqlx refuses dynamic SQL).
macro_rules! user_cols {
    () => {
        "id, email, password_hash, is_admin, created_at, email_verified"
    };
}
macro_rules! key_cols {
    () => {
        "id, project_id, name, environment, scopes, secret_hash, display_prefix, created_by, created_at, last_used_at, expires_at, revoked_at"
    };
}
macro_rules! server_cols {
    () => {
        "id, project_id, name, slug, environment, created_by, created_at, updated_at, access_policy, access_allowlist, auth_mode, byoa, tool_policy, active_deployment_id"
    };
}

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: &'static str,
    max_connections: u32,
    /// The token endpoint's connection while it is busy (`token_conn`).
    token_conn: crate::token_conn::TokenConnSlot,
    /// On an SQLite file, the token endpoint's own synchronous connection (see
    /// `sqlite_tokens`); `None` on PostgreSQL and in-memory SQLite.
    token_db: Option<Arc<crate::sqlite_tokens::TokenDb>>,
    /// PostgreSQL's URL, for the connection that listens for other nodes' changes
    /// (`invalidations`); `None` on SQLite.
    pg_url: Option<Arc<str>>,
    /// Turned true by `close`: ends the listening connections.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// How long a quiet listening connection waits before it checks that it still answers.
    listener_heartbeat: Duration,
}

impl SqlStore {
    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://…`) and runs pending migrations.
    /// SQLite files are put in WAL mode with foreign keys on.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            "postgres"
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_string();
            return Err(OpenError::UnsupportedUrl(scheme));
        };
        let is_sqlite = backend == "sqlite";
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;")
                            .await?;
                        // See `checkpointer`: with the WAL often past SQLite's default of
                        // 1,000 pages, the pool's commits would checkpoint in requests.
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "PRAGMA wal_autocheckpoint = {}",
                            crate::checkpointer::WRITER_CHECKPOINT_PAGES
                        )))
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(OpenError::Connect)?;
        MIGRATOR.run(&pool).await.map_err(OpenError::Migrate)?;
        if backend == "postgres"
            && let Err(e) = crate::pg_storage::apply(&pool).await
        {
            // A speed-up, not a need: a role that does not own the tables (migrated by
            // another) still serves.
            tracing::warn!(error = %e, "cannot set the token tables' fill factor; spent codes and refresh tokens will be updated out of place");
        }
        let token_db = match is_sqlite && direct_sqlite_allowed(url) {
            true => match sqlite_main_file(&pool).await {
                Some(path) => Some(Arc::new(
                    crate::sqlite_tokens::TokenDb::open(&path)
                        .map_err(|e| OpenError::Token(e.to_string()))?,
                )),
                None => None,
            },
            false => None,
        };
        Ok(SqlStore {
            pool,
            backend,
            max_connections: max_connections.max(1),
            token_conn: Default::default(),
            token_db,
            pg_url: (backend == "postgres").then(|| Arc::from(url)),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
            listener_heartbeat: crate::invalidations::HEARTBEAT,
        })
    }

    /// Checks a quiet listening connection (`Store::subscribe_invalidations`) this often
    /// instead of every 30 s (tests that cut connections silently use less).
    pub fn with_listener_heartbeat(mut self, every: Duration) -> Self {
        self.listener_heartbeat = every.max(Duration::from_millis(1));
        self
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// SQLite's journal mode, for tests and diagnostics ("wal" expected).
    pub async fn sqlite_journal_mode(&self) -> Option<String> {
        if self.backend != "sqlite" {
            return None;
        }
        sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await
            .ok()
    }

    /// Whether the token endpoint's transactions would run on their own SQLite connection
    /// (see `sqlite_tokens`) if called from here (for tests and diagnostics).
    pub fn direct_sqlite_tokens(&self) -> bool {
        self.direct_tokens().is_some()
    }

    /// WAL checkpoints run by the SQLite checkpoint thread so far (see `checkpointer`), and the
    /// frames in the WAL and copied at the last one; `None` when there is no such thread (for
    /// tests and diagnostics).
    pub fn sqlite_checkpoints(&self) -> Option<(u64, i64, i64)> {
        let r = self.token_db.as_deref()?.checkpoints()?;
        Some((r.runs, r.wal_frames, r.copied_frames))
    }

    fn direct_tokens(&self) -> Option<&crate::sqlite_tokens::TokenDb> {
        self.token_db.as_deref().filter(|_| may_block())
    }

    pub async fn close(&self) {
        self.closing.send_replace(true);
        self.token_conn.close().await;
        if let Some(db) = &self.token_db {
            db.close();
        }
        self.pool.close().await;
    }

    async fn take_token_conn(&self) -> StoreResult<crate::token_conn::TokenConn> {
        self.token_conn
            .take(&self.pool, self.backend == "postgres")
            .await
    }

    fn keep_token_conn<T>(&self, conn: crate::token_conn::TokenConn, result: &StoreResult<T>) {
        self.token_conn
            .keep(conn, result, &self.pool, self.max_connections);
    }

    async fn one<T>(
        &self,
        q: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        f: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> StoreResult<Option<T>> {
        q.fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|r| f(&r).map_err(backend))
            .transpose()
    }

    async fn all<T>(
        &self,
        q: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        f: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> StoreResult<Vec<T>> {
        q.fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| f(r).map_err(backend))
            .collect()
    }
}

/// `INSERT` of a user whose admin flag is decided by whether any user exists yet.
macro_rules! insert_user {
    () => {
        "INSERT INTO users (id, email, password_hash, is_admin, created_at, email_verified)
         SELECT $1, $2, $3, CASE WHEN EXISTS (SELECT 1 FROM users) THEN 0 ELSE 1 END, $4, $5"
    };
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn publish_invalidation(&self, change: &Invalidation) -> StoreResult<()> {
        match self.pg_url {
            Some(_) => crate::invalidations::publish(&self.pool, change).await,
            None => Ok(()),
        }
    }

    async fn subscribe_invalidations(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Invalidation>>> {
        Ok(self.pg_url.as_ref().map(|url| {
            crate::invalidations::subscribe(
                url.to_string(),
                self.closing.subscribe(),
                self.listener_heartbeat,
            )
        }))
    }

    async fn user_count(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)
    }

    async fn insert_user(
        &self,
        user: &UserRow,
        admission: UserAdmission,
    ) -> StoreResult<Option<UserRow>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let UserAdmission::Invite { code_hash, now } = &admission {
            let used = sqlx::query("UPDATE invites SET used_at = $1, used_by = $2 WHERE code_hash = $3 AND used_at IS NULL AND expires_at > $1")
                .bind(*now)
                .bind(&user.id)
                .bind(code_hash)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            if used.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let sql = match admission {
            UserAdmission::FirstUserOnly => {
                concat!(insert_user!(), " WHERE NOT EXISTS (SELECT 1 FROM users)")
            }
            _ => insert_user!(),
        };
        let inserted = sqlx::query(sql)
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .bind(i64::from(user.email_verified))
            .execute(&mut *tx)
            .await
            .map_err(err("user with this email"))?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id = $1"
        ))
        .bind(&user.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let stored = rows::user(&row).map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(stored))
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE email = $1"
            ))
            .bind(email),
            rows::user,
        )
        .await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<UserRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id),
            rows::user,
        )
        .await
    }

    async fn insert_session(&self, s: &SessionRow) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&s.token_hash)
            .bind(&s.user_id)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(&self.pool)
            .await
            .map_err(err("session"))?;
        Ok(())
    }

    async fn session_by_hash(&self, token_hash: &str) -> StoreResult<Option<SessionRow>> {
        self.one(
            sqlx::query("SELECT token_hash, user_id, created_at, expires_at FROM sessions WHERE token_hash = $1").bind(token_hash),
            rows::session,
        )
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected())
    }

    async fn count_event(&self, key: &str, now: i64, window_secs: i64) -> StoreResult<(i64, i64)> {
        crate::rate_windows::count(&self.pool, key, now, window_secs).await
    }

    async fn uncount_event(&self, key: &str, now: i64) -> StoreResult<()> {
        crate::rate_windows::uncount(&self.pool, key, now).await
    }

    async fn clear_events(&self, key: &str) -> StoreResult<()> {
        crate::rate_windows::clear(&self.pool, key).await
    }

    async fn purge_event_windows(&self, now: i64) -> StoreResult<u64> {
        crate::rate_windows::purge(&self.pool, now).await
    }

    async fn purge_sessions(&self, before: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected())
    }

    async fn insert_invite(&self, i: &InviteRow) -> StoreResult<()> {
        sqlx::query("INSERT INTO invites (id, code_hash, email, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&i.id)
            .bind(&i.code_hash)
            .bind(&i.email)
            .bind(&i.created_by)
            .bind(i.created_at)
            .bind(i.expires_at)
            .execute(&self.pool)
            .await
            .map_err(err("invite"))?;
        Ok(())
    }

    async fn invite_by_hash(&self, code_hash: &str) -> StoreResult<Option<InviteRow>> {
        self.one(
            sqlx::query("SELECT id, code_hash, email, created_by, created_at, expires_at FROM invites WHERE code_hash = $1").bind(code_hash),
            rows::invite,
        )
        .await
    }

    async fn insert_project(&self, p: &ProjectRow, owner: &MemberRow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO projects (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.created_by)
        .bind(p.created_at)
        .execute(&mut *tx)
        .await
        .map_err(err("project with this name"))?;
        insert_member(&mut *tx, owner).await?;
        tx.commit().await.map_err(backend)
    }

    async fn project(&self, reference: &str) -> StoreResult<Option<ProjectRow>> {
        self.one(
            sqlx::query(
                "SELECT id, name, created_by, created_at FROM projects WHERE id = $1 OR name = $1",
            )
            .bind(reference),
            rows::project,
        )
        .await
    }

    async fn projects_of_user(&self, user_id: &str) -> StoreResult<Vec<(ProjectRow, Role)>> {
        let q = sqlx::query(
            "SELECT p.id, p.name, p.created_by, p.created_at, m.role FROM projects p
             JOIN project_members m ON m.project_id = p.id WHERE m.user_id = $1 ORDER BY p.name",
        )
        .bind(user_id);
        self.all(q, |r| {
            Ok((
                rows::project(r)?,
                rows::role(&sqlx::Row::try_get::<String, _>(r, "role")?)?,
            ))
        })
        .await
    }

    async fn member(&self, project_id: &str, user_id: &str) -> StoreResult<Option<MemberRow>> {
        self.one(
            sqlx::query("SELECT project_id, user_id, role, created_at FROM project_members WHERE project_id = $1 AND user_id = $2")
                .bind(project_id)
                .bind(user_id),
            rows::member,
        )
        .await
    }

    async fn members(&self, project_id: &str) -> StoreResult<Vec<(MemberRow, String)>> {
        let q = sqlx::query(
            "SELECT m.project_id, m.user_id, m.role, m.created_at, u.email FROM project_members m
             JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.created_at, u.email",
        )
        .bind(project_id);
        self.all(q, |r| {
            Ok((rows::member(r)?, sqlx::Row::try_get(r, "email")?))
        })
        .await
    }

    async fn insert_member(&self, m: &MemberRow) -> StoreResult<()> {
        insert_member(&self.pool, m).await
    }

    async fn delete_member(&self, project_id: &str, user_id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
            .bind(project_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn owner_count(&self, project_id: &str) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_members WHERE project_id = $1 AND role = 'owner'",
        )
        .bind(project_id)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)
    }

    async fn insert_api_key(&self, k: &ApiKeyRow) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO api_keys (",
            key_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&k.id)
        .bind(&k.project_id)
        .bind(&k.name)
        .bind(k.environment.as_str())
        .bind(Scope::join(&k.scopes))
        .bind(&k.secret_hash)
        .bind(&k.display_prefix)
        .bind(&k.created_by)
        .bind(k.created_at)
        .bind(k.last_used_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(err("API key"))?;
        Ok(())
    }

    async fn api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiKeyRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM api_keys WHERE secret_hash = $1"
            ))
            .bind(secret_hash),
            rows::api_key,
        )
        .await
    }

    async fn api_key(&self, project_id: &str, key_id: &str) -> StoreResult<Option<ApiKeyRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM api_keys WHERE project_id = $1 AND id = $2"
            ))
            .bind(project_id)
            .bind(key_id),
            rows::api_key,
        )
        .await
    }

    async fn api_keys(&self, project_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
        self.all(
            sqlx::query(concat!(
                "SELECT ",
                key_cols!(),
                " FROM api_keys WHERE project_id = $1 ORDER BY created_at DESC, id"
            ))
            .bind(project_id),
            rows::api_key,
        )
        .await
    }

    async fn revoke_api_key(
        &self,
        project_id: &str,
        key_id: &str,
        now: i64,
    ) -> StoreResult<Option<ApiKeyRow>> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE project_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(project_id)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        self.api_key(project_id, key_id).await
    }

    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)")
            .bind(now)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_server(&self, s: &ServerRow) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO servers (",
            server_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&s.id)
        .bind(&s.project_id)
        .bind(&s.name)
        .bind(&s.slug)
        .bind(s.environment.as_str())
        .bind(&s.created_by)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.access_policy.kind())
        .bind(s.access_policy.allowlist().join(","))
        .bind(s.auth_mode())
        .bind(
            s.byoa
                .as_ref()
                .map(|b| serde_json::to_string(b).unwrap_or_default()),
        )
        .bind(serde_json::to_string(&s.tool_policy).unwrap_or_else(|_| "{}".into()))
        .bind(&s.active_deployment_id)
        .execute(&self.pool)
        .await
        .map_err(err("server with this slug"))?;
        Ok(())
    }

    async fn server(&self, project_id: &str, reference: &str) -> StoreResult<Option<ServerRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                server_cols!(),
                " FROM servers WHERE project_id = $1 AND (id = $2 OR slug = $2)"
            ))
            .bind(project_id)
            .bind(reference),
            rows::server,
        )
        .await
    }

    async fn servers(
        &self,
        project_id: &str,
        environment: Option<Environment>,
    ) -> StoreResult<Vec<ServerRow>> {
        let q = match environment {
            Some(env) => sqlx::query(concat!(
                "SELECT ",
                server_cols!(),
                " FROM servers WHERE project_id = $1 AND environment = $2 ORDER BY slug"
            ))
            .bind(project_id)
            .bind(env.as_str()),
            None => sqlx::query(concat!(
                "SELECT ",
                server_cols!(),
                " FROM servers WHERE project_id = $1 ORDER BY slug"
            ))
            .bind(project_id),
        };
        self.all(q, rows::server).await
    }

    async fn update_server(&self, s: &ServerRow) -> StoreResult<()> {
        sqlx::query("UPDATE servers SET name = $1, updated_at = $2, access_policy = $3, access_allowlist = $4, auth_mode = $5, byoa = $6, tool_policy = $7 WHERE id = $8")
            .bind(&s.name)
            .bind(s.updated_at)
            .bind(s.access_policy.kind())
            .bind(s.access_policy.allowlist().join(","))
            .bind(s.auth_mode())
            .bind(s.byoa.as_ref().map(|b| serde_json::to_string(b).unwrap_or_default()))
            .bind(serde_json::to_string(&s.tool_policy).unwrap_or_else(|_| "{}".into()))
            .bind(&s.id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_server(&self, server_id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(server_id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn server_by_slug(&self, slug: &str) -> StoreResult<Option<ServerRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                server_cols!(),
                " FROM servers WHERE slug = $1"
            ))
            .bind(slug),
            rows::server,
        )
        .await
    }

    async fn server_by_id(&self, id: &str) -> StoreResult<Option<ServerRow>> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                server_cols!(),
                " FROM servers WHERE id = $1"
            ))
            .bind(id),
            rows::server,
        )
        .await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        crate::oauth_sql::signing_keys(&self.pool).await
    }

    async fn insert_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
        crate::oauth_sql::insert_signing_key(&self.pool, key).await
    }

    async fn retire_signing_keys(&self, except_kid: &str, at: i64) -> StoreResult<u64> {
        crate::oauth_sql::retire_signing_keys(&self.pool, except_kid, at).await
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        crate::oauth_sql::delete_signing_key(&self.pool, kid).await
    }

    async fn insert_client(&self, client: &ClientRow) -> StoreResult<()> {
        crate::oauth_sql::insert_client(&self.pool, client).await
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<ClientRow>> {
        crate::oauth_sql::client(&self.pool, client_id).await
    }

    async fn dynamic_client_by_metadata(
        &self,
        metadata_hash: &str,
        now: i64,
    ) -> StoreResult<Option<ClientRow>> {
        crate::oauth_sql::dynamic_client_by_metadata(&self.pool, metadata_hash, now).await
    }

    async fn touch_client(&self, client_id: &str, now: i64) -> StoreResult<()> {
        crate::oauth_sql::touch_client(&self.pool, client_id, now).await
    }

    async fn extend_unused_client(
        &self,
        client_id: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool> {
        crate::oauth_sql::extend_unused_client(&self.pool, client_id, expires_at, now).await
    }

    async fn clients_of_project(&self, project_id: &str) -> StoreResult<Vec<ClientRow>> {
        crate::oauth_sql::clients_of_project(&self.pool, project_id).await
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        crate::oauth_sql::delete_client(&self.pool, client_id).await
    }

    async fn purge_expired_clients(&self, now: i64) -> StoreResult<u64> {
        crate::oauth_sql::purge_expired_clients(&self.pool, now).await
    }

    async fn insert_grant_with_code(&self, grant: &GrantRow, code: &CodeRow) -> StoreResult<()> {
        crate::oauth_sql::insert_grant_with_code(&self.pool, grant, code).await
    }

    async fn grant(&self, id: &str) -> StoreResult<Option<GrantRow>> {
        crate::oauth_sql::grant(&self.pool, id).await
    }

    async fn grants_of_server(&self, server_id: &str) -> StoreResult<Vec<GrantRow>> {
        crate::oauth_sql::grants_of_server(&self.pool, server_id).await
    }

    async fn revoke_grant(&self, id: &str, now: i64, reason: &str) -> StoreResult<bool> {
        crate::oauth_sql::revoke_grant(&self.pool, id, now, reason).await
    }

    async fn cross_project_grants(&self) -> StoreResult<Vec<String>> {
        crate::oauth_sql::cross_project_grants(&self.pool).await
    }

    async fn exchange_codes(
        &self,
        attempts: &[CodeAttempt],
        now: i64,
        issue: &mut IssueRefresh<'_>,
    ) -> StoreResult<Vec<CodeUse>> {
        if let Some(db) = self.direct_tokens() {
            return tokio::task::block_in_place(|| db.exchange_codes(attempts, now, issue));
        }
        let mut conn = self.take_token_conn().await?;
        let sqlite = self.backend == "sqlite";
        let done = crate::oauth_sql::exchange_codes(&mut conn, sqlite, attempts, now, issue).await;
        self.keep_token_conn(conn, &done);
        done
    }

    async fn refresh(&self, token_hash: &str) -> StoreResult<Option<RefreshRow>> {
        crate::oauth_sql::refresh(&self.pool, token_hash).await
    }

    async fn renew_refreshes(
        &self,
        presented: &[RefreshPresented],
        now: i64,
        renew: &mut Renew<'_>,
    ) -> StoreResult<Vec<Option<Rotation>>> {
        if let Some(db) = self.direct_tokens() {
            return tokio::task::block_in_place(|| db.renew_refreshes(presented, now, renew));
        }
        let mut conn = self.take_token_conn().await?;
        let sqlite = self.backend == "sqlite";
        let done =
            crate::oauth_sql::renew_refreshes(&mut conn, sqlite, presented, now, renew).await;
        self.keep_token_conn(conn, &done);
        done
    }

    async fn insert_and_activate_deployment(&self, d: &DeploymentRow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO deployments (id, server_id, seq, upstream_url, credentials, timeout_ms, health, created_by, created_at)
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, $6, $7, $8 FROM deployments WHERE server_id = $2",
        )
        .bind(&d.id)
        .bind(&d.server_id)
        .bind(&d.upstream_url)
        .bind(&d.credentials)
        .bind(d.timeout_ms)
        .bind(&d.health)
        .bind(&d.created_by)
        .bind(d.created_at)
        .execute(&mut *tx)
        .await
        .map_err(err("deployment with this number (another deploy ran at the same time; retry)"))?;
        sqlx::query("UPDATE servers SET active_deployment_id = $1 WHERE id = $2")
            .bind(&d.id)
            .bind(&d.server_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn activate_deployment(&self, server_id: &str, deployment_id: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE servers SET active_deployment_id = $1 WHERE id = $2
             AND EXISTS (SELECT 1 FROM deployments WHERE id = $1 AND server_id = $2)",
        )
        .bind(deployment_id)
        .bind(server_id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn deployments(&self, server_id: &str) -> StoreResult<Vec<DeploymentRow>> {
        self.all(
            sqlx::query(
                "SELECT id, server_id, upstream_url, credentials, timeout_ms, health, created_by, created_at
                 FROM deployments WHERE server_id = $1 ORDER BY seq DESC",
            )
            .bind(server_id),
            rows::deployment,
        )
        .await
    }

    async fn deployment(&self, id: &str) -> StoreResult<Option<DeploymentRow>> {
        self.one(
            sqlx::query(
                "SELECT id, server_id, upstream_url, credentials, timeout_ms, health, created_by, created_at FROM deployments WHERE id = $1",
            )
            .bind(id),
            rows::deployment,
        )
        .await
    }

    async fn consent(
        &self,
        user_id: &str,
        client_id: &str,
        server_id: &str,
    ) -> StoreResult<Option<ConsentRow>> {
        crate::oauth_sql::consent(&self.pool, user_id, client_id, server_id).await
    }

    async fn delete_consent(
        &self,
        user_id: &str,
        client_id: &str,
        server_id: &str,
    ) -> StoreResult<()> {
        crate::oauth_sql::delete_consent(&self.pool, user_id, client_id, server_id).await
    }

    async fn revoke_user_grants_in_project(
        &self,
        user_id: &str,
        project_id: &str,
        now: i64,
        reason: &str,
    ) -> StoreResult<u64> {
        crate::oauth_sql::revoke_user_grants_in_project(
            &self.pool, user_id, project_id, now, reason,
        )
        .await
    }

    async fn upsert_consent(&self, consent: &ConsentRow) -> StoreResult<()> {
        crate::oauth_sql::upsert_consent(&self.pool, consent).await
    }
}

async fn insert_member<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    m: &MemberRow,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO project_members (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&m.project_id)
        .bind(&m.user_id)
        .bind(m.role.as_str())
        .bind(m.created_at)
        .execute(executor)
        .await
        .map_err(err("membership"))?;
    Ok(())
}
