//! JA4 fingerprints of a parsed ClientHello.
//!
//! This module owns the JA4 algorithm (FoxIO, `technical_details/JA4.md`)
//! and tether's resumption-stable variant of it. The hashed forms are
//! computed without touching the heap: code points are sorted in a stack
//! array and streamed into SHA-256 as small formatted chunks, never through
//! an intermediate `String`. The raw (unhashed) forms allocate and exist for
//! logs and debugging only.
//!
//! Layout, always 36 ASCII bytes: `a_b_c` where `a` is ten characters
//! (`t`, two version characters, `d`/`i`, two-digit cipher count, two-digit
//! extension count, two ALPN characters), and `b` and `c` are the first
//! twelve hex digits of a SHA-256.
//!
//! Readings of the specification that the text leaves open, settled here:
//!
//! * ALPN: if the first *and* last byte of the first protocol name are ASCII
//!   alphanumeric they are used as is; otherwise the first hex digit of the
//!   first byte and the last hex digit of the last byte (lowercase). This
//!   reproduces all of the specification's worked examples. (ja4plus 1.4.0
//!   instead prints printable ASCII as is, `9` for a byte >= 0x80 and `99`
//!   for a control byte; the two agree whenever both ends are alphanumeric,
//!   as they are for every ALPN identifier in use.)
//! * The `000000000000` extension sentinel is chosen by whether the sorted
//!   list (SNI and ALPN removed) and the signature algorithms are both
//!   empty, for JA4_o too: a hello whose only extension is SNI has an
//!   all-zero JA4_o `c`. This matches ja4plus, which produced the golden
//!   fixtures.
//! * SNI is `d` when a server_name extension is present, whatever it holds
//!   (the specification tests the extension, not the name).
//! * An empty cipher list gives an all-zero `b` in every variant.
//! * Signature algorithms are taken from the signature_algorithms extension
//!   only, with GREASE removed and duplicates kept, in wire order.
//! * supported_versions present but holding only GREASE (or nothing) falls
//!   back to `legacy_version`, as if the extension were absent.

use std::fmt;

use sha2::{Digest, Sha256};

use super::parse::{is_grease, ClientHello, ExtensionType};

/// Length of every JA4 string.
pub const JA4_LEN: usize = 36;
const A_LEN: usize = 10;
const HASH_LEN: usize = 12;
const B_AT: usize = A_LEN + 1;
const C_AT: usize = B_AT + HASH_LEN + 1;
const EMPTY_HASH: [u8; HASH_LEN] = *b"000000000000";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Code points sorted on the stack before falling back to the heap.
///
/// The largest real-world lists come from OpenSSL with every cipher enabled
/// (158 suites in OpenSSL 3.0) and about thirty extensions; 256 covers them with
/// room to spare in 512 bytes of stack. A hello can legally carry ~32 000
/// cipher suites, and the hash must cover all of them to stay comparable
/// with other JA4 implementations, so a longer list is sorted in a `Vec`
/// rather than truncated. Only a crafted hello ever takes that path, and its
/// size is bounded by the record layer's `MAX_HELLO_BYTES`.
const STACK_CODES: usize = 256;

/// A JA4 fingerprint: 36 ASCII bytes such as
/// `t13d1516h2_8daaf6152771_e5627efa2ab1`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ja4([u8; JA4_LEN]);

impl Ja4 {
    /// Reads a JA4 given as text (a trusted balancer's header, a trace line); `None`
    /// unless it has JA4's exact shape, so arbitrary header bytes never become one.
    pub fn parse(text: &[u8]) -> Option<Ja4> {
        let bytes: [u8; JA4_LEN] = text.try_into().ok()?;
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        let shape = matches!(bytes[0], b't' | b'q' | b'd')
            && bytes[1..A_LEN].iter().all(u8::is_ascii_alphanumeric)
            && bytes[A_LEN] == b'_'
            && bytes[B_AT..B_AT + HASH_LEN].iter().all(hex)
            && bytes[C_AT - 1] == b'_'
            && bytes[C_AT..].iter().all(hex);
        shape.then_some(Ja4(bytes))
    }

