//! The model supply chain's tables: source policies, releases, rollouts and
//! their events, and what hosts report about releases.

use edgecoder_kernel::{Rows, Sql, Statement, Value};
use edgecoder_proto::model::Envelope;
use edgecoder_proto::supply::{ModelStatus, SourcePolicy};
use serde::Serialize;
use serde_json::Value as Json;

use crate::Error;
use crate::rollout::{Gates, Stage};

fn corrupt(what: &str) -> Error {
    edgecoder_kernel::Error::Storage(format!("model supply: {what}")).into()
}

fn opt_text(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Integer)
}

fn json_of<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A family's policy with who changed it last.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPolicy {
    /// The policy.
    #[serde(flatten)]
    pub policy: SourcePolicy,
    /// The last change's actor.
    pub updated_by: String,
    /// When, ms.
    pub updated_at: i64,
    /// Why.
    pub reason: Option<String>,
}

const POLICY_COLUMNS: &str =
    "family, keys, threshold, origins, max_bytes, allowed, version, updated_by, updated_at, reason";

fn policy_from(rows: &Rows, i: usize) -> Result<StoredPolicy, Error> {
    let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
    let int = |c: &str| rows.get_i64(i, c).unwrap_or_default();
    Ok(StoredPolicy {
        policy: SourcePolicy {
            family: text("family"),
            keys: serde_json::from_str(&text("keys")).map_err(|_| corrupt("policy keys"))?,
            threshold: u32::try_from(int("threshold")).unwrap_or(u32::MAX),
            origins: serde_json::from_str(&text("origins"))
                .map_err(|_| corrupt("policy origins"))?,
            max_bytes: u64::try_from(int("max_bytes")).unwrap_or_default(),
            allowed: int("allowed") == 1,
            version: u64::try_from(int("version")).unwrap_or_default(),
        },
        updated_by: text("updated_by"),
        updated_at: int("updated_at"),
        reason: rows.get_str(i, "reason").map(str::to_owned),
    })
}

/// The policy of `family`.
pub async fn policy(sql: &dyn Sql, family: &str) -> Result<Option<StoredPolicy>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {POLICY_COLUMNS} FROM model_policies WHERE family = ?1"),
            vec![family.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    policy_from(&rows, 0).map(Some)
}

/// Every policy, by family.
pub async fn policies(sql: &dyn Sql) -> Result<Vec<StoredPolicy>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {POLICY_COLUMNS} FROM model_policies ORDER BY family"),
            vec![],
        ))
        .await?;
    (0..rows.rows.len())
        .map(|i| policy_from(&rows, i))
        .collect()
}

/// The coordinator-wide model-policy version (0 before any policy).
pub async fn policy_version(sql: &dyn Sql) -> Result<u64, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT COALESCE(MAX(version), 0) AS v FROM model_policies",
            vec![],
        ))
        .await?;
    Ok(u64::try_from(rows.get_i64(0, "v").unwrap_or_default()).unwrap_or_default())
}

/// Writes `p` (its `version` is ignored: the next coordinator-wide version
/// is taken) and returns the version it got.
pub async fn put_policy(
    sql: &dyn Sql,
    p: &SourcePolicy,
    by: &str,
    at: i64,
    reason: Option<&str>,
) -> Result<u64, Error> {
    let rows = sql
        .execute(Statement::new(
            "INSERT INTO model_policies (family, keys, threshold, origins, max_bytes, allowed, version, updated_by, updated_at, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(version), 0) + 1 FROM model_policies), ?7, ?8, ?9) \
             ON CONFLICT (family) DO UPDATE SET keys = excluded.keys, threshold = excluded.threshold, \
               origins = excluded.origins, max_bytes = excluded.max_bytes, allowed = excluded.allowed, \
               version = excluded.version, updated_by = excluded.updated_by, \
               updated_at = excluded.updated_at, reason = excluded.reason \
             RETURNING version",
            vec![
                p.family.as_str().into(),
                json_of(&p.keys).into(),
                Value::Integer(i64::from(p.threshold)),
                json_of(&p.origins).into(),
                Value::Integer(i64::try_from(p.max_bytes).unwrap_or(i64::MAX)),
                Value::Integer(i64::from(p.allowed)),
                by.into(),
                Value::Integer(at),
                opt_text(reason),
            ],
        ))
        .await?;
    Ok(u64::try_from(rows.get_i64(0, "version").unwrap_or_default()).unwrap_or_default())
}

