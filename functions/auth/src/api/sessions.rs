//! Sessions: refresh-token rotation, sign-out, the session list, `/auth/me`
//! and step-up.
//!
//! Refresh tokens rotate on every use. The exchange is one batch: the new
//! token is inserted only if the presented one is still unrotated and its
//! session live, then the old one is marked rotated, so two racing requests
//! cannot both win. Presenting a rotated token again means it was copied: the
//! whole session (the token family) is revoked and the event audited.

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::{HeaderValue, header};
use edgecoder_kernel::{Request, Response, Services, Statement, Value};
use serde::Deserialize;
use serde_json::json;

use crate::Error;
use crate::api::accounts::check_password;
use crate::secrets::{hash_token, new_token, rfc3339, well_formed};
use crate::session::{self, Client, REFRESH_PREFIX, REFRESH_SLIDING_MS};

/// `POST /auth/token/refresh` body (device clients).
#[derive(Deserialize, Default)]
pub struct RefreshBody {
    refresh_token: Option<String>,
}

/// `POST /auth/token/refresh`.
pub async fn refresh(s: &Services, req: Request) -> Result<Response, Error> {
    let from_body = if req.body.is_empty() {
        None
    } else {
        req.json::<RefreshBody>()?.refresh_token
    };
    let (presented, client) = match from_body {
        Some(t) => (t, Client::Device),
        None => {
            let t = session::cookie_token(&req)?.ok_or(Error::InvalidRefreshToken)?;
            // The cookie rides along with any request the browser makes, so
            // only pages of an allowed origin may use it.
            session::check_origin(s, &req)?;
            (t, Client::Browser)
        }
    };
    if !well_formed(&presented, REFRESH_PREFIX) {
        return Err(Error::InvalidRefreshToken);
    }
    let now = s.clock.now_ms();
    let old = hash_token(&presented);
    if let Some((sid, fresh)) = exchange(s, &req, &old, client, now).await? {
        return issue(s, &sid, &fresh, client).await;
    }
    // Not exchanged: was it a token we already rotated?
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT r.session_id, r.rotated_at, r.replaced_by, s.user_id, \
               (SELECT rotated_at IS NULL FROM refresh_tokens WHERE token_hash = r.replaced_by) AS successor_unused \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = ?1",
            vec![old.as_str().into()],
        ))
        .await?;
    let (Some(sid), Some(rotated_at)) =
        (rows.get_str(0, "session_id"), rows.get_i64(0, "rotated_at"))
    else {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.token.refresh",
            None,
            Outcome::Failure,
            json!({}),
        )
        .await?;
        return Err(Error::InvalidRefreshToken);
    };
    let user = rows.get_str(0, "user_id").unwrap_or_default().to_owned();
    // Two tabs refreshing together, or a client retrying after losing the
    // answer: within the grace window, while the successor is unused, the
    // exchange is redone from the successor (which dies with it).
    if now - rotated_at <= REUSE_GRACE_MS
        && rows.get_i64(0, "successor_unused") == Some(1)
        && let Some(successor) = rows.get_str(0, "replaced_by")
        && let Some((sid, fresh)) = exchange(s, &req, successor, client, now).await?
    {
        return issue(s, &sid, &fresh, client).await;
    }
    // A copy of a rotated token is in use: revoke the whole family.
    s.sql
        .batch(vec![
            Statement::new(
                "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'refresh_token_reuse' \
                 WHERE id = ?1 AND revoked_at IS NULL",
                vec![sid.into(), Value::Integer(now)],
            ),
            audit::statement_for(
                s,
                &req.ctx,
                &format!("user:{user}"),
                "auth.refresh.reuse",
                Some(sid),
                Outcome::Denied,
                json!({"severity": "critical", "session_revoked": sid}),
            ),
        ])
        .await?;
    Err(Error::InvalidRefreshToken)
}

/// A rotated token presented again this soon after its rotation, while its
/// successor is unused, is a race or a retry rather than theft.
pub const REUSE_GRACE_MS: i64 = 30_000;

