//! Reads the raw ClientHello off the socket before rustls does: reassembled across TLS
//! records and TCP segments, capped at [`MAX_HELLO_BYTES`], under the caller's timeout.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::fingerprint::parse::parse_client_hello;
use crate::fingerprint::record::{Assembly, Reassembler, RecordError, MAX_HELLO_BYTES};
use crate::fingerprint::{self, Fingerprint};
use crate::metrics::HelloResult;

/// One socket read at most this much while waiting for the hello; a typical hello
/// (under 2 KiB, post-quantum ones included) arrives in one read.
const READ_CHUNK: usize = 4096;

/// How the read ended. `Fingerprinted` and `Malformed` go on to rustls; the others end
/// the connection.
#[derive(Debug)]
pub enum HelloRead {
    Fingerprinted(Fingerprint),
    /// A whole hello that tether could not parse: rustls decides, "no fingerprint" is a fact.
    Malformed,
    NotTls,
    TooLarge,
    /// The client closed (or the read failed) before the hello was whole.
    Truncated,
}

impl HelloRead {
    pub fn result(&self) -> HelloResult {
        match self {
            HelloRead::Fingerprinted(_) => HelloResult::Parsed,
            HelloRead::Malformed => HelloResult::Malformed,
            HelloRead::NotTls => HelloResult::NotTls,
            HelloRead::TooLarge => HelloResult::TooLarge,
            HelloRead::Truncated => HelloResult::Truncated,
        }
    }
}

/// Reads until the ClientHello is whole; every byte read stays in `raw` for replay.
/// `raw` may already hold bytes (left over after a PROXY header).
pub async fn read<S: AsyncRead + Unpin>(io: &mut S, raw: &mut BytesMut) -> HelloRead {
    let mut msg = Vec::new();
    let mut cursor = Reassembler::new();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match cursor.advance(raw, &mut msg) {
            Ok(Assembly::Complete) => {
                return match parse_client_hello(&msg) {
                    Ok(hello) => {
                        let fp = fingerprint::fingerprint(&hello);
                        // The raw form is for debugging only: built when asked for.
                        if tracing::enabled!(tracing::Level::DEBUG) {
                            tracing::debug!(ja4 = %fp.ja4, ja4_stable = %fp.ja4_stable, ja4_r = %fingerprint::ja4_raw(&hello), "ClientHello");
                        }
                        HelloRead::Fingerprinted(fp)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "ClientHello not parseable; handing it to rustls");
                        HelloRead::Malformed
                    }
                };
            }
            Ok(Assembly::NeedMore) => {}
            Err(RecordError::NotTls(_)) => return HelloRead::NotTls,
            Err(RecordError::TooLarge | RecordError::HelloTooLarge(_)) => return HelloRead::TooLarge,
            // Framing that violates the record layer: rustls would refuse it too.
            Err(
                RecordError::BadRecordVersion(_)
                | RecordError::EmptyRecord
                | RecordError::RecordTooLong(_)
                | RecordError::UnexpectedContentType(_)
                | RecordError::NotClientHello(_),
            ) => return HelloRead::Malformed,
        }
        if raw.len() >= MAX_HELLO_BYTES {
            return HelloRead::TooLarge;
        }
        let room = (MAX_HELLO_BYTES - raw.len()).min(READ_CHUNK);
        match io.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return HelloRead::Truncated,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}
