//! Identity checks (issue 3): accounts, email verification, sessions, tokens,
//! roles with step-up, node enrollment, rate limits and audit coverage, each
//! attack from the issue as a named check.
//!
//! The suite knows the deployment's signing key, bootstrap secret and service
//! credential (the harness configured them), so it can mint access tokens with
//! chosen claims (an old `auth_time`, a wrong audience) and forge the ones an
//! attacker would. Everything else goes through the public API; emailed tokens
//! come from the development outbox through its test route.
//!
//! Every request that should leave an audit event is sent through
//! [`Ctx::call`], which notes its route and request id; the last check asks
//! the audit API for all of them and fails for any mutating route in
//! `/openapi.json` that never produced one.

use std::cell::RefCell;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value as Json, json};

use crate::{Client, Reply, Target, expect_problem};

/// A password that satisfies the policy for every suite account.
pub const PASSWORD: &str = "correct horse battery staple";

/// Shared state across the identity checks of one suite run.
pub struct Ctx<'a> {
    /// The client.
    pub c: &'a Client,
    /// The deployment's secrets.
    pub target: &'a Target,
    /// (method, route template) -> request ids that should have been audited.
    audited: RefCell<BTreeMap<(String, String), Vec<String>>>,
    /// A verified system_admin: (user id, access token).
    admin: RefCell<Option<(String, String)>>,
    serial: RefCell<u32>,
    run: String,
}

/// A signed-in test account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Email address.
    pub email: String,
    /// User id.
    pub id: String,
    /// Access token.
    pub access: String,
    /// Refresh token (device session).
    pub refresh: String,
}

fn body_of(v: &Json) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl<'a> Ctx<'a> {
    /// A context for one run.
    pub fn new(c: &'a Client, target: &'a Target) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ctx {
            c,
            target,
            audited: RefCell::default(),
            admin: RefCell::default(),
            serial: RefCell::new(0),
            run: format!("{:x}", nanos % 0xffff_ffff),
        }
    }

    /// A fresh email address.
    pub fn email(&self, tag: &str) -> String {
        let mut n = self.serial.borrow_mut();
        *n += 1;
        format!("{tag}-{}-{n}@example.com", self.run)
    }

    /// Sends JSON (or nothing) with optional bearer token and extra headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Json>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                body_of(b)
            }
            None => Vec::new(),
        };
        self.c.send_with(method, path, &headers, &bytes)
    }

    /// Like [`Ctx::send`], and notes the request as one that must be audited
    /// under the route `template`.
    pub fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Json>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let r = self.send(method, path, bearer, body, extra)?;
        if let Some(id) = r.header("x-request-id") {
            self.audited
                .borrow_mut()
                .entry((method.to_owned(), template.to_owned()))
                .or_default()
                .push(id.to_owned());
        }
        Ok(r)
    }

    /// The newest outbox message to `email`.
    pub fn last_mail(&self, email: &str) -> Result<Json, String> {
        let r = self.c.get(&format!(
            "/auth/_test/outbox?to={}",
            email.replace('+', "%2B")
        ))?;
        let v = r.json()?;
        v["messages"]
            .get(0)
            .cloned()
            .ok_or_else(|| format!("no mail to {email}"))
    }

    /// The one-time token in the newest mail to `email`.
    pub fn mailed_token(&self, email: &str) -> Result<String, String> {
        let m = self.last_mail(email)?;
        let body = m["body"].as_str().unwrap_or("");
        let start = body
            .find("evt_")
            .ok_or_else(|| format!("no token in mail: {body}"))?;
        Ok(body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect())
    }

    /// Signs up `email`.
    pub fn signup(&self, email: &str) -> Result<Reply, String> {
        self.call(
            "POST",
            "/auth/signup",
            "/auth/signup",
            None,
            Some(&json!({"email": email, "password": PASSWORD, "display_name": "Suite"})),
            &[],
        )
    }

    /// Verifies `email` with the token it was mailed.
    pub fn verify(&self, email: &str) -> Result<(), String> {
        let token = self.mailed_token(email)?;
        let r = self.call(
            "POST",
            "/auth/verify-email",
            "/auth/verify-email",
            None,
            Some(&json!({ "token": token })),
            &[],
        )?;
        if r.status != 200 {
            return Err(format!(
                "verify: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        Ok(())
    }

    /// Logs in as a device client.
    pub fn login(&self, email: &str, password: &str) -> Result<Reply, String> {
        self.call(
            "POST",
            "/auth/login",
            "/auth/login",
            None,
            Some(&json!({"email": email, "password": password, "client": "device"})),
            &[],
        )
    }

    /// A new account, verified or not, signed in on a device session.
    pub fn account(&self, tag: &str, verified: bool) -> Result<Account, String> {
        let email = self.email(tag);
        let r = self.signup(&email)?;
        if r.status != 202 {
            return Err(format!(
                "signup: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        if verified {
            self.verify(&email)?;
        }
        let r = self.login(&email, PASSWORD)?;
        if r.status != 200 {
            return Err(format!(
                "login: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let v = r.json()?;
        let access = v["access_token"].as_str().unwrap_or("").to_owned();
        let me = self
            .send("GET", "/auth/me", Some(&access), None, &[])?
            .json()?;
        Ok(Account {
            email,
            id: me["id"].as_str().unwrap_or("").to_owned(),
            access,
            refresh: v["refresh_token"].as_str().unwrap_or("").to_owned(),
        })
    }

    /// The suite's system_admin (made with the bootstrap secret on first use).
    pub fn admin(&self) -> Result<(String, String), String> {
        if let Some(a) = self.admin.borrow().clone() {
            return Ok(a);
        }
        let a = self.account("admin", true)?;
        let r = self.call(
            "POST",
            "/auth/admin/bootstrap",
            "/auth/admin/bootstrap",
            Some(&a.access),
            Some(&json!({"secret": self.target.bootstrap_secret})),
            &[],
        )?;
        if r.status != 200 {
            return Err(format!(
                "bootstrap: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        // Roles are read from storage, but tokens carry them too: fetch a fresh one.
        let r = self.call(
            "POST",
            "/auth/step-up",
            "/auth/step-up",
            Some(&a.access),
            Some(&json!({"password": PASSWORD})),
            &[],
        )?;
        let token = r.json()?["access_token"].as_str().unwrap_or("").to_owned();
        *self.admin.borrow_mut() = Some((a.id.clone(), token.clone()));
        Ok((a.id, token))
    }

    /// An access token signed with the deployment's key, with `claims`
    /// (merged over valid defaults for `sub`/`sid`).
    pub fn mint(&self, sub: &str, sid: &str, patch: &Json) -> Result<String, String> {
        let now = unix_now();
        let mut payload = json!({
            "iss": self.target.issuer, "aud": "edgecoder", "sub": sub, "sid": sid, "jti": "suite",
            "roles": ["user"], "auth_time": now, "amr": ["pwd"], "iat": now, "exp": now + 600,
        });
        merge(&mut payload, patch);
        let key = edgecoder_kernel::SigningKey::from_secret(&self.target.signing_key)
            .map_err(|e| e.to_string())?;
        sign_es256(
            &key,
            &json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid()}),
            &payload,
        )
    }
}

fn merge(into: &mut Json, patch: &Json) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), patch.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

fn b64(v: &Json) -> String {
    URL_SAFE_NO_PAD.encode(body_of(v))
}

fn sign_es256(
    key: &edgecoder_kernel::SigningKey,
    header: &Json,
    payload: &Json,
) -> Result<String, String> {
    use p256::ecdsa::signature::Signer;
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig: p256::ecdsa::Signature = key.ecdsa().sign(input.as_bytes());
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    ))
}

fn hs256(secret: &[u8], header: &Json, payload: &Json) -> String {
    use hmac::{Hmac, Mac};
    let input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"k").unwrap_or_else(|_| unreachable!())
    });
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn status(r: &Reply, want: u16, what: &str) -> Result<(), String> {
    if r.status == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: got {} want {want}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))
    }
}

