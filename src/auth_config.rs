//! The auth part of the configuration, in nats-server's keys: `authorization`, `accounts`
//! (users, exports, imports), `no_auth_user`, `system_account`, `operator` with `resolver` and
//! `resolver_preload`, and Junction's `external_jwt` block. Builds the authenticator and the
//! account bridges the bus needs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use junction_auth::permissions::{Entry, Permissions, Responses, Rules};
use junction_auth::server::{AuthConfig, MemoryResolver, Operator, Resolver, ServerAuth, User};
use junction_auth::{jwt, Authenticator};
use junction_config::{Item, Map, Value};
use junction_core::import::{self, Rename};
use junction_core::mapping::MapDest;
use junction_core::{Bus, DEFAULT_ACCOUNT};

use crate::settings::{at, bool_of, duration_of};
use crate::{js_limits, mapping_config};

/// The keys this module reads from the top level of the configuration.
pub const KEYS: &[&str] = &[
    "authorization",
    "accounts",
    "no_auth_user",
    "system_account",
    "no_system_account",
    "operator",
    "operators",
    "trusted",
    "trusted_keys",
    "resolver",
    "resolver_preload",
    "external_jwt",
    "mappings",
    "maps",
];

/// One import of an account.
#[derive(Debug, Clone)]
enum ImportDef {
    Stream {
        from: String,
        subject: String,
        rename: Rename,
    },
    Service {
        from: String,
        subject: String,
        local: String,
    },
}

/// One export of an account.
#[derive(Debug, Clone)]
struct ExportDef {
    subject: String,
    service: bool,
    /// `None`: public.
    accounts: Option<Vec<String>>,
    responses: import::Responses,
}

#[derive(Debug, Default, Clone)]
struct AccountDef {
    exports: Vec<ExportDef>,
    imports: Vec<ImportDef>,
    /// `jetstream: enabled` (or a `jetstream {}` block) in the account.
    jetstream: bool,
    /// The limits of the account's `jetstream { max_mem, max_file, max_streams, max_consumers }`.
    js_limits: junction_jetstream::AccountLimits,
    /// `mappings` (or `maps`): source subject and destinations, in the file's order.
    mappings: Vec<(String, Vec<MapDest>)>,
}

/// `resolver: { type: full, dir, allow_delete, hard_delete }`.
#[derive(Debug, Clone)]
pub struct JwtDir {
    pub dir: PathBuf,
    /// Accounts may be deleted (`$SYS.REQ.CLAIMS.DELETE`).
    pub allow_delete: bool,
    /// A deleted account's file is removed rather than renamed `<key>.jwt.deleted`.
    pub hard_delete: bool,
}

/// What the auth configuration amounts to.
pub struct Auth {
    pub authenticator: Arc<dyn Authenticator>,
    /// `authorization { timeout }`.
    pub timeout: Option<Duration>,
    pub system_account: Option<String>,
    accounts: HashMap<String, AccountDef>,
    /// Accounts whose definitions came from JWTs.
    from_jwt: std::collections::HashSet<String>,
    /// The operator's keys (its own and its signing keys); some only in operator mode.
    pub operator_keys: Vec<String>,
    /// A full resolver's directory, which account JWT updates through the system account
    /// write to.
    pub jwt_dir: Option<JwtDir>,
    /// The top level's `mappings`, for the default account.
    global_mappings: Vec<(String, Vec<MapDest>)>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            authenticator: Arc::new(junction_auth::Open {
                account: DEFAULT_ACCOUNT.to_string(),
            }),
            timeout: None,
            system_account: Some("$SYS".into()),
            accounts: HashMap::new(),
            from_jwt: Default::default(),
            operator_keys: Vec::new(),
            jwt_dir: None,
            global_mappings: Vec::new(),
        }
    }
}

pub(crate) fn str_of<'a>(item: &'a Item, key: &str) -> Result<&'a str> {
    item.as_str()
        .ok_or_else(|| anyhow!("{}: '{key}' must be a string", at(item)))
}

