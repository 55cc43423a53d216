//! Gateway overhead, measured with wrk on this machine in one run, same load for every target,
//! a valid ES256 token on every request:
//!
//! (a) a minimal upstream directly (HAProxy answering a fixed JSON-RPC result itself),
//! (b) HAProxy as a plain proxy in front of it,
//! (c) HAProxy with `jwt_verify` on the same ES256 token,
//! (d) ezForge's gateway: token check, scope check, forwarding (and (e), its request log off),
//! (f) a bare hyper proxy with no checks at all, served the way ezForge serves (per-core
//!     threads, each with its own upstream connections): what hyper itself costs on this machine.
//!
//! A second table splits the CPU of each measured run per request between wrk, HAProxy (the
//! upstream, and the proxy in (b) and (c)), ezForge and this process (the bare proxy of (f)),
//! with the machine's idle share (`support/cpu.rs`).
//!
//! `bash scripts/bench-gateway.sh` (installs haproxy and wrk from Debian when missing).
//! BENCH_SECONDS (default 8), BENCH_CONNECTIONS (32), BENCH_ROUNDS (3): every target is measured
//! once per round, rounds interleaved, and the table shows each column's median — on two cores
//! shared by wrk, HAProxy and ezForge a single run moves by ±15%.

#[path = "support/cpu.rs"]
mod cpu;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ezforge");
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9kGp5aZ4l1RKqxNfLwN1xqlA0ZtYq3vS8cE2";
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The ES256 public key of a JWK as a PEM SubjectPublicKeyInfo (what HAProxy reads).
fn jwk_to_pem(jwk: &Value) -> String {
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("x");
    let y = URL_SAFE_NO_PAD
        .decode(jwk["y"].as_str().expect("y"))
        .expect("y");
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 04||X||Y }
    let mut der = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    der.push(4);
    der.extend_from_slice(&x);
    der.extend_from_slice(&y);
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