/// The problem body without the per-request fields, for "identical" comparisons.
fn stable(r: &Reply) -> Result<Json, String> {
    let mut v = r.json()?;
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
    }
    Ok(v)
}

type IdCheck = fn(&Ctx) -> Result<(), String>;

/// Every identity check, by name, in run order (the audit coverage check last).
pub fn checks() -> Vec<(&'static str, IdCheck)> {
    vec![
        (
            "openapi_documents_identity_request_and_response_schemas",
            openapi_documents_identity_request_and_response_schemas,
        ),
        (
            "security_headers_on_auth_responses",
            security_headers_on_auth_responses,
        ),
        (
            "signup_is_identical_for_known_and_unknown_emails",
            signup_is_identical_for_known_and_unknown_emails,
        ),
        (
            "signup_refuses_invalid_email_and_weak_passwords",
            signup_refuses_invalid_email_and_weak_passwords,
        ),
        (
            "one_mebibyte_password_is_refused_quickly",
            one_mebibyte_password_is_refused_quickly,
        ),
        (
            "verification_link_page_does_not_verify_on_prefetch",
            verification_link_page_does_not_verify_on_prefetch,
        ),
        (
            "verification_token_reuse_and_unknown_are_refused",
            verification_token_reuse_and_unknown_are_refused,
        ),
        (
            "resend_is_identical_for_known_and_unknown_emails",
            resend_is_identical_for_known_and_unknown_emails,
        ),
        (
            "login_failures_are_identical_for_unknown_email_and_wrong_password",
            login_failures_are_identical_for_unknown_email_and_wrong_password,
        ),
        (
            "login_returns_oauth_token_response_and_browser_cookie",
            login_returns_oauth_token_response_and_browser_cookie,
        ),
        ("me_reports_the_account", me_reports_the_account),
        ("jwt_alg_none_is_refused", jwt_alg_none_is_refused),
        (
            "jwt_hs256_signed_with_public_key_is_refused",
            jwt_hs256_signed_with_public_key_is_refused,
        ),
        ("jwt_expired_is_refused", jwt_expired_is_refused),
        ("jwt_unknown_kid_is_refused", jwt_unknown_kid_is_refused),
        (
            "jwt_wrong_issuer_or_audience_is_refused",
            jwt_wrong_issuer_or_audience_is_refused,
        ),
        (
            "jwt_tampered_payload_is_refused",
            jwt_tampered_payload_is_refused,
        ),
        (
            "refresh_rotates_and_reuse_revokes_the_family",
            refresh_rotates_and_reuse_revokes_the_family,
        ),
        (
            "cookie_refresh_without_allowed_origin_is_csrf_rejected",
            cookie_refresh_without_allowed_origin_is_csrf_rejected,
        ),
        (
            "sessions_list_revoke_logout_and_logout_all",
            sessions_list_revoke_logout_and_logout_all,
        ),
        (
            "password_reset_is_uniform_single_use_and_revokes_sessions",
            password_reset_is_uniform_single_use_and_revokes_sessions,
        ),
        (
            "password_change_needs_step_up_and_revokes_other_sessions",
            password_change_needs_step_up_and_revokes_other_sessions,
        ),
        (
            "bootstrap_makes_one_admin_only",
            bootstrap_makes_one_admin_only,
        ),
        (
            "user_granting_itself_a_role_is_forbidden",
            user_granting_itself_a_role_is_forbidden,
        ),
        (
            "role_change_without_step_up_is_refused",
            role_change_without_step_up_is_refused,
        ),
        (
            "roles_go_only_to_verified_accounts_and_last_admin_stays",
            roles_go_only_to_verified_accounts_and_last_admin_stays,
        ),
        (
            "admin_lists_users_and_queries_audit",
            admin_lists_users_and_queries_audit,
        ),
        (
            "enrollment_needs_verified_email_and_valid_node_id",
            enrollment_needs_verified_email_and_valid_node_id,
        ),
        (
            "enrolling_another_users_node_id_conflicts",
            enrolling_another_users_node_id_conflicts,
        ),
        (
            "enrollment_tokens_redeem_once_and_die_on_reenroll_and_delete",
            enrollment_tokens_redeem_once_and_die_on_reenroll_and_delete,
        ),
        (
            "login_failures_per_account_and_ip_are_rate_limited",
            login_failures_per_account_and_ip_are_rate_limited,
        ),
        (
            "resend_per_email_is_rate_limited",
            resend_per_email_is_rate_limited,
        ),
        (
            "every_mutating_route_emits_an_audit_event",
            every_mutating_route_emits_an_audit_event,
        ),
    ]
}

fn openapi_documents_identity_request_and_response_schemas(x: &Ctx) -> Result<(), String> {
    let doc = x.c.get("/openapi.json")?.json()?;
    let paths = doc["paths"].as_object().ok_or("no paths")?;
    let mut checked = 0;
    for (path, item) in paths {
        if !path.starts_with("/auth/")
            || path.starts_with("/auth/_test/")
            || path.starts_with("/auth/health")
        {
            continue;
        }
        for (method, op) in item.as_object().into_iter().flatten() {
            let at = format!("{method} {path}");
            let responses = op["responses"]
                .as_object()
                .ok_or(format!("{at}: no responses"))?;
            // Browser-facing OAuth routes succeed with a redirect.
            let Some((_, ok)) = responses
                .iter()
                .find(|(code, _)| code.starts_with('2'))
                .or_else(|| responses.iter().find(|(code, _)| code.as_str() == "302"))
            else {
                return Err(format!("{at}: no 2xx (or 302) response"));
            };
            if let Some(schema) = ok["content"].get("application/json").map(|c| &c["schema"])
                && schema["properties"]
                    .as_object()
                    .is_none_or(|p| p.is_empty())
            {
                return Err(format!(
                    "{at}: 2xx body schema lists no properties: {schema}"
                ));
            }
            if !responses.keys().any(|c| c.starts_with('4')) {
                return Err(format!("{at}: no 4xx documented"));
            }
            let takes_json = !matches!(
                (method.as_str(), path.as_str()),
                ("get", _) | ("delete", _) | ("post", "/auth/logout" | "/auth/logout-all")
            );
            if takes_json
                && op["requestBody"]["content"]["application/json"]["schema"]["properties"]
                    .as_object()
                    .is_none()
            {
                return Err(format!("{at}: no request body schema"));
            }
            checked += 1;
        }
    }
    if checked < 20 {
        return Err(format!("only {checked} identity operations documented"));
    }
    Ok(())
}

