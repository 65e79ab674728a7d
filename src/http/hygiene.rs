//! Header hygiene for both directions: hop-by-hop headers removed (including every header
//! a `Connection` header names), proxy headers overwritten rather than appended, and the
//! client's own `X-Tether-*` headers dropped so an upstream never mistakes them for ours.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, COOKIE, FORWARDED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};

/// RFC 9110 §7.6.1 plus the de-facto ones that proxies must not forward.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The names of tether's own headers to the upstream, which no client may supply.
const OWN_HEADER_PREFIX: &[u8] = b"x-tether-";

/// Whether the `Connection` header carries `token` (case-insensitive), read as bytes so a
/// non-UTF-8 value cannot trip anything.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Cloning a value is a reference-count bump; it frees `headers` for mutation. One
    // Connection header (the usual case) needs no list.
    let mut values = headers.get_all(CONNECTION).iter();
    match (values.next().cloned(), values.next().is_some()) {
        (None, _) => {}
        (Some(only), false) => remove_named(headers, &only),
        (Some(_), true) => {
            let all: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
            for value in &all {
                remove_named(headers, value);
            }
        }
    }
    // One pass over the names finds which are present (a response usually has only
    // `Connection`): cheaper than a hashed lookup for each of the nine, twice a request.
    let present = headers.keys().fold(0u16, |found, name| match HOP_BY_HOP.iter().position(|h| h == name) {
        Some(i) => found | 1 << i,
        None => found,
    });
    for (i, name) in HOP_BY_HOP.into_iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
    debug_assert!(!headers.contains_key(TE) && !headers.contains_key(TRAILER) && !headers.contains_key(TRANSFER_ENCODING) && !headers.contains_key(UPGRADE));
}

/// Removes every header a `Connection` value names, read as bytes so a non-UTF-8 value
/// cannot trip anything.
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in connection.as_bytes().split(|&b| b == b',') {
        if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
            headers.remove(name);
        }
    }
}

/// Drops every client-supplied `X-Tether-*` header and any `Forwarded` header (tether
/// states the forwarding facts itself in `X-Forwarded-*`).
pub fn strip_client_claims(headers: &mut HeaderMap) {
    headers.remove(FORWARDED);
    let is_own = |name: &HeaderName| name.as_str().as_bytes().starts_with(OWN_HEADER_PREFIX);
    if headers.keys().any(is_own) {
        let own: Vec<HeaderName> = headers.keys().filter(|n| is_own(n)).cloned().collect();
        for name in own {
            headers.remove(name);
        }
    }
}

/// Adds `Secure` and `HttpOnly` to each `Set-Cookie` of a session cookie (one of `names`)
/// that leaves them out (`upstream.harden_session_cookies`, TLS listeners only): a session
/// cookie sent over plain HTTP, or readable by a page's scripts, is easier to steal.
/// Other cookies, and attributes already there (in any case), are left as they are.
pub fn harden_session_cookies(headers: &mut HeaderMap, names: &[String]) {
    let is_session = |v: &[u8]| {
        let name = v.split(|&b| b == b'=').next().unwrap_or(b"").trim_ascii();
        names.iter().any(|n| n.as_bytes() == name)
    };
    if !headers.get_all(SET_COOKIE).iter().any(|v| is_session(v.as_bytes())) {
        return;
    }
    let values: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
    headers.remove(SET_COOKIE);
    for v in values {
        let bytes = v.as_bytes();
        if !is_session(bytes) {
            headers.append(SET_COOKIE, v);
            continue;
        }
        let has = |attr: &[u8]| bytes.split(|&b| b == b';').skip(1).any(|a| a.split(|&b| b == b'=').next().unwrap_or(b"").trim_ascii().eq_ignore_ascii_case(attr));
        let mut out = bytes.to_vec();
        if !has(b"secure") {
            out.extend_from_slice(b"; Secure");
        }
        if !has(b"httponly") {
            out.extend_from_slice(b"; HttpOnly");
        }
        // invariant: a valid header value plus visible ASCII is a valid header value.
        headers.append(SET_COOKIE, HeaderValue::from_bytes(&out).unwrap_or(v));
    }
}

