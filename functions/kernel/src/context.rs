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
    fn trusted_peer_without_header_is_the_client() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            client_ip_behind_proxies(ip("10.0.0.2"), [], &trusted),
            ip("10.0.0.2")
        );
    }
}
