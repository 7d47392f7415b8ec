//! Typed storage of the mesh over the `Sql` port: the only place in this
//! crate that writes SQL. Handlers (`nodes`, `tasks`, `authn`) call these
//! functions and never build statements, so a column or a constraint
//! changes in one file.
//!
//! In scope: the blacklist and the bans in force ([`blacklist`]); nodes and their keys, decisions, telemetry and blacklist
//! version ([`nodes`]); peer coordinators ([`peers`]); pulls, gossip seen and ban reviews ([`federation`]); nodes' reputation events ([`reputation`]); the logs this coordinator witnesses ([`witness`]); model policies, releases, rollouts and host reports
//! ([`models`]); blobs, tasks, leases and results ([`tasks`]);
//! request nonces. Out of scope: who may do what and the JSON shapes of
//! answers (the handlers); audit events (the kernel's `audit`), which ride
//! in the same batches through the `Statement`s returned here.

pub mod blacklist;
pub mod credits;
pub mod federation;
pub mod models;
pub mod nodes;
pub mod peers;
pub mod reputation;
pub mod tasks;
pub mod witness;

use edgecoder_kernel::{Sql, Statement, Value};

use crate::Error;

/// Records a request's nonce for its key, forgetting those seen before
/// `cutoff`; `false` if the key has used it already (a replay).
pub async fn fresh_nonce(
    sql: &dyn Sql,
    key_id: &str,
    nonce: &str,
    now: i64,
    cutoff: i64,
) -> Result<bool, Error> {
    let done = sql
        .batch(vec![
            Statement::new(
                "DELETE FROM mesh_nonces WHERE seen_at < ?1",
                vec![Value::Integer(cutoff)],
            ),
            Statement::new(
                "INSERT INTO mesh_nonces (key_id, nonce, seen_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key_id, nonce) DO NOTHING RETURNING nonce",
                vec![key_id.into(), nonce.into(), Value::Integer(now)],
            ),
        ])
        .await?;
    Ok(done.get(1).is_some_and(|r| !r.rows.is_empty()))
}
