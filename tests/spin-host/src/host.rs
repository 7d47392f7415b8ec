//! Host implementations of `fermyon:spin/key-value@2.0.0`, `sqlite@2.0.0` and
//! `variables@2.0.0` over SQLite files in the host's data directory.
//!
//! Least privilege as in Spin: a component may open only the stores and
//! databases its manifest entry lists; anything else is `access-denied`.
//! Each `open` gets its own SQLite connection, so a component's
//! `BEGIN ... COMMIT` on one connection is isolated from other requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, params_from_iter};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::manifest::Component;

wasmtime::component::bindgen!({
    path: "../../wit/fermyon-spin",
    world: "edgecoder-spin-host",
    with: {
        "fermyon:spin/key-value.store": KvStore,
        "fermyon:spin/sqlite.connection": SqlConnection,
    },
});

use fermyon::spin::{key_value, sqlite, variables};

/// An open key-value store.
pub struct KvStore {
    conn: Connection,
}

/// An open SQLite connection.
pub struct SqlConnection {
    conn: Connection,
}

/// Per-request store data.
pub struct State {
    /// WASI context.
    pub wasi: WasiCtx,
    /// WASI HTTP context.
    pub http: WasiHttpCtx,
    /// Resources.
    pub table: ResourceTable,
    /// The component's manifest entry.
    pub component: Arc<Component>,
    /// Where databases live.
    pub data_dir: PathBuf,
    /// The component's outbound allow-list, enforced on every request.
    pub outbound: OutboundPolicy,
}

/// Spin's outbound HTTP rules for one component, as Spin 3.x applies them:
///
/// - a request with no authority, or to the host `self.alt`, is a *self
///   request*: allowed when `allowed_outbound_hosts` lists `self` or
///   `self.alt` (either form allows both), and sent to the address the app
///   listens on, over the network, routed by path;
/// - any other request must match an entry's origin (`scheme://host:port`,
///   default ports filled in). The `self`/`self.alt` entries match no real
///   host: a URL naming the host `self` is an ordinary, refused, request;
/// - an allowed request to `<component-id>.spin.internal` is *service
///   chaining*: handed in-process to that component, whatever its route.
pub struct OutboundPolicy {
    /// Allowed entries, templates already expanded.
    pub allowed: Vec<String>,
    /// The app, for chained requests.
    pub app: std::sync::Weak<crate::Server>,
    /// Where self requests go: the address the app listens on.
    pub self_origin: String,
}

fn origin_of(scheme: &str, authority: &str) -> String {
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
    if has_port {
        format!("{scheme}://{authority}")
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{scheme}://{authority}:{port}")
    }
}

/// The host of an entry or authority, without port.
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Whether an allow-list entry is Spin's `self` form (`http://self`,
/// `https://self.alt`, ...), which allows self requests and no host.
fn is_self_entry(entry: &str) -> bool {
    entry
        .split_once("://")
        .is_some_and(|(_, auth)| matches!(host_of(auth), "self" | "self.alt"))
}

/// How Spin would treat one outgoing request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// To the app's own listener, routed by path.
    SelfRequest,
    /// In-process to this component.
    Chained(String),
    /// Out to the network.
    Network,
    /// Not allowed.
    Denied,
}