/// Puts `before` back (or removes the family) after the ledger refused the
/// change that replaced it with version `written`; only if that change is
/// still the one in place (a later, logged change is never overwritten).
pub async fn restore_policy(
    sql: &dyn Sql,
    family: &str,
    written: u64,
    before: Option<&StoredPolicy>,
) -> Result<(), Error> {
    let written = Value::Integer(i64::try_from(written).unwrap_or_default());
    let Some(b) = before else {
        sql.execute(Statement::new(
            "DELETE FROM model_policies WHERE family = ?1 AND version = ?2",
            vec![family.into(), written],
        ))
        .await?;
        return Ok(());
    };
    sql.execute(Statement::new(
        "UPDATE model_policies SET keys = ?2, threshold = ?3, origins = ?4, max_bytes = ?5, allowed = ?6, \
           version = ?7, updated_by = ?8, updated_at = ?9, reason = ?10 WHERE family = ?1 AND version = ?11",
        vec![
            family.into(),
            json_of(&b.policy.keys).into(),
            Value::Integer(i64::from(b.policy.threshold)),
            json_of(&b.policy.origins).into(),
            Value::Integer(i64::try_from(b.policy.max_bytes).unwrap_or(i64::MAX)),
            Value::Integer(i64::from(b.policy.allowed)),
            Value::Integer(i64::try_from(b.policy.version).unwrap_or_default()),
            b.updated_by.as_str().into(),
            Value::Integer(b.updated_at),
            opt_text(b.reason.as_deref()),
            written,
        ],
    ))
    .await?;
    Ok(())
}

/// A registered release.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// `name@version`.
    pub model: String,
    /// Its family.
    pub family: String,
    /// `blake3:<hex>` of the signed manifest.
    pub digest: String,
    /// The DSSE envelope.
    pub envelope: Envelope,
    /// Where hosts fetch its files.
    pub source: String,
    /// All files together, bytes.
    pub total_bytes: i64,
    /// The manifest's expiry, ms.
    pub expires_at: i64,
    /// Who registered it.
    pub created_by: String,
    /// When, ms.
    pub created_at: i64,
    /// Its registration's ledger entry (none until logged: such a release
    /// is never assigned nor rolled out).
    pub ledger_index: Option<i64>,
}

const RELEASE_COLUMNS: &str = "model, family, digest, envelope, source, total_bytes, expires_at, created_by, created_at, \
     ledger_index";

fn release_from(rows: &Rows, i: usize) -> Result<Release, Error> {
    let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
    let int = |c: &str| rows.get_i64(i, c).unwrap_or_default();
    Ok(Release {
        model: text("model"),
        family: text("family"),
        digest: text("digest"),
        envelope: serde_json::from_str(&text("envelope"))
            .map_err(|_| corrupt("release envelope"))?,
        source: text("source"),
        total_bytes: int("total_bytes"),
        expires_at: int("expires_at"),
        created_by: text("created_by"),
        created_at: int("created_at"),
        ledger_index: rows.get_i64(i, "ledger_index"),
    })
}

/// Records the ledger index of a release's registration.
pub async fn set_release_index(sql: &dyn Sql, model: &str, index: u64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE model_releases SET ledger_index = ?2 WHERE model = ?1",
        vec![
            model.into(),
            Value::Integer(i64::try_from(index).unwrap_or_default()),
        ],
    ))
    .await?;
    Ok(())
}

/// Registers a release; `false` if the model or digest exists already.
pub fn insert_release(r: &Release) -> Statement {
    Statement::new(
        "INSERT INTO model_releases (model, family, digest, envelope, source, total_bytes, expires_at, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        vec![
            r.model.as_str().into(),
            r.family.as_str().into(),
            r.digest.as_str().into(),
            json_of(&r.envelope).into(),
            r.source.as_str().into(),
            Value::Integer(r.total_bytes),
            Value::Integer(r.expires_at),
            r.created_by.as_str().into(),
            Value::Integer(r.created_at),
        ],
    )
}

/// Removes a release the ledger could not record (unlogged, it was never
/// usable: no rollout can start on it and no host is assigned it).
pub async fn delete_release(sql: &dyn Sql, model: &str, digest: &str) -> Result<(), Error> {
    sql.execute(Statement::new(
        "DELETE FROM model_releases WHERE model = ?1 AND digest = ?2 AND ledger_index IS NULL",
        vec![model.into(), digest.into()],
    ))
    .await?;
    Ok(())
}

