//! Resolving a project for a principal: membership for users, the key's own project for keys,
//! and the environment rule for keys.

use super::Core;
use crate::error::CoreError;
use crate::model::ProjectRow;
use crate::principal::Principal;
use ezforge_proto::{Environment, Role};

/// The role a project operation needs from a signed-in user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Member,
    Owner,
}

impl Core {
    /// The project `reference` (id or name) if `principal` may act on it. A user who is not a
    /// member gets "not found", so project names do not leak; a key gets `ProjectMismatch` for any
    /// project but its own, existing or not.
    pub(crate) async fn project_for(
        &self,
        principal: &Principal,
        reference: &str,
        need: Need,
    ) -> Result<(ProjectRow, Option<Role>), CoreError> {
        match principal {
            Principal::ApiKey(key) => {
                let project = self.store.project(reference).await?;
                match project {
                    Some(p) if p.id == key.project_id => Ok((p, None)),
                    _ => Err(CoreError::ProjectMismatch),
                }
            }
            Principal::User { user, .. } => {
                let project = self
                    .store
                    .project(reference)
                    .await?
                    .ok_or(CoreError::NotFound("project"))?;
                let member = self
                    .store
                    .member(&project.id, &user.id)
                    .await?
                    .ok_or(CoreError::NotFound("project"))?;
                if need == Need::Owner && member.role != Role::Owner {
                    return Err(CoreError::Forbidden(format!(
                        "only an owner of project `{}` can do this; you are a member",
                        project.name
                    )));
                }
                Ok((project, Some(member.role)))
            }
        }
    }
}

impl Core {
    /// The project, if the signed-in caller owns it.
    pub async fn project_as_owner(
        &self,
        principal: &Principal,
        reference: &str,
    ) -> Result<ProjectRow, CoreError> {
        principal.user()?;
        Ok(self.project_for(principal, reference, Need::Owner).await?.0)
    }

    /// The project, if the caller is a member (or its API key).
    pub async fn project_as_member(
        &self,
        principal: &Principal,
        reference: &str,
    ) -> Result<ProjectRow, CoreError> {
        Ok(self
            .project_for(principal, reference, Need::Member)
            .await?
            .0)
    }
}

/// A test key never touches live resources and a live key never touches test ones. Users are
/// not bound to an environment.
pub(crate) fn check_environment(
    principal: &Principal,
    resource: Environment,
) -> Result<(), CoreError> {
    match principal {
        Principal::ApiKey(key) if key.environment != resource => {
            Err(CoreError::EnvironmentMismatch {
                key: key.environment.as_str(),
                resource: resource.as_str(),
            })
        }
        _ => Ok(()),
    }
}
