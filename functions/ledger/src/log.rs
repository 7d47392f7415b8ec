//! The log on SQL: entries, stored subtree hashes, gap-free appends and proofs.
//!
//! In scope: the entry envelope (the exact bytes hashed and stored), appends
//! as one compare-and-set batch on `ledger_state` (retried on conflict, so
//! concurrent writers never leave gaps or duplicate indexes), idempotency
//! keys, reading entries, and inclusion and consistency proofs from stored
//! complete subtrees (O(log n) rows). Out of scope: HTTP (the `api` module)
//! and signing (the `checkpoint` module).
//!
//! ```text
//! envelope (JSON, serialised once, never again):
//!   {"v":1,"type":"edgecoder.dev/role-grant/v1","principal":"service","key":"…","time":…,"payload":"<base64>"}
//! leaf hash = SHA-256(0x00 ‖ envelope)          RFC 6962 §2.1, c2sp.org/merkle-tree
//! ```
//!
//! `ledger_state.tree_hash` names the tree hash a log was built with; a log
//! built before the switch to RFC 6962 SHA-256 (`blake3`) is refused with
//! [`Error::UnsupportedLog`] rather than extended or signed.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::{Clock, Rng, Sql, Statement, Value};
use serde::Serialize;

use edgecoder_tlog::merkle::{self, Hash, Hasher, NodeId, Sha256};

use crate::Error;

/// The tree hash this code builds, signs and proves.
pub const TREE_HASH: &str = "rfc6962-sha256";

/// Largest envelope (payload and metadata together).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Most entries in one append call.
pub const MAX_BATCH: usize = 100;
/// Compare-and-set attempts before giving up (503).
const MAX_ATTEMPTS: usize = 32;
/// Nodes per lookup query (two parameters each; D1 allows 100).
const NODES_PER_QUERY: usize = 40;

/// What a caller appends.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// e.g. `edgecoder.dev/role-grant/v1`.
    pub payload_type: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Who submits it (`service`, `user:<id>`).
    pub principal: String,
    /// Client-chosen; a repeat returns the first entry's index.
    pub idempotency_key: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u8,
    #[serde(rename = "type")]
    payload_type: &'a str,
    principal: &'a str,
    key: &'a str,
    time: i64,
    payload: String,
}

/// Whether `t` looks like `domain/name/vN`.
pub fn valid_payload_type(t: &str) -> bool {
    let parts: Vec<&str> = t.split('/').collect();
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    // The domain: dot-separated, non-empty labels (no `edgecoder.dev.`
    // standing in for `edgecoder.dev`).
    let domain_ok = parts
        .first()
        .is_some_and(|d| d.split('.').all(|l| !l.is_empty()));
    parts.len() == 3
        && domain_ok
        && label(parts[0])
        && label(parts[1])
        && parts[2].strip_prefix('v').is_some_and(|n| {
            // v1, v12; never v01 or v0 (one spelling per version).
            !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The envelope bytes for `e` at `time_ms`.
pub fn envelope(e: &NewEntry, time_ms: i64) -> Result<Vec<u8>, Error> {
    if !valid_payload_type(&e.payload_type) {
        return Err(Error::InvalidEntry(
            "payload_type must look like domain/name/v1",
        ));
    }
    if e.idempotency_key.is_empty() || e.idempotency_key.len() > 200 {
        return Err(Error::InvalidEntry(
            "idempotency_key must be 1 to 200 bytes",
        ));
    }
    let bytes = serde_json::to_vec(&Envelope {
        v: 1,
        payload_type: &e.payload_type,
        principal: &e.principal,
        key: &e.idempotency_key,
        time: time_ms,
        payload: STANDARD.encode(&e.payload),
    })
    .map_err(|e| Error::Kernel(edgecoder_kernel::Error::storage(e)))?;
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(Error::EntryTooLarge);
    }
    Ok(bytes)
}

fn blob(rows: &edgecoder_kernel::Rows, i: usize, col: &str) -> Option<Hash> {
    rows.get_blob(i, col).and_then(|b| b.try_into().ok())
}

fn as_i64(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The current size and root; refuses a log built with another tree hash.
pub async fn head(sql: &dyn Sql) -> Result<(u64, Hash), Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT size, root, tree_hash FROM ledger_state WHERE id = 1",
            vec![],
        ))
        .await?;
    match rows.get_str(0, "tree_hash") {
        Some(TREE_HASH) => {}
        Some(other) => return Err(Error::UnsupportedLog(other.to_owned())),
        None => return Err(Error::Corrupt("ledger_state tree_hash")),
    }
    let size = rows
        .get_i64(0, "size")
        .and_then(|s| u64::try_from(s).ok())
        .ok_or(Error::Corrupt("ledger_state"))?;
    let root = blob(&rows, 0, "root").ok_or(Error::Corrupt("ledger_state root"))?;
    Ok((size, root))
}

