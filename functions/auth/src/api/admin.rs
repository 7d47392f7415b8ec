//! Roles and administration: grants and revocations, the user list, the audit
//! query and the first-admin bootstrap.
//!
//! Roles are read from storage on every request, never trusted from a token,
//! so a revocation takes effect here at once. Only `system_admin` manages
//! roles, always with step-up, and only verified accounts can receive one.
//! The first admin comes from `edgecoder admin grant` (native) or the one-time
//! `bootstrap_secret` (edge), never from an email allowlist.

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::{Request, Response, Services, Sql, Statement, Value};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::Error;
use crate::Settings;
use crate::secrets::{matches_secret, rfc3339};
use crate::session::{self, GRANTABLE_ROLES, Principal};

/// Largest page of users or audit events.
pub const MAX_PAGE: i64 = 200;

pub(crate) fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_param(name)
}

fn page_limit(req: &Request) -> Result<i64, Error> {
    match query_param(req, "limit") {
        None => Ok(50),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                edgecoder_kernel::Error::InvalidRequest(format!("limit must be 1 to {MAX_PAGE}."))
                    .into()
            }),
    }
}

/// Authenticates an admin; refusals are audited.
async fn admin(
    s: &Services,
    req: &Request,
    action: &str,
    step_up: bool,
) -> Result<Principal, Error> {
    let p = session::authenticate(s, req).await?;
    let check = p.require_admin().and_then(|()| {
        if step_up {
            p.require_step_up(s.clock.now_ms())
        } else {
            Ok(())
        }
    });
    if let Err(e) = check {
        let reason = match e {
            Error::StepUpRequired => "step_up_required",
            _ => "not_admin",
        };
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            action,
            req.param("id"),
            json!({"reason": reason}),
            e,
        )
        .await);
    }
    Ok(p)
}

fn valid_role(role: &str) -> Result<(), Error> {
    if GRANTABLE_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(Error::InvalidRole)
    }
}

/// The statements granting `role` to a verified user; the INSERT changes
/// nothing when the user is unknown, unverified or already holds it.
fn grant_statement(user_id: &str, role: &str, granted_by: &str, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO user_roles (user_id, role, granted_by, granted_at) \
         SELECT id, ?2, ?3, ?4 FROM users WHERE id = ?1 AND email_verified_at IS NOT NULL \
         ON CONFLICT (user_id, role) DO NOTHING",
        vec![
            user_id.into(),
            role.into(),
            granted_by.into(),
            Value::Integer(now),
        ],
    )
}

async fn user_state(sql: &dyn Sql, user_id: &str) -> Result<(bool, Vec<String>), Error> {
    let rows = sql
        .execute(Statement::new(
            "SELECT u.email_verified_at, (SELECT group_concat(role) FROM user_roles WHERE user_id = u.id) AS roles \
             FROM users u WHERE u.id = ?1",
            vec![user_id.into()],
        ))
        .await?;
    if rows.rows.is_empty() {
        return Err(Error::UserNotFound);
    }
    let mut roles = vec!["user".to_owned()];
    roles.extend(
        rows.get_str(0, "roles")
            .unwrap_or("")
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
    );
    Ok((rows.get_i64(0, "email_verified_at").is_some(), roles))
}

/// Payload types of the role changes the transparency log records.
pub const ROLE_GRANT_V1: &str = "edgecoder.dev/role-grant/v1";
/// See [`ROLE_GRANT_V1`].
pub const ROLE_REVOKE_V1: &str = "edgecoder.dev/role-revoke/v1";

/// Logs a role change in the transparency log; returns the entry index.
async fn log_role_change(
    ledger: &dyn edgecoder_kernel::LedgerClient,
    payload_type: &str,
    user: &str,
    role: &str,
    by: &str,
    event_key: &str,
) -> Result<u64, Error> {
    let payload = json!({"user": user, "role": role, "by": by}).to_string();
    Ok(ledger
        .append(
            payload_type,
            payload.as_bytes(),
            &format!("{payload_type} {event_key}"),
        )
        .await?)
}

/// `POST /auth/admin/users/{id}/roles` body.
#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
}

