//! User-Agent summaries: browser or library family, major version, operating system.
//!
//! A hand-written scan over the bytes, no regular expressions: tether only needs to
//! notice a family or OS change, or a version going backwards, so a coarse and fast
//! reading is the right tool.
//!
//! A connection's user agent rarely changes between its requests, and the browsers in
//! front of one console are few, so [`UserAgent::parse_memo`] remembers the last few
//! readings on each thread, keyed by the exact header bytes.

use std::cell::RefCell;

crate::labels::labels! {
    /// Who claims to be making the request.
    #[repr(u8)]
    pub enum UaFamily {
        Chrome = "chrome",
        Edge = "edge",
        Firefox = "firefox",
        Safari = "safari",
        Opera = "opera",
        OtherBrowser = "other_browser",
        Curl = "curl",
        Wget = "wget",
        Python = "python",
        Go = "go",
        Java = "java",
        Node = "node",
        PowerShell = "powershell",
        OkHttp = "okhttp",
        OtherLibrary = "other_library",
        Unknown = "unknown",
    }
}

impl UaFamily {
    pub fn is_browser(self) -> bool {
        matches!(self, UaFamily::Chrome | UaFamily::Edge | UaFamily::Firefox | UaFamily::Safari | UaFamily::Opera | UaFamily::OtherBrowser)
    }
}

