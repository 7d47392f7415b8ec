//! HTTP Message Signatures (RFC 9421) with `ecdsa-p256-sha256`, over
//! requests whose body is bound by `Content-Digest` (RFC 9530).
//!
//! In scope: deriving the components RFC 9421 §2.2 defines (`@method`,
//! `@target-uri`, `@authority`, `@scheme`, `@request-target`, `@path`,
//! `@query`) and HTTP fields (§2.1); parsing `Signature-Input` and
//! `Signature` as Structured Field dictionaries (RFC 9651, with the `sfv`
//! crate); choosing the signature this application accepts among the labels
//! present; building the signature base (§2.5) with `@signature-params`
//! re-serialised from the parsed parameters; checking `created`/`expires`
//! and the body's digest; signing requests for device agents. Out of scope:
//! key lookup and nonce replay tracking (the coordinator's storage), and
//! response signatures.
//!
//! What this application requires of a signature (RFC 9421 §1.4 leaves it
//! to the application): it covers `@method`, `content-digest` and the
//! target (`@target-uri`, or `@authority` with `@request-target` or with
//! both `@path` and `@query`); it carries `created`, `nonce` and `keyid`;
//! `alg`, if present, is `ecdsa-p256-sha256`. Any other derived component
//! or field may be covered too; component parameters (`;sf`, `;key`, `;req`,
//! `;bs`, `;name`) are not supported and such a signature is not chosen.
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=1700000000;nonce="n";keyid="k";alg="ecdsa-p256-sha256"
//! Signature: sig1=:<base64 of r‖s>:
//!
//! signature base:
//!   "@method": POST
//!   "@target-uri": https://edge.example/mesh/heartbeat
//!   "content-digest": sha-256=:…:
//!   "@signature-params": ("@method" "@target-uri" "content-digest");created=…;nonce="n";keyid="k";alg="ecdsa-p256-sha256"
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
pub use http::{HeaderMap, HeaderName, HeaderValue};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sfv::{BareItem, Dictionary, FieldType, InnerList, Item, ListEntry, Parser};
use sha2::{Digest, Sha256, Sha512};

use crate::Error;

/// The only algorithm accepted (RFC 9421 §3.3.4).
pub const ALG: &str = "ecdsa-p256-sha256";
/// Allowed clock skew for `created`.
pub const MAX_SKEW_SECS: i64 = 60;
/// The label our signers use.
pub const LABEL: &str = "sig1";
/// What our signers cover.
pub const SIGNED_COMPONENTS: [&str; 3] = ["@method", "@target-uri", "content-digest"];
/// Longest `Signature-Input`, `Signature` or `Content-Digest` we parse.
pub const MAX_FIELD_BYTES: usize = 4096;
/// Most signatures (labels) we look at in one request.
pub const MAX_SIGNATURES: usize = 8;
/// Most covered components in one signature.
pub const MAX_COMPONENTS: usize = 16;
/// The derived components [`Target`] can produce (RFC 9421 §2.2).
pub const DERIVED: [&str; 7] = [
    "@method",
    "@target-uri",
    "@authority",
    "@scheme",
    "@request-target",
    "@path",
    "@query",
];
/// Longest nonce or key id accepted.
pub const MAX_PARAM_CHARS: usize = 128;

/// The request a signature is over, as RFC 9421 §2.2 derives components
/// from it. Built by the signer from the URL it sends to, and by the
/// verifier from the request it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    method: String,
    scheme: String,
    authority: String,
    path: String,
    query: Option<String>,
}

