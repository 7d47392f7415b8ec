//! OAuth 2.0 / OpenID Connect sign-in checks against a real OpenID Provider
//! (`oidc-provider`, started by the harness from `tests/oidc/provider.mjs`).
//!
//! A [`Browser`] plays the user agent: it keeps cookies per origin, follows
//! the provider's redirects, fills its development login form, and hands the
//! redirect to our `redirect_uri` (which names the configured issuer,
//! `http://localhost:8080`) to the deployment under test. Every attack the
//! issue names is a check here: state reused, missing or foreign state
//! cookie, a nonce or a signing key that is not ours, an unverified provider
//! email meeting a verified local account, an open-redirect `return_to`.
//! Expired tokens and wrong audiences cannot be produced by the provider
//! through our client; they are checked in the native in-process tests with
//! tokens this provider signed.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::harness::APP_SCHEME;
use crate::identity::{Ctx, PASSWORD};
use crate::{Reply, expect_problem};

type Check = fn(&Ctx) -> Result<(), String>;

/// The OAuth checks, in order.
pub fn checks() -> Vec<(&'static str, Check)> {
    vec![
        (
            "oauth_capabilities_list_the_providers",
            oauth_capabilities_list_the_providers,
        ),
        (
            "oauth_unknown_provider_is_not_found",
            oauth_unknown_provider_is_not_found,
        ),
        (
            "oauth_start_redirects_with_pkce_s256_state_and_nonce",
            oauth_start_redirects_with_pkce_s256_state_and_nonce,
        ),
        (
            "oauth_sign_in_creates_an_account_then_reuses_the_link",
            oauth_sign_in_creates_an_account_then_reuses_the_link,
        ),
        (
            "oauth_es256_provider_with_client_secret_post",
            oauth_es256_provider_with_client_secret_post,
        ),
        (
            "oauth_github_signs_in_with_its_primary_verified_email",
            oauth_github_signs_in_with_its_primary_verified_email,
        ),
        (
            "oauth_github_unverified_email_does_not_link",
            oauth_github_unverified_email_does_not_link,
        ),
        (
            "oauth_state_reused_is_refused",
            oauth_state_reused_is_refused,
        ),
        (
            "oauth_missing_state_cookie_is_refused",
            oauth_missing_state_cookie_is_refused,
        ),
        (
            "oauth_foreign_state_cookie_is_refused_and_burns_nothing",
            oauth_foreign_state_cookie_is_refused_and_burns_nothing,
        ),
        (
            "oauth_state_of_another_provider_is_refused",
            oauth_state_of_another_provider_is_refused,
        ),
        (
            "oauth_id_token_with_wrong_nonce_is_refused",
            oauth_id_token_with_wrong_nonce_is_refused,
        ),
        (
            "oauth_id_token_from_another_key_is_refused",
            oauth_id_token_from_another_key_is_refused,
        ),
        (
            "oauth_unverified_provider_email_does_not_link",
            oauth_unverified_provider_email_does_not_link,
        ),
        (
            "oauth_unverified_local_email_does_not_link",
            oauth_unverified_local_email_does_not_link,
        ),
        (
            "oauth_look_alike_provider_email_does_not_reach_a_local_account",
            oauth_look_alike_provider_email_does_not_reach_a_local_account,
        ),
        (
            "oauth_provider_with_the_email_only_in_userinfo_signs_in",
            oauth_provider_with_the_email_only_in_userinfo_signs_in,
        ),
        (
            "oauth_pre_hijack_by_password_signup_is_undone_by_verification_and_claim",
            oauth_pre_hijack_by_password_signup_is_undone_by_verification_and_claim,
        ),
        (
            "oauth_verification_evicts_a_link_made_on_an_unverified_provider_address",
            oauth_verification_evicts_a_link_made_on_an_unverified_provider_address,
        ),
        (
            "oauth_link_flow_dies_with_its_session_and_every_link_is_mailed",
            oauth_link_flow_dies_with_its_session_and_every_link_is_mailed,
        ),
        (
            "oauth_verified_emails_on_both_sides_link_and_notify",
            oauth_verified_emails_on_both_sides_link_and_notify,
        ),
        (
            "oauth_password_reset_evicts_a_pre_registered_unverified_link",
            oauth_password_reset_evicts_a_pre_registered_unverified_link,
        ),
        (
            "oauth_evil_return_to_is_ignored",
            oauth_evil_return_to_is_ignored,
        ),
        (
            "oauth_provider_error_goes_back_to_return_to",
            oauth_provider_error_goes_back_to_return_to,
        ),
        (
            "oauth_refused_code_is_token_exchange_failure",
            oauth_refused_code_is_token_exchange_failure,
        ),
        (
            "oauth_link_from_a_session_then_unlink",
            oauth_link_from_a_session_then_unlink,
        ),
        (
            "oauth_link_start_needs_step_up",
            oauth_link_start_needs_step_up,
        ),
        (
            "oauth_last_sign_in_method_cannot_be_unlinked",
            oauth_last_sign_in_method_cannot_be_unlinked,
        ),
        (
            "oauth_native_app_gets_a_one_time_code",
            oauth_native_app_gets_a_one_time_code,
        ),
        (
            "oauth_hostile_inputs_get_clear_4xx",
            oauth_hostile_inputs_get_clear_4xx,
        ),
    ]
}

/// A user agent: cookies per origin, no automatic redirects.
pub struct Browser {
    agent: ureq::Agent,
    jar: BTreeMap<(String, String), String>,
}

fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{authority}")
}