    fn new(a: &[u8; A_LEN], b: &[u8; HASH_LEN], c: &[u8; HASH_LEN]) -> Self {
        let mut out = [b'_'; JA4_LEN];
        out[..A_LEN].copy_from_slice(a);
        out[B_AT..B_AT + HASH_LEN].copy_from_slice(b);
        out[C_AT..].copy_from_slice(c);
        Self(out)
    }

    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        // invariant: both constructors admit ASCII only. `Ja4::new` builds
        // from fixed letters, decimal and hex digits, and ALPN bytes only when
        // ASCII alphanumeric; `Ja4::parse` accepts nothing but JA4's shape
        // (alphanumerics, `_`, lowercase hex). So this cannot fail.
        std::str::from_utf8(&self.0).expect("JA4 bytes are ASCII")
    }

    /// The fingerprint as bytes.
    pub fn as_bytes(&self) -> &[u8; JA4_LEN] {
        &self.0
    }

    /// Section `a`: protocol, version, SNI, counts and ALPN.
    pub fn prefix(&self) -> &str {
        self.section(0, A_LEN)
    }

    /// Section `b`: the truncated cipher-suite hash.
    pub fn cipher_hash(&self) -> &str {
        self.section(B_AT, HASH_LEN)
    }

    /// Section `c`: the truncated extension / signature-algorithm hash.
    pub fn extension_hash(&self) -> &str {
        self.section(C_AT, HASH_LEN)
    }

    fn section(&self, at: usize, len: usize) -> &str {
        self.as_str().get(at..at + len).unwrap_or_default()
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ja4({})", self.as_str())
    }
}

impl AsRef<str> for Ja4 {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The two fingerprints tether records for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Standard JA4.
    pub ja4: Ja4,
    /// tether's resumption-stable variant; see [`ja4_stable`].
    pub ja4_stable: Ja4,
}

/// Which list of extensions a variant hashes and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// JA4: sorted, SNI and ALPN left out of the hash.
    Sorted,
    /// JA4_o: wire order, SNI and ALPN kept.
    Original,
    /// tether's variant: as `Sorted`, and resumption-dependent extensions
    /// left out of both count and hash.
    Stable,
}

impl Variant {
    /// Whether the extension counts in section `a`.
    fn counts(self, t: ExtensionType) -> bool {
        !t.is_grease() && (self != Self::Stable || !varies_with_resumption(t))
    }

    /// Whether the extension appears in section `c`.
    fn hashes(self, t: ExtensionType) -> bool {
        self.counts(t) && (self == Self::Original || !is_sni_or_alpn(t))
    }
}

fn is_sni_or_alpn(t: ExtensionType) -> bool {
    t == ExtensionType::SERVER_NAME || t == ExtensionType::ALPN
}

/// Extensions a client adds or drops between its first connection and a
/// resumption of the same session: the PSK and early data offer the
/// resumption; a ticket may be carried or not; and padding (RFC 7685) is
/// added only when the hello's length falls in a range, so carrying a PSK
/// can switch it on or off.
fn varies_with_resumption(t: ExtensionType) -> bool {
    matches!(
        t,
        ExtensionType::PRE_SHARED_KEY
            | ExtensionType::SESSION_TICKET
            | ExtensionType::PADDING
            | ExtensionType::EARLY_DATA
    )
}

/// JA4 of a ClientHello received over TCP.
pub fn ja4(hello: &ClientHello<'_>) -> Ja4 {
    let inputs = Inputs::of(hello);
    let b = inputs.sorted_cipher_hash(hello);
    inputs.assemble(hello, Variant::Sorted, &b)
}

