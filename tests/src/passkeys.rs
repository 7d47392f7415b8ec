//! Passkey checks: full registration and sign-in
//! ceremonies over HTTP with a real software authenticator nobody here
//! wrote (1Password's `passkey-authenticator` behind `passkey-client`), for
//! ES256 and EdDSA, and each refusal the relying party owes: wrong origin,
//! wrong RP id, a replayed assertion, UV or UP cleared, a counter that went
//! backwards, another user's credential, tampered client data, an unknown
//! credential, and a registration challenge used to sign in. Expired
//! challenges need a clock the suite cannot move: the native runtime's
//! in-process tests cover them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use passkey_authenticator::{Authenticator, UiHint, UserCheck, UserValidationMethod};
use passkey_client::{Client as WebauthnClient, DefaultClientData};
use passkey_crypto::iana;
use passkey_crypto::rust_crypto::RustCryptoBackend;
use passkey_types::Passkey;
use passkey_types::ctap2::{Aaguid, Ctap2Error, get_assertion};
use passkey_types::webauthn::{CredentialCreationOptions, CredentialRequestOptions};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::identity::{Account, Ctx, PASSWORD};
use crate::{Reply, expect_problem};

/// The person at the authenticator: what it answers becomes UP and UV.
struct Person {
    presence: bool,
    verification: bool,
}

#[async_trait::async_trait]
impl UserValidationMethod for Person {
    type PasskeyItem = Passkey;
    async fn check_user<'a>(
        &self,
        hint: UiHint<'a, Passkey>,
        _presence: bool,
        _verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        // The authenticator only informs about an excluded credential; a
        // person would stop there.
        if let UiHint::InformExcludedCredentialFound(_) = hint {
            return Err(Ctap2Error::CredentialExcluded);
        }
        Ok(UserCheck {
            presence: self.presence,
            verification: self.verification,
        })
    }
    fn is_presence_enabled(&self) -> bool {
        true
    }
    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

type Inner =
    WebauthnClient<Option<Passkey>, Person, RustCryptoBackend, public_suffix::PublicSuffixList, ()>;

/// A device with one software passkey.
pub struct Device {
    client: Inner,
    rt: tokio::runtime::Runtime,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

impl Device {
    /// A device whose authenticator makes `alg` keys and whose person
    /// answers presence and verification as given.
    pub fn new(
        alg: iana::Algorithm,
        presence: bool,
        verification: bool,
        store: Option<Passkey>,
    ) -> Device {
        let mut auth = Authenticator::new(
            Aaguid::new_empty(),
            store,
            Person {
                presence,
                verification,
            },
            RustCryptoBackend,
        );
        auth.set_make_credentials_with_signature_counter(true);
        let _ = auth.set_algorithms(&[alg]);
        Device {
            client: WebauthnClient::new(auth).allows_insecure_localhost(true),
            rt: rt(),
        }
    }

    /// The stored passkey (to copy it, or restore an older state).
    pub fn passkey(&self) -> Option<Passkey> {
        self.client.authenticator().store().clone()
    }

    /// Puts back a stored passkey state.
    pub fn restore(&mut self, p: Option<Passkey>) {
        *self.client.authenticator_mut().store_mut() = p;
    }

    /// `navigator.credentials.create()` at `origin` with the RP's options.
    pub fn register(&mut self, origin: &str, options: &Json) -> Result<Json, String> {
        let req: CredentialCreationOptions = serde_json::from_value(json!({"publicKey": options}))
            .map_err(|e| format!("options: {e}"))?;
        let url = url::Url::parse(origin).map_err(|e| e.to_string())?;
        let cred = self
            .rt
            .block_on(self.client.register(url, req, DefaultClientData))
            .map_err(|e| format!("authenticator: {e:?}"))?;
        serde_json::to_value(&cred).map_err(|e| e.to_string())
    }

    /// `navigator.credentials.get()` at `origin` with the RP's options.
    pub fn authenticate(&mut self, origin: &str, options: &Json) -> Result<Json, String> {
        let req: CredentialRequestOptions = serde_json::from_value(json!({"publicKey": options}))
            .map_err(|e| format!("options: {e}"))?;
        let url = url::Url::parse(origin).map_err(|e| e.to_string())?;
        let cred = self
            .rt
            .block_on(self.client.authenticate(url, req, DefaultClientData))
            .map_err(|e| format!("authenticator: {e:?}"))?;
        serde_json::to_value(&cred).map_err(|e| e.to_string())
    }

