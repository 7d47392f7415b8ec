//! Model releases: the signed manifest a publisher makes over a model's
//! files, as a DSSE envelope (github.com/secure-systems-lab/dsse) signed
//! with P-256 by one or more publisher keys, and its verification against a
//! policy's keys and threshold.
//!
//! In scope: the manifest (name, version, format, every file's path, size
//! and blake3 digest, created and expiry times, the publisher's key id), its
//! canonical bytes, DSSE's pre-authentication encoding (PAE), signing, and
//! verifying k of n signatures, expiry and the model's name. Signatures are
//! ECDSA P-256 SHA-256 over PAE, DER-encoded, as stock DSSE libraries make
//! them (e.g. Python's securesystemslib); the `keyid` is our short key id.
//!
//! Out of scope: reading or hashing files (the CLI and the GPU host's
//! resolver stream them against the manifest), where policies and keys are
//! kept (the coordinator), and rollout.
//!
//! ```text
//! {"payloadType": PAYLOAD_TYPE, "payload": b64(manifest JSON),
//!  "signatures": [{"keyid": "<16 hex>", "sig": b64(DER ECDSA over PAE)}]}
//! PAE = "DSSEv1" SP len(type) SP type SP len(payload) SP payload
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Error;
pub use crate::dsse::{Envelope, EnvelopeSignature, pae};
use crate::inference::valid_model_name;
use crate::keys::key_id;

/// The DSSE payload type of a v1 model manifest.
pub const PAYLOAD_TYPE: &str = "application/vnd.edgecoder.model-manifest.v1+json";
/// Largest envelope read.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Most files in one release.
pub const MAX_FILES: usize = 64;
/// Most signatures on one envelope.
pub const MAX_SIGNATURES: usize = 16;
/// How far in the future `created_at` may be (clock skew), seconds.
pub const CREATED_SKEW_SECS: i64 = 300;

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path inside the model's directory (`/`-separated plain names).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `blake3:<hex>`.
    pub digest: String,
}

/// A model release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name (lowercase letters, digits, `._-`).
    pub name: String,
    /// Version.
    pub version: String,
    /// Graph encoding (`onnx`).
    pub format: String,
    /// Every file, sorted by path: the graph, tokenizer and config files.
    pub files: Vec<ManifestFile>,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// Seconds since the Unix epoch; not valid from then on.
    pub expires_at: i64,
    /// The key id of the publisher key that made it.
    pub publisher: String,
}

/// Whether `p` is a relative path of plain names: no `..`, no absolute
/// path, no empty or hidden component.
pub fn valid_file_path(p: &str) -> bool {
    p.len() <= 200
        && p.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

impl ModelManifest {
    /// `name@version`.
    pub fn model(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The shape checks every reader applies.
    pub fn check(&self) -> Result<(), Error> {
        if !valid_model_name(&self.model()) {
            return Err(Error::NotApproved("the manifest's name@version is invalid"));
        }
        if self.format != "onnx" {
            return Err(Error::NotApproved("only onnx models are accepted"));
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(Error::NotApproved("a manifest lists 1 to 64 files"));
        }
        let sorted = self.files.windows(2).all(|w| w[0].path < w[1].path);
        if !sorted {
            return Err(Error::NotApproved(
                "files must be sorted by path, without repeats",
            ));
        }
        for f in &self.files {
            let hex = f.digest.strip_prefix("blake3:").unwrap_or_default();
            if !valid_file_path(&f.path)
                || hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(Error::NotApproved("a file entry has a bad path or digest"));
            }
        }
        if self.expires_at <= self.created_at {
            return Err(Error::NotApproved("expires_at must be after created_at"));
        }
        Ok(())
    }

    /// The canonical bytes that are signed: this struct's JSON, fields in
    /// declaration order, files sorted, no whitespace.
    pub fn canonical(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.files.sort_by(|a, b| a.path.cmp(&b.path));
        serde_json::to_vec(&m).unwrap_or_default()
    }
}

/// Signs `manifest` with every key in `keys`.
pub fn sign(manifest: &ModelManifest, keys: &[&SigningKey]) -> Envelope {
    crate::dsse::seal(PAYLOAD_TYPE, &manifest.canonical(), keys)
}

/// Who may sign a model family, and how many of them must.
#[derive(Debug, Clone)]
pub struct SigningPolicy {
    /// The publisher keys.
    pub keys: Vec<VerifyingKey>,
    /// Signatures by distinct keys required (1 to `keys.len()`).
    pub threshold: usize,
}

/// A verified release: the manifest and the key ids whose signatures held.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The manifest.
    pub manifest: ModelManifest,
    /// `blake3:<hex>` of the signed payload (the release's identity).
    pub digest: String,
    /// Key ids with a valid signature.
    pub signers: Vec<String>,
}

