//! junction-auth: who a connection is and what it may do. Pure decisions, no I/O.
//!
//! Layout: [`Credentials`] is what a client presented (NATS CONNECT fields, later MQTT username and
//! password); an [`Authenticator`] turns them into an [`Identity`] (the account the connection is
//! bound to) or refuses them. Until the auth issue lands, the only authenticator is [`Open`], which
//! admits everyone to the default account, as nats-server does without an auth block.

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
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account the connection is bound to.
    pub account: String,
    /// The user's name, when the credentials named one.
    pub user: Option<String>,
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credentials do not identify any user.
    #[error("authorization violation")]
    Violation,
}

/// Decides who a connection is.
pub trait Authenticator: Send + Sync {
    /// Whether clients must present credentials (NATS `auth_required` in INFO).
    fn auth_required(&self) -> bool;
    /// Checks the credentials and names the connection's identity.
    fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError>;
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
        Ok(Identity {
            account: self.account.clone(),
            user: creds.user.clone(),
        })
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
