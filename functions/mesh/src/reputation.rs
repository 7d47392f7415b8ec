//! Node reputation: a score from outcomes this coordinator verified itself,
//! after the node's signature, with exponential decay; it thins the work a
//! low-scoring node gets and suspends, pending an operator's review, a node
//! that falls below a threshold.
//!
//! In scope: the events (a result accepted +2; a lease let lapse −5; a result
//! refused for its content −10: a digest that does not match, a report about
//! another model; a rate-limit hit −1, at most one a minute), the score
//! (50 plus each event's weight halved every `mesh_reputation_half_life_hours`,
//! good work counting for at most +50, clamped to 0–100; the newest 1,000
//! events of the last 30 days since the node's last decision, so an
//! operator's approval after a suspension starts it afresh), the
//! throttle (below `mesh_reputation_throttle_below` a pull gets work with
//! probability score / threshold), the automatic suspension (below
//! `mesh_reputation_suspend_below`: a `node-approval/v1` suspension by actor
//! `coordinator`, reason `reputation`, which an operator lifts by approving
//! the node again), and what operators see (`reputation` on nodes).
//!
//! Out of scope, on purpose: signature and replay failures. Anyone can send
//! a bad signature naming a node's key id, or replay a request it captured,
//! so counting them would let a stranger lower a node's score; they are
//! refused and audited instead. Peers' scores are not imported: a node that
//! moves between coordinators starts here at the neutral 50.

use edgecoder_kernel::{RequestContext, Services};
use edgecoder_proto::mesh::NodeStatus;
use serde_json::{Value as Json, json};

use crate::store::reputation as db;
use crate::{Error, Settings, authn};

/// The neutral score a node without history has.
pub const NEUTRAL: f64 = 50.0;
/// How far back events count (older ones are pruned).
const WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

/// What a node did, as verified here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A result the coordinator accepted.
    Accepted,
    /// A lease the node let lapse.
    LeaseExpired,
    /// A result refused for its content.
    ResultRefused,
    /// A request over the node's rate limit.
    RateLimited,
    /// A replica result that another replica's contradicts.
    ReplicaDisagreement,
}

impl Event {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Accepted => "accepted",
            Event::LeaseExpired => "lease_expired",
            Event::ResultRefused => "result_refused",
            Event::RateLimited => "rate_limited",
            Event::ReplicaDisagreement => "replica_disagreement",
        }
    }

    fn weight(kind: &str) -> f64 {
        match kind {
            "accepted" => 2.0,
            "lease_expired" => -5.0,
            "result_refused" => -10.0,
            "rate_limited" => -1.0,
            "replica_disagreement" => -10.0,
            _ => 0.0,
        }
    }
}

/// The score from `events` (kind, at) at `now`, with half-life `half_ms`.
/// Good work counts for at most the 50 points above neutral, so a node
/// cannot bank credit against a run of bad results.
pub fn score_of(events: &[(String, i64)], now: i64, half_ms: i64) -> f64 {
    let half = half_ms.max(1) as f64;
    let (good, bad) = events
        .iter()
        .map(|(k, at)| Event::weight(k) * 0.5f64.powf((now - at).max(0) as f64 / half))
        .fold(
            (0.0, 0.0),
            |(g, b), w| if w > 0.0 { (g + w, b) } else { (g, b + w) },
        );
    (NEUTRAL + f64::min(good, 100.0 - NEUTRAL) + bad).clamp(0.0, 100.0)
}

/// The node's events that count now: those of the window, and for an
/// active node only those since it was approved (an operator's approval
/// after a suspension starts it afresh).
async fn counted(s: &Services, node_id: &str) -> Result<Vec<(String, i64)>, Error> {
    let now = s.clock.now_ms();
    let active = authn::load_node(s, node_id)
        .await?
        .is_some_and(|n| n.status == NodeStatus::Active);
    let approved = if active {
        crate::store::nodes::decision(s.sql.as_ref(), node_id)
            .await?
            .at
            .unwrap_or(0)
    } else {
        0
    };
    db::events(s.sql.as_ref(), node_id, (now - WINDOW_MS).max(approved)).await
}