impl Target {
    /// A request target from its parts; `authority` is `host[:port]` and is
    /// normalised (lowercase, default port dropped), `path` is as sent
    /// (percent-encoded), `query` without the `?`.
    pub fn new(
        method: &str,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> Result<Target, Error> {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https") {
            return Err(Error::Malformed("scheme must be http or https"));
        }
        let mut authority = authority.to_ascii_lowercase();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        if let Some(host) = authority.strip_suffix(default_port) {
            authority = host.to_owned();
        }
        let printable = |s: &str| s.bytes().all(|b| (0x21..0x7f).contains(&b));
        if authority.is_empty()
            || !printable(&authority)
            || authority.contains(['/', '?', '#', '@'])
            || !printable(method)
            || !printable(path)
            || query.is_some_and(|q| !q.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return Err(Error::Malformed("request target"));
        }
        Ok(Target {
            method: method.to_owned(),
            scheme,
            authority,
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            },
            query: query.map(str::to_owned),
        })
    }

    /// Parses an absolute `http(s)://authority/path?query` URL (signers).
    pub fn from_url(method: &str, url: &str) -> Result<Target, Error> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(Error::Malformed("URL without a scheme"))?;
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path_query) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => match rest.find('?') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            },
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        Target::new(method, scheme, authority, path, query)
    }

    /// The origin the request is addressed to (RFC 6454 serialisation:
    /// `scheme://authority`, lowercase, default port dropped).
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// `@target-uri`: the absolute URI.
    pub fn target_uri(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority,
            self.request_target()
        )
    }

    /// `@request-target`: path and query in origin form.
    pub fn request_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    fn derived(&self, name: &str) -> Option<String> {
        Some(match name {
            "@method" => self.method.clone(),
            "@target-uri" => self.target_uri(),
            "@authority" => self.authority.clone(),
            "@scheme" => self.scheme.clone(),
            "@request-target" => self.request_target(),
            "@path" => self.path.clone(),
            // §2.2.7: an absent query is the lone `?`.
            "@query" => format!("?{}", self.query.as_deref().unwrap_or("")),
            _ => return None,
        })
    }
}

/// `sha-256=:<base64>:` for `body` (RFC 9530).
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Checks a `Content-Digest` field against `body`: a `sha-256` member is
/// required and must match, as must a `sha-512` member if present; other
/// algorithms are ignored (RFC 9530 §2 lets a recipient pick).
pub fn check_content_digest(field: &str, body: &[u8]) -> Result<(), Error> {
    if field.len() > MAX_FIELD_BYTES {
        return Err(Error::Malformed("Content-Digest too long"));
    }
    let dict: Dictionary = Parser::new(field)
        .parse()
        .map_err(|_| Error::Malformed("Content-Digest is not a structured dictionary"))?;
    let bytes = |alg: &str| -> Result<Option<&[u8]>, Error> {
        match dict.get(alg) {
            None => Ok(None),
            Some(ListEntry::Item(Item {
                bare_item: BareItem::ByteSequence(b),
                ..
            })) => Ok(Some(b.as_slice())),
            Some(_) => Err(Error::Malformed(
                "Content-Digest member is not a byte sequence",
            )),
        }
    };
    let sha256 = bytes("sha-256")?.ok_or(Error::Malformed("Content-Digest without sha-256"))?;
    if sha256 != &Sha256::digest(body)[..] {
        return Err(Error::DigestMismatch);
    }
    if let Some(sha512) = bytes("sha-512")?
        && sha512 != &Sha512::digest(body)[..]
    {
        return Err(Error::DigestMismatch);
    }
    Ok(())
}

/// A signature's metadata parameters (RFC 9421 §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Expiry, Unix seconds (enforced when present).
    pub expires: Option<i64>,
    /// Single-use value.
    pub nonce: String,
    /// The signing key's id.
    pub keyid: String,
    /// Declared algorithm, if any (always [`ALG`] once accepted).
    pub alg: Option<String>,
    /// Application tag, if any.
    pub tag: Option<String>,
}

/// The signature chosen from a request's `Signature-Input` and `Signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Its label.
    pub label: String,
    /// Its parameters.
    pub params: Params,
    components: Vec<String>,
    /// `@signature-params`: the inner list re-serialised (RFC 9651 §4.1).
    signature_params: String,
    signature: Vec<u8>,
}

/// What remains to check once the time window and the digest held: the
/// signature (r‖s) over the base, with the key `keyid` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The signature base.
    pub base: String,
    /// r‖s, 64 bytes.
    pub signature: Vec<u8>,
}

impl Pending {
    /// Verifies in software.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Error> {
        let sig = Signature::from_slice(&self.signature).map_err(|_| Error::Invalid)?;
        key.verify(self.base.as_bytes(), &sig)
            .map_err(|_| Error::Invalid)
    }
}

/// Every field line of `name`, trimmed and joined with `", "` (RFC 9421 §2.1).
fn field_value(headers: &HeaderMap, name: &str) -> Result<Option<String>, Error> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v
            .to_str()
            .map_err(|_| Error::Malformed("a covered field is not visible ASCII"))?
            .trim();
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(v);
            }
            None => out = Some(v.to_owned()),
        }
    }
    Ok(out)
}

fn string_param(v: &BareItem, what: &'static str) -> Result<String, Error> {
    match v {
        BareItem::String(s) if !s.as_str().is_empty() && s.as_str().len() <= MAX_PARAM_CHARS => {
            Ok(s.as_str().to_owned())
        }
        _ => Err(Error::Malformed(what)),
    }
}