pub(crate) fn map_of<'a>(item: &'a Item, key: &str) -> Result<&'a Map> {
    item.as_map()
        .ok_or_else(|| anyhow!("{}: '{key}' must be a block", at(item)))
}

/// A subject or a list of subjects.
fn strings(item: &Item, key: &str) -> Result<Vec<String>> {
    crate::settings::strings_of(item, key, "a subject")
}

fn entries(item: &Item, key: &str) -> Result<Vec<Entry>> {
    strings(item, key)?
        .iter()
        .map(|s| Entry::parse(s).map_err(|e| anyhow!("{}: {e}", at(item))))
        .collect()
}

/// `publish: X` where X is a subject, a list (an allow list) or `{ allow, deny }`.
fn rules(item: &Item, key: &str) -> Result<Rules> {
    if let Some(m) = item.as_map() {
        let mut r = Rules::default();
        for (k, v) in m.iter() {
            match k.to_ascii_lowercase().as_str() {
                "allow" => r.allow = Some(entries(v, k)?),
                "deny" => r.deny = entries(v, k)?,
                _ => bail!("{}: unknown permission key '{k}'", at(v)),
            }
        }
        return Ok(r);
    }
    Ok(Rules {
        allow: Some(entries(item, key)?),
        deny: Vec::new(),
    })
}

fn permissions(item: &Item) -> Result<Permissions> {
    let m = map_of(item, "permissions")?;
    let mut p = Permissions::default();
    for (k, v) in m.iter() {
        match k.to_ascii_lowercase().as_str() {
            "publish" | "pub" | "import" => p.publish = rules(v, k)?,
            "subscribe" | "sub" | "export" => p.subscribe = rules(v, k)?,
            "allow_responses" | "publish_allow_responses" => {
                p.responses = match &v.value {
                    Value::Bool(true) => Some(Responses::default()),
                    Value::Bool(false) => None,
                    Value::Map(rm) => {
                        let mut r = Responses::default();
                        for (rk, rv) in rm.iter() {
                            match rk.to_ascii_lowercase().as_str() {
                                "max" | "max_msgs" | "max_messages" | "max_responses" => {
                                    let n = rv.as_i64().ok_or_else(|| {
                                        anyhow!("{}: 'max' must be a number", at(rv))
                                    })?;
                                    r.max = if n < 0 {
                                        0
                                    } else if n == 0 {
                                        1
                                    } else {
                                        u32::try_from(n).unwrap_or(u32::MAX)
                                    };
                                }
                                "expires" | "expiration" | "ttl" => {
                                    let d = duration_of(rv, rk)?;
                                    if !d.is_zero() {
                                        r.expires = d;
                                    }
                                }
                                _ => bail!("{}: unknown allow_responses key '{rk}'", at(rv)),
                            }
                        }
                        Some(r)
                    }
                    _ => bail!("{}: 'allow_responses' must be true or a block", at(v)),
                }
            }
            _ => bail!("{}: unknown permissions key '{k}'", at(v)),
        }
    }
    Ok(p)
}

/// A `users: [...]` list of an account (or of `authorization`).
fn users(
    item: &Item,
    account: &str,
    default_perms: Option<&Arc<Permissions>>,
) -> Result<Vec<User>> {
    let list = item
        .as_array()
        .ok_or_else(|| anyhow!("{}: 'users' must be a list", at(item)))?;
    let mut out = Vec::new();
    for u in list {
        let m = map_of(u, "users")?;
        let mut user = User {
            account: account.to_string(),
            permissions: default_perms.cloned(),
            ..Default::default()
        };
        for (k, v) in m.iter() {
            match k.to_ascii_lowercase().as_str() {
                "user" | "username" => user.name = Some(str_of(v, k)?.to_string()),
                "password" | "pass" => user.password = Some(scalar_text(v, k)?),
                "nkey" => user.nkey = Some(str_of(v, k)?.to_string()),
                "permissions" | "permission" => user.permissions = Some(Arc::new(permissions(v)?)),
                "account" => user.account = str_of(v, k)?.to_string(),
                "allowed_connection_types" | "connection_types" => {}
                _ if v.used_as_variable => {}
                _ => bail!("{}: unknown user key '{k}'", at(v)),
            }
        }
        if user.name.is_none() && user.nkey.is_none() {
            bail!("{}: a user needs 'user' or 'nkey'", at(u));
        }
        out.push(user);
    }
    Ok(out)
}

