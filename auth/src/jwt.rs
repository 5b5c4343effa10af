//! NATS JWTs (decentralized auth): `base64url(header).base64url(claims).base64url(signature)`,
//! signed with Ed25519 by the issuer's NKey (`"alg":"ed25519-nkey"`).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::nkey::{self, Role};
use crate::permissions::{Entry, Permissions, Responses, Rules};

/// A subject as the JWT library checks one in a claim.
fn jwt_subject(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("subject cannot be empty".into());
    }
    if s.contains(' ') {
        return Err(format!("subject {s:?} cannot have spaces"));
    }
    if s.starts_with('.') || s.ends_with('.') {
        return Err(format!("subject {s:?} cannot start or end with a `.`"));
    }
    if s.contains("..") {
        return Err(format!("subject {s:?} cannot contain consecutive `.`"));
    }
    Ok(())
}

/// One destination of a mapping in an account JWT ([`Claims::mappings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtMapDest {
    pub subject: String,
    /// Percent, 1 to 100.
    pub weight: u8,
    /// The cluster it is scoped to, if any.
    pub cluster: Option<String>,
}

/// An account JWT's JetStream limits (`limits.mem_storage`, ..., or one tier of
/// `limits.tiered_limits`), as the JWT library reads them: an absent number is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JwtJsLimits {
    pub mem_storage: i64,
    pub disk_storage: i64,
    pub streams: i64,
    pub consumer: i64,
    pub max_ack_pending: i64,
    pub mem_max_stream_bytes: i64,
    pub disk_max_stream_bytes: i64,
    pub max_bytes_required: bool,
}

impl JwtJsLimits {
    fn from_json(v: &Value) -> Self {
        let n = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
        JwtJsLimits {
            mem_storage: n("mem_storage"),
            disk_storage: n("disk_storage"),
            streams: n("streams"),
            consumer: n("consumer"),
            max_ack_pending: n("max_ack_pending"),
            mem_max_stream_bytes: n("mem_max_stream_bytes"),
            disk_max_stream_bytes: n("disk_max_stream_bytes"),
            max_bytes_required: v
                .get("max_bytes_required")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// Whether and how an account JWT gives the account JetStream ([`Claims::jetstream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtJetStream {
    /// No storage in either kind and no tiers: no JetStream.
    Disabled,
    /// One set of limits.
    Flat(JwtJsLimits),
    /// Tiered limits: the `R1` tier's, if there is one.
    Tiered(Option<JwtJsLimits>),
}

/// The claims every NATS JWT has, and its `nats` section as JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub iat: i64,
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub nats: Value,
    /// A version 1 JWT's claim type (version 2 keeps it in `nats.type`).
    #[serde(default, rename = "type")]
    v1_type: Option<String>,
}

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("unsupported JWT algorithm")]
    Algorithm,
    #[error("claim failed signature verification")]
    Signature,
    #[error("claim is expired")]
    Expired,
    #[error("claim is not yet valid")]
    NotYetValid,
    #[error("expected a {0} JWT")]
    Kind(&'static str),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    alg: String,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)
}

/// The `alg` of a JWT's header, if `token` is a JWT.
pub fn algorithm(token: &str) -> Option<String> {
    let h = token.split('.').next()?;
    let header: Header = serde_json::from_slice(&b64(h).ok()?).ok()?;
    Some(header.alg)
}

/// Decodes `token` and checks its signature against its issuer, which must be a key of
/// `issuer_role`; checks `exp` and `nbf` against `now` (unix seconds).
pub fn decode(token: &str, issuer_role: Role, now: i64) -> Result<Claims, JwtError> {
    let claims = verified(token, issuer_role)?;
    claims.check_time(now)?;
    Ok(claims)
}

