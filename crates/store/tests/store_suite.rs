//! The store's test suite, run on a fresh SQLite file and a fresh PostgreSQL database.

use ezforge_core::model::*;
use ezforge_core::store::{Store, StoreError, UserAdmission};
use ezforge_proto::{Environment, Role, Scope};
use ezforge_store::SqlStore;

fn user(email: &str) -> UserRow {
    UserRow {
        id: ezforge_core::ids::user_id(),
        email: email.into(),
        password_hash: "$argon2id$fake".into(),
        is_admin: false,
        email_verified: false,
        created_at: 1_700_000_000,
    }
}

async fn open(url: &str) -> SqlStore {
    SqlStore::open(url, 4).await.expect("open store")
}

async fn project_with_owner(store: &SqlStore, name: &str, owner: &UserRow) -> ProjectRow {
    let p = ProjectRow {
        id: ezforge_core::ids::project_id(),
        name: name.into(),
        created_by: owner.id.clone(),
        created_at: 1,
    };
    let m = MemberRow {
        project_id: p.id.clone(),
        user_id: owner.id.clone(),
        role: Role::Owner,
        created_at: 1,
    };
    store.insert_project(&p, &m).await.unwrap();
    p
}

fn key(project: &ProjectRow, hash: &str) -> ApiKeyRow {
    ApiKeyRow {
        id: ezforge_core::ids::api_key_id(),
        project_id: project.id.clone(),
        name: "ci".into(),
        environment: Environment::Test,
        scopes: vec![Scope::ServersRead, Scope::DeploymentsWrite],
        secret_hash: hash.into(),
        display_prefix: "ezf_test_abcd".into(),
        created_by: project.created_by.clone(),
        created_at: 10,
        last_used_at: None,
        expires_at: Some(1000),
        revoked_at: None,
    }
}

