//! The WebAuthn ceremonies (Level 3, JSON serialisation with base64url) as a
//! start/finish API, the shape webauthn-rs gives them: `start_*` returns the
//! options for `navigator.credentials.create/get` and an opaque state;
//! `finish_*` takes the browser's response with that state and returns what
//! to store, or the refusal.
//!
//! In scope: the options documents; reading a response (ids, client data
//! type, origin, cross-origin) before its challenge is looked up; every
//! check that binds a response to its state and relying party (challenge,
//! RP id hash, UP and UV, backup flags, credential id, algorithm, the
//! attestation or assertion signature, user handle, the expected user).
//!
//! Out of scope: storage and time. The functions are stateless, so a state
//! is kept by the handler as its challenge's row (hashed, single use, bound
//! to a session where the ceremony needs one) and rebuilt with `resume`
//! when that row is consumed; the signature counter and the clone policy
//! (they need the stored credential's history and a setting); byte-level
//! parsing (`crate::webauthn`); attestation trust chains.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::SignatureCheck;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::webauthn::{
    self, ALGORITHMS, AttestationObject, AuthData, CoseKey, FLAG_BE, FLAG_BS, Refusal,
};

/// How long a browser may take to answer, in milliseconds (the challenge's
/// lifetime).
pub const TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// Transports kept from a registration response (WebAuthn's
/// `AuthenticatorTransport` values); others are dropped.
const TRANSPORTS: [&str; 6] = ["usb", "nfc", "ble", "smart-card", "hybrid", "internal"];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str, what: &'static str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| Error::Passkey(Refusal::Malformed(what)))
}

/// Which ceremony a challenge belongs to; a challenge answers only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    /// Creating a passkey (`webauthn.create`), for a signed-in user.
    Registration,
    /// Signing in (`webauthn.get`), for anyone.
    Authentication,
    /// Re-proving presence (`webauthn.get`), for a signed-in user.
    StepUp,
}

impl Ceremony {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Ceremony::Registration => "registration",
            Ceremony::Authentication => "authentication",
            Ceremony::StepUp => "step_up",
        }
    }

    fn client_data_type(self) -> &'static str {
        match self {
            Ceremony::Registration => "webauthn.create",
            Ceremony::Authentication | Ceremony::StepUp => "webauthn.get",
        }
    }
}

/// A challenge: 32 random bytes, sent as base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge(String);

impl Challenge {
    /// A challenge from 32 random bytes.
    pub fn new(random: [u8; 32]) -> Challenge {
        Challenge(b64(&random))
    }

    /// How it is stored and looked up: never in the clear, so a database
    /// reader cannot answer an outstanding ceremony.
    pub fn storage_key(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex().to_string()
    }
}

/// The relying party: this deployment.
#[derive(Debug, Clone, Copy)]
pub struct RelyingParty<'a> {
    /// The RP id (a registrable domain of the origins).
    pub id: &'a str,
    /// The name authenticators show.
    pub name: &'a str,
    /// The web origins allowed to run ceremonies.
    pub origins: &'a [String],
}

/// A credential as `excludeCredentials` / `allowCredentials` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Credential id, base64url.
    pub id: String,
    /// Its transports, as registered.
    pub transports: Vec<String>,
}

impl Descriptor {
    fn to_json(&self) -> Json {
        json!({"type": "public-key", "id": self.id, "transports": self.transports})
    }
}

/// The account a passkey is created for.
#[derive(Debug, Clone, Copy)]
pub struct UserEntity<'a> {
    /// The opaque WebAuthn user handle (base64url).
    pub handle: &'a str,
    /// The account name (its email).
    pub name: &'a str,
    /// The name shown.
    pub display_name: &'a str,
}

/// A registration in progress (opaque): which challenge it answers and
/// whose passkey it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRegistration {
    challenge: Challenge,
    user_id: String,
}

impl PasskeyRegistration {
    /// The state as its consumed challenge row describes it: the challenge
    /// the row was found by, and the user it was bound to.
    pub fn resume(challenge: Challenge, user_id: String) -> PasskeyRegistration {
        PasskeyRegistration { challenge, user_id }
    }

