//! The request log, roll-ups, quotas and audit log in the store, on SQLite and PostgreSQL.

use ezforge_core::audit::{AuditQuery, AuditRow};
use ezforge_core::model::*;
use ezforge_core::store::{Store, TelemetryStore};
use ezforge_core::telemetry::{RecordQuery, RequestRow, TelemetryBatch};
use ezforge_proto::{ActorKind, Decision, Environment, Role};
use ezforge_store::SqlStore;

/// 2026-11-26T08:58:33Z.
const T: i64 = 1_795_683_513_000;

fn record(
    n: i64,
    env: Environment,
    tool: Option<&str>,
    decision: Decision,
    status: u16,
    who: &str,
) -> RequestRow {
    RequestRow {
        id: format!("req_{n:04}"),
        project_id: "prj_1".into(),
        server_id: "srv_1".into(),
        environment: env,
        deployment_id: Some("dep_1".into()),
        at_ms: T + n,
        http_method: "POST".into(),
        method: Some(
            if tool.is_some() {
                "tools/call"
            } else {
                "initialize"
            }
            .into(),
        ),
        tool: tool.map(String::from),
        decision,
        reason: (decision == Decision::Denied).then(|| "insufficient_scope".into()),
        status,
        latency_us: 1_000 * (n + 1),
        subject: Some(format!("usr_{who}")),
        client_id: Some(format!("cli_{who}")),
        token_id: Some(format!("at_{n}")),
        bytes_in: 10,
        bytes_out: 20,
        tool_calls: u32::from(tool.is_some() && decision == Decision::Allowed),
        quota_counted: false,
    }
}