/// JA4_o: JA4 with ciphers and extensions hashed in wire order and SNI and
/// ALPN kept in the extension hash.
pub fn ja4_original(hello: &ClientHello<'_>) -> Ja4 {
    let inputs = Inputs::of(hello);
    let mut sink = HashSink::new();
    write_codes(&mut sink, hello.cipher_suites().filter(|&c| !is_grease(c)));
    let b = sink.finish(inputs.ciphers > 0);
    inputs.assemble(hello, Variant::Original, &b)
}

/// tether's resumption-stable fingerprint — not a FoxIO value.
///
/// Identical to [`ja4`] except that pre_shared_key (0x0029), session_ticket
/// (0x0023), padding (0x0015) and early_data (0x002a) are ignored for both
/// the extension count and the extension hash. A client resuming a session
/// keeps its `ja4_stable`, while its JA4 usually changes; a different client
/// presenting the same session almost certainly does not.
pub fn ja4_stable(hello: &ClientHello<'_>) -> Ja4 {
    let inputs = Inputs::of(hello);
    let b = inputs.sorted_cipher_hash(hello);
    inputs.assemble(hello, Variant::Stable, &b)
}

/// JA4 and the resumption-stable variant together, sharing the work they
/// have in common.
pub fn fingerprint(hello: &ClientHello<'_>) -> Fingerprint {
    let inputs = Inputs::of(hello);
    let b = inputs.sorted_cipher_hash(hello);
    Fingerprint {
        ja4: inputs.assemble(hello, Variant::Sorted, &b),
        ja4_stable: inputs.assemble(hello, Variant::Stable, &b),
    }
}

/// JA4_r, the unhashed form of [`ja4`]. Allocates; for logs and debugging.
pub fn ja4_raw(hello: &ClientHello<'_>) -> String {
    raw(hello, Variant::Sorted)
}

/// JA4_ro, the unhashed form of [`ja4_original`]. Allocates; for logs and
/// debugging.
pub fn ja4_raw_original(hello: &ClientHello<'_>) -> String {
    raw(hello, Variant::Original)
}

fn raw(hello: &ClientHello<'_>, variant: Variant) -> String {
    let inputs = Inputs::of(hello);
    let mut out = String::with_capacity(256);
    out.push_str(inputs.prefix(hello, variant).as_str());
    out.push('_');
    let ciphers = hello.cipher_suites().filter(|&c| !is_grease(c));
    if variant == Variant::Original {
        write_codes(&mut out, ciphers);
    } else {
        with_sorted(ciphers, |sorted| {
            write_codes(&mut out, sorted.iter().copied())
        });
    }
    out.push('_');
    write_extensions(&mut out, hello, variant);
    out
}

/// Per-hello values every variant needs, gathered in one pass.
struct Inputs {
    ciphers: usize,
    version: [u8; 2],
    alpn: [u8; 2],
}

impl Inputs {
    fn of(hello: &ClientHello<'_>) -> Self {
        Self {
            ciphers: hello.cipher_suites().filter(|&c| !is_grease(c)).count(),
            version: version_code(hello),
            alpn: alpn_code(hello.first_alpn_protocol()),
        }
    }

    fn sorted_cipher_hash(&self, hello: &ClientHello<'_>) -> [u8; HASH_LEN] {
        let mut sink = HashSink::new();
        with_sorted(hello.cipher_suites().filter(|&c| !is_grease(c)), |sorted| {
            write_codes(&mut sink, sorted.iter().copied());
        });
        sink.finish(self.ciphers > 0)
    }

    fn prefix(&self, hello: &ClientHello<'_>, variant: Variant) -> Prefix {
        let extensions = hello
            .extensions()
            .filter(|e| variant.counts(e.ext_type))
            .count();
        let mut a = [0; A_LEN];
        a[0] = b't';
        a[1..3].copy_from_slice(&self.version);
        a[3] = if hello.has_server_name() { b'd' } else { b'i' };
        a[4..6].copy_from_slice(&two_digits(self.ciphers));
        a[6..8].copy_from_slice(&two_digits(extensions));
        a[8..10].copy_from_slice(&self.alpn);
        Prefix(a)
    }