    /// An assertion straight from the authenticator, past the client's own
    /// checks (which would refuse a wrong RP id or UP = false): the client
    /// data is built here.
    pub fn raw_assertion(
        &mut self,
        origin: &str,
        rp_id: &str,
        challenge: &str,
        up: bool,
        uv: bool,
    ) -> Result<Json, String> {
        let client_data = json!({"type": "webauthn.get", "challenge": challenge, "origin": origin, "crossOrigin": false}).to_string();
        let hash = Sha256::digest(client_data.as_bytes()).to_vec();
        let store = self.passkey();
        let mut auth = Authenticator::new(
            Aaguid::new_empty(),
            store,
            Person {
                presence: up,
                verification: uv,
            },
            RustCryptoBackend,
        );
        auth.set_make_credentials_with_signature_counter(true);
        let resp = self
            .rt
            .block_on(auth.get_assertion(get_assertion::Request {
                rp_id: rp_id.into(),
                client_data_hash: hash.into(),
                allow_list: None,
                extensions: None,
                options: get_assertion::Options { up, uv },
                pin_auth: None,
                pin_protocol: None,
            }))
            .map_err(|e| format!("authenticator: {e:?}"))?;
        let id = self
            .passkey()
            .map(|p| URL_SAFE_NO_PAD.encode(p.credential_id.as_slice()))
            .unwrap_or_default();
        Ok(json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {
                "clientDataJSON": URL_SAFE_NO_PAD.encode(client_data.as_bytes()),
                "authenticatorData": URL_SAFE_NO_PAD.encode(resp.auth_data.to_vec()),
                "signature": URL_SAFE_NO_PAD.encode(resp.signature.as_slice()),
                "userHandle": resp.user.map(|u| URL_SAFE_NO_PAD.encode(u.id.as_slice())),
            },
            "clientExtensionResults": {},
        }))
    }
}

/// The origin the suite's deployments allow.
fn origin(x: &Ctx) -> String {
    x.target.allowed_origin.clone()
}

fn ok_json(r: Reply, status: u16, what: &str) -> Result<Json, String> {
    if r.status != status {
        return Err(format!(
            "{what}: {} want {status}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    r.json()
}

/// Registration options for `a` (signed in, step-up fresh from login).
fn register_options(x: &Ctx, a: &Account) -> Result<Json, String> {
    let r = x.call(
        "POST",
        "/auth/passkeys/register/options",
        "/auth/passkeys/register/options",
        Some(&a.access),
        None,
        &[],
    )?;
    ok_json(r, 200, "register options")
}

fn register_verify(x: &Ctx, a: &Account, credential: &Json) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/passkeys/register/verify",
        "/auth/passkeys/register/verify",
        Some(&a.access),
        Some(&json!({"credential": credential, "name": "suite key"})),
        &[],
    )
}

/// An account with a registered passkey on `device`.
fn enrolled(x: &Ctx, tag: &str, device: &mut Device) -> Result<(Account, String), String> {
    let a = x.account(tag, true)?;
    let options = register_options(x, &a)?;
    let cred = device.register(&origin(x), &options)?;
    let v = ok_json(register_verify(x, &a, &cred)?, 201, "register verify")?;
    Ok((a, v["id"].as_str().unwrap_or("").to_owned()))
}

fn login_options(x: &Ctx, email: Option<&str>) -> Result<Json, String> {
    let body = email.map(|e| json!({"email": e})).unwrap_or(json!({}));
    ok_json(
        x.send(
            "POST",
            "/auth/passkeys/login/options",
            None,
            Some(&body),
            &[],
        )?,
        200,
        "login options",
    )
}

fn step_up_options(x: &Ctx, access: &str) -> Result<Json, String> {
    ok_json(
        x.send(
            "POST",
            "/auth/passkeys/step-up/options",
            Some(access),
            Some(&json!({})),
            &[],
        )?,
        200,
        "step-up options",
    )
}

fn login_verify(x: &Ctx, credential: &Json) -> Result<Reply, String> {
    x.call(
        "POST",
        "/auth/passkeys/login/verify",
        "/auth/passkeys/login/verify",
        None,
        Some(&json!({"credential": credential, "client": "device"})),
        &[],
    )
}

fn claims(token: &str) -> Json {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Json::Null)
}

