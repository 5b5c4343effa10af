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