fn security_headers_on_auth_responses(x: &Ctx) -> Result<(), String> {
    for r in [
        x.c.get("/auth/health")?,
        x.send("GET", "/auth/me", None, None, &[])?,
        x.send(
            "POST",
            "/auth/login",
            None,
            Some(&json!({"email": "a@b.example", "password": 1})),
            &[],
        )?,
    ] {
        for (h, want) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            if r.header(h) != Some(want) {
                return Err(format!("{h}: {:?} on a {} answer", r.header(h), r.status));
            }
        }
    }
    Ok(())
}

fn signup_is_identical_for_known_and_unknown_emails(x: &Ctx) -> Result<(), String> {
    let email = x.email("dup");
    let first = x.signup(&email)?;
    let again = x.signup(&email.to_uppercase())?;
    status(&first, 202, "signup")?;
    if first.status != again.status || first.body != again.body {
        return Err(format!(
            "known email answered differently: {} {:?} vs {} {:?}",
            first.status,
            String::from_utf8_lossy(&first.body),
            again.status,
            String::from_utf8_lossy(&again.body)
        ));
    }
    if first.json()? != json!({"status": "verification_sent"}) {
        return Err(format!("body {}", String::from_utf8_lossy(&first.body)));
    }
    let notice = x.last_mail(&email)?;
    if !notice["subject"]
        .as_str()
        .unwrap_or("")
        .contains("tried to sign up")
    {
        return Err(format!("the owner got no notice: {notice}"));
    }
    Ok(())
}

fn signup_refuses_invalid_email_and_weak_passwords(x: &Ctx) -> Result<(), String> {
    for bad in ["not-an-email", "a@b", "two@@example.com", " @example.com"] {
        let r = x.send(
            "POST",
            "/auth/signup",
            None,
            Some(&json!({"email": bad, "password": PASSWORD})),
            &[],
        )?;
        expect_problem(&r, 400, "invalid_email")?;
    }
    let email = x.email("weak");
    let local = email.split('@').next().unwrap_or("");
    for (pw, rule) in [
        ("short-pass".to_owned(), "12 characters"),
        (format!("xx{local}xx"), "local part"),
        ("x".repeat(257), "256 bytes"),
    ] {
        let r = x.send(
            "POST",
            "/auth/signup",
            None,
            Some(&json!({"email": email, "password": pw})),
            &[],
        )?;
        expect_problem(&r, 400, "weak_password")?;
        if !r.json()?["detail"].as_str().unwrap_or("").contains(rule) {
            return Err(format!("detail does not name the rule {rule:?}"));
        }
    }
    Ok(())
}

fn one_mebibyte_password_is_refused_quickly(x: &Ctx) -> Result<(), String> {
    let body = json!({"email": x.email("huge"), "password": "p".repeat(1 << 20)});
    let started = std::time::Instant::now();
    let r = x.send("POST", "/auth/login", None, Some(&body), &[])?;
    if r.status != 413 && r.status != 400 {
        return Err(format!("1 MiB password: {}", r.status));
    }
    // Not a benchmark: a hash of 1 MiB would still be far faster than this.
    if started.elapsed() > std::time::Duration::from_secs(10) {
        return Err("1 MiB password took over 10 s".into());
    }
    Ok(())
}

fn verification_link_page_does_not_verify_on_prefetch(x: &Ctx) -> Result<(), String> {
    let a = x.account("prefetch", false)?;
    let token = x.mailed_token(&a.email)?;
    let mail = x.last_mail(&a.email)?;
    let link = format!("/auth/verify-email?token={token}");
    if !mail["body"].as_str().unwrap_or("").contains(&link) {
        return Err(format!("mail lacks the link: {mail}"));
    }
    for _ in 0..2 {
        let page = x.c.get(&link)?;
        status(&page, 200, "link page")?;
        let html = String::from_utf8_lossy(&page.body);
        if !html.contains("method=\"post\"") || page.media_type() != "text/html" {
            return Err(format!("page has no POST form: {html}"));
        }
    }
    let me = x
        .send("GET", "/auth/me", Some(&a.access), None, &[])?
        .json()?;
    if me["email_verified"] != json!(false) {
        return Err(format!("GET verified the email: {me}"));
    }
    // A tampered link is not reflected into the page.
    let page = x.c.get("/auth/verify-email?token=evt_%3Cscript%3E")?;
    if String::from_utf8_lossy(&page.body).contains("<script>") {
        return Err("token reflected into HTML".into());
    }
    // The page's form submission verifies.
    let r = x.c.send_with(
        "POST",
        "/auth/verify-email",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={token}").as_bytes(),
    )?;
    status(&r, 200, "form POST")?;
    let me = x
        .send("GET", "/auth/me", Some(&a.access), None, &[])?
        .json()?;
    if me["email_verified"] != json!(true) {
        return Err(format!("form POST did not verify: {me}"));
    }
    Ok(())
}

fn verification_token_reuse_and_unknown_are_refused(x: &Ctx) -> Result<(), String> {
    let email = x.email("reuse");
    x.signup(&email)?;
    let token = x.mailed_token(&email)?;
    x.verify(&email)?;
    let again = x.send(
        "POST",
        "/auth/verify-email",
        None,
        Some(&json!({"token": token})),
        &[],
    )?;
    expect_problem(&again, 400, "token_invalid")?;
    let unknown = format!("evt_{}", "A".repeat(43));
    for t in [unknown.as_str(), "garbage", ""] {
        let r = x.send(
            "POST",
            "/auth/verify-email",
            None,
            Some(&json!({"token": t})),
            &[],
        )?;
        expect_problem(&r, 400, "token_invalid")?;
    }
    Ok(())
}

fn resend_is_identical_for_known_and_unknown_emails(x: &Ctx) -> Result<(), String> {
    let known = x.email("resend");
    x.signup(&known)?;
    let first = x.mailed_token(&known)?;
    let a = x.call(
        "POST",
        "/auth/resend-verification",
        "/auth/resend-verification",
        None,
        Some(&json!({"email": known})),
        &[],
    )?;
    let b = x.call(
        "POST",
        "/auth/resend-verification",
        "/auth/resend-verification",
        None,
        Some(&json!({"email": x.email("nobody")})),
        &[],
    )?;
    status(&a, 202, "resend")?;
    if a.status != b.status || a.body != b.body {
        return Err("resend answers differ for known and unknown emails".into());
    }
    let second = x.mailed_token(&known)?;
    if first == second {
        return Err("no new token was mailed".into());
    }
    // Asking again does not cancel the earlier link (so nobody can cancel a
    // victim's links by asking for more); using one cancels the others.
    x.verify(&known)?;
    let r = x.send(
        "POST",
        "/auth/verify-email",
        None,
        Some(&json!({"token": first})),
        &[],
    )?;
    expect_problem(&r, 400, "token_invalid")
}

