//! The data directory: databases and the native secret store.
//!
//! Layout (created on first run; directories 0700, files 0600):
//!
//! ```text
//! <data-dir>/
//!   edgecoder.sqlite   the shared schema (migrations/), all functions
//!   kv.sqlite          the KV port's store
//!   secrets/
//!     signing_key      P-256 PKCS#8 PEM; generated in development mode only
//! ```
//!
//! In scope: creating the layout with owner-only permissions and the
//! development key. Out of scope: what is stored (kernel and functions).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgecoder_kernel::{Rng, SigningKey};

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory tree if needed. Directories are made (or reset
    /// to) 0700 and secret files 0600, also when someone created them
    /// beforehand with looser modes.
    pub fn create(root: &Path) -> Result<DataDir> {
        for dir in [root.to_path_buf(), root.join("secrets")] {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
        }
        for entry in fs::read_dir(root.join("secrets"))? {
            let path = entry?.path();
            if path.is_file() {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {}", path.display()))?;
            }
        }
        let dd = DataDir {
            root: root.to_path_buf(),
        };
        // Pre-create the database files so SQLite (and its -wal/-shm siblings,
        // which copy the main file's mode) never make world-readable files.
        for f in [dd.sql_path(), dd.kv_path()] {
            touch_private(&f)?;
        }
        Ok(dd)
    }

    /// An existing data directory, for commands that only read: refuses a
    /// missing one (naming where it looked) instead of creating it, so a
    /// mistyped `--data-dir` never leaves a new directory and key behind.
    pub fn existing(root: &Path) -> Result<DataDir> {
        let dd = DataDir {
            root: root.to_path_buf(),
        };
        if !dd.sql_path().is_file() {
            let shown = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
            anyhow::bail!(
                "no EdgeCoder data directory at {} (looked for {}): pass --data-dir (or set \
                 EDGECODER_DATA_DIR) to the directory `edgecoder serve` uses",
                shown.display(),
                shown.join("edgecoder.sqlite").display()
            );
        }
        Ok(dd)
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared SQL database.
    pub fn sql_path(&self) -> PathBuf {
        self.root.join("edgecoder.sqlite")
    }

    /// The KV database.
    pub fn kv_path(&self) -> PathBuf {
        self.root.join("kv.sqlite")
    }

    /// The secrets directory.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// The keys a development deployment generates for itself, one per job:
    /// access tokens, log checkpoints, the coordinator's identity.
    pub const DEV_KEYS: [&'static str; 3] = ["signing_key", "checkpoint_key", "coordinator_key"];

    /// Writes each development key that does not exist yet; returns the ones
    /// it wrote.
    pub fn ensure_dev_keys(&self, rng: &dyn Rng) -> Result<Vec<&'static str>> {
        let mut made = Vec::new();
        for name in Self::DEV_KEYS {
            let path = self.secrets_dir().join(name);
            if path.exists() {
                continue;
            }
            let pem = SigningKey::generate(rng).to_pkcs8_pem()?;
            write_private(&path, pem.as_bytes())?;
            made.push(name);
        }
        Ok(made)
    }
}

fn touch_private(path: &Path) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Writes a new file readable by the owner only; refuses to overwrite.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
