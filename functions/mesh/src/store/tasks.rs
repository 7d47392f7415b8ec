//! Blobs in `mesh_blobs` and tasks in `mesh_tasks`: intake, leases,
//! results and the sweep of expired leases.

use edgecoder_kernel::{Rows, Sql, Statement, Value};
use edgecoder_proto::mesh::{FailureCode, TaskKind};

use crate::Error;
use crate::policy::Limits;

fn int(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Whether a blob with this digest is stored that `caller` may name: a
/// public blob, or one of the caller's own.
pub async fn blob_exists(sql: &dyn Sql, digest: &str, caller: &str) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT 1 AS present FROM mesh_blobs WHERE digest = ?1 AND (owner IS NULL OR owner = ?2)",
            vec![digest.into(), caller.into()],
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// The INSERT of a blob whose digest the caller has checked, public
/// (`owner` none) or private to `owner`. Content addressed: a second upload
/// of the same digest is the same bytes, so the first stays.
pub fn insert_blob(digest: &str, bytes: Vec<u8>, owner: Option<&str>, now: i64) -> Statement {
    let size = int(bytes.len());
    Statement::new(
        "INSERT INTO mesh_blobs (digest, bytes, size, created_at, owner) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (digest) DO NOTHING",
        vec![
            digest.into(),
            Value::Blob(bytes),
            size,
            Value::Integer(now),
            owner.into(),
        ],
    )
}

/// The stored bytes of these digests (those that exist).
pub async fn blobs(
    sql: &dyn Sql,
    digests: [Option<&str>; 2],
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT digest, bytes FROM mesh_blobs WHERE digest IN (?1, ?2)",
            vec![digests[0].into(), digests[1].into()],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| {
            Some((
                rows.get_str(i, "digest")?.to_owned(),
                rows.get_blob(i, "bytes")?.to_vec(),
            ))
        })
        .collect())
}

/// A task to queue.
#[derive(Clone, Copy)]
pub struct NewTask<'a> {
    /// Task id.
    pub id: &'a str,
    /// `user:<id>` or `service`.
    pub submitter: &'a str,
    /// Free text.
    pub tenant: Option<&'a str>,
    /// What runs it.
    pub kind: TaskKind,
    /// The module's digest (stored; wasm tasks).
    pub module_digest: Option<&'a str>,
    /// The input's digest (stored).
    pub input_digest: &'a str,
    /// The model (`name@version`; inference tasks).
    pub model: Option<&'a str>,
    /// Wall-clock budget.
    pub timeout_ms: i64,
    /// Memory budget.
    pub memory_mb: i64,
    /// Fuel budget.
    pub fuel: i64,
    /// -10..=10, higher first.
    pub priority: i64,
    /// Leases before it fails.
    pub max_attempts: i64,
    /// Milliseconds since the epoch.
    pub now: i64,
    /// Agreeing results it needs, from distinct owners' nodes.
    pub replicas: i64,
    /// The escrowed price (all replicas) and the account it came from.
    pub price: i64,
    /// `user:<id>`.
    pub payer: &'a str,
    /// The escrow transfer: the task is queued only if it was made.
    pub escrow_transfer: &'a str,
}

/// The INSERT of a queued task, made only if its escrow transfer was.
pub fn insert_task(t: &NewTask<'_>) -> Statement {
    Statement::new(
        "INSERT INTO mesh_tasks (id, submitter, tenant, kind, module_digest, input_digest, timeout_ms, \
           memory_mb, fuel, priority, status, attempts, max_attempts, created_at, updated_at, model, \
           replicas, price, payer) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?12, ?12, ?13, ?14, ?15, ?16 \
         WHERE EXISTS (SELECT 1 FROM credit_transfers WHERE id = ?17)",
        vec![
            t.id.into(),
            t.submitter.into(),
            t.tenant.into(),
            t.kind.as_str().into(),
            t.module_digest.into(),
            t.input_digest.into(),
            Value::Integer(t.timeout_ms),
            Value::Integer(t.memory_mb),
            Value::Integer(t.fuel),
            Value::Integer(t.priority),
            Value::Integer(t.max_attempts),
            Value::Integer(t.now),
            t.model.into(),
            Value::Integer(t.replicas),
            Value::Integer(t.price),
            t.payer.into(),
            t.escrow_transfer.into(),
        ],
    )
}