fn login_failures_are_identical_for_unknown_email_and_wrong_password(
    x: &Ctx,
) -> Result<(), String> {
    let a = x.account("loginfail", true)?;
    let wrong = x.login(&a.email, "wrong password entirely")?;
    let unknown = x.login(&x.email("ghost"), "wrong password entirely")?;
    expect_problem(&wrong, 401, "invalid_credentials")?;
    expect_problem(&unknown, 401, "invalid_credentials")?;
    let (mut w, mut u) = (stable(&wrong)?, stable(&unknown)?);
    w.as_object_mut().map(|o| o.remove("instance"));
    u.as_object_mut().map(|o| o.remove("instance"));
    if w != u {
        return Err(format!("bodies differ: {w} vs {u}"));
    }
    Ok(())
}

fn login_returns_oauth_token_response_and_browser_cookie(x: &Ctx) -> Result<(), String> {
    let a = x.account("shape", true)?;
    let device = x.login(&a.email, PASSWORD)?;
    let v = device.json()?;
    if v["token_type"] != "Bearer"
        || v["expires_in"].as_i64().is_none_or(|e| e > 900)
        || !v["refresh_token"].is_string()
    {
        return Err(format!("device token response {v}"));
    }
    if device.header("set-cookie").is_some() {
        return Err("device clients must not get a cookie".into());
    }
    let browser = x.send(
        "POST",
        "/auth/login",
        None,
        Some(&json!({"email": a.email, "password": PASSWORD, "client": "browser"})),
        &[],
    )?;
    let v = browser.json()?;
    if v.get("refresh_token").is_some() || !v["access_token"].is_string() {
        return Err(format!("browser token response {v}"));
    }
    let cookie = browser
        .header("set-cookie")
        .ok_or("browser login set no cookie")?;
    for part in [
        "edgecoder_refresh=ert_",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/auth/token",
    ] {
        if !cookie.contains(part) {
            return Err(format!("cookie lacks {part}: {cookie}"));
        }
    }
    let secure = cookie.contains("Secure");
    if secure == x.target.issuer.starts_with("http://") {
        return Err(format!(
            "Secure must be set exactly when not on localhost: {cookie}"
        ));
    }
    Ok(())
}

fn me_reports_the_account(x: &Ctx) -> Result<(), String> {
    let a = x.account("me", false)?;
    let me = x.send("GET", "/auth/me", Some(&a.access), None, &[])?;
    status(&me, 200, "me")?;
    let v = me.json()?;
    if v["email"] != json!(a.email)
        || v["email_verified"] != json!(false)
        || v["roles"] != json!(["user"])
        || v["display_name"] != "Suite"
        || !v["created_at"].is_string()
    {
        return Err(format!("me {v}"));
    }
    expect_problem(
        &x.send("GET", "/auth/me", None, None, &[])?,
        401,
        "authentication_required",
    )
}

fn refused(x: &Ctx, token: &str, what: &str) -> Result<(), String> {
    let r = x.send("GET", "/auth/me", Some(token), None, &[])?;
    expect_problem(&r, 401, "invalid_token").map_err(|e| format!("{what}: {e}"))?;
    if !r
        .header("www-authenticate")
        .unwrap_or("")
        .to_ascii_lowercase()
        .starts_with("bearer")
    {
        return Err(format!("{what}: no WWW-Authenticate: Bearer"));
    }
    Ok(())
}

fn session_of(x: &Ctx, a: &Account) -> Result<String, String> {
    let me = x
        .send("GET", "/auth/me", Some(&a.access), None, &[])?
        .json()?;
    me["session_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no session id: {me}"))
}

fn jwt_alg_none_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("none", false)?;
    let sid = session_of(x, &a)?;
    let valid = x.mint(&a.id, &sid, &json!({}))?;
    refused(
        x,
        &format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            valid.split('.').nth(1).unwrap_or("")
        ),
        "alg none",
    )?;
    // The minted token itself is good: the refusal is about the algorithm.
    status(
        &x.send("GET", "/auth/me", Some(&valid), None, &[])?,
        200,
        "minted token",
    )
}

fn jwt_hs256_signed_with_public_key_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("hs256", false)?;
    let sid = session_of(x, &a)?;
    let key = edgecoder_kernel::SigningKey::from_secret(&x.target.signing_key)
        .map_err(|e| e.to_string())?;
    let now = unix_now();
    let payload = json!({"iss": x.target.issuer, "aud": "edgecoder", "sub": a.id, "sid": sid, "jti": "j", "roles": ["user", "system_admin"], "auth_time": now, "amr": ["pwd"], "iat": now, "exp": now + 600});
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = x.c.get("/.well-known/jwks.json")?.body;
    for secret in [point.as_bytes().to_vec(), jwks] {
        let t = hs256(
            &secret,
            &json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()}),
            &payload,
        );
        refused(x, &t, "HS256 keyed with the public key")?;
    }
    Ok(())
}

fn jwt_expired_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("expired", false)?;
    let sid = session_of(x, &a)?;
    let now = unix_now();
    refused(
        x,
        &x.mint(&a.id, &sid, &json!({"iat": now - 3600, "exp": now - 600}))?,
        "expired",
    )
}

fn jwt_unknown_kid_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("kid", false)?;
    let sid = session_of(x, &a)?;
    let valid = x.mint(&a.id, &sid, &json!({}))?;
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[0] = b64(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "0000000000000000"}));
    refused(x, &parts.join("."), "unknown kid")?;
    // Also a token from a key nobody published.
    struct R;
    impl edgecoder_kernel::Rng for R {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(3);
        }
    }
    let other = edgecoder_kernel::SigningKey::generate(&R);
    let now = unix_now();
    let forged = sign_es256(
        &other,
        &json!({"alg": "ES256", "kid": other.kid()}),
        &json!({"iss": x.target.issuer, "aud": "edgecoder", "sub": a.id, "sid": sid, "jti": "j", "roles": [], "auth_time": now, "amr": [], "iat": now, "exp": now + 60}),
    )?;
    refused(x, &forged, "foreign key")
}

fn jwt_wrong_issuer_or_audience_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("issaud", false)?;
    let sid = session_of(x, &a)?;
    refused(
        x,
        &x.mint(&a.id, &sid, &json!({"iss": "https://evil.example"}))?,
        "wrong iss",
    )?;
    refused(
        x,
        &x.mint(&a.id, &sid, &json!({"aud": "someone-else"}))?,
        "wrong aud",
    )
}

fn jwt_tampered_payload_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("tamper", false)?;
    let parts: Vec<&str> = a.access.split('.').collect();
    if parts.len() != 3 {
        return Err("access token is not a JWS".into());
    }
    let mut payload: Json = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[1])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    payload["roles"] = json!(["user", "system_admin"]);
    refused(
        x,
        &format!("{}.{}.{}", parts[0], b64(&payload), parts[2]),
        "tampered payload",
    )
}

