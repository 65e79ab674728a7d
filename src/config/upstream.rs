//! `[upstream]`: the console tether forwards to, and what it tells it.

use std::path::PathBuf;

use http::Uri;

use super::decode::Section;
use super::Problem;

#[derive(Debug, Clone)]
pub struct Upstream {
    /// Scheme and authority only (`http://host:port` or `https://host:port`).
    pub url: Uri,
    /// Extra CA to trust for an HTTPS upstream, beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// Send the client's Host to the upstream (default) rather than the upstream's own.
    pub preserve_host: bool,
    /// Pass `X-Tether-Ja4` / `X-Tether-Client-Ip` to the upstream.
    pub forward_fingerprint: bool,
    /// Pass `X-Tether-Decision` / `X-Tether-Score` / `X-Tether-Signals` to the upstream.
    pub forward_decision: bool,
    /// A response header in which the console names the session's user: recorded as
    /// the session's owner the first time, and never passed to the client.
    pub user_response_header: Option<http::HeaderName>,
    /// On a TLS listener, add `Secure` and `HttpOnly` to the console's `Set-Cookie` of
    /// the session cookies when it leaves them out.
    pub harden_session_cookies: bool,
}

pub(super) fn read(s: &Section<'_>) -> Option<Upstream> {
    if !s.is_present() {
        s.problem("url", Problem::Missing);
    }
    let url = s.required_string("url").and_then(|v| {
        let uri: Uri = s.parse_value("url", v, "an http:// or https:// URL")?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
        let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
        if !scheme_ok || uri.authority().is_none() || !path_ok {
            s.problem("url", Problem::Invalid { expected: "an http:// or https:// URL with a host and no path", found: v.to_owned() });
            return None;
        }
        Some(uri)
    });
    let ca_file = s.optional_file("ca_file");
    let preserve_host = s.boolean("preserve_host").unwrap_or(true);
    let forward_fingerprint = s.boolean("forward_fingerprint").unwrap_or(false);
    let forward_decision = s.boolean("forward_decision").unwrap_or(false);
    let user_response_header = s.parsed::<http::HeaderName>("user_response_header", "a header name");
    let harden_session_cookies = s.boolean("harden_session_cookies").unwrap_or(false);
    Some(Upstream { url: url?, ca_file: ca_file.ok()?, preserve_host, forward_fingerprint, forward_decision, user_response_header, harden_session_cookies })
}