/// A task whose lease expired.
#[derive(Debug, Clone)]
pub struct Swept {
    /// The node whose lease lapsed.
    pub lease_node: Option<String>,
    /// Task id.
    pub id: String,
    /// Failed for good (every attempt used) rather than requeued.
    pub failed: bool,
    /// Leases so far.
    pub attempts: Option<i64>,
}

/// Returns tasks whose lease expired by `now` to the queue, or fails them
/// once they have had every attempt.
pub async fn sweep(sql: &dyn Sql, now: i64) -> Result<Vec<Swept>, Error> {
    // Who held each lapsed lease is read in the same batch as the update
    // clears it (RETURNING gives the new row).
    let done = sql
        .batch(vec![
            Statement::new(
                "SELECT id, lease_node FROM mesh_tasks WHERE status = 'leased' AND lease_expires_at <= ?1",
                vec![Value::Integer(now)],
            ),
            Statement::new(
                "UPDATE mesh_tasks SET \
                   status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
                   error_code = CASE WHEN attempts >= max_attempts THEN 'attempts_exhausted' ELSE error_code END, \
                   lease_id = NULL, lease_node = NULL, lease_expires_at = NULL, updated_at = ?1 \
                 WHERE status = 'leased' AND lease_expires_at <= ?1 \
                 RETURNING id, status, attempts",
                vec![Value::Integer(now)],
            ),
        ])
        .await?;
    let (Some(held), Some(rows)) = (done.first(), done.get(1)) else {
        return Ok(Vec::new());
    };
    let holder = |id: &str| {
        (0..held.rows.len())
            .find(|&i| held.get_str(i, "id") == Some(id))
            .and_then(|i| held.get_str(i, "lease_node"))
            .map(str::to_owned)
    };
    Ok((0..rows.rows.len())
        .map(|i| {
            let id = rows.get_str(i, "id").unwrap_or_default().to_owned();
            Swept {
                lease_node: holder(&id),
                failed: rows.get_str(i, "status") == Some("failed"),
                attempts: rows.get_i64(i, "attempts"),
                id,
            }
        })
        .collect())
}

/// Ends `node_id`'s live lease `lease_id` on task `id` early, at the
/// holder's own request (an agent stopping): the task goes back to the
/// queue at once (or fails, if that was its last attempt). The attempt
/// stays counted: a node that leased and released over and over would
/// otherwise hold a task hostage until its queue time ran out. The task's
/// status after, if a lease was released.
pub async fn release(
    sql: &dyn Sql,
    id: &str,
    lease_id: &str,
    node_id: &str,
    now: i64,
) -> Result<Option<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE mesh_tasks SET \
               status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
               error_code = CASE WHEN attempts >= max_attempts THEN 'attempts_exhausted' ELSE error_code END, \
               lease_id = NULL, lease_node = NULL, lease_expires_at = NULL, updated_at = ?4 \
             WHERE id = ?1 AND status = 'leased' AND lease_id = ?2 AND lease_node = ?3 AND lease_expires_at > ?4 \
             RETURNING id, status",
            vec![
                id.into(),
                lease_id.into(),
                node_id.into(),
                Value::Integer(now),
            ],
        ))
        .await?;
    Ok((!rows.rows.is_empty()).then(|| rows.get_str(0, "status").unwrap_or("queued").to_owned()))
}

/// A task leased to a node.
#[derive(Debug, Clone)]
pub struct Leased {
    /// Task id.
    pub id: String,
    /// The module's digest (wasm tasks).
    pub module_digest: Option<String>,
    /// The input's digest.
    pub input_digest: String,
    /// The model (inference tasks).
    pub model: Option<String>,
    /// Wall-clock budget.
    pub timeout_ms: i64,
    /// Memory budget.
    pub memory_mb: i64,
    /// Fuel budget.
    pub fuel: i64,
    /// Milliseconds since the epoch.
    pub lease_expires_at: i64,
    /// This lease's number.
    pub attempt: Option<i64>,
}

