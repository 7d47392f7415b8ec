//! `edgecoder verify`: checks a ledger offline against pinned keys.
//!
//! In scope: fetching the latest checkpoint and every entry from a running
//! log (`--url`) or an operator's copy of the SQLite file (`--db`), opening the
//! checkpoint with pinned keys, recomputing the Merkle head from the exact
//! entry bytes, detecting rewinds and forks against the last checkpoint this
//! verifier accepted (a small state file), checking the log's own inclusion
//! and consistency proofs, and reporting the first failure by name. Out of
//! scope: fixing anything; the verifier only reads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_tlog::checkpoint::{self, Checkpoint, TrustedKey};
use edgecoder_tlog::merkle::{self, Frontier, Hash, Hasher, Sha256};
use edgecoder_tlog::proof::TlogProof;
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

/// Entries per page fetched.
const PAGE: u64 = 1000;
/// Progress is printed every this many entries.
const PROGRESS_EVERY: u64 = 100_000;

/// Where the log is read from.
pub enum Source {
    /// A running deployment's base URL.
    Url(String),
    /// A copy of the SQLite database file.
    Db(PathBuf),
}

/// What to verify.
pub struct Options {
    /// The log.
    pub source: Source,
    /// Trusted checkpoint keys.
    pub trusted: Vec<TrustedKey>,
    /// The log meant: a checkpoint of another origin is refused even when a
    /// trusted key (of another log) signed it.
    pub origin: Option<String>,
    /// The last accepted checkpoint is remembered here.
    pub state: PathBuf,
    /// Also check this entry's inclusion proof.
    pub entry: Option<u64>,
    /// Witnesses whose `cosignature/v1` counts (from `--witness` vkeys).
    pub witnesses: Vec<TrustedKey>,
    /// Cosignatures by distinct `witnesses` the checkpoint must carry.
    pub min_cosignatures: usize,
    /// Also recompute every issuance epoch from the log.
    pub epochs: bool,
    /// Coordinator keys whose signatures over a close count.
    pub coordinators: Vec<p256::ecdsa::VerifyingKey>,
    /// Signatures by distinct `coordinators` each close must carry.
    pub quorum: usize,
}

/// Parses a `--witness` value: a c2sp.org/signed-note verifier key of type
/// `0x04` (cosignature/v1), as `/mesh/identity` publishes it.
pub fn parse_witness(vkey: &str) -> Result<TrustedKey> {
    let t = checkpoint::NoteKey::parse_vkey(vkey.trim())
        .map_err(|e| anyhow!("--witness {vkey}: {e}"))?;
    if !matches!(t.key, checkpoint::NoteKey::CosignatureV1(_)) {
        bail!("--witness {vkey}: not a cosignature/v1 (type 0x04) verifier key");
    }
    Ok(t)
}

#[derive(Serialize, Deserialize)]
struct State {
    origin: String,
    size: u64,
    root: String,
    /// The trusted keys (`name+hex key id`) this log was verified with. A
    /// record without them (written by an older verifier) counts for its
    /// origin whatever the keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keys: Vec<String>,
}

/// The state file: the last verified checkpoint of every log, a log being
/// its origin and the keys that sign it. Two development servers both
/// named `localhost:8787/ledger` have different keys, so they are two
/// logs; a production log whose key rotated is the same log as long as the
/// old key is still passed (`--trust` with both) for one run.
#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    logs: Vec<State>,
}

impl StateFile {
    fn read(path: &Path) -> Result<StateFile> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StateFile::default()),
            Err(e) => {
                return Err(anyhow::Error::new(Unavailable(format!(
                    "reading {}: {e}",
                    path.display()
                ))));
            }
        };
        if let Ok(file) = serde_json::from_slice::<StateFile>(&bytes) {
            return Ok(file);
        }
        // The single-log form of earlier versions.
        match serde_json::from_slice::<State>(&bytes) {
            Ok(one) => Ok(StateFile { logs: vec![one] }),
            Err(e) => bail!(
                "the state file {} is not one this verifier wrote ({e}); move it away to start over",
                path.display()
            ),
        }
    }

    /// The records of the log named `origin`. A deployed log is its origin,
    /// whatever key it signs with now (a new key must not buy a fresh
    /// history: a rewind signed with it is still a rewind). Only a
    /// development log (named `localhost…`, `127.0.0.1…` or `[::1]…`, which
    /// every development server calls itself) is told apart by its keys.
    fn matching<'a>(
        &'a self,
        origin: &'a str,
        keys: &'a [String],
    ) -> impl Iterator<Item = &'a State> {
        self.logs.iter().filter(move |s| same_log(s, origin, keys))
    }
}

