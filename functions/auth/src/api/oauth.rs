//! Sign-in with OAuth 2.0 / OpenID Connect providers: the authorization-code
//! flow with PKCE, account resolution and linking, and one-time codes for
//! native apps.
//!
//! In scope:
//! - `start` and `link/start`: a state record (stored as its blake3 hash,
//!   single use, 10 minutes) holding the provider, the PKCE verifier (S256
//!   only), the nonce and `return_to`, bound to the browser by the hash of a
//!   secret in an `HttpOnly; Secure; SameSite=Lax` cookie; `return_to` is a
//!   relative path, a URL of an allowed origin, or a native app's registered
//!   scheme, and anything else is ignored (no open redirect);
//! - `callback`: consumes the state in one `DELETE … RETURNING` that also
//!   checks browser, provider and expiry; checks RFC 9207's `iss`; exchanges
//!   the code with the verifier; validates the ID token (`crate::oidc`) or,
//!   for GitHub, reads the user and verified-email APIs;
//! - account resolution: an existing link signs in; a new subject whose
//!   email matches a local account links only when the provider asserts the
//!   email verified *and* the local address is verified (the owner is told
//!   by email), otherwise 409 `account_exists_sign_in_to_link`; a new email
//!   creates an account with the provider's `email_verified`;
//! - links: list, and removal with step-up unless it is the last way in;
//! - native apps: a one-time code (60 s, single use, bound to the app's own
//!   PKCE challenge) in the redirect, exchanged at `POST /auth/oauth/exchange`.
//!
//! Out of scope: token and metadata checks (`crate::oidc`), provider
//! settings (the kernel's `oauth` module).

use crate::oauth_settings::{OAuthProvider, ProviderKind};
use crate::settings::Settings;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::{HeaderValue, Method, StatusCode, header};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok, response_doc};
use edgecoder_kernel::{OutboundRequest, Request, Response, Router, Services, Value};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::api::{authed, client_schema, token_response_docs, token_schema};
use crate::oidc::{self, Identity};
use crate::secrets::{hash_token, matches_secret, new_token, rfc3339};
use crate::session::{self, Client};
use crate::store;
use crate::store::oauth::{NewLink, NewState};
use crate::{DOCS, Error, mail, ratelimit, schemas};

/// A flow must come back within ten minutes.
pub const STATE_MS: i64 = 10 * 60 * 1000;
/// A native app's one-time code lives a minute.
pub const APP_CODE_MS: i64 = 60 * 1000;
/// The cookie binding flows to the browser that started them.
/// Over https the `__Host-` prefix keeps a sibling subdomain from planting
/// one (which would let it bind its own flows to a victim's browser).
pub const BROWSER_COOKIE_SECURE: &str = "__Host-edgecoder_oauth";
/// The name on plain-http localhost, where browsers refuse `__Host-`
/// cookies (they must be `Secure`).
pub const BROWSER_COOKIE_LOCAL: &str = "edgecoder_oauth";

fn cookie_name(s: &Services) -> &'static str {
    if s.config.issuer.starts_with("https://") {
        BROWSER_COOKIE_SECURE
    } else {
        BROWSER_COOKIE_LOCAL
    }
}
/// What a federated sign-in puts in `amr` (not an RFC 8176 value: the
/// provider decides how the user authenticated).
pub const AMR: [&str; 1] = ["fed"];
const APP_CODE_PREFIX: &str = "eoc_";
const MAX_RETURN_TO: usize = 2048;

fn provider<'a>(s: &'a Services, req: &Request) -> Result<&'a OAuthProvider, Error> {
    Settings::of(s)?
        .oauth
        .provider(req.param("provider").unwrap_or_default())
        .ok_or(Error::OAuthProviderUnknown)
}

fn redirect_uri(s: &Services, p: &OAuthProvider) -> String {
    format!("{}/auth/oauth/{}/callback", s.config.issuer, p.id)
}

/// Where the flow ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReturnTo {
    /// A page: sessions arrive as the refresh cookie.
    Web(String),
    /// A native app: a one-time code in the query.
    App(String),
}

impl ReturnTo {
    fn stored(&self) -> String {
        match self {
            ReturnTo::Web(u) => format!("web:{u}"),
            ReturnTo::App(u) => format!("app:{u}"),
        }
    }

    fn load(raw: &str) -> ReturnTo {
        match raw.split_once(':') {
            Some(("app", u)) => ReturnTo::App(u.to_owned()),
            Some((_, u)) => ReturnTo::Web(u.to_owned()),
            None => ReturnTo::Web(raw.to_owned()),
        }
    }

    fn url(&self) -> &str {
        match self {
            ReturnTo::Web(u) | ReturnTo::App(u) => u,
        }
    }

    /// The URL with `params` added to its query.
    fn with(&self, params: &[(&str, &str)]) -> String {
        let url = self.url();
        let (base, fragment) = match url.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (url, None),
        };
        let mut out = base.to_owned();
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            q.append_pair(k, v);
        }
        out.push(if base.contains('?') { '&' } else { '?' });
        out.push_str(&q.finish());
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }
}

/// The portal's origin: relative `return_to` paths are on it.
fn portal(s: &Services) -> &str {
    s.config
        .allowed_origins
        .first()
        .map(String::as_str)
        .unwrap_or("")
}

