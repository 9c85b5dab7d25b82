//! Session persistence (GEP-1619): a rule's `sessionPersistence` pins a client to the backend
//! endpoint that answered its first request, through a token the gateway issues in a cookie or
//! a response header and the client sends back.
//!
//! The token is stateless, `<endpoint id>.<start>.<last use>` in hex, so every gateway replica
//! (and every shard) honours a session another one began, and a config swap or restart keeps
//! sessions. The endpoint id is a stable hash of the endpoint's address, not the address itself.
//! A client can forge the times in its own token; that only changes how long its own requests
//! stay pinned, so they are not signed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use meridian_proto::model::route::{SessionKind, SessionPersistence};

use super::pool::EndpointPool;
use super::{BackendChoice, BackendTarget, WeightedBackends};

/// A compiled `sessionPersistence`.
#[derive(Debug)]
pub(crate) struct SessionPolicy {
    carrier: Carrier,
    absolute: Option<u64>,
    idle: Option<u64>,
}

/// Where the token travels.
#[derive(Debug)]
enum Carrier {
    /// `Cookie: name=token` in, `Set-Cookie` out.
    Cookie {
        name: String,
        /// `; Path=...[; Max-Age=...]; HttpOnly`, everything after the value but `; Secure`,
        /// which depends on the listener the request came through.
        attributes: String,
    },
    /// The same header both ways.
    Header(HeaderName),
}

/// A session read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionToken {
    /// [`endpoint_id`] of the pinned endpoint.
    pub(crate) endpoint: u64,
    /// Unix seconds the session began.
    started: u64,
    /// Unix seconds of its last request.
    last: u64,
}

/// The endpoint a session pins, found among a rule's backends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pinned<'a> {
    /// The backendRef the endpoint belongs to (its filters apply).
    pub(crate) choice: &'a BackendChoice,
    /// The endpoint.
    pub(crate) endpoint: &'a Arc<EndpointPool>,
}

// === impl SessionPolicy ===

impl SessionPolicy {
    /// Compiles a rule's policy. `default_name` names the cookie or header when the route does
    /// not; `cookie_path` is the path the cookie is sent back for.
    pub(crate) fn new(
        spec: &SessionPersistence,
        default_name: &str,
        cookie_path: &str,
    ) -> Result<Self, String> {
        let name = spec.name.as_deref().unwrap_or(default_name);
        let carrier = match spec.kind {
            SessionKind::Cookie => {
                let mut attributes = format!("; Path={cookie_path}");
                if spec.permanent_cookie
                    && let Some(max_age) = spec.absolute_timeout
                {
                    attributes.push_str(&format!("; Max-Age={}", max_age.as_secs().max(1)));
                }
                attributes.push_str("; HttpOnly");
                // Checked here so that issuing a cookie can never fail later.
                HeaderValue::try_from(format!("{name}=0{attributes}"))
                    .map_err(|_| format!("session cookie {name:?} cannot be a header value"))?;
                Carrier::Cookie {
                    name: name.to_string(),
                    attributes,
                }
            }
            SessionKind::Header => Carrier::Header(
                HeaderName::try_from(name.to_ascii_lowercase())
                    .map_err(|_| format!("session header {name:?} is not a valid header name"))?,
            ),
        };
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs().max(1));
        Ok(Self {
            carrier,
            absolute: secs(spec.absolute_timeout),
            idle: secs(spec.idle_timeout),
        })
    }

    /// The request's session, if it carries one that has not expired at `now`.
    pub(crate) fn read(&self, headers: &HeaderMap, now: u64) -> Option<SessionToken> {
        let token = match &self.carrier {
            Carrier::Cookie { name, .. } => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    (key == name).then(|| SessionToken::parse(value.trim_matches('"')))?
                })?,
            Carrier::Header(name) => SessionToken::parse(headers.get(name)?.to_str().ok()?)?,
        };
        let expired = self
            .absolute
            .is_some_and(|limit| now.saturating_sub(token.started) > limit)
            || self
                .idle
                .is_some_and(|limit| now.saturating_sub(token.last) > limit);
        (!expired).then_some(token)
    }

    /// The header to add to a response served by `endpoint`, if the client needs a new or
    /// refreshed token: a new session, a session moved to another endpoint (its own went away),
    /// or an idle timeout that restarts with every request. A cookie issued over HTTPS is
    /// `Secure`.
    pub(crate) fn issue(
        &self,
        previous: Option<SessionToken>,
        endpoint: SocketAddr,
        now: u64,
        https: bool,
    ) -> Option<(HeaderName, HeaderValue)> {
        let endpoint = endpoint_id(endpoint);
        let token = match previous {
            Some(token) if token.endpoint == endpoint => {
                // Unchanged, and without an idle timeout there is nothing to refresh.
                self.idle?;
                SessionToken { last: now, ..token }
            }
            _ => SessionToken {
                endpoint,
                started: now,
                last: now,
            },
        };
        let token = token.render();
        match &self.carrier {
            Carrier::Cookie { name, attributes } => {
                let secure = if https { "; Secure" } else { "" };
                let value =
                    HeaderValue::try_from(format!("{name}={token}{attributes}{secure}")).ok()?;
                Some((header::SET_COOKIE, value))
            }
            Carrier::Header(name) => Some((name.clone(), HeaderValue::try_from(token).ok()?)),
        }
    }
}

// === impl SessionToken ===

impl SessionToken {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let mut next = || u64::from_str_radix(parts.next()?, 16).ok();
        let token = Self {
            endpoint: next()?,
            started: next()?,
            last: next()?,
        };
        (parts.next().is_none() && token.started <= token.last).then_some(token)
    }

    fn render(self) -> String {
        format!("{:x}.{:x}.{:x}", self.endpoint, self.started, self.last)
    }
}

