//! The configured authenticator: users with passwords (plain or bcrypt), a token, NKey users,
//! users mapped from TLS client certificates, `no_auth_user`, decentralized NATS JWTs under a
//! trusted operator, and standard JWTs from an external issuer. It follows nats-server's order
//! of checks (see [`ServerAuth::authenticate`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::external::ExternalJwt;
use crate::jwt::{self, Claims};
use crate::nkey::{self, Role};
use crate::permissions::Permissions;
use crate::{AuthError, Authenticator, Credentials, Identity};

/// One configured user.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// `user` (also a certificate's email, DNS name or subject DN for `verify_and_map`).
    pub name: Option<String>,
    /// `password`: plain, or bcrypt when it starts with `$2a$`, `$2b$`, `$2x$` or `$2y$`.
    pub password: Option<String>,
    /// `nkey`: the user's public NKey.
    pub nkey: Option<String>,
    /// The account the user belongs to.
    pub account: String,
    pub permissions: Option<Arc<Permissions>>,
}

/// Where account JWTs come from in operator mode.
pub trait Resolver: Send + Sync {
    /// The JWT of the account with this public key.
    fn account_jwt(&self, account: &str) -> Option<String>;
}

/// `resolver: MEMORY` with `resolver_preload`.
#[derive(Debug, Default)]
pub struct MemoryResolver(pub HashMap<String, String>);

impl Resolver for MemoryResolver {
    fn account_jwt(&self, account: &str) -> Option<String> {
        self.0.get(account).cloned()
    }
}

/// Decentralized auth: the trusted operator and where account JWTs come from.
pub struct Operator {
    /// The operator's public key and its signing keys.
    pub keys: Vec<String>,
    pub resolver: Arc<dyn Resolver>,
}

/// Everything the configuration says about authentication.
#[derive(Default)]
pub struct AuthConfig {
    pub users: Vec<User>,
    /// `authorization { token }`.
    pub token: Option<String>,
    /// `no_auth_user`: who a client without credentials is.
    pub no_auth_user: Option<String>,
    /// The account of clients that authenticate without naming one (`$G`).
    pub default_account: String,
    pub operator: Option<Operator>,
    pub external: Option<ExternalJwt>,
}

/// The authenticator built from [`AuthConfig`].
pub struct ServerAuth {
    cfg: AuthConfig,
    by_name: HashMap<String, usize>,
    by_nkey: HashMap<String, usize>,
}

fn bcrypt_hash(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 7
        && b.starts_with(b"$2")
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
}

/// Compares a presented secret with a configured one (bcrypt or plain, in constant time).
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    if bcrypt_hash(configured) {
        return bcrypt::verify(presented, configured).unwrap_or(false);
    }
    let (a, b) = (configured.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch (what JWT times count).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn refuse(why: impl Into<String>) -> AuthError {
    AuthError::NotAuthorized(why.into())
}

fn bad(why: impl Into<String>) -> AuthError {
    AuthError::BadCredentials(why.into())
}

/// Whether a token looks like a JWT (three base64url parts).
fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.split('.').count() == 3
}

impl ServerAuth {
    /// Checks the configuration (unique users and NKeys, `no_auth_user` names a user, NKeys
    /// are user keys) and indexes it.
    pub fn new(cfg: AuthConfig) -> Result<ServerAuth, String> {
        let mut by_name = HashMap::new();
        let mut by_nkey = HashMap::new();
        for (i, u) in cfg.users.iter().enumerate() {
            if let Some(n) = &u.name {
                if by_name.insert(n.clone(), i).is_some() {
                    return Err(format!("duplicate user {n:?}"));
                }
            }
            if let Some(k) = &u.nkey {
                if !nkey::is_public_key(k, Role::User) {
                    return Err(format!("not a valid public user nkey: {k:?}"));
                }
                if by_nkey.insert(k.clone(), i).is_some() {
                    return Err(format!("duplicate nkey {k:?}"));
                }
            }
        }
        if let Some(n) = &cfg.no_auth_user {
            if !by_name.contains_key(n) && !by_nkey.contains_key(n) {
                return Err(format!("no_auth_user {n:?} is not a configured user"));
            }
        }
        if cfg.operator.is_some() && (!cfg.users.is_empty() || cfg.no_auth_user.is_some()) {
            return Err(
                "with an operator, users come from JWTs: users and no_auth_user cannot be configured"
                    .into(),
            );
        }
        Ok(ServerAuth {
            cfg,
            by_name,
            by_nkey,
        })
    }