/// The release `model`.
pub async fn release(sql: &dyn Sql, model: &str) -> Result<Option<Release>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {RELEASE_COLUMNS} FROM model_releases WHERE model = ?1"),
            vec![model.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    release_from(&rows, 0).map(Some)
}

/// Releases, newest first, of one family or all.
pub async fn releases(sql: &dyn Sql, family: Option<&str>) -> Result<Vec<Release>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT {RELEASE_COLUMNS} FROM model_releases WHERE (?1 IS NULL OR family = ?1) \
                 ORDER BY created_at DESC, model LIMIT 200"
            ),
            vec![opt_text(family)],
        ))
        .await?;
    (0..rows.rows.len())
        .map(|i| release_from(&rows, i))
        .collect()
}

/// A rollout's stored state.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    /// Its id.
    pub id: String,
    /// The family.
    pub family: String,
    /// The release rolled out.
    pub model: String,
    /// What hosts outside it keep (none for a family's first release).
    pub previous: Option<String>,
    /// Its stages.
    pub stages: Vec<Stage>,
    /// Its gates.
    pub gates: Gates,
    /// Whether a failed gate rolls back by itself.
    pub auto_rollback: bool,
    /// The current stage's index.
    pub stage: usize,
    /// `active`, `halted`, `rolled_back` or `complete`.
    pub status: String,
    /// Hosts pinned by the canary stage.
    pub canary: Vec<String>,
    /// When the current stage began, ms.
    pub stage_started_at: i64,
    /// Who started it.
    pub created_by: String,
    /// When, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
}

impl Rollout {
    /// Whether it is under way (active or halted).
    pub fn open(&self) -> bool {
        matches!(self.status.as_str(), "active" | "halted")
    }
}

const ROLLOUT_COLUMNS: &str = "id, family, model, previous, stages, gates, auto_rollback, stage, status, \
     canary, stage_started_at, created_by, created_at, updated_at";

fn rollout_from(rows: &Rows, i: usize) -> Result<Rollout, Error> {
    let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
    let int = |c: &str| rows.get_i64(i, c).unwrap_or_default();
    Ok(Rollout {
        id: text("id"),
        family: text("family"),
        model: text("model"),
        previous: rows.get_str(i, "previous").map(str::to_owned),
        stages: serde_json::from_str(&text("stages")).map_err(|_| corrupt("rollout stages"))?,
        gates: serde_json::from_str(&text("gates")).map_err(|_| corrupt("rollout gates"))?,
        auto_rollback: int("auto_rollback") == 1,
        stage: usize::try_from(int("stage")).unwrap_or_default(),
        status: text("status"),
        canary: serde_json::from_str(&text("canary")).map_err(|_| corrupt("rollout canary"))?,
        stage_started_at: int("stage_started_at"),
        created_by: text("created_by"),
        created_at: int("created_at"),
        updated_at: int("updated_at"),
    })
}

/// Starts a rollout (fails with a unique violation when the family has one
/// under way).
pub fn insert_rollout(r: &Rollout) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO model_rollouts ({ROLLOUT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        vec![
            r.id.as_str().into(),
            r.family.as_str().into(),
            r.model.as_str().into(),
            opt_text(r.previous.as_deref()),
            json_of(&r.stages).into(),
            json_of(&r.gates).into(),
            Value::Integer(i64::from(r.auto_rollback)),
            Value::Integer(i64::try_from(r.stage).unwrap_or_default()),
            r.status.as_str().into(),
            json_of(&r.canary).into(),
            Value::Integer(r.stage_started_at),
            r.created_by.as_str().into(),
            Value::Integer(r.created_at),
            Value::Integer(r.updated_at),
        ],
    )
}

/// The rollout `id`.
pub async fn rollout(sql: &dyn Sql, id: &str) -> Result<Option<Rollout>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!("SELECT {ROLLOUT_COLUMNS} FROM model_rollouts WHERE id = ?1"),
            vec![id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    rollout_from(&rows, 0).map(Some)
}

/// The family's rollout under way, if any.
pub async fn open_rollout(sql: &dyn Sql, family: &str) -> Result<Option<Rollout>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT {ROLLOUT_COLUMNS} FROM model_rollouts \
                 WHERE family = ?1 AND status IN ('active', 'halted')"
            ),
            vec![family.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    rollout_from(&rows, 0).map(Some)
}

