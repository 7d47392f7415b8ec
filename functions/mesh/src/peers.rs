//! Peering: which coordinators this one federates with, under its
//! operators' policy.
//!
//! In scope: the operator routes (`GET /mesh/peers`, `POST /mesh/peers` to
//! add a peer by origin and pinned key id or approve its pending request,
//! `/suspend`, `/resume`, `/remove`, `/refresh`), the coordinator-to-
//! coordinator handshake (`POST /mesh/peers/hello`, RFC 9421-signed by the
//! sender's coordinator key), requests this coordinator signs for its peers
//! ([`send`]), and re-pinning a peer's key only through a rotation signed by
//! the pinned key ([`refresh`]). Every change is an `edgecoder.dev/peer/v1`
//! ledger entry (written before the change is stored, so nothing is in force
//! that the log does not show) and an audit event.
//!
//! Both sides must approve: our operator (`local_approved`, by pinning the
//! peer's key id, which the peer's `/mesh/identity` must confirm) and the
//! peer (`remote_approved`, by a hello signed with the pinned key). Only an
//! active peer ([`crate::authn::signed_peer`]) gets anything else. A hello
//! from a stranger creates a pending request and makes no outbound call, so
//! it cannot be used to make this coordinator fetch arbitrary URLs.
//!
//! Out of scope: what active peers exchange (witnessing, gossip and
//! blacklist propagation build on [`crate::authn::signed_peer`] and
//! [`send`]).

use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::config::Mode;
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, object, ok};
use edgecoder_kernel::{
    OutboundRequest, OutboundResponse, Request, RequestContext, Response, Router, Services,
};
use edgecoder_proto::federation::{Hello, Rotation};
use edgecoder_proto::httpsig::{self, Target};
use edgecoder_proto::keys::{key_id, parse_public_key, public_key_b64url};
use edgecoder_proto::model::Envelope;
use p256::ecdsa::VerifyingKey;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::store::blacklist::SubjectKind;
use crate::store::peers::{self as db, Peer};
use crate::{DOCS, Error, Settings, authn, rfc3339};

/// The ledger payload type of peering changes.
pub const PEER_V1: &str = "edgecoder.dev/peer/v1";

/// Pending peering requests kept at most (strangers can send them).
pub const MAX_PENDING: i64 = 64;

/// Peering requests per client address per minute.
pub const HELLO_PER_MINUTE: i64 = 30;

/// How long a peering request waits for an operator before it is forgotten.
pub const PENDING_FOR_MS: i64 = 7 * 24 * 3600 * 1000;

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// `origin` as this coordinator names peers (lowercase, default port
/// dropped), if it is one a peer may have here (https; http only on
/// loopback, and only outside production).
pub fn peer_origin(s: &Services, origin: &str) -> Result<String, Error> {
    let refused = || {
        invalid("origin is scheme://host[:port]: https, or http on localhost outside production.")
    };
    let o = crate::settings::serialised(origin.trim_end_matches('/')).ok_or_else(refused)?;
    if s.config.mode == Mode::Production && !o.starts_with("https://") {
        return Err(refused());
    }
    Ok(o)
}

fn point_of(p: &Peer) -> Result<VerifyingKey, Error> {
    VerifyingKey::from_sec1_bytes(&p.public_key)
        .map_err(|_| Error::Kernel(edgecoder_kernel::Error::Storage("stored peer key".into())))
}

/// A peer as operators see it.
pub fn describe(p: &Peer) -> Json {
    json!({
        "origin": p.origin,
        "key_id": p.key_id,
        "status": p.status(),
        "local_approved": p.local_approved,
        "remote_approved": p.remote_approved,
        "last_seen_at": p.last_seen_at.map(rfc3339),
        "ban_policy": p.ban_policy,
    })
}

