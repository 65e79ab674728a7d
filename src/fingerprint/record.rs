//! Reassembly of the ClientHello from the raw bytes a client sends first.
//!
//! This module owns the TLS record layer as it appears *before* any TLS
//! library has seen the connection: it walks the plaintext records (RFC 8446
//! §5.1) at the start of the byte stream, concatenates their handshake
//! payloads and stops as soon as the first handshake message — which must be
//! a ClientHello — is whole. It never consumes the stream: the caller keeps
//! every byte it read and hands them on to the TLS library afterwards.
//!
//! It is pure and incremental. The caller appends each read to one growing
//! buffer and calls [`Reassembler::advance`] with the whole buffer; the
//! reassembler remembers how far it got, so each byte is examined once no
//! matter how the client fragments its records or how the reads split them.
//! [`reassemble`] is the one-shot form for a buffer already in hand.
//!
//! Everything here is bounded by [`MAX_HELLO_BYTES`], and any input that
//! cannot be the start of a TLS connection is rejected as early as the bytes
//! that prove it have arrived.

use thiserror::Error;

/// Most raw bytes the reassembler will look at for one ClientHello.
///
/// This is the memory bound for a connection whose handshake has not yet been
/// fingerprinted: the caller never needs a buffer larger than this. rustls
/// refuses handshake messages longer than 0xffff bytes, so a ClientHello that
/// would not fit here could never complete a handshake with us anyway; real
/// hellos, even with post-quantum key shares, are a few kilobytes.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Record header: content type, legacy version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// Handshake header: message type, length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes. Records before
/// the handshake completes are never protected, so the larger ciphertext
/// bound does not apply here.
const MAX_PLAINTEXT_LEN: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 0x01;
/// Every TLS and SSLv3 record version has major byte 3.
const RECORD_VERSION_MAJOR: u8 = 3;

/// Outcome of a reassembly step that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assembly {
    /// The ClientHello is not whole yet; read more and call again.
    NeedMore,
    /// The output buffer holds exactly the ClientHello handshake message
    /// (type byte, 3-byte length, body).
    Complete,
}

/// Why the bytes cannot be the start of a TLS connection we fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The stream does not open with a handshake record: plain HTTP, an
    /// SSLv2-compatible hello, an alert, or garbage.
    #[error("not a TLS handshake record: first byte {0:#04x}")]
    NotTls(u8),
    /// A record header whose version major byte is not 3.
    #[error("record version major byte {0:#04x} is not 3")]
    BadRecordVersion(u8),
    /// A zero-length handshake record, which RFC 8446 §5.1 forbids.
    #[error("zero-length handshake record")]
    EmptyRecord,
    /// A record longer than the 2^14-byte plaintext limit.
    #[error("record length {0} exceeds the 16384-byte plaintext limit")]
    RecordTooLong(u16),
    /// A non-handshake record arrived before the ClientHello was whole.
    #[error("content type {0:#04x} interleaved with the ClientHello")]
    UnexpectedContentType(u8),
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message has type {0}, not ClientHello")]
    NotClientHello(u8),
    /// The declared ClientHello body length cannot fit in [`MAX_HELLO_BYTES`]
    /// of records, however densely packed.
    #[error("declared ClientHello length {0} exceeds the {MAX_HELLO_BYTES}-byte bound")]
    HelloTooLarge(u32),
    /// [`MAX_HELLO_BYTES`] raw bytes arrived without completing the
    /// ClientHello (pathological fragmentation).
    #[error("no complete ClientHello within {MAX_HELLO_BYTES} bytes")]
    TooLarge,
}

/// Resumable position in one connection's raw byte stream.
///
/// Holds only a cursor; the raw buffer and the output buffer stay with the
/// caller so both can be reused across connections without reallocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reassembler {
    /// Offset in the raw stream of the next byte not yet examined.
    pos: usize,
    /// Payload bytes of the current record not yet copied. Zero means the
    /// byte at `pos` starts a record header (records are never empty).
    record_left: usize,
}

impl Reassembler {
    /// A reassembler at the start of a connection.
    pub const fn new() -> Self {
        Self {
            pos: 0,
            record_left: 0,
        }
    }

