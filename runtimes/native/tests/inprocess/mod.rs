//! The in-process deployment the native runtime's behaviour tests drive:
//! every function's router over the native runtime's real SQLite, with a
//! clock the test moves and a ledger client that can be switched off (the
//! real in-process one otherwise).

// Each test file uses a different part of this.
#![allow(dead_code)]

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

pub const PASSWORD: &str = "correct horse battery staple";
/// Where the in-process coordinator is addressed.
pub const AUTHORITY: &str = "edge.test";

pub struct TestClock(pub Cell<i64>);
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

/// The real in-process ledger, unless switched off.
pub struct Switchable {
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

    async fn read(&self, start: u64, max: u64) -> Result<(u64, Vec<(u64, Vec<u8>)>), Error> {
        self.inner.read(start, max).await
    }
}

pub struct Env {
    _dir: tempfile::TempDir,
    pub clock: Rc<TestClock>,
    pub ledger_down: Rc<Cell<bool>>,
    pub services: Rc<Services>,
    pub router: Router,
    pub db: Db,
}

pub struct Node {
    pub id: String,
    pub key: SigningKey,
}

impl Env {
    pub async fn new() -> Env {
        Env::with(&[]).await
    }

    /// With extra settings.
    pub async fn with(settings: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = NativeConfig::new(None);
        cfg.set("mode", "development");
        cfg.set("mesh_lease_grace_ms", "5000");
        let key = edgecoder_kernel::SigningKey::generate(&OsRng);
        cfg.set("signing_key", key.to_pkcs8_base64().expect("key"));
        let coordinator = edgecoder_kernel::SigningKey::generate(&OsRng);
        cfg.set(
            "coordinator_key",
            coordinator.to_pkcs8_base64().expect("key"),
        );
        for (k, v) in settings {
            cfg.set(k, *v);
        }
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

    pub fn advance_ms(&self, ms: i64) {
        self.clock.0.set(self.clock.0.get() + ms);
    }

    pub async fn send(&self, mut req: Request) -> (u16, Json) {
        req.ctx = RequestContext {
            request_id: self.services.new_id(),
            client_ip: "192.0.2.7".parse().ok(),
            scheme: Some("http".into()),
            authority: Some(AUTHORITY.into()),
            traceparent: None,
        };
        let resp = self.router.handle(self.services.clone(), req).await;
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(resp.body()).unwrap_or(Json::Null),
        )
    }

    pub fn request(method: Method, path: &str, body: Option<&Json>) -> Request {
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

    pub async fn call(
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
    pub fn signed(&self, node: &Node, method: Method, path: &str, body: &Json) -> Request {
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
    pub async fn user(&self, email: &str, admin: bool) -> String {
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

    /// The user id behind an access token.
    pub async fn user_id(&self, token: &str) -> String {
        let (s, v) = self.call(Method::GET, "/auth/me", Some(token), None).await;
        assert_eq!(s, 200, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }

    /// The deployment's one bootstrap grant, to `admin` itself.
    pub async fn bootstrap(&self, admin: &str, amount: i64) {
        let account = format!("user:{}", self.user_id(admin).await);
        let (s, v) = self
            .call(
                Method::POST,
                "/mesh/credits/bootstrap",
                Some(admin),
                Some(serde_json::json!({"account": account, "amount": amount})),
            )
            .await;
        assert!(s == 201 || s == 200, "bootstrap: {s} {v}");
    }

    /// A registered node of `owner`'s (pending approval).
    pub async fn node(&self, owner: &str, id: &str) -> Node {
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

    pub async fn status(&self, node: &str) -> (String, Option<String>) {
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

    pub async fn heartbeat(&self, node: &Node) -> (u16, Json) {
        let t = json!({"cpu_percent": 1.0, "memory_used_mb": 1, "on_external_power": true,
            "thermal_state": "nominal", "device_type": "server", "sandbox_ready": true});
        self.send(self.signed(node, Method::POST, "/mesh/heartbeat", &t))
            .await
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn blob(bytes: &[u8]) -> Json {
    json!({"digest": format!("blake3:{}", blake3::hash(bytes).to_hex()), "bytes": STANDARD.encode(bytes)})
}
