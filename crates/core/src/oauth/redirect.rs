//! Redirect URIs: what may be registered, and when a presented one matches.
//!
//! Registered URIs must be https, or http on a loopback host (RFC 8252 §7.3). A presented URI
//! matches a registered one only character for character, except that for loopback URIs the port
//! may differ (native clients listen on a random port). No other normalization: no case folding,
//! no trailing-slash tolerance, no userinfo, no added path or query.

use url::{Host, Url};

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Whether `uri` is an http URI on a loopback host.
pub fn is_loopback_uri(uri: &str) -> bool {
    Url::parse(uri).is_ok_and(|u| u.scheme() == "http" && is_loopback(&u))
}

/// Checks a redirect URI offered at registration.
pub fn validate(uri: &str) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("`{uri}` is not an absolute URI: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("`{uri}` must not contain a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{uri}` must not contain user information"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err(format!(
            "`{uri}` must use https, or http on a loopback address (127.0.0.1, [::1], localhost)"
        )),
    }
}

/// Whether `presented` matches one of `registered`.
pub fn matches(registered: &[String], presented: &str) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    let Ok(p) = Url::parse(presented) else {
        return false;
    };
    if p.scheme() != "http"
        || !is_loopback(&p)
        || !p.username().is_empty()
        || p.password().is_some()
        || p.fragment().is_some()
    {
        return false;
    }
    registered
        .iter()
        .filter_map(|r| Url::parse(r).ok())
        .any(|r| {
            r.scheme() == "http"
            && is_loopback(&r)
            && r.host() == p.host()
            && r.path() == p.path()
            && r.query() == p.query()
            // The raw text must differ only in the port: rebuild the presented URI with the
            // registered port and compare to the registered text as written.
            && {
                let mut q = p.clone();
                q.set_port(r.port()).is_ok() && q.as_str() == r.as_str()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn registration_rules() {
        assert!(validate("https://app.example.com/callback").is_ok());
        assert!(validate("http://127.0.0.1:3000/callback").is_ok());
        assert!(validate("http://localhost/cb").is_ok());
        assert!(validate("http://[::1]:8080/cb").is_ok());
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#x",
            "javascript:alert(1)",
            "/relative",
            "https://u:p@app.example.com/cb",
            "custom:/cb",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_match_defeats_the_usual_tricks() {
        let r = reg(&["https://good.example/cb"]);
        assert!(matches(&r, "https://good.example/cb"));
        for attack in [
            "https://good.example@evil.example/cb",
            "https://good.example.evil.example/cb",
            "https://good.example/cb/extra",
            "https://good.example/cb?x=1",
            "https://good.example/cb#frag",
            "https://GOOD.example/cb",
            "https://good.example/cb/",
            "https://good.example:443/cb",
            "http://good.example/cb",
            "https://good.example/CB",
        ] {
            assert!(!matches(&r, attack), "{attack}");
        }
    }

    #[test]
    fn loopback_ports_may_differ_nothing_else() {
        let r = reg(&["http://127.0.0.1:3000/callback"]);
        assert!(matches(&r, "http://127.0.0.1:49152/callback"));
        assert!(matches(&r, "http://127.0.0.1/callback"));
        assert!(!matches(&r, "http://127.0.0.1:49152/callback/x"));
        assert!(!matches(&r, "http://127.0.0.1:49152/callback?x=1"));
        assert!(!matches(&r, "http://localhost:49152/callback"));
        assert!(!matches(&r, "http://127.0.0.1.evil.example:49152/callback"));
        assert!(!matches(&r, "http://evil@127.0.0.1:49152/callback"));
        let r = reg(&["http://localhost:8080/cb"]);
        assert!(matches(&r, "http://localhost:9999/cb"));
    }
}