/// A password or token: a string, or a number written without quotes.
fn scalar_text(item: &Item, key: &str) -> Result<String> {
    match &item.value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        _ => bail!("{}: '{key}' must be a string", at(item)),
    }
}

fn exports(item: &Item) -> Result<Vec<ExportDef>> {
    let list = item
        .as_array()
        .ok_or_else(|| anyhow!("{}: 'exports' must be a list", at(item)))?;
    let mut out = Vec::new();
    for e in list {
        let m = map_of(e, "exports")?;
        let mut def = ExportDef {
            subject: String::new(),
            service: false,
            accounts: None,
            responses: import::Responses::Singleton,
        };
        for (k, v) in m.iter() {
            match k.to_ascii_lowercase().as_str() {
                "stream" => def.subject = str_of(v, k)?.to_string(),
                "service" => {
                    def.subject = str_of(v, k)?.to_string();
                    def.service = true;
                }
                "accounts" => def.accounts = Some(strings(v, k)?),
                "response" | "response_type" => {
                    def.responses = match str_of(v, k)?.to_ascii_lowercase().as_str() {
                        "single" | "singleton" => import::Responses::Singleton,
                        "stream" | "chunk" | "chunked" => import::Responses::Stream,
                        other => bail!("{}: unknown response type '{other}'", at(v)),
                    }
                }
                _ => {}
            }
        }
        if def.subject.is_empty() {
            bail!("{}: an export needs 'stream' or 'service'", at(e));
        }
        out.push(def);
    }
    Ok(out)
}

fn imports(item: &Item) -> Result<Vec<ImportDef>> {
    let list = item
        .as_array()
        .ok_or_else(|| anyhow!("{}: 'imports' must be a list", at(item)))?;
    let mut out = Vec::new();
    for i in list {
        let m = map_of(i, "imports")?;
        let source = |v: &Item, k: &str| -> Result<(String, String)> {
            let sm = map_of(v, k)?;
            let account = sm
                .get("account")
                .ok_or_else(|| anyhow!("{}: '{k}' needs 'account'", at(v)))?;
            let subject = sm
                .get("subject")
                .ok_or_else(|| anyhow!("{}: '{k}' needs 'subject'", at(v)))?;
            Ok((
                str_of(account, "account")?.to_string(),
                str_of(subject, "subject")?.to_string(),
            ))
        };
        let mut stream = None;
        let mut service = None;
        let (mut prefix, mut to) = (None, None);
        for (k, v) in m.iter() {
            match k.to_ascii_lowercase().as_str() {
                "stream" => stream = Some(source(v, k)?),
                "service" => service = Some(source(v, k)?),
                "prefix" => prefix = Some(str_of(v, k)?.to_string()),
                "to" | "local_subject" => to = Some(str_of(v, k)?.to_string()),
                _ => {}
            }
        }
        match (stream, service) {
            (Some((from, subject)), None) => {
                let rename = match (prefix, to) {
                    (Some(_), Some(_)) => {
                        bail!("{}: an import takes 'prefix' or 'to', not both", at(i))
                    }
                    (Some(p), None) => Rename::Prefix(p),
                    (None, Some(t)) => Rename::To {
                        from: subject.clone(),
                        to: t,
                    },
                    (None, None) => Rename::Same,
                };
                out.push(ImportDef::Stream {
                    from,
                    subject,
                    rename,
                });
            }
            (None, Some((from, subject))) => out.push(ImportDef::Service {
                local: to.unwrap_or_else(|| subject.clone()),
                from,
                subject,
            }),
            _ => bail!("{}: an import needs 'stream' or 'service'", at(i)),
        }
    }
    Ok(out)
}