fn refresh(x: &Ctx, token: &str) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/token/refresh",
        "/auth/token/refresh",
        None,
        Some(&json!({"refresh_token": token})),
        &[],
    )
}

fn refresh_rotates_and_reuse_revokes_the_family(x: &Ctx) -> Result<(), String> {
    let next = |t: &str| -> Result<String, String> {
        let r = refresh(x, t)?;
        status(&r, 200, "refresh")?;
        let n = r.json()?["refresh_token"].as_str().unwrap_or("").to_owned();
        if n.is_empty() || n == t {
            return Err("refresh token was not rotated".into());
        }
        Ok(n)
    };
    let a = x.account("rotate", false)?;
    let second = next(&a.refresh)?;
    let third = next(&second)?;
    // The first token again after its successor was used: a copy is in use.
    // The whole family dies, the newest token too.
    expect_problem(&refresh(x, &a.refresh)?, 401, "invalid_refresh_token")?;
    expect_problem(&refresh(x, &third)?, 401, "invalid_refresh_token")
        .map_err(|e| format!("family not revoked: {e}"))?;
    // A retry (or a second tab) right after a rotation, while the successor
    // is unused, is redone instead of treated as theft; the successor dies.
    let b = x.account("rotate-race", false)?;
    let _unused = next(&b.refresh)?;
    let retried = next(&b.refresh).map_err(|e| format!("retry in the grace window: {e}"))?;
    let fourth = next(&retried)?;
    // Now the first token's successor has been used: reuse, family revoked.
    expect_problem(&refresh(x, &b.refresh)?, 401, "invalid_refresh_token")?;
    expect_problem(&refresh(x, &fourth)?, 401, "invalid_refresh_token")
        .map_err(|e| format!("family not revoked after the grace window: {e}"))?;
    let (_, admin) = x.admin()?;
    let ev = x
        .send(
            "GET",
            "/auth/admin/audit?action=auth.refresh.reuse&limit=200",
            Some(&admin),
            None,
            &[],
        )?
        .json()?;
    if !ev["events"].as_array().is_some_and(|e| {
        e.iter()
            .any(|e| e["actor"] == json!(format!("user:{}", a.id)))
    }) {
        return Err(format!("no auth.refresh.reuse event: {ev}"));
    }
    expect_problem(
        &refresh(x, "ert_not-a-real-token")?,
        401,
        "invalid_refresh_token",
    )
}

fn cookie_refresh_without_allowed_origin_is_csrf_rejected(x: &Ctx) -> Result<(), String> {
    let a = x.account("csrf", false)?;
    let login = x.send(
        "POST",
        "/auth/login",
        None,
        Some(&json!({"email": a.email, "password": PASSWORD})),
        &[],
    )?;
    let set = login.header("set-cookie").ok_or("no cookie")?;
    let cookie = set.split(';').next().unwrap_or("").to_owned();
    let post = |extra: &[(&str, &str)]| {
        let mut h = vec![("cookie", cookie.as_str())];
        h.extend_from_slice(extra);
        x.c.send_with("POST", "/auth/token/refresh", &h, &[])
    };
    expect_problem(&post(&[])?, 403, "csrf_rejected").map_err(|e| format!("no Origin: {e}"))?;
    expect_problem(
        &post(&[("origin", "https://evil.example")])?,
        403,
        "csrf_rejected",
    )
    .map_err(|e| format!("foreign Origin: {e}"))?;
    let ok = x.call(
        "POST",
        "/auth/token/refresh",
        "/auth/token/refresh",
        None,
        None,
        &[
            ("cookie", cookie.as_str()),
            ("origin", x.target.allowed_origin.as_str()),
        ],
    )?;
    status(&ok, 200, "cookie refresh from the allowed origin")?;
    if ok.json()?.get("refresh_token").is_some()
        || !ok
            .header("set-cookie")
            .unwrap_or("")
            .contains("edgecoder_refresh=ert_")
    {
        return Err("browser refresh must rotate the cookie, not return the token".into());
    }
    Ok(())
}

