//! Blacklist propagation between peers: signed gossip pushed on write and a
//! verified pull of each peer's log, applied under each peer's ban policy.
//!
//! In scope:
//! - push: after a local ban or lift is logged, a DSSE gossip envelope
//!   ([`edgecoder_proto::federation::Gossip`]: origin, key id, creation
//!   time, TTL, the ledger index and exact payload) goes to every active
//!   peer, after the response (`POST /mesh/federation/gossip`, RFC
//!   9421-signed). The receiver refuses unsigned or forged envelopes,
//!   unknown payload types, expired TTLs, other origins and replays (digest
//!   remembered until the TTL passes), and then only schedules a pull: an
//!   envelope alone changes nothing.
//! - pull ([`sync_peer`]): this coordinator witnesses the peer's newest
//!   checkpoint itself (consistency from what it cosigned before), reads
//!   the peer's log from its cursor up to that checkpoint, recomputes the
//!   root over every entry read (a frontier kept per peer), and only if it
//!   matches applies the peer's own `blacklist/v1` entries (appended by the
//!   peer's mesh, with origin `local` there: no relaying, so no peer can
//!   speak for another). A lost push converges here.
//! - policy: a peer's entries are applied (`trust`), queued for an
//!   operator (`review`, `GET /mesh/blacklist/reviews`, accept or reject),
//!   or dropped (`ignore`); applied entries are this coordinator's own
//!   `blacklist/v1` entries naming the peer and the entry's index there; a
//!   peer lifts only bans it put in force here; a local lift of a peer's
//!   ban is an ordinary audited lift.
//! - schedule ([`tick`]): every active peer is pulled at most once per
//!   `mesh_federation_interval_secs` and at once when a push says it has
//!   something: natively a timer, on Workers a cron trigger, on Spin any
//!   scheduler calling `POST /mesh/federation/tick`.
//!
//! Out of scope: peering itself ([`crate::peers`]) and the witness protocol
//! ([`crate::witness`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::audit::{self, Outcome};
use edgecoder_kernel::http::{JSON, json_response, ok_json};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, endpoint, err, ok};
use edgecoder_kernel::{OutboundRequest, Request, RequestContext, Response, Router, Services};
use edgecoder_proto::federation::{BLACKLIST_ENTRY_TYPE, Gossip};
use edgecoder_proto::keys::key_id;
use edgecoder_tlog::merkle::{Frontier, Hasher, Sha256};
use p256::ecdsa::VerifyingKey;
use serde_json::{Value as Json, json};

use crate::blacklist::{self, Ban};
use crate::store::blacklist::{self as bans, SubjectKind};
use crate::store::federation as db;
use crate::store::peers::{self as peers_db, Peer, PeerStatus};
use crate::witness;
use crate::{DOCS, Error, Settings, authn};

/// Seconds a pushed envelope may be delivered after it was made.
pub const GOSSIP_TTL_SECS: i64 = 600;
/// Entries read per page of a peer's log.
const PAGE: u64 = 1000;
/// How long a pull holds its peer at most (a crashed pull's hold lapses).
const PULL_HOLD_MS: i64 = 120_000;
/// Pages one pull reads at most (a peer far ahead is caught up over
/// several pulls, each page applied once proven).
const MAX_PAGES: usize = 50;
/// The principal a peer's mesh appends its entries under.
const MESH_PRINCIPAL: &str = "service:mesh";

/// Announces this coordinator's logged blacklist entry to its active peers,
/// after the response.
pub fn push(s: &Services, ledger_index: u64, payload: Vec<u8>) {
    let owned = s.clone();
    s.defer.defer(Box::pin(async move {
        if let Err(e) = push_now(&owned, ledger_index, &payload).await {
            tracing_note(&owned, &e.to_string()).await;
        }
    }));
}

async fn tracing_note(s: &Services, why: &str) {
    let ctx = s.new_context(None);
    let _ = audit::note(
        s,
        &ctx,
        crate::models::COORDINATOR,
        "mesh.federation.push_failed",
        None,
        Outcome::Failure,
        json!({"error": why}),
    )
    .await;
}

