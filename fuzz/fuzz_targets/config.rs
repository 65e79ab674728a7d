//! The config reader on arbitrary text: every input is either a config or a list of
//! errors with key paths, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = tether::config::Config::parse(text, std::path::Path::new("/nonexistent")) {
            assert!(!errors.0.is_empty());
            let _ = errors.to_string();
        }
    }
});
