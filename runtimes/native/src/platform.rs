//! The native `Clock`, `Rng`, `ConfigSource` and `Outbound` ports.
//!
//! In scope: system time, OS randomness, settings from `EDGECODER_<NAME>`
//! environment variables with secrets also read from the data directory, and
//! outbound HTTP(S) through `ureq` (rustls) on a blocking thread. Out of scope:
//! SQL and KV (see `sqlite`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use edgecoder_kernel::{
    Clock, ConfigSource, Error, Outbound, OutboundRequest, OutboundResponse, Rng, async_trait,
};

/// System wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// The operating system's CSPRNG.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&self, buf: &mut [u8]) {
        // Without OS randomness nothing we issue would be safe; stop rather than
        // hand out predictable ids or keys.
        if let Err(e) = getrandom::fill(buf) {
            panic!("operating system randomness unavailable: {e}");
        }
    }
}

/// Settings from the environment (`EDGECODER_MODE`, ...) and overrides, with
/// secrets also read from `<data-dir>/secrets/<name>` files.
#[derive(Clone, Debug, Default)]
pub struct NativeConfig {
    overrides: HashMap<String, String>,
    secrets_dir: Option<PathBuf>,
}

impl NativeConfig {
    /// Reads the environment; `secrets_dir` holds one file per secret.
    pub fn new(secrets_dir: Option<&Path>) -> Self {
        NativeConfig {
            overrides: HashMap::new(),
            secrets_dir: secrets_dir.map(Path::to_path_buf),
        }
    }

    /// The same settings, reading secret files from `dir`.
    #[must_use]
    pub fn with_secrets_dir(mut self, dir: &Path) -> Self {
        self.secrets_dir = Some(dir.to_path_buf());
        self
    }

    /// Sets a value that wins over the environment (command-line flags).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.overrides.insert(name.to_owned(), value.into());
    }

    /// The environment variable a setting is read from.
    pub fn env_name(name: &str) -> String {
        format!("EDGECODER_{}", name.to_ascii_uppercase())
    }
}

impl ConfigSource for NativeConfig {
    fn var(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(Self::env_name(name)).ok())
    }

    fn secret(&self, name: &str) -> Option<String> {
        if let Some(v) = self.var(name) {
            return Some(v);
        }
        let dir = self.secrets_dir.as_ref()?;
        std::fs::read_to_string(dir.join(name)).ok()
    }
}

/// Outbound HTTP through ureq, run on tokio's blocking pool.
#[derive(Clone)]
pub struct UreqOutbound {
    agent: ureq::Agent,
}

impl Default for UreqOutbound {
    fn default() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(15)))
            .max_redirects(0)
            .build();
        UreqOutbound {
            agent: config.into(),
        }
    }
}

/// Cap on outbound response bodies.
const MAX_OUTBOUND_BODY: u64 = 4 * 1024 * 1024;

impl UreqOutbound {
    fn send_blocking(agent: &ureq::Agent, req: OutboundRequest) -> Result<OutboundResponse, Error> {
        let mut builder = ureq::http::Request::builder()
            .method(req.method)
            .uri(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .body(req.body)
            .map_err(|e| Error::Outbound(e.to_string()))?;
        let mut resp = agent
            .run(request)
            .map_err(|e| Error::Outbound(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_OUTBOUND_BODY)
            .read_to_vec()
            .map_err(|e| Error::Outbound(e.to_string()))?;
        Ok(OutboundResponse {
            status,
            headers,
            body,
        })
    }
}

#[async_trait(?Send)]
impl Outbound for UreqOutbound {
    async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, Error> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || Self::send_blocking(&agent, req))
            .await
            .map_err(|e| Error::Outbound(e.to_string()))?
    }
}

/// Deferred work as a task on the serving thread's `LocalSet` (every request
/// is handled inside one), running after the handler has answered.
pub struct SpawnLocal;

impl edgecoder_kernel::Defer for SpawnLocal {
    fn defer(&self, task: edgecoder_kernel::Deferred) {
        tokio::task::spawn_local(task);
    }
}