/// Records a change: the row (a compare-and-set on the version `peer`
/// was read at: 409 `peer_changed` if another change got there first),
/// then, if `logged`, the ledger entry (the row is put back if the log
/// cannot take it, so nothing is in force that the log does not show), then
/// the audit event. The ledger index, if logged.
#[allow(clippy::too_many_arguments)]
async fn commit(
    s: &Services,
    ctx: &RequestContext,
    actor: &str,
    action: &str,
    before: Option<&Peer>,
    peer: &Peer,
    reason: Option<&str>,
    extra: Json,
    logged: bool,
) -> Result<Option<u64>, Error> {
    let now = s.clock.now_ms();
    let sql = s.sql.as_ref();
    if !db::save(sql, peer, now).await? {
        return Err(Error::PeerChanged);
    }
    let audit_action = format!("mesh.peer.{action}");
    let mut index = None;
    if logged {
        let payload = json!({
            "action": action,
            "origin": peer.origin,
            "key_id": peer.key_id,
            "status": peer.status(),
            "actor": actor,
            "reason": reason,
            "details": extra,
            "at": rfc3339(now),
        });
        let nonce = edgecoder_kernel::ports::random_hex(s.rng.as_ref(), 8);
        match s
            .ledger
            .append(
                PEER_V1,
                payload.to_string().as_bytes(),
                &format!("peer:{}:{action}:{now}:{nonce}", peer.origin),
            )
            .await
        {
            Ok(i) => index = Some(i),
            Err(e) => {
                db::restore(sql, &peer.origin, before, peer.version + 1, now).await?;
                audit::note(
                    s,
                    ctx,
                    actor,
                    &audit_action,
                    Some(&peer.origin),
                    Outcome::Failure,
                    json!({"reason": "ledger_unavailable"}),
                )
                .await?;
                return Err(e.into());
            }
        }
    }
    audit::note(
        s,
        ctx,
        actor,
        &audit_action,
        Some(&peer.origin),
        Outcome::Success,
        json!({"key_id": peer.key_id, "status": peer.status(), "ledger_index": index,
               "reason": reason, "details": extra}),
    )
    .await?;
    Ok(index)
}

/// Sends a request to a peer, RFC 9421-signed with this coordinator's key.
pub async fn send(
    s: &Services,
    method: Method,
    url: &str,
    body: Vec<u8>,
) -> Result<OutboundResponse, Error> {
    let key = Settings::of(s)?
        .coordinator_keys
        .current
        .as_ref()
        .ok_or(Error::FederationUnconfigured)?;
    let target = Target::from_url(method.as_str(), url)?;
    let nonce = edgecoder_kernel::ports::random_hex(s.rng.as_ref(), 16);
    let h = httpsig::sign(
        key.ecdsa(),
        &key_id(key.verifying_key()),
        &nonce,
        s.clock.now_ms().div_euclid(1000),
        &target,
        &body,
    )?;
    let mut headers = vec![
        ("content-digest".to_owned(), h.content_digest),
        ("signature-input".to_owned(), h.signature_input),
        ("signature".to_owned(), h.signature),
    ];
    if !body.is_empty() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    s.outbound
        .send(OutboundRequest {
            method,
            url: url.to_owned(),
            headers,
            body,
        })
        .await
        .map_err(|e| Error::PeerUnreachable(e.to_string()))
}

/// What a coordinator's `/mesh/identity` says about its key.
struct Identity {
    key: VerifyingKey,
    rotation: Option<Envelope>,
}

async fn identity_of(s: &Services, origin: &str) -> Result<Identity, Error> {
    let resp = s
        .outbound
        .send(OutboundRequest {
            method: Method::GET,
            url: format!("{origin}/mesh/identity"),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        })
        .await
        .map_err(|e| Error::PeerUnreachable(format!("{origin}/mesh/identity: {e}")))?;
    if resp.status != 200 {
        return Err(Error::PeerUnreachable(format!(
            "{origin}/mesh/identity answered {}",
            resp.status
        )));
    }
    let doc: Json = serde_json::from_slice(&resp.body)
        .map_err(|_| Error::PeerUnreachable(format!("{origin}/mesh/identity is not JSON")))?;
    if doc["origin"].as_str() != Some(origin) {
        return Err(Error::PeerUnreachable(format!(
            "{origin}/mesh/identity names another origin"
        )));
    }
    let key = doc["coordinator_key"]["public_key"]
        .as_str()
        .and_then(|k| parse_public_key(k).ok())
        .ok_or_else(|| {
            Error::PeerUnreachable(format!("{origin}/mesh/identity has no coordinator key"))
        })?;
    let rotation = serde_json::from_value(doc["rotation"].clone()).ok();
    Ok(Identity { key, rotation })
}

