//! A consumer's configuration as nats-server 2.10 takes it: the defaults it fills in
//! (`setConsumerConfigDefaults`), the checks it makes, in its order (`checkConsumerCfg`), and
//! what an update may change (`checkNewConsumerConfig`). Which check fires first decides the
//! error a client sees, so the order is kept.

use crate::config::{
    valid_name, AckPolicy, ConsumerConfig, ConsumerLimits, DeliverPolicy, Retention, StreamConfig,
    DEFAULT_ACK_WAIT, DEFAULT_MAX_ACK_PENDING, DEFAULT_MAX_WAITING, MAX_DESCRIPTION_LEN, SECOND,
};
use crate::errors::ApiError;
use junction_core::subject;

const MILLISECOND: i64 = SECOND / 1000;

impl ConsumerConfig {
    /// Fills in what the server decides when the client left it out: the stream's
    /// `consumer_limits` first, then the server's defaults (`acc_max_ack_pending`: the account's
    /// most, when it has one).
    pub fn set_defaults(&mut self, limits: &ConsumerLimits, acc_max_ack_pending: i64) {
        if !self.is_push() && self.max_waiting == 0 {
            self.max_waiting = DEFAULT_MAX_WAITING;
        }
        let acks = matches!(self.ack_policy, AckPolicy::Explicit | AckPolicy::All);
        if self.ack_wait == 0 && acks {
            self.ack_wait = DEFAULT_ACK_WAIT;
        }
        if self.max_deliver == 0 {
            self.max_deliver = -1;
        }
        if let Some(&first) = self.backoff.first() {
            self.ack_wait = first;
        }
        if self.max_ack_pending == 0 {
            self.max_ack_pending = limits.max_ack_pending;
        }
        if self.inactive_threshold == 0 {
            self.inactive_threshold = limits.inactive_threshold;
        }
        if acks && self.max_ack_pending == 0 {
            self.max_ack_pending = if acc_max_ack_pending > 0 {
                acc_max_ack_pending.min(DEFAULT_MAX_ACK_PENDING)
            } else {
                DEFAULT_MAX_ACK_PENDING
            };
        }
    }

    /// A configuration stored by an earlier Junction, which gave an ack-none consumer an ack
    /// wait and an unlimited `max_ack_pending` (-1): nats-server gives it neither, and a
    /// create of the same configuration must find it the same.
    pub fn upgrade_defaults(&mut self) {
        if self.ack_policy == AckPolicy::None {
            if self.max_ack_pending == -1 {
                self.max_ack_pending = 0;
            }
            if self.ack_wait == DEFAULT_ACK_WAIT && self.backoff.is_empty() {
                self.ack_wait = 0;
            }
        }
    }

    /// Whether a create with `asked` asks for this configuration (`action: create` refuses
    /// anything else): a durable's name is its durable name, however it was made.
    pub fn same_as_asked(&self, asked: &ConsumerConfig) -> bool {
        let named = |c: &ConsumerConfig| {
            let mut c = c.clone();
            if c.name.is_none() {
                c.name.clone_from(&c.durable_name);
            }
            c
        };
        self == asked || named(self) == named(asked)
    }

