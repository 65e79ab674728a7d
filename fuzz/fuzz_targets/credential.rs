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
        // Bytes, as the reader works: a header need not be UTF-8. Whitespace around `=`
        // belongs to the pair (`name = value`), as lenient parsers read it.
        let raw = h.as_bytes();
        let blank = |b: u8| b == b' ' || b == b'\t';
        let mut before_eq = vec![false; raw.len()];
        let mut next_is_eq = false;
        for (i, &b) in raw.iter().enumerate().rev() {
            if blank(b) {
                before_eq[i] = next_is_eq;
            } else {
                next_is_eq = b == b'=';
            }
        }
        let mut joined = Vec::with_capacity(raw.len());
        for (i, &b) in raw.iter().enumerate() {
            if blank(b) && (before_eq[i] || joined.last() == Some(&b'=')) {
                continue;
            }
            joined.push(b);
        }
        for token in joined.split(|&b| matches!(b, b';' | b',' | b' ' | b'\t')) {
            if let Some(eq) = token.iter().position(|&b| b == b'=') {
                let n = percent_encoding::percent_decode(&token[..eq]).collect::<Vec<u8>>();
                if cookies.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(&n)) {
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, 1, "read {name}={value:?} but a lenient parser sees {seen} session cookies");
});
