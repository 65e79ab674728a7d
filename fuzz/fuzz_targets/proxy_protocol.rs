//! PROXY protocol headers on hostile bytes: no panic, and a header that parses never
//! claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::net::proxy_protocol::{parse, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Done { consumed, .. }) = parse(data) {
        assert!(consumed <= data.len());
    }
});