/// Tells `peer` that we approve it (our hello, signed with our key); the
/// peer answers with its own view.
async fn hello(s: &Services, peer: &Peer) -> Result<Json, Error> {
    let settings = Settings::of(s)?;
    let me = settings.origin()?;
    let key = settings
        .coordinator_keys
        .current
        .as_ref()
        .ok_or(Error::FederationUnconfigured)?;
    let body = serde_json::to_vec(&Hello {
        origin: me.to_owned(),
        public_key: public_key_b64url(key.verifying_key()),
    })
    .unwrap_or_default();
    let url = format!("{}/mesh/peers/hello", peer.origin);
    let resp = send(s, Method::POST, &url, body).await?;
    let answer: Json = serde_json::from_slice(&resp.body).unwrap_or(Json::Null);
    if !(200..300).contains(&resp.status) {
        return Err(Error::PeerUnreachable(format!(
            "{url} answered {} {}",
            resp.status,
            answer["code"].as_str().unwrap_or("")
        )));
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    origin: String,
    key_id: String,
    reason: String,
    /// The peer's log key (a vkey), if the operator pins that too.
    #[serde(default)]
    log_vkey: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    origin: String,
    reason: String,
}

fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
        return Err(invalid("reason is 1 to 500 printable characters."));
    }
    Ok(())
}

/// Whether `origin` may be a peer at all: not this coordinator itself, and
/// not on the blacklist.
async fn admissible(s: &Services, origin: &str) -> Result<(), Error> {
    if Settings::of(s)?.origin()? == origin {
        return Err(invalid("origin is this coordinator's own."));
    }
    if crate::blacklist::covers(s, &[(SubjectKind::Peer, origin)]).await? {
        return Err(Error::PeerBlacklisted);
    }
    Ok(())
}

/// `POST /mesh/peers`: pin a peer's key and approve it (a new peer, or the
/// pending request of one).
async fn add(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    let body: AddBody = req.json()?;
    check_reason(&body.reason)?;
    let origin = peer_origin(s, &body.origin)?;
    admissible(s, &origin).await?;
    let sql = s.sql.as_ref();
    let before = db::by_origin(sql, &origin).await?;
    if let Some(p) = &before
        && !p.removed
        && p.local_approved
    {
        if p.key_id == body.key_id {
            // Approved already; its log is pinned now if it was not then.
            let mut out = describe(p);
            if crate::store::witness::origin_of_peer(sql, &origin)
                .await?
                .is_none()
            {
                out["log"] = match crate::witness::witness_peer_log(
                    s,
                    &req.ctx,
                    &origin,
                    true,
                    body.log_vkey.as_deref(),
                )
                .await
                {
                    Ok(vkeys) => json!({"witnessing": true, "vkeys": vkeys}),
                    Err(e) => json!({"witnessing": false, "error": e.to_string()}),
                };
            }
            return Ok(json_response(StatusCode::OK, JSON, &out));
        }
        // A pinned key changes only through a rotation it signed.
        return Err(Error::PeerKeyMismatch);
    }
    if let Some(other) = db::by_key(sql, &body.key_id).await?
        && other.origin != origin
    {
        return Err(Error::PeerKeyMismatch);
    }
    // The operator's pin must be the key the origin itself serves.
    let identity = identity_of(s, &origin).await?;
    if key_id(&identity.key) != body.key_id {
        audit::note(
            s,
            &req.ctx,
            &actor,
            "mesh.peer.key_mismatch",
            Some(&origin),
            Outcome::Failure,
            json!({"pinned": body.key_id, "served": key_id(&identity.key)}),
        )
        .await?;
        return Err(Error::PeerKeyMismatch);
    }
    // A pending request counts as the peer's approval only for this key.
    let requested = before
        .as_ref()
        .is_some_and(|p| !p.removed && p.remote_approved && p.key_id == body.key_id);
    let peer = Peer {
        origin: origin.clone(),
        key_id: body.key_id.clone(),
        public_key: identity.key.to_encoded_point(false).as_bytes().to_vec(),
        local_approved: true,
        remote_approved: requested,
        suspended: false,
        removed: false,
        last_seen_at: before.as_ref().and_then(|p| p.last_seen_at),
        ban_policy: before
            .as_ref()
            .map_or_else(|| "review".to_owned(), |p| p.ban_policy.clone()),
        version: before.as_ref().map_or(0, |p| p.version),
        banned: false,
    };
    // Its ledger is one we witness from now on.
    let witnessing = match crate::witness::witness_peer_log(
        s,
        &req.ctx,
        &origin,
        true,
        body.log_vkey.as_deref(),
    )
    .await
    {
        Ok(vkeys) => json!({"witnessing": true, "vkeys": vkeys}),
        // A log key the operator pinned must be what the peer publishes.
        Err(e) if body.log_vkey.is_some() => return Err(e),
        Err(e) => json!({"witnessing": false, "error": e.to_string()}),
    };
    let action = if requested { "approved" } else { "added" };
    let index = commit(
        s,
        &req.ctx,
        &actor,
        action,
        before.as_ref(),
        &peer,
        Some(&body.reason),
        Json::Null,
        true,
    )
    .await?;
    // Our approval reaches the peer as a signed hello; if it cannot be
    // delivered now, `refresh` sends it again.
    let delivered = match hello(s, &peer).await {
        Ok(_) => json!({"delivered": true}),
        Err(e) => json!({"delivered": false, "error": e.to_string()}),
    };
    let mut out = describe(&peer);
    out["ledger_index"] = json!(index);
    out["hello"] = delivered;
    out["log"] = witnessing;
    Ok(json_response(StatusCode::CREATED, JSON, &out))
}

