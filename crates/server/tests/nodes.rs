//! Several nodes on one PostgreSQL database: a change made through one node takes effect on the
//! others at once, not when their cached copies expire (DESIGN.md, "Scale").
//!
//! Every cache here is given an hour to live (registered clients keep their fixed minute, still
//! three times the test's patience), so a node that acted on a change within the test's
//! patience can only have heard of it.

mod common;

use common::TestServer;
use common::oauth::http;
use ezforge_proto::{
    CreateApiKeyRequest, CreateDeploymentRequest, CreateOAuthClientRequest, Environment,
    ServerSettings, UpdateServerRequest,
};
use ezforge_server::ServerConfig;
use ezforge_testkit::TestDb;
use serde_json::{Value, json};
use std::time::Duration;

/// A bound on a hang, not a measure of speed: a change reaches another node in milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn hour_long_caches(config: &mut ServerConfig) {
    config.core.api_key_cache_ttl_secs = 3600;
    config.oauth.grant_cache_secs = 3600;
    config.route_cache_secs = 3600;
}

/// Waits until `probe` returns `want`; panics with `what` after `PATIENCE`.
async fn eventually<F, Fut>(what: &str, want: u16, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {got} after {PATIENCE:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn mcp_status(node: &str, token: Option<&str>) -> u16 {
    let mut req = http()
        .post(format!("{node}/mcp/demo"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("gateway answers").status().as_u16()
}

/// A code exchange by a confidential client for a code that does not exist: 400
/// (`invalid_grant`) once the client has authenticated, 401 (`invalid_client`) if it cannot.
async fn token_request_status(node: &str, client: &str, secret: &str) -> u16 {
    http()
        .post(format!("{node}/token"))
        .basic_auth(client, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "no-such-code"),
            ("redirect_uri", "https://backend.example/callback"),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mJ92K9kGp5aZ4l1RKqxNfLwN1xqlA0ZtYq3vS8cE2",
            ),
        ])
        .send()
        .await
        .expect("token endpoint answers")
        .status()
        .as_u16()
}

/// A new grant of `mcp:read` to `client_id` on `resource`, made through `node`: its access token.
async fn read_token(
    node: &TestServer,
    owner: &ezforge_client::Session,
    client_id: &str,
    resource: &str,
) -> String {
    let code = node.code_for(owner, client_id, resource, "mcp:read").await;
    let (status, tokens) = node.exchange(client_id, &code).await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_on_one_node_take_effect_on_another_at_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = TestServer::start_with(db, hour_long_caches).await;
    // Behind one load balancer, both nodes advertise one origin: A's address stands for it.
    let origin = a.url.clone();
    let (b_server, b) = a
        .another_node(|c| {
            hour_long_caches(c);
            c.public_url = Some(origin);
        })
        .await;
    let (owner, resource) = a.with_mcp_server().await;
    let as_owner = a.as_session(&owner);

    // An API key, used on B (B now remembers it), revoked on A.
    let created = as_owner
        .create_key(
            "demo-project",
            &CreateApiKeyRequest {
                name: "ci".into(),
                scopes: vec!["servers:read".into()],
                environment: Environment::Live,
                expires_at: None,
            },
        )
        .await
        .expect("create key");
    let key_on_b = ezforge_client::Client::new(&b)
        .with_auth(ezforge_client::Auth::ApiKey(created.secret.clone()));
    key_on_b
        .list_servers("demo-project", None)
        .await
        .expect("the key works on B");
    as_owner
        .revoke_key("demo-project", &created.key.id)
        .await
        .expect("revoke on A");
    eventually("a key revoked on A, used on B", 401, || async {
        match key_on_b.list_servers("demo-project", None).await {
            Ok(_) => 200,
            Err(e) => e.status().unwrap_or(0),
        }
    })
    .await;

    // A registered client: its secret authenticates at B's token endpoint (an unknown code is
    // then `invalid_grant`, 400), until A deletes the client (`invalid_client`, 401).
    let created = as_owner
        .create_oauth_client(
            "demo-project",
            &CreateOAuthClientRequest {
                client_name: "Backend".into(),
                redirect_uris: vec!["https://backend.example/callback".into()],
                token_endpoint_auth_method: None,
                grant_types: None,
            },
        )
        .await
        .expect("register a client on A");
    let client = created.client.client_id.clone();
    let secret = created
        .client_secret
        .expect("a confidential client's secret");
    let token_status = || token_request_status(&b, &client, &secret);
    assert_eq!(token_status().await, 400);
    as_owner
        .delete_oauth_client("demo-project", &client)
        .await
        .expect("delete on A");
    eventually(
        "a client deleted on A, authenticating on B",
        401,
        token_status,
    )
    .await;

    // A grant: its access token passes B's gateway (502: the forced deployment's upstream is
    // down, so the token, the scope and the route were all accepted), then is revoked on A.
    as_owner
        .deploy(
            "demo",
            &CreateDeploymentRequest {
                upstream_url: "http://127.0.0.1:9/mcp".into(),
                headers: Default::default(),
                timeout_ms: Some(1000),
                force: true,
            },
        )
        .await
        .expect("forced deployment");
    let client_id = a.public_client().await;
    let access = read_token(&a, &owner, &client_id, &resource).await;
    assert_eq!(mcp_status(&b, Some(&access)).await, 502);
    let grants = as_owner
        .list_grants("demo-project", "demo")
        .await
        .expect("list grants");
    let grant = &grants.grants[0].id;
    as_owner
        .revoke_grant("demo-project", "demo", grant)
        .await
        .expect("revoke on A");
    eventually("a grant revoked on A, its token used on B", 401, || {
        mcp_status(&b, Some(&access))
    })
    .await;

    // Grants revoked in bulk: a new grant's token passes B, then A changes the server's access
    // policy to a list that leaves its user out.
    let access = read_token(&a, &owner, &client_id, &resource).await;
    assert_eq!(mcp_status(&b, Some(&access)).await, 502);
    as_owner
        .update_server(
            "demo-project",
            "demo",
            &UpdateServerRequest {
                name: None,
                settings: ServerSettings {
                    access_policy: Some("allowlist".into()),
                    access_allowlist: Some(vec!["someone@else.example".into()]),
                    ..Default::default()
                },
            },
        )
        .await
        .expect("policy change on A");
    eventually(
        "a grant ended by a policy change on A, its token used on B",
        401,
        || mcp_status(&b, Some(&access)),
    )
    .await;

    // A route: B knows `demo` (401 without a token, not 404); A deletes the server.
    assert_eq!(mcp_status(&b, None).await, 401);
    as_owner
        .delete_server("demo-project", "demo")
        .await
        .expect("delete on A");
    eventually("a server deleted on A, routed on B", 404, || {
        mcp_status(&b, None)
    })
    .await;

    // Signing keys: a rotation on A is published by B's JWKS without waiting for its
    // once-a-minute reload.
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_string())
            .collect()
    };
    let jwks_on_b = || async {
        let resp = http()
            .get(format!("{b}/jwks.json"))
            .send()
            .await
            .expect("jwks");
        kids(resp.json().await.expect("jwks json"))
    };
    let before = jwks_on_b().await;
    let admin = a.as_session(&owner);
    let rotated = admin
        .rotate_signing_key()
        .await
        .expect("rotate on A (first user is admin)");
    let new_kids: Vec<String> = rotated
        .keys
        .iter()
        .map(|k| k.kid.clone())
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(new_kids.len(), 1, "{:?}", rotated.keys);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !jwks_on_b().await.contains(&new_kids[0]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's JWKS lacks the key rotated in on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    b_server.shutdown().await.expect("B stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_every_nodes_requests() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let limits = |c: &mut ServerConfig| {
        c.core.login_failures_per_account = 3;
        c.oauth.register_per_window = 2;
    };
    let a = TestServer::start_with(db, limits).await;
    let (b_server, b) = a.another_node(limits).await;
    a.signup("guessed@example.com").await;
    let on = |node: &str| ezforge_client::Client::new(node);

    // Three wrong passwords spread over both nodes use up the account's three failures: the
    // fourth attempt is refused on either node, even with the right password. Counted per
    // node, B would have seen one failure and let it through.
    for node in [&a.url, &b, &a.url] {
        let e = on(node)
            .login("guessed@example.com", "wrong password!")
            .await
            .expect_err("wrong password");
        assert_eq!(e.status(), Some(401), "{e}");
    }
    for node in [&b, &a.url] {
        let e = on(node)
            .login("guessed@example.com", common::PASSWORD)
            .await
            .expect_err("locked");
        assert_eq!(e.status(), Some(429), "{e}");
    }

    // A success on one node clears the account's failures on every node: two failures on A,
    // a success on B, then three more failures are each judged (401), not refused.
    a.signup("forgetful@example.com").await;
    let attempt = |node: String, password: &'static str| async move {
        match on(&node).login("forgetful@example.com", password).await {
            Ok(_) => 200,
            Err(e) => e.status().unwrap_or(0),
        }
    };
    for _ in 0..2 {
        assert_eq!(attempt(a.url.clone(), "wrong password!").await, 401);
    }
    assert_eq!(attempt(b.clone(), common::PASSWORD).await, 200);
    for node in [&a.url, &b, &a.url] {
        assert_eq!(attempt(node.clone(), "wrong password!").await, 401);
    }
    assert_eq!(attempt(b.clone(), "wrong password!").await, 429);

    // Two registrations from one address, one per node, use up the window.
    let register = |node: &str, n: u32| {
        http()
            .post(format!("{node}/register"))
            .json(&json!({
                "client_name": format!("Client {n}"),
                "redirect_uris": [format!("http://127.0.0.1:{}/callback", 40_000 + n)],
                "token_endpoint_auth_method": "none",
            }))
            .send()
    };
    assert_eq!(register(&a.url, 1).await.expect("register").status(), 201);
    assert_eq!(register(&b, 2).await.expect("register").status(), 201);
    let refused = register(&a.url, 3).await.expect("register");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));

    b_server.shutdown().await.expect("B stops");
}
