//! Stream and consumer configurations as the JetStream API spells them (nats-server 2.10's JSON
//! field names and defaults), with the checks nats-server applies when one is created.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::errors::ApiError;

/// Nanoseconds, as the API carries durations.
pub const SECOND: i64 = 1_000_000_000;
/// The duplicate window when a stream does not set one.
pub const DEFAULT_DUPLICATE_WINDOW: i64 = 120 * SECOND;
/// The acknowledgement wait when a consumer does not set one.
pub const DEFAULT_ACK_WAIT: i64 = 30 * SECOND;
/// Pull requests a consumer keeps waiting when it does not say.
pub const DEFAULT_MAX_WAITING: i64 = 512;
/// Unacknowledged messages a consumer may have out when it does not say.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// How long an ephemeral consumer outlives its last interest when it does not say.
pub const DEFAULT_INACTIVE_THRESHOLD: i64 = 5 * SECOND;
/// Longest stream and consumer name.
pub const MAX_NAME_LEN: usize = 255;
/// The longest description of a stream or consumer.
pub const MAX_DESCRIPTION_LEN: usize = 4 * 1024;

fn minus_one() -> i64 {
    -1
}
fn one() -> i64 {
    1
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A setting that a client may send as `null` for its default (a list as Go's nil slice or
/// async-nats' empty `Vec`, async-nats' unset `consumer_limits`).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    #[default]
    Limits,
    Interest,
    #[serde(rename = "workqueue")]
    WorkQueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    #[default]
    Old,
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// How a stream asks for its messages to be kept on the disk (nats-server 2.10's
/// `compression`). Junction accepts both and stores messages as they came: the setting is
/// kept and reported, and changes nothing a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    S2,
}

/// The defaults and the most a stream allows its consumers (nats-server 2.10's
/// `consumer_limits`): a consumer that does not set these gets them, and one that asks for
/// more is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsumerLimits {
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inactive_threshold: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
}

/// Where a stream republishes what it stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RePublish {
    #[serde(default)]
    pub src: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers_only: bool,
}

/// How a stream renames what it captures before storing it (nats-server 2.10's
/// `subject_transform`; see `junction_core::transform`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTransform {
    #[serde(default)]
    pub src: String,
    #[serde(default)]
    pub dest: String,
}

