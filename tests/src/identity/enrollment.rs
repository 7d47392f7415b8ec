//! Node enrollment: who may enroll which node id, and enrollment tokens that
//! redeem once and die on re-enrollment or deletion.

use super::*;

pub(super) fn enroll(x: &Ctx, token: &str, node: &str) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/nodes/enroll",
        "/auth/nodes/enroll",
        Some(token),
        Some(&json!({"node_id": node, "kind": "agent"})),
        &[],
    )
}

/// Who presents a redemption.
#[derive(Clone, Copy)]
pub(super) enum As<'a> {
    /// No credential.
    Nobody,
    /// A bearer string as given.
    Raw(&'a str),
    /// A service token of `caller` for `callee`, bound to this very request.
    Service(&'a str, &'a str),
}

pub(super) fn redeem(
    x: &Ctx,
    who: As<'_>,
    token: &str,
    node: &str,
    kind: &str,
) -> Result<Reply, String> {
    let body = json!({"enrollment_token": token, "node_id": node, "kind": kind});
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let bearer = match who {
        As::Nobody => None,
        As::Raw(t) => Some(t.to_owned()),
        As::Service(caller, callee) => {
            Some(
                x.target
                    .service_token(caller, callee, "POST", "/auth/nodes/redeem", &bytes),
            )
        }
    };
    x.call(
        "POST",
        "/auth/nodes/redeem",
        "/auth/nodes/redeem",
        bearer.as_deref(),
        Some(&body),
        &[],
    )
}

pub(super) fn enrollment_needs_verified_email_and_valid_node_id(x: &Ctx) -> Result<(), String> {
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

pub(super) fn enrolling_another_users_node_id_conflicts(x: &Ctx) -> Result<(), String> {
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
        &redeem(x, As::Service("mesh", "auth"), &token, &node, "agent")?,
        200,
        "owner's token after the takeover attempt",
    )
}

pub(super) fn enrollment_tokens_redeem_once_and_die_on_reenroll_and_delete(
    x: &Ctx,
) -> Result<(), String> {
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
    let svc = As::Service("mesh", "auth");
    expect_problem(
        &redeem(x, As::Nobody, &t2, &node, "agent")?,
        401,
        "service_unauthorized",
    )?;
    // Only the mesh redeems: auth's own token, or the mesh's meant for the
    // ledger, are refused.
    for (caller, callee) in [("auth", "auth"), ("mesh", "ledger"), ("auth", "ledger")] {
        expect_problem(
            &redeem(x, As::Service(caller, callee), &t2, &node, "agent")?,
            401,
            "service_unauthorized",
        )
        .map_err(|e| format!("{caller}'s token for {callee}: {e}"))?;
    }
    expect_problem(
        &redeem(
            x,
            As::Raw("wrong-service-token-wrong-service-token"),
            &t2,
            &node,
            "agent",
        )?,
        401,
        "service_unauthorized",
    )?;
    expect_problem(
        &redeem(x, svc, &t1, &node, "agent")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("superseded token: {e}"))?;
    expect_problem(
        &redeem(x, svc, &t2, &node, "coordinator")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("wrong kind: {e}"))?;
    expect_problem(
        &redeem(x, svc, &t2, "some-other-node", "agent")?,
        400,
        "enrollment_token_invalid",
    )
    .map_err(|e| format!("wrong node: {e}"))?;
    let ok = redeem(x, svc, &t2, &node, "agent")?;
    status(&ok, 200, "redeem")?;
    if ok.json()?["owner_id"] != json!(a.id) {
        return Err("redeem does not name the owner".into());
    }
    expect_problem(
        &redeem(x, svc, &t2, &node, "agent")?,
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
        &redeem(x, svc, &t3, &node, "agent")?,
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

pub(super) fn one_account_cannot_hold_unbounded_enrollments(x: &Ctx) -> Result<(), String> {
    let a = x.account("enroll-many", true)?;
    let node = |i: usize| format!("node-{}-many-{i}", x.run);
    let mut sent = 0;
    for i in 0..10 {
        status(&enroll(x, &a.access, &node(i))?, 201, "pending enrollment")?;
        sent += 1;
    }
    // The eleventh unredeemed enrollment is refused; re-enrolling one the
    // account holds replaces its token and does not count twice.
    expect_problem(
        &enroll(x, &a.access, &node(10))?,
        409,
        "too_many_enrollments",
    )?;
    status(&enroll(x, &a.access, &node(3))?, 201, "re-enroll")?;
    sent += 2;
    let path = format!("/auth/nodes/{}", node(0));
    status(
        &x.call(
            "DELETE",
            "/auth/nodes/{id}",
            &path,
            Some(&a.access),
            None,
            &[],
        )?,
        200,
        "delete",
    )?;
    status(&enroll(x, &a.access, &node(10))?, 201, "after a delete")?;
    sent += 1;
    // Enrolling is rate limited per user (50 an hour), refused or not.
    let mut limited = false;
    while sent < 60 && !limited {
        let r = enroll(x, &a.access, &node(3))?;
        sent += 1;
        limited = r.status == 429;
        if !limited && r.status != 201 {
            return Err(format!("re-enroll {sent}: {}", r.status));
        }
    }
    if !limited || sent != 51 {
        return Err(format!("no 429 by the 51st enrollment (sent {sent})"));
    }
    expect_problem(&enroll(x, &a.access, &node(3))?, 429, "rate_limited")
}

/// Enrollment blocks (the mesh banned an owner) come only from the mesh's
/// service credential: not from nobody, not from the auth function's own
/// key; while one stands, the owner gets no enrollment tokens.
pub(super) fn enrollment_blocks_come_only_from_the_mesh_service(x: &Ctx) -> Result<(), String> {
    let owner = x.account("blocked-owner", true)?;
    let block = |who: As<'_>, blocked: bool| -> Result<Reply, String> {
        let body = json!({"user_id": owner.id, "blocked": blocked});
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let path = "/auth/nodes/enrollment-blocks";
        let bearer = match who {
            As::Nobody => None,
            As::Raw(t) => Some(t.to_owned()),
            As::Service(caller, callee) => {
                Some(x.target.service_token(caller, callee, "POST", path, &bytes))
            }
        };
        x.call("POST", path, path, bearer.as_deref(), Some(&body), &[])
    };
    expect_problem(&block(As::Nobody, true)?, 401, "service_unauthorized")?;
    expect_problem(
        &block(As::Raw(&owner.access), true)?,
        401,
        "service_unauthorized",
    )?;
    expect_problem(
        &block(As::Service("auth", "auth"), true)?,
        401,
        "service_unauthorized",
    )?;
    let node = format!("node-{}-blocked", x.run);
    status(&enroll(x, &owner.access, &node)?, 201, "before the block")?;
    status(
        &block(As::Service("mesh", "auth"), true)?,
        200,
        "the mesh blocks",
    )?;
    expect_problem(
        &enroll(x, &owner.access, &node)?,
        403,
        "account_blacklisted",
    )?;
    status(
        &block(As::Service("mesh", "auth"), false)?,
        200,
        "the mesh unblocks",
    )?;
    status(&enroll(x, &owner.access, &node)?, 201, "after the unblock")
}