/// Rollouts, newest first, of one family or all.
pub async fn rollouts(sql: &dyn Sql, family: Option<&str>) -> Result<Vec<Rollout>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT {ROLLOUT_COLUMNS} FROM model_rollouts WHERE (?1 IS NULL OR family = ?1) \
                 ORDER BY created_at DESC, id LIMIT 200"
            ),
            vec![opt_text(family)],
        ))
        .await?;
    (0..rows.rows.len())
        .map(|i| rollout_from(&rows, i))
        .collect()
}

/// The family's current version: the model of its last completed rollout.
pub async fn current(sql: &dyn Sql, family: &str) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT model FROM model_rollouts WHERE family = ?1 AND status = 'complete' \
             ORDER BY updated_at DESC, created_at DESC LIMIT 1",
            vec![family.into()],
        ))
        .await?;
    Ok(rows.get_str(0, "model").map(str::to_owned))
}

/// Moves a rollout from (`status`, `stage`) to (`to_status`, `to_stage`)
/// if nobody moved it first, recording the event. The first statement's
/// rows say whether it moved.
#[allow(clippy::too_many_arguments)]
pub fn transition(
    r: &Rollout,
    to_status: &str,
    to_stage: usize,
    action: &str,
    actor: &str,
    reason: Option<&str>,
    detail: &Json,
    now: i64,
) -> [Statement; 2] {
    let stage = |s: usize| Value::Integer(i64::try_from(s).unwrap_or_default());
    let started = if to_stage == r.stage {
        r.stage_started_at
    } else {
        now
    };
    [
        Statement::new(
            "UPDATE model_rollouts SET status = ?4, stage = ?5, stage_started_at = ?6, updated_at = ?7 \
             WHERE id = ?1 AND status = ?2 AND stage = ?3 RETURNING id",
            vec![
                r.id.as_str().into(),
                r.status.as_str().into(),
                stage(r.stage),
                to_status.into(),
                stage(to_stage),
                Value::Integer(started),
                Value::Integer(now),
            ],
        ),
        // Only if the update above moved it: a racing transition that lost
        // leaves no event behind.
        Statement::new(
            "INSERT INTO model_rollout_events (rollout_id, seq, at, action, from_stage, to_stage, actor, reason, detail) \
             SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM model_rollout_events WHERE rollout_id = ?1 \
             HAVING EXISTS (SELECT 1 FROM model_rollouts WHERE id = ?1 AND status = ?9 AND stage = ?5 AND updated_at = ?2) \
             RETURNING seq",
            vec![
                r.id.as_str().into(),
                Value::Integer(now),
                action.into(),
                stage(r.stage),
                stage(to_stage),
                actor.into(),
                opt_text(reason),
                detail.to_string().into(),
                to_status.into(),
            ],
        ),
    ]
}

/// Records an event of rollout `r` (only if it is in the state `r` says,
/// for events that follow a transition in the same batch, use
/// [`transition`]).
#[allow(clippy::too_many_arguments)]
pub fn event(
    r: &Rollout,
    action: &str,
    from_stage: Option<usize>,
    to_stage: Option<usize>,
    actor: &str,
    reason: Option<&str>,
    detail: &Json,
    now: i64,
) -> Statement {
    let stage = |s: Option<usize>| opt_int(s.and_then(|s| i64::try_from(s).ok()));
    Statement::new(
        "INSERT INTO model_rollout_events (rollout_id, seq, at, action, from_stage, to_stage, actor, reason, detail) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM model_rollout_events WHERE rollout_id = ?1 \
         RETURNING seq",
        vec![
            r.id.as_str().into(),
            Value::Integer(now),
            action.into(),
            stage(from_stage),
            stage(to_stage),
            actor.into(),
            opt_text(reason),
            detail.to_string().into(),
        ],
    )
}

