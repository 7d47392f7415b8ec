//! Sessions: refresh-token rotation and family revocation, cookie refresh and
//! CSRF, listing and revoking sessions, password reset and change.

use super::*;

pub(super) fn refresh(x: &Ctx, token: &str) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/token/refresh",
        "/auth/token/refresh",
        None,
        Some(&json!({"refresh_token": token})),
        &[],
    )
}

pub(super) fn refresh_rotates_and_reuse_revokes_the_family(x: &Ctx) -> Result<(), String> {
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

pub(super) fn cookie_refresh_without_allowed_origin_is_csrf_rejected(
    x: &Ctx,
) -> Result<(), String> {
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

pub(super) fn sessions_list_revoke_logout_and_logout_all(x: &Ctx) -> Result<(), String> {
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

pub(super) fn password_reset_is_uniform_single_use_and_revokes_sessions(
    x: &Ctx,
) -> Result<(), String> {
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

pub(super) fn password_change_needs_step_up_and_revokes_other_sessions(
    x: &Ctx,
) -> Result<(), String> {
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
