//! What the domain needs from storage. `ezforge-store` implements it on SQLite and PostgreSQL;
//! one test suite (in that crate) runs against both.

use crate::model::*;
use async_trait::async_trait;
use ezforge_proto::{Environment, Role};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the message names what (e.g. "email already registered").
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How a new user may be inserted; decided atomically with the insert so that two racing
/// sign-ups cannot both become "the first user".
#[derive(Debug, Clone)]
pub enum UserAdmission {
    /// Only if there is no user yet; the user becomes admin. `Ok(false)` when someone was first.
    FirstUserOnly,
    /// Open sign-up: admin only if first.
    Open,
    /// Consumes the unused, unexpired invite with this code hash in the same transaction.
    Invite { code_hash: String, now: i64 },
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    // users
    async fn user_count(&self) -> StoreResult<i64>;
    /// Inserts the user under `admission`. Returns the stored row (with `is_admin` decided), or
    /// `None` when the admission rule refused it (someone else was first; invite not usable).
    async fn insert_user(
        &self,
        user: &UserRow,
        admission: UserAdmission,
    ) -> StoreResult<Option<UserRow>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<UserRow>>;

    // sessions
    async fn insert_session(&self, session: &SessionRow) -> StoreResult<()>;
    async fn session_by_hash(&self, token_hash: &str) -> StoreResult<Option<SessionRow>>;
    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool>;
    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64>;
    /// Removes sessions that expired before `before`.
    async fn purge_sessions(&self, before: i64) -> StoreResult<u64>;

    // invites
    async fn insert_invite(&self, invite: &InviteRow) -> StoreResult<()>;
    async fn invite_by_hash(&self, code_hash: &str) -> StoreResult<Option<InviteRow>>;

    // projects and members
    /// Inserts the project and its first owner in one transaction.
    async fn insert_project(&self, project: &ProjectRow, owner: &MemberRow) -> StoreResult<()>;
    /// By id (`prj_…`) or by name.
    async fn project(&self, reference: &str) -> StoreResult<Option<ProjectRow>>;
    async fn projects_of_user(&self, user_id: &str) -> StoreResult<Vec<(ProjectRow, Role)>>;
    async fn member(&self, project_id: &str, user_id: &str) -> StoreResult<Option<MemberRow>>;
    async fn members(&self, project_id: &str) -> StoreResult<Vec<(MemberRow, String)>>;
    async fn insert_member(&self, member: &MemberRow) -> StoreResult<()>;
    async fn delete_member(&self, project_id: &str, user_id: &str) -> StoreResult<bool>;
    async fn owner_count(&self, project_id: &str) -> StoreResult<i64>;

    // API keys
    async fn insert_api_key(&self, key: &ApiKeyRow) -> StoreResult<()>;
    async fn api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiKeyRow>>;
    async fn api_key(&self, project_id: &str, key_id: &str) -> StoreResult<Option<ApiKeyRow>>;
    async fn api_keys(&self, project_id: &str) -> StoreResult<Vec<ApiKeyRow>>;
    /// Sets `revoked_at` if not yet set; returns the row as it now is.
    async fn revoke_api_key(
        &self,
        project_id: &str,
        key_id: &str,
        now: i64,
    ) -> StoreResult<Option<ApiKeyRow>>;
    async fn touch_api_key(&self, key_id: &str, now: i64) -> StoreResult<()>;

    // servers
    async fn insert_server(&self, server: &ServerRow) -> StoreResult<()>;
    /// By id (`srv_…`) or by slug, within a project.
    async fn server(&self, project_id: &str, reference: &str) -> StoreResult<Option<ServerRow>>;
    async fn servers(
        &self,
        project_id: &str,
        environment: Option<Environment>,
    ) -> StoreResult<Vec<ServerRow>>;
    async fn update_server(&self, server: &ServerRow) -> StoreResult<()>;
    async fn delete_server(&self, server_id: &str) -> StoreResult<bool>;
}