/// Resolves the requested `return_to`; anything not allowed falls back to
/// the portal's root rather than failing, so a tampered link still signs in
/// but never leaves for another site.
fn return_to(s: &Services, raw: Option<&str>) -> ReturnTo {
    let default = ReturnTo::Web(format!("{}/", portal(s)));
    let Some(raw) = raw.filter(|r| !r.is_empty() && r.len() <= MAX_RETURN_TO) else {
        return default;
    };
    // Printable ASCII only: it ends up in a Location header.
    if raw.chars().any(|c| !c.is_ascii_graphic() || c == '\\') {
        return default;
    }
    if raw.starts_with('/') && !raw.starts_with("//") {
        return ReturnTo::Web(format!("{}{raw}", portal(s)));
    }
    if let Some((scheme, rest)) = raw.split_once("://")
        && matches!(scheme, "http" | "https")
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let origin = format!("{scheme}://{authority}");
        if !authority.contains('@') && s.config.allowed_origins.contains(&origin) {
            return ReturnTo::Web(raw.to_owned());
        }
        return default;
    }
    if let Some((scheme, _)) = raw.split_once(':')
        && Settings::of(s).is_ok_and(|st| {
            st.oauth
                .app_schemes
                .iter()
                .any(|a| a.eq_ignore_ascii_case(scheme))
        })
    {
        return ReturnTo::App(raw.to_owned());
    }
    default
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random(s: &Services) -> String {
    let mut raw = [0u8; 32];
    s.rng.fill(&mut raw);
    b64(&raw)
}

/// RFC 7636 S256.
fn s256(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

fn is_b64_43(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The browser's binding secret, if it sent exactly one well-formed cookie.
fn browser_secret(s: &Services, req: &Request) -> Option<String> {
    let name = cookie_name(s);
    let mut found = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_owned());
    let first = found.next()?;
    (found.next().is_none() && is_b64_43(&first)).then_some(first)
}

fn browser_cookie(s: &Services, secret: &str) -> String {
    let max_age = STATE_MS / 1000;
    match cookie_name(s) {
        BROWSER_COOKIE_SECURE => format!(
            "{BROWSER_COOKIE_SECURE}={secret}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax; Secure"
        ),
        _ => format!(
            "{BROWSER_COOKIE_LOCAL}={secret}; Path=/auth/oauth; Max-Age={max_age}; HttpOnly; SameSite=Lax"
        ),
    }
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn redirect(location: &str) -> Result<Response, Error> {
    let mut resp = Response::new(Vec::new());
    *resp.status_mut() = StatusCode::FOUND;
    let value = HeaderValue::from_str(location).map_err(|_| {
        edgecoder_kernel::Error::InvalidRequest("return_to is not a valid URL.".into())
    })?;
    resp.headers_mut().insert(header::LOCATION, value);
    no_store(&mut resp);
    Ok(resp)
}

fn set_cookie(resp: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A provider's error code if it is a plain RFC 6749 code, else a generic
/// one: it goes into redirects and audit records.
fn error_code(raw: &str) -> String {
    if !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        raw.to_owned()
    } else {
        "oauth_error".to_owned()
    }
}

fn oidc_parts(p: &OAuthProvider) -> Option<(&str, bool)> {
    match &p.kind {
        ProviderKind::Oidc {
            issuer,
            tenant_template,
        } => Some((issuer, *tenant_template)),
        ProviderKind::GitHub { .. } => None,
    }
}

async fn limit_address(s: &Services, req: &Request) -> Result<(), Error> {
    if let Some(ip) = ratelimit::ip_subject(&req.ctx) {
        ratelimit::attempt(s, &ratelimit::OAUTH_PER_IP, &ip).await?;
    }
    Ok(())
}

/// What a started flow needs to remember.
struct Begin<'a> {
    purpose: &'static str,
    user_id: Option<&'a str>,
    session_id: Option<&'a str>,
    return_to: ReturnTo,
    app_challenge: Option<String>,
}

/// Stores a state record and returns the authorization URL and the cookie.
async fn begin(
    s: &Services,
    req: &Request,
    p: &OAuthProvider,
    b: Begin<'_>,
) -> Result<(String, String), Error> {
    limit_address(s, req).await?;
    let endpoint = match oidc_parts(p) {
        Some((issuer, template)) => {
            oidc::discovery(s, p, issuer, template)
                .await?
                .authorization_endpoint
        }
        None => match &p.kind {
            ProviderKind::GitHub { web_base, .. } => format!("{web_base}/login/oauth/authorize"),
            ProviderKind::Oidc { .. } => return Err(Error::OAuthProviderUnknown),
        },
    };
    let secret = browser_secret(s, req).unwrap_or_else(|| random(s));
    let (state, nonce, verifier) = (random(s), random(s), random(s));
    let now = s.clock.now_ms();
    store::oauth::put_state(
        s.sql.as_ref(),
        NewState {
            state_hash: &hash_token(&state),
            browser_hash: &hash_token(&secret),
            provider: &p.id,
            code_verifier: &verifier,
            nonce: &nonce,
            return_to: b.return_to.stored(),
            purpose: b.purpose,
            user_id: b.user_id,
            session_id: b.session_id,
            app_challenge: b.app_challenge,
            now,
            expires_at: now + STATE_MS,
        },
    )
    .await?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &redirect_uri(s, p))
        .append_pair("scope", &p.scopes)
        .append_pair("state", &state);
    if oidc_parts(p).is_some() {
        q.append_pair("nonce", &nonce);
    }
    q.append_pair("code_challenge", &s256(&verifier))
        .append_pair("code_challenge_method", "S256");
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok((
        format!("{endpoint}{sep}{}", q.finish()),
        browser_cookie(s, &secret),
    ))
}

