//! The blacklist: operators ban a node key, a node id or an owner account
//! (so that the owner cannot come back under a new node id), and lift bans;
//! every add and lift is an entry of its own (never a deletion), an
//! `edgecoder.dev/blacklist/v1` ledger entry and an audit event; the highest
//! entry is the blacklist version every heartbeat carries.
//!
//! In scope: the routes (`POST /mesh/blacklist`, `POST /mesh/blacklist/lift`,
//! `GET /mesh/blacklist`), releasing the leases of banned nodes, and the
//! checks other modules call. Enforcement itself is where callers are
//! recognised: a signed node ([`crate::authn::signed_node`]), a registration
//! ([`crate::nodes::register`]) and a submitter ([`crate::authn::submitter`]).
//! Automatic bans come only from evidence this coordinator verified itself:
//! a node that signs two different results for one lease
//! ([`crate::tasks::result`]); never from another node's or a peer's
//! report; peers' own entries are applied here by [`crate::federation`]
//! under each peer's ban policy. Out of scope: refusing enrollment tokens
//! in the auth function.

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{Request, Response, Router, Services};
use serde::Deserialize;
use serde_json::json;

use crate::store::blacklist::{self as db, Change, SubjectKind};
use crate::{DOCS, Error, authn, rfc3339};

/// The ledger payload type of blacklist changes.
pub const BLACKLIST_V1: &str = "edgecoder.dev/blacklist/v1";

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// `POST /mesh/blacklist` and `/lift` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    subject_kind: String,
    subject: String,
    reason_code: String,
    reason: String,
    #[serde(default)]
    evidence_digest: Option<String>,
}

fn hex_of(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a ban's subject against its kind, and its reason code, reason and
/// evidence digest (a local operator's, or a peer's).
pub fn check(
    kind: SubjectKind,
    subject: &str,
    reason_code: &str,
    reason: &str,
    evidence_digest: Option<&str>,
) -> Result<(), Error> {
    let s = subject;
    let ok = match kind {
        SubjectKind::NodeKey => hex_of(s, 16),
        SubjectKind::NodeId => edgecoder_proto::NodeId::is_valid(s),
        SubjectKind::Owner => {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        }
        SubjectKind::Peer => crate::settings::serialised(s).as_deref() == Some(s),
    };
    if !ok {
        return Err(invalid(
            "subject is a key id (16 hex), a node id, a user id, or a peer's origin (scheme://host[:port], lowercase), as the subject_kind says.",
        ));
    }
    let code_ok = !reason_code.is_empty()
        && reason_code.len() <= 64
        && reason_code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !code_ok {
        return Err(invalid("reason_code is 1 to 64 of a-z, 0-9 and _."));
    }
    if reason.is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
        return Err(invalid("reason is 1 to 500 printable characters."));
    }
    if let Some(d) = evidence_digest {
        let ok = d
            .strip_prefix("sha-256:")
            .or_else(|| d.strip_prefix("blake3:"))
            .is_some_and(|h| hex_of(h, 64));
        if !ok {
            return Err(invalid(
                "evidence_digest is sha-256:<64 hex> or blake3:<64 hex>.",
            ));
        }
    }
    Ok(())
}

/// Adds (`add`) or lifts (`lift`) a ban: the route.
async fn change(s: &Services, req: Request, action: &'static str) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    let body: Body = req.json()?;
    let kind = SubjectKind::parse(&body.subject_kind)
        .ok_or_else(|| invalid("subject_kind is node_key, node_id, owner or peer."))?;
    let subject = body.subject.clone();
    check(
        kind,
        &subject,
        &body.reason_code,
        &body.reason,
        body.evidence_digest.as_deref(),
    )?;
    let done = apply(
        s,
        &req.ctx,
        &Ban {
            action,
            kind,
            subject: &subject,
            reason_code: &body.reason_code,
            reason: &body.reason,
            evidence_digest: body.evidence_digest.as_deref(),
            actor: &actor,
            origin: None,
        },
    )
    .await?;
    let status = if action == "add" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, JSON, &done))
}