/// `POST /mesh/peers/hello`: a coordinator asks to peer, or approves us.
async fn hello_route(s: &Services, req: Request) -> Result<Response, Error> {
    let body: Hello = req.json()?;
    let key = parse_public_key(&body.public_key)?;
    let origin = peer_origin(s, &body.origin)?;
    let kid = authn::possession(s, &req, &key, "peer-hello", HELLO_PER_MINUTE).await?;
    admissible(s, &origin).await?;
    let sql = s.sql.as_ref();
    let actor = format!("peer:{origin}");
    let before = db::by_origin(sql, &origin).await?;
    if let Some(other) = db::by_key(sql, &kid).await?
        && other.origin != origin
    {
        return Err(Error::PeerKeyMismatch);
    }
    let now = s.clock.now_ms();
    match before {
        Some(p) if p.removed => Err(Error::PeerNotApproved),
        Some(mut p) if p.local_approved => {
            if p.key_id != kid {
                audit::note(
                    s,
                    &req.ctx,
                    &actor,
                    "mesh.peer.key_mismatch",
                    Some(&origin),
                    Outcome::Failure,
                    json!({"pinned": p.key_id, "presented": kid}),
                )
                .await?;
                return Err(Error::PeerKeyMismatch);
            }
            if !p.remote_approved {
                let read = p.clone();
                p.remote_approved = true;
                p.last_seen_at = Some(now);
                commit(
                    s,
                    &req.ctx,
                    &actor,
                    "peer_approved",
                    Some(&read),
                    &p,
                    None,
                    Json::Null,
                    true,
                )
                .await?;
            } else {
                db::seen(sql, &origin, now).await?;
            }
            Ok(ok_json(&describe(&p)))
        }
        before => {
            // A request for our operator to decide on; a newer one from the
            // same origin replaces it (approval pins the key id anyway). It
            // is not logged: only what an operator approves is.
            if before.as_ref().is_some_and(|b| b.key_id == kid) {
                db::seen(sql, &origin, now).await?;
                let b = before.as_ref().map(describe).unwrap_or_default();
                return Ok(json_response(StatusCode::ACCEPTED, JSON, &b));
            }
            db::expire_pending(sql, now - PENDING_FOR_MS).await?;
            if before.is_none() && db::pending_count(sql).await? >= MAX_PENDING {
                return Err(Error::TooManyPendingPeers);
            }
            let p = Peer {
                origin: origin.clone(),
                key_id: kid,
                public_key: key.to_encoded_point(false).as_bytes().to_vec(),
                local_approved: false,
                remote_approved: true,
                suspended: false,
                removed: false,
                last_seen_at: Some(now),
                ban_policy: "review".to_owned(),
                version: before.as_ref().map_or(0, |b| b.version),
                banned: false,
            };
            commit(
                s,
                &req.ctx,
                &actor,
                "requested",
                before.as_ref(),
                &p,
                None,
                Json::Null,
                false,
            )
            .await?;
            Ok(json_response(StatusCode::ACCEPTED, JSON, &describe(&p)))
        }
    }
}

