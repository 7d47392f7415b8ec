//! The model supply chain on the wire: what the coordinator tells a GPU host
//! about models (the family's source policy and the release assigned to the
//! host) and what the host reports back (per-version verification and
//! health).
//!
//! In scope: the messages, the failure codes a host's resolver reports, and
//! the one origin rule both sides apply (https, or a local `file:///`
//! directory for tests and air-gapped hosts; a source is allowed only under
//! an origin the policy lists). Out of scope: signatures and manifests
//! ([`crate::model`]), fetching and hashing (the host), rollout decisions
//! (the coordinator).
//!
//! ```text
//! heartbeat ──▶ {…, model_status: [ModelStatus]}
//!           ◀── {…, models: {policy_version, assignments: [Assignment]}}
//! ```

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::model::{Envelope, SigningPolicy};

/// Longest source URL or origin.
pub const MAX_URL: usize = 512;
/// Most origins one policy lists.
pub const MAX_ORIGINS: usize = 16;
/// Most publisher keys one policy lists.
pub const MAX_KEYS: usize = 16;

/// A model family's policy: who signs its releases, where hosts may fetch
/// them from, how large they may be, and whether it is served at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// The family (the model name without its version).
    pub family: String,
    /// Publisher keys, SEC1 points in base64url.
    pub keys: Vec<String>,
    /// Signatures by distinct listed keys a release needs.
    pub threshold: u32,
    /// Where releases may be fetched from.
    pub origins: Vec<String>,
    /// Largest release (all files together), bytes.
    pub max_bytes: u64,
    /// Whether the family may be served at all.
    pub allowed: bool,
    /// The coordinator's model-policy version this was read at.
    pub version: u64,
}

impl SourcePolicy {
    /// The signing part, with the keys parsed.
    pub fn signing(&self) -> Result<SigningPolicy, Error> {
        let keys = self
            .keys
            .iter()
            .map(|k| crate::keys::parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SigningPolicy {
            keys,
            threshold: usize::try_from(self.threshold).unwrap_or(usize::MAX),
        })
    }

    /// The one rule both the coordinator (registering a release) and the
    /// host (before fetching a byte) apply: the family is allowed, the
    /// source lies under an allowed origin, k of n signatures by the
    /// policy's keys hold, the manifest is unexpired, of this family (and of
    /// `model` when given), and no larger than the cap.
    pub fn check_release(
        &self,
        envelope: &Envelope,
        source: &str,
        now_secs: i64,
        model: Option<&str>,
    ) -> Result<crate::model::Verified, (Failure, String)> {
        if !self.allowed {
            return Err((
                Failure::ModelNotApproved,
                "the family's policy does not allow it to be served".into(),
            ));
        }
        self.allows_source(source).map_err(|f| {
            (
                f,
                format!(
                    "{source} is not https (or a local directory) under an origin the policy lists"
                ),
            )
        })?;
        let signing = self
            .signing()
            .map_err(|e| (Failure::SignatureInvalid, format!("the policy's keys: {e}")))?;
        let bytes = serde_json::to_vec(envelope).unwrap_or_default();
        let verified = crate::model::verify(&bytes, &signing, now_secs, model).map_err(|e| {
            (
                Failure::of(&e),
                format!("the envelope fails the family's policy: {e}"),
            )
        })?;
        if verified.manifest.name != self.family {
            return Err((
                Failure::ModelNotApproved,
                "the manifest is another family's release".into(),
            ));
        }
        // Saturating: sizes are the publisher's claims, and a wrapped sum
        // would pass any cap.
        let total = verified
            .manifest
            .files
            .iter()
            .fold(0u64, |t, f| t.saturating_add(f.size));
        if total > self.max_bytes {
            return Err((
                Failure::ModelNotApproved,
                format!(
                    "the release is {total} bytes; the policy allows {}",
                    self.max_bytes
                ),
            ));
        }
        Ok(verified)
    }

    /// Whether `source` lies under one of the policy's origins.
    pub fn allows_source(&self, source: &str) -> Result<(), Failure> {
        check_url(source)?;
        let under = |origin: &str| {
            let origin = origin.trim_end_matches('/');
            source == origin
                || source
                    .strip_prefix(origin)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if self
            .origins
            .iter()
            .any(|o| check_url(o).is_ok() && under(o))
        {
            Ok(())
        } else {
            Err(Failure::SourceNotAllowed)
        }
    }
}

/// Whether `url` is an origin a release may come from at all: `https://`
/// with a host, or an absolute `file:///` path; plain characters only, no
/// credentials, query, fragment, empty or dot segments (so that a prefix
/// check means what it says).
pub fn check_url(url: &str) -> Result<(), Failure> {
    let path = if let Some(r) = url.strip_prefix("https://") {
        let (host, path) = r.split_at(r.find('/').unwrap_or(r.len()));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !host_ok {
            return Err(Failure::SourceNotAllowed);
        }
        path
    } else if let Some(r) = url.strip_prefix("file://") {
        if !r.starts_with('/') {
            return Err(Failure::SourceNotAllowed);
        }
        r
    } else {
        return Err(Failure::SourceNotAllowed);
    };
    let plain = url.len() <= MAX_URL
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'@'))
        && path
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if plain {
        Ok(())
    } else {
        Err(Failure::SourceNotAllowed)
    }
}

