//! Feeds arbitrary source, destination and subject strings to the subject transforms (stream
//! `subject_transform` and `republish`, from clients' API requests): making one may fail,
//! applying one may not panic.

#![no_main]

use junction_core::transform::Transform;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (src, dest, subject) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if let Ok(Some(t)) = Transform::new(src, dest) {
        let _ = t.apply(subject);
        let _ = t.apply("a.b.c.d");
    }
});
