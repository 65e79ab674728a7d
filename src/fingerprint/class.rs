//! Browser-like or library-like: a coarse class read from a JA4's first section.
//!
//! Browsers offer ALPN (HTTP/2, or only HTTP/1.1 where a TLS-inspecting proxy or a policy
//! turned HTTP/2 off), 15–20 cipher suites and 13 or more extensions; TLS libraries
//! driven by scripts (curl over OpenSSL, Python, Go, Java) offer many more suites, fewer
//! extensions, or no ALPN at all. ALPN alone does not separate them: a browser without h2
//! is still a browser, and a library can ask for h2. A session born in a browser that turns up with a
//! library's hello is the classic shape of a replayed cookie. Mimicry tools can fake a
//! browser's hello, so this is a signal, never an authenticator.

use super::Ja4;

crate::labels::labels! {
    #[repr(u8)]
    pub enum TlsClass {
        Browser = "browser",
        Library = "library",
        Unknown = "unknown",
    }
}

/// Browsers list at most this many cipher suites (Safari 20, Chrome 15–16, Firefox 17).
const BROWSER_MAX_CIPHERS: u32 = 20;
/// ...and at least this many extensions (Safari 13, Chrome 15–18, Firefox 17).
const BROWSER_MIN_EXTENSIONS: u32 = 13;

pub fn classify(ja4: Option<&Ja4>) -> TlsClass {
    let Some(ja4) = ja4 else { return TlsClass::Unknown };
    let a = ja4.prefix().as_bytes();
    let num = |i: usize| -> Option<u32> {
        let (x, y) = (a.get(i)?, a.get(i + 1)?);
        (x.is_ascii_digit() && y.is_ascii_digit()).then(|| u32::from(x - b'0') * 10 + u32::from(y - b'0'))
    };
    let (Some(ciphers), Some(extensions)) = (num(4), num(6)) else { return TlsClass::Unknown };
    // Every browser names an application protocol; "00" is none.
    let alpn = matches!(a.get(8..10), Some(b"h2" | b"h1"));
    if alpn && ciphers <= BROWSER_MAX_CIPHERS && extensions >= BROWSER_MIN_EXTENSIONS {
        TlsClass::Browser
    } else {
        TlsClass::Library
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> TlsClass {
        classify(Ja4::parse(s.as_bytes()).as_ref())
    }

    #[test]
    fn golden_clients_classify() {
        // Browser profiles from the golden captures.
        for b in ["t13d1517h2_8daaf6152771_cb7bf5808d99", "t13d1516h2_8daaf6152771_d8a2da3f94cd", "t13d1517h2_8daaf6152771_3cbfd9057e0d", "t13d2013h2_a09f3c656075_7f0f34a4126d"] {
            assert_eq!(class(b), TlsClass::Browser, "{b}");
        }
        // The same browsers with HTTP/2 turned off (a TLS-inspecting proxy, a policy).
        for b in ["t13d1516h1_8daaf6152771_d8a2da3f94cd", "t13d1715h1_5b57614c22b0_3d5424432f57"] {
            assert_eq!(class(b), TlsClass::Browser, "{b}");
        }
        // curl (OpenSSL) with and without h2, and an unimpersonated library.
        for l in ["t13i3111h1_e8f1e7e78f70_b26ce05bbdd6", "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6", "t13d2712h2_b4f9224df7c1_cbb9361b6bf9", "t13d1310h2_0000aaaabbbb_ccccddddeeee", "t13d151700_8daaf6152771_cb7bf5808d99"] {
            assert_eq!(class(l), TlsClass::Library, "{l}");
        }
        assert_eq!(classify(None), TlsClass::Unknown);
    }
}
