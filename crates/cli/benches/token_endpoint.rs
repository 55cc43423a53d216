//! Token endpoint throughput: authorization-code exchange and refresh (with rotation), on
//! ezForge with SQLite and with PostgreSQL, and on `oidc-provider` (npm) configured the same way
//! (PKCE S256, resource indicators, ES256 JWT access tokens, rotating refresh tokens), all on
//! this machine in the same run with the same load generator. Both servers run as their own
//! processes (`ezforge serve`, `node`); the load generator is this process. Prints a table.
//!
//! A second table splits each timed phase's CPU per request between the server, PostgreSQL and
//! the load generator, with the machine's idle share: whether a server was bound by the
//! machine's two cores or by waiting (`support/cpu.rs`).
//!
//! `bash scripts/bench-token.sh` (installs the peer with `npm ci`, then runs this).
//! Environment: BENCH_CODES (default 2000), BENCH_CONCURRENCY (32), BENCH_CHAIN (50 refreshes
//! per chain, one chain per worker), BENCH_TARGETS (which of `sqlite`, `postgres` and
//! `oidc-provider` to run, comma-separated; all by default), BENCH_ROUNDS (3: every target is
//! measured once per round, rounds interleaved, and the tables give medians), BENCH_WARMUP
//! (2000: code exchanges, and as many refreshes, each server serves unmeasured first; 0 for
//! none).

#[path = "support/cpu.rs"]
mod cpu;

use ezforge_core::oauth::token::s256;
use ezforge_testkit::{Backend, TestDb};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9kGp5aZ4l1RKqxNfLwN1xqlA0ZtYq3vS8cE2";
const REDIRECT: &str = "http://127.0.0.1:9/cb";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where and how to ask for tokens.
struct Target {
    name: String,
    token_url: String,
    client_id: String,
    resource: String,
}

impl Target {
    fn exchange_form(&self, code: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("code_verifier", VERIFIER.into()),
            ("redirect_uri", REDIRECT.into()),
            ("client_id", self.client_id.clone()),
            ("resource", self.resource.clone()),
        ]
    }

    fn refresh_form(&self, token: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", token.into()),
            ("client_id", self.client_id.clone()),
            ("resource", self.resource.clone()),
        ]
    }
}

struct Outcome {
    ok: usize,
    failed: usize,
    elapsed: Duration,
}

