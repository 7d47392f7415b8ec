//! Identity checks: accounts, email verification, sessions, tokens, roles
//! with step-up, node enrollment, rate limits and audit coverage, each attack
//! as a named check, one module per topic ([`accounts`], [`tokens`],
//! [`sessions`], [`roles`], [`enrollment`]); the shared [`Ctx`] and the audit
//! coverage check live here.
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

mod accounts;
mod enrollment;
mod roles;
mod sessions;
mod tokens;

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

    /// Verifies `email` with the token it was mailed, presenting the
    /// suite's password with it (the owner of the address chose it).
    pub fn verify(&self, email: &str) -> Result<(), String> {
        self.verify_with(email, Some(PASSWORD))
    }

    /// Verifies `email` with the token it was mailed and, if given, the
    /// account's password.
    pub fn verify_with(&self, email: &str, password: Option<&str>) -> Result<(), String> {
        let token = self.mailed_token(email)?;
        let body = match password {
            Some(p) => json!({ "token": token, "password": p }),
            None => json!({ "token": token }),
        };
        let r = self.call(
            "POST",
            "/auth/verify-email",
            "/auth/verify-email",
            None,
            Some(&body),
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

    /// Uses an admin made earlier (by another `Ctx` on the same deployment).
    pub fn with_admin(self, id: &str, token: &str) -> Self {
        *self.admin.borrow_mut() = Some((id.to_owned(), token.to_owned()));
        self
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

fn session_of(x: &Ctx, a: &Account) -> Result<String, String> {
    let me = x
        .send("GET", "/auth/me", Some(&a.access), None, &[])?
        .json()?;
    me["session_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no session id: {me}"))
}

type IdCheck = fn(&Ctx) -> Result<(), String>;

/// Every identity check, by name, in run order (the audit coverage check last).
pub fn checks() -> Vec<(&'static str, IdCheck)> {
    vec![
        (
            "openapi_documents_identity_request_and_response_schemas",
            accounts::openapi_documents_identity_request_and_response_schemas,
        ),
        (
            "security_headers_on_auth_responses",
            accounts::security_headers_on_auth_responses,
        ),
        (
            "signup_is_identical_for_known_and_unknown_emails",
            accounts::signup_is_identical_for_known_and_unknown_emails,
        ),
        (
            "signup_refuses_invalid_email_and_weak_passwords",
            accounts::signup_refuses_invalid_email_and_weak_passwords,
        ),
        (
            "addresses_with_invisible_or_look_alike_characters_are_refused",
            accounts::addresses_with_invisible_or_look_alike_characters_are_refused,
        ),
        (
            "one_mebibyte_password_is_refused_quickly",
            accounts::one_mebibyte_password_is_refused_quickly,
        ),
        (
            "verification_link_page_does_not_verify_on_prefetch",
            accounts::verification_link_page_does_not_verify_on_prefetch,
        ),
        (
            "verification_token_reuse_and_unknown_are_refused",
            accounts::verification_token_reuse_and_unknown_are_refused,
        ),
        (
            "resend_is_identical_for_known_and_unknown_emails",
            accounts::resend_is_identical_for_known_and_unknown_emails,
        ),
        (
            "login_failures_are_identical_for_unknown_email_and_wrong_password",
            accounts::login_failures_are_identical_for_unknown_email_and_wrong_password,
        ),
        (
            "login_returns_oauth_token_response_and_browser_cookie",
            accounts::login_returns_oauth_token_response_and_browser_cookie,
        ),
        ("me_reports_the_account", accounts::me_reports_the_account),
        ("jwt_alg_none_is_refused", tokens::jwt_alg_none_is_refused),
        (
            "jwt_hs256_signed_with_public_key_is_refused",
            tokens::jwt_hs256_signed_with_public_key_is_refused,
        ),
        ("jwt_expired_is_refused", tokens::jwt_expired_is_refused),
        (
            "jwt_unknown_kid_is_refused",
            tokens::jwt_unknown_kid_is_refused,
        ),
        (
            "jwt_wrong_issuer_or_audience_is_refused",
            tokens::jwt_wrong_issuer_or_audience_is_refused,
        ),
        (
            "jwt_tampered_payload_is_refused",
            tokens::jwt_tampered_payload_is_refused,
        ),
        (
            "refresh_rotates_and_reuse_revokes_the_family",
            sessions::refresh_rotates_and_reuse_revokes_the_family,
        ),
        (
            "cookie_refresh_without_allowed_origin_is_csrf_rejected",
            sessions::cookie_refresh_without_allowed_origin_is_csrf_rejected,
        ),
        (
            "sessions_list_revoke_logout_and_logout_all",
            sessions::sessions_list_revoke_logout_and_logout_all,
        ),
        (
            "password_reset_is_uniform_single_use_and_revokes_sessions",
            sessions::password_reset_is_uniform_single_use_and_revokes_sessions,
        ),
        (
            "password_change_needs_step_up_and_revokes_other_sessions",
            sessions::password_change_needs_step_up_and_revokes_other_sessions,
        ),
        (
            "bootstrap_makes_one_admin_only",
            roles::bootstrap_makes_one_admin_only,
        ),
        (
            "user_granting_itself_a_role_is_forbidden",
            roles::user_granting_itself_a_role_is_forbidden,
        ),
        (
            "role_change_without_step_up_is_refused",
            roles::role_change_without_step_up_is_refused,
        ),
        (
            "roles_go_only_to_verified_accounts_and_last_admin_stays",
            roles::roles_go_only_to_verified_accounts_and_last_admin_stays,
        ),
        (
            "admin_lists_users_and_queries_audit",
            roles::admin_lists_users_and_queries_audit,
        ),
        (
            "enrollment_needs_verified_email_and_valid_node_id",
            enrollment::enrollment_needs_verified_email_and_valid_node_id,
        ),
        (
            "enrolling_another_users_node_id_conflicts",
            enrollment::enrolling_another_users_node_id_conflicts,
        ),
        (
            "one_account_cannot_hold_unbounded_enrollments",
            enrollment::one_account_cannot_hold_unbounded_enrollments,
        ),
        (
            "service_tokens_grant_nothing_outside_their_callers_scope",
            service_tokens_grant_nothing_outside_their_callers_scope,
        ),
        (
            "enrollment_tokens_redeem_once_and_die_on_reenroll_and_delete",
            enrollment::enrollment_tokens_redeem_once_and_die_on_reenroll_and_delete,
        ),
        (
            "enrollment_blocks_come_only_from_the_mesh_service",
            enrollment::enrollment_blocks_come_only_from_the_mesh_service,
        ),
        (
            "login_failures_per_account_and_ip_are_rate_limited",
            accounts::login_failures_per_account_and_ip_are_rate_limited,
        ),
        (
            "resend_per_email_is_rate_limited",
            accounts::resend_per_email_is_rate_limited,
        ),
        (
            "audit_export_follows_a_cursor_with_a_read_only_monitor_credential",
            audit_export_follows_a_cursor_with_a_read_only_monitor_credential,
        ),
        (
            "a_request_id_follows_a_call_between_functions",
            a_request_id_follows_a_call_between_functions,
        ),
        (
            "every_mutating_route_emits_an_audit_event",
            every_mutating_route_emits_an_audit_event,
        ),
    ]
}

// A SIEM follows each function's audit stream with the monitor credential:
// NDJSON, oldest first, a cursor per event and the next one in a header;
// pages after a cursor neither repeat nor skip. The credential reads that
// and nothing else; a person needs system_admin; nobody reads it anonymously
// or with a made-up token.
fn audit_export_follows_a_cursor_with_a_read_only_monitor_credential(
    x: &Ctx,
) -> Result<(), String> {
    let monitor = crate::harness::MONITOR_TOKEN;
    let user = x.account("export-user", true)?;
    // Events in every function's own store (on the split Workers and Spin
    // each has one, and this check may run before the mesh's own checks):
    // admin appends to the log and operator ticks of the mesh, audited.
    let (_, admin) = x.admin()?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for i in 0..4 {
        let r = x.send(
            "POST",
            "/ledger/entries",
            Some(&admin),
            Some(&json!({
                "payload_type": "example.org/export-check/v1",
                "payload": "ZXhwb3J0",
                "idempotency_key": format!("export-{run}-{i}"),
            })),
            &[],
        )?;
        if r.status != 201 {
            return Err(format!(
                "ledger append: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let r = x.send(
            "POST",
            "/mesh/federation/tick",
            Some(&admin),
            Some(&json!({})),
            &[],
        )?;
        if r.status != 200 {
            return Err(format!(
                "tick: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    for f in ["auth", "mesh", "ledger"] {
        let path = format!("/{f}/audit/events");
        let r = x.send("GET", &path, None, None, &[])?;
        crate::expect_problem(&r, 401, "invalid_token")
            .map_err(|e| format!("{f} anonymous: {e}"))?;
        let r = x.send("GET", &path, Some("emt_not-a-monitor"), None, &[])?;
        crate::expect_problem(&r, 401, "invalid_token").map_err(|e| format!("{f} made up: {e}"))?;
        let r = x.send("GET", &path, Some(&user.access), None, &[])?;
        crate::expect_problem(&r, 403, "forbidden").map_err(|e| format!("{f} user: {e}"))?;
        let r = x.send("GET", &format!("{path}?after=-1"), Some(monitor), None, &[])?;
        crate::expect_problem(&r, 400, "invalid_request")
            .map_err(|e| format!("{f} bad cursor: {e}"))?;
        // Two pages of two, then the same four in one page.
        let page = |after: i64, limit: usize| -> Result<(Vec<Json>, i64), String> {
            let r = x.send(
                "GET",
                &format!("{path}?after={after}&limit={limit}"),
                Some(monitor),
                None,
                &[],
            )?;
            if r.status != 200 || r.media_type() != "application/x-ndjson" {
                return Err(format!("{path}: {} {}", r.status, r.media_type()));
            }
            let events = String::from_utf8_lossy(&r.body)
                .lines()
                .map(|l| serde_json::from_str::<Json>(l).map_err(|e| format!("{path}: {e}: {l}")))
                .collect::<Result<Vec<_>, _>>()?;
            let next = r
                .header("edgecoder-next-cursor")
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or(format!("{path}: no edgecoder-next-cursor"))?;
            Ok((events, next))
        };
        let (first, next) = page(0, 2)?;
        let (second, _) = page(next, 2)?;
        let (all, _) = page(0, 4)?;
        let cursors = |v: &[Json]| {
            v.iter()
                .map(|e| e["cursor"].as_i64().unwrap_or(-1))
                .collect::<Vec<_>>()
        };
        let paged: Vec<i64> = cursors(&first)
            .into_iter()
            .chain(cursors(&second))
            .collect();
        if paged.len() < 4 || paged != cursors(&all) || !paged.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!(
                "{path}: pages {paged:?} vs one page {:?}",
                cursors(&all)
            ));
        }
        if first
            .iter()
            .any(|e| e["action"].as_str().is_none() || e["time"].as_str().is_none())
        {
            return Err(format!("{path}: events lack action or time: {first:?}"));
        }
        // An admin reads it too.
        let r = x.send("GET", &format!("{path}?limit=1"), Some(&admin), None, &[])?;
        if r.status != 200 {
            return Err(format!("{path} as system_admin: {}", r.status));
        }
    }
    // The monitor credential opens nothing else.
    for path in [
        "/auth/admin/audit",
        "/mesh/audit",
        "/auth/sessions",
        "/mesh/credits/supply",
    ] {
        let r = x.send("GET", path, Some(monitor), None, &[])?;
        if r.status != 401 {
            return Err(format!(
                "the monitor credential got {} from {path}",
                r.status
            ));
        }
    }
    Ok(())
}

// One request, followed across functions: a caller's `x-request-id` is the
// prefix of the id in auth's audit event, and where auth reaches the ledger
// over HTTP (the split Workers, Spin) the ledger's own event for the append
// carries the same prefix (auth sends its id on, the ledger prefixes it).
// Where the ledger is in-process (native, the single Worker) the append is
// part of auth's request and has no event of its own.
fn a_request_id_follows_a_call_between_functions(x: &Ctx) -> Result<(), String> {
    let monitor = crate::harness::MONITOR_TOKEN;
    let (_, admin) = x.admin()?;
    let user = x.account("trace", true)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let caller_id = format!("trace-check.{nanos}");
    let r = x.send(
        "POST",
        &format!("/auth/admin/users/{}/roles", user.id),
        Some(&admin),
        Some(&json!({"role": "coordinator_owner"})),
        &[("x-request-id", &caller_id)],
    )?;
    if r.status != 200 {
        return Err(format!(
            "grant: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let prefix = format!("{caller_id}.");
    if !r
        .header("x-request-id")
        .is_some_and(|id| id.starts_with(&prefix))
    {
        return Err(format!("answered with id {:?}", r.header("x-request-id")));
    }
    let index = r.json()?["ledger_index"]
        .as_u64()
        .ok_or("the grant was not logged")?;
    let events = |path: String| -> Result<Vec<Json>, String> {
        let r = x.send("GET", &path, Some(monitor), None, &[])?;
        if r.status != 200 {
            return Err(format!("{path}: {}", r.status));
        }
        String::from_utf8_lossy(&r.body)
            .lines()
            .map(|l| serde_json::from_str::<Json>(l).map_err(|e| format!("{path}: {e}")))
            .collect()
    };
    let granted = events(format!(
        "/auth/audit/events?action=auth.role.grant&target={}",
        user.id
    ))?;
    if granted.is_empty()
        || !granted.iter().all(|e| {
            e["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&prefix))
        })
    {
        return Err(format!("auth's events: {granted:?}"));
    }
    let appended = events(format!(
        "/ledger/audit/events?action=ledger.entry.append&target={index}"
    ))?;
    if x.target.functions_over_http && appended.is_empty() {
        return Err(format!(
            "the ledger recorded no append of entry {index} (auth calls it over HTTP here)"
        ));
    }
    if let Some(e) = appended.iter().find(|e| {
        !e["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&prefix))
    }) {
        return Err(format!(
            "the ledger's event for entry {index} names another request: {e}"
        ));
    }
    Ok(())
}

/// Mutating routes the suite cannot drive to success against one
/// deployment (they need peer coordinators), and the test (in
/// `tests/tests/federation.rs`) that drives them and checks their audit
/// events with [`crate::unaudited_routes`] instead.
pub const AUDITED_ELSEWHERE: [(&str, &str); 14] = [
    (
        "/mesh/federation/tick",
        "gossip_is_refused_unsigned_forged_unknown_expired_replayed_misattributed_or_unlogged",
    ),
    (
        "/mesh/peers",
        "peering_needs_both_operators_and_only_active_peers_are_answered",
    ),
    (
        "/mesh/peers/hello",
        "peering_needs_both_operators_and_only_active_peers_are_answered",
    ),
    (
        "/mesh/peers/suspend",
        "peering_needs_both_operators_and_only_active_peers_are_answered",
    ),
    (
        "/mesh/peers/resume",
        "peering_needs_both_operators_and_only_active_peers_are_answered",
    ),
    (
        "/mesh/peers/remove",
        "peering_needs_both_operators_and_only_active_peers_are_answered",
    ),
    (
        "/mesh/peers/refresh",
        "peering_needs_both_operators_and_only_active_peers_are_answered",
    ),
    (
        "/mesh/peers/policy",
        "a_ban_reaches_peers_by_their_policy_is_enforced_there_and_converges_without_its_push",
    ),
    (
        "/mesh/blacklist/reviews/{id}/accept",
        "a_ban_reaches_peers_by_their_policy_is_enforced_there_and_converges_without_its_push",
    ),
    (
        "/mesh/blacklist/reviews/{id}/reject",
        "a_ban_reaches_peers_by_their_policy_is_enforced_there_and_converges_without_its_push",
    ),
    (
        "/mesh/federation/gossip",
        "gossip_is_refused_unsigned_forged_unknown_expired_replayed_misattributed_or_unlogged",
    ),
    (
        "/mesh/credits/epochs/{epoch}/signatures",
        "an_epoch_close_is_final_once_a_peer_has_recomputed_it_from_the_log_and_signed_it",
    ),
    (
        "/mesh/witness/logs",
        "our_witness_cosigns_a_sigsum_log_and_sigsum_verifies_the_cosignature",
    ),
    (
        "/mesh/witness/add-checkpoint",
        "our_witness_cosigns_a_sigsum_log_and_sigsum_verifies_the_cosignature",
    ),
];

// Every mutating route of every function (auth, mesh, ledger), as
// `/openapi.json` lists them, must have left an audit event for at least one
// of the requests the whole suite sent it. Events are read back through each
// function's own export, so on Spin and the split Workers (a database per
// function) each function is asked about its own.
fn every_mutating_route_emits_an_audit_event(x: &Ctx) -> Result<(), String> {
    let (_, admin) = x.admin()?;
    let openapi = x.c.get("/openapi.json")?.json()?;
    let mut mutating = Vec::new();
    for (path, item) in openapi["paths"].as_object().ok_or("no paths")? {
        let Some(function) = ["auth", "mesh", "ledger"]
            .into_iter()
            .find(|f| path.starts_with(&format!("/{f}/")))
        else {
            continue;
        };
        // Test-only routes; options routes only hand out a single-use
        // challenge (what is done with it is audited).
        if path.contains("/_test/")
            || path.ends_with("/options")
            || AUDITED_ELSEWHERE.iter().any(|(p, _)| p == path)
        {
            continue;
        }
        for method in item
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !matches!(method.as_str(), "get" | "head" | "options") {
                mutating.push((function, method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    if mutating.len() + AUDITED_ELSEWHERE.len() < 60 {
        return Err(format!(
            "only {} mutating routes in openapi",
            mutating.len() + AUDITED_ELSEWHERE.len()
        ));
    }
    let routes: Vec<(String, String)> = mutating
        .iter()
        .map(|(_, m, p)| (m.clone(), p.clone()))
        .collect();
    let missing = crate::unaudited_routes(x.c, &admin, &routes)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} mutating routes left no audit event: {}",
            missing.len(),
            mutating.len(),
            missing.join(", ")
        ))
    }
}

/// Every route of the deployment, called with each function's service token
/// (for every audience): a token gets no success an anonymous caller would
/// not get, except the scopes its caller has (auth appends role changes,
/// the mesh appends approvals and completions and redeems enrollments; those
/// are sent here with bodies that fail, and are checked positively by the
/// ledger and enrollment checks). A leaked credential of one function cannot
/// act as another, nor as a user.
fn service_tokens_grant_nothing_outside_their_callers_scope(x: &Ctx) -> Result<(), String> {
    let doc = x.c.get("/openapi.json")?.json()?;
    let paths = doc["paths"].as_object().ok_or("no paths")?;
    let pairs: Vec<(&str, &str)> = ["auth", "mesh"]
        .iter()
        .flat_map(|c| ["auth", "mesh", "ledger"].map(|a| (*c, a)))
        .collect();
    let mut checked = 0;
    for (template, item) in paths {
        // Concrete values for path parameters: any will do, the route
        // decides before it looks anything up.
        let path: String = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let method = method.to_ascii_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                continue;
            }
            let body = (method != "GET" && method != "DELETE").then(|| json!({}));
            let bytes = body
                .as_ref()
                .map(|b| serde_json::to_vec(b).unwrap_or_default())
                .unwrap_or_default();
            let anonymous = x.send(&method, &path, None, body.as_ref(), &[])?;
            for (caller, callee) in &pairs {
                // Bound to this very request, as a function would mint it.
                let token = x
                    .target
                    .service_token(caller, callee, &method, &path, &bytes);
                let r = x.send(&method, &path, Some(&token), body.as_ref(), &[])?;
                if (200..300).contains(&r.status) && !(200..300).contains(&anonymous.status) {
                    return Err(format!(
                        "{method} {path}: {caller}'s token for {callee} got {} where anonymous got {}",
                        r.status, anonymous.status
                    ));
                }
                checked += 1;
            }
        }
    }
    if checked < 100 {
        return Err(format!(
            "only {checked} calls made: the document lists too few routes"
        ));
    }
    Ok(())
}
