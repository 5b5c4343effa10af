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
                    format!("{what} transform source: invalid subject {}", t.src),
                ));
            }
            if let Err(e) = junction_core::transform::Transform::new(&t.src, &t.dest) {
                return Err(ApiError::new(
                    400,
                    codes[2],
                    format!("{what} transform: {e}"),
                ));
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
    #[serde(default)]
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
    #[serde(default)]
    pub ack_wait: i64,
    #[serde(default)]
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
    #[serde(default)]
    pub max_waiting: i64,
    #[serde(default)]
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
    /// Fills in what the server decides when the client left it out, and checks the rest.
    pub fn normalize(&mut self) -> Result<(), ApiError> {
        if self.name.is_empty() {
            return Err(ApiError::stream_name_required());
        }
        if !valid_name(&self.name) {
            return Err(ApiError::invalid_stream_name());
        }
        if self.num_replicas == 0 {
            self.num_replicas = 1;
        }
        if self.num_replicas > 1 {
            return Err(ApiError::replicas_not_supported());
        }
        if self.num_replicas < 0 || self.num_replicas > 5 {
            return Err(ApiError::invalid_config("replicas > 5 not supported"));
        }
        for n in [
            &mut self.max_msgs,
            &mut self.max_bytes,
            &mut self.max_msgs_per_subject,
            &mut self.max_msg_size,
            &mut self.max_consumers,
        ] {
            if *n == 0 {
                *n = -1;
            }
        }
        if self.max_age < 0 {
            return Err(ApiError::invalid_config("max age needs to be >= 0"));
        }
        if self.duplicate_window < 0 {
            return Err(ApiError::invalid_config(
                "duplicates window can not be negative",
            ));
        }
        if self.duplicate_window == 0 {
            self.duplicate_window = DEFAULT_DUPLICATE_WINDOW;
            if self.max_age != 0 && self.max_age < DEFAULT_DUPLICATE_WINDOW {
                self.duplicate_window = self.max_age;
            }
        } else if self.max_age != 0 && self.duplicate_window > self.max_age {
            return Err(ApiError::invalid_config(
                "duplicates window can not be larger then max age",
            ));
        }
        if self.subjects.is_empty() && self.mirror.is_none() && self.sources.is_empty() {
            self.subjects.push(self.name.clone());
        }
        if self.first_seq > i64::MAX as u64 {
            return Err(ApiError::invalid_config(
                "stream first sequence must be at most 9223372036854775807",
            ));
        }
        if self.mirror.is_some() && self.first_seq > 0 {
            return Err(ApiError::new(
                400,
                10143,
                "stream mirrors can not have first sequence configured",
            ));
        }
        if self.mirror.is_some() && !self.subjects.is_empty() {
            return Err(ApiError::invalid_config(
                "stream mirrors can not contain subjects",
            ));
        }
        for (i, s) in self.subjects.iter().enumerate() {
            if !junction_core::subject::is_valid_subject(s.as_bytes()) {
                return Err(ApiError::invalid_config("invalid subject"));
            }
            if self.subjects[..i]
                .iter()
                .any(|o| junction_core::subject::overlaps(o, s))
            {
                return Err(ApiError::invalid_config("duplicate subjects detected"));
            }
        }
        if let Some(m) = &self.mirror {
            if !valid_name(&m.name) {
                return Err(ApiError::new(400, 10142, "mirrored stream name is invalid"));
            }
            m.check_external()?;
            m.check_transforms(true)?;
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
            s.check_external()?;
            s.check_transforms(false)?;
        }
        if let Some(t) = &self.subject_transform {
            if !t.src.is_empty() && !junction_core::subject::is_valid_subject(t.src.as_bytes()) {
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
            if junction_core::transform::Transform::new(&r.src, &r.dest).is_err() {
                return Err(ApiError::invalid_config(format!(
                    "stream configuration for republish with transform from '{}' to '{}' not valid",
                    r.src, r.dest
                )));
            }
            if !junction_core::subject::is_valid_subject(r.dest.as_bytes()) {
                return Err(ApiError::invalid_config(
                    "stream republish destination subject is invalid",
                ));
            }
            if self
                .subjects
                .iter()
                .any(|s| junction_core::subject::overlaps(s, &r.dest))
            {
                return Err(ApiError::invalid_config(
                    "stream republish destination forms a cycle",
                ));
            }
        }
        if self.discard_new_per_subject
            && (self.discard != Discard::New || self.max_msgs_per_subject <= 0)
        {
            return Err(ApiError::invalid_config(
                "discard new per subject requires discard new policy to be set",
            ));
        }
        Ok(())
    }

    /// Why `next` may not replace `self` (nats-server's update rules), if it may not.
    pub fn check_update(&self, next: &StreamConfig) -> Result<(), ApiError> {
        if self.storage != next.storage {
            return Err(ApiError::invalid_config(
                "stream configuration update can not change storage type",
            ));
        }
        if self.retention != next.retention {
            return Err(ApiError::invalid_config(
                "stream configuration update can not change retention policy",
            ));
        }
        if self.sealed && !next.sealed {
            return Err(ApiError::invalid_config(
                "stream configuration update can not unseal a sealed stream",
            ));
        }
        if self.deny_delete && !next.deny_delete {
            return Err(ApiError::invalid_config(
                "stream configuration update can not cancel deny message deletes",
            ));
        }
        if self.deny_purge && !next.deny_purge {
            return Err(ApiError::invalid_config(
                "stream configuration update can not cancel deny purge",
            ));
        }
        if self.mirror != next.mirror {
            return Err(ApiError::invalid_config(
                "stream mirror configuration can not be updated",
            ));
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

    /// Whether messages go to a deliver subject (push) rather than to pull requests.
    pub fn is_push(&self) -> bool {
        self.deliver_subject
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    }

    /// Fills in the server's defaults and checks the configuration on its own (the stream-level
    /// checks are the caller's).
    /// The percentage of acknowledgements `sample_freq` samples (`"100%"` or `"30"`; none: 0),
    /// or why it cannot be read (in nats-server's words).
    pub fn sample_percent(&self) -> Result<u32, String> {
        let Some(f) = self.sample_freq.as_deref().filter(|f| !f.is_empty()) else {
            return Ok(0);
        };
        let n = f.strip_suffix('%').unwrap_or(f);
        match n.parse::<i64>() {
            Ok(v) if v >= 0 => Ok(v.min(100) as u32),
            Ok(_) => Err("a sampling frequency cannot be negative".to_string()),
            Err(_) => Err(format!("strconv.Atoi: parsing {n:?}: invalid syntax")),
        }
    }

    pub fn normalize(&mut self) -> Result<(), ApiError> {
        if let Some(d) = &self.durable_name {
            if d.is_empty() {
                self.durable_name = None;
            } else if d.contains(['.', '*', '>']) {
                return Err(ApiError::bad_durable_name());
            }
        }
        if let Some(n) = &self.name {
            if n.is_empty() {
                self.name = None;
            } else if !valid_name(n) {
                return Err(ApiError::invalid_consumer_name());
            }
        }
        if let (Some(d), Some(n)) = (&self.durable_name, &self.name) {
            if d != n {
                return Err(ApiError::new(
                    400,
                    10132,
                    "Consumer Durable and Name have to be equal if both are provided",
                ));
            }
        }
        if self.ack_wait == 0 {
            self.ack_wait = DEFAULT_ACK_WAIT;
        }
        if self.ack_wait < 0 {
            return Err(ApiError::invalid_config(
                "consumer ack wait needs to be positive",
            ));
        }
        if self.max_deliver == 0 {
            self.max_deliver = -1;
        }
        if self.max_deliver > 0
            && !self.backoff.is_empty()
            && self.backoff.len() as i64 > self.max_deliver
        {
            return Err(ApiError::new(
                400,
                10116,
                "max deliver is required to be > length of backoff values",
            ));
        }
        if let Some(&first) = self.backoff.first() {
            self.ack_wait = first;
        }
        if let Err(e) = self.sample_percent() {
            return Err(ApiError::new(
                400,
                10095,
                format!("failed to parse consumer sampling configuration: {e}"),
            ));
        }
        if self.ack_policy == AckPolicy::None {
            self.max_ack_pending = -1;
        } else if self.max_ack_pending == 0 {
            self.max_ack_pending = DEFAULT_MAX_ACK_PENDING;
        }
        if self.is_push() {
            if self.max_waiting != 0 {
                return Err(ApiError::new(
                    400,
                    10089,
                    "consumer in push mode can not set max waiting",
                ));
            }
            if self.max_batch != 0 {
                return Err(ApiError::new(
                    400,
                    10090,
                    "consumer in push mode can not set max batch",
                ));
            }
            let ds = self.deliver_subject.as_deref().unwrap_or_default();
            if !junction_core::subject::is_valid_literal_subject(ds.as_bytes()) {
                return Err(ApiError::new(
                    400,
                    10112,
                    "invalid push consumer deliver subject",
                ));
            }
        } else {
            if self.max_waiting == 0 {
                self.max_waiting = DEFAULT_MAX_WAITING;
            }
            if self.flow_control {
                return Err(ApiError::new(
                    400,
                    10089,
                    "consumer flow control requires a push based consumer",
                ));
            }
            if self.idle_heartbeat != 0 {
                return Err(ApiError::new(
                    400,
                    10088,
                    "consumer idle heartbeat requires a push based consumer",
                ));
            }
            if self.rate_limit_bps > 0 {
                return Err(ApiError::new(
                    400,
                    10086,
                    "consumer in pull mode can not have rate limit set",
                ));
            }
        }
        if self.flow_control && self.idle_heartbeat == 0 {
            return Err(ApiError::new(
                400,
                10108,
                "consumer with flow control also needs heartbeats",
            ));
        }
        if self.ack_policy == AckPolicy::None && self.max_ack_pending > 0 {
            self.max_ack_pending = -1;
        }
        for f in self.filters() {
            if !junction_core::subject::is_valid_subject(f.as_bytes()) {
                return Err(ApiError::new(
                    400,
                    10093,
                    "consumer filter subject is not a valid subset of the interest subjects",
                ));
            }
        }
        match self.deliver_policy {
            DeliverPolicy::ByStartSequence => {
                if self.opt_start_seq.unwrap_or(0) == 0 {
                    return Err(ApiError::new(
                        400,
                        10094,
                        "consumer delivery policy is deliver by start sequence, but optional start sequence is not set",
                    ));
                }
            }
            DeliverPolicy::ByStartTime => {
                if self.opt_start_time.is_none() {
                    return Err(ApiError::new(
                        400,
                        10094,
                        "consumer delivery policy is deliver by start time, but optional start time is not set",
                    ));
                }
            }
            _ => {
                if self.opt_start_seq.is_some_and(|s| s > 0) || self.opt_start_time.is_some() {
                    let policy = serde_json::to_value(self.deliver_policy)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let what = if self.opt_start_seq.is_some_and(|s| s > 0) {
                        "start sequence"
                    } else {
                        "start time"
                    };
                    return Err(ApiError::new(
                        400,
                        10094,
                        format!(
                            "consumer delivery policy is {policy}, but optional {what} is also set"
                        ),
                    ));
                }
            }
        }
        if self.num_replicas > 1 {
            return Err(ApiError::replicas_not_supported());
        }
        Ok(())
    }
}