ezforge_testkit::backend_tests! {
    async fn records_roll_up_and_read_back(db) {
        let store = SqlStore::open(&db.url, 4).await.unwrap();
        let first = vec![
            record(1, Environment::Live, Some("echo"), Decision::Allowed, 200, "a"),
            record(2, Environment::Live, Some("echo"), Decision::Denied, 403, "b"),
            record(3, Environment::Live, None, Decision::Allowed, 502, "a"),
        ];
        let second = vec![
            record(4, Environment::Test, Some("echo"), Decision::Allowed, 200, "c"),
            record(5, Environment::Live, Some("rm"), Decision::Allowed, 200, "b"),
        ];
        store.write_telemetry(&TelemetryBatch::from_records(first)).await.unwrap();
        // A second batch for the same minute adds to the same rows.
        store.write_telemetry(&TelemetryBatch::from_records(second)).await.unwrap();

        let all = store.request_records(&RecordQuery { server_id: "srv_1".into(), limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["req_0005", "req_0004", "req_0003", "req_0002", "req_0001"]);
        assert_eq!(all[4], record(1, Environment::Live, Some("echo"), Decision::Allowed, 200, "a").clone_stored());
        let q = |f: fn(&mut RecordQuery)| { let mut q = RecordQuery { server_id: "srv_1".into(), limit: 100, ..Default::default() }; f(&mut q); q };
        assert_eq!(store.request_records(&q(|q| q.tool = Some("echo".into()))).await.unwrap().len(), 3);
        assert_eq!(store.request_records(&q(|q| q.decision = Some(Decision::Denied))).await.unwrap().len(), 1);
        assert_eq!(store.request_records(&q(|q| q.status = Some(502))).await.unwrap().len(), 1);
        assert_eq!(store.request_records(&q(|q| { q.since_ms = Some(T + 2); q.until_ms = Some(T + 4); })).await.unwrap().len(), 2);
        let older = store.request_records(&q(|q| q.before = Some((T + 3, "req_0003".into())))).await.unwrap();
        assert_eq!(older.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["req_0002", "req_0001"]);
        // Following: chunks oldest first, those already seen left out.
        let chunks = store.request_chunks_since("srv_1", T, &[], 10).await.unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].2.len(), 3);
        assert_eq!(chunks[1].1, T + 5);
        let rest = store.request_chunks_since("srv_1", T, std::slice::from_ref(&chunks[0].0), 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].2.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["req_0004", "req_0005"]);
        assert!(store.request_chunks_since("srv_1", T + 6, &[], 10).await.unwrap().is_empty());

        let minute = T / 60_000;
        let stats = store.stat_sums("srv_1", minute, minute + 1, 1).await.unwrap();
        let echo = stats.iter().find(|s| s.tool == "echo").unwrap();
        assert_eq!((echo.requests, echo.errors, echo.denials), (3, 0, 1));
        let none = stats.iter().find(|s| s.tool.is_empty()).unwrap();
        assert_eq!((none.requests, none.errors), (1, 1));
        let latency = store.latency_sums("srv_1", minute, minute + 1, 1).await.unwrap();
        assert_eq!(latency.iter().map(|l| l.count).sum::<i64>(), 5);
        assert!(store.stat_sums("srv_1", minute + 1, minute + 2, 1).await.unwrap().is_empty());

        // Usage counts forwarded requests only, per environment or both.
        let both = store.usage_days("prj_1", None, "2026-11-01", "2026-11-30").await.unwrap();
        assert_eq!(both.len(), 1);
        assert_eq!((both[0].day.as_str(), both[0].requests, both[0].tool_calls, both[0].clients, both[0].users), ("2026-11-26", 4, 3, 3, 3));
        let live = store.usage_days("prj_1", Some(Environment::Live), "2026-11-26", "2026-11-26").await.unwrap();
        assert_eq!((live[0].requests, live[0].clients), (3, 2));
        assert_eq!(store.distinct_actors("prj_1", Some(Environment::Test), "2026-11-01", "2026-11-30").await.unwrap(), (1, 1));
        assert_eq!(store.month_requests("prj_1", "2026-11").await.unwrap(), 4);
        assert_eq!(store.month_requests("prj_1", "2026-12").await.unwrap(), 0);

        // Retention removes records and per-minute metrics, not usage.
        // Records are kept in chunks (one per written batch and server): a chunk goes when its
        // newest record is past the horizon.
        assert_eq!(store.purge_telemetry(T + 3).await.unwrap(), 0, "the first chunk ends at T+3");
        assert_eq!(store.purge_telemetry(T + 4).await.unwrap(), 3);
        assert_eq!(store.request_records(&q(|_| {})).await.unwrap().len(), 2);
        assert_eq!(store.purge_telemetry(T + 120_000).await.unwrap(), 2);
        assert!(store.stat_sums("srv_1", minute, minute + 1, 1).await.unwrap().is_empty());
        assert_eq!(store.month_requests("prj_1", "2026-11").await.unwrap(), 4);
    }

    /// A batch is written as multi-row upserts, several statements per table when it is large;
    /// rows that name the same key twice (usage from dropped records beside the batch's own)
    /// are summed, which PostgreSQL would otherwise refuse within one statement.
    async fn large_batches_and_repeated_keys_add_up(db) {
        use ezforge_core::telemetry::{ActorRow, LatencyDelta, StatDelta, UsageDelta};
        let store = SqlStore::open(&db.url, 4).await.unwrap();
        let minute = T / 60_000;
        let stat = |tool: &str, requests| StatDelta { server_id: "srv_1".into(), minute, tool: tool.into(), requests, errors: 1, denials: 0 };
        // 1,201 buckets: three statements of at most 500 rows.
        let latency: Vec<LatencyDelta> = (0..1_201).map(|b| LatencyDelta { server_id: "srv_1".into(), minute, tool: "echo".into(), bucket: b, count: b + 1 }).collect();
        let usage = |requests| UsageDelta { project_id: "prj_1".into(), environment: Environment::Live, day: "2026-11-26".into(), requests, tool_calls: requests / 2 };
        let actor = |who: &str| ActorRow { project_id: "prj_1".into(), environment: Environment::Live, day: "2026-11-26".into(), kind: "client", actor: who.into() };
        let batch = TelemetryBatch {
            records: Vec::new(),
            stats: vec![stat("echo", 3), stat("", 1), stat("echo", 4)],
            latency: latency.iter().chain(&latency[..2]).cloned().collect(),
            usage: vec![usage(10), usage(6)],
            actors: vec![actor("a"), actor("b"), actor("a")],
        };
        store.write_telemetry(&batch).await.unwrap();
        // And again: every row now exists, so each upsert takes its update branch.
        store.write_telemetry(&batch).await.unwrap();

        let stats = store.stat_sums("srv_1", minute, minute + 1, 1).await.unwrap();
        let echo = stats.iter().find(|s| s.tool == "echo").unwrap();
        assert_eq!((echo.requests, echo.errors), (14, 4));
        let none = stats.iter().find(|s| s.tool.is_empty()).unwrap();
        assert_eq!((none.requests, none.errors), (2, 2));
        let mut sums = store.latency_sums("srv_1", minute, minute + 1, 1).await.unwrap();
        sums.sort_by_key(|l| l.bucket);
        assert_eq!(sums.len(), 1_201);
        // Buckets 0 and 1 were named twice in each batch.
        let expected = |b: i64| 2 * (b + 1) * if b < 2 { 2 } else { 1 };
        for l in &sums {
            assert_eq!(l.count, expected(l.bucket), "bucket {}", l.bucket);
        }
        let days = store.usage_days("prj_1", None, "2026-11-26", "2026-11-26").await.unwrap();
        assert_eq!((days[0].requests, days[0].tool_calls, days[0].clients), (32, 16, 2));
    }

    /// Pages walk chunks whose times overlap (batches from several nodes) and still come out
    /// in exact (time, id) order, each record once.
    async fn pages_across_overlapping_chunks_are_exact(db) {
        let store = SqlStore::open(&db.url, 4).await.unwrap();
        let mut expected = Vec::new();
        for batch in 0..40i64 {
            // Batch b holds times b, b+40, b+80, … : every chunk overlaps every other.
            let rows: Vec<RequestRow> = (0..7)
                .map(|k| {
                    let mut r = record(batch + 40 * k, Environment::Live, None, Decision::Allowed, 200, "a");
                    r.id = format!("req_{batch:03}_{k}");
                    r
                })
                .collect();
            expected.extend(rows.iter().map(|r| (r.at_ms, r.id.clone())));
            store.write_telemetry(&TelemetryBatch::from_records(rows)).await.unwrap();
        }
        expected.sort_by(|a, b| b.cmp(a));
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .request_records(&RecordQuery { server_id: "srv_1".into(), limit: 9, before: before.clone(), ..Default::default() })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            seen.extend(page.iter().map(|r| (r.at_ms, r.id.clone())));
            let last = page.last().unwrap();
            before = Some((last.at_ms, last.id.clone()));
        }
        assert_eq!(seen, expected);
    }

    async fn quotas_and_the_audit_log(db) {
        let store = SqlStore::open(&db.url, 4).await.unwrap();
        let owner = UserRow { id: "usr_1".into(), email: "o@example.com".into(), password_hash: "x".into(), is_admin: false, email_verified: false, created_at: 1 };
        store.insert_user(&owner, ezforge_core::store::UserAdmission::Open).await.unwrap();
        let project = ProjectRow { id: "prj_1".into(), name: "p".into(), created_by: owner.id.clone(), created_at: 1 };
        store.insert_project(&project, &MemberRow { project_id: project.id.clone(), user_id: owner.id.clone(), role: Role::Owner, created_at: 1 }).await.unwrap();

        assert_eq!(store.project_quota("prj_1").await.unwrap(), None);
        store.set_project_quota("prj_1", Some(100)).await.unwrap();
        store.set_project_quota("prj_1", Some(200)).await.unwrap();
        assert_eq!(store.project_quota("prj_1").await.unwrap(), Some(200));
        store.set_project_quota("prj_1", None).await.unwrap();
        assert_eq!(store.project_quota("prj_1").await.unwrap(), None);

        let entry = |n: i64, kind: ActorKind, action: &str, env: Option<Environment>| AuditRow {
            id: format!("aud_{n:04}"),
            project_id: "prj_1".into(),
            at_ms: T + n,
            actor_kind: kind,
            actor_id: if kind == ActorKind::User { "usr_1".into() } else { "key_1".into() },
            actor_email: None,
            action: action.into(),
            target: "x".into(),
            environment: env,
            details: serde_json::json!({"n": n}),
        };
        store.insert_audit(&entry(1, ActorKind::User, "project.create", None)).await.unwrap();
        store.insert_audit(&entry(2, ActorKind::User, "api_key.create", Some(Environment::Live))).await.unwrap();
        store.insert_audit(&entry(3, ActorKind::ApiKey, "server_update", Some(Environment::Test))).await.unwrap();
        let read = |environment, action: Option<&str>, limit| AuditQuery { project_id: "prj_1".into(), environment, action: action.map(String::from), before: None, limit };
        let all = store.audit_entries(&read(None, None, 10)).await.unwrap();
        assert_eq!(all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["aud_0003", "aud_0002", "aud_0001"]);
        assert_eq!(all[2].actor_email.as_deref(), Some("o@example.com"));
        assert_eq!(all[0].actor_email, None);
        assert_eq!(all[1].details["n"], 2);
        let test_only = store.audit_entries(&read(Some(Environment::Test), None, 10)).await.unwrap();
        assert_eq!(test_only.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["aud_0003", "aud_0001"]);
        // `_` in a prefix is literal: `server_` matches server_update, `api_` does not match `apiXkey`.
        assert_eq!(store.audit_entries(&read(None, Some("server_"), 10)).await.unwrap().len(), 1);
        assert_eq!(store.audit_entries(&read(None, Some("api_key."), 10)).await.unwrap().len(), 1);
        assert_eq!(store.audit_entries(&read(None, Some("%"), 10)).await.unwrap().len(), 0);
        let page = store.audit_entries(&AuditQuery { before: Some((T + 2, "aud_0002".into())), ..read(None, None, 10) }).await.unwrap();
        assert_eq!(page.len(), 1);
    }
}

