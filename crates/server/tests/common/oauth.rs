//! Driving the authorization flow over HTTP the way a browser and an MCP client would.

use super::TestServer;
use ezforge_client::Session;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const REDIRECT: &str = "http://127.0.0.1:33418/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9kGp5aZ4l1RKqxNfLwN1xqlA0ZtYq3vS8cE2";

pub fn challenge(verifier: &str) -> String {
    ezforge_core::oauth::token::s256(verifier)
}

/// A client that does not follow redirects, so each hop can be checked.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

/// The value of the hidden input `name` in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x27;", "'")
}

impl TestServer {
    /// Creates a project `demo-project` with a server `demo`; returns the owner and its resource URI.
    pub async fn with_mcp_server(&self) -> (Session, String) {
        let owner = self.owner_of("owner@example.com", "demo-project").await;
        self.as_session(&owner)
            .create_server(
                "demo-project",
                &ezforge_proto::CreateServerRequest {
                    name: "Demo".into(),
                    slug: "demo".into(),
                    environment: None,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        (owner, format!("{}/mcp/demo", self.url))
    }

    /// A second server, `other`, in `demo-project` (made by `with_mcp_server`); its resource URI.
    pub async fn with_other_server(&self, owner: &Session) -> String {
        self.as_session(owner)
            .create_server(
                "demo-project",
                &ezforge_proto::CreateServerRequest {
                    name: "Other".into(),
                    slug: "other".into(),
                    environment: None,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        format!("{}/mcp/other", self.url)
    }

    /// `with_mcp_server`, deployed to `upstream_url` with an upstream timeout of `timeout_ms`.
    pub async fn with_deployed_mcp_server(
        &self,
        upstream_url: String,
        timeout_ms: i64,
    ) -> (Session, String) {
        let (owner, resource) = self.with_mcp_server().await;
        self.as_session(&owner)
            .deploy(
                "demo",
                &ezforge_proto::CreateDeploymentRequest {
                    upstream_url,
                    headers: Default::default(),
                    timeout_ms: Some(timeout_ms),
                    force: false,
                },
            )
            .await
            .unwrap();
        (owner, resource)
    }

    pub async fn register_client(&self, body: Value) -> (u16, Value) {
        let resp = http()
            .post(format!("{}/register", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// A public client registered for `REDIRECT` with the refresh grant.
    pub async fn public_client(&self) -> String {
        let (status, body) = self
            .register_client(json!({
                "client_name": "Test Client",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .await;
        assert_eq!(status, 201, "{body}");
        body["client_id"].as_str().unwrap().to_string()
    }

    pub fn authorize_url(
        &self,
        client_id: &str,
        resource: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let challenge = challenge(VERIFIER);
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "xyz-state"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", resource),
        ];
        pairs.retain(|(k, _)| !extra.iter().any(|(ek, _)| ek == k));
        pairs.extend_from_slice(extra);
        pairs.retain(|(_, v)| !v.is_empty());
        format!(
            "{}/authorize?{}",
            self.url,
            serde_urlencoded::to_string(&pairs).unwrap()
        )
    }

    /// `GET /authorize` as the signed-in `session`.
    pub async fn get_authorize(&self, session: &Session, url: &str) -> reqwest::Response {
        http()
            .get(url)
            .header(COOKIE, format!("ezf_session={}", session.token))
            .send()
            .await
            .unwrap()
    }

    /// Answers a consent page.
    pub async fn consent(
        &self,
        session: &Session,
        page: &str,
        decision: &str,
    ) -> reqwest::Response {
        let form = [
            ("request", hidden(page, "request")),
            ("csrf", hidden(page, "csrf")),
            ("decision", decision.to_string()),
        ];
        http()
            .post(format!("{}/authorize", self.url))
            .header(COOKIE, format!("ezf_session={}", session.token))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Authorize (consenting if asked) and return the redirect's query.
    pub async fn authorize(&self, session: &Session, url: &str) -> HashMap<String, String> {
        let resp = self.get_authorize(session, url).await;
        let resp = if resp.status() == 200 {
            let page = resp.text().await.unwrap();
            self.consent(session, &page, "allow").await
        } else {
            resp
        };
        assert!(
            resp.status().is_redirection(),
            "expected a redirect, got {}",
            resp.status()
        );
        let location = resp.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(location.starts_with(REDIRECT), "{location}");
        query_of(&location)
    }

    pub async fn code_for(
        &self,
        session: &Session,
        client_id: &str,
        resource: &str,
        scope: &str,
    ) -> String {
        let q = self
            .authorize(
                session,
                &self.authorize_url(client_id, resource, scope, &[]),
            )
            .await;
        q.get("code")
            .unwrap_or_else(|| panic!("no code: {q:?}"))
            .clone()
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = http()
            .post(format!("{}/token", self.url))
            .form(form)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    pub async fn exchange(&self, client_id: &str, code: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
        ])
        .await
    }

    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
        .await
    }
}
