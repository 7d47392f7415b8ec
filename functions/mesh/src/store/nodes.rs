//! Nodes in `mesh_nodes` (with whether a ban covers them), retired keys in
//! `mesh_retired_keys`, and the blacklist version.

use edgecoder_kernel::{Rows, Sql, Statement, Value};
use edgecoder_proto::mesh::{Capabilities, NodeKind, NodeStatus, Sandbox, Telemetry};
use serde::Serialize;
use serde_json::Value as Json;

use crate::{Error, rfc3339};

/// A registered node, as the mesh authorises it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node id.
    pub node_id: String,
    /// Its role.
    pub kind: NodeKind,
    /// The enrolling user.
    pub owner_id: String,
    /// Where it stands.
    pub status: NodeStatus,
    /// Current key id.
    pub key_id: String,
    /// Declared capabilities.
    pub capabilities: Capabilities,
    /// Last heartbeat telemetry.
    pub telemetry: Option<Telemetry>,
    /// Whether a ban is in force on its key, its id or its owner.
    pub banned: bool,
}

impl Node {
    /// The audit actor.
    pub fn actor(&self) -> String {
        format!("node:{}", self.node_id)
    }
}

fn corrupt(what: &str) -> Error {
    edgecoder_kernel::Error::Storage(format!("mesh_nodes.{what}")).into()
}

/// The node's columns, and whether a ban covers it (one indexed lookup per
/// subject in `mesh_bans`).
const NODE_COLUMNS: &str = "node_id, kind, owner_id, status, key_id, public_key, capabilities, telemetry, \
     EXISTS (SELECT 1 FROM mesh_bans b WHERE (b.subject_kind = 'node_key' AND b.subject = mesh_nodes.key_id) \
       OR (b.subject_kind = 'node_id' AND b.subject = mesh_nodes.node_id) \
       OR (b.subject_kind = 'owner' AND b.subject = mesh_nodes.owner_id)) AS banned";

fn node_from(rows: &Rows, i: usize) -> Result<Node, Error> {
    let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
    Ok(Node {
        node_id: text("node_id"),
        kind: NodeKind::parse(&text("kind")).ok_or_else(|| corrupt("kind"))?,
        owner_id: text("owner_id"),
        status: NodeStatus::parse(&text("status")),
        key_id: text("key_id"),
        // A node whose stored capabilities no longer read gets no sandbox,
        // so no work, rather than a failed request.
        capabilities: serde_json::from_str(&text("capabilities")).unwrap_or(Capabilities {
            sandbox: Sandbox::None,
            cpu_cores: 1,
            memory_mb: 0,
            gpu: None,
            models: Vec::new(),
        }),
        telemetry: rows
            .get_str(i, "telemetry")
            .and_then(|t| serde_json::from_str(t).ok()),
        banned: rows.get_i64(i, "banned").unwrap_or(0) != 0,
    })
}

/// A node by id.
pub async fn by_id(sql: &dyn Sql, node_id: &str) -> Result<Option<Node>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {NODE_COLUMNS} FROM mesh_nodes WHERE node_id = ?1"),
            vec![node_id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    node_from(&rows, 0).map(Some)
}

/// The node whose current key has this id, with the key's SEC1 point.
pub async fn by_key(sql: &dyn Sql, key_id: &str) -> Result<Option<(Node, Vec<u8>)>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {NODE_COLUMNS} FROM mesh_nodes WHERE key_id = ?1"),
            vec![key_id.into()],
        ))
        .await?;
    let Some(point) = rows.get_blob(0, "public_key").map(<[u8]>::to_vec) else {
        return Ok(None);
    };
    Ok(Some((node_from(&rows, 0)?, point)))
}

