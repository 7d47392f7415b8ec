//! Node enrollment: the one-time tokens a device presents to the mesh when it
//! registers.
//!
//! A token is opaque (256 bits), shown once, stored hashed, valid one hour,
//! bound to owner, node id and kind, and redeemable exactly once through
//! [`redeem`]: one conditional UPDATE, so two racing redemptions cannot both
//! win. Re-enrolling replaces the stored hash (the old token dies); deleting
//! the enrollment deletes the row (its tokens die). A node id belongs to the
//! verified user who enrolls it; nobody else can take it over, except an
//! enrollment that was never redeemed and whose token expired (so ids cannot
//! be squatted by enrolling and walking away). Enrollment is rate limited
//! per user, and an account holds at most 10 unredeemed enrollments and
//! 1000 node ids (`store::enrollments`).
//!
//! The mesh redeems in-process where it shares the database (native, the
//! Worker) and through `POST /auth/nodes/redeem` with its own service token
//! where it does not (Spin components have separate stores).

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services, Sql};
use edgecoder_proto::NodeId;
use edgecoder_proto::mesh::NodeKind;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::api::{authed, token_schema};
use crate::secrets::{hash_token, new_token, rfc3339, well_formed};
use crate::session::{self, bearer};
use crate::store;
use crate::store::enrollments::{Enrolled, NewEnrollment};
use crate::{DOCS, Error, schemas};

/// Enrollment tokens live one hour.
pub const ENROLLMENT_TOKEN_MS: i64 = 3600 * 1000;
/// Enrollment token prefix.
pub const ENROLLMENT_PREFIX: &str = "ect_";

/// Whether `id` is a node id (`edgecoder_proto::NodeId`, the one definition).
fn valid_node_id(id: &str) -> bool {
    NodeId::is_valid(id)
}

fn valid_kind(kind: &str) -> Result<(), Error> {
    match NodeKind::parse(kind) {
        Some(_) => Ok(()),
        None => Err(edgecoder_kernel::Error::InvalidRequest(
            "kind must be \"agent\" or \"coordinator\".".into(),
        )
        .into()),
    }
}

/// `POST /auth/nodes/enroll` body.
#[derive(Deserialize)]
pub struct Enroll {
    node_id: String,
    kind: String,
}

/// `POST /auth/nodes/enroll`.
pub async fn enroll(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let body: Enroll = req.json()?;
    if !valid_node_id(&body.node_id) {
        return Err(Error::InvalidNodeId);
    }
    valid_kind(&body.kind)?;
    if !p.email_verified {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.node.enroll",
            Some(&body.node_id),
            json!({"reason": "email_unverified"}),
            Error::EmailUnverified,
        )
        .await);
    }
    if store::enrollments::blocked(s.sql.as_ref(), &p.user_id).await? {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.node.enroll",
            Some(&body.node_id),
            json!({"reason": "account_blacklisted"}),
            Error::AccountBlacklisted,
        )
        .await);
    }
    crate::ratelimit::attempt(s, &crate::ratelimit::ENROLL_PER_USER, &p.user_id).await?;
    let now = s.clock.now_ms();
    let token = new_token(s.rng.as_ref(), ENROLLMENT_PREFIX);
    let expires = now + ENROLLMENT_TOKEN_MS;
    let enrolled = store::enrollments::enroll(
        s.sql.as_ref(),
        NewEnrollment {
            node_id: &body.node_id,
            owner_id: &p.user_id,
            kind: &body.kind,
            now,
            token_hash: &hash_token(&token),
            expires_at: expires,
        },
    )
    .await?;
    let refused = match enrolled {
        Enrolled::Stored => None,
        Enrolled::OwnedByAnother => Some(("owned_by_another_user", Error::NodeOwnedByAnotherUser)),
        Enrolled::OwnerAtLimit => Some(("too_many_enrollments", Error::TooManyEnrollments)),
    };
    if let Some((reason, error)) = refused {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.node.enroll",
            Some(&body.node_id),
            json!({"reason": reason}),
            error,
        )
        .await);
    }
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        "auth.node.enroll",
        Some(&body.node_id),
        Outcome::Success,
        json!({"kind": body.kind}),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        edgecoder_kernel::http::JSON,
        &json!({
            "node_id": body.node_id,
            "kind": body.kind,
            "enrollment_token": token,
            "expires_at": rfc3339(expires),
        }),
    ))
}

/// `GET /auth/nodes`: the caller's enrollments.
pub async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let enrollments = store::enrollments::of_owner(s.sql.as_ref(), &p.user_id).await?;
    let now = s.clock.now_ms();
    let nodes: Vec<_> = enrollments
        .iter()
        .map(|e| {
            let expires = e.token_expires_at;
            let state = match e.token_redeemed_at {
                Some(_) => "redeemed",
                None if expires > now => "token_pending",
                None => "token_expired",
            };
            json!({
                "node_id": e.node_id,
                "kind": e.kind,
                "state": state,
                "created_at": rfc3339(e.created_at),
                "updated_at": rfc3339(e.updated_at),
                "token_expires_at": rfc3339(expires),
            })
        })
        .collect();
    Ok(ok_json(&json!({ "nodes": nodes })))
}