trait Stored {
    /// What reading back gives: the fields that are not stored are zero.
    fn clone_stored(&self) -> RequestRow;
}

impl Stored for RequestRow {
    fn clone_stored(&self) -> RequestRow {
        RequestRow {
            tool_calls: 0,
            quota_counted: false,
            ..self.clone()
        }
    }
}

/// A request log with these settings over a fresh SQLite store (kept alive by the returned db).
async fn request_log(
    settings: ezforge_core::telemetry::RequestLogSettings,
) -> (
    ezforge_testkit::TestDb,
    std::sync::Arc<dyn Store>,
    std::sync::Arc<ezforge_core::telemetry::RequestLog>,
) {
    use ezforge_core::telemetry::{Quotas, RequestLog};
    use std::sync::Arc;
    let db = ezforge_testkit::TestDb::sqlite();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&db.url, 4).await.unwrap());
    let quotas = Arc::new(Quotas::new(store.clone()));
    let log = RequestLog::start(store.clone(), quotas, settings);
    (db, store, log)
}

/// With the queue full, records are dropped and counted, and their usage still arrives.
#[tokio::test]
async fn a_full_queue_drops_records_but_not_usage() {
    use ezforge_core::telemetry::RequestLogSettings;
    use std::sync::atomic::Ordering;
    let (_db, store, log) = request_log(RequestLogSettings {
        queue_capacity: 2,
        ..Default::default()
    })
    .await;
    // No await between hand-overs: the writer cannot drain, the queue overflows.
    for n in 0..100 {
        log.record(record(
            n,
            Environment::Live,
            Some("echo"),
            Decision::Allowed,
            200,
            "a",
        ));
    }
    log.flush().await;
    let dropped = log.counters.dropped.load(Ordering::Relaxed);
    let written = log.counters.written.load(Ordering::Relaxed);
    assert!(dropped >= 90, "dropped {dropped}");
    assert_eq!(dropped + written, 100);
    let stored = store
        .request_records(&RecordQuery {
            server_id: "srv_1".into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, written);
    let days = store
        .usage_days("prj_1", None, "2026-11-26", "2026-11-26")
        .await
        .unwrap();
    assert_eq!(
        (days[0].requests, days[0].tool_calls),
        (100, 100),
        "usage counts every request"
    );
}

/// A queue smaller than a batch: the writer is woken when it is half full instead of sleeping
/// out its window, so records handed over at a steady pace are not dropped.
#[tokio::test]
async fn a_small_queue_at_a_steady_pace_drops_nothing() {
    use ezforge_core::telemetry::RequestLogSettings;
    use std::sync::atomic::Ordering;
    let (_db, _store, log) = request_log(RequestLogSettings {
        queue_capacity: 64,
        flush_interval: std::time::Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    // 300 records at about one per millisecond: far more than the queue holds within one
    // (2 s) window, far less than the writer can take.
    for n in 0..300 {
        log.record(record(
            n,
            Environment::Live,
            Some("echo"),
            Decision::Allowed,
            200,
            "a",
        ));
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    log.flush().await;
    assert_eq!(log.counters.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(log.counters.written.load(Ordering::Relaxed), 300);
}