    /// Continue reassembly with everything read from the socket so far.
    ///
    /// `raw` must start with the bytes passed to the previous call (the
    /// caller only ever appends), and `msg` must be the same buffer, left
    /// untouched in between; on the first call it is cleared, so a buffer
    /// recycled from another connection is fine. If `raw` is shorter than
    /// what was already examined the caller evidently started over, so the
    /// cursor and `msg` are reset and the scan restarts.
    ///
    /// On [`Assembly::Complete`], `msg` holds exactly the ClientHello message;
    /// bytes after it, in the same record or in later records (a
    /// ChangeCipherSpec, early data), are left alone. After an error the
    /// connection is not a TLS connection we can fingerprint; calling again
    /// is pointless.
    pub fn advance(&mut self, raw: &[u8], msg: &mut Vec<u8>) -> Result<Assembly, RecordError> {
        // Only the first MAX_HELLO_BYTES count, so the outcome depends on the
        // bytes alone and never on how the reads happened to split them.
        let raw = raw.get(..MAX_HELLO_BYTES).unwrap_or(raw);
        if raw.len() < self.pos {
            *self = Self::new();
        }
        if self.pos == 0 {
            // Nothing consumed yet, so nothing of ours can be in `msg`.
            msg.clear();
        }
        loop {
            let need = match message_len(msg)? {
                Some(total) if msg.len() >= total => {
                    // The record that finished the hello may carry more; it is
                    // not part of the ClientHello.
                    msg.truncate(total);
                    return Ok(Assembly::Complete);
                }
                Some(total) => total - msg.len(),
                None => usize::MAX,
            };
            let rest = raw.get(self.pos..).unwrap_or_default();
            if self.record_left == 0 {
                match record_header(rest, self.pos == 0)? {
                    Some(len) => {
                        self.pos += RECORD_HEADER_LEN;
                        self.record_left = len;
                    }
                    None => break,
                }
                continue;
            }
            let take = rest.len().min(self.record_left).min(need);
            let Some(chunk) = rest.get(..take).filter(|c| !c.is_empty()) else {
                break;
            };
            msg.extend_from_slice(chunk);
            self.pos += take;
            self.record_left -= take;
        }
        if raw.len() >= MAX_HELLO_BYTES {
            // Waiting for more would need a buffer beyond the bound.
            return Err(RecordError::TooLarge);
        }
        Ok(Assembly::NeedMore)
    }
}

/// One-shot reassembly of `raw` into `msg` (cleared first).
///
/// Equivalent to a fresh [`Reassembler`]; it re-scans `raw` from the start,
/// which is the right tool when the bytes are already all in hand (offline
/// tools, benchmarks). A connection reading from a socket should keep a
/// [`Reassembler`] so that slow, fragmented input costs linear time.
pub fn reassemble(raw: &[u8], msg: &mut Vec<u8>) -> Result<Assembly, RecordError> {
    Reassembler::new().advance(raw, msg)
}

/// Validates whatever part of a record header `bytes` holds.
///
/// Returns the record's payload length once the whole header is present, and
/// `None` when more bytes are needed. Each check runs as soon as its byte is
/// visible, so a plain-text request is rejected on its first byte.
fn record_header(bytes: &[u8], first_record: bool) -> Result<Option<usize>, RecordError> {
    if let Some(&content_type) = bytes.first() {
        if content_type != CONTENT_TYPE_HANDSHAKE {
            return Err(if first_record {
                RecordError::NotTls(content_type)
            } else {
                RecordError::UnexpectedContentType(content_type)
            });
        }
    }
    if let Some(&major) = bytes.get(1) {
        if major != RECORD_VERSION_MAJOR {
            return Err(RecordError::BadRecordVersion(major));
        }
    }
    let Some(&[hi, lo]) = bytes.get(3..RECORD_HEADER_LEN) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([hi, lo]);
    match usize::from(len) {
        0 => Err(RecordError::EmptyRecord),
        n if n > MAX_PLAINTEXT_LEN => Err(RecordError::RecordTooLong(len)),
        n => Ok(Some(n)),
    }
}