    /// The user the passkey is for.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

/// An authentication or step-up in progress (opaque).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyAuthentication {
    challenge: Challenge,
    ceremony: Ceremony,
    user_id: Option<String>,
}

impl PasskeyAuthentication {
    /// The state as its consumed challenge row describes it: the challenge
    /// it was found by, its ceremony, and the user it was bound to (step-up)
    /// or none (sign-in).
    pub fn resume(
        challenge: Challenge,
        ceremony: Ceremony,
        user_id: Option<String>,
    ) -> PasskeyAuthentication {
        PasskeyAuthentication {
            challenge,
            ceremony,
            user_id,
        }
    }

    /// The ceremony.
    pub fn ceremony(&self) -> Ceremony {
        self.ceremony
    }

    /// The user who must answer, if the ceremony is bound to one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// Starts a registration: `PublicKeyCredentialCreationOptionsJSON` and its
/// state. Resident keys and user verification are required; attestation is
/// not asked for (`none`).
pub fn start_registration(
    rp: &RelyingParty<'_>,
    user_id: &str,
    user: &UserEntity<'_>,
    exclude: &[Descriptor],
    challenge: &Challenge,
) -> (Json, PasskeyRegistration) {
    let params: Vec<Json> = ALGORITHMS
        .iter()
        .map(|alg| json!({"type": "public-key", "alg": alg}))
        .collect();
    let options = json!({
        "rp": {"id": rp.id, "name": rp.name},
        "user": {"id": user.handle, "name": user.name, "displayName": user.display_name},
        "challenge": challenge.0,
        "pubKeyCredParams": params,
        "timeout": TIMEOUT_MS,
        "excludeCredentials": exclude.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        "authenticatorSelection": {
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": "required",
        },
        "attestation": "none",
    });
    (
        options,
        PasskeyRegistration {
            challenge: challenge.clone(),
            user_id: user_id.to_owned(),
        },
    )
}

/// Starts a sign-in (`user_id` none, `allow` empty for a discoverable
/// credential, or an email's credentials) or a step-up (bound to the user):
/// `PublicKeyCredentialRequestOptionsJSON` and its state.
pub fn start_authentication(
    rp: &RelyingParty<'_>,
    ceremony: Ceremony,
    user_id: Option<&str>,
    allow: &[Descriptor],
    challenge: &Challenge,
) -> (Json, PasskeyAuthentication) {
    let options = json!({
        "challenge": challenge.0,
        "timeout": TIMEOUT_MS,
        "rpId": rp.id,
        "allowCredentials": allow.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        "userVerification": "required",
    });
    (
        options,
        PasskeyAuthentication {
            challenge: challenge.clone(),
            ceremony,
            user_id: user_id.map(str::to_owned),
        },
    )
}

/// `RegistrationResponseJSON.response`.
#[derive(Debug, Deserialize)]
struct AttestationResponseJson {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "attestationObject")]
    attestation_object: String,
    #[serde(default)]
    transports: Vec<String>,
}

/// `RegistrationResponseJSON`.
#[derive(Debug, Deserialize)]
pub struct RegistrationResponseJson {
    id: String,
    #[serde(rename = "rawId")]
    raw_id: String,
    #[serde(rename = "type")]
    type_: String,
    response: AttestationResponseJson,
}

/// `AuthenticationResponseJSON.response`.
#[derive(Debug, Deserialize)]
struct AssertionResponseJson {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
    #[serde(default, rename = "userHandle")]
    user_handle: Option<String>,
}

/// `AuthenticationResponseJSON`.
#[derive(Debug, Deserialize)]
pub struct AuthenticationResponseJson {
    id: String,
    #[serde(rename = "rawId")]
    raw_id: String,
    #[serde(rename = "type")]
    type_: String,
    response: AssertionResponseJson,
}

