//! Which browser pages may open a stream: the `Origin` check of WebSocket upgrades and SSE
//! requests, made before anything else (no cap is counted, no token read).
//!
//! A browser names the page that opens a connection in the `Origin` header, and a page of
//! another site cannot change it. Clients that are not browsers (bots, `curl`) send none
//! and pass: this check keeps other sites' pages out; it is not authentication.
//!
//! The policy ([`AllowedOrigins`], config key `allowed_origins`): empty (the default)
//! admits the server's own origin (the request's `Host` as `http://` or `https://`) and
//! loopback pages (`localhost`, `127.0.0.0/8`, `[::1]`, any port); a list admits only the
//! origins it names; `*` admits every origin. Origins are compared as RFC 6454 says:
//! scheme and host without case, the default port made explicit.

use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use serde::{Deserialize, Deserializer};
use url::{Host, Url};

/// An `http` or `https` origin: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(url::Origin);

/// Text that is not `http(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an origin (http:// or https://, a host, an optional port, nothing after it)")]
pub struct MalformedOrigin {
    text: String,
}

impl FromStr for Origin {
    type Err = MalformedOrigin;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || MalformedOrigin { text: text.chars().take(100).collect() };
        // Scheme, `://` and an authority without user info; no path (not even `/`),
        // query or fragment.
        let (_, authority) = text.split_once("://").ok_or_else(malformed)?;
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', '\\']) {
            return Err(malformed());
        }
        let url = Url::parse(text).map_err(|_| malformed())?;
        match (url.scheme(), url.origin()) {
            ("http" | "https", origin @ url::Origin::Tuple(..)) => Ok(Origin(origin)),
            _ => Err(malformed()),
        }
    }
}

impl Origin {
    fn is_loopback(&self) -> bool {
        match &self.0 {
            url::Origin::Tuple(_, Host::Domain(name), _) => name == "localhost",
            url::Origin::Tuple(_, Host::Ipv4(ip), _) => ip.is_loopback(),
            url::Origin::Tuple(_, Host::Ipv6(ip), _) => ip.is_loopback(),
            url::Origin::Opaque(_) => false,
        }
    }

    /// The server's own origin as the request names it: its `Host` under either scheme (a
    /// proxy in front may have ended TLS).
    fn is_host(&self, host: &str) -> bool {
        ["http", "https"].iter().any(|scheme| format!("{scheme}://{host}").parse().as_ref() == Ok(self))
    }
}

/// The origins whose pages may open a stream (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// The server's own origin and loopback pages.
    #[default]
    Default,
    /// Every origin (`*`).
    Any,
    /// Only these.
    List(Vec<Origin>),
}

impl AllowedOrigins {
    /// The policy of a list of entries: `*`, or origins.
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<Self, MalformedOrigin> {
        let entries: Vec<&str> =
            entries.iter().map(|e| e.as_ref().trim()).filter(|e| !e.is_empty()).collect();
        if entries.contains(&"*") {
            return Ok(AllowedOrigins::Any);
        }
        let origins = entries.into_iter().map(str::parse).collect::<Result<Vec<Origin>, _>>()?;
        Ok(match origins.is_empty() {
            true => AllowedOrigins::Default,
            false => AllowedOrigins::List(origins),
        })
    }

    /// May a request with these headers open a stream? One without `Origin` may.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefused> {
        let Some(value) = headers.get(ORIGIN) else { return Ok(()) };
        let refused = || OriginRefused {
            origin: String::from_utf8_lossy(value.as_bytes()).chars().take(100).collect(),
        };
        let origin = || value.to_str().ok()?.parse::<Origin>().ok();
        let admitted = match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => origin().is_some_and(|o| list.contains(&o)),
            AllowedOrigins::Default => origin().is_some_and(|o| {
                o.is_loopback()
                    || headers.get(HOST).and_then(|h| h.to_str().ok()).is_some_and(|host| o.is_host(host))
            }),
        };
        if admitted { Ok(()) } else { Err(refused()) }
    }
}

/// The configuration takes a list or, from the environment, one comma-separated string.
impl<'de> Deserialize<'de> for AllowedOrigins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entries {
            Text(String),
            List(Vec<String>),
        }
        let entries = match Entries::deserialize(deserializer)? {
            Entries::Text(text) => text.split(',').map(str::to_owned).collect(),
            Entries::List(list) => list,
        };
        AllowedOrigins::from_entries(&entries).map_err(serde::de::Error::custom)
    }
}

impl FromStr for AllowedOrigins {
    type Err = MalformedOrigin;

    /// Comma-separated entries, as `TRADEWIRE_ALLOWED_ORIGINS` holds them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AllowedOrigins::from_entries(&text.split(',').collect::<Vec<_>>())
    }
}

/// A request whose `Origin` the policy does not admit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin {origin:?} is not allowed (see `allowed_origins`)")]
pub struct OriginRefused {
    origin: String,
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn request(origin: Option<&[u8]>, host: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(o) = origin {
            headers.insert(ORIGIN, HeaderValue::from_bytes(o).unwrap());
        }
        if let Some(h) = host {
            headers.insert(HOST, HeaderValue::from_str(h).unwrap());
        }
        headers
    }