/// What a node can be given: tasks of one kind, and for inference tasks
/// only the models it serves.
#[derive(Debug, Clone, Copy)]
pub struct Fit<'a> {
    /// The node's task kind.
    pub kind: TaskKind,
    /// The models it may run (inference).
    pub models: &'a [String],
    /// Its resource limits.
    pub limits: &'a Limits,
    /// Its owner: a task never goes to two nodes of one owner (replicas
    /// are independent opinions).
    pub owner: &'a str,
}

impl Fit<'_> {
    fn models_json(&self) -> String {
        serde_json::to_string(self.models).unwrap_or_else(|_| "[]".into())
    }
}

/// The queue filter shared by [`lease_next`] and [`any_waiting`], with its
/// five parameters numbered from `?{p}`: timeout, memory, fuel, kind, and
/// the models as a JSON array.
fn fits(p: usize) -> String {
    format!(
        "status = 'queued' AND kind = ?{k} \
         AND (kind = 'wasm' OR model IN (SELECT value FROM json_each(?{m}))) \
         AND timeout_ms <= ?{p} AND memory_mb <= ?{mem} AND fuel <= ?{f} \
         AND (replicas = 1 OR NOT EXISTS (SELECT 1 FROM mesh_task_replies r \
                                          WHERE r.task_id = mesh_tasks.id AND r.owner_id = ?{o}))",
        mem = p + 1,
        f = p + 2,
        k = p + 3,
        m = p + 4,
        o = p + 5,
    )
}

fn fit_params(fit: &Fit<'_>) -> [Value; 6] {
    [
        Value::Integer(fit.limits.timeout_ms),
        Value::Integer(fit.limits.memory_mb),
        Value::Integer(fit.limits.fuel),
        fit.kind.as_str().into(),
        fit.models_json().into(),
        fit.owner.into(),
    ]
}