/// Verifies the envelope's bytes against `policy` at `now` (seconds), and
/// that it is the release of `model` (`name@version`) when one is given.
pub fn verify(
    envelope: &[u8],
    policy: &SigningPolicy,
    now: i64,
    model: Option<&str>,
) -> Result<Verified, Error> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(Error::Malformed("the envelope is too large"));
    }
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|_| Error::Malformed("not a DSSE envelope"))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(Error::Malformed("not a model manifest envelope"));
    }
    if env.signatures.len() > MAX_SIGNATURES {
        return Err(Error::Malformed("too many signatures"));
    }
    if policy.threshold == 0 || policy.threshold > policy.keys.len() {
        return Err(Error::NotApproved("the policy's threshold cannot be met"));
    }
    let payload = STANDARD
        .decode(env.payload.as_bytes())
        .map_err(|_| Error::Malformed("the payload is not base64"))?;
    let message = pae(&env.payload_type, &payload);
    let mut signers: Vec<String> = Vec::new();
    for s in &env.signatures {
        let Some(key) = policy.keys.iter().find(|k| key_id(k) == s.keyid) else {
            continue;
        };
        let ok = STANDARD
            .decode(s.sig.as_bytes())
            .ok()
            .and_then(|der| DerSignature::from_bytes(&der).ok())
            .is_some_and(|sig| key.verify(&message, &sig).is_ok());
        if ok && !signers.contains(&s.keyid) {
            signers.push(s.keyid.clone());
        }
    }
    if signers.len() < policy.threshold {
        return Err(Error::Invalid);
    }
    let manifest: ModelManifest = serde_json::from_slice(&payload)
        .map_err(|_| Error::NotApproved("the payload is not a model manifest"))?;
    manifest.check()?;
    if model.is_some_and(|m| m != manifest.model()) {
        return Err(Error::NotApproved(
            "the manifest is another model's release",
        ));
    }
    if !signers.contains(&manifest.publisher) {
        return Err(Error::NotApproved(
            "the publisher named in the manifest did not sign it",
        ));
    }
    if now >= manifest.expires_at {
        return Err(Error::ManifestExpired);
    }
    if manifest.created_at > now + CREATED_SKEW_SECS {
        return Err(Error::NotApproved("the manifest was created in the future"));
    }
    Ok(Verified {
        digest: format!("blake3:{}", blake3::hash(&payload).to_hex()),
        manifest,
        signers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_slice(&[n; 32]).expect("key")
    }

    fn manifest(publisher: &SigningKey) -> ModelManifest {
        ModelManifest {
            name: "tiny-byte".into(),
            version: "1".into(),
            format: "onnx".into(),
            files: vec![ManifestFile {
                path: "model.onnx".into(),
                size: 3,
                digest: format!("blake3:{}", blake3::hash(b"abc").to_hex()),
            }],
            created_at: 1_000,
            expires_at: 2_000,
            publisher: key_id(publisher.verifying_key()),
        }
    }

    fn policy(keys: &[&SigningKey], threshold: usize) -> SigningPolicy {
        SigningPolicy {
            keys: keys.iter().map(|k| *k.verifying_key()).collect(),
            threshold,
        }
    }

    #[test]
    fn pae_matches_the_dsse_specification() {
        // The example in DSSE's protocol.md.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn k_of_n_signatures_are_required() {
        let (a, b, c) = (key(1), key(2), key(3));
        let env = serde_json::to_vec(&sign(&manifest(&a), &[&a, &b])).expect("json");
        let ok =
            verify(&env, &policy(&[&a, &b, &c], 2), 1_500, Some("tiny-byte@1")).expect("2 of 3");
        assert_eq!(ok.signers.len(), 2);
        // Below threshold, and signed by a key the policy does not hold.
        assert_eq!(
            verify(&env, &policy(&[&a, &b, &c], 3), 1_500, None).err(),
            Some(Error::Invalid)
        );
        let stranger = serde_json::to_vec(&sign(&manifest(&c), &[&c])).expect("json");
        assert_eq!(
            verify(&stranger, &policy(&[&a, &b], 1), 1_500, None).err(),
            Some(Error::Invalid)
        );
        // One key signing twice counts once.
        let twice = serde_json::to_vec(&sign(&manifest(&a), &[&a, &a])).expect("json");
        assert_eq!(
            verify(&twice, &policy(&[&a, &b], 2), 1_500, None).err(),
            Some(Error::Invalid)
        );
    }

    #[test]
    fn expired_renamed_or_altered_manifests_are_refused() {
        let a = key(1);
        let env = sign(&manifest(&a), &[&a]);
        let bytes = serde_json::to_vec(&env).expect("json");
        let p = policy(&[&a], 1);
        assert_eq!(
            verify(&bytes, &p, 2_000, None).err(),
            Some(Error::ManifestExpired)
        );
        assert!(matches!(
            verify(&bytes, &p, 1_500, Some("tiny-byte@2")),
            Err(Error::NotApproved(_))
        ));
        // A payload changed after signing.
        let mut changed = manifest(&a);
        changed.files[0].size = 4;
        let mut forged = env.clone();
        forged.payload = STANDARD.encode(changed.canonical());
        let forged = serde_json::to_vec(&forged).expect("json");
        assert_eq!(verify(&forged, &p, 1_500, None).err(), Some(Error::Invalid));
        // Another payload type under the same signature.
        let mut retyped = env;
        retyped.payload_type = "application/json".into();
        let retyped = serde_json::to_vec(&retyped).expect("json");
        assert!(matches!(
            verify(&retyped, &p, 1_500, None),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn file_paths_cannot_leave_the_model_directory() {
        for ok in ["model.onnx", "tokenizer/vocab.json"] {
            assert!(valid_file_path(ok), "{ok}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "a//b",
            ".hidden",
            "a/../b",
            "a\\b",
            "",
        ] {
            assert!(!valid_file_path(bad), "{bad}");
        }
    }
}
