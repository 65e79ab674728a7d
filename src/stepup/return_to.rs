//! Where a browser goes back to after a step-up: an origin-relative path, rebuilt from
//! its parts rather than echoed, so that no spelling of it leaves the console's origin.
//!
//! Refused (the browser returns to the fallback instead): anything not starting with a
//! single `/`, a `\` anywhere (browsers read `/\host` as `//host`), control characters and
//! spaces, a path whose percent-decoded form starts with `//` or `/\`, and anything longer
//! than the bound the challenge table keeps.

/// Bytes that pass unencoded in a rebuilt path or query; everything else is
/// percent-encoded (an existing `%XX` is kept as it is).
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// The validated return path, re-serialised; `None` when it cannot be one.
pub fn validate(target: &str, max_len: usize) -> Option<String> {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.get(1).is_some_and(|&b| b == b'/' || b == b'\\') {
        return None;
    }
    if bytes.iter().any(|&b| b == b'\\' || b.is_ascii_control() || b == b' ') {
        return None;
    }
    // The fragment is the browser's own; it never reaches a server.
    let target = target.split('#').next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    if decoded.get(1).is_some_and(|&b| b == b'/' || b == b'\\') {
        return None;
    }
    let mut out = String::with_capacity(target.len());
    for &b in target.as_bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    (out.len() <= max_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls() {
        for (input, want) in [
            ("/", Some("/")),
            ("/console/tokens?tab=2", Some("/console/tokens?tab=2")),
            ("/a/%2F/b", Some("/a/%2F/b")),
            ("/caf\u{e9}", Some("/caf%C3%A9")),
            ("/a\"b<c>", Some("/a%22b%3Cc%3E")),
            ("/x#frag", Some("/x")),
            ("//evil.example/", None),
            ("/\\evil.example/", None),
            ("/%2F/evil.example", None),
            ("/%5Cevil.example", None),
            ("/%2f%2fevil", None),
            ("https://evil.example/", None),
            ("evil", None),
            ("", None),
            ("/a\\b", None),
            ("/a\tb", None),
            ("/a\r\nLocation: x", None),
            ("/a b", None),
        ] {
            assert_eq!(validate(input, 1024).as_deref(), want, "{input:?}");
        }
        assert_eq!(validate(&format!("/{}", "a".repeat(2000)), 1024), None);
    }
}