/// One `Cookie` header, as RFC 9113 §8.2.3 says an intermediary forwarding HTTP/2
/// cookie crumbs to HTTP/1.1 must make it, and as tether judged it: the values joined
/// with `; ` in the order they came, each as the client sent it. Several `Cookie` lines
/// would be joined with commas by WSGI servers, which hides every cookie after the first.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else { return };
    let mut joined = Vec::with_capacity(first.len() * 4);
    for (i, v) in headers.get_all(COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // invariant: each part was a valid header value, and "; " adds only visible ASCII.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// Marks credentials as sensitive: never added to an HPACK table, shown as `Sensitive`
/// by any `Debug` print.
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for name in [http::header::COOKIE, http::header::AUTHORIZATION] {
        if let http::header::Entry::Occupied(mut e) = headers.entry(name) {
            for v in e.iter_mut() {
                v.set_sensitive(true);
            }
        }
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`, replacing anything the client sent.
pub fn set_forwarded(headers: &mut HeaderMap, client: std::net::IpAddr, tls: bool, host: Option<&HeaderValue>) {
    let mut buf = [0u8; 45];
    let ip = format_ip(client, &mut buf);
    // invariant: a formatted IP address is ASCII digits, dots, colons and hex.
    headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(ip).expect("IP text is a valid header value"));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if tls { "https" } else { "http" }));
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Formats an address into a stack buffer (the longest IPv6 text is 45 bytes).
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 45]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // invariant: 45 bytes hold any IPv4 or IPv6 text form.
    write!(cursor, "{ip}").expect("IP fits in 45 bytes");
    let len = cursor.position() as usize;
    // invariant: Display for IpAddr writes ASCII only.
    std::str::from_utf8(&buf[..len]).expect("IP text is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, X-Secret , upgrade"));
        h.append("connection", HeaderValue::from_static("x-other"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn non_utf8_connection_value_does_not_panic() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_bytes(b"\xff\xfe, close").unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn claims_are_dropped_and_forwarded_overwritten() {
        let mut h = HeaderMap::new();
        h.insert("x-tether-decision", HeaderValue::from_static("allow"));
        h.insert("X-Tether-Score", HeaderValue::from_static("0"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        strip_client_claims(&mut h);
        set_forwarded(&mut h, "2001:db8::1".parse().unwrap(), true, Some(&HeaderValue::from_static("admin.example")));
        assert!(h.get("x-tether-decision").is_none() && h.get("x-tether-score").is_none());
        assert!(h.get("forwarded").is_none());
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), vec!["2001:db8::1"]);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "admin.example");
    }

    #[test]
    fn credentials_are_sensitive() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("session=secret"));
        h.append("cookie", HeaderValue::from_static("other=x"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        mark_sensitive(&mut h);
        assert!(h.get_all("cookie").iter().all(|v| v.is_sensitive()));
        assert!(h["authorization"].is_sensitive());
        assert!(!format!("{h:?}").contains("secret"));
    }

    #[test]
    fn connection_token_lookup() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(connection_has(&h, "upgrade"));
        assert!(!connection_has(&h, "close"));
    }

    #[test]
    fn session_cookies_are_hardened_and_others_left_alone() {
        let names = vec!["session".to_owned(), "sid".to_owned()];
        // (Set-Cookie as the console wrote it, as the client gets it)
        let rows = [
            ("session=abc; Path=/", "session=abc; Path=/; Secure; HttpOnly"),
            ("session=abc; Path=/; secure", "session=abc; Path=/; secure; HttpOnly"),
            ("session=abc; HTTPONLY; Secure", "session=abc; HTTPONLY; Secure"),
            ("sid=1", "sid=1; Secure; HttpOnly"),
            (" session = x ; SameSite=Lax", " session = x ; SameSite=Lax; Secure; HttpOnly"),
            // Not a session cookie, or only named like one.
            ("theme=dark", "theme=dark"),
            ("session_hint=1", "session_hint=1"),
            ("x=1; Path=/session", "x=1; Path=/session"),
        ];
        let mut h = HeaderMap::new();
        for (written, _) in rows {
            h.append(SET_COOKIE, HeaderValue::from_static(written));
        }
        harden_session_cookies(&mut h, &names);
        let got: Vec<&str> = h.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        let want: Vec<&str> = rows.iter().map(|(_, w)| *w).collect();
        assert_eq!(got, want);
    }
}
