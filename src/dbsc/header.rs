//! The DBSC header and cookie syntax: the structured-field values tether writes
//! (`Secure-Session-Registration`, `Secure-Session-Challenge`), the ones it reads
//! (`Secure-Session-Response`, `Sec-Secure-Session-Id`, `Secure-Session-Skipped`), and the
//! bound cookie's `Set-Cookie` lines and removal from what the console receives.
//!
//! Only the header names current since the 2025 rename; the `Sec-Session-*` names of the
//! first origin trial are not read.

use http::header::{HeaderMap, HeaderValue, COOKIE};

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

/// The values of every cookie named `name` in the request's `Cookie` headers.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).filter_map(move |pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Removes every cookie named `name` from the `Cookie` headers: the bound cookie is
/// tether's, and the console never sees it.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    if !cookie_values(headers, name).any(|_| true) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| {
            let text = v.to_str().ok()?;
            let rest: Vec<&str> = text.split(';').map(str::trim).filter(|p| !p.is_empty() && p.split_once('=').is_none_or(|(k, _)| k.trim() != name)).collect();
            (!rest.is_empty()).then(|| HeaderValue::from_str(&rest.join("; ")).ok()).flatten()
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
}
