//! The OpenAPI document is generated from the routes, and what it declares is what is enforced:
//! for every operation, the declared security is checked against the running server.

mod common;

use common::TestServer;
use ezforge_proto::{Environment, Scope};
use reqwest::Method;
use serde_json::Value;

fn concrete(path: &str) -> String {
    path.replace("{project}", "p1")
        .replace("{server}", "s1")
        .replace("{key_id}", "key_x")
        .replace("{user_id}", "usr_x")
        .replace("{client_id}", "mcp_x")
        .replace("{grant_id}", "grt_x")
}

async fn call(t: &TestServer, method: &Method, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = t
        .raw()
        .request(method.clone(), format!("{}{}", t.url, concrete(path)));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if *method != Method::GET && *method != Method::DELETE {
        req = req.json(&serde_json::json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_operation_enforces_what_it_declares() {
    let t = TestServer::start(ezforge_testkit::TestDb::sqlite()).await;
    let owner = t.owner_of("dev@example.com", "p1").await;
    let doc: Value = t
        .raw()
        .get(format!("{}/v1/openapi.json", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let Some(security) = op["security"].as_array() else {
                assert!(
                    path == "/v1/auth/signup" || path == "/v1/auth/login",
                    "{method} {path} declares no security; only sign-up and sign-in are public"
                );
                continue;
            };
            checked += 1;
            let (status, body) = call(&t, &method, path, None).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthenticated")),
                "{method} {path} without credentials"
            );

            let api_key = security
                .iter()
                .find_map(|s| s.get("api_key"))
                .and_then(Value::as_array);
            match api_key {
                None => {
                    let key = t
                        .key(&owner, "p1", &Scope::valid_names(), Environment::Live)
                        .await;
                    let (status, body) = call(&t, &method, path, Some(&key)).await;
                    assert_eq!(
                        (status, body["error"]["code"].as_str()),
                        (403, Some("session_required")),
                        "{method} {path} with a key"
                    );
                }
                Some(scopes) if scopes.is_empty() => {
                    let key = t
                        .key(&owner, "p1", &["billing:read"], Environment::Live)
                        .await;
                    let (status, _) = call(&t, &method, path, Some(&key)).await;
                    assert!(
                        status != 401 && status != 403,
                        "{method} {path}: any key may call it, got {status}"
                    );
                }
                Some(scopes) => {
                    assert_eq!(scopes.len(), 1, "{method} {path} declares one scope");
                    let needed = scopes[0].as_str().unwrap();
                    let others: Vec<&str> = Scope::valid_names()
                        .into_iter()
                        .filter(|s| *s != needed)
                        .collect();
                    let without = t.key(&owner, "p1", &others, Environment::Live).await;
                    let (status, body) = call(&t, &method, path, Some(&without)).await;
                    assert_eq!(
                        (
                            status,
                            body["error"]["code"].as_str(),
                            body["error"]["required_scope"].as_str()
                        ),
                        (403, Some("insufficient_scope"), Some(needed)),
                        "{method} {path} with every scope but {needed}"
                    );
                    let with = t.key(&owner, "p1", &[needed], Environment::Live).await;
                    let (status, body) = call(&t, &method, path, Some(&with)).await;
                    assert!(
                        !(status == 401
                            || body["error"]["code"] == "insufficient_scope"
                            || body["error"]["code"] == "session_required"),
                        "{method} {path} with {needed}: {status} {body}"
                    );
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} operations were checked");
}
