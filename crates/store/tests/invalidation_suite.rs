//! Cross-node invalidation through the store, on a fresh SQLite file and a fresh PostgreSQL
//! database: two stores opened on one database stand for two nodes.

use ezforge_core::invalidation::Invalidation;
use ezforge_core::store::Store;
use ezforge_store::{INVALIDATION_LISTENER, SqlStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;

/// How long a message may take before the test gives up. Generous: this is a bound on a hang,
/// not a measure of speed (a message takes milliseconds).
const PATIENCE: Duration = Duration::from_secs(20);

async fn open(url: &str) -> SqlStore {
    SqlStore::open(url, 2).await.expect("open store")
}

async fn next(rx: &mut Receiver<Invalidation>) -> Invalidation {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a message within the test's patience")
        .expect("the subscription is still open")
}

/// Publishes `change` until `rx` hears it, letting `Everything` pass: on a slow machine the
/// proxied node may take a slow answer for a lost connection and listen again, missing what was
/// sent meanwhile (which `Everything` says). Any other message fails the test.
async fn until_heard(rx: &mut Receiver<Invalidation>, publisher: &SqlStore, change: Invalidation) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    'publish: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{change:?} never heard"
        );
        publisher
            .publish_invalidation(&change)
            .await
            .expect("publish");
        loop {
            match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                Ok(Some(heard)) if heard == change => return,
                Ok(Some(Invalidation::Everything)) => continue,
                Ok(Some(other)) => panic!("heard {other:?} while waiting for {change:?}"),
                Ok(None) => panic!("the subscription ended"),
                Err(_) => continue 'publish,
            }
        }
    }
}

/// Listening connections to this database, by the name they give (`pg_stat_activity`).
async fn listening_sessions(store: &SqlStore) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1",
    )
    .bind(INVALIDATION_LISTENER)
    .fetch_one(store.pool())
    .await
    .expect("count listening sessions")
}

/// Ends every listening session's connection from the server's side, as a restart or a
/// network failure would.
async fn cut_listeners(store: &SqlStore) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1) AS cut",
    )
    .bind(INVALIDATION_LISTENER)
    .fetch_one(store.pool())
    .await
    .expect("terminate listening sessions")
}

/// A TCP proxy in front of PostgreSQL whose connections can be frozen: they stay open and
/// pass nothing more either way, as a connection a NAT forgot does. Connections made after a
/// freeze pass as usual.
struct FreezableProxy {
    addr: std::net::SocketAddr,
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(target: String) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let flags = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let flag = Arc::new(AtomicBool::new(false));
                flags.lock().expect("flags").push(flag.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pass(cr, sw, flag.clone()));
                tokio::spawn(pass(sr, cw, flag));
            }
        });
        FreezableProxy { addr, frozen, task }
    }

    fn freeze_open_connections(&self) {
        for flag in self.frozen.lock().expect("flags").iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes one way until either side closes; once `frozen`, holds what it reads.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            // Held: the socket stays open and silent. Ends when the test's runtime ends.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its `host:port` replaced by `addr`; the host and port it named.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
    assert!(
        !url.contains("host="),
        "this test needs PostgreSQL over TCP, not a Unix socket: {url}"
    );
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, rest) = rest.split_once('@').map_or(("", rest), |(u, r)| (u, r));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // PostgreSQL's port when the URL names none.
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:5432")
    };
    let at = if userinfo.is_empty() { "" } else { "@" };
    (
        format!("{scheme}://{userinfo}{at}{addr}{}", &rest[end..]),
        target,
    )
}

fn every_kind() -> Vec<Invalidation> {
    vec![
        Invalidation::ApiKey("9f2c…hash".into()),
        Invalidation::Grant("grt_01".into()),
        Invalidation::GrantStates,
        Invalidation::Client("https://client.example/metadata.json".into()),
        Invalidation::Routes,
        Invalidation::Quota("prj_01".into()),
        Invalidation::SigningKeys,
    ]
}