/// A ban to add or lift, by an operator or by the coordinator itself.
pub struct Ban<'a> {
    /// `add` or `lift`.
    pub action: &'static str,
    /// What it names.
    pub kind: SubjectKind,
    /// The key id, node id or user id.
    pub subject: &'a str,
    /// A stable code.
    pub reason_code: &'a str,
    /// Free text.
    pub reason: &'a str,
    /// The evidence's digest.
    pub evidence_digest: Option<&'a str>,
    /// Who.
    pub actor: &'a str,
    /// A peer's entry applied here: the peer and the entry's index in its
    /// log; `None` for this coordinator's own decisions (which are pushed
    /// to its peers).
    pub origin: Option<(&'a str, u64)>,
}

/// Records a ban's add or lift: the entry, the ledger entry (the change is
/// undone if the ledger cannot take it), the released leases and the audit
/// event. Its answer: `{seq, blacklist_version, ledger_index, released_tasks}`.
pub async fn apply(
    s: &Services,
    ctx: &edgecoder_kernel::RequestContext,
    b: &Ban<'_>,
) -> Result<serde_json::Value, Error> {
    let audit_action = format!("mesh.blacklist.{}", b.action);
    let sql = s.sql.as_ref();
    let before = db::ban(sql, b.kind, b.subject).await?;
    match (b.action, before) {
        ("add", Some(_)) => return Err(Error::AlreadyBlacklisted),
        ("lift", None) => return Err(Error::NotBlacklisted),
        _ => {}
    }
    let now = s.clock.now_ms();
    let c = Change {
        action: b.action,
        kind: b.kind,
        subject: b.subject,
        reason_code: b.reason_code,
        reason: b.reason,
        evidence_digest: b.evidence_digest,
        actor: b.actor,
        origin: b.origin.map_or("local", |(o, _)| o),
        source_index: b.origin.map(|(_, i)| i),
        now,
    };
    let done = sql.batch(db::record(&c).to_vec()).await?;
    let seq = done
        .first()
        .and_then(|r| r.get_i64(0, "seq"))
        .ok_or_else(|| Error::Kernel(edgecoder_kernel::Error::Storage("blacklist seq".into())))?;
    let payload = json!({
        "seq": seq,
        "action": b.action,
        "subject_kind": b.kind,
        "subject": b.subject,
        "reason_code": b.reason_code,
        "reason": b.reason,
        "evidence_digest": b.evidence_digest,
        "actor": b.actor,
        "origin": b.origin.map_or("local", |(o, _)| o),
        "source_index": b.origin.map(|(_, i)| i),
        "at": rfc3339(now),
    });
    let index = match s
        .ledger
        .append(
            BLACKLIST_V1,
            payload.to_string().as_bytes(),
            &format!("blacklist:{seq}:{now}"),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => {
            db::undo(sql, seq, b.kind, b.subject, before).await?;
            audit::note(
                s,
                ctx,
                b.actor,
                &audit_action,
                Some(b.subject),
                Outcome::Failure,
                json!({"reason": "ledger_unavailable"}),
            )
            .await?;
            return Err(e.into());
        }
    };
    db::set_ledger_index(sql, seq, index).await?;
    // A banned node's work goes back to the queue; its results are refused
    // with the rest of its requests.
    // An owner ban also stops enrollment tokens at the auth function; the
    // ban itself is already enforced here whatever that call says.
    if b.kind == SubjectKind::Owner
        && let Err(e) = s
            .identity
            .block_enrollment(b.subject, b.action == "add")
            .await
    {
        audit::note(
            s,
            ctx,
            b.actor,
            "mesh.blacklist.enrollment_block_failed",
            Some(b.subject),
            Outcome::Failure,
            json!({"error": e.to_string()}),
        )
        .await?;
    }
    let released = if b.action == "add" {
        db::release_leases(sql, b.kind, b.subject, now).await?
    } else {
        Vec::new()
    };
    audit::note(
        s,
        ctx,
        b.actor,
        &audit_action,
        Some(b.subject),
        Outcome::Success,
        json!({"subject_kind": b.kind, "seq": seq, "ledger_index": index, "reason_code": b.reason_code,
               "reason": b.reason, "evidence_digest": b.evidence_digest, "released_tasks": released}),
    )
    .await?;
    if b.origin.is_none() {
        // Peers hear of it after the response; a lost push converges on
        // their next pull.
        crate::federation::push(s, index, payload.to_string().into_bytes());
    }
    Ok(
        json!({"seq": seq, "blacklist_version": seq, "ledger_index": index, "released_tasks": released}),
    )
}

