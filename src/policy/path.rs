//! The path routes are judged on: the request target read as leniently as any upstream
//! router reads it, so that no spelling of a sensitive path slips past its route.
//!
//! In order: percent-decoding repeated until nothing decodes (`%2F` included, as `/`;
//! `%2574` is `%74` is `t`), `\` read as `/`, `;params` removed from every segment,
//! repeated slashes merged, dot segments resolved as RFC 3986 §5.2.4 does. The result is
//! a fixed point: normalising it again changes nothing. Bytes that are not UTF-8 after
//! decoding are kept as U+FFFD, which matches no route spelled in config.
//!
//! The upstream still receives the path as the client sent it (an encoded slash in an
//! object id keeps working); only the judgement uses this form.

use std::borrow::Cow;

/// Decoding passes before a path that keeps decoding is refused: no router decodes more
/// than twice, and each pass costs a scan, so a hostile `%252525…` costs a bounded amount.
const MAX_DECODE_PASSES: usize = 4;

/// A path that cannot be given one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is percent-encoded more than {MAX_DECODE_PASSES} levels deep")]
    TooDeep,
}

/// The normalised form of `path` (the part of the target before `?`).
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let mut bytes = path.as_bytes().to_vec();
    let mut passes = 0;
    while let Some(next) = decode_once(&bytes) {
        passes += 1;
        if passes > MAX_DECODE_PASSES {
            return Err(PathError::TooDeep);
        }
        bytes = next;
    }
    for b in bytes.iter_mut() {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len() + 1);
    // Segments without their parameters, empty ones (repeated slashes) dropped.
    let mut segments: Vec<&str> = Vec::new();
    for raw in text.split('/') {
        let seg = raw.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    // A trailing slash or a trailing dot segment names a directory: keep the slash.
    let last = text.rsplit('/').next().map(|s| s.split(';').next().unwrap_or(""));
    let trailing = matches!(last, Some("" | "." | "..")) && !segments.is_empty();
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The common case costs one scan and no allocation: nothing to decode, no backslash,
/// no parameter, no empty or dot segment.
fn is_normal(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    if p.iter().any(|&b| matches!(b, b'%' | b'\\' | b';') || b >= 0x80) {
        return false;
    }
    // Every segment but the last non-empty and not a dot segment.
    let mut segs = p[1..].split(|&b| b == b'/').peekable();
    while let Some(s) = segs.next() {
        let last = segs.peek().is_none();
        if s == b"." || s == b".." || (s.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One pass of strict percent-decoding (`%` and exactly two hex digits); `None` when
/// nothing decoded.
fn decode_once(p: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(p.len());
    let mut changed = false;
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'%' && i + 2 < p.len() {
            if let (Some(h), Some(l)) = (hex(p[i + 1]), hex(p[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                changed = true;
                continue;
            }
        }
        out.push(p[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// RFC 3986 §5.2.4 `remove_dot_segments`, written from the specification's steps, for
/// differential tests of [`normalise`].
pub fn remove_dot_segments(input: &str) -> String {
    let mut input = input.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            truncate_last_segment(&mut output);
        } else if input == "/.." {
            input = "/".to_owned();
            truncate_last_segment(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    output
}

fn truncate_last_segment(output: &mut String) {
    let cut = output.rfind('/').unwrap_or(0);
    output.truncate(cut);
}

/// Whether `path` (normalised) matches a route pattern: a prefix, or with `*` (one
/// segment) and `**` (any number of segments) a pattern over whole segments; a pattern
/// ending in `/` matches everything under it.
pub fn matches(pattern: &str, path: &str, fold_case: bool) -> bool {
    let eq = |a: &str, b: &str| if fold_case { a.eq_ignore_ascii_case(b) } else { a == b };
    if !pattern.contains('*') {
        return path.len() >= pattern.len() && path.is_char_boundary(pattern.len()) && eq(&path[..pattern.len()], pattern);
    }
    let pat: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A pattern ending in "/" ends in an empty segment: a prefix over segments.
    let (pat, prefix) = match pat.split_last() {
        Some((&"", rest)) => (rest, true),
        _ => (&pat[..], false),
    };
    glob(pat, &segs, prefix, &eq)
}

fn glob(pat: &[&str], segs: &[&str], prefix: bool, eq: &dyn Fn(&str, &str) -> bool) -> bool {
    match pat.split_first() {
        None => segs.is_empty() || prefix || segs == [""],
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| glob(rest, &segs[skip..], prefix, eq)),
        Some((p, rest)) => match segs.split_first() {
            Some((s, more)) if *p == "*" && !s.is_empty() => glob(rest, more, prefix, eq),
            Some((s, more)) if eq(p, s) => glob(rest, more, prefix, eq),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_normalise_alike() {
        let target = "/console/tokens";
        for spelling in [
            "/console/tokens",
            "/console/%74okens",
            "/console/%2574okens",
            "/%63onsole/tokens",
            "//console/tokens",
            "/console//tokens",
            "/./console/tokens",
            "/console/x/../tokens",
            "/console/./tokens",
            "/console/tokens;v=1",
            "/console;jsessionid=1/tokens",
            "/console%2Ftokens",
            "/console%2ftokens",
            "\\console\\tokens",
            "/console\\tokens",
            "/console%5Ctokens",
            "/console/%2e/tokens",
            "/console/%2E%2E/console/tokens",
            "/../console/tokens",
            "/console/tokens/..;x/tokens",
        ] {
            assert_eq!(normalise(spelling).unwrap(), target, "{spelling}");
        }
    }

    #[test]
    fn directories_and_roots() {
        for (input, want) in [
            ("/", "/"),
            ("", "/"),
            ("//", "/"),
            ("/a/", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/a/%", "/a/%"),
            ("/a/%zz", "/a/%zz"),
            ("/a/%2", "/a/%2"),
            ("/admin/auth/%75ser/2/password/", "/admin/auth/user/2/password/"),
        ] {
            assert_eq!(normalise(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for input in ["/a/%25252e%25252e/b", "/%2e%2e%2f%2e%2e/x", "/a;b/..;c/d", "/a/%;x25/2", "\\\\a\\..\\b", "/%%32%65/x"] {
            let once = normalise(input).unwrap().into_owned();
            assert_eq!(normalise(&once).unwrap(), once, "{input}");
        }
    }

    #[test]
    fn agrees_with_remove_dot_segments_after_decoding() {
        for input in ["/a/b/c/./../../g", "/mid/content=5/../6", "/a/./b/../../c/", "/x/y/.."] {
            let decoded = remove_dot_segments(input);
            assert_eq!(normalise(input).unwrap(), if decoded.is_empty() { "/".to_owned() } else { decoded }, "{input}");
        }
        // The specification's own examples.
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    }

    #[test]
    fn route_patterns() {
        for (pattern, path, fold, want) in [
            ("/console/tokens", "/console/tokens", false, true),
            ("/console/tokens", "/console/tokens/new", false, true),
            ("/console/tokens", "/console/token", false, false),
            ("/Console/", "/console/x", true, true),
            ("/Console/", "/console/x", false, false),
            ("/admin/*/*/*/delete/", "/admin/inventory/widget/1/delete/", false, true),
            ("/admin/*/*/*/delete/", "/admin/inventory/widget/delete/", false, false),
            // Without its trailing slash too: a framework may redirect or serve it.
            ("/admin/*/*/*/delete/", "/admin/inventory/widget/1/delete", false, true),
            ("/admin/**/password/", "/admin/auth/user/2/password/", false, true),
            ("/admin/**/password/", "/admin/password/", false, true),
            ("/admin/**/password/", "/admin/auth/user/2/passwords/", false, false),
            ("/admin/**", "/admin", false, true),
            ("/api/*/tokens", "/api/v2/tokens", false, true),
            ("/api/*/tokens", "/api//tokens", false, false),
        ] {
            assert_eq!(matches(pattern, path, fold), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn every_prefix_of_a_hostile_path_is_handled() {
        let hostile = "/a/%2e%2E/..\\;x/%252F%25/%%2/.//b;c=d/..%2f../e";
        for end in 0..=hostile.len() {
            if let Some(p) = hostile.get(..end) {
                let once = normalise(p).unwrap().into_owned();
                assert!(once.starts_with('/'), "{p}");
                assert_eq!(normalise(&once).unwrap(), once, "{p}");
            }
        }
    }

    #[test]
    fn endless_encoding_is_refused() {
        assert_eq!(normalise("/%2525252525252574"), Err(PathError::TooDeep));
        assert_eq!(normalise("/%25252574").unwrap(), "/t");
    }
}