    fn assemble(&self, hello: &ClientHello<'_>, variant: Variant, b: &[u8; HASH_LEN]) -> Ja4 {
        let a = self.prefix(hello, variant);
        let mut sink = HashSink::new();
        let nonempty = write_extensions(&mut sink, hello, variant);
        Ja4::new(&a.0, b, &sink.finish(nonempty))
    }
}

/// Section `a` bytes (ASCII by construction).
struct Prefix([u8; A_LEN]);

impl Prefix {
    fn as_str(&self) -> &str {
        // Never fails: see `Ja4::as_str`. An empty string would only make a
        // debug-only raw form look wrong, never panic.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Writes section `c`'s input: the extension list for `variant`, then `_`
/// and the signature algorithms if there are any. Returns whether the
/// section has content by the specification's test (see the module notes).
fn write_extensions(sink: &mut impl Sink, hello: &ClientHello<'_>, variant: Variant) -> bool {
    let hashed = hello
        .extensions()
        .map(|e| e.ext_type)
        .filter(move |&t| variant.hashes(t))
        .map(|t| t.0);
    if variant == Variant::Original {
        write_codes(sink, hashed);
    } else {
        with_sorted(hashed, |sorted| write_codes(sink, sorted.iter().copied()));
    }
    let sigs = hello
        .signature_algorithms()
        .into_iter()
        .flatten()
        .filter(|&s| !is_grease(s));
    let has_sigs = sigs.clone().next().is_some();
    if has_sigs {
        sink.put(b"_");
        write_codes(sink, sigs);
    }
    // JA4_o shares JA4's test, so it asks about the sorted variant's list.
    let sentinel_variant = match variant {
        Variant::Original => Variant::Sorted,
        v => v,
    };
    has_sigs
        || hello
            .extensions()
            .any(|e| sentinel_variant.hashes(e.ext_type))
}

/// Receives the formatted input of a section.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// Streams section input into SHA-256.
struct HashSink(Sha256);

impl HashSink {
    fn new() -> Self {
        Self(Sha256::new())
    }

    /// The truncated lowercase hex digest, or the all-zero sentinel when the
    /// section is empty.
    fn finish(self, nonempty: bool) -> [u8; HASH_LEN] {
        if !nonempty {
            return EMPTY_HASH;
        }
        let digest = self.0.finalize();
        let mut out = [0; HASH_LEN];
        for (pair, byte) in out.chunks_exact_mut(2).zip(digest.iter()) {
            pair.copy_from_slice(&hex_byte(*byte));
        }
        out
    }
}

impl Sink for HashSink {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Sink for String {
    fn put(&mut self, bytes: &[u8]) {
        // Only ASCII reaches a sink, so each byte is one char.
        self.extend(bytes.iter().map(|&b| char::from(b)));
    }
}

/// Writes `codes` as comma-separated four-digit lowercase hex.
fn write_codes(sink: &mut impl Sink, codes: impl Iterator<Item = u16>) {
    for (i, code) in codes.enumerate() {
        let [hi, lo] = code.to_be_bytes();
        let [h0, h1] = hex_byte(hi);
        let [l0, l1] = hex_byte(lo);
        let item = [b',', h0, h1, l0, l1];
        sink.put(if i == 0 { &item[1..] } else { &item });
    }
}

/// Collects `codes`, sorts them and hands the sorted slice to `f`, on the
/// stack unless there are more than [`STACK_CODES`].
fn with_sorted<R>(codes: impl Iterator<Item = u16>, f: impl FnOnce(&[u16]) -> R) -> R {
    let mut stack = [0_u16; STACK_CODES];
    let mut heap = Vec::new();
    let mut n = 0;
    for code in codes {
        if let Some(slot) = stack.get_mut(n) {
            *slot = code;
            n += 1;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&stack);
            }
            heap.push(code);
        }
    }
    let codes: &mut [u16] = if heap.is_empty() {
        stack.get_mut(..n).unwrap_or_default()
    } else {
        &mut heap
    };
    codes.sort_unstable();
    f(codes)
}

/// Version characters: the highest non-GREASE supported_versions entry if
/// there is one, else `legacy_version`.
fn version_code(hello: &ClientHello<'_>) -> [u8; 2] {
    let version = hello
        .supported_versions()
        .into_iter()
        .flatten()
        .filter(|&v| !is_grease(v))
        .max()
        .unwrap_or(hello.legacy_version());
    version_chars(version)
}

fn version_chars(version: u16) -> [u8; 2] {
    *match version {
        0x0304 => b"13",
        0x0303 => b"12",
        0x0302 => b"11",
        0x0301 => b"10",
        0x0300 => b"s3",
        0x0002 => b"s2",
        0xfeff => b"d1",
        0xfefd => b"d2",
        0xfefc => b"d3",
        _ => b"00",
    }
}

/// ALPN characters from the first protocol name; see the module notes.
fn alpn_code(first: Option<&[u8]>) -> [u8; 2] {
    let Some((&first, &last)) = first.and_then(|p| Some((p.first()?, p.last()?))) else {
        return *b"00";
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        [first, last]
    } else {
        [hex_byte(first)[0], hex_byte(last)[1]]
    }
}

fn two_digits(n: usize) -> [u8; 2] {
    let n = n.min(99);
    // Both digits are below 10 after the clamp; the casts cannot truncate.
    [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]
}

fn hex_byte(b: u8) -> [u8; 2] {
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]
}