// === impl WeightedBackends ===

impl WeightedBackends {
    /// The ready endpoint with id `endpoint` among the rule's Service backends, if it is still
    /// one (a session whose endpoint went away starts over on a fresh draw).
    pub(crate) fn find_endpoint(&self, endpoint: u64) -> Option<Pinned<'_>> {
        self.choices()
            .iter()
            .find_map(|choice| match &choice.target {
                BackendTarget::Service(service) => service
                    .endpoints
                    .iter()
                    .find(|pool| pool.session_id == endpoint)
                    .map(|endpoint| Pinned { choice, endpoint }),
                BackendTarget::Invalid { .. } => None,
            })
    }
}

/// A stable id for an endpoint address: 64-bit FNV-1a over the IP's octets and the port, the
/// same in every build and replica (std's hasher makes no such promise).
pub(crate) fn endpoint_id(addr: SocketAddr) -> u64 {
    let mut hash = fnv1a(
        FNV_OFFSET,
        &match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(ip) => ip.octets(),
        },
    );
    hash = fnv1a(hash, &addr.port().to_be_bytes());
    hash
}

/// A default session name for a rule: stable across replicas and restarts, distinct per rule.
pub(crate) fn default_name(kind: SessionKind, route: &str, rule_index: usize) -> String {
    let hash = fnv1a(
        fnv1a(FNV_OFFSET, route.as_bytes()),
        &rule_index.to_be_bytes(),
    );
    let prefix = match kind {
        SessionKind::Cookie => "meridian-session",
        SessionKind::Header => "x-meridian-session",
    };
    format!("{prefix}-{:08x}", hash as u32)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: SessionKind, idle: Option<u64>, absolute: Option<u64>) -> SessionPolicy {
        let spec = SessionPersistence {
            name: Some("sid".into()),
            kind,
            absolute_timeout: absolute.map(Duration::from_secs),
            idle_timeout: idle.map(Duration::from_secs),
            permanent_cookie: absolute.is_some(),
        };
        SessionPolicy::new(&spec, "unused", "/shop").unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::try_from(*value).unwrap(),
            );
        }
        map
    }

    const ADDR: &str = "10.0.0.7:8080";

    #[test]
    fn a_cookie_session_round_trips_and_is_not_reissued_while_unchanged() {
        let policy = policy(SessionKind::Cookie, None, Some(3600));
        let (name, value) = policy
            .issue(None, ADDR.parse().unwrap(), 1000, false)
            .unwrap();
        assert_eq!(name, header::SET_COOKIE);
        let value = value.to_str().unwrap();
        assert!(
            value.ends_with("; Path=/shop; Max-Age=3600; HttpOnly"),
            "{value}"
        );
        let pair = value.split(';').next().unwrap();
        // Among other cookies, split over two Cookie fields as HTTP/2 clients do.
        let request = headers(&[("cookie", "a=1"), ("cookie", &format!("b=2; {pair}"))]);
        let token = policy.read(&request, 2000).unwrap();
        assert_eq!(token.endpoint, endpoint_id(ADDR.parse().unwrap()));
        assert_eq!(
            policy.issue(Some(token), ADDR.parse().unwrap(), 2000, false),
            None
        );
        // Another endpoint took over: a new session for it.
        let moved = policy.issue(Some(token), "10.0.0.8:8080".parse().unwrap(), 2000, true);
        let (_, value) = moved.unwrap();
        assert!(value.to_str().unwrap().ends_with("; HttpOnly; Secure"));
    }

    #[test]
    fn expired_sessions_are_ignored() {
        let policy = policy(SessionKind::Header, Some(60), Some(600));
        let (name, value) = policy
            .issue(None, ADDR.parse().unwrap(), 1000, false)
            .unwrap();
        assert_eq!(name.as_str(), "sid");
        let request = headers(&[("sid", value.to_str().unwrap())]);
        assert!(policy.read(&request, 1060).is_some());
        assert_eq!(
            policy.read(&request, 1061),
            None,
            "idle for longer than 60 s"
        );

        // Used every 50 s, the idle timeout never runs out but the absolute one does.
        let mut token = policy.read(&request, 1000).unwrap();
        let mut now = 1000;
        while now < 1600 {
            now += 50;
            let (_, value) = policy
                .issue(Some(token), ADDR.parse().unwrap(), now, false)
                .unwrap();
            token = policy
                .read(&headers(&[("sid", value.to_str().unwrap())]), now)
                .unwrap();
        }
        let (_, value) = policy
            .issue(Some(token), ADDR.parse().unwrap(), 1650, false)
            .unwrap();
        assert_eq!(
            policy.read(&headers(&[("sid", value.to_str().unwrap())]), 1650),
            None
        );
    }

    #[test]
    fn malformed_tokens_start_a_new_session() {
        let policy = policy(SessionKind::Cookie, None, None);
        for bad in [
            "sid=",
            "sid=zz.1.1",
            "sid=1.2",
            "sid=1.5.4",
            "sid=1.2.3.4",
            "other=1.1.1",
        ] {
            assert_eq!(policy.read(&headers(&[("cookie", bad)]), 10), None, "{bad}");
        }
    }

    #[test]
    fn default_names_are_stable_and_distinct_per_rule() {
        let a = default_name(SessionKind::Cookie, "shop/web", 0);
        assert_eq!(a, default_name(SessionKind::Cookie, "shop/web", 0));
        assert_ne!(a, default_name(SessionKind::Cookie, "shop/web", 1));
        assert!(a.starts_with("meridian-session-"));
    }
}
