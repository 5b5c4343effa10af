//! Authentication that costs more than microseconds (bcrypt, signature checks) runs here, off
//! the reactor: on the blocking pool, at most [`workers`] at a time. A storm of connection
//! attempts then slows authentication alone, never the connections that are already in.
//!
//! A connection waiting for its answer reads nothing more (see `Protocol::poll_resume`); each
//! connection waits for at most one answer, so the queue is bounded by the connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use junction_auth::{AuthError, Authenticator, Credentials, Identity};
use tokio::sync::Semaphore;

/// An authentication on its way.
pub(crate) type Pending = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send>>;

/// How many authentications run at once: half the cores, so that a storm leaves the reactor
/// threads the other half.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| Arc::new(Semaphore::new(workers())))
}

/// Authenticates `creds`: at once when that is cheap (`Ok`), or on the pool (`Err` with the
/// future of the answer).
pub(crate) fn authenticate(
    auth: &Arc<dyn Authenticator>,
    creds: Credentials,
) -> Result<Result<Identity, AuthError>, Pending> {
    if !auth.costly(&creds) {
        return Ok(auth.authenticate(&creds));
    }
    let auth = auth.clone();
    Err(Box::pin(async move {
        let permit = permits().clone().acquire_owned().await;
        let answer = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            auth.authenticate(&creds)
        })
        .await;
        answer.unwrap_or_else(|_| Err(AuthError::NotAuthorized("authentication failed".into())))
    }))
}
