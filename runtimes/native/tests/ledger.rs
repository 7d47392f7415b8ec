//! The log over the native runtime's real SQLite, in-process: a checkpoint
//! size is never signed with two roots, and a signed size is served again
//! unchanged.

use std::rc::Rc;
use std::sync::Arc;

use edgecoder_gateway::{Loaded, Ports, Selection};
use edgecoder_kernel::{CollectDeferred, Services, migrations};
use edgecoder_ledger::log::{self, NewEntry};
use edgecoder_native::platform::{NativeConfig, OsRng, SystemClock, UreqOutbound};
use edgecoder_native::sqlite::{Db, SqliteKv};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A migrated SQLite file and the ledger's services over it.
async fn setup(settings: &[(&str, &str)]) -> (tempfile::TempDir, Db, Services) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NativeConfig::new(None);
    cfg.set("mode", "development");
    for (k, v) in settings {
        cfg.set(k, *v);
    }
    let key = edgecoder_kernel::SigningKey::generate(&OsRng);
    cfg.set("signing_key", key.to_pkcs8_base64().expect("key"));
    let checkpoint = edgecoder_kernel::SigningKey::generate(&OsRng);
    cfg.set("checkpoint_key", checkpoint.to_pkcs8_base64().expect("key"));
    let loaded = Loaded::load(&cfg, Selection::All).expect("settings");
    let db = Db::open(&dir.path().join("edgecoder.sqlite")).expect("db");
    let kv = SqliteKv::open(&dir.path().join("kv.sqlite"), Arc::new(SystemClock)).expect("kv");
    let s = loaded.services(
        Ports {
            sql: Rc::new(db.clone()),
            kv: Rc::new(kv.handle()),
            clock: Rc::new(SystemClock),
            rng: Rc::new(OsRng),
            outbound: Rc::new(UreqOutbound::default()),
            defer: Rc::new(CollectDeferred::default()),
            signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
        },
        Selection::All,
        None,
    );
    migrations::apply(&db, &SystemClock, &OsRng, "system:test")
        .await
        .expect("migrate");
    (dir, db, s)
}

/// A current `system_admin` with a live session, stored as the auth
/// function stores them, and an access token of that session.
async fn admin_token(db: &Db, s: &Services) -> String {
    use edgecoder_kernel::{Sql as _, Statement};
    let now = s.clock.now_ms();
    for (sql, params) in [
        (
            "INSERT INTO users (id, email, email_verified_at, created_at, updated_at) VALUES ('u1', 'admin@example.com', ?1, ?1, ?1)",
            vec![now.into()],
        ),
        (
            "INSERT INTO user_roles (user_id, role, granted_by, granted_at) VALUES ('u1', 'system_admin', 'system:test', ?1)",
            vec![now.into()],
        ),
        (
            "INSERT INTO sessions (id, user_id, client, amr, auth_time, created_at, last_used_at, expires_at) \
             VALUES ('s1', 'u1', 'device', '[\"pwd\"]', ?1, ?2, ?2, ?3)",
            vec![(now / 1000).into(), now.into(), (now + 3_600_000).into()],
        ),
    ] {
        db.execute(Statement::new(sql, params)).await.expect("seed");
    }
    let key = s.config.signing_key.as_ref().expect("key");
    edgecoder_kernel::tokens::issue(
        key,
        edgecoder_kernel::tokens::AccessClaims {
            iss: s.config.issuer.clone(),
            aud: s.config.audience.clone(),
            sub: "u1".into(),
            sid: "s1".into(),
            jti: "j1".into(),
            roles: vec!["system_admin".into()],
            auth_time: now / 1000,
            amr: vec!["pwd".into()],
        },
        now,
        600,
    )
    .expect("token")
}

#[test]
fn a_size_is_never_signed_with_two_roots() {
    block_on(async {
        let (_dir, db, s) = setup(&[]).await;
        let entries: Vec<NewEntry> = (0..5)
            .map(|i| NewEntry {
                payload_type: "edgecoder.dev/audit/v1".into(),
                payload: format!("entry {i}").into_bytes(),
                principal: "service".into(),
                idempotency_key: format!("k{i}"),
            })
            .collect();
        log::append(&db, &SystemClock, &OsRng, &entries)
            .await
            .expect("append");
        let (size, root) = log::head(&db).await.expect("head");
        assert_eq!(size, 5);
        let note = edgecoder_ledger::api::sign_checkpoint(&s, size, root)
            .await
            .expect("sign");
        // Another root for the same size: refused, whatever the caller claims.
        let mut other = root;
        other[0] ^= 1;
        let err = edgecoder_ledger::api::sign_checkpoint(&s, size, other)
            .await
            .expect_err("a second root for one size");
        assert!(matches!(err, edgecoder_ledger::Error::CheckpointMismatch));
        // An earlier size with the current root: refused too.
        assert!(
            edgecoder_ledger::api::sign_checkpoint(&s, 4, root)
                .await
                .is_err()
        );
        // The same size again: the stored note, byte for byte.
        let again = edgecoder_ledger::api::sign_checkpoint(&s, size, root)
            .await
            .expect("same");
        assert_eq!(note, again);
    });
}