/// Total length (header included) of the handshake message at the start of
/// `msg`, once its header is present; validates type and size as soon as the
/// bytes are visible.
fn message_len(msg: &[u8]) -> Result<Option<usize>, RecordError> {
    if let Some(&msg_type) = msg.first() {
        if msg_type != HANDSHAKE_TYPE_CLIENT_HELLO {
            return Err(RecordError::NotClientHello(msg_type));
        }
    }
    let Some(&[_, a, b, c]) = msg.get(..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([0, a, b, c]);
    let total = usize::try_from(declared)
        .unwrap_or(usize::MAX)
        .saturating_add(HANDSHAKE_HEADER_LEN);
    // Densest layout: full 2^14-byte records, each with a 5-byte header. If
    // even that overflows the bound, waiting can only end in `TooLarge`.
    let min_raw = total.saturating_add(total.div_ceil(MAX_PLAINTEXT_LEN) * RECORD_HEADER_LEN);
    if min_raw > MAX_HELLO_BYTES {
        return Err(RecordError::HelloTooLarge(declared));
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::testutil::{fixtures, records, split_records};

    #[test]
    fn fixtures_complete_with_record_payload() {
        for fx in fixtures() {
            let raw = fx.raw();
            let mut msg = Vec::new();
            assert_eq!(
                reassemble(&raw, &mut msg),
                Ok(Assembly::Complete),
                "{}",
                fx.name
            );
            // Each fixture is a single record holding exactly the hello.
            assert_eq!(&msg[..], &raw[RECORD_HEADER_LEN..], "{}", fx.name);
        }
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        for fx in fixtures() {
            let raw = fx.raw();
            let mut msg = Vec::new();
            let mut incremental = Reassembler::new();
            let mut inc_msg = Vec::new();
            for end in 0..raw.len() {
                let prefix = &raw[..end];
                assert_eq!(
                    reassemble(prefix, &mut msg),
                    Ok(Assembly::NeedMore),
                    "{} prefix {end}",
                    fx.name
                );
                assert_eq!(
                    incremental.advance(prefix, &mut inc_msg),
                    Ok(Assembly::NeedMore),
                    "{} incremental prefix {end}",
                    fx.name
                );
            }
            assert_eq!(reassemble(&raw, &mut msg), Ok(Assembly::Complete));
            assert_eq!(
                incremental.advance(&raw, &mut inc_msg),
                Ok(Assembly::Complete)
            );
            assert_eq!(msg, inc_msg, "{}", fx.name);
        }
    }

    #[test]
    fn tiny_records_and_tiny_reads_give_the_same_message() {
        for fx in fixtures() {
            let hello = fx.message();
            for seed in 0..4 {
                let raw = split_records(&hello, seed);
                // One-shot.
                let mut msg = Vec::new();
                assert_eq!(reassemble(&raw, &mut msg), Ok(Assembly::Complete));
                assert_eq!(msg, hello, "{} seed {seed}", fx.name);
                // Incremental, in reads of 1..=5 bytes.
                let mut r = Reassembler::new();
                let mut inc = Vec::new();
                let mut end = 0;
                let mut step = seed;
                let outcome = loop {
                    step = step % 5 + 1;
                    end = (end + step).min(raw.len());
                    let out = r.advance(&raw[..end], &mut inc).expect("valid input");
                    if out == Assembly::Complete || end == raw.len() {
                        break out;
                    }
                };
                assert_eq!(outcome, Assembly::Complete, "{} seed {seed}", fx.name);
                assert_eq!(end, raw.len(), "completed before the last byte");
                assert_eq!(inc, hello, "{} seed {seed}", fx.name);
            }
        }
    }

    #[test]
    fn trailing_records_and_trailing_handshake_bytes_are_ignored() {
        let fx = &fixtures()[0];
        let hello = fx.message();
        // A ChangeCipherSpec record after the hello (middlebox compatibility).
        let mut raw = fx.raw();
        raw.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        let mut msg = Vec::new();
        assert_eq!(reassemble(&raw, &mut msg), Ok(Assembly::Complete));
        assert_eq!(msg, hello);
        // Extra handshake bytes in the same record as the end of the hello.
        let mut body = hello.clone();
        body.extend_from_slice(&[0x0f, 0x00, 0x00, 0x00]);
        let raw = records(&[&body]);
        assert_eq!(reassemble(&raw, &mut msg), Ok(Assembly::Complete));
        assert_eq!(msg, hello);
    }

    #[test]
    fn restarting_with_a_shorter_buffer_rescans() {
        let raw = fixtures()[1].raw();
        let mut r = Reassembler::new();
        let mut msg = Vec::new();
        assert_eq!(r.advance(&raw[..300], &mut msg), Ok(Assembly::NeedMore));
        assert_eq!(r.advance(&raw[..10], &mut msg), Ok(Assembly::NeedMore));
        assert_eq!(r.advance(&raw, &mut msg), Ok(Assembly::Complete));
        assert_eq!(&msg[..], &raw[RECORD_HEADER_LEN..]);
    }

    #[test]
    fn rejects_plain_http() {
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut msg),
            Err(RecordError::NotTls(b'G'))
        );
        // Rejected on the first byte, before a full header arrives.
        assert_eq!(reassemble(b"G", &mut msg), Err(RecordError::NotTls(b'G')));
    }

    #[test]
    fn rejects_sslv2_compatible_hello() {
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(&[0x80, 0x2e, 0x01, 0x00, 0x02], &mut msg),
            Err(RecordError::NotTls(0x80))
        );
    }

    #[test]
    fn rejects_alert_first() {
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], &mut msg),
            Err(RecordError::NotTls(0x15))
        );
    }

    #[test]
    fn rejects_other_content_type_mid_hello() {
        let hello = fixtures()[0].message();
        let mut raw = records(&[&hello[..100]]);
        raw.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(&raw, &mut msg),
            Err(RecordError::UnexpectedContentType(0x15))
        );
    }

    #[test]
    fn rejects_bad_record_version() {
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(&[0x16, 0x02, 0x00], &mut msg),
            Err(RecordError::BadRecordVersion(0x02))
        );
        assert_eq!(
            reassemble(&[0x16, 0xfe, 0xfd, 0x00, 0x10], &mut msg),
            Err(RecordError::BadRecordVersion(0xfe))
        );
    }

    #[test]
    fn record_length_bounds() {
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(&[0x16, 0x03, 0x01, 0x40, 0x01], &mut msg),
            Err(RecordError::RecordTooLong(0x4001))
        );
        assert_eq!(
            reassemble(&[0x16, 0x03, 0x01, 0xff, 0xff], &mut msg),
            Err(RecordError::RecordTooLong(0xffff))
        );
        // Exactly 2^14 is allowed.
        assert_eq!(
            reassemble(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01], &mut msg),
            Ok(Assembly::NeedMore)
        );
        assert_eq!(
            reassemble(&[0x16, 0x03, 0x01, 0x00, 0x00], &mut msg),
            Err(RecordError::EmptyRecord)
        );
    }

    #[test]
    fn rejects_other_handshake_types() {
        let mut msg = Vec::new();
        // A ServerHello (type 2) sent to a server.
        assert_eq!(
            reassemble(
                &[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
                &mut msg
            ),
            Err(RecordError::NotClientHello(2))
        );
        // Rejected as soon as the type byte arrives.
        assert_eq!(
            reassemble(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x0b], &mut msg),
            Err(RecordError::NotClientHello(0x0b))
        );
    }

    #[test]
    fn rejects_oversized_declared_length() {
        let mut msg = Vec::new();
        let raw = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff];
        assert_eq!(
            reassemble(&raw, &mut msg),
            Err(RecordError::HelloTooLarge(0x00ff_ffff))
        );
        // The largest body that fits: 4 full records' worth, packed densely.
        let fits = MAX_HELLO_BYTES - 4 * RECORD_HEADER_LEN - HANDSHAKE_HEADER_LEN;
        let l = u32::try_from(fits).expect("small").to_be_bytes();
        let raw = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, l[1], l[2], l[3]];
        assert_eq!(reassemble(&raw, &mut msg), Ok(Assembly::NeedMore));
        let l = u32::try_from(fits + 1).expect("small").to_be_bytes();
        let raw = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, l[1], l[2], l[3]];
        assert_eq!(
            reassemble(&raw, &mut msg),
            Err(RecordError::HelloTooLarge(
                u32::try_from(fits + 1).expect("small")
            ))
        );
    }

    #[test]
    fn too_many_raw_bytes_without_completion() {
        // A 20 000-byte hello in 1-byte records needs 120 000 raw bytes.
        let mut hello = vec![0x01, 0x00, 0x4e, 0x20];
        hello.resize(4 + 20_000, 0);
        let pieces: Vec<&[u8]> = hello.chunks(1).collect();
        let raw = records(&pieces);
        let mut msg = Vec::new();
        assert_eq!(
            reassemble(&raw[..MAX_HELLO_BYTES - 1], &mut msg),
            Ok(Assembly::NeedMore)
        );
        assert_eq!(
            reassemble(&raw[..MAX_HELLO_BYTES], &mut msg),
            Err(RecordError::TooLarge)
        );
        assert_eq!(reassemble(&raw, &mut msg), Err(RecordError::TooLarge));
        assert!(msg.len() < MAX_HELLO_BYTES);
    }
}
