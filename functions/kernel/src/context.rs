//! Per-request context: request id, the client IP, and the scheme and
//! authority the client addressed, as the platform reports them.
//!
//! In scope: the [`RequestContext`] value and the native rules for believing
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`. Out of scope:
//! reading the platform's own report, which each runtime does (Workers:
//! `CF-Connecting-IP` and the request URL, set by Cloudflare's edge; Spin:
//! `spin-client-addr` and `spin-full-url`, set by the Spin host; native: the
//! socket peer and `Host`).
//!
//! Also the correlation of one request across functions: [`accept_inbound`]
//! takes a caller's `x-request-id` (as the prefix of ours) and `traceparent`,
//! and [`Propagating`] sends both on a function's calls to another function
//! of the same deployment (the split Workers, Spin components), so the
//! callee's logs and audit events name the request that caused them.
//!
//! `X-Forwarded-For` is attacker-controlled unless the hop that appended to it is
//! ours, so it is believed only when the socket peer is a configured trusted
//! proxy, and then read right to left, skipping further trusted proxies: the
//! first untrusted address is the client.

use std::net::IpAddr;
use std::rc::Rc;

use ipnet::IpNet;

use crate::ports::{Outbound, OutboundRequest, OutboundResponse};

/// Facts about the request that do not come from the request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// Random id, echoed in `X-Request-Id` and recorded in audit events.
    pub request_id: String,
    /// The client's address, when the platform reports one.
    pub client_ip: Option<IpAddr>,
    /// The scheme the client used (`http` or `https`), when known: what
    /// RFC 9421 derives `@scheme` and `@target-uri` from.
    pub scheme: Option<String>,
    /// The authority (`host[:port]`) the client addressed, when known:
    /// `@authority`.
    pub authority: Option<String>,
    /// The W3C `traceparent` the request arrived with, when well-formed:
    /// logged with the request, so a trace spans the caller and us.
    pub traceparent: Option<String>,
}

/// Whether `id` may stand as a request id taken from a caller: 1 to 128
/// characters of `A-Z a-z 0-9 . _ -`, so it is safe in logs, headers and
/// audit queries.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `v` is a W3C Trace Context `traceparent` of version 00:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// Takes the caller's request id and trace context: an inbound
/// `x-request-id` (or, where the platform sets one, `cf-ray`) that is safe
/// to repeat becomes the prefix of the request's id (`<caller's>.<ours>`),
/// so a search for the caller's id finds the request in our logs, answers
/// and audit events, while the id stays ours and unique: things keyed by
/// it (ledger idempotency keys, single-use token claims) can never be made
/// to collide by a caller repeating an id. A valid `traceparent` is kept.
/// Anything malformed is ignored (the generated id stays).
pub fn accept_inbound(ctx: &mut RequestContext, headers: &http::HeaderMap) {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(id) = value("x-request-id")
        .filter(|v| valid_request_id(v))
        .or_else(|| value("cf-ray").filter(|v| valid_request_id(v)))
    {
        ctx.request_id = format!("{id}.{}", ctx.request_id);
    }
    ctx.traceparent = value("traceparent")
        .filter(|v| valid_traceparent(v))
        .map(str::to_owned);
}

/// An [`Outbound`] for one request's calls to another function of the same
/// deployment: each call carries the request's id as `x-request-id`, which
/// the callee makes the prefix of its own ([`accept_inbound`]), and the
/// request's `traceparent` unchanged (functions record no spans of their own,
/// so they pass the caller's parent through). Only the cross-function
/// clients get it: a third party (an OAuth provider, a peer coordinator) is
/// not told our request ids.
pub struct Propagating {
    inner: Rc<dyn Outbound>,
    request_id: String,
    traceparent: Option<String>,
}