/// `POST /mesh/peers/{suspend,resume,remove}`.
async fn change(s: &Services, req: Request, action: &'static str) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let actor = format!("user:{}", caller.user_id);
    let body: ChangeBody = req.json()?;
    check_reason(&body.reason)?;
    let origin = peer_origin(s, &body.origin)?;
    let mut p = db::by_origin(s.sql.as_ref(), &origin)
        .await?
        .filter(|p| !p.removed)
        .ok_or(Error::PeerNotFound)?;
    let read = p.clone();
    match action {
        "suspend" if p.suspended => {
            return Err(Error::RolloutState("the peer is suspended already"));
        }
        "suspend" => p.suspended = true,
        "resume" if !p.suspended => return Err(Error::RolloutState("the peer is not suspended")),
        "resume" => p.suspended = false,
        _ => {
            p.removed = true;
            p.local_approved = false;
            p.remote_approved = false;
        }
    }
    let index = commit(
        s,
        &req.ctx,
        &actor,
        action,
        Some(&read),
        &p,
        Some(&body.reason),
        Json::Null,
        true,
    )
    .await?;
    let mut out = describe(&p);
    out["ledger_index"] = json!(index);
    Ok(ok_json(&out))
}

/// Re-reads `peer`'s identity: the pin moves only if the peer serves a
/// rotation signed by the pinned key to the key it now serves; an unsigned
/// change is refused and audited. Our hello is sent again. Returns the peer
/// as it now stands.
pub async fn refresh(s: &Services, ctx: &RequestContext, peer: Peer) -> Result<Peer, Error> {
    if peer.removed || !peer.local_approved {
        return Ok(peer);
    }
    let identity = identity_of(s, &peer.origin).await?;
    let pinned = point_of(&peer)?;
    let read = peer.clone();
    let mut peer = peer;
    if identity.key != pinned {
        let rotated = identity
            .rotation
            .as_ref()
            .and_then(|r| Rotation::verify(r, &peer.origin, &pinned).ok())
            .filter(|next| *next == identity.key);
        let taken = match &rotated {
            Some(next) => db::by_key(s.sql.as_ref(), &key_id(next))
                .await?
                .is_some_and(|o| o.origin != peer.origin),
            None => false,
        };
        let Some(next) = rotated.filter(|_| !taken) else {
            audit::note(
                s,
                ctx,
                "coordinator",
                "mesh.peer.key_mismatch",
                Some(&peer.origin),
                Outcome::Failure,
                json!({"pinned": peer.key_id, "served": key_id(&identity.key),
                       "rotation": identity.rotation.is_some()}),
            )
            .await?;
            return Err(Error::PeerKeyMismatch);
        };
        let previous = std::mem::replace(&mut peer.key_id, key_id(&next));
        peer.public_key = next.to_encoded_point(false).as_bytes().to_vec();
        commit(
            s,
            ctx,
            "coordinator",
            "rotated",
            Some(&read),
            &peer,
            None,
            json!({"previous_key_id": previous}),
            true,
        )
        .await?;
        peer.version += 1;
    }
    // Our approval again (idempotent at the peer): a lost hello, or a
    // pending request a stranger replaced there, heals on the next refresh.
    // The peer's answer is not its approval: that comes only as its own
    // signed hello.
    if !peer.suspended {
        let _ = hello(s, &peer).await;
    }
    // Its ledger's keys may have rotated; a failure here is not the
    // peering's (the witness keeps its last keys).
    let _ = crate::witness::witness_peer_log(s, ctx, &peer.origin, false, None).await;
    Ok(peer)
}