/// The claims of a JWT whose signature is right, whatever its times say ([`decode`] without
/// [`Claims::check_time`]).
pub fn verified(token: &str, issuer_role: Role) -> Result<Claims, JwtError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
    if !header.typ.is_empty() && !header.typ.eq_ignore_ascii_case("jwt") {
        return Err(JwtError::Malformed);
    }
    // Version 2 signs `header.claims`; version 1 (`"alg":"ed25519"`, as nats-server 2.9 still
    // accepts) signed the encoded claims alone and kept the claim type at the top level.
    let v1 = match header.alg.as_str() {
        "ed25519-nkey" => false,
        "ed25519" => true,
        _ => return Err(JwtError::Algorithm),
    };
    let mut claims: Claims = serde_json::from_slice(&b64(c)?).map_err(|_| JwtError::Malformed)?;
    if v1 {
        if let Some(kind) = claims.v1_type.take() {
            if !claims.nats.is_object() {
                claims.nats = Value::Object(Default::default());
            }
            if claims.nats.get("type").is_none() {
                claims.nats["type"] = Value::String(kind);
            }
        }
    }
    let signed = if v1 {
        c
    } else {
        &token[..h.len() + 1 + c.len()]
    };
    let sig = ed25519_dalek::Signature::from_slice(&b64(s)?).map_err(|_| JwtError::Signature)?;
    if !nkey::verify_signature(&claims.iss, issuer_role, signed.as_bytes(), &sig) {
        return Err(JwtError::Signature);
    }
    Ok(claims)
}

impl Claims {
    /// Refuses claims that expired, or are not valid yet, at `now`.
    pub fn check_time(&self, now: i64) -> Result<(), JwtError> {
        if self.exp.is_some_and(|e| e > 0 && e <= now) {
            return Err(JwtError::Expired);
        }
        if self.nbf.is_some_and(|n| n > now) {
            return Err(JwtError::NotYetValid);
        }
        Ok(())
    }

    /// The `nats.type` claim.
    pub fn kind(&self) -> &str {
        self.nats.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// Checks the `nats.type` claim.
    pub fn expect_kind(self, kind: &'static str) -> Result<Claims, JwtError> {
        if self.kind() == kind {
            Ok(self)
        } else {
            Err(JwtError::Kind(kind))
        }
    }

    /// An account JWT's `mappings` claim, read and checked as the JWT library does when a
    /// server loads the account (its errors make the whole account invalid): subjects well
    /// formed, no weight above 100 (none, or 0, means 100), and at most 100 in total per source
    /// (per cluster for cluster-scoped destinations).
    pub fn mappings(&self) -> Result<Vec<(String, Vec<JwtMapDest>)>, JwtError> {
        let Some(m) = self.nats.get("mappings") else {
            return Ok(Vec::new());
        };
        let bad = |e: String| Err(JwtError::Invalid(e));
        let Some(m) = m.as_object() else {
            return bad("mappings must be an object".into());
        };
        let mut out = Vec::with_capacity(m.len());
        for (src, dests) in m {
            jwt_subject(src).map_err(JwtError::Invalid)?;
            let Some(dests) = dests.as_array() else {
                return bad(format!("mapping {src:?} must be a list"));
            };
            let mut list = Vec::with_capacity(dests.len());
            let mut total = 0u64;
            let mut per_cluster: std::collections::HashMap<&str, u64> = Default::default();
            for d in dests {
                let subject = d.get("subject").and_then(Value::as_str).unwrap_or("");
                jwt_subject(subject).map_err(JwtError::Invalid)?;
                let weight = match d.get("weight") {
                    None | Some(Value::Null) => 100,
                    Some(w) => match w.as_u64().filter(|w| *w <= 255) {
                        Some(0) => 100,
                        Some(w) => w,
                        None => return bad(format!("mapping {src:?} has a bad weight")),
                    },
                };
                if weight > 100 {
                    return bad(format!(
                        "Mapping {src:?} has a weight {weight} that exceeds 100"
                    ));
                }
                let cluster = d
                    .get("cluster")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty());
                match cluster {
                    Some(c) => {
                        let t = per_cluster.entry(c).or_default();
                        *t += weight;
                        if *t > 100 {
                            return bad(format!("Mapping {src:?} in cluster {c:?} exceeds 100% among all of it's weighted to mappings"));
                        }
                    }
                    None => total += weight,
                }
                list.push(JwtMapDest {
                    subject: subject.to_string(),
                    weight: weight as u8,
                    cluster: cluster.map(str::to_string),
                });
            }
            if total > 100 {
                return bad(format!(
                    "Mapping {src:?} exceeds 100% among all of it's weighted to mappings"
                ));
            }
            out.push((src.clone(), list));
        }
        Ok(out)
    }

