//! Mesh behaviour that depends on time or on the ledger failing, driven
//! in-process: every function's router over the native runtime's real
//! SQLite, with a clock the test moves and a ledger client that can be
//! switched off (the real in-process one otherwise). Everything else is in
//! the black-box suite.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edgecoder_gateway::Selection;
use edgecoder_kernel::http_types::{HeaderName, HeaderValue, Method, header};
use edgecoder_kernel::{
    Clock, CollectDeferred, Error, LedgerClient, Request, RequestContext, Router, Services, Sql,
    Statement, async_trait, migrations,
};
use edgecoder_native::platform::{NativeConfig, OsRng, SystemClock, UreqOutbound};
use edgecoder_native::sqlite::{Db, SqliteKv};
use edgecoder_proto::httpsig::{self, Target};
use edgecoder_proto::keys::key_id;
use p256::ecdsa::SigningKey;
use serde_json::{Value as Json, json};

const PASSWORD: &str = "correct horse battery staple";
/// Where the in-process coordinator is addressed.
const AUTHORITY: &str = "edge.test";

struct TestClock(Cell<i64>);
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

/// The real in-process ledger, unless switched off.
struct Switchable {
    inner: edgecoder_ledger::client::InProcess,
    down: Rc<Cell<bool>>,
}

#[async_trait(?Send)]
impl LedgerClient for Switchable {
    async fn append(&self, t: &str, payload: &[u8], key: &str) -> Result<u64, Error> {
        if self.down.get() {
            return Err(Error::Config("the ledger is down".into()));
        }
        self.inner.append(t, payload, key).await
    }
}

struct Env {
    _dir: tempfile::TempDir,
    clock: Rc<TestClock>,
    ledger_down: Rc<Cell<bool>>,
    services: Rc<Services>,
    router: Router,
    db: Db,
}