fn sessions_list_revoke_logout_and_logout_all(x: &Ctx) -> Result<(), String> {
    let a = x.account("sessions", false)?;
    let second = x.login(&a.email, PASSWORD)?.json()?;
    let second_access = second["access_token"].as_str().unwrap_or("").to_owned();
    let second_refresh = second["refresh_token"].as_str().unwrap_or("").to_owned();
    let third = x.login(&a.email, PASSWORD)?.json()?;
    let third_access = third["access_token"].as_str().unwrap_or("").to_owned();
    let list = x
        .send(
            "GET",
            "/auth/sessions",
            Some(&a.access),
            None,
            &[("user-agent", "suite-agent/1")],
        )?
        .json()?;
    let sessions = list["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.len() != 3
        || sessions
            .iter()
            .filter(|s| s["current"] == json!(true))
            .count()
            != 1
    {
        return Err(format!("sessions {list}"));
    }
    let second_sid = x
        .send("GET", "/auth/me", Some(&second_access), None, &[])?
        .json()?["session_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let path = format!("/auth/sessions/{second_sid}");
    status(
        &x.call(
            "DELETE",
            "/auth/sessions/{id}",
            &path,
            Some(&a.access),
            None,
            &[],
        )?,
        200,
        "revoke session",
    )?;
    expect_problem(&refresh(x, &second_refresh)?, 401, "invalid_refresh_token")
        .map_err(|e| format!("revoked session refreshed: {e}"))?;
    expect_problem(
        &x.send("GET", "/auth/me", Some(&second_access), None, &[])?,
        401,
        "invalid_token",
    )?;
    expect_problem(
        &x.send("DELETE", &path, Some(&a.access), None, &[])?,
        404,
        "session_not_found",
    )?;
    // Another user's session id is not ours to revoke.
    let b = x.account("sessions-other", false)?;
    let b_sid = session_of(x, &b)?;
    expect_problem(
        &x.send(
            "DELETE",
            &format!("/auth/sessions/{b_sid}"),
            Some(&a.access),
            None,
            &[],
        )?,
        404,
        "session_not_found",
    )?;
    status(
        &x.send("GET", "/auth/me", Some(&b.access), None, &[])?,
        200,
        "other user's session survives",
    )?;
    // Logout ends only this session.
    let out = x.call(
        "POST",
        "/auth/logout",
        "/auth/logout",
        Some(&third_access),
        None,
        &[],
    )?;
    status(&out, 200, "logout")?;
    if !out.header("set-cookie").unwrap_or("").contains("Max-Age=0") {
        return Err("logout does not clear the refresh cookie".into());
    }
    expect_problem(
        &x.send("GET", "/auth/me", Some(&third_access), None, &[])?,
        401,
        "invalid_token",
    )?;
    status(
        &x.send("GET", "/auth/me", Some(&a.access), None, &[])?,
        200,
        "first session after logout",
    )?;
    // Logout-all ends the rest.
    status(
        &x.call(
            "POST",
            "/auth/logout-all",
            "/auth/logout-all",
            Some(&a.access),
            None,
            &[],
        )?,
        200,
        "logout-all",
    )?;
    expect_problem(
        &x.send("GET", "/auth/me", Some(&a.access), None, &[])?,
        401,
        "invalid_token",
    )?;
    expect_problem(&refresh(x, &a.refresh)?, 401, "invalid_refresh_token")
}

fn password_reset_is_uniform_single_use_and_revokes_sessions(x: &Ctx) -> Result<(), String> {
    let a = x.account("reset", true)?;
    let known = x.call(
        "POST",
        "/auth/password/reset/request",
        "/auth/password/reset/request",
        None,
        Some(&json!({"email": a.email})),
        &[],
    )?;
    let unknown = x.call(
        "POST",
        "/auth/password/reset/request",
        "/auth/password/reset/request",
        None,
        Some(&json!({"email": x.email("noreset")})),
        &[],
    )?;
    status(&known, 202, "reset request")?;
    if known.status != unknown.status || known.body != unknown.body {
        return Err("reset answers differ for known and unknown emails".into());
    }
    let token = x.mailed_token(&a.email)?;
    let confirm = |pw: &str| {
        x.call(
            "POST",
            "/auth/password/reset/confirm",
            "/auth/password/reset/confirm",
            None,
            Some(&json!({"token": token, "new_password": pw})),
            &[],
        )
    };
    // A weak choice does not burn the token.
    expect_problem(&confirm("short")?, 400, "weak_password")?;
    let new_pw = "a brand new passphrase";
    let ok = confirm(new_pw)?;
    status(&ok, 200, "reset confirm")?;
    expect_problem(&confirm("another new passphrase")?, 400, "token_invalid")
        .map_err(|e| format!("reset token reuse: {e}"))?;
    expect_problem(&refresh(x, &a.refresh)?, 401, "invalid_refresh_token")
        .map_err(|e| format!("session survived reset: {e}"))?;
    expect_problem(&x.login(&a.email, PASSWORD)?, 401, "invalid_credentials")?;
    status(
        &x.login(&a.email, new_pw)?,
        200,
        "login with the new password",
    )
}

fn password_change_needs_step_up_and_revokes_other_sessions(x: &Ctx) -> Result<(), String> {
    let a = x.account("change", true)?;
    let sid = session_of(x, &a)?;
    let other = x.login(&a.email, PASSWORD)?.json()?;
    let stale = x.mint(&a.id, &sid, &json!({"auth_time": unix_now() - 11 * 60}))?;
    let body = json!({"current_password": PASSWORD, "new_password": "changed passphrase 2"});
    let r = x.call(
        "POST",
        "/auth/password/change",
        "/auth/password/change",
        Some(&stale),
        Some(&body),
        &[],
    )?;
    expect_problem(&r, 403, "step_up_required")?;
    let r = x.send(
        "POST",
        "/auth/step-up",
        Some(&stale),
        Some(&json!({"password": "wrong password here"})),
        &[],
    )?;
    expect_problem(&r, 401, "invalid_credentials")?;
    let up = x.call(
        "POST",
        "/auth/step-up",
        "/auth/step-up",
        Some(&stale),
        Some(&json!({"password": PASSWORD})),
        &[],
    )?;
    status(&up, 200, "step-up")?;
    let fresh = up.json()?["access_token"].as_str().unwrap_or("").to_owned();
    let wrong =
        json!({"current_password": "not the password", "new_password": "changed passphrase 2"});
    expect_problem(
        &x.send(
            "POST",
            "/auth/password/change",
            Some(&fresh),
            Some(&wrong),
            &[],
        )?,
        401,
        "invalid_credentials",
    )?;
    let r = x.call(
        "POST",
        "/auth/password/change",
        "/auth/password/change",
        Some(&fresh),
        Some(&body),
        &[],
    )?;
    status(&r, 200, "password change")?;
    expect_problem(
        &refresh(x, other["refresh_token"].as_str().unwrap_or(""))?,
        401,
        "invalid_refresh_token",
    )
    .map_err(|e| format!("other session survived the change: {e}"))?;
    status(
        &x.send("GET", "/auth/me", Some(&fresh), None, &[])?,
        200,
        "this session survives",
    )?;
    status(
        &x.login(&a.email, "changed passphrase 2")?,
        200,
        "login with the changed password",
    )
}

fn bootstrap_makes_one_admin_only(x: &Ctx) -> Result<(), String> {
    let a = x.account("bootwrong", true)?;
    let r = x.call(
        "POST",
        "/auth/admin/bootstrap",
        "/auth/admin/bootstrap",
        Some(&a.access),
        Some(&json!({"secret": "not-the-bootstrap-secret-at-all-000000"})),
        &[],
    )?;
    expect_problem(&r, 403, "bootstrap_refused")?;
    let (admin_id, admin) = x.admin()?;
    let me = x.send("GET", "/auth/me", Some(&admin), None, &[])?.json()?;
    if !me["roles"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("system_admin")))
    {
        return Err(format!("bootstrap did not grant system_admin: {me}"));
    }
    // Once an admin exists the secret is spent, even for the right value.
    let r = x.send(
        "POST",
        "/auth/admin/bootstrap",
        Some(&a.access),
        Some(&json!({"secret": x.target.bootstrap_secret})),
        &[],
    )?;
    expect_problem(&r, 403, "bootstrap_refused")?;
    let _ = admin_id;
    Ok(())
}

fn user_granting_itself_a_role_is_forbidden(x: &Ctx) -> Result<(), String> {
    let a = x.account("selfgrant", true)?;
    let path = format!("/auth/admin/users/{}/roles", a.id);
    let r = x.call(
        "POST",
        "/auth/admin/users/{id}/roles",
        &path,
        Some(&a.access),
        Some(&json!({"role": "system_admin"})),
        &[],
    )?;
    expect_problem(&r, 403, "forbidden")?;
    // Claiming the role in a (validly signed) token does not help: roles come from storage.
    let sid = session_of(x, &a)?;
    let claimed = x.mint(&a.id, &sid, &json!({"roles": ["user", "system_admin"]}))?;
    expect_problem(
        &x.send(
            "POST",
            &path,
            Some(&claimed),
            Some(&json!({"role": "system_admin"})),
            &[],
        )?,
        403,
        "forbidden",
    )?;
    expect_problem(
        &x.send("GET", "/auth/admin/users", Some(&a.access), None, &[])?,
        403,
        "forbidden",
    )?;
    expect_problem(
        &x.send("GET", "/auth/admin/audit", Some(&a.access), None, &[])?,
        403,
        "forbidden",
    )
}

fn role_change_without_step_up_is_refused(x: &Ctx) -> Result<(), String> {
    let (admin_id, admin) = x.admin()?;
    let me = x.send("GET", "/auth/me", Some(&admin), None, &[])?.json()?;
    let sid = me["session_id"].as_str().unwrap_or("").to_owned();
    let stale = x.mint(&admin_id, &sid, &json!({"auth_time": unix_now() - 11 * 60}))?;
    let target = x.account("stepup-target", true)?;
    let path = format!("/auth/admin/users/{}/roles", target.id);
    let r = x.send(
        "POST",
        &path,
        Some(&stale),
        Some(&json!({"role": "coordinator_owner"})),
        &[],
    )?;
    expect_problem(&r, 403, "step_up_required")?;
    let r = x.send(
        "DELETE",
        &format!("{path}/coordinator_owner"),
        Some(&stale),
        None,
        &[],
    )?;
    expect_problem(&r, 403, "step_up_required")?;
    let me = x
        .send("GET", "/auth/me", Some(&target.access), None, &[])?
        .json()?;
    if me["roles"] != json!(["user"]) {
        return Err(format!("role changed without step-up: {me}"));
    }
    Ok(())
}

fn roles_go_only_to_verified_accounts_and_last_admin_stays(x: &Ctx) -> Result<(), String> {
    let (admin_id, admin) = x.admin()?;
    let unverified = x.account("unverified-role", false)?;
    let r = x.call(
        "POST",
        "/auth/admin/users/{id}/roles",
        &format!("/auth/admin/users/{}/roles", unverified.id),
        Some(&admin),
        Some(&json!({"role": "coordinator_owner"})),
        &[],
    )?;
    expect_problem(&r, 403, "email_unverified")?;
    let v = x.account("owner", true)?;
    let path = format!("/auth/admin/users/{}/roles", v.id);
    expect_problem(
        &x.send(
            "POST",
            &path,
            Some(&admin),
            Some(&json!({"role": "god"})),
            &[],
        )?,
        400,
        "invalid_role",
    )?;
    let r = x.call(
        "POST",
        "/auth/admin/users/{id}/roles",
        &path,
        Some(&admin),
        Some(&json!({"role": "coordinator_owner"})),
        &[],
    )?;
    status(&r, 200, "grant")?;
    // The grant is in the transparency log, and the answer says where.
    let index = r.json()?["ledger_index"]
        .as_u64()
        .ok_or("the grant has no ledger_index")?;
    let e = x.c.get(&format!("/ledger/entries/{index}"))?.json()?;
    let envelope: Json = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(e["entry"].as_str().unwrap_or(""))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let payload: Json = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap_or(""))
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if envelope["type"] != "edgecoder.dev/role-grant/v1"
        || payload["user"] != json!(v.id)
        || payload["role"] != "coordinator_owner"
    {
        return Err(format!(
            "ledger entry {index} is not this grant: {envelope} {payload}"
        ));
    }
    let me = x
        .send("GET", "/auth/me", Some(&v.access), None, &[])?
        .json()?;
    if me["roles"] != json!(["user", "coordinator_owner"]) {
        return Err(format!("roles after grant: {me}"));
    }
    let r = x.call(
        "DELETE",
        "/auth/admin/users/{id}/roles/{role}",
        &format!("{path}/coordinator_owner"),
        Some(&admin),
        None,
        &[],
    )?;
    status(&r, 200, "revoke")?;
    let me = x
        .send("GET", "/auth/me", Some(&v.access), None, &[])?
        .json()?;
    if me["roles"] != json!(["user"]) {
        return Err(format!("roles after revoke: {me}"));
    }
    let r = x.send(
        "DELETE",
        &format!("/auth/admin/users/{admin_id}/roles/system_admin"),
        Some(&admin),
        None,
        &[],
    )?;
    expect_problem(&r, 409, "last_admin")?;
    let r = x.send(
        "POST",
        "/auth/admin/users/0000/roles",
        Some(&admin),
        Some(&json!({"role": "coordinator_owner"})),
        &[],
    )?;
    expect_problem(&r, 404, "user_not_found")
}