    /// The signing keys an operator or account JWT lists (plain keys or scoped-key objects).
    pub fn signing_keys(&self) -> Vec<String> {
        let Some(list) = self.nats.get("signing_keys").and_then(Value::as_array) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|k| match k {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("key").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .collect()
    }

    /// A string claim of the `nats` section.
    pub fn nats_str(&self, key: &str) -> Option<&str> {
        self.nats
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Whether a user JWT is a bearer token (no nonce signature needed).
    pub fn bearer(&self) -> bool {
        self.nats
            .get("bearer_token")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Whether an account JWT revokes `user` issued at `iat` (revoked when the entry for the
    /// user, or `*`, is at or after its issue time).
    pub fn revokes(&self, user: &str, iat: i64) -> bool {
        let Some(map) = self.nats.get("revocations").and_then(Value::as_object) else {
            return false;
        };
        [user, "*"]
            .iter()
            .filter_map(|k| map.get(*k).and_then(Value::as_i64))
            .any(|t| t >= iat)
    }

    /// The permissions in a user JWT (`pub`, `sub`, `resp`), or an account JWT's
    /// `default_permissions`; `None` when it sets none.
    pub fn permissions(&self) -> Option<Permissions> {
        permissions_from(&self.nats)
    }

    /// A numeric limit of the `nats` section at `pointer` (`/subs`, `/limits/conn`): `None`
    /// when absent or negative (unlimited).
    pub fn limit(&self, pointer: &str) -> Option<u64> {
        self.nats
            .pointer(pointer)
            .and_then(Value::as_i64)
            .and_then(|n| u64::try_from(n).ok())
    }

    /// Account JWT: its JetStream, as nats-server decides it: tiered limits when there are
    /// any, else the flat ones when they allow memory or file storage (a non-zero
    /// `mem_storage` or `disk_storage`).
    pub fn jetstream(&self) -> JwtJetStream {
        let Some(limits) = self.nats.get("limits") else {
            return JwtJetStream::Disabled;
        };
        if let Some(tiers) = limits
            .get("tiered_limits")
            .and_then(Value::as_object)
            .filter(|t| !t.is_empty())
        {
            return JwtJetStream::Tiered(tiers.get("R1").map(JwtJsLimits::from_json));
        }
        let flat = JwtJsLimits::from_json(limits);
        if flat.mem_storage != 0 || flat.disk_storage != 0 {
            JwtJetStream::Flat(flat)
        } else {
            JwtJetStream::Disabled
        }
    }

    /// Account JWT: `default_permissions`.
    pub fn default_permissions(&self) -> Option<Permissions> {
        permissions_from(self.nats.get("default_permissions")?)
    }
}

fn rules_from(v: Option<&Value>) -> Rules {
    let list = |key: &str| -> Option<Vec<Entry>> {
        let arr = v?.get(key)?.as_array()?;
        Some(
            arr.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| Entry::parse(s).ok())
                .collect(),
        )
    };
    Rules {
        allow: list("allow").filter(|l| !l.is_empty()),
        deny: list("deny").unwrap_or_default(),
    }
}

pub(crate) fn permissions_from(nats: &Value) -> Option<Permissions> {
    let responses = nats.get("resp").and_then(|r| {
        let max = r.get("max").and_then(Value::as_i64).unwrap_or(0);
        let ttl_ns = r.get("ttl").and_then(Value::as_i64).unwrap_or(0);
        Some(Responses {
            max: if max < 0 {
                0
            } else {
                u32::try_from(max).ok()?.max(1)
            },
            expires: if ttl_ns > 0 {
                std::time::Duration::from_nanos(ttl_ns as u64)
            } else {
                Responses::default().expires
            },
        })
    });
    let p = Permissions {
        publish: rules_from(nats.get("pub")),
        subscribe: rules_from(nats.get("sub")),
        responses,
    };
    (!p.is_open()).then_some(p)
}

/// Splits a creds file (or a bare JWT) into the JWT.
pub fn jwt_from_file(text: &str) -> &str {
    let mut in_block = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("---") && l.contains("BEGIN") {
            in_block = true;
        } else if in_block && !l.is_empty() {
            return l;
        }
    }
    text.trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nkey::tests::encode;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn account_mappings_are_checked_as_the_jwt_library_does() {
        let check = |m: Value| {
            let c: Claims = serde_json::from_value(serde_json::json!({
                "iss": "O", "sub": "A", "nats": {"type": "account", "mappings": m}
            }))
            .unwrap();
            c.mappings().map(|_| ()).map_err(|e| e.to_string())
        };
        use serde_json::json;
        assert!(check(json!({"a.*": [{"subject": "b.$1"}]})).is_ok());
        assert!(check(
            json!({"a": [{"subject": "b", "weight": 40}, {"subject": "c", "weight": 60}]})
        )
        .is_ok());
        // No weight (or 0) is 100: two of them are 200.
        assert!(
            check(json!({"a": [{"subject": "b"}, {"subject": "c", "weight": 0}]}))
                .unwrap_err()
                .contains("exceeds 100%")
        );
        assert!(check(json!({"a": [{"subject": "b", "weight": 101}]}))
            .unwrap_err()
            .contains("weight 101"));
        assert!(check(json!({"a": [{"subject": "b", "weight": 256}]})).is_err());
        // Each cluster has its own 100.
        assert!(check(json!({"a": [
            {"subject": "b", "weight": 100, "cluster": "x"},
            {"subject": "c", "weight": 100, "cluster": "y"},
            {"subject": "d", "weight": 100}
        ]}))
        .is_ok());
        assert!(check(json!({"a": [
            {"subject": "b", "weight": 60, "cluster": "x"},
            {"subject": "c", "weight": 60, "cluster": "x"}
        ]}))
        .unwrap_err()
        .contains("in cluster \"x\""));
        for bad in ["", "a b", ".a", "a.", "a..b"] {
            assert!(check(json!({"a": [{"subject": bad}]})).is_err(), "{bad:?}");
            assert!(check(json!({bad: [{"subject": "b"}]})).is_err(), "{bad:?}");
        }
        assert!(check(json!(["a"])).is_err());
    }

    #[test]
    fn account_jetstream_is_read_as_nats_server_reads_it() {
        use serde_json::json;
        let js = |limits: Value| {
            let c: Claims = serde_json::from_value(json!({
                "iss": "O", "sub": "A", "nats": {"type": "account", "limits": limits}
            }))
            .unwrap();
            c.jetstream()
        };
        // nsc's defaults (no storage of either kind): no JetStream.
        assert_eq!(js(json!({"subs": -1, "conn": -1})), JwtJetStream::Disabled);
        assert_eq!(
            js(json!({"mem_storage": 0, "disk_storage": 0})),
            JwtJetStream::Disabled
        );
        let JwtJetStream::Flat(l) = js(json!({"disk_storage": -1, "streams": 3,
            "max_bytes_required": true, "disk_max_stream_bytes": 500}))
        else {
            panic!("disk storage enables JetStream");
        };
        assert_eq!(
            (l.mem_storage, l.disk_storage, l.streams, l.consumer),
            (0, -1, 3, 0)
        );
        assert!(l.max_bytes_required && l.disk_max_stream_bytes == 500);
        assert!(matches!(
            js(json!({"mem_storage": 1024})),
            JwtJetStream::Flat(_)
        ));
        // Tiers win over flat limits; only R1 applies to one server's streams.
        let t = js(json!({"mem_storage": 5, "tiered_limits": {"R1": {"disk_storage": 9}}}));
        let JwtJetStream::Tiered(Some(r1)) = t else {
            panic!("{t:?}");
        };
        assert_eq!((r1.mem_storage, r1.disk_storage), (0, 9));
        assert_eq!(
            js(json!({"tiered_limits": {"R3": {"disk_storage": 9}}})),
            JwtJetStream::Tiered(None)
        );
        assert_eq!(js(json!({"tiered_limits": {}})), JwtJetStream::Disabled);
    }

    pub(crate) fn sign(claims: &Value, key: &SigningKey) -> String {
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let h = e(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let c = e(claims.to_string().as_bytes());
        let sig = key.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", e(&sig.to_bytes()))
    }

    #[test]
    fn signed_claims_decode_and_tampering_is_caught() {
        let acct = SigningKey::from_bytes(&[1u8; 32]);
        let iss = encode(Role::Account, &acct.verifying_key());
        let claims = serde_json::json!({
            "iss": iss, "sub": "UXYZ", "iat": 100, "exp": 2_000,
            "nats": {"type": "user", "version": 2, "pub": {"allow": ["a.>"]}, "bearer_token": true}
        });
        let token = sign(&claims, &acct);
        let c = decode(&token, Role::Account, 1_000).unwrap();
        assert!(c.bearer());
        assert_eq!(c.kind(), "user");
        assert!(c.permissions().unwrap().may_publish("a.b"));
        assert_eq!(
            decode(&token, Role::Account, 3_000).unwrap_err(),
            JwtError::Expired
        );
        assert_eq!(
            decode(&token, Role::Operator, 1_000).unwrap_err(),
            JwtError::Signature
        );
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let forged = serde_json::json!({"iss": iss, "sub": "UOTHER", "nats": {"type": "user"}});
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(
            decode(&parts.join("."), Role::Account, 1_000).unwrap_err(),
            JwtError::Signature
        );
    }

    #[test]
    fn version_1_jwts_are_accepted_as_nats_server_2_9_accepts_them() {
        let acct = SigningKey::from_bytes(&[3u8; 32]);
        let iss = encode(Role::Account, &acct.verifying_key());
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let h = e(br#"{"typ":"jwt","alg":"ed25519"}"#);
        let claims = serde_json::json!({
            "iss": iss, "sub": "UV1", "iat": 100, "type": "user",
            "nats": {"pub": {"allow": ["v1.>"]}}
        });
        let c = e(claims.to_string().as_bytes());
        // Version 1 signed the encoded claims alone.
        let token = format!("{h}.{c}.{}", e(&acct.sign(c.as_bytes()).to_bytes()));
        let decoded = decode(&token, Role::Account, 1_000).unwrap();
        assert_eq!(decoded.kind(), "user");
        assert!(decoded.permissions().unwrap().may_publish("v1.x"));
        // A version 2 signature (over header and claims) does not pass as version 1.
        let wrong = format!(
            "{h}.{c}.{}",
            e(&acct.sign(format!("{h}.{c}").as_bytes()).to_bytes())
        );
        assert_eq!(
            decode(&wrong, Role::Account, 1_000).unwrap_err(),
            JwtError::Signature
        );
        let other = e(br#"{"typ":"jwt","alg":"RS256"}"#);
        assert_eq!(
            decode(&format!("{other}.{c}.AA"), Role::Account, 1_000).unwrap_err(),
            JwtError::Algorithm
        );
    }

    #[test]
    fn revocations() {
        let c = Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            sub: String::new(),
            name: String::new(),
            exp: None,
            nbf: None,
            nats: serde_json::json!({"revocations": {"UA": 50, "*": 10}}),
            v1_type: None,
        };
        assert!(c.revokes("UA", 50));
        assert!(!c.revokes("UA", 51));
        assert!(c.revokes("UB", 10));
        assert!(!c.revokes("UB", 11));
    }

    #[test]
    fn creds_files_give_their_jwt() {
        let creds = "-----BEGIN NATS USER JWT-----\neyJabc.def.ghi\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUAX\n------END USER NKEY SEED------\n";
        assert_eq!(jwt_from_file(creds), "eyJabc.def.ghi");
        assert_eq!(jwt_from_file(" eyJ.a.b \n"), "eyJ.a.b");
    }
}