/// `POST /auth/admin/users/{id}/roles`.
pub async fn grant(s: &Services, req: Request) -> Result<Response, Error> {
    let p = admin(s, &req, "auth.role.grant", true).await?;
    let role = req.json::<RoleBody>()?.role;
    valid_role(&role)?;
    let target = req.param("id").unwrap_or_default().to_owned();
    let now = s.clock.now_ms();
    let results = s
        .sql
        .batch(vec![grant_statement(&target, &role, &p.actor(), now)])
        .await?;
    let state = user_state(s.sql.as_ref(), &target).await;
    let Ok((verified, roles)) = state else {
        audit::note(
            s,
            &req.ctx,
            &p.actor(),
            "auth.role.grant",
            Some(&target),
            Outcome::Failure,
            json!({"role": role, "reason": "user_not_found"}),
        )
        .await?;
        return Err(Error::UserNotFound);
    };
    if !verified {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.role.grant",
            Some(&target),
            json!({"role": role, "reason": "email_unverified"}),
            Error::EmailUnverified,
        )
        .await);
    }
    let changed = results.first().is_some_and(|r| r.changes == 1);
    // A change that cannot be logged is undone: no unlogged trust changes.
    let index = if changed {
        match log_role_change(
            s.ledger.as_ref(),
            ROLE_GRANT_V1,
            &target,
            &role,
            &p.actor(),
            &req.ctx.request_id,
        )
        .await
        {
            Ok(i) => Some(i),
            Err(e) => {
                s.sql
                    .execute(Statement::new(
                        "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2",
                        vec![target.as_str().into(), role.as_str().into()],
                    ))
                    .await?;
                return Err(e);
            }
        }
    } else {
        None
    };
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        "auth.role.grant",
        Some(&target),
        Outcome::Success,
        json!({"role": role, "changed": changed, "ledger_index": index}),
    )
    .await?;
    Ok(ok_json(
        &json!({"id": target, "roles": roles, "ledger_index": index}),
    ))
}

/// `DELETE /auth/admin/users/{id}/roles/{role}`.
pub async fn revoke(s: &Services, req: Request) -> Result<Response, Error> {
    let p = admin(s, &req, "auth.role.revoke", true).await?;
    let role = req.param("role").unwrap_or_default().to_owned();
    valid_role(&role)?;
    let target = req.param("id").unwrap_or_default().to_owned();
    let results = s
        .sql
        .execute(Statement::new(
            "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2 \
             AND (role <> 'system_admin' OR (SELECT count(*) FROM user_roles WHERE role = 'system_admin') > 1)",
            vec![target.as_str().into(), role.as_str().into()],
        ))
        .await?;
    let Ok((_, roles)) = user_state(s.sql.as_ref(), &target).await else {
        audit::note(
            s,
            &req.ctx,
            &p.actor(),
            "auth.role.revoke",
            Some(&target),
            Outcome::Failure,
            json!({"role": role, "reason": "user_not_found"}),
        )
        .await?;
        return Err(Error::UserNotFound);
    };
    if results.changes == 0 && roles.contains(&role) {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.role.revoke",
            Some(&target),
            json!({"role": role, "reason": "last_admin"}),
            Error::LastAdmin,
        )
        .await);
    }
    let index = if results.changes == 1 {
        match log_role_change(
            s.ledger.as_ref(),
            ROLE_REVOKE_V1,
            &target,
            &role,
            &p.actor(),
            &req.ctx.request_id,
        )
        .await
        {
            Ok(i) => Some(i),
            Err(e) => {
                s.sql
                    .execute(grant_statement(
                        &target,
                        &role,
                        "system:revoke-undone",
                        s.clock.now_ms(),
                    ))
                    .await?;
                return Err(e);
            }
        }
    } else {
        None
    };
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        "auth.role.revoke",
        Some(&target),
        Outcome::Success,
        json!({"role": role, "changed": results.changes == 1, "ledger_index": index}),
    )
    .await?;
    Ok(ok_json(
        &json!({"id": target, "roles": roles, "ledger_index": index}),
    ))
}

