//! The DBSC header and cookie syntax: the structured-field values tether writes
//! (`Secure-Session-Registration`, `Secure-Session-Challenge`), the ones it reads
//! (`Secure-Session-Response`, `Sec-Secure-Session-Id`, `Secure-Session-Skipped`), and the
//! bound cookie's `Set-Cookie` lines and removal from what the console receives.
//!
//! Only the header names current since the 2025 rename; the `Sec-Session-*` names of the
//! first origin trial are not read.

use http::header::{HeaderMap, HeaderValue, COOKIE};

/// The fetch-metadata header naming who started a request.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

use crate::session::Secs;

pub const REGISTRATION: &str = "secure-session-registration";
pub const CHALLENGE: &str = "secure-session-challenge";
pub const RESPONSE: &str = "secure-session-response";
pub const SESSION_ID: &str = "sec-secure-session-id";
pub const SKIPPED: &str = "secure-session-skipped";

/// `(ES256 RS256);path="…";challenge="…"`: the algorithms tether verifies, the
/// registration endpoint, and the challenge the proof must name. `None` when the
/// challenge is not plain base64url (it always is when tether minted it).
pub fn registration(path: &str, challenge: &str) -> Option<HeaderValue> {
    plain(challenge).then(|| format!("(ES256 RS256);path=\"{path}\";challenge=\"{challenge}\"")).and_then(|v| HeaderValue::from_str(&v).ok())
}

/// `"challenge";id="session id"`.
pub fn challenge(challenge: &str, session_id: &str) -> Option<HeaderValue> {
    (plain(challenge) && plain(session_id)).then(|| format!("\"{challenge}\";id=\"{session_id}\"")).and_then(|v| HeaderValue::from_str(&v).ok())
}

/// Characters that need no escaping in an sf-string and cannot end it.
fn plain(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The one value of a header that must appear once, read as an sf-string (its
/// parameters ignored, as the spec asks); a bare token is read leniently as the same.
/// Two values, escapes, or anything unterminated read as nothing.
pub fn sf_string<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let (first, second) = (values.next()?, values.next());
    if second.is_some() {
        return None;
    }
    let v = first.to_str().ok()?.trim();
    let item = match v.strip_prefix('"') {
        Some(rest) => {
            let end = rest.find('"')?;
            let inner = &rest[..end];
            if inner.contains('\\') {
                return None;
            }
            inner
        }
        None => v.split(';').next()?.trim(),
    };
    (!item.is_empty()).then_some(item)
}

/// Whether the browser says it skipped a refresh (unreachable, server error, quota):
/// the request lacks its bound cookie through no loss of the key.
pub fn skipped(headers: &HeaderMap) -> bool {
    headers.contains_key(SKIPPED)
}

/// Whether the browser says another site started the request (`Sec-Fetch-Site:
/// cross-site`): such a request carries no `SameSite=Lax` cookie unless it is a
/// top-level navigation by a safe method, so a missing bound cookie says nothing of
/// the key.
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers.get_all(SEC_FETCH_SITE).iter().any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"cross-site"))
}

/// The values of every cookie named `name` in the request's `Cookie` headers. Read on
/// bytes, as `session::credential` reads the session cookie: a byte above 0x7f in
/// another cookie of the same header hides nothing (the bound cookie's own value is
/// base64url, so a value that is not UTF-8 is not one tether minted and is skipped).
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers.get_all(COOKIE).iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')).filter_map(move |pair| {
        let (k, v) = split_pair(pair)?;
        (k == name.as_bytes()).then(|| std::str::from_utf8(v).ok()).flatten().map(|v| v.trim_matches('"'))
    })
}

/// Whether the request's `Cookie` headers name `name`, whatever its value holds.
pub fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(COOKIE).iter().any(|v| v.as_bytes().split(|&b| b == b';').any(|p| split_pair(p).is_some_and(|(k, _)| k == name.as_bytes())))
}

/// A cookie pair's name and value, each trimmed; `None` without an `=`.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
}

