//! The model supply chain on the host: the resolver that turns a model name
//! into verified graph bytes only for the release the coordinator assigned.
//!
//! In scope: keeping the assignments and the family policies each heartbeat
//! brings; for each assigned release, in this order: the family is allowed,
//! the source is https (or a local directory) under an allowed origin, the
//! DSSE envelope holds k of n signatures by the policy's keys, is unexpired,
//! is this model's release and is the release assigned (digest), its total
//! size is under the policy's cap; then every file is fetched or read
//! streamed, capped at its listed size, hashed as it arrives, written to a
//! temporary file and moved into the digest-addressed cache only when size
//! and blake3 match (anything else is discarded). A cached file is re-hashed
//! before it counts, and the graph once more when it is loaded. Each refusal
//! is a typed [`Failure`], logged, counted and reported in the next
//! heartbeat; a refused release is not retried until the coordinator
//! assigns another (fetch errors are retried).
//!
//! Out of scope: compiling graphs (the host), rollout decisions (the
//! coordinator). The guest only ever names a model; no path, URL or byte
//! comes from it.
//!
//! ```text
//! <cache>/blobs/<blake3 hex>     verified files, by digest
//! <cache>/tmp/<pid>-<start>/<digest>-<n>   a download in progress (removed on failure)
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edgecoder_proto::model::{ManifestFile, ModelManifest};
use edgecoder_proto::supply::{Assignment, Assignments, Failure, ModelState, ModelStatus};

use crate::Error;
use crate::metrics::Metrics;
use crate::models::{MANIFEST, Manifest, Refusal, Resolver, Verified};

/// Bytes of releases no longer assigned that a cache keeps by default.
pub const DEFAULT_KEEP_BYTES: u64 = 10 << 30;

/// Largest `manifest.json` inside a release.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// How a release's files are fetched from an https origin.
pub struct Fetcher {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    /// An https client trusting the web PKI, or only `extra_ca` (PEM) when
    /// given (a private model mirror, and tests). It never follows a
    /// redirect (that could leave the allowed origin) and speaks https only.
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, Error> {
        use ureq::tls::{RootCerts, TlsConfig};
        let roots = match extra_ca {
            None => RootCerts::WebPki,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                let certs = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if certs.is_empty() {
                    return Err(Error::Config(format!(
                        "{} holds no PEM certificate",
                        path.display()
                    )));
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let agent = ureq::Agent::config_builder()
            .https_only(true)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30 * 60)))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .new_agent();
        Ok(Self { agent })
    }
}

/// Wakes the thread [`Supply::spawn_preparer`] started.
#[derive(Debug)]
pub struct Preparer {
    tx: std::sync::mpsc::SyncSender<()>,
}

impl Preparer {
    /// Asks for a prepare (at most one waits behind the running one).
    pub fn kick(&self) {
        if let Err(std::sync::mpsc::TrySendError::Disconnected(())) = self.tx.try_send(()) {
            edgecoder_agent::runner::log(format_args!(
                "model supply: the verifying thread is gone; releases are no longer verified"
            ));
        }
    }
}

/// One release as the host holds it.
#[derive(Debug, Clone)]
struct Held {
    assignment: Assignment,
    state: ModelState,
    failure: Option<Failure>,
    /// The verified manifest (set once verified).
    manifest: Option<ModelManifest>,
    /// Failed fetches in a row.
    attempts: u32,
    /// Not before this is a failed fetch tried again.
    next_try: Option<Instant>,
}

/// The longest wait between retries of a failed fetch.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(600);

/// The supply-chain resolver.
pub struct Supply {
    cache: PathBuf,
    /// Bytes of releases no longer assigned that the cache keeps.
    keep_bytes: std::sync::atomic::AtomicU64,
    /// This process's own download directory (`<cache>/tmp/<pid>-<start>`).
    tmp: PathBuf,
    serial: std::sync::atomic::AtomicU64,
    fetcher: Fetcher,
    held: Mutex<HashMap<String, Held>>,
    policy_version: Mutex<u64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Supply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supply")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("blake3:").unwrap_or(digest)
}

/// A refusal with what it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The code.
    pub failure: Failure,
    /// For the operator.
    pub detail: String,
}