    fn identity(&self, u: &User) -> Identity {
        Identity {
            account: u.account.clone(),
            user: u.name.clone().or_else(|| u.nkey.clone()),
            permissions: u.permissions.clone(),
            expires: None,
            limits: Default::default(),
        }
    }

    fn user_by_name(&self, name: &str) -> Option<&User> {
        self.by_name
            .get(name)
            .or_else(|| self.by_nkey.get(name))
            .map(|i| &self.cfg.users[*i])
    }

    /// The user a TLS client certificate maps to (`verify_and_map`): an email, then a DNS name,
    /// then a URI of its alternative names, then its subject DN (in any order of its parts).
    fn cert_user(&self, creds: &Credentials) -> Option<&User> {
        let cert = creds.cert.as_ref()?;
        for name in cert.emails.iter().chain(&cert.dns).chain(&cert.uris) {
            if let Some(u) = self.by_name.get(name) {
                return Some(&self.cfg.users[*u]);
            }
        }
        let mut have: Vec<(String, String)> = cert
            .subject
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect();
        have.sort();
        self.cfg.users.iter().find(|u| {
            u.name.as_deref().is_some_and(|n| {
                let mut want = parse_dn(n);
                want.sort();
                !want.is_empty() && want == have
            })
        })
    }

    /// Decentralized auth: a user JWT signed by an account the operator signed.
    fn operator_user(&self, op: &Operator, creds: &Credentials) -> Result<Identity, AuthError> {
        let token = creds
            .jwt
            .as_deref()
            .or(if creds.mqtt {
                creds.pass.as_deref()
            } else {
                None
            })
            .ok_or_else(|| refuse("authentication requires a user JWT"))?;
        let now = unix_now();
        let user = jwt::decode(token, Role::Account, now)
            .and_then(|c| c.expect_kind("user"))
            .map_err(|e| refuse(format!("user JWT not valid: {e}")))?;
        if !nkey::is_public_key(&user.sub, Role::User) {
            return Err(refuse("user JWT subject is not a user key"));
        }
        let account_key = user.nats_str("issuer_account").unwrap_or(&user.iss);
        let account = self.account_claims(op, account_key, now)?;
        if user.iss != account.sub && !account.signing_keys().contains(&user.iss) {
            return Err(refuse(
                "user JWT issuer is not the account or one of its signing keys",
            ));
        }
        if user.bearer() {
            if account
                .nats
                .pointer("/limits/disallow_bearer")
                .and_then(serde_json::Value::as_bool)
                == Some(true)
            {
                return Err(refuse("bearer tokens are not allowed in this account"));
            }
        } else {
            let (Some(nonce), Some(sig)) = (&creds.nonce, &creds.sig) else {
                return Err(refuse("signature missing"));
            };
            if !nkey::verify(&user.sub, Role::User, nonce.as_bytes(), sig) {
                return Err(refuse("signature does not verify"));
            }
        }
        if account.revokes(&user.sub, user.iat) {
            return Err(refuse("user authentication revoked"));
        }
        let permissions = user
            .permissions()
            .or_else(|| account.default_permissions())
            .map(Arc::new);
        Ok(Identity {
            account: account.sub.clone(),
            user: Some(user.sub.clone()),
            permissions,
            expires: user.exp.filter(|e| *e > 0),
            limits: crate::Limits {
                subs: match (user.limit("/subs"), account.limit("/limits/subs")) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                payload: match (user.limit("/payload"), account.limit("/limits/payload")) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                account_connections: account.limit("/limits/conn"),
            },
        })
    }

