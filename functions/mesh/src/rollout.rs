//! Staged rollout, the pure part: stages and gates as operators write them,
//! which hosts a stage covers, and what a stage's health says.
//!
//! In scope: validating stages (a canary of a few pinned hosts first, then
//! non-decreasing percentages ending at 100) and gates; sticky placement (a
//! host's position in a rollout is a hash of the rollout id and the host id,
//! so it never changes, and a stage at p % covers exactly the hosts whose
//! position is below p %: growing the host set moves no existing host); the
//! verdict on a stage's health. Out of scope: storage, the ledger and the
//! routes ([`crate::models`]).

use serde::{Deserialize, Serialize};

use crate::Error;

/// Most stages one rollout may have.
pub const MAX_STAGES: usize = 8;
/// Requests a host must have served before its own error rate is judged.
pub const PER_HOST_MIN_REQUESTS: u64 = 20;
/// Most hosts a canary stage may pin.
pub const MAX_CANARY_HOSTS: u32 = 100;

/// One stage: a canary of `hosts` pinned hosts, or `percent` of all hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// A label for operators (`canary`, `10%`…).
    pub name: String,
    /// Pinned hosts (first stage only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<u32>,
    /// Share of the family's hosts, 0 < p ≤ 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// What a stage must show before the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Highest share of failed requests, 0–1.
    #[serde(default = "default_error_rate")]
    pub max_error_rate: f64,
    /// Highest p99 latency any host in the stage may report, ms.
    #[serde(default = "default_p99")]
    pub max_p99_ms: u64,
    /// Requests the stage must have served before it can be judged healthy.
    #[serde(default)]
    pub min_requests: u64,
    /// Hosts in the stage that must have verified the release.
    #[serde(default = "one")]
    pub min_verified_hosts: u32,
    /// Share of the stage's live hosts that must have verified it, 0–1.
    #[serde(default = "default_share")]
    pub min_verified_share: f64,
    /// How long the gate must hold, seconds from the stage's start.
    #[serde(default = "default_min_secs")]
    pub min_stage_secs: u64,
}

fn default_error_rate() -> f64 {
    0.05
}
fn default_p99() -> u64 {
    10_000
}
fn one() -> u32 {
    1
}
fn default_min_secs() -> u64 {
    300
}
fn default_share() -> f64 {
    0.9
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_error_rate: default_error_rate(),
            max_p99_ms: default_p99(),
            min_requests: 0,
            min_verified_hosts: one(),
            min_verified_share: default_share(),
            min_stage_secs: default_min_secs(),
        }
    }
}

fn invalid(m: &str) -> Error {
    edgecoder_kernel::Error::InvalidRequest(m.to_owned()).into()
}

/// Checks a rollout's stages and gates.
pub fn validate(stages: &[Stage], gates: &Gates) -> Result<(), Error> {
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return Err(invalid("stages holds 1 to 8 stages."));
    }
    let mut last = 0.0_f64;
    for (i, st) in stages.iter().enumerate() {
        if st.name.is_empty() || st.name.len() > 32 || st.name.chars().any(char::is_control) {
            return Err(invalid("a stage's name is 1 to 32 printable characters."));
        }
        match (st.hosts, st.percent) {
            (Some(n), None) if i == 0 && (1..=MAX_CANARY_HOSTS).contains(&n) => {}
            (Some(_), None) => {
                return Err(invalid(
                    "only the first stage pins hosts (1 to 100 of them); later stages give a percent.",
                ));
            }
            (None, Some(p)) if p.is_finite() && p > 0.0 && p <= 100.0 && p >= last => last = p,
            _ => {
                return Err(invalid(
                    "each stage gives hosts (the first) or a percent above 0 and at most 100, never falling.",
                ));
            }
        }
    }
    if stages.last().and_then(|s| s.percent) != Some(100.0) {
        return Err(invalid("the last stage covers 100 percent of hosts."));
    }
    let rate_ok = gates.max_error_rate.is_finite() && (0.0..=1.0).contains(&gates.max_error_rate);
    let share_ok =
        gates.min_verified_share.is_finite() && (0.0..=1.0).contains(&gates.min_verified_share);
    if !rate_ok
        || !share_ok
        || gates.max_p99_ms == 0
        || gates.max_p99_ms > 3_600_000
        || gates.min_requests > 1_000_000_000
        || gates.min_verified_hosts > MAX_CANARY_HOSTS
        || gates.min_stage_secs > 30 * 86_400
    {
        return Err(invalid(
            "gates: max_error_rate and min_verified_share 0 to 1, max_p99_ms 1 to 3600000, min_verified_hosts at most 100, min_stage_secs at most 30 days.",
        ));
    }
    Ok(())
}

