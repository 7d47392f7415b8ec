//! The native `Outbound` port against a real local HTTP server: statuses are
//! returned, not errors; redirects are not followed; bodies and headers arrive.

mod common;

use std::thread;

use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{Outbound, OutboundRequest};
use edgecoder_native::platform::UreqOutbound;

/// Serves one request with `response`, returning what it received as text.
fn serve_once(response: &'static str) -> (String, thread::JoinHandle<String>) {
    let (base, server) = common::serve(1, response.to_owned());
    let handle = thread::spawn(move || {
        let got = server.join().expect("server");
        let r = &got[0];
        format!("{}{}", r.head, String::from_utf8_lossy(&r.body))
    });
    (base, handle)
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn posts_body_and_headers_and_returns_error_statuses() {
    let (base, server) = serve_once(
        "HTTP/1.1 422 Unprocessable\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"e\":\"bad\"}",
    );
    let resp = run(UreqOutbound::default().send(OutboundRequest {
        method: Method::POST,
        url: format!("{base}/emails"),
        headers: vec![("authorization".into(), "Bearer k".into())],
        body: b"{\"to\":\"a\"}".to_vec(),
    }))
    .expect("send");
    assert_eq!(resp.status, 422);
    assert_eq!(resp.body, b"{\"e\":\"bad\"}");
    let seen = server.join().expect("server");
    assert!(seen.starts_with("POST /emails HTTP/1.1"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("authorization: bearer k"),
        "{seen}"
    );
    assert!(seen.ends_with("{\"to\":\"a\"}"), "{seen}");
}

#[test]
fn does_not_follow_redirects() {
    let (base, server) = serve_once(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
    );
    let resp = run(UreqOutbound::default().send(OutboundRequest {
        method: Method::GET,
        url: format!("{base}/discovery"),
        headers: vec![],
        body: vec![],
    }))
    .expect("send");
    assert_eq!(resp.status, 302);
    server.join().expect("server");
}

#[test]
fn unreachable_host_is_an_outbound_error() {
    let err = run(UreqOutbound::default().send(OutboundRequest {
        method: Method::GET,
        url: "http://127.0.0.1:1/".into(),
        headers: vec![],
        body: vec![],
    }))
    .expect_err("must fail");
    assert!(matches!(err, edgecoder_kernel::Error::Outbound(_)));
}