fn refused(failure: Failure, detail: impl Into<String>) -> Refused {
    Refused {
        failure,
        detail: detail.into(),
    }
}

impl Supply {
    /// A resolver caching verified files under `cache`.
    pub fn new(cache: &Path, fetcher: Fetcher, metrics: Arc<Metrics>) -> Result<Self, Error> {
        // Leftovers of downloads cut short by a crash are never trusted;
        // another live host may share the cache (and, in a container, its
        // process id), so only directories untouched for a day go.
        if let Ok(entries) = std::fs::read_dir(cache.join("tmp")) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(86_400));
                if stale {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = cache
            .join("tmp")
            .join(format!("{}-{unique:x}", std::process::id()));
        for d in [cache.join("blobs"), tmp.clone()] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        Ok(Self {
            cache: cache.to_owned(),
            keep_bytes: std::sync::atomic::AtomicU64::new(DEFAULT_KEEP_BYTES),
            tmp,
            serial: std::sync::atomic::AtomicU64::new(0),
            fetcher,
            held: Mutex::new(HashMap::new()),
            policy_version: Mutex::new(0),
            metrics,
        })
    }

    /// Takes a heartbeat's assignments: new or changed releases start over
    /// (pending), releases no longer assigned are dropped.
    pub fn assign(&self, a: &Assignments) {
        if let Ok(mut v) = self.policy_version.lock() {
            *v = a.policy_version;
        }
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        held.retain(|model, h| {
            a.assignments.iter().any(|x| {
                &x.model == model
                    && x.release_digest == h.assignment.release_digest
                    && x.source == h.assignment.source
                    && x.envelope == h.assignment.envelope
            })
        });
        for x in &a.assignments {
            match held.get_mut(&x.model) {
                // Same release from the same place under a changed policy
                // (a key added or revoked, an origin listed): its files are
                // already verified by digest, so only the envelope is checked
                // again, at once, and a verified release keeps serving.
                Some(h) if h.assignment != *x => {
                    let was_verified = h.state == ModelState::Verified;
                    h.assignment = x.clone();
                    if was_verified {
                        let now = now_secs();
                        if let Err((f, why)) =
                            x.policy
                                .check_release(&x.envelope, &x.source, now, Some(&x.model))
                        {
                            self.refuse(h, &refused(f, why));
                        }
                    } else if h.failure.is_some() {
                        // A refusal may not hold under the new policy.
                        h.state = ModelState::Pending;
                        h.failure = None;
                        h.attempts = 0;
                    }
                }
                Some(_) => {}
                None => {
                    held.insert(
                        x.model.clone(),
                        Held {
                            assignment: x.clone(),
                            state: ModelState::Pending,
                            failure: None,
                            manifest: None,
                            attempts: 0,
                            next_try: None,
                        },
                    );
                }
            }
        }
        self.metrics.assignments(
            &a.assignments
                .iter()
                .map(|x| (x.model.clone(), x.rollout_id.clone()))
                .collect::<Vec<_>>(),
        );
    }

    /// A thread that runs [`Supply::prepare`] whenever it is kicked, so that
    /// a long download never holds up heartbeats or tasks of other models.
    pub fn spawn_preparer(self: &Arc<Self>) -> Result<Preparer, Error> {
        // One pending kick is enough: a prepare that starts later sees every
        // assignment made before it.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let supply = self.clone();
        std::thread::Builder::new()
            .name("model-supply".into())
            .spawn(move || {
                for () in rx {
                    supply.prepare();
                }
            })
            .map_err(|e| Error::io("starting the model supply thread", e))?;
        Ok(Preparer { tx })
    }

    /// Verifies every pending release (and retries failed fetches), then
    /// trims the cache of releases no longer assigned.
    pub fn prepare(&self) {
        self.verify_pending();
        let freed = self.collect(self.keep_bytes.load(std::sync::atomic::Ordering::Relaxed));
        if freed > 0 {
            edgecoder_agent::runner::log(format_args!(
                "cache: {} MB of releases no longer assigned removed",
                freed >> 20
            ));
        }
    }