/// A host's fixed position in a rollout, uniform over `u64`.
pub fn position(rollout_id: &str, node_id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"edgecoder.dev/rollout-position/v1\0");
    h.update(rollout_id.as_bytes());
    h.update(b"\0");
    h.update(node_id.as_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// Whether a stage at `percent` covers a host at `position`.
pub fn covers(percent: f64, position: u64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    // 2^64 · p/100, computed in f64: the rounding moves the boundary by
    // far less than one host in any real fleet.
    let bound = (percent / 100.0) * 18_446_744_073_709_551_616.0;
    (position as f64) < bound
}

/// Whether the host is on the new version at stage `stage`: pinned as a
/// canary, or covered by the stage's percent. Stages never fall, so a host
/// once in stays in.
pub fn in_stage(
    stages: &[Stage],
    stage: usize,
    canary: &[String],
    rollout_id: &str,
    node_id: &str,
) -> bool {
    if canary.iter().any(|c| c == node_id) {
        return true;
    }
    stages
        .get(stage)
        .and_then(|s| s.percent)
        .is_some_and(|p| covers(p, position(rollout_id, node_id)))
}

/// What the hosts in a stage report about the new release.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    /// Hosts in the stage.
    pub hosts: u32,
    /// Of those, how many verified the release.
    pub verified: u32,
    /// Hosts that refused it, with the code.
    pub failed: Vec<(String, String)>,
    /// Requests served on the release.
    pub requests: u64,
    /// Of those, how many failed.
    pub errors: u64,
    /// The highest p99 any host reports, ms.
    pub p99_ms: Option<u64>,
    /// Each reporting host's (id, requests, errors).
    pub per_host: Vec<(String, u64, u64)>,
}

impl Health {
    /// errors / requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A stage's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The gate holds: the next stage may start.
    Pass,
    /// Not yet: why.
    Wait(String),
    /// The gate failed: why.
    Fail(String),
}