type PasskeyCheck = fn(&Ctx) -> Result<(), String>;

/// Every passkey check, by name.
pub fn checks() -> Vec<(&'static str, PasskeyCheck)> {
    vec![
        ("passkey_ceremonies_es256", passkey_ceremonies_es256),
        ("passkey_ceremonies_eddsa", passkey_ceremonies_eddsa),
        (
            "passkey_wrong_origin_is_refused",
            passkey_wrong_origin_is_refused,
        ),
        (
            "passkey_wrong_rp_id_is_refused",
            passkey_wrong_rp_id_is_refused,
        ),
        (
            "passkey_replayed_assertion_is_refused",
            passkey_replayed_assertion_is_refused,
        ),
        (
            "passkey_without_uv_is_refused",
            passkey_without_uv_is_refused,
        ),
        (
            "passkey_without_up_is_refused",
            passkey_without_up_is_refused,
        ),
        (
            "passkey_counter_regression_is_refused",
            passkey_counter_regression_is_refused,
        ),
        (
            "passkey_of_another_user_is_refused",
            passkey_of_another_user_is_refused,
        ),
        (
            "passkey_tampered_client_data_is_refused",
            passkey_tampered_client_data_is_refused,
        ),
        (
            "passkey_unknown_credential_is_refused",
            passkey_unknown_credential_is_refused,
        ),
        (
            "passkey_registration_challenge_cannot_sign_in",
            passkey_registration_challenge_cannot_sign_in,
        ),
        (
            "passkey_registration_stays_in_its_session",
            passkey_registration_stays_in_its_session,
        ),
        (
            "passkey_login_options_do_not_reveal_accounts",
            passkey_login_options_do_not_reveal_accounts,
        ),
        (
            "passkeys_are_listed_renamed_and_deleted",
            passkeys_are_listed_renamed_and_deleted,
        ),
    ]
}

fn ceremonies(x: &Ctx, alg: iana::Algorithm, cose: i64, tag: &str) -> Result<(), String> {
    let mut device = Device::new(alg, true, true, None);
    let (a, id) = enrolled(x, tag, &mut device)?;
    let listed = ok_json(
        x.send("GET", "/auth/passkeys", Some(&a.access), None, &[])?,
        200,
        "list",
    )?;
    if listed["passkeys"][0]["alg"] != cose || listed["passkeys"][0]["id"] != id.as_str() {
        return Err(format!("listed {listed}"));
    }
    // Discoverable sign-in: no email, the authenticator picks the passkey.
    let options = login_options(x, None)?;
    if options["allowCredentials"] != json!([]) || options["userVerification"] != "required" {
        return Err(format!("discoverable options {options}"));
    }
    let assertion = device.authenticate(&origin(x), &options)?;
    let tokens = ok_json(login_verify(x, &assertion)?, 200, "login verify")?;
    let access = tokens["access_token"].as_str().unwrap_or("");
    let c = claims(access);
    if c["sub"] != a.id.as_str()
        || !c["amr"]
            .as_array()
            .is_some_and(|m| m.iter().any(|v| v == "pop"))
    {
        return Err(format!("claims {c}"));
    }
    if tokens["refresh_token"].as_str().is_none() {
        return Err("no refresh token for a device sign-in".into());
    }
    // With the email: the same answer (nothing listed), and it signs in.
    let options = login_options(x, Some(&a.email))?;
    if options["allowCredentials"] != json!([]) {
        return Err(format!("options for the email {options}"));
    }
    let assertion = device.authenticate(&origin(x), &options)?;
    ok_json(login_verify(x, &assertion)?, 200, "login verify with email")?;
    // Step-up by passkey, over a challenge bound to this user.
    let options = step_up_options(x, access)?;
    let assertion = device.authenticate(&origin(x), &options)?;
    let r = x.call(
        "POST",
        "/auth/step-up",
        "/auth/step-up",
        Some(access),
        Some(&json!({"passkey": assertion})),
        &[],
    )?;
    ok_json(r, 200, "step-up by passkey")?;
    Ok(())
}

