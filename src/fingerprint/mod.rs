//! TLS ClientHello fingerprinting: from the first raw bytes of a connection
//! to its JA4.
//!
//! This module owns everything between "bytes read from an accepted socket"
//! and "a fingerprint for this connection", and nothing else: it performs no
//! I/O and depends on no runtime, so the proxy can run it on bytes it has
//! peeked or buffered before handing them to the TLS library, and offline
//! tools can run it on captures.
//!
//! * [`record`] — bounded, incremental reassembly of the ClientHello from
//!   TLS records ([`Reassembler`], [`reassemble`]).
//! * [`parse`] — zero-copy, strictly bounds-checked parsing of the hello
//!   ([`parse_client_hello`], [`ClientHello`]).
//! * [`mod@ja4`] — JA4, JA4_o, their raw forms and tether's
//!   resumption-stable variant ([`Ja4`], [`Fingerprint`], [`fingerprint()`]).
//!
//! The submodules are public for callers that prefer the qualified path;
//! everything they export is also re-exported here.
//!
//! Nothing here panics on network input, and the hashed fingerprints are
//! computed without heap allocation.

pub mod class;
pub mod ja4;
pub mod parse;
pub mod record;
pub mod user_agent;

use thiserror::Error;

pub use self::ja4::{
    fingerprint, ja4, ja4_original, ja4_raw, ja4_raw_original, ja4_stable, Fingerprint, Ja4,
    JA4_LEN,
};
pub use self::parse::{
    is_grease, parse_client_hello, ClientHello, Codes, Extension, ExtensionType, Extensions, Field,
    ParseError,
};
pub use self::class::{classify, TlsClass};
pub use self::user_agent::{Os, UaFamily, UserAgent};
pub use self::record::{reassemble, Assembly, Reassembler, RecordError, MAX_HELLO_BYTES};