/// `POST /mesh/peers/policy`: what a peer's bans do here (operator,
/// step-up): `trust`, `review` or `ignore`.
async fn policy(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        origin: String,
        ban_policy: String,
        reason: String,
    }
    let body: Body = req.json()?;
    check_reason(&body.reason)?;
    if !["trust", "review", "ignore"].contains(&body.ban_policy.as_str()) {
        return Err(invalid("ban_policy is trust, review or ignore."));
    }
    let origin = peer_origin(s, &body.origin)?;
    let mut p = db::by_origin(s.sql.as_ref(), &origin)
        .await?
        .filter(|p| !p.removed)
        .ok_or(Error::PeerNotFound)?;
    let read = p.clone();
    let previous = std::mem::replace(&mut p.ban_policy, body.ban_policy);
    let index = commit(
        s,
        &req.ctx,
        &format!("user:{}", caller.user_id),
        "policy",
        Some(&read),
        &p,
        Some(&body.reason),
        json!({"ban_policy": p.ban_policy, "previous": previous}),
        true,
    )
    .await?;
    let mut out = describe(&p);
    out["ledger_index"] = json!(index);
    Ok(ok_json(&out))
}

/// `POST /mesh/peers/refresh`: re-read a peer's identity now (operator).
async fn refresh_route(s: &Services, req: Request) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        origin: String,
    }
    let body: Body = req.json()?;
    let origin = peer_origin(s, &body.origin)?;
    admissible(s, &origin).await?;
    let p = db::by_origin(s.sql.as_ref(), &origin)
        .await?
        .filter(|p| !p.removed)
        .ok_or(Error::PeerNotFound)?;
    let before = p.key_id.clone();
    let p = refresh(s, &req.ctx, p).await?;
    audit::note(
        s,
        &req.ctx,
        &format!("user:{}", caller.user_id),
        "mesh.peer.refresh",
        Some(&p.origin),
        Outcome::Success,
        json!({"key_id": p.key_id, "rotated": p.key_id != before}),
    )
    .await?;
    Ok(ok_json(&describe(&p)))
}

/// `GET /mesh/peers`: this coordinator's federation identity and its peers.
async fn list(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let settings = Settings::of(s)?;
    let me = json!({
        "origin": settings.origins.first(),
        "key_id": settings.coordinator_keys.current.as_ref().map(|k| key_id(k.verifying_key())),
    });
    let mut peers = Vec::new();
    for p in db::all(s.sql.as_ref()).await? {
        let st = crate::store::federation::state(s.sql.as_ref(), &p.origin).await?;
        let mut v = describe(&p);
        v["pull"] = json!({"next_index": st.next_index, "due": st.due,
            "last_pull_at": st.synced_at.map(rfc3339), "last_error": st.last_error});
        peers.push(v);
    }
    Ok(ok_json(&json!({"self": me, "peers": peers})))
}