/// Reads `path`, relative to the working directory or else to the configuration file.
fn read_relative(path: &str, item: &Item) -> Result<String> {
    let p = PathBuf::from(path);
    let candidates = [
        Some(p.clone()),
        item.file
            .as_ref()
            .and_then(|f| f.parent())
            .map(|d| d.join(&p)),
    ];
    for c in candidates.into_iter().flatten() {
        if let Ok(text) = std::fs::read_to_string(&c) {
            return Ok(text);
        }
    }
    bail!("{}: cannot read '{path}'", at(item))
}

/// `resolver: { type: full, dir: ... }`: account JWTs in `<dir>/<account>.jwt`.
struct DirResolver(PathBuf);

impl Resolver for DirResolver {
    fn account_jwt(&self, account: &str) -> Option<String> {
        if !account.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        std::fs::read_to_string(self.0.join(format!("{account}.jwt")))
            .ok()
            .map(|t| jwt::jwt_from_file(&t).to_string())
    }
}

fn external(item: &Item) -> Result<junction_auth::external::ExternalJwt> {
    let m = map_of(item, "external_jwt")?;
    let mut ext = junction_auth::external::ExternalJwt {
        keys: Vec::new(),
        issuer: None,
        audience: None,
        default_account: DEFAULT_ACCOUNT.to_string(),
        leeway: 0,
    };
    for (k, v) in m.iter() {
        match k.to_ascii_lowercase().as_str() {
            "issuer" => ext.issuer = Some(str_of(v, k)?.to_string()),
            "audience" => ext.audience = Some(str_of(v, k)?.to_string()),
            "account" => ext.default_account = str_of(v, k)?.to_string(),
            "leeway" => ext.leeway = duration_of(v, k)?.as_secs(),
            "keys" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| anyhow!("{}: 'external_jwt.keys' must be a list", at(v)))?;
                for key in list {
                    let km = map_of(key, "keys")?;
                    let alg = km
                        .get("alg")
                        .ok_or_else(|| anyhow!("{}: a key needs 'alg'", at(key)))?;
                    let pem = match (km.get("public_key_file"), km.get("public_key")) {
                        (Some(f), _) => Some(read_relative(str_of(f, "public_key_file")?, f)?),
                        (None, Some(p)) => Some(str_of(p, "public_key")?.to_string()),
                        _ => None,
                    };
                    let secret = match km.get("secret") {
                        Some(s) => Some(scalar_text(s, "secret")?),
                        None => None,
                    };
                    let parsed = junction_auth::external::Key::new(
                        str_of(alg, "alg")?,
                        pem.as_deref().map(str::as_bytes),
                        secret.as_deref().map(str::as_bytes),
                    )
                    .map_err(|e| anyhow!("{}: {e}", at(key)))?;
                    ext.keys.push(parsed);
                }
            }
            _ => bail!("{}: unknown key 'external_jwt.{k}'", at(v)),
        }
    }
    if ext.keys.is_empty() {
        bail!("{}: 'external_jwt' needs at least one key", at(item));
    }
    Ok(ext)
}

