//! Finding the session in a request: a configured cookie, or an `Authorization: Bearer`
//! token. The raw value is borrowed from the request and only ever hashed.

use http::header::{HeaderMap, AUTHORIZATION, COOKIE};

/// Where the session came from, with the raw secret borrowed from the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Cookie { name: &'a str, value: &'a [u8] },
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

    pub fn secret(&self) -> &'a [u8] {
        match self {
            Credential::Cookie { value, .. } => value,
            Credential::Bearer(token) => token,
        }
    }
}

/// The first configured cookie present (in config order), else a bearer token.
pub fn find<'a>(headers: &'a HeaderMap, cookies: &'a [String], bearer: bool) -> Option<Credential<'a>> {
    for name in cookies {
        if let Some(value) = cookie(headers, name.as_bytes()) {
            return Some(Credential::Cookie { name, value });
        }
    }
    if bearer {
        if let Some(token) = bearer_token(headers) {
            return Some(Credential::Bearer(token));
        }
    }
    None
}

/// The value of cookie `name` across every `Cookie` header; an empty value is no cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &[u8]) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
            (k == name && !v.is_empty()).then_some(v)
        })
}

fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookies_in_config_order_across_headers() {
        let names = vec!["sso".to_owned(), "session".to_owned()];
        let h = headers(&[("cookie", "theme=dark; session=abc"), ("cookie", "sso=\"xyz\"")]);
        assert_eq!(find(&h, &names, true), Some(Credential::Cookie { name: "sso", value: b"xyz" }));
        let h = headers(&[("cookie", "theme=dark;session=abc ;x=1")]);
        assert_eq!(find(&h, &names, true), Some(Credential::Cookie { name: "session", value: b"abc" }));
        // Names are exact: a prefix or different case is another cookie.
        let h = headers(&[("cookie", "session_old=abc; Session=def; session=")]);
        assert_eq!(find(&h, &names, false), None);
    }

    #[test]
    fn bearer_tokens() {
        let h = headers(&[("authorization", "Bearer  tok.en ")]);
        assert_eq!(find(&h, &[], true), Some(Credential::Bearer(b"tok.en")));
        assert_eq!(find(&h, &[], false), None);
        let h = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(find(&h, &[], true), None);
        let h = headers(&[("authorization", "bearer")]);
        assert_eq!(find(&h, &[], true), None);
        let names = vec!["session".to_owned()];
        let h = headers(&[("authorization", "Bearer t"), ("cookie", "session=c")]);
        assert_eq!(find(&h, &names, true), Some(Credential::Cookie { name: "session", value: b"c" }));
    }

    #[test]
    fn hostile_cookie_headers_do_not_panic() {
        let h = headers(&[("cookie", ";;;=;==;session"), ("cookie", "")]);
        assert_eq!(find(&h, &["session".to_owned()], true), None);
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_bytes(b"session=\xff\xfe").unwrap());
        assert_eq!(cookie(&h, b"session"), Some(&b"\xff\xfe"[..]));
    }
}