/// Leases the first queued task that fits the node to `node_id`: highest
/// priority, then oldest. `None` if none was free; two racing pulls may pick
/// the same row, and the status check lets only one of them lease it.
pub async fn lease_next(
    sql: &dyn Sql,
    lease_id: &str,
    node_id: &str,
    now: i64,
    grace_ms: i64,
    fit: &Fit<'_>,
) -> Result<Option<Leased>, Error> {
    let rows = sql
        .execute(Statement::new(
            format!(
                "UPDATE mesh_tasks SET status = 'leased', lease_id = ?1, lease_node = ?2, \
                   lease_expires_at = ?3 + timeout_ms + ?4, attempts = attempts + 1, updated_at = ?3 \
                 WHERE id = (SELECT id FROM mesh_tasks WHERE {} \
                             ORDER BY priority DESC, created_at, id LIMIT 1) \
                   AND status = 'queued' \
                 RETURNING id, module_digest, input_digest, model, timeout_ms, memory_mb, fuel, lease_expires_at, attempts",
                fits(5)
            ),
            [
                lease_id.into(),
                node_id.into(),
                Value::Integer(now),
                Value::Integer(grace_ms),
            ]
            .into_iter()
            .chain(fit_params(fit))
            .collect(),
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    let text = |c: &str| rows.get_str(0, c).unwrap_or_default().to_owned();
    let int = |c: &str| rows.get_i64(0, c).unwrap_or_default();
    Ok(Some(Leased {
        id: text("id"),
        module_digest: rows.get_str(0, "module_digest").map(str::to_owned),
        input_digest: text("input_digest"),
        model: rows.get_str(0, "model").map(str::to_owned),
        timeout_ms: int("timeout_ms"),
        memory_mb: int("memory_mb"),
        fuel: int("fuel"),
        lease_expires_at: int("lease_expires_at"),
        attempt: rows.get_i64(0, "attempts"),
    }))
}

/// Whether any queued task fits (so a lost lease race is worth another try).
pub async fn any_waiting(sql: &dyn Sql, fit: &Fit<'_>) -> Result<bool, Error> {
    let rows = sql
        .execute(Statement::new(
            format!(
                "SELECT 1 AS waiting FROM mesh_tasks WHERE {} LIMIT 1",
                fits(1)
            ),
            fit_params(fit).to_vec(),
        ))
        .await?;
    Ok(!rows.rows.is_empty())
}

/// A lease holder's report.
pub struct Report<'a> {
    /// Task id.
    pub id: &'a str,
    /// The lease it reports on.
    pub lease_id: &'a str,
    /// The reporting node.
    pub node_id: &'a str,
    /// Whether it ran to completion.
    pub ok: bool,
    /// Why not.
    pub error_code: Option<FailureCode>,
    /// The result summary (JSON text).
    pub summary: String,
    /// Checked output bytes.
    pub output: Option<Vec<u8>>,
    /// The model the node says it ran (inference), which must be the task's.
    pub model: Option<&'a str>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// What [`report`] changed.
#[derive(Debug, Clone)]
pub struct Reported {
    /// `completed`, `failed`, or `queued` (a retryable failure with attempts
    /// left).
    pub status: String,
    /// Who submitted it.
    pub submitter: Option<String>,
    /// The module's digest.
    pub module_digest: Option<String>,
    /// The input's digest.
    pub input_digest: Option<String>,
    /// The model (inference).
    pub model: Option<String>,
}

/// The finished row a `RETURNING status, submitter, module_digest,
/// input_digest, model` gave, if any.
fn reported(rows: &Rows) -> Option<Reported> {
    if rows.rows.is_empty() {
        return None;
    }
    let text = |c: &str| rows.get_str(0, c).map(str::to_owned);
    Some(Reported {
        status: text("status").unwrap_or_default(),
        submitter: text("submitter"),
        module_digest: text("module_digest"),
        input_digest: text("input_digest"),
        model: text("model"),
    })
}

/// Stores a report if it comes from the holder of a live lease; `None`
/// otherwise (the first valid report wins).
pub async fn report(sql: &dyn Sql, r: &Report<'_>) -> Result<Option<Reported>, Error> {
    let retry = r.error_code.is_some_and(FailureCode::is_retryable);
    let status = if r.ok { "completed" } else { "failed" };
    let rows = sql
        .execute(Statement::new(
            "UPDATE mesh_tasks SET \
               status = CASE WHEN ?6 = 1 AND attempts < max_attempts THEN 'queued' ELSE ?4 END, \
               error_code = ?5, result = ?7, output = ?8, completed_by = ?3, updated_at = ?9, \
               lease_id = CASE WHEN ?6 = 1 AND attempts < max_attempts THEN NULL ELSE lease_id END, \
               lease_node = CASE WHEN ?6 = 1 AND attempts < max_attempts THEN NULL ELSE lease_node END \
             WHERE id = ?1 AND status = 'leased' AND lease_id = ?2 AND lease_node = ?3 AND lease_expires_at > ?9 \
               AND model IS ?10 \
             RETURNING status, submitter, module_digest, input_digest, model",
            vec![
                r.id.into(),
                r.lease_id.into(),
                r.node_id.into(),
                status.into(),
                r.error_code.map(FailureCode::as_str).into(),
                Value::Integer(i64::from(retry)),
                r.summary.as_str().into(),
                r.output.clone().into(),
                Value::Integer(r.now),
                r.model.into(),
            ],
        ))
        .await?;
    Ok(reported(&rows))
}

/// The UPDATE naming a finished task's ledger entry.
pub fn set_ledger_index(id: &str, index: u64) -> Statement {
    Statement::new(
        "UPDATE mesh_tasks SET ledger_index = ?2 WHERE id = ?1 AND ledger_index IS NULL",
        vec![
            id.into(),
            Value::Integer(i64::try_from(index).unwrap_or(-1)),
        ],
    )
}

/// A task as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Task id.
    pub id: String,
    /// `user:<id>` or `service`.
    pub submitter: String,
    /// Free text.
    pub tenant: Option<String>,
    /// What runs it.
    pub kind: Option<String>,
    /// The module's digest.
    pub module_digest: Option<String>,
    /// The input's digest.
    pub input_digest: Option<String>,
    /// The model (inference).
    pub model: Option<String>,
    /// Wall-clock budget.
    pub timeout_ms: Option<i64>,
    /// Memory budget.
    pub memory_mb: Option<i64>,
    /// Fuel budget.
    pub fuel: Option<i64>,
    /// -10..=10.
    pub priority: Option<i64>,
    /// `queued`, `leased`, `completed` or `failed`.
    pub status: Option<String>,
    /// Leases so far.
    pub attempts: Option<i64>,
    /// Leases before it fails.
    pub max_attempts: Option<i64>,
    /// Milliseconds since the epoch, while leased.
    pub lease_expires_at: Option<i64>,
    /// The current lease, while leased.
    pub lease_id: Option<String>,
    /// The node holding it.
    pub lease_node: Option<String>,
    /// The result summary (JSON text).
    pub result: Option<String>,
    /// Output bytes.
    pub output: Option<Vec<u8>>,
    /// Why it failed.
    pub error_code: Option<String>,
    /// The node that reported it.
    pub completed_by: Option<String>,
    /// Its ledger entry.
    pub ledger_index: Option<i64>,
    /// Milliseconds since the epoch.
    pub created_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub updated_at: Option<i64>,
    /// Agreeing results it needs.
    pub replicas: i64,
    /// The escrowed price; `None` for tasks from before the economy.
    pub price: Option<i64>,
    /// The account the escrow came from.
    pub payer: Option<String>,
    /// `paid` or `refunded`, once settled.
    pub settlement: Option<String>,
    /// Whom its completion entry pays (JSON array of accounts).
    pub payees: Option<String>,
}

/// One task by id.
pub async fn task(sql: &dyn Sql, id: &str) -> Result<Option<Stored>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id, submitter, tenant, kind, module_digest, input_digest, model, timeout_ms, memory_mb, fuel, \
               priority, status, attempts, max_attempts, lease_expires_at, lease_id, lease_node, result, output, error_code, \
               completed_by, ledger_index, created_at, updated_at, replicas, price, payer, settlement, payees \
             FROM mesh_tasks WHERE id = ?1",
            vec![id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    let text = |c: &str| rows.get_str(0, c).map(str::to_owned);
    let int = |c: &str| rows.get_i64(0, c);
    Ok(Some(Stored {
        id: text("id").unwrap_or_default(),
        submitter: text("submitter").unwrap_or_default(),
        tenant: text("tenant"),
        kind: text("kind"),
        module_digest: text("module_digest"),
        input_digest: text("input_digest"),
        model: text("model"),
        timeout_ms: int("timeout_ms"),
        memory_mb: int("memory_mb"),
        fuel: int("fuel"),
        priority: int("priority"),
        status: text("status"),
        attempts: int("attempts"),
        max_attempts: int("max_attempts"),
        lease_expires_at: int("lease_expires_at"),
        lease_id: text("lease_id"),
        lease_node: text("lease_node"),
        result: text("result"),
        output: rows.get_blob(0, "output").map(<[u8]>::to_vec),
        error_code: text("error_code"),
        completed_by: text("completed_by"),
        ledger_index: int("ledger_index"),
        created_at: int("created_at"),
        updated_at: int("updated_at"),
        replicas: int("replicas").unwrap_or(1),
        price: int("price"),
        payer: text("payer"),
        settlement: text("settlement"),
        payees: text("payees"),
    }))
}

/// A replica's result that the coordinator holds for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The node that ran it.
    pub node_id: String,
    /// Its owner.
    pub owner_id: String,
    /// The output's digest.
    pub output_digest: String,
}

