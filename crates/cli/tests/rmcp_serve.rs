//! The official Rust MCP SDK (`rmcp`, feature `auth`) as a third-party OAuth client of the
//! `ezforge serve` binary itself — its command line, configuration and start-up, where
//! crates/interop starts the server library in-process to move its clock: discovery →
//! registration → authorization (the test signs in and consents over HTTP, as a person does in
//! a browser) → code exchange → refresh, and the grace window that `--refresh-grace-secs` sets.

#[path = "../../interop/tests/common/mod.rs"]
mod common;
#[path = "support/served.rs"]
mod served;

use common::{Browser, EMAIL, PASSWORD, claims};
use ezforge_client::{Auth, Client};
use ezforge_proto::{CreateServerRequest, SignupRequest};
use rmcp::transport::auth::{AuthError, AuthorizationRequest, OAuthState};
use serde_json::Value;
use served::serve;
use std::time::Duration;

const REDIRECT: &str = "http://127.0.0.1:33420/callback";
/// Short, so that the test can sleep past it; long enough that a retry sent right after the
/// rotation is inside it on a slow machine (the window is counted in whole seconds).
const GRACE_SECS: u64 = 2;

async fn refresh_token_of(oauth: &OAuthState) -> (String, String, Value) {
    let (client_id, tokens) = oauth.get_credentials().await.expect("rmcp credentials");
    let tokens = serde_json::to_value(tokens.expect("rmcp holds tokens")).expect("JSON");
    let refresh = tokens["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh token in {tokens}"))
        .to_string();
    (client_id, refresh, tokens)
}

ezforge_testkit::backend_tests! {
    async fn rmcp_completes_the_flow_against_ezforge_serve(db) {
        let s = serve(&db, &["--refresh-grace-secs", &GRACE_SECS.to_string()]);
        let session = Client::new(&s.url)
            .signup(&SignupRequest { email: EMAIL.into(), password: PASSWORD.into(), invite_code: None })
            .await
            .expect("sign-up");
        let owner = Client::new(&s.url).with_auth(Auth::Session {
            token: session.token.clone(),
            csrf: session.info.csrf_token.clone(),
        });
        owner.create_project("demo-project").await.expect("project");
        owner
            .create_server("demo-project", &CreateServerRequest { name: "Demo".into(), slug: "demo".into(), ..Default::default() })
            .await
            .expect("server");
        let resource = format!("{}/mcp/demo", s.url);

        // Discovery from the MCP endpoint's challenge, registration, the authorization URL.
        let mut oauth = OAuthState::new(&resource, None).await.expect("rmcp OAuth state");
        oauth
            .start_authorization(
                AuthorizationRequest::new(REDIRECT)
                    .with_client_name("rmcp against ezforge serve")
                    .with_scopes(["mcp:read", "mcp:write"]),
            )
            .await
            .expect("rmcp discovers, registers and builds the authorization URL");
        let auth_url = oauth.get_authorization_url().await.expect("authorization URL");
        assert!(auth_url.starts_with(&format!("{}/authorize?", s.url)), "{auth_url}");

        // The person signs in and consents; rmcp exchanges the code.
        let callback = Browser::new().authorize(&auth_url, REDIRECT).await;
        oauth.handle_callback_url(&callback).await.expect("rmcp exchanges the code");
        let (client_id, first, tokens) = refresh_token_of(&oauth).await;
        let access = claims(tokens["access_token"].as_str().expect("access token"));
        assert_eq!(access["aud"], resource.as_str());
        assert_eq!(access["client_id"], client_id.as_str());
        assert_eq!(access["iss"], s.url.as_str());

        // Two more clients holding the first token, set up before the clock of the grace window
        // starts (rmcp rediscovers the server's metadata when given credentials).
        let (_, first_response) = oauth.get_credentials().await.expect("credentials");
        let first_response = first_response.expect("tokens");
        let mut retry = OAuthState::new(&resource, None).await.expect("rmcp OAuth state");
        retry.set_credentials(&client_id, first_response.clone()).await.expect("credentials");
        let mut replay = OAuthState::new(&resource, None).await.expect("rmcp OAuth state");
        replay.set_credentials(&client_id, first_response).await.expect("credentials");

        // Refresh: rotated.
        oauth.refresh_token().await.expect("rmcp refreshes");
        let (_, successor, _) = refresh_token_of(&oauth).await;
        assert_ne!(successor, first);

        // A retry with the spent token within the configured grace window: the same successor.
        retry.refresh_token().await.expect("a retry within the grace window");
        assert_eq!(refresh_token_of(&retry).await.1, successor);

        // Past it, the spent token is refused (and its family revoked).
        tokio::time::sleep(Duration::from_millis(GRACE_SECS * 1000 + 1100)).await;
        let err = replay.refresh_token().await.expect_err("replay refused");
        assert!(matches!(err, AuthError::TokenRefreshRejected(_)), "{err:?}");
        let err = oauth.refresh_token().await.expect_err("the family is revoked");
        assert!(matches!(err, AuthError::TokenRefreshRejected(_)), "{err:?}");
    }
}