/// A stream this one copies from (mirror or source), within the same account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub opt_start_seq: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// Copy only what these sources match, renamed (nats-server 2.10).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub subject_transforms: Vec<SubjectTransform>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl StreamSource {
    /// What it takes from its origin: its transforms' sources (`>` for an empty one), or its
    /// filter (none: everything).
    pub fn filters(&self) -> Vec<String> {
        if self.subject_transforms.is_empty() {
            return (!self.filter_subject.is_empty())
                .then(|| self.filter_subject.clone())
                .into_iter()
                .collect();
        }
        self.subject_transforms
            .iter()
            .map(|t| if t.src.is_empty() { ">" } else { &t.src }.to_string())
            .collect()
    }

    /// What `subject` becomes in the copy: renamed by the first transform whose source
    /// matches it (`None`: kept as it is).
    pub fn rename(&self, subject: &[u8]) -> Option<bytes::Bytes> {
        let t = self.subject_transforms.iter().find(|t| {
            let from = if t.src.is_empty() { ">" } else { &t.src };
            junction_core::subject::matches(from.as_bytes(), subject)
        })?;
        let from = if t.src.is_empty() { ">" } else { &t.src };
        let tr = junction_core::transform::Transform::new(from, &t.dest).ok()??;
        tr.apply(std::str::from_utf8(subject).ok()?)
            .map(bytes::Bytes::from)
    }

    /// Refuses an `external` whose API or deliver prefix is not a subject (they become the
    /// subjects of requests and deliveries).
    fn check_external(&self) -> Result<(), ApiError> {
        let Some(ext) = self.other.get("external") else {
            return Ok(());
        };
        for field in ["api", "deliver"] {
            match ext.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(p))
                    if p.is_empty()
                        || junction_core::subject::is_valid_literal_subject(
                            p.trim_end_matches('.').as_bytes(),
                        ) => {}
                Some(_) => {
                    return Err(ApiError::invalid_config(format!(
                        "stream external {field} prefix is not a valid subject"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Refuses subject transforms nats-server refuses on a mirror or a source.
    fn check_transforms(&self, mirror: bool) -> Result<(), ApiError> {
        let (what, codes) = if mirror {
            ("mirror", [10150, 10151, 10154, 10152])
        } else {
            ("source", [10144, 10145, 10146, 10147])
        };
        if !self.filter_subject.is_empty() && !self.subject_transforms.is_empty() {
            return Err(ApiError::new(
                400,
                codes[0],
                format!("{what} with multiple subject transforms cannot also have a single subject filter"),
            ));
        }
        for t in &self.subject_transforms {
            if !t.src.is_empty() && !junction_core::subject::is_valid_subject(t.src.as_bytes()) {
                return Err(ApiError::new(
                    400,
                    codes[1],
                    format!("{what} subject filter is invalid"),
                ));
            }
            if let Err(e) = junction_core::transform::Transform::new(&t.src, &t.dest) {
                // nats-server 2.10's words for a source's; a mirror's (10154) is 2.11's.
                let why = if mirror {
                    format!("mirror transform: {e}")
                } else {
                    "source transform destination is invalid".to_string()
                };
                return Err(ApiError::new(400, codes[2], why));
            }
        }
        let src = |t: &SubjectTransform| {
            if t.src.is_empty() {
                ">".to_string()
            } else {
                t.src.clone()
            }
        };
        for (i, a) in self.subject_transforms.iter().enumerate() {
            for (j, b) in self.subject_transforms.iter().enumerate() {
                let clash = if mirror {
                    junction_core::subject::overlaps(&src(a), &src(b))
                } else {
                    junction_core::subject::covers(&src(b), &src(a))
                };
                if i != j && clash {
                    return Err(ApiError::new(
                        400,
                        codes[3],
                        if mirror {
                            "mirror subject filters can not overlap"
                        } else {
                            "source filters can not overlap"
                        },
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A stream's configuration. Fields Junction does not act on are kept as the client sent them
/// (`other`), so they come back in info and count in the "same configuration" comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default = "minus_one")]
    pub max_consumers: i64,
    #[serde(default = "minus_one")]
    pub max_msgs: i64,
    #[serde(default = "minus_one")]
    pub max_bytes: i64,
    #[serde(default)]
    pub max_age: i64,
    #[serde(default = "minus_one")]
    pub max_msgs_per_subject: i64,
    #[serde(default = "minus_one")]
    pub max_msg_size: i64,
    #[serde(default)]
    pub discard: Discard,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default = "one")]
    pub num_replicas: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicate_window: i64,
    #[serde(default)]
    pub sealed: bool,
    #[serde(default)]
    pub deny_delete: bool,
    #[serde(default)]
    pub deny_purge: bool,
    #[serde(default)]
    pub allow_rollup_hdrs: bool,
    #[serde(default)]
    pub allow_direct: bool,
    #[serde(default)]
    pub mirror_direct: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub discard_new_per_subject: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_ack: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<RePublish>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<SubjectTransform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<StreamSource>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub sources: Vec<StreamSource>,
    #[serde(default)]
    pub compression: Compression,
    /// The sequence of a new stream's first message.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub first_seq: u64,
    /// async-nats sends `null` when it sets none.
    #[serde(default, deserialize_with = "nullable")]
    pub consumer_limits: ConsumerLimits,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A consumer's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_group: Option<String>,
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<String>,
    #[serde(default)]
    pub ack_policy: AckPolicy,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ack_wait: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_deliver: i64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub backoff: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub filter_subjects: Vec<String>,
    #[serde(default)]
    pub replay_policy: ReplayPolicy,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_limit_bps: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_freq: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_waiting: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub flow_control: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_heartbeat: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers_only: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_batch: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_expires: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_bytes: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inactive_threshold: i64,
    #[serde(default)]
    pub num_replicas: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub mem_storage: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    #[default]
    All,
    Last,
    New,
    #[serde(rename = "by_start_sequence")]
    ByStartSequence,
    #[serde(rename = "by_start_time")]
    ByStartTime,
    #[serde(rename = "last_per_subject")]
    LastPerSubject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// nats-server's zero value: a request that leaves the policy out gets none.
    #[default]
    None,
    All,
    Explicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplayPolicy {
    #[default]
    Instant,
    Original,
}

/// A name nats-server accepts for a stream or consumer: not empty, no whitespace, no `.`, `*`,
/// `>`, path separators or control characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

impl StreamConfig {
    /// Fills in what the server decides when the client left it out, and checks the rest, in
    /// nats-server 2.10's order (`checkStreamCfg`: the first check that fails decides the
    /// error a client sees).
    pub fn normalize(&mut self) -> Result<(), ApiError> {
        use junction_core::subject;
        fn invalid(why: impl std::fmt::Display) -> ApiError {
            ApiError::invalid_config(why)
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "stream name is too long, maximum allowed is {MAX_NAME_LEN}"
            )));
        }
        if !valid_name(&self.name) {
            return Err(ApiError::invalid_stream_name());
        }
        if self.description.as_ref().map_or(0, String::len) > MAX_DESCRIPTION_LEN {
            return Err(invalid(format!(
                "stream description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}"
            )));
        }
        if self.num_replicas == 0 {
            self.num_replicas = 1;
        }
        if self.num_replicas > 5 {
            return Err(invalid("maximum replicas is 5"));
        }
        if self.num_replicas < 0 {
            return Err(ApiError::new(
                400,
                10133,
                "replicas count cannot be negative",
            ));
        }
        for n in [
            &mut self.max_msgs,
            &mut self.max_msgs_per_subject,
            &mut self.max_bytes,
            &mut self.max_msg_size,
            &mut self.max_consumers,
        ] {
            if *n == 0 {
                *n = -1;
            }
        }
        // A mirror keeps no duplicate window of its own.
        if self.duplicate_window == 0 && self.mirror.is_none() {
            self.duplicate_window = if self.max_age != 0 && self.max_age < DEFAULT_DUPLICATE_WINDOW
            {
                self.max_age
            } else {
                DEFAULT_DUPLICATE_WINDOW
            };
        }
        if self.max_age > 0 && self.max_age < SECOND / 10 {
            return Err(invalid("max age needs to be >= 100ms"));
        }
        if self.duplicate_window < 0 {
            return Err(invalid("duplicates window can not be negative"));
        }
        if self.max_age != 0 && self.duplicate_window > self.max_age {
            return Err(invalid("duplicates window can not be larger then max age"));
        }
        if self.duplicate_window > 0 && self.duplicate_window < SECOND / 10 {
            return Err(invalid("duplicates window needs to be >= 100ms"));
        }
        if self.deny_purge && self.allow_rollup_hdrs {
            return Err(invalid("roll-ups require the purge permission"));
        }
        if self.discard_new_per_subject {
            if self.discard != Discard::New {
                return Err(invalid(
                    "discard new per subject requires discard new policy to be set",
                ));
            }
            if self.max_msgs_per_subject <= 0 {
                return Err(invalid(
                    "discard new per subject requires max msgs per subject > 0",
                ));
            }
        }
        if self.first_seq > i64::MAX as u64 {
            return Err(invalid(
                "stream first sequence must be at most 9223372036854775807",
            ));
        }
        if let Some(m) = &self.mirror {
            if self.first_seq > 0 {
                return Err(ApiError::new(
                    400,
                    10143,
                    "stream mirrors can not have first sequence configured",
                ));
            }
            if !self.subjects.is_empty() {
                return Err(ApiError::new(
                    400,
                    10034,
                    "stream mirrors can not contain subjects",
                ));
            }
            if !self.sources.is_empty() {
                return Err(ApiError::new(
                    400,
                    10031,
                    "stream mirrors can not also contain other sources",
                ));
            }
            m.check_transforms(true)?;
            if !valid_name(&m.name) {
                return Err(ApiError::new(400, 10142, "mirrored stream name is invalid"));
            }
            m.check_external()?;
        }
        let mut inames = std::collections::HashSet::new();
        for s in &self.sources {
            if !valid_name(&s.name) {
                return Err(ApiError::new(400, 10141, "sourced stream name is invalid"));
            }
            if !inames.insert(crate::external::iname(s)) {
                return Err(ApiError::new(
                    400,
                    10140,
                    "duplicate source configuration detected",
                ));
            }
            s.check_transforms(false)?;
            s.check_external()?;
        }
        if self.subjects.is_empty() {
            if self.mirror.is_none() && self.sources.is_empty() {
                self.subjects.push(self.name.clone());
            }
        } else {
            for (i, s) in self.subjects.iter().enumerate() {
                if !subject::is_valid_subject(s.as_bytes()) {
                    return Err(invalid("invalid subject"));
                }
                if self.subjects[..i].contains(s) {
                    return Err(invalid("duplicate subjects detected"));
                }
                if !self.no_ack {
                    if s == ">" {
                        return Err(invalid("capturing all subjects requires no-ack to be true"));
                    }
                    let api = ["$JS.>", "$JSC.>", "$NRG.>"]
                        .iter()
                        .any(|ns| subject::overlaps(s, ns))
                        && !subject::covers("$JS.EVENT.>", s);
                    if api {
                        return Err(invalid(
                            "subjects that overlap with jetstream api require no-ack to be true",
                        ));
                    }
                    if subject::overlaps(s, "$SYS.>") && !subject::covers("$SYS.ACCOUNT.>", s) {
                        return Err(invalid(
                            "subjects that overlap with system api require no-ack to be true",
                        ));
                    }
                }
            }
            for s in &self.subjects {
                if let Some(t) = self
                    .subjects
                    .iter()
                    .find(|t| *t != s && subject::overlaps(s, t))
                {
                    return Err(invalid(format!("subject {s:?} overlaps with {t:?}")));
                }
            }
        }
        if let Some(t) = &self.subject_transform {
            if !t.src.is_empty() && !subject::is_valid_subject(t.src.as_bytes()) {
                return Err(ApiError::new(
                    400,
                    10155,
                    format!("stream transform source: invalid subject {}", t.src),
                ));
            }
            if let Err(e) = junction_core::transform::Transform::new(&t.src, &t.dest) {
                return Err(ApiError::new(400, 10156, format!("stream transform: {e}")));
            }
        }
        if let Some(r) = &mut self.republish {
            if r.src.is_empty() {
                r.src = ">".into();
            }
            if self.subjects.iter().any(|s| subject::overlaps(&r.dest, s)) {
                return Err(invalid(
                    "stream configuration for republish destination forms a cycle",
                ));
            }
            if junction_core::transform::Transform::new(&r.src, &r.dest).is_err()
                || !subject::is_valid_subject(r.dest.as_bytes())
            {
                return Err(invalid(format!(
                    "stream configuration for republish with transform from '{}' to '{}' not valid",
                    r.src, r.dest
                )));
            }
        }
        Ok(())
    }

    /// A configuration stored by an earlier Junction, which gave a mirror the default duplicate
    /// window: nats-server gives it none, and a create of the same configuration must find it
    /// the same.
    pub fn upgrade_defaults(&mut self) {
        if self.mirror.is_some() && self.duplicate_window == DEFAULT_DUPLICATE_WINDOW {
            self.duplicate_window = 0;
        }
    }

    /// Why `next` may not replace `self` (nats-server 2.10's update rules), if it may not;
    /// what sealing a stream implies is set in `next`.
    pub fn check_update(&self, next: &mut StreamConfig) -> Result<(), ApiError> {
        let no = |why: &str| Err(ApiError::invalid_config(why));
        if self.max_consumers != next.max_consumers {
            return no("stream configuration update can not change MaxConsumers");
        }
        if self.storage != next.storage {
            return no("stream configuration update can not change storage type");
        }
        if self.retention != next.retention
            && (self.retention == Retention::WorkQueue || next.retention == Retention::WorkQueue)
        {
            return no(
                "stream configuration update can not change retention policy to/from workqueue",
            );
        }
        if self.sealed && !next.sealed {
            return no("stream configuration update can not unseal a sealed stream");
        }
        if self.deny_delete && !next.deny_delete {
            return no("stream configuration update can not cancel deny message deletes");
        }
        if self.deny_purge && !next.deny_purge {
            return no("stream configuration update can not cancel deny purge");
        }
        if self.mirror != next.mirror {
            return Err(ApiError::new(
                400,
                10055,
                "stream mirror configuration can not be updated",
            ));
        }
        if next.sealed {
            next.max_age = 0;
            next.discard = Discard::New;
            next.deny_delete = true;
            next.deny_purge = true;
            next.allow_rollup_hdrs = false;
        }
        Ok(())
    }
}

impl ConsumerConfig {
    /// The consumer's filters (`filter_subject` and `filter_subjects` together).
    pub fn filters(&self) -> Vec<String> {
        let mut f: Vec<String> = self.filter_subjects.clone();
        if let Some(s) = &self.filter_subject {
            if !s.is_empty() {
                f.push(s.clone());
            }
        }
        f
    }

    /// A direct consumer: what another server's mirror or source asks for (`direct: true`).
    pub fn is_direct(&self) -> bool {
        self.other.get("direct").and_then(Value::as_bool) == Some(true)
    }

    /// Whether messages go to a deliver subject (push) rather than to pull requests.
    pub fn is_push(&self) -> bool {
        self.deliver_subject
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    }

    /// The percentage of acknowledgements `sample_freq` samples (`"100%"` or `"30"`; none: 0),
    /// or why it cannot be read (in nats-server's words).
    pub fn sample_percent(&self) -> Result<u32, String> {
        let Some(f) = self.sample_freq.as_deref().filter(|f| !f.is_empty()) else {
            return Ok(0);
        };
        let n = f.strip_suffix('%').unwrap_or(f);
        match n.parse::<i64>() {
            Ok(v) if v >= 0 => Ok(v.min(100) as u32),
            // nats-server formats the error it does not have.
            Ok(_) => Err("<nil>".to_string()),
            Err(_) => Err(format!("strconv.Atoi: parsing {n:?}: invalid syntax")),
        }
    }

    /// Empty names, subjects and filters are the same as none.
    pub fn tidy(&mut self) {
        for o in [
            &mut self.durable_name,
            &mut self.name,
            &mut self.deliver_subject,
            &mut self.deliver_group,
            &mut self.filter_subject,
        ] {
            if o.as_deref() == Some("") {
                *o = None;
            }
        }
    }
}