    /// The verified claims of an account JWT from the resolver.
    pub fn account_claims(&self, op: &Operator, key: &str, now: i64) -> Result<Claims, AuthError> {
        let token = op
            .resolver
            .account_jwt(key)
            .ok_or_else(|| refuse(format!("account {key} not found")))?;
        let account = jwt::decode(&token, Role::Operator, now)
            .and_then(|c| c.expect_kind("account"))
            .and_then(|c| c.mappings().map(|_| c))
            .map_err(|e| refuse(format!("account JWT not valid: {e}")))?;
        if account.sub != key {
            return Err(refuse("account JWT is for another account"));
        }
        if !op.keys.contains(&account.iss) {
            return Err(refuse("account JWT not issued by the trusted operator"));
        }
        Ok(account)
    }

    /// The operator block, if any.
    pub fn operator(&self) -> Option<&Operator> {
        self.cfg.operator.as_ref()
    }
}

/// Parses `CN=alice,O=Acme` into upper-cased attribute names and values.
fn parse_dn(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Vec::new();
        };
        out.push((k.trim().to_ascii_uppercase(), v.trim().to_string()));
    }
    out
}

impl Authenticator for ServerAuth {
    fn auth_required(&self) -> bool {
        true
    }

    fn nonce_required(&self) -> bool {
        self.cfg.operator.is_some() || !self.by_nkey.is_empty()
    }

    /// Signatures (operator, external JWTs, NKeys) and bcrypt cost tens of microseconds to
    /// many milliseconds.
    fn costly(&self, creds: &Credentials) -> bool {
        let bcrypt_user = creds
            .user
            .as_ref()
            .and_then(|n| self.by_name.get(n))
            .and_then(|i| self.cfg.users[*i].password.as_deref())
            .is_some_and(bcrypt_hash);
        self.cfg.operator.is_some()
            || self.cfg.external.is_some()
            || creds.nkey.is_some()
            || bcrypt_user
            || self.cfg.token.as_deref().is_some_and(bcrypt_hash)
    }