/// The value of query parameter `name` in `url`.
pub fn query(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or(q);
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let Some((base, q)) = url.split_once('?') else {
        return format!("{url}?{name}={value}");
    };
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        if k == name {
            out.append_pair(&k, value);
        } else {
            out.append_pair(&k, &v);
        }
    }
    format!("{base}?{}", out.finish())
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with no cookies.
    pub fn new() -> Browser {
        Browser {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .max_redirects(0)
                .build()
                .into(),
            jar: BTreeMap::new(),
        }
    }

    /// The cookie `name` this browser holds for `origin`.
    pub fn cookie(&self, origin: &str, name: &str) -> Option<String> {
        self.jar.get(&(origin.to_owned(), name.to_owned())).cloned()
    }

    /// Sets a cookie by hand (a planted or copied one).
    pub fn set_cookie(&mut self, origin: &str, name: &str, value: &str) {
        self.jar
            .insert((origin.to_owned(), name.to_owned()), value.to_owned());
    }

    fn cookie_header(&self, origin: &str) -> String {
        self.jar
            .iter()
            .filter(|((o, _), _)| o == origin)
            .map(|((_, n), v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, origin: &str, r: &Reply) {
        for (k, v) in &r.headers {
            if k != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                let key = (origin.to_owned(), name.trim().to_owned());
                let expired = value.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
                if expired {
                    self.jar.remove(&key);
                } else {
                    self.jar.insert(key, value.trim().to_owned());
                }
            }
        }
    }

    /// One request to an absolute URL, with this browser's cookies for its
    /// origin; the answer's cookies are kept.
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Reply, String> {
        let origin = origin_of(url);
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        let cookies = self.cookie_header(&origin);
        if !cookies.is_empty() {
            b = b.header("cookie", cookies);
        }
        let body = match form {
            Some(pairs) => {
                b = b.header("content-type", "application/x-www-form-urlencoded");
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in pairs {
                    s.append_pair(k, v);
                }
                s.finish().into_bytes()
            }
            None => Vec::new(),
        };
        let req = b.body(body).map_err(|e| e.to_string())?;
        let mut resp = self
            .agent
            .run(req)
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let reply = Reply {
            status: resp.status().as_u16(),
            headers,
            body,
        };
        self.absorb(&origin, &reply);
        Ok(reply)
    }

    /// A request to the deployment under test (through the suite's checked
    /// client, so its invariants hold), carrying this browser's cookies for
    /// the deployment.
    pub fn to_deployment(
        &mut self,
        x: &Ctx,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let origin = origin_of(&x.target.base);
        let cookies = self.cookie_header(&origin);
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if !cookies.is_empty() {
            headers.push(("cookie", &cookies));
        }
        let r = x.c.send_with(method, path, &headers, &[])?;
        self.absorb(&origin, &r);
        Ok(r)
    }

    /// Signs in at the provider as `login` starting from its authorization
    /// URL, and returns the URL it finally sends the browser to (our
    /// `redirect_uri` with code and state, or with an error).
    pub fn at_provider(&mut self, authorize: &str, login: &str) -> Result<String, String> {
        let op_origin = origin_of(authorize);
        let mut r = self.request("GET", authorize, None)?;
        for _ in 0..10 {
            if !(300..400).contains(&r.status) {
                return Err(format!(
                    "provider answered {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            let loc = r.header("location").ok_or("redirect without Location")?;
            let url = if loc.starts_with('/') {
                format!("{op_origin}{loc}")
            } else {
                loc.to_owned()
            };
            if !url.starts_with(&op_origin) {
                return Ok(url);
            }
            if url.contains("/interaction/") {
                let page = self.request("GET", &url, None)?;
                let html = String::from_utf8_lossy(&page.body).to_string();
                let action = html
                    .split("action=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .ok_or_else(|| format!("no form on the interaction page: {html}"))?
                    .to_owned();
                let action = if action.starts_with('/') {
                    format!("{op_origin}{action}")
                } else {
                    action
                };
                let prompt = if html.contains("name=\"prompt\" value=\"consent\"") {
                    "consent"
                } else {
                    "login"
                };
                r = if prompt == "login" {
                    self.request(
                        "POST",
                        &action,
                        Some(&[("prompt", "login"), ("login", login), ("password", "x")]),
                    )?
                } else {
                    self.request("POST", &action, Some(&[("prompt", "consent")]))?
                };
            } else {
                r = self.request("GET", &url, None)?;
            }
        }
        Err("too many provider redirects".into())
    }
}

/// The deployment path of a URL on the configured issuer (our
/// `redirect_uri`), which the suite's server actually answers.
fn deployment_path(x: &Ctx, url: &str) -> Result<String, String> {
    url.strip_prefix(&x.target.issuer)
        .map(str::to_owned)
        .ok_or_else(|| format!("redirect to {url}, not to our redirect_uri"))
}

/// GET start; returns the provider URL.
fn start(
    x: &Ctx,
    b: &mut Browser,
    provider: &str,
    return_to: Option<&str>,
) -> Result<String, String> {
    let mut path = format!("/auth/oauth/{provider}/start");
    if let Some(rt) = return_to {
        path.push_str("?return_to=");
        path.push_str(&url::form_urlencoded::byte_serialize(rt.as_bytes()).collect::<String>());
    }
    let r = b.to_deployment(x, "GET", &path, &[])?;
    if r.status != 302 {
        return Err(format!(
            "start: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    r.header("location")
        .map(str::to_owned)
        .ok_or_else(|| "start: no Location".into())
}

/// Drives the provider and returns our callback's path and query.
fn through_provider(
    x: &Ctx,
    b: &mut Browser,
    authorize: &str,
    login: &str,
) -> Result<String, String> {
    let back = b.at_provider(authorize, login)?;
    deployment_path(x, &back)
}

fn login_name(x: &Ctx, tag: &str) -> String {
    // The provider makes `<login>@example.com`; the suite's emails are unique
    // per run.
    x.email(tag)
        .trim_end_matches("@example.com")
        .replace(['+', '.'], "-")
}

/// A full sign-in; returns the callback's answer.
fn sign_in(
    x: &Ctx,
    b: &mut Browser,
    provider: &str,
    login: &str,
    return_to: Option<&str>,
) -> Result<Reply, String> {
    let authorize = start(x, b, provider, return_to)?;
    let cb = through_provider(x, b, &authorize, login)?;
    b.to_deployment(x, "GET", &cb, &[])
}

/// Trades the browser's refresh cookie for an access token (the portal's
/// next step after the redirect).
fn session_of(x: &Ctx, b: &mut Browser) -> Result<String, String> {
    let origin = origin_of(&x.target.base);
    let refresh = b
        .cookie(&origin, "edgecoder_refresh")
        .ok_or("no refresh cookie after sign-in")?;
    let cookie = format!("edgecoder_refresh={refresh}");
    let r = x.c.send_with(
        "POST",
        "/auth/token/refresh",
        &[("cookie", &cookie), ("origin", &x.target.allowed_origin)],
        &[],
    )?;
    if r.status != 200 {
        return Err(format!(
            "refresh: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    b.absorb(&origin, &r);
    r.json()?["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no access_token".into())
}

fn me(x: &Ctx, access: &str) -> Result<Json, String> {
    let r = x.send("GET", "/auth/me", Some(access), None, &[])?;
    if r.status != 200 {
        return Err(format!("me: {}", r.status));
    }
    r.json()
}

fn links(x: &Ctx, access: &str) -> Result<Vec<String>, String> {
    let v = x
        .send("GET", "/auth/oauth/links", Some(access), None, &[])?
        .json()?;
    Ok(v["links"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["provider"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

fn expect_redirect_to(r: &Reply, prefix: &str) -> Result<String, String> {
    if r.status != 302 {
        return Err(format!(
            "want 302 to {prefix}, got {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let loc = r.header("location").unwrap_or("").to_owned();
    if !loc.starts_with(prefix) {
        return Err(format!("redirected to {loc}, want {prefix}…"));
    }
    Ok(loc)
}

fn oauth_capabilities_list_the_providers(x: &Ctx) -> Result<(), String> {
    let v = x.c.get("/auth/capabilities")?.json()?;
    let ids: Vec<&str> = v["oauth_providers"]
        .as_array()
        .ok_or("no oauth_providers")?
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    if ids != ["op", "op-es", "decoy", "op-userinfo", "github"] {
        return Err(format!("providers {ids:?}"));
    }
    if v["oauth_providers"][0]["start"] != "/auth/oauth/op/start"
        || v["oauth_providers"][0]["protocol"] != "oidc"
        || v["oauth_providers"][4]["protocol"] != "oauth2"
    {
        return Err(format!("{}", v["oauth_providers"]));
    }
    Ok(())
}

fn oauth_unknown_provider_is_not_found(x: &Ctx) -> Result<(), String> {
    for path in [
        "/auth/oauth/nope/start",
        "/auth/oauth/nope/callback?state=x&code=y",
    ] {
        expect_problem(&x.c.get(path)?, 404, "oauth_provider_unknown")?;
    }
    Ok(())
}

fn oauth_start_redirects_with_pkce_s256_state_and_nonce(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let r = b.to_deployment(x, "GET", "/auth/oauth/op/start", &[])?;
    let loc = expect_redirect_to(&r, "http://127.0.0.1:")?;
    if !loc.contains("/auth?") {
        return Err(format!("not the authorization endpoint: {loc}"));
    }
    let want = [
        ("response_type", "code"),
        ("client_id", crate::harness::OIDC_CLIENT_ID),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in want {
        if query(&loc, k).as_deref() != Some(v) {
            return Err(format!("{k} in {loc}"));
        }
    }
    if query(&loc, "redirect_uri") != Some(format!("{}/auth/oauth/op/callback", x.target.issuer)) {
        return Err(format!("redirect_uri in {loc}"));
    }
    if !query(&loc, "scope").is_some_and(|s| s.split(' ').any(|t| t == "openid")) {
        return Err(format!("scope in {loc}"));
    }
    for k in ["state", "nonce", "code_challenge"] {
        if query(&loc, k).is_none_or(|v| v.len() < 43) {
            return Err(format!("{k} missing or short in {loc}"));
        }
    }
    if r.header("cache-control") != Some("no-store") {
        return Err("start must not be cached".into());
    }
    // Over https: `__Host-` (Secure, Path=/, so no sibling subdomain can
    // plant one); the suite's deployment is http://localhost, where browsers
    // drop Secure and `__Host-` cookies, so there it is plain.
    let https = x.target.issuer.starts_with("https://");
    let (name, attrs): (&str, &[&str]) = if https {
        (
            "__Host-edgecoder_oauth",
            &["HttpOnly", "SameSite=Lax", "Path=/;", "Secure"],
        )
    } else {
        (
            "edgecoder_oauth",
            &["HttpOnly", "SameSite=Lax", "Path=/auth/oauth"],
        )
    };
    let cookie = r
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with(&format!("{name}=")))
        .map(|(_, v)| v.clone())
        .ok_or("no browser-binding cookie")?;
    for attr in attrs {
        if !cookie.contains(attr) {
            return Err(format!("cookie lacks {attr}: {cookie}"));
        }
    }
    if !https && cookie.contains("Secure") {
        return Err(format!(
            "a Secure cookie on http://localhost is dropped: {cookie}"
        ));
    }
    // A second flow in the same browser keeps the same binding secret.
    let origin = origin_of(&x.target.base);
    let first = b.cookie(&origin, name);
    b.to_deployment(x, "GET", "/auth/oauth/op/start", &[])?;
    if b.cookie(&origin, name) != first {
        return Err("a second start replaced the binding secret".into());
    }
    Ok(())
}

fn oauth_sign_in_creates_an_account_then_reuses_the_link(x: &Ctx) -> Result<(), String> {
    let login = login_name(x, "oidc-new");
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op", &login, Some("/welcome?tab=1"))?;
    expect_redirect_to(&r, &format!("{}/welcome?tab=1", x.target.allowed_origin))?;
    let access = session_of(x, &mut b)?;
    let first = me(x, &access)?;
    if first["email"] != format!("{login}@example.com") || first["email_verified"] != true {
        return Err(format!("new account {first}"));
    }
    if links(x, &access)? != ["op"] {
        return Err("the new account has no op link".into());
    }
    // The same subject again, in another browser: the same account.
    let mut b2 = Browser::new();
    let r = sign_in(x, &mut b2, "op", &login, None)?;
    expect_redirect_to(&r, &format!("{}/", x.target.allowed_origin))?;
    let again = me(x, &session_of(x, &mut b2)?)?;
    if again["id"] != first["id"] {
        return Err("a second sign-in made another account".into());
    }
    Ok(())
}

fn oauth_es256_provider_with_client_secret_post(x: &Ctx) -> Result<(), String> {
    let login = login_name(x, "oidc-es");
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op-es", &login, None)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let v = me(x, &session_of(x, &mut b)?)?;
    if v["email"] != format!("{login}@example.com") {
        return Err(format!("{v}"));
    }
    Ok(())
}

/// A GitHub flow: GitHub's authorize page would ask who is signing in; its
/// stand-in takes `login=`.
fn github_sign_in(x: &Ctx, b: &mut Browser, login: &str) -> Result<Reply, String> {
    let authorize = start(x, b, "github", None)?;
    if !authorize.contains("/github/login/oauth/authorize?")
        || query(&authorize, "code_challenge_method").as_deref() != Some("S256")
        || query(&authorize, "nonce").is_some()
    {
        return Err(format!("unexpected GitHub authorize URL {authorize}"));
    }
    let cb = through_provider(x, b, &format!("{authorize}&login={login}"), login)?;
    b.to_deployment(x, "GET", &cb, &[])
}

fn oauth_github_signs_in_with_its_primary_verified_email(x: &Ctx) -> Result<(), String> {
    let login = login_name(x, "gh");
    let mut b = Browser::new();
    let r = github_sign_in(x, &mut b, &login)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let access = session_of(x, &mut b)?;
    let v = me(x, &access)?;
    if v["email"] != format!("{login}@example.com") || v["email_verified"] != true {
        return Err(format!("GitHub account {v}"));
    }
    if links(x, &access)? != ["github"] {
        return Err("no github link".into());
    }
    Ok(())
}

fn oauth_github_unverified_email_does_not_link(x: &Ctx) -> Result<(), String> {
    let login = format!("unverified-{}", login_name(x, "gh"));
    password_account(x, &format!("{login}@example.com"), true)?;
    let mut b = Browser::new();
    expect_problem(
        &github_sign_in(x, &mut b, &login)?,
        409,
        "account_exists_sign_in_to_link",
    )
}

fn oauth_state_reused_is_refused(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", None)?;
    let cb = through_provider(x, &mut b, &authorize, &login_name(x, "oidc-replay"))?;
    expect_redirect_to(
        &b.to_deployment(x, "GET", &cb, &[])?,
        &x.target.allowed_origin,
    )?;
    expect_problem(
        &b.to_deployment(x, "GET", &cb, &[])?,
        400,
        "oauth_state_invalid",
    )
}

fn oauth_missing_state_cookie_is_refused(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", None)?;
    let cb = through_provider(x, &mut b, &authorize, &login_name(x, "oidc-nocookie"))?;
    // Delivered without the cookie: a link opened elsewhere (login CSRF).
    expect_problem(&x.c.get(&cb)?, 400, "oauth_state_invalid")
}

fn oauth_foreign_state_cookie_is_refused_and_burns_nothing(x: &Ctx) -> Result<(), String> {
    let mut victim = Browser::new();
    start(x, &mut victim, "op", None)?;
    let mut attacker = Browser::new();
    let authorize = start(x, &mut attacker, "op", None)?;
    let cb = through_provider(x, &mut attacker, &authorize, &login_name(x, "oidc-csrf"))?;
    // The attacker's callback in the victim's browser (with the victim's own
    // binding cookie) must not sign the victim in to the attacker's account.
    expect_problem(
        &victim.to_deployment(x, "GET", &cb, &[])?,
        400,
        "oauth_state_invalid",
    )?;
    // ... and did not use the state up for its rightful browser.
    expect_redirect_to(
        &attacker.to_deployment(x, "GET", &cb, &[])?,
        &x.target.allowed_origin,
    )?;
    Ok(())
}

fn oauth_state_of_another_provider_is_refused(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", None)?;
    let cb = through_provider(x, &mut b, &authorize, &login_name(x, "oidc-mixup"))?;
    let swapped = cb.replacen("/auth/oauth/op/", "/auth/oauth/op-es/", 1);
    expect_problem(
        &b.to_deployment(x, "GET", &swapped, &[])?,
        400,
        "oauth_state_invalid",
    )
}

fn oauth_id_token_with_wrong_nonce_is_refused(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", None)?;
    // The provider signs the nonce it was given; ours is another.
    let tampered = with_param(&authorize, "nonce", &URL_SAFE_NO_PAD.encode([7u8; 32]));
    let cb = through_provider(x, &mut b, &tampered, &login_name(x, "oidc-nonce"))?;
    let r = b.to_deployment(x, "GET", &cb, &[])?;
    expect_problem(&r, 401, "oauth_id_token_invalid")?;
    if !String::from_utf8_lossy(&r.body).contains("nonce") {
        return Err(format!(
            "refused for another reason: {}",
            String::from_utf8_lossy(&r.body)
        ));
    }
    Ok(())
}

fn oauth_id_token_from_another_key_is_refused(x: &Ctx) -> Result<(), String> {
    // The decoy issuer publishes other keys under the kids it signs with.
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "decoy", &login_name(x, "oidc-decoy"), None)?;
    expect_problem(&r, 401, "oauth_id_token_invalid")?;
    if b.cookie(&origin_of(&x.target.base), "edgecoder_refresh")
        .is_some()
    {
        return Err("a session came with a refused token".into());
    }
    Ok(())
}

/// A password account for `email`, verified or not; returns its access token.
fn password_account(x: &Ctx, email: &str, verified: bool) -> Result<String, String> {
    let r = x.signup(email)?;
    if r.status != 202 {
        return Err(format!("signup {}", r.status));
    }
    if verified {
        x.verify(email)?;
    }
    let r = x.login(email, PASSWORD)?;
    r.json()?["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("login {}", r.status))
}

fn oauth_unverified_provider_email_does_not_link(x: &Ctx) -> Result<(), String> {
    // The provider marks `unverified-*` logins' addresses as unverified.
    let login = format!("unverified-{}", login_name(x, "oidc"));
    let email = format!("{login}@example.com");
    let access = password_account(x, &email, true)?;
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op", &login, None)?;
    expect_problem(&r, 409, "account_exists_sign_in_to_link")?;
    if !links(x, &access)?.is_empty() {
        return Err("linked on an unverified provider email".into());
    }
    Ok(())
}

fn oauth_unverified_local_email_does_not_link(x: &Ctx) -> Result<(), String> {
    // Someone registered the address first and never verified it (a
    // pre-hijack); the real owner's provider sign-in must not join them.
    let login = login_name(x, "oidc-prehijack");
    let email = format!("{login}@example.com");
    password_account(x, &email, false)?;
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op", &login, None)?;
    expect_problem(&r, 409, "account_exists_sign_in_to_link")
}

fn oauth_look_alike_provider_email_does_not_reach_a_local_account(x: &Ctx) -> Result<(), String> {
    // The provider vouches for `\u{212A}…@example.com` (KELVIN SIGN), which
    // Unicode lowercasing folds into the local, verified `k…@example.com`.
    let login = login_name(x, "k-oidc-kelvin");
    let email = format!("{login}@example.com");
    let access = password_account(x, &email, true)?;
    let kelvin = login.replacen('k', "\u{212A}", 1);
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op", &kelvin, None)?;
    expect_problem(&r, 400, "oauth_email_missing")?;
    if !links(x, &access)?.is_empty() {
        return Err("a look-alike provider address linked to the local account".into());
    }
    Ok(())
}

fn oauth_provider_with_the_email_only_in_userinfo_signs_in(x: &Ctx) -> Result<(), String> {
    // This issuer's ID tokens carry no email (OIDC Core puts `email` in the
    // UserInfo response); the deployment asks UserInfo for it.
    let login = login_name(x, "oidc-userinfo");
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op-userinfo", &login, None)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let v = me(x, &session_of(x, &mut b)?)?;
    if v["email"] != format!("{login}@example.com") || v["email_verified"] != true {
        return Err(format!("the UserInfo email was not used: {v}"));
    }
    Ok(())
}

fn oauth_pre_hijack_by_password_signup_is_undone_by_verification_and_claim(
    x: &Ctx,
) -> Result<(), String> {
    // The attacker signs up with the victim's address, chooses the password
    // and signs in before anyone has proven the address.
    let login = login_name(x, "oidc-prehijack-pw");
    let email = format!("{login}@example.com");
    let r = x.signup(&email)?;
    if r.status != 202 {
        return Err(format!("signup {}", r.status));
    }
    let pre = x.login(&email, PASSWORD)?.json()?;
    let pre_access = pre["access_token"].as_str().unwrap_or("").to_owned();
    let pre_refresh = pre["refresh_token"].as_str().unwrap_or("").to_owned();
    // No passkey for an address nobody has proven (it would outlive the proof).
    expect_problem(
        &x.send(
            "POST",
            "/auth/passkeys/register/options",
            Some(&pre_access),
            None,
            &[],
        )?,
        403,
        "email_unverified",
    )
    .map_err(|e| format!("passkey before verification: {e}"))?;
    // The victim follows the verification mail (without the password, which
    // they never chose).
    x.verify_with(&email, None)?;
    // What the attacker opened before the proof is over.
    expect_problem(
        &x.send("GET", "/auth/me", Some(&pre_access), None, &[])?,
        401,
        "invalid_token",
    )
    .map_err(|e| format!("pre-verification access token: {e}"))?;
    let r = x.send(
        "POST",
        "/auth/token/refresh",
        None,
        Some(&json!({"refresh_token": pre_refresh})),
        &[],
    )?;
    expect_problem(&r, 401, "invalid_refresh_token")
        .map_err(|e| format!("pre-verification refresh token: {e}"))?;
    // The password was chosen before anyone proved the address and was not
    // presented with the proof: it needs the owner's re-confirmation.
    expect_problem(&x.login(&email, PASSWORD)?, 403, "password_unconfirmed")
        .map_err(|e| format!("unconfirmed password after verification: {e}"))?;
    // The owner signs in with a provider that proves the address: the
    // account is theirs alone, and the attacker's password is gone.
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op", &login, None)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let owner = me(x, &session_of(x, &mut b)?)?;
    if owner["email"] != email.as_str() {
        return Err(format!("the owner reached another account: {owner}"));
    }
    expect_problem(&x.login(&email, PASSWORD)?, 401, "invalid_credentials")
        .map_err(|e| format!("attacker's password: {e}"))?;
    let mail = x.last_mail(&email)?;
    if !mail["subject"].as_str().unwrap_or("").contains("now owns") {
        return Err(format!("owner not told: {mail}"));
    }
    Ok(())
}

fn oauth_verification_evicts_a_link_made_on_an_unverified_provider_address(
    x: &Ctx,
) -> Result<(), String> {
    // An attacker's provider account claims the victim's address without
    // verifying it, and creates the account first.
    let login = format!("unverified-{}", login_name(x, "oidc-squat-verify"));
    let email = format!("{login}@example.com");
    let mut attacker = Browser::new();
    let r = sign_in(x, &mut attacker, "op", &login, None)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let attacker_access = session_of(x, &mut attacker)?;
    // The mailbox's owner verifies the address by mail.
    let r = x.call(
        "POST",
        "/auth/resend-verification",
        "/auth/resend-verification",
        None,
        Some(&json!({"email": email})),
        &[],
    )?;
    if r.status != 202 {
        return Err(format!("resend {}", r.status));
    }
    x.verify_with(&email, None)?;
    // The attacker's session and its unverified link are gone.
    expect_problem(
        &x.send("GET", "/auth/me", Some(&attacker_access), None, &[])?,
        401,
        "invalid_token",
    )?;
    let mut again = Browser::new();
    expect_problem(
        &sign_in(x, &mut again, "op", &login, None)?,
        409,
        "account_exists_sign_in_to_link",
    )
}

fn oauth_link_flow_dies_with_its_session_and_every_link_is_mailed(x: &Ctx) -> Result<(), String> {
    // A thief holding a stepped-up token starts a link flow to their own
    // provider account; the owner signs out everywhere before it finishes.
    let email = x.email("oidc-link-revoked");
    let access = password_account(x, &email, true)?;
    let mut thief = Browser::new();
    let authorize = link_start(x, &mut thief, &access, "op")?;
    let r = x.send("POST", "/auth/logout-all", Some(&access), None, &[])?;
    if r.status != 200 {
        return Err(format!("logout-all {}", r.status));
    }
    let cb = through_provider(x, &mut thief, &authorize, &login_name(x, "oidc-thief-link"))?;
    expect_problem(
        &thief.to_deployment(x, "GET", &cb, &[])?,
        401,
        "invalid_token",
    )?;
    let fresh = x.login(&email, PASSWORD)?.json()?["access_token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if !links(x, &fresh)?.is_empty() {
        return Err("linked after the session was revoked".into());
    }
    // A link the owner makes is mailed to them, like an automatic one.
    let mut b = Browser::new();
    let authorize = link_start(x, &mut b, &fresh, "op")?;
    let cb = through_provider(x, &mut b, &authorize, &login_name(x, "oidc-own-link"))?;
    let loc = expect_redirect_to(
        &b.to_deployment(x, "GET", &cb, &[])?,
        &format!("{}/settings?", x.target.allowed_origin),
    )?;
    if query(&loc, "linked").as_deref() != Some("op") {
        return Err(format!("not linked: {loc}"));
    }
    let mail = x.last_mail(&email)?;
    if !mail["subject"]
        .as_str()
        .unwrap_or("")
        .contains("sign-in was added")
    {
        return Err(format!("owner not told of the link: {mail}"));
    }
    Ok(())
}

fn oauth_verified_emails_on_both_sides_link_and_notify(x: &Ctx) -> Result<(), String> {
    let login = login_name(x, "oidc-autolink");
    let email = format!("{login}@example.com");
    let access = password_account(x, &email, true)?;
    let id = me(x, &access)?["id"].clone();
    let mut b = Browser::new();
    let r = sign_in(x, &mut b, "op", &login, None)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let signed_in = me(x, &session_of(x, &mut b)?)?;
    if signed_in["id"] != id {
        return Err("signed in to another account".into());
    }
    if links(x, &access)? != ["op"] {
        return Err("no link recorded".into());
    }
    let mail = x.last_mail(&email)?;
    if !mail["subject"]
        .as_str()
        .unwrap_or("")
        .contains("sign-in was added")
    {
        return Err(format!("owner not told: {mail}"));
    }
    Ok(())
}

fn oauth_password_reset_evicts_a_pre_registered_unverified_link(x: &Ctx) -> Result<(), String> {
    // An attacker's provider account claims the victim's address without
    // verifying it, and creates the account first.
    let login = format!("unverified-{}", login_name(x, "oidc-squat"));
    let email = format!("{login}@example.com");
    let mut attacker = Browser::new();
    let r = sign_in(x, &mut attacker, "op", &login, None)?;
    expect_redirect_to(&r, &x.target.allowed_origin)?;
    let squatted = me(x, &session_of(x, &mut attacker)?)?;
    if squatted["email_verified"] != false {
        return Err(format!(
            "the provider did not verify the address: {squatted}"
        ));
    }
    // The mailbox's owner takes the account back with a password reset.
    let r = x.call(
        "POST",
        "/auth/password/reset/request",
        "/auth/password/reset/request",
        None,
        Some(&json!({"email": email})),
        &[],
    )?;
    if r.status != 202 {
        return Err(format!("reset request {}", r.status));
    }
    let token = x.mailed_token(&email)?;
    let r = x.call(
        "POST",
        "/auth/password/reset/confirm",
        "/auth/password/reset/confirm",
        None,
        Some(&json!({"token": token, "new_password": "the owner's own passphrase"})),
        &[],
    )?;
    if r.status != 200 {
        return Err(format!("reset confirm {}", r.status));
    }
    // The attacker's provider account no longer gets in.
    let mut again = Browser::new();
    expect_problem(
        &sign_in(x, &mut again, "op", &login, None)?,
        409,
        "account_exists_sign_in_to_link",
    )
}

fn oauth_evil_return_to_is_ignored(x: &Ctx) -> Result<(), String> {
    for evil in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "https://localhost:5173@evil.example/",
        "javascript:alert(1)",
        "/caf\u{e9}",
    ] {
        let mut b = Browser::new();
        let r = sign_in(x, &mut b, "op", &login_name(x, "oidc-evil"), Some(evil))?;
        let loc = expect_redirect_to(&r, &format!("{}/", x.target.allowed_origin))?;
        if loc.contains("evil") || loc.contains("javascript") {
            return Err(format!("return_to {evil} gave {loc}"));
        }
    }
    Ok(())
}

fn oauth_provider_error_goes_back_to_return_to(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", Some("/signin"))?;
    let state = query(&authorize, "state").ok_or("no state")?;
    let r = b.to_deployment(
        x,
        "GET",
        &format!(
            "/auth/oauth/op/callback?error=access_denied&error_description=%3Cscript%3E&state={state}"
        ),
        &[],
    )?;
    let loc = expect_redirect_to(&r, &format!("{}/signin?", x.target.allowed_origin))?;
    if query(&loc, "error").as_deref() != Some("access_denied") || loc.contains("script") {
        return Err(format!("error not passed on cleanly: {loc}"));
    }
    // The state is gone with it.
    expect_problem(
        &b.to_deployment(
            x,
            "GET",
            &format!("/auth/oauth/op/callback?code=x&state={state}"),
            &[],
        )?,
        400,
        "oauth_state_invalid",
    )
}

fn oauth_refused_code_is_token_exchange_failure(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", None)?;
    let cb = through_provider(x, &mut b, &authorize, &login_name(x, "oidc-badcode"))?;
    let forged = with_param(&cb, "code", "not-a-code-the-provider-issued");
    expect_problem(
        &b.to_deployment(x, "GET", &forged, &[])?,
        502,
        "oauth_token_exchange_failed",
    )
}

fn link_start(x: &Ctx, b: &mut Browser, access: &str, provider: &str) -> Result<String, String> {
    let path = format!("/auth/oauth/{provider}/link/start");
    let r = x.call(
        "POST",
        "/auth/oauth/{provider}/link/start",
        &path,
        Some(access),
        Some(&json!({"return_to": "/settings"})),
        &[],
    )?;
    if r.status != 200 {
        return Err(format!(
            "link/start: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    b.absorb(&origin_of(&x.target.base), &r);
    r.json()?["authorization_url"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no authorization_url".into())
}

fn unlink(x: &Ctx, access: &str, provider: &str) -> Result<Reply, String> {
    x.call(
        "DELETE",
        "/auth/oauth/links/{provider}",
        &format!("/auth/oauth/links/{provider}"),
        Some(access),
        None,
        &[],
    )
}

fn oauth_link_from_a_session_then_unlink(x: &Ctx) -> Result<(), String> {
    let email = x.email("oidc-linker");
    let access = password_account(x, &email, true)?;
    let mut b = Browser::new();
    // A provider identity with another email links explicitly.
    let other_login = login_name(x, "oidc-linked");
    let authorize = link_start(x, &mut b, &access, "op")?;
    let cb = through_provider(x, &mut b, &authorize, &other_login)?;
    let loc = expect_redirect_to(
        &b.to_deployment(x, "GET", &cb, &[])?,
        &format!("{}/settings?", x.target.allowed_origin),
    )?;
    if query(&loc, "linked").as_deref() != Some("op") {
        return Err(format!("not linked: {loc}"));
    }
    if links(x, &access)? != ["op"] {
        return Err("link not listed".into());
    }
    // That provider identity now signs in to this account.
    let mut b2 = Browser::new();
    sign_in(x, &mut b2, "op", &other_login, None)?;
    let id = me(x, &session_of(x, &mut b2)?)?["id"].clone();
    if id != me(x, &access)?["id"] {
        return Err("the linked identity signs in elsewhere".into());
    }
    // Nobody else can link the same identity.
    let other = password_account(x, &x.email("oidc-thief"), true)?;
    let mut b3 = Browser::new();
    let authorize = link_start(x, &mut b3, &other, "op")?;
    let cb = through_provider(x, &mut b3, &authorize, &other_login)?;
    expect_problem(
        &b3.to_deployment(x, "GET", &cb, &[])?,
        409,
        "oauth_identity_linked_elsewhere",
    )?;
    // The password remains, so the link can go.
    let r = unlink(x, &access, "op")?;
    if r.status != 200 {
        return Err(format!(
            "unlink: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    expect_problem(&unlink(x, &access, "op")?, 404, "oauth_link_not_found")?;
    if !links(x, &access)?.is_empty() {
        return Err("still linked".into());
    }
    Ok(())
}

fn oauth_link_start_needs_step_up(x: &Ctx) -> Result<(), String> {
    let access = password_account(x, &x.email("oidc-stale"), true)?;
    let v = me(x, &access)?;
    let stale = x.mint(
        v["id"].as_str().unwrap_or(""),
        v["session_id"].as_str().unwrap_or(""),
        &json!({"auth_time": crate::identity::unix_now() - 3600}),
    )?;
    let r = x.call(
        "POST",
        "/auth/oauth/{provider}/link/start",
        "/auth/oauth/op/link/start",
        Some(&stale),
        None,
        &[],
    )?;
    expect_problem(&r, 403, "step_up_required")?;
    let r = x.call(
        "DELETE",
        "/auth/oauth/links/{provider}",
        "/auth/oauth/links/op",
        Some(&stale),
        None,
        &[],
    )?;
    expect_problem(&r, 403, "step_up_required")
}

fn oauth_last_sign_in_method_cannot_be_unlinked(x: &Ctx) -> Result<(), String> {
    let mut b = Browser::new();
    sign_in(x, &mut b, "op", &login_name(x, "oidc-only"), None)?;
    let access = session_of(x, &mut b)?;
    expect_problem(&unlink(x, &access, "op")?, 409, "last_sign_in_method")?;
    if links(x, &access)? != ["op"] {
        return Err("the only link went".into());
    }
    Ok(())
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn app_flow(x: &Ctx, verifier: &str) -> Result<String, String> {
    let mut b = Browser::new();
    let rt = format!("{APP_SCHEME}:/oauth/done");
    let path = format!(
        "/auth/oauth/op/start?return_to={}&code_challenge={}&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(rt.as_bytes()).collect::<String>(),
        s256(verifier)
    );
    let r = b.to_deployment(x, "GET", &path, &[])?;
    let authorize = expect_redirect_to(&r, "http://127.0.0.1:")?;
    let cb = through_provider(x, &mut b, &authorize, &login_name(x, "oidc-app"))?;
    let r = b.to_deployment(x, "GET", &cb, &[])?;
    let loc = expect_redirect_to(&r, &format!("{rt}?code="))?;
    if loc.contains("token")
        || r.header("set-cookie")
            .is_some_and(|c| c.contains("refresh"))
    {
        return Err(format!("tokens must not travel in the redirect: {loc}"));
    }
    query(&loc, "code").ok_or_else(|| "no code".into())
}

fn exchange(x: &Ctx, code: &str, verifier: &str) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/oauth/exchange",
        "/auth/oauth/exchange",
        None,
        Some(&json!({"code": code, "code_verifier": verifier})),
        &[],
    )
}

fn oauth_native_app_gets_a_one_time_code(x: &Ctx) -> Result<(), String> {
    // Without its own PKCE challenge an app flow does not start.
    let rt = format!("{APP_SCHEME}:/oauth/done");
    let r = x.c.get(&format!(
        "/auth/oauth/op/start?return_to={}",
        url::form_urlencoded::byte_serialize(rt.as_bytes()).collect::<String>()
    ))?;
    expect_problem(&r, 400, "invalid_request")?;

    let verifier = URL_SAFE_NO_PAD.encode([9u8; 32]);
    // A wrong verifier burns the code.
    let code = app_flow(x, &verifier)?;
    expect_problem(
        &exchange(x, &code, &URL_SAFE_NO_PAD.encode([8u8; 32]))?,
        400,
        "oauth_code_invalid",
    )?;
    expect_problem(&exchange(x, &code, &verifier)?, 400, "oauth_code_invalid")?;
    // The right verifier gets a device session, once.
    let code = app_flow(x, &verifier)?;
    let r = exchange(x, &code, &verifier)?;
    if r.status != 200 {
        return Err(format!(
            "exchange: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let v = r.json()?;
    if v["refresh_token"].as_str().is_none() {
        return Err(format!("no device refresh token: {v}"));
    }
    me(x, v["access_token"].as_str().unwrap_or(""))?;
    expect_problem(&exchange(x, &code, &verifier)?, 400, "oauth_code_invalid")
}

fn oauth_hostile_inputs_get_clear_4xx(x: &Ctx) -> Result<(), String> {
    let long = "A".repeat(6000);
    // A start with an absurd return_to still starts (falling back), no 5xx.
    let r =
        x.c.get(&format!("/auth/oauth/op/start?return_to=/{long}"))?;
    let loc = expect_redirect_to(&r, "http://127.0.0.1:")?;
    if loc.contains(&long) {
        return Err("an over-long return_to travelled on".into());
    }
    // Callbacks with oversized, doubled or junk values are refused as such.
    let mut b = Browser::new();
    let authorize = start(x, &mut b, "op", None)?;
    let state = query(&authorize, "state").ok_or("no state")?;
    let origin = origin_of(&x.target.base);
    let secret = b
        .cookie(&origin, "edgecoder_oauth")
        .ok_or("no binding cookie")?;
    let doubled = format!("edgecoder_oauth={secret}; edgecoder_oauth={secret}");
    let junk = "edgecoder_oauth=%00%ff; x=y".to_owned();
    let cases: Vec<(String, Option<String>)> = vec![
        (
            format!("/auth/oauth/op/callback?state={long}&code=x"),
            Some(format!("edgecoder_oauth={secret}")),
        ),
        (
            format!("/auth/oauth/op/callback?state={state}&code=x"),
            Some(doubled),
        ),
        (
            format!("/auth/oauth/op/callback?state={state}&code=x"),
            Some(junk),
        ),
        (
            "/auth/oauth/op/callback".to_owned(),
            Some(format!("edgecoder_oauth={secret}")),
        ),
        (
            "/auth/oauth/op/callback?state=%E2%82%AC&error=%00".to_owned(),
            None,
        ),
    ];
    for (path, cookie) in cases {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        let r = x.c.send_with("GET", &path, &headers, &[])?;
        expect_problem(&r, 400, "oauth_state_invalid")
            .map_err(|e| format!("{}: {e}", path.chars().take(80).collect::<String>()))?;
    }
    // The state survived all of that for its own browser: a code that is not
    // the provider's is then a failed exchange, not a server error.
    let r = b.to_deployment(
        x,
        "GET",
        &format!("/auth/oauth/op/callback?state={state}&code={long}"),
        &[],
    )?;
    expect_problem(&r, 400, "invalid_request")?;
    // Exchange: malformed codes and verifiers.
    for body in [
        json!({"code": "eoc_short", "code_verifier": URL_SAFE_NO_PAD.encode([1u8; 32])}),
        json!({"code": format!("eoc_{}", URL_SAFE_NO_PAD.encode([1u8; 32])), "code_verifier": "x".repeat(500)}),
        json!({"code": format!("eoc_{}", URL_SAFE_NO_PAD.encode([1u8; 32])), "code_verifier": URL_SAFE_NO_PAD.encode([1u8; 32])}),
    ] {
        expect_problem(
            &x.call(
                "POST",
                "/auth/oauth/exchange",
                "/auth/oauth/exchange",
                None,
                Some(&body),
                &[],
            )?,
            400,
            "oauth_code_invalid",
        )?;
    }
    let r = x.call(
        "POST",
        "/auth/oauth/exchange",
        "/auth/oauth/exchange",
        None,
        Some(&json!({"code": 7})),
        &[],
    )?;
    expect_problem(&r, 400, "invalid_request")
}