crate::labels::labels! {
    #[repr(u8)]
    pub enum Os {
        Windows = "windows",
        MacOs = "macos",
        Ios = "ios",
        Android = "android",
        Linux = "linux",
        ChromeOs = "chromeos",
        Other = "other",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserAgent {
    pub family: UaFamily,
    /// 0 when unknown.
    pub major: u16,
    pub os: Os,
}

impl UserAgent {
    pub const UNKNOWN: UserAgent = UserAgent { family: UaFamily::Unknown, major: 0, os: Os::Other };

    pub fn parse(ua: &[u8]) -> UserAgent {
        if ua.is_empty() {
            return UserAgent::UNKNOWN;
        }
        let (family, major) = family(ua);
        UserAgent { family, major, os: os(ua) }
    }

    /// [`UserAgent::parse`], answered from this thread's memo when the same bytes were
    /// read recently: the live path reads every request's user agent, and a keep-alive
    /// connection sends the same one each time.
    pub fn parse_memo(ua: &[u8]) -> UserAgent {
        if ua.len() > MEMO_MAX_LEN {
            return UserAgent::parse(ua);
        }
        MEMO.with(|memo| {
            // A memo already borrowed (never, on one thread) just means no memo.
            let Ok(mut memo) = memo.try_borrow_mut() else { return UserAgent::parse(ua) };
            memo.get_or_parse(ua)
        })
    }
}

/// Readings remembered per thread: a worker serves many connections, and a console's
/// users run a handful of browser builds between them. Past that, a miss costs eight
/// length comparisons on top of the parse.
const MEMO_ENTRIES: usize = 8;
/// Longer user agents are parsed every time; a browser's is 100 to 200 bytes. The memo
/// is `MEMO_ENTRIES * MEMO_MAX_LEN` bytes a thread, copied in, never allocated, so it
/// holds no reference into a connection's buffers.
const MEMO_MAX_LEN: usize = 256;

thread_local! {
    static MEMO: RefCell<Memo> = const { RefCell::new(Memo::new()) };
}

struct Memo {
    entries: [MemoEntry; MEMO_ENTRIES],
    /// The entry the next miss replaces (round robin: no bookkeeping on a hit).
    next: usize,
}

struct MemoEntry {
    len: u16,
    bytes: [u8; MEMO_MAX_LEN],
    parsed: UserAgent,
}

impl Memo {
    const fn new() -> Memo {
        const EMPTY: MemoEntry = MemoEntry { len: 0, bytes: [0; MEMO_MAX_LEN], parsed: UserAgent::UNKNOWN };
        Memo { entries: [EMPTY; MEMO_ENTRIES], next: 0 }
    }

    /// `ua` is at most `MEMO_MAX_LEN` bytes.
    fn get_or_parse(&mut self, ua: &[u8]) -> UserAgent {
        let len = ua.len();
        if let Some(hit) = self.entries.iter().find(|e| usize::from(e.len) == len && e.bytes[..len] == *ua) {
            return hit.parsed;
        }
        let parsed = UserAgent::parse(ua);
        let slot = &mut self.entries[self.next];
        slot.bytes[..len].copy_from_slice(ua);
        // invariant: len <= MEMO_MAX_LEN, which fits in u16.
        slot.len = len as u16;
        slot.parsed = parsed;
        self.next = (self.next + 1) % MEMO_ENTRIES;
        parsed
    }
}

/// The first position of `needle` in `hay`. Only the positions holding the needle's
/// first byte are compared in full: a comparison per position was the parser's main cost
/// (a browser's user agent is scanned for some fifteen markers).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last = hay.len().checked_sub(needle.len())?;
    (0..=last).find(|&i| hay[i] == first && hay[i + 1..i + needle.len()] == *rest)
}

/// The integer right after `marker`, if any.
fn version_after(ua: &[u8], marker: &[u8]) -> Option<u16> {
    let at = find(ua, marker)? + marker.len();
    let digits = ua[at..].iter().take_while(|b| b.is_ascii_digit()).take(5);
    let mut n: u32 = 0;
    let mut any = false;
    for d in digits {
        n = n * 10 + u32::from(d - b'0');
        any = true;
    }
    any.then(|| n.min(u32::from(u16::MAX)) as u16)
}

fn family(ua: &[u8]) -> (UaFamily, u16) {
    // Libraries first: they name themselves at the start.
    const LIBRARIES: [(&[u8], UaFamily); 14] = [
        (b"curl/", UaFamily::Curl),
        (b"Wget/", UaFamily::Wget),
        (b"python-requests/", UaFamily::Python),
        (b"Python-urllib/", UaFamily::Python),
        (b"python-httpx/", UaFamily::Python),
        (b"aiohttp/", UaFamily::Python),
        (b"Go-http-client/", UaFamily::Go),
        (b"Java/", UaFamily::Java),
        (b"Apache-HttpClient/", UaFamily::Java),
        (b"node-fetch", UaFamily::Node),
        (b"axios/", UaFamily::Node),
        (b"undici", UaFamily::Node),
        (b"okhttp/", UaFamily::OkHttp),
        (b"libwww-perl/", UaFamily::OtherLibrary),
    ];
    for (prefix, fam) in LIBRARIES {
        if ua.starts_with(prefix) {
            return (fam, version_after(ua, prefix).unwrap_or(0));
        }
    }
    if find(ua, b"PowerShell/").is_some() {
        return (UaFamily::PowerShell, version_after(ua, b"PowerShell/").unwrap_or(0));
    }
    if !ua.starts_with(b"Mozilla/") && !ua.starts_with(b"Opera/") {
        return (UaFamily::OtherLibrary, 0);
    }
    // Browsers: the most specific token wins (Edge and Opera also say Chrome and Safari).
    const BROWSERS: [(&[u8], UaFamily); 7] = [
        (b"Edg/", UaFamily::Edge),
        (b"EdgiOS/", UaFamily::Edge),
        (b"OPR/", UaFamily::Opera),
        (b"Firefox/", UaFamily::Firefox),
        (b"FxiOS/", UaFamily::Firefox),
        (b"Chrome/", UaFamily::Chrome),
        (b"CriOS/", UaFamily::Chrome),
    ];
    for (marker, fam) in BROWSERS {
        if let Some(v) = version_after(ua, marker) {
            return (fam, v);
        }
    }
    if find(ua, b"Safari/").is_some() {
        return (UaFamily::Safari, version_after(ua, b"Version/").unwrap_or(0));
    }
    (UaFamily::OtherBrowser, 0)
}

fn os(ua: &[u8]) -> Os {
    // iOS before macOS ("like Mac OS X"), Android before Linux.
    if find(ua, b"iPhone").is_some() || find(ua, b"iPad").is_some() {
        Os::Ios
    } else if find(ua, b"Android").is_some() {
        Os::Android
    } else if find(ua, b"Windows").is_some() {
        Os::Windows
    } else if find(ua, b"CrOS").is_some() {
        Os::ChromeOs
    } else if find(ua, b"Macintosh").is_some() || find(ua, b"Mac OS X").is_some() {
        Os::MacOs
    } else if find(ua, b"Linux").is_some() {
        Os::Linux
    } else {
        Os::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (UaFamily, u16, Os) {
        let u = UserAgent::parse(s.as_bytes());
        (u.family, u.major, u.os)
    }

    #[test]
    fn browsers_and_libraries() {
        let cases = [
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/152.0.0.0 Safari/537.36", (UaFamily::Chrome, 152, Os::Windows)),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36 Edg/140.0.0.0", (UaFamily::Edge, 140, Os::Windows)),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:155.0) Gecko/20100101 Firefox/155.0", (UaFamily::Firefox, 155, Os::Linux)),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/27.0 Safari/605.1.15", (UaFamily::Safari, 27, Os::MacOs)),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1", (UaFamily::Safari, 18, Os::Ios)),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Mobile Safari/537.36", (UaFamily::Chrome, 150, Os::Android)),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36 OPR/99.0", (UaFamily::Opera, 99, Os::ChromeOs)),
            ("curl/7.88.1", (UaFamily::Curl, 7, Os::Other)),
            ("python-requests/2.32.3", (UaFamily::Python, 2, Os::Other)),
            ("Go-http-client/2.0", (UaFamily::Go, 2, Os::Other)),
            ("Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.19041.1", (UaFamily::PowerShell, 5, Os::Windows)),
            ("okhttp/4.12.0", (UaFamily::OkHttp, 4, Os::Other)),
            ("SomeBot/1.0", (UaFamily::OtherLibrary, 0, Os::Other)),
            ("", (UaFamily::Unknown, 0, Os::Other)),
        ];
        for (ua, want) in cases {
            assert_eq!(p(ua), want, "{ua}");
        }
        assert!(UaFamily::Safari.is_browser() && !UaFamily::Curl.is_browser());
    }

    #[test]
    fn memo_answers_as_the_parser_does() {
        let uas: Vec<String> = (0..3 * MEMO_ENTRIES)
            .map(|i| format!("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.0.0 Safari/537.36", 100 + i))
            .chain(["curl/8.1".to_owned(), String::new(), "Mozilla/5.0 ".to_owned() + &"x".repeat(MEMO_MAX_LEN) + " Firefox/1"])
            .collect();
        // Interleaved and repeated, so entries are replaced and hit.
        for round in 0..3 {
            for (i, ua) in uas.iter().enumerate() {
                let ua = if (i + round) % 2 == 0 { ua.as_str() } else { uas[i / 2].as_str() };
                assert_eq!(UserAgent::parse_memo(ua.as_bytes()), UserAgent::parse(ua.as_bytes()), "{ua}");
            }
        }
        // Same length, different bytes: never confused.
        assert_eq!(UserAgent::parse_memo(b"curl/8.1").family, UaFamily::Curl);
        assert_eq!(UserAgent::parse_memo(b"Java/8.1").family, UaFamily::Java);
    }

    #[test]
    fn find_matches_at_every_position() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"abd", b"abd"), Some(0));
        assert_eq!(find(b"ab", b"abd"), None);
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"xyz", b""), None);
    }

    #[test]
    fn hostile_input_is_harmless() {
        let huge = "Chrome/".repeat(2000) + "99999999999";
        let u = UserAgent::parse(huge.as_bytes());
        assert_eq!(u.family, UaFamily::OtherLibrary);
        let u = UserAgent::parse(b"Mozilla/5.0 Chrome/99999999999");
        assert_eq!((u.family, u.major), (UaFamily::Chrome, u16::MAX));
        assert_eq!(UserAgent::parse(b"\xff\xfe\x00").family, UaFamily::OtherLibrary);
    }
}
