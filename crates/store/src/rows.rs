//! Decoding rows into the domain's records.

use ezforge_core::model::*;
use ezforge_core::store::StoreError;
use ezforge_proto::{Environment, Role, Scope};
use sqlx::Row;
use sqlx::any::AnyRow;

pub(crate) fn bad(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} `{value}` in the database").into())
}

pub(crate) fn user(r: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        is_admin: r.try_get::<i64, _>("is_admin")? != 0,
        email_verified: r.try_get::<i64, _>("email_verified")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) fn session(r: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        token_hash: r.try_get("token_hash")?,
        user_id: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

pub(crate) fn invite(r: &AnyRow) -> Result<InviteRow, sqlx::Error> {
    Ok(InviteRow {
        id: r.try_get("id")?,
        code_hash: r.try_get("code_hash")?,
        email: r.try_get("email")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

pub(crate) fn project(r: &AnyRow) -> Result<ProjectRow, sqlx::Error> {
    Ok(ProjectRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) fn role(value: &str) -> Result<Role, sqlx::Error> {
    value.parse().map_err(|_| bad("role", value))
}

pub(crate) fn environment(value: &str) -> Result<Environment, sqlx::Error> {
    value.parse().map_err(|_| bad("environment", value))
}

pub(crate) fn member(r: &AnyRow) -> Result<MemberRow, sqlx::Error> {
    Ok(MemberRow {
        project_id: r.try_get("project_id")?,
        user_id: r.try_get("user_id")?,
        role: role(&r.try_get::<String, _>("role")?)?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) fn api_key(r: &AnyRow) -> Result<ApiKeyRow, sqlx::Error> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiKeyRow {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        name: r.try_get("name")?,
        environment: environment(&r.try_get::<String, _>("environment")?)?,
        scopes: Scope::parse_list(&scopes).map_err(|_| bad("scopes", &scopes))?,
        secret_hash: r.try_get("secret_hash")?,
        display_prefix: r.try_get("display_prefix")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(crate) fn server(r: &AnyRow) -> Result<ServerRow, sqlx::Error> {
    Ok(ServerRow {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        name: r.try_get("name")?,
        slug: r.try_get("slug")?,
        environment: environment(&r.try_get::<String, _>("environment")?)?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        access_policy: {
            let kind: String = r.try_get("access_policy")?;
            let list: String = r.try_get("access_allowlist")?;
            let list: Vec<String> = list
                .split(',')
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            AccessPolicy::from_parts(&kind, &list).map_err(|_| bad("access policy", &kind))?
        },
        byoa: {
            let mode: String = r.try_get("auth_mode")?;
            let byoa: Option<String> = r.try_get("byoa")?;
            match (mode.as_str(), byoa) {
                ("byoa", Some(json)) => {
                    Some(serde_json::from_str(&json).map_err(|_| bad("byoa settings", &json))?)
                }
                ("ezforge_managed", _) => None,
                (other, _) => return Err(bad("auth mode", other)),
            }
        },
        active_deployment_id: r.try_get("active_deployment_id")?,
        tool_policy: {
            let json: String = r.try_get("tool_policy")?;
            serde_json::from_str(&json).map_err(|_| bad("tool policy", &json))?
        },
    })
}

/// Maps a driver error: unique violations become `Conflict` naming `what`.
pub(crate) fn err(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("{what} already exists"))
        }
        _ => backend(e),
    }
}

/// Maps a driver error; text PostgreSQL refuses to hold (SQLSTATE 22021: a NUL character, or
/// bytes that are not UTF-8) becomes `Unstorable`, a fault of the input.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
            StoreError::Unstorable("text may not contain NUL characters".into())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

pub(crate) fn deployment(r: &AnyRow) -> Result<DeploymentRow, sqlx::Error> {
    Ok(DeploymentRow {
        id: r.try_get("id")?,
        server_id: r.try_get("server_id")?,
        upstream_url: r.try_get("upstream_url")?,
        credentials: r.try_get("credentials")?,
        timeout_ms: r.try_get("timeout_ms")?,
        health: r.try_get("health")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}
