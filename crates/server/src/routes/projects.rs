//! Projects and members.

use super::AppState;
use crate::auth::{Caller, need};
use crate::error::ApiResult;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ezforge_core::clock::to_datetime;
use ezforge_core::invalidation::Invalidation;
use ezforge_proto::{
    AddMemberRequest, ApiErrorBody, CreateProjectRequest, Member, MemberList, Project, ProjectList,
};

/// List projects.
///
/// A signed-in user sees the projects they belong to, with their role; an API key sees its own
/// project. Any valid API key may call this, whatever its scopes.
#[utoipa::path(get, path = "/v1/projects", tag = "projects",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = ProjectList), (status = 401, body = ApiErrorBody)))]
pub async fn list_projects(
    State(state): State<AppState>,
    caller: Caller<need::Authenticated>,
) -> ApiResult<Json<ProjectList>> {
    let projects = state.core.list_projects(&caller.principal).await?;
    Ok(Json(ProjectList {
        projects: projects
            .into_iter()
            .map(|(p, role)| p.to_api(role))
            .collect(),
    }))
}

/// Create a project; you become its owner.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = CreateProjectRequest,
    security(("session" = [])),
    responses((status = 201, body = Project), (status = 400, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    ApiJson(req): ApiJson<CreateProjectRequest>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let p = state
        .core
        .create_project(&caller.principal, &req.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(p.to_api(Some(ezforge_proto::Role::Owner))),
    ))
}

/// Get a project by id or name.
#[utoipa::path(get, path = "/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, body = Project), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn get_project(
    State(state): State<AppState>,
    caller: Caller<need::Authenticated>,
    Path(project): Path<String>,
) -> ApiResult<Json<Project>> {
    let (p, role) = state.core.get_project(&caller.principal, &project).await?;
    Ok(Json(p.to_api(role)))
}

fn member(m: ezforge_core::model::MemberRow, email: String) -> Member {
    Member {
        user_id: m.user_id,
        email,
        role: m.role,
        added_at: to_datetime(m.created_at),
    }
}

/// List a project's members.
#[utoipa::path(get, path = "/v1/projects/{project}/members", tag = "projects",
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 200, body = MemberList), (status = 404, body = ApiErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
) -> ApiResult<Json<MemberList>> {
    let members = state.core.list_members(&caller.principal, &project).await?;
    Ok(Json(MemberList {
        members: members.into_iter().map(|(m, e)| member(m, e)).collect(),
    }))
}

/// Add an existing user to a project (owners only).
#[utoipa::path(post, path = "/v1/projects/{project}/members", tag = "projects", request_body = AddMemberRequest,
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 201, body = Member), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    let (m, email) = state
        .core
        .add_member(&caller.principal, &project, &req.email, req.role)
        .await?;
    Ok((StatusCode::CREATED, Json(member(m, email))))
}

/// Remove a member (owners only; the last owner stays).
#[utoipa::path(delete, path = "/v1/projects/{project}/members/{user_id}", tag = "projects",
    params(("project" = String, Path, description = "Project id or name"), ("user_id" = String, Path)),
    security(("session" = [])),
    responses((status = 204), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path((project, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let removed = state
        .core
        .remove_member(&caller.principal, &project, &user_id)
        .await;
    // Even when it failed: a failure part-way may follow grants already revoked.
    state.invalidate(Invalidation::GrantStates).await;
    removed?;
    Ok(StatusCode::NO_CONTENT)
}
