//! Test-only routes of the auth function, compiled only with the
//! `danger-test-routes` feature (test harnesses and benchmarks) and mounted
//! only when `insecure_test_routes` is on: the conformance echo and ports
//! routes, the development outbox over HTTP, and the CPU benchmark with the
//! test vectors it verifies. Release artefacts contain none of it.

use std::rc::Rc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::router::{endpoint, handler, object, ok};
use edgecoder_kernel::{Config, HandlerResult, Request, Response, Router, Services, tokens};
use serde_json::json;

use crate::{DOCS, Error, NAME, api, oidc, outbox_messages, password, webauthn};

/// `r` with the test routes, when the setting asks for them.
pub fn mount(r: Router, config: &Config) -> Router {
    if !config.insecure_test_routes {
        return r;
    }
    r
            .merge(edgecoder_kernel::testroutes::routes(
                NAME,
                "/auth/_test/echo",
                "auth_test_echo",
                "/auth/_test/ports",
                "auth_test_ports",
            ))
            .route(
                Method::GET,
                "/auth/_test/outbox",
                handler(outbox),
                DOCS.op(
                    "auth_test_outbox",
                    "Development outbox messages for ?to= (insecure_test_routes only)",
                    None,
                    vec![ok(200, "{messages}")],
                ),
            )
            .route(
                Method::POST,
                "/auth/_test/bench",
                endpoint(|s, r| async move { bench(&s, r).await }),
                DOCS.op(
                    "auth_test_bench",
                    "Runs one credential operation N times inside the runtime, for CPU benchmarks (insecure_test_routes only)",
                    object(
                        &["op", "iterations"],
                        json!({"op": {"enum": ["noop", "token_issue", "token_verify", "argon2_hash", "argon2_verify", "passkey_es256", "passkey_eddsa", "passkey_rs256", "id_token_es256", "id_token_rs256"]}, "iterations": {"type": "integer", "minimum": 1, "maximum": 1000}}),
                    ),
                    vec![ok(200, "{op, iterations}")],
                ),
            )
}

#[derive(serde::Deserialize)]
struct Bench {
    op: String,
    iterations: u32,
}

/// Runs a credential operation `iterations` times so a client can time the
/// CPU it costs inside this runtime (wall time of a CPU-bound request, minus
/// a `noop` request's).
async fn bench(s: &Services, req: Request) -> Result<Response, Error> {
    let b: Bench = req.json()?;
    let n = b.iterations.clamp(1, 1000);
    let now = s.clock.now_ms();
    let key = s
        .config
        .signing_key
        .as_ref()
        .ok_or_else(|| edgecoder_kernel::Error::Config("no signing key".into()))?;
    let claims = tokens::AccessClaims {
        iss: s.config.issuer.clone(),
        aud: s.config.audience.clone(),
        sub: "bench".into(),
        sid: "bench".into(),
        jti: "bench".into(),
        roles: vec!["user".into()],
        auth_time: now / 1000,
        amr: vec!["pwd".into()],
    };
    let verifier = tokens::Verifier::from_config(&s.config, now);
    let token = tokens::issue(key, claims.clone(), now, 60)?;
    // A stored hash to verify against, made only when that is what is timed
    // (the client subtracts a `noop` request, which must not hash).
    let stored = if b.op == "argon2_verify" {
        password::hash("benchmark password", s.rng.as_ref())?
    } else {
        String::new()
    };
    // Passkey assertions: a signature over authenticator data and the
    // client data hash, made once, verified N times.
    let signed = [0x49u8; 69];
    let es_key = p256::ecdsa::SigningKey::from_slice(&[3u8; 32])
        .map_err(|_| edgecoder_kernel::Error::Config("bench key".into()))?;
    let es_sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&es_key, &signed);
    let es_cose = webauthn::CoseKey::Es256(
        es_key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
    );
    let ed_key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let ed_sig = ed25519_dalek::Signer::sign(&ed_key, &signed);
    let ed_cose = webauthn::CoseKey::EdDsa(ed_key.verifying_key().to_bytes());
    let rs = webauthn::rs256_vector()
        .ok_or_else(|| edgecoder_kernel::Error::Config("rs256 vector".into()))?;
    // ID tokens: an ES256 one signed here (checked through the signature
    // port, WebCrypto on Workers) and the RS256 vector.
    let id_rs = oidc::rs256_vector()
        .ok_or_else(|| edgecoder_kernel::Error::Config("id token vector".into()))?;
    let id_es_keys = vec![oidc::Jwk {
        kid: Some("bench-ec".into()),
        key: oidc::JwkKey::P256(
            es_key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        ),
    }];
    let id_es_token = {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "bench-ec"}).to_string()),
            URL_SAFE_NO_PAD.encode(
                json!({"iss": id_rs.issuer, "aud": id_rs.client_id, "sub": "bench", "nonce": id_rs.nonce,
                       "iat": id_rs.now, "exp": id_rs.now + 600})
                .to_string()
            )
        );
        let sig: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&es_key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    };
    let mut ok = true;
    for _ in 0..n {
        match b.op.as_str() {
            "noop" => {}
            "passkey_es256" => {
                ok &= es_cose
                    .verify_with(s.signatures.as_ref(), &signed, es_sig.to_der().as_bytes())
                    .await
                    .is_ok();
            }
            "passkey_eddsa" => ok &= ed_cose.verify(&signed, &ed_sig.to_bytes()).is_ok(),
            "passkey_rs256" => ok &= rs.0.verify(&rs.1, &rs.2).is_ok(),
            "id_token_es256" => {
                let jws = oidc::parse(&id_es_token)?;
                ok &= oidc::validate_with(
                    s.signatures.as_ref(),
                    &jws,
                    &id_es_keys,
                    &id_rs.expected(),
                )
                .await
                .is_ok();
            }
            "id_token_rs256" => {
                let jws = oidc::parse(&id_rs.id_token)?;
                ok &= oidc::validate_with(
                    s.signatures.as_ref(),
                    &jws,
                    &id_rs.keys,
                    &id_rs.expected(),
                )
                .await
                .is_ok();
            }
            "token_issue" => ok &= tokens::issue(key, claims.clone(), now, 60).is_ok(),
            "token_verify" => ok &= verifier.check(&token, now).is_ok(),
            "argon2_hash" => ok &= password::hash("benchmark password", s.rng.as_ref()).is_ok(),
            "argon2_verify" => {
                ok &= password::verify("benchmark password", &stored)
                    != password::Verification::Mismatch;
            }
            _ => {
                return Err(edgecoder_kernel::Error::InvalidRequest("unknown op".into()).into());
            }
        }
    }
    Ok(ok_json(&json!({"op": b.op, "iterations": n, "ok": ok})))
}

async fn outbox(s: Rc<Services>, req: Request) -> HandlerResult {
    let to = api::admin::query_param(&req, "to");
    let messages = outbox_messages(s.sql.as_ref(), to.as_deref(), 100).await?;
    Ok(ok_json(&json!({ "messages": messages })))
}
