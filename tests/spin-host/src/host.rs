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

/// Spin's `allowed_outbound_hosts`: an outgoing request whose origin
/// (`scheme://host:port`, default port added) is not listed is refused.
pub struct OutboundPolicy {
    /// Allowed origins.
    pub allowed: Vec<String>,
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

impl OutboundPolicy {
    /// Whether a request to `scheme://authority` may go out.
    pub fn allows(&self, scheme: &str, authority: &str) -> bool {
        let want = origin_of(scheme, authority);
        self.allowed.iter().any(|a| {
            a.split_once("://")
                .is_some_and(|(s, auth)| origin_of(s, auth) == want)
        })
    }
}

impl wasmtime_wasi_http::WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
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
    > {
        _ = fut;
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        if !self.allows(&scheme, &authority) {
            eprintln!(
                "spin-host: outbound request to {scheme}://{authority} refused (not in allowed_outbound_hosts)"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::DestinationIpProhibited) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
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
mod outbound_tests {
    use super::OutboundPolicy;

    #[test]
    fn only_listed_origins_go_out() {
        let p = OutboundPolicy {
            allowed: vec![
                "http://127.0.0.1:8080".into(),
                "https://api.resend.com".into(),
            ],
        };
        assert!(p.allows("http", "127.0.0.1:8080"));
        assert!(p.allows("https", "api.resend.com"));
        assert!(p.allows("https", "api.resend.com:443"));
        assert!(!p.allows("http", "127.0.0.1:8081"));
        assert!(!p.allows("http", "api.resend.com"));
        assert!(!p.allows("https", "evil.example"));
        assert!(!OutboundPolicy { allowed: vec![] }.allows("https", "api.resend.com"));
    }
}