/// Puts a rollout back after the ledger refused its transition to
/// (`to_status`, `to_stage`) made at `at`, and drops the event; only if
/// nothing moved it since (a later, logged change is never overwritten).
pub async fn undo_transition(
    sql: &dyn Sql,
    before: &Rollout,
    to: (&str, usize, i64),
    seq: i64,
) -> Result<(), Error> {
    let (to_status, to_stage, at) = to;
    sql.batch(vec![
        Statement::new(
            "UPDATE model_rollouts SET status = ?2, stage = ?3, stage_started_at = ?4, updated_at = ?5 \
             WHERE id = ?1 AND status = ?6 AND stage = ?7 AND updated_at = ?8",
            vec![
                before.id.as_str().into(),
                before.status.as_str().into(),
                Value::Integer(i64::try_from(before.stage).unwrap_or_default()),
                Value::Integer(before.stage_started_at),
                Value::Integer(before.updated_at),
                to_status.into(),
                Value::Integer(i64::try_from(to_stage).unwrap_or_default()),
                Value::Integer(at),
            ],
        ),
        // Only if the update above put it back: otherwise the transition
        // stands (a later one was built on it) and keeps its event.
        Statement::new(
            "DELETE FROM model_rollout_events WHERE rollout_id = ?1 AND seq = ?2 \
               AND EXISTS (SELECT 1 FROM model_rollouts WHERE id = ?1 AND status = ?3 AND stage = ?4 AND updated_at = ?5)",
            vec![
                before.id.as_str().into(),
                Value::Integer(seq),
                before.status.as_str().into(),
                Value::Integer(i64::try_from(before.stage).unwrap_or_default()),
                Value::Integer(before.updated_at),
            ],
        ),
    ])
    .await?;
    Ok(())
}

/// Removes a rollout whose start the ledger refused.
pub async fn delete_rollout(sql: &dyn Sql, id: &str) -> Result<(), Error> {
    sql.batch(vec![
        Statement::new(
            "DELETE FROM model_rollout_events WHERE rollout_id = ?1",
            vec![id.into()],
        ),
        Statement::new("DELETE FROM model_rollouts WHERE id = ?1", vec![id.into()]),
    ])
    .await?;
    Ok(())
}

/// Takes the right to judge rollout `id` now if nobody judged it within
/// `every` ms (one heartbeat wins a race).
pub async fn claim_judging(sql: &dyn Sql, id: &str, now: i64, every: i64) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE model_rollouts SET judged_at = ?2 WHERE id = ?1 AND judged_at <= ?3 RETURNING id",
            vec![id.into(), Value::Integer(now), Value::Integer(now - every)],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Records the ledger index of an event.
pub async fn set_event_index(sql: &dyn Sql, id: &str, seq: i64, index: u64) -> Result<(), Error> {
    sql.execute(Statement::new(
        "UPDATE model_rollout_events SET ledger_index = ?3 WHERE rollout_id = ?1 AND seq = ?2",
        vec![
            id.into(),
            Value::Integer(seq),
            Value::Integer(i64::try_from(index).unwrap_or_default()),
        ],
    ))
    .await?;
    Ok(())
}

/// A rollout's history, oldest first.
pub async fn events(sql: &dyn Sql, id: &str) -> Result<Vec<Json>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT seq, at, action, from_stage, to_stage, actor, reason, detail, ledger_index \
             FROM model_rollout_events WHERE rollout_id = ?1 ORDER BY seq",
            vec![id.into()],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            serde_json::json!({
                "seq": rows.get_i64(i, "seq"),
                "at": crate::rfc3339(rows.get_i64(i, "at").unwrap_or_default()),
                "action": rows.get_str(i, "action"),
                "from_stage": rows.get_i64(i, "from_stage"),
                "to_stage": rows.get_i64(i, "to_stage"),
                "actor": rows.get_str(i, "actor"),
                "reason": rows.get_str(i, "reason"),
                "detail": rows.get_str(i, "detail").and_then(|d| serde_json::from_str::<Json>(d).ok()),
                "ledger_index": rows.get_i64(i, "ledger_index"),
            })
        })
        .collect())
}

/// A host's last report on a release.
#[derive(Debug, Clone, Serialize)]
pub struct HostHealth {
    /// The host.
    pub node_id: String,
    /// The report.
    #[serde(flatten)]
    pub status: ModelStatus,
    /// When, ms.
    pub reported_at: i64,
}

