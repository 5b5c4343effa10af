//! Accepting leaf node connections (`leafnodes { port }`): a nats-server or another Junction
//! at the far edge attaches to this one, which is then its hub.
//!
//! The far side speaks first after this server's `INFO` (with a nonce): its `CONNECT` names a
//! user (or token) of `leafnodes { authorization }`, which binds it to an account. Without an
//! authorization block it is checked like a client, against the server's users, accounts and
//! operator (password, token, nkey or JWT), as nats-server does: the link is bound to the
//! user's account and held to the user's permissions (what the leaf publishes, the interest it
//! announces, what is delivered to it). A refusal is `-ERR 'Authorization Violation'` and a
//! close. From then on the link runs as a dialled one does (see `link`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use junction_core::sync::Lock;
use junction_core::Bus;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::link::{self, Handshaken};
use super::proto::{self, Limits, Op};
use super::{Ended, Leafs, Link, Options, Remote, CONNECT_TIMEOUT};

/// One user a leaf node may connect as, and the account it binds the link to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafUser {
    pub user: String,
    pub password: String,
    /// `None`: the global account.
    pub account: Option<String>,
}

/// `leafnodes { listen, authorization }`.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    pub host: String,
    pub port: u16,
    /// Users allowed to connect (none: anyone, into the global account, unless a token is set).
    pub users: Vec<LeafUser>,
    pub token: Option<String>,
    /// `leafnodes { tls }`: leaf nodes upgrade to TLS after this server's INFO.
    pub tls: Option<crate::tls::Files>,
}

impl Accept {
    /// The account a `CONNECT` binds to, or `None` when its credentials are refused.
    fn admit(&self, connect: &Value) -> Option<String> {
        let global = || junction_core::DEFAULT_ACCOUNT.to_string();
        if let Some(t) = &self.token {
            return (connect["auth_token"].as_str() == Some(t.as_str())).then(global);
        }
        if self.users.is_empty() {
            return Some(global());
        }
        let user = connect["user"].as_str()?;
        let pass = connect["pass"].as_str().unwrap_or_default();
        self.users
            .iter()
            .find(|u| u.user == user && u.password == pass)
            .map(|u| u.account.clone().unwrap_or_else(global))
    }
}

/// Listens for leaf node connections until `shutdown`; returns the bound address (logged as
/// nats-server does) and the accepting task.
pub async fn listen(
    bus: Arc<Bus>,
    opts: Arc<Options>,
    accept: Accept,
    auth: Arc<dyn junction_auth::Authenticator>,
    leafs: Arc<Leafs>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tls = match &accept.tls {
        Some(files) => Some(
            crate::tls::acceptor(files)
                .map_err(|e| std::io::Error::other(format!("leafnodes tls: {e}")))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind((accept.host.as_str(), accept.port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!("Listening for leafnode connections on {addr}");
    let shared = Arc::new(Listening {
        bus,
        opts,
        accept,
        auth,
        tls,
        leafs,
        shutdown: shutdown.clone(),
    });
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a leafnode connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(serve_one(shared.clone(), stream, peer));
        }
    });
    Ok((addr, task))
}

/// What every accepted connection shares.
struct Listening {
    bus: Arc<Bus>,
    opts: Arc<Options>,
    accept: Accept,
    /// The server's own authentication, for leaf nodes when `leafnodes` has no authorization.
    auth: Arc<dyn junction_auth::Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    leafs: Arc<Leafs>,
    shutdown: CancellationToken,
}

async fn serve_one(l: Arc<Listening>, stream: TcpStream, peer: SocketAddr) {
    let Listening {
        bus,
        opts,
        accept,
        auth,
        tls,
        leafs,
        shutdown,
    } = &*l;
    let tls = tls.clone();
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let nonce = crate::nats::conn::nonce();
    let mut info = json!({
        "server_id": opts.server_id,
        "server_name": opts.server_name,
        "version": opts.version,
        "proto": 1,
        "headers": true,
        "max_payload": opts.max_payload,
        "nonce": nonce,
        "jetstream": opts.jetstream,
        // A dialling nats-server takes an INFO without these for a client port's.
        "client_id": bus.next_conn_id().0,
        "leafnode_urls": [],
    });
    if let Some(d) = &opts.jetstream_domain {
        info["domain"] = json!(d);
    }
    let own_users = !accept.users.is_empty() || accept.token.is_some();
    if own_users || auth.auth_required() {
        info["auth_required"] = json!(true);
    }
    if tls.is_some() {
        info["tls_required"] = json!(true);
    }
    if stream
        .write_all(format!("INFO {info}\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    // With TLS the far side starts its handshake after the INFO.
    let (mut rd, mut wr): (super::ReadHalf, super::WriteHalf) = match tls {
        Some(acceptor) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let (r, w) = tokio::io::split(s);
                    (Box::new(r), Box::new(w))
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, "leafnode TLS handshake error: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, "leafnode TLS handshake timed out");
                    return;
                }
            }
        }
        None => {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
    };
    let limits = Limits {
        max_control_line: opts.max_control_line.max(4096),
        max_payload: opts.max_payload.max(1 << 20) + 64 * 1024,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            if let Some(op) = proto::parse(&mut buf, limits).map_err(|e| e.to_string())? {
                return Ok::<Op, String>(op);
            }
            if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed before CONNECT".into());
            }
        }
    })
    .await;
    let connect: Value = match connect {
        Ok(Ok(Op::Connect(j))) => serde_json::from_slice(&j).unwrap_or_default(),
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
            let _ = wr.write_all(b"-ERR 'Authorization Violation'\r\n").await;
            let _ = wr.flush().await;
            tracing::warn!(peer = %peer, "leafnode connection closed before a valid CONNECT");
            return;
        }
    };
    let admitted = if own_users {
        accept.admit(&connect).map(|a| (a, None))
    } else {
        server_auth(auth, &connect, &nonce).await
    };
    let Some((account, perms)) = admitted else {
        let _ = wr.write_all(b"-ERR 'Authorization Violation'\r\n").await;
        let _ = wr.flush().await;
        tracing::error!(peer = %peer, "leafnode Authorization Violation");
        return;
    };
    let link = Arc::new(Link::with_permissions(
        Remote {
            urls: vec![peer.to_string()],
            account,
            ..Remote::default()
        },
        true,
        perms,
    ));
    leafs.links.locked().push(link.clone());
    let hs = Handshaken {
        rd,
        wr,
        buf,
        limits,
        early: Vec::new(),
        info: json!({
            "server_id": connect["server_id"],
            "server_name": connect["name"],
            "headers": connect["headers"].as_bool().unwrap_or(false),
        }),
        addr: Some(peer),
        url: format!("nats-leaf://{peer}"),
        loop_subject: None,
        rtt: None,
    };
    let ended = link::serve(bus, opts, &link, hs, &mut Vec::new(), shutdown).await;
    if let Ended::Dropped(why) | Ended::Failed(why) = ended {
        tracing::info!(peer = %peer, "Leafnode connection closed: {why}");
    }
    leafs.links.locked().retain(|l| !Arc::ptr_eq(l, &link));
}