/// `?since=` and `?limit=` of a listing.
fn window(req: &Request) -> Result<(i64, i64), Error> {
    let number = |name: &str, default: i64, max: i64| -> Result<i64, Error> {
        match req.query_param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| invalid(&format!("{name} is a number from 0 to {max}."))),
        }
    };
    Ok((number("since", 0, i64::MAX)?, number("limit", 100, 1000)?))
}

async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let (since, limit) = window(&req)?;
    let entries = db::entries(s.sql.as_ref(), since, limit, false).await?;
    let version = crate::nodes::blacklist_version(s).await?;
    Ok(ok_json(
        &json!({"blacklist_version": version, "entries": entries}),
    ))
}

/// `GET /mesh/federation/blacklist?since=&limit=`: an active peer pulls
/// this coordinator's own entries (adds and lifts it made, each once
/// logged, with its ledger index), oldest first after its cursor.
async fn for_peer(s: &Services, req: Request) -> Result<Response, Error> {
    authn::signed_peer(s, &req).await?;
    let (since, limit) = window(&req)?;
    let entries = db::entries(s.sql.as_ref(), since, limit, true).await?;
    let origin = crate::Settings::of(s)?.origin()?;
    Ok(ok_json(&json!({"origin": origin, "entries": entries})))
}

/// Whether a ban covers any of the subjects.
pub async fn covers(s: &Services, subjects: &[(SubjectKind, &str)]) -> Result<bool, Error> {
    db::any_banned(s.sql.as_ref(), subjects).await
}

fn docs() -> [RouteDoc; 4] {
    let body = || {
        object(
            &["subject_kind", "subject", "reason_code", "reason"],
            json!({
                "subject_kind": {"enum": ["node_key", "node_id", "owner", "peer"]},
                "subject": {"type": "string", "description": "a key id, a node id or a user id"},
                "reason_code": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                "reason": {"type": "string", "maxLength": 500},
                "evidence_digest": {"type": "string", "description": "sha-256:<hex> or blake3:<hex>"},
            }),
        )
    };
    let refusals = |mut v: Vec<edgecoder_kernel::router::ResponseDoc>| {
        v.push(err(400, "invalid_request"));
        v.push(err(401, "mesh_unauthorized / invalid_token"));
        v.push(err(403, "forbidden / step_up_required"));
        v
    };
    [
        DOCS.op(
            "blacklist_add",
            "Ban a node key, a node id, an owner account or a peer coordinator (operator, step-up): enforced on every mesh path at once, its leases released; an audit event and an edgecoder.dev/blacklist/v1 ledger entry",
            body(),
            refusals(vec![
                ok(201, "{seq, blacklist_version, ledger_index, released_tasks}"),
                err(409, "already_blacklisted"),
            ]),
        ),
        DOCS.op(
            "blacklist_lift",
            "Lift a ban (operator, step-up): an entry of its own, audited and logged",
            body(),
            refusals(vec![
                ok(200, "{seq, blacklist_version, ledger_index, released_tasks}"),
                err(404, "not_blacklisted"),
            ]),
        ),
        DOCS.op(
            "blacklist_list",
            "Blacklist entries after ?since= (adds and lifts, oldest first, ?limit= up to 1000) and the version (operator)",
            None,
            refusals(vec![ok(200, "{blacklist_version, entries}")]),
        ),
        DOCS.op(
            "federation_blacklist",
            "Coordinator to coordinator: this coordinator's own blacklist entries after ?since= (its seq; ?limit= up to 1000), each with its ledger index; RFC 9421-signed by an active peer's pinned key",
            None,
            crate::signed(vec![
                ok(200, "{origin, entries}"),
                err(400, "invalid_request"),
                err(403, "peer_not_approved"),
            ]),
        ),
    ]
}

/// The blacklist routes.
pub fn routes(r: Router) -> Router {
    let [add, lift, listed, pulled] = docs();
    r.route(
        Method::POST,
        "/mesh/blacklist",
        endpoint(|s, r| async move { change(&s, r, "add").await }),
        add,
    )
    .route(
        Method::POST,
        "/mesh/blacklist/lift",
        endpoint(|s, r| async move { change(&s, r, "lift").await }),
        lift,
    )
    .route(
        Method::GET,
        "/mesh/blacklist",
        endpoint(|s, r| async move { list(&s, r).await }),
        listed,
    )
    .route(
        Method::GET,
        "/mesh/federation/blacklist",
        endpoint(|s, r| async move { for_peer(&s, r).await }),
        pulled,
    )
}
