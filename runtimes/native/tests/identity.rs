//! Identity behaviour that depends on time or on the mail provider, driven
//! in-process: the auth router over the native runtime's real SQLite with a
//! clock the test moves (token expiry, step-up age, rate-limit windows,
//! Argon2 parameter upgrades), and the Resend-compatible provider against a
//! local server speaking that API. Everything else is in the black-box suite.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use edgecoder_gateway::Ports;
use edgecoder_kernel::http_types::{HeaderValue, Method, header};
use edgecoder_kernel::{
    Clock, CollectDeferred, Request, RequestContext, Response, Router, Services, Sql, Statement,
    migrations,
};
use edgecoder_native::platform::{NativeConfig, OsRng, SystemClock, UreqOutbound};
use edgecoder_native::sqlite::{Db, SqliteKv};
use serde_json::{Value as Json, json};

const PASSWORD: &str = "correct horse battery staple";

struct TestClock(Cell<i64>);
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

struct Env {
    _dir: tempfile::TempDir,
    clock: Rc<TestClock>,
    deferred: Rc<CollectDeferred>,
    services: Rc<Services>,
    router: Router,
    db: Db,
}

fn env(settings: &[(&str, &str)]) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NativeConfig::new(None);
    cfg.set("mode", "development");
    let key = edgecoder_kernel::SigningKey::generate(&OsRng);
    cfg.set("signing_key", key.to_pkcs8_base64().expect("key"));
    for (k, v) in settings {
        cfg.set(k, *v);
    }
    let loaded =
        edgecoder_gateway::Loaded::load(&cfg, edgecoder_gateway::Selection::All).expect("settings");
    let config = loaded.config.clone();
    let db = Db::open(&dir.path().join("edgecoder.sqlite")).expect("db");
    let kv = SqliteKv::open(&dir.path().join("kv.sqlite"), Arc::new(SystemClock)).expect("kv");
    let clock = Rc::new(TestClock(Cell::new(1_800_000_000_000)));
    let deferred = Rc::new(CollectDeferred::default());
    let services = Rc::new(loaded.services(
        Ports {
            sql: Rc::new(db.clone()),
            kv: Rc::new(kv.handle()),
            clock: clock.clone(),
            rng: Rc::new(OsRng),
            outbound: Rc::new(UreqOutbound::default()),
            defer: deferred.clone(),
            signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
        },
        edgecoder_gateway::Selection::All,
        None,
    ));
    Env {
        _dir: dir,
        clock,
        deferred,
        router: edgecoder_auth::router(&config),
        services,
        db,
    }
}

impl Env {
    async fn migrate(&self) {
        migrations::apply(&self.db, self.clock.as_ref(), &OsRng, "system:test")
            .await
            .expect("migrate");
    }

    fn advance_ms(&self, ms: i64) {
        self.clock.0.set(self.clock.0.get() + ms);
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Json>,
    ) -> (u16, Json) {
        let ctx = RequestContext {
            request_id: self.services.new_id(),
            client_ip: "192.0.2.7".parse().ok(),
            ..Default::default()
        };
        let mut req = Request::new(method, path, ctx);
        if let Some(b) = body {
            req.body = serde_json::to_vec(&b).expect("json");
            req.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Some(t) = bearer {
            req.headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
            );
        }
        let resp: Response = self.router.handle(self.services.clone(), req).await;
        let status = resp.status().as_u16();
        let json = serde_json::from_slice(resp.body()).unwrap_or(Json::Null);
        (status, json)
    }

    async fn last_token(&self, email: &str) -> String {
        let rows = self
            .db
            .execute(Statement::new(
                "SELECT body FROM mail_outbox WHERE to_addr = ?1 ORDER BY time DESC, rowid DESC LIMIT 1",
                vec![email.into()],
            ))
            .await
            .expect("outbox");
        let body = rows.get_str(0, "body").expect("a mail").to_owned();
        let start = body.find("evt_").expect("token in mail");
        body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    }

