//! Test-only routes of the mesh function, compiled only with the
//! `danger-test-routes` feature (test harnesses and benchmarks) and mounted
//! only when `insecure_test_routes` is on: the conformance echo and ports
//! routes and the signed-heartbeat CPU benchmark. Release artefacts contain
//! none of it.

use edgecoder_kernel::http::ok_json;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{Config, Request, Response, Router, Services};
use edgecoder_proto::httpsig;
use serde_json::json;

use edgecoder_kernel::router::{endpoint, object, ok};

use crate::{DOCS, Error, NAME, policy};

/// `r` with the test routes, when the setting asks for them.
pub fn mount(r: Router, config: &Config) -> Router {
    if !config.insecure_test_routes {
        return r;
    }
    let r = r.route(Method::POST, "/mesh/_test/bench", endpoint(|s, r| async move { bench(&s, r).await }),
            DOCS.op("mesh_test_bench", "Runs one mesh operation N times inside the runtime, for CPU benchmarks (insecure_test_routes only)",
                object(&["op", "iterations"], json!({"op": {"enum": ["noop", "signature_verify", "signature_verify_software", "heartbeat_cpu"]}, "iterations": {"type": "integer", "minimum": 1, "maximum": 1000}})),
                vec![ok(200, "{op, iterations, ok}")]));
    r.merge(edgecoder_kernel::testroutes::routes(
        NAME,
        "/mesh/_test/echo",
        "mesh_test_echo",
        "/mesh/_test/ports",
        "mesh_test_ports",
    ))
}

#[derive(serde::Deserialize)]
struct Bench {
    op: String,
    iterations: u32,
}

/// Runs the CPU part of a signed heartbeat `iterations` times, so a client
/// can time it inside this runtime (wall time of a CPU-bound request, minus
/// a `noop` request): `signature_verify` checks an RFC 9421 signature and
/// content digest as requests are checked (through the platform's
/// signature port), `signature_verify_software` with the `p256` crate;
/// `heartbeat_cpu` adds parsing and validating the
/// telemetry, the policy decision and the answer's JSON. Storage round trips
/// are I/O and not included.
async fn bench(s: &Services, req: Request) -> Result<Response, Error> {
    let b: Bench = req.json()?;
    let n = b.iterations.clamp(1, 1000);
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])
        .map_err(|_| edgecoder_kernel::Error::Config("bench key".into()))?;
    let body = br#"{"cpu_percent":5.0,"memory_used_mb":512,"memory_total_mb":4096,"battery_percent":null,"on_external_power":true,"low_power_mode":false,"thermal_state":"nominal","device_type":"server","sandbox_ready":true,"active_model":null}"#;
    let now = s.clock.now_ms() / 1000;
    let target = httpsig::Target::from_url("POST", "https://bench.example/mesh/heartbeat")
        .map_err(Error::from)?;
    let signed = httpsig::sign(&key, "bench", "n", now, &target, body).map_err(Error::from)?;
    let mut headers = edgecoder_kernel::http_types::HeaderMap::new();
    for (name, value) in [
        ("content-digest", &signed.content_digest),
        ("signature-input", &signed.signature_input),
        ("signature", &signed.signature),
    ] {
        headers.insert(
            name,
            value
                .parse()
                .map_err(|_| edgecoder_kernel::Error::Config("bench headers".into()))?,
        );
    }
    let caps = edgecoder_proto::mesh::Capabilities {
        sandbox: edgecoder_proto::mesh::Sandbox::Wasmtime,
        cpu_cores: 2,
        memory_mb: 4096,
        gpu: None,
        models: Vec::new(),
    };
    let point = key
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let mut ok = true;
    for _ in 0..n {
        match b.op.as_str() {
            "noop" => {}
            "signature_verify_software" => {
                ok &= httpsig::Signed::from_headers(&headers)
                    .and_then(|sig| sig.prepare(&target, &headers, body, now))
                    .and_then(|pending| pending.verify(key.verifying_key()))
                    .is_ok();
            }
            "signature_verify" | "heartbeat_cpu" => {
                // As a request is checked: the platform's signature port.
                let pending = httpsig::Signed::from_headers(&headers)
                    .and_then(|sig| sig.prepare(&target, &headers, body, now))
                    .map_err(Error::from)?;
                ok &= s
                    .signatures
                    .verify_p256(&point, pending.base.as_bytes(), &pending.signature)
                    .await?;
                if b.op == "heartbeat_cpu" {
                    let t: edgecoder_proto::mesh::Telemetry = serde_json::from_slice(body)
                        .map_err(|_| {
                            edgecoder_kernel::Error::InvalidRequest("bench body".into())
                        })?;
                    ok &= policy::validate_telemetry(&t).is_ok();
                    let stored = serde_json::to_string(&t).unwrap_or_default();
                    let (_, p) = policy::for_node(
                        edgecoder_proto::mesh::NodeKind::Agent,
                        &caps,
                        Some(&t),
                        0,
                    );
                    ok &= !stored.is_empty();
                    ok &= !json!({"node_id": "bench", "status": "active", "policy": p})
                        .to_string()
                        .is_empty();
                }
            }
            _ => return Err(edgecoder_kernel::Error::InvalidRequest("unknown op".into()).into()),
        }
    }
    Ok(ok_json(&json!({"op": b.op, "iterations": n, "ok": ok})))
}