/// A replica's successful result under its lease (from the lease holder,
/// before the lease expires).
pub struct ReplicaResult<'a> {
    /// Task id.
    pub id: &'a str,
    /// The lease reported on.
    pub lease_id: &'a str,
    /// The reporting node.
    pub node_id: &'a str,
    /// Its owner.
    pub owner_id: &'a str,
    /// The output's digest.
    pub output_digest: &'a str,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// Records a replica's result and frees the task for the next replica, in
/// one batch; every reply so far, or `None` if the lease is not valid.
pub async fn reply(sql: &dyn Sql, r: &ReplicaResult<'_>) -> Result<Option<Vec<Reply>>, Error> {
    let done = sql
        .batch(vec![
            Statement::new(
                "INSERT OR IGNORE INTO mesh_task_replies (task_id, node_id, owner_id, lease_id, output_digest, created_at) \
                 SELECT id, ?3, ?4, ?2, ?5, ?6 FROM mesh_tasks \
                 WHERE id = ?1 AND status = 'leased' AND lease_id = ?2 AND lease_node = ?3 AND lease_expires_at > ?6",
                vec![
                    r.id.into(),
                    r.lease_id.into(),
                    r.node_id.into(),
                    r.owner_id.into(),
                    r.output_digest.into(),
                    Value::Integer(r.now),
                ],
            ),
            // Back to the queue only while more agreeing replies are
            // needed: the reply that completes the set, or one that
            // disagrees, keeps the lease until the task is concluded, so no
            // other node can slip a reply in between.
            Statement::new(
                format!(
                    "UPDATE mesh_tasks SET updated_at = ?3, \
                       status = CASE WHEN {more} THEN 'queued' ELSE status END, \
                       lease_id = CASE WHEN {more} THEN NULL ELSE lease_id END, \
                       lease_node = CASE WHEN {more} THEN NULL ELSE lease_node END, \
                       lease_expires_at = CASE WHEN {more} THEN NULL ELSE lease_expires_at END \
                     WHERE id = ?1 AND status = 'leased' AND lease_id = ?2 \
                       AND EXISTS (SELECT 1 FROM mesh_task_replies \
                                   WHERE task_id = ?1 AND lease_id = ?2 AND output_digest = ?4)",
                    more = "(SELECT COUNT(*) < mesh_tasks.replicas AND COUNT(DISTINCT output_digest) = 1 FROM mesh_task_replies WHERE task_id = ?1)"
                ),
                // Only the request whose digest was stored goes on: two
                // racing replies of one node under one lease cannot swap
                // the output in.
                vec![
                    r.id.into(),
                    r.lease_id.into(),
                    Value::Integer(r.now),
                    r.output_digest.into(),
                ],
            ),
            Statement::new(
                "SELECT node_id, owner_id, output_digest FROM mesh_task_replies \
                 WHERE task_id = ?1 ORDER BY created_at, node_id",
                vec![r.id.into()],
            ),
        ])
        .await?;
    if done.get(1).is_none_or(|u| u.changes != 1) {
        return Ok(None);
    }
    Ok(done.get(2).map(replies_of))
}

