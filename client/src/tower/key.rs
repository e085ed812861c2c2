//! Who a request counts against: [`KeyExtractor`]s.

use http::request::Parts;
use http::{Extensions, HeaderName};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::warn;

/// The longest header value [`Header`] takes as a subject.
pub const MAX_HEADER_KEY_LEN: usize = 256;

/// Names the subject that a request counts against: a client address, an API key, a user.
///
/// The layer limits each subject on its own: the limiter's key is `policy + ":" + subject`.
///
/// | extractor | subject | `None` when |
/// |---|---|---|
/// | [`ClientIp`] | `ip:` and the client's address (IPv6 grouped by /64) | no peer address is known |
/// | [`Header`] | the header's name, `:` and its value, e.g. `x-api-key:abc` | the header is absent, empty, longer than 256 bytes or not visible ASCII |
/// | a closure `Fn(&Parts) -> Option<String>` | what it returns | it returns `None` |
/// | [`KeyExtractor::or`] | the first extractor's subject, else the second's | both are `None` |
///
/// A request without a subject is answered `400 Bad Request`, never let through unlimited: a
/// client must not escape its limit by leaving a header out.
///
/// **A subject that the client chooses is no limit.** A client that sends a new invented API
/// key with each request is a new subject each time: `Header::new("x-api-key")` alone, or
/// `Header::new("x-api-key").or(ClientIp::new())`, never limits it. Limit the client's address
/// always, and a key as well, with a [`super::Policy::subject`] of its own; and count a key
/// only once it is authenticated (a closure that reads what the authentication layer put in
/// the request's extensions), or anyone can spend anyone's quota.
///
/// ```
/// use http::request::Parts;
/// use ratelimit_client::tower::{ClientIp, KeyExtractor};
///
/// /// What the authentication layer in front put in the request.
/// #[derive(Clone)]
/// struct User(u64);
///
/// let by_user_or_ip = (|request: &Parts| {
///     let user = request.extensions.get::<User>()?;
///     Some(format!("user:{}", user.0))
/// })
/// .or(ClientIp::new());
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The subject of `request`, or `None` when it has none (the layer answers 400).
    fn extract(&self, request: &Parts) -> Option<String>;

    /// This extractor's subject, or `other`'s when this one has none.
    fn or<E: KeyExtractor>(self, other: E) -> Or<Self, E>
    where
        Self: Sized,
    {
        Or {
            first: self,
            second: other,
        }
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn extract(&self, request: &Parts) -> Option<String> {
        self(request)
    }
}

/// Two extractors, the second as a fallback: built by [`KeyExtractor::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for Or<A, B> {
    fn extract(&self, request: &Parts) -> Option<String> {
        self.first
            .extract(request)
            .or_else(|| self.second.extract(request))
    }
}

/// The value of one request header, prefixed with its name: `x-api-key:abc`.
///
/// # A header is what the client says
/// **Use it only for a header that is authenticated before this layer sees it**, or as a
/// policy's own subject next to a limit on the client's address ([`super::Policy::subject`]).
/// A client chooses its headers: one that invents a new key for each request is never limited
/// by the key alone, and one that copies another client's key spends that client's quota.
///
/// The value is used as it is, so it is stored in the limiter's keys: prefer an identifier to a
/// secret. Values that are empty, longer than [`MAX_HEADER_KEY_LEN`] bytes or not visible ASCII
/// give no subject. With several lines of the header, the first counts.
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
}

impl Header {
    /// The header `name`, in any letter case.
    ///
    /// # Panics
    /// When `name` is no valid header name.
    pub fn new(name: &str) -> Header {
        Header {
            name: header_name(name),
        }
    }
}

impl KeyExtractor for Header {
    fn extract(&self, request: &Parts) -> Option<String> {
        let value = request.headers.get(&self.name)?.to_str().ok()?.trim();
        if value.is_empty() || value.len() > MAX_HEADER_KEY_LEN {
            return None;
        }
        Some(format!("{}:{value}", self.name))
    }
}

/// The client's IP address: `ip:203.0.113.7`, or for IPv6 its /64 network,
/// `ip:2001:db8:1:2::/64`.
///
/// # The peer address
/// The address of the connection's peer is read from the request's extensions, where the
/// server puts it: a [`SocketAddr`] (or an [`IpAddr`]) by default. Servers that wrap it in a
/// type of their own are read with [`ClientIp::peer_addr`]. axum puts it there only when it
/// serves with `into_make_service_with_connect_info::<SocketAddr>()`, as a
/// `ConnectInfo<SocketAddr>`; without it, no request has an address, every one is answered 400,
/// and the first logs a warning:
///
/// ```
/// use axum::extract::ConnectInfo;
/// use ratelimit_client::tower::ClientIp;
/// use std::net::SocketAddr;
///
/// let client_ip = ClientIp::new().peer_addr(|extensions| {
///     extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
/// });
/// ```
///
/// # Behind a proxy
/// Behind a reverse proxy every request comes from the proxy's address. Name the header in
/// which the proxy passes the client's address with [`ClientIp::trusted_header`]
/// (`x-forwarded-for`, `x-real-ip`, `forwarded`, ...). Only that header is read, and in it only
/// the entries that trusted proxies wrote:
///
/// - A proxy appends the address it saw to the list, so the **last** entry is the one the
///   proxy in front of the application wrote, and entries before it are whatever the client
///   sent. With `n` proxies in a chain ([`ClientIp::trusted_hops`]), the `n`-th entry from the
///   end is taken; with fewer entries, the first.
/// - Several lines of the header are one list, in order. An entry is an address, an address
///   with a port (`203.0.113.7:4711`, `[2001:db8::1]:4711`), or an RFC 7239 element whose
///   `for=` is one of those.
/// - Without the header the request did not come through the proxy: the peer address counts.
///   An entry that is no address (`unknown`, an obfuscated `_node`) also falls back to the
///   peer address, so such clients share the proxy's quota rather than choose their own.
///
/// Set it only when every request reaches the application through that proxy: a client that
/// can reach the application directly can write the header itself.
#[derive(Clone)]
pub struct ClientIp {
    trusted_header: Option<HeaderName>,
    trusted_hops: usize,
    ipv6_prefix: u8,
    peer: fn(&Extensions) -> Option<IpAddr>,
}

