//! Mesh behaviour that depends on time or on the ledger failing, driven
//! in-process (see `inprocess`). Everything else is in the black-box suite.

mod inprocess;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{Sql, Statement};
use inprocess::{Env, blob, block_on};
use serde_json::json;

#[test]
fn an_approval_the_ledger_cannot_record_does_not_stand() {
    block_on(async {
        let e = Env::new().await;
        let admin = e.user("admin@example.com", true).await;
        let owner = e.user("owner@example.com", false).await;
        let node = e.node(&owner, "ledger-down").await;
        e.ledger_down.set(true);
        let (s, v) = e
            .call(
                Method::POST,
                "/mesh/nodes/ledger-down/approve",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(
            e.status(&node.id).await,
            ("pending_approval".to_owned(), None)
        );
        e.ledger_down.set(false);
        let (s, v) = e
            .call(
                Method::POST,
                "/mesh/nodes/ledger-down/approve",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(e.status(&node.id).await.0, "active");
    });
}

#[test]
fn a_completion_the_ledger_cannot_record_can_be_reported_again() {
    block_on(async {
        let e = Env::new().await;
        let admin = e.user("admin@example.com", true).await;
        e.bootstrap(&admin, 1_000_000).await;
        let node = e.node(&admin, "reporter").await;
        let (s, _) = e
            .call(
                Method::POST,
                "/mesh/nodes/reporter/approve",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(e.heartbeat(&node).await.0, 200);
        let task = json!({"kind": "wasm", "module": blob(b"\0asm\x01\0\0\0"), "input": blob(b"in"),
            "timeout_ms": 10_000, "resources": {"memory_mb": 16, "fuel": 1000}});
        let (s, v) = e
            .call(Method::POST, "/mesh/tasks", Some(&admin), Some(task))
            .await;
        assert_eq!(s, 201, "{v}");
        let id = v["task_id"].as_str().expect("id").to_owned();
        let (s, pulled) = e
            .send(e.signed(&node, Method::POST, "/mesh/tasks/pull", &json!({})))
            .await;
        assert_eq!(s, 200, "{pulled}");
        let result = json!({"lease_id": pulled["lease_id"], "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(b"out"), "output_digest": format!("blake3:{}", blake3::hash(b"out").to_hex())});
        let path = format!("/mesh/tasks/{id}/result");
        e.ledger_down.set(true);
        let (s, _) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!(s, 503);
        e.ledger_down.set(false);
        // Still leased to this node: the report goes through now.
        let (s, v) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "completed");
    });
}

#[test]
fn leases_last_the_timeout_plus_the_grace() {
    block_on(async {
        let e = Env::new().await;
        let admin = e.user("admin@example.com", true).await;
        e.bootstrap(&admin, 1_000_000).await;
        let node = e.node(&admin, "lease-clock").await;
        e.call(
            Method::POST,
            "/mesh/nodes/lease-clock/approve",
            Some(&admin),
            None,
        )
        .await;
        e.heartbeat(&node).await;
        let task = json!({"kind": "wasm", "module": blob(b"\0asm\x01\0\0\0"), "input": blob(b"x"),
            "timeout_ms": 10_000, "resources": {"memory_mb": 16, "fuel": 1000}});
        let (_, v) = e
            .call(Method::POST, "/mesh/tasks", Some(&admin), Some(task))
            .await;
        let id = v["task_id"].as_str().expect("id").to_owned();
        let (_, pulled) = e
            .send(e.signed(&node, Method::POST, "/mesh/tasks/pull", &json!({})))
            .await;
        let result = json!({"lease_id": pulled["lease_id"], "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(b"o"), "output_digest": format!("blake3:{}", blake3::hash(b"o").to_hex())});
        // 10 s timeout + 5 s grace: at 15 s the lease is gone.
        e.advance_ms(15_000);
        let path = format!("/mesh/tasks/{id}/result");
        let (s, v) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!((s, v["code"].as_str()), (409, Some("lease_invalid")));
        // The task is back in the queue for the next pull.
        let (s, again) = e
            .send(e.signed(&node, Method::POST, "/mesh/tasks/pull", &json!({})))
            .await;
        assert_eq!(s, 200);
        assert_eq!(again["task"]["id"], id.as_str());
        e.advance_ms(14_999);
        let result = json!({"lease_id": again["lease_id"], "ok": true, "duration_ms": 1,
            "output": STANDARD.encode(b"o"), "output_digest": format!("blake3:{}", blake3::hash(b"o").to_hex())});
        let (s, v) = e.send(e.signed(&node, Method::POST, &path, &result)).await;
        assert_eq!(s, 200, "{v}");
    });
}

#[test]
fn nonces_are_forgotten_only_when_their_requests_have_expired() {
    block_on(async {
        let e = Env::new().await;
        let owner = e.user("owner@example.com", false).await;
        let node = e.node(&owner, "nonce-clock").await;
        let t = json!({"cpu_percent": 1.0, "memory_used_mb": 1, "on_external_power": true,
            "thermal_state": "nominal", "device_type": "server", "sandbox_ready": true});
        let first = e.signed(&node, Method::POST, "/mesh/heartbeat", &t);
        assert_eq!(e.send(first.clone()).await.0, 200);
        let count = || async {
            e.db.execute(Statement::new(
                "SELECT COUNT(*) AS n FROM mesh_nonces",
                vec![],
            ))
            .await
            .expect("count")
            .get_i64(0, "n")
            .unwrap_or_default()
        };
        assert!(
            count().await >= 2,
            "registration and heartbeat nonces are kept"
        );
        // Within the window a replay is caught by its nonce...
        e.advance_ms(59_000);
        let (s, v) = e.send(first.clone()).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("replay_detected")));
        // ...after it, by its age; and the old nonces are pruned.
        e.advance_ms(70_000);
        let (s, v) = e.send(first).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("signature_expired")));
        assert_eq!(e.heartbeat(&node).await.0, 200);
        assert_eq!(count().await, 1, "only the newest nonce remains");
    });
}