/// Judges a stage's health against the gates, `age_secs` after it began.
/// `safety_only` (an operator advancing by hand) skips the waiting gates
/// (time, request count) but never a failure or the verified-hosts count.
pub fn judge(gates: &Gates, h: &Health, age_secs: u64, safety_only: bool) -> Verdict {
    if let Some((node, code)) = h.failed.first() {
        return Verdict::Fail(format!("host {node} refused the release: {code}"));
    }
    let judged = h.requests > 0 && h.requests >= gates.min_requests;
    if judged && h.error_rate() > gates.max_error_rate {
        return Verdict::Fail(format!(
            "error rate {:.4} is above {}",
            h.error_rate(),
            gates.max_error_rate
        ));
    }
    // Each host on its own too, over its share of the minimum (and never
    // fewer than PER_HOST_MIN_REQUESTS, so one unlucky request is not a
    // verdict): one host's many good requests (or claims of them) cannot
    // hide another's errors.
    let own_min = (gates.min_requests / u64::from(h.hosts.max(1))).max(PER_HOST_MIN_REQUESTS);
    for (node, requests, errors) in &h.per_host {
        if *requests >= own_min && *errors as f64 / *requests as f64 > gates.max_error_rate {
            return Verdict::Fail(format!(
                "host {node}: error rate {:.4} is above {}",
                *errors as f64 / *requests as f64,
                gates.max_error_rate
            ));
        }
    }
    if judged && h.p99_ms.is_some_and(|p| p > gates.max_p99_ms) {
        return Verdict::Fail(format!(
            "p99 latency {} ms is above {} ms",
            h.p99_ms.unwrap_or_default(),
            gates.max_p99_ms
        ));
    }
    if h.verified < gates.min_verified_hosts {
        return Verdict::Wait(format!(
            "{} of {} required hosts verified the release",
            h.verified, gates.min_verified_hosts
        ));
    }
    if safety_only {
        // An operator may move on with some hosts still fetching.
        return Verdict::Pass;
    }
    // With a little slack, so that exactly the share (11 of 20 at 55 %)
    // passes whatever the floating point.
    if h.hosts > 0 && f64::from(h.verified) / f64::from(h.hosts) + 1e-9 < gates.min_verified_share {
        return Verdict::Wait(format!(
            "{} of the stage's {} hosts verified the release; {} % are required",
            h.verified,
            h.hosts,
            gates.min_verified_share * 100.0
        ));
    }
    if h.requests < gates.min_requests {
        return Verdict::Wait(format!(
            "{} of {} required requests served",
            h.requests, gates.min_requests
        ));
    }
    if age_secs < gates.min_stage_secs {
        return Verdict::Wait(format!(
            "the gate must hold for {} s; {} s so far",
            gates.min_stage_secs, age_secs
        ));
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages() -> Vec<Stage> {
        let pct = |name: &str, p: f64| Stage {
            name: name.into(),
            hosts: None,
            percent: Some(p),
        };
        vec![
            Stage {
                name: "canary".into(),
                hosts: Some(1),
                percent: None,
            },
            pct("10%", 10.0),
            pct("50%", 50.0),
            pct("all", 100.0),
        ]
    }

    #[test]
    fn stages_are_a_canary_then_rising_percents_to_100() {
        let g = Gates::default();
        assert!(validate(&stages(), &g).is_ok());
        let mut s = stages();
        s[2].percent = Some(5.0);
        assert!(validate(&s, &g).is_err(), "falling");
        let mut s = stages();
        s.pop();
        assert!(validate(&s, &g).is_err(), "not ending at 100");
        let mut s = stages();
        s[1].hosts = Some(3);
        assert!(validate(&s, &g).is_err(), "pinned hosts after the canary");
        let mut s = stages();
        s[1].percent = Some(f64::NAN);
        assert!(validate(&s, &g).is_err(), "NaN");
        assert!(validate(&[], &g).is_err());
        let bad = Gates {
            max_error_rate: 2.0,
            ..Gates::default()
        };
        assert!(validate(&stages(), &bad).is_err());
    }

    /// Placement is sticky: adding hosts moves none of the existing ones,
    /// and a stage covers about its share.
    #[test]
    fn placement_is_sticky_as_the_host_set_grows() {
        let id = "rollout-1";
        let hosts: Vec<String> = (0..2000).map(|i| format!("gpu-{i}")).collect();
        let before: Vec<bool> = hosts[..1000]
            .iter()
            .map(|h| in_stage(&stages(), 1, &[], id, h))
            .collect();
        let after: Vec<bool> = hosts
            .iter()
            .map(|h| in_stage(&stages(), 1, &[], id, h))
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 0, "hosts that changed version when 1000 were added");
        let share = after.iter().filter(|x| **x).count();
        eprintln!(
            "10 % stage: {share} of 2000 hosts; {moved} of the first 1000 moved when 1000 were added"
        );
        assert!(
            (120..=280).contains(&share),
            "10 % of 2000 is ~200: {share}"
        );
        // Every host in at 10 % is in at 50 %, and everyone at 100 %.
        for h in &hosts {
            if in_stage(&stages(), 1, &[], id, h) {
                assert!(in_stage(&stages(), 2, &[], id, h));
            }
            assert!(in_stage(&stages(), 3, &[], id, h));
        }
        // Another rollout places hosts independently.
        let other = hosts
            .iter()
            .filter(|h| {
                in_stage(&stages(), 1, &[], "rollout-2", h) != in_stage(&stages(), 1, &[], id, h)
            })
            .count();
        assert!(other > 100, "{other}");
        // A pinned canary is in at every stage.
        let pinned = vec!["gpu-7".to_owned()];
        assert!((0..4).all(|s| in_stage(&stages(), s, &pinned, id, "gpu-7")));
    }

    #[test]
    fn the_verdict_follows_the_gates() {
        let g = Gates {
            max_error_rate: 0.1,
            max_p99_ms: 500,
            min_requests: 10,
            min_verified_hosts: 1,
            min_verified_share: 0.5,
            min_stage_secs: 60,
        };
        let healthy = Health {
            hosts: 1,
            verified: 1,
            requests: 20,
            errors: 1,
            p99_ms: Some(100),
            ..Health::default()
        };
        assert_eq!(judge(&g, &healthy, 61, false), Verdict::Pass);
        assert!(matches!(judge(&g, &healthy, 10, false), Verdict::Wait(_)));
        assert_eq!(judge(&g, &healthy, 10, true), Verdict::Pass);
        let few = Health {
            requests: 5,
            errors: 0,
            ..healthy.clone()
        };
        assert!(matches!(judge(&g, &few, 61, false), Verdict::Wait(_)));
        let erring = Health {
            errors: 5,
            ..healthy.clone()
        };
        assert!(matches!(judge(&g, &erring, 61, false), Verdict::Fail(_)));
        let slow = Health {
            p99_ms: Some(900),
            ..healthy.clone()
        };
        assert!(matches!(judge(&g, &slow, 61, true), Verdict::Fail(_)));
        let unverified = Health {
            verified: 0,
            ..healthy.clone()
        };
        assert!(matches!(judge(&g, &unverified, 61, true), Verdict::Wait(_)));
        // Half the stage must have verified it (an operator may go on).
        let few_verified = Health {
            hosts: 3,
            ..healthy.clone()
        };
        assert!(matches!(
            judge(&g, &few_verified, 61, false),
            Verdict::Wait(_)
        ));
        assert_eq!(judge(&g, &few_verified, 61, true), Verdict::Pass);
        let exactly = Gates {
            min_verified_share: 0.55,
            ..g.clone()
        };
        let eleven = Health {
            hosts: 20,
            verified: 11,
            ..healthy.clone()
        };
        assert_eq!(judge(&exactly, &eleven, 61, false), Verdict::Pass);
        // One failed request on a host is not yet its error rate.
        let lenient = Gates {
            min_requests: 0,
            ..g.clone()
        };
        let one_bad = Health {
            requests: 100,
            errors: 1,
            per_host: vec![("a".into(), 1, 1), ("b".into(), 99, 0)],
            hosts: 2,
            verified: 2,
            ..healthy.clone()
        };
        assert_eq!(judge(&lenient, &one_bad, 61, false), Verdict::Pass);
        // One host's huge (claimed) success does not hide another's errors.
        let hidden = Health {
            hosts: 2,
            verified: 2,
            requests: 1_000_040,
            errors: 20,
            per_host: vec![("a".into(), 1_000_000, 0), ("b".into(), 40, 20)],
            ..healthy.clone()
        };
        assert!(matches!(judge(&g, &hidden, 61, false), Verdict::Fail(m) if m.contains("host b")));
        let refused = Health {
            failed: vec![("gpu-1".into(), "digest_mismatch".into())],
            ..healthy
        };
        assert!(
            matches!(judge(&g, &refused, 0, true), Verdict::Fail(m) if m.contains("digest_mismatch"))
        );
    }
}
