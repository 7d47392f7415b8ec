//! Ports: the capabilities a function needs from its runtime.
//!
//! In scope: the traits ([`Sql`], [`Kv`], [`Clock`], [`Rng`], [`ConfigSource`],
//! [`Outbound`]) and the plain data they exchange. Out of scope: every
//! implementation; those live in `runtimes/` (native SQLite, D1 + Workers KV,
//! Spin SQLite + KV) and nothing here may name a platform type.
//!
//! Futures are `?Send`: Workers and Spin run one request per single-threaded
//! executor and their bindings are not `Send`.
//!
//! Consistency contract (DESIGN principle 5): [`Kv`] is eventually consistent and
//! is for caches and content-addressed data only; anything single-use or
//! monotonic goes through [`Sql`], whose only multi-statement atomic unit is
//! [`Sql::batch`] (D1 has no `BEGIN`).

use std::time::Duration;

use async_trait::async_trait;

use crate::Error;

/// A SQLite value, as D1, Spin and rusqlite all understand it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// 64-bit integer.
    Integer(i64),
    /// 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One SQL statement with its positional (`?1`, `?2`, ...) parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL text.
    pub sql: String,
    /// Positional parameters.
    pub params: Vec<Value>,
}

impl Statement {
    /// A statement with parameters.
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// What a statement produced: its rows (possibly none) and how many rows it changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Row values, each in column order.
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted by the statement.
    pub changes: u64,
}

impl Rows {
    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The value at `row`, `column`, if both exist.
    pub fn get(&self, row: usize, column: &str) -> Option<&Value> {
        let c = self.column(column)?;
        self.rows.get(row)?.get(c)
    }