ezforge_testkit::backend_tests! {
    async fn changes_published_by_one_node_reach_every_node(db) {
        let (a, b) = (open(&db.url).await, open(&db.url).await);
        if db.backend == ezforge_testkit::Backend::Sqlite {
            // One file, one node: nobody to tell, and telling nobody succeeds.
            assert!(a.subscribe_invalidations().await.expect("subscribe").is_none());
            a.publish_invalidation(&Invalidation::Routes).await.expect("publish");
            return;
        }
        let mut on_a = a.subscribe_invalidations().await.expect("subscribe").expect("postgres listens");
        let mut on_b = b.subscribe_invalidations().await.expect("subscribe").expect("postgres listens");
        // Each starts by dropping everything: what came before it listened is unknown.
        assert_eq!(next(&mut on_a).await, Invalidation::Everything);
        assert_eq!(next(&mut on_b).await, Invalidation::Everything);

        for change in every_kind() {
            b.publish_invalidation(&change).await.expect("publish");
        }
        // Every node hears every change in order, the publisher included.
        for change in every_kind() {
            assert_eq!(next(&mut on_a).await, change);
            assert_eq!(next(&mut on_b).await, change);
        }
        a.close().await;
        b.close().await;
    }

    async fn a_lost_listening_connection_is_made_again_and_drops_everything(db) {
        if db.backend == ezforge_testkit::Backend::Sqlite {
            return;
        }
        let (a, b) = (open(&db.url).await, open(&db.url).await);
        let mut on_a = a.subscribe_invalidations().await.expect("subscribe").expect("postgres listens");
        assert_eq!(next(&mut on_a).await, Invalidation::Everything);
        assert_eq!(listening_sessions(&b).await, 1);

        // Sent while connected, heard; then the connection is cut.
        b.publish_invalidation(&Invalidation::Grant("grt_before".into())).await.expect("publish");
        assert_eq!(next(&mut on_a).await, Invalidation::Grant("grt_before".into()));
        assert_eq!(cut_listeners(&b).await, 1);

        // Listening again, it drops everything (whatever was sent meanwhile is unknown), and
        // then hears what is sent from then on.
        assert_eq!(next(&mut on_a).await, Invalidation::Everything);
        b.publish_invalidation(&Invalidation::Grant("grt_after".into())).await.expect("publish");
        assert_eq!(next(&mut on_a).await, Invalidation::Grant("grt_after".into()));
        a.close().await;
        b.close().await;
    }

    async fn a_listening_connection_that_goes_silent_is_noticed_and_replaced(db) {
        if db.backend == ezforge_testkit::Backend::Sqlite {
            return;
        }
        // The listening node reaches PostgreSQL through the proxy; the publishing one directly.
        let placeholder: std::net::SocketAddr = "127.0.0.1:1".parse().expect("address");
        let (_, target) = through(&db.url, placeholder);
        let proxy = FreezableProxy::start(target).await;
        let (proxied, _) = through(&db.url, proxy.addr);
        let a = SqlStore::open(&proxied, 2)
            .await
            .expect("open through the proxy")
            .with_listener_heartbeat(Duration::from_millis(300));
        let b = open(&db.url).await;
        let mut on_a = a.subscribe_invalidations().await.expect("subscribe").expect("postgres listens");
        assert_eq!(next(&mut on_a).await, Invalidation::Everything);
        until_heard(&mut on_a, &b, Invalidation::Grant("grt_before".into())).await;

        // The connection goes silent without closing: a change sent now never arrives on it.
        proxy.freeze_open_connections();
        b.publish_invalidation(&Invalidation::Grant("grt_lost".into())).await.expect("publish");
        // The quiet connection's check gets no answer; the node listens on a new connection
        // and drops everything, the lost change included. (A copy of `grt_before` published
        // twice by `until_heard` may come first; `grt_lost` never does.)
        loop {
            match next(&mut on_a).await {
                Invalidation::Everything => break,
                Invalidation::Grant(g) if g == "grt_before" => continue,
                other => panic!("heard {other:?} over a silent connection"),
            }
        }
        until_heard(&mut on_a, &b, Invalidation::Grant("grt_after".into())).await;
        drop(on_a);
        b.close().await;
    }

    async fn closing_the_store_ends_its_listening_connection(db) {
        if db.backend == ezforge_testkit::Backend::Sqlite {
            return;
        }
        let (a, b) = (open(&db.url).await, open(&db.url).await);
        let mut on_a = a.subscribe_invalidations().await.expect("subscribe").expect("postgres listens");
        assert_eq!(next(&mut on_a).await, Invalidation::Everything);
        a.close().await;
        // The subscription ends rather than hanging, and its connection goes.
        let ended = tokio::time::timeout(PATIENCE, on_a.recv()).await.expect("ends in time");
        assert_eq!(ended, None);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while listening_sessions(&b).await > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the listening connection stays open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A dropped receiver ends its connection as well.
        let on_b = b.subscribe_invalidations().await.expect("subscribe").expect("postgres listens");
        while listening_sessions(&b).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(on_b);
        while listening_sessions(&b).await > 0 {
            assert!(tokio::time::Instant::now() < deadline, "a dropped receiver's connection stays open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.close().await;
    }
}
