//! Roles and administration: the one-time bootstrap, role grants under step-up
//! and their limits, the admin user list and audit query.

use super::*;

pub(super) fn bootstrap_makes_one_admin_only(x: &Ctx) -> Result<(), String> {
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

pub(super) fn user_granting_itself_a_role_is_forbidden(x: &Ctx) -> Result<(), String> {
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

pub(super) fn role_change_without_step_up_is_refused(x: &Ctx) -> Result<(), String> {
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

pub(super) fn roles_go_only_to_verified_accounts_and_last_admin_stays(
    x: &Ctx,
) -> Result<(), String> {
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

pub(super) fn admin_lists_users_and_queries_audit(x: &Ctx) -> Result<(), String> {
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
