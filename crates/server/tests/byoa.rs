//! BYOA: tokens from a customer's identity provider (ES256, EdDSA, RS256), checked against its
//! JWKS served by a test server — rotation, unknown `kid`, and the forgeries (`alg: none`, HMAC with the public key,
//! algorithm/key-type mismatch), wrong issuer or audience, expiry with leeway — on SQLite and
//! PostgreSQL, in front of a deployed upstream that sees what an accepted token lets through.

mod common;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestServer;
use common::oauth::http;
use ezforge_core::jwt::SigningKey;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const ISSUER: &str = "https://idp.example.com";

#[derive(Clone, Default)]
struct Jwks {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_host(jwks: Jwks) -> String {
    async fn serve(State(j): State<Jwks>) -> axum::Json<Value> {
        j.fetches.fetch_add(1, Ordering::SeqCst);
        axum::Json(json!({"keys": *j.keys.lock().unwrap()}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new()
                .route("/jwks.json", get(serve))
                .with_state(jwks),
        )
        .await
    });
    url
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(resource: &str, exp_in: i64) -> Value {
    json!({"iss": ISSUER, "aud": resource, "sub": "idp-user-1", "client_id": "idp-client", "scope": "mcp:read mcp:write", "iat": now(), "exp": now() + exp_in})
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn ed25519() -> (Ed25519KeyPair, Value) {
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()), "kid": "ed-1", "use": "sig"});
    (pair, jwk)
}

fn ed_token(pair: &Ed25519KeyPair, kid: &str, body: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"})),
        b64(body)
    );
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref())
    )
}

fn rsa() -> (aws_lc_rs::signature::RsaKeyPair, Value) {
    let pair =
        aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = pair.public_key();
    let jwk = json!({
        "kty": "RSA",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        "kid": "rs-1",
        "use": "sig",
    });
    (pair, jwk)
}

/// Signed with RSASSA-PKCS1-v1_5 SHA-256 whatever `alg` the header claims.
fn rs_token(pair: &aws_lc_rs::signature::RsaKeyPair, kid: &str, alg: &str, body: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": alg, "kid": kid, "typ": "JWT"})),
        b64(body)
    );
    let mut sig = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// What the upstream received: the headers of each request.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A minimal Streamable HTTP MCP server: answers every JSON-RPC request (`initialize` with a
