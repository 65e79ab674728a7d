//! tether's own answers: errors, the 401 and 403 of the security path, the step-up
//! redirects and the pages of its own endpoints. One builder, so every answer tether
//! writes itself is uncacheable and typed the same way, and one rule for the body a
//! request still has unread when tether answers instead of the upstream.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body::Body;

use super::body::ProxyBody;

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// The one builder: a small local body, its type, and `no-store`, since every answer
/// tether writes itself is about one client at one moment and must never be replayed
/// from a cache.
fn build(status: StatusCode, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(ct) = content_type {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A plain-text status line: the class of failure, never an internal detail.
pub fn text(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    build(status, Some(TEXT), format!("{reason}\n"))
}

/// A short HTML page for a person in a browser.
pub fn page(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    build(status, Some(HTML), format!("<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>\n"))
}

/// A JSON body for a program.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    build(status, Some(JSON), body)
}

/// A browser's form submission needs a step-up: a page (with the RFC 9470 header for
/// any program reading it) that says why, and offers to re-authenticate and return to
/// the form's page. The form is not resubmitted: its data is the user's to send again.
pub fn step_up_page(authorize: &HeaderValue, www_authenticate: &str) -> Response<ProxyBody> {
    let href = html_escape(authorize.to_str().unwrap_or("/"));
    let body = format!(
        "<!doctype html><title>Confirm it is you</title><h1>Confirm it is you</h1>\
         <p>This action needs a fresh sign-in, because this session is being used from somewhere it has not been used before. \
         Your form was <strong>not</strong> sent.</p>\
         <p><a href=\"{href}\">Sign in again</a> and you will return to the form's page, where you can send it again.</p>\n"
    );
    let mut r = build(StatusCode::UNAUTHORIZED, Some(HTML), body);
    if let Ok(v) = HeaderValue::from_str(www_authenticate) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// Escapes text for an HTML attribute or element.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `303 See Other` to `location`: a GET to wherever the browser goes next.
pub fn see_other(location: HeaderValue) -> Response<ProxyBody> {
    let mut r = build(StatusCode::SEE_OTHER, None, Bytes::new());
    r.headers_mut().insert(LOCATION, location);
    r
}

/// `307 Temporary Redirect` to `location`: the same request again, method and body kept.
pub fn temporary_redirect(location: HeaderValue) -> Response<ProxyBody> {
    let mut r = build(StatusCode::TEMPORARY_REDIRECT, None, Bytes::new());
    r.headers_mut().insert(LOCATION, location);
    r
}

/// 429 with `Retry-After`: too many step-up challenges from this address, or at all.
pub fn too_many(retry_after: u32) -> Response<ProxyBody> {
    let mut r = json(StatusCode::TOO_MANY_REQUESTS, "{\"error\":\"too_many_step_up_challenges\"}\n");
    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// The RFC 9470 step-up challenge for a client that cannot follow a login redirect.
pub fn challenge(www_authenticate: &str) -> Response<ProxyBody> {
    let mut r = json(StatusCode::UNAUTHORIZED, "{\"error\":\"insufficient_user_authentication\"}\n");
    if let Ok(v) = HeaderValue::from_str(www_authenticate) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// 403, as HTML for a browser and JSON otherwise. It names a reference, never the
/// signals: the reasons are for the operator's audit log, not for whoever holds a
/// stolen cookie.
pub fn blocked(html: bool, reference: u64) -> Response<ProxyBody> {
    let reference = format!("{reference:016x}");
    if html {
        page(
            StatusCode::FORBIDDEN,
            "Access blocked",
            &format!("This session was blocked by the access proxy. If this is unexpected, contact your security team with reference <code>{reference}</code>."),
        )
    } else {
        json(StatusCode::FORBIDDEN, format!("{{\"error\":\"blocked\",\"reference\":\"{reference}\"}}\n"))
    }
}

/// Whether a request comes with a body: hyper's own reading of its framing
/// (Content-Length, Transfer-Encoding, HTTP/2 END_STREAM), the same framing the request
/// is forwarded with, so there is one answer to the question on every path.
pub fn has_body<B: Body>(req: &Request<B>) -> bool {
    !req.body().is_end_stream()
}

/// The bytes of a request body, when its framing declares them in advance.
pub fn declared_length<B: Body>(req: &Request<B>) -> Option<u64> {
    req.body().size_hint().exact()
}

/// Asks an HTTP/1 client to open a new connection when tether answered without reading
/// the request body (`unread`), so its bytes can never be parsed as the next request.
pub fn close_if(mut resp: Response<ProxyBody>, unread: bool) -> Response<ProxyBody> {
    if unread {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn every_answer_is_uncacheable_and_typed() {
        let all = [
            text(StatusCode::BAD_GATEWAY),
            page(StatusCode::FORBIDDEN, "t", "x"),
            json(StatusCode::OK, "{}\n"),
            challenge("Bearer error=\"insufficient_user_authentication\""),
            blocked(true, 1),
            blocked(false, 1),
        ];
        for r in &all {
            assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
            assert!(r.headers().contains_key(CONTENT_TYPE), "{}", r.status());
        }
        let r = see_other(HeaderValue::from_static("/home"));
        assert_eq!((r.status(), &r.headers()[LOCATION], &r.headers()[CACHE_CONTROL]), (StatusCode::SEE_OTHER, &HeaderValue::from_static("/home"), &HeaderValue::from_static("no-store")));
        assert_eq!(all[3].status(), StatusCode::UNAUTHORIZED);
        assert!(all[3].headers().contains_key(WWW_AUTHENTICATE));
    }

    #[test]
    fn a_block_names_its_reference_never_its_reasons() {
        let r = blocked(false, 0xabc);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[CONTENT_TYPE], JSON);
        let r = blocked(true, 0xabc);
        assert_eq!(r.headers()[CONTENT_TYPE], HTML);
    }

    #[test]
    fn body_presence_follows_the_framing() {
        let with = |b: &'static str| Request::new(Full::new(Bytes::from_static(b.as_bytes())));
        assert!(has_body(&with("x")));
        assert_eq!(declared_length(&with("xyz")), Some(3));
        assert!(!has_body(&with("")));
        let r = close_if(text(StatusCode::PAYLOAD_TOO_LARGE), true);
        assert_eq!(r.headers()[CONNECTION], "close");
        assert!(!close_if(text(StatusCode::OK), false).headers().contains_key(CONNECTION));
    }
}