/// Why a host did not serve a release.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The family is not allowed, the release is not the one assigned, or the
    /// manifest is not an acceptable release of it.
    ModelNotApproved,
    /// Too few valid signatures by the policy's keys.
    SignatureInvalid,
    /// A file's size or blake3 digest differs from the manifest, a file is
    /// missing, or the release is over the size cap.
    DigestMismatch,
    /// The manifest's expiry has passed.
    ManifestExpired,
    /// The source is not https (or a local directory) under an allowed origin.
    SourceNotAllowed,
    /// The files could not be fetched (retried on the next heartbeat).
    FetchFailed,
    /// A code this side does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

impl Failure {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ModelNotApproved => "model_not_approved",
            Failure::SignatureInvalid => "signature_invalid",
            Failure::DigestMismatch => "digest_mismatch",
            Failure::ManifestExpired => "manifest_expired",
            Failure::SourceNotAllowed => "source_not_allowed",
            Failure::FetchFailed => "fetch_failed",
            Failure::Unknown => "unknown",
        }
    }

    /// The failure a manifest check's error stands for.
    pub fn of(e: &Error) -> Failure {
        match e {
            Error::ManifestExpired => Failure::ManifestExpired,
            Error::NotApproved(_) => Failure::ModelNotApproved,
            _ => Failure::SignatureInvalid,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release assigned to a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// `name@version`.
    pub model: String,
    /// `blake3:<hex>` of the signed manifest (the release's identity).
    pub release_digest: String,
    /// The release's DSSE envelope, as the publisher signed it.
    pub envelope: Envelope,
    /// Where its files are: `{source}/{path}` for each manifest path.
    pub source: String,
    /// The family's policy the host checks the release against.
    pub policy: SourcePolicy,
    /// The rollout that put the host on this version, if one is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
}

/// The model part of a heartbeat's answer (GPU hosts).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Assignments {
    /// The coordinator's model-policy version.
    pub policy_version: u64,
    /// What the host should serve, one release per family.
    pub assignments: Vec<Assignment>,
}

/// Where a host stands with one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Assigned, not verified yet.
    Pending,
    /// Verified and loadable.
    Verified,
    /// Refused; `failure` says why.
    Failed,
}

/// A host's report on one release, in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStatus {
    /// `name@version`.
    pub model: String,
    /// The release digest the report is about.
    pub release_digest: String,
    /// Verification state.
    pub state: ModelState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Requests served on this version since the host started.
    #[serde(default)]
    pub requests: u64,
    /// Of those, how many failed.
    #[serde(default)]
    pub errors: u64,
    /// 99th percentile latency, milliseconds (an upper bucket bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> SourcePolicy {
        SourcePolicy {
            family: "tiny-byte".into(),
            keys: Vec::new(),
            threshold: 1,
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            max_bytes: 1 << 20,
            allowed: true,
            version: 1,
        }
    }

    #[test]
    fn sources_must_be_https_or_local_under_an_allowed_origin() {
        let p = policy(&["https://models.example.com/tiny", "file:///srv/models/"]);
        for ok in [
            "https://models.example.com/tiny",
            "https://models.example.com/tiny/1",
            "file:///srv/models/tiny-byte@1",
        ] {
            assert_eq!(p.allows_source(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://models.example.com/tiny/1",
            "https://models.example.com/tinyx/1",
            "https://models.example.com/tiny/../other",
            "https://models.example.com.evil.net/tiny",
            "https://user@models.example.com/tiny/1",
            "https://models.example.com/tiny/1?x=y",
            "file:///srv/models/../../etc",
            "file://srv/models/x",
            "ftp://models.example.com/tiny",
            "https:///tiny",
        ] {
            assert_eq!(
                p.allows_source(bad),
                Err(Failure::SourceNotAllowed),
                "{bad}"
            );
        }
        // An http origin in a policy allows nothing.
        let p = policy(&["http://models.example.com"]);
        assert!(p.allows_source("http://models.example.com/x").is_err());
    }

    #[test]
    fn failure_codes_are_stable() {
        let json = serde_json::to_string(&Failure::DigestMismatch).expect("json");
        assert_eq!(json, "\"digest_mismatch\"");
        let back: Failure = serde_json::from_str("\"something_new\"").expect("json");
        assert_eq!(back, Failure::Unknown);
    }
}