#[cfg(test)]
mod parse_text_tests {
    use super::*;

    #[test]
    fn parse_accepts_only_the_ja4_shape() {
        let good = b"t13d1516h2_8daaf6152771_e5627efa2ab1";
        assert_eq!(Ja4::parse(good).unwrap().as_str(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        for bad in [
            &b"t13d1516h2_8daaf6152771_e5627efa2ab"[..],
            b"t13d1516h2_8daaf6152771_e5627efa2ab12",
            b"x13d1516h2_8daaf6152771_e5627efa2ab1",
            b"t13d1516h2-8daaf6152771_e5627efa2ab1",
            b"t13d1516h2_8DAAF6152771_e5627efa2ab1",
            b"t13d1516h2_8daaf6152771_e5627efa2ab\xff",
            b"",
        ] {
            assert!(Ja4::parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::parse::parse_client_hello;
    use crate::fingerprint::testutil::{
        ext_alpn, ext_sigalgs, ext_sni, ext_versions, fixtures, sha12, ExtList, HelloSpec,
    };

    fn with_hello<R>(spec: &HelloSpec, f: impl FnOnce(&ClientHello<'_>) -> R) -> R {
        let msg = spec.encode();
        let hello = parse_client_hello(&msg).expect("test hello parses");
        f(&hello)
    }

    #[test]
    fn golden_fixtures() {
        for fx in fixtures() {
            let msg = fx.message();
            let h = parse_client_hello(&msg).expect(fx.name);
            assert_eq!(ja4(&h).as_str(), fx.ja4, "{} JA4", fx.name);
            assert_eq!(ja4_original(&h).as_str(), fx.ja4_o, "{} JA4_o", fx.name);
            assert_eq!(ja4_raw(&h), fx.ja4_r, "{} JA4_r", fx.name);
            assert_eq!(ja4_raw_original(&h), fx.ja4_ro, "{} JA4_ro", fx.name);
        }
    }

    #[test]
    fn raw_forms_hash_to_the_hashed_forms() {
        for fx in fixtures() {
            for (raw, hashed) in [(fx.ja4_r, fx.ja4), (fx.ja4_ro, fx.ja4_o)] {
                let (a, rest) = raw.split_at(A_LEN);
                let (ciphers, exts) = rest[1..].split_once('_').expect("three sections");
                assert_eq!(format!("{a}_{}_{}", sha12(ciphers), sha12(exts)), hashed);
            }
        }
    }

    /// The hello behind the worked example in the specification, with
    /// GREASE sprinkled in where Chrome puts it.
    fn spec_example(sig_algs: &[u16]) -> HelloSpec {
        let ciphers = [
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let order = [
            0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
            0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ];
        let mut extensions = vec![(0x3a3a, vec![])];
        for t in order {
            extensions.push(match t {
                0x0000 => ext_sni(b"example.com"),
                0x0010 => ext_alpn(&[b"h2", b"http/1.1"]),
                0x000d => ext_sigalgs(sig_algs),
                0x002b => ext_versions(&[0xdada, 0x0304, 0x0303]),
                t => (t, vec![]),
            });
        }
        extensions.push((0xbaba, vec![0]));
        HelloSpec {
            ciphers: [0x4a4a].into_iter().chain(ciphers).collect(),
            extensions: Some(extensions),
            ..HelloSpec::default()
        }
    }

    const SPEC_SIGS: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];

    #[test]
    fn specification_example() {
        with_hello(&spec_example(&SPEC_SIGS), |h| {
            assert_eq!(ja4(h).as_str(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
            assert_eq!(
                ja4_original(h).as_str(),
                "t13d1516h2_acb858a92679_18f69afefd3d"
            );
            assert_eq!(
                ja4_raw(h),
                "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,\
                 c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,\
                 4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
            );
            assert_eq!(
                ja4_raw_original(h),
                "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,\
                 009d,002f,0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,\
                 ff01,000b,000a,0015_0403,0804,0401,0503,0805,0501,0806,0601"
            );
        });
    }

    #[test]
    fn no_signature_algorithms_means_no_underscore() {
        // The specification's example: "…,4469,ff01 = 6d807ffa2a79".
        with_hello(&spec_example(&[]), |h| {
            assert_eq!(ja4(h).extension_hash(), "6d807ffa2a79");
            assert!(ja4_raw(h).ends_with(
                "_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
            ));
        });
        // A GREASE-only list counts as empty.
        with_hello(&spec_example(&[0x0a0a]), |h| {
            assert_eq!(ja4(h).extension_hash(), "6d807ffa2a79");
        });
    }

    #[test]
    fn alpn_rules() {
        let cases: [(&[&[u8]], &str); 13] = [
            (&[b"h2"], "h2"),
            (&[b"http/1.1", b"h2"], "h1"),
            (&[b"h3"], "h3"),
            (&[b"h"], "hh"),
            (&[b""], "00"),
            (&[], "00"),
            (&[&[0xab]], "ab"),
            (&[&[0xab, 0xcd]], "ad"),
            (&[&[0x30, 0xab]], "3b"),
            (&[&[0x30, 0x31, 0xab, 0xcd]], "3d"),
            (&[&[0x30, 0xab, 0xcd, 0x31]], "01"),
            (&[b"/x"], "28"),
            (&[b"Xy"], "Xy"),
        ];
        for (protocols, want) in cases {
            let spec = HelloSpec {
                extensions: Some(vec![ext_alpn(protocols)]),
                ..HelloSpec::default()
            };
            with_hello(&spec, |h| {
                assert_eq!(&ja4(h).prefix()[8..], want, "{protocols:?}");
            });
        }
        let spec = HelloSpec {
            extensions: Some(vec![ext_sni(b"a.example")]),
            ..HelloSpec::default()
        };
        with_hello(&spec, |h| assert_eq!(&ja4(h).prefix()[8..], "00"));
    }

    #[test]
    fn sni_presence() {
        let with = HelloSpec {
            extensions: Some(vec![ext_sni(b"a.example")]),
            ..HelloSpec::default()
        };
        let without = HelloSpec {
            extensions: Some(vec![(0x0017, vec![])]),
            ..HelloSpec::default()
        };
        with_hello(&with, |h| assert_eq!(&ja4(h).prefix()[3..4], "d"));
        with_hello(&without, |h| assert_eq!(&ja4(h).prefix()[3..4], "i"));
    }

    #[test]
    fn version_selection() {
        let table = [
            (0x0304, "13"),
            (0x0303, "12"),
            (0x0302, "11"),
            (0x0301, "10"),
            (0x0300, "s3"),
            (0x0002, "s2"),
            (0xfeff, "d1"),
            (0xfefd, "d2"),
            (0xfefc, "d3"),
            (0x0200, "00"),
            (0x7f1c, "00"),
        ];
        for (v, want) in table {
            assert_eq!(&version_chars(v), want.as_bytes(), "{v:#06x}");
        }
        let cases: [(u16, Option<&[u16]>, &str); 5] = [
            (0x0303, None, "12"),
            (0x0301, None, "10"),
            (0x0303, Some(&[0x2a2a, 0x0304, 0x0303]), "13"),
            (0x0303, Some(&[0x0303, 0x0304]), "13"),
            (0x0301, Some(&[0x8a8a]), "10"),
        ];
        for (legacy, versions, want) in cases {
            let spec = HelloSpec {
                legacy_version: legacy,
                extensions: Some(versions.map(ext_versions).into_iter().collect()),
                ..HelloSpec::default()
            };
            with_hello(&spec, |h| assert_eq!(&ja4(h).prefix()[1..3], want));
        }
    }

    #[test]
    fn empty_sections_use_the_zero_sentinel() {
        let spec = HelloSpec {
            ciphers: vec![0x0a0a],
            extensions: None,
            ..HelloSpec::default()
        };
        with_hello(&spec, |h| {
            assert_eq!(ja4(h).as_str(), "t12i000000_000000000000_000000000000");
            assert_eq!(
                ja4_original(h).as_str(),
                "t12i000000_000000000000_000000000000"
            );
            assert_eq!(
                ja4_stable(h).as_str(),
                "t12i000000_000000000000_000000000000"
            );
            assert_eq!(ja4_raw(h), "t12i000000__");
        });
        // Only SNI and ALPN: empty once they are removed, for JA4_o as well.
        let spec = HelloSpec {
            extensions: Some(vec![ext_sni(b"a.example"), ext_alpn(&[b"h2"])]),
            ..HelloSpec::default()
        };
        with_hello(&spec, |h| {
            assert_eq!(ja4(h).extension_hash(), "000000000000");
            assert_eq!(ja4_original(h).extension_hash(), "000000000000");
            assert_eq!(ja4_raw_original(h).rsplit('_').next(), Some("0000,0010"));
        });
        // Only resumption extensions: empty for the stable variant alone.
        let spec = HelloSpec {
            extensions: Some(vec![(0x0015, vec![0; 8])]),
            ..HelloSpec::default()
        };
        with_hello(&spec, |h| {
            assert_eq!(ja4(h).extension_hash(), sha12("0015"));
            assert_eq!(ja4_stable(h).extension_hash(), "000000000000");
            assert_eq!(&ja4_stable(h).prefix()[6..8], "00");
        });
    }

    #[test]
    fn counts_cap_at_99_but_hashes_cover_everything() {
        for n in [120_u16, 300, 2000] {
            // Descending, so sorting matters; past the stack buffer at 300.
            let ciphers: Vec<u16> = (0..n).rev().map(|i| i + 1).collect();
            let extensions = (0..n).rev().map(|i| (0x1000 + i, vec![])).collect();
            let spec = HelloSpec {
                ciphers,
                extensions: Some(extensions),
                ..HelloSpec::default()
            };
            with_hello(&spec, |h| {
                let fp = ja4(h);
                assert_eq!(&fp.prefix()[4..8], "9999");
                let ciphers: Vec<String> = (1..=n).map(|c| format!("{c:04x}")).collect();
                assert_eq!(fp.cipher_hash(), sha12(&ciphers.join(",")));
                let exts: Vec<String> = (0..n).map(|e| format!("{:04x}", 0x1000 + e)).collect();
                assert_eq!(fp.extension_hash(), sha12(&exts.join(",")));
                let raw = ja4_raw(h);
                assert!(raw.contains(&ciphers.join(",")));
            });
        }
    }

    #[test]
    fn ja4_shape() {
        for fx in fixtures() {
            let msg = fx.message();
            let h = parse_client_hello(&msg).expect(fx.name);
            for fp in [ja4(&h), ja4_original(&h), ja4_stable(&h)] {
                assert_eq!(fp.as_str().len(), JA4_LEN);
                assert_eq!(fp.to_string(), fp.as_str());
                assert_eq!(
                    format!(
                        "{}_{}_{}",
                        fp.prefix(),
                        fp.cipher_hash(),
                        fp.extension_hash()
                    ),
                    fp.as_str()
                );
                assert_eq!(format!("{fp:?}"), format!("Ja4({fp})"));
            }
        }
    }

    #[test]
    fn fingerprint_matches_the_single_functions() {
        for fx in fixtures() {
            let msg = fx.message();
            let h = parse_client_hello(&msg).expect(fx.name);
            let fp = fingerprint(&h);
            assert_eq!(fp.ja4, ja4(&h));
            assert_eq!(fp.ja4_stable, ja4_stable(&h));
        }
    }

    /// hello-7 (curl_cffi, no impersonation) carries session_ticket and
    /// padding, so it exercises the stable variant with real data.
    #[test]
    fn stable_variant_ignores_resumption_extensions() {
        let fixtures = fixtures();
        let fx = &fixtures[6];
        let msg = fx.message();
        let original = HelloSpec::from_hello(&parse_client_hello(&msg).expect(fx.name));
        let base = with_hello(&original, fingerprint);
        assert_eq!(base.ja4.as_str(), fx.ja4);
        // 12 extensions, minus session_ticket and padding.
        assert_eq!(base.ja4_stable.prefix(), "t13d2710h2");
        assert_ne!(base.ja4_stable.extension_hash(), base.ja4.extension_hash());

        type Edit = fn(&mut ExtList);
        let edits: [(&str, Edit); 4] = [
            ("padding removed", |e| e.retain(|x| x.0 != 0x0015)),
            ("session_ticket carries a ticket", |e| {
                for x in e.iter_mut().filter(|x| x.0 == 0x0023) {
                    x.1 = vec![0x5a; 190];
                }
            }),
            ("session_ticket removed, early_data and PSK added", |e| {
                e.retain(|x| x.0 != 0x0023);
                e.push((0x002a, vec![]));
                // pre_shared_key must come last: one identity, one binder.
                let mut psk = vec![0, 0x0a, 0, 4, 1, 2, 3, 4, 0, 0, 0, 1];
                psk.extend_from_slice(&[0, 0x21, 0x20]);
                psk.extend_from_slice(&[0x77; 32]);
                e.push((0x0029, psk));
            }),
            ("all four added to a stripped list", |e| {
                e.retain(|x| !matches!(x.0, 0x0015 | 0x0023));
                e.push((0x0015, vec![0; 100]));
                e.push((0x0023, vec![]));
                e.push((0x002a, vec![]));
                e.push((0x0029, vec![0, 0, 0, 0]));
            }),
        ];
        for (what, edit) in edits {
            let mut spec = original.clone();
            let mut exts = spec.extensions.take().expect("has extensions");
            edit(&mut exts);
            spec.extensions = Some(exts);
            let fp = with_hello(&spec, fingerprint);
            assert_eq!(fp.ja4_stable, base.ja4_stable, "{what}");
            if what != "session_ticket carries a ticket" {
                assert_ne!(fp.ja4, base.ja4, "{what}");
            } else {
                // Contents never matter to JA4, only presence.
                assert_eq!(fp.ja4, base.ja4, "{what}");
            }
        }

        // Any other change still moves the stable fingerprint.
        let mut spec = original.clone();
        if let Some(exts) = spec.extensions.as_mut() {
            exts.retain(|x| x.0 != 0x0017);
        }
        assert_ne!(with_hello(&spec, ja4_stable), base.ja4_stable);
    }
}
