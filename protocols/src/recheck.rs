//! A configuration reload checks every authenticated connection again: the credentials it
//! presented go through the new authenticator, and a connection whose user is gone, whose
//! credentials no longer pass, or whose rights (account, permissions, limits) changed is closed
//! with an authorization error. Its client reconnects and gets what the new configuration
//! grants. (nats-server keeps a client whose permissions changed and prunes its subscriptions;
//! Junction closes it, which never leaves a connection with rights it no longer has.)

use std::any::Any;
use std::sync::Arc;

use junction_auth::{Authenticator, Credentials, Identity};
use junction_core::Bus;

/// What a connection presented and what it was granted.
pub struct Login {
    pub creds: Credentials,
    pub identity: Identity,
}

/// How a connection was admitted, as it keeps it for a later check.
pub(crate) enum Admitted {
    /// With credentials (or rights) worth keeping.
    Checked(Box<Login>),
    /// With nothing presented and no limits: checked again as an empty CONNECT bound to its
    /// account.
    Plain,
    /// Through an exchange (MQTT 5 enhanced authentication) that cannot be replayed.
    Exchange,
}

impl Admitted {
    /// What to keep of a connection admitted with `creds` as `identity`.
    pub(crate) fn of(creds: Credentials, identity: &Identity) -> Admitted {
        let presented = Credentials {
            nonce: None,
            map_cert: false,
            mqtt: false,
            ..creds.clone()
        };
        if presented == Credentials::default()
            && *identity == Identity::new(identity.account.clone(), None)
        {
            return Admitted::Plain;
        }
        Admitted::Checked(Box::new(Login {
            creds,
            identity: identity.clone(),
        }))
    }

    /// The user the connection authenticated as ("" when none).
    pub(crate) fn user(&self) -> &str {
        match self {
            Admitted::Checked(l) => l.identity.user.as_deref().unwrap_or_default(),
            _ => "",
        }
    }

    /// The login to check, for a connection bound to `account`; `None`: nothing to check.
    pub(crate) fn login(&self, account: &str) -> Option<Arc<dyn Any + Send + Sync>> {
        match self {
            Admitted::Checked(l) => Some(Arc::new(Login {
                creds: l.creds.clone(),
                identity: l.identity.clone(),
            })),
            Admitted::Plain => Some(Arc::new(Login {
                creds: Credentials::default(),
                identity: Identity::new(account, None),
            })),
            Admitted::Exchange => None,
        }
    }
}

/// Checks every open connection against `auth`; closes those it no longer admits as they are.
/// Returns how many were checked and how many were closed. Costly checks (bcrypt) make this
/// slow: run it off the reactor.
pub fn recheck(bus: &Bus, auth: &dyn Authenticator) -> (usize, usize) {
    let (mut checked, mut closed) = (0, 0);
    for view in bus.conns().open_views() {
        let Some(login) = view.login() else { continue };
        let Ok(login) = login.downcast::<Login>() else {
            continue;
        };
        checked += 1;
        let still = match auth.authenticate(&login.creds) {
            Ok(identity) => same_rights(&identity, &login.identity),
            Err(_) => false,
        };
        if !still {
            closed += 1;
            view.revoke();
        }
    }
    (checked, closed)
}

/// The same rights: account, user, permissions and limits (an expiry is enforced on its own).
fn same_rights(a: &Identity, b: &Identity) -> bool {
    a.account == b.account
        && a.user == b.user
        && a.limits == b.limits
        && match (&a.permissions, &b.permissions) {
            (None, None) => true,
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
}