fn replies_of(rows: &Rows) -> Vec<Reply> {
    (0..rows.rows.len())
        .map(|i| Reply {
            node_id: rows.get_str(i, "node_id").unwrap_or_default().to_owned(),
            owner_id: rows.get_str(i, "owner_id").unwrap_or_default().to_owned(),
            output_digest: rows
                .get_str(i, "output_digest")
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// Every reply recorded for a task.
pub async fn replies(sql: &dyn Sql, id: &str) -> Result<Vec<Reply>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT node_id, owner_id, output_digest FROM mesh_task_replies \
             WHERE task_id = ?1 ORDER BY created_at, node_id",
            vec![id.into()],
        ))
        .await?;
    Ok(replies_of(&rows))
}

/// How a replicated task ends once its replies are in: `completed` with the
/// last result (all agreed) or `failed` with `replica_disagreement`. Only a
/// task that is not finished yet changes; the answer is what the row holds
/// after (`None`: another report finished it first).
pub struct Conclude<'a> {
    /// Task id.
    pub id: &'a str,
    /// Whether the replicas agreed.
    pub agreed: bool,
    /// The node whose result closes it.
    pub node_id: &'a str,
    /// Its lease.
    pub lease_id: &'a str,
    /// The result summary (JSON text).
    pub summary: String,
    /// Output bytes (agreed).
    pub output: Option<Vec<u8>>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// Finishes a replicated task; `Some` with what [`report`] returns when this
