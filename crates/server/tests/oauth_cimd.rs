//! Client ID Metadata Documents: a client identified by the URL of its metadata, fetched by
//! the server — and never a way to make the server fetch private addresses.

mod common;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::TestServer;
use common::oauth::{REDIRECT, VERIFIER, http, query_of};
use reqwest::header::LOCATION;
use serde_json::{Value, json};

/// Serves `/client.json` (the document built for its own URL), `/wrong.json` (a client_id that
/// is not its URL), `/redirect.json` (a 302) and `/huge.json` (over the size cap) on loopback.
async fn document_host() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({
        "client_id": format!("{base}/client.json"),
        "client_name": "Document Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    });
    let wrong =
        json!({"client_id": "https://elsewhere.example/client.json", "redirect_uris": [REDIRECT]});
    let redirect_to = format!("{base}/client.json");
    let app = Router::new()
        .route("/client.json", get(move || async move { axum::Json(doc) }))
        .route("/wrong.json", get(move || async move { axum::Json(wrong) }))
        .route(
            "/redirect.json",
            get(move || async move {
                (StatusCode::FOUND, [(header::LOCATION, redirect_to)]).into_response()
            }),
        )
        .route("/huge.json", get(|| async { "x".repeat(100 * 1024) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_document_client_completes_the_flow() {
    let t = TestServer::start_with(ezforge_testkit::TestDb::sqlite(), |c| {
        c.oauth.client_documents_allow_private = true
    })
    .await;
    let (owner, resource) = t.with_mcp_server().await;
    let meta: Value = http()
        .get(format!("{}/.well-known/oauth-authorization-server", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    let base = document_host().await;
    let client_id = format!("{base}/client.json");
    let resp = t
        .get_authorize(
            &owner,
            &t.authorize_url(&client_id, &resource, "mcp:read offline_access", &[]),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Document Client") && page.contains(&client_id));
    let allowed = t.consent(&owner, &page, "allow").await;
    let q = query_of(allowed.headers()[LOCATION].to_str().unwrap());
    let (status, tokens) = t.exchange(&client_id, &q["code"]).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["refresh_token"].is_string());
    let (status, _) = t
        .refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    let _ = VERIFIER;

    for (path, why) in [
        ("/wrong.json", "does not equal its URL"),
        ("/redirect.json", "redirects"),
        ("/huge.json", "larger than"),
    ] {
        let resp = t
            .get_authorize(
                &owner,
                &t.authorize_url(&format!("{base}{path}"), &resource, "mcp:read", &[]),
            )
            .await;
        assert_eq!(resp.status(), 400, "{path}");
        assert!(
            resp.headers().get(LOCATION).is_none(),
            "{path} must not redirect"
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains(why), "{path}: {body}");
    }

    // The server's grants name the client from this node's copy of its document...
    let grants = |t: &TestServer| {
        let admin = t.as_session(&owner);
        async move {
            admin
                .list_grants("demo-project", "demo")
                .await
                .unwrap()
                .grants
        }
    };
    let listed = grants(&t).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client_name.as_deref(), Some("Document Client"));
    // ...and a listing never fetches a document: after a restart (no copy, and documents on
    // loopback refused again, as by default) it still answers, with the client's URL alone.
    let t = t.restart().await;
    let listed = grants(&t).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client_id, client_id);
    assert_eq!(listed[0].client_name, None);
    let resp = t
        .get_authorize(
            &owner,
            &t.authorize_url(&client_id, &resource, "mcp:read", &[]),
        )
        .await;
    assert_eq!(
        resp.status(),
        400,
        "the document is refused after the restart"
    );
}

/// By default a client_id URL that points at a private, loopback or link-local address is
/// refused before any connection is made; so is plain http.
#[tokio::test]
async fn documents_on_private_addresses_are_refused() {
    let t = TestServer::start(ezforge_testkit::TestDb::sqlite()).await;
    let (owner, resource) = t.with_mcp_server().await;
    let base = document_host().await;
    let port = base.rsplit(':').next().unwrap().to_string();
    for (client_id, why) in [
        (
            format!("https://localhost:{port}/client.json"),
            "private, loopback or link-local",
        ),
        (
            "https://169.254.169.254/latest/meta-data/client.json".to_string(),
            "private, loopback or link-local",
        ),
        (
            "https://[::1]/client.json".to_string(),
            "private, loopback or link-local",
        ),
        (
            format!("https://127.0.0.1:{port}/client.json"),
            "private, loopback or link-local",
        ),
        (format!("{base}/client.json"), "must use https"),
        ("https://app.example.com".to_string(), "must have a path"),
    ] {
        let resp = t
            .get_authorize(
                &owner,
                &t.authorize_url(&client_id, &resource, "mcp:read", &[]),
            )
            .await;
        assert_eq!(resp.status(), 400, "{client_id}");
        assert!(resp.headers().get(LOCATION).is_none());
        let body = resp.text().await.unwrap();
        assert!(body.contains(why), "{client_id}: {body}");
    }
}
