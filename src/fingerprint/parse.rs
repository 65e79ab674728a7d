//! Zero-copy parsing of a ClientHello handshake message.
//!
//! This module owns the wire format of the ClientHello (RFC 8446 §4.1.2,
//! compatible with the TLS 1.0–1.2 layout) and of the few extensions a
//! fingerprint reads: server_name (presence only), ALPN, supported_versions
//! and signature_algorithms. [`parse_client_hello`] checks every length
//! against its parent before anything is read, so the resulting
//! [`ClientHello`] is a set of borrowed, already-validated slices and every
//! accessor on it is infallible. Nothing here allocates.
//!
//! Strict on structure, lenient on policy: a length that overruns its parent,
//! or bytes left over inside a length-delimited vector, is an error; values
//! RFC 8446 merely forbids (an empty cipher list, an empty ALPN name, a
//! duplicated extension) are accepted, because JA4 defines an output for them
//! and a fingerprint should describe what the client sent. Rejecting such
//! hellos is the TLS library's job.

use std::fmt;

use thiserror::Error;

/// Handshake header: message type, length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 0x01;
const RANDOM_LEN: usize = 32;
/// RFC 8446 §4.1.2: `opaque legacy_session_id<0..32>`.
const MAX_SESSION_ID_LEN: usize = 32;

/// The part of a ClientHello a [`ParseError`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Handshake message type and length.
    HandshakeHeader,
    /// The whole ClientHello body.
    Body,
    /// `legacy_version`.
    LegacyVersion,
    /// `random`.
    Random,
    /// `legacy_session_id`.
    SessionId,
    /// `cipher_suites`.
    CipherSuites,
    /// `legacy_compression_methods`.
    CompressionMethods,
    /// The extensions block.
    Extensions,
    /// One extension's type, length and data.
    Extension,
    /// Contents of the application_layer_protocol_negotiation extension.
    Alpn,
    /// Contents of the supported_versions extension.
    SupportedVersions,
    /// Contents of the signature_algorithms extension.
    SignatureAlgorithms,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HandshakeHeader => "handshake header",
            Self::Body => "ClientHello body",
            Self::LegacyVersion => "legacy_version",
            Self::Random => "random",
            Self::SessionId => "legacy_session_id",
            Self::CipherSuites => "cipher_suites",
            Self::CompressionMethods => "legacy_compression_methods",
            Self::Extensions => "extensions",
            Self::Extension => "extension",
            Self::Alpn => "ALPN extension",
            Self::SupportedVersions => "supported_versions extension",
            Self::SignatureAlgorithms => "signature_algorithms extension",
        })
    }
}

/// Why a byte string is not a well-formed ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The handshake message type is not ClientHello.
    #[error("handshake type {0} is not ClientHello")]
    NotClientHello(u8),
    /// The handshake header's length disagrees with the message size.
    #[error("handshake length {declared} does not match the {actual}-byte body")]
    LengthMismatch {
        /// Body length stated in the handshake header.
        declared: u32,
        /// Body bytes actually present.
        actual: usize,
    },
    /// A field, or a length prefix, runs past the end of its parent.
    #[error("{0} is truncated")]
    Truncated(Field),
    /// Bytes are left over inside a length-delimited field.
    #[error("trailing bytes inside {0}")]
    TrailingBytes(Field),
    /// A list of 16-bit values has an odd byte length.
    #[error("{0} has an odd byte length")]
    OddLength(Field),
    /// `legacy_session_id` is longer than 32 bytes.
    #[error("session id of {0} bytes exceeds 32")]
    SessionIdTooLong(u8),
}

/// A TLS extension type code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtensionType(pub u16);

impl ExtensionType {
    /// server_name (RFC 6066).
    pub const SERVER_NAME: Self = Self(0x0000);
    /// signature_algorithms (RFC 8446).
    pub const SIGNATURE_ALGORITHMS: Self = Self(0x000d);
    /// application_layer_protocol_negotiation (RFC 7301).
    pub const ALPN: Self = Self(0x0010);
    /// padding (RFC 7685).
    pub const PADDING: Self = Self(0x0015);
    /// session_ticket (RFC 5077).
    pub const SESSION_TICKET: Self = Self(0x0023);
    /// pre_shared_key (RFC 8446).
    pub const PRE_SHARED_KEY: Self = Self(0x0029);
    /// early_data (RFC 8446).
    pub const EARLY_DATA: Self = Self(0x002a);
    /// supported_versions (RFC 8446).
    pub const SUPPORTED_VERSIONS: Self = Self(0x002b);

