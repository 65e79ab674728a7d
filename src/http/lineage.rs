//! The companion cookie on the wire: set on the answer to a request that was issued a
//! value, and taken out of the `Cookie` header before the upstream sees it (the console
//! has no use for it, and a value the console logs would be a value an attacker can
//! read).

use http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};

use crate::session::lineage::{self, LineageConfig, Value};
use crate::session::Secs;

/// Adds the `Set-Cookie` that issues `value`, kept as long as tether remembers a session
/// (`session.absolute_ttl`), so a browser restart does not drop it while the console's
/// cookie lives on.
pub fn set(headers: &mut HeaderMap, value: &Value, cfg: &LineageConfig, max_age: Secs) {
    // invariant: a checked cookie name and hex are visible ASCII.
    if let Ok(mut v) = HeaderValue::from_str(&value.set_cookie(&cfg.cookie, max_age)) {
        v.set_sensitive(true);
        headers.append(SET_COOKIE, v);
    }
}

/// Removes the companion from the (joined) `Cookie` header; the header goes when nothing
/// else is left in it. The default name goes too, whether lineage is on (under another
/// name) or off: a browser keeps the cookie for `session.absolute_ttl` after lineage was
/// turned off or renamed, and the console must never see a value.
pub fn strip(headers: &mut HeaderMap, cfg: Option<&LineageConfig>) {
    strip_name(headers, lineage::DEFAULT_COOKIE);
    if let Some(cfg) = cfg.filter(|c| c.cookie != lineage::DEFAULT_COOKIE) {
        strip_name(headers, &cfg.cookie);
    }
}

fn strip_name(headers: &mut HeaderMap, name: &str) {
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if !values.iter().any(|v| lineage::carries(v.as_bytes(), name)) {
        return;
    }
    headers.remove(COOKIE);
    for v in values {
        // Pairs of a valid header value joined by "; " are a valid value.
        if let Some(v) = lineage::without(v.as_bytes(), name).and_then(|rest| HeaderValue::from_bytes(&rest).ok()) {
            headers.append(COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_never_sees_the_companion() {
        let cfg = LineageConfig::default();
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("session=abc; __Host-tether-lineage=0123; theme=dark"));
        strip(&mut h, Some(&cfg));
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), ["session=abc; theme=dark"]);
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("__HOST-tether-lineage=0123"));
        strip(&mut only, Some(&cfg));
        assert!(only.get(COOKIE).is_none());
        let mut untouched = HeaderMap::new();
        untouched.insert(COOKIE, HeaderValue::from_static("session=abc;theme=dark"));
        strip(&mut untouched, Some(&cfg));
        assert_eq!(untouched[COOKIE], "session=abc;theme=dark", "byte for byte when there is nothing to take out");
        let mut resp = HeaderMap::new();
        set(&mut resp, &Value::generate().unwrap(), &cfg, 3600);
        let c = resp[SET_COOKIE].to_str().unwrap();
        assert!(c.starts_with("__Host-tether-lineage=") && c.contains("Max-Age=3600") && resp[SET_COOKIE].is_sensitive());
        assert!(c.contains("; SameSite=None"), "travels with a cross-site request as the session cookie does: {c}");
    }

    #[test]
    fn the_default_name_is_stripped_with_lineage_off_or_renamed() {
        let mut off = HeaderMap::new();
        off.insert(COOKIE, HeaderValue::from_static("session=abc; __Host-tether-lineage=0123"));
        strip(&mut off, None);
        assert_eq!(off[COOKIE], "session=abc", "a value left from when lineage was on");
        let renamed = LineageConfig { cookie: "__Host-lin".into(), ..LineageConfig::default() };
        let mut both = HeaderMap::new();
        both.insert(COOKIE, HeaderValue::from_static("__Host-tether-lineage=0123; session=abc; __Host-lin=4567"));
        strip(&mut both, Some(&renamed));
        assert_eq!(both[COOKIE], "session=abc");
    }
}
