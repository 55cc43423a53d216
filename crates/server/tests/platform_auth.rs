//! Platform auth over HTTP against a real server, on SQLite and PostgreSQL: the docs' flow and
//! every bad input with its status and stable error code.

mod common;

use common::{PASSWORD, TestServer};
use ezforge_client::ClientError;
use ezforge_core::api_key;
use ezforge_proto::{
    CreateApiKeyRequest, CreateServerRequest, Environment, ErrorCode, SignupRequest,
};
use reqwest::StatusCode;
use serde_json::Value;

const DOCS_SCOPES: &[&str] = &["deployments:write", "servers:read"];

/// Asserts an error's HTTP status and code.
fn expect_err<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: ErrorCode,
) -> ClientError {
    let err = result.expect_err("expected an error");
    assert_eq!(
        (err.status(), err.code()),
        (Some(status), Some(code)),
        "{err}"
    );
    err
}

async fn raw_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

ezforge_testkit::backend_tests! {
    /// The documentation's example, end to end: a key with the docs' scopes lists projects.
    async fn the_docs_curl_example_lists_the_keys_project(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "my-first-project").await;
        let key = t.key(&owner, "my-first-project", DOCS_SCOPES, Environment::Live).await;
        assert!(key.starts_with("ezf_live_"));
        let resp = t.raw().get(format!("{}/v1/projects", t.url)).header("Authorization", format!("Bearer {key}")).send().await.unwrap();
        let (status, body) = raw_json(resp).await;
        assert_eq!(status, StatusCode::OK);
        let projects = body["projects"].as_array().unwrap();
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0]["name"], "my-first-project");
        assert!(projects[0].get("role").is_none(), "keys have no role");
    }

    async fn api_key_bad_inputs_each_get_their_own_401_code(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        let key = t.key(&owner, "p1", DOCS_SCOPES, Environment::Live).await;

        // No credentials at all.
        let e = expect_err(t.client().list_projects().await, 401, ErrorCode::Unauthenticated);
        drop(e);
        // Not a bearer header.
        let resp = t.raw().get(format!("{}/v1/projects", t.url)).header("Authorization", format!("Basic {key}")).send().await.unwrap();
        let www = resp.headers().get("www-authenticate").cloned();
        let (status, body) = raw_json(resp).await;
        assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (401, Some("invalid_authorization_header")));
        assert!(www.is_some(), "401 carries WWW-Authenticate");
        // Malformed: our prefix, wrong length.
        expect_err(t.as_key("ezf_live_tooshort").list_projects().await, 401, ErrorCode::ApiKeyMalformed);
        // Wrong prefix.
        let wrong_prefix = key.replacen("ezf_live_", "ezf_prod_", 1);
        expect_err(t.as_key(&wrong_prefix).list_projects().await, 401, ErrorCode::ApiKeyInvalidPrefix);
        // Bad checksum: one character changed.
        let mut typo = key.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        expect_err(t.as_key(&typo).list_projects().await, 401, ErrorCode::ApiKeyChecksumMismatch);
        // Unknown: well-formed with a valid checksum, never issued.
        let unknown = api_key::generate(Environment::Live);
        let resp = t.raw().get(format!("{}/v1/projects", t.url)).bearer_auth(&unknown).send().await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"ezforge\", error=\"invalid_token\"");
        expect_err(t.as_key(&unknown).list_projects().await, 401, ErrorCode::ApiKeyUnknown);
        // The real key works.
        assert_eq!(t.as_key(&key).list_projects().await.unwrap().projects.len(), 1);
    }

    async fn revoked_and_expired_keys_are_refused_on_the_next_request(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        let key = t.key(&owner, "p1", DOCS_SCOPES, Environment::Live).await;
        assert!(t.as_key(&key).list_projects().await.is_ok(), "warms the key cache");
        let keys = t.as_session(&owner).list_keys("p1").await.unwrap().keys;
        let revoked = t.as_session(&owner).revoke_key("p1", &keys[0].id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        expect_err(t.as_key(&key).list_projects().await, 401, ErrorCode::ApiKeyRevoked);

        let expires_at = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let req = CreateApiKeyRequest { name: "short".into(), scopes: vec!["servers:read".into()], environment: Environment::Live, expires_at: Some(expires_at) };
        let short = t.as_session(&owner).create_key("p1", &req).await.unwrap();
        assert!(short.key.expires_at.is_some());
        assert!(t.as_key(&short.secret).list_projects().await.is_ok());
        // The expiry was set from the real time, which has moved on since the test clock's
        // start (seconds, on a loaded machine): well past it.
        t.clock.advance(3_700);
        expect_err(t.as_key(&short.secret).list_projects().await, 401, ErrorCode::ApiKeyExpired);
        // An expiry in the past is refused at creation.
        let past = CreateApiKeyRequest { expires_at: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1)), ..req };
        t.clock.advance(-3_700);
        expect_err(t.as_session(&owner).create_key("p1", &past).await, 400, ErrorCode::InvalidRequest);
    }

    async fn keys_stay_in_their_project_and_environment(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        t.as_session(&owner).create_project("p2").await.unwrap();
        let admin = t.as_session(&owner);
        let live_srv = CreateServerRequest { name: "Live".into(), slug: "live-one".into(), environment: Some(Environment::Live), ..Default::default() };
        let test_srv = CreateServerRequest { name: "Test".into(), slug: "test-one".into(), environment: Some(Environment::Test), ..Default::default() };
        admin.create_server("p1", &live_srv).await.unwrap();
        admin.create_server("p1", &test_srv).await.unwrap();

        let test_key = t.key(&owner, "p1", &["servers:read", "servers:write"], Environment::Test).await;
        assert!(test_key.starts_with("ezf_test_"));
        let tk = t.as_key(&test_key);
        // A key of project p1 on project p2 (existing or not): 403 project_mismatch.
        expect_err(tk.get_project("p2").await, 403, ErrorCode::ProjectMismatch);
        expect_err(tk.list_servers("p2", None).await, 403, ErrorCode::ProjectMismatch);
        expect_err(tk.get_project("no-such-project").await, 403, ErrorCode::ProjectMismatch);
        // Its own environment only.
        let listed = tk.list_servers("p1", None).await.unwrap().servers;
        assert_eq!(listed.iter().map(|s| s.slug.as_str()).collect::<Vec<_>>(), ["test-one"]);
        expect_err(tk.list_servers("p1", Some(Environment::Live)).await, 403, ErrorCode::EnvironmentMismatch);
        expect_err(tk.get_server("p1", "live-one").await, 403, ErrorCode::EnvironmentMismatch);
        expect_err(tk.delete_server("p1", "live-one").await, 403, ErrorCode::EnvironmentMismatch);
        let mut on_live = live_srv.clone();
        on_live.slug = "sneaky".into();
        expect_err(tk.create_server("p1", &on_live).await, 403, ErrorCode::EnvironmentMismatch);
        // And a live key never touches test resources.
        let live_key = t.key(&owner, "p1", &["servers:read"], Environment::Live).await;
        expect_err(t.as_key(&live_key).get_server("p1", "test-one").await, 403, ErrorCode::EnvironmentMismatch);
        assert_eq!(t.as_key(&live_key).get_server("p1", "live-one").await.unwrap().slug, "live-one");
        // A test key creating without naming an environment gets a test server.
        let created = tk.create_server("p1", &CreateServerRequest { name: "T2".into(), slug: "test-two".into(), environment: None, ..Default::default() }).await.unwrap();
        assert_eq!(created.environment, Environment::Test);
    }

    /// A server is created with any of its settings (auth mode, access and tool policy), checked
    /// as an update checks them; one that does not validate creates nothing.
    async fn servers_are_created_with_their_settings(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        let admin = t.as_session(&owner);
        let settings = ezforge_proto::ServerSettings {
            auth_mode: Some("byoa".into()),
            byoa_issuer: Some("https://auth.example.com".into()),
            byoa_jwks_uri: Some("https://auth.example.com/jwks.json".into()),
            byoa_authorization_endpoint: Some("https://auth.example.com/authorize".into()),
            byoa_token_endpoint: Some("https://auth.example.com/token".into()),
            access_policy: Some("allowlist".into()),
            access_allowlist: Some(vec!["@example.com".into()]),
            tool_policy: Some(ezforge_proto::ToolPolicy { allow: vec![], deny: vec!["rm".into()], execute: vec!["shell".into()] }),
        };
        let req = CreateServerRequest { name: "B".into(), slug: "byoa-one".into(), environment: None, settings: settings.clone() };
        let created = admin.create_server("p1", &req).await.unwrap();
        let fetched = admin.server("byoa-one").await.unwrap();
        for s in [&created, &fetched] {
            assert_eq!(s.mcp_url, format!("{}/mcp/byoa-one", t.url));
            assert_eq!(s.auth_mode, "byoa");
            assert_eq!(s.byoa.as_ref().unwrap().issuer, "https://auth.example.com");
            assert_eq!((s.access_policy.as_str(), s.access_allowlist.clone()), ("allowlist", vec!["@example.com".to_string()]));
            assert_eq!(s.tool_policy.execute, ["shell"]);
        }
        let bad = [
            ezforge_proto::ServerSettings { byoa_issuer: None, ..settings.clone() },
            ezforge_proto::ServerSettings { byoa_jwks_uri: Some("ftp://auth.example.com/jwks".into()), ..settings.clone() },
            ezforge_proto::ServerSettings { access_policy: Some("everyone".into()), ..Default::default() },
            ezforge_proto::ServerSettings { access_policy: Some("allowlist".into()), ..Default::default() },
        ];
        for (i, settings) in bad.into_iter().enumerate() {
            let req = CreateServerRequest { name: "X".into(), slug: format!("bad-{i}"), environment: None, settings };
            let err = admin.create_server("p1", &req).await.unwrap_err();
            assert_eq!(err.status(), Some(400), "{i}: {err}");
            assert!(admin.server(&format!("bad-{i}")).await.is_err(), "{i}: nothing created");
        }
    }

    async fn missing_and_unknown_scopes(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        let key = t.key(&owner, "p1", &["servers:read"], Environment::Live).await;
        let req = CreateServerRequest { name: "S".into(), slug: "s1".into(), environment: None, ..Default::default() };
        let err = expect_err(t.as_key(&key).create_server("p1", &req).await, 403, ErrorCode::InsufficientScope);
        let ClientError::Api { body, .. } = err else { unreachable!() };
        assert_eq!(body.error.required_scope.as_deref(), Some("servers:write"));
        assert!(body.error.message.contains("servers:write"));
        // Keys cannot manage keys or create projects.
        expect_err(t.as_key(&key).list_keys("p1").await, 403, ErrorCode::SessionRequired);
        expect_err(t.as_key(&key).create_project("p9").await, 403, ErrorCode::SessionRequired);
        // An unknown scope in a request: 400 listing the valid ones.
        let bad = CreateApiKeyRequest { name: "x".into(), scopes: vec!["servers:read".into(), "servers:admin".into()], environment: Environment::Live, expires_at: None };
        let err = expect_err(t.as_session(&owner).create_key("p1", &bad).await, 400, ErrorCode::InvalidScope);
        let ClientError::Api { body, .. } = err else { unreachable!() };
        assert_eq!(body.error.valid_scopes.unwrap().len(), 7);
        assert!(body.error.message.contains("servers:admin"));
        let none = CreateApiKeyRequest { scopes: vec![], ..bad };
        expect_err(t.as_session(&owner).create_key("p1", &none).await, 400, ErrorCode::InvalidRequest);
    }

    async fn key_listing_has_metadata_and_never_secrets(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        let key = t.key(&owner, "p1", DOCS_SCOPES, Environment::Test).await;
        t.as_key(&key).list_projects().await.unwrap();
        // last_used_at is written off the request path; give it a moment.
        let mut listed = None;
        for _ in 0..50 {
            let keys = t.as_session(&owner).list_keys("p1").await.unwrap().keys;
            if keys[0].last_used_at.is_some() {
                listed = Some(keys);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let keys = listed.expect("last_used_at recorded");
        let k = &keys[0];
        assert_eq!(k.created_by, owner.info.user.id);
        assert_eq!(k.environment, Environment::Test);
        assert_eq!(k.prefix, &key[..13]);
        let raw = t.raw().get(format!("{}/v1/projects/p1/keys", t.url)).header("Cookie", format!("ezf_session={}", owner.token)).send().await.unwrap().text().await.unwrap();
        assert!(!raw.contains(&key), "the listing never contains the secret");
        assert!(!raw.contains(&key[13..]));
    }

    /// Secrets at rest are hashes: neither the API key nor the session token nor the password
    /// appears anywhere in the database.
    async fn secrets_are_stored_only_as_hashes(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("dev@example.com", "p1").await;
        let key = t.key(&owner, "p1", DOCS_SCOPES, Environment::Live).await;
        let invite = t.as_session(&owner).create_invite(None).await.unwrap();
        let store = ezforge_store::SqlStore::open(&t.db.url, 1).await.unwrap();
        let mut dump = String::new();
        for table in ["users", "sessions", "invites", "projects", "project_members", "api_keys", "servers"] {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST({cols} AS TEXT) FROM {table}",
                cols = match table {
                    "users" => "id || email || password_hash",
                    "sessions" => "token_hash || user_id",
                    "invites" => "code_hash",
                    "api_keys" => "secret_hash || display_prefix || name || scopes",
                    _ => "'x'",
                }
            )))
            .fetch_all(store.pool())
            .await
            .unwrap();
            dump.push_str(&rows.join("\n"));
        }
        assert!(dump.contains(&ezforge_core::secret::hash(&key)), "the key's hash is what is stored");
        for secret in [key.as_str(), &key[13..], owner.token.as_str(), PASSWORD, invite.code.as_str()] {
            assert!(!dump.contains(secret), "a secret is stored in clear");
        }
        assert!(dump.contains("$argon2id$"));
    }

    async fn sessions_cookie_csrf_and_sign_out(db) {
        let t = TestServer::start(db).await;
        let resp = t.raw().post(format!("{}/v1/auth/signup", t.url)).json(&serde_json::json!({"email": "dev@example.com", "password": PASSWORD})).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        for attr in ["ezf_session=", "HttpOnly", "SameSite=Lax", "Max-Age=3600", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        assert!(!cookie.contains("Secure"), "plain http: no Secure");
        let token = cookie.split(';').next().unwrap().trim_start_matches("ezf_session=").to_string();
        let body: Value = resp.json().await.unwrap();
        let csrf = body["csrf_token"].as_str().unwrap().to_string();
        assert_eq!(body["user"]["is_admin"], true, "the first user is admin");

        let post = |path: &str| t.raw().post(format!("{}{path}", t.url)).header("Cookie", format!("ezf_session={token}"));
        // A cookie-authenticated POST without the CSRF token, with a wrong one, from another origin.
        let (s, b) = raw_json(post("/v1/projects").json(&serde_json::json!({"name": "p"})).send().await.unwrap()).await;
        assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (403, Some("csrf_token_missing")));
        let (s, b) = raw_json(post("/v1/projects").header("X-CSRF-Token", "nope").json(&serde_json::json!({"name": "p"})).send().await.unwrap()).await;
        assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (403, Some("csrf_token_invalid")));
        let (s, b) = raw_json(post("/v1/projects").header("X-CSRF-Token", &csrf).header("Origin", "https://evil.example").json(&serde_json::json!({"name": "p"})).send().await.unwrap()).await;
        assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (403, Some("cross_origin_request")));
        let (s, _) = raw_json(post("/v1/projects").header("X-CSRF-Token", &csrf).header("Origin", &t.url).json(&serde_json::json!({"name": "p"})).send().await.unwrap()).await;
        assert_eq!(s, StatusCode::CREATED);
        // Reads need no CSRF token.
        let r = t.raw().get(format!("{}/v1/auth/session", t.url)).header("Cookie", format!("ezf_session={token}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        // Sign out ends the session; the cookie is cleared.
        let resp = post("/v1/auth/logout").header("X-CSRF-Token", &csrf).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(resp.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
        let (s, b) = raw_json(t.raw().get(format!("{}/v1/auth/session", t.url)).header("Cookie", format!("ezf_session={token}")).send().await.unwrap()).await;
        assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (401, Some("session_invalid")));

        // Sign out everywhere ends every session of the account.
        let a = t.client().login("dev@example.com", PASSWORD).await.unwrap();
        let b2 = t.client().login("DEV@example.com ", PASSWORD).await.unwrap();
        let ended = t.as_session(&a).logout_everywhere().await.unwrap();
        assert_eq!(ended.sessions_ended, 2);
        expect_err(t.as_session(&b2).session().await, 401, ErrorCode::SessionInvalid);
    }

    async fn an_expired_session_says_so(db) {
        let t = TestServer::start(db).await;
        let s = t.signup("dev@example.com").await;
        assert!(t.as_session(&s).session().await.is_ok());
        t.clock.advance(3600);
        expect_err(t.as_session(&s).session().await, 401, ErrorCode::SessionExpired);
        expect_err(t.as_session(&s).list_projects().await, 401, ErrorCode::SessionExpired);
    }

    async fn bodies_too_large_malformed_or_mistyped(db) {
        let t = TestServer::start_with(db, |c| c.max_body_bytes = 1024).await;
        let s = t.signup("dev@example.com").await;
        let post = || t.raw().post(format!("{}/v1/projects", t.url))
            .header("Cookie", format!("ezf_session={}", s.token))
            .header("X-CSRF-Token", &s.info.csrf_token);
        let big = serde_json::json!({"name": "x".repeat(4096)}).to_string();
        let (st, b) = raw_json(post().header("Content-Type", "application/json").body(big).send().await.unwrap()).await;
        assert_eq!((st.as_u16(), b["error"]["code"].as_str()), (413, Some("payload_too_large")));
        let (st, b) = raw_json(post().header("Content-Type", "application/json").body("{\"name\": ").send().await.unwrap()).await;
        assert_eq!((st.as_u16(), b["error"]["code"].as_str()), (400, Some("invalid_json")));
        let (st, b) = raw_json(post().header("Content-Type", "application/json").body("{\"name\": 42}").send().await.unwrap()).await;
        assert_eq!((st.as_u16(), b["error"]["code"].as_str()), (400, Some("invalid_request")));
        let (st, b) = raw_json(post().header("Content-Type", "text/plain").body("{\"name\": \"p\"}").send().await.unwrap()).await;
        assert_eq!((st.as_u16(), b["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
        let (st, b) = raw_json(t.raw().get(format!("{}/v1/nothing-here", t.url)).send().await.unwrap()).await;
        assert_eq!((st.as_u16(), b["error"]["code"].as_str()), (404, Some("not_found")));
        let (st, b) = raw_json(t.raw().put(format!("{}/v1/projects", t.url)).send().await.unwrap()).await;
        assert_eq!((st.as_u16(), b["error"]["code"].as_str()), (405, Some("method_not_allowed")));
        // Nothing half-written: no project exists after all that.
        assert!(t.as_session(&s).list_projects().await.unwrap().projects.is_empty());
    }

    async fn signup_modes_and_invites(db) {
        let t = TestServer::start_with(db, |c| c.core.signup = ezforge_core::SignupMode::Invite).await;
        let admin = t.signup("admin@example.com").await;
        assert!(admin.info.user.is_admin, "the first user always gets in and is admin");
        let req = |email: &str, code: Option<&str>| SignupRequest { email: email.into(), password: PASSWORD.into(), invite_code: code.map(String::from) };
        expect_err(t.client().signup(&req("b@example.com", None)).await, 403, ErrorCode::InviteRequired);
        let invite = t.as_session(&admin).create_invite(Some("b@example.com")).await.unwrap();
        expect_err(t.client().signup(&req("c@example.com", Some(&invite.code))).await, 403, ErrorCode::InviteInvalid);
        let b = t.client().signup(&req("b@example.com", Some(&invite.code))).await.unwrap();
        assert!(!b.info.user.is_admin);
        expect_err(t.client().signup(&req("d@example.com", Some(&invite.code))).await, 403, ErrorCode::InviteInvalid);
        expect_err(t.as_session(&b).create_invite(None).await, 403, ErrorCode::Forbidden);
        expect_err(t.client().signup(&req("b@example.com", None)).await, 403, ErrorCode::InviteRequired);
        let open_invite = t.as_session(&admin).create_invite(None).await.unwrap();
        expect_err(t.client().signup(&req("B@example.com", Some(&open_invite.code))).await, 409, ErrorCode::Conflict);
        expect_err(t.client().signup(&req("not-an-email", None)).await, 400, ErrorCode::InvalidRequest);
        expect_err(t.client().signup(&SignupRequest { password: "short".into(), ..req("e@example.com", None) }).await, 400, ErrorCode::InvalidRequest);
    }

    async fn closed_signup_admits_only_the_first_user(db) {
        let t = TestServer::start_with(db, |c| c.core.signup = ezforge_core::SignupMode::Closed).await;
        t.signup("admin@example.com").await;
        let req = SignupRequest { email: "b@example.com".into(), password: PASSWORD.into(), invite_code: None };
        expect_err(t.client().signup(&req).await, 403, ErrorCode::SignupClosed);
    }

    async fn brute_force_is_slowed_per_account_and_per_client(db) {
        let t = TestServer::start_with(db, |c| {
            c.core.login_failures_per_account = 3;
            c.core.login_failures_per_client = 5;
        }).await;
        t.signup("a@example.com").await;
        t.signup("b@example.com").await;
        for _ in 0..3 {
            expect_err(t.client().login("a@example.com", "wrong password!").await, 401, ErrorCode::InvalidCredentials);
        }
        // The account is locked, even with the right password.
        let resp = t.raw().post(format!("{}/v1/auth/login", t.url)).json(&serde_json::json!({"email": "a@example.com", "password": PASSWORD})).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 900);
        // Another account still works from here, until the client address runs out too. The
        // address has counted 4 of its 5: the refused attempt counts for it too (an address
        // hammering a locked account spends its own allowance).
        assert!(t.client().login("b@example.com", PASSWORD).await.is_ok());
        expect_err(t.client().login("b@example.com", "wrong password!").await, 401, ErrorCode::InvalidCredentials);
        expect_err(t.client().login("b@example.com", PASSWORD).await, 429, ErrorCode::RateLimited);
        // Parallel guesses cannot slip past the limit: it is counted before the check.
        let t3 = TestServer::start_with(ezforge_testkit::TestDb::sqlite(), |c| {
            c.core.login_failures_per_account = 5;
            c.core.login_failures_per_client = 1000;
        })
        .await;
        t3.signup("c@example.com").await;
        let client = t3.client();
        let guesses = futures::future::join_all((0..40).map(|_| client.login("c@example.com", "wrong password!"))).await;
        let judged = guesses.iter().filter(|r| matches!(r, Err(e) if e.code() == Some(ErrorCode::InvalidCredentials))).count();
        assert_eq!(judged, 5, "exactly the allowance was checked against the password");
        // Unknown accounts count too and answer exactly like a wrong password.
        let t2 = TestServer::start(ezforge_testkit::TestDb::sqlite()).await;
        expect_err(t2.client().login("nobody@example.com", PASSWORD).await, 401, ErrorCode::InvalidCredentials);
    }

    async fn members_act_with_their_role(db) {
        let t = TestServer::start(db).await;
        let owner = t.owner_of("owner@example.com", "p1").await;
        let member = t.signup("member@example.com").await;
        let outsider = t.signup("outsider@example.com").await;
        let added = t.as_session(&owner).add_member("p1", "member@example.com", ezforge_proto::Role::Member).await.unwrap();
        assert_eq!(added.role, ezforge_proto::Role::Member);
        // A member works with servers but does not manage keys or members.
        let m = t.as_session(&member);
        m.create_server("p1", &CreateServerRequest { name: "S".into(), slug: "s1".into(), environment: None, ..Default::default() }).await.unwrap();
        expect_err(m.list_keys("p1").await, 403, ErrorCode::Forbidden);
        expect_err(m.add_member("p1", "outsider@example.com", ezforge_proto::Role::Owner).await, 403, ErrorCode::Forbidden);
        // An outsider does not even learn that the project exists.
        expect_err(t.as_session(&outsider).get_project("p1").await, 404, ErrorCode::NotFound);
        expect_err(t.as_session(&outsider).list_servers("p1", None).await, 404, ErrorCode::NotFound);
        // The last owner cannot leave; members can be removed.
        expect_err(t.as_session(&owner).remove_member("p1", &owner.info.user.id).await, 409, ErrorCode::Conflict);
        t.as_session(&owner).remove_member("p1", &member.info.user.id).await.unwrap();
        expect_err(m.get_project("p1").await, 404, ErrorCode::NotFound);
        assert_eq!(t.as_session(&owner).list_members("p1").await.unwrap().members.len(), 1);
        expect_err(t.as_session(&owner).create_project("p1").await, 409, ErrorCode::Conflict);
        expect_err(t.as_session(&owner).create_project("Not A Name").await, 400, ErrorCode::InvalidRequest);
    }
}

#[tokio::test]
async fn cookies_are_secure_when_served_over_https() {
    let t = TestServer::start_with(ezforge_testkit::TestDb::sqlite(), |c| {
        c.public_url = Some("https://api.example.com".into())
    })
    .await;
    let resp = t
        .raw()
        .post(format!("{}/v1/auth/signup", t.url))
        .json(&serde_json::json!({"email": "dev@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}
