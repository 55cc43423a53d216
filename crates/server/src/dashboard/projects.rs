//! Projects: the list, one project's servers, its API keys, members, usage and audit log.

use super::views;
use super::{Flash, FormData, Viewer, back_with_error, core_error, see_other_with, when};
use crate::routes::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ezforge_core::invalidation::Invalidation;
use ezforge_core::service::keys::NewApiKey;
use ezforge_proto::{Environment, Role, Scope};
use serde::Deserialize;

macro_rules! viewer {
    ($state:expr, $headers:expr) => {
        match Viewer::of(&$state, &$headers).await {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
    ($state:expr, $headers:expr, $form:expr) => {
        match Viewer::posting(&$state, &$headers, &$form).await {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}
pub(crate) use viewer;

/// The value of a domain call, or (from the handler) the page that says what went wrong.
macro_rules! or_page {
    ($call:expr) => {
        match $call {
            Ok(v) => v,
            Err(e) => return super::core_error(e),
        }
    };
}
pub(crate) use or_page;

/// Percent-encodes one path segment of a link built from a name.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /dashboard`: your projects, and a form for a new one.
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let v = viewer!(state, headers);
    let projects = or_page!(state.core.list_projects(&v.principal).await);
    let page = views::Projects {
        l: v.layout("Projects"),
        projects: projects
            .into_iter()
            .map(|(p, role)| views::ProjectItem {
                name: p.name,
                role: role.map(|r| r.as_str().to_string()).unwrap_or_default(),
                created: when(p.created_at),
            })
            .collect(),
    };
    v.render(StatusCode::OK, &page)
}

/// `POST /dashboard/projects`.
pub async fn create_project(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let name = form.text("name").unwrap_or_default();
    match state.core.create_project(&v.principal, &name).await {
        Ok(p) => see_other_with(
            &state,
            &format!("/dashboard/projects/{}", seg(&p.name)),
            Flash::Notice(format!("Project {} created.", p.name)),
        ),
        Err(e) => back_with_error(&state, "/dashboard", e),
    }
}

/// `GET /dashboard/projects/{project}`: its servers.
pub async fn project(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    let v = viewer!(state, headers);
    let (p, _) = or_page!(state.core.get_project(&v.principal, &project).await);
    let servers = or_page!(state.core.list_servers(&v.principal, &p.id, None).await);
    let page = views::Project {
        l: v.layout(&p.name),
        project: p.name.clone(),
        tab: "servers",
        servers: servers
            .into_iter()
            .map(|s| views::ServerItem {
                mcp_url: state.oauth.resource_uri(&s.slug),
                auth: s.auth_mode().to_string(),
                environment: s.environment.as_str().to_string(),
                slug: s.slug,
                name: s.name,
            })
            .collect(),
    };
    v.render(StatusCode::OK, &page)
}

/// `POST /dashboard/projects/{project}/servers`.
pub async fn create_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let back = format!("/dashboard/projects/{}", seg(&project));
    let environment = match form.get("environment").map(str::parse::<Environment>) {
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => return back_with_error(&state, &back, e),
        None => None,
    };
    let slug = form.text("slug").unwrap_or_default();
    let name = form.text("name").unwrap_or_else(|| slug.clone());
    match state
        .core
        .create_server(
            &v.principal,
            &project,
            &name,
            &slug,
            environment,
            &Default::default(),
        )
        .await
    {
        Ok(s) => {
            // As through `/v1`: nodes asked for this slug remember that it did not exist.
            state.invalidate(Invalidation::Routes).await;
            see_other_with(
                &state,
                &format!("/dashboard/servers/{}", seg(&s.slug)),
                Flash::Notice(format!(
                    "Server {} created. Deploy it to send traffic to your MCP server.",
                    s.slug
                )),
            )
        }
        Err(e) => back_with_error(&state, &back, e),
    }
}

async fn keys_page(
    state: &AppState,
    v: &Viewer,
    project: &str,
    new_secret: Option<String>,
) -> Response {
    let (p, _) = or_page!(state.core.get_project(&v.principal, project).await);
    let keys = or_page!(state.core.list_api_keys(&v.principal, &p.id).await);
    let now = state.core.now();
    let mut emails = std::collections::HashMap::new();
    if let Ok(members) = state.core.list_members(&v.principal, &p.id).await {
        for (m, email) in members {
            emails.insert(m.user_id, email);
        }
    }
    let page = views::Keys {
        l: v.layout("API Keys"),
        project: p.name.clone(),
        tab: "keys",
        keys: keys
            .into_iter()
            .map(|k| views::KeyItem {
                status: if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                },
                created_by: emails.get(&k.created_by).cloned().unwrap_or(k.created_by),
                last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                expires: k.expires_at.map(when).unwrap_or_else(|| "never".into()),
                scopes: k
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                environment: k.environment.as_str().to_string(),
                prefix: k.display_prefix,
                name: k.name,
                id: k.id,
            })
            .collect(),
        new_secret,
        scopes: Scope::ALL
            .iter()
            .map(|s| (s.as_str(), s.description()))
            .collect(),
        nonce: ezforge_core::secret::random_token(),
    };
    v.render(StatusCode::OK, &page)
}

/// `GET /dashboard/projects/{project}/keys`: Project → API Keys.
pub async fn keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    let v = viewer!(state, headers);
    keys_page(&state, &v, &project, None).await
}

