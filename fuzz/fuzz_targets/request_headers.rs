//! The per-request readers of client-controlled headers: session cookies and bearer
//! tokens, forwarded-for chains, user agents, hop-by-hop stripping, a JA4 header.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tether::fingerprint::{Ja4, UserAgent};
use tether::net::client_addr::{resolve, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for (i, chunk) in data.split(|&b| b == b'\n').enumerate() {
        let name = ["cookie", "authorization", "x-forwarded-for", "forwarded", "connection", "user-agent", "x-ja4"][i % 7];
        if let Ok(v) = HeaderValue::from_bytes(chunk) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let cookies = vec!["session".to_owned(), "sso".to_owned()];
    let _ = tether::session::credential::read(&headers, &cookies, true);
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()]);
    let _ = resolve("10.1.2.3".parse().unwrap(), &headers, &trusted);
    if let Some(ua) = headers.get("user-agent") {
        let _ = UserAgent::parse(ua.as_bytes());
    }
    if let Some(j) = headers.get("x-ja4") {
        let _ = Ja4::parse(j.as_bytes());
    }
    tether::http::hygiene::strip_hop_by_hop(&mut headers);
    tether::http::hygiene::strip_client_claims(&mut headers);
});
