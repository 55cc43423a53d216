//! What the domain needs from storage. `ezforge-store` implements it on SQLite and PostgreSQL;
//! one test suite (in that crate) runs against both.

use crate::audit::{AuditQuery, AuditRow};
use crate::invalidation::Invalidation;
use crate::model::*;
use crate::oauth::model::*;
use crate::telemetry::{LatencySum, RecordQuery, RequestRow, StatSum, TelemetryBatch, UsageDay};
use async_trait::async_trait;
use ezforge_proto::{Environment, Role};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the message names what (e.g. "email already registered").
    #[error("{0}")]
    Conflict(String),
    /// A value the database cannot hold (PostgreSQL's text cannot contain a NUL character):
    /// the caller's input, not the database, is at fault.
    #[error("{0}")]
    Unstorable(String),
    #[error("database: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// See `Store::exchange_codes`.
pub type IssueRefresh<'a> =
    dyn FnMut(usize, &CodeRow, Option<&GrantRow>) -> Option<RefreshRow> + Send + 'a;
/// See `Store::renew_refreshes`.
pub type Renew<'a> =
    dyn FnMut(usize, Option<(RefreshRow, GrantRow)>) -> Option<RotationAttempt> + Send + 'a;

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
pub trait Store: TelemetryStore + Send + Sync + 'static {
    /// A short name for logs: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    // cross-node invalidation (see `invalidation`)
    /// Tells every node sharing this database, this one included, that `change` made cached
    /// state stale. A backend only one node can use (an SQLite file) has no one to tell.
    async fn publish_invalidation(&self, change: &Invalidation) -> StoreResult<()> {
        let _ = change;
        Ok(())
    }
    /// Starts hearing the changes any node publishes, until the receiver is dropped; `None`
    /// where there are no other nodes. `Invalidation::Everything` comes first and after every
    /// reconnection: whatever was published while not listening is unknown.
    async fn subscribe_invalidations(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Invalidation>>> {
        Ok(None)
    }

    // rate limits shared by every node
    /// Counts one event for `key` in its current window, or in a new one of `window_secs` from
    /// `now` if the last one has ended, atomically. Returns the window's count, this event
    /// included, and when the window ends.
    async fn count_event(&self, key: &str, now: i64, window_secs: i64) -> StoreResult<(i64, i64)>;
    /// Takes one event back from `key`'s current window (never below zero; nothing if the
    /// window has ended).
    async fn uncount_event(&self, key: &str, now: i64) -> StoreResult<()>;
    /// Forgets `key`'s window.
    async fn clear_events(&self, key: &str) -> StoreResult<()>;
    /// Deletes the windows that ended by `now`.
    async fn purge_event_windows(&self, now: i64) -> StoreResult<u64>;

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

    /// A server anywhere on the instance, by slug (resource URIs name servers by slug).
    async fn server_by_slug(&self, slug: &str) -> StoreResult<Option<ServerRow>>;
    async fn server_by_id(&self, id: &str) -> StoreResult<Option<ServerRow>>;

    // OAuth: signing keys
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>>;
    async fn insert_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()>;
    /// Sets `retired_at` on every key that has none and is not `except_kid`.
    async fn retire_signing_keys(&self, except_kid: &str, at: i64) -> StoreResult<u64>;
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()>;

    // OAuth: clients
    async fn insert_client(&self, client: &ClientRow) -> StoreResult<()>;
    async fn client(&self, client_id: &str) -> StoreResult<Option<ClientRow>>;
    /// An unexpired public dynamic registration with this metadata hash.
    async fn dynamic_client_by_metadata(
        &self,
        metadata_hash: &str,
        now: i64,
    ) -> StoreResult<Option<ClientRow>>;
    /// Marks the client used: it no longer expires.
    async fn touch_client(&self, client_id: &str, now: i64) -> StoreResult<()>;
    /// Moves an unused client's expiry to `expires_at`; false if the client is gone, used (it
    /// no longer expires) or already expired at `now`.
    async fn extend_unused_client(
        &self,
        client_id: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool>;
    async fn clients_of_project(&self, project_id: &str) -> StoreResult<Vec<ClientRow>>;
    async fn delete_client(&self, client_id: &str) -> StoreResult<bool>;
    async fn purge_expired_clients(&self, now: i64) -> StoreResult<u64>;

    // OAuth: grants, codes, refresh tokens, consent
    /// Inserts a grant and its authorization code in one transaction.
    async fn insert_grant_with_code(&self, grant: &GrantRow, code: &CodeRow) -> StoreResult<()>;
    async fn grant(&self, id: &str) -> StoreResult<Option<GrantRow>>;
    async fn grants_of_server(&self, server_id: &str) -> StoreResult<Vec<GrantRow>>;
    /// Revokes the grant (and so its codes and refresh family); false if already revoked.
    async fn revoke_grant(&self, id: &str, now: i64, reason: &str) -> StoreResult<bool>;
    /// The live grants whose client a project registered, on a server of another project:
    /// `/authorize` refuses these since b6f4cc3, and those made before are ended at start.
    async fn cross_project_grants(&self) -> StoreResult<Vec<String>>;
    // The token endpoint's hot path takes many requests at once (see `oauth::batch`): each
    // method does them all in one transaction with one statement per kind of work (on
    // PostgreSQL, single statements: `store::pg_tokens`), and answers for each, in order.
    /// Spends codes: of all presentations of a code, ever, exactly one gets `First` (its own
    /// client with the right challenge); after that every one gets `Replayed`. For each code
    /// spent now, `issue` (given the attempt's index, the code and its grant if it still
    /// exists) names the refresh token to store, if any; those are stored before this
    /// returns, atomically with the spending of their codes when the token is the attempt's
    /// offer (or, on SQLite, in any case). A store may write an attempt's `refresh` offer together
    /// with the spend, before `issue` has decided, when the code is unexpired and its grant
    /// live and granted `offline_access`; it then removes an offer `issue` did not name.
    /// (An offer's token was never shown to anyone, so it cannot be presented meanwhile.)
    async fn exchange_codes(
        &self,
        attempts: &[CodeAttempt],
        now: i64,
        issue: &mut IssueRefresh<'_>,
    ) -> StoreResult<Vec<CodeUse>>;
    /// Reads each refresh token with its grant and lets `renew` (given the index) decide
    /// whether to rotate it; rotates those it names. Of all presentations of a token, ever,
    /// exactly one gets `Rotated`; the others get `AlreadyUsed` with the spent row. `None`
    /// where `renew` declined. `renew` is called once for each presentation.
    ///
    /// A store may rotate a token that meets its presentation's `terms` in the statement that
    /// reads it, before `renew` has seen it; `renew` then decides on the token as read (unspent),
    /// and by the terms' promise it names that rotation. Stores that do not use the terms
    /// decide first and rotate after.
    async fn renew_refreshes(
        &self,
        presented: &[RefreshPresented],
        now: i64,
        renew: &mut Renew<'_>,
    ) -> StoreResult<Vec<Option<Rotation>>>;
    async fn refresh(&self, token_hash: &str) -> StoreResult<Option<RefreshRow>>;
    async fn consent(
        &self,
        user_id: &str,
        client_id: &str,
        server_id: &str,
    ) -> StoreResult<Option<ConsentRow>>;
    async fn delete_consent(
        &self,
        user_id: &str,
        client_id: &str,
        server_id: &str,
    ) -> StoreResult<()>;
    /// Revokes every live grant of `user_id` on the servers of `project_id`; returns how many.
    async fn revoke_user_grants_in_project(
        &self,
        user_id: &str,
        project_id: &str,
        now: i64,
        reason: &str,
    ) -> StoreResult<u64>;
    async fn upsert_consent(&self, consent: &ConsentRow) -> StoreResult<()>;

    // deployments
    /// Inserts the deployment and makes it the server's active one, in one transaction.
    async fn insert_and_activate_deployment(&self, deployment: &DeploymentRow) -> StoreResult<()>;
    /// Points the server at one of its deployments.
    async fn activate_deployment(&self, server_id: &str, deployment_id: &str) -> StoreResult<bool>;
    /// Newest first.
    async fn deployments(&self, server_id: &str) -> StoreResult<Vec<DeploymentRow>>;
    async fn deployment(&self, id: &str) -> StoreResult<Option<DeploymentRow>>;
}

/// The request log, its roll-ups (metrics and usage), quotas and the audit log.
#[async_trait]
pub trait TelemetryStore: Send + Sync + 'static {
    /// Stores the records and adds the roll-ups, in one transaction.
    async fn write_telemetry(&self, batch: &TelemetryBatch) -> StoreResult<()>;
    async fn request_records(&self, query: &RecordQuery) -> StoreResult<Vec<RequestRow>>;
    /// For following the log: up to `limit` stored chunks of a server whose newest record is at
    /// or after `since_ms`, except those named in `except`, oldest first; each with its id, its
    /// newest record's time and its records.
    async fn request_chunks_since(
        &self,
        server_id: &str,
        since_ms: i64,
        except: &[String],
        limit: u32,
    ) -> StoreResult<Vec<(String, i64, Vec<RequestRow>)>>;
    /// Deletes records and per-minute metrics older than `before_ms`; returns records deleted.
    async fn purge_telemetry(&self, before_ms: i64) -> StoreResult<u64>;
    /// Per-minute metrics of a server in [from_minute, to_minute), summed per step and tool.
    async fn stat_sums(
        &self,
        server_id: &str,
        from_minute: i64,
        to_minute: i64,
        step_minutes: i64,
    ) -> StoreResult<Vec<StatSum>>;
    async fn latency_sums(
        &self,
        server_id: &str,
        from_minute: i64,
        to_minute: i64,
        step_minutes: i64,
    ) -> StoreResult<Vec<LatencySum>>;
    /// Usage per day in [from_day, to_day] (`YYYY-MM-DD`), oldest first, with distinct clients
    /// and users; of one environment, or of both when `None`.
    async fn usage_days(
        &self,
        project_id: &str,
        environment: Option<Environment>,
        from_day: &str,
        to_day: &str,
    ) -> StoreResult<Vec<UsageDay>>;
    /// Distinct (clients, users) over [from_day, to_day].
    async fn distinct_actors(
        &self,
        project_id: &str,
        environment: Option<Environment>,
        from_day: &str,
        to_day: &str,
    ) -> StoreResult<(i64, i64)>;
    /// Forwarded requests in a month (`YYYY-MM`).
    async fn month_requests(&self, project_id: &str, month: &str) -> StoreResult<i64>;
    async fn project_quota(&self, project_id: &str) -> StoreResult<Option<i64>>;
    async fn set_project_quota(&self, project_id: &str, monthly: Option<i64>) -> StoreResult<()>;

    async fn insert_audit(&self, entry: &AuditRow) -> StoreResult<()>;
    async fn audit_entries(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>>;
}
