//! Passwords and email addresses: the policy, Argon2id hashing, and the
//! normalised form accounts are keyed by.
//!
//! In scope: NIST SP 800-63B-style policy (at least 12 characters, at most
//! 256 bytes, not the email's local part, not a commonly used or breached
//! password — the list in `data/common-passwords.txt`, also with digits or
//! symbols around a common word — and not a repetitive or sequential string;
//! no composition rules), Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1)
//! in PHC string form with salts from the kernel's `Rng` port, verification
//! that reports when stored parameters are older than the current ones
//! (rehash on login), a dummy verification with the same cost for unknown
//! accounts (no timing oracle), and email normalisation. Out of scope:
//! storage, rate limits and the routes that use these.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use edgecoder_kernel::Rng;

use crate::Error;

/// Fewest characters in a password.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Most bytes in a password (bounds the hashing cost of hostile input).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Argon2id memory in KiB (19 MiB, OWASP's minimum).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;

/// Longest email address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

fn argon2() -> Result<Argon2<'static>, Error> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .map_err(|e| Error::Hashing(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Commonly used passwords, lowercased and sorted (see
/// `scripts/gen-common-passwords.sh` for where they come from).
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

fn common_passwords() -> &'static [&'static str] {
    static LIST: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let mut v: Vec<&str> = COMMON_PASSWORDS
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        v.sort_unstable();
        v
    })
}

fn is_common(lower: &str) -> bool {
    common_passwords().binary_search(&lower).is_ok()
}

/// A common word with only digits or symbols around it (`password1234`,
/// `!!dragon2024`): as guessable as the word, whatever its length.
fn is_common_with_affixes(lower: &str) -> bool {
    let base = lower.trim_matches(|c: char| !c.is_alphabetic());
    base.len() >= 4
        && base.len() < lower.len()
        && base.chars().all(char::is_alphabetic)
        && is_common(base)
}

/// Sequences people type: digits, the alphabet, and keyboard rows, each
/// walked either way (and the digits round from 9 to 0).
const SEQUENCES: [&str; 5] = [
    "01234567890",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
];

fn steps_in_a_sequence(a: char, b: char) -> bool {
    SEQUENCES.iter().any(|seq| {
        seq.char_indices()
            .any(|(i, c)| c == a && (seq[i + 1..].starts_with(b) || seq[..i].ends_with(b)))
    })
}

/// Made of runs: a character repeated, or a sequence walked, three or more
/// long, leaving at most two other characters (`123456789012`,
/// `aaaaaa111111`, `qwertyuiop12`, twelve spaces); or one unit repeated
/// (`abcabcabcabc`); or fewer than four distinct characters.
fn is_repetitive_or_sequential(lower: &str) -> Option<&'static str> {
    let chars: Vec<char> = lower.chars().collect();
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Some("repetitive");
    }
    let n = chars.len();
    if (1..=n / 2)
        .any(|unit| n.is_multiple_of(unit) && chars.chunks(unit).all(|c| c == &chars[..unit]))
    {
        return Some("repetitive");
    }
    let mut covered = 0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        let same = end < n && chars[end] == chars[start];
        while end < n
            && (if same {
                chars[end] == chars[start]
            } else {
                steps_in_a_sequence(chars[end - 1], chars[end])
                    && (end - start < 2 || steps_in_a_sequence(chars[end - 2], chars[end - 1]))
            })
        {
            end += 1;
        }
        if end - start >= 3 {
            covered += end - start;
        }
        start = if end - start >= 2 { end } else { start + 1 };
    }
    (covered + 2 >= n).then_some("sequential")
}