impl AuthenticationResponseJson {
    /// The credential id as sent (for audit records; unchecked).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A response read far enough to look up its challenge: its ids decode,
/// its client data is of the ceremony's type, from an allowed origin, not
/// from a cross-origin frame.
struct Read {
    raw_id: Vec<u8>,
    client_data_raw: Vec<u8>,
    challenge: Challenge,
}

fn read(
    rp: &RelyingParty<'_>,
    ceremony: Ceremony,
    ids: (&str, &str, &str),
    client_data_json: &str,
) -> Result<Read, Error> {
    let (type_, id, raw_id) = ids;
    if type_ != "public-key" || id != raw_id {
        return Err(Refusal::Malformed("credential").into());
    }
    let raw_id = unb64(raw_id, "rawId")?;
    let client_data_raw = unb64(client_data_json, "clientDataJSON")?;
    let cd = webauthn::client_data(&client_data_raw)?;
    if cd.type_ != ceremony.client_data_type() {
        return Err(Refusal::Type.into());
    }
    if cd.cross_origin || !webauthn::origin_allowed(&cd.origin, rp.origins) {
        return Err(Refusal::Origin.into());
    }
    Ok(Read {
        raw_id,
        client_data_raw,
        challenge: Challenge(cd.challenge),
    })
}

/// A registration response whose client data passed; its challenge names
/// the state to finish it with.
pub struct RegistrationResponse {
    read: Read,
    attestation_object: String,
    transports: Vec<String>,
}

impl RegistrationResponse {
    /// Reads `json` for `rp`: refused before any state is spent if its
    /// client data is not a `webauthn.create` from an allowed origin.
    pub fn read(
        rp: &RelyingParty<'_>,
        json: RegistrationResponseJson,
    ) -> Result<RegistrationResponse, Error> {
        let read = read(
            rp,
            Ceremony::Registration,
            (&json.type_, &json.id, &json.raw_id),
            &json.response.client_data_json,
        )?;
        Ok(RegistrationResponse {
            read,
            attestation_object: json.response.attestation_object,
            transports: json.response.transports,
        })
    }

    /// The challenge it answers.
    pub fn challenge(&self) -> &Challenge {
        &self.read.challenge
    }
}

/// A passkey to store.
#[derive(Debug, Clone)]
pub struct NewPasskey {
    /// Credential id, base64url.
    pub id: String,
    /// Its owner.
    pub user_id: String,
    /// The COSE public key as sent.
    pub public_key_cbor: Vec<u8>,
    /// Its COSE algorithm.
    pub alg: i64,
    /// The authenticator's counter.
    pub sign_count: u32,
    /// Backup eligible (fixed for the credential's life).
    pub backup_eligible: bool,
    /// Backed up now.
    pub backed_up: bool,
    /// The authenticator model, as a UUID.
    pub aaguid: String,
    /// Known transports (at most six).
    pub transports: Vec<String>,
}

/// Finishes a registration: the response must answer this state's
/// challenge (the handler looked the state up by it) for this RP, with user
/// presence and verification, an allowed algorithm and a valid attestation
/// statement (`none`, or `packed` self-attestation).
pub fn finish_registration(
    rp: &RelyingParty<'_>,
    state: PasskeyRegistration,
    response: RegistrationResponse,
) -> Result<NewPasskey, Error> {
    // The handler found the state by this challenge; checked again so that
    // no caller can finish a ceremony with another one's state. Challenges
    // are not secret (the browser holds them), so plain equality will do.
    if response.read.challenge != state.challenge {
        return Err(Error::PasskeyChallengeInvalid);
    }
    let att = AttestationObject::parse(&unb64(&response.attestation_object, "attestationObject")?)?;
    let auth = AuthData::parse(&att.auth_data)?;
    auth.require_rp(rp.id)?;
    auth.require_up_uv()?;
    if auth.flags & FLAG_BS != 0 && auth.flags & FLAG_BE == 0 {
        return Err(Refusal::Malformed("authenticatorData flags").into());
    }
    let attested = auth
        .attested
        .clone()
        .ok_or(Refusal::Malformed("attested credential data"))?;
    if attested.credential_id != response.read.raw_id {
        return Err(Refusal::Malformed("credential id").into());
    }
    if !ALGORITHMS.contains(&attested.key.alg()) {
        return Err(Refusal::Algorithm.into());
    }
    att.verify(
        &attested.key,
        &Sha256::digest(&response.read.client_data_raw),
    )?;
    let transports = response
        .transports
        .into_iter()
        .filter(|t| TRANSPORTS.contains(&t.as_str()))
        .take(TRANSPORTS.len())
        .collect();
    Ok(NewPasskey {
        id: b64(&response.read.raw_id),
        user_id: state.user_id,
        alg: attested.key.alg(),
        public_key_cbor: attested.key_cbor,
        sign_count: auth.sign_count,
        backup_eligible: auth.flags & FLAG_BE != 0,
        backed_up: auth.flags & FLAG_BS != 0,
        aaguid: uuid(&attested.aaguid),
        transports,
    })
}

fn uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An assertion whose client data passed; its challenge names the state,
/// its credential id the stored key.
pub struct AuthenticationResponse {
    read: Read,
    ceremony: Ceremony,
    authenticator_data: String,
    signature: String,
    user_handle: Option<String>,
}

impl AuthenticationResponse {
    /// Reads `json` for `rp` and `ceremony` (sign-in or step-up): refused
    /// before any state is spent if its client data is not a `webauthn.get`
    /// from an allowed origin.
    pub fn read(
        rp: &RelyingParty<'_>,
        ceremony: Ceremony,
        json: &AuthenticationResponseJson,
    ) -> Result<AuthenticationResponse, Error> {
        let read = read(
            rp,
            ceremony,
            (&json.type_, &json.id, &json.raw_id),
            &json.response.client_data_json,
        )?;
        Ok(AuthenticationResponse {
            read,
            ceremony,
            authenticator_data: json.response.authenticator_data.clone(),
            signature: json.response.signature.clone(),
            user_handle: json.response.user_handle.clone(),
        })
    }