fn admin_lists_users_and_queries_audit(x: &Ctx) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    let page = x
        .send("GET", "/auth/admin/users?limit=2", Some(&admin), None, &[])?
        .json()?;
    let users = page["users"].as_array().cloned().unwrap_or_default();
    let next = page["next"]
        .as_str()
        .ok_or(format!("no next cursor: {page}"))?;
    if users.len() != 2 || users.iter().any(|u| u.get("password_hash").is_some()) {
        return Err(format!("users page {page}"));
    }
    let page2 = x
        .send(
            "GET",
            &format!("/auth/admin/users?limit=2&after={next}"),
            Some(&admin),
            None,
            &[],
        )?
        .json()?;
    if page2["users"].get(0).map(|u| &u["id"]) == users.first().map(|u| &u["id"]) {
        return Err("pagination repeated a user".into());
    }
    expect_problem(
        &x.send(
            "GET",
            "/auth/admin/users?limit=100000",
            Some(&admin),
            None,
            &[],
        )?,
        400,
        "invalid_request",
    )?;
    let ev = x
        .send(
            "GET",
            "/auth/admin/audit?action=auth.login&limit=5",
            Some(&admin),
            None,
            &[],
        )?
        .json()?;
    let events = ev["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() || events.iter().any(|e| e["action"] != "auth.login") {
        return Err(format!("audit filter {ev}"));
    }
    let since = x
        .send(
            "GET",
            "/auth/admin/audit?since=2999-01-01T00:00:00Z",
            Some(&admin),
            None,
            &[],
        )?
        .json()?;
    if since["events"].as_array().is_none_or(|e| !e.is_empty()) {
        return Err(format!("since filter {since}"));
    }
    expect_problem(
        &x.send(
            "GET",
            "/auth/admin/audit?since=yesterday",
            Some(&admin),
            None,
            &[],
        )?,
        400,
        "invalid_request",
    )
}

fn enroll(x: &Ctx, token: &str, node: &str) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/nodes/enroll",
        "/auth/nodes/enroll",
        Some(token),
        Some(&json!({"node_id": node, "kind": "agent"})),
        &[],
    )
}

fn redeem(
    x: &Ctx,
    service: Option<&str>,
    token: &str,
    node: &str,
    kind: &str,
) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/nodes/redeem",
        "/auth/nodes/redeem",
        service,
        Some(&json!({"enrollment_token": token, "node_id": node, "kind": kind})),
        &[],
    )
}

fn enrollment_needs_verified_email_and_valid_node_id(x: &Ctx) -> Result<(), String> {
    let u = x.account("enroll-unverified", false)?;
    let node = format!("node-{}-u", x.run);
    expect_problem(&enroll(x, &u.access, &node)?, 403, "email_unverified")?;
    let v = x.account("enroll-ids", true)?;
    for bad in ["%%%", "../x", "ab", "UPPER", "a..b", "-lead"] {
        let r = x.send(
            "POST",
            "/auth/nodes/enroll",
            Some(&v.access),
            Some(&json!({"node_id": bad, "kind": "agent"})),
            &[],
        )?;
        expect_problem(&r, 400, "invalid_node_id").map_err(|e| format!("{bad}: {e}"))?;
    }
    let r = x.send(
        "POST",
        "/auth/nodes/enroll",
        Some(&v.access),
        Some(&json!({"node_id": node, "kind": "queen"})),
        &[],
    )?;
    expect_problem(&r, 400, "invalid_request")
}

