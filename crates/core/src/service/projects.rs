//! Projects and their members.

use super::Core;
use super::access::Need;
use crate::audit::Change;
use crate::error::CoreError;
use crate::model::{MemberRow, ProjectRow};
use crate::principal::Principal;
use crate::store::StoreError;
use crate::{ids, validate};
use ezforge_proto::Role;

impl Core {
    /// Creates a project; the signed-in creator becomes its owner.
    pub async fn create_project(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<ProjectRow, CoreError> {
        let user = principal.user()?;
        let name = validate::dns_label("name", name)?;
        let now = self.clock.now();
        let project = ProjectRow {
            id: ids::project_id(),
            name,
            created_by: user.id.clone(),
            created_at: now,
        };
        let owner = MemberRow {
            project_id: project.id.clone(),
            user_id: user.id.clone(),
            role: Role::Owner,
            created_at: now,
        };
        self.store
            .insert_project(&project, &owner)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => CoreError::Conflict(format!(
                    "a project named `{}` already exists",
                    project.name
                )),
                other => other.into(),
            })?;
        tracing::info!(project_id = %project.id, user_id = %user.id, "project created");
        self.audit(
            principal,
            Change {
                project_id: &project.id,
                action: "project.create",
                target: &project.id,
                environment: None,
                details: serde_json::json!({ "name": project.name }),
            },
        )
        .await;
        Ok(project)
    }

    /// The projects the caller can see: a user's memberships, or a key's own project.
    pub async fn list_projects(
        &self,
        principal: &Principal,
    ) -> Result<Vec<(ProjectRow, Option<Role>)>, CoreError> {
        match principal {
            Principal::User { user, .. } => Ok(self
                .store
                .projects_of_user(&user.id)
                .await?
                .into_iter()
                .map(|(p, r)| (p, Some(r)))
                .collect()),
            Principal::ApiKey(key) => Ok(self
                .store
                .project(&key.project_id)
                .await?
                .map(|p| (p, None))
                .into_iter()
                .collect()),
        }
    }

    pub async fn get_project(
        &self,
        principal: &Principal,
        reference: &str,
    ) -> Result<(ProjectRow, Option<Role>), CoreError> {
        self.project_for(principal, reference, Need::Member).await
    }

    pub async fn list_members(
        &self,
        principal: &Principal,
        project: &str,
    ) -> Result<Vec<(MemberRow, String)>, CoreError> {
        principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Member).await?;
        Ok(self.store.members(&project.id).await?)
    }

    /// Adds an existing user to the project (owners only).
    pub async fn add_member(
        &self,
        principal: &Principal,
        project: &str,
        email: &str,
        role: Role,
    ) -> Result<(MemberRow, String), CoreError> {
        principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Owner).await?;
        let email = validate::email(email)?;
        let user = self
            .store
            .user_by_email(&email)
            .await?
            .ok_or(CoreError::NotFound("user with this email"))?;
        let member = MemberRow {
            project_id: project.id.clone(),
            user_id: user.id.clone(),
            role,
            created_at: self.clock.now(),
        };
        self.store
            .insert_member(&member)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => CoreError::Conflict(format!(
                    "{email} is already a member of `{}`",
                    project.name
                )),
                other => other.into(),
            })?;
        self.audit(
            principal,
            Change {
                project_id: &project.id,
                action: "member.add",
                target: &user.id,
                environment: None,
                details: serde_json::json!({ "email": user.email, "role": role.as_str() }),
            },
        )
        .await;
        Ok((member, user.email))
    }

    /// Removes a member (owners only). The last owner cannot be removed.
    pub async fn remove_member(
        &self,
        principal: &Principal,
        project: &str,
        user_id: &str,
    ) -> Result<(), CoreError> {
        principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Owner).await?;
        let member = self
            .store
            .member(&project.id, user_id)
            .await?
            .ok_or(CoreError::NotFound("member"))?;
        if member.role == Role::Owner && self.store.owner_count(&project.id).await? <= 1 {
            return Err(CoreError::Conflict(
                "the last owner of a project cannot be removed".into(),
            ));
        }
        self.store.delete_member(&project.id, user_id).await?;
        // Leaving the project ends what membership allowed: their OAuth grants on its servers.
        let revoked = self
            .store
            .revoke_user_grants_in_project(
                user_id,
                &project.id,
                self.clock.now(),
                "no longer a member of the project",
            )
            .await?;
        if revoked > 0 {
            tracing::info!(user_id, project_id = %project.id, grants = revoked, "grants revoked with the membership");
        }
        self.audit(
            principal,
            Change {
                project_id: &project.id,
                action: "member.remove",
                target: user_id,
                environment: None,
                details: serde_json::json!({ "grants_revoked": revoked }),
            },
        )
        .await;
        Ok(())
    }
}
