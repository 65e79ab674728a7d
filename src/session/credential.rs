//! Reading the session credential exactly once, as leniently as any console framework
//! reads it, and refusing what two frameworks could read two ways.
//!
//! Cookies: every `Cookie` header (HTTP/2 crumbs included) is one list of `;`-separated
//! pairs. A configured session cookie counts wherever a lenient parser would find it: its
//! name compared without regard to case or percent-encoding, its value unquoted and
//! percent-decoded, with `+` and space read alike (form decoders differ on them). Refused:
//! a session cookie named twice, two different session cookies, a session cookie hidden
//! behind a `,` or whitespace inside another pair (legacy and `SimpleCookie` parsers read
//! it, tether's `;` split would not), a session value that itself holds such a separator.
//!
//! `Authorization`: more than one header is refused; the scheme is split off at any run
//! of spaces or tabs, compared without regard to case. With bearer sessions on, a bearer
//! token together with a session cookie is refused (which one the console believes
//! depends on the framework), and another scheme is an unrecognised credential.

use std::borrow::Cow;

use http::header::{HeaderMap, AUTHORIZATION, COOKIE};

/// Where the session came from, with its secret in the form it is keyed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Cookie { name: &'a str, value: Cow<'a, [u8]> },
    Bearer(&'a [u8]),
}

impl<'a> Credential<'a> {
    /// The domain the key is hashed under, so a cookie and a bearer token with equal
    /// bytes are different sessions.
    pub fn domain(&self) -> &'a [u8] {
        match self {
            Credential::Cookie { name, .. } => name.as_bytes(),
            Credential::Bearer(_) => b"\0bearer",
        }
    }

    pub fn secret(&self) -> &[u8] {
        match self {
            Credential::Cookie { value, .. } => value,
            Credential::Bearer(token) => token,
        }
    }
}

/// A request tether refuses (400) because its credential has more than one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    #[error("a session cookie appears more than once")]
    RepeatedCookie,
    #[error("two different session cookies")]
    TwoSessionCookies,
    #[error("a session cookie behind a separator other than ';'")]
    HiddenCookie,
    #[error("a session cookie value holds a separator")]
    SeparatorInValue,
    #[error("a session cookie together with a bearer token")]
    CookieAndBearer,
    #[error("more than one Authorization header")]
    SeveralAuthorizations,
    #[error("a bearer token with whitespace inside")]
    SplitBearer,
}

impl Ambiguity {
    /// The audit log's `detail` for a refused request.
    pub fn as_str(self) -> &'static str {
        match self {
            Ambiguity::RepeatedCookie => "repeated_session_cookie",
            Ambiguity::TwoSessionCookies => "two_session_cookies",
            Ambiguity::HiddenCookie => "hidden_session_cookie",
            Ambiguity::SeparatorInValue => "separator_in_session_cookie",
            Ambiguity::CookieAndBearer => "cookie_and_bearer",
            Ambiguity::SeveralAuthorizations => "several_authorization_headers",
            Ambiguity::SplitBearer => "split_bearer_token",
        }
    }
}

/// What a request carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found<'a> {
    pub credential: Option<Credential<'a>>,
    /// Something credential-shaped tether cannot read (audited; judged as a first sight).
    pub unrecognised: bool,
}

/// Reads the session credential of a request.
pub fn read<'a>(headers: &'a HeaderMap, cookies: &'a [String], bearer: bool) -> Result<Found<'a>, Ambiguity> {
    let mut found = Found::default();
    let mut cookie: Option<Credential<'a>> = None;
    // Bytes throughout: the cookie list is ASCII in practice, and a byte that is not
    // changes nothing about where its separators are.
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = trim(pair);
            if pair.is_empty() {
                continue;
            }
            // A session cookie after a ',' or whitespace inside this pair: a lenient parser
            // sees a pair of its own there.
            if pair.iter().any(|&b| is_separator(b)) && hidden_cookie(pair, cookies) {
                return Err(Ambiguity::HiddenCookie);
            }
            let Some(eq) = pair.iter().position(|&b| b == b'=') else { continue };
            let Some(configured) = session_name(trim(&pair[..eq]), cookies) else { continue };
            if let Some(Credential::Cookie { name: seen, .. }) = &cookie {
                return Err(if *seen == configured { Ambiguity::RepeatedCookie } else { Ambiguity::TwoSessionCookies });
            }
            let value = trim(&pair[eq + 1..]);
            let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
            if value.iter().any(|&b| is_separator(b)) {
                return Err(Ambiguity::SeparatorInValue);
            }
            if value.is_empty() {
                found.unrecognised = true;
                // Still counted: `session=; session=V` is two readings.
                cookie = Some(Credential::Cookie { name: configured, value: Cow::Borrowed(b"") });
                continue;
            }
            cookie = Some(Credential::Cookie { name: configured, value: canonical_value(value) });
        }
    }
    let cookie = cookie.filter(|c| !c.secret().is_empty());
    let mut authorizations = headers.get_all(AUTHORIZATION).iter();
    let authorization = authorizations.next();
    if authorizations.next().is_some() {
        return Err(Ambiguity::SeveralAuthorizations);
    }
    let token = match (bearer, authorization) {
        (true, Some(v)) => match bearer_token(v.as_bytes())? {
            Some(t) => Some(t),
            None => {
                found.unrecognised = true;
                None
            }
        },
        _ => None,
    };
    found.credential = match (cookie, token) {
        (Some(_), Some(_)) => return Err(Ambiguity::CookieAndBearer),
        (Some(c), None) => Some(c),
        (None, Some(t)) => Some(Credential::Bearer(t)),
        (None, None) => None,
    };
    Ok(found)
}