/// `DELETE /auth/nodes/{id}`: the owner, or an admin with step-up.
pub async fn delete(s: &Services, req: Request) -> Result<Response, Error> {
    let p = session::authenticate(s, &req).await?;
    let node = req.param("id").unwrap_or_default().to_owned();
    if !valid_node_id(&node) {
        return Err(Error::InvalidNodeId);
    }
    let owner = store::enrollments::owner(s.sql.as_ref(), &node).await?;
    let is_owner = owner.as_deref() == Some(p.user_id.as_str());
    let Some(owner) = owner.filter(|_| is_owner || p.has_role("system_admin")) else {
        // Someone else's node looks exactly like no node.
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.node.delete",
            Some(&node),
            json!({"reason": "not_found"}),
            Error::NodeNotFound,
        )
        .await);
    };
    if !is_owner && let Err(e) = p.require_step_up(s.clock.now_ms()) {
        return Err(audit::denied(
            s,
            &req.ctx,
            &p.actor(),
            "auth.node.delete",
            Some(&node),
            json!({"reason": "step_up_required"}),
            e,
        )
        .await);
    }
    if !store::enrollments::delete(s.sql.as_ref(), &node, &owner).await? {
        return Err(Error::NodeNotFound);
    }
    audit::note(
        s,
        &req.ctx,
        &p.actor(),
        "auth.node.delete",
        Some(&node),
        Outcome::Success,
        json!({"owner": owner, "as_admin": !is_owner}),
    )
    .await?;
    Ok(ok_json(&json!({"status": "deleted", "node_id": node})))
}

/// A redeemed enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The node id.
    pub node_id: String,
    /// `agent` or `coordinator`.
    pub kind: String,
    /// The enrolling user.
    pub owner_id: String,
}

/// Redeems an enrollment token for exactly this node id and kind, once.
pub async fn redeem(
    sql: &dyn Sql,
    now_ms: i64,
    token: &str,
    node_id: &str,
    kind: &str,
) -> Result<Redeemed, Error> {
    if !well_formed(token, ENROLLMENT_PREFIX) || !valid_node_id(node_id) {
        return Err(Error::EnrollmentTokenInvalid);
    }
    let owner = store::enrollments::redeem(sql, &hash_token(token), node_id, kind, now_ms)
        .await?
        .ok_or(Error::EnrollmentTokenInvalid)?;
    Ok(Redeemed {
        node_id: node_id.to_owned(),
        kind: kind.to_owned(),
        owner_id: owner,
    })
}

/// The request must carry the mesh function's service token, bound to this
/// very request; anything else is refused and audited under `action`.
async fn mesh_service(s: &Services, req: &Request, action: &str) -> Result<(), Error> {
    let presented = bearer(req).unwrap_or("");
    let request =
        edgecoder_kernel::service::request_digest(req.method.as_str(), &req.path, &req.body);
    let caller = s
        .config
        .service_keys
        .caller(presented, crate::NAME, &request, s.clock.now_ms());
    if caller.as_deref() != Some("mesh") {
        return Err(audit::denied(
            s,
            &req.ctx,
            "anonymous",
            action,
            None,
            json!({"reason": "service_unauthorized"}),
            Error::ServiceUnauthorized,
        )
        .await);
    }
    Ok(())
}

/// `POST /auth/nodes/redeem` body.
#[derive(Deserialize)]
pub struct Redeem {
    enrollment_token: String,
    node_id: String,
    kind: String,
}

/// `POST /auth/nodes/redeem`: for the mesh function only, with a service
/// token signed by its own key.
pub async fn redeem_route(s: &Services, req: Request) -> Result<Response, Error> {
    mesh_service(s, &req, "auth.node.redeem").await?;
    let body: Redeem = req.json()?;
    match redeem(
        s.sql.as_ref(),
        s.clock.now_ms(),
        &body.enrollment_token,
        &body.node_id,
        &body.kind,
    )
    .await
    {
        Ok(r) => {
            audit::note(
                s,
                &req.ctx,
                "service:mesh",
                "auth.node.redeem",
                Some(&r.node_id),
                Outcome::Success,
                json!({"owner": r.owner_id, "kind": r.kind}),
            )
            .await?;
            Ok(ok_json(
                &json!({"node_id": r.node_id, "kind": r.kind, "owner_id": r.owner_id}),
            ))
        }
        Err(e) => {
            audit::note(
                s,
                &req.ctx,
                "service:mesh",
                "auth.node.redeem",
                Some(&body.node_id),
                Outcome::Failure,
                json!({}),
            )
            .await?;
            Err(e)
        }
    }
}