/// `GET /auth/oauth/{provider}/start?return_to=`: 302 to the provider.
/// Native apps add their own `code_challenge` (S256).
pub async fn start(s: &Services, req: Request) -> Result<Response, Error> {
    let p = provider(s, &req)?;
    let target = return_to(s, req.query_param("return_to").as_deref());
    let app_challenge = match &target {
        ReturnTo::App(_) => {
            // RFC 7636 defaults to `plain`: S256 must be said.
            if req.query_param("code_challenge_method").as_deref() != Some("S256") {
                return Err(edgecoder_kernel::Error::InvalidRequest(
                    "code_challenge_method must be S256.".into(),
                )
                .into());
            }
            match req.query_param("code_challenge") {
                Some(c) if is_b64_43(&c) => Some(c),
                _ => {
                    return Err(edgecoder_kernel::Error::InvalidRequest(
                        "A native app's return_to needs code_challenge (base64url of a SHA-256) with code_challenge_method=S256."
                            .into(),
                    )
                    .into());
                }
            }
        }
        ReturnTo::Web(_) => None,
    };
    let (url, cookie) = begin(
        s,
        &req,
        p,
        Begin {
            purpose: "sign_in",
            user_id: None,
            session_id: None,
            return_to: target,
            app_challenge,
        },
    )
    .await?;
    let mut resp = redirect(&url)?;
    set_cookie(&mut resp, &cookie);
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkStart {
    #[serde(default)]
    return_to: Option<String>,
}

/// `POST /auth/oauth/{provider}/link/start` (signed in, step-up): the URL the
/// portal sends the browser to, to add this provider to the account.
pub async fn link_start(s: &Services, req: Request) -> Result<Response, Error> {
    let principal = session::authenticate(s, &req).await?;
    principal.require_step_up(s.clock.now_ms())?;
    let p = provider(s, &req)?;
    let body: LinkStart = if req.body.is_empty() {
        LinkStart { return_to: None }
    } else {
        req.json()?
    };
    let target = match return_to(s, body.return_to.as_deref()) {
        // Linking happens in the portal; an app link has no session to add to.
        ReturnTo::App(_) => return_to(s, None),
        web => web,
    };
    let (url, cookie) = begin(
        s,
        &req,
        p,
        Begin {
            purpose: "link",
            user_id: Some(&principal.user_id),
            session_id: Some(&principal.session_id),
            return_to: target,
            app_challenge: None,
        },
    )
    .await?;
    audit::note(
        s,
        &req.ctx,
        &principal.actor(),
        "auth.oauth.link_start",
        Some(&principal.user_id),
        Outcome::Success,
        json!({"provider": p.id}),
    )
    .await?;
    let mut resp = ok_json(&json!({"authorization_url": url}));
    no_store(&mut resp);
    set_cookie(&mut resp, &cookie);
    Ok(resp)
}

/// A consumed state record.
struct Flow {
    verifier: String,
    nonce: String,
    return_to: ReturnTo,
    purpose: String,
    user_id: Option<String>,
    session_id: Option<String>,
    app_challenge: Option<String>,
}

async fn consume_state(s: &Services, req: &Request, p: &OAuthProvider) -> Result<Flow, Error> {
    let secret = browser_secret(s, req).ok_or(Error::OAuthStateInvalid)?;
    let state = req
        .query_param("state")
        .filter(|st| is_b64_43(st))
        .ok_or(Error::OAuthStateInvalid)?;
    // Only the browser that started the flow can use (and so use up) it.
    let stored = store::oauth::take_state(
        s.sql.as_ref(),
        &hash_token(&state),
        &hash_token(&secret),
        &p.id,
        s.clock.now_ms(),
    )
    .await?
    .ok_or(Error::OAuthStateInvalid)?;
    Ok(Flow {
        verifier: stored.code_verifier,
        nonce: stored.nonce,
        return_to: ReturnTo::load(&stored.return_to),
        purpose: stored.purpose,
        user_id: stored.user_id,
        session_id: stored.session_id,
        app_challenge: stored.app_challenge,
    })
}

/// Exchanges the code at the token endpoint; returns the token response.
async fn exchange_code(
    s: &Services,
    p: &OAuthProvider,
    token_endpoint: &str,
    basic_auth: bool,
    code: &str,
    verifier: &str,
) -> Result<Json, Error> {
    let fail = |why: String| Error::OAuthTokenExchangeFailed(why);
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &redirect_uri(s, p))
        .append_pair("code_verifier", verifier);
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    match (&p.client_secret, basic_auth) {
        (Some(secret), true) => {
            // RFC 6749 §2.3.1: each part form-encoded before joining.
            let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let creds = STANDARD.encode(format!("{}:{}", enc(&p.client_id), enc(secret)));
            headers.push(("authorization".to_owned(), format!("Basic {creds}")));
        }
        (Some(secret), false) => {
            form.append_pair("client_id", &p.client_id)
                .append_pair("client_secret", secret);
        }
        (None, _) => {
            form.append_pair("client_id", &p.client_id);
        }
    }
    let resp = s
        .outbound
        .send(OutboundRequest {
            method: Method::POST,
            url: token_endpoint.to_owned(),
            headers,
            body: form.finish().into_bytes(),
        })
        .await
        .map_err(|e| fail(e.to_string()))?;
    if resp.body.len() > 64 * 1024 {
        return Err(fail(format!("status {}, response too large", resp.status)));
    }
    let body: Json = serde_json::from_slice(&resp.body)
        .map_err(|_| fail(format!("status {}, not JSON", resp.status)))?;
    // GitHub reports failures with 200 and an `error` member.
    if !(200..300).contains(&resp.status) || body.get("error").is_some() {
        let code = error_code(body.get("error").and_then(Json::as_str).unwrap_or(""));
        return Err(fail(format!("status {}, error {code}", resp.status)));
    }
    Ok(body)
}

