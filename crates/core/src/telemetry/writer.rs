//! The request log's queue and writer. The gateway hands each record over with `try_send` and
//! never waits: when the queue is full the record is dropped and counted (its usage is still
//! counted, so billing and quotas lose nothing). One task writes what arrives in batches.

use super::quota::Quotas;
use super::{RequestRow, TelemetryBatch, UsageDelta, calendar};
use crate::store::Store;
use ezforge_proto::{Decision, Environment};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct RequestLogSettings {
    /// Store each request's record. Off, metrics, usage and quotas are still counted.
    pub enabled: bool,
    /// Records waiting to be written; beyond this they are dropped (and counted).
    pub queue_capacity: usize,
    /// Records per write.
    pub max_batch: usize,
    /// How long the writer waits to fill a batch once it has a record.
    pub flush_interval: Duration,
    /// Records and per-minute metrics older than this are deleted (usage is kept).
    pub retention_days: i64,
}

impl Default for RequestLogSettings {
    fn default() -> Self {
        RequestLogSettings {
            enabled: true,
            queue_capacity: 16_384,
            max_batch: 1_000,
            flush_interval: Duration::from_millis(200),
            retention_days: 30,
        }
    }
}

/// (project, environment, day) of dropped records.
type SpillKey = (String, Environment, String);
/// (requests, tool calls, quota-counted) of dropped records.
type Spilled = (i64, i64, i64);

enum Msg {
    Record(Box<RequestRow>),
    Flush(oneshot::Sender<()>),
}

/// Upper bounds (seconds) of the Prometheus latency histogram.
pub const LATENCY_BOUNDS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Process-wide counters for the Prometheus endpoint.
#[derive(Default)]
pub struct Counters {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub status_2xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub status_other: AtomicU64,
    /// Cumulative counts per `LATENCY_BOUNDS` entry, then the overflow.
    pub latency: [AtomicU64; 12],
    pub latency_sum_us: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Records lost because the database refused them (after retries).
    pub lost: AtomicU64,
}

pub struct RequestLog {
    tx: mpsc::Sender<Msg>,
    capacity: usize,
    pub counters: Counters,
    /// Woken after every write, for followers of the log.
    written: Arc<Notify>,
    /// Cuts the writer's batching wait short: a flush is waited for, or a batch is full.
    wake_writer: Arc<Notify>,
    /// Usage of dropped records, carried into the next write.
    spilled: Mutex<HashMap<SpillKey, Spilled>>,
    pub settings: RequestLogSettings,
    /// Set when the server shuts down: followers of the log end their streams.
    closing: AtomicBool,
    /// Open follow streams, bounded by `MAX_FOLLOWERS`.
    followers: AtomicUsize,
}

/// Most log follow streams open at once on a node.
pub const MAX_FOLLOWERS: usize = 200;

