//! One server: its MCP URL, authentication, access and tool policies, deployments, connected
//! clients, recent requests and a metrics chart; and the forms that change them.

use super::projects::{or_page, seg, viewer};
use super::views;
use super::{Flash, FormData, Viewer, back_with_error, core_error, see_other_with, when};
use crate::routes::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ezforge_core::invalidation::Invalidation;
use ezforge_core::service::{LogFilter, MetricsWindow};
use ezforge_proto::{
    CreateDeploymentRequest, Decision, ServerSettings, ToolPolicy, UpdateServerRequest,
};

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "—".into())
}

/// `GET /dashboard/servers/{server}`.
pub async fn server(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
) -> Response {
    let v = viewer!(state, headers);
    let s = or_page!(state.core.find_server(&v.principal, &server).await);
    let project = or_page!(state.core.get_project(&v.principal, &s.project_id).await)
        .0
        .name;
    let deployments = or_page!(state.core.deployments(&v.principal, &s.id).await).1;
    let grants = match state.oauth.grants_of_server(&s.id).await {
        Ok(g) => g,
        Err(e) => return core_error(ezforge_core::CoreError::Internal(e.to_string())),
    };
    let mut grant_items = Vec::new();
    for g in grants {
        let client = state
            .oauth
            .known_client_name(&g.client_id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| g.client_id.clone());
        grant_items.push(views::GrantItem {
            status: if g.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            client,
            user: g.user_id,
            scope: g.scope,
            created: when(g.created_at),
            last_used: g.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            id: g.id,
        });
    }
    let filter = LogFilter {
        limit: Some(20),
        ..Default::default()
    };
    let requests = or_page!(state.core.server_logs(&s, &filter).await).0;
    let metrics = or_page!(state.core.server_metrics(&s, MetricsWindow::H1).await);
    let max = metrics.series.iter().map(|p| p.requests).max().unwrap_or(0);
    let bars = metrics
        .series
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let h = if max == 0 {
                0
            } else {
                ((p.requests * 100).div_ceil(max)) as u32
            };
            views::Bar {
                x: i as u32 * 10,
                y: 110 - h,
                h,
                label: format!(
                    "{}: {} requests, {} errors, {} denied",
                    when(p.time.unix_timestamp()),
                    p.requests,
                    p.errors,
                    p.denials
                ),
            }
        })
        .collect();
    let byoa = s.byoa.clone().unwrap_or(ezforge_proto::ByoaSettings {
        issuer: String::new(),
        jwks_uri: String::new(),
        authorization_endpoint: String::new(),
        token_endpoint: String::new(),
    });
    let page = views::Server {
        l: v.layout(&s.name),
        project,
        name: s.name.clone(),
        slug: s.slug.clone(),
        environment: s.environment.as_str().to_string(),
        mcp_url: state.oauth.resource_uri(&s.slug),
        byoa: s.byoa.is_some(),
        byoa_issuer: byoa.issuer,
        byoa_jwks_uri: byoa.jwks_uri,
        byoa_authorization_endpoint: byoa.authorization_endpoint,
        byoa_token_endpoint: byoa.token_endpoint,
        access: s.access_policy.kind(),
        allowlist: s.access_policy.allowlist().join("\n"),
        tool_allow: s.tool_policy.allow.join("\n"),
        tool_deny: s.tool_policy.deny.join("\n"),
        tool_execute: s.tool_policy.execute.join("\n"),
        deployments: deployments
            .into_iter()
            .map(|d| views::DeploymentItem {
                active: s.active_deployment_id.as_deref() == Some(d.id.as_str()),
                created: when(d.created_at),
                upstream: d.upstream_url,
                health: d.health,
                id: d.id,
            })
            .collect(),
        grants: grant_items,
        requests: requests
            .into_iter()
            .map(|r| views::RequestItem {
                time: when(r.at_ms / 1000),
                what: match (&r.method, &r.tool) {
                    (Some(m), Some(t)) => format!("{m} {t}"),
                    (Some(m), None) => m.clone(),
                    (None, _) => r.http_method.clone(),
                },
                decision: match (r.decision, &r.reason) {
                    (Decision::Denied, Some(reason)) => format!("denied: {reason}"),
                    (Decision::Denied, None) => "denied".into(),
                    (Decision::Allowed, _) => "allowed".into(),
                },
                status: r.status,
                latency: format!("{:.1} ms", r.latency_us as f64 / 1000.0),
                subject: r.subject.unwrap_or_default(),
            })
            .collect(),
        m_requests: metrics.totals.requests,
        m_errors: metrics.totals.errors,
        m_denials: metrics.totals.denials,
        m_p50: ms(metrics.totals.p50_ms),
        m_p95: ms(metrics.totals.p95_ms),
        m_p99: ms(metrics.totals.p99_ms),
        m_max: max,
        bars,
    };
    v.render(StatusCode::OK, &page)
}