/// `GET /auth/admin/users?limit=&after=`: keyset pages ordered by id.
pub async fn users(s: &Services, req: Request) -> Result<Response, Error> {
    admin(s, &req, "auth.admin.users", false).await?;
    let limit = page_limit(&req)?;
    let after = query_param(&req, "after").unwrap_or_default();
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT u.id, u.email, u.email_verified_at, u.display_name, u.created_at, \
             (SELECT group_concat(role) FROM user_roles WHERE user_id = u.id) AS roles \
             FROM users u WHERE u.id > ?1 ORDER BY u.id LIMIT ?2",
            vec![after.into(), Value::Integer(limit + 1)],
        ))
        .await?;
    let n = rows.rows.len().min(usize::try_from(limit).unwrap_or(50));
    let users: Vec<Json> = (0..n)
        .map(|i| {
            let mut roles = vec!["user".to_owned()];
            roles.extend(
                rows.get_str(i, "roles")
                    .unwrap_or("")
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            );
            json!({
                "id": rows.get_str(i, "id"),
                "email": rows.get_str(i, "email"),
                "email_verified": rows.get_i64(i, "email_verified_at").is_some(),
                "display_name": rows.get_str(i, "display_name"),
                "roles": roles,
                "created_at": rfc3339(rows.get_i64(i, "created_at").unwrap_or_default()),
            })
        })
        .collect();
    let next = (rows.rows.len() > n)
        .then(|| {
            users
                .last()
                .and_then(|u| u["id"].as_str().map(str::to_owned))
        })
        .flatten();
    Ok(ok_json(&json!({"users": users, "next": next})))
}

/// `GET /auth/admin/audit?since=&actor=&action=&request_id=&limit=`, newest first.
/// `since` is RFC 3339 or milliseconds since the epoch.
pub async fn audit_query(s: &Services, req: Request) -> Result<Response, Error> {
    admin(s, &req, "auth.admin.audit", false).await?;
    let limit = page_limit(&req)?;
    let since = match query_param(&req, "since") {
        None => 0,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(&v)
                    .ok()
                    .map(|t| t.timestamp_millis())
            })
            .ok_or_else(|| {
                edgecoder_kernel::Error::InvalidRequest(
                    "since must be RFC 3339 or milliseconds since the epoch.".into(),
                )
            })?,
    };
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT id, time, actor, action, target, outcome, request_id, client_ip, details FROM audit_events \
             WHERE time >= ?1 AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR action = ?3) \
               AND (?5 IS NULL OR request_id = ?5) \
             ORDER BY time DESC, id LIMIT ?4",
            vec![
                Value::Integer(since),
                query_param(&req, "actor").into(),
                query_param(&req, "action").into(),
                Value::Integer(limit),
                query_param(&req, "request_id").into(),
            ],
        ))
        .await?;
    let events: Vec<Json> = (0..rows.rows.len())
        .map(|i| {
            json!({
                "id": rows.get_str(i, "id"),
                "time": rfc3339(rows.get_i64(i, "time").unwrap_or_default()),
                "actor": rows.get_str(i, "actor"),
                "action": rows.get_str(i, "action"),
                "target": rows.get_str(i, "target"),
                "outcome": rows.get_str(i, "outcome"),
                "request_id": rows.get_str(i, "request_id"),
                "client_ip": rows.get_str(i, "client_ip"),
                "details": rows.get_str(i, "details").and_then(|d| serde_json::from_str::<Json>(d).ok()),
            })
        })
        .collect();
    Ok(ok_json(&json!({ "events": events })))
}

/// `POST /auth/admin/bootstrap` body.
#[derive(Deserialize)]
pub struct Bootstrap {
    secret: String,
}