async fn ezforge_token(http: &reqwest::Client, url: &str, upstream: &str) -> String {
    let client = ezforge_client::Client::new(url);
    let s = client
        .signup(&ezforge_proto::SignupRequest {
            email: "bench@example.com".into(),
            password: "bench-password-123".into(),
            invite_code: None,
        })
        .await
        .expect("signup");
    let authed = client.with_auth(ezforge_client::Auth::Session {
        token: s.token.clone(),
        csrf: s.info.csrf_token.clone(),
    });
    authed.create_project("bench").await.expect("project");
    authed
        .create_server(
            "bench",
            &ezforge_proto::CreateServerRequest {
                name: "Bench".into(),
                slug: "bench".into(),
                environment: None,
                ..Default::default()
            },
        )
        .await
        .expect("server");
    let d = authed
        .deploy(
            "bench",
            &ezforge_proto::CreateDeploymentRequest {
                upstream_url: upstream.into(),
                headers: Default::default(),
                timeout_ms: None,
                force: false,
            },
        )
        .await
        .expect("deploy");
    eprintln!("deployed: {}", d.health);
    let reg: Value = http
        .post(format!("{url}/register"))
        .json(&json!({"client_name": "bench", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("registration");
    let client_id = reg["client_id"].as_str().expect("client_id").to_string();
    let resource = format!("{url}/mcp/bench");
    let challenge = ezforge_core::oauth::token::s256(VERIFIER);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("scope", "mcp:read mcp:write"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", &resource),
        ])
        .finish();
    let cookie = format!("ezf_session={}", s.token);
    let page = http
        .get(format!("{url}/authorize?{query}"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("authorize")
        .text()
        .await
        .expect("page");
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = page.find(&marker).expect("field") + marker.len();
        page[start..start + page[start..].find('"').expect("quote")].to_string()
    };
    let form = [
        ("request", field("request")),
        ("csrf", field("csrf")),
        ("decision", "allow".to_string()),
    ];
    let resp = http
        .post(format!("{url}/authorize"))
        .header("Cookie", &cookie)
        .form(&form)
        .send()
        .await
        .expect("consent");
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let code = url::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let tokens: Value = http
        .post(format!("{url}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("tokens");
    tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non2xx: u64,
    /// Requests wrk completed in the run.
    requests: usize,
    /// Where the machine's CPU went over the run; `None` for a warm-up.
    cpu: Option<cpu::Usage>,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(dir: &Path, url: &str, token: &str, seconds: u64, connections: u64) -> Wrk {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{BODY}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
        ),
    )
    .expect("lua");
    let before = cpu::Snapshot::take();
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = Wrk {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non2xx: 0,
        requests: 0,
        cpu: None,
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some((n, _)) = t.split_once(" requests in ") {
            w.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            w.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            w.p99_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.non2xx = v.trim().parse().unwrap_or(0);
        }
    }
    w.cpu = Some(before.usage_since(w.requests));
    w
}

fn main() {
    let seconds = env_u64("BENCH_SECONDS", 8);
    let connections = env_u64("BENCH_CONNECTIONS", 32);
    let rounds = env_u64("BENCH_ROUNDS", 3).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let upstream_answer = r#"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"serverInfo\":{\"name\":\"bench-upstream\",\"version\":\"1\"}}}"#;

    // The minimal upstream first (ezForge's deploy checks it).
    let upstream_cfg = dir.path().join("upstream.cfg");
    std::fs::write(
        &upstream_cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend upstream\n  bind 127.0.0.1:{pa}\n  http-request return status 200 content-type application/json string \"{upstream_answer}\"\n"
        ),
    )
    .expect("cfg");
    let _upstream = Proc(
        Command::new("haproxy")
            .arg("-f")
            .arg(&upstream_cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)"),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let upstream_url = format!("http://127.0.0.1:{pa}/mcp");
    // Two ezForge instances on the same upstream: the request log on (the default) and off.
    let (_ezforge, url) = start_ezforge(&dir.path().join("ezforge"), &[]);
    let (_ezforge_off, url_off) =
        start_ezforge(&dir.path().join("ezforge-off"), &["--request-log", "false"]);
    let token = rt.block_on(ezforge_token(&http, &url, &upstream_url));
    let token_off = rt.block_on(ezforge_token(&http, &url_off, &upstream_url));
    let jwks: Value = rt.block_on(async {
        http.get(format!("{url}/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json")
    });
    let pem = dir.path().join("ezforge.pem");
    std::fs::write(&pem, jwk_to_pem(&jwks["keys"][0])).expect("pem");

    let proxies_cfg = dir.path().join("proxies.cfg");
    std::fs::write(
        &proxies_cfg,
        format!(
            "global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             backend upstream\n  server u 127.0.0.1:{pa}\n\
             frontend plain\n  bind 127.0.0.1:{pb}\n  default_backend upstream\n\
             frontend jwt\n  bind 127.0.0.1:{pc}\n  http-request set-var(txn.bearer) http_auth_bearer\n  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')\n  http-request deny unless {{ var(txn.alg) -m str ES256 }}\n  http-request deny unless {{ var(txn.bearer),jwt_verify(txn.alg,\"{}\") -m int 1 }}\n  default_backend upstream\n",
            pem.display()
        ),
    )
    .expect("cfg");
    let _proxies = Proc(
        Command::new("haproxy")
            .arg("-f")
            .arg(&proxies_cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy"),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));

    let targets = [
        (
            "(a) upstream directly",
            format!("http://127.0.0.1:{pa}/mcp"),
        ),
        (
            "(b) HAProxy, plain proxy",
            format!("http://127.0.0.1:{pb}/mcp"),
        ),
        (
            "(c) HAProxy + jwt_verify ES256",
            format!("http://127.0.0.1:{pc}/mcp"),
        ),
        (
            "(d) ezForge gateway, request log on",
            format!("{url}/mcp/bench"),
        ),
        (
            "(e) ezForge gateway, request log off",
            format!("{url_off}/mcp/bench"),
        ),
        (
            "(f) bare hyper proxy, no checks",
            format!("http://{}/mcp", bare_proxy(&upstream_url)),
        ),
    ];
    // Each round warms every target up briefly, then measures it.
    let mut runs: Vec<Vec<Wrk>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        for (i, (name, target)) in targets.iter().enumerate() {
            let token = if target.starts_with(&url_off) {
                &token_off
            } else {
                &token
            };
            let _ = wrk(dir.path(), target, token, 1, connections);
            // For whoever profiles a phase (`perf record -p …` once this line appears).
            eprintln!("measuring {name}");
            runs[i].push(wrk(dir.path(), target, token, seconds, connections));
        }
    }
    let median = |values: Vec<f64>| {
        let mut v = values;
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rows: Vec<(&str, Wrk)> = targets
        .iter()
        .zip(&runs)
        .map(|((name, _), runs)| {
            let w = Wrk {
                rps: median(runs.iter().map(|w| w.rps).collect()),
                p50_ms: median(runs.iter().map(|w| w.p50_ms).collect()),
                p99_ms: median(runs.iter().map(|w| w.p99_ms).collect()),
                non2xx: runs.iter().map(|w| w.non2xx).sum(),
                requests: runs.iter().map(|w| w.requests).sum(),
                cpu: None,
            };
            (*name, w)
        })
        .collect();
    let base = rows[0].1.p99_ms;
    let (b, c) = (rows[1].1.rps, rows[2].1.rps);
    println!();
    println!(
        "gateway benchmark: wrk -t2 -c{connections} -d{seconds}s, POST tools/call with a valid ES256 token on every request; medians of {rounds} interleaved rounds"
    );
    println!("| target | requests/s | p50 ms | p99 ms | p99 added over (a) ms | non-2xx |");
    println!("|---|---|---|---|---|---|");
    for (name, w) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            w.rps,
            w.p50_ms,
            w.p99_ms,
            w.p99_ms - base,
            w.non2xx
        );
    }
    println!();
    println!("requests/s in each round:");
    for ((name, _), runs) in targets.iter().zip(&runs) {
        let each: Vec<String> = runs.iter().map(|w| format!("{:.0}", w.rps)).collect();
        println!("  {name}: {}", each.join(", "));
    }
    // CPU per request, each column's median over the rounds. The upstream's HAProxy is in
    // every row: what a proxy costs is its row's total less row (a)'s.
    let generator = cpu::own_program();
    let wrk_program = cpu::reaped_by(&generator);
    let columns: [(&str, &str); 4] = [
        (wrk_program.as_str(), "wrk"),
        ("haproxy", "HAProxy"),
        ("ezforge", "ezForge"),
        (generator.as_str(), "this process (f)"),
    ];
    let named: Vec<&str> = columns.iter().map(|(p, _)| *p).collect();
    println!();
    println!(
        "CPU per request in µs (from /proc; medians of the rounds), and the machine's idle share"
    );
    let heads: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
    println!(
        "| target | {} | other | total | machine idle |",
        heads.join(" | ")
    );
    println!("|---|{}---|---|---|", "---|".repeat(columns.len()));
    for ((name, _), runs) in targets.iter().zip(&runs) {
        let usages: Vec<&cpu::Usage> = runs.iter().filter_map(|w| w.cpu.as_ref()).collect();
        if usages.is_empty() {
            continue;
        }
        let of = |f: &dyn Fn(&cpu::Usage) -> f64| median(usages.iter().map(|u| f(u)).collect());
        let cells: Vec<String> = columns
            .iter()
            .map(|(program, _)| format!("{:.0}", of(&|u| u.of(program))))
            .collect();
        let other = of(&|u| u.others(&named));
        let total = of(&|u| {
            u.per_request_us
                .iter()
                .map(|(_, us)| us)
                .fold(0.0, |a, b| a + b)
        });
        let idle = usages
            .iter()
            .filter_map(|u| u.idle_percent)
            .collect::<Vec<_>>();
        let idle = if idle.is_empty() {
            "—".to_string()
        } else {
            format!("{:.0}%", median(idle))
        };
        println!(
            "| {name} | {} | {other:.0} | {total:.0} | {idle} |",
            cells.join(" | ")
        );
    }
    let (d, e, f) = (rows[3].1.rps, rows[4].1.rps, rows[5].1.rps);
    println!();
    println!(
        "(d)/(c) = {:.2}× (target ≥ 3×); (d)/(b) = {:.2}× (target ≥ 1×); p99 added by (d) = {:.2} ms (target ≤ 1 ms)",
        d / c,
        d / b,
        rows[3].1.p99_ms - base
    );
    println!(
        "request log on vs off: (d)/(e) = {:.2} (target ≥ 0.90); the gateway against a bare hyper proxy: (d)/(f) = {:.2}, and that proxy against HAProxy: (f)/(b) = {:.2}",
        d / e,
        d / f,
        f / b
    );
}

/// Starts `ezforge serve` on a free port with its own data directory; returns it and its URL.
fn start_ezforge(data: &Path, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        // BENCH_EZFORGE_LOG (say `sqlx::query=debug`) shows what the instances do under load.
        .env(
            "EZFORGE_LOG",
            std::env::var("BENCH_EZFORGE_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ezforge serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    (Proc(child), url)
}

/// A proxy that forwards every request to `upstream` and does nothing else, on per-core
/// threads with the upstream connections ezForge's serving threads use (`upstream_conns`).
/// Returns its address.
fn bare_proxy(upstream: &str) -> std::net::SocketAddr {
    use ezforge_server::upstream_conns::{self, Target};
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;

    async fn forward(
        target: std::sync::Arc<Target>,
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut out = hyper::Request::builder()
            .method(parts.method)
            .uri(target.path.clone())
            .header("host", target.host.clone());
        for name in ["content-type", "accept"] {
            if let Some(v) = parts.headers.get(name) {
                out = out.header(name, v);
            }
        }
        let (resp, lease) = upstream_conns::send(&target, out.body(body.into())?).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        lease.release();
        Ok(hyper::Response::from_parts(parts, Full::new(body)))
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = std::sync::Arc::new(
        Target::of(&upstream.parse().expect("upstream uri")).expect("a plain-HTTP upstream"),
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut senders = Vec::new();
    for _ in 0..threads {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        senders.push(tx);
        let target = target.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                while let Some(stream) = rx.recv().await {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                        continue;
                    };
                    let target = target.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| forward(target.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
    }
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            let _ = stream.set_nonblocking(true);
            let _ = senders[i % senders.len()].send(stream);
        }
    });
    addr
}