fn passkey_ceremonies_es256(x: &Ctx) -> Result<(), String> {
    ceremonies(x, iana::Algorithm::ES256, -7, "pk-es256")
}

fn passkey_ceremonies_eddsa(x: &Ctx) -> Result<(), String> {
    ceremonies(x, iana::Algorithm::EdDSA, -8, "pk-eddsa")
}

fn passkey_wrong_origin_is_refused(x: &Ctx) -> Result<(), String> {
    // The RP id is right (localhost) but the page is elsewhere.
    let evil = "https://evil.example";
    let a = x.account("pk-origin", true)?;
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    let options = register_options(x, &a)?;
    let cred = device.register(evil, &options)?;
    expect_problem(
        &register_verify(x, &a, &cred)?,
        400,
        "passkey_origin_invalid",
    )
    .map_err(|e| format!("registration: {e}"))?;
    let (_, _) = enrolled(x, "pk-origin2", &mut device)?;
    let assertion = device.authenticate(evil, &login_options(x, None)?)?;
    expect_problem(&login_verify(x, &assertion)?, 400, "passkey_origin_invalid")
        .map_err(|e| format!("sign-in: {e}"))
}

fn passkey_wrong_rp_id_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-rpid", &mut device)?;
    let options = login_options(x, None)?;
    let challenge = options["challenge"].as_str().unwrap_or("");
    let assertion = device.raw_assertion(&origin(x), "evil.example", challenge, true, true)?;
    expect_problem(&login_verify(x, &assertion)?, 400, "passkey_rp_id_invalid")
}

fn passkey_replayed_assertion_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-replay", &mut device)?;
    let assertion = device.authenticate(&origin(x), &login_options(x, None)?)?;
    ok_json(login_verify(x, &assertion)?, 200, "first use")?;
    expect_problem(
        &login_verify(x, &assertion)?,
        400,
        "passkey_challenge_invalid",
    )
}

fn passkey_without_uv_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-uv", &mut device)?;
    // The same passkey on an authenticator whose person skips verification
    // (the options must say "discouraged" for the authenticator to go on).
    let mut lazy = Device::new(iana::Algorithm::ES256, true, false, device.passkey());
    let mut options = login_options(x, None)?;
    options["userVerification"] = json!("discouraged");
    let assertion = lazy.authenticate(&origin(x), &options)?;
    expect_problem(
        &login_verify(x, &assertion)?,
        400,
        "passkey_user_verification_missing",
    )
    .map_err(|e| format!("sign-in: {e}"))?;
    // Nor can a registration without UV be stored.
    let a = x.account("pk-uv-reg", true)?;
    let mut options = register_options(x, &a)?;
    options["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let mut fresh = Device::new(iana::Algorithm::ES256, true, false, None);
    let cred = fresh.register(&origin(x), &options)?;
    expect_problem(
        &register_verify(x, &a, &cred)?,
        400,
        "passkey_user_verification_missing",
    )
    .map_err(|e| format!("registration: {e}"))
}

fn passkey_without_up_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-up", &mut device)?;
    let options = login_options(x, None)?;
    let challenge = options["challenge"].as_str().unwrap_or("");
    let assertion = device.raw_assertion(&origin(x), "localhost", challenge, false, true)?;
    expect_problem(
        &login_verify(x, &assertion)?,
        400,
        "passkey_user_presence_missing",
    )
}