/// Reads the auth keys of the configuration.
pub fn load(map: &Map) -> Result<Auth> {
    let get = |k: &str| {
        map.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    };
    let mut cfg = AuthConfig {
        default_account: DEFAULT_ACCOUNT.to_string(),
        ..Default::default()
    };
    let mut auth = Auth::default();
    let mut any = false;
    let mut single_user: Option<User> = None;

    if let Some(block) = get("authorization") {
        any = true;
        let m = map_of(block, "authorization")?;
        let mut default_perms = None;
        if let Some(p) = m.get("default_permissions").or(m.get("default_permission")) {
            default_perms = Some(Arc::new(permissions(p)?));
        }
        for (k, v) in m.iter() {
            match k.to_ascii_lowercase().as_str() {
                "user" | "username" => {
                    single_user
                        .get_or_insert_with(|| User {
                            account: DEFAULT_ACCOUNT.into(),
                            ..Default::default()
                        })
                        .name = Some(str_of(v, k)?.to_string())
                }
                "password" | "pass" => {
                    single_user
                        .get_or_insert_with(|| User {
                            account: DEFAULT_ACCOUNT.into(),
                            ..Default::default()
                        })
                        .password = Some(scalar_text(v, k)?)
                }
                "token" => cfg.token = Some(scalar_text(v, k)?),
                "timeout" => auth.timeout = Some(duration_of(v, k)?),
                "users" => cfg
                    .users
                    .extend(users(v, DEFAULT_ACCOUNT, default_perms.as_ref())?),
                "permissions" => {
                    if let Some(u) = single_user.as_mut() {
                        u.permissions = Some(Arc::new(permissions(v)?));
                    }
                }
                "default_permissions" | "default_permission" => {}
                _ if v.used_as_variable => {}
                _ => bail!("{}: unknown key 'authorization.{k}'", at(v)),
            }
        }
        if let Some(u) = single_user.take() {
            if cfg.token.is_some() {
                bail!(
                    "{}: 'authorization' takes a user and password or a token, not both",
                    at(block)
                );
            }
            if u.name.is_none() || u.password.is_none() {
                bail!(
                    "{}: 'authorization' needs both 'user' and 'password'",
                    at(block)
                );
            }
            cfg.users.push(u);
        }
    }

    if let Some(block) = get("accounts") {
        any = true;
        match &block.value {
            Value::Array(list) => {
                for a in list {
                    auth.accounts
                        .entry(str_of(a, "accounts")?.to_string())
                        .or_default();
                }
            }
            Value::Map(m) => {
                for (name, def) in m.iter() {
                    if name == DEFAULT_ACCOUNT {
                        bail!("{}: '{name}' is a reserved account name", at(def));
                    }
                    let dm = map_of(def, name)?;
                    let default_perms = match dm.get("default_permissions") {
                        Some(p) => Some(Arc::new(permissions(p)?)),
                        None => None,
                    };
                    let mut acc = AccountDef::default();
                    for (k, v) in dm.iter() {
                        match k.to_ascii_lowercase().as_str() {
                            "users" => cfg.users.extend(users(v, name, default_perms.as_ref())?),
                            "exports" => acc.exports = exports(v)?,
                            "imports" => acc.imports = imports(v)?,
                            "mappings" | "maps" => acc.mappings = mapping_config::mappings(v)?,
                            "jetstream" if v.as_map().is_some() => {
                                acc.jetstream = true;
                                acc.js_limits = js_limits::from_config(v)?;
                            }
                            "jetstream" => {
                                acc.jetstream = match &v.value {
                                    junction_config::Value::Bool(b) => *b,
                                    junction_config::Value::String(s) => !matches!(
                                        s.to_ascii_lowercase().as_str(),
                                        "disabled" | "false"
                                    ),
                                    _ => true,
                                }
                            }
                            _ => {}
                        }
                    }
                    auth.accounts.insert(name.to_string(), acc);
                }
            }
            _ => bail!("{}: 'accounts' must be a block or a list", at(block)),
        }
    }

    if let Some(v) = get("mappings").or(get("maps")) {
        auth.global_mappings = mapping_config::mappings(v)?;
    }

    if let Some(v) = get("no_auth_user") {
        cfg.no_auth_user = Some(str_of(v, "no_auth_user")?.to_string());
    }
    if let Some(v) = get("system_account") {
        auth.system_account = Some(str_of(v, "system_account")?.to_string());
    }
    if let Some(v) = get("no_system_account") {
        if bool_of(v, "no_system_account")? {
            auth.system_account = None;
        }
    }

    if let Some(op) = get("operator").or(get("operators")).or(get("trusted")) {
        any = true;
        let mut keys = Vec::new();
        for text in strings(op, "operator")? {
            let token = if text.starts_with("eyJ") {
                text.clone()
            } else {
                read_relative(&text, op)?
            };
            let token = jwt::jwt_from_file(&token).to_string();
            let claims = jwt::decode(
                &token,
                junction_auth::nkey::Role::Operator,
                junction_auth::server::unix_now(),
            )
            .and_then(|c| c.expect_kind("operator"))
            .map_err(|e| anyhow!("{}: operator JWT '{text}': {e}", at(op)))?;
            if claims.iss != claims.sub {
                bail!("{}: operator JWT '{text}' is not self-signed", at(op));
            }
            if auth.system_account.as_deref() == Some("$SYS") {
                if let Some(sys) = claims.nats_str("system_account") {
                    auth.system_account = Some(sys.to_string());
                }
            }
            keys.push(claims.sub.clone());
            keys.extend(claims.signing_keys());
        }
        let resolver: Arc<dyn Resolver> = match get("resolver") {
            None => bail!("{}: an operator needs a 'resolver'", at(op)),
            Some(r) => match &r.value {
                Value::String(s) if s.eq_ignore_ascii_case("memory") || s.eq_ignore_ascii_case("mem") => {
                    let mut preload = HashMap::new();
                    if let Some(p) = get("resolver_preload") {
                        for (k, v) in map_of(p, "resolver_preload")?.iter() {
                            preload.insert(k.to_string(), str_of(v, k)?.to_string());
                        }
                    }
                    Arc::new(MemoryResolver(preload))
                }
                Value::Map(m) => {
                    let dir = m
                        .get("dir")
                        .ok_or_else(|| anyhow!("{}: 'resolver' needs a 'dir'", at(r)))?;
                    let dir = PathBuf::from(str_of(dir, "dir")?);
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating the resolver directory {}", dir.display()))?;
                    let flag = |k: &str| -> Result<bool> {
                        m.get(k).map_or(Ok(false), |v| bool_of(v, k))
                    };
                    let full = m
                        .get("type")
                        .and_then(Item::as_str)
                        .is_none_or(|t| t.eq_ignore_ascii_case("full"));
                    if full {
                        auth.jwt_dir = Some(JwtDir {
                            dir: dir.clone(),
                            allow_delete: flag("allow_delete")?,
                            hard_delete: flag("hard_delete")?,
                        });
                    }
                    Arc::new(DirResolver(dir))
                }
                _ => bail!(
                    "{}: 'resolver' must be MEMORY or {{ type: full, dir: ... }} (URL resolvers are not supported)",
                    at(r)
                ),
            },
        };
        // Exports and imports of the accounts the resolver knows now.
        let known: Vec<String> = match get("resolver_preload") {
            Some(p) => map_of(p, "resolver_preload")?
                .iter()
                .map(|(k, _)| k.to_string())
                .collect(),
            None => Vec::new(),
        };
        let mut dir_known = Vec::new();
        if let Some(Value::Map(m)) = get("resolver").map(|r| &r.value) {
            if let Some(d) = m.get("dir").and_then(Item::as_str) {
                if let Ok(rd) = std::fs::read_dir(d) {
                    for e in rd.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if let Some(k) = name.strip_suffix(".jwt") {
                            dir_known.push(k.to_string());
                        }
                    }
                }
            }
        }
        auth.operator_keys = keys.clone();
        let operator = Operator { keys, resolver };
        for key in known.iter().chain(&dir_known) {
            if let Some(def) = jwt_account(&operator, key) {
                auth.accounts.insert(key.clone(), def);
                auth.from_jwt.insert(key.clone());
            }
        }
        cfg.operator = Some(operator);
    }

    if let Some(e) = get("external_jwt") {
        any = true;
        cfg.external = Some(external(e)?);
    }

    if any || cfg.no_auth_user.is_some() {
        if cfg.users.is_empty()
            && cfg.token.is_none()
            && cfg.operator.is_none()
            && cfg.external.is_none()
        {
            // Accounts without users: nobody needs to authenticate.
            return Ok(auth);
        }
        let server = ServerAuth::new(cfg).map_err(|e| anyhow!("auth configuration: {e}"))?;
        auth.authenticator = Arc::new(server);
    }
    Ok(auth)
}