fn is_separator(b: u8) -> bool {
    b == b',' || b == b' ' || b == b'\t'
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The configured name `name` spells, compared as a lenient framework would.
fn session_name<'a>(name: &[u8], cookies: &'a [String]) -> Option<&'a str> {
    let decoded: Cow<'_, [u8]> = if name.contains(&b'%') { percent_encoding::percent_decode(name).into() } else { Cow::Borrowed(name) };
    cookies.iter().find(|c| c.as_bytes().eq_ignore_ascii_case(&decoded)).map(String::as_str)
}

/// Whether a session cookie hides after a `,` or whitespace inside `pair`. Whitespace
/// around `=` belongs to the cookie it separates (`x=1 session = V` is read as
/// `session=V` by parsers that allow it), so it is dropped before the split.
fn hidden_cookie(pair: &[u8], cookies: &[String]) -> bool {
    // One pass from the end marks the blanks that run up to an `=`; one from the start
    // drops them and those right after an `=`. Linear, whatever the pair holds.
    let blank = |b: u8| b == b' ' || b == b'\t';
    let mut before_eq = vec![false; pair.len()];
    let mut next_is_eq = false;
    for (i, &b) in pair.iter().enumerate().rev() {
        if blank(b) {
            before_eq[i] = next_is_eq;
        } else {
            next_is_eq = b == b'=';
        }
    }
    let mut joined = Vec::with_capacity(pair.len());
    for (i, &b) in pair.iter().enumerate() {
        if blank(b) && (before_eq[i] || joined.last() == Some(&b'=')) {
            continue;
        }
        joined.push(b);
    }
    joined
        .split(|&b| is_separator(b))
        .skip(1)
        .any(|token| token.iter().position(|&b| b == b'=').is_some_and(|eq| session_name(&token[..eq], cookies).is_some()))
}

/// Unquoted, percent-decoded, `+` read as space.
pub(crate) fn canonical_value(value: &[u8]) -> Cow<'_, [u8]> {
    if !value.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(value);
    }
    let mut out: Vec<u8> = percent_encoding::percent_decode(value).collect();
    for b in out.iter_mut() {
        if *b == b'+' {
            *b = b' ';
        }
    }
    Cow::Owned(out)
}

