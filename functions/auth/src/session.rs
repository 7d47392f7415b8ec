//! Sessions, access-token issue, bearer authentication, step-up and cookies.
//!
//! In scope: creating a session with its first refresh token, the OAuth 2.0
//! token response (RFC 6749 §5.1), the refresh cookie for browsers, turning a
//! bearer token into a [`Principal`] (signature and claims through the kernel's
//! stateless verifier, then the session row, so a signed-out session stops
//! working here at once), role and step-up checks, and the audit helper every
//! handler uses. Out of scope: the HTTP handlers themselves (`api`).

use edgecoder_kernel::audit::Outcome;
use edgecoder_kernel::http_types::{HeaderValue, StatusCode, header};
use edgecoder_kernel::tokens::{self, AccessClaims, Verifier};
use edgecoder_kernel::{Config, Request, Response, Services, Sql, Statement, Value};
use serde_json::{Value as Json, json};

use crate::Error;
use crate::secrets::{hash_token, new_token};

/// Access-token lifetime (the kernel caps it at 15 minutes).
pub const ACCESS_TOKEN_SECS: i64 = tokens::MAX_ACCESS_TOKEN_SECS;
/// Refresh sessions slide: each use extends them this long.
pub const REFRESH_SLIDING_MS: i64 = 30 * 24 * 3600 * 1000;
/// Elevated operations need an authentication this recent.
pub const STEP_UP_WINDOW_SECS: i64 = 10 * 60;
/// The browser refresh cookie.
pub const REFRESH_COOKIE: &str = "edgecoder_refresh";
/// The cookie's path: only the refresh endpoint ever receives it.
pub const REFRESH_COOKIE_PATH: &str = "/auth/token";
/// Refresh token prefix.
pub const REFRESH_PREFIX: &str = "ert_";
/// Longest stored user agent.
const MAX_USER_AGENT_CHARS: usize = 256;

/// The roles anyone can hold besides the implicit `user`.
pub const GRANTABLE_ROLES: [&str; 2] = ["coordinator_owner", "system_admin"];

/// Who is calling, from a verified access token and its live session.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// Session id.
    pub session_id: String,
    /// When the user last authenticated (Unix seconds, from the token).
    pub auth_time: i64,
    /// Email address.
    pub email: String,
    /// Whether it is verified.
    pub email_verified: bool,
    /// Current roles from storage (always includes `user`).
    pub roles: Vec<String>,
}