async fn push_now(s: &Services, ledger_index: u64, payload: &[u8]) -> Result<(), Error> {
    let settings = Settings::of(s)?;
    let Ok(me) = settings.origin() else {
        return Ok(());
    };
    let Some(key) = settings.coordinator_keys.current.as_ref() else {
        return Ok(());
    };
    let peers = peers_db::active(s.sql.as_ref()).await?;
    if peers.is_empty() {
        return Ok(());
    }
    let gossip = Gossip {
        origin: me.to_owned(),
        key_id: key_id(key.verifying_key()),
        created: s.clock.now_ms().div_euclid(1000),
        ttl: GOSSIP_TTL_SECS,
        ledger_index,
        payload: STANDARD.encode(payload),
    };
    let body = serde_json::to_vec(&gossip.seal(key.ecdsa())).unwrap_or_default();
    let mut failed = Vec::new();
    for p in peers {
        let url = format!("{}/mesh/federation/gossip", p.origin);
        match crate::peers::send(s, Method::POST, &url, body.clone()).await {
            Ok(r) if (200..300).contains(&r.status) => {}
            Ok(r) => failed.push(format!("{}: {}", p.origin, r.status)),
            Err(e) => failed.push(format!("{}: {e}", p.origin)),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::PeerUnreachable(failed.join("; ")))
    }
}

/// `POST /mesh/federation/gossip`: one envelope from an active peer.
async fn receive(s: &Services, req: Request) -> Result<Response, Error> {
    let peer = authn::signed_peer(s, &req).await?;
    let pinned = VerifyingKey::from_sec1_bytes(&peer.public_key)
        .map_err(|_| Error::Kernel(edgecoder_kernel::Error::Storage("stored peer key".into())))?;
    let now = s.clock.now_ms();
    let (g, digest) = match Gossip::open(&req.body, &peer.origin, &pinned, now.div_euclid(1000)) {
        Ok(v) => v,
        Err(refusal) => {
            return Err(audit::denied(
                s,
                &req.ctx,
                &format!("peer:{}", peer.origin),
                "mesh.federation.envelope_refused",
                Some(&peer.origin),
                json!({"code": refusal.code()}),
                Error::Gossip(refusal),
            )
            .await);
        }
    };
    let expires = g.created.saturating_add(g.ttl).saturating_mul(1000);
    if !db::first_sight(s.sql.as_ref(), &digest, &peer.origin, expires, now).await? {
        return Err(Error::EnvelopeReplayed);
    }
    // A claim only: it is acted on once the pull proves it in the peer's
    // cosigned log.
    db::mark_due(s.sql.as_ref(), &peer.origin).await?;
    audit::note(
        s,
        &req.ctx,
        &format!("peer:{}", peer.origin),
        "mesh.federation.gossip",
        Some(&peer.origin),
        Outcome::Success,
        json!({"ledger_index": g.ledger_index}),
    )
    .await?;
    let owned = s.clone();
    let ctx = req.ctx.clone();
    let origin = peer.origin.clone();
    s.defer.defer(Box::pin(async move {
        let _ = sync_peer(&owned, &ctx, &origin).await;
    }));
    Ok(json_response(
        StatusCode::ACCEPTED,
        JSON,
        &json!({"accepted": true, "ledger_index": g.ledger_index}),
    ))
}

async fn get(s: &Services, url: &str, bytes: &mut usize) -> Result<Vec<u8>, Error> {
    let resp = s
        .outbound
        .send(OutboundRequest {
            method: Method::GET,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        })
        .await
        .map_err(|e| Error::PeerUnreachable(format!("{url}: {e}")))?;
    *bytes += resp.body.len();
    if resp.status != 200 {
        return Err(Error::PeerUnreachable(format!(
            "{url} answered {}",
            resp.status
        )));
    }
    Ok(resp.body)
}