    async fn signup(&self, email: &str, verify: bool) {
        let (s, _) = self
            .call(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, 202);
        if verify {
            let token = self.last_token(email).await;
            let (s, _) = self
                .call(
                    Method::POST,
                    "/auth/verify-email",
                    None,
                    // The owner presents the password they chose, so it
                    // stays theirs after verification.
                    Some(json!({ "token": token, "password": PASSWORD })),
                )
                .await;
            assert_eq!(s, 200);
        }
    }

    async fn login(&self, email: &str, password: &str) -> (u16, Json) {
        self.call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": email, "password": password, "client": "device"})),
        )
        .await
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn expired_verification_token_is_refused_and_changes_nothing() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("late@example.com", false).await;
        let token = e.last_token("late@example.com").await;
        e.advance_ms(24 * 3600 * 1000 + 1);
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/verify-email",
                None,
                Some(json!({ "token": token })),
            )
            .await;
        assert_eq!((s, v["code"].as_str()), (400, Some("token_invalid")));
        let (_, login) = e.login("late@example.com", PASSWORD).await;
        let access = login["access_token"].as_str().expect("token");
        let (_, me) = e.call(Method::GET, "/auth/me", Some(access), None).await;
        assert_eq!(me["email_verified"], json!(false));
    });
}

#[test]
fn expired_reset_token_is_refused_and_the_password_stays() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("reset@example.com", true).await;
        let (s, _) = e
            .call(
                Method::POST,
                "/auth/password/reset/request",
                None,
                Some(json!({"email": "reset@example.com"})),
            )
            .await;
        assert_eq!(s, 202);
        let token = e.last_token("reset@example.com").await;
        e.advance_ms(30 * 60 * 1000 + 1);
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/password/reset/confirm",
                None,
                Some(json!({"token": token, "new_password": "another long passphrase"})),
            )
            .await;
        assert_eq!((s, v["code"].as_str()), (400, Some("token_invalid")));
        assert_eq!(e.login("reset@example.com", PASSWORD).await.0, 200);
    });
}

#[test]
fn expired_enrollment_token_cannot_be_redeemed() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("node@example.com", true).await;
        let (_, login) = e.login("node@example.com", PASSWORD).await;
        let access = login["access_token"].as_str().expect("token").to_owned();
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/nodes/enroll",
                Some(&access),
                Some(json!({"node_id": "laptop-1", "kind": "agent"})),
            )
            .await;
        assert_eq!(s, 201);
        let token = v["enrollment_token"].as_str().expect("token").to_owned();
        e.advance_ms(3600 * 1000 + 1);
        let err = edgecoder_auth::api::nodes::redeem(
            &e.db,
            e.clock.now_ms(),
            &token,
            "laptop-1",
            "agent",
        )
        .await
        .expect_err("expired");
        assert!(matches!(err, edgecoder_auth::Error::EnrollmentTokenInvalid));
    });
}

#[test]
fn step_up_lapses_after_ten_minutes_and_step_up_restores_it() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("step@example.com", true).await;
        let (_, login) = e.login("step@example.com", PASSWORD).await;
        let access = login["access_token"].as_str().expect("token").to_owned();
        e.advance_ms(10 * 60 * 1000 + 1000);
        let body = json!({"current_password": PASSWORD, "new_password": "a different passphrase"});
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/password/change",
                Some(&access),
                Some(body.clone()),
            )
            .await;
        assert_eq!((s, v["code"].as_str()), (403, Some("step_up_required")));
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/step-up",
                Some(&access),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let fresh = v["access_token"].as_str().expect("token");
        let (s, _) = e
            .call(
                Method::POST,
                "/auth/password/change",
                Some(fresh),
                Some(body),
            )
            .await;
        assert_eq!(s, 200);
    });
}