fn local_origin(origin: &str) -> bool {
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|p| {
        origin
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
    })
}

fn same_log(s: &State, origin: &str, keys: &[String]) -> bool {
    s.origin == origin
        && (!local_origin(origin) || s.keys.is_empty() || s.keys.iter().any(|k| keys.contains(k)))
}

/// The default state file: `$XDG_STATE_HOME/edgecoder/verify.json`, or
/// `~/.local/state/edgecoder/verify.json`.
pub fn default_state_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("edgecoder/verify.json")
}

/// What a successful verification found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The log's origin.
    pub origin: String,
    /// The verified checkpoint's size.
    pub size: u64,
    /// Its root hash, base64.
    pub root: String,
    /// Entries per second.
    pub entries_per_second: u64,
    /// The issuance epochs' summary, with `--epochs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<String>,
    /// Where the checkpoint is remembered.
    pub state: PathBuf,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok: {} size {} root {} ({} entries verified, {} entries/s)",
            self.origin, self.size, self.root, self.size, self.entries_per_second
        )?;
        if let Some(e) = &self.epochs {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

/// Parses `--key` values: a PEM or base64 DER SubjectPublicKeyInfo (as
/// `GET /ledger/keys` publishes), inline or in a file, or the log's Ed25519
/// verifier key (`vkeys` there), which names itself.
pub fn parse_key(name: &str, value: &str) -> Result<TrustedKey> {
    if let Ok(t) = checkpoint::NoteKey::parse_vkey(value.trim())
        && matches!(t.key, checkpoint::NoteKey::Ed25519(_))
    {
        if t.name != name {
            bail!("the verifier key names {}, not the --origin {name}", t.name);
        }
        return Ok(t);
    }
    Ok(TrustedKey {
        name: name.to_owned(),
        key: parse_p256_key(value)?.into(),
    })
}

/// A coordinator key: base64url SEC1 (as `/mesh/identity` publishes it), or
/// PEM / base64 SPKI, inline or in a file.
pub fn parse_coordinator_key(value: &str) -> Result<p256::ecdsa::VerifyingKey> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if let Ok(point) = URL_SAFE_NO_PAD.decode(value.trim())
        && let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
    {
        return Ok(key);
    }
    parse_p256_key(value).map_err(|e| anyhow!("--coordinator-key {value}: {e}"))
}

/// A P-256 public key: PEM or base64 DER SubjectPublicKeyInfo, inline or in
/// a file.
pub fn parse_p256_key(value: &str) -> Result<p256::ecdsa::VerifyingKey> {
    let text = match std::fs::read_to_string(value) {
        Ok(t) => t,
        Err(_) => value.to_owned(),
    };
    let text = text.trim();
    let key = if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        p256::ecdsa::VerifyingKey::from_public_key_pem(text)
    } else {
        let der = STANDARD
            .decode(text)
            .context("the key is neither PEM nor base64 SPKI")?;
        p256::ecdsa::VerifyingKey::from_public_key_der(&der)
    }
    .map_err(|e| anyhow!("not a P-256 public key: {e}"))?;
    Ok(key)
}

/// Reads a trust file: `<key name> <PEM-less base64 SPKI>` per line, `#` comments.
pub fn read_trust_file(path: &Path) -> Result<Vec<TrustedKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading trust file {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, key) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow!("trust file line without a key: {line}"))?;
        out.push(parse_key(name, key.trim())?);
    }
    Ok(out)
}

struct Entry {
    index: u64,
    bytes: Vec<u8>,
    leaf_hash: Vec<u8>,
}

/// The log (or a file the verifier needs) could not be fetched or read: a
/// network failure, an HTTP error status, an unreadable database or file.
/// Every other failure means the log was read and fails a check. The CLI
/// exits with a distinct status for each.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

fn unavailable(e: &anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Unavailable(format!("{e:#}")))
}

/// Whether `e` is (or was caused by) a failure to fetch or read.
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Unavailable>())
}

