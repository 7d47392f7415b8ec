//! The API contract as a portal team uses it: a TypeScript client generated
//! by openapi-typescript from the native runtime's `/openapi.json` (the
//! document every runtime serves from the same route tables) must
//! type-check `tests/openapi-client/portal-flow.ts`, a small sign-up, sign-in,
//! enrollment, approval and task-submission flow, under `tsc --strict`. A
//! route, field or status renamed in Rust breaks the flow here.

use std::process::Command;

use edgecoder_conformance::Client;
use edgecoder_conformance::harness::{edgecoder_binary, start_native, tool, workspace_root};

#[test]
fn a_client_generated_from_openapi_type_checks_the_portal_flow() {
    let data = std::env::temp_dir().join(format!("edgecoder-openapi-ts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    // Development defaults and no test routes: the document a deployment serves.
    let server = start_native(&edgecoder_binary(), &data.join("server"), &[]);
    let doc = Client::new(&server.base)
        .get("/openapi.json")
        .expect("openapi");
    assert_eq!(doc.status, 200);
    let work = data.join("client");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("openapi.json"), &doc.body).expect("write");
    let src = workspace_root().join("tests/openapi-client");
    for f in ["portal-flow.ts", "tsconfig.json"] {
        std::fs::copy(src.join(f), work.join(f)).expect("copy");
    }
    let path = format!(
        "{}:{}",
        tool("NODE22_BIN").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(tool("OPENAPI_TS_BIN"))
        .arg("openapi.json")
        .args(["-o", "api.d.ts"])
        .current_dir(&work)
        .env("PATH", &path)
        .output()
        .expect("openapi-typescript");
    assert!(
        out.status.success(),
        "openapi-typescript: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(tool("TSC_BIN"))
        .args(["-p", "tsconfig.json"])
        .current_dir(&work)
        .env("PATH", &path)
        .output()
        .expect("tsc");
    assert!(
        out.status.success(),
        "the portal flow does not type-check against the generated client:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