impl Principal {
    /// The audit actor.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user_id)
    }

    /// Whether the user holds `role` now.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Refuses unless the last authentication is within the step-up window.
    pub fn require_step_up(&self, now_ms: i64) -> Result<(), Error> {
        if now_ms / 1000 - self.auth_time > STEP_UP_WINDOW_SECS {
            return Err(Error::StepUpRequired);
        }
        Ok(())
    }

    /// Refuses unless the user is a `system_admin`.
    pub fn require_admin(&self) -> Result<(), Error> {
        if self.has_role("system_admin") {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(req: &Request) -> Option<&str> {
    req.bearer()
}

/// Roles of a user (with the implicit `user`), from a comma list.
fn roles_from(list: Option<&str>) -> Vec<String> {
    let mut roles = vec!["user".to_owned()];
    let mut stored: Vec<String> = list
        .unwrap_or("")
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    stored.sort();
    roles.extend(stored);
    roles
}

const SESSION_USER_SQL: &str = "SELECT s.revoked_at, s.auth_time, s.amr, s.client, u.id AS user_id, u.email, \
     u.email_verified_at, (SELECT group_concat(role) FROM user_roles WHERE user_id = u.id) AS roles \
     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?1";

/// Authenticates the request's bearer access token.
pub async fn authenticate(s: &Services, req: &Request) -> Result<Principal, Error> {
    let token = bearer(req).ok_or(Error::AuthenticationRequired)?;
    authenticate_token(s.sql.as_ref(), &s.config, s.clock.now_ms(), token).await
}

/// Authenticates an access token: signature and claims, then a live session.
pub async fn authenticate_token(
    sql: &dyn Sql,
    config: &Config,
    now: i64,
    token: &str,
) -> Result<Principal, Error> {
    let verified = Verifier::from_config(config, now).verify(token, now)?;
    let c = verified.claims;
    let rows = sql
        .execute(Statement::new(
            SESSION_USER_SQL,
            vec![c.sid.as_str().into()],
        ))
        .await?;
    let live = rows.rows.len() == 1
        && rows.get_str(0, "user_id") == Some(c.sub.as_str())
        && rows.get_i64(0, "revoked_at").is_none();
    if !live {
        return Err(Error::SessionRevoked);
    }
    Ok(Principal {
        user_id: c.sub,
        session_id: c.sid,
        auth_time: c.auth_time,
        email: rows.get_str(0, "email").unwrap_or_default().to_owned(),
        email_verified: rows.get_i64(0, "email_verified_at").is_some(),
        roles: roles_from(rows.get_str(0, "roles")),
    })
}

/// A freshly signed access token for a session's current state.
pub async fn access_token(s: &Services, session_id: &str) -> Result<String, Error> {
    let rows = s
        .sql
        .execute(Statement::new(SESSION_USER_SQL, vec![session_id.into()]))
        .await?;
    let user_id = rows
        .get_str(0, "user_id")
        .ok_or(Error::InvalidRefreshToken)?;
    let amr: Vec<String> = rows
        .get_str(0, "amr")
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    let key = s.config.signing_key.as_ref().ok_or_else(|| {
        edgecoder_kernel::Error::Config("no signing_key to issue access tokens".into())
    })?;
    let claims = AccessClaims {
        iss: s.config.issuer.clone(),
        aud: s.config.audience.clone(),
        sub: user_id.to_owned(),
        sid: session_id.to_owned(),
        jti: s.new_id(),
        roles: roles_from(rows.get_str(0, "roles")),
        auth_time: rows.get_i64(0, "auth_time").unwrap_or_default(),
        amr,
    };
    Ok(tokens::issue(
        key,
        claims,
        s.clock.now_ms(),
        ACCESS_TOKEN_SECS,
    )?)
}

/// Browser sessions get their refresh token as a cookie; devices in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A web page (the portal).
    Browser,
    /// A device agent or CLI.
    Device,
}

impl Client {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Client::Browser => "browser",
            Client::Device => "device",
        }
    }

    /// Parses the request's `client` field.
    pub fn parse(raw: Option<&str>) -> Result<Client, Error> {
        match raw {
            None | Some("browser") => Ok(Client::Browser),
            Some("device") => Ok(Client::Device),
            Some(_) => Err(edgecoder_kernel::Error::InvalidRequest(
                "client must be \"browser\" or \"device\".".into(),
            )
            .into()),
        }
    }
}

/// The statements that create a session and its first refresh token; returns
/// them with the new session id and refresh token. With `password_hash`, the
/// session is created only while that is still the stored hash (the first
/// statement then changes nothing otherwise).
pub fn create_session(
    s: &Services,
    req: &Request,
    user_id: &str,
    client: Client,
    amr: &[&str],
    password_hash: Option<&str>,
) -> (Vec<Statement>, String, String) {
    let now = s.clock.now_ms();
    let sid = s.new_id();
    let refresh = new_token(s.rng.as_ref(), REFRESH_PREFIX);
    let user_agent: Option<String> = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect());
    let stmts = vec![
        Statement::new(
            "INSERT INTO sessions (id, user_id, client, amr, auth_time, created_at, last_used_at, expires_at, client_ip, user_agent) \
             SELECT ?1, id, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9 FROM users \
             WHERE id = ?2 AND (?10 IS NULL OR password_hash = ?10)",
            vec![
                sid.as_str().into(),
                user_id.into(),
                client.as_str().into(),
                json!(amr).to_string().into(),
                Value::Integer(now / 1000),
                Value::Integer(now),
                Value::Integer(now + REFRESH_SLIDING_MS),
                req.ctx
                    .client_ip
                    .map(|ip| ip.to_canonical().to_string())
                    .into(),
                user_agent.into(),
                password_hash.map(str::to_owned).into(),
            ],
        ),
        Statement::new(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) SELECT ?1, id, ?3 FROM sessions WHERE id = ?2",
            vec![
                hash_token(&refresh).into(),
                sid.as_str().into(),
                Value::Integer(now),
            ],
        ),
    ];
    (stmts, sid, refresh)
}

