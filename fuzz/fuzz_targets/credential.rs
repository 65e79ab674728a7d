//! The credential reader: any Cookie/Authorization header set is read once or refused,
//! never panics; and whatever it reads as the session, a lenient re-reading of the same
//! headers (every `;`, `,` and whitespace a separator) finds no other session value.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tether::session::credential::{read, Credential};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for (i, chunk) in data.split(|&b| b == b'\n').enumerate() {
        let name = ["cookie", "cookie", "authorization"][i % 3];
        if let Ok(v) = HeaderValue::from_bytes(chunk) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let cookies = vec!["session".to_owned(), "sid".to_owned()];
    let Ok(found) = read(&headers, &cookies, true) else { return };
    let Some(Credential::Cookie { name, value }) = found.credential else { return };
    // Differential: the most lenient split finds only this one session cookie.
    let mut seen = 0;
    for h in headers.get_all("cookie") {
        let Ok(text) = std::str::from_utf8(h.as_bytes()) else { continue };
        for token in text.split([';', ',', ' ', '\t']) {
            if let Some((n, _)) = token.split_once('=') {
                let n = percent_encoding::percent_decode_str(n.trim()).collect::<Vec<u8>>();
                if cookies.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(&n)) {
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, 1, "read {name}={value:?} but a lenient parser sees {seen} session cookies");
});
