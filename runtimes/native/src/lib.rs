//! The native EdgeCoder runtime behind the `edgecoder` binary.
//!
//! In scope: implementing the kernel's ports over embedded SQLite, the OS and a
//! blocking HTTP client; the data directory; applying migrations; serving every
//! function on one HTTP port. Out of scope: any function logic (the
//! `functions/` crates) and TLS termination (put a reverse proxy in front and
//! list it in `trusted_proxies`).

pub mod datadir;
pub mod metrics;
pub mod model;
pub mod platform;
pub mod server;
pub mod spin_manifest;
pub mod sqlite;
pub mod task;
pub mod verify;

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result};
use edgecoder_gateway::{Loaded, Ports, Selection};
use edgecoder_kernel::{Mode, Services, migrations};

use crate::datadir::DataDir;
use crate::platform::{NativeConfig, OsRng, SystemClock, UreqOutbound};
use crate::sqlite::{Db, SqliteKv};

/// An opened data directory with validated configuration.
pub struct Runtime {
    /// The data directory.
    pub dir: DataDir,
    /// The shared SQL database.
    pub db: Db,
    /// The KV store.
    pub kv: SqliteKv,
    /// Every validated setting (the kernel's and each function's).
    pub loaded: Loaded,
}

impl Runtime {
    /// Opens `data_dir` in `mode` (creating it, and the development keys in
    /// development mode) and validates the configuration. In production mode a
    /// missing required secret is an error: the caller must not serve.
    pub fn open(data_dir: &Path, mode: Mode, mut settings: NativeConfig) -> Result<Runtime> {
        let dir = DataDir::create(data_dir)?;
        if mode == Mode::Development {
            for name in dir.ensure_dev_keys(&OsRng)? {
                tracing::info!(path = %dir.secrets_dir().join(name).display(), "generated a development key");
            }
        }
        settings.set("mode", mode.as_str());
        let source = NativeConfig::clone(&settings).with_secrets_dir(&dir.secrets_dir());
        let loaded = Loaded::load(&source, Selection::All).context("refusing to start")?;
        let db = Db::open(&dir.sql_path())?;
        let kv = SqliteKv::open(&dir.kv_path(), Arc::new(SystemClock))?;
        Ok(Runtime {
            dir,
            db,
            kv,
            loaded,
        })
    }

    /// Port bundle for work outside a request (migrations, CLI commands).
    pub fn services(&self) -> Services {
        self.loaded.services(
            Ports {
                sql: Rc::new(self.db.clone()),
                kv: Rc::new(self.kv.handle()),
                clock: Rc::new(SystemClock),
                rng: Rc::new(OsRng),
                outbound: Rc::new(UreqOutbound::default()),
                // CLI commands send no mail; nothing they defer would be run.
                defer: Rc::new(edgecoder_kernel::CollectDeferred::default()),
                signatures: Rc::new(edgecoder_kernel::SoftwareSignatures),
            },
            Selection::All,
            None,
        )
    }

    /// Applies pending migrations; returns the names applied.
    pub async fn migrate(&self) -> Result<Vec<&'static str>> {
        let s = self.services();
        let applied = migrations::apply(
            s.sql.as_ref(),
            s.clock.as_ref(),
            s.rng.as_ref(),
            "system:migrate",
        )
        .await?;
        Ok(applied)
    }
}
