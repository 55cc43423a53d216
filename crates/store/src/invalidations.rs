//! Cross-node invalidation on PostgreSQL (see `ezforge_core::invalidation`): a change is a
//! `NOTIFY` on one channel, and each node `LISTEN`s on a connection of its own.
//!
//! A notification is delivered to every listening session, the sender's included, once the
//! transaction that sent it commits; one sent outside a transaction (as here, after the change
//! committed) goes out at once. Nothing is kept for a session that was not listening, so the
//! listener reports `Everything` each time it starts listening: what was sent meanwhile is
//! unknown. A quiet connection is checked every 30 s (a dead one would otherwise wait for
//! ever), and a lost one is made again after a pause that grows while connections keep
//! failing. (Dropping a listener whose connection went silent leaves sqlx's `UNLISTEN` task
//! waiting on its socket until the operating system gives up on it.) SQLite has no other
//! nodes to tell.

use crate::rows::backend;
use ezforge_core::invalidation::{CHANNEL, Invalidation};
use ezforge_core::store::StoreResult;
use sqlx::AnyPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long to wait before connecting again after a failure (doubling up to the maximum).
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Messages heard but not yet applied; past this the listener waits for the node to catch up.
const QUEUE: usize = 1024;

pub(crate) async fn publish(pool: &AnyPool, change: &Invalidation) -> StoreResult<()> {
    // `pg_notify` returns `void`, which the Any driver has no type for: select a constant.
    sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS sent")
        .bind(CHANNEL)
        .bind(change.encode())
        .execute(pool)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Starts listening on a connection of its own to `url`. The task ends when the receiver is
/// dropped or `stop` turns true.
pub(crate) fn subscribe(
    url: String,
    stop: watch::Receiver<bool>,
    heartbeat: Duration,
) -> mpsc::Receiver<Invalidation> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(listen(url, tx, stop, heartbeat));
    rx
}

/// The listening connection's `application_name`, for operators (and tests) reading
/// `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "ezforge-invalidations";

/// How often an idle listening connection is checked (by default), and how long the check may
/// take at most (never longer than the interval). A connection that died without a word (a
/// NAT or proxy forgetting it, a failover without a reset) would otherwise wait for
/// notifications for ever.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(30);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time a check may take before the connection is given up: a busy machine's
/// slow answer is not a dead connection.
const HEARTBEAT_TIMEOUT_MIN: Duration = Duration::from_secs(2);
/// How long connecting and `LISTEN` may take together: a connection that goes silent before
/// it listens has no heartbeat yet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lived at least this long was healthy: the next one starts with the first
/// pause again. One that dropped sooner waits a growing pause, so that a connection cut over
/// and over does not make every node drop everything over and over.
const HEALTHY: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name(APPLICATION_NAME);
    // One connection, kept for as long as it lives (as `PgListener::connect` does).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection is made again here, by `listen`'s loop, not inside `try_recv`.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Why a listening connection ended.
enum Ended {
    /// Nobody receives any more, or the store is closing.
    Done,
    /// Lost or failed: connect again.
    Lost(String),
}

async fn listen(
    url: String,
    tx: mpsc::Sender<Invalidation>,
    mut stop: watch::Receiver<bool>,
    heartbeat: Duration,
) {
    let mut retry = RETRY_FIRST;
    // When warnings were last logged: once when trouble starts, then once a minute at most.
    let mut warned: Option<tokio::time::Instant> = None;
    let mut warn = |what: &str, error: &str| {
        let now = tokio::time::Instant::now();
        if warned.is_none_or(|t| now - t >= Duration::from_secs(60)) {
            tracing::warn!(error = %error, "{what}; cached state expires by its lifetime meanwhile");
            warned = Some(now);
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::select! {
            _ = tx.closed() => return,
            _ = stop.changed() => return,
            l = tokio::time::timeout(CONNECT_TIMEOUT, connect(&url)) => l,
        };
        let ended = match connected {
            Err(_) => Ended::Lost("connecting took too long".into()),
            Ok(Err(e)) => Ended::Lost(e.to_string()),
            Ok(Ok(mut listener)) => {
                let since = tokio::time::Instant::now();
                let ended = hear(&mut listener, &tx, &mut stop, heartbeat).await;
                if since.elapsed() >= HEALTHY {
                    retry = RETRY_FIRST;
                }
                ended
            }
        };
        match ended {
            Ended::Done => return,
            Ended::Lost(e) => warn(
                "cannot listen for other nodes' changes, connecting again",
                &e,
            ),
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = stop.changed() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Passes on what one listening connection hears, until it is lost or nobody listens.
async fn hear(
    listener: &mut PgListener,
    tx: &mpsc::Sender<Invalidation>,
    stop: &mut watch::Receiver<bool>,
    heartbeat: Duration,
) -> Ended {
    // Listening now; whatever was sent before is unknown.
    if tx.send(Invalidation::Everything).await.is_err() {
        return Ended::Done;
    }
    loop {
        let heard = tokio::select! {
            _ = tx.closed() => return Ended::Done,
            _ = stop.changed() => return Ended::Done,
            heard = tokio::time::timeout(heartbeat, listener.try_recv()) => heard,
        };
        match heard {
            Ok(Ok(Some(n))) => {
                if tx.send(Invalidation::decode(n.payload())).await.is_err() {
                    return Ended::Done;
                }
            }
            Ok(Ok(None)) => return Ended::Lost("the connection was closed".into()),
            Ok(Err(e)) => return Ended::Lost(e.to_string()),
            // Quiet for a while: check that the connection still answers.
            Err(_) => {
                let check = sqlx::query("SELECT 1").execute(&mut *listener);
                let patience = HEARTBEAT_TIMEOUT.min(heartbeat).max(HEARTBEAT_TIMEOUT_MIN);
                match tokio::time::timeout(patience, check).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("the connection stopped answering".into()),
                }
            }
        }
    }
}
