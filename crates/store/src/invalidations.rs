//! Cross-node invalidation on PostgreSQL (see `ezforge_core::invalidation`): a change is a
//! `NOTIFY` on one channel, and each node `LISTEN`s on a connection of its own.
//!
//! A notification is delivered to every listening session, the sender's included, once the
//! transaction that sent it commits; one sent outside a transaction (as here, after the change
//! committed) goes out at once. Nothing is kept for a session that was not listening, so the
//! listener reports `Everything` each time it starts listening: what was sent meanwhile is
//! unknown. SQLite has no other nodes to tell.

use crate::rows::backend;
use ezforge_core::invalidation::{CHANNEL, Invalidation};
use ezforge_core::store::StoreResult;
use sqlx::AnyPool;
use sqlx::postgres::PgListener;
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
pub(crate) fn subscribe(url: String, stop: watch::Receiver<bool>) -> mpsc::Receiver<Invalidation> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(listen(url, tx, stop));
    rx
}

async fn listen(url: String, tx: mpsc::Sender<Invalidation>, mut stop: watch::Receiver<bool>) {
    let mut retry = RETRY_FIRST;
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = tx.closed() => return,
            _ = stop.changed() => return,
            l = attempt => match l {
                Ok(l) => l,
                Err(e) => {
                    // Once when it starts failing, then once a minute at most.
                    let now = tokio::time::Instant::now();
                    if failing_since.is_none_or(|t| now - t >= Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "cannot listen for other nodes' changes; cached state expires by its lifetime meanwhile");
                        failing_since = Some(now);
                    }
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            }
        };
        if failing_since.take().is_some() {
            tracing::info!("listening for other nodes' changes again");
        }
        retry = RETRY_FIRST;
        loop {
            // Listening now; whatever was sent before is unknown.
            if tx.send(Invalidation::Everything).await.is_err() {
                return;
            }
            // Until the connection is lost: `try_recv` then reconnects (and listens again)
            // before it answers `None`, so the `Everything` above follows the new `LISTEN`.
            let lost = loop {
                let heard = tokio::select! {
                    _ = tx.closed() => return,
                    _ = stop.changed() => return,
                    heard = listener.try_recv() => heard,
                };
                match heard {
                    Ok(Some(n)) => {
                        if tx.send(Invalidation::decode(n.payload())).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match lost {
                None => {
                    tracing::warn!(
                        "the connection listening for other nodes' changes was lost and made again"
                    );
                }
                Some(e) => {
                    tracing::warn!(error = %e, "the connection listening for other nodes' changes failed; connecting again");
                    break;
                }
            }
        }
    }
}