/// The identity behind an authorization code.
async fn identify(
    s: &Services,
    req: &Request,
    p: &OAuthProvider,
    flow: &Flow,
    code: &str,
) -> Result<Identity, Error> {
    match &p.kind {
        ProviderKind::Oidc {
            issuer,
            tenant_template,
        } => {
            let disco = oidc::discovery(s, p, issuer, *tenant_template).await?;
            // RFC 9207: a provider that says it sends `iss` must have sent
            // ours (a mix-up attack swaps providers between the legs).
            match req.query_param("iss") {
                Some(iss) if !*tenant_template && iss != disco.issuer => {
                    return Err(Error::OAuthIssuerMismatch);
                }
                None if disco.authorization_response_iss_parameter_supported => {
                    return Err(Error::OAuthIssuerMismatch);
                }
                _ => {}
            }
            let methods = &disco.token_endpoint_auth_methods_supported;
            let basic = methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic");
            let tokens =
                exchange_code(s, p, &disco.token_endpoint, basic, code, &flow.verifier).await?;
            let id_token = tokens
                .get("id_token")
                .and_then(Json::as_str)
                .ok_or_else(|| {
                    Error::OAuthTokenExchangeFailed("no id_token in the token response".into())
                })?;
            let id = oidc::validate(
                s,
                p,
                &disco,
                id_token,
                &oidc::Expected {
                    issuer: &disco.issuer,
                    tenant_template: *tenant_template,
                    client_id: &p.client_id,
                    nonce: &flow.nonce,
                    now_secs: s.clock.now_ms() / 1000,
                },
            )
            .await?;
            let access = tokens.get("access_token").and_then(Json::as_str);
            oidc::with_userinfo(s, &disco, access, id).await
        }
        ProviderKind::GitHub { web_base, api_base } => {
            let tokens = exchange_code(
                s,
                p,
                &format!("{web_base}/login/oauth/access_token"),
                false,
                code,
                &flow.verifier,
            )
            .await?;
            let access = tokens
                .get("access_token")
                .and_then(Json::as_str)
                .ok_or_else(|| {
                    Error::OAuthTokenExchangeFailed("no access_token in the token response".into())
                })?;
            github_identity(s, api_base, access).await
        }
    }
}

/// GitHub's user (stable numeric id) and its primary verified email.
async fn github_identity(s: &Services, api_base: &str, access: &str) -> Result<Identity, Error> {
    let headers = || {
        vec![
            ("authorization".to_owned(), format!("Bearer {access}")),
            ("user-agent".to_owned(), "edgecoder-edge".to_owned()),
            ("x-github-api-version".to_owned(), "2022-11-28".to_owned()),
        ]
    };
    let user = oidc::get_json(s, &format!("{api_base}/user"), headers()).await?;
    let subject = user
        .get("id")
        .and_then(Json::as_u64)
        .ok_or_else(|| Error::OAuthProviderUnavailable("GitHub user without an id".into()))?
        .to_string();
    let emails = oidc::get_json(s, &format!("{api_base}/user/emails"), headers()).await?;
    let list = emails.as_array().cloned().unwrap_or_default();
    let verified = |e: &&Json| e.get("verified").and_then(Json::as_bool) == Some(true);
    let primary = |e: &&Json| e.get("primary").and_then(Json::as_bool) == Some(true);
    // The primary verified address, else another verified one, else the
    // primary one as unverified (never linked on, see resolve_account).
    let chosen = list
        .iter()
        .filter(verified)
        .find(primary)
        .or_else(|| list.iter().find(verified))
        .or_else(|| list.iter().find(primary));
    let email = chosen
        .and_then(|e| e.get("email"))
        .and_then(Json::as_str)
        .map(str::to_owned);
    let email_verified = chosen.is_some_and(|e| verified(&e));
    Ok(Identity {
        subject,
        email: email.as_deref().and_then(oidc::normalise_email),
        email_verified,
        name: user
            .get("name")
            .or_else(|| user.get("login"))
            .and_then(Json::as_str)
            .and_then(oidc::display_name),
    })
}