/// Checks the policy; the error names the rule that failed.
pub fn check_policy(password: &str, normalised_email: &str) -> Result<(), Error> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::WeakPassword("too_long"));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::WeakPassword("too_short"));
    }
    let local = normalised_email.split('@').next().unwrap_or("");
    let lower = password.to_lowercase();
    // "Contains" only for local parts long enough to mean something: every
    // password contains a one-letter local part somewhere.
    if !local.is_empty()
        && (lower == local || (local.chars().count() >= 3 && lower.contains(local)))
    {
        return Err(Error::WeakPassword("contains_email"));
    }
    if is_common(&lower) || is_common_with_affixes(&lower) {
        return Err(Error::WeakPassword("common"));
    }
    if let Some(rule) = is_repetitive_or_sequential(&lower) {
        return Err(Error::WeakPassword(rule));
    }
    Ok(())
}

/// Hashes a password with fresh salt, as a PHC string.
pub fn hash(password: &str, rng: &dyn Rng) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Hashing(e.to_string()))?;
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hashing(e.to_string()))
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Wrong password (or an unreadable hash).
    Mismatch,
    /// Right password; `rehash` when the stored parameters are not the
    /// current ones, so the caller stores [`hash`] of it again.
    Match {
        /// Whether to store a new hash.
        rehash: bool,
    },
}

/// Verifies `password` against a stored PHC string.
pub fn verify(password: &str, stored: &str) -> Verification {
    if password.len() > MAX_PASSWORD_BYTES {
        return Verification::Mismatch;
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verification::Mismatch;
    };
    // Verification uses the parameters in the stored string, so old hashes
    // keep working while their owners log in and get upgraded.
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    if !ok {
        return Verification::Mismatch;
    }
    let current = Params::try_from(&parsed).is_ok_and(|p| {
        parsed.algorithm.as_str() == "argon2id"
            && p.m_cost() == ARGON2_M_KIB
            && p.t_cost() == ARGON2_T
            && p.p_cost() == ARGON2_P
    });
    Verification::Match { rehash: !current }
}

/// A hash of a password nobody knows, with the current parameters.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZWRnZWNvZGVyLWR1bW15$8b0kdvcCLg4Q6yYp1Z2oWXUCjC9Ygq3P0NCfM2KNhyk";

/// Does the work of [`verify`] for an account that does not exist, so an
/// unknown email costs the same time as a wrong password.
pub fn verify_dummy(password: &str) {
    let _ = verify(password, DUMMY_HASH);
}

