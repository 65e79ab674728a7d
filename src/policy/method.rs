//! The methods a request is judged as: its own, and any a framework's method override
//! would turn it into (`X-HTTP-Method-Override`, `X-Method-Override`, `X-HTTP-Method`
//! headers, a `_method` query parameter). Bodies are not read: a console whose framework
//! takes `_method` from a form body lists POST on its sensitive routes.

use http::header::{HeaderMap, HeaderName};
use http::Method;

/// Header names parsed once, not on every lookup.
const OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
];

/// At most the request's own method and one per override source (three headers and
/// the query).
pub const MAX_METHODS: usize = 1 + 3 + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// Frameworks upper-case what they receive; a lower-case `delete` is a DELETE to some
    /// of them and an unknown method to tether's routes.
    #[error("the method is not an upper-case token")]
    NotUpperCase,
}

/// The methods to judge, the request's own first.
#[derive(Debug, Clone, Default)]
pub struct Methods {
    list: [Option<Method>; MAX_METHODS],
}

impl Methods {
    pub fn iter(&self) -> impl Iterator<Item = &Method> + Clone {
        self.list.iter().flatten()
    }

    fn push(&mut self, m: Method) {
        if self.iter().any(|x| *x == m) {
            return;
        }
        if let Some(slot) = self.list.iter_mut().find(|s| s.is_none()) {
            *slot = Some(m);
        }
    }
}

fn upper_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// An override's value as the framework reads it: trimmed and upper-cased; `None` when
/// it is no method at all.
fn overriding(value: &[u8]) -> Option<Method> {
    let v = std::str::from_utf8(value).ok()?.trim();
    if v.is_empty() || v.len() > 32 {
        return None;
    }
    Method::from_bytes(v.to_ascii_uppercase().as_bytes()).ok()
}

pub fn judged(method: &Method, headers: &HeaderMap, query: Option<&str>) -> Result<Methods, MethodError> {
    if !upper_token(method.as_str()) {
        return Err(MethodError::NotUpperCase);
    }
    let mut out = Methods::default();
    out.push(method.clone());
    for name in &OVERRIDE_HEADERS {
        for v in headers.get_all(name) {
            if let Some(m) = overriding(v.as_bytes()) {
                out.push(m);
            }
        }
    }
    // Cheap pre-check: no "method" in any case, no override (the name may be encoded).
    if let Some(q) = query.filter(|q| q.as_bytes().windows(6).any(|w| w.eq_ignore_ascii_case(b"method"))) {
        for (k, v) in form_urlencoded_pairs(q) {
            if k.eq_ignore_ascii_case("_method") {
                if let Some(m) = overriding(v.as_bytes()) {
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}

fn form_urlencoded_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (dec(k), dec(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(method: &str, headers: &[(&str, &str)], query: Option<&str>) -> Result<Vec<String>, MethodError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        judged(&Method::from_bytes(method.as_bytes()).unwrap(), &h, query).map(|m| m.iter().map(|m| m.to_string()).collect())
    }

    #[test]
    fn overrides_are_judged_too() {
        for (case, headers, query, want) in [
            ("plain", vec![], None, vec!["POST"]),
            ("X-HTTP-Method-Override", vec![("x-http-method-override", "DELETE")], None, vec!["POST", "DELETE"]),
            ("X-Method-Override lower-case value", vec![("x-method-override", "delete")], None, vec!["POST", "DELETE"]),
            ("X-HTTP-Method", vec![("x-http-method", " PUT ")], None, vec!["POST", "PUT"]),
            ("_method query", vec![], Some("a=1&_method=DELETE"), vec!["POST", "DELETE"]),
            ("_METHOD query, encoded", vec![], Some("%5Fmethod=patch"), vec!["POST", "PATCH"]),
            ("several", vec![("x-http-method-override", "PUT")], Some("_method=DELETE"), vec!["POST", "PUT", "DELETE"]),
            ("garbage override", vec![("x-http-method-override", "DE LETE")], None, vec!["POST"]),
        ] {
            assert_eq!(methods("POST", &headers, query), Ok(want.iter().map(|s| s.to_string()).collect()), "{case}");
        }
    }

    #[test]
    fn methods_that_are_not_upper_case_tokens_are_refused() {
        for m in ["delete", "Get", "pOST"] {
            assert_eq!(methods(m, &[], None), Err(MethodError::NotUpperCase), "{m}");
        }
        assert!(methods("M-SEARCH", &[], None).is_ok());
    }
}