fn integer_param(v: &BareItem, what: &'static str) -> Result<i64, Error> {
    match v {
        BareItem::Integer(i) => Ok(i64::from(*i)),
        _ => Err(Error::Malformed(what)),
    }
}

/// Reads one `Signature-Input` member; refuses what this application does
/// not accept.
fn candidate(entry: &ListEntry) -> Result<(Params, Vec<String>, String), Error> {
    let ListEntry::InnerList(InnerList { items, params }) = entry else {
        return Err(Error::Malformed(
            "Signature-Input member is not an inner list",
        ));
    };
    if items.len() > MAX_COMPONENTS {
        return Err(Error::Malformed("too many covered components"));
    }
    let mut components = Vec::with_capacity(items.len());
    for item in items {
        let BareItem::String(name) = &item.bare_item else {
            return Err(Error::Malformed("component identifiers are strings"));
        };
        if !item.params.is_empty() {
            return Err(Error::Malformed("component parameters are not supported"));
        }
        let name = name.as_str();
        let derived = name.starts_with('@');
        if derived && !DERIVED.contains(&name)
            || !derived
                && (name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(Error::Malformed("unsupported component"));
        }
        if components.iter().any(|c| c == name) {
            return Err(Error::Malformed("a component is covered twice"));
        }
        components.push(name.to_owned());
    }
    let covers = |c: &str| components.iter().any(|x| x == c);
    let target = covers("@target-uri")
        || covers("@authority")
            && (covers("@request-target") || covers("@path") && covers("@query"));
    if !(covers("@method") && covers("content-digest") && target) {
        return Err(Error::Malformed(
            "must cover @method, content-digest and the target (@target-uri, or @authority with @path and @query)",
        ));
    }
    let (mut created, mut expires, mut nonce, mut keyid, mut alg, mut tag) =
        (None, None, None, None, None, None);
    for (k, v) in params {
        match k.as_str() {
            "created" => created = Some(integer_param(v, "created")?),
            "expires" => expires = Some(integer_param(v, "expires")?),
            "nonce" => nonce = Some(string_param(v, "nonce")?),
            "keyid" => keyid = Some(string_param(v, "keyid")?),
            "alg" => alg = Some(string_param(v, "alg")?),
            "tag" => tag = Some(string_param(v, "tag")?),
            // Registered later, or private: signed like the rest, not used.
            _ => {}
        }
    }
    if alg.as_deref().is_some_and(|a| a != ALG) {
        return Err(Error::Malformed("algorithm must be ecdsa-p256-sha256"));
    }
    let params = Params {
        created: created.ok_or(Error::Malformed("created"))?,
        expires,
        nonce: nonce.ok_or(Error::Malformed("nonce"))?,
        keyid: keyid.ok_or(Error::Malformed("keyid"))?,
        alg,
        tag,
    };
    let serialized = vec![entry.clone()]
        .serialize()
        .ok_or(Error::Malformed("empty signature parameters"))?;
    Ok((params, components, serialized))
}

fn dictionary(headers: &HeaderMap, name: &'static str) -> Result<Option<Dictionary>, Error> {
    let Some(value) = field_value(headers, name)? else {
        return Ok(None);
    };
    if value.len() > MAX_FIELD_BYTES {
        return Err(Error::Malformed("signature field too long"));
    }
    let dict: Dictionary = Parser::new(&value)
        .parse()
        .map_err(|_| Error::Malformed("signature field is not a structured dictionary"))?;
    if dict.len() > MAX_SIGNATURES {
        return Err(Error::Malformed("too many signatures"));
    }
    Ok(Some(dict))
}

