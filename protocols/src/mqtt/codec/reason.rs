//! MQTT 5.0 reason codes (specification section 2.4 and the tables of each packet), which packet
//! may carry which, and the translation of CONNACK codes to 3.1.1 connect return codes.
//!
//! Codes below 0x80 report success, 0x80 and above failure. Several names share a value.

/// Success (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, AUTH).
pub const SUCCESS: u8 = 0x00;
/// Normal disconnection (DISCONNECT).
pub const NORMAL_DISCONNECTION: u8 = 0x00;
/// Granted QoS 0 (SUBACK).
pub const GRANTED_QOS_0: u8 = 0x00;
/// Granted QoS 1 (SUBACK).
pub const GRANTED_QOS_1: u8 = 0x01;
/// Granted QoS 2 (SUBACK).
pub const GRANTED_QOS_2: u8 = 0x02;
/// Disconnect with will message (DISCONNECT from the client).
pub const DISCONNECT_WITH_WILL_MESSAGE: u8 = 0x04;
/// No matching subscribers (PUBACK, PUBREC).
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
/// No subscription existed (UNSUBACK).
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
/// Continue authentication (AUTH).
pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
/// Re-authenticate (AUTH).
pub const RE_AUTHENTICATE: u8 = 0x19;
/// Unspecified error.
pub const UNSPECIFIED_ERROR: u8 = 0x80;
/// Malformed packet.
pub const MALFORMED_PACKET: u8 = 0x81;
/// Version error.
pub const PROTOCOL_ERROR: u8 = 0x82;
/// Implementation specific error.
pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
/// Unsupported protocol version (CONNACK).
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
/// Client identifier not valid (CONNACK).
pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
/// Bad user name or password (CONNACK).
pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
/// Not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;
/// Server unavailable (CONNACK).
pub const SERVER_UNAVAILABLE: u8 = 0x88;
/// Server busy.
pub const SERVER_BUSY: u8 = 0x89;
/// Banned (CONNACK).
pub const BANNED: u8 = 0x8A;
/// Server shutting down (DISCONNECT).
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
/// Bad authentication method (CONNACK, DISCONNECT).
pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
/// Keep alive timeout (DISCONNECT).
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
/// Session taken over (DISCONNECT).
pub const SESSION_TAKEN_OVER: u8 = 0x8E;
/// Topic filter invalid.
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// Topic name invalid.
pub const TOPIC_NAME_INVALID: u8 = 0x90;
/// Packet identifier in use.
pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
/// Packet identifier not found (PUBREL, PUBCOMP).
pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
/// Receive maximum exceeded (DISCONNECT).
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
/// Topic alias invalid (DISCONNECT).
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
/// Packet too large.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// Message rate too high (DISCONNECT).
pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
/// Quota exceeded.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// Administrative action (DISCONNECT).
pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
/// Payload format invalid.
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
/// Retain not supported.
pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
/// QoS not supported.
pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
/// Use another server.
pub const USE_ANOTHER_SERVER: u8 = 0x9C;
/// Server moved.
pub const SERVER_MOVED: u8 = 0x9D;
/// Shared subscriptions not supported.
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
/// Connection rate exceeded.
pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
/// Maximum connect time (DISCONNECT).
pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
/// SubscribeFilter identifiers not supported.
pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
/// Wildcard subscriptions not supported.
pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;

/// Whether a 5.0 CONNACK may carry `code`.
pub fn is_connack(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
    )
}

/// Whether a 5.0 PUBACK or PUBREC may carry `code`.
pub fn is_puback(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
    )
}

/// Whether a 5.0 PUBREL or PUBCOMP may carry `code`.
pub fn is_pubrel(code: u8) -> bool {
    matches!(code, 0x00 | 0x92)
}

/// Whether a 5.0 SUBACK may carry `code`.
pub fn is_suback(code: u8) -> bool {
    matches!(
        code,
        0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
    )
}

/// Whether a 5.0 UNSUBACK may carry `code`.
pub fn is_unsuback(code: u8) -> bool {
    matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91)
}

/// Whether a DISCONNECT may carry `code` (from either side).
pub fn is_disconnect(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B..=0x90 | 0x93..=0xA2
    )
}

/// Whether an AUTH may carry `code`.
pub fn is_auth(code: u8) -> bool {
    matches!(code, 0x00 | 0x18 | 0x19)
}

/// The 3.1.1 connect return code for a 5.0 CONNACK reason code, or `None` when 3.1.1 has no
/// equivalent (then a 3.1.1 server closes the connection without a CONNACK). Return codes:
/// 0 accepted, 1 unacceptable protocol version, 2 identifier rejected, 3 server unavailable,
/// 4 bad user name or password, 5 not authorized.
pub fn v311_connack_code(reason: u8) -> Option<u8> {
    match reason {
        SUCCESS => Some(0),
        UNSUPPORTED_PROTOCOL_VERSION => Some(1),
        CLIENT_IDENTIFIER_NOT_VALID => Some(2),
        SERVER_UNAVAILABLE
        | SERVER_BUSY
        | USE_ANOTHER_SERVER
        | SERVER_MOVED
        | CONNECTION_RATE_EXCEEDED => Some(3),
        BAD_USER_NAME_OR_PASSWORD | BAD_AUTHENTICATION_METHOD => Some(4),
        NOT_AUTHORIZED | BANNED => Some(5),
        _ => None,
    }
}