#[test]
fn access_tokens_expire_and_refresh_sessions_slide_then_lapse() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("slide@example.com", false).await;
        let (_, login) = e.login("slide@example.com", PASSWORD).await;
        let access = login["access_token"].as_str().expect("token").to_owned();
        let mut refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
        e.advance_ms(15 * 60 * 1000 + 31_000);
        let (s, v) = e.call(Method::GET, "/auth/me", Some(&access), None).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("invalid_token")));
        // Each use extends the session: 20 days, twice, is past 30 days in all.
        for _ in 0..2 {
            e.advance_ms(20 * 24 * 3600 * 1000);
            let (s, v) = e
                .call(
                    Method::POST,
                    "/auth/token/refresh",
                    None,
                    Some(json!({ "refresh_token": refresh })),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            refresh = v["refresh_token"].as_str().expect("rotated").to_owned();
        }
        e.advance_ms(30 * 24 * 3600 * 1000 + 1);
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/token/refresh",
                None,
                Some(json!({ "refresh_token": refresh })),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("invalid_refresh_token"))
        );
    });
}

#[test]
fn login_block_lifts_when_the_window_ends() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("window@example.com", false).await;
        for _ in 0..10 {
            assert_eq!(
                e.login("window@example.com", "wrong password here").await.0,
                401
            );
        }
        let (s, v) = e.login("window@example.com", PASSWORD).await;
        assert_eq!((s, v["code"].as_str()), (429, Some("rate_limited")));
        e.advance_ms(15 * 60 * 1000);
        assert_eq!(e.login("window@example.com", PASSWORD).await.0, 200);
    });
}

#[test]
fn account_wide_failures_only_space_attempts_out() {
    block_on(async {
        let e = env(&[]);
        e.migrate().await;
        e.signup("victim@example.com", false).await;
        // 30 failures spread over many addresses (one per (account, ip) pair
        // would block; simulate the spread by clearing the pair counters).
        for _ in 0..30 {
            assert_eq!(
                e.login("victim@example.com", "attacker guess 123").await.0,
                401
            );
            e.db.execute(Statement::new(
                "DELETE FROM rate_limits WHERE key LIKE 'login_acct_ip:%'",
                vec![],
            ))
            .await
            .expect("clear");
            e.advance_ms(1000);
        }
        // Over the soft limit each address gets one turn per 5 s: the victim's
        // own turn works, an immediate second attempt waits, nothing blocks.
        let (s, v) = e.login("victim@example.com", PASSWORD).await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = e.login("victim@example.com", PASSWORD).await;
        assert_eq!((s, v["code"].as_str()), (429, Some("rate_limited")), "{v}");
        e.advance_ms(5_000);
        assert_eq!(e.login("victim@example.com", PASSWORD).await.0, 200);
    });
}

#[test]
fn outdated_argon2_parameters_are_upgraded_on_login() {
    block_on(async {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let e = env(&[]);
        e.migrate().await;
        e.signup("old@example.com", false).await;
        let weak = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8192, 1, 1, None).expect("params"),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let old = weak
            .hash_password(PASSWORD.as_bytes(), &salt)
            .expect("hash")
            .to_string();
        e.db.execute(Statement::new(
            "UPDATE users SET password_hash = ?1 WHERE email = 'old@example.com'",
            vec![old.as_str().into()],
        ))
        .await
        .expect("downgrade");
        assert_eq!(e.login("old@example.com", PASSWORD).await.0, 200);
        let rows =
            e.db.execute(Statement::new(
                "SELECT password_hash FROM users WHERE email = 'old@example.com'",
                vec![],
            ))
            .await
            .expect("read");
        let now = rows.get_str(0, "password_hash").expect("hash");
        assert!(now.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{now}");
        assert_eq!(e.login("old@example.com", PASSWORD).await.0, 200);
    });
}

/// A local server speaking the Resend API shape: answers `{"id": ...}`.
fn resend_server(n: usize) -> (String, thread::JoinHandle<Vec<common::Received>>) {
    let reply = "{\"id\":\"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794\"}";
    common::serve(
        n,
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        ),
    )
}