impl Propagating {
    /// Calls through `inner` on behalf of the request `ctx` describes.
    pub fn new(inner: Rc<dyn Outbound>, ctx: &RequestContext) -> Self {
        // A callee takes ids of up to 128 characters. A caller's long prefix
        // plus ours can be longer: then our own part (the last segment)
        // alone still joins the callee's lines to ours.
        let request_id = if valid_request_id(&ctx.request_id) {
            ctx.request_id.clone()
        } else {
            ctx.request_id
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        Propagating {
            inner,
            request_id,
            traceparent: ctx.traceparent.clone(),
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Outbound for Propagating {
    async fn send(&self, mut req: OutboundRequest) -> Result<OutboundResponse, crate::Error> {
        let mut add = |name: &str, value: &str| {
            req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            req.headers.push((name.to_owned(), value.to_owned()));
        };
        if valid_request_id(&self.request_id) {
            add("x-request-id", &self.request_id);
        }
        if let Some(t) = &self.traceparent {
            add("traceparent", t);
        }
        self.inner.send(req).await
    }
}

/// The problem `code` of a problem+json answer, for logs and metrics.
pub fn problem_code(resp: &crate::Response) -> Option<String> {
    let is_problem = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(crate::error::PROBLEM_JSON.as_bytes())
        });
    if !is_problem {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(resp.body())
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
}

/// One answered request as a JSON log line, for the runtimes whose platform
/// collects a function's output (Workers Logs indexes each field of a JSON
/// line; Spin hosts keep a component's stderr): what the native runtime
/// logs and counts in its metrics, so the same counts (requests by route
/// and status, auth failures by code, rate-limit hits, latency) come from
/// a query over these lines. `route` is the route template, never the raw
/// path's ids.
pub fn access_log(
    ctx: &RequestContext,
    method: &str,
    route: Option<&str>,
    resp: &crate::Response,
    latency_ms: f64,
) -> String {
    serde_json::json!({
        "message": "request",
        "request_id": ctx.request_id,
        "traceparent": ctx.traceparent,
        "method": method,
        "route": route.unwrap_or("(unrouted)"),
        "status": resp.status().as_u16(),
        "code": problem_code(resp),
        "latency_ms": (latency_ms * 1000.0).round() / 1000.0,
    })
    .to_string()
}

/// The scheme and authority the client addressed on the native runtime: the
/// connection's own (`http`, `Host`) unless the socket peer is a trusted
/// proxy, which then reports them in `X-Forwarded-Proto` and
/// `X-Forwarded-Host`. The value read is the last one, which the trusted
/// proxy itself wrote: a proxy that appends to what the client sent leaves
/// the client's guess first. `forwarded_*` is every field line of that
/// header in order, read as one list.
pub fn origin_behind_proxies(
    peer: IpAddr,
    host: Option<&str>,
    forwarded_proto: &[&str],
    forwarded_host: &[&str],
    trusted: &[IpNet],
) -> (String, Option<String>) {
    let last = |lines: &[&str]| {
        lines
            .iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let host = host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    let peer = peer.to_canonical();
    if trusted.iter().any(|n| n.contains(&peer)) {
        let scheme = last(forwarded_proto)
            .map(|p| p.to_ascii_lowercase())
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| "http".to_owned());
        (scheme, last(forwarded_host).or(host))
    } else {
        ("http".to_owned(), host)
    }
}

/// The client address on the native runtime, from the socket peer and, only when
/// the peer is a trusted proxy, the `X-Forwarded-For` chain. `forwarded_for`
/// is every `X-Forwarded-For` field line in order (a proxy may append its own
/// line rather than extend the client's), read as one list. IPv4-mapped IPv6
/// addresses are compared as IPv4.
pub fn client_ip_behind_proxies<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let lines: Vec<&str> = forwarded_for.into_iter().collect();
    let chain = lines.join(",");
    let mut client = peer;
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    return ip;
                }
            }
            // A malformed hop means we cannot trust anything left of it.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(std::cell::RefCell<Vec<Vec<(String, String)>>>);

    #[async_trait::async_trait(?Send)]
    impl Outbound for Recorder {
        async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, crate::Error> {
            self.0.borrow_mut().push(req.headers);
            Ok(OutboundResponse {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
            })
        }
    }

    fn ctx(request_id: &str, traceparent: Option<&str>) -> RequestContext {
        RequestContext {
            request_id: request_id.into(),
            client_ip: None,
            scheme: None,
            authority: None,
            traceparent: traceparent.map(str::to_owned),
        }
    }

    fn sent_through(ctx: &RequestContext, headers: Vec<(String, String)>) -> Vec<(String, String)> {
        let rec = Rc::new(Recorder(Default::default()));
        let out = Propagating::new(rec.clone(), ctx);
        futures_executor::block_on(out.send(OutboundRequest {
            method: http::Method::POST,
            url: "http://ledger.spin.internal/ledger/entries".into(),
            headers,
            body: Vec::new(),
        }))
        .expect("sent");
        rec.0.borrow_mut().pop().expect("one call")
    }