trait Log {
    fn checkpoint(&mut self) -> Result<String>;
    /// The newest checkpoint with at least `min` cosignatures, with them.
    fn cosigned_checkpoint(&mut self, min: usize) -> Result<String>;
    /// Every checkpoint the source holds, oldest first: a database keeps all
    /// it signed, a server serves only its latest.
    fn signed_checkpoints(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>>;
    /// The coordinators' signatures over an epoch's close entry, as
    /// `(keyid, base64 DER signature)`.
    fn close_signatures(&mut self, epoch: u64) -> Result<Vec<(String, String)>>;
    fn inclusion(&mut self, index: u64, size: u64) -> Result<Option<Vec<Vec<u8>>>>;
    fn consistency(&mut self, first: u64, second: u64) -> Result<Option<Vec<Vec<u8>>>>;
}

struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn get(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        // Only what stops us from reading the log is "unavailable": the
        // network, or a server that will not answer. What it does answer is
        // judged (a malformed page is a refusal, not an outage).
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| anyhow::Error::new(Unavailable(format!("GET {url}: {e}"))))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| anyhow::Error::new(Unavailable(format!("reading {url}: {e}"))))?;
        if status != 200 {
            return Err(anyhow::Error::new(Unavailable(format!(
                "GET {url}: {status}: {body}"
            ))));
        }
        Ok(body)
    }

    fn proof(&self, path: &str) -> Result<Vec<Vec<u8>>> {
        let v: serde_json::Value = serde_json::from_str(&self.get(path)?)?;
        v["proof"]
            .as_array()
            .ok_or_else(|| anyhow!("{path}: no proof"))?
            .iter()
            .map(|h| {
                STANDARD
                    .decode(h.as_str().unwrap_or(""))
                    .map_err(|e| anyhow!("{path}: {e}"))
            })
            .collect()
    }
}

impl Log for Http {
    fn checkpoint(&mut self) -> Result<String> {
        self.get("/ledger/checkpoint")
    }