/// The exports, imports and mappings in an account JWT the operator signed.
fn jwt_account(op: &Operator, key: &str) -> Option<AccountDef> {
    let token = op.resolver.account_jwt(key)?;
    let claims = jwt::decode(
        &token,
        junction_auth::nkey::Role::Operator,
        junction_auth::server::unix_now(),
    )
    .ok()?;
    if !op.keys.contains(&claims.iss) || claims.sub != key {
        return None;
    }
    // An account whose JWT fails the library's checks is refused at login (as by
    // nats-server): nothing to wire.
    let mappings = match claims.mappings() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(account = key, error = %e, "the account JWT is not valid");
            return None;
        }
    };
    let mut def = AccountDef {
        mappings: mapping_config::jwt_mappings(key, mappings),
        ..AccountDef::default()
    };
    (def.jetstream, def.js_limits) = js_limits::from_jwt(claims.jetstream());
    let arr = |name: &str| {
        claims
            .nats
            .get(name)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for e in arr("exports") {
        let Some(subject) = e.get("subject").and_then(|s| s.as_str()) else {
            continue;
        };
        let service = e.get("type").and_then(|t| t.as_str()) == Some("service");
        let responses = match e.get("response_type").and_then(|t| t.as_str()) {
            Some("Stream") | Some("Chunked") => import::Responses::Stream,
            _ => import::Responses::Singleton,
        };
        def.exports.push(ExportDef {
            subject: subject.to_string(),
            service,
            accounts: None,
            responses,
        });
    }
    for i in arr("imports") {
        let (Some(subject), Some(from)) = (
            i.get("subject").and_then(|s| s.as_str()),
            i.get("account").and_then(|s| s.as_str()),
        ) else {
            continue;
        };
        let to = i
            .get("local_subject")
            .or(i.get("to"))
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty());
        if i.get("type").and_then(|t| t.as_str()) == Some("service") {
            def.imports.push(ImportDef::Service {
                from: from.to_string(),
                subject: subject.to_string(),
                local: to.unwrap_or(subject).to_string(),
            });
        } else {
            def.imports.push(ImportDef::Stream {
                from: from.to_string(),
                subject: subject.to_string(),
                rename: match to {
                    Some(t) => Rename::To {
                        from: subject.to_string(),
                        to: t.to_string(),
                    },
                    None => Rename::Same,
                },
            });
        }
    }
    Some(def)
}

