//! The API's errors: HTTP-like `code`, JetStream `err_code` and description, as nats-server's
//! error table has them (clients match on `err_code`).

use serde::Serialize;

/// One API error, as it goes out in a response's `error` field or a PubAck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub code: u16,
    pub err_code: u32,
    pub description: String,
}

impl ApiError {
    pub fn new(code: u16, err_code: u32, description: impl Into<String>) -> Self {
        ApiError {
            code,
            err_code,
            description: description.into(),
        }
    }

    pub fn not_enabled_for_account() -> Self {
        Self::new(503, 10039, "JetStream not enabled for account")
    }
    /// What a cluster's operation (a leader step-down, a peer's removal) gets from one server.
    pub fn cluster_required() -> Self {
        Self::new(503, 10010, "JetStream clustering support required")
    }
    pub fn bad_request() -> Self {
        Self::new(400, 10003, "bad request")
    }
    pub fn invalid_json(_err: impl std::fmt::Display) -> Self {
        Self::new(400, 10025, "invalid JSON")
    }
    pub fn stream_not_found() -> Self {
        Self::new(404, 10059, "stream not found")
    }
    pub fn consumer_not_found() -> Self {
        Self::new(404, 10014, "consumer not found")
    }
    pub fn stream_name_exists() -> Self {
        Self::new(
            400,
            10058,
            "stream name already in use with a different configuration",
        )
    }
    pub fn subject_overlap() -> Self {
        Self::new(400, 10065, "subjects overlap with an existing stream")
    }
    pub fn invalid_stream_name() -> Self {
        Self::new(
            500,
            10052,
            "stream name is required and can not contain '.', '*', '>'",
        )
    }
    pub fn stream_mismatch() -> Self {
        Self::new(400, 10056, "stream name in subject does not match request")
    }
    pub fn replicas_not_supported() -> Self {
        Self::new(
            500,
            10074,
            "replicas > 1 not supported in non-clustered mode (Junction stores one copy: \
             for replicated streams attach it as a leaf node to a NATS cluster)",
        )
    }
    pub fn invalid_config(err: impl std::fmt::Display) -> Self {
        Self::new(500, 10052, err.to_string())
    }
    pub fn no_message_found() -> Self {
        Self::new(404, 10037, "no message found")
    }
    pub fn sequence_not_found(seq: u64) -> Self {
        Self::new(400, 10043, format!("sequence {seq} not found"))
    }
    pub fn wrong_last_sequence(seq: u64) -> Self {
        Self::new(400, 10071, format!("wrong last sequence: {seq}"))
    }
    pub fn wrong_last_msg_id(id: &str) -> Self {
        Self::new(400, 10070, format!("wrong last msg ID: {id}"))
    }
    pub fn expected_stream_mismatch() -> Self {
        Self::new(400, 10060, "expected stream does not match")
    }
    pub fn message_too_big() -> Self {
        Self::new(400, 10054, "message size exceeds maximum allowed")
    }
    pub fn store_failed(err: &str) -> Self {
        Self::new(503, 10077, err)
    }
    pub fn sealed() -> Self {
        Self::new(400, 10109, "invalid operation on sealed stream")
    }
    pub fn rollup_failed(err: &str) -> Self {
        Self::new(500, 10111, err)
    }
    pub fn consumer_exists() -> Self {
        Self::new(400, 10148, "consumer already exists")
    }
    pub fn consumer_name_exists() -> Self {
        Self::new(400, 10013, "consumer name already in use")
    }
    pub fn bad_durable_name() -> Self {
        Self::new(400, 10103, "durable name can not contain '.', '*', '>'")
    }
    pub fn invalid_consumer_name() -> Self {
        Self::new(400, 10127, "Consumer name can not contain path separators")
    }
    pub fn max_consumers() -> Self {
        Self::new(400, 10026, "maximum consumers limit reached")
    }
    pub fn max_streams() -> Self {
        Self::new(400, 10027, "maximum number of streams reached")
    }
    pub fn insufficient_resources() -> Self {
        Self::new(503, 10023, "insufficient resources")
    }
    pub fn wq_not_unique() -> Self {
        Self::new(
            400,
            10100,
            "filtered consumer not unique on workqueue stream",
        )
    }
    pub fn wq_not_deliver_all() -> Self {
        Self::new(
            400,
            10101,
            "consumer must be deliver all on workqueue stream",
        )
    }
    pub fn wq_requires_explicit_ack() -> Self {
        Self::new(400, 10098, "workqueue stream requires explicit ack")
    }
    pub fn existing_active() -> Self {
        Self::new(400, 10105, "consumer already exists and is still active")
    }
    pub fn consumer_create_name_mismatch() -> Self {
        Self::new(
            400,
            10131,
            "Consumer create request did not match filtered subject from create subject",
        )
    }
    pub fn deny_delete() -> Self {
        Self::delete_failed("message delete not permitted")
    }
    /// A message delete the store failed (10057, with the store's error).
    pub fn delete_failed(why: &str) -> Self {
        Self::new(500, 10057, why)
    }
    pub fn deny_purge() -> Self {
        Self::new(500, 10110, "stream purge not permitted")
    }
}
