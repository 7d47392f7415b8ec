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
use edgecoder_kernel::http_types::{HeaderValue, Method, header};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services};
use serde::Deserialize;
use serde_json::json;

use crate::api::accounts::check_password;
use crate::api::{authed, token_response_docs, token_schema};
use crate::secrets::{hash_token, new_token, rfc3339, well_formed};
use crate::session::{self, Client, REFRESH_PREFIX};
use crate::store;
use crate::store::sessions::PresentedToken;
use crate::{DOCS, Error, schemas};

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
    let known = store::sessions::presented_token(s.sql.as_ref(), &old).await?;
    let Some(PresentedToken {
        session_id: sid,
        rotated_at: Some(rotated_at),
        replaced_by,
        user_id,
        successor_unused,
    }) = known
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
    let user = user_id.unwrap_or_default();
    // Two tabs refreshing together, or a client retrying after losing the
    // answer: within the grace window, while the successor is unused, the
    // exchange is redone from the successor (which dies with it).
    if now - rotated_at <= REUSE_GRACE_MS
        && successor_unused
        && let Some(successor) = replaced_by.as_deref()
        && let Some((sid, fresh)) = exchange(s, &req, successor, client, now).await?
    {
        return issue(s, &sid, &fresh, client).await;
    }
    // A copy of a rotated token is in use: revoke the whole family.
    s.sql
        .batch(vec![
            store::sessions::revoke_family(&sid, now),
            audit::statement_for(
                s,
                &req.ctx,
                &format!("user:{user}"),
                "auth.refresh.reuse",
                Some(&sid),
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
    let mut stmts = store::sessions::rotate_refresh_token(from, &new, now, client);
    // Committed with the rotation, or not at all.
    stmts.push(session::audit_when(
        s,
        req,
        "'user:' || s.user_id",
        "auth.token.refresh",
        "r.session_id",
        Outcome::Success,
        json!({}),
        "FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = ?8",
        vec![new.as_str().into()],
    ));
    let results = s.sql.batch(stmts).await?;
    Ok(store::sessions::rotated_session(&results).map(|sid| (sid, fresh)))
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
            store::sessions::sign_out(&p.session_id, s.clock.now_ms()),
            audit::statement_for(
                s,
                &req.ctx,
                &p.actor(),
                "auth.logout",
                Some(&p.session_id),
                Outcome::Success,
                json!({}),
            ),
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
            store::sessions::sign_out_all(&p.user_id, s.clock.now_ms()),
            audit::statement_for(
                s,
                &req.ctx,
                &p.actor(),
                "auth.logout_all",
                Some(&p.user_id),
                Outcome::Success,
                json!({}),
            ),
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
    let live = store::sessions::live(s.sql.as_ref(), &p.user_id, s.clock.now_ms()).await?;
    let sessions: Vec<_> = live
        .iter()
        .map(|l| {
            json!({
                "id": l.id,
                "client": l.client,
                "created_at": rfc3339(l.created_at),
                "last_used_at": rfc3339(l.last_used_at),
                "client_ip": l.client_ip,
                "user_agent": l.user_agent,
                "current": l.id == p.session_id,
            })
        })
        .collect();
    Ok(ok_json(&json!({ "sessions": sessions })))
}

/// `DELETE /auth/sessions/{id}`: one of the caller's sessions.
pub async fn revoke(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let id = req.param("id").unwrap_or_default().to_owned();
    let revoked =
        store::sessions::revoke_own(s.sql.as_ref(), &id, &p.user_id, s.clock.now_ms()).await?;
    let outcome = if revoked {
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
    if !revoked {
        return Err(Error::SessionNotFound);
    }
    Ok(ok_json(&json!({"status": "revoked", "id": id})))
}

/// `GET /auth/me`.
pub async fn me(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let profile = store::users::profile(s.sql.as_ref(), &p.user_id)
        .await?
        .unwrap_or_default();
    Ok(ok_json(&json!({
        "id": p.user_id,
        "email": p.email,
        "email_verified": p.email_verified,
        "display_name": profile.display_name,
        "roles": p.roles,
        "created_at": rfc3339(profile.created_at),
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
    passkey: Option<crate::ceremony::AuthenticationResponseJson>,
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
            crate::api::passkeys::verify_assertion(
                s,
                &req,
                assertion,
                crate::ceremony::Ceremony::StepUp,
                Some(&p),
            )
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
            store::sessions::record_step_up(&p.session_id, now / 1000, method),
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

/// The session routes: refresh, sign-out, the caller's sessions, `me`, step-up.
pub fn routes(r: Router) -> Router {
    r.route(
        Method::POST,
        "/auth/token/refresh",
        endpoint(|s, r| async move { refresh(&s, r).await }),
        refresh_doc(),
    )
    .route(
        Method::POST,
        "/auth/logout",
        endpoint(|s, r| async move { logout(&s, r).await }),
        logout_doc(),
    )
    .route(
        Method::POST,
        "/auth/logout-all",
        endpoint(|s, r| async move { logout_all(&s, r).await }),
        logout_all_doc(),
    )
    .route(
        Method::GET,
        "/auth/sessions",
        endpoint(|s, r| async move { list(&s, r).await }),
        list_doc(),
    )
    .route(
        Method::DELETE,
        "/auth/sessions/{id}",
        endpoint(|s, r| async move { revoke(&s, r).await }),
        revoke_doc(),
    )
    .route(
        Method::GET,
        "/auth/me",
        endpoint(|s, r| async move { me(&s, r).await }),
        me_doc(),
    )
    .route(
        Method::POST,
        "/auth/step-up",
        endpoint(|s, r| async move { step_up(&s, r).await }),
        step_up_doc(),
    )
}

fn refresh_doc() -> RouteDoc {
    let summary = "Exchange a refresh token (body for devices, cookie + allowed Origin for browsers); rotates it";
    let mut responses = token_response_docs();
    responses.push(err(401, "invalid_refresh_token"));
    responses.push(err(403, "csrf_rejected"));
    DOCS.op(
        "token_refresh",
        summary,
        object(&[], json!({"refresh_token": token_schema()})),
        responses,
    )
}

fn logout_doc() -> RouteDoc {
    DOCS.op(
        "logout",
        "Sign out this session",
        None,
        authed(vec![
            ok(200, "{status: signed_out}").with_schema(schemas::status()),
        ]),
    )
}

fn logout_all_doc() -> RouteDoc {
    DOCS.op(
        "logout_all",
        "Sign out every session",
        None,
        authed(vec![
            ok(200, "{status: signed_out, sessions_revoked}").with_schema(schemas::status()),
        ]),
    )
}

fn list_doc() -> RouteDoc {
    DOCS.op(
        "sessions_list",
        "The caller's live sessions",
        None,
        authed(vec![
            ok(200, "{sessions: [...]}").with_schema(schemas::sessions()),
        ]),
    )
}

fn revoke_doc() -> RouteDoc {
    DOCS.op(
        "session_revoke",
        "Revoke one of the caller's sessions",
        None,
        authed(vec![
            ok(200, "{status: revoked}").with_schema(schemas::status()),
            err(404, "session_not_found"),
        ]),
    )
}

fn me_doc() -> RouteDoc {
    let what = "{id, email, email_verified, display_name, roles, created_at}";
    DOCS.op(
        "me",
        "The signed-in user",
        None,
        authed(vec![ok(200, what).with_schema(schemas::me())]),
    )
}

fn step_up_doc() -> RouteDoc {
    let mut responses = token_response_docs();
    responses.push(err(429, "rate_limited"));
    DOCS.op(
        "step_up",
        "Re-authenticate; returns a token with a fresh auth_time",
        object(&["password"], json!({"password": {"type": "string"}})),
        authed(responses),
    )
}