impl Auth {
    /// Creates the configured accounts on `bus` and wires their imports to the exports they
    /// name. Returns warnings for imports no export allows.
    /// The JetStream limits of the accounts that set some.
    pub fn jetstream_limits(
        &self,
    ) -> std::collections::HashMap<String, junction_jetstream::AccountLimits> {
        self.accounts
            .iter()
            .filter(|(_, a)| a.jetstream)
            .map(|(n, a)| (n.clone(), a.js_limits))
            .collect()
    }

    /// The accounts JetStream is enabled in: those that say so, or (when none does) every
    /// account, as nats-server decides. In operator mode, only those whose JWT allows it.
    pub fn jetstream_accounts(&self) -> Option<Vec<String>> {
        let mut v: Vec<String> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.jetstream)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        (!self.operator_keys.is_empty() || !v.is_empty()).then_some(v)
    }

    pub fn wire(&self, bus: &Bus) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let mut tokens = std::collections::HashSet::new();
        for name in self.accounts.keys() {
            bus.account_or_create(name);
        }
        if let Some(sys) = &self.system_account {
            bus.account_or_create(sys);
        }
        // Mappings come only from this file: an account it no longer maps (or names) has none.
        bus.account_or_create(DEFAULT_ACCOUNT);
        let none = Vec::new();
        for acc in bus.accounts() {
            let list = match self.accounts.get(acc.name()) {
                Some(a) => &a.mappings,
                None if acc.name() == DEFAULT_ACCOUNT => &self.global_mappings,
                None => &none,
            };
            acc.set_mappings(mapping_config::made(list));
        }
        let mut names: Vec<&String> = self.accounts.keys().collect();
        names.sort();
        for importer in names {
            for imp in &self.accounts[importer].imports {
                let (from, subject, service) = match imp {
                    ImportDef::Stream { from, subject, .. } => (from, subject, false),
                    ImportDef::Service { from, subject, .. } => (from, subject, true),
                };
                let export = self.accounts.get(from).and_then(|a| {
                    a.exports.iter().find(|e| {
                        e.service == service
                            && junction_auth::subject::covers(&e.subject, subject)
                            && e.accounts.as_ref().is_none_or(|l| l.contains(importer))
                    })
                });
                let Some(export) = export else {
                    // nats-server refuses to start on such an import; so do we, for the
                    // configuration file (account JWTs come and go: there it is a warning).
                    let what = format!(
                        "account {importer}: {} import of {subject:?} from account {from} is not authorized by any export",
                        if service { "service" } else { "stream" }
                    );
                    if self.from_jwt.contains(importer) {
                        warnings.push(format!("{what}; ignored"));
                        continue;
                    }
                    bail!("{what}");
                };
                let exp = bus.account_or_create(from);
                let imp_acc = bus.account_or_create(importer);
                let result = match imp {
                    ImportDef::Stream { rename, .. } => {
                        import::stream_import(&exp, subject, &imp_acc, rename.clone())
                    }
                    ImportDef::Service { local, .. } => {
                        let mut token = random_token();
                        while !tokens.insert(token.clone()) {
                            token = random_token();
                        }
                        let mut seed = [0u8; 8];
                        let _ = getrandom::getrandom(&mut seed);
                        import::service_import(
                            &exp,
                            subject,
                            &imp_acc,
                            local,
                            export.responses,
                            &token,
                            u64::from_le_bytes(seed),
                        )
                    }
                };
                if result.is_err() {
                    warnings.push(format!(
                        "account {importer}: import of {subject:?} is not a valid subject; ignored"
                    ));
                }
            }
        }
        Ok(warnings)
    }
}