    /// How many bytes of releases no longer assigned the cache keeps.
    pub fn keep_unassigned(&self, bytes: u64) {
        self.keep_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn verify_pending(&self) {
        let todo: Vec<Held> = self
            .held
            .lock()
            .map(|h| {
                let now = Instant::now();
                h.values()
                    .filter(|h| {
                        h.state == ModelState::Pending
                            || (h.failure == Some(Failure::FetchFailed)
                                && h.next_try.is_none_or(|t| now >= t))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for h in todo {
            let model = h.assignment.model.clone();
            let started = Instant::now();
            let outcome = self.verify(&h.assignment);
            if let Ok(mut held) = self.held.lock()
                && let Some(entry) = held.get_mut(&model)
                && entry.assignment == h.assignment
            {
                match outcome {
                    Ok(m) => {
                        entry.state = ModelState::Verified;
                        entry.failure = None;
                        entry.manifest = Some(m);
                        entry.attempts = 0;
                        entry.next_try = None;
                        self.metrics.fetched(&model, started.elapsed());
                        edgecoder_agent::runner::log(format_args!(
                            "model {model}: release {} verified in {} ms",
                            h.assignment.release_digest,
                            started.elapsed().as_millis()
                        ));
                    }
                    Err(r) => {
                        if r.failure == Failure::FetchFailed {
                            // 10 s, 20 s, 40 s … up to ten minutes.
                            entry.attempts = entry.attempts.saturating_add(1);
                            let wait = std::time::Duration::from_secs(10)
                                .saturating_mul(1 << entry.attempts.min(6))
                                .min(MAX_BACKOFF);
                            entry.next_try = Some(Instant::now() + wait);
                        }
                        self.refuse(entry, &r);
                    }
                }
            }
        }
    }

    fn refuse(&self, entry: &mut Held, r: &Refused) {
        entry.state = ModelState::Failed;
        entry.failure = Some(r.failure);
        entry.manifest = None;
        self.metrics
            .verification_failed(&entry.assignment.model, r.failure.as_str());
        edgecoder_agent::runner::log(format_args!(
            "model {}: release {} refused ({}): {}",
            entry.assignment.model, entry.assignment.release_digest, r.failure, r.detail
        ));
    }

    /// Verified releases whose manifest has expired since stop being served
    /// (and are reported so).
    fn expire(&self) {
        let now = now_secs();
        if let Ok(mut held) = self.held.lock() {
            for entry in held.values_mut() {
                if entry.state == ModelState::Verified
                    && entry.manifest.as_ref().is_some_and(|m| now >= m.expires_at)
                {
                    self.refuse(
                        entry,
                        &refused(Failure::ManifestExpired, "the manifest has expired"),
                    );
                }
            }
        }
    }

    /// What the next heartbeat reports: each release's state, with the
    /// health the metrics saw on it.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.expire();
        let held = self.held.lock().map(|h| h.clone()).unwrap_or_default();
        let mut out: Vec<ModelStatus> = held
            .values()
            .map(|h| {
                let (requests, errors, p99_ms) = self.metrics.health(&h.assignment.model);
                ModelStatus {
                    model: h.assignment.model.clone(),
                    release_digest: h.assignment.release_digest.clone(),
                    state: h.state,
                    failure: h.failure,
                    requests,
                    errors,
                    p99_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }

    /// The coordinator's model-policy version last seen.
    pub fn policy_version(&self) -> u64 {
        self.policy_version.lock().map(|v| *v).unwrap_or_default()
    }

    /// Every check, then every file into the cache.
    pub fn verify(&self, a: &Assignment) -> Result<ModelManifest, Refused> {
        let mut spent = std::time::Duration::ZERO;
        let began = Instant::now();
        let verified = a
            .policy
            .check_release(&a.envelope, &a.source, now_secs(), Some(&a.model))
            .map_err(|(f, why)| refused(f, why))?;
        spent += began.elapsed();
        if verified.digest != a.release_digest {
            return Err(refused(
                Failure::ModelNotApproved,
                "the envelope is not the release the coordinator assigned",
            ));
        }
        for f in &verified.manifest.files {
            let wanted = || {
                self.held
                    .lock()
                    .is_ok_and(|h| h.get(&a.model).is_some_and(|h| h.assignment == *a))
            };
            let got = self.obtain(&a.source, f, &mut spent, &wanted);
            self.metrics.verify_work(&a.model, spent);
            spent = std::time::Duration::ZERO;
            got?;
        }
        // The config must be one of the signed files, and name this release
        // and a graph file that is signed too.
        let mut spent = std::time::Duration::ZERO;
        let config = self.config(&verified.manifest, &mut spent);
        self.metrics.verify_work(&a.model, spent);
        config?;
        Ok(verified.manifest)
    }

    /// Removes cached files no assigned release lists, oldest first, until
    /// those left take at most `keep_bytes` (kept so that a rollback to a
    /// recent release need not download it again). Returns the bytes freed.
    pub fn collect(&self, keep_bytes: u64) -> u64 {
        use base64::Engine as _;
        let wanted: std::collections::HashSet<String> = self
            .held
            .lock()
            .map(|h| {
                h.values()
                    .filter_map(|h| {
                        // The envelope's own list (read, not trusted: it only
                        // decides what stays on disk).
                        base64::engine::general_purpose::STANDARD
                            .decode(h.assignment.envelope.payload.as_bytes())
                            .ok()
                            .and_then(|p| serde_json::from_slice::<ModelManifest>(&p).ok())
                    })
                    .flat_map(|m| m.files.into_iter().map(|f| hex_of(&f.digest).to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(self.cache.join("blobs")) else {
            return 0;
        };
        let mut spare: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| !wanted.contains(e.file_name().to_string_lossy().as_ref()))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        spare.sort();
        let mut kept: u64 = spare.iter().map(|(_, n, _)| n).sum();
        let mut freed = 0;
        for (_, n, path) in spare {
            if kept <= keep_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                kept -= n;
                freed += n;
            }
        }
        freed
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.cache.join("blobs").join(hex_of(digest))
    }

    /// The file in the cache, verified: a cached copy is re-hashed, and a
    /// missing or bad one fetched again.
    fn obtain(
        &self,
        source: &str,
        f: &ManifestFile,
        spent: &mut std::time::Duration,
        wanted: &dyn Fn() -> bool,
    ) -> Result<PathBuf, Refused> {
        let blob = self.blob(&f.digest);
        if blob.is_file() {
            match hash_capped(&mut open(&blob)?, f.size, spent) {
                Ok((n, d)) if n == f.size && d == f.digest => return Ok(blob),
                _ => {
                    edgecoder_agent::runner::log(format_args!(
                        "cache: {} no longer matches its digest; fetching it again",
                        blob.display()
                    ));
                    let _ = std::fs::remove_file(&blob);
                }
            }
        }
        // Recreated if something cleaned it away meanwhile.
        let _ = std::fs::create_dir_all(&self.tmp);
        let tmp = self.tmp.join(format!(
            "{}-{}",
            hex_of(&f.digest),
            self.serial
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let got = self.fetch_into(source, f, &tmp, spent, wanted);
        match got {
            Ok(()) => {
                std::fs::rename(&tmp, &blob).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    refused(Failure::FetchFailed, format!("caching {}: {e}", f.path))
                })?;
                Ok(blob)
            }
            Err(r) => {
                let _ = std::fs::remove_file(&tmp);
                Err(r)
            }
        }
    }

    /// Streams `{source}/{path}` into `tmp`, hashing as it goes, reading at
    /// most one byte past the listed size.
    fn fetch_into(
        &self,
        source: &str,
        f: &ManifestFile,
        tmp: &Path,
        spent: &mut std::time::Duration,
        wanted: &dyn Fn() -> bool,
    ) -> Result<(), Refused> {
        let url = format!("{}/{}", source.trim_end_matches('/'), f.path);
        // create_new: never through a link someone left at that name.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| refused(Failure::FetchFailed, format!("{}: {e}", tmp.display())))?;
        let (n, digest) = if let Some(path) = url.strip_prefix("file://") {
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(refused(
                        Failure::DigestMismatch,
                        format!("{} is missing from the source", f.path),
                    ));
                }
                Err(e) => return Err(refused(Failure::FetchFailed, format!("{path}: {e}"))),
                // A FIFO or a device would never end.
                Ok(m) if !m.is_file() => {
                    return Err(refused(
                        Failure::DigestMismatch,
                        format!("{} is not a regular file at the source", f.path),
                    ));
                }
                Ok(_) => {}
            }
            let mut file = std::fs::File::open(path)
                .map_err(|e| refused(Failure::FetchFailed, format!("{path}: {e}")))?;
            copy_hashed(&mut file, &mut out, f.size, spent, wanted)?
        } else {
            let mut resp = self
                .fetcher
                .agent
                .get(&url)
                .call()
                .map_err(|e| refused(Failure::FetchFailed, format!("{url}: {e}")))?;
            let status = resp.status().as_u16();
            if status == 404 {
                return Err(refused(
                    Failure::DigestMismatch,
                    format!("{} is missing from the source (404)", f.path),
                ));
            }
            if status != 200 {
                return Err(refused(
                    Failure::FetchFailed,
                    format!("{url}: HTTP {status}"),
                ));
            }
            let mut body = resp.body_mut().as_reader();
            copy_hashed(&mut body, &mut out, f.size, spent, wanted)?
        };
        // No fsync: a cached file is re-hashed before it counts, so a crash
        // that leaves it short costs a download, never a wrong byte.
        out.flush()
            .map_err(|e| refused(Failure::FetchFailed, format!("{}: {e}", tmp.display())))?;
        if n != f.size {
            return Err(refused(
                Failure::DigestMismatch,
                format!(
                    "{}: {} bytes{}; the manifest says {}",
                    f.path,
                    n,
                    if n > f.size { " or more" } else { "" },
                    f.size
                ),
            ));
        }
        if digest != f.digest {
            return Err(refused(
                Failure::DigestMismatch,
                format!(
                    "{}: blake3 {digest}; the manifest says {}",
                    f.path, f.digest
                ),
            ));
        }
        Ok(())
    }

    /// The release's `manifest.json` (the model's configuration), from the
    /// cache: it must be signed, name this release, and point at a signed
    /// graph file.
    fn config(
        &self,
        m: &ModelManifest,
        spent: &mut std::time::Duration,
    ) -> Result<(Manifest, ManifestFile), Refused> {
        let bad = |d: String| refused(Failure::ModelNotApproved, d);
        let entry = m
            .files
            .iter()
            .find(|f| f.path == MANIFEST)
            .ok_or_else(|| bad(format!("the release has no {MANIFEST}")))?;
        if entry.size > MAX_CONFIG_BYTES {
            return Err(bad(format!("{MANIFEST} is too large")));
        }
        let raw = read_verified(&self.blob(&entry.digest), entry, spent)?;
        let config: Manifest = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("{MANIFEST} is not a model configuration: {e}")))?;
        if config.name != m.name || config.version != m.version {
            return Err(bad(format!("{MANIFEST} names another model")));
        }
        crate::models::check_config(&config).map_err(bad)?;
        let graph = m
            .files
            .iter()
            .find(|f| f.path == config.file)
            .ok_or_else(|| bad(format!("the graph {} is not a signed file", config.file)))?;
        if graph.size != config.size || graph.digest != config.digest {
            return Err(bad(format!(
                "{MANIFEST} describes another {} than the signed one",
                config.file
            )));
        }
        Ok((config, graph.clone()))
    }
}

fn open(p: &Path) -> Result<std::fs::File, Refused> {
    std::fs::File::open(p)
        .map_err(|e| refused(Failure::FetchFailed, format!("{}: {e}", p.display())))
}

/// Reads a cached file whole, re-hashing it against its manifest entry.
fn read_verified(
    blob: &Path,
    f: &ManifestFile,
    spent: &mut std::time::Duration,
) -> Result<Vec<u8>, Refused> {
    let bytes = std::fs::read(blob).map_err(|_| {
        refused(
            Failure::DigestMismatch,
            format!("{} left the cache", f.path),
        )
    })?;
    let began = Instant::now();
    let digest = format!(
        "blake3:{}",
        blake3::Hasher::new()
            .update_rayon(&bytes)
            .finalize()
            .to_hex()
    );
    *spent += began.elapsed();
    if bytes.len() as u64 != f.size || digest != f.digest {
        let _ = std::fs::remove_file(blob);
        return Err(refused(
            Failure::DigestMismatch,
            format!("the cached {} changed since it was verified", f.path),
        ));
    }
    Ok(bytes)
}

/// Hashes at most `cap + 1` bytes of `r`: (bytes read, digest).
fn hash_capped(
    r: &mut dyn Read,
    cap: u64,
    spent: &mut std::time::Duration,
) -> Result<(u64, String), Refused> {
    copy_hashed(r, &mut std::io::sink(), cap, spent, &|| true)
}

/// Copies at most `cap + 1` bytes from `r` to `w`, hashing them; the time
/// spent hashing is added to `spent`.
fn copy_hashed(
    r: &mut dyn Read,
    w: &mut dyn Write,
    cap: u64,
    spent: &mut std::time::Duration,
    wanted: &dyn Fn() -> bool,
) -> Result<(u64, String), Refused> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n: u64 = 0;
    let limit = cap.saturating_add(1);
    let mut since_check: u64 = 0;
    while n < limit {
        // Every 64 MiB: a release unassigned meanwhile (a rollback) is not
        // worth finishing while its replacement waits.
        if since_check >= 64 << 20 {
            since_check = 0;
            if !wanted() {
                return Err(refused(
                    Failure::FetchFailed,
                    "no longer assigned; the download was abandoned",
                ));
            }
        }
        let want = usize::try_from((limit - n).min(buf.len() as u64)).unwrap_or(buf.len());
        let got = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A connection cut mid-body: retried on the next heartbeat
            // (what was read is discarded either way).
            Err(e) => {
                return Err(refused(
                    Failure::FetchFailed,
                    format!("the download broke off after {n} bytes: {e}"),
                ));
            }
        };
        let began = Instant::now();
        hasher.update(&buf[..got]);
        *spent += began.elapsed();
        w.write_all(&buf[..got])
            .map_err(|e| refused(Failure::FetchFailed, format!("writing the cache: {e}")))?;
        n += got as u64;
        since_check += got as u64;
    }
    Ok((n, format!("blake3:{}", hasher.finalize().to_hex())))
}

impl Resolver for Supply {
    fn names(&self) -> Vec<String> {
        self.expire();
        let mut names: Vec<String> = self
            .held
            .lock()
            .map(|h| {
                h.values()
                    .filter(|h| h.state == ModelState::Verified)
                    .map(|h| h.assignment.model.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn serves(&self, name: &str) -> bool {
        self.expire();
        self.held
            .lock()
            .is_ok_and(|h| h.get(name).is_some_and(|h| h.state == ModelState::Verified))
    }

    fn tracks_refusals(&self) -> bool {
        true
    }

    fn resolve(&self, name: &str) -> Result<Verified, Refusal> {
        self.expire();
        let held = self
            .held
            .lock()
            .ok()
            .and_then(|h| h.get(name).cloned())
            .ok_or_else(|| Refusal::NotFound(format!("{name} is not assigned to this host")))?;
        let Some(manifest) = held
            .manifest
            .clone()
            .filter(|_| held.state == ModelState::Verified)
        else {
            return Err(Refusal::NotApproved(format!(
                "{name}: release {} is not verified ({})",
                held.assignment.release_digest,
                held.failure.map_or("pending", |f| f.as_str())
            )));
        };
        // Re-hashed on load: the cache is disk, and disk can change.
        let mut spent = std::time::Duration::ZERO;
        let loaded = self
            .config(&manifest, &mut spent)
            .and_then(|(config, graph)| {
                Ok((
                    read_verified(&self.blob(&graph.digest), &graph, &mut spent)?,
                    config,
                ))
            });
        self.metrics.verify_work(name, spent);
        match loaded {
            Ok((bytes, config)) => Ok(Verified {
                name: name.to_owned(),
                manifest: config,
                manifest_digest: held.assignment.release_digest.clone(),
                bytes,
            }),
            Err(r) => {
                // The cache changed under the host (a bad blob is deleted by
                // the check): that says nothing about the release, so it is
                // fetched and verified again rather than refused.
                if let Ok(mut h) = self.held.lock()
                    && let Some(entry) = h.get_mut(name)
                    && entry.assignment == held.assignment
                {
                    entry.state = ModelState::Pending;
                    entry.failure = None;
                    entry.manifest = None;
                    edgecoder_agent::runner::log(format_args!(
                        "model {name}: the cached release failed its check on load ({}); fetching it again",
                        r.detail
                    ));
                }
                Err(Refusal::NotApproved(format!("{name}: {}", r.detail)))
            }
        }
    }
}