impl Signed {
    /// Picks the first signature in `Signature-Input` that this application
    /// accepts, with its value from `Signature`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Signed, Error> {
        let input = dictionary(headers, "signature-input")?;
        let signatures = dictionary(headers, "signature")?;
        let (input, signatures) = match (input, signatures) {
            (None, None) => return Err(Error::Missing),
            (Some(i), Some(s)) => (i, s),
            _ => {
                return Err(Error::Malformed(
                    "Signature-Input and Signature go together",
                ));
            }
        };
        let mut first_refusal = None;
        for (label, entry) in &input {
            match candidate(entry) {
                Ok((params, components, signature_params)) => {
                    let signature = match signatures.get(label.as_str()) {
                        Some(ListEntry::Item(Item {
                            bare_item: BareItem::ByteSequence(b),
                            ..
                        })) => b.clone(),
                        _ => return Err(Error::Malformed("Signature has no value for the label")),
                    };
                    return Ok(Signed {
                        label: label.as_str().to_owned(),
                        params,
                        components,
                        signature_params,
                        signature,
                    });
                }
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        Err(first_refusal.unwrap_or(Error::Malformed("no signature")))
    }

    /// The signature base over `target` and `headers` (RFC 9421 §2.5).
    pub fn base(&self, target: &Target, headers: &HeaderMap) -> Result<String, Error> {
        let mut out = String::with_capacity(256);
        for c in &self.components {
            let value = if c.starts_with('@') {
                target
                    .derived(c)
                    .ok_or(Error::Malformed("unsupported component"))?
            } else {
                field_value(headers, c)?.ok_or(Error::Malformed("a covered field is missing"))?
            };
            out.push('"');
            out.push_str(c);
            out.push_str("\": ");
            out.push_str(&value);
            out.push('\n');
        }
        out.push_str("\"@signature-params\": ");
        out.push_str(&self.signature_params);
        Ok(out)
    }

    /// Checks everything but the signature itself: `created` (and `expires`)
    /// against `now` (Unix seconds), `Content-Digest` against the raw body,
    /// and the signature's length; returns what the signature must cover.
    /// The caller verifies [`Pending`] with the key `keyid` names, in
    /// software ([`Pending::verify`]) or with the platform's crypto.
    pub fn prepare(
        &self,
        target: &Target,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Pending, Error> {
        // Saturating: a hostile `created` near i64::MIN must not overflow.
        if now.saturating_sub(self.params.created).saturating_abs() > MAX_SKEW_SECS
            || self.params.expires.is_some_and(|e| now > e)
        {
            return Err(Error::Expired);
        }
        let digest = field_value(headers, "content-digest")?
            .ok_or(Error::Malformed("Content-Digest missing"))?;
        check_content_digest(&digest, body)?;
        if self.signature.len() != 64 {
            return Err(Error::Invalid);
        }
        Ok(Pending {
            base: self.base(target, headers)?,
            signature: self.signature.clone(),
        })
    }
}

/// The headers a signer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Content-Digest`.
    pub content_digest: String,
    /// `Signature-Input`.
    pub signature_input: String,
    /// `Signature`.
    pub signature: String,
}

/// Signs a request to `target` with `body`: covers [`SIGNED_COMPONENTS`]
/// under [`LABEL`], with `created` (Unix seconds), `nonce`, `keyid` and `alg`.
pub fn sign(
    key: &SigningKey,
    keyid: &str,
    nonce: &str,
    created: i64,
    target: &Target,
    body: &[u8],
) -> Result<SignedHeaders, Error> {
    use sfv::{KeyRef, ListSerializer, StringRef};
    fn s(v: &str) -> Result<&StringRef, Error> {
        StringRef::from_str(v).map_err(|_| Error::Malformed("unprintable parameter"))
    }
    fn k(v: &str) -> Result<&KeyRef, Error> {
        KeyRef::from_str(v).map_err(|_| Error::Malformed("parameter name"))
    }
    let mut ser = ListSerializer::new();
    {
        let mut inner = ser.inner_list();
        for c in SIGNED_COMPONENTS {
            let _ = inner.bare_item(s(c)?);
        }
        let _ = inner
            .finish()
            .parameter(
                k("created")?,
                sfv::Integer::try_from(created)
                    .map_err(|_| Error::Malformed("created out of range"))?,
            )
            .parameter(k("nonce")?, s(nonce)?)
            .parameter(k("keyid")?, s(keyid)?)
            .parameter(k("alg")?, s(ALG)?);
    }
    let inner = ser
        .finish()
        .ok_or(Error::Malformed("empty signature parameters"))?;
    let content_digest = content_digest(body);
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-digest",
        content_digest
            .parse()
            .map_err(|_| Error::Malformed("Content-Digest"))?,
    );
    let signature_input = format!("{LABEL}={inner}");
    headers.insert(
        "signature-input",
        signature_input
            .parse()
            .map_err(|_| Error::Malformed("Signature-Input"))?,
    );
    // A placeholder so the input parses as a pair; only the base is used.
    headers.insert(
        "signature",
        format!("{LABEL}=::")
            .parse()
            .map_err(|_| Error::Malformed("Signature"))?,
    );
    let signed = Signed::from_headers(&headers)?;
    let sig: Signature = key.sign(signed.base(target, &headers)?.as_bytes());
    Ok(SignedHeaders {
        content_digest,
        signature_input,
        signature: format!("{LABEL}=:{}:", STANDARD.encode(sig.to_bytes())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        let mut b = [seed; 32];
        b[0] = 1;
        SigningKey::from_slice(&b).expect("key")
    }

    const URL: &str = "https://edge.example/mesh/heartbeat";
    const NOW: i64 = 1_800_000_000;

    fn target() -> Target {
        Target::from_url("POST", URL).expect("url")
    }

    fn headers(h: &SignedHeaders) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("content-digest", h.content_digest.parse().expect("v"));
        m.insert("signature-input", h.signature_input.parse().expect("v"));
        m.insert("signature", h.signature.parse().expect("v"));
        m
    }

    fn check(
        h: &HeaderMap,
        t: &Target,
        body: &[u8],
        now: i64,
        k: &SigningKey,
    ) -> Result<(), Error> {
        Signed::from_headers(h)?
            .prepare(t, h, body, now)?
            .verify(k.verifying_key())
    }

    fn signed(body: &[u8]) -> HeaderMap {
        headers(&sign(&key(3), "node-1", "n-123", NOW, &target(), body).expect("sign"))
    }

    #[test]
    fn signed_requests_verify_and_carry_their_parameters() {
        let h = signed(b"{\"cpu\":3}");
        assert_eq!(
            check(&h, &target(), b"{\"cpu\":3}", NOW + 5, &key(3)),
            Ok(())
        );
        let s = Signed::from_headers(&h).expect("signed");
        assert_eq!(
            (
                s.params.keyid.as_str(),
                s.params.nonce.as_str(),
                s.params.created
            ),
            ("node-1", "n-123", NOW)
        );
        let base = s.base(&target(), &h).expect("base");
        assert!(base.starts_with("\"@method\": POST\n\"@target-uri\": https://edge.example/mesh/heartbeat\n\"content-digest\": sha-256=:"), "{base}");
        assert!(base.ends_with("\"@signature-params\": (\"@method\" \"@target-uri\" \"content-digest\");created=1800000000;nonce=\"n-123\";keyid=\"node-1\";alg=\"ecdsa-p256-sha256\""), "{base}");
    }

    #[test]
    fn each_tampering_has_its_refusal() {
        let body = b"{\"cpu\":3}";
        let h = signed(body);
        assert_eq!(
            check(&h, &target(), b"{\"cpu\":4}", NOW, &key(3)),
            Err(Error::DigestMismatch)
        );
        let put = Target::from_url("PUT", URL).expect("url");
        assert_eq!(check(&h, &put, body, NOW, &key(3)), Err(Error::Invalid));
        let other = Target::from_url("POST", "https://edge.example/mesh/other").expect("url");
        assert_eq!(check(&h, &other, body, NOW, &key(3)), Err(Error::Invalid));
        let host = Target::from_url("POST", "https://other.example/mesh/heartbeat").expect("url");
        assert_eq!(check(&h, &host, body, NOW, &key(3)), Err(Error::Invalid));
        assert_eq!(
            check(&h, &target(), body, NOW, &key(4)),
            Err(Error::Invalid)
        );
        assert_eq!(
            check(&h, &target(), body, NOW + 61, &key(3)),
            Err(Error::Expired)
        );
        assert_eq!(
            check(&h, &target(), body, NOW - 61, &key(3)),
            Err(Error::Expired)
        );
        // A body swapped together with its digest still fails the signature.
        let mut forged = h.clone();
        forged.insert("content-digest", content_digest(b"{}").parse().expect("v"));
        assert_eq!(
            check(&forged, &target(), b"{}", NOW, &key(3)),
            Err(Error::Invalid)
        );
        // Changed parameters are part of what was signed.
        let mut renonced = h.clone();
        let input = h["signature-input"]
            .to_str()
            .expect("ascii")
            .replace("n-123", "n-124");
        renonced.insert("signature-input", input.parse().expect("v"));
        assert_eq!(
            check(&renonced, &target(), body, NOW, &key(3)),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn structured_field_syntax_is_parsed_not_pattern_matched() {
        let body = b"{}";
        let h = signed(body);
        let input = h["signature-input"].to_str().expect("ascii");
        // Optional whitespace after `;` (RFC 9651 §3.1.2) and a second,
        // unrelated signature before ours are both fine.
        let spaced = format!(
            "other=(\"@method\");created=1;keyid=\"x\", {}",
            input.replace(";", "; ")
        );
        let mut m = h.clone();
        m.insert("signature-input", spaced.parse().expect("v"));
        let sig = h["signature"].to_str().expect("ascii");
        m.insert(
            "signature",
            format!("other=:AAAA:, {sig}").parse().expect("v"),
        );
        assert_eq!(check(&m, &target(), body, NOW, &key(3)), Ok(()));
        // The same dictionary over two field lines.
        let mut lines = h.clone();
        lines.remove("signature-input");
        lines.append(
            "signature-input",
            "other=(\"@method\");created=1".parse().expect("v"),
        );
        lines.append("signature-input", input.parse().expect("v"));
        assert_eq!(check(&lines, &target(), body, NOW, &key(3)), Ok(()));
    }

    #[test]
    fn the_query_is_part_of_the_target() {
        let t = Target::from_url("GET", "http://127.0.0.1:8787/mesh/nodes?x=1").expect("url");
        assert_eq!(t.target_uri(), "http://127.0.0.1:8787/mesh/nodes?x=1");
        assert_eq!(t.derived("@query").as_deref(), Some("?x=1"));
        let bare = Target::from_url("GET", "HTTPS://Edge.Example:443").expect("url");
        assert_eq!(bare.target_uri(), "https://edge.example/");
        assert_eq!(bare.derived("@query").as_deref(), Some("?"));
        let h = headers(&sign(&key(3), "k", "n", NOW, &t, b"").expect("sign"));
        let other = Target::from_url("GET", "http://127.0.0.1:8787/mesh/nodes?x=2").expect("url");
        assert_eq!(check(&h, &other, b"", NOW, &key(3)), Err(Error::Invalid));
    }

    #[test]
    fn inputs_must_cover_the_required_components() {
        for bad in [
            "sig1=(\"@method\" \"@target-uri\");created=1;nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@path\" \"content-digest\");created=1;nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=1;keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=1;nonce=\"n\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=1;nonce=\"n\";keyid=\"k\";alg=\"hmac-sha256\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created=\"1\";nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\" \"@method\");created=1;nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\";sf);created=1;nonce=\"n\";keyid=\"k\"",
            "sig1=(\"@method\" \"@target-uri\" \"content-digest\" \"@status\");created=1;nonce=\"n\";keyid=\"k\"",
            "sig1=\"@method\";created=1",
            "no list at all",
        ] {
            let mut h = HeaderMap::new();
            h.insert("signature-input", bad.parse().expect("v"));
            h.insert("signature", "sig1=:AAAA:".parse().expect("v"));
            assert!(
                matches!(Signed::from_headers(&h), Err(Error::Malformed(_))),
                "{bad}"
            );
        }
        let ok = "sig1=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\");created=1;nonce=\"n\";keyid=\"k\"";
        let mut h = HeaderMap::new();
        h.insert("signature-input", ok.parse().expect("v"));
        h.insert("signature", "sig1=:AAAA:".parse().expect("v"));
        assert!(Signed::from_headers(&h).is_ok());
        assert_eq!(Signed::from_headers(&HeaderMap::new()), Err(Error::Missing));
    }

    #[test]
    fn content_digests_are_dictionaries() {
        let body = b"hello";
        let sha512 = STANDARD.encode(Sha512::digest(body));
        let both = format!("{}, sha-512=:{sha512}:", content_digest(body));
        assert_eq!(check_content_digest(&both, body), Ok(()));
        let wrong512 = format!(
            "{}, sha-512=:{}:",
            content_digest(body),
            STANDARD.encode([0u8; 64])
        );
        assert_eq!(
            check_content_digest(&wrong512, body),
            Err(Error::DigestMismatch)
        );
        assert!(matches!(
            check_content_digest(&format!("sha-512=:{sha512}:"), body),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            check_content_digest("sha-256=abc", body),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn extreme_and_expired_times_are_refused_without_overflow() {
        let body = b"{}";
        let h = signed(body);
        let mut s = Signed::from_headers(&h).expect("signed");
        s.params.created = i64::MIN;
        assert_eq!(s.prepare(&target(), &h, body, NOW), Err(Error::Expired));
        let mut lapsed = Signed::from_headers(&h).expect("signed");
        lapsed.params.expires = Some(NOW - 1);
        assert_eq!(
            lapsed.prepare(&target(), &h, body, NOW),
            Err(Error::Expired)
        );
    }
}