    fn close_signatures(&mut self, epoch: u64) -> Result<Vec<(String, String)>> {
        let v: serde_json::Value =
            serde_json::from_str(&self.get(&format!("/mesh/credits/epochs/{epoch}"))?)?;
        Ok(v["close"]["signatures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["keyid"].as_str().unwrap_or_default().to_owned(),
                    s["sig"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    fn cosigned_checkpoint(&mut self, min: usize) -> Result<String> {
        self.get(&format!("/ledger/checkpoint?min_cosignatures={min}"))
            .with_context(|| format!("no checkpoint with {min} witness cosignatures"))
    }

    fn entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let v: serde_json::Value =
            serde_json::from_str(&self.get(&format!("/ledger/entries?start={start}&end={end}"))?)?;
        let mut out = Vec::new();
        for e in v["entries"].as_array().into_iter().flatten() {
            out.push(Entry {
                index: e["index"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("entry without index"))?,
                bytes: STANDARD.decode(e["entry"].as_str().unwrap_or(""))?,
                leaf_hash: STANDARD.decode(e["leaf_hash"].as_str().unwrap_or(""))?,
            });
        }
        Ok(out)
    }

    fn inclusion(&mut self, index: u64, size: u64) -> Result<Option<Vec<Vec<u8>>>> {
        self.proof(&format!(
            "/ledger/proof/inclusion?index={index}&tree_size={size}"
        ))
        .map(Some)
    }

    fn consistency(&mut self, first: u64, second: u64) -> Result<Option<Vec<Vec<u8>>>> {
        self.proof(&format!(
            "/ledger/proof/consistency?first={first}&second={second}"
        ))
        .map(Some)
    }
}

struct Sqlite(rusqlite::Connection);

impl Log for Sqlite {
    fn close_signatures(&mut self, epoch: u64) -> Result<Vec<(String, String)>> {
        // A database without the economy's tables (a ledger-only copy) has
        // no signatures to offer.
        let Ok(mut stmt) = self.0.prepare_cached(
            "SELECT key_id, signature FROM econ_close_signatures WHERE epoch = ?1 ORDER BY origin",
        ) else {
            return Ok(Vec::new());
        };
        let rows = stmt.query_map([i64::try_from(epoch)?], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn checkpoint(&mut self) -> Result<String> {
        self.0
            .query_row(
                "SELECT note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .context("the database holds no signed checkpoint")
    }

    fn cosigned_checkpoint(&mut self, min: usize) -> Result<String> {
        let (size, mut note) = self
            .0
            .query_row(
                "SELECT c.size, c.note FROM ledger_checkpoints c WHERE \
                 (SELECT count(*) FROM ledger_cosignatures s WHERE s.size = c.size) >= ?1 \
                 ORDER BY c.size DESC LIMIT 1",
                [i64::try_from(min).unwrap_or(i64::MAX)],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .with_context(|| format!("no checkpoint with {min} witness cosignatures"))?;
        let mut stmt = self
            .0
            .prepare("SELECT line FROM ledger_cosignatures WHERE size = ?1 ORDER BY witness")?;
        for line in stmt.query_map([size], |r| r.get::<_, String>(0))? {
            note.push_str(&line?);
            note.push('\n');
        }
        Ok(note)
    }

    fn signed_checkpoints(&mut self) -> Result<Vec<String>> {
        let mut stmt = self
            .0
            .prepare("SELECT note FROM ledger_checkpoints ORDER BY size")?;
        let notes = stmt.query_map([], |r| r.get::<_, String>(0))?;
        notes
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    fn entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT idx, entry, leaf_hash FROM ledger_entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
        )?;
        let rows = stmt.query_map([i64::try_from(start)?, i64::try_from(end)?], |r| {
            Ok(Entry {
                index: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(u64::MAX),
                bytes: r.get(1)?,
                leaf_hash: r.get(2)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
    }

    // The copy's own subtree table is not trusted: recomputing every leaf
    // already proves inclusion and consistency.
    fn inclusion(&mut self, _: u64, _: u64) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(None)
    }

    fn consistency(&mut self, _: u64, _: u64) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(None)
    }
}

/// Refuses a database whose log was built with another tree hash (a blake3
/// log from before the switch to RFC 6962 SHA-256).
fn check_tree_hash(conn: &rusqlite::Connection) -> Result<()> {
    let hash: Option<String> = conn
        .query_row("SELECT tree_hash FROM ledger_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .ok();
    match hash.as_deref() {
        Some(edgecoder_ledger::log::TREE_HASH) => Ok(()),
        Some(other) => bail!(
            "this log was built with the {other} tree hash; this version verifies RFC 6962 SHA-256 logs only (version {})",
            edgecoder_ledger::log::TREE_HASH
        ),
        None => bail!(
            "this database has no ledger_state.tree_hash: it predates the RFC 6962 SHA-256 log (migration 0008), or is not an EdgeCoder database"
        ),
    }
}

fn b64(h: &Hash) -> String {
    STANDARD.encode(h)
}

/// Refuses a checkpoint of another log than the one asked for.
fn expect_origin(cp: &Checkpoint, origin: Option<&str>) -> Result<()> {
    match origin {
        Some(o) if o != cp.origin => bail!(
            "checkpoint refused: it is {}'s, not {o}'s (--origin)",
            cp.origin
        ),
        _ => Ok(()),
    }
}

/// Runs the verification. An error marked [`Unavailable`] means the log
/// could not be read; any other means it was read and fails a check.
pub fn run(opts: &Options) -> Result<Report> {
    if opts.trusted.is_empty() {
        bail!("no trusted key: pass --key or --trust");
    }
    let source: Box<dyn Log> = match &opts.source {
        Source::Url(base) => Box::new(Http {
            base: base.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }),
        Source::Db(path) => {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .with_context(|| format!("opening {}", path.display()))
            .map_err(|e| unavailable(&e))?;
            check_tree_hash(&conn)?;
            Box::new(Sqlite(conn))
        }
    };
    let mut log = source;
    let note = if opts.min_cosignatures > 0 {
        // A log with no such checkpoint is judged on its latest (and the
        // count below names what is missing).
        match log.cosigned_checkpoint(opts.min_cosignatures) {
            Ok(note) => note,
            Err(_) => log.checkpoint()?,
        }
    } else {
        log.checkpoint()?
    };
    let trusted: Vec<TrustedKey> = opts
        .trusted
        .iter()
        .chain(opts.witnesses.iter())
        .cloned()
        .collect();
    let opened = checkpoint::open_cosigned(&note, &trusted)
        .map_err(|e| anyhow!("checkpoint refused: {e}"))?;
    let cp = opened.checkpoint;
    expect_origin(&cp, opts.origin.as_deref())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some((w, t)) = opened.cosigners.iter().find(|(_, t)| *t > now + 600) {
        bail!("witness {w} cosigned at {t}, in the future: refusing its cosignature");
    }
    if opened.cosigners.len() < opts.min_cosignatures {
        let have: Vec<&str> = opened.cosigners.iter().map(|(w, _)| w.as_str()).collect();
        bail!(
            "not enough cosignatures: the checkpoint of size {} carries {} of the {} required from the given witnesses ({}); a log that shows different heads to different witnesses, or rewinds, cannot collect them",
            cp.size,
            have.len(),
            opts.min_cosignatures,
            if have.is_empty() {
                "none".to_owned()
            } else {
                have.join(", ")
            }
        );
    }
    // The log's keys, by name and id: which earlier records describe it.
    let keys: Vec<String> = opts
        .trusted
        .iter()
        .filter(|k| k.name == cp.origin)
        .filter_map(|k| {
            k.key.key_id(&k.name).ok().map(|id| {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                format!("{}+{hex}", k.name)
            })
        })
        .collect();
    let mut state_file = StateFile::read(&opts.state)?;
    if let Some(p) = state_file
        .matching(&cp.origin, &keys)
        .find(|p| cp.size < p.size)
    {
        bail!(
            "log rewound: a checkpoint of size {} was verified before (state {}), now the log signs size {}",
            p.size,
            opts.state.display(),
            cp.size
        );
    }
    let previous: Vec<(u64, String)> = state_file
        .matching(&cp.origin, &keys)
        .map(|p| (p.size, p.root.clone()))
        .collect();

    // Every checkpoint the log signed must describe the same history: the
    // newest one agreeing with the entries proves nothing about the older
    // ones, which a rewrite signed with the log's key would contradict.
    let mut older = std::collections::BTreeMap::new();
    for note in log.signed_checkpoints()? {
        let signed = checkpoint::open(&note, &trusted).map_err(|e| {
            anyhow!(
                "a stored checkpoint is refused: {e} (pass --trust for every key this log has used)"
            )
        })?;
        expect_origin(&signed, Some(&cp.origin))?;
        if signed.size > cp.size {
            bail!(
                "a stored checkpoint of size {} is beyond the newest one ({})",
                signed.size,
                cp.size
            );
        }
        if signed.size == cp.size {
            // The newest: checked against the entries below, by name.
            if signed.root != cp.root {
                bail!(
                    "two stored checkpoints of size {} sign different roots",
                    cp.size
                );
            }
            continue;
        }
        if older
            .insert(signed.size, signed.root)
            .is_some_and(|r| r != signed.root)
        {
            bail!(
                "two stored checkpoints of size {} sign different roots",
                signed.size
            );
        }
    }
    if older.get(&0).is_some_and(|r| *r != Sha256::empty()) {
        bail!("the stored checkpoint of size 0 does not sign the empty tree");
    }

    let started = Instant::now();
    let mut frontier = Frontier::new();
    let mut nodes = std::collections::HashMap::new();
    let keep_nodes = matches!(opts.source, Source::Db(_)) && opts.entry.is_some();
    let mut start = 0u64;
    while start < cp.size {
        let end = (start + PAGE).min(cp.size);
        let page = log.entries(start, end)?;
        let mut expected = start;
        for e in page {
            if e.index != expected {
                bail!(
                    "entry {expected} is missing (next stored index is {})",
                    e.index
                );
            }
            let leaf = Sha256::leaf(&e.bytes);
            if leaf.as_slice() != e.leaf_hash.as_slice() {
                bail!(
                    "entry {} was altered: its bytes no longer match its leaf hash",
                    e.index
                );
            }
            if keep_nodes {
                for (id, h) in merkle::completed_by_append::<Sha256>(e.index, leaf, &nodes)
                    .map_err(|e| anyhow!("{e}"))?
                {
                    nodes.insert(id, h);
                }
            }
            frontier.push::<Sha256>(leaf);
            expected += 1;
            if let Some((size, root)) = previous.iter().find(|(size, _)| frontier.size() == *size)
                && b64(&frontier.root::<Sha256>()) != *root
            {
                bail!(
                    "fork: the first {size} entries no longer hash to the root verified before ({root})"
                );
            }
            if let Some(root) = older.get(&frontier.size())
                && *root != frontier.root::<Sha256>()
            {
                bail!(
                    "the signed checkpoint of size {} contradicts the entries: they hash to {}, it signs {}",
                    frontier.size(),
                    b64(&frontier.root::<Sha256>()),
                    b64(root)
                );
            }
            if expected.is_multiple_of(PROGRESS_EVERY) {
                eprintln!("verified {expected} of {} entries", cp.size);
            }
        }
        if expected != end {
            bail!("entry {expected} is missing (the log ends early)");
        }
        start = end;
    }
    if frontier.root::<Sha256>() != cp.root {
        bail!(
            "root mismatch: the {} entries hash to {}, the checkpoint signs {}",
            cp.size,
            b64(&frontier.root::<Sha256>()),
            b64(&cp.root)
        );
    }
    for (size, root) in &previous {
        if *size == 0 || *size >= cp.size {
            continue;
        }
        let root1 = STANDARD.decode(root).unwrap_or_default();
        if let Some(proof) = log.consistency(*size, cp.size)? {
            merkle::verify_consistency::<Sha256>(*size, cp.size, &proof, &root1, &cp.root)
                .map_err(|e| anyhow!("the log's consistency proof from size {size} fails: {e}"))?;
        }
    }
    if let Some(index) = opts.entry {
        if index >= cp.size {
            bail!("entry {index} is beyond the checkpoint's size {}", cp.size);
        }
        let leaf = log
            .entries(index, index + 1)?
            .first()
            .map(|e| Sha256::leaf(&e.bytes))
            .ok_or_else(|| anyhow!("entry {index} is missing"))?;
        let proof: Vec<Vec<u8>> = match log.inclusion(index, cp.size)? {
            Some(p) => p,
            None => {
                let ranges =
                    merkle::inclusion_ranges(index, cp.size).map_err(|e| anyhow!("{e}"))?;
                merkle::proof_hashes::<Sha256>(&nodes, &ranges)
                    .map_err(|e| anyhow!("{e}"))?
                    .into_iter()
                    .map(|h| h.to_vec())
                    .collect()
            }
        };
        merkle::verify_inclusion::<Sha256>(index, cp.size, &leaf, &proof, &cp.root)
            .map_err(|e| anyhow!("inclusion proof of entry {index} fails: {e}"))?;
    }
    let epochs = if opts.epochs {
        Some(epochs(
            log.as_mut(),
            cp.size,
            &opts.coordinators,
            opts.quorum,
        )?)
    } else {
        None
    };
    // This log's records give way to the new one; other logs' stay.
    state_file.logs.retain(|p| !same_log(p, &cp.origin, &keys));
    state_file.logs.push(State {
        origin: cp.origin.clone(),
        size: cp.size,
        root: b64(&cp.root),
        keys,
    });
    let write = || -> Result<()> {
        if let Some(dir) = opts.state.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&opts.state, serde_json::to_vec_pretty(&state_file)?)?;
        Ok(())
    };
    write().map_err(|e| {
        anyhow::Error::new(Unavailable(format!(
            "writing {}: {e:#}",
            opts.state.display()
        )))
    })?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rate = (cp.size as f64 / secs) as u64;
    Ok(Report {
        origin: cp.origin.clone(),
        size: cp.size,
        root: b64(&cp.root),
        entries_per_second: rate,
        epochs,
        state: opts.state.clone(),
    })
}

/// An entry's type, principal and payload, if it is an envelope.
fn open_envelope(bytes: &[u8]) -> Option<(String, String, Vec<u8>)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some((
        v["type"].as_str()?.to_owned(),
        v["principal"].as_str().unwrap_or_default().to_owned(),
        STANDARD.decode(v["payload"].as_str()?).ok()?,
    ))
}

/// Recomputes every issuance epoch in the first `size` entries from the log
/// alone: each close must count exactly the completions between the previous
/// close's boundary and its own, its allocation (largest remainder over the
/// priced work) must hash to the digest it logged, the credit entries that
/// follow must be that allocation row for row, and (with coordinator keys)
/// the close must carry a quorum of their signatures.
fn epochs(
    log: &mut dyn Log,
    size: u64,
    coordinators: &[p256::ecdsa::VerifyingKey],
    quorum: usize,
) -> Result<String> {
    use edgecoder_proto::economy::{self, Completion, EpochEntry};
    use std::collections::BTreeMap;
    let mut completions: Vec<(u64, Completion)> = Vec::new();
    let mut closes: Vec<(u64, EpochEntry, Vec<u8>)> = Vec::new();
    let mut credits: BTreeMap<u64, Vec<(u64, String, u64, u64)>> = BTreeMap::new();
    let mut grants = 0usize;
    let mut start = 0;
    while start < size {
        let end = (start + PAGE).min(size);
        for e in log.entries(start, end)? {
            let Some((t, principal, payload)) = open_envelope(&e.bytes) else {
                continue;
            };
            // Only the mesh's own records count; the append route refuses
            // these types to anyone else.
            if principal != "service:mesh" {
                continue;
            }
            if t == economy::CREDIT_TRANSFER_V1 {
                // Every transfer balances, and `issuance` pays out only
                // once outside epochs: the bootstrap grant.
                let v: serde_json::Value = serde_json::from_slice(&payload)
                    .map_err(|err| anyhow!("entry {}: a malformed transfer: {err}", e.index))?;
                let postings = v["postings"].as_array().cloned().unwrap_or_default();
                let sum: i128 = postings
                    .iter()
                    .map(|p| i128::from(p["amount"].as_i64().unwrap_or(0)))
                    .sum();
                if sum != 0 || postings.len() < 2 {
                    bail!(
                        "entry {}: a credit transfer whose postings do not balance",
                        e.index
                    );
                }
                if postings
                    .iter()
                    .any(|p| p["account"] == "issuance" && p["amount"].as_i64().unwrap_or(0) < 0)
                {
                    if v["memo"] != "bootstrap grant" || grants > 0 {
                        bail!(
                            "entry {}: credits issued outside an epoch (only one bootstrap grant may be)",
                            e.index
                        );
                    }
                    grants += 1;
                }
            } else if t == economy::TASK_COMPLETION_V1 {
                let c: Completion = serde_json::from_slice(&payload)
                    .map_err(|err| anyhow!("entry {}: a malformed completion: {err}", e.index))?;
                completions.push((e.index, c));
            } else if t == economy::ISSUANCE_EPOCH_V1 {
                let entry: EpochEntry = serde_json::from_slice(&payload)
                    .map_err(|err| anyhow!("entry {}: a malformed epoch entry: {err}", e.index))?;
                match entry {
                    EpochEntry::Credit {
                        epoch,
                        account,
                        work,
                        amount,
                        ..
                    } => credits
                        .entry(epoch)
                        .or_default()
                        .push((e.index, account, work, amount)),
                    close @ EpochEntry::Close { .. } => closes.push((e.index, close, payload)),
                }
            }
        }
        start = end;
    }
    let mut boundary = 0u64;
    let mut last_epoch: Option<u64> = None;
    let mut issued = 0u64;
    let mut signed = 0usize;
    for (index, close, payload) in &closes {
        let EpochEntry::Close {
            epoch,
            from_index,
            through_index,
            pool,
            accounts,
            total_work,
            allocation_digest,
            ..
        } = close
        else {
            continue;
        };
        if last_epoch.is_some_and(|l| *epoch <= l) {
            bail!("epoch {epoch} (entry {index}) is closed twice or out of order");
        }
        if *from_index < boundary {
            bail!(
                "epoch {epoch} counts from entry {from_index}, but the previous close ended at {boundary}: epochs overlap"
            );
        }
        // Epochs without work are not logged: what lies between two logged
        // closes must hold no work that would have counted.
        if let Some((account, _)) = economy::epoch_work(&completions, boundary, *from_index)
            .into_iter()
            .next()
        {
            bail!(
                "epoch {epoch} counts from entry {from_index}, leaving work of {account} in [{boundary}, {from_index}) in no epoch"
            );
        }
        if through_index < from_index || through_index > index {
            bail!(
                "epoch {epoch}: its range [{from_index}, {through_index}) does not end before its close (entry {index})"
            );
        }
        let work = economy::epoch_work(&completions, *from_index, *through_index);
        let rows = economy::allocate(*pool, &work);
        let digest = economy::allocation_digest(*epoch, *pool, &rows);
        if digest != *allocation_digest {
            bail!(
                "epoch {epoch}: the logged allocation digest {allocation_digest} is not the one the log's completions give ({digest})"
            );
        }
        let total: u64 = rows.iter().map(|r| r.work).sum();
        if *total_work != total || *accounts != u64::try_from(rows.len()).unwrap_or(u64::MAX) {
            bail!("epoch {epoch}: the close's totals do not match its allocation");
        }
        let mut logged: Vec<(String, u64, u64)> = credits
            .remove(epoch)
            .unwrap_or_default()
            .into_iter()
            .map(|(i, a, w, n)| {
                if i < *index {
                    // Credits follow their close.
                    (format!("{a} (before its close)"), w, n)
                } else {
                    (a, w, n)
                }
            })
            .collect();
        logged.sort();
        let expected: Vec<(String, u64, u64)> = rows
            .iter()
            .map(|r| (r.account.clone(), r.work, r.amount))
            .collect();
        if logged != expected {
            let wrong = expected
                .iter()
                .zip(logged.iter())
                .find(|(a, b)| a != b)
                .map_or_else(
                    || {
                        format!(
                            "{} credit entries for {} allocation rows",
                            logged.len(),
                            expected.len()
                        )
                    },
                    |(a, b)| {
                        format!(
                            "{} gets {} by the log's completions, {} is credited {}",
                            a.0, a.2, b.0, b.2
                        )
                    },
                );
            bail!(
                "epoch {epoch}: the credited allocation differs from the recomputed one: {wrong}"
            );
        }
        if quorum > 0 {
            let message = edgecoder_proto::dsse::pae(economy::ISSUANCE_EPOCH_V1, payload);
            let sigs = log.close_signatures(*epoch)?;
            let mut by = std::collections::BTreeSet::new();
            for (keyid, sig) in &sigs {
                let Some(key) = coordinators
                    .iter()
                    .find(|k| edgecoder_proto::keys::key_id(k) == *keyid)
                else {
                    continue;
                };
                let ok = STANDARD
                    .decode(sig)
                    .ok()
                    .and_then(|der| p256::ecdsa::DerSignature::from_bytes(&der).ok())
                    .is_some_and(|sig| {
                        use p256::ecdsa::signature::Verifier as _;
                        key.verify(&message, &sig).is_ok()
                    });
                if !ok {
                    bail!(
                        "epoch {epoch}: a signature by coordinator key {keyid} does not verify over the logged close"
                    );
                }
                by.insert(keyid.clone());
            }
            if by.len() < quorum {
                bail!(
                    "epoch {epoch}: the close carries {} of the {quorum} coordinator signatures required: its credits are not final",
                    by.len()
                );
            }
            signed += 1;
        }
        issued += rows.iter().map(|r| r.amount).sum::<u64>();
        boundary = *through_index;
        last_epoch = Some(*epoch);
    }
    if let Some((epoch, _)) = credits.iter().next() {
        bail!("credit entries for epoch {epoch}, which no close in the log names");
    }
    Ok(format!(
        "{} epochs recomputed from {} completions ({issued} credits issued{})",
        closes.len(),
        completions.len(),
        if quorum > 0 {
            format!(", {signed} with a quorum of {quorum}")
        } else {
            String::new()
        }
    ))
}

/// Verifies a transfer receipt offline: a c2sp.org/tlog-proof whose
/// `extra` is the log entry. The checkpoint must be signed by a trusted key,
/// the entry's RFC 6962 leaf hash must be included at the proof's index, and
/// the (now authenticated) entry must be a credit transfer or an issuance
/// credit written by the mesh itself; what it moves is printed.
pub fn verify_receipt(path: &Path, trusted: &[TrustedKey], origin: Option<&str>) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Unavailable(format!("reading {}: {e}", path.display())))?;
    let proof = TlogProof::parse(&text).map_err(|e| anyhow!("not a tlog-proof: {e}"))?;
    let (cp, entry) = proof.verify_extra(trusted).map_err(|e| match e {
        edgecoder_tlog::Error::Untrusted | edgecoder_tlog::Error::BadSignature(_) => {
            anyhow!("checkpoint refused: {e}")
        }
        _ => anyhow!("the entry is not in the signed log: {e}"),
    })?;
    expect_origin(&cp, origin)?;
    let envelope: serde_json::Value =
        serde_json::from_slice(entry).context("entry is not an envelope")?;
    let payload: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(envelope["payload"].as_str().unwrap_or(""))
            .unwrap_or_default(),
    )
    .context("payload is not JSON")?;
    let transfer = payload["transfer"].as_str().unwrap_or("");
    // Only the ledger writes transfer entries, as `service`, keyed by the
    // transfer id; the HTTP append route refuses the type.
    let expected_key = format!("edgecoder.dev/credit-transfer/v1 {transfer}");
    if envelope["type"] == edgecoder_proto::economy::ISSUANCE_EPOCH_V1
        && envelope["principal"] == "service:mesh"
        && payload["kind"] == "credit"
    {
        return Ok(format!(
            "ok: issuance credit {} of epoch {} to {} ({} credits) is entry {} of {} (size {})",
            payload["transfer"],
            payload["epoch"],
            payload["account"],
            payload["amount"],
            proof.index,
            cp.origin,
            cp.size
        ));
    }
    if transfer.is_empty()
        || envelope["type"] != "edgecoder.dev/credit-transfer/v1"
        || envelope["principal"] != "service:mesh"
        || envelope["key"] != expected_key.as_str()
    {
        bail!("the entry at {} is not a credit transfer", proof.index);
    }
    Ok(format!(
        "ok: transfer {transfer} is entry {} of {} (size {}), postings {}",
        proof.index, cp.origin, cp.size, payload["postings"]
    ))
}
