//! Group commit for the token endpoint.
//!
//! Every code exchange and every refresh reads and writes the database before it answers, and
//! on PostgreSQL each statement is a round trip and each commit a WAL flush. Under load those
//! — not the signing or the HTTP — bound the endpoint. So requests hand their database work to
//! a few executor tasks, and each executor takes everything waiting (up to `MAX_BATCH`
//! requests) and does it with one statement per kind of work (see `Store::use_codes` and the
//! others). A request's checks (expiry, client, redirect URI, resource, scope) run inside the
//! round, between the read and the write, so each request costs one trip to an executor.
//!
//! Nothing is written behind: a request gets its answer only after the statements that did its
//! work have committed, exactly as when it ran alone. There is no timer either: a lone request
//! goes at once, and a batch forms only from requests that arrived while the previous one was
//! in the database, so batching adds no latency of its own.

use super::OAuthError;
use super::model::{
    CodeAttempt, CodeRow, CodeUse, GrantRow, RefreshRow, Rotation, RotationAttempt,
};
use crate::clock::Clock;
use crate::store::{Store, StoreError, StoreResult};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Requests one executor takes at a time.
const MAX_BATCH: usize = 64;
/// Executors: while one waits on the database, another gathers the next batch.
const EXECUTORS: usize = 2;
/// Requests waiting for an executor before senders wait too.
const QUEUE: usize = 4096;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// What a code exchange issues once its code is spent: the grant, and the refresh token to
/// store with it, if any.
pub(crate) struct Exchange {
    pub grant: GrantRow,
    pub refresh: Option<RefreshRow>,
}

/// The checks of a code exchange, run on the code just spent (with its grant, if it still
/// exists) at the round's time.
pub(crate) type CheckCode =
    Box<dyn FnOnce(&CodeRow, Option<GrantRow>, i64) -> Result<Exchange, OAuthError> + Send>;

pub(crate) enum Exchanged {
    /// Spent now by this request; the checks' verdict.
    Spent(Result<Exchange, OAuthError>),
    /// Not spent by this request (replayed, mismatched or unknown).
    NotSpent(CodeUse),
}

/// What a refresh rotates, decided from the token as stored (with its grant).
pub(crate) struct Renewal {
    pub grant: GrantRow,
    /// The access token's scope (only ever narrower than the family's).
    pub scope: String,
    pub rotation: RotationAttempt,
}

/// The checks of a refresh, run on the stored token (if any) at the round's time.
pub(crate) type CheckRefresh =
    Box<dyn FnOnce(Option<(RefreshRow, GrantRow)>, i64) -> Result<Renewal, OAuthError> + Send>;

enum Op {
    Exchange(CodeAttempt, CheckCode, Reply<Exchanged>),
    Refresh(
        String,
        CheckRefresh,
        Reply<Result<(Renewal, Rotation), OAuthError>>,
    ),
}

/// The token endpoint's way to its tables. Cloning shares the executors.
#[derive(Clone)]
pub(crate) struct TokenBatcher {
    ops: mpsc::Sender<Op>,
}

