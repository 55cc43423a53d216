//! Managing the authorization server through `/v1`: pre-registered clients, grants, signing
//! key rotation; and the master key protecting signing keys at rest.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestServer;
use common::oauth::{REDIRECT, VERIFIER, http};
use ezforge_client::ClientError;
use ezforge_proto::{CreateOAuthClientRequest, Environment, ErrorCode};
use serde_json::Value;

fn kid_of(jwt: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn code_of(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

ezforge_testkit::backend_tests! {
    async fn owners_register_confidential_clients(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let req = CreateOAuthClientRequest { client_name: "Acme Agent".into(), redirect_uris: vec![REDIRECT.into()], token_endpoint_auth_method: Some("client_secret_post".into()), grant_types: None };
        let member = t.signup("member@example.com").await;
        t.as_session(&owner).add_member("demo-project", "member@example.com", ezforge_proto::Role::Member).await.unwrap();
        let err = t.as_session(&member).create_oauth_client("demo-project", &req).await.unwrap_err();
        assert_eq!(code_of(&err), Some(ErrorCode::Forbidden));
        let bad = CreateOAuthClientRequest { redirect_uris: vec!["http://evil.example/cb".into()], ..req.clone() };
        let err = t.as_session(&owner).create_oauth_client("demo-project", &bad).await.unwrap_err();
        assert_eq!((err.status(), code_of(&err)), (Some(400), Some(ErrorCode::InvalidRequest)));

        let created = t.as_session(&owner).create_oauth_client("demo-project", &req).await.unwrap();
        let secret = created.client_secret.clone().unwrap();
        let id = created.client.client_id.clone();
        let listed = t.as_session(&member).list_oauth_clients("demo-project").await.unwrap();
        assert_eq!(listed.clients.len(), 1);
        assert!(!serde_json::to_string(&listed).unwrap().contains(&secret));

        let code = t.code_for(&owner, &id, &resource, "mcp:read offline_access").await;
        let (status, body) = t.token(&[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER), ("redirect_uri", REDIRECT), ("client_id", &id), ("client_secret", &secret)]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["refresh_token"].is_string());

        // The client is its project's: it may not ask for another project's server, even one
        // whose owner would consent.
        t.as_session(&owner).create_project("other-project").await.unwrap();
        t.as_session(&owner)
            .create_server("other-project", &ezforge_proto::CreateServerRequest { name: "Elsewhere".into(), slug: "elsewhere".into(), ..Default::default() })
            .await
            .unwrap();
        let elsewhere = format!("{}/mcp/elsewhere", t.url);
        let resp = t.get_authorize(&owner, &t.authorize_url(&id, &elsewhere, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 302);
        let q = common::oauth::query_of(resp.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], "invalid_target");
        assert!(!q.contains_key("code"));
        // A dynamically registered client belongs to no project and may ask for either.
        let public = t.public_client().await;
        let resp = t.get_authorize(&owner, &t.authorize_url(&public, &elsewhere, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 200, "the consent page");

        t.as_session(&owner).delete_oauth_client("demo-project", &id).await.unwrap();
        let resp = t.get_authorize(&owner, &t.authorize_url(&id, &resource, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 400, "a deleted client is unknown");
    }

    /// Before b6f4cc3 `/authorize` let a project's client ask for another project's server.
    /// Such grants are ended when the server starts; the client's grants on its own project's
    /// servers are not.
    async fn grants_made_for_another_projects_server_end_at_start(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let req = CreateOAuthClientRequest { client_name: "Acme Agent".into(), redirect_uris: vec![REDIRECT.into()], token_endpoint_auth_method: Some("client_secret_post".into()), grant_types: None };
        let created = t.as_session(&owner).create_oauth_client("demo-project", &req).await.unwrap();
        let (id, secret) = (created.client.client_id.clone(), created.client_secret.clone().unwrap());
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let code = t.code_for(&owner, &id, &resource, "mcp:read offline_access").await;
            let (status, body) = t.token(&[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER), ("redirect_uri", REDIRECT), ("client_id", &id), ("client_secret", &secret)]).await;
            assert_eq!(status, 200, "{body}");
            tokens.push(body);
        }
        t.as_session(&owner).create_project("other-project").await.unwrap();
        let elsewhere = t.as_session(&owner)
            .create_server("other-project", &ezforge_proto::CreateServerRequest { name: "Elsewhere".into(), slug: "elsewhere".into(), ..Default::default() })
            .await
            .unwrap();
        // The first grant becomes what the old /authorize could make: this client, the other
        // project's server.
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(tokens[0]["access_token"].as_str().unwrap().split('.').nth(1).unwrap()).unwrap()).unwrap();
        let store = ezforge_store::SqlStore::open(&t.db.url, 1).await.unwrap();
        let moved = sqlx::query("UPDATE oauth_grants SET server_id = $1, resource = $2 WHERE id = $3")
            .bind(&elsewhere.id)
            .bind(format!("{}/mcp/elsewhere", t.url))
            .bind(claims["gid"].as_str().unwrap())
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(moved.rows_affected(), 1);
        store.close().await;

        let t = t.restart().await;
        let refresh = |n: usize| {
            let rt = tokens[n]["refresh_token"].as_str().unwrap().to_string();
            let (id, secret) = (id.clone(), secret.clone());
            let t = &t;
            async move { t.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt), ("client_id", &id), ("client_secret", &secret)]).await }
        };
        let (status, body) = refresh(0).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        let (status, body) = refresh(1).await;
        assert_eq!(status, 200, "the grant on the client's own project's server lives: {body}");
        let grants = t.as_session(&owner).list_grants("other-project", "elsewhere").await.unwrap();
        assert_eq!(grants.grants.len(), 1);
        assert!(grants.grants[0].revoked_at.is_some(), "{:?}", grants.grants[0]);
    }

    async fn grants_are_listed_and_revoked_through_v1(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let reader = t.key(&owner, "demo-project", &["servers:read"], Environment::Live).await;
        let grants = t.as_key(&reader).list_grants("demo-project", "demo").await.unwrap().grants;
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].client_name.as_deref(), Some("Test Client"));
        assert_eq!(grants[0].scope, "mcp:read offline_access");
        let err = t.as_key(&reader).revoke_grant("demo-project", "demo", &grants[0].id).await.unwrap_err();
        assert_eq!(code_of(&err), Some(ErrorCode::InsufficientScope));
        let writer = t.key(&owner, "demo-project", &["servers:write"], Environment::Live).await;
        let revoked = t.as_key(&writer).revoke_grant("demo-project", "demo", &grants[0].id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        let (status, body) = t.refresh(&client_id, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        assert!(t.server.oauth.verify_access_token(tokens["access_token"].as_str().unwrap(), Some(&resource)).await.is_err());
        let test_key = t.key(&owner, "demo-project", &["servers:read"], Environment::Test).await;
        let err = t.as_key(&test_key).list_grants("demo-project", "demo").await.unwrap_err();
        assert_eq!(code_of(&err), Some(ErrorCode::EnvironmentMismatch));
    }

    /// A new key is published before it signs; the old one stays published while its tokens live.
    async fn signing_key_rotation_has_no_gap(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let token = |code: String| {
            let client_id = client_id.clone();
            let t = &t;
            async move { t.exchange(&client_id, &code).await.1["access_token"].as_str().unwrap().to_string() }
        };
        let before = token(t.code_for(&owner, &client_id, &resource, "mcp:read").await).await;
        let k1 = kid_of(&before);
        let other = t.signup("other@example.com").await;
        assert_eq!(code_of(&t.as_session(&other).rotate_signing_key().await.unwrap_err()), Some(ErrorCode::Forbidden));

        let keys = t.as_session(&owner).rotate_signing_key().await.unwrap().keys;
        assert_eq!(keys.len(), 2);
        let k2 = keys.iter().find(|k| k.kid != k1).unwrap().kid.clone();
        let jwks: Value = http().get(format!("{}/jwks.json", t.url)).send().await.unwrap().json().await.unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "the new key is published at once");
        let during = token(t.code_for(&owner, &client_id, &resource, "mcp:read").await).await;
        assert_eq!(kid_of(&during), k1, "but does not sign yet");

        t.clock.advance(601);
        let after = token(t.code_for(&owner, &client_id, &resource, "mcp:read").await).await;
        assert_eq!(kid_of(&after), k2, "the new key signs after the publication delay");
        assert!(t.server.oauth.verify_access_token(&during, Some(&resource)).await.is_ok(), "tokens of the old key still verify");

        // Once every token the old key signed has expired, it is unpublished.
        t.clock.advance(900 + 301);
        t.server.oauth.housekeeping().await.unwrap();
        let jwks: Value = http().get(format!("{}/jwks.json", t.url)).send().await.unwrap().json().await.unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, vec![k2.as_str()]);
    }
}

/// Signing keys are sealed with the master key: another master key cannot open them, and the
/// server refuses to start rather than mint tokens nobody can verify.
#[tokio::test]
async fn a_different_master_key_is_refused_at_start() {
    let db = ezforge_testkit::TestDb::sqlite();
    let t = TestServer::start(db).await;
    let url = t.db.url.clone();
    let store = ezforge_store::SqlStore::open(&url, 1).await.unwrap();
    let sealed: String = sqlx::query_scalar("SELECT private_key FROM signing_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        !sealed.contains("PRIVATE KEY") && sealed.len() > 100,
        "the private key is stored sealed"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ezforge_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.database_url = Some(url);
    config.master_key = Some(ezforge_core::crypto::MasterKey::generate().unwrap());
    let err = ezforge_server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("master key"), "{err}");
}