fn frontier_of(next: u64, stored: &str) -> Result<Frontier, Error> {
    let corrupt = || Error::Kernel(edgecoder_kernel::Error::Storage("stored frontier".into()));
    let peaks: Vec<(u32, String)> = serde_json::from_str(stored).map_err(|_| corrupt())?;
    let peaks = peaks
        .into_iter()
        .map(|(l, h)| {
            STANDARD
                .decode(h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .map(|h| (l, h))
                .ok_or_else(corrupt)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_parts(next, peaks).map_err(|_| corrupt())
}

fn frontier_json(f: &Frontier) -> String {
    let (_, peaks) = f.to_parts();
    let v: Vec<(u32, String)> = peaks
        .into_iter()
        .map(|(l, h)| (l, STANDARD.encode(h)))
        .collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

/// Pulls `origin`'s log up to its newest checkpoint (witnessed here first)
/// and applies its blacklist entries by policy. Nothing is applied, and the
/// cursor does not move, unless every entry read hashes to the cosigned root.
pub async fn sync_peer(s: &Services, ctx: &RequestContext, origin: &str) -> Result<Json, Error> {
    let sql = s.sql.as_ref();
    let now = s.clock.now_ms();
    // One pull of a peer at a time (a push and the schedule may both ask).
    if !db::claim(sql, origin, now, now + PULL_HOLD_MS).await? {
        return Ok(json!({"peer": origin, "skipped": "another pull of this peer is running"}));
    }
    let result = pull(s, ctx, origin).await;
    if let Err(e) = &result {
        db::failed(sql, origin, &e.to_string(), s.clock.now_ms()).await?;
    }
    db::release(sql, origin).await?;
    result
}

async fn pull(s: &Services, ctx: &RequestContext, origin: &str) -> Result<Json, Error> {
    let sql = s.sql.as_ref();
    let peer = peers_db::by_origin(sql, origin)
        .await?
        .filter(|p| p.status() == PeerStatus::Active)
        .ok_or(Error::PeerNotApproved)?;
    // The log an operator pinned when approving the peer; never one first
    // seen here.
    let log_origin = crate::store::witness::origin_of_peer(sql, origin)
        .await?
        .ok_or(Error::UnknownLog)?;
    let log = witness::witnessed(s, &log_origin)
        .await?
        .ok_or(Error::UnknownLog)?;

    // Response bytes read from the peer (what a pull costs it and us).
    let mut bytes = 0usize;
    // 1. The peer's newest checkpoint, witnessed by us (unless the peer's
    //    own witness round got here first: what we hold is what counts).
    let note = String::from_utf8(get(s, &format!("{origin}/ledger/checkpoint"), &mut bytes).await?)
        .map_err(|_| Error::PeerUnreachable("the checkpoint is not UTF-8".into()))?;
    let cp = witness::open(&log, &note)?;
    if cp.size > log.size {
        let proof = if log.size == 0 {
            Vec::new()
        } else {
            consistency(s, origin, log.size, cp.size, &mut bytes).await?
        };
        witness::accept(s, ctx, &log, log.size, &proof, &note, &cp).await?;
    } else if cp.size == log.size && log.root.as_deref() != Some(&cp.root[..]) {
        witness::accept(s, ctx, &log, log.size, &[], &note, &cp).await?;
    }
    let held = witness::witnessed(s, &log_origin)
        .await?
        .ok_or(Error::UnknownLog)?;
    let size = held.size;
    let root: [u8; 32] = held
        .root
        .as_deref()
        .and_then(|r| r.try_into().ok())
        .unwrap_or_default();

    // 2. The entries from the cursor on, a page at a time: each page is
    //    proven part of the cosigned tree (the root recomputed over every
    //    entry read so far, and a consistency proof from there to the
    //    cosigned size) before its blacklist entries are taken and the
    //    cursor moves. At most MAX_PAGES a pull; the next pull goes on.
    let st = db::state(sql, origin).await?;
    let mut frontier = frontier_of(st.next_index, &st.frontier)?;
    let mut next = st.next_index;
    if next > size {
        return Err(Error::InconsistentCheckpoint);
    }
    let mut outcomes = serde_json::Map::new();
    let mut taken = 0usize;
    let mut pages = 0usize;
    while next < size && pages < MAX_PAGES {
        pages += 1;
        let end = next.saturating_add(PAGE).min(size);
        let page: Json = serde_json::from_slice(
            &get(
                s,
                &format!("{origin}/ledger/entries?start={next}&end={end}"),
                &mut bytes,
            )
            .await?,
        )
        .map_err(|_| Error::PeerUnreachable("entries are not JSON".into()))?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        if u64::try_from(entries.len()).ok() != Some(end - next) {
            return Err(Error::PeerUnreachable(
                "the peer's log page is short".into(),
            ));
        }
        let mut mine: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut economy: Vec<(u64, String, Vec<u8>)> = Vec::new();
        for (at, e) in (next..).zip(entries) {
            let bytes = e["entry"]
                .as_str()
                .and_then(|b| STANDARD.decode(b).ok())
                .filter(|_| e["index"].as_u64() == Some(at))
                .ok_or_else(|| Error::PeerUnreachable("a malformed log entry".into()))?;
            frontier.push::<Sha256>(Sha256::leaf(&bytes));
            let envelope: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
            if envelope["type"] == BLACKLIST_ENTRY_TYPE
                && envelope["principal"] == MESH_PRINCIPAL
                && let Some(p) = envelope["payload"]
                    .as_str()
                    .and_then(|p| STANDARD.decode(p).ok())
            {
                mine.push((at, p));
            } else if (envelope["type"] == crate::economy::TASK_COMPLETION_V1
                || envelope["type"] == crate::economy::ISSUANCE_EPOCH_V1)
                && envelope["principal"] == MESH_PRINCIPAL
                && let (Some(t), Some(p)) = (
                    envelope["type"].as_str(),
                    envelope["payload"]
                        .as_str()
                        .and_then(|p| STANDARD.decode(p).ok()),
                )
            {
                economy.push((at, t.to_owned(), p));
            }
        }
        let proven = if end == size {
            frontier.root::<Sha256>() == root
        } else {
            let proof = consistency(s, origin, end, size, &mut bytes).await?;
            edgecoder_tlog::merkle::verify_consistency::<Sha256>(
                end,
                size,
                &proof,
                &frontier.root::<Sha256>(),
                &root,
            )
            .is_ok()
        };
        if !proven {
            audit::note(
                s,
                ctx,
                &format!("peer:{origin}"),
                "mesh.federation.log_mismatch",
                Some(origin),
                Outcome::Failure,
                json!({"size": size, "from": next, "to": end}),
            )
            .await?;
            return Err(Error::InconsistentCheckpoint);
        }
        // 3. Its own blacklist entries, by its policy here.
        for (index, payload) in &mine {
            let what = take(s, ctx, &peer, *index, payload).await?;
            let n = outcomes.entry(what).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
        taken += mine.len();
        // Its completions and closes: the closes this coordinator checks
        // and, when they match, signs.
        crate::epochs::take_peer_entries(s, ctx, origin, next, &economy).await?;
        next = end;
        keep(s, origin, next, &frontier).await?;
    }
    if next < size {
        // More next time.
        db::mark_due(sql, origin).await?;
    } else if pages == 0 {
        // Nothing new: the pull is done (and no longer due).
        keep(s, origin, next, &frontier).await?;
    }
    Ok(
        json!({"peer": origin, "size": size, "next_index": next, "read": next - st.next_index,
              "blacklist_entries": taken, "bytes_in": bytes, "outcomes": outcomes}),
    )
}

/// Saves the pull's position: the next index and the frontier before it.
async fn keep(s: &Services, origin: &str, next: u64, frontier: &Frontier) -> Result<(), Error> {
    let now = s.clock.now_ms();
    db::save(
        s.sql.as_ref(),
        origin,
        next,
        &frontier_json(frontier),
        now,
        None,
    )
    .await
}

/// A consistency proof from the peer's log.
async fn consistency(
    s: &Services,
    origin: &str,
    first: u64,
    second: u64,
    bytes: &mut usize,
) -> Result<Vec<Vec<u8>>, Error> {
    let v: Json = serde_json::from_slice(
        &get(
            s,
            &format!("{origin}/ledger/proof/consistency?first={first}&second={second}"),
            bytes,
        )
        .await?,
    )
    .map_err(|_| Error::PeerUnreachable("a consistency proof that is not JSON".into()))?;
    Ok(v["proof"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().and_then(|h| STANDARD.decode(h).ok()))
        .collect())
}

/// A peer's entry, checked for shape.
struct PeerEntry {
    action: &'static str,
    kind: SubjectKind,
    subject: String,
    reason_code: String,
    reason: String,
    evidence_digest: Option<String>,
}

fn peer_entry(payload: &[u8]) -> Option<PeerEntry> {
    let v: Json = serde_json::from_slice(payload).ok()?;
    // Only the peer's own decisions: what it applied from others is theirs
    // to announce.
    if v["origin"] != "local" {
        return None;
    }
    let action = match v["action"].as_str()? {
        "add" => "add",
        "lift" => "lift",
        _ => return None,
    };
    // Only keys mean the same thing everywhere: a node id or a user id is a
    // name on the peer's side that may belong to someone else here.
    let kind = SubjectKind::parse(v["subject_kind"].as_str()?)?;
    if kind != SubjectKind::NodeKey {
        return None;
    }
    let subject = v["subject"].as_str()?.to_owned();
    let reason_code = v["reason_code"].as_str()?.to_owned();
    let reason = v["reason"].as_str()?.to_owned();
    blacklist::check(
        kind,
        &subject,
        &reason_code,
        &reason,
        v["evidence_digest"].as_str(),
    )
    .ok()?;
    Some(PeerEntry {
        action,
        kind,
        subject,
        reason_code,
        reason,
        evidence_digest: v["evidence_digest"].as_str().map(str::to_owned),
    })
}

/// Applies, queues or drops one entry of `peer`'s log; says which.
async fn take(
    s: &Services,
    ctx: &RequestContext,
    peer: &Peer,
    index: u64,
    payload: &[u8],
) -> Result<String, Error> {
    let sql = s.sql.as_ref();
    let Some(entry) = peer_entry(payload) else {
        return Ok("not_its_own".into());
    };
    if bans::applied_from(sql, &peer.origin, index).await? {
        return Ok("applied_before".into());
    }
    match peer.ban_policy.as_str() {
        "trust" => apply(s, ctx, &peer.origin, index, &entry).await,
        "review" => {
            let text = String::from_utf8_lossy(payload);
            db::queue_review(sql, &peer.origin, index, &text, s.clock.now_ms()).await?;
            audit::note(
                s,
                ctx,
                &format!("peer:{}", peer.origin),
                "mesh.blacklist.review_queued",
                Some(&entry.subject),
                Outcome::Success,
                json!({"peer": peer.origin, "source_index": index, "action": entry.action}),
            )
            .await?;
            Ok("queued".into())
        }
        _ => Ok("ignored".into()),
    }
}

async fn apply(
    s: &Services,
    ctx: &RequestContext,
    peer: &str,
    index: u64,
    e: &PeerEntry,
) -> Result<String, Error> {
    let sql = s.sql.as_ref();
    let in_force = bans::ban_origin(sql, e.kind, &e.subject).await?;
    match (e.action, in_force.as_deref()) {
        ("add", Some(_)) => return Ok("already_banned".into()),
        // A peer lifts only what it put in force here.
        ("lift", o) if o != Some(peer) => return Ok("not_its_ban".into()),
        _ => {}
    }
    let actor = format!("peer:{peer}");
    let ban = Ban {
        action: e.action,
        kind: e.kind,
        subject: &e.subject,
        reason_code: &e.reason_code,
        reason: &e.reason,
        evidence_digest: e.evidence_digest.as_deref(),
        actor: &actor,
        origin: Some((peer, index)),
    };
    match blacklist::apply(s, ctx, &ban).await {
        Ok(_) => Ok("applied".into()),
        Err(Error::AlreadyBlacklisted | Error::NotBlacklisted) => Ok("already_so".into()),
        Err(e) => Err(e),
    }
}

/// Pulls every active peer that is due (a push asked) or not pulled for
/// `mesh_federation_interval_secs`; one outcome per peer.
pub async fn tick(s: &Services) -> Result<Json, Error> {
    crate::reputation::prune(s).await?;
    let interval_ms = Settings::of(s)?.federation_interval_secs * 1000;
    let now = s.clock.now_ms();
    let ctx = s.new_context(None);
    let mut out = Vec::new();
    for p in peers_db::active(s.sql.as_ref()).await? {
        let st = db::state(s.sql.as_ref(), &p.origin).await?;
        if !st.due && st.synced_at.is_some_and(|t| now - t < interval_ms) {
            continue;
        }
        out.push(match sync_peer(s, &ctx, &p.origin).await {
            Ok(v) => v,
            Err(e) => json!({"peer": p.origin, "error": e.to_string()}),
        });
    }
    // The economy's catch-up and epoch closes ride on the same schedule; a
    // failure there does not stop the pulls.
    let economy = crate::economy::tick(s)
        .await
        .unwrap_or_else(|e| json!({"error": e.to_string()}));
    Ok(json!({"pulled": out, "economy": economy}))
}

/// `POST /mesh/federation/tick`: run the schedule now (for schedulers that
/// cannot call in-process, e.g. on Spin). Open, since it only pulls from
/// approved peers, and limited to a few runs a minute.
async fn tick_route(s: &Services, req: Request) -> Result<Response, Error> {
    let who = edgecoder_kernel::ratelimit::ip_subject(&req.ctx).unwrap_or_else(|| "unknown".into());
    authn::charge(s, &format!("federation-tick:{who}"), 30).await?;
    // Which peers and why a pull failed are for operators; others get
    // counts.
    let operator = match req.bearer() {
        Some(_) => authn::operator(s, &req).await.ok(),
        None => None,
    };
    let done = tick(s).await?;
    let pulled = done["pulled"].as_array().cloned().unwrap_or_default();
    let failed = pulled.iter().filter(|p| p.get("error").is_some()).count();
    // An open route that makes the coordinator pull: a tick that did so, or
    // an operator's, is on record; an anonymous one that found nothing due
    // writes nothing (no one fills the audit trail by calling it).
    if operator.is_some() || !pulled.is_empty() {
        audit::note(
            s,
            &req.ctx,
            &operator
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), |c| format!("user:{}", c.user_id)),
            "mesh.federation.tick",
            None,
            Outcome::Success,
            json!({"pulled": pulled.len() - failed, "failed": failed}),
        )
        .await?;
    }
    if operator.is_some() {
        return Ok(ok_json(&done));
    }
    Ok(ok_json(
        &json!({"pulled": pulled.len() - failed, "failed": failed}),
    ))
}

/// `GET /mesh/blacklist/reviews?pending=true`: peers' bans queued for an
/// operator (operator, step-up).
async fn reviews(s: &Services, req: Request) -> Result<Response, Error> {
    authn::operator(s, &req).await?;
    let pending = req.query_param("pending").is_some_and(|v| v == "true");
    Ok(ok_json(
        &json!({"reviews": db::reviews(s.sql.as_ref(), pending, 200).await?}),
    ))
}

/// `POST /mesh/blacklist/reviews/{id}/accept|reject` (operator, step-up).
async fn decide(s: &Services, req: Request, accept: bool) -> Result<Response, Error> {
    let caller = authn::operator(s, &req).await?;
    let id = req
        .param("id")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| {
            Error::Kernel(edgecoder_kernel::Error::InvalidRequest(
                "id is a number.".into(),
            ))
        })?;
    let sql = s.sql.as_ref();
    let review = db::review(sql, id).await?.ok_or(Error::ReviewNotFound)?;
    if review.status != "pending" {
        return Err(Error::RolloutState("the review is decided already"));
    }
    let actor = format!("user:{}", caller.user_id);
    let status = if accept { "accepted" } else { "rejected" };
    // Claimed first, so two operators cannot both apply it.
    if !db::decide(sql, id, status, &actor, s.clock.now_ms()).await? {
        return Err(Error::RolloutState("the review is decided already"));
    }
    let outcome = if accept {
        // Only from a peer still active whose bans are not ignored now.
        let peer = peers_db::by_origin(sql, &review.peer)
            .await?
            .filter(|p| p.status() == PeerStatus::Active && p.ban_policy != "ignore");
        let applied = match (peer, peer_entry(review.payload.as_bytes())) {
            (Some(_), Some(entry)) => {
                apply(s, &req.ctx, &review.peer, review.source_index, &entry).await
            }
            _ => Err(Error::PeerNotApproved),
        };
        match applied {
            Ok(o) => o,
            Err(e) => {
                db::reopen(sql, id).await?;
                return Err(e);
            }
        }
    } else {
        "rejected".into()
    };
    audit::note(
        s,
        &req.ctx,
        &actor,
        &format!("mesh.blacklist.review_{status}"),
        Some(&review.peer),
        Outcome::Success,
        json!({"review": id, "source_index": review.source_index, "outcome": outcome}),
    )
    .await?;
    Ok(ok_json(
        &json!({"id": id, "status": status, "outcome": outcome}),
    ))
}

fn docs() -> [RouteDoc; 5] {
    let operator = |mut v: Vec<edgecoder_kernel::router::ResponseDoc>| {
        v.push(err(401, "mesh_unauthorized / invalid_token"));
        v.push(err(403, "forbidden / step_up_required"));
        v
    };
    [
        DOCS.op(
            "federation_gossip",
            "Coordinator to coordinator: one DSSE gossip envelope from an active peer (RFC 9421-signed); it schedules a verified pull, nothing more",
            None,
            crate::signed(vec![
                ok(202, "{accepted, ledger_index}"),
                err(400, "invalid_envelope"),
                err(403, "peer_not_approved / envelope_signature_invalid / envelope_origin_mismatch"),
                err(409, "envelope_replayed"),
                err(422, "unknown_payload_type / envelope_expired"),
            ]),
        ),
        DOCS.op(
            "federation_tick",
            "Pull every active peer that is due now (for schedulers; a few runs a minute)",
            None,
            vec![ok(200, "{pulled, failed}: counts; an operator's access token gets each peer's outcome"), err(429, "rate_limited")],
        ),
        DOCS.op(
            "blacklist_reviews",
            "Peers' bans queued for review (operator, step-up): ?pending=true",
            None,
            operator(vec![ok(200, "{reviews}")]),
        ),
        DOCS.op(
            "blacklist_review_accept",
            "Apply a peer's queued ban or lift here (operator, step-up)",
            None,
            operator(vec![
                ok(200, "{id, status, outcome}"),
                err(400, "invalid_request"),
                err(404, "review_not_found"),
                err(409, "invalid_transition"),
                err(403, "peer_not_approved: the peer is no longer active, or its bans are ignored"),
            ]),
        ),
        DOCS.op(
            "blacklist_review_reject",
            "Drop a peer's queued ban or lift (operator, step-up)",
            None,
            operator(vec![
                ok(200, "{id, status, outcome}"),
                err(400, "invalid_request"),
                err(404, "review_not_found"),
                err(409, "invalid_transition"),
            ]),
        ),
    ]
}

/// The federation routes.
pub fn routes(r: Router) -> Router {
    let [gossip, tick_doc, listed, accepted, rejected] = docs();
    r.route(
        Method::POST,
        "/mesh/federation/gossip",
        endpoint(|s, r| async move { receive(&s, r).await }),
        gossip,
    )
    .route(
        Method::POST,
        "/mesh/federation/tick",
        endpoint(|s, r| async move { tick_route(&s, r).await }),
        tick_doc,
    )
    .route(
        Method::GET,
        "/mesh/blacklist/reviews",
        endpoint(|s, r| async move { reviews(&s, r).await }),
        listed,
    )
    .route(
        Method::POST,
        "/mesh/blacklist/reviews/{id}/accept",
        endpoint(|s, r| async move { decide(&s, r, true).await }),
        accepted,
    )
    .route(
        Method::POST,
        "/mesh/blacklist/reviews/{id}/reject",
        endpoint(|s, r| async move { decide(&s, r, false).await }),
        rejected,
    )
}