impl OutboundPolicy {
    /// Classifies a request to `scheme://authority` (`authority` empty for
    /// a path-only URL).
    pub fn classify(&self, scheme: &str, authority: &str) -> Outbound {
        let host = host_of(authority);
        if authority.is_empty() || host == "self.alt" {
            return if self.allowed.iter().any(|a| is_self_entry(a)) {
                Outbound::SelfRequest
            } else {
                Outbound::Denied
            };
        }
        let want = origin_of(scheme, authority);
        let allowed = self.allowed.iter().any(|a| {
            !is_self_entry(a)
                && a.split_once("://")
                    .is_some_and(|(s, auth)| origin_of(s, auth) == want)
        });
        if !allowed {
            return Outbound::Denied;
        }
        match host.strip_suffix(".spin.internal") {
            Some(id) if !id.is_empty() => Outbound::Chained(id.to_owned()),
            _ => Outbound::Network,
        }
    }
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl wasmtime_wasi_http::WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        _ = fut;
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        match self.classify(&scheme, &authority) {
            Outbound::Denied => {
                eprintln!(
                    "spin-host: outbound request to {scheme}://{authority} refused (not in allowed_outbound_hosts)"
                );
                Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
            }
            Outbound::Chained(id) => {
                let app = self.app.upgrade();
                Box::new(async move {
                    let Some(app) = app else {
                        return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                    };
                    let resp = app.chained(&id, request).await.map_err(|e| {
                        eprintln!("spin-host: chained request to {id}: {e}");
                        wasmtime_wasi_http::Error::HttpRequestDenied
                    })?;
                    Ok((
                        resp,
                        Box::new(async { Ok(()) })
                            as Box<dyn std::future::Future<Output = _> + Send>,
                    ))
                })
            }
            outcome => {
                if outcome == Outbound::SelfRequest {
                    let Ok(to) = format!("http://{}{path}", self.self_origin).parse() else {
                        return Box::new(async {
                            Err(wasmtime_wasi_http::Error::HttpRequestUriInvalid)
                        });
                    };
                    *request.uri_mut() = to;
                    if let Ok(h) = self.self_origin.parse() {
                        request.headers_mut().insert(hyper::header::HOST, h);
                    }
                }
                Box::new(async move {
                    use http_body_util::BodyExt;
                    let (res, io) =
                        wasmtime_wasi_http::default_send_request(request, options).await?;
                    Ok((
                        res.map(BodyExt::boxed_unsync),
                        Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
                    ))
                })
            }
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

fn open_sqlite(path: PathBuf) -> Result<Connection, String> {
    let conn = Connection::open(&path).map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

// Labels become file names: only the characters Spin allows in labels.
fn safe_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl key_value::Host for State {}

impl key_value::HostStore for State {
    fn open(&mut self, label: String) -> Result<Resource<KvStore>, key_value::Error> {
        if !self.component.key_value_stores.contains(&label) {
            return Err(key_value::Error::AccessDenied);
        }
        if !safe_label(&label) {
            return Err(key_value::Error::NoSuchStore);
        }
        let conn = open_sqlite(self.data_dir.join(format!("kv-{label}.sqlite")))
            .map_err(key_value::Error::Other)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        )
        .map_err(|e| key_value::Error::Other(e.to_string()))?;
        self.table
            .push(KvStore { conn })
            .map_err(|e| key_value::Error::Other(e.to_string()))
    }

    fn get(
        &mut self,
        store: Resource<KvStore>,
        key: String,
    ) -> Result<Option<Vec<u8>>, key_value::Error> {
        let s = self
            .table
            .get(&store)
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        let mut stmt = s
            .conn
            .prepare_cached("SELECT value FROM spin_key_value WHERE key = ?1")
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        let mut rows = stmt
            .query([&key])
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        match rows
            .next()
            .map_err(|e| key_value::Error::Other(e.to_string()))?
        {
            Some(row) => Ok(Some(
                row.get(0)
                    .map_err(|e| key_value::Error::Other(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    fn set(
        &mut self,
        store: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), key_value::Error> {
        let s = self
            .table
            .get(&store)
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        s.conn
            .execute(
                "INSERT INTO spin_key_value (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                rusqlite::params![key, value],
            )
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        Ok(())
    }

    fn delete(&mut self, store: Resource<KvStore>, key: String) -> Result<(), key_value::Error> {
        let s = self
            .table
            .get(&store)
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        s.conn
            .execute("DELETE FROM spin_key_value WHERE key = ?1", [&key])
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        Ok(())
    }

    fn exists(&mut self, store: Resource<KvStore>, key: String) -> Result<bool, key_value::Error> {
        Ok(self.get(store, key)?.is_some())
    }

    fn get_keys(&mut self, store: Resource<KvStore>) -> Result<Vec<String>, key_value::Error> {
        let s = self
            .table
            .get(&store)
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        let mut stmt = s
            .conn
            .prepare_cached("SELECT key FROM spin_key_value ORDER BY key")
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| key_value::Error::Other(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        Ok(keys)
    }

    fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

struct Param<'a>(&'a sqlite::Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            sqlite::Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            sqlite::Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            sqlite::Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            sqlite::Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            sqlite::Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn io(e: impl std::fmt::Display) -> sqlite::Error {
    sqlite::Error::Io(e.to_string())
}

impl sqlite::Host for State {}

impl sqlite::HostConnection for State {
    fn open(&mut self, database: String) -> Result<Resource<SqlConnection>, sqlite::Error> {
        if !self.component.sqlite_databases.contains(&database) {
            return Err(sqlite::Error::AccessDenied);
        }
        if !safe_label(&database) {
            return Err(sqlite::Error::NoSuchDatabase);
        }
        let conn = open_sqlite(self.data_dir.join(format!("sqlite-{database}.sqlite")))
            .map_err(sqlite::Error::Io)?;
        self.table.push(SqlConnection { conn }).map_err(io)
    }

    fn execute(
        &mut self,
        connection: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> Result<sqlite::QueryResult, sqlite::Error> {
        let c = self
            .table
            .get(&connection)
            .map_err(|_| sqlite::Error::InvalidConnection)?;
        let mut stmt = c.conn.prepare(&statement).map_err(io)?;
        let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let mut rows = stmt
            .query(params_from_iter(parameters.iter().map(Param)))
            .map_err(io)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(io)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(match row.get_ref(i).map_err(io)? {
                    ValueRef::Null => sqlite::Value::Null,
                    ValueRef::Integer(v) => sqlite::Value::Integer(v),
                    ValueRef::Real(v) => sqlite::Value::Real(v),
                    ValueRef::Text(t) => {
                        sqlite::Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    ValueRef::Blob(b) => sqlite::Value::Blob(b.to_vec()),
                });
            }
            out.push(sqlite::RowResult { values });
        }
        Ok(sqlite::QueryResult { columns, rows: out })
    }

    fn drop(&mut self, connection: Resource<SqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl variables::Host for State {
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        let valid = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(variables::Error::InvalidName(name));
        }
        self.component
            .variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(name))
    }
}

/// Adds the three Spin interfaces to a linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    EdgecoderSpinHost::add_to_linker::<State, wasmtime::component::HasSelf<State>>(linker, |s| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> OutboundPolicy {
        OutboundPolicy {
            allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
            app: std::sync::Weak::new(),
            self_origin: "127.0.0.1:3000".into(),
        }
    }

    // The default this project once shipped: `http://self` names a host
    // called "self", which Spin never treats as the app itself.
    #[test]
    fn a_url_naming_the_host_self_is_refused_even_with_the_self_entry() {
        let p = policy(&["http://self"]);
        assert_eq!(p.classify("http", "self"), Outbound::Denied);
        assert_eq!(p.classify("http", "self.alt"), Outbound::SelfRequest);
        assert_eq!(p.classify("http", ""), Outbound::SelfRequest);
    }

    #[test]
    fn self_requests_need_a_self_entry() {
        let p = policy(&["https://api.example.com"]);
        assert_eq!(p.classify("http", "self.alt"), Outbound::Denied);
        assert_eq!(p.classify("http", ""), Outbound::Denied);
    }

    #[test]
    fn service_chaining_needs_the_component_listed() {
        let p = policy(&["http://ledger.spin.internal"]);
        assert_eq!(
            p.classify("http", "ledger.spin.internal"),
            Outbound::Chained("ledger".into())
        );
        assert_eq!(p.classify("http", "auth.spin.internal"), Outbound::Denied);
        assert_eq!(
            policy(&[]).classify("http", "ledger.spin.internal"),
            Outbound::Denied
        );
    }

    #[test]
    fn only_listed_origins_go_out() {
        let p = policy(&["http://127.0.0.1:8080", "https://api.resend.com"]);
        assert_eq!(p.classify("http", "127.0.0.1:8080"), Outbound::Network);
        assert_eq!(p.classify("https", "api.resend.com"), Outbound::Network);
        assert_eq!(p.classify("http", "127.0.0.1:8081"), Outbound::Denied);
        assert_eq!(p.classify("https", "evil.example"), Outbound::Denied);
        assert_eq!(
            policy(&[]).classify("https", "api.resend.com"),
            Outbound::Denied
        );
    }

    #[test]
    fn other_hosts_match_by_origin_with_default_ports() {
        let p = policy(&["https://api.example.com"]);
        assert_eq!(
            p.classify("https", "api.example.com:443"),
            Outbound::Network
        );
        assert_eq!(p.classify("http", "api.example.com"), Outbound::Denied);
        assert_eq!(
            p.classify("https", "api.example.com:8443"),
            Outbound::Denied
        );
    }
}