async fn post(http: &reqwest::Client, url: &str, form: &[(&'static str, String)]) -> Option<Value> {
    let resp = http.post(url).form(form).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// One keep-alive HTTP/1.1 connection of the load generator: hyper's bare client connection,
/// driven on the generator's own thread, so that the generator costs little beside the servers
/// (reqwest, used before, took a good share of the 2 cores from whichever server it measured).
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    path: String,
}

/// The fields of a token response the load generator looks at.
#[derive(serde::Deserialize)]
struct Tokens {
    access_token: Option<String>,
    refresh_token: Option<String>,
}

impl Conn {
    async fn open(url: &str) -> Option<Conn> {
        let uri: hyper::Uri = url.parse().ok()?;
        let host = uri.authority()?.to_string();
        let stream = tokio::net::TcpStream::connect(&host).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        Some(Conn {
            send,
            host,
            path: uri.path().to_string(),
        })
    }

    /// POSTs a form; the token response, if the answer was a success.
    async fn post(&mut self, form: &[(&'static str, String)]) -> Option<Tokens> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send.ready().await.ok()?;
        let req = hyper::Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.host.as_str())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let resp = self.send.send_request(req).await.ok()?;
        let ok = resp.status().is_success();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        if !ok {
            return None;
        }
        serde_json::from_slice(&body).ok()
    }
}

/// `concurrency` workers, each on its own connection, exchange every code once.
async fn exchange_load(t: &Target, codes: Vec<String>, concurrency: usize) -> Outcome {
    let queue = Arc::new(Mutex::new(codes));
    let mut conns = Vec::new();
    for _ in 0..concurrency {
        conns.push(
            Conn::open(&t.token_url)
                .await
                .expect("connect to the token endpoint"),
        );
    }
    let start = Instant::now();
    let workers = conns.into_iter().map(|mut conn| {
        let queue = queue.clone();
        async move {
            let (mut ok, mut failed) = (0, 0);
            loop {
                let Some(code) = queue.lock().await.pop() else {
                    break;
                };
                match conn.post(&t.exchange_form(&code)).await {
                    Some(Tokens {
                        access_token: Some(_),
                        ..
                    }) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = start.elapsed();
    Outcome {
        ok: results.iter().map(|r| r.0).sum(),
        failed: results.iter().map(|r| r.1).sum(),
        elapsed,
    }
}

/// One refresh chain per worker and connection, `chain` rotations each.
async fn refresh_load(t: &Target, tokens: Vec<String>, chain: usize) -> Outcome {
    let mut chains = Vec::new();
    for token in tokens {
        chains.push((
            Conn::open(&t.token_url)
                .await
                .expect("connect to the token endpoint"),
            token,
        ));
    }
    let start = Instant::now();
    let workers = chains.into_iter().map(|(mut conn, mut token)| async move {
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..chain {
            match conn.post(&t.refresh_form(&token)).await {
                Some(Tokens {
                    refresh_token: Some(next),
                    ..
                }) => {
                    token = next;
                    ok += 1;
                }
                _ => {
                    failed += 1;
                    break;
                }
            }
        }
        (ok, failed)
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = start.elapsed();
    Outcome {
        ok: results.iter().map(|r| r.0).sum(),
        failed: results.iter().map(|r| r.1).sum(),
        elapsed,
    }
}

/// `ezforge serve` as its own process on `backend`, with a user, a project, a server and a
/// public client that the user has already consented to.
struct Ezforge {
    child: Child,
    _db: TestDb,
    _data: tempfile::TempDir,
    target: Target,
    url: String,
    session: String,
}

impl Drop for Ezforge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_ezforge(backend: Backend) -> Option<Ezforge> {
    let db = TestDb::new(backend).await?;
    let data = tempfile::tempdir().ok()?;
    let conns = env_usize("BENCH_DB_CONNECTIONS", 10).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ezforge"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--db-max-connections",
            &conns,
        ])
        .args([
            "--token-rate",
            "4000000000",
            "--register-rate",
            "4000000000",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("EZFORGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let mut out = BufReader::new(child.stdout.take()?);
    let mut line = String::new();
    out.read_line(&mut line).ok()?;
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line.trim().rsplit(' ').next()?.to_string();
    let client = ezforge_client::Client::new(&url);
    let s = client
        .signup(&ezforge_proto::SignupRequest {
            email: "bench@example.com".into(),
            password: "bench-password-123".into(),
            invite_code: None,
        })
        .await
        .ok()?;
    let authed = client.with_auth(ezforge_client::Auth::Session {
        token: s.token.clone(),
        csrf: s.info.csrf_token.clone(),
    });
    authed.create_project("bench").await.ok()?;
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
        .ok()?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?;
    let reg: Value = http
        .post(format!("{url}/register"))
        .json(&serde_json::json!({
            "client_name": "bench",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let target = Target {
        name: format!(
            "ezForge ({})",
            if backend == Backend::Sqlite {
                "sqlite"
            } else {
                "postgres"
            }
        ),
        token_url: format!("{url}/token"),
        client_id: reg["client_id"].as_str()?.to_string(),
        resource: format!("{url}/mcp/bench"),
    };
    let ez = Ezforge {
        child,
        _db: db,
        _data: data,
        target,
        url,
        session: s.token,
    };
    // Consent once; later authorizations come straight back with a code.
    let page = http
        .get(ez.authorize_url())
        .header("Cookie", ez.cookie())
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = page.find(&marker)? + marker.len();
        Some(page[start..start + page[start..].find('"')?].to_string())
    };
    let form = [
        ("request", field("request")?),
        ("csrf", field("csrf")?),
        ("decision", "allow".to_string()),
    ];
    http.post(format!("{}/authorize", ez.url))
        .header("Cookie", ez.cookie())
        .form(&form)
        .send()
        .await
        .ok()?;
    Some(ez)
}

impl Ezforge {
    fn cookie(&self) -> String {
        format!("ezf_session={}", self.session)
    }

    fn authorize_url(&self) -> String {
        let q = serde_urlencoded_pairs(&[
            ("response_type", "code"),
            ("client_id", &self.target.client_id),
            ("redirect_uri", REDIRECT),
            ("scope", "mcp:read mcp:write offline_access"),
            ("code_challenge", &s256(VERIFIER)),
            ("code_challenge_method", "S256"),
            ("resource", &self.target.resource),
        ]);
        format!("{}/authorize?{q}", self.url)
    }

    /// Codes the way a user gets them: `GET /authorize` (a public loopback client sees the
    /// consent page every time), then the consent form's `POST`.
    async fn codes(&self, n: usize) -> Vec<String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let fetch = |_| {
            let (http, url, cookie, base) = (
                http.clone(),
                self.authorize_url(),
                self.cookie(),
                self.url.clone(),
            );
            async move {
                let resp = http
                    .get(&url)
                    .header("Cookie", &cookie)
                    .send()
                    .await
                    .expect("authorize");
                let resp = if resp.status() == 200 {
                    let page = resp.text().await.expect("consent page");
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
                    http.post(format!("{base}/authorize"))
                        .header("Cookie", &cookie)
                        .form(&form)
                        .send()
                        .await
                        .expect("consent")
                } else {
                    resp
                };
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .expect("redirect")
                    .to_string();
                let parsed = url::Url::parse(&location).expect("redirect URL");
                parsed
                    .query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
                    .expect("code")
            }
        };
        let mut codes = Vec::with_capacity(n);
        while codes.len() < n {
            let batch = (n - codes.len()).min(64);
            codes.extend(futures::future::join_all((0..batch).map(fetch)).await);
        }
        codes
    }
}

fn serde_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

struct Peer {
    child: Child,
    target: Target,
    mint_url: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_peer() -> Result<Peer, String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/token");
    if !dir.join("node_modules/oidc-provider").exists() {
        return Err(format!(
            "run `npm ci` in {} first (scripts/bench-token.sh does)",
            dir.display()
        ));
    }
    let mut child = Command::new("node")
        .arg("oidc-provider.mjs")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start node: {e}"))?;
    // Its first line says where it listens. Read on a thread of its own, so that a peer that
    // never gets there (seen once: node alive, silent, idle) fails the run instead of hanging
    // it.
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut line = String::new();
        let read = out.read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
        std::io::copy(&mut out, &mut std::io::sink())
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(read) => read.map_err(|e| e.to_string())?,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("oidc-provider did not say where it listens within 30 s".into());
        }
    };
    let info: Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("unexpected first line `{line}`: {e}"))?;
    let s = |k: &str| info[k].as_str().unwrap_or_default().to_string();
    Ok(Peer {
        mint_url: format!("{}/bench/codes", s("url")),
        target: Target {
            name: "oidc-provider".into(),
            token_url: s("token_endpoint"),
            client_id: s("client_id"),
            resource: s("resource"),
        },
        child,
    })
}

async fn peer_codes(http: &reqwest::Client, peer: &Peer, n: usize) -> Vec<String> {
    let mut codes = Vec::with_capacity(n);
    while codes.len() < n {
        let batch = (n - codes.len()).min(500);
        let url = format!("{}?n={batch}&challenge={}", peer.mint_url, s256(VERIFIER));
        let v: Vec<String> = http
            .post(url)
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("codes");
        codes.extend(v);
    }
    codes
}

struct Row {
    target: String,
    /// The server's program name in `/proc` (`ezforge`, `node`).
    program: &'static str,
    grant: &'static str,
    outcome: Outcome,
    cpu: cpu::Usage,
}

fn rate(o: &Outcome) -> f64 {
    o.ok as f64 / o.elapsed.as_secs_f64()
}

/// Exchanges `codes` (all but the last `concurrency`), then runs `concurrency` refresh chains
/// of `chain` rotations from the codes kept back; pushes a row for each phase to `rows`, or
/// measures nothing when `rows` is `None` (a warm-up).
async fn measure(
    http: &reqwest::Client,
    t: &Target,
    program: &'static str,
    codes: Vec<String>,
    concurrency: usize,
    chain: usize,
    rows: Option<&mut Vec<Row>>,
) {
    let doing = if rows.is_some() {
        "measuring"
    } else {
        "warming up"
    };
    let (seed, codes) = {
        let mut codes = codes;
        let seed: Vec<String> = codes.split_off(codes.len() - concurrency);
        (seed, codes)
    };
    eprintln!(
        "{doing} {}: authorization_code ({} codes)",
        t.name,
        codes.len()
    );
    let before = cpu::Snapshot::take();
    let exchange = exchange_load(t, codes, concurrency).await;
    let exchanged = Row {
        target: t.name.clone(),
        program,
        grant: "authorization_code",
        cpu: before.usage_since(exchange.ok + exchange.failed),
        outcome: exchange,
    };
    let mut tokens = Vec::new();
    for code in seed {
        if let Some(v) = post(http, &t.token_url, &t.exchange_form(&code)).await {
            tokens.push(v["refresh_token"].as_str().unwrap_or_default().to_string());
        }
    }
    eprintln!(
        "{doing} {}: refresh_token ({} chains)",
        t.name,
        tokens.len()
    );
    let before = cpu::Snapshot::take();
    let refresh = refresh_load(t, tokens, chain).await;
    let refreshed = Row {
        target: t.name.clone(),
        program,
        grant: "refresh_token",
        cpu: before.usage_since(refresh.ok + refresh.failed),
        outcome: refresh,
    };
    if let Some(rows) = rows {
        rows.extend([exchanged, refreshed]);
    }
}

/// Whether BENCH_TARGETS names `target` (or is unset).
fn wanted(target: &str) -> bool {
    std::env::var("BENCH_TARGETS").map_or(true, |v| v.split(',').any(|t| t.trim() == target))
}

/// A server being measured: ezForge on one database, or the peer.
enum Server {
    Ezforge(Ezforge),
    Peer(Peer),
}

impl Server {
    fn target(&self) -> &Target {
        match self {
            Server::Ezforge(ez) => &ez.target,
            Server::Peer(peer) => &peer.target,
        }
    }

    /// The server's program name in `/proc`.
    fn program(&self) -> &'static str {
        match self {
            Server::Ezforge(_) => "ezforge",
            Server::Peer(_) => "node",
        }
    }

    /// `n` fresh codes, obtained before the clock starts.
    async fn codes(&self, http: &reqwest::Client, n: usize) -> Vec<String> {
        match self {
            Server::Ezforge(ez) => ez.codes(n).await,
            Server::Peer(peer) => peer_codes(http, peer, n).await,
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Each (target, grant) pair's rows, one per round, in the order the pairs were first measured.
fn by_phase(rows: &[Row]) -> Vec<Vec<&Row>> {
    let mut phases: Vec<Vec<&Row>> = Vec::new();
    for r in rows {
        match phases
            .iter_mut()
            .find(|p| p[0].target == r.target && p[0].grant == r.grant)
        {
            Some(p) => p.push(r),
            None => phases.push(vec![r]),
        }
    }
    phases
}

fn main() {
    if let Ok(v) = std::env::var("BENCH_TARGETS")
        && let Some(t) = v
            .split(',')
            .map(str::trim)
            .find(|t| !["sqlite", "postgres", "oidc-provider"].contains(t))
    {
        eprintln!("BENCH_TARGETS: unknown target {t:?} (known: sqlite, postgres, oidc-provider)");
        std::process::exit(2);
    }
    let n = env_usize("BENCH_CODES", 2000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let chain = env_usize("BENCH_CHAIN", 50);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    // One thread for the whole load generator, as wrk's `-t1`: it leaves the rest of the
    // machine to the server being measured.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("http client");
        // Every server is started first and stays up, so that the rounds can be interleaved:
        // the host's speed drifts by a third and more within minutes, and a drift then lands
        // on every target instead of on whichever ran during it.
        let mut servers = Vec::new();
        for (backend, name) in [(Backend::Sqlite, "sqlite"), (Backend::Postgres, "postgres")] {
            if !wanted(name) {
                continue;
            }
            let Some(ez) = start_ezforge(backend).await else {
                eprintln!("skipped ezForge on {backend:?}: could not start");
                continue;
            };
            if std::env::var("BENCH_BASELINE").is_ok() {
                // The load generator's own ceiling: a request the server refuses at once.
                let junk: Vec<String> = (0..n).map(|i| format!("not-a-code-{i}")).collect();
                let o = exchange_load(&ez.target, junk, concurrency).await;
                println!("baseline {}: {} refusals in {:.2}s = {:.0}/s", ez.target.name, o.failed, o.elapsed.as_secs_f64(), o.failed as f64 / o.elapsed.as_secs_f64());
            }
            servers.push(Server::Ezforge(ez));
        }
        match wanted("oidc-provider").then(start_peer) {
            None => {}
            Some(Ok(peer)) => servers.push(Server::Peer(peer)),
            Some(Err(e)) => eprintln!("skipped oidc-provider: {e}"),
        }
        // Unmeasured first: oidc-provider runs on V8, whose JIT compiles its hot paths during
        // the first thousands of requests (its first round measured up to a third slower than
        // the next ones), and every server's caches start cold.
        let warm = env_usize("BENCH_WARMUP", 2000);
        if warm > 0 {
            for s in &servers {
                let codes = s.codes(&http, warm + concurrency).await;
                measure(&http, s.target(), s.program(), codes, concurrency, (warm / concurrency).max(1), None).await;
            }
        }
        let mut rows = Vec::new();
        for round in 1..=rounds {
            eprintln!("round {round} of {rounds}");
            for s in &servers {
                let codes = s.codes(&http, n + concurrency).await;
                measure(&http, s.target(), s.program(), codes, concurrency, chain, Some(&mut rows)).await;
            }
        }
        let phases = by_phase(&rows);
        let rates = |p: &[&Row]| p.iter().map(|r| rate(&r.outcome)).collect::<Vec<_>>();
        let peer = |grant: &str| {
            phases
                .iter()
                .find(|p| p[0].target == "oidc-provider" && p[0].grant == grant)
                .map(|p| rates(p))
        };
        println!();
        println!("token endpoint throughput ({n} code exchanges; {concurrency} refresh chains × {chain}; {concurrency} concurrent clients; medians of {rounds} interleaved rounds)");
        println!("| target | grant | ok | failed | requests/s | × oidc-provider | requests/s in each round | × in each round |");
        println!("|---|---|---|---|---|---|---|---|");
        for p in &phases {
            let mine = rates(p);
            let theirs = peer(p[0].grant);
            let ratio = theirs.as_ref().map(|t| format!("{:.1}×", median(&mine) / median(t))).unwrap_or_else(|| "—".into());
            // Each round against the peer's phase of the same round.
            let each_ratio = theirs
                .as_ref()
                .map(|t| mine.iter().zip(t).map(|(m, t)| format!("{:.1}×", m / t)).collect::<Vec<_>>().join(", "))
                .unwrap_or_else(|| "—".into());
            let each: Vec<String> = mine.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                p[0].target,
                p[0].grant,
                p.iter().map(|r| r.outcome.ok).sum::<usize>(),
                p.iter().map(|r| r.outcome.failed).sum::<usize>(),
                median(&mine),
                ratio,
                each.join(", "),
                each_ratio
            );
        }
        // Where each phase's CPU went, each column's median over the rounds. On two cores the
        // whole machine is 2 s of CPU per second: a server whose phase left the machine idle
        // was waiting, not computing.
        let generator = cpu::own_program();
        println!();
        println!("CPU per request over each timed phase, in µs (from /proc; medians of the rounds), and the machine's idle share");
        println!("| target | grant | server | postgres | load generator | other | machine idle |");
        println!("|---|---|---|---|---|---|---|");
        for p in &phases {
            let named = [p[0].program, "postgres", generator.as_str()];
            let of = |f: &dyn Fn(&cpu::Usage) -> f64| median(&p.iter().map(|r| f(&r.cpu)).collect::<Vec<_>>());
            let idle: Vec<f64> = p.iter().filter_map(|r| r.cpu.idle_percent).collect();
            let idle = if idle.is_empty() { "—".to_string() } else { format!("{:.0}%", median(&idle)) };
            // The largest other consumer, named from the round whose throughput was the median.
            let mid = median(&rates(p));
            let top = p
                .iter()
                .find(|r| rate(&r.outcome) == mid)
                .and_then(|r| r.cpu.top_other(&named))
                .map(|name| format!(" (most: {name})"))
                .unwrap_or_default();
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0}{top} | {} |",
                p[0].target,
                p[0].grant,
                of(&|c| c.of(p[0].program)),
                of(&|c| c.of("postgres")),
                of(&|c| c.of(&generator)),
                of(&|c| c.others(&named)),
                idle
            );
        }
    });
}