    /// Whether this is a GREASE value (RFC 8701).
    pub const fn is_grease(self) -> bool {
        is_grease(self.0)
    }
}

/// Whether a 16-bit code point is one of the sixteen GREASE values of
/// RFC 8701 (0x0a0a, 0x1a1a, …, 0xfafa): both bytes equal, low nibble 0xa.
/// The same values are reserved in every registry JA4 reads.
pub const fn is_grease(value: u16) -> bool {
    let [hi, lo] = value.to_be_bytes();
    hi == lo && lo & 0x0f == 0x0a
}

/// One extension as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The extension type.
    pub ext_type: ExtensionType,
    /// The extension data, without the type and length prefix.
    pub data: &'a [u8],
}

/// A parsed ClientHello, borrowing from the handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    legacy_version: u16,
    random: &'a [u8],
    session_id: &'a [u8],
    cipher_suites: &'a [u8],
    compression_methods: &'a [u8],
    /// `None` when the hello ends after the compression methods (pre-TLS 1.2
    /// clients may omit the block entirely).
    extensions: Option<&'a [u8]>,
    has_server_name: bool,
    /// Body of the first ALPN extension's protocol_name_list.
    alpn: Option<&'a [u8]>,
    /// Body of the first supported_versions extension's version list.
    supported_versions: Option<&'a [u8]>,
    /// Body of the first signature_algorithms extension's list.
    signature_algorithms: Option<&'a [u8]>,
}

impl<'a> ClientHello<'a> {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients).
    pub fn legacy_version(&self) -> u16 {
        self.legacy_version
    }

    /// The 32-byte client random.
    pub fn random(&self) -> &'a [u8] {
        self.random
    }

    /// `legacy_session_id` (0 to 32 bytes).
    pub fn session_id(&self) -> &'a [u8] {
        self.session_id
    }

    /// Cipher suites in wire order, GREASE included.
    pub fn cipher_suites(&self) -> Codes<'a> {
        Codes::new(self.cipher_suites)
    }

    /// The cipher suite list as raw bytes (big-endian pairs).
    pub fn cipher_suites_raw(&self) -> &'a [u8] {
        self.cipher_suites
    }

    /// `legacy_compression_methods`.
    pub fn compression_methods(&self) -> &'a [u8] {
        self.compression_methods
    }

    /// Whether the hello carries an extensions block at all.
    pub fn has_extensions_block(&self) -> bool {
        self.extensions.is_some()
    }

    /// The extensions block as raw bytes, without its length prefix; empty
    /// when the block is absent.
    pub fn extensions_raw(&self) -> &'a [u8] {
        self.extensions.unwrap_or_default()
    }

    /// Extensions in wire order, GREASE included.
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions {
            rest: self.extensions_raw(),
        }
    }

    /// Whether a server_name extension is present (whatever it contains).
    pub fn has_server_name(&self) -> bool {
        self.has_server_name
    }

    /// The first protocol name offered in ALPN; `None` when there is no ALPN
    /// extension or its list is empty. The name itself may be empty.
    pub fn first_alpn_protocol(&self) -> Option<&'a [u8]> {
        let list = self.alpn?;
        let (&len, rest) = list.split_first()?;
        rest.get(..usize::from(len))
    }

    /// Versions listed in supported_versions, in wire order, GREASE
    /// included; `None` without the extension.
    pub fn supported_versions(&self) -> Option<Codes<'a>> {
        self.supported_versions.map(Codes::new)
    }

    /// Signature schemes listed in signature_algorithms, in wire order,
    /// GREASE included; `None` without the extension.
    pub fn signature_algorithms(&self) -> Option<Codes<'a>> {
        self.signature_algorithms.map(Codes::new)
    }

    /// The signature_algorithms list as raw bytes (big-endian pairs).
    pub fn signature_algorithms_raw(&self) -> Option<&'a [u8]> {
        self.signature_algorithms
    }
}