/// `POST /auth/nodes/enrollment-blocks` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    user_id: String,
    blocked: bool,
}

/// `POST /auth/nodes/enrollment-blocks`: the mesh (service token) blocks or
/// unblocks enrollment for an owner it banned or lifted.
pub async fn block_route(s: &Services, req: Request) -> Result<Response, Error> {
    mesh_service(s, &req, "auth.node.enrollment_block").await?;
    let body: Block = req.json()?;
    if body.user_id.is_empty() || body.user_id.len() > 64 {
        return Err(Error::Kernel(edgecoder_kernel::Error::InvalidRequest(
            "user_id is 1 to 64 characters.".into(),
        )));
    }
    store::enrollments::set_block(
        s.sql.as_ref(),
        &body.user_id,
        body.blocked,
        s.clock.now_ms(),
    )
    .await?;
    audit::note(
        s,
        &req.ctx,
        "service:mesh",
        "auth.node.enrollment_block",
        Some(&body.user_id),
        Outcome::Success,
        json!({"blocked": body.blocked}),
    )
    .await?;
    Ok(ok_json(
        &json!({"user_id": body.user_id, "blocked": body.blocked}),
    ))
}

/// The JSON Schema of a node kind.
fn kind_schema() -> Json {
    json!({"enum": ["agent", "coordinator", "gpu-host"]})
}

/// The node enrollment routes: enroll, list, delete, and redemption by the mesh.
pub fn routes(r: Router) -> Router {
    r.route(
        Method::POST,
        "/auth/nodes/enroll",
        endpoint(|s, r| async move { enroll(&s, r).await }),
        enroll_doc(),
    )
    .route(
        Method::GET,
        "/auth/nodes",
        endpoint(|s, r| async move { list(&s, r).await }),
        list_doc(),
    )
    .route(
        Method::DELETE,
        "/auth/nodes/{id}",
        endpoint(|s, r| async move { delete(&s, r).await }),
        delete_doc(),
    )
    .route(
        Method::POST,
        "/auth/nodes/redeem",
        endpoint(|s, r| async move { redeem_route(&s, r).await }),
        redeem_doc(),
    )
    .route(
        Method::POST,
        "/auth/nodes/enrollment-blocks",
        endpoint(|s, r| async move { block_route(&s, r).await }),
        DOCS.op(
            "node_enrollment_block",
            "The mesh (its service token only) blocks or unblocks enrollment for an owner it banned or lifted",
            object(
                &["user_id", "blocked"],
                json!({"user_id": {"type": "string"}, "blocked": {"type": "boolean"}}),
            ),
            vec![
                ok(200, "{user_id, blocked}").with_schema(json!({
                    "type": "object",
                    "required": ["user_id", "blocked"],
                    "properties": {"user_id": {"type": "string"}, "blocked": {"type": "boolean"}},
                })),
                err(400, "invalid_request"),
                err(401, "service_unauthorized"),
            ],
        ),
    )
}

fn enroll_doc() -> RouteDoc {
    let body = object(
        &["node_id", "kind"],
        json!({
            "node_id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{2,62}$"},
            "kind": kind_schema(),
        }),
    );
    DOCS.op(
        "node_enroll",
        "Issue a one-time enrollment token for a node id (verified email)",
        body,
        authed(vec![
            ok(201, "{node_id, kind, enrollment_token, expires_at}")
                .with_schema(schemas::enrollment()),
            err(400, "invalid_node_id"),
            err(403, "email_unverified"),
            err(409, "node_owned_by_another_user / too_many_enrollments"),
            err(429, "rate_limited"),
        ]),
    )
}

fn list_doc() -> RouteDoc {
    DOCS.op(
        "nodes_list",
        "The caller's node enrollments",
        None,
        authed(vec![ok(200, "{nodes}").with_schema(schemas::nodes())]),
    )
}

fn delete_doc() -> RouteDoc {
    DOCS.op(
        "node_delete",
        "Delete an enrollment (owner, or system_admin with step-up); its tokens stop working",
        None,
        authed(vec![
            ok(200, "{status: deleted}").with_schema(schemas::status()),
            err(403, "step_up_required"),
            err(404, "node_not_found"),
        ]),
    )
}

fn redeem_doc() -> RouteDoc {
    let body = object(
        &["enrollment_token", "node_id", "kind"],
        json!({
            "enrollment_token": token_schema(),
            "node_id": {"type": "string"},
            "kind": kind_schema(),
        }),
    );
    DOCS.op(
        "node_redeem",
        "Redeem an enrollment token once (the mesh function, with the service credential)",
        body,
        vec![
            ok(200, "{node_id, kind, owner_id}").with_schema(schemas::redeemed()),
            err(400, "enrollment_token_invalid"),
            err(401, "service_unauthorized"),
        ],
    )
}