/// `GET /auth/oauth/{provider}/callback`: the provider's redirect.
pub async fn callback(s: &Services, req: Request) -> Result<Response, Error> {
    let p = provider(s, &req)?;
    limit_address(s, &req).await?;
    let flow = match consume_state(s, &req, p).await {
        Ok(f) => f,
        Err(e) => {
            audit::note(
                s,
                &req.ctx,
                "anonymous",
                "auth.oauth.callback",
                None,
                Outcome::Failure,
                json!({"provider": p.id, "reason": "state_invalid"}),
            )
            .await?;
            return Err(e);
        }
    };
    if let Some(error) = req.query_param("error") {
        // Only a plain error code travels on; descriptions stay behind.
        let code = error_code(&error);
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.oauth.callback",
            None,
            Outcome::Failure,
            json!({"provider": p.id, "reason": "provider_error", "error": code}),
        )
        .await?;
        return redirect(
            &flow
                .return_to
                .with(&[("error", &code), ("provider", &p.id)]),
        );
    }
    match finish(s, &req, p, &flow).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            audit::note(
                s,
                &req.ctx,
                flow.user_id
                    .as_deref()
                    .map(|u| format!("user:{u}"))
                    .as_deref()
                    .unwrap_or("anonymous"),
                "auth.oauth.callback",
                flow.user_id.as_deref(),
                Outcome::Failure,
                json!({"provider": p.id, "purpose": flow.purpose, "reason": e.to_string()}),
            )
            .await?;
            Err(e)
        }
    }
}

/// The callback after its state checked out: code, identity, then sign-in,
/// link or app code.
async fn finish(
    s: &Services,
    req: &Request,
    p: &OAuthProvider,
    flow: &Flow,
) -> Result<Response, Error> {
    let code = req
        .query_param("code")
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| {
            edgecoder_kernel::Error::InvalidRequest(
                "The callback has neither code nor error.".into(),
            )
        })?;
    if flow.purpose == "link" {
        let user_id = flow.user_id.clone().ok_or(Error::OAuthStateInvalid)?;
        // The flow acts for the session that started it, and only while that
        // session lives: a sign-out everywhere (or a reset) cancels links in
        // progress, even when the state is in a thief's browser.
        let session_id = flow.session_id.as_deref().ok_or(Error::OAuthStateInvalid)?;
        if !store::sessions::is_live(s.sql.as_ref(), session_id, &user_id, s.clock.now_ms()).await?
        {
            return Err(Error::SessionRevoked);
        }
        let identity = identify(s, req, p, flow, &code).await?;
        link(s, req, p, &identity, &user_id, session_id).await?;
        if let Some(email) = store::users::email_of(s.sql.as_ref(), &user_id).await? {
            mail::send(
                s,
                &req.ctx,
                &mail::provider_link_added(&s.config.issuer, &email, &p.name),
            )
            .await;
        }
        return redirect(&flow.return_to.with(&[("linked", &p.id)]));
    }
    let identity = identify(s, req, p, flow, &code).await?;
    let user_id = resolve_account(s, req, p, &identity).await?;
    match (&flow.return_to, &flow.app_challenge) {
        (ReturnTo::App(_), Some(challenge)) => {
            let code = new_token(s.rng.as_ref(), APP_CODE_PREFIX);
            let now = s.clock.now_ms();
            s.sql
                .batch(vec![
                    store::oauth::expire_app_codes(now),
                    store::oauth::insert_app_code(
                        &hash_token(&code),
                        &user_id,
                        challenge,
                        &p.id,
                        now,
                        now + APP_CODE_MS,
                    ),
                    audit::statement_for(
                        s,
                        &req.ctx,
                        &format!("user:{user_id}"),
                        "auth.oauth.app_code",
                        Some(&user_id),
                        Outcome::Success,
                        json!({"provider": p.id, "expires_in": APP_CODE_MS / 1000}),
                    ),
                ])
                .await?;
            redirect(&flow.return_to.with(&[("code", &code)]))
        }
        _ => {
            let (mut stmts, sid, refresh) =
                session::create_session(s, req, &user_id, Client::Browser, &AMR, None);
            stmts.push(audit::statement_for(
                s,
                &req.ctx,
                &format!("user:{user_id}"),
                "auth.login",
                Some(&user_id),
                Outcome::Success,
                json!({"session": sid, "client": "browser", "method": "oauth", "provider": p.id}),
            ));
            let results = s.sql.batch(stmts).await?;
            if results.first().map(|r| r.changes) != Some(1) {
                return Err(Error::OAuthStateInvalid);
            }
            let mut resp = redirect(flow.return_to.url())?;
            set_cookie(&mut resp, &session::refresh_cookie(s, Some(&refresh)));
            Ok(resp)
        }
    }
}