/// Whether a key is, or ever was, some node's: keys are never reused.
pub async fn key_taken(sql: &dyn Sql, key_id: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS taken FROM mesh_nodes WHERE key_id = ?1 \
             UNION ALL SELECT 1 FROM mesh_retired_keys WHERE key_id = ?1",
            vec![key_id.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// A registration to store.
pub struct NewNode<'a> {
    /// Node id.
    pub node_id: &'a str,
    /// Its role.
    pub kind: NodeKind,
    /// The user whose enrollment token it redeemed.
    pub owner_id: &'a str,
    /// Its key's id.
    pub key_id: &'a str,
    /// Its key, SEC1 uncompressed.
    pub public_key: &'a [u8],
    /// Declared OS.
    pub os: &'a str,
    /// Declared agent version.
    pub version: &'a str,
    /// Declared capabilities.
    pub capabilities: &'a Capabilities,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// The INSERT of a pending node; it returns a row only if the node id was
/// free (a reused key fails the UNIQUE `key_id` instead).
pub fn insert(n: &NewNode<'_>) -> Statement {
    Statement::new(
        "INSERT INTO mesh_nodes (node_id, kind, owner_id, status, key_id, public_key, os, version, \
           capabilities, registered_at, updated_at) \
         VALUES (?1, ?2, ?3, 'pending_approval', ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
         ON CONFLICT DO NOTHING RETURNING node_id",
        vec![
            n.node_id.into(),
            n.kind.as_str().into(),
            n.owner_id.into(),
            n.key_id.into(),
            Value::Blob(n.public_key.to_vec()),
            n.os.into(),
            n.version.into(),
            serde_json::to_string(n.capabilities)
                .unwrap_or_default()
                .into(),
            Value::Integer(n.now),
        ],
    )
}

/// The statements that retire a node's current key and install a new one;
/// the second changes nothing if the key moved meanwhile.
pub fn replace_key(node: &Node, new_key_id: &str, new_point: &[u8], now: i64) -> [Statement; 2] {
    [
        Statement::new(
            "INSERT INTO mesh_retired_keys (key_id, node_id, retired_at) VALUES (?1, ?2, ?3)",
            vec![
                node.key_id.as_str().into(),
                node.node_id.as_str().into(),
                Value::Integer(now),
            ],
        ),
        Statement::new(
            "UPDATE mesh_nodes SET key_id = ?3, public_key = ?4, updated_at = ?5 \
             WHERE node_id = ?1 AND key_id = ?2",
            vec![
                node.node_id.as_str().into(),
                node.key_id.as_str().into(),
                new_key_id.into(),
                Value::Blob(new_point.to_vec()),
                Value::Integer(now),
            ],
        ),
    ]
}

/// An operator decision as stored on the node.
#[derive(Debug, Clone, Default)]
pub struct Decided {
    /// `user:<id>`.
    pub by: Option<String>,
    /// Milliseconds since the epoch.
    pub at: Option<i64>,
    /// Free text.
    pub reason: Option<String>,
}

/// The node's last decision.
pub async fn decision(sql: &dyn Sql, node_id: &str) -> Result<Decided, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT decided_by, decided_at, decision_reason FROM mesh_nodes WHERE node_id = ?1",
            vec![node_id.into()],
        ))
        .await?;
    Ok(Decided {
        by: rows.get_str(0, "decided_by").map(str::to_owned),
        at: rows.get_i64(0, "decided_at"),
        reason: rows.get_str(0, "decision_reason").map(str::to_owned),
    })
}

/// Moves a node from `from` to `to` with a new decision; `false` if it was
/// no longer in `from` (someone decided first).
pub async fn set_status(
    sql: &dyn Sql,
    node_id: &str,
    from: NodeStatus,
    to: NodeStatus,
    decided: &Decided,
) -> Result<bool, Error> {
    let changed = sql
        .execute(Statement::new(
            "UPDATE mesh_nodes SET status = ?3, decided_by = ?4, decided_at = ?5, decision_reason = ?6, \
               updated_at = ?5 \
             WHERE node_id = ?1 AND status = ?2",
            vec![
                node_id.into(),
                from.as_str().into(),
                to.as_str().into(),
                decided.by.clone().into(),
                decided.at.into(),
                decided.reason.clone().into(),
            ],
        ))
        .await?
        .changes;
    Ok(changed == 1)
}

