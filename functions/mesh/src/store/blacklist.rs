//! The blacklist's tables: `mesh_blacklist` (every add and lift, in order;
//! its highest seq is the blacklist version) and `mesh_bans` (the bans in
//! force, one row per subject, for one indexed lookup per request).

use edgecoder_kernel::{Sql, Statement, Value};
use serde::Serialize;
use serde_json::Value as Json;

use crate::Error;

/// What a ban names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A node key (its key id).
    NodeKey,
    /// A node id.
    NodeId,
    /// An owner account (a user id): every node it enrolled, and any it
    /// would register.
    Owner,
    /// A peer coordinator (its origin): no peering, no requests, no gossip.
    Peer,
}

impl SubjectKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::NodeKey => "node_key",
            SubjectKind::NodeId => "node_id",
            SubjectKind::Owner => "owner",
            SubjectKind::Peer => "peer",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<SubjectKind> {
        [
            SubjectKind::NodeKey,
            SubjectKind::NodeId,
            SubjectKind::Owner,
            SubjectKind::Peer,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An add or a lift.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// `add` or `lift`.
    pub action: &'a str,
    /// What it names.
    pub kind: SubjectKind,
    /// The key id, node id or user id.
    pub subject: &'a str,
    /// A stable code.
    pub reason_code: &'a str,
    /// Free text.
    pub reason: &'a str,
    /// `sha-256:`/`blake3:` digest of the evidence, if any.
    pub evidence_digest: Option<&'a str>,
    /// Who.
    pub actor: &'a str,
    /// `local`, or the peer coordinator whose entry this applies.
    pub origin: &'a str,
    /// For a peer's entry: its index in the peer's log.
    pub source_index: Option<u64>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// The entry (returning its seq) and the change to the bans in force.
pub fn record(c: &Change<'_>) -> [Statement; 2] {
    let entry = Statement::new(
        "INSERT INTO mesh_blacklist (action, subject_kind, subject, reason_code, reason, evidence_digest, actor, origin, created_at, source_index) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?8, ?10) RETURNING seq",
        vec![
            c.action.into(),
            c.kind.as_str().into(),
            c.subject.into(),
            c.reason_code.into(),
            c.reason.into(),
            c.evidence_digest.map_or(Value::Null, Value::from),
            c.actor.into(),
            Value::Integer(c.now),
            c.origin.into(),
            c.source_index.map_or(Value::Null, |i| {
                Value::Integer(i64::try_from(i).unwrap_or(i64::MAX))
            }),
        ],
    );
    let bans = if c.action == "add" {
        Statement::new(
            "INSERT INTO mesh_bans (subject_kind, subject, seq) \
             VALUES (?1, ?2, (SELECT MAX(seq) FROM mesh_blacklist)) \
             ON CONFLICT (subject_kind, subject) DO UPDATE SET seq = excluded.seq",
            vec![c.kind.as_str().into(), c.subject.into()],
        )
    } else {
        Statement::new(
            "DELETE FROM mesh_bans WHERE subject_kind = ?1 AND subject = ?2",
            vec![c.kind.as_str().into(), c.subject.into()],
        )
    };
    [entry, bans]
}

/// Takes back a change the ledger could not record: its entry goes, and the
/// subject's ban is as it was (`was_banned_by`: the seq of the ban in force
/// before, if any).
pub async fn undo(
    sql: &dyn Sql,
    seq: i64,
    kind: SubjectKind,
    subject: &str,
    was_banned_by: Option<i64>,
) -> Result<(), Error> {
    let restore = match was_banned_by {
        Some(before) => Statement::new(
            "INSERT INTO mesh_bans (subject_kind, subject, seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (subject_kind, subject) DO UPDATE SET seq = excluded.seq",
            vec![kind.as_str().into(), subject.into(), Value::Integer(before)],
        ),
        None => Statement::new(
            "DELETE FROM mesh_bans WHERE subject_kind = ?1 AND subject = ?2 AND seq = ?3",
            vec![kind.as_str().into(), subject.into(), Value::Integer(seq)],
        ),
    };
    sql.batch(vec![
        Statement::new(
            "DELETE FROM mesh_blacklist WHERE seq = ?1",
            vec![Value::Integer(seq)],
        ),
        restore,
    ])
    .await?;
    Ok(())
}

/// The seq of the ban in force on the subject, if any.
pub async fn ban(sql: &dyn Sql, kind: SubjectKind, subject: &str) -> Result<Option<i64>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT seq FROM mesh_bans WHERE subject_kind = ?1 AND subject = ?2",
            vec![kind.as_str().into(), subject.into()],
        ))
        .await?;
    Ok(rows.get_i64(0, "seq"))
}

