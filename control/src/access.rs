//! Who may call which route (sans-IO: a route, the caller's address and its bearer token in,
//! allowed or an error out).
//!
//! Routes are split by audience. Media signalling (WHIP/WHEP, publish, play, the SDP file)
//! is for the public: open, or behind `http.public_token` when set, and gated further by the
//! publishStream/playStream hooks. The control API (find, terminate, admin, metrics) is for
//! the operator: behind `http.token`; without one it answers loopback clients only, so a
//! fresh install cannot be driven from the network. A `http.control_listen` listener serves
//! the control API to whoever reaches it (the operator chose that address), still behind
//! `http.token` when set.

use std::net::IpAddr;

use crate::core::ApiError;

/// Who a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Health, readiness, the OpenAPI file and the demo pages: no token ever.
    Open,
    /// Media signalling.
    Public,
    /// The operator's API.
    Control,
}

/// The route's audience, from its method and path.
pub fn audience(method: &str, path: &str) -> Audience {
    if path.starts_with("/whip/") || path.starts_with("/whep/") {
        return Audience::Public;
    }
    match (method, path) {
        (_, "/rest-api/publish") | (_, "/rest-api/play") => Audience::Public,
        ("GET", p) if p.starts_with("/rest-api/stream/") && p.ends_with(".sdp") => Audience::Public,
        (_, p) if p.starts_with("/rest-api/") => Audience::Control,
        (_, "/metrics") => Audience::Control,
        _ => Audience::Open,
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen` / `https.listen`.
    Main,
    /// `http.control_listen`.
    Control,
}

/// The tokens in force (replaced as a whole on reload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `http.token`: the operator's.
    pub control: Option<String>,
    /// `http.public_token`: media signalling's (the operator's token is accepted too).
    pub public: Option<String>,
    /// `http.control_listen` is configured: the control API is served there, not on the
    /// main listener.
    pub control_listener: Option<std::net::SocketAddr>,
}

/// Allowed, or why not (401 wrong/missing token, 403 not for this client or listener).
/// `forwarded`: the request carries `Forwarded` / `X-Forwarded-For`, i.e. a proxy on this
/// host relays it for someone else, so a loopback peer address says nothing about the client.
pub fn check(
    tokens: &Tokens,
    audience: Audience,
    listener: Listener,
    peer: IpAddr,
    forwarded: bool,
    bearer: Option<&str>,
) -> Result<(), ApiError> {
    let matches = |want: &Option<String>| {
        want.as_deref()
            .zip(bearer)
            .is_some_and(|(w, b)| constant_time_eq(w.as_bytes(), b.as_bytes()))
    };
    match audience {
        Audience::Open => Ok(()),
        Audience::Public => {
            if tokens.public.is_none() || matches(&tokens.public) || matches(&tokens.control) {
                Ok(())
            } else {
                Err(ApiError::new(
                    401,
                    "missing or wrong bearer token (http.public_token)",
                ))
            }
        }
        Audience::Control => {
            if let (Listener::Main, Some(addr)) = (listener, tokens.control_listener) {
                return Err(ApiError::new(
                    403,
                    format!("the control API is served on http.control_listen ({addr}), not here"),
                ));
            }
            match &tokens.control {
                Some(_) if matches(&tokens.control) => Ok(()),
                Some(_) => Err(ApiError::new(
                    401,
                    "missing or wrong bearer token (http.token)",
                )),
                None if listener == Listener::Control || (is_loopback(peer) && !forwarded) => {
                    Ok(())
                }
                None => Err(ApiError::new(
                    403,
                    "the control API answers only loopback clients (not requests relayed by a \
                     proxy) while http.token is unset; set http.token (and send it as a bearer \
                     token) or http.control_listen to open it",
                )),
            }
        }
    }
}

/// The token of an `Authorization: Bearer ...` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header?.strip_prefix("Bearer ").map(str::trim)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));
    const FAR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    fn status(
        t: &Tokens,
        a: Audience,
        l: Listener,
        peer: IpAddr,
        forwarded: bool,
        bearer: Option<&str>,
    ) -> u16 {
        check(t, a, l, peer, forwarded, bearer)
            .map(|_| 200)
            .unwrap_or_else(|e| e.status)
    }

    #[test]
    fn routes_are_split_by_audience() {
        use Audience::*;
        for (m, p, want) in [
            ("POST", "/whip/cam", Public),
            ("DELETE", "/whep/cam/abc", Public),
            ("POST", "/rest-api/publish", Public),
            ("POST", "/rest-api/play", Public),
            ("GET", "/rest-api/stream/cam.sdp", Public),
            ("POST", "/rest-api/stream/find_all", Control),
            ("POST", "/rest-api/stream/terminate", Control),
            ("POST", "/rest-api/admin/apps/add", Control),
            ("POST", "/rest-api/stream/cam.sdp", Control),
            ("POST", "/rest-api/nonexistent", Control),
            ("GET", "/metrics", Control),
            ("GET", "/health", Open),
            ("GET", "/ready", Open),
            ("GET", "/demo/play.html", Open),
            ("GET", "/openapi.json", Open),
        ] {
            assert_eq!(audience(m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn without_a_token_the_control_api_is_loopback_only_and_public_routes_open() {
        let t = Tokens::default();
        let c = |peer| status(&t, Audience::Control, Listener::Main, peer, false, None);
        assert_eq!(c(LO), 200);
        assert_eq!(c(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)), 200);
        assert_eq!(c("::ffff:127.0.0.1".parse().unwrap()), 200);
        assert_eq!(c(FAR), 403);
        assert_eq!(c("::ffff:10.0.0.1".parse().unwrap()), 403);
        assert_eq!(
            status(&t, Audience::Public, Listener::Main, FAR, false, None),
            200
        );
        let e = check(&t, Audience::Control, Listener::Main, FAR, false, None).unwrap_err();
        assert!(e.message.contains("http.token"), "{}", e.message);
    }

    #[test]
    fn tokens_gate_their_audiences() {
        let t = Tokens {
            control: Some("op".into()),
            public: Some("pub".into()),
            control_listener: None,
        };
        let c = |a, b| status(&t, a, Listener::Main, FAR, false, b);
        assert_eq!(c(Audience::Control, Some("op")), 200);
        assert_eq!(c(Audience::Control, Some("pub")), 401);
        assert_eq!(c(Audience::Control, None), 401);
        // With a token, loopback is no exception.
        assert_eq!(
            status(&t, Audience::Control, Listener::Main, LO, false, None),
            401
        );
        assert_eq!(c(Audience::Public, Some("pub")), 200);
        assert_eq!(c(Audience::Public, Some("op")), 200);
        assert_eq!(c(Audience::Public, Some("pu")), 401);
        assert_eq!(c(Audience::Public, None), 401);
        assert_eq!(c(Audience::Open, None), 200);
    }

    #[test]
    fn a_control_listener_takes_the_control_api_off_the_main_one() {
        let t = Tokens {
            control_listener: Some("127.0.0.1:8082".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            status(&t, Audience::Control, Listener::Main, LO, false, None),
            403
        );
        assert_eq!(
            status(&t, Audience::Control, Listener::Control, FAR, false, None),
            200
        );
        let t = Tokens {
            control: Some("op".into()),
            ..t
        };
        assert_eq!(
            status(&t, Audience::Control, Listener::Control, FAR, false, None),
            401
        );
        assert_eq!(
            status(
                &t,
                Audience::Control,
                Listener::Control,
                FAR,
                false,
                Some("op")
            ),
            200
        );
    }

    #[test]
    fn a_request_relayed_by_a_local_proxy_is_not_a_loopback_client() {
        let t = Tokens::default();
        assert_eq!(
            status(&t, Audience::Control, Listener::Main, LO, true, None),
            403
        );
        assert_eq!(
            status(&t, Audience::Public, Listener::Main, LO, true, None),
            200
        );
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