/// Exchanges the refresh token stored as `from` for a fresh one, atomically;
/// `None` if `from` is not a live, unrotated token of a `client` session.
async fn exchange(
    s: &Services,
    req: &Request,
    from: &str,
    client: Client,
    now: i64,
) -> Result<Option<(String, String)>, Error> {
    let fresh = new_token(s.rng.as_ref(), REFRESH_PREFIX);
    let new = hash_token(&fresh);
    let results = s
        .sql
        .batch(vec![
            Statement::new(
                "INSERT INTO refresh_tokens (token_hash, session_id, created_at) \
                 SELECT ?2, r.session_id, ?3 FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
                 WHERE r.token_hash = ?1 AND r.rotated_at IS NULL AND s.revoked_at IS NULL \
                   AND s.expires_at > ?3 AND s.client = ?4",
                vec![from.into(), new.as_str().into(), Value::Integer(now), client.as_str().into()],
            ),
            Statement::new(
                "UPDATE refresh_tokens SET rotated_at = ?3, replaced_by = ?2 WHERE token_hash = ?1 AND rotated_at IS NULL \
                 AND EXISTS (SELECT 1 FROM refresh_tokens WHERE token_hash = ?2)",
                vec![from.into(), new.as_str().into(), Value::Integer(now)],
            ),
            Statement::new(
                "UPDATE sessions SET last_used_at = ?2, expires_at = ?3 \
                 WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = ?1)",
                vec![new.as_str().into(), Value::Integer(now), Value::Integer(now + REFRESH_SLIDING_MS)],
            ),
            Statement::new(
                "SELECT r.session_id, s.user_id FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id \
                 WHERE r.token_hash = ?1",
                vec![new.as_str().into()],
            ),
            // Committed with the rotation, or not at all.
            session::audit_when(
                s,
                req,
                "'user:' || s.user_id",
                "auth.token.refresh",
                "r.session_id",
                Outcome::Success,
                json!({}),
                "FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = ?8",
                vec![new.as_str().into()],
            ),
        ])
        .await?;
    if results.first().map(|r| r.changes) != Some(1) {
        return Ok(None);
    }
    let Some(rows) = results.get(3) else {
        return Ok(None);
    };
    let sid = rows.get_str(0, "session_id").unwrap_or_default().to_owned();
    Ok(Some((sid, fresh)))
}

async fn issue(s: &Services, sid: &str, fresh: &str, client: Client) -> Result<Response, Error> {
    let access = session::access_token(s, sid).await?;
    Ok(session::token_response(s, &access, Some(fresh), client))
}

