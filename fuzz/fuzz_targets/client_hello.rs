//! The ClientHello path on hostile bytes: reassembly (whole and split at every point a
//! reader might see), parsing and every fingerprint. Must never panic; a split must
//! never change the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::fingerprint::{fingerprint, fingerprint_records, ja4_raw, parse_client_hello, Assembly, Reassembler};

fuzz_target!(|data: &[u8]| {
    let mut scratch = Vec::new();
    let whole = fingerprint_records(data, &mut scratch);
    // The same bytes arriving in two reads give the same outcome.
    if data.len() > 1 {
        let cut = data[0] as usize % data.len();
        let mut msg = Vec::new();
        let mut r = Reassembler::new();
        let first = r.advance(&data[..cut], &mut msg);
        if matches!(first, Ok(Assembly::NeedMore)) {
            let second = r.advance(data, &mut msg);
            if let (Ok(Assembly::Complete), Ok(fp)) = (second, &whole) {
                let hello = parse_client_hello(&msg).expect("the whole-buffer path parsed it");
                assert_eq!(fingerprint(&hello), *fp);
            }
        }
    }
    // Parsing arbitrary bytes as a handshake message directly.
    if let Ok(hello) = parse_client_hello(data) {
        let _ = fingerprint(&hello);
        let _ = ja4_raw(&hello);
    }
});