struct Node {
    id: String,
    key: SigningKey,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = NativeConfig::new(None);
        cfg.set("mode", "development");
        cfg.set("mesh_lease_grace_ms", "5000");
        let key = edgecoder_kernel::SigningKey::generate(&OsRng);
        cfg.set("signing_key", key.to_pkcs8_base64().expect("key"));
        let loaded = edgecoder_gateway::Loaded::load(&cfg, edgecoder_gateway::Selection::All)
            .expect("settings");
        let config = loaded.config.clone();
        let db = Db::open(&dir.path().join("edgecoder.sqlite")).expect("db");
        let kv = SqliteKv::open(&dir.path().join("kv.sqlite"), Arc::new(SystemClock)).expect("kv");
        let clock = Rc::new(TestClock(Cell::new(1_800_000_000_000)));
        let down = Rc::new(Cell::new(false));
        let services = Rc::new(Services {
            sql: Rc::new(db.clone()),
            kv: Rc::new(kv.handle()),
            clock: clock.clone(),
            rng: Rc::new(OsRng),
            outbound: Rc::new(UreqOutbound::default()),
            defer: Rc::new(CollectDeferred::default()),
            ledger: Rc::new(Switchable {
                inner: edgecoder_ledger::client::InProcess {
                    sql: Rc::new(db.clone()),
                    clock: clock.clone(),
                    rng: Rc::new(OsRng),
                },
                down: down.clone(),
            }),
            signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
            identity: Rc::new(edgecoder_auth::client::InProcess {
                sql: Rc::new(db.clone()),
                clock: clock.clone(),
                config: config.clone(),
            }),
            config: config.clone(),
            settings: loaded.settings.clone(),
        });
        migrations::apply(&db, clock.as_ref(), &OsRng, "system:test")
            .await
            .expect("migrate");
        Env {
            _dir: dir,
            clock,
            ledger_down: down,
            router: edgecoder_gateway::router(Selection::All, &config),
            services,
            db,
        }
    }

    fn advance_ms(&self, ms: i64) {
        self.clock.0.set(self.clock.0.get() + ms);
    }

    async fn send(&self, mut req: Request) -> (u16, Json) {
        req.ctx = RequestContext {
            request_id: self.services.new_id(),
            client_ip: "192.0.2.7".parse().ok(),
            scheme: Some("http".into()),
            authority: Some(AUTHORITY.into()),
        };
        let resp = self.router.handle(self.services.clone(), req).await;
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(resp.body()).unwrap_or(Json::Null),
        )
    }

    fn request(method: Method, path: &str, body: Option<&Json>) -> Request {
        let ctx = RequestContext {
            request_id: String::new(),
            client_ip: None,
            ..Default::default()
        };
        let mut req = Request::new(method, path, ctx);
        if let Some(b) = body {
            req.body = serde_json::to_vec(b).expect("json");
            req.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        req
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Json>,
    ) -> (u16, Json) {
        let mut req = Self::request(method, path, body.as_ref());
        if let Some(t) = bearer {
            req.headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
            );
        }
        self.send(req).await
    }

    /// A request signed by `node` at the test clock's time.
    fn signed(&self, node: &Node, method: Method, path: &str, body: &Json) -> Request {
        let mut req = Self::request(method.clone(), path, Some(body));
        let nonce = format!("{:x}", self.clock.now_ms()) + &self.services.new_id();
        let target = Target::from_url(method.as_str(), &format!("http://{AUTHORITY}{path}"))
            .expect("target");
        let h = httpsig::sign(
            &node.key,
            &key_id(node.key.verifying_key()),
            &nonce,
            self.clock.now_ms() / 1000,
            &target,
            &req.body,
        )
        .expect("sign");
        for (name, value) in [
            ("content-digest", h.content_digest),
            ("signature-input", h.signature_input),
            ("signature", h.signature),
        ] {
            req.headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("header"),
            );
        }
        req
    }

    /// A verified user signed in on a device; `admin` also gets system_admin.
    async fn user(&self, email: &str, admin: bool) -> String {
        let (s, _) = self
            .call(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, 202);
        let now = self.clock.now_ms();
        self.db
            .execute(Statement::new(
                // Verified by its owner, who chose the password.
                "UPDATE users SET email_verified_at = ?2, password_proven_at = ?2 WHERE email = ?1",
                vec![email.into(), now.into()],
            ))
            .await
            .expect("verify");
        if admin {
            self.db
                .execute(Statement::new(
                    "INSERT INTO user_roles (user_id, role, granted_by, granted_at) \
                     SELECT id, 'system_admin', 'system:test', ?2 FROM users WHERE email = ?1",
                    vec![email.into(), now.into()],
                ))
                .await
                .expect("grant");
        }
        let (s, v) = self
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": PASSWORD, "client": "device"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().expect("token").to_owned()
    }

    /// A registered node of `owner`'s (pending approval).
    async fn node(&self, owner: &str, id: &str) -> Node {
        let (s, v) = self
            .call(
                Method::POST,
                "/auth/nodes/enroll",
                Some(owner),
                Some(json!({"node_id": id, "kind": "agent"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let key = SigningKey::from_slice(blake3::hash(id.as_bytes()).as_bytes()).expect("key");
        let node = Node {
            id: id.to_owned(),
            key,
        };
        let body = json!({
            "enrollment_token": v["enrollment_token"], "node_id": id, "kind": "agent",
            "public_key": URL_SAFE_NO_PAD.encode(node.key.verifying_key().to_encoded_point(false).as_bytes()),
            "os": "linux", "version": "test",
            "capabilities": {"sandbox": "wasmtime", "cpu_cores": 2, "memory_mb": 4096},
        });
        let (s, v) = self
            .send(self.signed(&node, Method::POST, "/mesh/nodes/register", &body))
            .await;
        assert_eq!(s, 201, "{v}");
        node
    }

    async fn status(&self, node: &str) -> (String, Option<String>) {
        let rows = self
            .db
            .execute(Statement::new(
                "SELECT status, decided_by FROM mesh_nodes WHERE node_id = ?1",
                vec![node.into()],
            ))
            .await
            .expect("node");
        (
            rows.get_str(0, "status").unwrap_or_default().to_owned(),
            rows.get_str(0, "decided_by").map(str::to_owned),
        )
    }

    async fn heartbeat(&self, node: &Node) -> (u16, Json) {
        let t = json!({"cpu_percent": 1.0, "memory_used_mb": 1, "on_external_power": true,
            "thermal_state": "nominal", "device_type": "server", "sandbox_ready": true});
        self.send(self.signed(node, Method::POST, "/mesh/heartbeat", &t))
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

fn blob(bytes: &[u8]) -> Json {
    json!({"digest": format!("blake3:{}", blake3::hash(bytes).to_hex()), "bytes": STANDARD.encode(bytes)})
}

#[test]
fn an_approval_the_ledger_cannot_record_does_not_stand() {
    block_on(async {
        let e = Env::new().await;
        let admin = e.user("admin@example.com", true).await;
        let owner = e.user("owner@example.com", false).await;
        let node = e.node(&owner, "ledger-down").await;
        e.ledger_down.set(true);
        let (s, v) = e
            .call(
                Method::POST,
                "/mesh/nodes/ledger-down/approve",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(
            e.status(&node.id).await,
            ("pending_approval".to_owned(), None)
        );
        e.ledger_down.set(false);
        let (s, v) = e
            .call(
                Method::POST,
                "/mesh/nodes/ledger-down/approve",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(e.status(&node.id).await.0, "active");
    });
}

#[test]
fn a_completion_the_ledger_cannot_record_can_be_reported_again() {
    block_on(async {
        let e = Env::new().await;
        let admin = e.user("admin@example.com", true).await;
        let node = e.node(&admin, "reporter").await;
        let (s, _) = e
            .call(
                Method::POST,
                "/mesh/nodes/reporter/approve",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(e.heartbeat(&node).await.0, 200);
        let task = json!({"kind": "wasm", "module": blob(b"\0asm\x01\0\0\0"), "input": blob(b"in"),
            "timeout_ms": 10_000, "resources": {"memory_mb": 16, "fuel": 1000}});
        let (s, v) = e
            .call(Method::POST, "/mesh/tasks", Some(&admin), Some(task))
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["task_id"].as_str().expect("id").to_owned();
        let (s, pulled) = e
            .send(e.signed(&node, Method::POST, "/mesh/tasks/pull", &json!({})))
            .await;
        assert_eq!(s, 200, "{pulled}");
        let result = json!({"lease_id": pulled["lease_id"], "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(b"out"), "output_digest": format!("blake3:{}", blake3::hash(b"out").to_hex())});
        let path = format!("/mesh/tasks/{id}/result");
        e.ledger_down.set(true);
        let (s, _) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!(s, 503);
        e.ledger_down.set(false);
        // Still leased to this node: the report goes through now.
        let (s, v) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "completed");
    });
}

#[test]
fn leases_last_the_timeout_plus_the_grace() {
    block_on(async {
        let e = Env::new().await;
        let admin = e.user("admin@example.com", true).await;
        let node = e.node(&admin, "lease-clock").await;
        e.call(
            Method::POST,
            "/mesh/nodes/lease-clock/approve",
            Some(&admin),
            None,
        )
        .await;
        e.heartbeat(&node).await;
        let task = json!({"kind": "wasm", "module": blob(b"\0asm\x01\0\0\0"), "input": blob(b"x"),
            "timeout_ms": 10_000, "resources": {"memory_mb": 16, "fuel": 1000}});
        let (_, v) = e
            .call(Method::POST, "/mesh/tasks", Some(&admin), Some(task))
            .await;
        let id = v["task_id"].as_str().expect("id").to_owned();
        let (_, pulled) = e
            .send(e.signed(&node, Method::POST, "/mesh/tasks/pull", &json!({})))
            .await;
        let result = json!({"lease_id": pulled["lease_id"], "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(b"o"), "output_digest": format!("blake3:{}", blake3::hash(b"o").to_hex())});
        // 10 s timeout + 5 s grace: at 15 s the lease is gone.
        e.advance_ms(15_000);
        let path = format!("/mesh/tasks/{id}/result");
        let (s, v) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!((s, v["code"].as_str()), (409, Some("lease_invalid")));
        // The task is back in the queue for the next pull.
        let (s, again) = e
            .send(e.signed(&node, Method::POST, "/mesh/tasks/pull", &json!({})))
            .await;
        assert_eq!(s, 200);
        assert_eq!(again["task"]["id"], id.as_str());
        e.advance_ms(14_999);
        let result = json!({"lease_id": again["lease_id"], "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(b"o"), "output_digest": format!("blake3:{}", blake3::hash(b"o").to_hex())});
        let (s, v) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!(s, 200, "{v}");
    });
}

#[test]
fn nonces_are_forgotten_only_when_their_requests_have_expired() {
    block_on(async {
        let e = Env::new().await;
        let owner = e.user("owner@example.com", false).await;
        let node = e.node(&owner, "nonce-clock").await;
        let t = json!({"cpu_percent": 1.0, "memory_used_mb": 1, "on_external_power": true,
            "thermal_state": "nominal", "device_type": "server", "sandbox_ready": true});
        let first = e.signed(&node, Method::POST, "/mesh/heartbeat", &t);
        assert_eq!(e.send(first.clone()).await.0, 200);
        let count = || async {
            e.db.execute(Statement::new(
                "SELECT COUNT(*) AS n FROM mesh_nonces",
                vec![],
            ))
            .await
            .expect("count")
            .get_i64(0, "n")
            .unwrap_or_default()
        };
        assert!(
            count().await >= 2,
            "registration and heartbeat nonces are kept"
        );
        // Within the window a replay is caught by its nonce...
        e.advance_ms(59_000);
        let (s, v) = e.send(first.clone()).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("replay_detected")));
        // ...after it, by its age; and the old nonces are pruned.
        e.advance_ms(70_000);
        let (s, v) = e.send(first).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("signature_expired")));
        assert_eq!(e.heartbeat(&node).await.0, 200);
        assert_eq!(count().await, 1, "only the newest nonce remains");
    });
}