/// `Bearer` and a token, split at any run of spaces or tabs; `None` for another scheme or
/// an empty token.
fn bearer_token(value: &[u8]) -> Result<Option<&[u8]>, Ambiguity> {
    let value = value.trim_ascii();
    let Some(split) = value.iter().position(|&b| b == b' ' || b == b'\t') else { return Ok(None) };
    if !value[..split].eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let token = value[split..].trim_ascii();
    if token.is_empty() {
        return Ok(None);
    }
    if token.iter().any(|&b| b == b' ' || b == b'\t' || b == b',') {
        return Err(Ambiguity::SplitBearer);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names() -> Vec<String> {
        vec!["session".into(), "sid".into()]
    }

    fn secret(list: &[(&str, &str)]) -> Result<Option<Vec<u8>>, Ambiguity> {
        let h = headers(list);
        let n = names();
        read(&h, &n, true).map(|f| f.credential.map(|c| c.secret().to_vec()))
    }

    #[test]
    fn spellings_that_key_the_victims_session() {
        let v = Some(b"V1".to_vec());
        for (case, list) in [
            ("plain", vec![("cookie", "session=V1")]),
            ("among others", vec![("cookie", "a=1; session=V1; b=2")]),
            ("spaces around", vec![("cookie", "a=1 ;  session = V1 ; b=2")]),
            ("quoted", vec![("cookie", "session=\"V1\"")]),
            ("percent-encoded value", vec![("cookie", "session=%56%31")]),
            ("percent-encoded name", vec![("cookie", "%73ession=V1")]),
            ("name in upper case", vec![("cookie", "SESSION=V1")]),
            ("HTTP/2 crumbs", vec![("cookie", "a=1"), ("cookie", "session=V1"), ("cookie", "b=2")]),
            ("bearer", vec![("authorization", "Bearer V1")]),
            ("bearer, lower case", vec![("authorization", "bearer V1")]),
            ("bearer after a tab", vec![("authorization", "Bearer\tV1")]),
            ("bearer after spaces", vec![("authorization", "Bearer   V1  ")]),
        ] {
            assert_eq!(secret(&list), Ok(v.clone()), "{case}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (case, list, want) in [
            ("comma before the session cookie", vec![("cookie", "x=1, session=V")], Ambiguity::HiddenCookie),
            ("space before the session cookie", vec![("cookie", "x=1 session=V")], Ambiguity::HiddenCookie),
            ("tab before the session cookie", vec![("cookie", "x=1\tsession=V")], Ambiguity::HiddenCookie),
            ("spaces around its =", vec![("cookie", "x=1 session = V")], Ambiguity::HiddenCookie),
            ("a blank name before it", vec![("cookie", "=x session =\t=V")], Ambiguity::HiddenCookie),
            ("comma after the session cookie", vec![("cookie", "session=V, x=1")], Ambiguity::SeparatorInValue),
            ("twice in one header", vec![("cookie", "session=DUMMY; session=V")], Ambiguity::RepeatedCookie),
            ("twice across headers", vec![("cookie", "session=DUMMY"), ("cookie", "session=V")], Ambiguity::RepeatedCookie),
            ("empty then real", vec![("cookie", "session=; session=V")], Ambiguity::RepeatedCookie),
            ("case variants", vec![("cookie", "session=A; Session=V")], Ambiguity::RepeatedCookie),
            ("two configured cookies", vec![("cookie", "session=A; sid=V")], Ambiguity::TwoSessionCookies),
            ("cookie and bearer", vec![("cookie", "session=DUMMY"), ("authorization", "Bearer V")], Ambiguity::CookieAndBearer),
            ("two Authorization headers", vec![("authorization", "Basic eDp5"), ("authorization", "Bearer V")], Ambiguity::SeveralAuthorizations),
            ("bearer with a space inside", vec![("authorization", "Bearer A V")], Ambiguity::SplitBearer),
        ] {
            assert_eq!(secret(&list), Err(want), "{case}");
        }
    }

    #[test]
    fn unreadable_credentials_are_flagged() {
        let n = names();
        for (case, list) in [
            ("basic", vec![("authorization", "Basic eDp5")]),
            ("bearer without a token", vec![("authorization", "Bearer ")]),
            ("empty session cookie", vec![("cookie", "session=")]),
        ] {
            let h = headers(&list);
            let f = read(&h, &n, true).unwrap();
            assert!(f.unrecognised && f.credential.is_none(), "{case}: {f:?}");
        }
        let h = headers(&[("cookie", "other=1")]);
        assert_eq!(read(&h, &n, true).unwrap(), Found::default());
    }

    #[test]
    fn encoded_and_plain_key_alike() {
        let one = secret(&[("cookie", "session=a+b%2Fc")]).unwrap();
        for other in ["session=a%2Bb/c", "session=\"a b/c\"".replace(' ', "%20").as_str(), "session=a%20b%2fc"] {
            assert_eq!(secret(&[("cookie", other)]).unwrap(), one, "{other}");
        }
    }

    #[test]
    fn bearer_disabled_ignores_authorization() {
        let h = headers(&[("cookie", "session=V"), ("authorization", "Bearer X")]);
        let n = names();
        let f = read(&h, &n, false).unwrap();
        assert_eq!(f.credential.map(|c| c.secret().to_vec()), Some(b"V".to_vec()));
    }

    #[test]
    fn every_prefix_of_a_cookie_header_is_read_or_refused() {
        let full = "a=1; b=\"x, y\"; %73ession=%56; c=2";
        let n = names();
        for end in 0..=full.len() {
            let h = headers(&[("cookie", &full[..end])]);
            let _ = read(&h, &n, true);
        }
    }
}