/// Iterator over a list of big-endian 16-bit code points (cipher suites,
/// versions, signature schemes).
#[derive(Debug, Clone)]
pub struct Codes<'a> {
    rest: &'a [u8],
}

impl<'a> Codes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl Iterator for Codes<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        match self.rest {
            [hi, lo, rest @ ..] => {
                self.rest = rest;
                Some(u16::from_be_bytes([*hi, *lo]))
            }
            // The parser rejects odd lengths, so a lone byte never remains.
            _ => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / 2;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Codes<'_> {}

/// Iterator over the extensions of a [`ClientHello`], in wire order.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Extension<'a>;

    fn next(&mut self) -> Option<Extension<'a>> {
        let (ext, rest) = split_extension(self.rest).ok()??;
        self.rest = rest;
        Some(ext)
    }
}

/// Splits the first extension off `block`; `Ok(None)` at the end.
fn split_extension(block: &[u8]) -> Result<Option<(Extension<'_>, &[u8])>, ParseError> {
    match block {
        [] => Ok(None),
        [t0, t1, l0, l1, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            let (data, rest) = rest
                .split_at_checked(len)
                .ok_or(ParseError::Truncated(Field::Extension))?;
            let ext = Extension {
                ext_type: ExtensionType(u16::from_be_bytes([*t0, *t1])),
                data,
            };
            Ok(Some((ext, rest)))
        }
        _ => Err(ParseError::Truncated(Field::Extension)),
    }
}

/// Bounds-checked reader over one length-delimited region.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], ParseError> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(ParseError::Truncated(field))?;
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self, field: Field) -> Result<u8, ParseError> {
        match self.take(1, field)? {
            [b] => Ok(*b),
            _ => Err(ParseError::Truncated(field)),
        }
    }

    fn u16(&mut self, field: Field) -> Result<u16, ParseError> {
        match self.take(2, field)? {
            [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(ParseError::Truncated(field)),
        }
    }

    /// A vector with a 1-byte length prefix.
    fn vec8(&mut self, field: Field) -> Result<&'a [u8], ParseError> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field)
    }

    /// A vector with a 2-byte length prefix.
    fn vec16(&mut self, field: Field) -> Result<&'a [u8], ParseError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// Errors unless the region has been consumed exactly.
    fn finish(&self, field: Field) -> Result<(), ParseError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ParseError::TrailingBytes(field))
        }
    }
}