#[test]
fn resend_provider_posts_emails_with_the_bearer_key() {
    let (base, server) = resend_server(1);
    block_on(async {
        let e = env(&[
            ("mail_provider", "resend"),
            ("mail_api_base", &base),
            ("mail_api_key", "re_test_key_123"),
            ("mail_from", "EdgeCoder <no-reply@edge.example>"),
        ]);
        e.migrate().await;
        let (s, _) = e
            .call(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": "mailme@example.com", "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, 202);
        // Delivery runs after the response, so its latency tells nothing.
        let tasks = e.deferred.take();
        assert_eq!(tasks.len(), 1, "one delivery deferred");
        for t in tasks {
            t.await;
        }
        let rows =
            e.db.execute(Statement::new(
                "SELECT count(*) AS n FROM mail_outbox",
                vec![],
            ))
            .await
            .expect("count");
        assert_eq!(rows.get_i64(0, "n"), Some(0), "nothing goes to the outbox");
    });
    let got = server.join().expect("server");
    let head = &got[0].head;
    let body: Json = serde_json::from_slice(&got[0].body).expect("json body");
    let head_lower = head.to_ascii_lowercase();
    assert!(head.starts_with("POST /emails HTTP/1.1"), "{head}");
    assert!(
        head_lower.contains("authorization: bearer re_test_key_123"),
        "{head}"
    );
    assert!(
        head_lower.contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body["to"], json!(["mailme@example.com"]));
    assert_eq!(body["from"], "EdgeCoder <no-reply@edge.example>");
    assert!(
        body["text"]
            .as_str()
            .unwrap_or("")
            .contains("/auth/verify-email?token=evt_")
    );
}

#[test]
fn production_refuses_the_outbox() {
    let mut cfg = NativeConfig::new(None);
    cfg.set("mode", "production");
    let key = edgecoder_kernel::SigningKey::generate(&OsRng);
    cfg.set("signing_key", key.to_pkcs8_base64().expect("key"));
    cfg.set("issuer", "https://edge.example");
    cfg.set("mail_provider", "outbox");
    let err = edgecoder_gateway::Loaded::load(&cfg, edgecoder_gateway::Selection::All)
        .expect_err("outbox in production");
    assert!(err.to_string().contains("outbox"), "{err}");
}

#[test]
fn hsts_only_when_served_over_https() {
    block_on(async {
        for (issuer, want) in [
            ("https://edge.example", true),
            ("http://localhost:8080", false),
        ] {
            let e = env(&[("issuer", issuer)]);
            let ctx = RequestContext {
                request_id: "r".into(),
                client_ip: None,
                ..Default::default()
            };
            let resp = e
                .router
                .handle(
                    e.services.clone(),
                    Request::new(Method::GET, "/auth/health", ctx),
                )
                .await;
            let hsts = resp.headers().get(header::STRICT_TRANSPORT_SECURITY);
            assert_eq!(hsts.is_some(), want, "{issuer}");
            assert_eq!(
                resp.headers()
                    .get(header::REFERRER_POLICY)
                    .map(|v| v.as_bytes()),
                Some(&b"no-referrer"[..])
            );
        }
    });
}

#[test]
fn passkey_challenges_expire_after_five_minutes() {
    use edgecoder_conformance::passkeys::Device;
    let origin = "http://localhost:5173";
    let e = env(&[("allowed_origins", origin)]);
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    // The device runs its own runtime, so each step here is its own block_on.
    let access = rt().block_on(async {
        e.migrate().await;
        e.signup("keys@example.com", true).await;
        let (_, login) = e.login("keys@example.com", PASSWORD).await;
        login["access_token"].as_str().expect("token").to_owned()
    });
    let mut device = Device::new(passkey_crypto::iana::Algorithm::ES256, true, true, None);
    let options = rt().block_on(async {
        let (s, v) = e
            .call(
                Method::POST,
                "/auth/passkeys/register/options",
                Some(&access),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    });
    let credential = device.register(origin, &options).expect("register");
    e.advance_ms(5 * 60 * 1000 + 1);
    let (s, v) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/register/verify",
        Some(&access),
        Some(json!({ "credential": credential })),
    ));
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("passkey_challenge_invalid"))
    );

    // A fresh one within the window registers; sign-in challenges expire too.
    let (_, options) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/register/options",
        Some(&access),
        None,
    ));
    let credential = device.register(origin, &options).expect("register");
    let (s, v) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/register/verify",
        Some(&access),
        Some(json!({ "credential": credential })),
    ));
    assert_eq!(s, 201, "{v}");
    let (_, options) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/login/options",
        None,
        Some(json!({})),
    ));
    let assertion = device.authenticate(origin, &options).expect("assert");
    e.advance_ms(5 * 60 * 1000 + 1);
    let (s, v) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/login/verify",
        None,
        Some(json!({ "credential": assertion })),
    ));
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("passkey_challenge_invalid"))
    );
}

