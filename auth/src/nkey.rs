//! NKeys: Ed25519 public keys as NATS writes them, base32 with a role prefix and a CRC-16, and
//! signature checks with them.

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// The role a public key is for (its first character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Account,
    User,
}

impl Role {
    fn prefix(self) -> u8 {
        match self {
            Role::Operator => 14 << 3,
            Role::Account => 0,
            Role::User => 20 << 3,
        }
    }
}

/// CRC-16/XMODEM, as NKeys checksum their bytes.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn decode_checked(text: &str) -> Option<Vec<u8>> {
    let raw = data_encoding::BASE32_NOPAD.decode(text.as_bytes()).ok()?;
    if raw.len() < 3 {
        return None;
    }
    let (body, sum) = raw.split_at(raw.len() - 2);
    if crc16(body) != u16::from_le_bytes([sum[0], sum[1]]) {
        return None;
    }
    Some(body.to_vec())
}

/// A public key of `role`, or `None` when `text` is not one.
pub fn public_key(text: &str, role: Role) -> Option<VerifyingKey> {
    let body = decode_checked(text)?;
    if body.len() != 33 || body[0] != role.prefix() {
        return None;
    }
    VerifyingKey::from_bytes(body[1..].try_into().ok()?).ok()
}

/// Whether `text` is a public key of `role`.
pub fn is_public_key(text: &str, role: Role) -> bool {
    public_key(text, role).is_some()
}

/// Decodes a signature the way nats-server does: base64 URL-safe without padding, else standard.
pub fn decode_signature(sig: &str) -> Option<Signature> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(sig))
        .ok()?;
    Signature::from_slice(&bytes).ok()
}

/// Whether `sig` (as a client sends it) signs `data` with the key `key` of `role`.
pub fn verify(key: &str, role: Role, data: &[u8], sig: &str) -> bool {
    decode_signature(sig).is_some_and(|s| verify_signature(key, role, data, &s))
}

/// Whether the decoded signature `sig` signs `data` with the key `key` of `role`.
pub fn verify_signature(key: &str, role: Role, data: &[u8], sig: &Signature) -> bool {
    public_key(key, role).is_some_and(|k| k.verify(data, sig).is_ok())
}

/// Signs `data` with an NKey seed (`SU...`, as in a credentials file or `nkey` option);
/// returns the seed's public key and the signature (base64 URL-safe, unpadded, as the NATS
/// clients send it). `None` when `seed` is not a seed.
pub fn sign_with_seed(seed: &str, data: &[u8]) -> Option<(String, String)> {
    use ed25519_dalek::{Signer, SigningKey};
    let body = decode_checked(seed.trim())?;
    // Two prefix bytes: the seed marker (18 << 3) and the role, five bits each.
    if body.len() != 34 || body[0] & 0xf8 != 18 << 3 {
        return None;
    }
    let role = ((body[0] & 7) << 5) | ((body[1] & 0xf8) >> 3);
    let key = SigningKey::from_bytes(body[2..34].try_into().ok()?);
    let mut raw = vec![role];
    raw.extend_from_slice(key.verifying_key().as_bytes());
    let sum = crc16(&raw);
    raw.extend_from_slice(&sum.to_le_bytes());
    let public = data_encoding::BASE32_NOPAD.encode(&raw);
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.sign(data).to_bytes());
    Some((public, sig))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// Encodes a public key the way NKeys does (for tests).
    pub(crate) fn encode(role: Role, key: &VerifyingKey) -> String {
        let mut raw = vec![role.prefix()];
        raw.extend_from_slice(key.as_bytes());
        let sum = crc16(&raw);
        raw.extend_from_slice(&sum.to_le_bytes());
        data_encoding::BASE32_NOPAD.encode(&raw)
    }

    /// Encodes a seed the way NKeys does (for tests).
    pub(crate) fn encode_seed(role: Role, sk: &SigningKey) -> String {
        let r = role.prefix();
        let mut raw = vec![(18 << 3) | (r >> 5), (r & 31) << 3];
        raw.extend_from_slice(sk.as_bytes());
        let sum = crc16(&raw);
        raw.extend_from_slice(&sum.to_le_bytes());
        data_encoding::BASE32_NOPAD.encode(&raw)
    }

    #[test]
    fn a_seed_signs_what_its_public_key_verifies() {
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let seed = encode_seed(Role::User, &sk);
        assert!(seed.starts_with("SU"), "{seed}");
        let (public, sig) = sign_with_seed(&seed, b"nonce").unwrap();
        assert_eq!(public, encode(Role::User, &sk.verifying_key()));
        assert!(verify(&public, Role::User, b"nonce", &sig));
        assert!(!verify(&public, Role::User, b"other", &sig));
        assert!(sign_with_seed(&public, b"nonce").is_none());
        assert!(sign_with_seed("SUNOTASEED", b"nonce").is_none());
    }

    #[test]
    fn a_known_user_key_decodes() {
        // From nkeys' own documentation of the format: a user key starts with U and is 56 chars.
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let text = encode(Role::User, &sk.verifying_key());
        assert!(text.starts_with('U') && text.len() == 56);
        assert!(is_public_key(&text, Role::User));
        assert!(!is_public_key(&text, Role::Account));
        let mut broken = text.clone().into_bytes();
        broken[10] = if broken[10] == b'A' { b'B' } else { b'A' };
        assert!(!is_public_key(
            std::str::from_utf8(&broken).unwrap(),
            Role::User
        ));
    }

    #[test]
    fn signatures_verify_in_both_encodings() {
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let key = encode(Role::User, &sk.verifying_key());
        let sig = sk.sign(b"nonce-123");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.to_bytes());
        let std = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        assert!(verify(&key, Role::User, b"nonce-123", &url));
        assert!(verify(&key, Role::User, b"nonce-123", &std));
        assert!(!verify(&key, Role::User, b"nonce-124", &url));
        assert!(!verify(&key, Role::User, b"nonce-123", "garbage"));
    }
}
