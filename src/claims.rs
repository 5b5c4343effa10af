//! Account JWT updates while running, as nats-server's full resolver takes them through the
//! system account (what `nsc push` and `nsc delete --rm-jwt` use):
//!
//! - `$SYS.REQ.CLAIMS.UPDATE` (and per account `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE`, or the
//!   older `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`): an account JWT, checked, written to the
//!   resolver's directory and applied at once (imports, exports, mappings, revocations, limits
//!   and JetStream), before the answer `{"data": {"code": 200, "message": "jwt updated"}}`;
//! - `$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP`: the account's JWT;
//! - `$SYS.REQ.CLAIMS.LIST`: the accounts the directory holds;
//! - `$SYS.REQ.CLAIMS.DELETE`: a JWT the operator signed for itself listing accounts to delete
//!   (only with `allow_delete: true`; renamed `<key>.jwt.deleted` unless `hard_delete: true`).
//!
//! Only users of the system account reach these subjects. Unlike nats-server 2.9, a JWT whose
//! issuer the operator does not trust is refused before it is written (nats-server writes it,
//! and the account then refuses its users).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use junction_auth::jwt;
use junction_auth::nkey::{self, Role};
use junction_core::{Account, Bus, ConnId, Delivery, FlushBatch, Message, Sink, Subscription};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth_config::JwtDir;

/// Requests waiting to be answered; more are dropped (the requester times out).
const QUEUE: usize = 64;
/// How long an update waits for the server to apply it before answering anyway.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// Asks the main loop to apply the directory's accounts, and says when it did.
pub(crate) type Changed = mpsc::UnboundedSender<oneshot::Sender<()>>;

/// Who answers (the `server` part of each answer).
#[derive(Clone)]
pub(crate) struct ServerIdent {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) version: String,
    pub(crate) jetstream: bool,
}

struct Request {
    subject: Bytes,
    reply: Option<Bytes>,
    payload: Bytes,
}

struct Requests(mpsc::Sender<Request>);

impl Sink for Requests {
    fn deliver(&self, _sub: &Subscription, msg: &Message, _batch: &mut FlushBatch) -> Delivery {
        let request = Request {
            subject: msg.subject.clone(),
            reply: msg.reply.clone(),
            payload: Bytes::copy_from_slice(&msg.payload),
        };
        match self.0.try_send(request) {
            Ok(()) => Delivery::Queued,
            Err(_) => Delivery::Dropped,
        }
    }

    fn flush(&self) {}
}

/// What the requests work with.
struct Claims {
    dir: JwtDir,
    /// The operator's keys: the accounts' trusted issuers.
    keys: Vec<String>,
    system_account: String,
}

/// An answer: the account it is about, and a message or an error.
struct Outcome {
    account: Option<String>,
    result: Result<String, String>,
    changed: bool,
}

impl Outcome {
    fn ok(account: &str, message: String, changed: bool) -> Self {
        let account = (!account.is_empty()).then(|| account.to_string());
        Outcome {
            account,
            result: Ok(message),
            changed,
        }
    }

    fn err(account: &str, what: &str, e: impl std::fmt::Display) -> Self {
        let account = (!account.is_empty()).then(|| account.to_string());
        Outcome {
            account,
            result: Err(format!("{what} - {e}")),
            changed: false,
        }
    }
}

