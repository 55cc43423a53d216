//! Group commit for the token endpoint.
//!
//! Every code exchange and every refresh reads and writes the database before it answers, and
//! on PostgreSQL each statement is a round trip and each commit a WAL flush. Under load those
//! — not the signing or the HTTP — bound the endpoint. So requests hand their database work to
//! an executor task, which takes everything waiting (up to `MAX_BATCH` requests) and does it
//! in one transaction with one statement per kind of work (`Store::exchange_codes`,
//! `Store::renew_refreshes`). A request's checks (expiry, client, redirect URI, resource,
//! scope) run inside that transaction, between the read and the write, so each request costs
//! one trip to the executor and a batch one commit. On PostgreSQL a batch's codes are instead
//! spent, and its refresh tokens checked and rotated, by one statement each, whose atomicity
//! stands for the transaction's (`store::pg_tokens`); the checks then run after it has
//! committed, on the rows as it read them (a refresh states its checks as `RotationTerms` for
//! the statement to apply).
//!
//! Nothing is written behind: a request gets its answer only after the statements that did its
//! work have committed, exactly as when it ran alone. There is no timer either: a lone request
//! goes at once, and a batch forms only from requests that arrived while the previous one was
//! in the database, so batching adds no latency of its own.

use super::OAuthError;
use super::model::{
    CodeAttempt, CodeRow, CodeUse, GrantRow, RefreshPresented, RefreshRow, Rotation,
    RotationAttempt,
};
use crate::clock::Clock;
use crate::store::{Store, StoreError, StoreResult};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Requests the executor takes at a time.
const MAX_BATCH: usize = 64;
/// Requests waiting for the executor before senders wait too.
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
        RefreshPresented,
        CheckRefresh,
        Reply<Result<(Renewal, Rotation), OAuthError>>,
    ),
}

/// The token endpoint's way to its tables: one executor task. Two and four executors were
/// measured slower on both databases: with one, batches grow while it waits on the database,
/// and the database sees one writer.
pub(crate) struct TokenBatcher {
    ops: mpsc::Sender<Op>,
}

impl TokenBatcher {
    /// Starts the executor on the current tokio runtime; it stops when this is dropped.
    pub(crate) fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let (ops, mut rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Each batch in its own task: if something in it panics, that batch's requests
                // get an error (their replies are dropped) and the next batch goes on.
                let (store, now) = (store.clone(), clock.now());
                let batch = std::mem::take(&mut batch);
                if let Err(e) = tokio::spawn(async move { run(&*store, now, batch).await }).await {
                    tracing::error!(error = %e, "a token endpoint batch failed");
                }
            }
        });
        TokenBatcher { ops }
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> StoreResult<T> {
        let stopped = || StoreError::Backend("the token executor failed".into());
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Spends a code (see `Store::exchange_codes`); if this request spent it, runs `check` and
    /// stores the refresh token it decides on, in the same transaction.
    pub(crate) async fn exchange(
        &self,
        attempt: CodeAttempt,
        check: CheckCode,
    ) -> StoreResult<Exchanged> {
        self.call(|r| Op::Exchange(attempt, check, r)).await
    }

    /// Reads a refresh token with its grant, runs `check`, and rotates what it decides on (see
    /// `Store::renew_refreshes`; `presented.terms` must promise no more than `check` accepts).
    pub(crate) async fn refresh(
        &self,
        presented: RefreshPresented,
        check: CheckRefresh,
    ) -> StoreResult<Result<(Renewal, Rotation), OAuthError>> {
        self.call(|r| Op::Refresh(presented, check, r)).await
    }
}

/// Does a batch, then answers every request. Refresh tokens are read before anything is
/// written, so two presentations of one token in a batch both pass their checks and then
/// meet in the rotation, where the first wins — the order they would have had one after the
/// other.
async fn run(store: &dyn Store, now: i64, batch: Vec<Op>) {
    let (mut codes, mut refreshes) = (Vec::new(), Vec::new());
    for op in batch {
        match op {
            Op::Exchange(a, check, reply) => codes.push((a, check, reply)),
            Op::Refresh(presented, check, reply) => refreshes.push((presented, check, reply)),
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
    let mut attempts = Vec::with_capacity(ops.len());
    let mut checks = Vec::with_capacity(ops.len());
    let mut replies = Vec::with_capacity(ops.len());
    for (attempt, check, reply) in ops {
        attempts.push(attempt);
        checks.push(Some(check));
        replies.push(reply);
    }
    let mut verdicts: Vec<Option<Result<Exchange, OAuthError>>> =
        (0..attempts.len()).map(|_| None).collect();
    let mut issue = |i: usize, code: &CodeRow, grant: Option<&GrantRow>| {
        let check = checks.get_mut(i)?.take()?;
        let verdict = check(code, grant.cloned(), now);
        let row = match &verdict {
            Ok(Exchange {
                refresh: Some(row), ..
            }) => Some(row.clone()),
            _ => None,
        };
        verdicts[i] = Some(verdict);
        row
    };
    let uses = match store.exchange_codes(&attempts, now, &mut issue).await {
        Ok(uses) => uses,
        Err(e) => return fail(replies.into_iter(), e),
    };
    for ((i, code_use), reply) in uses.into_iter().enumerate().zip(replies) {
        let outcome =
            match code_use {
                CodeUse::First(_) => Exchanged::Spent(verdicts[i].take().unwrap_or_else(|| {
                    Err(OAuthError::Server("a spent code was not checked".into()))
                })),
                other => Exchanged::NotSpent(other),
            };
        // A request that gave up (its client went away) no longer listens.
        let _ = reply.send(Ok(outcome));
    }
}

type RefreshReply = Reply<Result<(Renewal, Rotation), OAuthError>>;

async fn refresh(
    store: &dyn Store,
    now: i64,
    ops: Vec<(RefreshPresented, CheckRefresh, RefreshReply)>,
) {
    let mut presented = Vec::with_capacity(ops.len());
    let mut checks = Vec::with_capacity(ops.len());
    let mut replies = Vec::with_capacity(ops.len());
    for (p, check, reply) in ops {
        presented.push(p);
        checks.push(Some(check));
        replies.push(reply);
    }
    let mut verdicts: Vec<Option<Result<Renewal, OAuthError>>> =
        (0..presented.len()).map(|_| None).collect();
    let mut renew = |i: usize, stored: Option<(RefreshRow, GrantRow)>| {
        let check = checks.get_mut(i)?.take()?;
        let verdict = check(stored, now);
        let attempt = verdict.as_ref().ok().map(|r| r.rotation.clone());
        verdicts[i] = Some(verdict);
        attempt
    };
    let rotations = match store.renew_refreshes(&presented, now, &mut renew).await {
        Ok(rotations) => rotations,
        Err(e) => return fail(replies.into_iter(), e),
    };
    for ((rotation, verdict), reply) in rotations.into_iter().zip(verdicts).zip(replies) {
        let outcome = match (verdict, rotation) {
            (Some(Ok(renewal)), Some(rotation)) => Ok((renewal, rotation)),
            (Some(Err(e)), _) => Err(e),
            _ => Err(OAuthError::Server("a refresh was not checked".into())),
        };
        let _ = reply.send(Ok(outcome));
    }
}

/// Gives every request in `replies` the batch's error.
fn fail<T>(replies: impl Iterator<Item = Reply<T>>, e: StoreError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
}