/// The user a sign-in resolves to, linking or creating as the rules allow.
async fn resolve_account(
    s: &Services,
    req: &Request,
    p: &OAuthProvider,
    id: &Identity,
) -> Result<String, Error> {
    let now = s.clock.now_ms();
    let linked =
        store::oauth::touch_link(s.sql.as_ref(), &p.id, &id.subject, now, id.email.as_deref())
            .await?;
    if let Some(user_id) = linked {
        return Ok(user_id);
    }
    let email = id.email.clone().ok_or(Error::OAuthEmailMissing)?;
    let existing = store::users::owner_of_email(s.sql.as_ref(), &email).await?;
    if let Some(store::users::EmailOwner {
        id: user_id,
        email_verified: local_verified,
    }) = existing
    {
        if !(id.email_verified && local_verified) {
            audit::note(s, &req.ctx,
                "anonymous",
                "auth.oauth.link",
                Some(&user_id),
                Outcome::Failure,
                json!({"provider": p.id, "automatic": true, "reason": "email_not_verified_on_both_sides",
                       "provider_email_verified": id.email_verified, "local_email_verified": local_verified}),
            )
            .await?;
            return Err(Error::AccountExistsSignInToLink);
        }
        // The provider proves the address. A password chosen before anyone
        // proved it (pre-hijacking: the attacker signed up first, the owner
        // verified later) does not stay beside the proven owner, nor do the
        // sessions and passkeys it opened, nor links made on an unverified
        // provider address. The clean-up comes first in the batch: the owner
        // is demonstrably here, whether or not the link below lands.
        let claimed = store::users::has_unproven_password(s.sql.as_ref(), &user_id).await?;
        let mut stmts = Vec::new();
        if claimed {
            stmts.extend([
                store::users::drop_unproven_password(&user_id, now),
                store::sessions::revoke_all_for_proven_owner(&user_id, now),
                store::passkeys::delete_all_of(&user_id),
                store::oauth::delete_unverified_links_of(&user_id),
                audit::statement_for(
                    s,
                    &req.ctx,
                    "system:oauth",
                    "auth.account.claim",
                    Some(&user_id),
                    Outcome::Success,
                    json!({"provider": p.id, "removed": ["unproven_password", "sessions", "passkeys", "unverified_links"]}),
                ),
            ]);
        }
        let link_at = stmts.len();
        stmts.extend([
                store::oauth::insert_link(new_link(p, id), &user_id, now),
                session::audit_when(
                    s,
                    req,
                    "'system:oauth'",
                    "auth.oauth.link",
                    "?8",
                    Outcome::Success,
                    json!({"provider": p.id, "automatic": true, "subject": id.subject}),
                    "FROM oauth_links WHERE user_id = ?8 AND provider = ?9 AND subject = ?10 AND created_at = ?11",
                    vec![
                        user_id.as_str().into(),
                        p.id.as_str().into(),
                        id.subject.as_str().into(),
                        Value::Integer(now),
                    ],
                ),
            ]);
        let results = s.sql.batch(stmts).await?;
        if results.get(link_at).map(|r| r.changes) != Some(1) {
            // The account already links another subject of this provider.
            return Err(Error::AccountExistsSignInToLink);
        }
        let notice = if claimed {
            mail::account_claimed(&s.config.issuer, &email, &p.name)
        } else {
            mail::provider_linked(&s.config.issuer, &email, &p.name)
        };
        mail::send(s, &req.ctx, &notice).await;
        return Ok(user_id);
    }
    let user_id = s.new_id();
    let results = s
        .sql
        .batch(vec![
            store::users::insert_federated(
                &user_id,
                &email,
                id.email_verified.then_some(now),
                id.name.clone(),
                now,
            ),
            store::oauth::insert_link_for_new_user(
                &p.id,
                &id.subject,
                &user_id,
                &email,
                now,
                id.email_verified,
            ),
            // A concurrent sign-in of the same subject linked it first: no
            // account without a way in is left behind.
            store::users::delete_if_unlinked(&user_id),
            session::audit_when(
                s,
                req,
                "'user:' || user_id",
                "auth.signup",
                "user_id",
                Outcome::Success,
                json!({"method": "oauth", "provider": p.id, "email_verified": id.email_verified}),
                "FROM oauth_links WHERE user_id = ?8 AND provider = ?9",
                vec![user_id.as_str().into(), p.id.as_str().into()],
            ),
        ])
        .await?;
    if results.get(1).map(|r| r.changes) == Some(1) {
        return Ok(user_id);
    }
    if results.first().map(|r| r.changes) == Some(1) {
        // Our user lost the race for the link; the winner's account is it.
        if let Some(u) = store::oauth::linked_user(s.sql.as_ref(), &p.id, &id.subject).await? {
            return Ok(u);
        }
    }
    // Someone registered the address in between.
    Err(Error::AccountExistsSignInToLink)
}

/// The link an identity of provider `p` makes.
fn new_link<'a>(p: &'a OAuthProvider, id: &'a Identity) -> NewLink<'a> {
    NewLink {
        provider: &p.id,
        subject: &id.subject,
        email: id.email.as_deref(),
        email_verified: id.email_verified,
    }
}

/// Links the provider account to `user_id` (an explicit link from the
/// session `session_id`, which must still live when the link is written).
async fn link(
    s: &Services,
    req: &Request,
    p: &OAuthProvider,
    id: &Identity,
    user_id: &str,
    session_id: &str,
) -> Result<(), Error> {
    let owner = store::oauth::linked_user(s.sql.as_ref(), &p.id, &id.subject).await?;
    match owner.as_deref() {
        Some(u) if u == user_id => return Ok(()),
        Some(_) => {
            audit::note(
                s,
                &req.ctx,
                &format!("user:{user_id}"),
                "auth.oauth.link",
                Some(user_id),
                Outcome::Failure,
                json!({"provider": p.id, "automatic": false, "reason": "linked_elsewhere"}),
            )
            .await?;
            return Err(Error::OAuthIdentityLinkedElsewhere);
        }
        None => {}
    }
    let now = s.clock.now_ms();
    let results = s
        .sql
        .batch(vec![
            store::oauth::insert_link_in_session(new_link(p, id), user_id, session_id, now),
            session::audit_when(
                s,
                req,
                "?8",
                "auth.oauth.link",
                "?9",
                Outcome::Success,
                json!({"provider": p.id, "automatic": false, "subject": id.subject}),
                "FROM oauth_links WHERE user_id = ?9 AND provider = ?10 AND subject = ?11 AND created_at = ?12",
                vec![
                    format!("user:{user_id}").into(),
                    user_id.into(),
                    p.id.as_str().into(),
                    id.subject.as_str().into(),
                    Value::Integer(now),
                ],
            ),
        ])
        .await?;
    if results.first().map(|r| r.changes) != Some(1) {
        if !store::sessions::is_live(s.sql.as_ref(), session_id, user_id, now).await? {
            return Err(Error::SessionRevoked);
        }
        return Err(Error::OAuthProviderAlreadyLinked);
    }
    Ok(())
}

