//! Deployments: where a server's traffic goes. Each deploy is a new immutable revision that
//! becomes active at once; a rollback points the server back at an earlier one.

use super::Core;
use crate::audit::Change;
use crate::error::CoreError;
use crate::ids;
use crate::model::{DeploymentRow, ServerRow};
use crate::principal::Principal;

pub const DEFAULT_TIMEOUT_MS: i64 = 30_000;
pub const MAX_TIMEOUT_MS: i64 = 300_000;

/// A deployment about to be created; the HTTP layer has health-checked the upstream and sealed
/// the credentials.
pub struct NewDeployment {
    pub upstream_url: String,
    pub sealed_credentials: Option<String>,
    pub timeout_ms: i64,
    pub health: String,
}

/// An upstream URL: absolute http(s), no user information or fragment. Upstreams are usually on
/// private networks, so private addresses are allowed: choosing them is the project's right.
pub fn validate_upstream(url: &str) -> Result<String, CoreError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        CoreError::invalid(
            "upstream_url",
            format!("`{url}` is not an absolute URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(CoreError::invalid(
            "upstream_url",
            "must be an http or https URL",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Err(CoreError::invalid(
            "upstream_url",
            "must not contain user information or a fragment; send credentials as headers",
        ));
    }
    Ok(url.to_string())
}

pub fn validate_timeout(timeout_ms: Option<i64>) -> Result<i64, CoreError> {
    match timeout_ms {
        None => Ok(DEFAULT_TIMEOUT_MS),
        Some(t) if (100..=MAX_TIMEOUT_MS).contains(&t) => Ok(t),
        Some(_) => Err(CoreError::invalid(
            "timeout_ms",
            format!("must be between 100 and {MAX_TIMEOUT_MS}"),
        )),
    }
}

impl Core {
    /// Creates a deployment of `server` and makes it active.
    pub async fn deploy(
        &self,
        principal: &Principal,
        server: &str,
        new: NewDeployment,
    ) -> Result<(ServerRow, DeploymentRow), CoreError> {
        let mut server = self.find_server(principal, server).await?;
        let deployment = DeploymentRow {
            id: ids::new_id("dep"),
            server_id: server.id.clone(),
            upstream_url: validate_upstream(&new.upstream_url)?,
            credentials: new.sealed_credentials,
            timeout_ms: new.timeout_ms,
            health: new.health,
            created_by: principal.actor_id().to_string(),
            created_at: self.clock.now(),
        };
        self.store
            .insert_and_activate_deployment(&deployment)
            .await?;
        tracing::info!(server_id = %server.id, deployment_id = %deployment.id, "deployed");
        // The upstream's own credentials are sealed and never copied here: only their presence.
        self.audit(
            principal,
            Change {
                project_id: &server.project_id,
                action: "deployment.create",
                target: &deployment.id,
                environment: Some(server.environment),
                details: serde_json::json!({
                    "server_id": server.id,
                    "upstream_url": without_secrets(&deployment.upstream_url),
                    "timeout_ms": deployment.timeout_ms,
                    "credentials": deployment.credentials.is_some(),
                }),
            },
        )
        .await;
        server.active_deployment_id = Some(deployment.id.clone());
        Ok((server, deployment))
    }

    /// A server's deployments, newest first.
    pub async fn deployments(
        &self,
        principal: &Principal,
        server: &str,
    ) -> Result<(ServerRow, Vec<DeploymentRow>), CoreError> {
        let server = self.find_server(principal, server).await?;
        let list = self.store.deployments(&server.id).await?;
        Ok((server, list))
    }

    /// Points the server back at `to`, or at the deployment made before the active one.
    pub async fn rollback(
        &self,
        principal: &Principal,
        server: &str,
        to: Option<&str>,
    ) -> Result<(ServerRow, DeploymentRow), CoreError> {
        let mut server = self.find_server(principal, server).await?;
        let list = self.store.deployments(&server.id).await?;
        let target = match to {
            Some(id) => list
                .iter()
                .find(|d| d.id == id)
                .cloned()
                .ok_or(CoreError::NotFound("deployment"))?,
            None => {
                let active = server
                    .active_deployment_id
                    .as_deref()
                    .ok_or_else(|| CoreError::Conflict("nothing is deployed yet".into()))?;
                let position = list.iter().position(|d| d.id == active).unwrap_or(0);
                list.get(position + 1).cloned().ok_or_else(|| {
                    CoreError::Conflict("there is no earlier deployment to roll back to".into())
                })?
            }
        };
        if server.active_deployment_id.as_deref() == Some(target.id.as_str()) {
            return Err(CoreError::Conflict(format!(
                "{} is already the active deployment",
                target.id
            )));
        }
        if !self
            .store
            .activate_deployment(&server.id, &target.id)
            .await?
        {
            return Err(CoreError::NotFound("deployment"));
        }
        tracing::info!(server_id = %server.id, deployment_id = %target.id, "rolled back");
        self.audit(
            principal,
            Change {
                project_id: &server.project_id,
                action: "deployment.rollback",
                target: &target.id,
                environment: Some(server.environment),
                details: serde_json::json!({
                    "server_id": server.id,
                    "from": server.active_deployment_id,
                }),
            },
        )
        .await;
        server.active_deployment_id = Some(target.id.clone());
        Ok((server, target))
    }

    /// The active deployment of the server with `slug`, for the gateway.
    pub async fn active_deployment(
        &self,
        server: &ServerRow,
    ) -> Result<Option<DeploymentRow>, CoreError> {
        match &server.active_deployment_id {
            Some(id) => Ok(self.store.deployment(id).await?),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_and_timeouts() {
        assert!(validate_upstream("http://10.0.0.5:3001/mcp").is_ok());
        assert!(validate_upstream("https://mcp.example.com/mcp").is_ok());
        for bad in [
            "ftp://x/mcp",
            "/mcp",
            "https://u:p@x/mcp",
            "https://x/mcp#f",
        ] {
            assert!(validate_upstream(bad).is_err(), "{bad}");
        }
        assert_eq!(validate_timeout(None).unwrap(), DEFAULT_TIMEOUT_MS);
        assert!(validate_timeout(Some(50)).is_err());
        assert!(validate_timeout(Some(MAX_TIMEOUT_MS + 1)).is_err());
    }
}

/// An upstream URL as the audit log shows it: without user info or query string, which may
/// carry the upstream's own credentials.
fn without_secrets(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => String::from("(unparseable)"),
    }
}

#[cfg(test)]
mod audit_tests {
    #[test]
    fn audited_urls_lose_their_secrets() {
        assert_eq!(
            super::without_secrets("https://user:pw@up.example.com:8443/mcp?key=s3cret#x"),
            "https://up.example.com:8443/mcp"
        );
        assert_eq!(
            super::without_secrets("http://10.0.0.5:3001/mcp"),
            "http://10.0.0.5:3001/mcp"
        );
    }
}