/// Six characters that make this server's reply subjects its own.
fn random_token() -> String {
    let mut raw = [0u8; 8];
    let _ = getrandom::getrandom(&mut raw);
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = u64::from_le_bytes(raw);
    (0..6)
        .map(|_| {
            let c = DIGITS[(n % 62) as usize] as char;
            n /= 62;
            c
        })
        .collect()
}

impl Auth {
    /// What wiring accounts into the bus depends on (imports, exports, the system account):
    /// a reload cannot change it while running.
    pub fn wiring(&self) -> String {
        let mut names: Vec<&String> = self.accounts.keys().collect();
        names.sort();
        let mut out = format!(
            "system={:?};mappings={:?};",
            self.system_account, self.global_mappings
        );
        for n in names {
            let a = &self.accounts[n];
            out.push_str(&format!(
                "{n}:{:?}/{:?}/{:?};",
                a.imports, a.exports, a.mappings
            ));
        }
        out
    }
}

/// The authenticator the frontends hold: a configuration reload swaps what it delegates to, so
/// connections made afterwards are checked against the new users and permissions.
pub struct Swappable(std::sync::RwLock<Arc<dyn Authenticator>>);

impl Swappable {
    pub fn new(inner: Arc<dyn Authenticator>) -> Self {
        Swappable(std::sync::RwLock::new(inner))
    }

    pub fn swap(&self, inner: Arc<dyn Authenticator>) {
        *junction_core::sync::ReadWrite::write_locked(&self.0) = inner;
    }

    fn current(&self) -> Arc<dyn Authenticator> {
        junction_core::sync::ReadWrite::read_locked(&self.0).clone()
    }
}

impl Authenticator for Swappable {
    fn auth_required(&self) -> bool {
        self.current().auth_required()
    }
    fn nonce_required(&self) -> bool {
        self.current().nonce_required()
    }
    fn authenticate(
        &self,
        creds: &junction_auth::Credentials,
    ) -> Result<junction_auth::Identity, junction_auth::AuthError> {
        self.current().authenticate(creds)
    }
    fn costly(&self, creds: &junction_auth::Credentials) -> bool {
        self.current().costly(creds)
    }
    fn anonymous(&self) -> Option<junction_auth::Identity> {
        self.current().anonymous()
    }
    fn exchange(
        &self,
        method: &str,
        creds: &junction_auth::Credentials,
    ) -> Option<Box<dyn junction_auth::Exchange>> {
        self.current().exchange(method, creds)
    }
}