/// `POST /auth/admin/bootstrap`: the signed-in, verified caller becomes the
/// first `system_admin` if the secret matches and no admin exists yet.
pub async fn bootstrap(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let body: Bootstrap = req.json()?;
    let (req_ref, p_ref) = (&req, &p);
    let deny = |reason: &'static str| async move {
        Err::<Response, Error>(
            audit::denied(
                s,
                &req_ref.ctx,
                &p_ref.actor(),
                "auth.admin.bootstrap",
                Some(&p_ref.user_id),
                json!({"reason": reason}),
                Error::BootstrapRefused,
            )
            .await,
        )
    };
    if !matches_secret(&body.secret, Settings::of(s)?.bootstrap_secret.as_deref()) {
        return deny("bad_secret").await;
    }
    if !p.email_verified {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.admin.bootstrap",
            Some(&p.user_id),
            json!({"reason": "email_unverified"}),
            Error::EmailUnverified,
        )
        .await);
    }
    let now = s.clock.now_ms();
    // One statement: the grant happens only while no admin exists.
    let results = s
        .sql
        .batch(vec![Statement::new(
            "INSERT INTO user_roles (user_id, role, granted_by, granted_at) \
             SELECT id, 'system_admin', 'system:bootstrap', ?2 FROM users \
             WHERE id = ?1 AND email_verified_at IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM user_roles WHERE role = 'system_admin') \
             ON CONFLICT (user_id, role) DO NOTHING",
            vec![p.user_id.as_str().into(), Value::Integer(now)],
        )])
        .await?;
    if results.first().map(|r| r.changes) != Some(1) {
        return deny("admin_exists").await;
    }
    let index = match log_role_change(
        s.ledger.as_ref(),
        ROLE_GRANT_V1,
        &p.user_id,
        "system_admin",
        "system:bootstrap",
        &req.ctx.request_id,
    )
    .await
    {
        Ok(i) => i,
        Err(e) => {
            s.sql
                .execute(Statement::new(
                    "DELETE FROM user_roles WHERE user_id = ?1 AND role = 'system_admin' AND granted_by = 'system:bootstrap'",
                    vec![p.user_id.as_str().into()],
                ))
                .await?;
            return Err(e);
        }
    };
    s.sql
        .execute(audit::statement_for(
            s,
            &req.ctx,
            &p.actor(),
            "auth.admin.bootstrap",
            Some(&p.user_id),
            Outcome::Success,
            json!({"role": "system_admin", "ledger_index": index}),
        ))
        .await?;
    let (_, roles) = user_state(s.sql.as_ref(), &p.user_id).await?;
    Ok(ok_json(&json!({"id": p.user_id, "roles": roles})))
}

/// Grants `role` to the verified account `email` outside HTTP (the native
/// `edgecoder admin grant`), with its audit event. Returns the user id.
pub async fn grant_by_email(
    sql: &dyn Sql,
    ledger: &dyn edgecoder_kernel::LedgerClient,
    now_ms: i64,
    event_id: &str,
    email: &str,
    role: &str,
) -> Result<String, Error> {
    valid_role(role)?;
    let email = crate::password::normalise_email(email)?;
    let rows = sql
        .execute(Statement::new(
            "SELECT id FROM users WHERE email = ?1",
            vec![email.as_str().into()],
        ))
        .await?;
    let user = rows.get_str(0, "id").ok_or(Error::UserNotFound)?.to_owned();
    let (verified, _) = user_state(sql, &user).await?;
    if !verified {
        return Err(Error::EmailUnverified);
    }
    let event = edgecoder_kernel::audit::AuditEvent {
        actor: "system:cli".into(),
        action: "auth.role.grant".into(),
        target: Some(user.clone()),
        outcome: Outcome::Success,
        details: json!({"role": role, "via": "edgecoder admin grant"}),
    };
    let results = sql
        .batch(vec![grant_statement(&user, role, "system:cli", now_ms)])
        .await?;
    let mut event = event;
    if results.first().is_some_and(|r| r.changes == 1) {
        match log_role_change(ledger, ROLE_GRANT_V1, &user, role, "system:cli", event_id).await {
            Ok(index) => event.details["ledger_index"] = json!(index),
            Err(e) => {
                sql.execute(Statement::new(
                    "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2",
                    vec![user.as_str().into(), role.into()],
                ))
                .await?;
                return Err(e);
            }
        }
    }
    sql.execute(event.statement(event_id, now_ms, None)).await?;
    Ok(user)
}
