//! The `Sql` and `Kv` ports over embedded SQLite (rusqlite, bundled SQLite).
//!
//! In scope: running statements with typed parameters, `batch` as one
//! `BEGIN IMMEDIATE` transaction, and a KV store kept in its own database file
//! (`kv.sqlite`) with expiry. Out of scope: schema (the shared migrations) and
//! any function logic.
//!
//! One connection per database behind a mutex: SQLite admits one writer at a
//! time anyway, and statements are short. The mutex is never held across an
//! `.await`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use edgecoder_kernel::ports::{KV_LIST_MAX, KV_MIN_TTL, validate_kv_key};
use edgecoder_kernel::{Clock, Error, Kv, Rows, Sql, Statement, Value, async_trait};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params_from_iter};

/// A shared SQLite connection.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating if needed) a database file in WAL mode.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::storage)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(Error::storage)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(Error::storage)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(Error::storage)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(Error::storage)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Opens an existing database for reading only: nothing is created,
    /// migrated or switched to WAL (for the CLI's read-only commands, which
    /// must not leave a new database behind a mistyped path).
    pub fn open_read_only(path: &Path) -> Result<Db, Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::storage)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(Error::storage)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The first column of the first row of `sql` as an integer (`None`
    /// for NULL or no row): for the metrics gauges. A missing table (a
    /// database of another schema) is an error.
    pub fn scalar_i64(&self, sql: &str) -> Result<Option<i64>, Error> {
        let conn = self.lock()?;
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map_err(Error::storage)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, Error> {
        self.conn
            .lock()
            .map_err(|_| Error::Storage("database mutex poisoned".into()))
    }
}

struct Param<'a>(&'a Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// A driver error as the port reports it: unique-key failures by their
/// extended result codes, everything else as a storage failure.
fn driver_error(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Error::UniqueViolation(e.to_string())
        }
        _ => Error::storage(e),
    }
}

fn run(conn: &Connection, stmt: &Statement) -> Result<Rows, Error> {
    // `changes()` keeps the last DML's count across DDL and SELECTs; only
    // believe it when this statement moved the connection's running total.
    let total_before = conn.total_changes();
    let mut prepared = conn.prepare(&stmt.sql).map_err(driver_error)?;
    let columns: Vec<String> = prepared
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rows = prepared
        .query(params_from_iter(stmt.params.iter().map(Param)))
        .map_err(driver_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(driver_error)? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(match row.get_ref(i).map_err(driver_error)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Integer(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(values);
    }
    drop(rows);
    let changes = if conn.total_changes() == total_before {
        0
    } else {
        conn.changes()
    };
    Ok(Rows {
        columns,
        rows: out,
        changes,
    })
}

#[async_trait(?Send)]
impl Sql for Db {
    async fn execute(&self, stmt: Statement) -> Result<Rows, Error> {
        let conn = self.lock()?;
        run(&conn, &stmt)
    }

    async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<Rows>, Error> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::storage)?;
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            // Dropping `tx` on error rolls the whole batch back.
            out.push(run(&tx, stmt)?);
        }
        tx.commit().map_err(Error::storage)?;
        Ok(out)
    }
}

/// KV over its own SQLite file, so KV data never mixes with the migrated schema.
pub struct SqliteKv {
    db: Db,
    clock: Arc<dyn Clock + Send + Sync>,
}

impl SqliteKv {
    /// Opens the KV database and creates its one table.
    pub fn open(path: &Path, clock: Arc<dyn Clock + Send + Sync>) -> Result<SqliteKv, Error> {
        let db = Db::open(path)?;
        db.lock()?
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS kv (
                     key TEXT PRIMARY KEY,
                     value BLOB NOT NULL,
                     expires_at INTEGER
                 ) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;",
            )
            .map_err(Error::storage)?;
        Ok(SqliteKv { db, clock })
    }

    /// A handle sharing the same connection.
    pub fn handle(&self) -> SqliteKv {
        SqliteKv {
            db: self.db.clone(),
            clock: Arc::clone(&self.clock),
        }
    }
}

