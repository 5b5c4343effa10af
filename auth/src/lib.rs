//! junction-auth: who a connection is and what it may do. Pure decisions, no I/O.
//!
//! Layout: [`Credentials`] is what a client presented (NATS CONNECT fields, the MQTT username and
//! password, a TLS client certificate); an [`Authenticator`] turns them into an [`Identity`] (the
//! account the connection is bound to, and its [`Permissions`]) or refuses them.
//! - [`Open`]: no auth block; everyone is admitted to the default account.
//! - [`server::ServerAuth`]: what the configuration says (users, tokens, NKeys, certificates,
//!   operator JWTs, external JWTs).
//! - [`permissions`]: allow/deny decisions and the per-connection [`Checker`] cache.
//! - [`nkey`], [`jwt`], [`external`]: NKeys, NATS JWTs, standard JWTs.

pub mod external;
pub mod jwt;
pub mod nkey;
pub mod permissions;
pub mod server;
pub mod subject;

use std::sync::Arc;

pub use permissions::{Checker, Permissions};

/// What a client presented when it connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name (NATS `user`, MQTT username).
    pub user: Option<String>,
    /// Password (NATS `pass`, MQTT password).
    pub pass: Option<String>,
    /// Token (NATS `auth_token`).
    pub token: Option<String>,
    /// Public NKey (NATS `nkey`).
    pub nkey: Option<String>,
    /// Signature of the server's nonce (NATS `sig`).
    pub sig: Option<String>,
    /// User JWT (NATS `jwt`).
    pub jwt: Option<String>,
    /// The nonce the server sent in INFO (what `sig` must sign).
    pub nonce: Option<String>,
    /// The TLS client certificate's names, when the client presented one.
    pub cert: Option<CertIdentity>,
    /// The listener maps certificates to users (`verify_and_map`).
    pub map_cert: bool,
    /// An MQTT client: its password may also be the token or a user JWT.
    pub mqtt: bool,
}

/// The names in a TLS client certificate that `verify_and_map` looks users up by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// rfc822Name alternative names.
    pub emails: Vec<String>,
    /// dNSName alternative names.
    pub dns: Vec<String>,
    /// URI alternative names.
    pub uris: Vec<String>,
    /// The subject's attributes (`("CN", "alice")`, `("O", "Acme")`), in certificate order.
    pub subject: Vec<(String, String)>,
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account the connection is bound to.
    pub account: String,
    /// The user's name, when the credentials named one.
    pub user: Option<String>,
    /// What the user may do (`None`: everything).
    pub permissions: Option<Arc<Permissions>>,
    /// When the credentials expire (unix seconds; a JWT's `exp`).
    pub expires: Option<i64>,
    /// Limits from the user's and its account's JWTs.
    pub limits: Limits,
}

/// Limits a JWT sets (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Subscriptions the connection may hold (user `subs`, or the account's `subs` when smaller:
    /// nats-server applies the account's as a limit per connection too).
    pub subs: Option<u64>,
    /// Largest message payload (user or account `payload`, the smaller).
    pub payload: Option<u64>,
    /// Connections the account may have at once (account `conn`).
    pub account_connections: Option<u64>,
}

impl Identity {
    /// An identity with no permission limits and no expiry.
    pub fn new(account: impl Into<String>, user: Option<String>) -> Self {
        Identity {
            account: account.into(),
            user,
            permissions: None,
            expires: None,
            limits: Limits::default(),
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, token or signature (MQTT 5: 0x86).
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// Credentials that are not (or no longer) good enough: a JWT that is expired, revoked or
    /// signed by the wrong key, no credentials at all (MQTT 5: 0x87).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
}

/// Decides who a connection is.
pub trait Authenticator: Send + Sync {
    /// Whether clients must present credentials (NATS `auth_required` in INFO).
    fn auth_required(&self) -> bool;
    /// Whether INFO carries a nonce for the client to sign (NKey or JWT users exist).
    fn nonce_required(&self) -> bool {
        false
    }
    /// Checks the credentials and names the connection's identity.
    fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError>;
    /// Whether checking these credentials costs more than microseconds (bcrypt, signatures):
    /// the frontends then run [`Authenticator::authenticate`] off their reactor threads.
    fn costly(&self, creds: &Credentials) -> bool {
        let _ = creds;
        false
    }
    /// Who a client is that never sent credentials (`no_auth_user`), if anyone.
    fn anonymous(&self) -> Option<Identity> {
        None
    }
    /// Starts a challenge/response exchange by `method` (MQTT 5 enhanced authentication: SCRAM,
    /// Kerberos, a token refresh...), for a client that connected with `creds`. `None`: the
    /// method is not supported (MQTT 5 answers "bad authentication method").
    fn exchange(&self, method: &str, creds: &Credentials) -> Option<Box<dyn Exchange>> {
        let _ = (method, creds);
        None
    }
}

/// One step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this data to the client (MQTT: AUTH "continue authentication") and wait for its
    /// answer.
    Continue(Vec<u8>),
    /// The client proved who it is; `data` (when some) goes back with the success.
    Done {
        /// Who the connection is.
        identity: Identity,
        /// Final data for the client (MQTT: in CONNACK, or in AUTH "success" after a
        /// re-authentication).
        data: Option<Vec<u8>>,
    },
    /// The client failed the exchange.
    Refused,
}

/// An enhanced authentication exchange in progress, one per connection.
pub trait Exchange: Send {
    /// Takes the client's next data (the first call gets the data sent with the method, if any)
    /// and says what happens next.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// No authentication: everyone is admitted to the given account.
#[derive(Debug, Clone)]
pub struct Open {
    /// The account every connection is bound to.
    pub account: String,
}

impl Authenticator for Open {
    fn auth_required(&self) -> bool {
        false
    }

    fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        Ok(Identity::new(self.account.clone(), creds.user.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_admits_everyone_to_its_account() {
        let open = Open {
            account: "$G".into(),
        };
        assert!(!open.auth_required());
        let id = open
            .authenticate(&Credentials {
                user: Some("u".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(id.account, "$G");
        assert_eq!(id.user.as_deref(), Some("u"));
    }
}