fn enrolling_another_users_node_id_conflicts(x: &Ctx) -> Result<(), String> {
    let owner = x.account("node-owner", true)?;
    let thief = x.account("node-thief", true)?;
    let node = format!("node-{}-taken", x.run);
    let r = enroll(x, &owner.access, &node)?;
    status(&r, 201, "enroll")?;
    let token = r.json()?["enrollment_token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    expect_problem(
        &enroll(x, &thief.access, &node)?,
        409,
        "node_owned_by_another_user",
    )?;
    expect_problem(
        &x.send(
            "DELETE",
            &format!("/auth/nodes/{node}"),
            Some(&thief.access),
            None,
            &[],
        )?,
        404,
        "node_not_found",
    )?;
    // The owner's token still works: the attempt changed nothing.
    status(
        &redeem(x, Some(&x.target.service_token), &token, &node, "agent")?,
        200,
        "owner's token after the takeover attempt",
    )
}

fn enrollment_tokens_redeem_once_and_die_on_reenroll_and_delete(x: &Ctx) -> Result<(), String> {
    let a = x.account("node-life", true)?;
    let node = format!("node-{}-life", x.run);
    let first = enroll(x, &a.access, &node)?.json()?;
    let t1 = first["enrollment_token"].as_str().unwrap_or("").to_owned();
    if !t1.starts_with("ect_") || !first["expires_at"].is_string() {
        return Err(format!("enroll response {first}"));
    }
    let t2 = enroll(x, &a.access, &node)?.json()?["enrollment_token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let svc = x.target.service_token.as_str();
    expect_problem(
        &redeem(x, None, &t2, &node, "agent")?,
        401,
        "service_unauthorized",
    )?;
    expect_problem(
        &redeem(
            x,
            Some("wrong-service-token-wrong-service-token"),
            &t2,
            &node,
            "agent",
        )?,
        401,
        "service_unauthorized",
    )?;
    expect_problem(
        &redeem(x, Some(svc), &t1, &node, "agent")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("superseded token: {e}"))?;
    expect_problem(
        &redeem(x, Some(svc), &t2, &node, "coordinator")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("wrong kind: {e}"))?;
    expect_problem(
        &redeem(x, Some(svc), &t2, "some-other-node", "agent")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("wrong node: {e}"))?;
    let ok = redeem(x, Some(svc), &t2, &node, "agent")?;
    status(&ok, 200, "redeem")?;
    if ok.json()?["owner_id"] != json!(a.id) {
        return Err("redeem does not name the owner".into());
    }
    expect_problem(
        &redeem(x, Some(svc), &t2, &node, "agent")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("second redemption: {e}"))?;
    let list = x
        .send("GET", "/auth/nodes", Some(&a.access), None, &[])?
        .json()?;
    if !list["nodes"].as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n["node_id"] == json!(node) && n["state"] == "redeemed")
    }) {
        return Err(format!("nodes list {list}"));
    }
    let t3 = enroll(x, &a.access, &node)?.json()?["enrollment_token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    status(
        &x.call(
            "DELETE",
            "/auth/nodes/{id}",
            &format!("/auth/nodes/{node}"),
            Some(&a.access),
            None,
            &[],
        )?,
        200,
        "delete",
    )?;
    expect_problem(
        &redeem(x, Some(svc), &t3, &node, "agent")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("deleted node's token: {e}"))?;
    // An admin deletes others' nodes only with step-up.
    let node2 = format!("node-{}-admin", x.run);
    status(&enroll(x, &a.access, &node2)?, 201, "enroll")?;
    let (admin_id, admin) = x.admin()?;
    let me = x.send("GET", "/auth/me", Some(&admin), None, &[])?.json()?;
    let stale = x.mint(
        &admin_id,
        me["session_id"].as_str().unwrap_or(""),
        &json!({"auth_time": unix_now() - 11 * 60}),
    )?;
    expect_problem(
        &x.send(
            "DELETE",
            &format!("/auth/nodes/{node2}"),
            Some(&stale),
            None,
            &[],
        )?,
        403,
        "step_up_required",
    )?;
    status(
        &x.send(
            "DELETE",
            &format!("/auth/nodes/{node2}"),
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "admin delete with step-up",
    )
}

fn login_failures_per_account_and_ip_are_rate_limited(x: &Ctx) -> Result<(), String> {
    let a = x.account("ratelimit", true)?;
    for i in 0..10 {
        let r = x.login(&a.email, "wrong password again")?;
        expect_problem(&r, 401, "invalid_credentials").map_err(|e| format!("attempt {i}: {e}"))?;
    }
    let r = x.login(&a.email, PASSWORD)?;
    expect_problem(&r, 429, "rate_limited")?;
    let retry = r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("no Retry-After")?;
    if retry == 0 || retry > 15 * 60 {
        return Err(format!("Retry-After {retry}"));
    }
    // Other accounts from the same address are not locked out.
    let b = x.account("ratelimit-other", false)?;
    status(&x.login(&b.email, PASSWORD)?, 200, "another account")
}

fn resend_per_email_is_rate_limited(x: &Ctx) -> Result<(), String> {
    let email = x.email("resend-limit");
    for i in 0..5 {
        let r = x.send(
            "POST",
            "/auth/resend-verification",
            None,
            Some(&json!({"email": email})),
            &[],
        )?;
        status(&r, 202, &format!("resend {i}"))?;
    }
    let r = x.send(
        "POST",
        "/auth/resend-verification",
        None,
        Some(&json!({"email": email})),
        &[],
    )?;
    expect_problem(&r, 429, "rate_limited")?;
    if r.header("retry-after").is_none() {
        return Err("no Retry-After".into());
    }
    Ok(())
}

fn every_mutating_route_emits_an_audit_event(x: &Ctx) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    let openapi = x.c.get("/openapi.json")?.json()?;
    let mut mutating = Vec::new();
    for (path, item) in openapi["paths"].as_object().ok_or("no paths")? {
        // Options routes only hand out a single-use challenge; what is done
        // with it (registration, sign-in) is audited.
        if !path.starts_with("/auth/")
            || path.starts_with("/auth/_test/")
            || path.ends_with("/options")
        {
            continue;
        }
        for method in item
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if method != "get" && method != "head" {
                mutating.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    if mutating.len() < 15 {
        return Err(format!(
            "only {} mutating auth routes in openapi",
            mutating.len()
        ));
    }
    let audited = x.audited.borrow();
    let mut missing = Vec::new();
    for (method, path) in &mutating {
        let Some(ids) = audited.get(&(method.clone(), path.clone())) else {
            missing.push(format!("{method} {path} (never called)"));
            continue;
        };
        let mut covered = false;
        for id in ids {
            let v = x
                .send(
                    "GET",
                    &format!("/auth/admin/audit?request_id={id}"),
                    Some(&admin),
                    None,
                    &[],
                )?
                .json()?;
            if v["events"].as_array().is_some_and(|e| !e.is_empty()) {
                covered = true;
                break;
            }
        }
        if !covered {
            missing.push(format!("{method} {path}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("no audit event from: {}", missing.join(", ")))
    }
}
