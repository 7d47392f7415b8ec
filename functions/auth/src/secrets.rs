//! Opaque secret tokens: generation, storage hashes and comparison.
//!
//! In scope: the random tokens we hand out (refresh, email, enrollment), their
//! at-rest form (blake3 hex; the tokens carry ≥ 256 bits of entropy, so a fast
//! unsalted hash is enough to make a stolen table useless) and constant-time
//! comparison of configured shared secrets. Out of scope: passwords (Argon2id,
//! in `password`) and signed tokens (the kernel's `tokens`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::Rng;

/// Random bytes in every opaque token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// A fresh opaque token, base64url without padding, with an optional prefix
/// that tells a human (and secret scanners) what it is.
pub fn new_token(rng: &dyn Rng, prefix: &str) -> String {
    let mut buf = [0u8; TOKEN_BYTES];
    rng.fill(&mut buf);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(buf))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Whether `token` has the shape of one of ours (bounded, base64url after the
/// prefix): anything else is refused before it reaches storage or HTML.
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|t| {
        t.len() == 43
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

pub use edgecoder_kernel::tokens::secret_matches as matches_secret;

pub use edgecoder_kernel::http::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Rng for Fixed {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(0xab);
        }
    }

    #[test]
    fn tokens_are_prefixed_base64url_of_256_bits() {
        let t = new_token(&Fixed, "ert_");
        assert!(well_formed(&t, "ert_"));
        assert!(!well_formed(&t, "ect_"));
        assert!(!well_formed("ert_<script>", "ert_"));
        assert_eq!(hash_token(&t).len(), 64);
        assert_ne!(hash_token(&t), hash_token("ert_other"));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(matches_secret("abc", Some("abc")));
        assert!(!matches_secret("abd", Some("abc")));
        assert!(!matches_secret("", None));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