/// Fetches stored nodes.
pub async fn nodes(sql: &dyn Sql, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(NODES_PER_QUERY) {
        let mut params = Vec::with_capacity(chunk.len() * 2);
        let mut tuples = Vec::with_capacity(chunk.len());
        for (i, id) in chunk.iter().enumerate() {
            tuples.push(format!("(?{}, ?{})", 2 * i + 1, 2 * i + 2));
            params.push(Value::Integer(i64::from(id.level)));
            params.push(as_i64(id.index));
        }
        let rows = sql
            .execute(Statement::new(
                format!(
                    "SELECT level, idx, hash FROM ledger_nodes WHERE (level, idx) IN (VALUES {})",
                    tuples.join(", ")
                ),
                params,
            ))
            .await?;
        for i in 0..rows.rows.len() {
            let (Some(level), Some(index), Some(hash)) = (
                rows.get_i64(i, "level").and_then(|l| u32::try_from(l).ok()),
                rows.get_i64(i, "idx").and_then(|x| u64::try_from(x).ok()),
                blob(&rows, i, "hash"),
            ) else {
                return Err(Error::Corrupt("ledger_nodes"));
            };
            out.insert(NodeId { level, index }, hash);
        }
    }
    Ok(out)
}

/// The outcome of appending one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The entry's index.
    pub index: u64,
    /// Whether the idempotency key was already used (nothing appended).
    pub duplicate: bool,
}

/// What an idempotency key was first used for: the entry's index, type and
/// payload (base64, as the envelope holds it).
struct Used {
    index: u64,
    payload_type: String,
    payload: String,
}

impl Used {
    /// Whether `e` asks for exactly what the key was first used for; the
    /// IETF Idempotency-Key draft requires refusing a key reused with another
    /// payload rather than answering with the first result.
    fn same_as(&self, e: &NewEntry) -> bool {
        self.payload_type == e.payload_type && self.payload == STANDARD.encode(&e.payload)
    }
}

#[derive(serde::Deserialize)]
struct StoredEnvelope {
    #[serde(rename = "type")]
    payload_type: String,
    payload: String,
}