#[test]
fn checkpoints_wait_for_the_interval_unless_forced() {
    block_on(async {
        let (_dir, db, s) = setup(&[("checkpoint_interval_ms", "3600000")]).await;
        let admin = admin_token(&db, &s).await;
        let size_of = |note: &[u8]| {
            edgecoder_tlog::checkpoint::body_of(&String::from_utf8_lossy(note))
                .expect("note")
                .size
        };
        let get = || {
            let ctx = edgecoder_kernel::RequestContext {
                request_id: "r".into(),
                client_ip: None,
                ..Default::default()
            };
            edgecoder_kernel::Request::new(
                edgecoder_kernel::http_types::Method::GET,
                "/ledger/checkpoint",
                ctx,
            )
        };
        let first = edgecoder_ledger::api::get_checkpoint(&s, get())
            .await
            .expect("cp");
        assert_eq!(size_of(first.body()), 0);
        let one = NewEntry {
            payload_type: "edgecoder.dev/audit/v1".into(),
            payload: b"x".to_vec(),
            principal: "service".into(),
            idempotency_key: "one".into(),
        };
        log::append(&db, &SystemClock, &OsRng, &[one])
            .await
            .expect("append");
        // Within the interval the signed head stays put...
        let again = edgecoder_ledger::api::get_checkpoint(&s, get())
            .await
            .expect("cp");
        assert_eq!(size_of(again.body()), 0);
        // ...until an admin asks for one now.
        let mut forced = get();
        forced.method = edgecoder_kernel::http_types::Method::POST;
        forced.headers.insert(
            edgecoder_kernel::http_types::header::AUTHORIZATION,
            edgecoder_kernel::http_types::HeaderValue::from_str(&format!("Bearer {admin}"))
                .expect("header"),
        );
        let now = edgecoder_ledger::api::post_checkpoint(&s, forced)
            .await
            .expect("cp");
        assert_eq!(size_of(now.body()), 1);
    });
}

/// Runs migration files by hand, as an older binary would have.
async fn run_migration(db: &Db, m: &migrations::Migration) {
    use edgecoder_kernel::Sql as _;
    for stmt in migrations::split_statements(m.sql) {
        db.execute(edgecoder_kernel::Statement::new(stmt, vec![]))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
}

#[test]
fn a_blake3_log_from_before_the_switch_is_refused_by_version() {
    block_on(async {
        use edgecoder_kernel::Sql as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("edgecoder.sqlite")).expect("db");
        let (old, new): (Vec<_>, Vec<_>) =
            migrations::MIGRATIONS.iter().partition(|m| m.name < "0008");
        for m in &old {
            run_migration(&db, m).await;
        }
        // One entry appended under the blake3 tree.
        db.execute(edgecoder_kernel::Statement::new(
            "INSERT INTO ledger_entries (idx, entry, leaf_hash, payload_type, principal, idempotency_key, created_at) \
             VALUES (0, X'7b7d', X'00', 'edgecoder.dev/audit/v1', 'service', 'service k', 0)",
            vec![],
        ))
        .await
        .expect("entry");
        db.execute(edgecoder_kernel::Statement::new(
            "UPDATE ledger_state SET size = 1 WHERE id = 1",
            vec![],
        ))
        .await
        .expect("state");
        for m in &new {
            run_migration(&db, m).await;
        }
        match log::head(&db).await {
            Err(edgecoder_ledger::Error::UnsupportedLog(h)) => assert_eq!(h, "blake3"),
            other => panic!("a blake3 log must be refused, got {other:?}"),
        }
        let problem: edgecoder_kernel::Problem =
            edgecoder_ledger::Error::UnsupportedLog("blake3".into()).into();
        assert_eq!(problem.code, "log_version_unsupported");
        assert!(
            problem.detail.as_deref().unwrap_or("").contains("blake3"),
            "{problem:?}"
        );
    });
}

#[test]
fn an_empty_log_switches_to_rfc6962_sha256() {
    block_on(async {
        let (_dir, db, _s) = setup(&[]).await;
        let (size, root) = log::head(&db).await.expect("head");
        use edgecoder_tlog::merkle::Hasher as _;
        assert_eq!((size, root), (0, edgecoder_tlog::merkle::Sha256::empty()));
    });
}
