//! Everything a client or a configuration hands the auth code as text or bytes: NATS JWTs
//! (user and account claims), creds files, NKeys and nonce signatures, permission entries,
//! subject patterns, standard JWT headers, and the DER of a TLS client certificate. None may
//! panic, and a pattern that matches must also be valid.
#![no_main]

use junction_auth::nkey::{self, Role};
use junction_auth::permissions::Entry;
use junction_auth::{jwt, subject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = junction_protocols::tls::cert_identity(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for role in [Role::Operator, Role::Account, Role::User] {
        if let Ok(claims) = jwt::decode(text, role, 1_800_000_000) {
            let _ = claims.permissions();
            let _ = claims.default_permissions();
            let _ = claims.signing_keys();
            let _ = claims.revokes(&claims.sub, claims.iat);
        }
        let _ = nkey::is_public_key(text, role);
    }
    let _ = jwt::algorithm(text);
    let _ = jwt::jwt_from_file(text);
    let _ = nkey::decode_signature(text);
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    let (a, b) = text.split_at(mid);
    if let Ok(e) = Entry::parse(a) {
        assert!(subject::valid_pattern(&e.subject));
        let _ = subject::matches(&e.subject, b);
        let _ = subject::covers(&e.subject, b);
        let _ = subject::overlaps(&e.subject, b);
    }
});