async fn existing_keys(sql: &dyn Sql, keys: &[String]) -> Result<HashMap<String, Used>, Error> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(90) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
        let rows = sql
            .execute(Statement::new(
                format!(
                    "SELECT idx, idempotency_key, entry FROM ledger_entries WHERE idempotency_key IN ({})",
                    marks.join(", ")
                ),
                chunk.iter().map(|k| Value::from(k.as_str())).collect(),
            ))
            .await?;
        for i in 0..rows.rows.len() {
            if let (Some(k), Some(index), Some(entry)) = (
                rows.get_str(i, "idempotency_key"),
                rows.get_i64(i, "idx").and_then(|x| u64::try_from(x).ok()),
                rows.get_blob(i, "entry"),
            ) {
                let env: StoredEnvelope = serde_json::from_slice(entry)
                    .map_err(|_| Error::Corrupt("ledger_entries envelope"))?;
                out.insert(
                    k.to_owned(),
                    Used {
                        index,
                        payload_type: env.payload_type,
                        payload: env.payload,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Appends `entries` (at most [`MAX_BATCH`]) atomically and gap-free; entries
/// whose idempotency key exists return the earlier index instead, when they
/// carry the same type and payload ([`Error::IdempotencyKeyReused`] when not).
pub async fn append(
    sql: &dyn Sql,
    clock: &dyn Clock,
    rng: &dyn Rng,
    entries: &[NewEntry],
) -> Result<Vec<Appended>, Error> {
    if entries.len() > MAX_BATCH {
        return Err(Error::InvalidEntry("too many entries in one append"));
    }
    let keys: Vec<String> = entries
        .iter()
        .map(|e| format!("{} {}", e.principal, e.idempotency_key))
        .collect();
    for _ in 0..MAX_ATTEMPTS {
        let now = clock.now_ms();
        // Head first: a key committed after this read also moves the size,
        // so the compare-and-set below fails and the retry sees the key.
        let (size, _) = head(sql).await?;
        let known = existing_keys(sql, &keys).await?;
        let mut frontier = nodes(sql, &merkle::range_nodes(0, size)).await?;
        let mut out = Vec::with_capacity(entries.len());
        let mut stmts = Vec::new();
        let writer = edgecoder_kernel::ports::random_hex(rng, 16);
        let mut next = size;
        let mut batch_keys: HashMap<&str, (u64, &NewEntry)> = HashMap::new();
        let mut inserts = Vec::new();
        for (e, key) in entries.iter().zip(&keys) {
            let earlier = match (known.get(key), batch_keys.get(key.as_str())) {
                (Some(used), _) => Some((used.index, used.same_as(e))),
                (None, Some((index, first))) => Some((
                    *index,
                    first.payload_type == e.payload_type && first.payload == e.payload,
                )),
                (None, None) => None,
            };
            if let Some((index, same)) = earlier {
                if !same {
                    return Err(Error::IdempotencyKeyReused);
                }
                out.push(Appended {
                    index,
                    duplicate: true,
                });
                continue;
            }
            let bytes = envelope(e, now)?;
            let leaf = Sha256::leaf(&bytes);
            let done = merkle::completed_by_append::<Sha256>(next, leaf, &frontier)
                .map_err(|_| Error::Corrupt("ledger_nodes frontier"))?;
            for (id, h) in &done {
                frontier.insert(*id, *h);
                inserts.push((*id, *h));
            }
            stmts.push(Statement::new(
                "INSERT INTO ledger_entries (idx, entry, leaf_hash, payload_type, principal, idempotency_key, created_at) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE (SELECT writer FROM ledger_state WHERE id = 1) = ?8",
                vec![
                    as_i64(next),
                    bytes.into(),
                    leaf.to_vec().into(),
                    e.payload_type.as_str().into(),
                    e.principal.as_str().into(),
                    key.as_str().into(),
                    Value::Integer(now),
                    writer.as_str().into(),
                ],
            ));
            batch_keys.insert(key.as_str(), (next, e));
            out.push(Appended {
                index: next,
                duplicate: false,
            });
            next += 1;
        }
        if next == size {
            return Ok(out);
        }
        let root = merkle::range_hash::<Sha256>(&frontier, 0, next)
            .map_err(|_| Error::Corrupt("ledger_nodes root"))?;
        for (id, h) in inserts {
            stmts.push(Statement::new(
                "INSERT INTO ledger_nodes (level, idx, hash) \
                 SELECT ?1, ?2, ?3 WHERE (SELECT writer FROM ledger_state WHERE id = 1) = ?4",
                vec![
                    Value::Integer(i64::from(id.level)),
                    as_i64(id.index),
                    h.to_vec().into(),
                    writer.as_str().into(),
                ],
            ));
        }
        // The compare-and-set comes first: everything after it keys on the
        // writer token it sets, so a lost race writes nothing.
        stmts.insert(
            0,
            Statement::new(
                "UPDATE ledger_state SET size = ?2, root = ?3, writer = ?4, updated_at = ?5 \
                 WHERE id = 1 AND size = ?1",
                vec![
                    as_i64(size),
                    as_i64(next),
                    root.to_vec().into(),
                    writer.as_str().into(),
                    Value::Integer(now),
                ],
            ),
        );
        let results = sql.batch(stmts).await?;
        if results.first().map(|r| r.changes) == Some(1) {
            return Ok(out);
        }
    }
    Err(Error::Busy)
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Index.
    pub index: u64,
    /// The exact envelope bytes.
    pub entry: Vec<u8>,
    /// Stored leaf hash.
    pub leaf_hash: Hash,
}

/// Entries `[start, end)` in order (the caller bounds the range).
pub async fn entries(sql: &dyn Sql, start: u64, end: u64) -> Result<Vec<StoredEntry>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT idx, entry, leaf_hash FROM ledger_entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            vec![as_i64(start), as_i64(end)],
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.rows.len());
    for i in 0..rows.rows.len() {
        out.push(StoredEntry {
            index: rows
                .get_i64(i, "idx")
                .and_then(|x| u64::try_from(x).ok())
                .ok_or(Error::Corrupt("ledger_entries"))?,
            entry: rows
                .get_blob(i, "entry")
                .ok_or(Error::Corrupt("ledger_entries"))?
                .to_vec(),
            leaf_hash: blob(&rows, i, "leaf_hash").ok_or(Error::Corrupt("ledger_entries"))?,
        });
    }
    Ok(out)
}

/// The inclusion proof of `index` in the tree of `size` leaves.
pub async fn inclusion_proof(sql: &dyn Sql, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
    let ranges = merkle::inclusion_ranges(index, size)
        .map_err(|_| Error::InvalidRange("index must be below tree_size"))?;
    let stored = nodes(sql, &merkle::needed_nodes(&ranges)).await?;
    merkle::proof_hashes::<Sha256>(&stored, &ranges).map_err(|_| Error::Corrupt("ledger_nodes"))
}

/// The consistency proof between sizes `first` and `second`.
pub async fn consistency_proof(sql: &dyn Sql, first: u64, second: u64) -> Result<Vec<Hash>, Error> {
    let ranges = merkle::consistency_ranges(first, second)
        .map_err(|_| Error::InvalidRange("need 0 < first <= second"))?;
    let stored = nodes(sql, &merkle::needed_nodes(&ranges)).await?;
    merkle::proof_hashes::<Sha256>(&stored, &ranges).map_err(|_| Error::Corrupt("ledger_nodes"))
}

/// The root of the tree of `size` leaves (any size up to the current one).
pub async fn root_at(sql: &dyn Sql, size: u64) -> Result<Hash, Error> {
    let stored = nodes(sql, &merkle::range_nodes(0, size)).await?;
    merkle::range_hash::<Sha256>(&stored, 0, size).map_err(|_| Error::Corrupt("ledger_nodes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_seeds_the_empty_tree_head() {
        let sql = include_str!("../../../migrations/0008_ledger_rfc6962.sql");
        let hex: String = Sha256::empty().iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            sql.contains(&hex) && sql.contains(TREE_HASH),
            "an empty ledger_state must switch to SHA-256() = {hex}"
        );
    }

    #[test]
    fn payload_types_are_domain_name_version() {
        for ok in ["edgecoder.dev/role-grant/v1", "edgecoder.dev/audit/v12"] {
            assert!(valid_payload_type(ok), "{ok}");
        }
        for bad in [
            "role-grant",
            "a/b/1",
            "A.dev/x/v1",
            "a/b/v",
            "a/b/c/v1",
            "",
            "a/b/v01",
            "a/b/v0",
            "edgecoder.dev./x/v1",
            ".edgecoder.dev/x/v1",
            "a..b/x/v1",
        ] {
            assert!(!valid_payload_type(bad), "{bad}");
        }
    }

    #[test]
    fn envelopes_are_capped() {
        let e = NewEntry {
            payload_type: "edgecoder.dev/audit/v1".into(),
            payload: vec![0; MAX_ENTRY_BYTES],
            principal: "service".into(),
            idempotency_key: "k".into(),
        };
        assert!(matches!(envelope(&e, 0), Err(Error::EntryTooLarge)));
    }
}