    /// An integer cell. D1 hands numbers over as JavaScript doubles, so an
    /// integral real is accepted as an integer.
    pub fn get_i64(&self, row: usize, column: &str) -> Option<i64> {
        match self.get(row, column)? {
            Value::Integer(i) => Some(*i),
            #[allow(clippy::cast_possible_truncation)]
            Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                Some(*f as i64)
            }
            _ => None,
        }
    }

    /// A real cell; integers are accepted, since D1 returns whole-number reals
    /// as integers.
    pub fn get_f64(&self, row: usize, column: &str) -> Option<f64> {
        match self.get(row, column)? {
            Value::Real(f) => Some(*f),
            #[allow(clippy::cast_precision_loss)]
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A text cell.
    pub fn get_str(&self, row: usize, column: &str) -> Option<&str> {
        match self.get(row, column)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A blob cell.
    pub fn get_blob(&self, row: usize, column: &str) -> Option<&[u8]> {
        match self.get(row, column)? {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }
}

/// Strongly consistent relational storage (SQLite dialect).
///
/// A statement that breaks a UNIQUE or PRIMARY KEY constraint fails with
/// [`Error::UniqueViolation`] on every runtime (and a batch that contains one
/// writes nothing).
#[async_trait(?Send)]
pub trait Sql {
    /// Runs one statement and returns its rows (if any) and change count.
    async fn execute(&self, stmt: Statement) -> Result<Rows, Error>;

    /// Runs statements as one atomic unit: all apply or none do. The only
    /// transaction the port offers, because it is the only one D1 offers.
    async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<Rows>, Error>;
}

/// The error for a failed statement whose driver reports only SQLite's
/// message (D1, Spin's SQLite): SQLite words a unique-key failure as
/// `UNIQUE constraint failed: <table>.<column>` (PRIMARY KEY failures too),
/// and D1 prefixes its own tag.
pub fn sql_error(message: String) -> Error {
    if message.contains("UNIQUE constraint failed") {
        Error::UniqueViolation(message)
    } else {
        Error::Storage(message)
    }
}

/// Eventually consistent key-value storage, for caches and immutable data.
#[async_trait(?Send)]
pub trait Kv {
    /// Reads a key; expired keys read as absent.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Writes a key, optionally expiring after `ttl`. Workers KV's minimum TTL
    /// is 60 s; shorter TTLs are rounded up to it on every runtime.
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error>;

    /// Deletes a key; deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), Error>;

    /// Up to `limit` (at most [`KV_LIST_MAX`]) keys starting with `prefix`, in
    /// lexicographic order.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error>;
}

/// The minimum TTL every KV runtime honours (Workers KV's floor).
pub const KV_MIN_TTL: Duration = Duration::from_secs(60);

/// The longest KV key in bytes (Workers KV's limit), enforced on every runtime.
pub const KV_MAX_KEY_BYTES: usize = 512;

/// The most keys one [`Kv::list`] returns (Workers KV's page size), on every
/// runtime.
pub const KV_LIST_MAX: usize = 1000;

/// Refuses keys that some platform would refuse, so every runtime fails alike.
pub fn validate_kv_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > KV_MAX_KEY_BYTES || key == "." || key == ".." {
        return Err(Error::InvalidKvKey);
    }
    Ok(())
}

/// Wall-clock time. `SystemTime::now` panics on wasm32-unknown-unknown, so time
/// always comes through here.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// Cryptographically secure randomness from the platform.
pub trait Rng {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// Plain settings and secrets, as the platform stores them (Workers vars and
/// secrets, Spin variables, native environment and data-dir files).
pub trait ConfigSource {
    /// A non-secret setting.
    fn var(&self, name: &str) -> Option<String>;
    /// A secret; implementations read it from the platform's secret store.
    fn secret(&self, name: &str) -> Option<String>;
}

/// An outbound HTTP request (email API, OIDC discovery, peers).
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// Method.
    pub method: http::Method,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An outbound HTTP response.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Outbound HTTP through the platform's client (Workers `fetch`, Spin
/// `wasi:http/outgoing-handler`, native HTTP client).
#[async_trait(?Send)]
pub trait Outbound {
    /// Sends a request; non-2xx statuses are returned, not errors.
    async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, Error>;
}

/// Appending to the transparency log from another function: in-process where
/// the functions share a database (native, the Worker), over HTTP with the
/// service credential where they do not (Spin components).
#[async_trait(?Send)]
pub trait LedgerClient {
    /// Appends one entry and returns its index (an entry with the same
    /// idempotency key returns the earlier index).
    async fn append(
        &self,
        payload_type: &str,
        payload: &[u8],
        idempotency_key: &str,
    ) -> Result<u64, Error>;

    /// The log's size now and up to `max` entries from `start` (their
    /// indices and exact envelope bytes), for those who recompute something
    /// from the log itself. A client that cannot read says so.
    async fn read(&self, start: u64, max: u64) -> Result<(u64, Vec<(u64, Vec<u8>)>), Error> {
        let _ = (start, max);
        Err(Error::Config(
            "this ledger client cannot read the log".into(),
        ))
    }
}

/// A signed-in user as the identity function vouches for them now: roles
/// come from storage, and a revoked session yields no caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub user_id: String,
    /// When the user last authenticated (Unix seconds).
    pub auth_time: i64,
    /// Whether the user's email address is verified.
    pub email_verified: bool,
    /// Current roles (always includes `user`).
    pub roles: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A node enrollment redeemed by the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The enrolled node id.
    pub node_id: String,
    /// `agent` or `coordinator`.
    pub kind: String,
    /// The user who enrolled it.
    pub owner_id: String,
}

/// What other functions ask the identity (auth) function: who holds an
/// access token, and redeeming a node's enrollment token. In-process where
/// the functions share a database (native, the Worker), over HTTP where they
/// do not (Spin components).
#[async_trait(?Send)]
pub trait IdentityClient {
    /// The user behind `access_token`; `None` when the token or its session
    /// is not valid.
    async fn caller(&self, access_token: &str) -> Result<Option<Caller>, Error>;
    /// Redeems an enrollment token for exactly this node id and kind, once;
    /// `None` when it cannot be redeemed (unknown, used, expired, other node).
    async fn redeem_enrollment(
        &self,
        token: &str,
        node_id: &str,
        kind: &str,
    ) -> Result<Option<Enrollment>, Error>;
    /// Stops (or resumes) issuing enrollment tokens to `user_id`: the mesh
    /// banned (or lifted the ban on) that owner.
    async fn block_enrollment(&self, user_id: &str, blocked: bool) -> Result<(), Error>;
}

/// Checking ECDSA P-256 signatures (every signed mesh request). In software
/// by default; the Worker uses the platform's WebCrypto, native code that
/// needs a fraction of the CPU the same check costs in wasm.
#[async_trait(?Send)]
pub trait SignatureCheck {
    /// Whether `signature` (r‖s, 64 bytes) is the ECDSA-SHA256 signature of
    /// `key_sec1` (a SEC1 point) over `message`. `Err` only when the check
    /// itself could not run.
    async fn verify_p256(
        &self,
        key_sec1: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error>;
}

/// [`SignatureCheck`] with the `p256` crate.
pub struct SoftwareSignatures;

#[async_trait(?Send)]
impl SignatureCheck for SoftwareSignatures {
    async fn verify_p256(
        &self,
        key_sec1: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error> {
        use p256::ecdsa::signature::Verifier as _;
        let (Ok(key), Ok(sig)) = (
            p256::ecdsa::VerifyingKey::from_sec1_bytes(key_sec1),
            p256::ecdsa::Signature::from_slice(signature),
        ) else {
            return Ok(false);
        };
        Ok(key.verify(message, &sig).is_ok())
    }
}

/// Work to run after the response has been sent.
pub type Deferred = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Running work after the response (Workers `waitUntil`, a local task
/// natively), so its latency is not visible to the client: e.g. mail whose
/// delivery time would otherwise tell whether an address is registered.
pub trait Defer {
    /// Schedules `task`; it must not assume the request is still open.
    fn defer(&self, task: Deferred);
}

/// A [`Defer`] that only collects tasks, for hosts that run them after
/// answering (Spin, after the response body is complete) and for in-process
/// callers, which drain them with [`CollectDeferred::take`].
#[derive(Default)]
pub struct CollectDeferred(std::cell::RefCell<Vec<Deferred>>);

impl CollectDeferred {
    /// The tasks collected so far.
    pub fn take(&self) -> Vec<Deferred> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

impl Defer for CollectDeferred {
    fn defer(&self, task: Deferred) {
        self.0.borrow_mut().push(task);
    }
}

/// Random bytes as lowercase hex, for ids.
pub fn random_hex(rng: &dyn Rng, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rng.fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The storage ports of a unit that holds no stores (the gateway component
/// or Worker, which only routes and documents): any use is a configuration
/// error, never a silent success.
pub struct NoStorage;

#[async_trait(?Send)]
impl Sql for NoStorage {
    async fn execute(&self, _: Statement) -> Result<Rows, Error> {
        Err(Error::Config("the gateway holds no SQL database".into()))
    }
    async fn batch(&self, _: Vec<Statement>) -> Result<Vec<Rows>, Error> {
        Err(Error::Config("the gateway holds no SQL database".into()))
    }
}

#[async_trait(?Send)]
impl Kv for NoStorage {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Config("the gateway holds no KV store".into()))
    }
    async fn put(&self, _: &str, _: &[u8], _: Option<std::time::Duration>) -> Result<(), Error> {
        Err(Error::Config("the gateway holds no KV store".into()))
    }
    async fn delete(&self, _: &str) -> Result<(), Error> {
        Err(Error::Config("the gateway holds no KV store".into()))
    }
    async fn list(&self, _: &str, _: usize) -> Result<Vec<String>, Error> {
        Err(Error::Config("the gateway holds no KV store".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_signatures_check_key_message_and_signature() {
        use p256::ecdsa::signature::Signer as _;
        let key = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).expect("key");
        let point = key.verifying_key().to_encoded_point(false);
        let sig: p256::ecdsa::Signature = key.sign(b"base");
        let sig = sig.to_bytes();
        let run = |k: &[u8], m: &[u8], s: &[u8]| {
            poll_once(SoftwareSignatures.verify_p256(k, m, s)).expect("check")
        };
        assert!(run(point.as_bytes(), b"base", &sig));
        assert!(!run(point.as_bytes(), b"other", &sig));
        assert!(!run(point.as_bytes(), b"base", &sig[..63]));
        assert!(!run(b"not a point", b"base", &sig));
    }

    /// Polls a future that never waits (the software check is synchronous).
    fn poll_once<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the software check does not wait"),
        }
    }

    #[test]
    fn integral_reals_read_as_integers() {
        let rows = Rows {
            columns: vec!["n".into(), "t".into()],
            rows: vec![vec![Value::Real(42.0), Value::Text("x".into())]],
            changes: 0,
        };
        assert_eq!(rows.get_i64(0, "n"), Some(42));
        assert_eq!(rows.get_str(0, "t"), Some("x"));
        assert_eq!(rows.get_i64(0, "t"), None);
        assert_eq!(rows.get_i64(1, "n"), None);
    }

    #[test]
    fn fractional_reals_are_not_integers() {
        let rows = Rows {
            columns: vec!["n".into()],
            rows: vec![vec![Value::Real(1.5)]],
            changes: 0,
        };
        assert_eq!(rows.get_i64(0, "n"), None);
    }
}
