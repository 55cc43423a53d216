//! A typed client for the ezForge `/v1` API, used by the CLI and the tests.

use ezforge_proto::*;
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How requests authenticate.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer ezf_…`.
    ApiKey(String),
    /// The session cookie, plus its CSRF token for state changes.
    Session { token: String, csrf: String },
}

impl std::fmt::Debug for Auth {
    // Never print a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::ApiKey(_) => "Auth::ApiKey(…)",
            Auth::Session { .. } => "Auth::Session(…)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{} ({}, HTTP {status})", .body.error.message, .body.error.code)]
    Api { status: u16, body: ApiErrorBody },
    /// The server could not be reached.
    #[error("cannot reach {url}: {message}")]
    Network { url: String, message: String },
    /// The server answered something this client does not understand.
    #[error("unexpected response from the server (HTTP {status}): {message}")]
    Protocol { status: u16, message: String },
}

impl ClientError {
    /// The stable error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.error.code),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Protocol { status, .. } => Some(*status),
            ClientError::Network { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A signed-in session: the cookie value and what the server said about it.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub info: SessionInfo,
}

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl Client {
    /// `base` is the server's origin, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ezforge-cli/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth: Auth::None,
        }
    }

    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the raw response, authenticated as configured.
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        match &self.auth {
            Auth::None => {}
            Auth::ApiKey(key) => req = req.header(header::AUTHORIZATION, format!("Bearer {key}")),
            Auth::Session { token, csrf } => {
                req = req
                    .header(header::COOKIE, format!("ezf_session={token}"))
                    .header("X-CSRF-Token", csrf);
            }
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.map_err(|e| ClientError::Network {
            url,
            message: error_chain(&e),
        })
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let resp = self.send(method, path, body).await?;
        decode(resp).await
    }

    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<()> {
        let resp = self.send(method, path, body).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(error_of(resp).await)
    }

    // ---- auth ----

    pub async fn signup(&self, req: &SignupRequest) -> Result<Session> {
        let resp = self
            .send(Method::POST, "/v1/auth/signup", Some(req))
            .await?;
        session_of(resp).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Session> {
        let req = LoginRequest {
            email: email.into(),
            password: password.into(),
        };
        let resp = self
            .send(Method::POST, "/v1/auth/login", Some(&req))
            .await?;
        session_of(resp).await
    }

    pub async fn session(&self) -> Result<SessionInfo> {
        self.call(Method::GET, "/v1/auth/session", None::<&()>)
            .await
    }

    pub async fn logout(&self) -> Result<()> {
        self.call_empty(Method::POST, "/v1/auth/logout", None::<&()>)
            .await
    }

    pub async fn logout_everywhere(&self) -> Result<SignOutEverywhereResponse> {
        self.call(Method::POST, "/v1/auth/logout-everywhere", None::<&()>)
            .await
    }

    pub async fn create_invite(&self, email: Option<&str>) -> Result<CreatedInvite> {
        self.call(
            Method::POST,
            "/v1/invites",
            Some(&CreateInviteRequest {
                email: email.map(String::from),
            }),
        )
        .await
    }

    // ---- projects ----

    pub async fn list_projects(&self) -> Result<ProjectList> {
        self.call(Method::GET, "/v1/projects", None::<&()>).await
    }

    pub async fn create_project(&self, name: &str) -> Result<Project> {
        self.call(
            Method::POST,
            "/v1/projects",
            Some(&CreateProjectRequest { name: name.into() }),
        )
        .await
    }

    pub async fn get_project(&self, project: &str) -> Result<Project> {
        self.call(
            Method::GET,
            &format!("/v1/projects/{}", seg(project)),
            None::<&()>,
        )
        .await
    }

    pub async fn list_members(&self, project: &str) -> Result<MemberList> {
        self.call(
            Method::GET,
            &format!("/v1/projects/{}/members", seg(project)),
            None::<&()>,
        )
        .await
    }

    pub async fn add_member(&self, project: &str, email: &str, role: Role) -> Result<Member> {
        let req = AddMemberRequest {
            email: email.into(),
            role,
        };
        self.call(
            Method::POST,
            &format!("/v1/projects/{}/members", seg(project)),
            Some(&req),
        )
        .await
    }

    pub async fn remove_member(&self, project: &str, user_id: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/v1/projects/{}/members/{}", seg(project), seg(user_id)),
            None::<&()>,
        )
        .await
    }

    // ---- API keys ----

    pub async fn create_key(
        &self,
        project: &str,
        req: &CreateApiKeyRequest,
    ) -> Result<CreatedApiKey> {
        self.call(
            Method::POST,
            &format!("/v1/projects/{}/keys", seg(project)),
            Some(req),
        )
        .await
    }

    pub async fn list_keys(&self, project: &str) -> Result<ApiKeyList> {
        self.call(
            Method::GET,
            &format!("/v1/projects/{}/keys", seg(project)),
            None::<&()>,
        )
        .await
    }

    pub async fn revoke_key(&self, project: &str, key_id: &str) -> Result<ApiKey> {
        self.call(
            Method::DELETE,
            &format!("/v1/projects/{}/keys/{}", seg(project), seg(key_id)),
            None::<&()>,
        )
        .await
    }

    // ---- servers ----

    pub async fn list_servers(
        &self,
        project: &str,
        environment: Option<Environment>,
    ) -> Result<ServerList> {
        let query = environment
            .map(|e| format!("?environment={e}"))
            .unwrap_or_default();
        self.call(
            Method::GET,
            &format!("/v1/projects/{}/servers{query}", seg(project)),
            None::<&()>,
        )
        .await
    }

    pub async fn create_server(&self, project: &str, req: &CreateServerRequest) -> Result<Server> {
        self.call(
            Method::POST,
            &format!("/v1/projects/{}/servers", seg(project)),
            Some(req),
        )
        .await
    }

    pub async fn get_server(&self, project: &str, server: &str) -> Result<Server> {
        self.call(
            Method::GET,
            &format!("/v1/projects/{}/servers/{}", seg(project), seg(server)),
            None::<&()>,
        )
        .await
    }

    pub async fn update_server(
        &self,
        project: &str,
        server: &str,
        req: &UpdateServerRequest,
    ) -> Result<Server> {
        self.call(
            Method::PATCH,
            &format!("/v1/projects/{}/servers/{}", seg(project), seg(server)),
            Some(req),
        )
        .await
    }

    pub async fn delete_server(&self, project: &str, server: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/v1/projects/{}/servers/{}", seg(project), seg(server)),
            None::<&()>,
        )
        .await
    }
}

impl Client {
    // ---- servers by slug ----

    pub async fn list_all_servers(&self) -> Result<ServerList> {
        self.call(Method::GET, "/v1/servers", None::<&()>).await
    }

    pub async fn server(&self, server: &str) -> Result<Server> {
        self.call(
            Method::GET,
            &format!("/v1/servers/{}", seg(server)),
            None::<&()>,
        )
        .await
    }

    pub async fn update_server_by_slug(
        &self,
        server: &str,
        req: &UpdateServerRequest,
    ) -> Result<Server> {
        self.call(
            Method::PATCH,
            &format!("/v1/servers/{}", seg(server)),
            Some(req),
        )
        .await
    }

    pub async fn delete_server_by_slug(&self, server: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!("/v1/servers/{}", seg(server)),
            None::<&()>,
        )
        .await
    }

    // ---- deployments ----

    pub async fn deploy(&self, server: &str, req: &CreateDeploymentRequest) -> Result<Deployment> {
        self.call(
            Method::POST,
            &format!("/v1/servers/{}/deployments", seg(server)),
            Some(req),
        )
        .await
    }

    pub async fn deployments(&self, server: &str) -> Result<DeploymentList> {
        self.call(
            Method::GET,
            &format!("/v1/servers/{}/deployments", seg(server)),
            None::<&()>,
        )
        .await
    }

    pub async fn rollback(&self, server: &str, to: Option<&str>) -> Result<Deployment> {
        let req = RollbackRequest {
            to: to.map(String::from),
        };
        self.call(
            Method::POST,
            &format!("/v1/servers/{}/rollback", seg(server)),
            Some(&req),
        )
        .await
    }

    // ---- OAuth management ----

    pub async fn create_oauth_client(
        &self,
        project: &str,
        req: &CreateOAuthClientRequest,
    ) -> Result<CreatedOAuthClient> {
        self.call(
            Method::POST,
            &format!("/v1/projects/{}/oauth-clients", seg(project)),
            Some(req),
        )
        .await
    }

    pub async fn list_oauth_clients(&self, project: &str) -> Result<OAuthClientList> {
        self.call(
            Method::GET,
            &format!("/v1/projects/{}/oauth-clients", seg(project)),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_oauth_client(&self, project: &str, client_id: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &format!(
                "/v1/projects/{}/oauth-clients/{}",
                seg(project),
                seg(client_id)
            ),
            None::<&()>,
        )
        .await
    }

    pub async fn list_grants(&self, project: &str, server: &str) -> Result<GrantList> {
        self.call(
            Method::GET,
            &format!(
                "/v1/projects/{}/servers/{}/grants",
                seg(project),
                seg(server)
            ),
            None::<&()>,
        )
        .await
    }

    pub async fn revoke_grant(&self, project: &str, server: &str, grant_id: &str) -> Result<Grant> {
        let path = format!(
            "/v1/projects/{}/servers/{}/grants/{}",
            seg(project),
            seg(server),
            seg(grant_id)
        );
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    // ---- telemetry ----

    /// One page of a server's request log; `params` are the query pairs (`since`, `tool`, …).
    pub async fn server_logs(
        &self,
        server: &str,
        params: &[(&str, Option<String>)],
    ) -> Result<RequestLogPage> {
        let path = format!("/v1/servers/{}/logs{}", seg(server), query(params));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// The log followed: a `text/event-stream` response to read events from.
    pub async fn follow_server_logs(
        &self,
        server: &str,
        params: &[(&str, Option<String>)],
    ) -> Result<reqwest::Response> {
        let mut params = params.to_vec();
        params.push(("follow", Some("true".into())));
        let path = format!("/v1/servers/{}/logs{}", seg(server), query(&params));
        let resp = self.send(Method::GET, &path, None::<&()>).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_of(resp).await)
        }
    }

    pub async fn server_metrics(
        &self,
        server: &str,
        window: Option<&str>,
    ) -> Result<ServerMetrics> {
        let path = format!(
            "/v1/servers/{}/metrics{}",
            seg(server),
            query(&[("window", window.map(String::from))])
        );
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn project_usage(
        &self,
        project: &str,
        params: &[(&str, Option<String>)],
    ) -> Result<ProjectUsage> {
        let path = format!("/v1/projects/{}/usage{}", seg(project), query(params));
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn set_quota(&self, project: &str, monthly_requests: Option<u64>) -> Result<Quota> {
        let req = SetQuotaRequest { monthly_requests };
        self.call(
            Method::PUT,
            &format!("/v1/projects/{}/quota", seg(project)),
            Some(&req),
        )
        .await
    }

    pub async fn audit(
        &self,
        project: &str,
        params: &[(&str, Option<String>)],
    ) -> Result<AuditPage> {
        let path = format!("/v1/projects/{}/audit{}", seg(project), query(params));
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn signing_keys(&self) -> Result<SigningKeyList> {
        self.call(Method::GET, "/v1/admin/signing-keys", None::<&()>)
            .await
    }

    pub async fn rotate_signing_key(&self) -> Result<SigningKeyList> {
        self.call(Method::POST, "/v1/admin/signing-keys/rotate", None::<&()>)
            .await
    }
}

/// `?k=v&…` of the pairs that have a value, percent-encoded; empty when none has.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    if !status.is_success() {
        return Err(error_of(resp).await);
    }
    let bytes = resp.bytes().await.map_err(|e| ClientError::Protocol {
        status: status.as_u16(),
        message: error_chain(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
        status: status.as_u16(),
        message: e.to_string(),
    })
}

/// Turns an error response into `ClientError::Api`, or `Protocol` when it has no JSON error body.
pub async fn error_of(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ApiErrorBody>(&bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            body,
        },
        Err(_) => ClientError::Protocol {
            status: status.as_u16(),
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        },
    }
}

async fn session_of(resp: reqwest::Response) -> Result<Session> {
    let status = resp.status();
    let token = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.trim().strip_prefix("ezf_session="))
        .find(|v| !v.is_empty())
        .map(String::from);
    let info: SessionInfo = decode(resp).await?;
    let token = token.ok_or(ClientError::Protocol {
        status: status.as_u16(),
        message: "the server set no session cookie".into(),
    })?;
    if status != StatusCode::OK && status != StatusCode::CREATED {
        return Err(ClientError::Protocol {
            status: status.as_u16(),
            message: "unexpected status".into(),
        });
    }
    Ok(Session { token, info })
}