/// A leaf node checked like a client: its account and permissions, or `None` when refused.
async fn server_auth(
    auth: &Arc<dyn junction_auth::Authenticator>,
    connect: &Value,
    nonce: &str,
) -> Option<(String, Option<Arc<junction_auth::Permissions>>)> {
    let text = |k: &str| connect[k].as_str().map(str::to_string);
    let creds = junction_auth::Credentials {
        user: text("user"),
        pass: text("pass"),
        token: text("auth_token"),
        nkey: text("nkey"),
        sig: text("sig"),
        jwt: text("jwt"),
        nonce: Some(nonce.to_string()),
        ..Default::default()
    };
    let none = creds.user.is_none()
        && creds.token.is_none()
        && creds.nkey.is_none()
        && creds.jwt.is_none();
    let identity = if none && !auth.auth_required() {
        auth.anonymous().or_else(|| auth.authenticate(&creds).ok())
    } else if none {
        auth.anonymous()
    } else if auth.costly(&creds) {
        // bcrypt and signatures stay off the reactor.
        let a = auth.clone();
        tokio::task::spawn_blocking(move || a.authenticate(&creds).ok())
            .await
            .ok()
            .flatten()
    } else {
        auth.authenticate(&creds).ok()
    }?;
    let perms = identity.permissions.filter(|p| !p.is_open());
    Some((identity.account, perms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_bind_accounts_and_tokens_are_checked() {
        let open = Accept::default();
        assert_eq!(open.admit(&json!({})).as_deref(), Some("$G"));
        let users = Accept {
            users: vec![
                LeafUser {
                    user: "a".into(),
                    password: "pa".into(),
                    account: Some("A".into()),
                },
                LeafUser {
                    user: "g".into(),
                    password: "pg".into(),
                    account: None,
                },
            ],
            ..Accept::default()
        };
        assert_eq!(
            users.admit(&json!({"user":"a","pass":"pa"})).as_deref(),
            Some("A")
        );
        assert_eq!(
            users.admit(&json!({"user":"g","pass":"pg"})).as_deref(),
            Some("$G")
        );
        assert_eq!(users.admit(&json!({"user":"a","pass":"no"})), None);
        assert_eq!(users.admit(&json!({})), None);
        let token = Accept {
            token: Some("t".into()),
            ..Accept::default()
        };
        assert!(token.admit(&json!({"auth_token":"t"})).is_some());
        assert!(token.admit(&json!({"auth_token":"x"})).is_none());
    }
}
