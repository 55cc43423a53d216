//! Fetching Client ID Metadata Documents without becoming an SSRF proxy: the host is resolved
//! here, every address must be public (unless the operator allowed private ones), the
//! connection is pinned to a vetted address (no DNS rebinding between check and use), redirects
//! are not followed, and the body is capped in size and time.

use async_trait::async_trait;
use ezforge_core::oauth::cimd::DocumentFetcher;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpFetcher {
    pub allow_private: bool,
}

/// Whether an address is on the public internet (not loopback, private, link-local, shared,
/// documentation, multicast, unspecified, or an IPv4-mapped form of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: may reach private IPv4
                || (s[0] == 0x2002) // 6to4: embeds an IPv4 address
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || s[..6].iter().all(|x| *x == 0)) // IPv4-compatible ::a.b.c.d (deprecated)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240)
}

#[async_trait]
impl DocumentFetcher for HttpFetcher {
    async fn fetch(&self, url: &url::Url) -> Result<Vec<u8>, String> {
        let host = url
            .host_str()
            .ok_or("the client_id URL has no host")?
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or("the client_id URL has no port")?;
        let lookup_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            TIMEOUT,
            tokio::net::lookup_host((lookup_host.as_str(), port)),
        )
        .await
        .map_err(|_| "resolving the client_id host timed out".to_string())?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{host} has no address"))?;
        if !self.allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(format!(
                "{host} resolves to a private, loopback or link-local address, which is not allowed"
            ));
        }
        let client = reqwest::Client::builder()
            // A proxy would resolve the host itself and undo the checks above.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .resolve(&host, addr)
            .user_agent(concat!(
                "ezforge/",
                env!("CARGO_PKG_VERSION"),
                " (client metadata fetcher)"
            ))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let mut resp = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot fetch the client metadata document: {e}"))?;
        if resp.status().is_redirection() {
            return Err(
                "the client metadata document URL redirects; redirects are not followed".into(),
            );
        }
        if !resp.status().is_success() {
            return Err(format!(
                "the client metadata document answered HTTP {}",
                resp.status().as_u16()
            ));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES)
        {
            return Err(format!(
                "the client metadata document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the client metadata document failed: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "the client metadata document is larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::7f00:1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
