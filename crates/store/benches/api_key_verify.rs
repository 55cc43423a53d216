//! API key verification: parse + checksum, hash, lookup, revocation/expiry checks.
//!
//! `cargo bench -p ezforge-store --bench api_key_verify`
//!
//! - `offline`: shape and checksum only (what rejects a look-alike before any I/O);
//! - `warm`: a key verified recently, served from the in-memory cache;
//! - `cold/sqlite` and `cold/postgres`: the cache disabled, so every call hashes and looks the
//!   key up in the database (PostgreSQL only when reachable).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ezforge_core::model::{MemberRow, ProjectRow, UserRow};
use ezforge_core::store::UserAdmission;
use ezforge_core::{Core, Principal, Settings, Store, SystemClock, api_key, ids, secret};
use ezforge_proto::{Environment, Role, Scope};
use ezforge_store::SqlStore;
use ezforge_testkit::TestDb;
use std::sync::Arc;
use std::time::Duration;

/// A core over `db` holding one live key; returns it and the key.
async fn setup(db: &TestDb, cache_ttl: u64) -> (Arc<Core>, String) {
    let store = SqlStore::open(&db.url, 8).await.expect("store");
    let user = UserRow {
        id: ids::user_id(),
        email: "bench@example.com".into(),
        password_hash: "x".into(),
        is_admin: false,
        email_verified: false,
        created_at: 0,
    };
    store.insert_user(&user, UserAdmission::Open).await.unwrap();
    let project = ProjectRow {
        id: ids::project_id(),
        name: "bench".into(),
        created_by: user.id.clone(),
        created_at: 0,
    };
    let owner = MemberRow {
        project_id: project.id.clone(),
        user_id: user.id.clone(),
        role: Role::Owner,
        created_at: 0,
    };
    store.insert_project(&project, &owner).await.unwrap();
    let settings = Settings {
        api_key_cache_ttl_secs: cache_ttl,
        ..Settings::default()
    };
    let core = Arc::new(Core::new(Arc::new(store), Arc::new(SystemClock), settings));
    let key = api_key::generate(Environment::Live);
    let row = ezforge_core::model::ApiKeyRow {
        id: ids::api_key_id(),
        project_id: project.id,
        name: "bench".into(),
        environment: Environment::Live,
        scopes: vec![Scope::ServersRead],
        secret_hash: secret::hash(&key),
        display_prefix: key[..13].into(),
        created_by: user.id,
        created_at: 0,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
    };
    core.store().insert_api_key(&row).await.unwrap();
    (core, key)
}

fn verify(rt: &tokio::runtime::Runtime, core: &Core, key: &str) {
    let p = rt
        .block_on(core.authenticate_api_key(key))
        .expect("valid key");
    assert!(matches!(p, Principal::ApiKey(_)));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("api_key_verify");
    group
        .throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);

    let key = api_key::generate(Environment::Live);
    group.bench_function("offline", |b| {
        b.iter(|| api_key::parse(std::hint::black_box(&key)).unwrap())
    });

    let db = TestDb::sqlite();
    let (core, key) = rt.block_on(setup(&db, 10));
    verify(&rt, &core, &key);
    group.bench_function("warm", |b| b.iter(|| verify(&rt, &core, &key)));

    let db = TestDb::sqlite();
    let (core, key) = rt.block_on(setup(&db, 0));
    group.bench_function("cold/sqlite", |b| b.iter(|| verify(&rt, &core, &key)));

    if let Some(db) = rt.block_on(TestDb::postgres()) {
        let (core, key) = rt.block_on(setup(&db, 0));
        group.bench_function("cold/postgres", |b| b.iter(|| verify(&rt, &core, &key)));
        drop(core);
        drop(db);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