/// Why [`fingerprint_records`] produced no fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FingerprintError {
    /// The bytes are not the start of a TLS connection.
    #[error("record layer: {0}")]
    Record(#[from] RecordError),
    /// The bytes end before the ClientHello does.
    #[error("ClientHello incomplete")]
    Incomplete,
    /// The reassembled ClientHello is malformed.
    #[error("ClientHello: {0}")]
    Parse(#[from] ParseError),
}

/// Fingerprints the ClientHello at the start of `raw`, a complete capture of
/// what a client sent first.
///
/// `scratch` receives the reassembled handshake message; reusing it across
/// calls avoids reallocating. For a live connection, drive a [`Reassembler`]
/// read by read instead and call [`parse_client_hello`] and [`fingerprint`]
/// once it reports [`Assembly::Complete`].
pub fn fingerprint_records(
    raw: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Fingerprint, FingerprintError> {
    match reassemble(raw, scratch)? {
        Assembly::NeedMore => Err(FingerprintError::Incomplete),
        Assembly::Complete => Ok(fingerprint(&parse_client_hello(scratch)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{fixtures, split_records};
    use super::*;

    #[test]
    fn golden_fixtures_from_raw_records() {
        let mut scratch = Vec::new();
        for fx in fixtures() {
            let fp = fingerprint_records(&fx.raw(), &mut scratch).expect(fx.name);
            assert_eq!(fp.ja4.as_str(), fx.ja4, "{}", fx.name);
        }
    }

    #[test]
    fn incomplete_and_invalid_input() {
        let raw = fixtures()[2].raw();
        let mut scratch = Vec::new();
        assert_eq!(
            fingerprint_records(&raw[..raw.len() - 1], &mut scratch),
            Err(FingerprintError::Incomplete)
        );
        assert_eq!(
            fingerprint_records(b"GET / HTTP/1.1\r\n", &mut scratch),
            Err(FingerprintError::Record(RecordError::NotTls(b'G')))
        );
        // A record-level hello whose body is not a valid ClientHello.
        assert_eq!(
            fingerprint_records(&[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 3], &mut scratch),
            Err(FingerprintError::Parse(ParseError::Truncated(
                Field::LegacyVersion
            )))
        );
    }

    /// Re-encodes each hello into records of 1 to 7 bytes, delivers them in
    /// reads of 1 to 11 bytes and checks the fingerprint survives.
    #[test]
    fn fragmented_delivery_gives_identical_fingerprints() {
        for fx in fixtures() {
            for seed in 0..5 {
                let raw = split_records(&fx.message(), seed);
                assert!(raw.len() > fx.raw().len() * 2, "actually fragmented");
                let mut r = Reassembler::new();
                let mut msg = Vec::new();
                let mut end = 0;
                let mut reads = 0_usize;
                loop {
                    reads += 1;
                    end = (end + (reads * 7 + seed) % 11 + 1).min(raw.len());
                    match r.advance(&raw[..end], &mut msg) {
                        Ok(Assembly::Complete) => break,
                        Ok(Assembly::NeedMore) => assert!(end < raw.len(), "{}", fx.name),
                        Err(e) => panic!("{} seed {seed}: {e}", fx.name),
                    }
                }
                let hello = parse_client_hello(&msg).expect(fx.name);
                assert_eq!(ja4(&hello).as_str(), fx.ja4, "{} seed {seed}", fx.name);
                assert_eq!(
                    ja4_original(&hello).as_str(),
                    fx.ja4_o,
                    "{} seed {seed}",
                    fx.name
                );
            }
        }
    }

    /// Flipping any byte of any fixture must never panic, whatever stage
    /// rejects it.
    #[test]
    fn mutating_every_byte_never_panics() {
        let mut scratch = Vec::new();
        let mut accepted = 0_usize;
        for fx in fixtures() {
            let mut raw = fx.raw();
            for i in 0..raw.len() {
                for flip in [0x01, 0x10, 0x80, 0xff] {
                    raw[i] ^= flip;
                    if let Ok(fp) = fingerprint_records(&raw, &mut scratch) {
                        accepted += 1;
                        assert_eq!(fp.ja4.as_str().len(), JA4_LEN);
                        let hello = parse_client_hello(&scratch).expect("parsed once already");
                        let _ = (ja4_raw(&hello), ja4_raw_original(&hello));
                        let _ = ja4_original(&hello);
                    }
                    raw[i] ^= flip;
                }
            }
        }
        // Most flips land in randoms, keys and names, which stay parseable.
        assert!(accepted > 0);
    }
}

/// Shared test fixtures and hello construction.
#[cfg(test)]
pub(crate) mod testutil {
    use sha2::{Digest, Sha256};

    use super::{reassemble, Assembly, ClientHello};

    macro_rules! fixture_dir {
        () => {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/fixtures/clienthello/"
            )
        };
    }

    const HEX: [&str; 7] = [
        include_str!(concat!(fixture_dir!(), "hello-1.hex")),
        include_str!(concat!(fixture_dir!(), "hello-2.hex")),
        include_str!(concat!(fixture_dir!(), "hello-3.hex")),
        include_str!(concat!(fixture_dir!(), "hello-4.hex")),
        include_str!(concat!(fixture_dir!(), "hello-5.hex")),
        include_str!(concat!(fixture_dir!(), "hello-6.hex")),
        include_str!(concat!(fixture_dir!(), "hello-7.hex")),
    ];

    /// JA4 and JA4_o per fixture, as published beside the captures.
    const EXPECTED: &str = include_str!(concat!(fixture_dir!(), "EXPECTED_JA4.txt"));

    /// JA4_r and JA4_ro per fixture, computed with ja4plus 1.4.0.
    const RAW: [(&str, &str); 7] = [
        (
            "t13i3111h1_002f,0033,0035,0039,003c,003d,0067,006b,009c,009d,009e,009f,00ff,1301,1302,1303,c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9,ccaa_000a,000b,000d,0015,0016,0017,002b,002d,0031,0033_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601,0303,0301,0302,0402,0502,0602",
            "t13i3111h1_1302,1303,1301,c02c,c030,009f,cca9,cca8,ccaa,c02b,c02f,009e,c024,c028,006b,c023,c027,0067,c00a,c014,0039,c009,c013,0033,009d,009c,003d,003c,0035,002f,00ff_000b,000a,0010,0016,0017,0031,000d,002b,002d,0033,0015_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601,0303,0301,0302,0402,0502,0602",
        ),
        (
            "t13d3112h2_002f,0033,0035,0039,003c,003d,0067,006b,009c,009d,009e,009f,00ff,1301,1302,1303,c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9,ccaa_000a,000b,000d,0015,0016,0017,002b,002d,0031,0033_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601,0303,0301,0302,0402,0502,0602",
            "t13d3112h2_1302,1303,1301,c02c,c030,009f,cca9,cca8,ccaa,c02b,c02f,009e,c024,c028,006b,c023,c027,0067,c00a,c014,0039,c009,c013,0033,009d,009c,003d,003c,0035,002f,00ff_0000,000b,000a,0010,0016,0017,0031,000d,002b,002d,0033,0015_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601,0303,0301,0302,0402,0502,0602",
        ),
        (
            "t13d1517h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,ca34,fe0d,ff01_0904,0905,0906,0403,0804,0401,0503,0805,0501,0806,0601",
            "t13d1517h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_0010,0000,000a,002b,000d,0017,ca34,44cd,002d,0012,000b,0005,ff01,001b,0033,fe0d,0023_0904,0905,0906,0403,0804,0401,0503,0805,0501,0806,0601",
        ),
        (
            "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
            "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_002d,001b,002b,44cd,0012,0005,fe0d,0010,ff01,0000,0023,000b,000a,000d,0017,0033_0403,0804,0401,0503,0805,0501,0806,0601",
        ),
        (
            "t13d1517h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,001c,0022,0023,002b,002d,0033,fe0d,ff01_0403,0503,0603,0804,0805,0806,0401,0501,0601,0203,0201",
            "t13d1517h2_1301,1303,1302,c02b,c02f,cca9,cca8,c02c,c030,c013,c014,009c,009d,002f,0035_0000,0017,ff01,000a,000b,0023,0010,0005,0022,0012,0033,002b,000d,002d,001c,001b,fe0d_0403,0503,0603,0804,0805,0806,0401,0501,0601,0203,0201",
        ),
        (
            "t13d2013h2_000a,002f,0035,009c,009d,1301,1302,1303,c008,c009,c00a,c012,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,002b,002d,0033,ff01_0403,0804,0401,0503,0805,0805,0501,0806,0601,0201",
            "t13d2013h2_1302,1303,1301,c02c,c02b,cca9,c030,c02f,cca8,c00a,c009,c014,c013,009d,009c,0035,002f,c008,c012,000a_0000,0017,ff01,000a,000b,0010,0005,000d,0012,0033,002d,002b,001b_0403,0804,0401,0503,0805,0805,0501,0806,0601,0201",
        ),
        (
            "t13d2712h2_002f,0033,0035,0039,003c,003d,0067,006b,009c,009d,009e,009f,1301,1302,1303,c009,c00a,c013,c014,c024,c028,c02b,c02c,c02f,c030,cca8,cca9_000a,000b,000d,0015,0017,0023,002b,002d,0033,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
            "t13d2712h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,003c,003d,c024,c028,0033,0039,0067,006b,009e,009f,c009,c013,c00a,c014,009c,009d,002f,0035_0000,0017,ff01,000a,000b,0023,0010,000d,0033,002d,002b,0015_0403,0804,0401,0503,0805,0501,0806,0601",
        ),
    ];

    pub(crate) struct Fixture {
        pub name: &'static str,
        hex: &'static str,
        pub ja4: &'static str,
        pub ja4_o: &'static str,
        pub ja4_r: &'static str,
        pub ja4_ro: &'static str,
    }

    impl Fixture {
        /// The captured bytes, as read from the socket.
        pub fn raw(&self) -> Vec<u8> {
            let hex = self.hex.trim();
            assert!(hex.len().is_multiple_of(2), "{}: odd hex length", self.name);
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
                .collect()
        }

        /// The reassembled ClientHello handshake message.
        pub fn message(&self) -> Vec<u8> {
            let mut msg = Vec::new();
            assert_eq!(reassemble(&self.raw(), &mut msg), Ok(Assembly::Complete));
            msg
        }
    }

    /// The seven captured hellos with their expected fingerprints.
    pub(crate) fn fixtures() -> Vec<Fixture> {
        let names = [
            "hello-1", "hello-2", "hello-3", "hello-4", "hello-5", "hello-6", "hello-7",
        ];
        names
            .iter()
            .zip(HEX)
            .zip(RAW)
            .map(|((&name, hex), (ja4_r, ja4_ro))| {
                // "hello-N.hex <ja4> | JA4_o: <ja4_o>"
                let line = EXPECTED
                    .lines()
                    .find(|l| l.starts_with(&format!("{name}.hex ")))
                    .expect("fixture listed in EXPECTED_JA4.txt");
                let mut words = line.split_whitespace();
                let ja4 = words.nth(1).expect("JA4 column");
                let ja4_o = words.nth(2).expect("JA4_o column");
                Fixture {
                    name,
                    hex,
                    ja4,
                    ja4_o,
                    ja4_r,
                    ja4_ro,
                }
            })
            .collect()
    }

    /// Wraps each piece in a handshake record.
    pub(crate) fn records(pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            let len = u16::try_from(piece.len()).expect("record fits");
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    /// Splits a handshake message into records of 1 to 7 bytes, the sizes
    /// cycling in a pattern chosen by `seed`.
    pub(crate) fn split_records(msg: &[u8], seed: usize) -> Vec<u8> {
        let mut pieces = Vec::new();
        let mut rest = msg;
        let mut i = seed;
        while !rest.is_empty() {
            let size = (i * 3 + seed) % 7 + 1;
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            pieces.push(piece);
            rest = tail;
            i += 1;
        }
        records(&pieces)
    }

    /// The first twelve hex digits of SHA-256, the way JA4 truncates.
    pub(crate) fn sha12(s: &str) -> String {
        let digest = Sha256::digest(s.as_bytes());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Extensions as (type, data) pairs, in wire order.
    pub(crate) type ExtList = Vec<(u16, Vec<u8>)>;

    /// An owned ClientHello that tests can edit and re-encode.
    #[derive(Debug, Clone)]
    pub(crate) struct HelloSpec {
        pub legacy_version: u16,
        pub session_id: Vec<u8>,
        pub ciphers: Vec<u16>,
        pub compression: Vec<u8>,
        pub extensions: Option<ExtList>,
    }

    impl Default for HelloSpec {
        fn default() -> Self {
            Self {
                legacy_version: 0x0303,
                session_id: vec![0x11; 32],
                ciphers: vec![0x1301, 0x1302],
                compression: vec![0],
                extensions: Some(vec![
                    ext_sni(b"example.com"),
                    ext_alpn(&[b"h2"]),
                    ext_versions(&[0x0304, 0x0303]),
                    ext_sigalgs(&[0x0403, 0x0804]),
                ]),
            }
        }
    }

    impl HelloSpec {
        pub fn from_hello(h: &ClientHello<'_>) -> Self {
            Self {
                legacy_version: h.legacy_version(),
                session_id: h.session_id().to_vec(),
                ciphers: h.cipher_suites().collect(),
                compression: h.compression_methods().to_vec(),
                extensions: h.has_extensions_block().then(|| {
                    h.extensions()
                        .map(|e| (e.ext_type.0, e.data.to_vec()))
                        .collect()
                }),
            }
        }

        /// The handshake message, header included.
        pub fn encode(&self) -> Vec<u8> {
            let mut body = Vec::new();
            body.extend_from_slice(&self.legacy_version.to_be_bytes());
            body.extend_from_slice(&[0x42; 32]);
            push_vec8(&mut body, &self.session_id);
            let ciphers: Vec<u8> = self.ciphers.iter().flat_map(|c| c.to_be_bytes()).collect();
            push_vec16(&mut body, &ciphers);
            push_vec8(&mut body, &self.compression);
            if let Some(exts) = &self.extensions {
                let mut block = Vec::new();
                for (t, data) in exts {
                    block.extend_from_slice(&t.to_be_bytes());
                    push_vec16(&mut block, data);
                }
                push_vec16(&mut body, &block);
            }
            let len = u32::try_from(body.len()).expect("small").to_be_bytes();
            let mut msg = vec![0x01, len[1], len[2], len[3]];
            msg.extend_from_slice(&body);
            msg
        }
    }

    fn push_vec8(out: &mut Vec<u8>, data: &[u8]) {
        out.push(u8::try_from(data.len()).expect("vec8 fits"));
        out.extend_from_slice(data);
    }

    fn push_vec16(out: &mut Vec<u8>, data: &[u8]) {
        let len = u16::try_from(data.len()).expect("vec16 fits");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
    }

    pub(crate) fn ext_sni(host: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&u16::try_from(host.len()).expect("fits").to_be_bytes());
        entry.extend_from_slice(host);
        let mut data = Vec::new();
        push_vec16(&mut data, &entry);
        (0x0000, data)
    }

    pub(crate) fn ext_alpn(protocols: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for p in protocols {
            push_vec8(&mut list, p);
        }
        let mut data = Vec::new();
        push_vec16(&mut data, &list);
        (0x0010, data)
    }

    pub(crate) fn ext_versions(versions: &[u16]) -> (u16, Vec<u8>) {
        let list: Vec<u8> = versions.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut data = Vec::new();
        push_vec8(&mut data, &list);
        (0x002b, data)
    }

    pub(crate) fn ext_sigalgs(algs: &[u16]) -> (u16, Vec<u8>) {
        let list: Vec<u8> = algs.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut data = Vec::new();
        push_vec16(&mut data, &list);
        (0x000d, data)
    }
}