    fn admits(policy: &AllowedOrigins, origin: &str, host: &str) -> bool {
        policy.check(&request(Some(origin.as_bytes()), Some(host))).is_ok()
    }

    #[test]
    fn by_default_the_servers_own_origin_and_loopback_pages_are_admitted() {
        let p = AllowedOrigins::default();
        let host = "trade.example.com:8443";
        assert!(admits(&p, "https://trade.example.com:8443", host));
        assert!(admits(&p, "http://trade.example.com:8443", host), "a proxy in front may have ended TLS");
        assert!(admits(&p, "https://trade.example.com", "trade.example.com"));
        assert!(admits(&p, "https://trade.example.com:443", "trade.example.com"), "default port");
        for loopback in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
            "http://localhost",
            "http://127.0.0.2",
        ] {
            assert!(admits(&p, loopback, host), "{loopback}");
        }
        assert!(!admits(&p, "https://evil.example", host));
        assert!(!admits(&p, "https://trade.example.com", host), "another port is another origin");
        assert!(!admits(&p, "https://trade.example.com.evil.example:8443", host));
        assert!(!admits(&p, "http://localhost.evil.example", host));
        // Without a Host only loopback pages can be told apart.
        assert!(p.check(&request(Some(b"http://localhost:1"), None)).is_ok());
        assert!(p.check(&request(Some(b"https://trade.example.com:8443"), None)).is_err());
    }

    #[test]
    fn a_request_without_origin_passes_under_every_policy() {
        for p in [AllowedOrigins::default(), "https://app.example".parse().unwrap(), AllowedOrigins::Any] {
            assert_eq!(p.check(&request(None, Some("x.example"))), Ok(()));
            assert_eq!(p.check(&request(None, None)), Ok(()));
        }
    }

    #[test]
    fn a_list_admits_only_what_it_names_with_ports_compared() {
        let p: AllowedOrigins = "https://app.example, http://dev.example:3000".parse().unwrap();
        let host = "localhost:8080";
        assert!(admits(&p, "https://app.example", host));
        assert!(admits(&p, "https://app.example:443", host));
        assert!(admits(&p, "http://dev.example:3000", host));
        assert!(!admits(&p, "http://dev.example:3001", host));
        assert!(!admits(&p, "http://dev.example", host));
        assert!(!admits(&p, "http://app.example", host), "the scheme is part of the origin");
        assert!(!admits(&p, "http://localhost:8080", host), "loopback and own origin only by default");
        assert!(!admits(&p, "https://sub.app.example", host));
    }

    #[test]
    fn a_star_admits_every_origin() {
        let p: AllowedOrigins = "https://app.example,*".parse().unwrap();
        assert_eq!(p, AllowedOrigins::Any);
        assert!(admits(&p, "https://anyone.example", "server.example"));
        assert!(admits(&p, "null", "server.example"));
    }

    #[test]
    fn scheme_and_host_are_compared_without_case() {
        let p: AllowedOrigins = "HTTPS://App.Example".parse().unwrap();
        assert!(admits(&p, "https://app.example", "server.example"));
        assert!(admits(&p, "hTTps://APP.EXAMPLE", "server.example"));
        let p = AllowedOrigins::default();
        assert!(admits(&p, "HTTP://LOCALHOST:3000", "server.example"));
        assert!(admits(&p, "https://Server.Example", "server.EXAMPLE"));
    }

    #[test]
    fn a_malformed_origin_header_is_refused() {
        let p = AllowedOrigins::default();
        let host = "localhost:8080";
        for bad in [
            "null",
            "localhost:8080",
            "http://localhost:8080/",
            "http://localhost:8080/v1/ws",
            "http://user@localhost:8080",
            "http://localhost:99999",
            "ws://localhost:8080",
            "file:///etc/passwd",
            "http://",
            "",
        ] {
            assert!(!admits(&p, bad, host), "{bad:?}");
        }
        assert!(p.check(&request(Some(b"http://localhost:\xff"), Some(host))).is_err(), "not UTF-8");
    }

    #[test]
    fn a_refusal_names_the_origin() {
        let err = AllowedOrigins::default().check(&request(Some(b"https://evil.example"), None)).unwrap_err();
        assert!(err.to_string().contains("https://evil.example"), "{err}");
    }

    #[test]
    fn the_setting_is_read_from_a_list_or_a_comma_separated_string() {
        let from_list: AllowedOrigins =
            serde_json::from_value(serde_json::json!(["https://a.example", "http://b.example:81"])).unwrap();
        let from_text: AllowedOrigins =
            serde_json::from_value(serde_json::json!("https://a.example, http://b.example:81")).unwrap();
        assert_eq!(from_list, from_text);
        assert!(matches!(from_list, AllowedOrigins::List(ref l) if l.len() == 2));
        let empty: AllowedOrigins = serde_json::from_value(serde_json::json!("")).unwrap();
        assert_eq!(empty, AllowedOrigins::Default);
        let empty: AllowedOrigins = serde_json::from_value(serde_json::json!([])).unwrap();
        assert_eq!(empty, AllowedOrigins::Default);
        let err =
            serde_json::from_value::<AllowedOrigins>(serde_json::json!("https://a.example/app")).unwrap_err();
        assert!(err.to_string().contains("https://a.example/app"), "{err}");
    }
}