fn passkey_counter_regression_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    let (a, id) = enrolled(x, "pk-clone", &mut device)?;
    let first = device.authenticate(&origin(x), &login_options(x, None)?)?;
    ok_json(login_verify(x, &first)?, 200, "counter 1")?;
    let copy = device.passkey();
    let second = device.authenticate(&origin(x), &login_options(x, None)?)?;
    ok_json(login_verify(x, &second)?, 200, "counter 2")?;
    // A clone made at counter 1 signs in with counter 2 again.
    let mut clone = Device::new(iana::Algorithm::ES256, true, true, copy);
    let cloned = clone.authenticate(&origin(x), &login_options(x, None)?)?;
    expect_problem(&login_verify(x, &cloned)?, 401, "passkey_clone_suspected")?;
    // Flagged for good: neither copy signs in until the owner deletes it.
    let original = device.authenticate(&origin(x), &login_options(x, None)?)?;
    expect_problem(&login_verify(x, &original)?, 401, "passkey_clone_suspected")
        .map_err(|e| format!("after flagging: {e}"))?;
    let listed = ok_json(
        x.send("GET", "/auth/passkeys", Some(&a.access), None, &[])?,
        200,
        "list",
    )?;
    if listed["passkeys"][0]["clone_suspected"] != true {
        return Err(format!("not flagged: {listed}"));
    }
    let (_, admin) = x.admin()?;
    let events = ok_json(
        x.send(
            "GET",
            "/auth/admin/audit?action=auth.passkey.clone_suspected&limit=50",
            Some(&admin),
            None,
            &[],
        )?,
        200,
        "audit",
    )?;
    let found = events["events"].as_array().is_some_and(|e| {
        e.iter()
            .any(|ev| ev["target"] == id.as_str() && ev["details"]["severity"] == "critical")
    });
    if found {
        Ok(())
    } else {
        Err(format!("no critical audit event: {events}"))
    }
}

fn passkey_of_another_user_is_refused(x: &Ctx) -> Result<(), String> {
    let mut alice_device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-alice", &mut alice_device)?;
    let mut bob_device = Device::new(iana::Algorithm::ES256, true, true, None);
    let (bob, _) = enrolled(x, "pk-bob", &mut bob_device)?;
    // Bob steps up with Alice's passkey over Bob's step-up challenge.
    let mut options = step_up_options(x, &bob.access)?;
    options["allowCredentials"] = json!([]);
    let assertion = alice_device.authenticate(&origin(x), &options)?;
    let r = x.send(
        "POST",
        "/auth/step-up",
        Some(&bob.access),
        Some(&json!({"passkey": assertion})),
        &[],
    )?;
    expect_problem(&r, 401, "passkey_user_mismatch").map_err(|e| format!("step-up: {e}"))?;
    // Nor does a sign-in challenge serve for step-up, even with his own passkey.
    let assertion = bob_device.authenticate(&origin(x), &login_options(x, None)?)?;
    let r = x.send(
        "POST",
        "/auth/step-up",
        Some(&bob.access),
        Some(&json!({"passkey": assertion})),
        &[],
    )?;
    expect_problem(&r, 400, "passkey_challenge_invalid")
        .map_err(|e| format!("sign-in challenge at step-up: {e}"))?;
    // Alice's assertion presented with Bob's user handle.
    let bob_assertion = bob_device.authenticate(&origin(x), &login_options(x, None)?)?;
    let mut mixed = alice_device.authenticate(&origin(x), &login_options(x, None)?)?;
    mixed["response"]["userHandle"] = bob_assertion["response"]["userHandle"].clone();
    expect_problem(&login_verify(x, &mixed)?, 401, "passkey_user_mismatch")
        .map_err(|e| format!("user handle: {e}"))
}

fn passkey_tampered_client_data_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-tamper", &mut device)?;
    let mut assertion = device.authenticate(&origin(x), &login_options(x, None)?)?;
    let raw = URL_SAFE_NO_PAD
        .decode(
            assertion["response"]["clientDataJSON"]
                .as_str()
                .unwrap_or(""),
        )
        .map_err(|e| e.to_string())?;
    let mut cd: Json = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    cd["tampered"] = json!(true);
    assertion["response"]["clientDataJSON"] = json!(URL_SAFE_NO_PAD.encode(cd.to_string()));
    expect_problem(
        &login_verify(x, &assertion)?,
        401,
        "passkey_assertion_invalid",
    )
}

fn passkey_unknown_credential_is_refused(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    enrolled(x, "pk-unknown", &mut device)?;
    let mut assertion = device.authenticate(&origin(x), &login_options(x, None)?)?;
    let fake = URL_SAFE_NO_PAD.encode(b"no such credential anywhere");
    assertion["id"] = json!(fake);
    assertion["rawId"] = json!(fake);
    // The same answer as a bad signature: ids cannot be probed.
    expect_problem(
        &login_verify(x, &assertion)?,
        401,
        "passkey_assertion_invalid",
    )
}

