//! The dashboard over HTTP, as a browser would use it without JavaScript: forms, cookies, CSRF,
//! security headers, escaping. (The end-to-end walk in a real browser is e2e/test/dashboard.)

mod common;

use common::{PASSWORD, TestServer};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use std::collections::HashMap;

/// A cookie jar and a client that does not follow redirects, so each step can be checked.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(t: &TestServer) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: t.url.clone(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=').unwrap();
            if val.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
    }

    async fn get(&mut self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&resp);
        let (s, h) = (resp.status().as_u16(), resp.headers().clone());
        (s, h, resp.text().await.unwrap())
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&resp);
        let (s, h) = (resp.status().as_u16(), resp.headers().clone());
        (s, h, resp.text().await.unwrap())
    }
}

fn csrf_of(html: &str) -> String {
    common::oauth::hidden(html, "csrf")
}

async fn signed_up(t: &TestServer, email: &str) -> (Browser, String) {
    let mut b = Browser::new(t);
    let (status, _, page) = b.get("/dashboard/signup").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    let (status, h, _) = b
        .post(
            "/dashboard/signup",
            &[("csrf", &csrf), ("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(h[LOCATION], "/dashboard");
    let (_, _, home) = b.get("/dashboard").await;
    let csrf = csrf_of(&home);
    (b, csrf)
}

#[tokio::test]
async fn pages_are_protected_and_forms_need_their_token() {
    let t = TestServer::start(ezforge_testkit::TestDb::sqlite()).await;
    // Signed out: every page sends you to sign in, which comes back to the dashboard.
    let mut anon = Browser::new(&t);
    let (status, h, _) = anon.get("/dashboard/projects/x/keys").await;
    assert_eq!(
        (status, h[LOCATION].to_str().unwrap()),
        (303, "/dashboard/login")
    );
    let (status, h, _) = anon.get("/dashboard/login").await;
    assert_eq!(
        (status, h[LOCATION].to_str().unwrap()),
        (303, "/login?next=/dashboard")
    );

    // The sign-up form needs its own cookie-bound token.
    let (status, _, _) = anon
        .post(
            "/dashboard/signup",
            &[
                ("csrf", "forged"),
                ("email", "x@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 403);

    let (mut b, csrf) = signed_up(&t, "owner@example.com").await;
    let session = b
        .cookies
        .get("ezf_session")
        .cloned()
        .expect("a session cookie");
    assert!(!session.is_empty());
    let (status, h, page) = b.get("/dashboard").await;
    assert_eq!(status, 200);
    let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(page.contains("Sign out everywhere"));

    // A form post without the token, with a wrong one, or from another origin: refused.
    let (status, _, _) = b.post("/dashboard/projects", &[("name", "p1")]).await;
    assert_eq!(status, 403);
    let (status, _, _) = b
        .post("/dashboard/projects", &[("csrf", "nope"), ("name", "p1")])
        .await;
    assert_eq!(status, 403);
    let resp = b
        .http
        .post(format!("{}/dashboard/projects", t.url))
        .header(COOKIE, b.cookie_header())
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str()), ("name", "p1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        t.as_session(
            &t.client()
                .login("owner@example.com", PASSWORD)
                .await
                .unwrap()
        )
        .list_projects()
        .await
        .unwrap()
        .projects
        .is_empty()
    );

    // With it: created, and a one-time notice.
    let (status, h, _) = b
        .post("/dashboard/projects", &[("csrf", &csrf), ("name", "p1")])
        .await;
    assert_eq!(
        (status, h[LOCATION].to_str().unwrap()),
        (303, "/dashboard/projects/p1")
    );
    let (_, h, page) = b.get("/dashboard/projects/p1").await;
    assert!(page.contains("Project p1 created."), "{page}");
    assert!(
        h.get_all(SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("ezf_flash=;")),
        "the notice is forgotten"
    );
    let (_, _, page) = b.get("/dashboard/projects/p1").await;
    assert!(!page.contains("Project p1 created."));

    // Sign out everywhere ends the session.
    let (status, _, _) = b
        .post("/dashboard/logout-everywhere", &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 303);
    b.cookies.insert("ezf_session".into(), session);
    let (status, h, _) = b.get("/dashboard").await;
    assert_eq!(
        (status, h[LOCATION].to_str().unwrap()),
        (303, "/dashboard/login")
    );
}

#[tokio::test]
async fn keys_are_shown_once_and_pages_escape_what_users_typed() {
    let t = TestServer::start(ezforge_testkit::TestDb::sqlite()).await;
    let (mut b, csrf) = signed_up(&t, "owner@example.com").await;
    b.post("/dashboard/projects", &[("csrf", &csrf), ("name", "p1")])
        .await;

    let (_, _, form) = b.get("/dashboard/projects/p1/keys").await;
    let nonce = common::oauth::hidden(&form, "nonce");
    let create = [
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("name", "ci"),
        ("environment", "live"),
        ("scopes", "servers:read"),
        ("scopes", "logs:read"),
    ];
    let (status, _, page) = b.post("/dashboard/projects/p1/keys", &create).await;
    assert_eq!(status, 200);
    let start =
        page.find("id=\"new-key-secret\">").expect("the secret") + "id=\"new-key-secret\">".len();
    let secret = &page[start..start + page[start..].find('<').unwrap()];
    assert!(secret.starts_with("ezf_live_"), "{secret}");
    assert!(page.contains("will not be shown again"));
    let me = t.as_key(secret).list_projects().await.unwrap();
    assert_eq!(me.projects[0].name, "p1");
    let listed = t.as_key(secret).list_all_servers().await.unwrap();
    assert!(listed.servers.is_empty());
    // A reload re-posts the form: no second key.
    let (status, _, _) = b.post("/dashboard/projects/p1/keys", &create).await;
    assert_eq!(status, 303);
    let owner = t.as_session(
        &t.client()
            .login("owner@example.com", PASSWORD)
            .await
            .unwrap(),
    );
    assert_eq!(
        owner.list_keys("p1").await.unwrap().keys.len(),
        1,
        "a reload does not create a second key"
    );
    // A deploy header line without a colon is refused without being repeated anywhere.
    b.post(
        "/dashboard/projects/p1/servers",
        &[
            ("csrf", &csrf),
            ("name", "H"),
            ("slug", "hdr"),
            ("environment", "live"),
        ],
    )
    .await;
    let (status, h, _) = b
        .post(
            "/dashboard/servers/hdr/deploy",
            &[
                ("csrf", &csrf),
                ("upstream_url", "http://127.0.0.1:9/mcp"),
                ("headers", "Authorization Bearer supersecret"),
                ("force", "true"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let set: Vec<String> = h
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(set.iter().any(|c| c.starts_with("ezf_flash=")), "{set:?}");
    assert!(set.iter().all(|c| !c.contains("supersecret")), "{set:?}");
    // Unknown dashboard paths are HTML 404s with the dashboard's headers.
    let (status, h, _) = b.get("/dashboard/nope/nothing").await;
    assert_eq!(status, 404);
    assert!(
        h[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let (_, _, again) = b.get("/dashboard/projects/p1/keys").await;
    assert!(!again.contains(secret), "the secret is never shown again");
    assert!(again.contains("servers:read, logs:read"));

    // A server whose name is markup is shown as text.
    let (status, h, _) = b
        .post(
            "/dashboard/projects/p1/servers",
            &[
                ("csrf", &csrf),
                ("name", "<script>alert(1)</script>"),
                ("slug", "demo"),
                ("environment", "live"),
            ],
        )
        .await;
    assert_eq!(
        (status, h[LOCATION].to_str().unwrap()),
        (303, "/dashboard/servers/demo")
    );
    let (status, _, page) = b.get("/dashboard/servers/demo").await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script>alert(1)</script>"));
    assert!(
        page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
        "{page}"
    );
    assert!(page.contains(&format!("<code id=\"mcp-url\">{}/mcp/demo</code>", t.url)));

    // Another user's project is not found, not forbidden: names do not leak.
    let (mut other, _) = signed_up(&t, "other@example.com").await;
    let (status, _, _) = other.get("/dashboard/projects/p1/keys").await;
    assert_eq!(status, 404);
    let (status, _, _) = other.get("/dashboard/servers/demo").await;
    assert_eq!(status, 404);
}

/// Removing a member on the dashboard ends the grants their membership allowed at once, as
/// through `/v1`: not after the grant state's time in memory.
#[tokio::test]
async fn removing_a_member_on_the_dashboard_ends_their_grants_at_once() {
    let t = TestServer::start(ezforge_testkit::TestDb::sqlite()).await;
    let (mut b, csrf) = signed_up(&t, "owner@example.com").await;
    let owner = t
        .client()
        .login("owner@example.com", PASSWORD)
        .await
        .unwrap();
    let api = t.as_session(&owner);
    api.create_project("demo-project").await.unwrap();
    let server = ezforge_proto::CreateServerRequest {
        name: "Demo".into(),
        slug: "demo".into(),
        environment: None,
        ..Default::default()
    };
    api.create_server("demo-project", &server).await.unwrap();
    let resource = format!("{}/mcp/demo", t.url);
    let bob = t.signup("bob@example.com").await;
    api.add_member(
        "demo-project",
        "bob@example.com",
        ezforge_proto::Role::Member,
    )
    .await
    .unwrap();
    let client_id = t.public_client().await;
    let code = t.code_for(&bob, &client_id, &resource, "mcp:read").await;
    let (_, tokens) = t.exchange(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap();
    // Checked once, so that the grant's state is in memory.
    assert!(
        t.server
            .oauth
            .verify_access_token(access, Some(&resource))
            .await
            .is_ok()
    );

    let path = format!(
        "/dashboard/projects/demo-project/members/{}/remove",
        bob.info.user.id
    );
    let (status, _, _) = b.post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    assert!(
        t.server
            .oauth
            .verify_access_token(access, Some(&resource))
            .await
            .is_err(),
        "the removed member's token still works"
    );
}