/// One open follow stream; dropping it frees the place.
pub struct FollowerSlot(Arc<RequestLog>);

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RequestLog {
    /// Starts the writer task; it runs until every handle is dropped or `flush` is followed by
    /// the end of the process.
    pub fn start(
        store: Arc<dyn Store>,
        quotas: Arc<Quotas>,
        settings: RequestLogSettings,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let log = Arc::new(RequestLog {
            tx,
            capacity: settings.queue_capacity.max(1),
            counters: Counters::default(),
            written: Arc::new(Notify::new()),
            wake_writer: Arc::new(Notify::new()),
            spilled: Mutex::new(HashMap::new()),
            settings,
            closing: AtomicBool::new(false),
            followers: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&log);
        let wake_writer = log.wake_writer.clone();
        tokio::spawn(run(rx, weak, wake_writer, store, quotas));
        log
    }

    /// Hands a record over; never waits.
    pub fn record(&self, row: RequestRow) {
        self.count(&row);
        let sent = self.tx.try_send(Msg::Record(Box::new(row)));
        if sent.is_ok() && self.queued() >= early_write(&self.settings) {
            self.wake_writer.notify_one();
        }
        if let Err(e) = sent {
            let row = match e {
                mpsc::error::TrySendError::Full(Msg::Record(r))
                | mpsc::error::TrySendError::Closed(Msg::Record(r)) => r,
                _ => return,
            };
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if row.decision == Decision::Allowed
                && let Ok(mut spilled) = self.spilled.lock()
            {
                let day = calendar::day(row.at_ms.div_euclid(1000));
                let e = spilled
                    .entry((row.project_id.clone(), row.environment, day))
                    .or_default();
                e.0 += 1;
                e.1 += i64::from(row.tool_calls);
                e.2 += i64::from(row.quota_counted);
            }
        }
    }

    fn count(&self, row: &RequestRow) {
        let c = &self.counters;
        match row.decision {
            Decision::Allowed => c.allowed.fetch_add(1, Ordering::Relaxed),
            Decision::Denied => c.denied.fetch_add(1, Ordering::Relaxed),
        };
        match row.status {
            200..=299 => c.status_2xx.fetch_add(1, Ordering::Relaxed),
            400..=499 => c.status_4xx.fetch_add(1, Ordering::Relaxed),
            500..=599 => c.status_5xx.fetch_add(1, Ordering::Relaxed),
            _ => c.status_other.fetch_add(1, Ordering::Relaxed),
        };
        let secs = row.latency_us as f64 / 1e6;
        let slot = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        c.latency[slot].fetch_add(1, Ordering::Relaxed);
        c.latency_sum_us
            .fetch_add(row.latency_us.max(0) as u64, Ordering::Relaxed);
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// A place for one more follow stream, unless `MAX_FOLLOWERS` are open.
    pub fn follower_slot(self: &Arc<Self>) -> Option<FollowerSlot> {
        let n = self.followers.fetch_add(1, Ordering::SeqCst);
        if n >= MAX_FOLLOWERS {
            self.followers.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(FollowerSlot(self.clone()))
    }

    /// The server is shutting down: follow streams end (so that connections can close).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.written.notify_waiters();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Waits until everything handed over before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            self.wake_writer.notify_one();
            let _ = rx.await;
        }
    }

    /// Resolves after the next write (or after `max`, whichever is first).
    pub async fn wait_for_write(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.written.notified()).await;
    }

    fn take_spilled(&self) -> Vec<(UsageDelta, i64)> {
        self.spilled
            .lock()
            .map(|mut m| {
                m.drain()
                    .map(
                        |((project_id, environment, day), (requests, tool_calls, counted))| {
                            let delta = UsageDelta {
                                project_id,
                                environment,
                                day,
                                requests,
                                tool_calls,
                            };
                            (delta, counted)
                        },
                    )
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Queued records at which the writer stops waiting out its window: a full batch, or half the
/// queue (a queue smaller than a batch would otherwise drop records while the writer sleeps).
fn early_write(settings: &RequestLogSettings) -> usize {
    settings
        .max_batch
        .min(settings.queue_capacity.max(1) / 2)
        .max(1)
}

async fn run(
    mut rx: mpsc::Receiver<Msg>,
    log: std::sync::Weak<RequestLog>,
    wake_writer: Arc<Notify>,
    store: Arc<dyn Store>,
    quotas: Arc<Quotas>,
) {
    while let Some(first) = rx.recv().await {
        let Some(settings) = log.upgrade().map(|l| l.settings.clone()) else {
            break;
        };
        let mut records = Vec::new();
        let mut waiters = Vec::new();
        let mut take = |msg: Msg, records: &mut Vec<RequestRow>| match msg {
            Msg::Record(r) => {
                records.push(*r);
                false
            }
            Msg::Flush(w) => {
                waiters.push(w);
                true
            }
        };
        let flush_now = take(first, &mut records);
        // Sleep out the batching window instead of waiting on the queue: a writer that waits on
        // the queue is woken by every record, and that wake-up (often on another thread) cost
        // the gateway more than the write. A full batch or a flush cuts the window short.
        if !flush_now && rx.len() + 1 < early_write(&settings) {
            tokio::select! {
                _ = tokio::time::sleep(settings.flush_interval) => {}
                _ = wake_writer.notified() => {}
            }
        }
        // Whatever is queued by now (a flush also takes everything queued before it).
        while records.len() < settings.max_batch {
            match rx.try_recv() {
                Ok(msg) => {
                    take(msg, &mut records);
                }
                Err(_) => break,
            }
        }
        if let Some(log) = log.upgrade() {
            write(&log, &store, &quotas, records, &settings).await;
            log.written.notify_waiters();
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

async fn write(
    log: &RequestLog,
    store: &Arc<dyn Store>,
    quotas: &Quotas,
    records: Vec<RequestRow>,
    settings: &RequestLogSettings,
) {
    let mut handed: HashMap<String, i64> = HashMap::new();
    for r in records.iter().filter(|r| r.quota_counted) {
        *handed.entry(r.project_id.clone()).or_default() += 1;
    }
    let count = records.len() as u64;
    let mut batch = TelemetryBatch::from_records(records);
    for (delta, counted) in log.take_spilled() {
        *handed.entry(delta.project_id.clone()).or_default() += counted;
        batch.usage.push(delta);
    }
    if !settings.enabled {
        batch.records.clear();
    }
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=4 {
        match store.write_telemetry(&batch).await {
            Ok(()) => {
                log.counters.written.fetch_add(count, Ordering::Relaxed);
                for (project, n) in handed {
                    quotas.handed_over(&project, n);
                }
                return;
            }
            Err(e) if attempt < 4 => {
                tracing::warn!(error = %e, attempt, "writing the request log failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, records = count, "request log records lost");
                log.counters.lost.fetch_add(count, Ordering::Relaxed);
                // They will never be in the database: stop counting them as pending.
                for (project, n) in handed {
                    quotas.handed_over(&project, n);
                }
                return;
            }
        }
    }
}