/// Parses a ClientHello handshake message: type byte, 3-byte length and
/// body, with nothing after it (as produced by the record reassembler).
pub fn parse_client_hello(msg: &[u8]) -> Result<ClientHello<'_>, ParseError> {
    let Some((&[msg_type, a, b, c], body)) = msg.split_first_chunk::<HANDSHAKE_HEADER_LEN>() else {
        return Err(ParseError::Truncated(Field::HandshakeHeader));
    };
    if msg_type != HANDSHAKE_TYPE_CLIENT_HELLO {
        return Err(ParseError::NotClientHello(msg_type));
    }
    let declared = u32::from_be_bytes([0, a, b, c]);
    if usize::try_from(declared).ok() != Some(body.len()) {
        return Err(ParseError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }

    let mut r = Reader { rest: body };
    let legacy_version = r.u16(Field::LegacyVersion)?;
    let random = r.take(RANDOM_LEN, Field::Random)?;
    let session_id = r.vec8(Field::SessionId)?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        // invariant: a vec8 is at most 255 bytes long.
        let len = u8::try_from(session_id.len()).unwrap_or(u8::MAX);
        return Err(ParseError::SessionIdTooLong(len));
    }
    let cipher_suites = even(r.vec16(Field::CipherSuites)?, Field::CipherSuites)?;
    let compression_methods = r.vec8(Field::CompressionMethods)?;

    let mut hello = ClientHello {
        legacy_version,
        random,
        session_id,
        cipher_suites,
        compression_methods,
        extensions: None,
        has_server_name: false,
        alpn: None,
        supported_versions: None,
        signature_algorithms: None,
    };
    if r.rest.is_empty() {
        return Ok(hello);
    }
    let block = r.vec16(Field::Extensions)?;
    r.finish(Field::Body)?;
    hello.extensions = Some(block);

    let mut rest = block;
    while let Some((ext, tail)) = split_extension(rest)? {
        rest = tail;
        // A duplicated extension is a protocol violation for the TLS library
        // to reject; for fingerprinting, the first occurrence is the one
        // read, but every occurrence must still be well-formed.
        match ext.ext_type {
            ExtensionType::SERVER_NAME => hello.has_server_name = true,
            ExtensionType::ALPN => {
                let list = alpn_list(ext.data)?;
                hello.alpn.get_or_insert(list);
            }
            ExtensionType::SUPPORTED_VERSIONS => {
                let mut er = Reader { rest: ext.data };
                let list = even(er.vec8(Field::SupportedVersions)?, Field::SupportedVersions)?;
                er.finish(Field::SupportedVersions)?;
                hello.supported_versions.get_or_insert(list);
            }
            ExtensionType::SIGNATURE_ALGORITHMS => {
                let mut er = Reader { rest: ext.data };
                let list = even(
                    er.vec16(Field::SignatureAlgorithms)?,
                    Field::SignatureAlgorithms,
                )?;
                er.finish(Field::SignatureAlgorithms)?;
                hello.signature_algorithms.get_or_insert(list);
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// Validates an ALPN extension body and returns its protocol_name_list.
fn alpn_list(data: &[u8]) -> Result<&[u8], ParseError> {
    let mut er = Reader { rest: data };
    let list = er.vec16(Field::Alpn)?;
    er.finish(Field::Alpn)?;
    let mut names = Reader { rest: list };
    while !names.rest.is_empty() {
        names.vec8(Field::Alpn)?;
    }
    Ok(list)
}

fn even(list: &[u8], field: Field) -> Result<&[u8], ParseError> {
    if list.len().is_multiple_of(2) {
        Ok(list)
    } else {
        Err(ParseError::OddLength(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::testutil::{fixtures, HelloSpec};

    #[test]
    fn grease_values() {
        let grease: Vec<u16> = (0..=0xffff_u16).filter(|&v| is_grease(v)).collect();
        let expected: Vec<u16> = (0..16).map(|i| 0x0a0a + i * 0x1010).collect();
        assert_eq!(grease, expected);
        assert!(ExtensionType(0xfafa).is_grease());
        assert!(!ExtensionType(0x0a1a).is_grease());
    }

    #[test]
    fn parses_fixture_fields() {
        // (has SNI, first ALPN protocol) per fixture, from the capture notes.
        let expect: [(bool, &[u8]); 7] = [
            (false, b"http/1.1"),
            (true, b"h2"),
            (true, b"h2"),
            (true, b"h2"),
            (true, b"h2"),
            (true, b"h2"),
            (true, b"h2"),
        ];
        for (fx, (sni, alpn)) in fixtures().iter().zip(expect) {
            let msg = fx.message();
            let h = parse_client_hello(&msg).expect(fx.name);
            assert_eq!(h.legacy_version(), 0x0303, "{}", fx.name);
            assert_eq!(h.random().len(), 32);
            assert_eq!(h.session_id().len(), 32, "{}", fx.name);
            assert_eq!(h.compression_methods(), &[0]);
            assert!(h.has_extensions_block());
            assert_eq!(h.has_server_name(), sni, "{}", fx.name);
            assert_eq!(h.first_alpn_protocol(), Some(alpn), "{}", fx.name);
            let versions: Vec<u16> = h.supported_versions().expect("present").collect();
            assert!(versions.contains(&0x0304), "{}", fx.name);
            assert!(h.signature_algorithms().expect("present").len() > 0);
            assert_eq!(h.cipher_suites().len() * 2, h.cipher_suites_raw().len());
            // The extension iterator walks the whole block.
            let walked: usize = h.extensions().map(|e| 4 + e.data.len()).sum();
            assert_eq!(walked, h.extensions_raw().len(), "{}", fx.name);
        }
    }

    #[test]
    fn hello_without_extensions_block() {
        let spec = HelloSpec {
            extensions: None,
            ..HelloSpec::default()
        };
        let msg = spec.encode();
        let h = parse_client_hello(&msg).expect("legacy hello");
        assert!(!h.has_extensions_block());
        assert_eq!(h.extensions().count(), 0);
        assert!(!h.has_server_name());
        assert_eq!(h.first_alpn_protocol(), None);
        assert!(h.supported_versions().is_none());
        assert!(h.signature_algorithms().is_none());
        // An empty block is distinct from an absent one.
        let spec = HelloSpec {
            extensions: Some(vec![]),
            ..HelloSpec::default()
        };
        let h_msg = spec.encode();
        let h = parse_client_hello(&h_msg).expect("empty block");
        assert!(h.has_extensions_block());
        assert_eq!(h.extensions().count(), 0);
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            parse_client_hello(&[1, 0, 0]),
            Err(ParseError::Truncated(Field::HandshakeHeader))
        );
        assert_eq!(
            parse_client_hello(&[2, 0, 0, 0]),
            Err(ParseError::NotClientHello(2))
        );
        let mut msg = HelloSpec::default().encode();
        msg.push(0);
        let actual = msg.len() - 4;
        assert_eq!(
            parse_client_hello(&msg),
            Err(ParseError::LengthMismatch {
                declared: u32::try_from(actual - 1).expect("small"),
                actual
            })
        );
    }

    /// Offset of the cipher suite length in a [`HelloSpec::default`]
    /// encoding: header 4, version 2, random 32, session id 1 + 32.
    const CIPHERS_AT: usize = 4 + 2 + 32 + 1 + 32;

    #[test]
    fn body_field_errors() {
        let base = HelloSpec::default().encode();
        let check = |mutate: &dyn Fn(&mut Vec<u8>), want: ParseError| {
            let mut msg = base.clone();
            mutate(&mut msg);
            assert_eq!(parse_client_hello(&msg), Err(want));
        };
        // Odd cipher suite length (and shift everything so lengths still add up).
        check(
            &|m| {
                m[CIPHERS_AT + 1] += 1;
                m.insert(CIPHERS_AT + 2, 0x00);
                fix_header(m);
            },
            ParseError::OddLength(Field::CipherSuites),
        );
        // Cipher suite length overrunning the body.
        check(
            &|m| m[CIPHERS_AT] = 0xff,
            ParseError::Truncated(Field::CipherSuites),
        );
        // Session id length 33.
        check(
            &|m| {
                m[CIPHERS_AT - 33] = 33;
                m.insert(CIPHERS_AT, 0);
                fix_header(m);
            },
            ParseError::SessionIdTooLong(33),
        );
        // Session id overrunning everything.
        check(
            &|m| {
                m.truncate(4 + 2 + 32 + 1 + 5);
                fix_header(m);
            },
            ParseError::Truncated(Field::SessionId),
        );
        // Random cut short.
        check(
            &|m| {
                m.truncate(4 + 2 + 10);
                fix_header(m);
            },
            ParseError::Truncated(Field::Random),
        );
        // Extensions block longer than what remains.
        check(
            &|m| {
                let at = ext_block_at(m);
                m[at] = 0xff;
            },
            ParseError::Truncated(Field::Extensions),
        );
        // Extensions block shorter than what remains.
        check(
            &|m| {
                let at = ext_block_at(m);
                let len = u16::from_be_bytes([m[at], m[at + 1]]) - 4;
                m[at..at + 2].copy_from_slice(&len.to_be_bytes());
            },
            ParseError::TrailingBytes(Field::Body),
        );
        // A lone byte where the extensions length should be.
        check(
            &|m| {
                let at = ext_block_at(m);
                m.truncate(at + 1);
                fix_header(m);
            },
            ParseError::Truncated(Field::Extensions),
        );
    }

    #[test]
    fn extension_errors() {
        let ext_case = |ext_type: u16, data: &[u8], want: ParseError| {
            let spec = HelloSpec {
                extensions: Some(vec![(ext_type, data.to_vec())]),
                ..HelloSpec::default()
            };
            assert_eq!(
                parse_client_hello(&spec.encode()),
                Err(want),
                "{ext_type:#06x}"
            );
        };
        use Field::*;
        // ALPN: list length overruns the extension, leaves bytes, or a name overruns the list.
        ext_case(0x0010, &[0, 5, 2, b'h', b'2'], ParseError::Truncated(Alpn));
        ext_case(
            0x0010,
            &[0, 3, 2, b'h', b'2', 0],
            ParseError::TrailingBytes(Alpn),
        );
        ext_case(0x0010, &[0, 3, 3, b'h', b'2'], ParseError::Truncated(Alpn));
        ext_case(0x0010, &[0], ParseError::Truncated(Alpn));
        // supported_versions: odd list, list overrun, trailing byte.
        ext_case(
            0x002b,
            &[3, 3, 4, 3],
            ParseError::OddLength(SupportedVersions),
        );
        ext_case(0x002b, &[4, 3, 4], ParseError::Truncated(SupportedVersions));
        ext_case(
            0x002b,
            &[2, 3, 4, 0],
            ParseError::TrailingBytes(SupportedVersions),
        );
        // signature_algorithms: odd list, overrun, trailing.
        ext_case(
            0x000d,
            &[0, 3, 4, 3, 8],
            ParseError::OddLength(SignatureAlgorithms),
        );
        ext_case(
            0x000d,
            &[0, 4, 4, 3],
            ParseError::Truncated(SignatureAlgorithms),
        );
        ext_case(
            0x000d,
            &[0, 2, 4, 3, 8],
            ParseError::TrailingBytes(SignatureAlgorithms),
        );

        // An extension whose length overruns the block.
        let mut msg = HelloSpec::default().encode();
        let at = ext_block_at(&msg) + 2 + 2; // first extension's length
        msg[at] = 0x7f;
        assert_eq!(
            parse_client_hello(&msg),
            Err(ParseError::Truncated(Field::Extension))
        );
        // A block ending in the middle of an extension header.
        let spec = HelloSpec {
            extensions: Some(vec![]),
            ..HelloSpec::default()
        };
        let mut msg = spec.encode();
        let at = ext_block_at(&msg);
        msg[at + 1] = 3;
        msg.extend_from_slice(&[0, 0, 0]);
        fix_header(&mut msg);
        assert_eq!(
            parse_client_hello(&msg),
            Err(ParseError::Truncated(Field::Extension))
        );
    }

    #[test]
    fn lenient_on_policy() {
        // Empty cipher list, empty ALPN list, empty ALPN name, duplicate SNI.
        let spec = HelloSpec {
            ciphers: vec![],
            extensions: Some(vec![
                (0x0000, vec![]),
                (0x0000, vec![]),
                (0x0010, vec![0, 0]),
            ]),
            ..HelloSpec::default()
        };
        let msg = spec.encode();
        let h = parse_client_hello(&msg).expect("accepted");
        assert_eq!(h.cipher_suites().count(), 0);
        assert!(h.has_server_name());
        assert_eq!(h.first_alpn_protocol(), None);

        let spec = HelloSpec {
            extensions: Some(vec![
                (0x0010, vec![0, 4, 0, 2, b'h', b'2']),
                (0x0010, vec![0, 3, 2, b'x', b'y']),
            ]),
            ..HelloSpec::default()
        };
        let msg = spec.encode();
        let h = parse_client_hello(&msg).expect("accepted");
        // First extension, first (empty) name.
        assert_eq!(h.first_alpn_protocol(), Some(&b""[..]));
    }

    #[test]
    fn every_prefix_and_every_byte_flip_is_handled() {
        for fx in fixtures() {
            let msg = fx.message();
            for end in 0..msg.len() {
                assert!(parse_client_hello(&msg[..end]).is_err());
            }
            let mut m = msg.clone();
            for i in 0..m.len() {
                for flip in [0x01, 0x80, 0xff] {
                    m[i] ^= flip;
                    let _ = parse_client_hello(&m).map(|h| h.extensions().count());
                    m[i] ^= flip;
                }
            }
        }
    }

    /// Offset of the extensions-block length in a message.
    fn ext_block_at(msg: &[u8]) -> usize {
        let mut at = 4 + 2 + 32;
        at += 1 + usize::from(msg[at]);
        at += 2 + usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
        at += 1 + usize::from(msg[at]);
        at
    }

    /// Rewrites the handshake header length after an edit.
    fn fix_header(msg: &mut [u8]) {
        let len = u32::try_from(msg.len() - 4).expect("small").to_be_bytes();
        msg[1..4].copy_from_slice(&len[1..]);
    }
}