/// Normalises an email address (trimmed, lowercased) and checks its syntax:
/// one `@`, a non-empty local part of at most 64 bytes without spaces or
/// control characters, and a domain of dot-separated LDH labels with at least
/// one dot.
///
/// Addresses are ASCII (RFC 5321 mailboxes, without the SMTPUTF8 extension).
/// This is the one canonical form every path compares in (signup, sign-in,
/// reset, provider linking, admin lookups), and it refuses look-alikes
/// rather than guessing at them: an invisible character (zero-width space,
/// soft hyphen, any default-ignorable code point) would make a second account
/// that reads like the first in lists and the audit log, and Unicode case
/// mapping would fold a provider's `\u{212A}ate@` (KELVIN SIGN) into the local
/// `kate@`, a mailbox the provider never vouched for.
pub fn normalise_email(raw: &str) -> Result<String, Error> {
    let trimmed = raw.trim();
    let invalid = || Error::InvalidEmail;
    if !trimmed.is_ascii() {
        return Err(invalid());
    }
    let email = trimmed.to_ascii_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    if local.is_empty()
        || local.len() > 64
        || domain.contains('@')
        || local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"(),:;<>[\\]".contains(c))
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(invalid());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(invalid());
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Rng for Fixed {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(42);
        }
    }

    #[test]
    fn common_repetitive_and_sequential_passwords_are_refused() {
        let email = "alice@example.com";
        for (pw, rule) in [
            ("password1234", "common"),
            ("!!Dragon2024", "common"),
            ("1qaz2wsx3edc", "common"),
            ("sunshine98765432", "common"),
            ("234567890123", "sequential"),
            ("987654321098", "sequential"),
            ("abcdefghijkl", "sequential"),
            ("poiuytrewq12", "sequential"),
            ("aaaaaa111111", "repetitive"),
            ("aaaa12345678", "sequential"),
            ("            ", "repetitive"),
            ("aaaaaaaaaaaa", "repetitive"),
            ("abcabcabcabc", "repetitive"),
            ("xyzxyzxyzxyzxyz", "repetitive"),
            ("121212121212", "repetitive"),
        ] {
            assert!(
                matches!(check_policy(pw, email), Err(Error::WeakPassword(r)) if r == rule),
                "{pw:?} should be refused as {rule}: {:?}",
                check_policy(pw, email)
            );
        }
        for pw in [
            "correct horse battery staple",
            "tulip-engine-47-harbor",
            "Xk9#mQ2$vL7!pR",
            "my dog ate 3 abc books",
        ] {
            assert!(check_policy(pw, email).is_ok(), "{pw:?}");
        }
        assert!(common_passwords().len() > 5000, "the list is compiled in");
    }

    #[test]
    fn addresses_with_invisible_or_look_alike_characters_are_refused() {
        for bad in [
            "ka\u{200B}te@example.com",
            "ka\u{00AD}te@example.com",
            "kate\u{2060}@example.com",
            "\u{212A}ate@example.com",
            "kate@ex\u{0430}mple.com",
            "k\u{0061}\u{0301}te@example.com",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            normalise_email(" Kate@Example.COM ").ok().as_deref(),
            Some("kate@example.com")
        );
    }

    #[test]
    fn policy_rules() {
        let email = "alice.smith@example.com";
        assert!(check_policy("correct horse battery", email).is_ok());
        assert!(matches!(
            check_policy("short", email),
            Err(Error::WeakPassword("too_short"))
        ));
        // Twelve characters, not twelve bytes: multi-byte characters count once.
        assert!(check_policy("éàüößçñøåæœ", email).is_err());
        assert!(check_policy("éàüößçñøåæœî", email).is_ok());
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            check_policy(&long, email),
            Err(Error::WeakPassword("too_long"))
        ));
        assert!(matches!(
            check_policy("my Alice.Smith password", email),
            Err(Error::WeakPassword("contains_email"))
        ));
    }

    #[test]
    fn hashes_are_argon2id_phc_at_owasp_parameters_and_verify() {
        let h = hash("correct horse battery", &Fixed).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(
            verify("correct horse battery", &h),
            Verification::Match { rehash: false }
        );
        assert_eq!(verify("correct horse batterY", &h), Verification::Mismatch);
        assert_eq!(
            verify("anything", "not a phc string"),
            Verification::Mismatch
        );
    }

    #[test]
    fn weaker_stored_parameters_ask_for_a_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).expect("params"),
        );
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
        let old = weak
            .hash_password(b"correct horse battery", &salt)
            .expect("hash")
            .to_string();
        assert_eq!(
            verify("correct horse battery", &old),
            Verification::Match { rehash: true }
        );
    }

    #[test]
    fn the_dummy_hash_is_well_formed_at_current_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).expect("phc");
        let p = Params::try_from(&parsed).expect("params");
        assert_eq!(
            (p.m_cost(), p.t_cost(), p.p_cost()),
            (ARGON2_M_KIB, ARGON2_T, ARGON2_P)
        );
        assert_eq!(verify("", DUMMY_HASH), Verification::Mismatch);
    }

    #[test]
    fn attack_oversized_password_is_refused_without_hashing() {
        let huge = "x".repeat(1024 * 1024);
        assert_eq!(verify(&huge, DUMMY_HASH), Verification::Mismatch);
        assert!(check_policy(&huge, "a@example.com").is_err());
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalise_email("  Alice@Example.COM ").expect("ok"),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a b@example.com",
            "alice@@example.com",
            "alice@exa_mple.com",
            "alice@-example.com",
            ".alice@example.com",
            "al..ice@example.com",
            "alice@example..com",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(normalise_email(&long).is_err());
    }
}