    /// The challenge it answers.
    pub fn challenge(&self) -> &Challenge {
        &self.read.challenge
    }

    /// The credential it claims, base64url.
    pub fn credential_id(&self) -> String {
        b64(&self.read.raw_id)
    }
}

/// What the handler knows of the claimed credential.
#[derive(Debug, Clone)]
pub struct StoredPasskey<'a> {
    /// Its owner.
    pub user_id: &'a str,
    /// The COSE public key.
    pub public_key_cbor: &'a [u8],
    /// Backup eligible at registration.
    pub backup_eligible: bool,
    /// Its owner's WebAuthn user handle.
    pub user_handle: Option<&'a str>,
}

/// A verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// Credential id, base64url.
    pub credential_id: String,
    /// Its owner.
    pub user_id: String,
    /// The counter the authenticator sent (0: it keeps none).
    pub sign_count: u32,
    /// Backed up now.
    pub backed_up: bool,
}

/// A fixed P-256 key (the curve's base point, private half 1, whose
/// signatures nobody here makes), checked against when the credential is
/// unknown so both answers cost the same.
const DUMMY_POINT: [u8; 65] = [
    0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2,
    0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e,
    0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51,
    0xf5,
];

/// Finishes a sign-in or step-up: the assertion must be for this RP with
/// user presence and verification, signed by the claimed credential's key,
/// by the user the state is bound to (if any) and the user handle names (if
/// sent), with the backup-eligible flag it was registered with. An unknown
/// credential (`stored` none) is refused like a bad signature, after a
/// signature check of the same cost, so assertions cannot probe which
/// credential ids exist.
pub async fn finish_authentication(
    rp: &RelyingParty<'_>,
    state: PasskeyAuthentication,
    response: AuthenticationResponse,
    stored: Option<StoredPasskey<'_>>,
    signatures: &dyn SignatureCheck,
) -> Result<Assertion, Error> {
    if response.read.challenge != state.challenge || response.ceremony != state.ceremony {
        return Err(Error::PasskeyChallengeInvalid);
    }
    let auth_raw = unb64(&response.authenticator_data, "authenticatorData")?;
    let auth = AuthData::parse(&auth_raw)?;
    auth.require_rp(rp.id)?;
    auth.require_up_uv()?;
    if auth.attested.is_some() || (auth.flags & FLAG_BS != 0 && auth.flags & FLAG_BE == 0) {
        return Err(Refusal::Malformed("authenticatorData flags").into());
    }
    let signature = unb64(&response.signature, "signature")?;
    let mut signed = auth_raw;
    signed.extend_from_slice(&Sha256::digest(&response.read.client_data_raw));
    let Some(cred) = stored else {
        let _ = CoseKey::Es256(DUMMY_POINT.to_vec())
            .verify_with(signatures, &signed, &signature)
            .await;
        return Err(Error::PasskeyAssertionInvalid);
    };
    CoseKey::from_cbor(cred.public_key_cbor)?
        .verify_with(signatures, &signed, &signature)
        .await
        .map_err(|_| Error::PasskeyAssertionInvalid)?;
    if let Some(h) = &response.user_handle
        && !h.is_empty()
        && Some(h.trim_end_matches('=')) != cred.user_handle
    {
        return Err(Error::PasskeyUserMismatch);
    }
    if state.user_id.as_deref().is_some_and(|u| u != cred.user_id) {
        return Err(Error::PasskeyUserMismatch);
    }
    if (auth.flags & FLAG_BE != 0) != cred.backup_eligible {
        return Err(Error::PasskeyBackupStateChanged);
    }
    Ok(Assertion {
        credential_id: b64(&response.read.raw_id),
        user_id: cred.user_id.to_owned(),
        sign_count: auth.sign_count,
        backed_up: auth.flags & FLAG_BS != 0,
    })
}

