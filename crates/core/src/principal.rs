//! Who is calling, and what each route requires of them.

use crate::error::CoreError;
use crate::model::{ApiKeyRow, SessionRow, UserRow};
use ezforge_proto::Scope;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Principal {
    /// A signed-in user; acts with the rights of their project memberships.
    User { user: UserRow, session: SessionRow },
    /// An API key; acts only inside its own project and environment, with its scopes.
    ApiKey(Arc<ApiKeyRow>),
}

/// What a route declares it needs. Every `/v1` route names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// A signed-in user, or an API key holding this scope.
    Scope(Scope),
    /// Any authenticated caller: a user, or an API key whatever its scopes (e.g. listing the
    /// key's own project).
    Authenticated,
    /// A signed-in user only: account, project and key management.
    Session,
}

impl Principal {
    /// Checks the route-level requirement. Project membership, project and environment are
    /// checked later, by the operation, once it knows which resource is concerned.
    pub fn require(&self, requirement: Requirement) -> Result<(), CoreError> {
        match (self, requirement) {
            (_, Requirement::Authenticated) => Ok(()),
            (Principal::User { .. }, _) => Ok(()),
            (Principal::ApiKey(_), Requirement::Session) => Err(CoreError::SessionRequired),
            (Principal::ApiKey(key), Requirement::Scope(scope)) => {
                if key.scopes.contains(&scope) {
                    Ok(())
                } else {
                    Err(CoreError::InsufficientScope(scope))
                }
            }
        }
    }

    /// The id recorded as the actor of a change: the user's or the key's.
    pub fn actor_id(&self) -> &str {
        match self {
            Principal::User { user, .. } => &user.id,
            Principal::ApiKey(key) => &key.id,
        }
    }

    pub fn user(&self) -> Result<&UserRow, CoreError> {
        match self {
            Principal::User { user, .. } => Ok(user),
            Principal::ApiKey(_) => Err(CoreError::SessionRequired),
        }
    }
}