impl Default for ClientIp {
    fn default() -> ClientIp {
        ClientIp::new()
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted_header", &self.trusted_header)
            .field("trusted_hops", &self.trusted_hops)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl ClientIp {
    /// The peer address, with no proxy trusted; IPv6 addresses grouped by /64.
    pub fn new() -> ClientIp {
        ClientIp {
            trusted_header: None,
            trusted_hops: 1,
            ipv6_prefix: 64,
            peer: peer_from_extensions,
        }
    }

    /// Trusts the proxy in front of the application to pass the client's address in the header
    /// `name` (in any letter case); see [Behind a proxy](#behind-a-proxy).
    ///
    /// # Panics
    /// When `name` is no valid header name.
    pub fn trusted_header(mut self, name: &str) -> ClientIp {
        self.trusted_header = Some(header_name(name));
        self
    }

    /// The number of trusted proxies in the chain, each appending to the trusted header
    /// (default 1).
    ///
    /// # Panics
    /// When `hops` is 0.
    pub fn trusted_hops(mut self, hops: usize) -> ClientIp {
        assert!(hops > 0, "trusted_hops must be at least 1");
        self.trusted_hops = hops;
        self
    }

    /// Groups IPv6 clients by their first `bits` bits (default 64, the usual size of one
    /// site's network; 128 keeps each address apart).
    ///
    /// # Panics
    /// When `bits` is above 128.
    pub fn ipv6_prefix(mut self, bits: u8) -> ClientIp {
        assert!(bits <= 128, "an IPv6 prefix has at most 128 bits");
        self.ipv6_prefix = bits;
        self
    }

    /// Reads the peer address from the request's extensions with `peer`, instead of looking
    /// for a [`SocketAddr`] or an [`IpAddr`].
    pub fn peer_addr(mut self, peer: fn(&Extensions) -> Option<IpAddr>) -> ClientIp {
        self.peer = peer;
        self
    }

    /// The client's address: from the trusted header when it is configured and present, else
    /// the peer's. IPv4-mapped IPv6 addresses are given as IPv4.
    pub fn client_ip(&self, request: &Parts) -> Option<IpAddr> {
        let forwarded = self.trusted_header.as_ref().and_then(|name| {
            let entries: Vec<&str> = request
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .collect();
            // Fewer entries than trusted proxies: the first was written by a trusted one.
            let entry = entries.get(entries.len().saturating_sub(self.trusted_hops))?;
            parse_entry(entry)
        });
        forwarded
            .or_else(|| (self.peer)(&request.extensions))
            .map(|ip| ip.to_canonical())
    }
}

impl KeyExtractor for ClientIp {
    fn extract(&self, request: &Parts) -> Option<String> {
        let Some(ip) = self.client_ip(request) else {
            no_peer_address();
            return None;
        };
        Some(match ip {
            IpAddr::V4(ip) => format!("ip:{ip}"),
            IpAddr::V6(ip) if self.ipv6_prefix == 128 => format!("ip:{ip}"),
            IpAddr::V6(ip) => {
                let bits = u32::from(self.ipv6_prefix);
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                let network = Ipv6Addr::from(u128::from(ip) & mask);
                format!("ip:{network}/{bits}")
            }
        })
    }
}

/// Warns, once per process, that a request came without a peer address: the server does not
/// pass it, so every request will be answered 400.
fn no_peer_address() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            "ClientIp found no client address in a request, which is answered 400: the server \
             must put the peer address in the request's extensions (axum: serve with \
             into_make_service_with_connect_info::<SocketAddr>(), and read ConnectInfo with \
             ClientIp::peer_addr)"
        );
    }
}

fn peer_from_extensions(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<SocketAddr>()
        .map(SocketAddr::ip)
        .or_else(|| extensions.get::<IpAddr>().copied())
}

fn header_name(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes())
        .unwrap_or_else(|_| panic!("invalid header name {name:?}"))
}

/// One entry of a forwarding header: an address, with or without a port, or an RFC 7239
/// element (`for=...;proto=...`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let node = if entry.contains('=') {
        entry.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("for")
                .then(|| value.trim())
        })?
    } else {
        entry
    };
    let node = node.trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwarding_entries() {
        let ip = |text: &str| parse_entry(text).map(|ip| ip.to_string());
        assert_eq!(ip("203.0.113.7").as_deref(), Some("203.0.113.7"));
        assert_eq!(ip("203.0.113.7:4711").as_deref(), Some("203.0.113.7"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]:4711").as_deref(), Some("2001:db8::1"));
        assert_eq!(
            ip("for=192.0.2.60;proto=http;by=203.0.113.43").as_deref(),
            Some("192.0.2.60")
        );
        assert_eq!(
            ip("For=\"[2001:db8:cafe::17]:4711\"").as_deref(),
            Some("2001:db8:cafe::17")
        );
        assert_eq!(ip("proto=https"), None);
        assert_eq!(ip("for=unknown"), None);
        assert_eq!(ip("for=_hidden"), None);
        assert_eq!(ip("not an address"), None);
    }
}
