//! Feeds arbitrary source, destination and subject strings to the subject transforms (stream
//! `subject_transform` and `republish`, from clients' API requests) and to account subject
//! mappings (from the configuration, with weights): making one may fail, applying one may not
//! panic, and only a mapping whose source matches changes where a publication goes.

#![no_main]

use junction_core::mapping::{MapDest, Mapped, Mappings};
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
    // The destination's first byte picks a weight; a second destination takes a share.
    let weight = data.first().map_or(100, |b| b % 101);
    let mut m = Mappings::default();
    let dests = [
        MapDest {
            subject: dest.to_string(),
            weight,
        },
        MapDest {
            subject: "fuzz.other".to_string(),
            weight: 100 - weight,
        },
    ];
    if m.add(src, &dests[..1 + usize::from(weight % 2 == 0)]).is_ok() {
        for pick in [0u8, 50, 99] {
            // Only a mapping whose source matches may map or drop.
            if !matches!(m.map(subject, || pick), Mapped::Same) {
                assert!(
                    src == subject
                        || junction_core::subject::matches(src.as_bytes(), subject.as_bytes())
                );
            }
        }
    }
});