    #[test]
    fn the_access_log_line_names_the_route_template_and_the_problem_code() {
        let resp = crate::Problem::from(crate::Error::RateLimited {
            retry_after_secs: 3,
        })
        .into_response(Some("/auth/login"), Some("rid"));
        let line = access_log(
            &ctx("edge.1", None),
            "POST",
            Some("/auth/login"),
            &resp,
            1.23456,
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["route"], "/auth/login");
        assert_eq!(v["status"], 429);
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["request_id"], "edge.1");
        assert_eq!(v["latency_ms"], 1.235);
        let ok = crate::http::ok_json(&serde_json::json!({}));
        assert!(problem_code(&ok).is_none());
    }

    #[test]
    fn calls_between_functions_carry_the_request_id_and_trace() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = sent_through(
            &ctx("edge.42.0123456789abcdef", Some(tp)),
            vec![
                ("authorization".into(), "Bearer t".into()),
                // Whatever a handler put there is replaced, not repeated.
                ("X-Request-Id".into(), "other".into()),
            ],
        );
        assert_eq!(
            headers,
            vec![
                ("authorization".to_owned(), "Bearer t".to_owned()),
                (
                    "x-request-id".to_owned(),
                    "edge.42.0123456789abcdef".to_owned()
                ),
                ("traceparent".to_owned(), tp.to_owned()),
            ]
        );
        // Over the callee's limit: our own part alone.
        let long = format!("{}.0123456789abcdef", "a".repeat(120));
        let headers = sent_through(&ctx(&long, None), Vec::new());
        assert_eq!(
            headers,
            vec![("x-request-id".to_owned(), "0123456789abcdef".to_owned())]
        );
    }

    #[test]
    fn inbound_request_ids_and_trace_context_are_taken_only_when_safe() {
        let mut ctx = RequestContext {
            request_id: "generated".into(),
            ..RequestContext::default()
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", "abc-123_x.y".parse().expect("value"));
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("value"),
        );
        accept_inbound(&mut ctx, &h);
        assert_eq!(ctx.request_id, "abc-123_x.y.generated");
        assert!(ctx.traceparent.is_some());
        for bad in ["a b", "x\"y", "<script>", &"a".repeat(129)] {
            let mut ctx = RequestContext {
                request_id: "generated".into(),
                ..RequestContext::default()
            };
            let mut h = http::HeaderMap::new();
            if let Ok(v) = bad.parse() {
                h.insert("x-request-id", v);
            }
            h.insert(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                    .parse()
                    .expect("value"),
            );
            accept_inbound(&mut ctx, &h);
            assert_eq!(ctx.request_id, "generated", "{bad}");
            assert_eq!(ctx.traceparent, None);
        }
        // Workers: Cloudflare's ray id when the caller sent none.
        let mut ctx = RequestContext {
            request_id: "generated".into(),
            ..RequestContext::default()
        };
        let mut h = http::HeaderMap::new();
        h.insert("cf-ray", "8f1a2b3c4d5e6f70-LHR".parse().expect("value"));
        accept_inbound(&mut ctx, &h);
        assert_eq!(ctx.request_id, "8f1a2b3c4d5e6f70-LHR.generated");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let got = client_ip_behind_proxies(ip("203.0.113.9"), ["1.2.3.4"], &[]);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxy_chain_is_read_right_to_left() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        let got = client_ip_behind_proxies(
            ip("10.0.0.2"),
            ["6.6.6.6, 198.51.100.7, 10.0.0.5"],
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn malformed_hop_stops_the_walk() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        let got = client_ip_behind_proxies(ip("10.0.0.2"), ["6.6.6.6, garbage"], &trusted);
        assert_eq!(got, ip("10.0.0.2"));
    }

    #[test]
    fn a_second_field_line_from_the_proxy_is_read_after_the_clients() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        // The client forged the first line; the proxy appended its own.
        let got = client_ip_behind_proxies(ip("10.0.0.2"), ["6.6.6.6", "198.51.100.7"], &trusted);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_proxies() {
        let trusted = vec!["127.0.0.1/32".parse().expect("net")];
        let got = client_ip_behind_proxies(ip("::ffff:127.0.0.1"), ["198.51.100.7"], &trusted);
        assert_eq!(got, ip("198.51.100.7"));
        let untrusted = client_ip_behind_proxies(ip("::ffff:203.0.113.1"), [], &trusted);
        assert_eq!(untrusted, ip("203.0.113.1"));
    }

    #[test]
    fn only_trusted_proxies_report_the_clients_scheme_and_host() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            origin_behind_proxies(
                ip("10.0.0.2"),
                Some("internal:8787"),
                &["https"],
                &["edge.example"],
                &trusted
            ),
            ("https".to_owned(), Some("edge.example".to_owned()))
        );
        // An appending proxy: the client's own claim comes first, on the
        // same line or on an earlier one.
        assert_eq!(
            origin_behind_proxies(
                ip("10.0.0.2"),
                Some("internal:8787"),
                &["http, https"],
                &["evil.example", "edge.example"],
                &trusted
            ),
            ("https".to_owned(), Some("edge.example".to_owned()))
        );
        assert_eq!(
            origin_behind_proxies(
                ip("203.0.113.9"),
                Some("127.0.0.1:8787"),
                &["https"],
                &["evil.example"],
                &trusted
            ),
            ("http".to_owned(), Some("127.0.0.1:8787".to_owned()))
        );
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            client_ip_behind_proxies(ip("10.0.0.2"), [], &trusted),
            ip("10.0.0.2")
        );
    }
}
