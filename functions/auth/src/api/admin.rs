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
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services, Sql};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::Settings;
use crate::api::authed;
use crate::secrets::{matches_secret, rfc3339};
use crate::session::{self, GRANTABLE_ROLES, Principal};
use crate::store;
use crate::{DOCS, Error, schemas};

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

/// Whether the user's address is verified, and their roles.
async fn user_state(sql: &dyn Sql, user_id: &str) -> Result<(bool, Vec<String>), Error> {
    let state = store::roles::of_user(sql, user_id)
        .await?
        .ok_or(Error::UserNotFound)?;
    Ok((state.email_verified, state.roles))
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
        .batch(vec![store::roles::grant(&target, &role, &p.actor(), now)])
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
                store::roles::remove(s.sql.as_ref(), &target, &role).await?;
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
    let revoked = store::roles::revoke(s.sql.as_ref(), &target, &role).await?;
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
    if !revoked && roles.contains(&role) {
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
    let index = if revoked {
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
                    .execute(store::roles::grant(
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
        json!({"role": role, "changed": revoked, "ledger_index": index}),
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
    // One more than the page, to know whether another follows.
    let page = store::users::page(s.sql.as_ref(), after, limit + 1).await?;
    let n = page.len().min(usize::try_from(limit).unwrap_or(50));
    let users: Vec<Json> = page[..n]
        .iter()
        .map(|u| {
            json!({
                "id": u.id,
                "email": u.email,
                "email_verified": u.email_verified,
                "display_name": u.display_name,
                "roles": u.roles,
                "created_at": rfc3339(u.created_at),
            })
        })
        .collect();
    let next = (page.len() > n)
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
    let filter = audit::Filter {
        since: Some(since),
        actor: query_param(&req, "actor"),
        action: query_param(&req, "action"),
        request_id: query_param(&req, "request_id"),
        limit: usize::try_from(limit).unwrap_or(1),
        ..audit::Filter::default()
    };
    let events: Vec<Json> = audit::query(s.sql.as_ref(), &filter)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "time": rfc3339(e.time),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
                "request_id": e.request_id,
                "client_ip": e.client_ip,
                "details": e.details,
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
    if !store::roles::bootstrap_admin(s.sql.as_ref(), &p.user_id, now).await? {
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
            store::roles::remove_bootstrap_admin(s.sql.as_ref(), &p.user_id).await?;
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
    let user = store::users::id_by_email(sql, &email)
        .await?
        .ok_or(Error::UserNotFound)?;
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
        .batch(vec![store::roles::grant(&user, role, "system:cli", now_ms)])
        .await?;
    let mut event = event;
    if results.first().is_some_and(|r| r.changes == 1) {
        match log_role_change(ledger, ROLE_GRANT_V1, &user, role, "system:cli", event_id).await {
            Ok(index) => event.details["ledger_index"] = json!(index),
            Err(e) => {
                store::roles::remove(sql, &user, role).await?;
                return Err(e);
            }
        }
    }
    sql.execute(event.statement(event_id, now_ms, None)).await?;
    Ok(user)
}

/// The administration routes: users, roles, the audit trail, bootstrap.
pub fn routes(r: Router) -> Router {
    r.route(
        Method::GET,
        "/auth/admin/users",
        endpoint(|s, r| async move { users(&s, r).await }),
        users_doc(),
    )
    .route(
        Method::POST,
        "/auth/admin/users/{id}/roles",
        endpoint(|s, r| async move { grant(&s, r).await }),
        grant_doc(),
    )
    .route(
        Method::DELETE,
        "/auth/admin/users/{id}/roles/{role}",
        endpoint(|s, r| async move { revoke(&s, r).await }),
        revoke_doc(),
    )
    .route(
        Method::GET,
        "/auth/admin/audit",
        endpoint(|s, r| async move { audit_query(&s, r).await }),
        audit_doc(),
    )
    .route(
        Method::POST,
        "/auth/admin/bootstrap",
        endpoint(|s, r| async move { bootstrap(&s, r).await }),
        bootstrap_doc(),
    )
}

fn users_doc() -> RouteDoc {
    DOCS.op(
        "admin_users",
        "Users, paginated (?limit=&after=); system_admin",
        None,
        authed(vec![
            ok(200, "{users, next}").with_schema(schemas::users()),
            err(400, "invalid_request: a bad query parameter"),
            err(403, "forbidden"),
        ]),
    )
}

fn grant_doc() -> RouteDoc {
    DOCS.op(
        "admin_role_grant",
        "Grant a role to a verified user; system_admin with step-up",
        object(&["role"], json!({"role": {"enum": GRANTABLE_ROLES}})),
        authed(vec![
            ok(200, "{id, roles}").with_schema(schemas::user_roles()),
            err(400, "invalid_role"),
            err(403, "forbidden / step_up_required / email_unverified"),
            err(404, "user_not_found"),
        ]),
    )
}

fn revoke_doc() -> RouteDoc {
    DOCS.op(
        "admin_role_revoke",
        "Revoke a role; system_admin with step-up",
        None,
        authed(vec![
            ok(200, "{id, roles}").with_schema(schemas::user_roles()),
            err(403, "forbidden / step_up_required"),
            err(409, "last_admin"),
        ]),
    )
}

fn audit_doc() -> RouteDoc {
    DOCS.op(
        "admin_audit",
        "Audit events, newest first (?since=&actor=&action=&limit=); system_admin",
        None,
        authed(vec![
            ok(200, "{events}").with_schema(schemas::audit()),
            err(400, "invalid_request: a bad query parameter"),
            err(403, "forbidden"),
        ]),
    )
}

fn bootstrap_doc() -> RouteDoc {
    DOCS.op(
        "admin_bootstrap",
        "Become the first system_admin with the one-time bootstrap secret",
        object(&["secret"], json!({"secret": {"type": "string"}})),
        authed(vec![
            ok(200, "{id, roles}").with_schema(schemas::user_roles()),
            err(403, "bootstrap_refused / email_unverified"),
        ]),
    )
}