/// call finished it.
pub async fn conclude(sql: &dyn Sql, c: &Conclude<'_>) -> Result<Option<Reported>, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE mesh_tasks SET status = ?2, error_code = ?3, result = ?4, output = ?5, completed_by = ?6, \
               updated_at = ?7 \
             WHERE id = ?1 AND status = 'leased' AND lease_node = ?6 AND lease_id = ?8 \
             RETURNING status, submitter, module_digest, input_digest, model",
            vec![
                c.id.into(),
                if c.agreed { "completed" } else { "failed" }.into(),
                (!c.agreed).then_some("replica_disagreement").into(),
                c.summary.as_str().into(),
                c.output.clone().into(),
                c.node_id.into(),
                Value::Integer(c.now),
                c.lease_id.into(),
            ],
        ))
        .await?;
    Ok(reported(&rows))
}

/// Finished, priced tasks whose escrow is not settled yet (failed, or
/// completed with their completion logged), oldest first.
pub async fn unsettled(sql: &dyn Sql, limit: i64) -> Result<Vec<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM mesh_tasks WHERE price IS NOT NULL AND settlement IS NULL \
               AND (status = 'failed' OR (status = 'completed' AND ledger_index IS NOT NULL)) \
             ORDER BY updated_at, id LIMIT ?1",
            vec![Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "id").map(str::to_owned))
        .collect())
}

/// Finished tasks whose completion entry is still to be appended (its
/// append failed, or the process stopped before it), last changed before
/// `before`.
pub async fn unlogged_finished(
    sql: &dyn Sql,
    before: i64,
    limit: i64,
) -> Result<Vec<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM mesh_tasks WHERE status IN ('completed', 'failed') AND ledger_index IS NULL \
               AND result IS NOT NULL AND updated_at <= ?1 \
               AND COALESCE(error_code, '') NOT IN ('attempts_exhausted', 'queue_expired') \
             ORDER BY updated_at, id LIMIT ?2",
            vec![Value::Integer(before), Value::Integer(limit)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "id").map(str::to_owned))
        .collect())
}

/// Queued tasks nobody took within `ttl_ms` of their submission fail with
/// `queue_expired` (their escrow is then refunded); their ids.
pub async fn expire_queued(sql: &dyn Sql, now: i64, ttl_ms: i64) -> Result<Vec<String>, Error> {
    let rows = sql
        .execute(Statement::new(
            "UPDATE mesh_tasks SET status = 'failed', error_code = 'queue_expired', updated_at = ?1 \
             WHERE status = 'queued' AND created_at <= ?1 - ?2 RETURNING id",
            vec![Value::Integer(now), Value::Integer(ttl_ms)],
        ))
        .await?;
    Ok((0..rows.rows.len())
        .filter_map(|i| rows.get_str(i, "id").map(str::to_owned))
        .collect())
}

/// The statement that records whom a finished task pays (as its completion
/// entry names them), with its ledger index.
pub fn set_payees(id: &str, payees: &[String]) -> Statement {
    Statement::new(
        "UPDATE mesh_tasks SET payees = ?2 WHERE id = ?1 AND payees IS NULL",
        vec![
            id.into(),
            serde_json::to_string(payees)
                .unwrap_or_else(|_| "[]".into())
                .into(),
        ],
    )
}

/// The statement that marks a task settled by `transfer` (only if it was
/// not, and only if the transfer was made in the same batch).
pub fn mark_settled(id: &str, settlement: &str, transfer: &str) -> Statement {
    Statement::new(
        "UPDATE mesh_tasks SET settlement = ?2, settlement_transfer = ?3 \
         WHERE id = ?1 AND settlement IS NULL AND EXISTS (SELECT 1 FROM credit_transfers WHERE id = ?3)",
        vec![id.into(), settlement.into(), transfer.into()],
    )
}