#[async_trait(?Send)]
impl Kv for SqliteKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        validate_kv_key(key)?;
        let now = self.clock.now_ms();
        let conn = self.db.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT value FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .map_err(Error::storage)?;
        let mut rows = stmt
            .query(rusqlite::params![key, now])
            .map_err(Error::storage)?;
        match rows.next().map_err(Error::storage)? {
            Some(row) => Ok(Some(row.get::<_, Vec<u8>>(0).map_err(Error::storage)?)),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        validate_kv_key(key)?;
        let now = self.clock.now_ms();
        let expires_at = ttl.map(|t| {
            let t = t.max(KV_MIN_TTL);
            now.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
        });
        let conn = self.db.lock()?;
        conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            rusqlite::params![key, value, expires_at],
        )
        .map_err(Error::storage)?;
        // Expired rows are invisible already; sweeping them on writes keeps the
        // file from growing without a background task.
        conn.execute(
            "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            rusqlite::params![now],
        )
        .map_err(Error::storage)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        validate_kv_key(key)?;
        let conn = self.db.lock()?;
        conn.execute("DELETE FROM kv WHERE key = ?1", rusqlite::params![key])
            .map_err(Error::storage)?;
        Ok(())
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        let now = self.clock.now_ms();
        let limit = i64::try_from(limit.min(KV_LIST_MAX)).unwrap_or(0);
        let conn = self.db.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT key FROM kv WHERE substr(key, 1, length(?1)) = ?1
                   AND (expires_at IS NULL OR expires_at > ?2)
                 ORDER BY key LIMIT ?3",
            )
            .map_err(Error::storage)?;
        let keys = stmt
            .query_map(rusqlite::params![prefix, now, limit], |r| {
                r.get::<_, String>(0)
            })
            .map_err(Error::storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::storage)?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct ManualClock(AtomicI64);
    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn kv_entries_expire_after_their_ttl_and_short_ttls_round_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let kv = SqliteKv::open(&dir.path().join("kv.sqlite"), clock.clone()).expect("open");
        block(async {
            kv.put("k", b"v", Some(Duration::from_secs(1)))
                .await
                .expect("put");
            kv.put("forever", b"v", None).await.expect("put");
            // Rounded up to the 60 s floor: still there after 59 s.
            clock.0.fetch_add(59_000, Ordering::SeqCst);
            assert_eq!(kv.get("k").await.expect("get"), Some(b"v".to_vec()));
            clock.0.fetch_add(1_000, Ordering::SeqCst);
            assert_eq!(kv.get("k").await.expect("get"), None);
            assert_eq!(
                kv.list("", 10).await.expect("list"),
                vec!["forever".to_owned()]
            );
        });
    }

    #[test]
    fn batch_is_all_or_nothing_and_reports_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite")).expect("open");
        block(async {
            db.execute(Statement::new(
                "CREATE TABLE t (k TEXT PRIMARY KEY)",
                vec![],
            ))
            .await
            .expect("ddl");
            let failed = db
                .batch(vec![
                    Statement::new("INSERT INTO t VALUES ('a')", vec![]),
                    Statement::new("INSERT INTO t VALUES ('a')", vec![]),
                ])
                .await;
            assert!(failed.is_err());
            let n = db
                .execute(Statement::new("SELECT count(*) AS n FROM t", vec![]))
                .await
                .expect("count");
            assert_eq!(n.get_i64(0, "n"), Some(0));
            let ok = db
                .batch(vec![
                    Statement::new("INSERT INTO t VALUES ('a')", vec![]),
                    Statement::new("UPDATE t SET k = 'b' WHERE k = 'a' RETURNING k", vec![]),
                ])
                .await
                .expect("batch");
            assert_eq!(ok[0].changes, 1);
            assert_eq!(ok[1].get_str(0, "k"), Some("b"));
        });
    }
}
