//! Generated hostile inputs for every parser of untrusted input in this
//! crate (`Signature-Input`, `Signature`, `Content-Digest`, URLs, node ids,
//! public keys, the mesh messages): a few hundred thousand seeded mutations
//! of valid inputs each. None may panic; each is accepted or refused with an
//! [`Error`] variant (or a serde error for the messages).

use edgecoder_fuzzgen::run;
use http::{HeaderMap, HeaderValue};
use p256::ecdsa::SigningKey;

use crate::httpsig::{self, Signed, Target, check_content_digest};
use crate::mesh::{Policy, RegisterRequest, TaskResult, Telemetry};
use crate::{Error, NodeId, keys};

/// Inputs per parser.
const N: usize = 200_000;
const NOW: i64 = 1_800_000_000;
const BODY: &[u8] = br#"{"cpu_percent":1}"#;

fn signed() -> (Target, httpsig::SignedHeaders) {
    let key = SigningKey::from_slice(&[3u8; 32]).expect("key");
    let target = Target::from_url("POST", "https://edge.example/mesh/heartbeat").expect("url");
    let h = httpsig::sign(&key, "k1", "n-1", NOW, &target, BODY).expect("sign");
    (target, h)
}

fn headers(input: &str, signature: &str, digest: &str) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("signature-input", input),
        ("signature", signature),
        ("content-digest", digest),
    ] {
        h.insert(name, HeaderValue::from_str(value).ok()?);
    }
    Some(h)
}

fn named(e: &Error) -> bool {
    matches!(
        e,
        Error::Missing
            | Error::Malformed(_)
            | Error::Expired
            | Error::DigestMismatch
            | Error::Invalid
    )
}

#[test]
fn signature_input_parsing_never_panics() {
    let (target, h) = signed();
    let corpus = vec![
        h.signature_input.clone().into_bytes(),
        format!("other=(\"@method\");created=1, {}", h.signature_input).into_bytes(),
        br#"pyhms=("@method" "@authority" "@path" "@query" "content-digest" "content-type");created=1800000000;expires=1800000060;nonce="n";keyid="k";alg="ecdsa-p256-sha256";tag="t""#.to_vec(),
    ];
    run("Signature-Input", 1, N, corpus, |input| {
        let Some(map) = headers(
            &String::from_utf8_lossy(input),
            &h.signature,
            &h.content_digest,
        ) else {
            return;
        };
        match Signed::from_headers(&map) {
            Ok(s) => {
                if let Err(e) = s.prepare(&target, &map, BODY, NOW) {
                    assert!(named(&e), "{e:?}");
                }
            }
            Err(e) => assert!(named(&e), "{e:?}"),
        }
    });
}

#[test]
fn signature_parsing_never_panics() {
    let (target, h) = signed();
    let corpus = vec![
        h.signature.clone().into_bytes(),
        format!("other=:AAAA:, {}", h.signature).into_bytes(),
    ];
    run("Signature", 2, N, corpus, |input| {
        let Some(map) = headers(
            &h.signature_input,
            &String::from_utf8_lossy(input),
            &h.content_digest,
        ) else {
            return;
        };
        if let Ok(s) = Signed::from_headers(&map) {
            let _ = s.prepare(&target, &map, BODY, NOW);
        }
    });
}

#[test]
fn content_digest_parsing_never_panics() {
    let (_, h) = signed();
    let corpus = vec![
        h.content_digest.clone().into_bytes(),
        format!("{}, sha-512=:AAAA:, unixsum=:AA==:", h.content_digest).into_bytes(),
    ];
    run("Content-Digest", 3, N, corpus, |input| {
        if let Err(e) = check_content_digest(&String::from_utf8_lossy(input), BODY) {
            assert!(named(&e), "{e:?}");
        }
    });
}

#[test]
fn urls_node_ids_and_keys_never_panic() {
    let key = SigningKey::from_slice(&[3u8; 32]).expect("key");
    let corpus = vec![
        b"https://edge.example:8443/mesh/nodes/n-1?x=1".to_vec(),
        b"http://[::1]:8787/".to_vec(),
        b"laptop-01.edge_node".to_vec(),
        keys::public_key_b64url(key.verifying_key()).into_bytes(),
    ];
    run("URL, NodeId, key", 4, N, corpus, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(t) = Target::from_url("GET", &text) {
            let _ = t.target_uri();
        }
        let _ = NodeId::parse(&text);
        let _ = keys::parse_public_key(&text);
    });
}

#[test]
fn mesh_messages_never_panic() {
    let corpus = vec![
        br#"{"cpu_percent":5.0,"memory_used_mb":512,"memory_total_mb":4096,"battery_percent":null,"on_external_power":true,"low_power_mode":false,"thermal_state":"nominal","device_type":"server","sandbox_ready":true,"active_model":null}"#.to_vec(),
        br#"{"enrollment_token":"ect_x","node_id":"n-1","kind":"agent","public_key":"BA","os":"linux","version":"1","capabilities":{"sandbox":"wasmtime","cpu_cores":2,"memory_mb":4096,"gpu":null,"models":[]}}"#.to_vec(),
        br#"{"lease_id":"l","ok":false,"duration_ms":3,"error_code":"fuel_exhausted","fuel_used":7,"stdout":"","stderr":""}"#.to_vec(),
        br#"{"allowed_task_kinds":["wasm"],"max_memory_mb":64,"max_fuel":1,"max_timeout_ms":5,"work":"small","reason":"on_battery","idle_only":true,"policy_version":1,"blacklist_version":0}"#.to_vec(),
    ];
    run("mesh messages", 5, N, corpus, |input| {
        let _ = serde_json::from_slice::<Telemetry>(input);
        let _ = serde_json::from_slice::<RegisterRequest>(input);
        let _ = serde_json::from_slice::<TaskResult>(input);
        let _ = serde_json::from_slice::<Policy>(input);
    });
}
