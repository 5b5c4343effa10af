//! Standard JWTs from an external identity provider (a Junction extension, configured with the
//! `external_jwt { ... }` block): RS256, ES256, EdDSA or HS256, checked against configured keys,
//! issuer, audience and expiry. The token is accepted where a client can put a secret: the NATS
//! `auth_token`, the MQTT password, and either of them over WebSocket. Its `nats` claim names the
//! account and the permissions:
//!
//! ```json
//! {"iss": "...", "aud": "junction", "sub": "device-7", "exp": 2208988800,
//!  "nats": {"account": "A", "pub": {"allow": ["devices.device-7.>"]},
//!           "sub": {"allow": ["commands.device-7"]}}}
//! ```

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::{AuthError, Identity};

/// One key tokens may be signed with.
pub struct Key {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl Key {
    /// A key from its algorithm name (`RS256`, `ES256`, `EdDSA`, `HS256`, ...) and either a PEM
    /// public key or (HMAC) the shared secret.
    pub fn new(alg: &str, pem: Option<&[u8]>, secret: Option<&[u8]>) -> Result<Key, String> {
        let algorithm: Algorithm = alg
            .parse()
            .map_err(|_| format!("unknown JWT algorithm {alg:?}"))?;
        let need_pem = || pem.ok_or_else(|| format!("{alg} needs a public key file"));
        let bad = |e: jsonwebtoken::errors::Error| format!("bad {alg} public key: {e}");
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                DecodingKey::from_secret(secret.ok_or_else(|| format!("{alg} needs a secret"))?)
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(need_pem()?).map_err(bad)?,
            Algorithm::ES256 | Algorithm::ES384 => {
                DecodingKey::from_ec_pem(need_pem()?).map_err(bad)?
            }
            Algorithm::EdDSA => DecodingKey::from_ed_pem(need_pem()?).map_err(bad)?,
        };
        Ok(Key { algorithm, key })
    }
}

/// The `external_jwt` block.
pub struct ExternalJwt {
    pub keys: Vec<Key>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// The account of tokens whose claims name none.
    pub default_account: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: u64,
}

fn refuse(why: String) -> AuthError {
    AuthError::NotAuthorized(why)
}

impl ExternalJwt {
    /// Checks `token` and names who it is.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| refuse(format!("external JWT: {e}")))?;
        let mut last = String::from("no configured key for its algorithm");
        for k in self.keys.iter().filter(|k| k.algorithm == header.alg) {
            let mut v = Validation::new(k.algorithm);
            // A leeway past the epoch would wrap inside the check: a day is more than any clock skew.
            v.leeway = self.leeway.min(24 * 3600);
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp"]);
            match &self.issuer {
                Some(i) => v.set_issuer(&[i]),
                None => v.iss = None,
            }
            match &self.audience {
                Some(a) => v.set_audience(&[a]),
                None => v.validate_aud = false,
            }
            match jsonwebtoken::decode::<Value>(token, &k.key, &v) {
                Ok(data) => return Ok(self.identity(&data.claims)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(refuse(format!("external JWT refused: {last}")))
    }

    fn identity(&self, claims: &Value) -> Identity {
        let nats = claims.get("nats").cloned().unwrap_or(Value::Null);
        let account = nats
            .get("account")
            .and_then(Value::as_str)
            .unwrap_or(&self.default_account)
            .to_string();
        Identity {
            account,
            user: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            permissions: crate::jwt::permissions_from(&nats).map(Arc::new),
            expires: claims.get("exp").and_then(Value::as_i64),
            limits: Default::default(),
        }
    }
}