/// The host's reports, one per model; returns the models whose state or
/// failure changed (to audit).
pub async fn store_health(
    sql: &dyn Sql,
    node_id: &str,
    reports: &[ModelStatus],
    now: i64,
) -> Result<Vec<ModelStatus>, Error> {
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let before = sql
        .execute(Statement::new(
            "SELECT model, release_digest, state, failure FROM model_health WHERE node_id = ?1",
            vec![node_id.into()],
        ))
        .await?;
    let was = |m: &ModelStatus| {
        (0..before.rows.len()).any(|i| {
            before.get_str(i, "model") == Some(m.model.as_str())
                && before.get_str(i, "release_digest") == Some(m.release_digest.as_str())
                && before.get_str(i, "state") == Some(state_str(m))
                && before.get_str(i, "failure") == m.failure.map(|f| f.as_str())
        })
    };
    let changed: Vec<ModelStatus> = reports.iter().filter(|m| !was(m)).cloned().collect();
    let statements = reports
        .iter()
        .map(|m| {
            Statement::new(
                "INSERT INTO model_health (node_id, model, release_digest, state, failure, requests, errors, p99_ms, reported_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (node_id, model) DO UPDATE SET release_digest = excluded.release_digest, \
                   state = excluded.state, failure = excluded.failure, requests = excluded.requests, \
                   errors = excluded.errors, p99_ms = excluded.p99_ms, reported_at = excluded.reported_at",
                vec![
                    node_id.into(),
                    m.model.as_str().into(),
                    m.release_digest.as_str().into(),
                    state_str(m).into(),
                    opt_text(m.failure.map(|f| f.as_str())),
                    Value::Integer(i64::try_from(m.requests).unwrap_or(i64::MAX)),
                    Value::Integer(i64::try_from(m.errors).unwrap_or(i64::MAX)),
                    opt_int(m.p99_ms.and_then(|p| i64::try_from(p).ok())),
                    Value::Integer(now),
                ],
            )
        })
        .collect();
    sql.batch(statements).await?;
    Ok(changed)
}

fn state_str(m: &ModelStatus) -> &'static str {
    match m.state {
        edgecoder_proto::supply::ModelState::Pending => "pending",
        edgecoder_proto::supply::ModelState::Verified => "verified",
        edgecoder_proto::supply::ModelState::Failed => "failed",
    }
}

/// Reports on `model` since `since` (ms).
pub async fn health(sql: &dyn Sql, model: &str, since: i64) -> Result<Vec<HostHealth>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT node_id, model, release_digest, state, failure, requests, errors, p99_ms, reported_at \
             FROM model_health WHERE model = ?1 AND reported_at >= ?2 ORDER BY node_id",
            vec![model.into(), Value::Integer(since)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .map(|i| {
            let text = |c: &str| rows.get_str(i, c).unwrap_or_default().to_owned();
            let count =
                |c: &str| u64::try_from(rows.get_i64(i, c).unwrap_or_default()).unwrap_or_default();
            let state = match text("state").as_str() {
                "verified" => edgecoder_proto::supply::ModelState::Verified,
                "failed" => edgecoder_proto::supply::ModelState::Failed,
                _ => edgecoder_proto::supply::ModelState::Pending,
            };
            HostHealth {
                node_id: text("node_id"),
                status: ModelStatus {
                    model: text("model"),
                    release_digest: text("release_digest"),
                    state,
                    failure: rows
                        .get_str(i, "failure")
                        .and_then(|f| serde_json::from_value(Json::String(f.to_owned())).ok()),
                    requests: count("requests"),
                    errors: count("errors"),
                    p99_ms: rows
                        .get_i64(i, "p99_ms")
                        .and_then(|p| u64::try_from(p).ok()),
                },
                reported_at: rows.get_i64(i, "reported_at").unwrap_or_default(),
            }
        })
        .collect())
}

/// An active GPU host that heartbeated since a time.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its id.
    pub node_id: String,
    /// The models (or families) it declared at registration.
    pub declared: Vec<String>,
    /// Its last heartbeat.
    pub telemetry: Option<edgecoder_proto::mesh::Telemetry>,
}

/// Active GPU hosts that heartbeated since `since` (ms).
pub async fn live_hosts(sql: &dyn Sql, since: i64) -> Result<Vec<Host>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT node_id, capabilities, telemetry FROM mesh_nodes \
             WHERE kind = 'gpu-host' AND status = 'active' AND last_heartbeat_at >= ?1 ORDER BY node_id",
            vec![Value::Integer(since)],
        ))
        .await?;
    let declared = |raw: Option<&str>| -> Vec<String> {
        raw.and_then(|r| serde_json::from_str::<Json>(r).ok())
            .and_then(|v| serde_json::from_value(v.get("models")?.clone()).ok())
            .unwrap_or_default()
    };
    Ok((0..rows.rows.len())
        .map(|i| Host {
            node_id: rows.get_str(i, "node_id").unwrap_or_default().to_owned(),
            declared: declared(rows.get_str(i, "capabilities")),
            telemetry: rows
                .get_str(i, "telemetry")
                .and_then(|t| serde_json::from_str(t).ok()),
        })
        .collect())
}