/// Undoes [`set_status`] (`to` back to `from`, the earlier decision back),
/// unless the node was decided again since `at`.
pub async fn undo_status(
    sql: &dyn Sql,
    node_id: &str,
    from: NodeStatus,
    to: NodeStatus,
    at: i64,
    earlier: &Decided,
) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_nodes SET status = ?2, decided_by = ?5, decided_at = ?6, decision_reason = ?7 \
         WHERE node_id = ?1 AND status = ?3 AND decided_at = ?4",
        vec![
            node_id.into(),
            from.as_str().into(),
            to.as_str().into(),
            Value::Integer(at),
            earlier.by.clone().into(),
            earlier.at.into(),
            earlier.reason.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Stores a heartbeat's telemetry.
pub async fn store_telemetry(
    sql: &dyn Sql,
    node_id: &str,
    telemetry: &Telemetry,
    now: i64,
) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE mesh_nodes SET telemetry = ?2, last_heartbeat_at = ?3 WHERE node_id = ?1",
        vec![
            node_id.into(),
            serde_json::to_string(telemetry).unwrap_or_default().into(),
            Value::Integer(now),
        ],
    ))
    .await?;
    Ok(())
}

/// The blacklist version nodes should hold: the newest entry's sequence.
pub async fn blacklist_version(sql: &dyn Sql) -> Result<u64, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT COALESCE(MAX(seq), 0) AS v FROM mesh_blacklist",
            vec![],
        ))
        .await?;
    Ok(rows
        .get_i64(0, "v")
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0))
}

/// A node as operators and owners see it (`GET /mesh/nodes`).
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Node id.
    pub node_id: String,
    /// Its role.
    pub kind: Option<String>,
    /// The enrolling user.
    pub owner_id: String,
    /// Where it stands.
    pub status: Option<String>,
    /// Current key id.
    pub key_id: Option<String>,
    /// Declared OS.
    pub os: Option<String>,
    /// Declared agent version.
    pub version: Option<String>,
    /// Declared capabilities, as stored.
    pub capabilities: Json,
    /// Last heartbeat telemetry, as stored.
    pub telemetry: Json,
    /// RFC 3339.
    pub last_heartbeat_at: Option<String>,
    /// RFC 3339.
    pub registered_at: Option<String>,
    /// `user:<id>`.
    pub decided_by: Option<String>,
    /// RFC 3339.
    pub decided_at: Option<String>,
    /// Free text.
    pub decision_reason: Option<String>,
}

const LIST_COLUMNS: &str = "node_id, kind, owner_id, status, key_id, os, version, capabilities, \
     telemetry, last_heartbeat_at, registered_at, decided_by, decided_at, decision_reason";

fn listed(rows: &Rows, i: usize) -> Listed {
    let text = |c: &str| rows.get_str(i, c).map(str::to_owned);
    let json = |c: &str| {
        rows.get_str(i, c)
            .and_then(|t| serde_json::from_str::<Json>(t).ok())
            .unwrap_or(Json::Null)
    };
    let time = |c: &str| rows.get_i64(i, c).map(rfc3339);
    Listed {
        node_id: text("node_id").unwrap_or_default(),
        kind: text("kind"),
        owner_id: text("owner_id").unwrap_or_default(),
        status: text("status"),
        key_id: text("key_id"),
        os: text("os"),
        version: text("version"),
        capabilities: json("capabilities"),
        telemetry: json("telemetry"),
        last_heartbeat_at: time("last_heartbeat_at"),
        registered_at: time("registered_at"),
        decided_by: text("decided_by"),
        decided_at: time("decided_at"),
        decision_reason: text("decision_reason"),
    }
}

/// Up to 1000 nodes, oldest registration first, optionally of one status
/// and one owner.
pub async fn list(
    sql: &dyn Sql,
    status: Option<NodeStatus>,
    owner: Option<&str>,
) -> Result<Vec<Listed>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT {LIST_COLUMNS} FROM mesh_nodes WHERE (?1 IS NULL OR status = ?1) \
                 AND (?2 IS NULL OR owner_id = ?2) ORDER BY registered_at, node_id LIMIT 1000"
            ),
            vec![status.map(NodeStatus::as_str).into(), owner.into()],
        ))
        .await?;
    Ok((0..rows.rows.len()).map(|i| listed(&rows, i)).collect())
}

/// One node as [`list`] shows it.
pub async fn listed_by_id(sql: &dyn Sql, node_id: &str) -> Result<Option<Listed>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {LIST_COLUMNS} FROM mesh_nodes WHERE node_id = ?1"),
            vec![node_id.into()],
        ))
        .await?;
    Ok((!rows.rows.is_empty()).then(|| listed(&rows, 0)))
}