fn back(server: &str) -> String {
    format!("/dashboard/servers/{}", seg(server))
}

/// Applies an update from one of the server page's forms.
async fn update(
    state: &AppState,
    v: &Viewer,
    server: &str,
    update: UpdateServerRequest,
    done: &str,
) -> Response {
    let s = match state.core.find_server(&v.principal, server).await {
        Ok(s) => s,
        Err(e) => return back_with_error(state, &back(server), e),
    };
    let updated = state
        .core
        .update_server(&v.principal, &s.project_id, &s.id, &update)
        .await;
    // As through `/v1`, even when it failed.
    state.server_updated().await;
    match updated {
        Ok(_) => see_other_with(state, &back(server), Flash::Notice(done.into())),
        Err(e) => back_with_error(state, &back(server), e),
    }
}

/// `POST …/auth`: managed or BYOA.
pub async fn update_auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let mode = form
        .text("auth_mode")
        .unwrap_or_else(|| "ezforge_managed".into());
    let byoa = mode == "byoa";
    let field = |name: &str| if byoa { form.text(name) } else { None };
    let req = UpdateServerRequest::from(ServerSettings {
        byoa_issuer: field("byoa_issuer"),
        byoa_jwks_uri: field("byoa_jwks_uri"),
        byoa_authorization_endpoint: field("byoa_authorization_endpoint"),
        byoa_token_endpoint: field("byoa_token_endpoint"),
        auth_mode: Some(mode),
        ..Default::default()
    });
    update(&state, &v, &server, req, "Authentication saved.").await
}

/// `POST …/access`.
pub async fn update_access(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let policy = form
        .text("access_policy")
        .unwrap_or_else(|| "members".into());
    let allowlist = form.lines("allowlist");
    let req = UpdateServerRequest::from(ServerSettings {
        access_allowlist: (policy == "allowlist").then_some(allowlist),
        access_policy: Some(policy),
        ..Default::default()
    });
    update(&state, &v, &server, req, "Access policy saved.").await
}

/// `POST …/tools`.
pub async fn update_tools(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let req = UpdateServerRequest::from(ServerSettings {
        tool_policy: Some(ToolPolicy {
            allow: form.lines("allow"),
            deny: form.lines("deny"),
            execute: form.lines("execute"),
        }),
        ..Default::default()
    });
    update(&state, &v, &server, req, "Tool policy saved.").await
}

/// `POST …/deploy`: health-checked like `ezforge deploy`.
pub async fn deploy(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let mut header_map = std::collections::BTreeMap::new();
    for (n, line) in form.lines("headers").iter().enumerate() {
        let Some((k, val)) = line.split_once(':') else {
            // Never repeat the line: it is probably a credential.
            return back_with_error(
                &state,
                &back(&server),
                format!(
                    "Header line {} must look like `Name: value`; nothing was deployed.",
                    n + 1
                ),
            );
        };
        header_map.insert(k.trim().to_string(), val.trim().to_string());
    }
    let req = CreateDeploymentRequest {
        upstream_url: form.text("upstream_url").unwrap_or_default(),
        headers: header_map,
        timeout_ms: None,
        force: form.get("force") == Some("true"),
    };
    match crate::routes::deployments::deploy_checked(&state, &v.principal, &server, &req).await {
        Ok(d) => see_other_with(
            &state,
            &back(&server),
            Flash::Notice(format!("Deployed {}: {}", d.id, d.health)),
        ),
        Err(e) => back_with_error(&state, &back(&server), e),
    }
}

/// `POST …/rollback`.
pub async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let to = form.text("to");
    match state
        .core
        .rollback(&v.principal, &server, to.as_deref())
        .await
    {
        Ok((_, d)) => {
            state.invalidate(Invalidation::Routes).await;
            see_other_with(
                &state,
                &back(&server),
                Flash::Notice(format!("Rolled back to {}.", d.id)),
            )
        }
        Err(e) => back_with_error(&state, &back(&server), e),
    }
}

/// `POST …/grants/{grant}/revoke`.
pub async fn revoke_grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((server, grant)): Path<(String, String)>,
    form: FormData,
) -> Response {
    let v = viewer!(state, headers, form);
    let s = match state.core.find_server(&v.principal, &server).await {
        Ok(s) => s,
        Err(e) => return back_with_error(&state, &back(&server), e),
    };
    match crate::routes::oauth_admin::revoke_grant_audited(&state, &v.principal, &s, &grant).await {
        Ok(_) => see_other_with(
            &state,
            &back(&server),
            Flash::Notice("Access revoked: the client's tokens stop working now.".into()),
        ),
        Err(e) => back_with_error(&state, &back(&server), e),
    }
}
