//! The audit log: every control-plane change, who made it (a user or an API key), when, and
//! what changed. Entries never hold secrets: key secrets, passwords and upstream credentials are
//! named, never copied.

use crate::Principal;
use crate::ids;
use crate::service::Core;
use ezforge_proto::{ActorKind, Environment};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub project_id: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    /// Read back by joining users; not stored.
    pub actor_email: Option<String>,
    pub action: String,
    pub target: String,
    pub environment: Option<Environment>,
    pub details: serde_json::Value,
}

impl AuditRow {
    pub fn to_api(&self) -> ezforge_proto::AuditEntry {
        ezforge_proto::AuditEntry {
            id: self.id.clone(),
            time: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(self.at_ms) * 1_000_000,
            )
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            actor_kind: self.actor_kind,
            actor_id: self.actor_id.clone(),
            actor_email: self.actor_email.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            environment: self.environment,
            details: self.details.clone(),
        }
    }
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub project_id: String,
    /// For API keys: entries of this environment and project-wide ones only.
    pub environment: Option<Environment>,
    /// Only actions starting with this (`api_key.`, `server.update`).
    pub action: Option<String>,
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// One change to record.
pub struct Change<'a> {
    pub project_id: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub environment: Option<Environment>,
    pub details: serde_json::Value,
}

impl Core {
    /// Records a change made by `principal`. A failure to record is logged loudly but does not
    /// undo the change, which has already happened.
    pub async fn audit(&self, principal: &Principal, change: Change<'_>) {
        let (actor_kind, actor_id) = match principal {
            Principal::User { user, .. } => (ActorKind::User, user.id.clone()),
            Principal::ApiKey(key) => (ActorKind::ApiKey, key.id.clone()),
        };
        let row = AuditRow {
            id: ids::ordered_id("aud"),
            project_id: change.project_id.to_string(),
            at_ms: self.now_ms(),
            actor_kind,
            actor_id,
            actor_email: None,
            action: change.action.to_string(),
            target: change.target.to_string(),
            environment: change.environment,
            details: change.details,
        };
        if let Err(e) = self.store().insert_audit(&row).await {
            tracing::error!(error = %e, action = %row.action, project_id = %row.project_id, "audit entry not recorded");
        }
    }
}