    /// In nats-server's order: operator JWTs; an external JWT in the token (or MQTT password);
    /// an NKey with its nonce signature; a certificate mapped to a user; user and password;
    /// the token; `no_auth_user` for a client that presented nothing.
    fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        let external_token = || {
            creds
                .token
                .as_deref()
                .or(creds.pass.as_deref())
                .filter(|t| looks_like_jwt(t))
        };
        if let (Some(ext), Some(t)) = (&self.cfg.external, external_token()) {
            if jwt::algorithm(t).is_some_and(|a| a != "ed25519-nkey") {
                return ext.verify(t);
            }
        }
        if let Some(op) = &self.cfg.operator {
            return self.operator_user(op, creds);
        }
        if let Some(key) = &creds.nkey {
            let u = self
                .by_nkey
                .get(key)
                .map(|i| &self.cfg.users[*i])
                .ok_or_else(|| bad("unknown nkey"))?;
            let (Some(nonce), Some(sig)) = (&creds.nonce, &creds.sig) else {
                return Err(bad("signature missing"));
            };
            if !nkey::verify(key, Role::User, nonce.as_bytes(), sig) {
                return Err(bad("nonce signature does not verify"));
            }
            return Ok(self.identity(u));
        }
        if creds.map_cert {
            return self
                .cert_user(creds)
                .map(|u| self.identity(u))
                .ok_or_else(|| refuse("no user matches the client certificate"));
        }
        if let Some(name) = &creds.user {
            if let Some(u) = self.by_name.get(name).map(|i| &self.cfg.users[*i]) {
                let ok = match &u.password {
                    Some(p) => secret_matches(p, creds.pass.as_deref().unwrap_or("")),
                    None => false,
                };
                return if ok {
                    Ok(self.identity(u))
                } else {
                    Err(bad("wrong password"))
                };
            }
            if self.cfg.token.is_none() {
                return Err(bad("unknown user"));
            }
        }
        let presented_token = creds.token.as_deref().or(if creds.mqtt {
            creds.pass.as_deref()
        } else {
            None
        });
        if let (Some(want), Some(got)) = (&self.cfg.token, presented_token) {
            return if secret_matches(want, got) {
                Ok(Identity::new(self.cfg.default_account.clone(), None))
            } else {
                Err(bad("wrong token"))
            };
        }
        let presented_nothing = creds.user.is_none()
            && creds.pass.is_none()
            && creds.token.is_none()
            && creds.jwt.is_none();
        if presented_nothing {
            if let Some(u) = self
                .cfg
                .no_auth_user
                .as_deref()
                .and_then(|n| self.user_by_name(n))
            {
                return Ok(self.identity(u));
            }
        }
        Err(bad("no credentials accepted"))
    }

    fn anonymous(&self) -> Option<Identity> {
        let u = self.user_by_name(self.cfg.no_auth_user.as_deref()?)?;
        Some(self.identity(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{Entry, Rules};

    fn user(name: &str, pass: &str, account: &str) -> User {
        User {
            name: Some(name.into()),
            password: Some(pass.into()),
            account: account.into(),
            ..Default::default()
        }
    }

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials {
            user: Some(user.into()),
            pass: Some(pass.into()),
            ..Default::default()
        }
    }

    #[test]
    fn users_passwords_and_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = ServerAuth::new(AuthConfig {
            users: vec![user("a", "pa", "A"), user("b", &hash, "B")],
            default_account: "$G".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(auth.authenticate(&creds("a", "pa")).unwrap().account, "A");
        assert_eq!(
            auth.authenticate(&creds("b", "s3cret")).unwrap().account,
            "B"
        );
        assert!(auth.authenticate(&creds("b", &hash)).is_err());
        assert!(auth.authenticate(&creds("a", "pb")).is_err());
        assert!(auth.authenticate(&creds("zz", "pa")).is_err());
        assert!(auth.authenticate(&Credentials::default()).is_err());
    }

    #[test]
    fn token_and_no_auth_user() {
        let auth = ServerAuth::new(AuthConfig {
            token: Some("t0k".into()),
            default_account: "$G".into(),
            ..Default::default()
        })
        .unwrap();
        let tok = |t: &str| Credentials {
            token: Some(t.into()),
            ..Default::default()
        };
        assert!(auth.authenticate(&tok("t0k")).is_ok());
        assert!(auth.authenticate(&tok("nope")).is_err());
        let mqtt = Credentials {
            pass: Some("t0k".into()),
            mqtt: true,
            ..Default::default()
        };
        assert!(auth.authenticate(&mqtt).is_ok());

        let mut u = user("anon", "x", "A");
        u.permissions = Some(Arc::new(Permissions {
            publish: Rules {
                allow: Some(vec![Entry::parse("p").unwrap()]),
                deny: vec![],
            },
            ..Default::default()
        }));
        let auth = ServerAuth::new(AuthConfig {
            users: vec![u],
            no_auth_user: Some("anon".into()),
            default_account: "$G".into(),
            ..Default::default()
        })
        .unwrap();
        let id = auth.authenticate(&Credentials::default()).unwrap();
        assert_eq!(id.account, "A");
        assert!(id.permissions.is_some());
        assert!(auth.authenticate(&creds("anon", "wrong")).is_err());
        assert!(ServerAuth::new(AuthConfig {
            no_auth_user: Some("ghost".into()),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn certificate_mapping() {
        let auth = ServerAuth::new(AuthConfig {
            users: vec![
                User {
                    name: Some("device1@example.com".into()),
                    account: "D".into(),
                    ..Default::default()
                },
                User {
                    name: Some("CN=alice,O=Junction Tests".into()),
                    account: "A".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
        let cert = |emails: Vec<&str>, subject: Vec<(&str, &str)>| Credentials {
            map_cert: true,
            cert: Some(crate::CertIdentity {
                emails: emails.into_iter().map(String::from).collect(),
                subject: subject
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = cert(vec!["device1@example.com"], vec![("CN", "device-1")]);
        assert_eq!(auth.authenticate(&d).unwrap().account, "D");
        let a = cert(vec![], vec![("O", "Junction Tests"), ("CN", "alice")]);
        assert_eq!(auth.authenticate(&a).unwrap().account, "A");
        let nobody = cert(vec![], vec![("CN", "mallory")]);
        assert!(auth.authenticate(&nobody).is_err());
    }

    #[test]
    fn bcrypt_detection() {
        assert!(bcrypt_hash(
            "$2a$11$ooo6Yr4qJ5pQOgMqXbX7V.fcMLmS4SPUqvbEZmsnoqIXdcdHmvGkG"
        ));
        assert!(!bcrypt_hash("$2a$x"));
        assert!(!bcrypt_hash("plain"));
    }
}