/// Whether refresh cookies may omit `Secure`: only when the deployment itself
/// is plain-http localhost (the kernel allows http issuers nowhere else).
fn cookie_secure(s: &Services) -> bool {
    !s.config.issuer.starts_with("http://")
}

/// The `Set-Cookie` value carrying (or, with `None`, clearing) the refresh token.
pub fn refresh_cookie(s: &Services, token: Option<&str>) -> String {
    let (value, max_age) = match token {
        Some(t) => (t, REFRESH_SLIDING_MS / 1000),
        None => ("", 0),
    };
    let secure = if cookie_secure(s) { "; Secure" } else { "" };
    format!(
        "{REFRESH_COOKIE}={value}; Path={REFRESH_COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// The refresh token a request carries in its cookie, if exactly one. Two
/// values mean someone planted a second cookie (e.g. from a sibling
/// subdomain, to log the victim into the attacker's session): refuse.
pub fn cookie_token(req: &Request) -> Result<Option<String>, Error> {
    let mut found = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.trim().to_owned());
    let first = found.next();
    if found.next().is_some() {
        return Err(Error::InvalidRefreshToken);
    }
    Ok(first)
}

/// Refuses a cookie-authenticated request whose `Origin` is not allowed.
pub fn check_origin(s: &Services, req: &Request) -> Result<(), Error> {
    let origin = req
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or(Error::CsrfRejected)?;
    if s.config.allowed_origins.iter().any(|o| o == origin) {
        Ok(())
    } else {
        Err(Error::CsrfRejected)
    }
}

/// The OAuth 2.0 token response; browsers get the refresh token as a cookie.
pub fn token_response(
    s: &Services,
    access: &str,
    refresh: Option<&str>,
    client: Client,
) -> Response {
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECS,
    });
    if let (Some(r), Client::Device) = (refresh, client) {
        body["refresh_token"] = json!(r);
    }
    let mut resp =
        edgecoder_kernel::http::json_response(StatusCode::OK, edgecoder_kernel::http::JSON, &body);
    if let (Some(r), Client::Browser) = (refresh, client)
        && let Ok(v) = HeaderValue::from_str(&refresh_cookie(s, Some(r)))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    // RFC 6749 §5.1.
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An audit INSERT that commits in the same batch as the change it records
/// and only if that change happened: `actor` and `target` are SQL expressions
/// over `from_where` (a `FROM ... WHERE ...` tail, or just `WHERE ...`),
/// whose parameters are numbered from `?8`.
#[allow(clippy::too_many_arguments)]
pub fn audit_when(
    s: &Services,
    req: &Request,
    actor: &str,
    action: &str,
    target: &str,
    outcome: Outcome,
    details: Json,
    from_where: &str,
    params: Vec<Value>,
) -> Statement {
    let mut all: Vec<Value> = vec![
        s.new_id().into(),
        Value::Integer(s.clock.now_ms()),
        action.into(),
        outcome.as_str().into(),
        req.ctx.request_id.as_str().into(),
        req.ctx
            .client_ip
            .map(|ip| ip.to_canonical().to_string())
            .into(),
        details.to_string().into(),
    ];
    all.extend(params);
    Statement::new(
        format!(
            "INSERT INTO audit_events (id, time, actor, action, target, outcome, request_id, client_ip, details) \
             SELECT ?1, ?2, {actor}, ?3, {target}, ?4, ?5, ?6, ?7 {from_where}"
        ),
        all,
    )
}