ezforge_testkit::backend_tests! {
    async fn migrations_run_twice_without_harm(db) {
        let store = open(&db.url).await;
        store.close().await;
        let store = open(&db.url).await;
        assert_eq!(store.user_count().await.unwrap(), 0);
        if db.backend == ezforge_testkit::Backend::Sqlite {
            assert_eq!(store.sqlite_journal_mode().await.as_deref(), Some("wal"));
            // Per-connection settings must hold on every pooled connection.
            for _ in 0..8 {
                let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(store.pool()).await.unwrap();
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(store.pool()).await.unwrap();
                let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(store.pool()).await.unwrap();
                assert_eq!((fk, sync, busy), (1, 1, 5000), "foreign_keys on, synchronous NORMAL, busy_timeout 5 s");
            }
        }
    }

    async fn first_user_becomes_admin_and_emails_are_unique(db) {
        let store = open(&db.url).await;
        let first = store.insert_user(&user("a@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        assert!(first.is_admin);
        let second = store.insert_user(&user("b@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        assert!(!second.is_admin);
        let dup = store.insert_user(&user("a@example.com"), UserAdmission::Open).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(store.user_by_email("b@example.com").await.unwrap().unwrap().id, second.id);
        assert_eq!(store.user_by_id(&first.id).await.unwrap().unwrap().email, "a@example.com");
        assert_eq!(store.user_count().await.unwrap(), 2);
    }

    async fn first_user_only_admission_refuses_once_someone_exists(db) {
        let store = open(&db.url).await;
        assert!(store.insert_user(&user("a@example.com"), UserAdmission::FirstUserOnly).await.unwrap().is_some());
        assert!(store.insert_user(&user("b@example.com"), UserAdmission::FirstUserOnly).await.unwrap().is_none());
        assert_eq!(store.user_count().await.unwrap(), 1);
    }

    async fn an_invite_is_consumed_with_the_user_in_one_transaction(db) {
        let store = open(&db.url).await;
        let admin = store.insert_user(&user("admin@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        let invite = InviteRow { id: "inv_1".into(), code_hash: "h1".into(), email: None, created_by: admin.id.clone(), created_at: 0, expires_at: 100 };
        store.insert_invite(&invite).await.unwrap();
        // A failed insert (duplicate email) must not burn the invite.
        let dup = store.insert_user(&user("admin@example.com"), UserAdmission::Invite { code_hash: "h1".into(), now: 50 }).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))));
        let ok = store.insert_user(&user("new@example.com"), UserAdmission::Invite { code_hash: "h1".into(), now: 50 }).await.unwrap();
        assert!(ok.is_some());
        let again = store.insert_user(&user("other@example.com"), UserAdmission::Invite { code_hash: "h1".into(), now: 50 }).await.unwrap();
        assert!(again.is_none(), "an invite works once");
        let invite2 = InviteRow { id: "inv_2".into(), code_hash: "h2".into(), expires_at: 10, ..invite };
        store.insert_invite(&invite2).await.unwrap();
        let expired = store.insert_user(&user("late@example.com"), UserAdmission::Invite { code_hash: "h2".into(), now: 50 }).await.unwrap();
        assert!(expired.is_none(), "an expired invite is refused");
    }

    async fn sessions_are_stored_by_hash_and_deleted(db) {
        let store = open(&db.url).await;
        let u = store.insert_user(&user("a@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        for (hash, exp) in [("s1", 100), ("s2", 5000), ("s3", 5000)] {
            store.insert_session(&SessionRow { token_hash: hash.into(), user_id: u.id.clone(), created_at: 0, expires_at: exp }).await.unwrap();
        }
        assert_eq!(store.session_by_hash("s2").await.unwrap().unwrap().expires_at, 5000);
        assert!(store.delete_session("s2").await.unwrap());
        assert!(store.session_by_hash("s2").await.unwrap().is_none());
        assert_eq!(store.purge_sessions(1000).await.unwrap(), 1);
        assert_eq!(store.delete_user_sessions(&u.id).await.unwrap(), 1);
    }

    async fn projects_members_and_owner_rules(db) {
        let store = open(&db.url).await;
        let owner = store.insert_user(&user("o@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        let member = store.insert_user(&user("m@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        let p = project_with_owner(&store, "my-first-project", &owner).await;
        let dup = ProjectRow { id: ezforge_core::ids::project_id(), ..p.clone() };
        let dup_owner = MemberRow { project_id: dup.id.clone(), user_id: owner.id.clone(), role: Role::Owner, created_at: 1 };
        assert!(matches!(store.insert_project(&dup, &dup_owner).await, Err(StoreError::Conflict(_))));
        assert!(store.project(&dup.id).await.unwrap().is_none(), "nothing half-written");
        assert_eq!(store.project("my-first-project").await.unwrap().unwrap().id, p.id);
        assert_eq!(store.project(&p.id).await.unwrap().unwrap().name, "my-first-project");
        store.insert_member(&MemberRow { project_id: p.id.clone(), user_id: member.id.clone(), role: Role::Member, created_at: 2 }).await.unwrap();
        assert_eq!(store.members(&p.id).await.unwrap().len(), 2);
        assert_eq!(store.owner_count(&p.id).await.unwrap(), 1);
        assert_eq!(store.projects_of_user(&member.id).await.unwrap()[0].1, Role::Member);
        assert!(store.delete_member(&p.id, &member.id).await.unwrap());
        assert!(store.projects_of_user(&member.id).await.unwrap().is_empty());
    }

    async fn api_keys_round_trip_revoke_and_touch(db) {
        let store = open(&db.url).await;
        let owner = store.insert_user(&user("o@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        let p = project_with_owner(&store, "p", &owner).await;
        let k = key(&p, "hash-1");
        store.insert_api_key(&k).await.unwrap();
        assert_eq!(store.api_key_by_hash("hash-1").await.unwrap().unwrap(), k);
        assert!(store.api_key_by_hash("hash-2").await.unwrap().is_none());
        store.touch_api_key(&k.id, 500).await.unwrap();
        store.touch_api_key(&k.id, 400).await.unwrap();
        assert_eq!(store.api_key(&p.id, &k.id).await.unwrap().unwrap().last_used_at, Some(500));
        let revoked = store.revoke_api_key(&p.id, &k.id, 600).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(600));
        let again = store.revoke_api_key(&p.id, &k.id, 700).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, Some(600), "the first revocation time stays");
        assert!(store.revoke_api_key("prj_other", &k.id, 700).await.unwrap().is_none());
        assert_eq!(store.api_keys(&p.id).await.unwrap().len(), 1);
    }

    async fn servers_by_slug_and_environment(db) {
        let store = open(&db.url).await;
        let owner = store.insert_user(&user("o@example.com"), UserAdmission::Open).await.unwrap().unwrap();
        let p = project_with_owner(&store, "p", &owner).await;
        let mk = |slug: &str, env| ServerRow {
            id: ezforge_core::ids::server_id(),
            project_id: p.id.clone(),
            name: slug.into(),
            slug: slug.into(),
            environment: env,
            created_by: owner.id.clone(),
            created_at: 1,
            updated_at: 1,
            access_policy: Default::default(),
            byoa: None,
            tool_policy: Default::default(),
            active_deployment_id: None,
        };
        let live = mk("alpha", Environment::Live);
        store.insert_server(&live).await.unwrap();
        store.insert_server(&mk("beta", Environment::Test)).await.unwrap();
        assert!(matches!(store.insert_server(&mk("alpha", Environment::Test)).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.servers(&p.id, None).await.unwrap().len(), 2);
        assert_eq!(store.servers(&p.id, Some(Environment::Test)).await.unwrap()[0].slug, "beta");
        let mut s = store.server(&p.id, "alpha").await.unwrap().unwrap();
        assert_eq!(s, live);
        s.name = "Alpha".into();
        s.access_policy = AccessPolicy::Allowlist(vec!["a@example.com".into(), "@corp.example".into()]);
        s.byoa = Some(ezforge_proto::ByoaSettings {
            issuer: "https://auth.example.com".into(),
            jwks_uri: "https://auth.example.com/.well-known/jwks.json".into(),
            authorization_endpoint: "https://auth.example.com/oauth/authorize".into(),
            token_endpoint: "https://auth.example.com/oauth/token".into(),
        });
        s.tool_policy = ezforge_proto::ToolPolicy { allow: vec![], deny: vec!["rm".into()], execute: vec!["shell".into()] };
        s.updated_at = 9;
        store.update_server(&s).await.unwrap();
        assert_eq!(store.server(&p.id, &s.id).await.unwrap().unwrap(), s);
        assert!(store.server("prj_other", "alpha").await.unwrap().is_none());
        assert!(store.delete_server(&s.id).await.unwrap());
        assert!(store.server(&p.id, "alpha").await.unwrap().is_none());
    }
}
