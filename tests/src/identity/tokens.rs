//! Access tokens: every forged, expired or re-targeted JWT is refused.

use super::*;

pub(super) fn refused(x: &Ctx, token: &str, what: &str) -> Result<(), String> {
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

pub(super) fn jwt_alg_none_is_refused(x: &Ctx) -> Result<(), String> {
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

pub(super) fn jwt_hs256_signed_with_public_key_is_refused(x: &Ctx) -> Result<(), String> {
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

pub(super) fn jwt_expired_is_refused(x: &Ctx) -> Result<(), String> {
    let a = x.account("expired", false)?;
    let sid = session_of(x, &a)?;
    let now = unix_now();
    refused(
        x,
        &x.mint(&a.id, &sid, &json!({"iat": now - 3600, "exp": now - 600}))?,
        "expired",
    )
}

pub(super) fn jwt_unknown_kid_is_refused(x: &Ctx) -> Result<(), String> {
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

pub(super) fn jwt_wrong_issuer_or_audience_is_refused(x: &Ctx) -> Result<(), String> {
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

pub(super) fn jwt_tampered_payload_is_refused(x: &Ctx) -> Result<(), String> {
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