fn clear_cookie(s: &Services, mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&session::refresh_cookie(s, None)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /auth/logout`: this session.
pub async fn logout(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    s.sql
        .batch(vec![
            Statement::new(
                "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'logout' WHERE id = ?1 AND revoked_at IS NULL",
                vec![p.session_id.as_str().into(), Value::Integer(s.clock.now_ms())],
            ),
            audit::statement_for(s, &req.ctx, &p.actor(), "auth.logout", Some(&p.session_id), Outcome::Success, json!({})),
        ])
        .await?;
    Ok(clear_cookie(
        s,
        ok_json(&json!({"status": "signed_out", "sessions_revoked": 1})),
    ))
}

/// `POST /auth/logout-all`: every session of the user, this one included.
pub async fn logout_all(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let results = s
        .sql
        .batch(vec![
            Statement::new(
                "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'logout_all' WHERE user_id = ?1 AND revoked_at IS NULL",
                vec![p.user_id.as_str().into(), Value::Integer(s.clock.now_ms())],
            ),
            audit::statement_for(s, &req.ctx, &p.actor(), "auth.logout_all", Some(&p.user_id), Outcome::Success, json!({})),
        ])
        .await?;
    let n = results.first().map_or(0, |r| r.changes);
    Ok(clear_cookie(
        s,
        ok_json(&json!({"status": "signed_out", "sessions_revoked": n})),
    ))
}

/// `GET /auth/sessions`: the caller's live sessions.
pub async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT id, client, created_at, last_used_at, client_ip, user_agent FROM sessions \
             WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 ORDER BY created_at DESC LIMIT 200",
            vec![p.user_id.as_str().into(), Value::Integer(s.clock.now_ms())],
        ))
        .await?;
    let sessions: Vec<_> = (0..rows.rows.len())
        .map(|i| {
            let id = rows.get_str(i, "id").unwrap_or_default();
            json!({
                "id": id,
                "client": rows.get_str(i, "client"),
                "created_at": rfc3339(rows.get_i64(i, "created_at").unwrap_or_default()),
                "last_used_at": rfc3339(rows.get_i64(i, "last_used_at").unwrap_or_default()),
                "client_ip": rows.get_str(i, "client_ip"),
                "user_agent": rows.get_str(i, "user_agent"),
                "current": id == p.session_id,
            })
        })
        .collect();
    Ok(ok_json(&json!({ "sessions": sessions })))
}

/// `DELETE /auth/sessions/{id}`: one of the caller's sessions.
pub async fn revoke(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    let changed = s
        .sql
        .execute(Statement::new(
            "UPDATE sessions SET revoked_at = ?3, revoked_reason = 'revoked_by_user' \
             WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL",
            vec![
                id.as_str().into(),
                p.user_id.as_str().into(),
                Value::Integer(s.clock.now_ms()),
            ],
        ))
        .await?
        .changes;
    let outcome = if changed == 1 {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        "auth.session.revoke",
        Some(&id),
        outcome,
        json!({}),
    )
    .await?;
    if changed != 1 {
        return Err(Error::SessionNotFound);
    }
    Ok(ok_json(&json!({"status": "revoked", "id": id})))
}

/// `GET /auth/me`.
pub async fn me(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let rows = s
        .sql
        .execute(Statement::new(
            "SELECT display_name, created_at FROM users WHERE id = ?1",
            vec![p.user_id.as_str().into()],
        ))
        .await?;
    Ok(ok_json(&json!({
        "id": p.user_id,
        "email": p.email,
        "email_verified": p.email_verified,
        "display_name": rows.get_str(0, "display_name"),
        "roles": p.roles,
        "created_at": rfc3339(rows.get_i64(0, "created_at").unwrap_or_default()),
        "session_id": p.session_id,
        "auth_time": p.auth_time,
    })))
}

/// `POST /auth/step-up` body: the password, or a passkey assertion (over a
/// challenge from `POST /auth/passkeys/step-up/options`).
#[derive(Deserialize)]
pub struct StepUp {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    passkey: Option<crate::api::passkeys::AssertionJson>,
}

/// `POST /auth/step-up`: re-authenticates and returns a token with a fresh
/// `auth_time`.
pub async fn step_up(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let body: StepUp = req.json()?;
    let (checked, method) = match (&body.password, &body.passkey) {
        (Some(pw), None) => (
            check_password(s, &req, &p.user_id, &p.email, pw).await,
            "pwd",
        ),
        (None, Some(assertion)) => (
            crate::api::passkeys::verify_assertion(s, &req, assertion, "step_up", Some(&p))
                .await
                .map(|_| ()),
            "pop",
        ),
        _ => {
            return Err(edgecoder_kernel::Error::InvalidRequest(
                "Send either password or passkey.".into(),
            )
            .into());
        }
    };
    if let Err(e) = checked {
        audit::note(
            s,
            &req.ctx,
            &p.actor(),
            "auth.step_up",
            Some(&p.session_id),
            Outcome::Failure,
            json!({"method": method}),
        )
        .await?;
        return Err(e);
    }
    let now = s.clock.now_ms();
    s.sql
        .batch(vec![
            Statement::new(
                "UPDATE sessions SET auth_time = ?2, \
                 amr = CASE WHEN EXISTS (SELECT 1 FROM json_each(amr) WHERE value = ?3) THEN amr \
                       ELSE json_insert(amr, '$[#]', ?3) END \
                 WHERE id = ?1 AND revoked_at IS NULL",
                vec![
                    p.session_id.as_str().into(),
                    Value::Integer(now / 1000),
                    method.into(),
                ],
            ),
            audit::statement_for(
                s,
                &req.ctx,
                &p.actor(),
                "auth.step_up",
                Some(&p.session_id),
                Outcome::Success,
                json!({"method": method}),
            ),
        ])
        .await?;
    let access = session::access_token(s, &p.session_id).await?;
    Ok(session::token_response(s, &access, None, Client::Device))
}
