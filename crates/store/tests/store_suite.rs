//! The store's test suite, run on a fresh SQLite file and a fresh PostgreSQL database.

use ezforge_core::model::*;
use ezforge_core::oauth::model::*;
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

fn server_row(
    project: &ProjectRow,
    owner: &UserRow,
    slug: &str,
    environment: Environment,
) -> ServerRow {
    ServerRow {
        id: ezforge_core::ids::server_id(),
        project_id: project.id.clone(),
        name: slug.into(),
        slug: slug.into(),
        environment,
        created_by: owner.id.clone(),
        created_at: 1,
        updated_at: 1,
        access_policy: Default::default(),
        byoa: None,
        tool_policy: Default::default(),
        active_deployment_id: None,
    }
}

/// A user, a project, a server, a client and a grant with `codes` authorization codes
/// (`code-0`, `code-1`, … hashed as given; challenge `ch`).
async fn grant_with_codes(store: &SqlStore, codes: usize) -> GrantRow {
    let owner = store
        .insert_user(&user("o@example.com"), UserAdmission::Open)
        .await
        .unwrap()
        .unwrap();
    let p = project_with_owner(store, "p", &owner).await;
    let server = server_row(&p, &owner, "alpha", Environment::Live);
    store.insert_server(&server).await.unwrap();
    let client = ClientRow {
        client_id: "cli_1".into(),
        kind: ClientKind::Dynamic,
        project_id: None,
        client_name: Some("Test".into()),
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        token_endpoint_auth_method: "none".into(),
        application_type: "native".into(),
        metadata: serde_json::json!({}),
        metadata_hash: "m".into(),
        secret_hash: None,
        created_by: None,
        created_at: 1,
        last_used_at: None,
        expires_at: None,
    };
    store.insert_client(&client).await.unwrap();
    let grant = GrantRow {
        id: "grt_1".into(),
        user_id: owner.id.clone(),
        client_id: client.client_id.clone(),
        server_id: server.id.clone(),
        resource: "http://127.0.0.1/mcp/alpha".into(),
        scope: "mcp:read offline_access".into(),
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
        revoked_reason: None,
    };
    for i in 0..codes.max(1) {
        let code = CodeRow {
            code_hash: format!("code-{i}"),
            grant_id: grant.id.clone(),
            client_id: client.client_id.clone(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "ch".into(),
            created_at: 1,
            expires_at: 300,
            used_at: None,
        };
        if i == 0 {
            store.insert_grant_with_code(&grant, &code).await.unwrap();
        } else {
            sqlx::query("INSERT INTO oauth_codes (code_hash, grant_id, client_id, redirect_uri, code_challenge, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&code.code_hash).bind(&code.grant_id).bind(&code.client_id).bind(&code.redirect_uri)
                .bind(&code.code_challenge).bind(code.created_at).bind(code.expires_at)
                .execute(store.pool()).await.unwrap();
        }
    }
    grant
}

fn attempt(hash: &str, client: &str, challenge: &str) -> CodeAttempt {
    CodeAttempt {
        code_hash: hash.into(),
        client_id: client.into(),
        code_challenge: challenge.into(),
        refresh: None,
    }
}

fn refresh_row(hash: &str, grant: &GrantRow) -> RefreshRow {
    RefreshRow {
        token_hash: hash.into(),
        grant_id: grant.id.clone(),
        scope: grant.scope.clone(),
        created_at: 10,
        expires_at: 1000,
        used_at: None,
        successor_hash: None,
        generation: None,
    }
}

/// The rotation of a token of the old kind: its successor is a family's first row.
fn rotation(hash: &str, grant: &GrantRow) -> RotationAttempt {
    RotationAttempt {
        token_hash: hash.into(),
        generation: None,
        successor: RefreshRow {
            generation: Some(0),
            ..refresh_row(&format!("{hash}-next"), grant)
        },
    }
}

async fn codes_spend_once_per_batch_and_across_batches_on(store: &SqlStore) {
    let grant = grant_with_codes(store, 40).await;
    // One batch: a stolen code (wrong client, wrong challenge) first, then its owner twice,
    // an unknown code, a code spent by its owner and then presented by a thief. Answers
    // are as if the requests came one after another in that order. `issue` hears of each
    // code spent now, with its grant, and stores a refresh token for the first.
    let mut heard = Vec::new();
    let uses = store
        .exchange_codes(
            &[
                attempt("code-0", "cli_evil", "ch"),
                attempt("code-0", "cli_1", "wrong"),
                attempt("code-0", "cli_1", "ch"),
                attempt("code-0", "cli_1", "ch"),
                attempt("nope", "cli_1", "ch"),
                attempt("code-1", "cli_1", "ch"),
                attempt("code-1", "cli_evil", "ch"),
            ],
            50,
            &mut |i, code, g| {
                heard.push((i, code.code_hash.clone(), g.cloned()));
                (i == 2).then(|| refresh_row("rt-issued", g.unwrap()))
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(&uses[0], CodeUse::Mismatch(c) if c.client_id == "cli_1" && c.used_at.is_none()),
        "before its owner, the thief finds it unspent: {:?}",
        uses[0]
    );
    assert!(
        matches!(&uses[1], CodeUse::Mismatch(_)),
        "a wrong verifier does not burn it: {:?}",
        uses[1]
    );
    assert!(
        matches!(&uses[2], CodeUse::First(c) if c.used_at == Some(50) && c.grant_id == grant.id),
        "{:?}",
        uses[2]
    );
    assert!(
        matches!(&uses[3], CodeUse::Replayed(_)),
        "a second presentation is a replay: {:?}",
        uses[3]
    );
    assert_eq!(uses[4], CodeUse::Unknown);
    assert!(matches!(&uses[5], CodeUse::First(_)));
    assert!(
        matches!(&uses[6], CodeUse::Replayed(c) if c.used_at == Some(50)),
        "after its owner, the thief finds it spent: {:?}",
        uses[6]
    );
    assert_eq!(
        heard,
        vec![
            (2, "code-0".to_string(), Some(grant.clone())),
            (5, "code-1".to_string(), Some(grant.clone()))
        ]
    );
    assert_eq!(
        store.refresh("rt-issued").await.unwrap(),
        Some(refresh_row("rt-issued", &grant))
    );
    // Mismatches alone leave the code for its owner.
    let uses = store
        .exchange_codes(
            &[
                attempt("code-2", "cli_evil", "ch"),
                attempt("code-2", "cli_1", "bad"),
            ],
            51,
            &mut |_, _, _| None,
        )
        .await
        .unwrap();
    assert!(
        uses.iter()
            .all(|u| matches!(u, CodeUse::Mismatch(c) if c.used_at.is_none())),
        "{uses:?}"
    );
    // A later batch finds spent codes replayed.
    let uses = store
        .exchange_codes(
            &[
                attempt("code-0", "cli_1", "ch"),
                attempt("code-2", "cli_1", "ch"),
            ],
            52,
            &mut |_, _, _| None,
        )
        .await
        .unwrap();
    assert!(matches!(&uses[0], CodeUse::Replayed(c) if c.used_at == Some(50)));
    assert!(matches!(&uses[1], CodeUse::First(_)));
    // A batch whose writes fail is an error. In one transaction (SQLite) that changes
    // nothing: the code stays unspent. On PostgreSQL the code is spent by a statement of its
    // own and a refresh token other than the attempt's offer is stored after it (see
    // `pg_tokens`), so the code stays spent.
    let mut orphan = refresh_row("rt-orphan", &grant);
    orphan.grant_id = "grt_none".into();
    let failed = store
        .exchange_codes(&[attempt("code-3", "cli_1", "ch")], 53, &mut |_, _, _| {
            Some(orphan.clone())
        })
        .await;
    assert!(failed.is_err(), "a refresh token of no grant is refused");
    let again = store
        .exchange_codes(&[attempt("code-3", "cli_1", "ch")], 53, &mut |_, _, _| None)
        .await
        .unwrap();
    if store.backend() == "postgres" {
        assert!(matches!(&again[0], CodeUse::Replayed(_)), "{again:?}");
    } else {
        assert!(matches!(&again[0], CodeUse::First(_)), "{again:?}");
    }
    assert_eq!(store.refresh("rt-orphan").await.unwrap(), None);
    // More than one statement's worth (and not a power of two): every code spent once.
    let many: Vec<CodeAttempt> = (4..40)
        .map(|i| attempt(&format!("code-{i}"), "cli_1", "ch"))
        .collect();
    let uses = store
        .exchange_codes(&many, 54, &mut |i, _, g| {
            Some(refresh_row(&format!("rt-many-{i}"), g.unwrap()))
        })
        .await
        .unwrap();
    assert_eq!(uses.len(), 36);
    for (a, u) in many.iter().zip(&uses) {
        assert!(
            matches!(u, CodeUse::First(c) if c.code_hash == a.code_hash && c.used_at == Some(54)),
            "{u:?}"
        );
    }
    assert!(store.refresh("rt-many-35").await.unwrap().is_some());
}

/// An attempt that offers the refresh token its exchange would issue.
fn offering(hash: &str, challenge: &str, offer: &str) -> CodeAttempt {
    CodeAttempt {
        refresh: Some(RefreshOffer {
            token_hash: offer.into(),
            ttl_secs: 900,
            generation: Some(0),
        }),
        ..attempt(hash, "cli_1", challenge)
    }
}

/// The row an offer becomes when issued at `now`.
fn offered_row(hash: &str, grant: &GrantRow, now: i64) -> RefreshRow {
    RefreshRow {
        created_at: now,
        expires_at: now + 900,
        generation: Some(0),
        ..refresh_row(hash, grant)
    }
}

async fn offers_are_stored_exactly_when_issued_on(store: &SqlStore) {
    let grant = grant_with_codes(store, 7).await;
    // The offer's token with other values than the store would give it: stored as issued.
    let narrower = RefreshRow {
        scope: "mcp:read".into(),
        ..offered_row("rt-6", &grant, 50)
    };
    // Issued: its offer; the same code again in the batch: a replay, whose offer is not
    // stored; a refused exchange (`issue` says no): its offer is gone; a refresh token that is
    // not the attempt's offer: stored too; a thief's attempt: nothing.
    let uses = store
        .exchange_codes(
            &[
                offering("code-0", "ch", "rt-0"),
                offering("code-0", "ch", "rt-0-again"),
                offering("code-1", "ch", "rt-1"),
                attempt("code-2", "cli_1", "ch"),
                CodeAttempt {
                    client_id: "cli_evil".into(),
                    ..offering("code-3", "ch", "rt-evil")
                },
                offering("code-6", "ch", "rt-6"),
            ],
            50,
            &mut |i, _, g| match i {
                0 => Some(offered_row("rt-0", g.unwrap(), 50)),
                3 => Some(offered_row("rt-2", g.unwrap(), 50)),
                5 => Some(narrower.clone()),
                _ => None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(&uses[0], CodeUse::First(_)), "{uses:?}");
    assert!(matches!(&uses[1], CodeUse::Replayed(_)), "{uses:?}");
    assert!(matches!(&uses[2], CodeUse::First(_)), "{uses:?}");
    assert!(matches!(&uses[3], CodeUse::First(_)), "{uses:?}");
    assert!(matches!(&uses[4], CodeUse::Mismatch(_)), "{uses:?}");
    let stored = |h: &'static str| async move { store.refresh(h).await.unwrap() };
    assert_eq!(stored("rt-0").await, Some(offered_row("rt-0", &grant, 50)));
    assert_eq!(stored("rt-2").await, Some(offered_row("rt-2", &grant, 50)));
    assert_eq!(stored("rt-6").await, Some(narrower.clone()));
    for gone in ["rt-0-again", "rt-1", "rt-evil"] {
        assert_eq!(stored(gone).await, None, "{gone}");
    }
    // An expired code (the codes expire at 300) and a revoked grant: spent, nothing issued,
    // nothing left behind.
    let uses = store
        .exchange_codes(
            &[offering("code-4", "ch", "rt-late")],
            400,
            &mut |_, _, _| None,
        )
        .await
        .unwrap();
    assert!(matches!(&uses[0], CodeUse::First(_)), "{uses:?}");
    assert!(store.revoke_grant(&grant.id, 60, "test").await.unwrap());
    let uses = store
        .exchange_codes(
            &[offering("code-5", "ch", "rt-revoked")],
            61,
            &mut |_, _, _| None,
        )
        .await
        .unwrap();
    assert!(matches!(&uses[0], CodeUse::First(_)), "{uses:?}");
    for gone in ["rt-late", "rt-revoked"] {
        assert_eq!(stored(gone).await, None, "{gone}");
    }
}

/// What the presentations of a refresh test state up front (see `RotationTerms`). Whatever
/// they state, the answers are the ones `renew` decides: terms only let a store rotate sooner.
#[derive(Clone, Copy, Debug)]
enum Terms {
    None,
    /// Terms the stored tokens meet, on every presentation `renew` accepts.
    Met,
    /// Terms no stored token meets (another client): `renew`, which accepts anyway, decides.
    Unmet,
}

fn presented(hashes: &[String], grant: &GrantRow, terms: Terms) -> Vec<RefreshPresented> {
    hashes
        .iter()
        .map(|h| RefreshPresented {
            token_hash: h.clone(),
            generation: None,
            terms: match terms {
                Terms::None => None,
                Terms::Met | Terms::Unmet => Some(RotationTerms {
                    successor_hash: format!("{h}-next"),
                    client_id: match terms {
                        Terms::Met => grant.client_id.clone(),
                        _ => "cli_other".into(),
                    },
                    resource: Some(grant.resource.clone()),
                    scope: Some(grant.scope.clone()),
                    ttl_secs: 940,
                }),
            },
        })
        .collect()
}

/// Refresh tokens `rt-0` … `rt-{n-1}` of `grant`, unspent, made at 10 and expiring at 1000.
async fn store_refresh_tokens(store: &SqlStore, grant: &GrantRow, n: usize) {
    let mut conn = store.pool().acquire().await.unwrap();
    for i in 0..n {
        sqlx::query("INSERT INTO oauth_refresh_tokens (token_hash, grant_id, scope, created_at, expires_at) VALUES ($1, $2, $3, 10, 1000)")
            .bind(format!("rt-{i}")).bind(&grant.id).bind(&grant.scope)
            .execute(&mut *conn).await.unwrap();
    }
}

async fn refresh_rotation_in_batches_leaves_one_chain_on(store: &SqlStore, terms: Terms) {
    let grant = grant_with_codes(store, 1).await;
    // 35 refresh tokens, issued by exchanging the grant's code.
    store
        .exchange_codes(&[attempt("code-0", "cli_1", "ch")], 10, &mut |_, _, _| None)
        .await
        .unwrap();
    store_refresh_tokens(store, &grant, 35).await;
    // `renew` sees each token as stored, with its grant; it declines the unknown one.
    let hashes: Vec<String> = ["rt-0", "rt-0", "ghost", "rt-1", "rt-2"]
        .map(String::from)
        .to_vec();
    let mut batch = presented(&hashes, &grant, terms);
    // `renew` declines the last presentation, so it may state no terms.
    batch[4].terms = None;
    let mut seen = Vec::new();
    let out = store
        .renew_refreshes(&batch, 60, &mut |i, stored| {
            seen.push((
                i,
                stored
                    .as_ref()
                    .map(|(r, g)| (r.token_hash.clone(), g.id.clone())),
            ));
            let (row, _) = stored?;
            (i != 4).then(|| rotation(&row.token_hash, &grant))
        })
        .await
        .unwrap();
    assert_eq!(
        seen.iter().filter(|(_, s)| s.is_some()).count(),
        4,
        "{seen:?}"
    );
    assert_eq!(seen[2], (2, None));
    // The token presented twice: the first rotates it, the second finds it spent with the
    // same successor.
    assert!(
        matches!(&out[0], Some(Rotation::Rotated(r)) if r.used_at == Some(60) && r.successor_hash.as_deref() == Some("rt-0-next")),
        "{:?}",
        out[0]
    );
    assert!(
        matches!(&out[1], Some(Rotation::AlreadyUsed(r)) if r.successor_hash.as_deref() == Some("rt-0-next")),
        "{:?}",
        out[1]
    );
    assert_eq!(out[2], None, "declined");
    assert!(matches!(&out[3], Some(Rotation::Rotated(_))));
    assert_eq!(out[4], None, "declined");
    assert_eq!(
        store.refresh("rt-2").await.unwrap().unwrap().used_at,
        None,
        "a declined token is left alone"
    );
    let next = store.refresh("rt-0-next").await.unwrap().unwrap();
    assert_eq!(
        (next.used_at, next.grant_id.as_str()),
        (None, grant.id.as_str())
    );
    // PostgreSQL rotates on met terms in the statement that reads the token, storing the
    // successor the terms describe (made at the batch's time); otherwise `renew`'s successor
    // (made at 10) is stored.
    let postgres = store.pool().connect_options().database_url.scheme() == "postgres";
    let on_terms = postgres && matches!(terms, Terms::Met);
    assert_eq!(
        (next.created_at, next.expires_at),
        if on_terms { (60, 1000) } else { (10, 1000) },
        "{terms:?}"
    );
    // A later batch: spent tokens stay spent, with their first successor.
    let out = store
        .renew_refreshes(
            &presented(&["rt-0".to_string()], &grant, terms),
            70,
            &mut |_, s| s.map(|(r, _)| rotation(&r.token_hash, &grant)),
        )
        .await
        .unwrap();
    assert!(matches!(&out[0], Some(Rotation::AlreadyUsed(r)) if r.used_at == Some(60)));
    // 33 in one call: more than one statement's worth.
    let many: Vec<String> = (2..35).map(|i| format!("rt-{i}")).collect();
    let out = store
        .renew_refreshes(&presented(&many, &grant, terms), 80, &mut |_, s| {
            s.map(|(r, _)| rotation(&r.token_hash, &grant))
        })
        .await
        .unwrap();
    assert!(
        out.iter().all(|r| matches!(r, Some(Rotation::Rotated(_)))),
        "{out:?}"
    );
    for i in 2..35 {
        assert!(
            store
                .refresh(&format!("rt-{i}-next"))
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// A family's rows (`core::oauth::family`): `key` at `generation`, made at 10, expiring at 1000.
async fn store_family(store: &SqlStore, grant: &GrantRow, key: &str, generation: i64) {
    sqlx::query("INSERT INTO oauth_refresh_tokens (token_hash, grant_id, scope, created_at, expires_at, generation) VALUES ($1, $2, $3, 10, 1000, $4)")
        .bind(key).bind(&grant.id).bind(&grant.scope).bind(generation)
        .execute(store.pool()).await.unwrap();
}

/// Presentations of families' tokens: (key, generation).
fn family_presented(
    tokens: &[(&str, i64)],
    grant: &GrantRow,
    terms: Terms,
) -> Vec<RefreshPresented> {
    let keys: Vec<String> = tokens.iter().map(|(k, _)| k.to_string()).collect();
    presented(&keys, grant, terms)
        .into_iter()
        .zip(tokens)
        .map(|(p, (key, generation))| RefreshPresented {
            generation: Some(*generation),
            terms: p.terms.map(|t| RotationTerms {
                successor_hash: key.to_string(),
                ..t
            }),
            ..p
        })
        .collect()
}

/// What the token endpoint decides on a family's token as stored: rotate it from the presented
/// generation to the next, at `now` for 940 seconds (the terms' lifetime), unless the row is
/// behind the token or of the other kind.
fn family_renew(
    presented: &[RefreshPresented],
    grant: &GrantRow,
    now: i64,
) -> impl FnMut(usize, Option<(RefreshRow, GrantRow)>) -> Option<RotationAttempt> {
    let (presented, grant) = (presented.to_vec(), grant.clone());
    move |i, stored| {
        let (row, _) = stored?;
        let generation = presented[i].generation?;
        if row.generation? < generation {
            return None;
        }
        Some(RotationAttempt {
            token_hash: row.token_hash.clone(),
            generation: Some(generation),
            successor: RefreshRow {
                created_at: now,
                expires_at: now + 940,
                generation: Some(generation + 1),
                ..refresh_row(&row.token_hash, &grant)
            },
        })
    }
}

/// A family rotates in place: one row, moved one generation per rotation, whichever store and
/// whether or not the terms are met in the statement that reads it. Of two presentations of
/// one generation the first rotates and the second finds the family one generation on; an
/// older generation finds it where it is; a token of a generation the row has not reached is
/// declined; a token of the old kind never reaches a family's row, nor the reverse.
async fn families_rotate_in_place_on(store: &SqlStore, terms: Terms) {
    let grant = grant_with_codes(store, 1).await;
    store_family(store, &grant, "fam-a", 0).await;
    store_family(store, &grant, "fam-b", 3).await;
    store_refresh_tokens(store, &grant, 1).await;
    let tokens = [
        ("fam-a", 0),
        ("fam-a", 0),
        ("fam-b", 2),
        ("ghost", 0),
        ("fam-b", 3),
        ("fam-a", 5),
        ("rt-0", 0),
    ];
    let mut batch = family_presented(&tokens, &grant, terms);
    // A token of the old kind presented as a family's, and a family's as the old kind.
    batch.push(presented(&["fam-a".to_string()], &grant, terms).remove(0));
    // `renew`'s successors are made at 59, the batch runs at 60: PostgreSQL moves a family on
    // met terms in the statement that reads it, at the batch's time.
    let mut renew = family_renew(&batch, &grant, 59);
    let out = store.renew_refreshes(&batch, 60, &mut renew).await.unwrap();
    let moved = |r: &Option<Rotation>, g: i64| matches!(r, Some(Rotation::Rotated(row)) if row.generation == Some(g) && row.used_at.is_none());
    let found_at = |r: &Option<Rotation>, g: i64| matches!(r, Some(Rotation::AlreadyUsed(row)) if row.generation == Some(g) && row.used_at.is_none());
    assert!(moved(&out[0], 1), "{:?}", out[0]);
    assert!(found_at(&out[1], 1), "{:?}", out[1]);
    assert!(found_at(&out[2], 3), "an older generation: {:?}", out[2]);
    assert_eq!(out[3], None, "unknown");
    assert!(moved(&out[4], 4), "{:?}", out[4]);
    assert_eq!(
        out[5], None,
        "a generation the row has not reached is declined"
    );
    assert_eq!(out[6], None, "a row of the old kind is not a family's");
    assert!(
        !matches!(out[7], Some(Rotation::Rotated(_))),
        "a family's row is not the old kind's: {:?}",
        out[7]
    );
    let postgres = store.pool().connect_options().database_url.scheme() == "postgres";
    let made = if postgres && matches!(terms, Terms::Met) {
        60
    } else {
        59
    };
    let a = store.refresh("fam-a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.generation,
            a.created_at,
            a.expires_at,
            a.used_at,
            a.successor_hash
        ),
        (Some(1), made, made + 940, None, None),
        "{terms:?}"
    );
    assert_eq!(
        store.refresh("fam-b").await.unwrap().unwrap().generation,
        Some(4)
    );
    let rt0 = store.refresh("rt-0").await.unwrap().unwrap();
    assert_eq!(
        (rt0.used_at, rt0.generation),
        (None, None),
        "the old kind's row is left alone"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_refresh_tokens")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 3, "no row was added");
    // A later batch: the spent generation finds the row where it is; the current one moves it.
    let batch = family_presented(&[("fam-a", 0), ("fam-a", 1)], &grant, terms);
    let mut renew = family_renew(&batch, &grant, 70);
    let out = store.renew_refreshes(&batch, 70, &mut renew).await.unwrap();
    assert!(found_at(&out[0], 1), "{:?}", out[0]);
    assert!(moved(&out[1], 2), "{:?}", out[1]);
    // 40 families in one call: more than one statement's worth.
    let keys: Vec<String> = (0..40).map(|i| format!("fam-{i}")).collect();
    for k in &keys {
        store_family(store, &grant, k, 7).await;
    }
    let tokens: Vec<(&str, i64)> = keys.iter().map(|k| (k.as_str(), 7)).collect();
    let batch = family_presented(&tokens, &grant, terms);
    let mut renew = family_renew(&batch, &grant, 80);
    let out = store.renew_refreshes(&batch, 80, &mut renew).await.unwrap();
    assert!(out.iter().all(|r| moved(r, 8)), "{out:?}");
}

/// The token endpoint's own PostgreSQL connection, lost while idle (a server restart, a
/// proxy's idle timeout), is noticed before a batch runs on it: the batch gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_token_connection_is_replaced_before_the_next_batch() {
    let Some(db) = ezforge_testkit::TestDb::postgres().await else {
        return;
    };
    let store = open(&db.url).await;
    grant_with_codes(&store, 2).await;
    let first = |hash: &str| vec![attempt(hash, "cli_1", "ch")];
    let uses = store
        .exchange_codes(&first("code-0"), 10, &mut |_, _, _| None)
        .await
        .unwrap();
    assert!(matches!(uses[0], CodeUse::First(_)), "{uses:?}");
    // Every other backend of this database ends: the token connection's among them.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(ended >= 1, "the token connection was open");
    // Past the second within which a kept connection is used unchecked.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let uses = store
        .exchange_codes(&first("code-1"), 20, &mut |_, _, _| None)
        .await
        .unwrap();
    assert!(matches!(uses[0], CodeUse::First(_)), "{uses:?}");
}

/// The token endpoint's SQLite connection does not checkpoint in its commits (two `fsync`s
/// inside a batch); a thread of its own does, soon after, and copies every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_files_wal_is_checkpointed_off_the_token_connection() {
    let db = ezforge_testkit::TestDb::sqlite();
    let store = open(&db.url).await;
    assert!(store.direct_sqlite_tokens());
    let (runs, _, _) = store.sqlite_checkpoints().expect("a checkpoint thread");
    grant_with_codes(&store, 2).await;
    let uses = store
        .exchange_codes(&[attempt("code-0", "cli_1", "ch")], 10, &mut |_, _, _| None)
        .await
        .unwrap();
    assert!(matches!(uses[0], CodeUse::First(_)), "{uses:?}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (after, frames, copied) = loop {
        let now = store.sqlite_checkpoints().expect("a checkpoint thread");
        if now.0 > runs {
            break now;
        }
        assert!(
            std::time::Instant::now() < until,
            "no checkpoint followed the batch"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        after > runs && frames > 0 && copied == frames,
        "{after} runs, {copied} of {frames} frames copied"
    );
    store.close().await;
}

/// On a current-thread runtime a task may not block its thread on SQLite (another task on it may
/// hold the write lock across an `.await`), so the token batches keep to the pool there.
#[tokio::test]
async fn a_current_thread_runtime_keeps_token_batches_on_the_pool() {
    let db = ezforge_testkit::TestDb::sqlite();
    assert!(!open(&db.url).await.direct_sqlite_tokens());
}

/// On an SQLite file the token endpoint's transactions run on a connection of their own
/// (`sqlite_tokens`); in memory they take the generic SQL that PostgreSQL uses. Both must agree.
#[tokio::test]
async fn in_memory_sqlite_batches_codes_and_refreshes_alike() {
    // One connection: each connection to `sqlite::memory:` is a database of its own.
    let store = || SqlStore::open("sqlite::memory:", 1);
    assert!(!store().await.unwrap().direct_sqlite_tokens());
    codes_spend_once_per_batch_and_across_batches_on(&store().await.unwrap()).await;
    offers_are_stored_exactly_when_issued_on(&store().await.unwrap()).await;
    for terms in [Terms::None, Terms::Met, Terms::Unmet] {
        refresh_rotation_in_batches_leaves_one_chain_on(&store().await.unwrap(), terms).await;
        families_rotate_in_place_on(&store().await.unwrap(), terms).await;
    }
}

ezforge_testkit::backend_tests! {
    async fn an_sqlite_file_runs_token_batches_on_its_own_connection(db) {
        let store = open(&db.url).await;
        let sqlite = db.url.starts_with("sqlite:");
        assert_eq!(store.direct_sqlite_tokens(), sqlite, "{}", db.url);
        if sqlite {
            // A database opened read-only stays read-only: no second, writing connection.
            let ro = db.url.replace("mode=rwc", "mode=ro");
            assert!(!open(&ro).await.direct_sqlite_tokens(), "{ro}");
        }
    }

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
                let ckpt: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(store.pool()).await.unwrap();
                assert_eq!((fk, sync, busy, ckpt), (1, 1, 5000, 10_000), "foreign_keys on, synchronous NORMAL, busy_timeout 5 s, checkpoints at 10,000 pages");
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
        let mk = |slug: &str, env| server_row(&p, &owner, slug, env);
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

    async fn codes_spend_once_per_batch_and_across_batches(db) {
        codes_spend_once_per_batch_and_across_batches_on(&open(&db.url).await).await;
    }

    async fn offers_are_stored_exactly_when_issued(db) {
        offers_are_stored_exactly_when_issued_on(&open(&db.url).await).await;
    }

    async fn refresh_rotation_in_batches_leaves_one_chain(db) {
        refresh_rotation_in_batches_leaves_one_chain_on(&open(&db.url).await, Terms::None).await;
    }

    async fn refresh_rotation_on_met_terms_leaves_one_chain(db) {
        refresh_rotation_in_batches_leaves_one_chain_on(&open(&db.url).await, Terms::Met).await;
    }

    async fn refresh_rotation_on_unmet_terms_follows_renew(db) {
        refresh_rotation_in_batches_leaves_one_chain_on(&open(&db.url).await, Terms::Unmet).await;
    }

    async fn families_rotate_in_place(db) {
        families_rotate_in_place_on(&open(&db.url).await, Terms::None).await;
    }

    async fn families_rotate_in_place_on_met_terms(db) {
        families_rotate_in_place_on(&open(&db.url).await, Terms::Met).await;
    }

    async fn families_rotate_in_place_on_unmet_terms(db) {
        families_rotate_in_place_on(&open(&db.url).await, Terms::Unmet).await;
    }

    /// Batches that run at once (as on two nodes, each with its own executor) are ordered by
    /// the statements' own locking: each token is rotated once, and its other presentation
    /// finds it spent with that one successor. Presented in opposite orders, one side on its
    /// terms and the other without, so that the two statements take their locks crosswise if
    /// they can.
    async fn batches_at_once_rotate_each_token_once(db) {
        let store = open(&db.url).await;
        let grant = grant_with_codes(&store, 1).await;
        store_refresh_tokens(&store, &grant, 60).await;
        for round in 0..6 {
            let hashes: Vec<String> = (round * 10..round * 10 + 10).map(|i| format!("rt-{i}")).collect();
            let reversed: Vec<String> = hashes.iter().rev().cloned().collect();
            let accept = |_: usize, s: Option<(RefreshRow, GrantRow)>| s.map(|(r, _)| rotation(&r.token_hash, &grant));
            let (mut a, mut b) = (accept, accept);
            let (left, right) = (presented(&hashes, &grant, Terms::Met), presented(&reversed, &grant, Terms::None));
            let (left, right) = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                async { tokio::join!(store.renew_refreshes(&left, 60, &mut a), store.renew_refreshes(&right, 60, &mut b)) },
            )
            .await
            .expect("the two batches finish");
            let (left, right) = (left.expect("left batch"), right.expect("right batch"));
            for (i, h) in hashes.iter().enumerate() {
                let pair = [&left[i], &right[hashes.len() - 1 - i]];
                let rotated = pair.iter().filter(|r| matches!(r, Some(Rotation::Rotated(_)))).count();
                let spent = pair.iter().filter(|r| matches!(r, Some(Rotation::AlreadyUsed(row)) if row.successor_hash.as_deref() == Some(&format!("{h}-next")))).count();
                assert_eq!((rotated, spent), (1, 1), "round {round}, {h}: {pair:?}");
                let next = store.refresh(&format!("{h}-next")).await.unwrap().expect("the successor is stored");
                assert_eq!(next.used_at, None);
            }
        }
    }

    /// The token endpoint keeps a connection while busy; never the only one, and never past
    /// `close`.
    async fn the_token_connection_never_starves_the_pool(db) {
        let limit = std::time::Duration::from_secs(5);
        let store = SqlStore::open(&db.url, 1).await.expect("open store");
        grant_with_codes(&store, 1).await;
        store.exchange_codes(&[attempt("code-0", "cli_1", "ch")], 10, &mut |_, _, _| None).await.unwrap();
        let users = tokio::time::timeout(limit, store.user_count()).await.expect("a pool of one is not held");
        assert_eq!(users.unwrap(), 1);
        store.close().await;
        let store = open(&db.url).await;
        let none = RefreshPresented { token_hash: "none".into(), generation: None, terms: None };
        store.renew_refreshes(&[none], 10, &mut |_, _| None).await.unwrap();
        tokio::time::timeout(limit, store.close()).await.expect("close gives the held connection back");
    }
}