/// `POST /dashboard/projects/{project}/keys`: creates a key and shows its secret, once, on
/// this response (never in a redirect, a cookie or a URL).
pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let back = format!("/dashboard/projects/{}/keys", seg(&project));
    // A reload of the page that shows the new secret would post the form again: once only.
    match form.text("nonce") {
        Some(n) if super::first_use(&n) => {}
        _ => {
            return see_other_with(
                &state,
                &back,
                Flash::Notice(
                    "That form was already sent: the key was created, and its secret is not shown again.".into(),
                ),
            );
        }
    }
    let environment = match form
        .get("environment")
        .unwrap_or("live")
        .parse::<Environment>()
    {
        Ok(e) => e,
        Err(e) => return back_with_error(&state, &back, e),
    };
    let expires_at = match form.text("expires_days").map(|d| d.parse::<i64>()) {
        None => None,
        Some(Ok(d)) if (1..=3650).contains(&d) => Some(state.core.now() + d * 86_400),
        Some(_) => {
            return back_with_error(
                &state,
                &back,
                "Expires in days: a number from 1 to 3650, or empty.",
            );
        }
    };
    let scopes = form.all("scopes");
    let new = NewApiKey {
        name: &form.text("name").unwrap_or_default(),
        scopes: &scopes,
        environment,
        expires_at,
    };
    match state.core.create_api_key(&v.principal, &project, new).await {
        Ok((_, secret)) => keys_page(&state, &v, &project, Some(secret)).await,
        Err(e) => back_with_error(&state, &back, e),
    }
}

/// `GET …/keys/{key}/revoke`: asks first.
pub async fn revoke_key_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, key)): Path<(String, String)>,
) -> Response {
    let v = viewer!(state, headers);
    let keys = or_page!(state.core.list_api_keys(&v.principal, &project).await);
    let Some(k) = keys.into_iter().find(|k| k.id == key) else {
        return core_error(ezforge_core::CoreError::NotFound("API key"));
    };
    let page = views::Confirm {
        l: v.layout("Revoke API key"),
        heading: "Revoke API key?".into(),
        message: format!(
            "The key {} ({}…, {}) stops working at once, for every script and service that uses it. This cannot be undone.",
            k.name,
            k.display_prefix,
            k.environment.as_str()
        ),
        action: format!(
            "/dashboard/projects/{}/keys/{}/revoke",
            seg(&project),
            seg(&k.id)
        ),
        button: "Revoke key".into(),
        back: format!("/dashboard/projects/{}/keys", seg(&project)),
    };
    v.render(StatusCode::OK, &page)
}

/// `POST …/keys/{key}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, key)): Path<(String, String)>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let back = format!("/dashboard/projects/{}/keys", seg(&project));
    match state
        .core
        .revoke_api_key(&v.principal, &project, &key)
        .await
    {
        Ok(k) => see_other_with(
            &state,
            &back,
            Flash::Notice(format!("Key {} revoked.", k.name)),
        ),
        Err(e) => back_with_error(&state, &back, e),
    }
}

