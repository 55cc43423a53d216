//! The authorization server end to end over HTTP, on SQLite and PostgreSQL: discovery,
//! registration, sign-in, consent, code, token, refresh; and each invariant of DESIGN.md as its
//! own test, written as the attack.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::oauth::{REDIRECT, VERIFIER, challenge, hidden, http, query_of};
use common::{PASSWORD, TestServer};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

fn claims(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    let dec =
        |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (dec(parts[0]), dec(parts[1]))
}

ezforge_testkit::backend_tests! {
    async fn metadata_documents(db) {
        let t = TestServer::start(db).await;
        let (_, resource) = t.with_mcp_server().await;
        for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
            let m: Value = http().get(format!("{}{path}", t.url)).send().await.unwrap().json().await.unwrap();
            assert_eq!(m["issuer"], t.url);
            assert_eq!(m["response_types_supported"], json!(["code"]));
            assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
            assert_eq!(m["scopes_supported"], json!(["mcp:read", "mcp:write", "mcp:execute", "offline_access"]));
            assert_eq!(m["token_endpoint_auth_methods_supported"], json!(["none", "client_secret_basic", "client_secret_post"]));
            assert_eq!(m["authorization_response_iss_parameter_supported"], true);
            assert_eq!(m["client_id_metadata_document_supported"], true, "{path}");
            assert_eq!(m["grant_types_supported"], json!(["authorization_code", "refresh_token"]), "{path}");
            for ep in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint", "introspection_endpoint", "jwks_uri"] {
                assert!(m[ep].as_str().unwrap().starts_with(&t.url), "{ep}");
            }
        }
        // Byte for byte: the documentation's fields in its order.
        let prm = http().get(format!("{}/.well-known/oauth-protected-resource/mcp/demo", t.url)).send().await.unwrap().text().await.unwrap();
        assert_eq!(prm, format!(r#"{{"resource":"{resource}","authorization_servers":["{}"],"scopes_supported":["mcp:read","mcp:write","mcp:execute","offline_access"],"bearer_methods_supported":["header"]}}"#, t.url));
        let missing = http().get(format!("{}/.well-known/oauth-protected-resource/mcp/nope", t.url)).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let jwks: Value = http().get(format!("{}/jwks.json", t.url)).send().await.unwrap().json().await.unwrap();
        let key = &jwks["keys"][0];
        assert_eq!((key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()), (Some("EC"), Some("P-256"), Some("ES256")));
        assert!(key.get("d").is_none(), "no private material in the JWKS");
    }

    /// The whole flow: registration, sign-in page, consent page, code, token, refresh.
    async fn the_whole_flow_with_sign_in_and_consent(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let url = t.authorize_url(&client_id, &resource, "mcp:read mcp:write offline_access", &[]);

        // Not signed in: the sign-in page, then back.
        let resp = http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        let login = resp.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(login.starts_with("/login?next=%2Fauthorize%3F"), "{login}");
        let page = http().get(format!("{}{login}", t.url)).send().await.unwrap();
        let csrf_cookie = page.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
        let html = page.text().await.unwrap();
        assert!(html.contains("Sign in to ezForge"));
        let form = [("email", "owner@example.com".to_string()), ("password", PASSWORD.into()), ("next", hidden(&html, "next")), ("csrf", hidden(&html, "csrf"))];
        let no_cookie = http().post(format!("{}/login", t.url)).form(&form).send().await.unwrap();
        assert_eq!(no_cookie.status(), 403, "the sign-in form is CSRF-protected");
        let signed = http().post(format!("{}/login", t.url)).header(COOKIE, &csrf_cookie).form(&form).send().await.unwrap();
        assert_eq!(signed.status(), 303);
        let back = signed.headers()[LOCATION].to_str().unwrap().to_string();
        assert_eq!(format!("{}{back}", t.url), url);
        let session_cookie = signed.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
        assert!(session_cookie.starts_with("ezf_session="));

        // The consent page names the client, where it redirects, the server and each scope.
        let resp = http().get(&url).header(COOKIE, &session_cookie).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("frame-ancestors 'none'"));
        // Under `no-referrer` browsers post the consent form with `Origin: null`, which the
        // origin check refuses: the page must not use it.
        assert_eq!(resp.headers()["referrer-policy"], "same-origin");
        let page = resp.text().await.unwrap();
        for text in ["Test Client", "127.0.0.1:33418", "Demo", &resource, "Call tools that modify state", "refresh tokens"] {
            assert!(page.contains(text), "consent page lacks {text}");
        }
        let session = ezforge_client::Session { token: session_cookie.trim_start_matches("ezf_session=").into(), info: owner.info.clone() };
        let denied = t.consent(&session, &page, "deny").await;
        let q = query_of(denied.headers()[LOCATION].to_str().unwrap());
        assert_eq!((q["error"].as_str(), q["state"].as_str(), q["iss"].as_str()), ("access_denied", "xyz-state", t.url.as_str()));

        let allowed = t.consent(&session, &page, "allow").await;
        assert_eq!(allowed.status(), 303);
        let q = query_of(allowed.headers()[LOCATION].to_str().unwrap());
        assert_eq!(q["state"], "xyz-state");
        assert_eq!(q["iss"], t.url, "RFC 9207 iss");
        let (status, tokens) = t.exchange(&client_id, &q["code"]).await;
        assert_eq!(status, 200, "{tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 900);
        assert_eq!(tokens["scope"], "mcp:read mcp:write offline_access");
        let (header, c) = claims(tokens["access_token"].as_str().unwrap());
        assert_eq!((header["typ"].as_str(), header["alg"].as_str()), (Some("at+jwt"), Some("ES256")));
        assert_eq!(c["iss"], t.url);
        assert_eq!(c["aud"], resource);
        assert_eq!(c["sub"], owner.info.user.id);
        assert_eq!(c["client_id"], client_id);
        assert_eq!(c["scope"], "mcp:read mcp:write offline_access");
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
        assert!(c["jti"].is_string());
        assert!(t.server.oauth.verify_access_token(tokens["access_token"].as_str().unwrap(), Some(&resource)).await.is_ok());

        // Refresh: rotated, same scope.
        let rt = tokens["refresh_token"].as_str().unwrap();
        let (status, next) = t.refresh(&client_id, rt).await;
        assert_eq!(status, 200, "{next}");
        assert_ne!(next["refresh_token"], tokens["refresh_token"]);
        assert_eq!(next["scope"], "mcp:read mcp:write offline_access");
        // A narrower access token is fine.
        let (status, narrow) = t.token(&[("grant_type", "refresh_token"), ("refresh_token", next["refresh_token"].as_str().unwrap()), ("client_id", &client_id), ("scope", "mcp:read")]).await;
        assert_eq!(status, 200, "{narrow}");
        assert_eq!(claims(narrow["access_token"].as_str().unwrap()).1["scope"], "mcp:read");
    }

    async fn consent_is_remembered_until_more_is_asked(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        // A confidential client: remembered consent applies to it.
        let (_, reg) = t.register_client(json!({"client_name": "Conf", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"})).await;
        let client_id = reg["client_id"].as_str().unwrap().to_string();
        t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        // Same scopes again: straight back with a code.
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 302);
        assert!(query_of(resp.headers()[LOCATION].to_str().unwrap()).contains_key("code"));
        // More scopes, or prompt=consent: the page again.
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:read mcp:write", &[])).await;
        assert_eq!(resp.status(), 200);
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:read", &[("prompt", "consent")])).await;
        assert_eq!(resp.status(), 200);
        // Revoking the grant forgets the consent.
        let grants = t.as_session(&owner).list_grants("demo-project", "demo").await.unwrap().grants;
        for g in &grants {
            t.as_session(&owner).revoke_grant("demo-project", "demo", &g.id).await.unwrap();
        }
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 200, "after revocation the user is asked again");
    }

    /// RFC 8252 §8.6: a public client's id is no secret and any local program can listen on a
    /// loopback port, so such a client never gets a silent approval.
    async fn public_loopback_clients_always_ask(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 200, "the consent page again");
    }

    /// Losing membership, or a tighter access policy, ends the grants it allowed.
    async fn grants_end_with_the_right_to_authorize(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let bob = t.signup("bob@example.com").await;
        t.as_session(&owner).add_member("demo-project", "bob@example.com", ezforge_proto::Role::Member).await.unwrap();
        let client_id = t.public_client().await;
        let code = t.code_for(&bob, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        t.as_session(&owner).remove_member("demo-project", &bob.info.user.id).await.unwrap();
        let (status, body) = t.refresh(&client_id, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        assert!(t.server.oauth.verify_access_token(tokens["access_token"].as_str().unwrap(), Some(&resource)).await.is_err());

        // Policy: instance-wide, then back to members only.
        let update = |policy: &str| ezforge_proto::UpdateServerRequest::from(ezforge_proto::ServerSettings { access_policy: Some(policy.into()), ..Default::default() });
        t.as_session(&owner).update_server("demo-project", "demo", &update("instance")).await.unwrap();
        let code = t.code_for(&bob, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let owner_code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, owner_tokens) = t.exchange(&client_id, &owner_code).await;
        t.as_session(&owner).update_server("demo-project", "demo", &update("members")).await.unwrap();
        let (status, _) = t.refresh(&client_id, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 400, "bob is no longer admitted");
        let (status, _) = t.refresh(&client_id, owner_tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 200, "the owner still is");
    }

    /// PKCE is mandatory and S256 only.
    async fn pkce_downgrades_are_refused(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        for (extra, why) in [
            (vec![("code_challenge_method", "plain")], "plain"),
            (vec![("code_challenge", ""), ("code_challenge_method", "")], "missing challenge"),
            (vec![("code_challenge_method", "")], "missing method (defaults to plain)"),
            (vec![("code_challenge", "short")], "malformed challenge"),
        ] {
            let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:read", &extra)).await;
            assert_eq!(resp.status(), 302, "{why}");
            let q = query_of(resp.headers()[LOCATION].to_str().unwrap());
            assert_eq!(q["error"], "invalid_request", "{why}");
            assert!(!q.contains_key("code"), "{why}");
        }
        // A wrong verifier, and no verifier, are refused at the token endpoint.
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        let (status, body) = t.token(&[("grant_type", "authorization_code"), ("code", &code), ("client_id", &client_id), ("redirect_uri", REDIRECT), ("code_verifier", &"x".repeat(50))]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        let (status, body) = t.token(&[("grant_type", "authorization_code"), ("code", &code), ("client_id", &client_id), ("redirect_uri", REDIRECT)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
        assert!(body["error_description"].as_str().unwrap().contains("code_verifier"), "{body}");
    }

    /// Errors before the redirect URI is validated never redirect.
    async fn redirect_uri_tricks_never_redirect(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let (_, reg) = t.register_client(json!({"client_name": "Good", "redirect_uris": ["https://good.example/cb"], "token_endpoint_auth_method": "none"})).await;
        let client_id = reg["client_id"].as_str().unwrap();
        for evil in [
            "https://good.example@evil.example/cb",
            "https://good.example.evil.example/cb",
            "https://good.example/cb/../../evil",
            "https://good.example/cb/more",
            "https://good.example/cb?next=https://evil.example",
            "https://evil.example/cb",
        ] {
            let resp = t.get_authorize(&owner, &t.authorize_url(client_id, &resource, "mcp:read", &[("redirect_uri", evil)])).await;
            assert_eq!(resp.status(), 400, "{evil}");
            assert!(resp.headers().get(LOCATION).is_none(), "{evil} redirected");
            assert!(resp.text().await.unwrap().contains("redirect address does not match"));
        }
        // Unknown client: an error page, no redirect, even with a valid-looking redirect_uri.
        let resp = t.get_authorize(&owner, &t.authorize_url("mcp_unknown", &resource, "mcp:read", &[])).await;
        assert_eq!(resp.status(), 400);
        assert!(resp.headers().get(LOCATION).is_none());
        // A registered loopback redirect with another port is fine (RFC 8252).
        let client = t.public_client().await;
        let other_port = REDIRECT.replace("33418", "40001");
        let resp = t.get_authorize(&owner, &t.authorize_url(&client, &resource, "mcp:read", &[("redirect_uri", &other_port)])).await;
        assert_eq!(resp.status(), 200, "consent page for a loopback redirect on another port");
    }

    /// A replayed code is refused and revokes everything issued from it.
    async fn code_replay_revokes_the_grant(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (status, tokens) = t.exchange(&client_id, &code).await;
        assert_eq!(status, 200);
        let (status, body) = t.exchange(&client_id, &code).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        let (status, body) = t.refresh(&client_id, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "the refresh token died with the grant");
        assert!(t.server.oauth.verify_access_token(tokens["access_token"].as_str().unwrap(), Some(&resource)).await.is_err(), "the access token died too");
    }

    async fn expired_codes_and_codes_of_other_clients_are_refused(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        t.clock.advance(301);
        let (status, body) = t.exchange(&client_id, &code).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        assert!(body["error_description"].as_str().unwrap().contains("expired"));

        let (_, other) = t.register_client(json!({"client_name": "Other", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"]})).await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        let (status, body) = t.exchange(other["client_id"].as_str().unwrap(), &code).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        // Neither another client nor a wrong verifier burns the code for its rightful owner.
        let (status, _) = t.token(&[("grant_type", "authorization_code"), ("code", &code), ("client_id", &client_id), ("redirect_uri", REDIRECT), ("code_verifier", &"y".repeat(50))]).await;
        assert_eq!(status, 400);
        let (status, body) = t.exchange(&client_id, &code).await;
        assert_eq!(status, 200, "{body}");
    }

    /// The exchange repeats the authorization request (RFC 6749 §4.1.3): the redirect_uri it
    /// named (missing or different: the code is refused), and the resource if it names one. A
    /// request that named no redirect_uri (its client has one registered) may be exchanged with
    /// that one or none.
    async fn the_exchange_repeats_the_authorization_request(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let resource_b = t.with_other_server(&owner).await;
        let client_id = t.public_client().await;
        for (extra, error) in [
            (None, "invalid_grant"),
            (Some(("redirect_uri", "")), "invalid_grant"),
            (Some(("redirect_uri", "http://127.0.0.1:9/other")), "invalid_grant"),
            (Some(("resource", resource_b.as_str())), "invalid_target"),
        ] {
            let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
            let mut form = vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("code_verifier", VERIFIER), ("client_id", client_id.as_str())];
            match extra {
                Some(("redirect_uri", uri)) => form.push(("redirect_uri", uri)),
                Some(other) => form.extend([("redirect_uri", REDIRECT), other]),
                None => {}
            }
            let (status, body) = t.token(&form).await;
            assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{extra:?}: {body}");
        }
        // The resource it was authorized for may be named again (RFC 8707 makes it optional).
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        let (status, body) = t.token(&[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", VERIFIER), ("client_id", &client_id), ("redirect_uri", REDIRECT), ("resource", &resource)]).await;
        assert_eq!(status, 200, "{body}");
        // Without a redirect_uri at /authorize (the client registered only one), the exchange
        // may name that one, or none.
        for with in [Some(REDIRECT), None] {
            let url = t.authorize_url(&client_id, &resource, "mcp:read", &[("redirect_uri", "")]);
            let page = t.get_authorize(&owner, &url).await.text().await.unwrap();
            let allowed = t.consent(&owner, &page, "allow").await;
            let location = allowed.headers()[LOCATION].to_str().unwrap().to_string();
            assert!(location.starts_with(REDIRECT), "{location}");
            let code = query_of(&location)["code"].clone();
            let mut form = vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("code_verifier", VERIFIER), ("client_id", client_id.as_str())];
            form.extend(with.map(|r| ("redirect_uri", r)));
            let (status, body) = t.token(&form).await;
            assert_eq!(status, 200, "{with:?}: {body}");
        }
    }

    /// Reuse of a spent refresh token after the grace window revokes the whole family; a retry
    /// within it gets the same successor.
    async fn refresh_reuse_and_the_grace_window(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let rt1 = tokens["refresh_token"].as_str().unwrap().to_string();
        let (_, a) = t.refresh(&client_id, &rt1).await;
        // A retry (the response was lost): the same successor.
        let (status, b) = t.refresh(&client_id, &rt1).await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(a["refresh_token"], b["refresh_token"]);
        // After the grace window, reuse kills the family, successor included.
        t.clock.advance(31);
        let (status, body) = t.refresh(&client_id, &rt1).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        let (status, _) = t.refresh(&client_id, a["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 400, "the successor was revoked with its family");
    }

    /// Refresh tokens carry their family and generation under a tag only the server can make:
    /// a generation made up, or a tag changed, is an unknown token, refused before any lookup,
    /// and it revokes nothing. A token two generations back is a reuse even inside the grace
    /// window (the window is for a retry of the token just spent).
    async fn made_up_generations_are_unknown_and_old_ones_are_reuse(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let rt0 = tokens["refresh_token"].as_str().unwrap().to_string();
        let parts: Vec<&str> = rt0.split('.').collect();
        assert_eq!((parts.len(), parts[1]), (3, "0"), "{rt0}");
        let made_up = [
            format!("{}.1.{}", parts[0], parts[2]),
            format!("{}.0.{}", parts[0], "A".repeat(43)),
            format!("{}.00.{}", parts[0], parts[2]),
            format!("{}x.0.{}", parts[0], parts[2]),
        ];
        for token in &made_up {
            let (status, body) = t.refresh(&client_id, token).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{token}: {body}");
        }
        let (status, one) = t.refresh(&client_id, &rt0).await;
        assert_eq!(status, 200, "nothing was revoked: {one}");
        let rt1 = one["refresh_token"].as_str().unwrap().to_string();
        assert!(rt1.starts_with(&format!("{}.1.", parts[0])), "{rt1}");
        let (status, two) = t.refresh(&client_id, &rt1).await;
        assert_eq!(status, 200, "{two}");
        let (status, body) = t.refresh(&client_id, &rt0).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "two generations back: {body}");
        let (status, _) = t.refresh(&client_id, two["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 400, "the reuse revoked the family");
    }

    /// A refresh token issued before families (a row per token, found by SHA-256) still
    /// refreshes: its rotation moves it to a family, a retry inside the grace window gets that
    /// family's first token again, and its reuse once the family has moved on revokes the grant.
    async fn tokens_of_the_old_kind_move_to_a_family(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let (_, body) = claims(tokens["access_token"].as_str().unwrap());
        let old = format!("ezf_rt_{}", ezforge_core::secret::random_token());
        let store = ezforge_store::SqlStore::open(&t.db.url, 1).await.unwrap();
        sqlx::query("INSERT INTO oauth_refresh_tokens (token_hash, grant_id, scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(ezforge_core::secret::hash(&old))
            .bind(body["gid"].as_str().unwrap())
            .bind("mcp:read offline_access")
            .bind(body["iat"].as_i64().unwrap())
            .bind(body["iat"].as_i64().unwrap() + 3600)
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
        let (status, first) = t.refresh(&client_id, &old).await;
        assert_eq!(status, 200, "{first}");
        let next = first["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(next.split('.').nth(1), Some("0"), "a family's first token: {next}");
        let (status, again) = t.refresh(&client_id, &old).await;
        assert_eq!(status, 200, "a retry: {again}");
        assert_eq!(again["refresh_token"], first["refresh_token"]);
        let (status, moved) = t.refresh(&client_id, &next).await;
        assert_eq!(status, 200, "{moved}");
        let (status, body) = t.refresh(&client_id, &old).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        let (status, _) = t.refresh(&client_id, moved["refresh_token"].as_str().unwrap()).await;
        assert_eq!(status, 400, "the reuse revoked the grant");
    }

    /// 50 concurrent uses of one refresh token leave at most one live chain.
    async fn concurrent_refreshes_leave_one_chain(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let results = futures::future::join_all((0..50).map(|_| t.refresh(&client_id, &rt))).await;
        for (status, body) in &results {
            assert!(*status == 200 || body["error"] == "invalid_grant", "{status} {body}");
        }
        let successors: std::collections::HashSet<String> = results
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b["refresh_token"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(successors.len(), 1, "exactly one successor across {} successes", results.iter().filter(|(s, _)| *s == 200).count());
        let successor = successors.into_iter().next().unwrap();
        let (status, next) = t.refresh(&client_id, &successor).await;
        assert_eq!(status, 200, "the one chain lives on: {next}");
    }

    /// 50 concurrent exchanges of one code (the token endpoint takes them in batches): one
    /// wins, every other is a replay, and the replays revoke what the winner got.
    async fn concurrent_exchanges_of_one_code(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let results = futures::future::join_all((0..50).map(|_| t.exchange(&client_id, &code))).await;
        let won: Vec<&serde_json::Value> = results.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
        assert_eq!(won.len(), 1, "exactly one exchange wins: {results:?}");
        for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
            assert_eq!((*status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        }
        let (status, body) = t.refresh(&client_id, won[0]["refresh_token"].as_str().unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "the replays revoked the grant");
    }

    /// A client without the refresh_token grant is never shown or granted `offline_access`,
    /// which it asks for when it requests every advertised scope (the TypeScript SDK does).
    async fn offline_access_only_for_clients_that_can_refresh(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let (status, body) = t.register_client(json!({
            "client_name": "No Refresh",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
        })).await;
        assert_eq!(status, 201, "{body}");
        let client_id = body["client_id"].as_str().unwrap().to_string();
        let url = t.authorize_url(&client_id, &resource, "mcp:read mcp:write mcp:execute offline_access", &[]);
        let page = t.get_authorize(&owner, &url).await.text().await.unwrap();
        assert!(!page.contains("offline_access"), "the consent page offers offline_access: {page}");
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read mcp:write mcp:execute offline_access").await;
        let (status, tokens) = t.exchange(&client_id, &code).await;
        assert_eq!(status, 200, "{tokens}");
        assert_eq!(tokens["scope"], "mcp:read mcp:write mcp:execute");
        assert!(tokens.get("refresh_token").is_none());
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "offline_access", &[])).await;
        assert_eq!(query_of(resp.headers()[LOCATION].to_str().unwrap())["error"], "invalid_scope");
    }

    async fn scopes_never_widen_and_resources_must_match(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let resource_b = t.with_other_server(&owner).await;
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let access = tokens["access_token"].as_str().unwrap();
        // A token for one server is refused for another.
        assert!(t.server.oauth.verify_access_token(access, Some(&resource)).await.is_ok());
        assert!(t.server.oauth.verify_access_token(access, Some(&resource_b)).await.is_err());
        let rt = tokens["refresh_token"].as_str().unwrap();
        let (status, body) = t.token(&[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &client_id), ("resource", &resource_b)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")));
        let (status, body) = t.token(&[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &client_id), ("scope", "mcp:read mcp:write")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));
        // Unknown resource at authorize: invalid_target back to the client.
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, "https://evil.example/mcp/demo", "mcp:read", &[])).await;
        assert_eq!(query_of(resp.headers()[LOCATION].to_str().unwrap())["error"], "invalid_target");
        let resp = t.get_authorize(&owner, &t.authorize_url(&client_id, &resource, "mcp:admin", &[])).await;
        assert_eq!(query_of(resp.headers()[LOCATION].to_str().unwrap())["error"], "invalid_scope");
    }

    /// A refused refresh spends nothing (on PostgreSQL a refresh is checked and rotated in one
    /// statement, before the checks in Rust run): after every kind of refusal the token still
    /// rotates once the grace window is over, which a spent token would not.
    async fn a_refused_refresh_leaves_its_token_unspent(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let resource_b = t.with_other_server(&owner).await;
        let client_id = t.public_client().await;
        let (_, other) = t.register_client(json!({"client_name": "Other", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]})).await;
        let other_client = other["client_id"].as_str().unwrap().to_string();
        assert_ne!(other_client, client_id);
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let rt = tokens["refresh_token"].as_str().unwrap();
        let with_nul = format!("{resource}\u{0}");
        let refused: [(&[(&str, &str)], &str); 7] = [
            (&[("resource", &resource_b)], "invalid_target"),
            // Text PostgreSQL cannot store: refused alone, without failing anyone else's refresh.
            (&[("resource", &with_nul)], "invalid_target"),
            (&[("resource", "\u{0}"), ("scope", "mcp:read")], "invalid_target"),
            (&[("scope", "mcp:read mcp:write")], "invalid_scope"),
            (&[("scope", "mcp:read mcp:nonsense")], "invalid_scope"),
            (&[("resource", &resource), ("scope", "offline_access mcp:execute")], "invalid_scope"),
            (&[("resource", "")], "invalid_target"),
        ];
        for (extra, error) in refused {
            let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", client_id.as_str())];
            form.extend_from_slice(extra);
            let (status, body) = t.token(&form).await;
            assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{extra:?}: {body}");
        }
        let (status, body) = t.refresh(&other_client, rt).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        t.clock.advance(31);
        let form = [("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", client_id.as_str()), ("resource", resource.as_str()), ("scope", "offline_access mcp:read")];
        let (status, next) = t.token(&form).await;
        assert_eq!(status, 200, "the token was spent by a refused refresh: {next}");
        assert_eq!(next["scope"], "mcp:read offline_access");
        // An expired token is refused, and stays unspent too.
        let rt = next["refresh_token"].as_str().unwrap();
        t.clock.advance(30 * 24 * 3600 + 1);
        let (status, body) = t.refresh(&client_id, rt).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
        // The family's one row stays one generation on (where the rotation above left it).
        let store = ezforge_store::SqlStore::open(&t.db.url, 1).await.unwrap();
        let rows: Vec<(Option<i64>, Option<i64>)> = sqlx::query_as("SELECT generation, used_at FROM oauth_refresh_tokens")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, vec![(Some(1), None)]);
    }

    /// PostgreSQL's text cannot hold a NUL character. Input with one is a bad request there
    /// (on SQLite it simply matches nothing), never a server error.
    async fn text_with_a_nul_is_a_bad_request_not_a_server_error(db) {
        let t = TestServer::start(db).await;
        let postgres = t.server.backend == "postgres";
        let (status, body) = t.token(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", "mcp_a\u{0}b")]).await;
        let expected = if postgres { (400, "invalid_request") } else { (401, "invalid_client") };
        assert_eq!((status, body["error"].as_str().unwrap_or_default()), expected, "{body}");
        let resp = t.raw().post(format!("{}/v1/auth/login", t.url))
            .json(&json!({"email": "a\u{0}@example.com", "password": "a long enough password"}))
            .send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        let expected = if postgres { (400, "invalid_request") } else { (401, "invalid_credentials") };
        assert_eq!((status, body["error"]["code"].as_str().unwrap_or_default()), expected, "{body}");
    }

    async fn who_may_authorize_follows_the_access_policy(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        // Anyone can sign up under the allow-listed domain: that proves nothing.
        let squatter = t.signup("squatter@corp.example").await;
        // An address is verified when the account came from an invite bound to it.
        let invite = t.as_session(&owner).create_invite(Some("someone@corp.example")).await.unwrap();
        let verified = t
            .client()
            .signup(&ezforge_proto::SignupRequest { email: "someone@corp.example".into(), password: PASSWORD.into(), invite_code: Some(invite.code) })
            .await
            .unwrap();
        assert!(verified.info.user.email_verified && !squatter.info.user.email_verified);
        let client_id = t.public_client().await;
        let url = t.authorize_url(&client_id, &resource, "mcp:read", &[]);
        let denied = |resp: reqwest::Response| {
            let q = query_of(resp.headers()[LOCATION].to_str().unwrap());
            assert_eq!(q["error"], "access_denied");
            assert!(!q["error_description"].contains('@'), "the description does not leak the user's email");
        };
        denied(t.get_authorize(&verified, &url).await);
        let update = |policy: &str, list: Option<Vec<String>>| ezforge_proto::UpdateServerRequest::from(ezforge_proto::ServerSettings { access_policy: Some(policy.into()), access_allowlist: list, ..Default::default() });
        t.as_session(&owner).update_server("demo-project", "demo", &update("allowlist", Some(vec!["@corp.example".into()]))).await.unwrap();
        assert_eq!(t.get_authorize(&verified, &url).await.status(), 200, "a verified address in the domain");
        denied(t.get_authorize(&squatter, &url).await);
        t.as_session(&owner).update_server("demo-project", "demo", &update("allowlist", Some(vec!["boss@corp.example".into()]))).await.unwrap();
        denied(t.get_authorize(&verified, &url).await);
        t.as_session(&owner).update_server("demo-project", "demo", &update("instance", None)).await.unwrap();
        assert_eq!(t.get_authorize(&squatter, &url).await.status(), 200, "any user of the instance");
    }

    async fn registration_validates_is_idempotent_and_rate_limited(db) {
        let t = TestServer::start_with(db, |c| c.oauth.register_per_window = 5).await;
        let body = json!({"client_name": "X", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "application_type": "native"});
        let (status, a) = t.register_client(body.clone()).await;
        assert_eq!(status, 201);
        assert_eq!(a["redirect_uris"], json!([REDIRECT]));
        assert_eq!(a["application_type"], "native");
        assert!(a.get("client_secret").is_none());
        let (_, b) = t.register_client(body.clone()).await;
        assert_eq!(a["client_id"], b["client_id"], "identical metadata, same client");
        let (status, e) = t.register_client(json!({"redirect_uris": ["http://evil.example/cb"]})).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("invalid_redirect_uri")));
        let (status, e) = t.register_client(json!({"redirect_uris": [REDIRECT], "grant_types": ["password"]})).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("invalid_client_metadata")));
        let (status, c) = t.register_client(json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "client_secret_basic"})).await;
        assert_eq!(status, 201);
        assert!(c["client_secret"].as_str().unwrap().starts_with("ezf_cs_"));
        // The sixth registration in the window from this address: 429.
        let resp = http().post(format!("{}/register", t.url)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().get("retry-after").is_some());
    }

    /// The token endpoint and the sign-in page are rate-limited too: 429 with Retry-After, as an
    /// OAuth error (`temporarily_unavailable`) and as the sign-in page with its message.
    async fn the_token_endpoint_and_the_sign_in_page_are_rate_limited(db) {
        let t = TestServer::start_with(db, |c| {
            c.oauth.token_per_window = 3;
            c.core.login_failures_per_account = 2;
        })
        .await;
        let (_, resource) = t.with_mcp_server().await;
        let client_id = t.public_client().await;
        for _ in 0..3 {
            let (status, body) = t.refresh(&client_id, "ezf_rt_unknown").await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        }
        let resp = http().post(format!("{}/token", t.url)).form(&[("grant_type", "refresh_token"), ("refresh_token", "ezf_rt_unknown"), ("client_id", client_id.as_str())]).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");

        // The sign-in page, after two wrong passwords for the account.
        let url = t.authorize_url(&client_id, &resource, "mcp:read", &[]);
        let login = http().get(&url).send().await.unwrap().headers()[LOCATION].to_str().unwrap().to_string();
        let page = http().get(format!("{}{login}", t.url)).send().await.unwrap();
        let csrf_cookie = page.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
        let html = page.text().await.unwrap();
        let sign_in = |password: &'static str| {
            let form = [("email", "owner@example.com".to_string()), ("password", password.to_string()), ("next", hidden(&html, "next")), ("csrf", hidden(&html, "csrf"))];
            http().post(format!("{}/login", t.url)).header(COOKIE, &csrf_cookie).form(&form).send()
        };
        for _ in 0..2 {
            assert_eq!(sign_in("wrong password!").await.unwrap().status(), 401);
        }
        let resp = sign_in(PASSWORD).await.unwrap();
        assert_eq!(resp.status(), 429, "locked, even with the right password");
        assert!(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
        assert!(resp.text().await.unwrap().contains("Too many attempts"));
    }

    /// A dynamic registration nobody uses expires after a day (`unused_client_ttl_secs`);
    /// registering the same metadata again gives that client the full time again, so that it
    /// cannot expire in the middle of the flow it was registered for.
    async fn unused_registrations_expire_unless_registered_again(db) {
        let t = TestServer::start(db).await;
        let (_, resource) = t.with_mcp_server().await;
        let body = |name: &str| json!({"client_name": name, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
        let id = |v: &Value| v["client_id"].as_str().unwrap().to_string();
        let (_, kept) = t.register_client(body("Kept")).await;
        let (_, lapsed) = t.register_client(body("Lapsed")).await;
        t.clock.advance(23 * 3600);
        let (_, again) = t.register_client(body("Kept")).await;
        assert_eq!(id(&again), id(&kept), "identical metadata, same client");
        // A day and an hour after both were registered, the one registered again lives on...
        t.clock.advance(2 * 3600);
        let owner = t.client().login("owner@example.com", PASSWORD).await.unwrap();
        let url = t.authorize_url(&id(&kept), &resource, "mcp:read", &[]);
        assert_eq!(t.get_authorize(&owner, &url).await.status(), 200);
        // ...and the other is gone: its id is unknown, and its metadata makes a new client.
        let url = t.authorize_url(&id(&lapsed), &resource, "mcp:read", &[]);
        let resp = t.get_authorize(&owner, &url).await;
        assert_eq!(resp.status(), 400);
        assert!(resp.text().await.unwrap().contains("unknown client_id"));
        let (status, fresh) = t.register_client(body("Lapsed")).await;
        assert_eq!(status, 201);
        assert_ne!(id(&fresh), id(&lapsed));
    }

    async fn confidential_clients_introspect_and_revoke(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let (_, reg) = t.register_client(json!({"client_name": "Conf", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "client_secret_basic"})).await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        let secret = reg["client_secret"].as_str().unwrap().to_string();
        let code = t.code_for(&owner, &id, &resource, "mcp:read offline_access").await;
        // Without its secret the client is refused; Basic and client_id in the body together are fine.
        let (status, body) = t.exchange(&id, &code).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
        let code = t.code_for(&owner, &id, &resource, "mcp:read offline_access").await;
        let resp = http().post(format!("{}/token", t.url)).basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("code_verifier", VERIFIER), ("redirect_uri", REDIRECT), ("client_id", id.as_str())])
            .send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let tokens: Value = resp.json().await.unwrap();
        let introspect = |token: String| {
            let (id, secret, url) = (id.clone(), secret.clone(), t.url.clone());
            async move {
                http().post(format!("{url}/introspect")).basic_auth(&id, Some(&secret)).form(&[("token", token)]).send().await.unwrap().json::<Value>().await.unwrap()
            }
        };
        let info = introspect(tokens["access_token"].as_str().unwrap().into()).await;
        assert_eq!(info["active"], true);
        assert_eq!(info["aud"], resource);
        assert_eq!(info["scope"], "mcp:read offline_access");
        let resp = http().post(format!("{}/revoke", t.url)).basic_auth(&id, Some(&secret)).form(&[("token", tokens["refresh_token"].as_str().unwrap())]).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(introspect(tokens["access_token"].as_str().unwrap().into()).await["active"], false);
        assert_eq!(introspect("garbage".into()).await["active"], false);
        let resp = http().post(format!("{}/introspect", t.url)).form(&[("token", "x")]).send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }

    /// An MCP client without a token is told where to find the protected-resource metadata and
    /// which scope to ask for; a valid token for this server gets past the challenge.
    async fn the_mcp_endpoint_challenges_for_a_token(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let resp = http()
            .post(&resource)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["www-authenticate"],
            format!("Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp/demo\", scope=\"mcp:read mcp:write offline_access\"", t.url).as_str()
        );
        let resp = http()
            .post(&resource)
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .ends_with("error=\"invalid_token\"")
        );
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let resp = http()
            .post(&resource)
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            503,
            "past the token check; nothing deployed yet"
        );
        assert_eq!(
            http()
                .get(format!("{}/mcp/nope", t.url))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
    }

    /// A BYOA server names the customer's issuer in its metadata, and ezForge refuses to issue its
    /// tokens.
    async fn byoa_servers_point_elsewhere(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let byoa = |jwks: &str| ezforge_proto::UpdateServerRequest::from(ezforge_proto::ServerSettings {
            auth_mode: Some("byoa".into()),
            byoa_issuer: Some("https://auth.example.com".into()),
            byoa_jwks_uri: Some(jwks.into()),
            byoa_authorization_endpoint: Some("https://auth.example.com/oauth/authorize".into()),
            byoa_token_endpoint: Some("https://auth.example.com/oauth/token".into()),
            ..Default::default()
        });
        let admin = t.as_session(&owner);
        for bad in [
            "http://auth.example.com/jwks",
            "ftp://auth.example.com/jwks",
            "https://user@auth.example.com/jwks",
            "not a url",
        ] {
            let err = admin
                .update_server_by_slug("demo", &byoa(bad))
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(400), "{bad}");
        }
        let missing = ezforge_proto::UpdateServerRequest::from(ezforge_proto::ServerSettings {
            auth_mode: Some("byoa".into()),
            ..Default::default()
        });
        assert_eq!(
            admin
                .update_server_by_slug("demo", &missing)
                .await
                .unwrap_err()
                .status(),
            Some(400)
        );
        let s = admin
            .update_server_by_slug(
                "demo",
                &byoa("https://auth.example.com/.well-known/jwks.json"),
            )
            .await
            .unwrap();
        assert_eq!(s.auth_mode, "byoa");
        let prm: Value = http()
            .get(format!(
                "{}/.well-known/oauth-protected-resource/mcp/demo",
                t.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            prm["authorization_servers"],
            json!(["https://auth.example.com"])
        );
        let client_id = t.public_client().await;
        let resp = t
            .get_authorize(
                &owner,
                &t.authorize_url(&client_id, &resource, "mcp:read", &[]),
            )
            .await;
        assert_eq!(
            query_of(resp.headers()[LOCATION].to_str().unwrap())["error"],
            "invalid_target"
        );
        // Back to managed: ezForge is the issuer again.
        let back = ezforge_proto::UpdateServerRequest::from(ezforge_proto::ServerSettings {
            auth_mode: Some("ezforge_managed".into()),
            ..Default::default()
        });
        assert!(
            admin
                .update_server_by_slug("demo", &back)
                .await
                .unwrap()
                .byoa
                .is_none()
        );
    }
}

#[test]
fn the_test_verifier_is_valid() {
    assert!(VERIFIER.len() >= 43);
    assert_eq!(challenge(VERIFIER).len(), 43);
}