#[test]
fn passkey_counter_policy_warn_flags_but_signs_in() {
    use edgecoder_conformance::passkeys::Device;
    let origin = "http://localhost:5173";
    let e = env(&[
        ("allowed_origins", origin),
        ("passkey_counter_policy", "warn"),
    ]);
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let access = rt().block_on(async {
        e.migrate().await;
        e.signup("warn@example.com", true).await;
        let (_, login) = e.login("warn@example.com", PASSWORD).await;
        login["access_token"].as_str().expect("token").to_owned()
    });
    let mut device = Device::new(passkey_crypto::iana::Algorithm::ES256, true, true, None);
    let (_, options) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/register/options",
        Some(&access),
        None,
    ));
    let credential = device.register(origin, &options).expect("register");
    let (s, _) = rt().block_on(e.call(
        Method::POST,
        "/auth/passkeys/register/verify",
        Some(&access),
        Some(json!({ "credential": credential })),
    ));
    assert_eq!(s, 201);
    let sign_in = |device: &mut Device| {
        let (_, options) = rt().block_on(e.call(
            Method::POST,
            "/auth/passkeys/login/options",
            None,
            Some(json!({})),
        ));
        let assertion = device.authenticate(origin, &options).expect("assert");
        rt().block_on(e.call(
            Method::POST,
            "/auth/passkeys/login/verify",
            None,
            Some(json!({ "credential": assertion })),
        ))
        .0
    };
    assert_eq!(sign_in(&mut device), 200);
    let copy = device.passkey();
    assert_eq!(sign_in(&mut device), 200);
    // The clone repeats counter 2: flagged and audited, but let in.
    let mut clone = Device::new(passkey_crypto::iana::Algorithm::ES256, true, true, copy);
    assert_eq!(sign_in(&mut clone), 200);
    let flagged = rt().block_on(async {
        e.db.execute(Statement::new(
            "SELECT (SELECT COUNT(*) FROM webauthn_credentials WHERE clone_suspected_at IS NOT NULL) AS flagged, \
             (SELECT COUNT(*) FROM audit_events WHERE action = 'auth.passkey.clone_suspected') AS events",
            vec![],
        ))
        .await
        .expect("query")
    });
    assert_eq!(flagged.get_i64(0, "flagged"), Some(1));
    assert_eq!(flagged.get_i64(0, "events"), Some(1));
}

/// An OAuth flow against the real test OpenID Provider, with the
/// deployment in-process so the test can move its clock.
mod oauth {
    use super::*;
    use edgecoder_conformance::harness::{
        OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_ES_CLIENT_ID, OpenIdProvider, oauth_settings,
        start_openid_provider,
    };
    use edgecoder_conformance::oauth::{Browser, query};