    /// Checks the configuration against its stream's (`stream`) and the account's most
    /// unacknowledged messages per consumer (`acc_max_ack_pending`), in nats-server's order.
    pub fn check(&self, stream: &StreamConfig, acc_max_ack_pending: i64) -> Result<(), ApiError> {
        if self.num_replicas < 0 {
            return Err(ApiError::new(
                400,
                10133,
                "replicas count cannot be negative",
            ));
        }
        if !self.backoff.is_empty()
            && self.max_deliver != -1
            && self.backoff.len() as i64 > self.max_deliver
        {
            return Err(ApiError::new(
                400,
                10116,
                "max deliver is required to be > length of backoff values",
            ));
        }
        if self.description.as_ref().map_or(0, String::len) > MAX_DESCRIPTION_LEN {
            return Err(ApiError::new(
                400,
                10107,
                format!(
                    "consumer description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}"
                ),
            ));
        }
        if let Some(ds) = self.deliver_subject.as_deref().filter(|d| !d.is_empty()) {
            if subject::has_wildcard(ds.as_bytes()) {
                return Err(ApiError::new(
                    400,
                    10079,
                    "consumer deliver subject has wildcards",
                ));
            }
            if !subject::is_valid_subject(ds.as_bytes()) {
                return Err(ApiError::new(
                    400,
                    10112,
                    "invalid push consumer deliver subject",
                ));
            }
            if stream.subjects.iter().any(|s| subject::covers(s, ds)) {
                return Err(ApiError::new(
                    400,
                    10081,
                    "consumer deliver subject forms a cycle",
                ));
            }
            if self.max_waiting != 0 {
                return Err(ApiError::new(
                    400,
                    10080,
                    "consumer in push mode can not set max waiting",
                ));
            }
            if self.max_ack_pending > 0 && self.ack_policy == AckPolicy::None {
                return Err(ApiError::new(
                    400,
                    10082,
                    "consumer requires ack policy for max ack pending",
                ));
            }
            if self.idle_heartbeat > 0 && self.idle_heartbeat < 100 * MILLISECOND {
                return Err(ApiError::new(
                    400,
                    10083,
                    "consumer idle heartbeat needs to be >= 100ms",
                ));
            }
        } else {
            if self.ack_policy == AckPolicy::None && stream.retention == Retention::WorkQueue {
                return Err(ApiError::new(
                    400,
                    10084,
                    "consumer in pull mode requires ack policy",
                ));
            }
            if self.rate_limit_bps > 0 {
                return Err(ApiError::new(
                    400,
                    10086,
                    "consumer in pull mode can not have rate limit set",
                ));
            }
            if self.max_waiting < 0 {
                return Err(ApiError::new(
                    400,
                    10087,
                    "consumer max waiting needs to be positive",
                ));
            }
            if self.idle_heartbeat > 0 {
                return Err(ApiError::new(
                    400,
                    10088,
                    "consumer idle heartbeat requires a push based consumer",
                ));
            }
            if self.flow_control {
                return Err(ApiError::new(
                    400,
                    10089,
                    "consumer flow control requires a push based consumer",
                ));
            }
            if self.max_batch < 0 {
                return Err(ApiError::new(
                    400,
                    10114,
                    "consumer max request batch needs to be > 0",
                ));
            }
            if self.max_expires != 0 && self.max_expires < MILLISECOND {
                return Err(ApiError::new(
                    400,
                    10115,
                    "consumer max request expires needs to be >= 1ms",
                ));
            }
        }
        let limits = &stream.consumer_limits;
        for most in [acc_max_ack_pending, limits.max_ack_pending] {
            if most > 0 && self.max_ack_pending > most {
                return Err(ApiError::new(
                    400,
                    10121,
                    format!("consumer max ack pending exceeds system limit of {most}"),
                ));
            }
        }
        let most = limits.inactive_threshold;
        if most > 0 && self.inactive_threshold > most {
            let most =
                junction_core::time::go_duration(std::time::Duration::from_nanos(most as u64));
            return Err(ApiError::new(
                400,
                10153,
                format!("consumer inactive threshold exceeds system limit of {most}"),
            ));
        }
        if self.is_direct() {
            if !self.is_push() {
                return Err(ApiError::new(
                    400,
                    10090,
                    "consumer direct requires a push based consumer",
                ));
            }
            if self.durable_name.is_some() {
                return Err(ApiError::new(
                    400,
                    10091,
                    "consumer direct requires an ephemeral consumer",
                ));
            }
        }
        if self
            .filter_subject
            .as_deref()
            .is_some_and(|f| !f.is_empty())
            && !self.filter_subjects.is_empty()
        {
            return Err(ApiError::new(
                400,
                10136,
                "consumer cannot have both FilterSubject and FilterSubjects specified",
            ));
        }
        if self.filter_subjects.iter().any(String::is_empty) {
            return Err(ApiError::new(
                400,
                10139,
                "consumer filter in FilterSubjects cannot be empty",
            ));
        }
        let filters = self.filters();
        for (i, f) in filters.iter().enumerate() {
            if !subject::is_valid_subject(f.as_bytes()) {
                return Err(ApiError::invalid_config("invalid subject"));
            }
            if filters
                .iter()
                .enumerate()
                .any(|(j, g)| i != j && subject::overlaps(f, g))
            {
                return Err(ApiError::new(
                    400,
                    10138,
                    "consumer subject filters cannot overlap",
                ));
            }
        }
        self.check_start()?;
        if let Err(e) = self.sample_percent() {
            return Err(ApiError::new(
                400,
                10095,
                format!("failed to parse consumer sampling configuration: {e}"),
            ));
        }
        if self.flow_control && self.idle_heartbeat == 0 {
            return Err(ApiError::new(
                400,
                10108,
                "consumer with flow control also needs heartbeats",
            ));
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
        Ok(())
    }

    /// The deliver policy against the optional start and filter it needs or excludes.
    fn check_start(&self) -> Result<(), ApiError> {
        let seq = self.opt_start_seq.is_some_and(|s| s > 0);
        let time = self.opt_start_time.is_some();
        let policy = match self.deliver_policy {
            DeliverPolicy::All => "all",
            DeliverPolicy::Last => "last",
            DeliverPolicy::LastPerSubject => "last per subject",
            DeliverPolicy::New => "new",
            DeliverPolicy::ByStartSequence => "by start sequence",
            DeliverPolicy::ByStartTime => "by start time",
        };
        let bad = |what: &str| {
            Err(ApiError::new(
                400,
                10094,
                format!("consumer delivery policy is deliver {policy}, but optional start {what} is also set"),
            ))
        };
        let unset = |what: &str| {
            Err(ApiError::new(
                400,
                10094,
                format!(
                    "consumer delivery policy is deliver {policy}, but optional {what} is not set"
                ),
            ))
        };
        match self.deliver_policy {
            DeliverPolicy::ByStartSequence if !seq => unset("start sequence"),
            DeliverPolicy::ByStartSequence if time => bad("time"),
            DeliverPolicy::ByStartSequence => Ok(()),
            DeliverPolicy::ByStartTime if !time => unset("start time"),
            DeliverPolicy::ByStartTime if self.opt_start_seq.is_some_and(|s| s != 0) => {
                bad("start sequence")
            }
            DeliverPolicy::ByStartTime => Ok(()),
            _ if seq => bad("sequence"),
            _ if time => bad("time"),
            DeliverPolicy::LastPerSubject if self.filters().is_empty() => unset("filter subject"),
            _ => Ok(()),
        }
    }

    /// The consumer's name, and whether it may be used (nats-server checks it once the
    /// stream's own rules passed): a durable's name at most 255 bytes, no `.`, `*`, `>` or
    /// whitespace.
    pub fn check_name(name: &str, durable: bool) -> Result<(), ApiError> {
        if durable && name.len() > crate::config::MAX_NAME_LEN {
            return Err(ApiError::new(
                400,
                10102,
                format!(
                    "consumer name is too long, maximum allowed is {}",
                    crate::config::MAX_NAME_LEN
                ),
            ));
        }
        if !valid_name(name) {
            return Err(ApiError::bad_durable_name());
        }
        Ok(())
    }

    /// Why `next` may not replace `self` (nats-server's update rules), if it may not;
    /// `bound`: the old deliver subject still has interest.
    pub fn check_update(&self, next: &ConsumerConfig, bound: bool) -> Result<(), ApiError> {
        let no = |why: &str| Err(ApiError::new(500, 10012, why));
        if self.deliver_policy != next.deliver_policy {
            return no("deliver policy can not be updated");
        }
        if self.opt_start_seq.unwrap_or(0) != next.opt_start_seq.unwrap_or(0) {
            return no("start sequence can not be updated");
        }
        if self.opt_start_time != next.opt_start_time {
            return no("start time can not be updated");
        }
        if self.ack_policy != next.ack_policy {
            return no("ack policy can not be updated");
        }
        if self.replay_policy != next.replay_policy {
            return no("replay policy can not be updated");
        }
        if self.idle_heartbeat != next.idle_heartbeat {
            return no("heart beats can not be updated");
        }
        if self.flow_control != next.flow_control {
            return no("flow control can not be updated");
        }
        if self.deliver_subject != next.deliver_subject {
            if !self.is_push() {
                return no("can not update pull consumer to push based");
            }
            if !next.is_push() {
                return no("can not update push consumer to pull based");
            }
            if bound {
                return Err(ApiError::consumer_name_exists());
            }
        }
        if self.max_waiting != next.max_waiting {
            return no("max waiting can not be updated");
        }
        // nats-server checks the backoff again here; `next` has passed `check`, which did.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ConsumerConfig {
        serde_json::from_str(json).expect("a consumer config")
    }

    #[test]
    fn stored_ack_none_defaults_of_earlier_versions_are_upgraded() {
        let mut old = config(
            r#"{"durable_name":"d","ack_policy":"none","ack_wait":30000000000,"max_ack_pending":-1,
                "max_deliver":-1,"max_waiting":512}"#,
        );
        old.upgrade_defaults();
        let mut asked = config(r#"{"durable_name":"d","ack_policy":"none"}"#);
        asked.set_defaults(&ConsumerLimits::default(), -1);
        assert!(old.same_as_asked(&asked), "{old:?} / {asked:?}");
        // An explicit consumer keeps what it had.
        let mut kept =
            config(r#"{"ack_policy":"explicit","ack_wait":30000000000,"max_ack_pending":-1}"#);
        kept.upgrade_defaults();
        assert_eq!(
            (kept.ack_wait, kept.max_ack_pending),
            (DEFAULT_ACK_WAIT, -1)
        );
    }

    #[test]
    fn a_durable_is_the_same_whichever_subject_made_it() {
        let stored = config(r#"{"durable_name":"d","ack_policy":"explicit"}"#);
        let asked = config(r#"{"durable_name":"d","name":"d","ack_policy":"explicit"}"#);
        assert!(stored.same_as_asked(&asked));
        let other = config(r#"{"durable_name":"d","name":"d","ack_policy":"all"}"#);
        assert!(!stored.same_as_asked(&other));
    }

    #[test]
    fn backoff_is_checked_only_when_there_is_one() {
        let stream: StreamConfig = serde_json::from_str(r#"{"name":"S"}"#).expect("stream");
        let mut c = config(r#"{"durable_name":"d","max_deliver":-5}"#);
        c.set_defaults(&ConsumerLimits::default(), -1);
        assert_eq!(c.check(&stream, -1), Ok(()));
        let c = config(r#"{"durable_name":"d","max_deliver":2,"backoff":[1,2,3]}"#);
        assert_eq!(c.check(&stream, -1).map_err(|e| e.err_code), Err(10116));
    }
}
