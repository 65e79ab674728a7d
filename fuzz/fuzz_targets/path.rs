//! The route path normaliser: never panics, is a fixed point (normalising twice is
//! normalising once), and agrees with RFC 3986 `remove_dot_segments` over the decoded,
//! slash-merged, parameter-free path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::policy::path::{normalise, remove_dot_segments};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(once) = normalise(input) else { return };
    let once = once.into_owned();
    assert!(once.starts_with('/'), "{input:?} -> {once:?}");
    assert_eq!(normalise(&once).expect("a normal path normalises"), once, "not a fixed point: {input:?}");
    // The same steps done the specification's way: decode to a fixed point, read `\` as
    // `/`, drop `;params`, merge slashes, then remove_dot_segments.
    let mut bytes = input.as_bytes().to_vec();
    loop {
        let next: Vec<u8> = percent_encoding::percent_decode(&bytes).collect();
        if next == bytes {
            break;
        }
        bytes = next;
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut merged = String::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        if !seg.is_empty() {
            merged.push('/');
            merged.push_str(seg);
        }
    }
    let ends_dir = text.ends_with('/') || text.rsplit('/').next().map(|s| s.split(';').next().unwrap_or("")).is_some_and(|s| s == "." || s == "..");
    if ends_dir {
        merged.push('/');
    }
    let mut want = remove_dot_segments(&merged);
    if want.is_empty() {
        want.push('/');
    }
    // remove_dot_segments keeps a trailing slash where normalise may keep one more.
    assert_eq!(once.trim_end_matches('/'), want.trim_end_matches('/'), "{input:?}");
});