/// `GET …/members`.
pub async fn members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    let v = viewer!(state, headers);
    let (p, role) = or_page!(state.core.get_project(&v.principal, &project).await);
    let list = or_page!(state.core.list_members(&v.principal, &p.id).await);
    let page = views::Members {
        l: v.layout("Members"),
        project: p.name.clone(),
        tab: "members",
        is_owner: role == Some(Role::Owner),
        members: list
            .into_iter()
            .map(|(m, email)| views::MemberItem {
                user_id: m.user_id,
                email,
                role: m.role.as_str().to_string(),
                since: when(m.created_at),
            })
            .collect(),
    };
    v.render(StatusCode::OK, &page)
}

/// `POST …/members`.
pub async fn add_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let back = format!("/dashboard/projects/{}/members", seg(&project));
    let role = match form.get("role").unwrap_or("member").parse::<Role>() {
        Ok(r) => r,
        Err(e) => return back_with_error(&state, &back, e),
    };
    let email = form.text("email").unwrap_or_default();
    match state
        .core
        .add_member(&v.principal, &project, &email, role)
        .await
    {
        Ok((_, email)) => see_other_with(&state, &back, Flash::Notice(format!("{email} added."))),
        Err(e) => back_with_error(&state, &back, e),
    }
}

/// `POST …/members/{user}/remove`.
pub async fn remove_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project, user)): Path<(String, String)>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let back = format!("/dashboard/projects/{}/members", seg(&project));
    let removed = state
        .core
        .remove_member(&v.principal, &project, &user)
        .await;
    // As through `/v1`, and even when it failed: a failure part-way may follow grants already
    // revoked.
    state.invalidate(Invalidation::GrantStates).await;
    match removed {
        Ok(()) => see_other_with(&state, &back, Flash::Notice("Member removed.".into())),
        Err(e) => back_with_error(&state, &back, e),
    }
}

/// `GET …/usage`.
pub async fn usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Response {
    let v = viewer!(state, headers);
    let (p, role) = or_page!(state.core.get_project(&v.principal, &project).await);
    let u = or_page!(
        state
            .core
            .project_usage(&v.principal, &p.id, None, None, None)
            .await
    );
    let (quota, quota_value) = match &u.quota {
        Some(q) => (
            format!(
                "Quota: {} of {} requests used this month; it resets {}.",
                q.used,
                q.monthly_requests,
                when(q.resets_at.unix_timestamp())
            ),
            q.monthly_requests.to_string(),
        ),
        None => ("No monthly quota.".to_string(), String::new()),
    };
    let page = views::Usage {
        l: v.layout("Usage"),
        project: p.name.clone(),
        tab: "usage",
        days: u.days.into_iter().rev().collect(),
        months: u.months.into_iter().rev().collect(),
        quota,
        quota_value,
        is_owner: role == Some(Role::Owner),
    };
    v.render(StatusCode::OK, &page)
}

/// `POST …/quota`.
pub async fn set_quota(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let back = format!("/dashboard/projects/{}/usage", seg(&project));
    let monthly = match form.text("monthly_requests").map(|m| m.parse::<u64>()) {
        None => None,
        Some(Ok(m)) if m > 0 => Some(m),
        Some(_) => {
            return back_with_error(
                &state,
                &back,
                "Requests per month: a positive number, or empty.",
            );
        }
    };
    match state.core.set_quota(&v.principal, &project, monthly).await {
        Ok(q) => {
            state.invalidate(Invalidation::Quota(q.project_id)).await;
            see_other_with(&state, &back, Flash::Notice("Quota saved.".into()))
        }
        Err(e) => back_with_error(&state, &back, e),
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    cursor: Option<String>,
}

/// `GET …/audit`.
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let v = viewer!(state, headers);
    let page = or_page!(
        state
            .core
            .audit_log(&v.principal, &project, None, q.cursor.as_deref(), Some(100))
            .await
    );
    let view = views::Audit {
        l: v.layout("Audit log"),
        project: project.clone(),
        tab: "audit",
        entries: page
            .entries
            .into_iter()
            .map(|e| views::AuditItem {
                time: when(e.time.unix_timestamp()),
                actor: e.actor_email.unwrap_or(e.actor_id),
                action: e.action,
                target: e.target,
                details: e.details.to_string(),
            })
            .collect(),
        next_cursor: page.next_cursor.map(|c| seg(&c)),
    };
    v.render(StatusCode::OK, &view)
}