/// Starts the service in `system_account`.
pub(crate) fn start(
    bus: &Arc<Bus>,
    system_account: &str,
    dir: JwtDir,
    keys: Vec<String>,
    ident: ServerIdent,
    changed: Changed,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let account = bus.account_or_create(system_account);
    let (tx, rx) = mpsc::channel(QUEUE);
    let sink: Arc<dyn Sink> = Arc::new(Requests(tx));
    let conn = bus.next_conn_id();
    let subjects = [
        "$SYS.REQ.CLAIMS.UPDATE",
        "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE",
        "$SYS.ACCOUNT.*.CLAIMS.UPDATE",
        "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
        "$SYS.REQ.CLAIMS.LIST",
        "$SYS.REQ.CLAIMS.DELETE",
    ];
    let subjects = subjects.map(|s| Bytes::from_static(s.as_bytes()));
    let subs = account.subscribe_service(conn, subjects, &sink);
    tracing::info!(
        "Managing all jwt in exclusive directory {}",
        dir.dir.display()
    );
    let claims = Arc::new(Claims {
        dir,
        keys,
        system_account: system_account.to_string(),
    });
    tokio::spawn(run(
        claims, account, conn, rx, subs, ident, changed, shutdown,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    claims: Arc<Claims>,
    account: Arc<Account>,
    origin: ConnId,
    mut rx: mpsc::Receiver<Request>,
    subs: Vec<Arc<Subscription>>,
    ident: ServerIdent,
    changed: Changed,
    shutdown: CancellationToken,
) {
    let seq = AtomicU64::new(0);
    loop {
        let req = tokio::select! {
            _ = shutdown.cancelled() => break,
            req = rx.recv() => match req {
                Some(r) => r,
                None => break,
            },
        };
        // File reads and writes, and signature checks, off the reactor; one at a time.
        let c = claims.clone();
        let answer = tokio::task::spawn_blocking(move || c.answer(&req.subject, &req.payload))
            .await
            .ok()
            .flatten();
        let Some(answer) = answer else {
            continue;
        };
        let body = match answer {
            Answer::Raw(b) => b,
            Answer::List(ids) => json_bytes(&json!({
                "server": server_info(&ident, &seq),
                "data": ids,
            })),
            Answer::Outcome(o) => {
                if o.changed {
                    // Applied before the answer, as nats-server applies it.
                    let (done, applied) = oneshot::channel();
                    if changed.send(done).is_ok() {
                        let _ = tokio::time::timeout(APPLY_WAIT, applied).await;
                    }
                }
                log_outcome(&o);
                json_bytes(&outcome_json(&o, server_info(&ident, &seq)))
            }
        };
        if let Some(reply) = req.reply {
            account.publish_one(&Message::new(reply, None, body, origin));
        }
    }
    for sub in subs {
        account.unsubscribe(&sub);
    }
}

enum Answer {
    /// A message as it is (a looked-up JWT).
    Raw(Bytes),
    List(Vec<String>),
    Outcome(Outcome),
}

impl Claims {
    fn answer(&self, subject: &[u8], payload: &[u8]) -> Option<Answer> {
        let subject = std::str::from_utf8(subject).ok()?;
        let t: Vec<&str> = subject.split('.').collect();
        let token = String::from_utf8_lossy(payload);
        Some(match t.as_slice() {
            ["$SYS", "REQ", "CLAIMS", "UPDATE"] => Answer::Outcome(self.update(&token, None)),
            ["$SYS", "REQ", "ACCOUNT", key, "CLAIMS", "UPDATE"]
            | ["$SYS", "ACCOUNT", key, "CLAIMS", "UPDATE"] => {
                Answer::Outcome(self.update(&token, Some(key)))
            }
            ["$SYS", "REQ", "ACCOUNT", key, "CLAIMS", "LOOKUP"] => {
                // An account the directory does not hold gets no answer (as from nats-server).
                Answer::Raw(Bytes::from(self.lookup(key)?))
            }
            ["$SYS", "REQ", "CLAIMS", "LIST"] => Answer::List(self.list()),
            ["$SYS", "REQ", "CLAIMS", "DELETE"] => Answer::Outcome(self.delete(&token)),
            _ => return None,
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.dir.join(format!("{key}.jwt"))
    }

    /// Checks an account JWT as the JWT library does before a server takes it, and writes it.
    fn update(&self, token: &str, want: Option<&str>) -> Outcome {
        const FAILED: &str = "jwt update resulted in error";
        // (Its times are not checked here, as by nats-server: an expired account refuses its
        // users at login.)
        let claims = match jwt::verified(token, Role::Operator) {
            Ok(c) if c.kind() == "account" => c,
            Ok(_) => return Outcome::err("n/a", FAILED, "not account claim"),
            // A user JWT (an account signs those) is told what it is not.
            Err(_) if jwt::verified(token, Role::Account).is_ok_and(|c| c.kind() != "account") => {
                return Outcome::err("n/a", FAILED, "not account claim")
            }
            Err(e) => return Outcome::err("n/a", FAILED, e),
        };
        let key = claims.sub.as_str();
        let invalid = |e: &dyn std::fmt::Display| Outcome::err(key, "jwt validation failed", e);
        if !nkey::is_public_key(key, Role::Account) {
            return invalid(&"expected subject to be account public key");
        }
        if let Err(e) = claims.mappings() {
            return invalid(&e);
        }
        if let Some(w) = want {
            if w != key {
                return Outcome::err(w, FAILED, "subject does not match jwt content");
            }
        }
        if !self.keys.contains(&claims.iss) {
            return Outcome::err(key, FAILED, "issuer is not trusted by the operator");
        }
        match write_file(&self.path(key), token.trim()) {
            Ok(()) => Outcome::ok(key, "jwt updated".into(), true),
            Err(e) => Outcome::err(key, FAILED, e),
        }
    }

    fn lookup(&self, key: &str) -> Option<String> {
        if !nkey::is_public_key(key, Role::Account) {
            return None;
        }
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        Some(jwt::jwt_from_file(&text).to_string())
    }

    fn list(&self) -> Vec<String> {
        let now = junction_auth::server::unix_now();
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".jwt")?;
                if !nkey::is_public_key(key, Role::Account) {
                    return None;
                }
                // Expired accounts are left out, as nats-server leaves them out.
                let text = std::fs::read_to_string(e.path()).ok()?;
                let claims = jwt::verified(jwt::jwt_from_file(&text), Role::Operator).ok()?;
                (!claims.exp.is_some_and(|x| x > 0 && x < now)).then(|| key.to_string())
            })
            .collect();
        ids.sort();
        ids
    }

    /// Deletes the accounts a JWT the operator signed for itself lists (`nats.accounts`).
    fn delete(&self, token: &str) -> Outcome {
        let c = match jwt::decode(token, Role::Operator, junction_auth::server::unix_now()) {
            Ok(c) => c,
            Err(e) => return Outcome::err("", "delete accounts request by  failed", e),
        };
        let ids = match self.deletable(&c) {
            Ok(ids) => ids,
            Err(e) => {
                let what = format!("delete accounts request by {} failed", c.sub);
                return Outcome::err("", &what, e);
            }
        };
        let mut errors = Vec::new();
        let mut done = 0;
        for id in &ids {
            let path = self.path(id);
            let r = if self.dir.hard_delete {
                std::fs::remove_file(&path)
            } else {
                let mut to = path.clone().into_os_string();
                to.push(".deleted");
                std::fs::rename(&path, to)
            };
            match r {
                Ok(()) => done += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => done += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Outcome::ok("", format!("deleted {done} accounts"), true)
        } else {
            Outcome {
                changed: true,
                ..Outcome::err(
                    "",
                    &format!("deleted {done} accounts, failed for {}", errors.len()),
                    errors.join("\n"),
                )
            }
        }
    }

    /// The accounts a delete request may delete, or why it may not.
    fn deletable(&self, c: &jwt::Claims) -> Result<Vec<String>, String> {
        if !self.dir.allow_delete {
            return Err("delete must be enabled in server config".into());
        }
        if c.sub != c.iss {
            return Err("not self signed".into());
        }
        if !self.keys.contains(&c.iss) {
            return Err("not trusted".into());
        }
        let list = c
            .nats
            .get("accounts")
            .and_then(Value::as_array)
            .ok_or("malformed request")?;
        let mut ids = Vec::with_capacity(list.len());
        for v in list {
            let id = v.as_str().filter(|k| nkey::is_public_key(k, Role::Account));
            let Some(id) = id else {
                return Err("malformed request".into());
            };
            if id == self.system_account {
                return Err("not allowed to delete system account".into());
            }
            ids.push(id.to_string());
        }
        Ok(ids)
    }
}

/// Writes `text` to `path` whole: a temporary file renamed over it.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn log_outcome(o: &Outcome) {
    let acc = o.account.as_deref().unwrap_or("");
    match &o.result {
        Ok(m) => tracing::info!(account = acc, "{m}"),
        Err(e) => tracing::error!(account = acc, "{e}"),
    }
}

fn outcome_json(o: &Outcome, server: Value) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(a) = &o.account {
        m.insert("account".into(), json!(a));
    }
    match &o.result {
        Ok(msg) => {
            m.insert("code".into(), json!(200));
            m.insert("message".into(), json!(msg));
            json!({"server": server, "data": m})
        }
        Err(e) => {
            m.insert("code".into(), json!(500));
            m.insert("description".into(), json!(e));
            json!({"server": server, "error": m})
        }
    }
}

fn server_info(s: &ServerIdent, seq: &AtomicU64) -> Value {
    json!({
        "name": s.name,
        "host": s.host,
        "id": s.id,
        "ver": s.version,
        "jetstream": s.jetstream,
        "seq": seq.fetch_add(1, Ordering::Relaxed) + 1,
        "time": humantime_now(),
    })
}

fn humantime_now() -> String {
    junction_web::rfc3339(std::time::SystemTime::now())
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
