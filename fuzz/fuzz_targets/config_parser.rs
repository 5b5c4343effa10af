//! Feeds arbitrary text to the configuration parser: it must return a value or an error, never
//! panic or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = junction_config::parse_str(text);
    }
});