/// A node's score now, with its event counts.
pub async fn of(s: &Services, node_id: &str) -> Result<Json, Error> {
    let settings = Settings::of(s)?;
    let now = s.clock.now_ms();
    let events = counted(s, node_id).await?;
    let count = |k: &str| events.iter().filter(|(e, _)| e == k).count();
    let score = score_of(&events, now, settings.reputation_half_life_ms);
    Ok(json!({
        "score": (score * 10.0).round() / 10.0,
        "throttled_below": settings.reputation_throttle_below,
        "suspended_below": settings.reputation_suspend_below,
        "events_30d": {
            "accepted": count("accepted"),
            "lease_expired": count("lease_expired"),
            "result_refused": count("result_refused"),
            "rate_limited": count("rate_limited"),
        },
    }))
}

async fn score(s: &Services, node_id: &str) -> Result<f64, Error> {
    let now = s.clock.now_ms();
    let events = counted(s, node_id).await?;
    Ok(score_of(
        &events,
        now,
        Settings::of(s)?.reputation_half_life_ms,
    ))
}

/// [`record`], as a side effect that must not fail the request it rides
/// on: a failure is audited and dropped.
pub async fn note(s: &Services, ctx: &RequestContext, node_id: &str, event: Event) {
    if let Err(e) = record(s, ctx, node_id, event).await {
        let _ = edgecoder_kernel::audit::note(
            s,
            ctx,
            crate::models::COORDINATOR,
            "mesh.reputation.failed",
            Some(node_id),
            edgecoder_kernel::audit::Outcome::Failure,
            json!({"event": event.as_str(), "error": e.to_string()}),
        )
        .await;
    }
}

/// Records `event` for the node; after a bad one, a node that fell below
/// the threshold is suspended pending review.
pub async fn record(
    s: &Services,
    ctx: &RequestContext,
    node_id: &str,
    event: Event,
) -> Result<(), Error> {
    let now = s.clock.now_ms();
    let inserted = db::record(s.sql.as_ref(), node_id, event.as_str(), now).await?;
    if event == Event::Accepted || !inserted {
        return Ok(());
    }
    let settings = Settings::of(s)?;
    let score = score(s, node_id).await?;
    if score >= settings.reputation_suspend_below as f64 {
        return Ok(());
    }
    let Some(node) = authn::load_node(s, node_id).await? else {
        return Ok(());
    };
    if node.status != NodeStatus::Active {
        return Ok(());
    }
    let reason = format!(
        "reputation: score {score:.1} below {}",
        settings.reputation_suspend_below
    );
    match crate::nodes::apply_decision(
        s,
        ctx,
        &node,
        crate::nodes::Decide::Suspend,
        crate::models::COORDINATOR,
        Some(&reason),
    )
    .await
    {
        // Another request suspended it first.
        Ok(_) | Err(Error::InvalidTransition) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a pull by the node gets work: always at or above the throttle
/// threshold, below it with probability score / threshold.
pub async fn grants(s: &Services, node_id: &str) -> Result<bool, Error> {
    let threshold = Settings::of(s)?.reputation_throttle_below as f64;
    let score = score(s, node_id).await?;
    if score >= threshold {
        return Ok(true);
    }
    let mut b = [0u8; 2];
    s.rng.fill(&mut b);
    let draw = f64::from(u16::from_be_bytes(b)) / 65536.0;
    Ok(draw * threshold < score)
}

/// Forgets events older than the window.
pub async fn prune(s: &Services) -> Result<(), Error> {
    db::prune(s.sql.as_ref(), s.clock.now_ms() - WINDOW_MS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 24 * 3600 * 1000;

    fn ev(k: &str, at: i64) -> (String, i64) {
        (k.to_owned(), at)
    }

    #[test]
    fn scores_start_neutral_move_with_events_and_decay_back() {
        let now = 100 * H;
        assert_eq!(score_of(&[], now, H), NEUTRAL);
        let fresh = vec![ev("result_refused", now); 3];
        assert_eq!(score_of(&fresh, now, H), 20.0);
        // A day later half of it is forgiven, a week later nearly all.
        assert_eq!(score_of(&fresh, now + H, H), 35.0);
        assert!(score_of(&fresh, now + 7 * H, H) > 49.0);
        // Good work counts, but a score never leaves 0–100.
        assert_eq!(score_of(&vec![ev("accepted", now); 40], now, H), 100.0);
        assert_eq!(score_of(&vec![ev("result_refused", now); 9], now, H), 0.0);
        // Banked good work does not cover a run of bad results.
        let mut banked = vec![ev("accepted", now); 500];
        banked.extend(vec![ev("result_refused", now); 5]);
        assert_eq!(score_of(&banked, now, H), 50.0);
        // Unknown kinds weigh nothing.
        assert_eq!(score_of(&[ev("mystery", now)], now, H), NEUTRAL);
    }
}