fn docs() -> [RouteDoc; 8] {
    let refusals = |mut v: Vec<edgecoder_kernel::router::ResponseDoc>| {
        v.push(err(400, "invalid_request"));
        v.push(err(401, "mesh_unauthorized / invalid_token"));
        v.push(err(403, "forbidden / step_up_required"));
        v
    };
    let change_body = || {
        object(
            &["origin", "reason"],
            json!({"origin": {"type": "string"}, "reason": {"type": "string", "maxLength": 500}}),
        )
    };
    [
        DOCS.op(
            "peers_list",
            "This coordinator's origin and key id, and its peers with their status (operator, step-up)",
            None,
            refusals(vec![ok(200, "{self, peers}")]),
        ),
        DOCS.op(
            "peers_add",
            "Pin a peer coordinator's key id and approve it, or approve its pending request (operator, step-up): the key must be what the origin's /mesh/identity serves; our signed hello is sent to it; a peer/v1 ledger entry and an audit event",
            object(
                &["origin", "key_id", "reason"],
                json!({"origin": {"type": "string"}, "key_id": {"type": "string"},
                       "reason": {"type": "string", "maxLength": 500},
                       "log_vkey": {"type": "string", "description": "the peer's Ed25519 log verifier key, if pinned too"}}),
            ),
            refusals(vec![
                ok(201, "the peer: {origin, key_id, status, ledger_index, hello}"),
                ok(200, "already approved with this key"),
                err(409, "peer_key_mismatch / federation_not_configured"),
                err(403, "peer_blacklisted"),
                err(502, "peer_unreachable"),
            ]),
        ),
        DOCS.op(
            "peers_hello",
            "Coordinator to coordinator: ask to peer, or approve a peer that approved us; RFC 9421-signed by the key the body carries",
            object(
                &["origin", "public_key"],
                json!({"origin": {"type": "string"}, "public_key": {"type": "string"}}),
            ),
            crate::signed(vec![
                ok(200, "known peer: its status here"),
                ok(202, "a pending request for the operator"),
                err(400, "invalid_request / invalid_public_key"),
                err(403, "peer_not_approved: removed here / peer_blacklisted"),
                err(409, "peer_key_mismatch / federation_not_configured"),
                err(429, "too_many_pending_peers"),
            ]),
        ),
        DOCS.op(
            "peers_suspend",
            "Suspend a peer (operator, step-up): nothing is exchanged until resumed",
            change_body(),
            refusals(vec![ok(200, "the peer"), err(404, "peer_not_found"), err(409, "invalid_transition")]),
        ),
        DOCS.op(
            "peers_resume",
            "Resume a suspended peer (operator, step-up)",
            change_body(),
            refusals(vec![ok(200, "the peer"), err(404, "peer_not_found"), err(409, "invalid_transition")]),
        ),
        DOCS.op(
            "peers_remove",
            "Remove a peer (operator, step-up): it must be added again, and approve again, to peer",
            change_body(),
            refusals(vec![ok(200, "the peer"), err(404, "peer_not_found")]),
        ),
        DOCS.op(
            "peers_refresh",
            "Re-read a peer's identity (operator, step-up): its key changes here only through a rotation signed by the pinned key",
            object(&["origin"], json!({"origin": {"type": "string"}})),
            refusals(vec![
                ok(200, "the peer"),
                err(404, "peer_not_found"),
                err(409, "peer_key_mismatch"),
                err(502, "peer_unreachable"),
            ]),
        ),
        DOCS.op(
            "peers_policy",
            "What a peer's bans do here (operator, step-up): trust (applied once proven in its cosigned log), review (queued for an operator), ignore; a peer/v1 entry",
            object(
                &["origin", "ban_policy", "reason"],
                json!({"origin": {"type": "string"}, "ban_policy": {"enum": ["trust", "review", "ignore"]},
                       "reason": {"type": "string", "maxLength": 500}}),
            ),
            refusals(vec![ok(200, "the peer"), err(404, "peer_not_found")]),
        ),
    ]
}

/// The peering routes.
pub fn routes(r: Router) -> Router {
    let [
        listed,
        added,
        helloed,
        suspended,
        resumed,
        removed,
        refreshed,
        policied,
    ] = docs();
    r.route(
        Method::GET,
        "/mesh/peers",
        endpoint(|s, r| async move { list(&s, r).await }),
        listed,
    )
    .route(
        Method::POST,
        "/mesh/peers",
        endpoint(|s, r| async move { add(&s, r).await }),
        added,
    )
    .route(
        Method::POST,
        "/mesh/peers/hello",
        endpoint(|s, r| async move { hello_route(&s, r).await }),
        helloed,
    )
    .route(
        Method::POST,
        "/mesh/peers/suspend",
        endpoint(|s, r| async move { change(&s, r, "suspend").await }),
        suspended,
    )
    .route(
        Method::POST,
        "/mesh/peers/resume",
        endpoint(|s, r| async move { change(&s, r, "resume").await }),
        resumed,
    )
    .route(
        Method::POST,
        "/mesh/peers/remove",
        endpoint(|s, r| async move { change(&s, r, "remove").await }),
        removed,
    )
    .route(
        Method::POST,
        "/mesh/peers/refresh",
        endpoint(|s, r| async move { refresh_route(&s, r).await }),
        refreshed,
    )
    .route(
        Method::POST,
        "/mesh/peers/policy",
        endpoint(|s, r| async move { policy(&s, r).await }),
        policied,
    )
}