/// Where the ban in force on the subject came from (`local` or a peer).
pub async fn ban_origin(
    sql: &dyn Sql,
    kind: SubjectKind,
    subject: &str,
) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT e.origin AS origin FROM mesh_bans b JOIN mesh_blacklist e ON e.seq = b.seq \
             WHERE b.subject_kind = ?1 AND b.subject = ?2",
            vec![kind.as_str().into(), subject.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "origin").map(str::to_owned))
}

/// Whether any of the subjects is banned.
pub async fn any_banned(sql: &dyn Sql, subjects: &[(SubjectKind, &str)]) -> Result<bool, Error> {
    for (kind, subject) in subjects {
        if ban(sql, *kind, subject).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Records the ledger index of entry `seq`.
pub async fn set_ledger_index(sql: &dyn Sql, seq: i64, index: u64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_blacklist SET ledger_index = ?2 WHERE seq = ?1",
        vec![
            Value::Integer(seq),
            Value::Integer(i64::try_from(index).unwrap_or_default()),
        ],
    ))
    .await?;
    Ok(())
}

/// Returns the tasks leased to nodes the ban covers to the queue (their
/// results will be refused) and says which.
pub async fn release_leases(
    sql: &dyn Sql,
    kind: SubjectKind,
    subject: &str,
    now: i64,
) -> Result<Vec<String>, Error> {
    let column = match kind {
        SubjectKind::NodeKey => "key_id",
        SubjectKind::NodeId => "node_id",
        SubjectKind::Owner => "owner_id",
        SubjectKind::Peer => return Ok(Vec::new()),
    };
    let rows = sql
        .execute(Statement::new(
            format!(
                "UPDATE mesh_tasks SET status = 'queued', lease_id = NULL, lease_node = NULL, \
                   lease_expires_at = NULL, updated_at = ?2 \
                 WHERE status = 'leased' \
                   AND lease_node IN (SELECT node_id FROM mesh_nodes WHERE {column} = ?1) \
                 RETURNING id"
            ),
            vec![subject.into(), Value::Integer(now)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "id").map(str::to_owned))
        .collect())
}

/// Entries after `since`, oldest first, at most `limit`; with `own_only`,
/// only this coordinator's own (what peers pull), and only once logged.
pub async fn entries(
    sql: &dyn Sql,
    since: i64,
    limit: i64,
    own_only: bool,
) -> Result<Vec<Json>, Error> {
    let own = if own_only {
        " AND origin = 'local' AND ledger_index IS NOT NULL"
    } else {
        ""
    };
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT seq, action, subject_kind, subject, reason_code, reason, evidence_digest, actor, origin, \
                   ledger_index, created_at FROM mesh_blacklist WHERE seq > ?1{own} ORDER BY seq LIMIT ?2"
            ),
            vec![Value::Integer(since), Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            serde_json::json!({
                "seq": rows.get_i64(i, "seq"),
                "action": rows.get_str(i, "action"),
                "subject_kind": rows.get_str(i, "subject_kind"),
                "subject": rows.get_str(i, "subject"),
                "reason_code": rows.get_str(i, "reason_code"),
                "reason": rows.get_str(i, "reason"),
                "evidence_digest": rows.get_str(i, "evidence_digest"),
                "actor": rows.get_str(i, "actor"),
                "origin": rows.get_str(i, "origin"),
                "ledger_index": rows.get_i64(i, "ledger_index"),
                "created_at": crate::rfc3339(rows.get_i64(i, "created_at").unwrap_or_default()),
            })
        })
        .collect())
}

/// Whether the peer entry (`origin`, `source_index`) was applied already.
pub async fn applied_from(sql: &dyn Sql, origin: &str, source_index: u64) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT seq FROM mesh_blacklist WHERE origin = ?1 AND source_index = ?2",
            vec![
                origin.into(),
                Value::Integer(i64::try_from(source_index).unwrap_or(i64::MAX)),
            ],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}