/// `GET /auth/oauth/links`: the caller's linked providers.
pub async fn links(s: &Services, req: Request) -> Result<Response, Error> {
    let principal = session::authenticate(s, &req).await?;
    let stored = store::oauth::links_of(s.sql.as_ref(), &principal.user_id).await?;
    let oauth = &Settings::of(s)?.oauth;
    let links: Vec<Json> = stored
        .iter()
        .map(|l| {
            json!({
                "provider": l.provider,
                "name": oauth.provider(&l.provider).map(|p| p.name.as_str()),
                "email": l.email,
                "created_at": l.created_at.map(rfc3339),
                "last_used_at": l.last_used_at.map(rfc3339),
            })
        })
        .collect();
    Ok(ok_json(&json!({"links": links})))
}

/// `DELETE /auth/oauth/links/{provider}`: step-up; never the last way in.
pub async fn unlink(s: &Services, req: Request) -> Result<Response, Error> {
    let principal = session::authenticate(s, &req).await?;
    principal.require_step_up(s.clock.now_ms())?;
    // Any provider id, configured or no longer: a link to a provider the
    // operator removed must still be removable.
    let provider_id = req.param("provider").unwrap_or_default().to_owned();
    let removed = store::oauth::unlink_unless_last(
        s.sql.as_ref(),
        &principal.user_id,
        &provider_id,
        configured_ids(s),
    )
    .await?;
    if removed {
        audit::note(
            s,
            &req.ctx,
            &principal.actor(),
            "auth.oauth.unlink",
            Some(&principal.user_id),
            Outcome::Success,
            json!({"provider": provider_id}),
        )
        .await?;
        return Ok(ok_json(
            &json!({"provider": provider_id, "status": "deleted"}),
        ));
    }
    let err = if store::oauth::is_linked(s.sql.as_ref(), &principal.user_id, &provider_id).await? {
        Error::LastSignInMethod
    } else {
        Error::OAuthLinkNotFound
    };
    audit::note(
        s,
        &req.ctx,
        &principal.actor(),
        "auth.oauth.unlink",
        Some(&principal.user_id),
        Outcome::Failure,
        json!({"provider": provider_id, "reason": err.to_string()}),
    )
    .await?;
    Err(err)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    code: String,
    code_verifier: String,
    #[serde(default)]
    client: Option<String>,
}

/// `POST /auth/oauth/exchange`: a native app trades its one-time code and
/// PKCE verifier for a session (device tokens in the body by default).
pub async fn exchange(s: &Services, req: Request) -> Result<Response, Error> {
    let body: Exchange = req.json()?;
    limit_address(s, &req).await?;
    let client = Client::parse(Some(body.client.as_deref().unwrap_or("device")))?;
    let fail = |reason: &str| {
        audit::note(
            s,
            &req.ctx,
            "anonymous",
            "auth.oauth.exchange",
            None,
            Outcome::Failure,
            json!({"reason": reason}),
        )
    };
    if !crate::secrets::well_formed(&body.code, APP_CODE_PREFIX)
        || !(43..=128).contains(&body.code_verifier.len())
    {
        fail("malformed").await?;
        return Err(Error::OAuthCodeInvalid);
    }
    // Consumed whatever the verifier: a guessed verifier burns the code.
    let consumed =
        store::oauth::take_app_code(s.sql.as_ref(), &hash_token(&body.code), s.clock.now_ms())
            .await?;
    let Some(store::oauth::AppCode {
        user_id,
        challenge,
        provider,
    }) = consumed
    else {
        fail("unknown_or_expired").await?;
        return Err(Error::OAuthCodeInvalid);
    };
    if !matches_secret(&s256(&body.code_verifier), Some(&challenge)) {
        fail("verifier_mismatch").await?;
        return Err(Error::OAuthCodeInvalid);
    }
    let (mut stmts, sid, refresh) = session::create_session(s, &req, &user_id, client, &AMR, None);
    stmts.push(audit::statement_for(s, &req.ctx,
        &format!("user:{user_id}"),
        "auth.login",
        Some(&user_id),
        Outcome::Success,
        json!({"session": sid, "client": client.as_str(), "method": "oauth", "provider": provider, "via": "app_code"}),
    ));
    let results = s.sql.batch(stmts).await?;
    if results.first().map(|r| r.changes) != Some(1) {
        return Err(Error::OAuthCodeInvalid);
    }
    let access = session::access_token(s, &sid).await?;
    Ok(session::token_response(s, &access, Some(&refresh), client))
}

/// The configured providers (none where the auth settings are missing: the
/// routes that need them answer 503 on their own).
fn providers(s: &Services) -> &[OAuthProvider] {
    Settings::of(s).map_or(&[], |st| st.oauth.providers.as_slice())
}