impl TokenBatcher {
    /// Starts the executors on the current tokio runtime; they stop when the last clone drops.
    pub(crate) fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let (ops, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..EXECUTORS {
            let (store, clock, rx) = (store.clone(), clock.clone(), rx.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                loop {
                    // One executor gathers at a time; it lets go before it runs the batch.
                    let taken = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
                    if taken == 0 {
                        return;
                    }
                    run(&*store, clock.now(), std::mem::take(&mut batch)).await;
                }
            });
        }
        TokenBatcher { ops }
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> StoreResult<T> {
        let stopped = || StoreError::Backend("the token executors stopped".into());
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Spends a code (see `Store::use_codes`); if this request spent it, runs `check` and
    /// stores the refresh token it decides on.
    pub(crate) async fn exchange(
        &self,
        attempt: CodeAttempt,
        check: CheckCode,
    ) -> StoreResult<Exchanged> {
        self.call(|r| Op::Exchange(attempt, check, r)).await
    }

    /// Reads a refresh token with its grant, runs `check`, and rotates what it decides on
    /// (see `Store::rotate_refreshes`).
    pub(crate) async fn refresh(
        &self,
        token_hash: String,
        check: CheckRefresh,
    ) -> StoreResult<Result<(Renewal, Rotation), OAuthError>> {
        self.call(|r| Op::Refresh(token_hash, check, r)).await
    }
}

/// Does a batch, then answers every request. Refresh tokens are read before anything is
/// written, so two presentations of one token in a batch both pass their checks and then
/// meet in `rotate_refreshes`, where the first wins — the order they would have had one after
/// the other.
async fn run(store: &dyn Store, now: i64, batch: Vec<Op>) {
    let (mut codes, mut refreshes) = (Vec::new(), Vec::new());
    for op in batch {
        match op {
            Op::Exchange(a, check, reply) => codes.push((a, check, reply)),
            Op::Refresh(hash, check, reply) => refreshes.push((hash, check, reply)),
        }
    }
    if !codes.is_empty() {
        exchange(store, now, codes).await;
    }
    if !refreshes.is_empty() {
        refresh(store, now, refreshes).await;
    }
}

async fn exchange(
    store: &dyn Store,
    now: i64,
    ops: Vec<(CodeAttempt, CheckCode, Reply<Exchanged>)>,
) {
    let (attempts, rest): (Vec<_>, Vec<_>) = ops.into_iter().map(|(a, c, r)| (a, (c, r))).unzip();
    let spent = match spend_with_grants(store, &attempts, now).await {
        Ok(spent) => spent,
        Err(e) => return fail(rest.into_iter().map(|(_, r)| r), e),
    };
    let mut outcomes = Vec::with_capacity(spent.len());
    let mut rows = Vec::new();
    for ((code_use, grant), (check, reply)) in spent.into_iter().zip(rest) {
        let outcome = match code_use {
            CodeUse::First(code) => {
                let verdict = check(&code, grant, now);
                if let Ok(Exchange {
                    refresh: Some(row), ..
                }) = &verdict
                {
                    rows.push(row.clone());
                }
                Exchanged::Spent(verdict)
            }
            other => Exchanged::NotSpent(other),
        };
        outcomes.push((outcome, reply));
    }
    let stored = if rows.is_empty() {
        Ok(())
    } else {
        store.insert_refreshes(&rows).await
    };
    for (outcome, reply) in outcomes {
        let issues_refresh = matches!(&outcome, Exchanged::Spent(Ok(e)) if e.refresh.is_some());
        // A request that gave up (its client went away) no longer listens.
        let _ = match &stored {
            Err(e) if issues_refresh => reply.send(Err(e.clone())),
            _ => reply.send(Ok(outcome)),
        };
    }
}

/// Spends the codes, then reads the grants of those spent now, in one query.
async fn spend_with_grants(
    store: &dyn Store,
    attempts: &[CodeAttempt],
    now: i64,
) -> StoreResult<Vec<(CodeUse, Option<GrantRow>)>> {
    let uses = store.use_codes(attempts, now).await?;
    let spent: Vec<String> = uses
        .iter()
        .filter_map(|u| match u {
            CodeUse::First(code) => Some(code.grant_id.clone()),
            _ => None,
        })
        .collect();
    let grants = if spent.is_empty() {
        Vec::new()
    } else {
        store.grants(&spent).await?
    };
    Ok(uses
        .into_iter()
        .map(|u| {
            let grant = match &u {
                CodeUse::First(code) => grants.iter().find(|g| g.id == code.grant_id).cloned(),
                _ => None,
            };
            (u, grant)
        })
        .collect())
}

type RefreshReply = Reply<Result<(Renewal, Rotation), OAuthError>>;

async fn refresh(store: &dyn Store, now: i64, ops: Vec<(String, CheckRefresh, RefreshReply)>) {
    let (hashes, rest): (Vec<_>, Vec<_>) = ops.into_iter().map(|(h, c, r)| (h, (c, r))).unzip();
    let found = match store.refreshes_with_grants(&hashes).await {
        Ok(found) => found,
        Err(e) => return fail(rest.into_iter().map(|(_, r)| r), e),
    };
    let mut passed = Vec::new();
    for (stored, (check, reply)) in found.into_iter().zip(rest) {
        match check(stored, now) {
            Ok(renewal) => passed.push((renewal, reply)),
            Err(e) => {
                let _ = reply.send(Ok(Err(e)));
            }
        }
    }
    if passed.is_empty() {
        return;
    }
    let attempts: Vec<RotationAttempt> = passed.iter().map(|(r, _)| r.rotation.clone()).collect();
    match store.rotate_refreshes(&attempts, now).await {
        Ok(rotations) => {
            for ((renewal, reply), rotation) in passed.into_iter().zip(rotations) {
                let _ = reply.send(Ok(Ok((renewal, rotation))));
            }
        }
        Err(e) => fail(passed.into_iter().map(|(_, r)| r), e),
    }
}

/// Gives every request in `replies` the batch's error.
fn fail<T>(replies: impl Iterator<Item = Reply<T>>, e: StoreError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
}