#[cfg(test)]
mod tests {
    use ciborium::Value as Cbor;
    use edgecoder_kernel::SoftwareSignatures;
    use futures_executor::block_on;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};

    use super::*;
    use crate::webauthn::{FLAG_AT, FLAG_UP, FLAG_UV};

    const ORIGIN: &str = "https://portal.example";

    fn rp(origins: &[String]) -> RelyingParty<'_> {
        RelyingParty {
            id: "portal.example",
            name: "EdgeCoder",
            origins,
        }
    }

    /// A software authenticator: one P-256 credential.
    struct Authenticator {
        key: SigningKey,
        id: Vec<u8>,
        flags: u8,
        count: u32,
        rp_id: &'static str,
    }

    impl Authenticator {
        fn new(seed: u8) -> Authenticator {
            let mut scalar = [seed; 32];
            scalar[0] = 1;
            Authenticator {
                key: SigningKey::from_slice(&scalar).expect("key"),
                id: vec![seed; 16],
                flags: FLAG_UP | FLAG_UV,
                count: 1,
                rp_id: "portal.example",
            }
        }

        fn cose(&self) -> Vec<u8> {
            let point = self.key.verifying_key().to_encoded_point(false);
            let int = |i: i64| Cbor::Integer(i.into());
            let map = Cbor::Map(vec![
                (int(1), int(2)),
                (int(3), int(-7)),
                (int(-1), int(1)),
                (int(-2), Cbor::Bytes(point.x().expect("x").to_vec())),
                (int(-3), Cbor::Bytes(point.y().expect("y").to_vec())),
            ]);
            let mut out = Vec::new();
            ciborium::ser::into_writer(&map, &mut out).expect("cbor");
            out
        }

        fn auth_data(&self, attested: bool) -> Vec<u8> {
            let mut raw = Sha256::digest(self.rp_id.as_bytes()).to_vec();
            raw.push(self.flags | if attested { FLAG_AT } else { 0 });
            raw.extend_from_slice(&self.count.to_be_bytes());
            if attested {
                raw.extend_from_slice(&[0u8; 16]);
                let len = u16::try_from(self.id.len()).expect("len");
                raw.extend_from_slice(&len.to_be_bytes());
                raw.extend_from_slice(&self.id);
                raw.extend_from_slice(&self.cose());
            }
            raw
        }

        fn client_data(kind: &str, options: &Json, origin: &str) -> Vec<u8> {
            json!({"type": kind, "challenge": options["challenge"], "origin": origin})
                .to_string()
                .into_bytes()
        }

        fn create(&self, options: &Json, origin: &str) -> RegistrationResponseJson {
            let client_data = Self::client_data("webauthn.create", options, origin);
            let text = |s: &str| Cbor::Text(s.into());
            let att = Cbor::Map(vec![
                (text("fmt"), text("none")),
                (text("attStmt"), Cbor::Map(vec![])),
                (text("authData"), Cbor::Bytes(self.auth_data(true))),
            ]);
            let mut att_bytes = Vec::new();
            ciborium::ser::into_writer(&att, &mut att_bytes).expect("cbor");
            serde_json::from_value(json!({
                "id": b64(&self.id),
                "rawId": b64(&self.id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64(&client_data),
                    "attestationObject": b64(&att_bytes),
                    "transports": ["internal", "carrier-pigeon"],
                },
            }))
            .expect("response")
        }

        fn get(&self, options: &Json, origin: &str, handle: &str) -> AuthenticationResponseJson {
            let client_data = Self::client_data("webauthn.get", options, origin);
            let auth = self.auth_data(false);
            let mut signed = auth.clone();
            signed.extend_from_slice(&Sha256::digest(&client_data));
            let sig: Signature = self.key.sign(&signed);
            serde_json::from_value(json!({
                "id": b64(&self.id),
                "rawId": b64(&self.id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64(&client_data),
                    "authenticatorData": b64(&auth),
                    "signature": b64(sig.to_der().as_bytes()),
                    "userHandle": handle,
                },
            }))
            .expect("response")
        }
    }

    fn register(a: &Authenticator, origins: &[String]) -> Result<NewPasskey, Error> {
        let rp = rp(origins);
        let user = UserEntity {
            handle: "aGFuZGxl",
            name: "ada@example.com",
            display_name: "Ada",
        };
        let challenge = Challenge::new([7; 32]);
        let (options, state) = start_registration(&rp, "u1", &user, &[], &challenge);
        assert_eq!(options["challenge"], json!(challenge.0));
        assert_eq!(
            options["authenticatorSelection"]["userVerification"],
            "required"
        );
        let response = RegistrationResponse::read(&rp, a.create(&options, ORIGIN))?;
        assert_eq!(response.challenge(), &challenge);
        finish_registration(&rp, state, response)
    }

    #[test]
    fn a_registration_finishes_with_what_to_store() {
        let origins = vec![ORIGIN.to_owned()];
        let a = Authenticator::new(3);
        let p = register(&a, &origins).expect("registered");
        assert_eq!(p.id, b64(&a.id));
        assert_eq!((p.user_id.as_str(), p.alg, p.sign_count), ("u1", -7, 1));
        assert_eq!(p.transports, ["internal"]);
        assert!(!p.backup_eligible);
        assert!(CoseKey::from_cbor(&p.public_key_cbor).is_ok());
    }

    #[test]
    fn registrations_from_elsewhere_or_without_verification_are_refused() {
        let origins = vec![ORIGIN.to_owned()];
        let rp = rp(&origins);
        let user = UserEntity {
            handle: "aGFuZGxl",
            name: "ada@example.com",
            display_name: "Ada",
        };
        let (options, _) = start_registration(&rp, "u1", &user, &[], &Challenge::new([1; 32]));
        let a = Authenticator::new(4);
        let refused = |json| RegistrationResponse::read(&rp, json).map(|_| ());
        assert!(matches!(
            refused(a.create(&options, "https://evil.example")),
            Err(Error::Passkey(Refusal::Origin))
        ));
        let mut other_rp = Authenticator::new(4);
        other_rp.rp_id = "evil.example";
        let response = RegistrationResponse::read(&rp, other_rp.create(&options, ORIGIN))
            .expect("client data passes");
        let state = PasskeyRegistration::resume(Challenge::new([1; 32]), "u1".into());
        assert!(finish_registration(&rp, state.clone(), response).is_err());
        let mut no_uv = Authenticator::new(4);
        no_uv.flags = FLAG_UP;
        let response =
            RegistrationResponse::read(&rp, no_uv.create(&options, ORIGIN)).expect("read");
        assert!(finish_registration(&rp, state, response).is_err());
    }

    fn assert_with(
        a: &Authenticator,
        state_user: Option<&str>,
        stored: Option<StoredPasskey<'_>>,
        handle: &str,
    ) -> Result<Assertion, Error> {
        let origins = vec![ORIGIN.to_owned()];
        let rp = rp(&origins);
        let ceremony = if state_user.is_some() {
            Ceremony::StepUp
        } else {
            Ceremony::Authentication
        };
        let challenge = Challenge::new([9; 32]);
        let (options, state) = start_authentication(&rp, ceremony, state_user, &[], &challenge);
        let json = a.get(&options, ORIGIN, handle);
        // A sign-in response does not answer a registration.
        assert!(AuthenticationResponse::read(&rp, Ceremony::Registration, &json).is_err());
        let response = AuthenticationResponse::read(&rp, ceremony, &json)?;
        assert_eq!(response.challenge(), &challenge);
        block_on(finish_authentication(
            &rp,
            state,
            response,
            stored,
            &SoftwareSignatures,
        ))
    }

    #[test]
    fn assertions_are_bound_to_the_key_the_user_and_the_backup_flag() {
        let a = Authenticator::new(5);
        let cose = a.cose();
        let stored = |user: &'static str, be: bool| StoredPasskey {
            user_id: user,
            public_key_cbor: &cose,
            backup_eligible: be,
            user_handle: Some("aGFuZGxl"),
        };
        let ok = assert_with(&a, None, Some(stored("u1", false)), "aGFuZGxl").expect("signed in");
        assert_eq!((ok.user_id.as_str(), ok.sign_count), ("u1", 1));
        assert_eq!(ok.credential_id, b64(&a.id));
        assert!(assert_with(&a, Some("u1"), Some(stored("u1", false)), "").is_ok());
        assert!(matches!(
            assert_with(&a, Some("u2"), Some(stored("u1", false)), ""),
            Err(Error::PasskeyUserMismatch)
        ));
        assert!(matches!(
            assert_with(&a, None, Some(stored("u1", false)), "b3RoZXI"),
            Err(Error::PasskeyUserMismatch)
        ));
        assert!(matches!(
            assert_with(&a, None, Some(stored("u1", true)), ""),
            Err(Error::PasskeyBackupStateChanged)
        ));
        assert!(matches!(
            assert_with(&a, None, None, ""),
            Err(Error::PasskeyAssertionInvalid)
        ));
        let other = Authenticator::new(6);
        let other_cose = other.cose();
        let wrong_key = StoredPasskey {
            public_key_cbor: &other_cose,
            ..stored("u1", false)
        };
        assert!(matches!(
            assert_with(&a, None, Some(wrong_key), ""),
            Err(Error::PasskeyAssertionInvalid)
        ));
    }

    #[test]
    fn a_state_finishes_only_the_ceremony_it_was_started_for() {
        let origins = vec![ORIGIN.to_owned()];
        let rp = rp(&origins);
        let a = Authenticator::new(7);
        let user = UserEntity {
            handle: "aGFuZGxl",
            name: "ada@example.com",
            display_name: "Ada",
        };
        let (options, _) = start_registration(&rp, "u1", &user, &[], &Challenge::new([1; 32]));
        let response = RegistrationResponse::read(&rp, a.create(&options, ORIGIN)).expect("read");
        let other = PasskeyRegistration::resume(Challenge::new([2; 32]), "u1".into());
        assert!(matches!(
            finish_registration(&rp, other, response),
            Err(Error::PasskeyChallengeInvalid)
        ));
        let challenge = Challenge::new([3; 32]);
        let (options, _) =
            start_authentication(&rp, Ceremony::Authentication, None, &[], &challenge);
        let json = a.get(&options, ORIGIN, "");
        let cose = a.cose();
        let stored = StoredPasskey {
            user_id: "u1",
            public_key_cbor: &cose,
            backup_eligible: false,
            user_handle: None,
        };
        for state in [
            PasskeyAuthentication::resume(challenge.clone(), Ceremony::StepUp, None),
            PasskeyAuthentication::resume(Challenge::new([4; 32]), Ceremony::Authentication, None),
        ] {
            let response =
                AuthenticationResponse::read(&rp, Ceremony::Authentication, &json).expect("read");
            let finished = block_on(finish_authentication(
                &rp,
                state,
                response,
                Some(stored.clone()),
                &SoftwareSignatures,
            ));
            assert!(matches!(finished, Err(Error::PasskeyChallengeInvalid)));
        }
    }
}