fn passkey_registration_challenge_cannot_sign_in(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    let (a, _) = enrolled(x, "pk-ceremony", &mut device)?;
    let reg = register_options(x, &a)?;
    let mut options = login_options(x, None)?;
    options["challenge"] = reg["challenge"].clone();
    let assertion = device.authenticate(&origin(x), &options)?;
    expect_problem(
        &login_verify(x, &assertion)?,
        400,
        "passkey_challenge_invalid",
    )
}

fn passkey_registration_stays_in_its_session(x: &Ctx) -> Result<(), String> {
    let a = x.account("pk-session", true)?;
    // The same user signed in elsewhere cannot finish this ceremony.
    let other = ok_json(x.login(&a.email, PASSWORD)?, 200, "second sign-in")?;
    let other_access = other["access_token"].as_str().unwrap_or("").to_owned();
    let options = register_options(x, &a)?;
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    let cred = device.register(&origin(x), &options)?;
    let r = x.send(
        "POST",
        "/auth/passkeys/register/verify",
        Some(&other_access),
        Some(&json!({"credential": cred})),
        &[],
    )?;
    expect_problem(&r, 400, "passkey_challenge_invalid")?;
    // The session that asked for it can.
    let options = register_options(x, &a)?;
    let cred = device.register(&origin(x), &options)?;
    ok_json(register_verify(x, &a, &cred)?, 201, "same session")?;
    Ok(())
}

fn passkey_login_options_do_not_reveal_accounts(x: &Ctx) -> Result<(), String> {
    // Every email-scoped request is answered as the email-less one: an
    // unknown address, an account without passkeys and one with a passkey
    // get the same options but for the challenge (a list, with its count and
    // transports, would tell them apart).
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    let (with_keys, _) = enrolled(x, "pk-listed", &mut device)?;
    let without = x.account("pk-nopasskey", true)?;
    let strip = |mut v: Json| -> Json {
        if let Some(o) = v.as_object_mut() {
            o.remove("challenge");
        }
        v
    };
    let base = login_options(x, None)?;
    let mut challenges = std::collections::BTreeSet::new();
    challenges.insert(base["challenge"].to_string());
    for email in [
        Some(x.email("pk-nobody")),
        Some(without.email.clone()),
        Some(with_keys.email.clone()),
    ] {
        let v = login_options(x, email.as_deref())?;
        challenges.insert(v["challenge"].to_string());
        if strip(v.clone()) != strip(base.clone()) {
            return Err(format!("options for {email:?} differ: {v} vs {base}"));
        }
    }
    if challenges.len() != 4 {
        return Err("challenges are not fresh per request".into());
    }
    Ok(())
}

fn passkeys_are_listed_renamed_and_deleted(x: &Ctx) -> Result<(), String> {
    let mut device = Device::new(iana::Algorithm::ES256, true, true, None);
    let (a, id) = enrolled(x, "pk-manage", &mut device)?;
    let path = format!("/auth/passkeys/{id}");
    let r = x.call(
        "PATCH",
        "/auth/passkeys/{id}",
        &path,
        Some(&a.access),
        Some(&json!({"name": "laptop"})),
        &[],
    )?;
    ok_json(r, 200, "rename")?;
    let other = x.account("pk-manage-other", true)?;
    expect_problem(
        &x.send(
            "PATCH",
            &path,
            Some(&other.access),
            Some(&json!({"name": "mine"})),
            &[],
        )?,
        404,
        "passkey_not_found",
    )?;
    expect_problem(
        &x.send("DELETE", &path, Some(&other.access), None, &[])?,
        404,
        "passkey_not_found",
    )?;
    let r = x.call(
        "DELETE",
        "/auth/passkeys/{id}",
        &path,
        Some(&a.access),
        None,
        &[],
    )?;
    ok_json(r, 200, "delete")?;
    let listed = ok_json(
        x.send("GET", "/auth/passkeys", Some(&a.access), None, &[])?,
        200,
        "list",
    )?;
    if listed["passkeys"] != json!([]) {
        return Err(format!("still listed {listed}"));
    }
    // The deleted passkey no longer signs in.
    let assertion = device.authenticate(&origin(x), &login_options(x, None)?)?;
    expect_problem(
        &login_verify(x, &assertion)?,
        401,
        "passkey_assertion_invalid",
    )
}