/// protocol version, for the deploy's health check) and keeps each request's headers.
async fn upstream(seen: Seen) -> String {
    async fn handle(
        State(seen): State<Seen>,
        headers: HeaderMap,
        body: String,
    ) -> axum::Json<Value> {
        seen.lock().unwrap().push(headers);
        let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let result = match msg["method"].as_str() {
            Some("initialize") => {
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "byoa-upstream", "version": "1"}})
            }
            _ => json!({}),
        };
        axum::Json(json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let app = Router::new().route("/mcp", post(handle)).with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn ping(resource: &str, token: &str) -> u16 {
    http()
        .post(resource)
        .bearer_auth(token)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The upstream answered: the token was accepted; 401: it was refused.
const ACCEPTED: u16 = 200;
const REFUSED: u16 = 401;

ezforge_testkit::backend_tests! {
async fn byoa_tokens_are_checked_against_the_issuers_jwks(db) {
    let t = TestServer::start(db).await;
    let seen = Seen::default();
    let (owner, resource) = t.with_deployed_mcp_server(upstream(seen.clone()).await, 5000).await;
    let jwks = Jwks::default();
    let jwks_uri = jwks_host(jwks.clone()).await;
    let (es, _) = SigningKey::generate("es-1".into()).unwrap();
    let es_jwk = serde_json::to_value(es.jwk()).unwrap();
    let (ed, ed_jwk) = ed25519();
    let (rsa, rsa_jwk) = rsa();
    *jwks.keys.lock().unwrap() = vec![es_jwk.clone(), ed_jwk, rsa_jwk];
    let update = ezforge_proto::UpdateServerRequest::from(ezforge_proto::ServerSettings {
        auth_mode: Some("byoa".into()),
        byoa_issuer: Some(ISSUER.into()),
        byoa_jwks_uri: Some(jwks_uri.clone()),
        byoa_authorization_endpoint: Some(format!("{ISSUER}/authorize")),
        byoa_token_endpoint: Some(format!("{ISSUER}/token")),
        ..Default::default()
    });
    t.as_session(&owner)
        .update_server_by_slug("demo", &update)
        .await
        .unwrap();

    // Good tokens, ES256 and EdDSA.
    seen.lock().unwrap().clear();
    assert_eq!(
        ping(
            &resource,
            &es.sign("at+jwt", &claims(&resource, 300)).unwrap()
        )
        .await,
        ACCEPTED
    );
    // The upstream learns the identity provider's subject, client and scopes, never the token.
    let got = seen.lock().unwrap()[0].clone();
    assert!(got.get("authorization").is_none());
    assert_eq!(got["x-ezforge-subject"], "idp-user-1");
    assert_eq!(got["x-ezforge-client-id"], "idp-client");
    assert_eq!(got["x-ezforge-scopes"], "mcp:read mcp:write");
    assert_eq!(
        ping(&resource, &ed_token(&ed, "ed-1", &claims(&resource, 300))).await,
        ACCEPTED
    );
    assert_eq!(
        ping(
            &resource,
            &rs_token(&rsa, "rs-1", "RS256", &claims(&resource, 300))
        )
        .await,
        ACCEPTED
    );
    // The RSA key is pinned to RS256: the same key with another algorithm is refused.
    assert_eq!(
        ping(
            &resource,
            &rs_token(&rsa, "rs-1", "RS384", &claims(&resource, 300))
        )
        .await,
        REFUSED
    );
    // Expired: refused past the 60 s leeway, accepted within it.
    assert_eq!(
        ping(
            &resource,
            &es.sign("at+jwt", &claims(&resource, -120)).unwrap()
        )
        .await,
        REFUSED
    );
    assert_eq!(
        ping(
            &resource,
            &es.sign("at+jwt", &claims(&resource, -30)).unwrap()
        )
        .await,
        ACCEPTED
    );
    // Wrong issuer, wrong audience.
    let mut wrong_iss = claims(&resource, 300);
    wrong_iss["iss"] = json!("https://evil.example.com");
    assert_eq!(
        ping(&resource, &es.sign("at+jwt", &wrong_iss).unwrap()).await,
        REFUSED
    );
    assert_eq!(
        ping(
            &resource,
            &es.sign("at+jwt", &claims("https://other.example/mcp/x", 300))
                .unwrap()
        )
        .await,
        REFUSED
    );

    // Forgeries: alg none; HS256 keyed with the public key; an RS256 header on the EC key's kid.
    let body = b64(&claims(&resource, 300));
    let none = format!("{}.{body}.", b64(&json!({"alg": "none", "kid": "es-1"})));
    assert_eq!(ping(&resource, &none).await, REFUSED);
    let hs_input = format!("{}.{body}", b64(&json!({"alg": "HS256", "kid": "es-1"})));
    let mac_key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        serde_json::to_string(&es_jwk).unwrap().as_bytes(),
    );
    let hs = format!(
        "{hs_input}.{}",
        URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&mac_key, hs_input.as_bytes()).as_ref())
    );
    assert_eq!(ping(&resource, &hs).await, REFUSED);
    let es_token = es.sign("at+jwt", &claims(&resource, 300)).unwrap();
    let sig = es_token.rsplit('.').next().unwrap();
    let rs = format!(
        "{}.{body}.{sig}",
        b64(&json!({"alg": "RS256", "kid": "es-1"}))
    );
    assert_eq!(ping(&resource, &rs).await, REFUSED);
    // An ezForge-issued token is no good on a BYOA server.
    let (other_key, _) = SigningKey::generate("es-1".into()).unwrap();
    assert_eq!(
        ping(
            &resource,
            &other_key.sign("at+jwt", &claims(&resource, 300)).unwrap()
        )
        .await,
        REFUSED,
        "same kid, other key"
    );

    // Rotation: a token with a new kid makes the gateway refetch the JWKS once (once the 30 s
    // cool-down since the last fetch has passed).
    t.clock.advance(31);
    let (es2, _) = SigningKey::generate("es-2".into()).unwrap();
    jwks.keys
        .lock()
        .unwrap()
        .push(serde_json::to_value(es2.jwk()).unwrap());
    let before = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(
        ping(
            &resource,
            &es2.sign("at+jwt", &claims(&resource, 300)).unwrap()
        )
        .await,
        ACCEPTED
    );
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), before + 1);
    // Another unknown kid right after: refused without hammering the issuer (cool-down).
    let (es3, _) = SigningKey::generate("es-3".into()).unwrap();
    assert_eq!(
        ping(
            &resource,
            &es3.sign("at+jwt", &claims(&resource, 300)).unwrap()
        )
        .await,
        REFUSED
    );
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), before + 1);
}
}