    fn real_now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }

    fn oauth_env(op: &OpenIdProvider) -> Env {
        let settings = oauth_settings(op);
        let mut all: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.push(("issuer", edgecoder_conformance::harness::ISSUER));
        all.push(("allowed_origins", "http://localhost:5173"));
        let e = env(&all);
        // The provider signs with the real time.
        e.clock.0.set(real_now_ms());
        block_on(e.migrate());
        e
    }

    impl Env {
        /// GET `path` with `cookie`; the status, Location and Set-Cookie
        /// headers, and the JSON body.
        fn get(&self, path: &str, cookie: Option<&str>) -> (u16, String, Vec<String>, Json) {
            let ctx = RequestContext {
                request_id: self.services.new_id(),
                client_ip: "192.0.2.7".parse().ok(),
                ..Default::default()
            };
            let mut req = Request::new(Method::GET, path, ctx);
            if let Some(c) = cookie {
                req.headers
                    .insert(header::COOKIE, HeaderValue::from_str(c).expect("cookie"));
            }
            let resp: Response = block_on(self.router.handle(self.services.clone(), req));
            let loc = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let cookies = resp
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            let json = serde_json::from_slice(resp.body()).unwrap_or(Json::Null);
            (resp.status().as_u16(), loc, cookies, json)
        }

        /// Starts a flow for `provider`; the authorization URL and the
        /// browser-binding cookie.
        fn start(&self, provider: &str) -> (String, String) {
            let (s, loc, cookies, v) = self.get(&format!("/auth/oauth/{provider}/start"), None);
            assert_eq!(s, 302, "{v}");
            let cookie = cookies
                .iter()
                .find(|c| c.starts_with("edgecoder_oauth="))
                .and_then(|c| c.split(';').next())
                .expect("binding cookie")
                .to_owned();
            (loc, cookie)
        }
    }

    fn callback_path(url: &str) -> String {
        url.strip_prefix(edgecoder_conformance::harness::ISSUER)
            .expect("our redirect_uri")
            .to_owned()
    }

    #[test]
    fn expired_id_token_is_refused_and_a_fresh_one_a_minute_later_is_not() {
        let op = start_openid_provider();
        let e = oauth_env(&op);
        // The provider gives `expired-*` logins a one-second ID token.
        let (authorize, cookie) = e.start("op");
        let back = Browser::new()
            .at_provider(&authorize, "expired-inprocess")
            .expect("provider");
        // Past exp plus the 60 s leeway, well inside the state's 10 minutes;
        // counted from now, since the provider stamped the token during the
        // flow (which may take more than a second on a loaded machine).
        e.clock.0.set(real_now_ms() + 62_000);
        let (s, _, _, v) = e.get(&callback_path(&back), Some(&cookie));
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("oauth_id_token_invalid")),
            "{v}"
        );
        assert!(
            v["detail"].as_str().unwrap_or("").contains("expired"),
            "{v}"
        );

        // The same delay with an ordinary token signs in.
        let (authorize, cookie) = e.start("op");
        let back = Browser::new()
            .at_provider(&authorize, "ordinary-inprocess")
            .expect("provider");
        e.clock.0.set(real_now_ms() + 62_000);
        let (s, loc, _, v) = e.get(&callback_path(&back), Some(&cookie));
        assert_eq!(s, 302, "{v}");
        assert!(loc.starts_with("http://localhost:5173/"), "{loc}");
    }

    #[test]
    fn a_link_to_a_provider_no_longer_configured_is_not_a_way_in() {
        use base64::Engine as _;
        let op = start_openid_provider();
        let e = oauth_env(&op);
        // A native-app sign-in: an account whose only way in is its op link.
        let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([6u8; 32]);
        let challenge = {
            use sha2::Digest as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()))
        };
        let app = format!("{}:/done", edgecoder_conformance::harness::APP_SCHEME);
        let (s, authorize, cookies, v) = e.get(
            &format!(
                "/auth/oauth/op/start?return_to={}&code_challenge={challenge}&code_challenge_method=S256",
                url::form_urlencoded::byte_serialize(app.as_bytes()).collect::<String>()
            ),
            None,
        );
        assert_eq!(s, 302, "{v}");
        let cookie = cookies[0].split(';').next().expect("cookie").to_owned();
        let back = Browser::new()
            .at_provider(&authorize, "retired-inprocess")
            .expect("provider");
        let (s, loc, _, v) = e.get(&callback_path(&back), Some(&cookie));
        assert_eq!(s, 302, "{v}");
        let code = query(&loc, "code").expect("code");
        let (s, tokens) = block_on(e.call(
            Method::POST,
            "/auth/oauth/exchange",
            None,
            Some(json!({"code": code, "code_verifier": verifier})),
        ));
        assert_eq!(s, 200, "{tokens}");
        let access = tokens["access_token"].as_str().expect("access").to_owned();
        let (_, me) = block_on(e.call(Method::GET, "/auth/me", Some(&access), None));
        let user = me["id"].as_str().expect("id").to_owned();
        // A link to a provider the operator has since removed.
        block_on(e.db.execute(Statement::new(
            "INSERT INTO oauth_links (provider, subject, user_id, email, email_verified, created_at) \
             VALUES ('retired', 'x', ?1, NULL, 1, 0)",
            vec![user.as_str().into()],
        )))
        .expect("insert");
        let (s, v) = block_on(e.call(Method::DELETE, "/auth/oauth/links/op", Some(&access), None));
        assert_eq!(
            (s, v["code"].as_str()),
            (409, Some("last_sign_in_method")),
            "{v}"
        );
        // The retired link itself can still be removed.
        let (s, v) = block_on(e.call(
            Method::DELETE,
            "/auth/oauth/links/retired",
            Some(&access),
            None,
        ));
        assert_eq!(s, 200, "{v}");
    }

    #[test]
    fn state_expires_after_ten_minutes() {
        let op = start_openid_provider();
        let e = oauth_env(&op);
        let (authorize, cookie) = e.start("op");
        let back = Browser::new()
            .at_provider(&authorize, "slow-inprocess")
            .expect("provider");
        e.advance_ms(10 * 60 * 1000 + 1);
        let (s, _, _, v) = e.get(&callback_path(&back), Some(&cookie));
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("oauth_state_invalid")),
            "{v}"
        );
    }

    /// Signs in at the provider as another client and exchanges the code
    /// ourselves: a real ID token whose audience is that client.
    fn token_for_other_client(op: &OpenIdProvider, nonce: &str) -> String {
        use base64::Engine as _;
        let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([5u8; 32]);
        let challenge = {
            use sha2::Digest as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()))
        };
        let redirect = format!(
            "{}/auth/oauth/op-es/callback",
            edgecoder_conformance::harness::ISSUER
        );
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", OIDC_ES_CLIENT_ID)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", "openid email")
            .append_pair("state", "s")
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let mut b = Browser::new();
        let back = b
            .at_provider(
                &format!("{}/auth?{}", op.issuer, q.finish()),
                "aud-inprocess",
            )
            .expect("provider");
        let code = query(&back, "code").expect("code");
        let r = b
            .request(
                "POST",
                &format!("{}/token", op.issuer),
                Some(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &redirect),
                    ("code_verifier", &verifier),
                    ("client_id", OIDC_ES_CLIENT_ID),
                    ("client_secret", OIDC_CLIENT_SECRET),
                ]),
            )
            .expect("token");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().expect("json")["id_token"]
            .as_str()
            .expect("id_token")
            .to_owned()
    }

    #[test]
    fn id_token_for_another_audience_is_refused() {
        let op = start_openid_provider();
        let e = oauth_env(&op);
        let token = token_for_other_client(&op, "nonce-for-aud-test-0123456789");
        let provider = edgecoder_auth::Settings::of(&e.services)
            .expect("auth settings")
            .oauth
            .provider("op")
            .expect("op")
            .clone();
        assert_eq!(provider.client_id, OIDC_CLIENT_ID);
        let s = e.services.clone();
        let result = block_on(async {
            let disco = edgecoder_auth::oidc::discovery(&s, &provider, &op.issuer, false)
                .await
                .expect("discovery");
            let want = |client_id| edgecoder_auth::oidc::Expected {
                issuer: &op.issuer,
                tenant_template: false,
                client_id,
                nonce: "nonce-for-aud-test-0123456789",
                now_secs: real_now_ms() / 1000,
            };
            // Signature, issuer, times and nonce are all good: only the
            // audience is someone else's...
            let theirs = edgecoder_auth::oidc::validate(
                &s,
                &provider,
                &disco,
                &token,
                &want(OIDC_ES_CLIENT_ID),
            )
            .await;
            let ours = edgecoder_auth::oidc::validate(
                &s,
                &provider,
                &disco,
                &token,
                &want(OIDC_CLIENT_ID),
            )
            .await;
            (theirs, ours)
        });
        assert!(
            result.0.is_ok(),
            "the token itself is valid: {:?}",
            result.0
        );
        let err = result.1.expect_err("another client's token");
        assert!(err.to_string().contains("aud"), "{err}");
    }
}
