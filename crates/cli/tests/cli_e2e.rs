//! The `ezforge` binary end to end: `ezforge serve` on a fresh database (SQLite and PostgreSQL)
//! and the CLI against it, as a user would type it.

#[path = "support/served.rs"]
mod served;

use ezforge_testkit::TestDb;
use served::{BIN, serve};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
const PASSWORD: &str = "correct horse battery staple";

/// Runs the CLI with its own config directory, optionally feeding standard input.
fn ez(cfg: &Path, url: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("EZFORGE_CONFIG_DIR", cfg)
        .env("EZFORGE_API_URL", url)
        .env_remove("EZFORGE_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

async fn get_projects(url: &str, key: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/projects"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

ezforge_testkit::backend_tests! {
    /// Sign up, `auth login`, the docs' `create-key` command verbatim, the key on
    /// `GET /v1/projects`, `revoke-key`, the same request now 401.
    async fn the_docs_cli_flow(db) {
        let s = serve(&db, &[]);
        let cfg = tempfile::tempdir().unwrap();
        let c = cfg.path();
        let pw = format!("{PASSWORD}\n");

        ok(&ez(c, &s.url, &["auth", "signup", "--email", "dev@example.com"], Some(&pw), &[]));
        ok(&ez(c, &s.url, &["auth", "logout"], None, &[]));
        let err = fails(&ez(c, &s.url, &["project", "list"], None, &[]), 3);
        assert!(err.contains("ezforge auth login"), "{err}");
        let err = fails(&ez(c, &s.url, &["auth", "login", "--email", "dev@example.com"], Some("wrong password!\n"), &[]), 3);
        assert!(err.contains("invalid_credentials"), "{err}");
        let out = ok(&ez(c, &s.url, &["auth", "login", "--email", "dev@example.com"], Some(&pw), &[]));
        assert!(out.contains("Logged in to") && out.contains("dev@example.com"), "{out}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(c.join("session.json")).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the saved session is private");
        }
        let status: serde_json::Value = serde_json::from_str(&ok(&ez(c, &s.url, &["auth", "status", "--json"], None, &[]))).unwrap();
        assert_eq!(status["email"], "dev@example.com");
        assert_eq!(status["method"], "session");

        ok(&ez(c, &s.url, &["project", "create", "my-first-project"], None, &[]));
        // The documentation's command, verbatim.
        let out = ez(c, &s.url, &["project", "create-key", "my-first-project", "--name", "ci-deploy", "--scopes", "deployments:write,servers:read"], None, &[]);
        let key = ok(&out).trim().to_string();
        assert!(key.starts_with("ezf_live_"), "stdout holds the key alone: {key}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("will not be shown again"));

        let (status, body) = get_projects(&s.url, &key).await;
        assert_eq!(status, 200);
        assert_eq!(body["projects"][0]["name"], "my-first-project");

        // The key drives the CLI too.
        let listed: serde_json::Value = serde_json::from_str(&ok(&ez(c, &s.url, &["project", "list", "--json"], None, &[("EZFORGE_API_KEY", &key)]))).unwrap();
        assert_eq!(listed["projects"][0]["name"], "my-first-project");

        let keys: serde_json::Value = serde_json::from_str(&ok(&ez(c, &s.url, &["project", "list-keys", "my-first-project", "--json"], None, &[]))).unwrap();
        let k = &keys["keys"][0];
        assert_eq!(k["name"], "ci-deploy");
        assert_eq!(k["scopes"], serde_json::json!(["servers:read", "deployments:write"]));
        assert!(!keys.to_string().contains(&key));
        let table = ok(&ez(c, &s.url, &["project", "list-keys", "my-first-project"], None, &[]));
        assert!(table.contains("ci-deploy") && table.contains("active"), "{table}");

        let id = k["id"].as_str().unwrap();
        ok(&ez(c, &s.url, &["project", "revoke-key", "my-first-project", id], None, &[]));
        let (status, body) = get_projects(&s.url, &key).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("api_key_revoked")));
        let err = fails(&ez(c, &s.url, &["project", "list"], None, &[("EZFORGE_API_KEY", &key)]), 3);
        assert!(err.contains("revoked"), "{err}");

        // Bad input has its own exit codes.
        let err = fails(&ez(c, &s.url, &["project", "create-key", "my-first-project", "--name", "x", "--scopes", "servers:admin"], None, &[]), 2);
        assert!(err.contains("billing:read"), "the valid scopes are listed: {err}");
        fails(&ez(c, &s.url, &["project", "create", "my-first-project"], None, &[]), 6);
        fails(&ez(c, &s.url, &["project", "list-keys", "nope"], None, &[]), 5);
        let json_err = fails(&ez(c, &s.url, &["project", "list-keys", "nope", "--json"], None, &[]), 5);
        let parsed: serde_json::Value = serde_json::from_str(json_err.trim()).unwrap();
        assert_eq!(parsed["error"]["code"], "not_found");
        fails(&ez(c, "http://127.0.0.1:9", &["project", "list"], None, &[]), 8);
    }
}

#[tokio::test]
async fn an_expired_session_tells_how_to_log_in_again() {
    let db = TestDb::sqlite();
    let s = serve(&db, &["--session-ttl-secs", "1"]);
    let cfg = tempfile::tempdir().unwrap();
    ok(&ez(
        cfg.path(),
        &s.url,
        &["auth", "signup", "--email", "dev@example.com"],
        Some(PASSWORD),
        &[],
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let err = fails(&ez(cfg.path(), &s.url, &["auth", "status"], None, &[]), 3);
    assert!(
        err.contains("expired") && err.contains("ezforge auth login"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_stops_gracefully_on_sigterm() {
    let db = TestDb::sqlite();
    let mut s = serve(&db, &[]);
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[test]
fn serve_help_documents_every_option() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--listen",
        "--public-url",
        "--data-dir",
        "--database-url",
        "--config",
        "--signup",
        "EZFORGE_LISTEN",
        "EZFORGE_DATABASE_URL",
    ] {
        assert!(help.contains(opt), "serve --help lacks {opt}");
    }
}

/// The OAuth management commands: registered clients, grants, signing keys.
#[tokio::test]
async fn oauth_management_commands() {
    let db = TestDb::sqlite();
    let s = serve(&db, &[]);
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    ok(&ez(
        c,
        &s.url,
        &["auth", "signup", "--email", "admin@example.com"],
        Some(PASSWORD),
        &[],
    ));
    ok(&ez(c, &s.url, &["project", "create", "p1"], None, &[]));

    let secret = ok(&ez(
        c,
        &s.url,
        &[
            "oauth-clients",
            "create",
            "p1",
            "--name",
            "Acme",
            "--redirect-uri",
            "https://acme.example/cb",
        ],
        None,
        &[],
    ));
    assert!(
        secret.trim().starts_with("ezf_cs_"),
        "the secret alone on stdout: {secret}"
    );
    let public = ok(&ez(
        c,
        &s.url,
        &[
            "oauth-clients",
            "create",
            "p1",
            "--name",
            "Desk",
            "--redirect-uri",
            "http://127.0.0.1:8976/cb",
            "--public",
        ],
        None,
        &[],
    ));
    assert!(
        public.trim().starts_with("mcp_"),
        "a public client prints its id: {public}"
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(&ez(
        c,
        &s.url,
        &["oauth-clients", "list", "p1", "--json"],
        None,
        &[],
    )))
    .unwrap();
    assert_eq!(listed["clients"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(secret.trim()));
    let err = fails(
        &ez(
            c,
            &s.url,
            &[
                "oauth-clients",
                "create",
                "p1",
                "--name",
                "Bad",
                "--redirect-uri",
                "http://evil.example/cb",
            ],
            None,
            &[],
        ),
        2,
    );
    assert!(err.contains("loopback"), "{err}");
    ok(&ez(
        c,
        &s.url,
        &["oauth-clients", "delete", "p1", public.trim()],
        None,
        &[],
    ));

    let keys: serde_json::Value = serde_json::from_str(&ok(&ez(
        c,
        &s.url,
        &["admin", "signing-keys", "--json"],
        None,
        &[],
    )))
    .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    let out = ok(&ez(c, &s.url, &["admin", "rotate-signing-key"], None, &[]));
    assert!(out.contains("published now"), "{out}");
    let keys: serde_json::Value = serde_json::from_str(&ok(&ez(
        c,
        &s.url,
        &["admin", "signing-keys", "--json"],
        None,
        &[],
    )))
    .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);

    // Grants: an unknown server is "not found" (exit 5).
    let err = fails(
        &ez(c, &s.url, &["grants", "list", "p1", "nope"], None, &[]),
        5,
    );
    assert!(err.contains("not found"), "{err}");
}

/// The documentation's BYOA command, verbatim, and the servers commands around it.
#[tokio::test]
async fn servers_commands_and_the_docs_byoa_command() {
    let db = TestDb::sqlite();
    let s = serve(&db, &[]);
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    ok(&ez(
        c,
        &s.url,
        &["auth", "signup", "--email", "dev@example.com"],
        Some(PASSWORD),
        &[],
    ));
    ok(&ez(
        c,
        &s.url,
        &["project", "create", "my-first-project"],
        None,
        &[],
    ));
    let out = ok(&ez(
        c,
        &s.url,
        &[
            "servers",
            "create",
            "my-server",
            "--project",
            "my-first-project",
        ],
        None,
        &[],
    ));
    assert!(out.contains("/mcp/my-server"), "{out}");
    ok(&ez(
        c,
        &s.url,
        &[
            "servers",
            "update",
            "my-server",
            "--auth-mode",
            "byoa",
            "--byoa-issuer",
            "https://auth.example.com",
            "--byoa-jwks-uri",
            "https://auth.example.com/.well-known/jwks.json",
            "--byoa-authorization-endpoint",
            "https://auth.example.com/oauth/authorize",
            "--byoa-token-endpoint",
            "https://auth.example.com/oauth/token",
        ],
        None,
        &[],
    ));
    let server: serde_json::Value = serde_json::from_str(&ok(&ez(
        c,
        &s.url,
        &["servers", "get", "my-server", "--json"],
        None,
        &[],
    )))
    .unwrap();
    assert_eq!(server["auth_mode"], "byoa");
    assert_eq!(
        server["byoa"]["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    let prm: serde_json::Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp/my-server",
        s.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        prm["authorization_servers"],
        serde_json::json!(["https://auth.example.com"])
    );
    assert_eq!(prm["resource"], format!("{}/mcp/my-server", s.url));

    let err = fails(
        &ez(
            c,
            &s.url,
            &[
                "servers",
                "update",
                "my-server",
                "--byoa-jwks-uri",
                "http://evil.example/jwks",
            ],
            None,
            &[],
        ),
        2,
    );
    assert!(err.contains("https"), "{err}");
    ok(&ez(
        c,
        &s.url,
        &[
            "servers",
            "update",
            "my-server",
            "--tool-deny",
            "delete_everything",
            "--tool-execute",
            "run_shell",
        ],
        None,
        &[],
    ));
    let table = ok(&ez(c, &s.url, &["servers", "get", "my-server"], None, &[]));
    assert!(
        table.contains("delete_everything")
            && table.contains("run_shell")
            && table.contains("byoa"),
        "{table}"
    );
    ok(&ez(
        c,
        &s.url,
        &[
            "servers",
            "update",
            "my-server",
            "--auth-mode",
            "ezforge_managed",
        ],
        None,
        &[],
    ));
    let listed = ok(&ez(c, &s.url, &["servers", "list"], None, &[]));
    assert!(
        listed.contains("my-server") && listed.contains("ezforge_managed"),
        "{listed}"
    );
    fails(
        &ez(c, &s.url, &["servers", "delete", "my-server"], None, &[]),
        2,
    );
    ok(&ez(
        c,
        &s.url,
        &["servers", "delete", "my-server", "--yes"],
        None,
        &[],
    ));
    fails(
        &ez(c, &s.url, &["servers", "get", "my-server"], None, &[]),
        5,
    );

    // `servers create` takes the same settings as `update`: a BYOA server with an allowlist and
    // a tool policy in one command.
    let created = ok(&ez(
        c,
        &s.url,
        &[
            "servers",
            "create",
            "byoa-one",
            "--project",
            "my-first-project",
            "--auth-mode",
            "byoa",
            "--byoa-issuer",
            "https://auth.example.com",
            "--byoa-jwks-uri",
            "https://auth.example.com/.well-known/jwks.json",
            "--byoa-authorization-endpoint",
            "https://auth.example.com/oauth/authorize",
            "--byoa-token-endpoint",
            "https://auth.example.com/oauth/token",
            "--access-policy",
            "allowlist",
            "--allow",
            "@example.com",
            "--tool-deny",
            "rm",
            "--json",
        ],
        None,
        &[],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["auth_mode"], "byoa");
    assert_eq!(created["byoa"]["issuer"], "https://auth.example.com");
    assert_eq!(created["access_policy"], "allowlist");
    assert_eq!(
        created["access_allowlist"],
        serde_json::json!(["@example.com"])
    );
    assert_eq!(created["tool_policy"]["deny"], serde_json::json!(["rm"]));
    // A setting that does not validate creates nothing.
    let err = fails(
        &ez(
            c,
            &s.url,
            &[
                "servers",
                "create",
                "half-byoa",
                "--project",
                "my-first-project",
                "--auth-mode",
                "byoa",
            ],
            None,
            &[],
        ),
        2,
    );
    assert!(err.contains("byoa"), "{err}");
    fails(
        &ez(c, &s.url, &["servers", "get", "half-byoa"], None, &[]),
        5,
    );
}

/// `deploy` (refused when the upstream is down, unless forced), `deployments list`, `rollback`.
#[tokio::test]
async fn deploy_list_and_roll_back() {
    let db = TestDb::sqlite();
    // With host-based routing, so that a server's MCP URL is not under the API's origin.
    let s = serve(&db, &["--mcp-domain", "mcp.test"]);
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    ok(&ez(
        c,
        &s.url,
        &["auth", "signup", "--email", "dev@example.com"],
        Some(PASSWORD),
        &[],
    ));
    ok(&ez(c, &s.url, &["project", "create", "p1"], None, &[]));
    let created = ok(&ez(
        c,
        &s.url,
        &["servers", "create", "demo", "--project", "p1"],
        None,
        &[],
    ));
    assert!(
        created.contains("MCP URL: http://demo.mcp.test"),
        "{created}"
    );
    let id = serde_json::from_str::<serde_json::Value>(&ok(&ez(
        c,
        &s.url,
        &["servers", "get", "demo", "--json"],
        None,
        &[],
    )))
    .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dead = "http://127.0.0.1:9/mcp";
    let err = fails(
        &ez(
            c,
            &s.url,
            &["deploy", "demo", "--upstream", dead, "--timeout-ms", "500"],
            None,
            &[],
        ),
        1,
    );
    assert!(
        err.contains("upstream_unhealthy") && err.contains("force"),
        "{err}"
    );
    let out = ok(&ez(
        c,
        &s.url,
        &[
            "deploy",
            &id,
            "--upstream",
            dead,
            "--force",
            "--header",
            "X-Key: s3cret",
        ],
        None,
        &[],
    ));
    assert!(out.contains("forced:"), "{out}");
    // Named by its id, the server is still shown by its MCP URL.
    assert!(
        out.contains("traffic to http://demo.mcp.test now goes there."),
        "{out}"
    );
    ok(&ez(
        c,
        &s.url,
        &[
            "deploy",
            "demo",
            "--upstream",
            "http://127.0.0.1:10/mcp",
            "--force",
        ],
        None,
        &[],
    ));
    let list: serde_json::Value = serde_json::from_str(&ok(&ez(
        c,
        &s.url,
        &["deployments", "list", "demo", "--json"],
        None,
        &[],
    )))
    .unwrap();
    let deployments = list["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(deployments[0]["active"], true);
    assert_eq!(deployments[1]["has_credentials"], true);
    assert!(!list.to_string().contains("s3cret"));
    let first = deployments[1]["id"].as_str().unwrap();
    let out = ok(&ez(c, &s.url, &["rollback", "demo"], None, &[]));
    assert!(out.contains(first), "{out}");
    fails(
        &ez(c, &s.url, &["rollback", "demo", "--to", first], None, &[]),
        6,
    );
    fails(
        &ez(
            c,
            &s.url,
            &["deploy", "demo", "--upstream", "ftp://x/mcp"],
            None,
            &[],
        ),
        2,
    );
}

#[tokio::test]
async fn logs_metrics_usage_audit_and_quota_commands() {
    let db = TestDb::sqlite();
    let s = serve(&db, &[]);
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let run = |args: &[&str]| ok(&ez(c, &s.url, args, None, &[]));
    ok(&ez(
        c,
        &s.url,
        &["auth", "signup", "--email", "dev@example.com"],
        Some(PASSWORD),
        &[],
    ));
    run(&["project", "create", "p1"]);
    run(&["servers", "create", "demo", "--project", "p1"]);
    run(&[
        "deploy",
        "demo",
        "--upstream",
        "http://127.0.0.1:9/mcp",
        "--force",
    ]);

    // Follow first, then make a request: the follower prints it.
    let mut follower = Command::new(BIN)
        .args(["logs", "demo", "--follow", "--json"])
        .env("EZFORGE_CONFIG_DIR", c)
        .env("EZFORGE_API_URL", &s.url)
        .env_remove("EZFORGE_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let resp = reqwest::Client::new()
        .post(format!("{}/mcp/demo", s.url))
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let mut line = String::new();
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let _ = follower.kill();
    let _ = follower.wait();
    let followed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(followed["reason"], "no_token", "{line}");
    assert_eq!(followed["status"], 401);

    let page: serde_json::Value =
        serde_json::from_str(&run(&["logs", "demo", "--json", "--decision", "denied"])).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "{page}");
    let text = run(&["logs", "demo", "--since", "1h"]);
    assert!(
        text.contains("denied:no_token") && text.contains("401"),
        "{text}"
    );
    let bad = fails(
        &ez(c, &s.url, &["logs", "demo", "--since", "soon"], None, &[]),
        2,
    );
    assert!(bad.contains("since"), "{bad}");

    let metrics: serde_json::Value =
        serde_json::from_str(&run(&["metrics", "demo", "--window", "15m", "--json"])).unwrap();
    assert_eq!(metrics["totals"]["requests"], 1, "{metrics}");
    assert_eq!(metrics["totals"]["denials"], 1);
    let chart = run(&["metrics", "demo"]);
    assert!(chart.contains("requests") && chart.contains('█'), "{chart}");

    run(&["project", "set-quota", "p1", "1000"]);
    let usage = run(&["usage"]);
    assert!(usage.contains("Quota: 0 of 1000"), "{usage}");
    let usage: serde_json::Value = serde_json::from_str(&run(&["usage", "--json"])).unwrap();
    assert_eq!(usage["quota"]["monthly_requests"], 1000);
    fails(
        &ez(
            c,
            &s.url,
            &["project", "set-quota", "p1", "lots"],
            None,
            &[],
        ),
        2,
    );

    let audit: serde_json::Value = serde_json::from_str(&run(&["audit", "--json"])).unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "project.quota",
            "deployment.create",
            "server.create",
            "project.create"
        ]
    );
}
