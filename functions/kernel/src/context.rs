//! Per-request context: request id and the client IP as the platform reports it.
//!
//! In scope: the [`RequestContext`] value and the native rule for believing
//! `X-Forwarded-For`. Out of scope: reading the platform's own report, which each
//! runtime does (Workers: `CF-Connecting-IP`, set by Cloudflare's edge; Spin:
//! `spin-client-addr`, set by the Spin host; native: the socket peer).
//!
//! `X-Forwarded-For` is attacker-controlled unless the hop that appended to it is
//! ours, so it is believed only when the socket peer is a configured trusted
//! proxy, and then read right to left, skipping further trusted proxies: the
//! first untrusted address is the client.

use std::net::IpAddr;

use ipnet::IpNet;

/// Facts about the request that do not come from the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Random id, echoed in `X-Request-Id` and recorded in audit events.
    pub request_id: String,
    /// The client's address, when the platform reports one.
    pub client_ip: Option<IpAddr>,
}

/// The client address on the native runtime, from the socket peer and, only when
/// the peer is a trusted proxy, the `X-Forwarded-For` chain.
pub fn client_ip_behind_proxies(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let got = client_ip_behind_proxies(ip("203.0.113.9"), Some("1.2.3.4"), &[]);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxy_chain_is_read_right_to_left() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        let got = client_ip_behind_proxies(
            ip("10.0.0.2"),
            Some("6.6.6.6, 198.51.100.7, 10.0.0.5"),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn malformed_hop_stops_the_walk() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        let got = client_ip_behind_proxies(ip("10.0.0.2"), Some("6.6.6.6, garbage"), &trusted);
        assert_eq!(got, ip("10.0.0.2"));
    }
}