/// The configured provider ids as a JSON array, for SQL's `json_each`: a
/// link to a provider the operator has removed no longer signs anyone in,
/// so it does not count as a remaining way in.
pub fn configured_ids(s: &Services) -> String {
    let ids: Vec<&str> = providers(s).iter().map(|p| p.id.as_str()).collect();
    json!(ids).to_string()
}

/// The providers for `/auth/capabilities`.
pub fn capabilities(s: &Services) -> Vec<Json> {
    providers(s)
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "protocol": if oidc_parts(p).is_some() { "oidc" } else { "oauth2" },
                "start": format!("/auth/oauth/{}/start", p.id),
            })
        })
        .collect()
}

/// The OAuth sign-in routes: start, callback, linking, the native app exchange.
pub fn routes(r: Router) -> Router {
    r.route(
        Method::GET,
        "/auth/oauth/{provider}/start",
        endpoint(|s, r| async move { start(&s, r).await }),
        start_doc(),
    )
    .route(
        Method::GET,
        "/auth/oauth/{provider}/callback",
        endpoint(|s, r| async move { callback(&s, r).await }),
        callback_doc(),
    )
    .route(
        Method::POST,
        "/auth/oauth/{provider}/link/start",
        endpoint(|s, r| async move { link_start(&s, r).await }),
        link_start_doc(),
    )
    .route(
        Method::GET,
        "/auth/oauth/links",
        endpoint(|s, r| async move { links(&s, r).await }),
        links_doc(),
    )
    .route(
        Method::DELETE,
        "/auth/oauth/links/{provider}",
        endpoint(|s, r| async move { unlink(&s, r).await }),
        unlink_doc(),
    )
    .route(
        Method::POST,
        "/auth/oauth/exchange",
        endpoint(|s, r| async move { exchange(&s, r).await }),
        exchange_doc(),
    )
}

fn start_doc() -> RouteDoc {
    let summary = "302 to the provider (?return_to=: a relative path, an allowed origin's URL, or a native app's scheme with ?code_challenge=); sets the browser-binding cookie";
    let redirect = "to the provider's authorization endpoint (code flow, PKCE S256, state, nonce)";
    DOCS.op(
        "oauth_start",
        summary,
        None,
        vec![
            response_doc(302, redirect, None),
            err(
                400,
                "invalid_request (app return_to without code_challenge)",
            ),
            err(404, "oauth_provider_unknown"),
            err(429, "rate_limited"),
            err(502, "oauth_provider_unavailable"),
        ],
    )
}

fn callback_doc() -> RouteDoc {
    let summary = "The provider's redirect: checks the state and its browser, exchanges the code, validates the ID token, signs in (refresh cookie) or links, then 302 to return_to";
    let redirect = "to return_to (?error= when the provider refused; ?code= for native apps; ?linked= after linking)";
    let conflict = "account_exists_sign_in_to_link / oauth_identity_linked_elsewhere / oauth_provider_already_linked";
    DOCS.op(
        "oauth_callback",
        summary,
        None,
        vec![
            response_doc(302, redirect, None),
            err(
                400,
                "oauth_state_invalid / oauth_issuer_mismatch / oauth_email_missing",
            ),
            err(401, "oauth_id_token_invalid / invalid_token"),
            err(404, "oauth_provider_unknown"),
            err(409, conflict),
            err(429, "rate_limited"),
            err(
                502,
                "oauth_token_exchange_failed / oauth_provider_unavailable",
            ),
        ],
    )
}

fn link_start_doc() -> RouteDoc {
    let summary = "Start linking a provider to the signed-in account (step-up); returns the URL to send the browser to and sets the browser-binding cookie";
    DOCS.op(
        "oauth_link_start",
        summary,
        object(&[], json!({"return_to": {"type": "string"}})),
        authed(vec![
            ok(200, "{authorization_url}").with_schema(schemas::oauth_link_start()),
            err(403, "step_up_required"),
            err(404, "oauth_provider_unknown"),
            err(502, "oauth_provider_unavailable"),
        ]),
    )
}

fn links_doc() -> RouteDoc {
    DOCS.op(
        "oauth_links",
        "The caller's linked sign-in providers",
        None,
        authed(vec![ok(200, "{links}").with_schema(schemas::oauth_links())]),
    )
}

fn unlink_doc() -> RouteDoc {
    DOCS.op(
        "oauth_unlink",
        "Remove a linked provider (step-up; never the last way to sign in)",
        None,
        authed(vec![
            ok(200, "{provider, status: deleted}").with_schema(schemas::oauth_unlinked()),
            err(403, "step_up_required"),
            err(404, "oauth_link_not_found"),
            err(409, "last_sign_in_method"),
        ]),
    )
}

fn exchange_doc() -> RouteDoc {
    let summary = "A native app trades its one-time code (60 s, single use) and PKCE code_verifier for a session";
    let body = object(
        &["code", "code_verifier"],
        json!({
            "code": token_schema(),
            "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128},
            "client": client_schema(),
        }),
    );
    let mut responses = token_response_docs();
    responses.push(err(400, "oauth_code_invalid"));
    DOCS.op("oauth_exchange", summary, body, responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn return_to_keeps_its_fragment_after_the_query() {
        let r = ReturnTo::Web("https://portal.example/p?x=1#top".into());
        assert_eq!(
            r.with(&[("error", "access_denied")]),
            "https://portal.example/p?x=1&error=access_denied#top"
        );
    }
}