/// Removes every cookie named `name` from the `Cookie` headers: the bound cookie is
/// tether's, and the console never sees it. Every other pair reaches the console byte
/// for byte, whatever bytes it holds.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    if !has_cookie(headers, name) {
        return;
    }
    let named = |pair: &[u8]| split_pair(pair).is_some_and(|(k, _)| k == name.as_bytes());
    let kept: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| {
            let rest: Vec<&[u8]> = v.as_bytes().split(|&b| b == b';').map(<[u8]>::trim_ascii).filter(|p| !p.is_empty() && !named(p)).collect();
            // A header that held only the bound cookie goes; the rest are joined again
            // from bytes that already formed a valid header value.
            (!rest.is_empty()).then(|| HeaderValue::from_bytes(&rest.join(&b"; "[..])).ok()).flatten()
        })
        .collect();
    headers.remove(COOKIE);
    for v in kept {
        headers.append(COOKIE, v);
    }
}

/// The attributes of the bound cookie, as the session instructions repeat them.
/// `__Host-` names demand exactly these (Secure, Path=/, no Domain).
pub const BOUND_ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

/// `Set-Cookie` for a bound cookie living `max_age` seconds.
pub fn set_bound(name: &str, value: &str, max_age: Secs) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={value}; Max-Age={max_age}; {BOUND_ATTRIBUTES}")).ok()
}

/// `Set-Cookie` that removes a cookie set with `Path=/` and no `Domain`.
pub fn expire(name: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}=; Max-Age=0; {BOUND_ATTRIBUTES}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn written_headers_have_the_spec_shape() {
        let r = registration("/.tether/dbsc/register", "abc_-1").unwrap();
        assert_eq!(r, "(ES256 RS256);path=\"/.tether/dbsc/register\";challenge=\"abc_-1\"");
        assert_eq!(challenge("c", "s1").unwrap(), "\"c\";id=\"s1\"");
        assert!(registration("/r", "a\"b").is_none() && challenge("c\\", "s").is_none());
    }

    #[test]
    fn sf_strings_are_read_once_and_plainly() {
        // (the request's headers, what is read)
        type Row<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let rows: [Row<'_>; 7] = [
            (&[(RESPONSE, "\"a.b.c\"")], Some("a.b.c")),
            (&[(RESPONSE, "\"a.b.c\";p=1")], Some("a.b.c")),
            (&[(RESPONSE, "a.b.c")], Some("a.b.c")),
            (&[(RESPONSE, "\"a.b.c")], None),
            (&[(RESPONSE, "\"a\\\"b\"")], None),
            (&[(RESPONSE, "\"a\""), (RESPONSE, "\"b\"")], None),
            (&[], None),
        ];
        for (pairs, want) in rows {
            assert_eq!(sf_string(&headers(pairs), RESPONSE), want, "{pairs:?}");
        }
    }

    #[test]
    fn the_bound_cookie_is_found_and_stripped_alone() {
        let mut h = headers(&[("cookie", "session=s1; __Host-b=v1"), ("cookie", "__Host-b=v2"), ("cookie", "theme=dark")]);
        assert_eq!(cookie_values(&h, "__Host-b").collect::<Vec<_>>(), ["v1", "v2"]);
        strip_cookie(&mut h, "__Host-b");
        let left: Vec<&str> = h.get_all(COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(left, ["session=s1", "theme=dark"]);
        assert_eq!(cookie_values(&h, "session").collect::<Vec<_>>(), ["s1"]);
    }

    #[test]
    fn a_byte_above_ascii_elsewhere_in_the_header_hides_nothing() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"session=s1; theme=caf\xe9; __Host-b=v1").unwrap());
        assert_eq!(cookie_values(&h, "__Host-b").collect::<Vec<_>>(), ["v1"], "the bound cookie is found");
        strip_cookie(&mut h, "__Host-b");
        let left: Vec<&[u8]> = h.get_all(COOKIE).iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(left, [&b"session=s1; theme=caf\xe9"[..]], "the other cookies reach the console untouched");
    }

    #[test]
    fn only_a_cross_site_request_is_one() {
        for (value, want) in [(Some("cross-site"), true), (Some(" Cross-Site "), true), (Some("same-site"), false), (Some("same-origin"), false), (Some("none"), false), (None, false)] {
            let mut h = HeaderMap::new();
            if let Some(v) = value {
                h.insert(SEC_FETCH_SITE, HeaderValue::from_static(v));
            }
            assert_eq!(cross_site(&h), want, "{value:?}");
        }
    }
}
