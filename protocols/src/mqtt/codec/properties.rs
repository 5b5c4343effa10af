//! MQTT 5.0 properties (specification section 2.2.2): one struct per packet family, holding
//! exactly the properties the specification allows in that packet, so an encoder cannot write a
//! property where it does not belong and a decoder rejects one that is there.
//!
//! Decoding rejects unknown identifiers and misplaced properties (malformed packet), duplicates
//! (protocol error; only User Property, and SubscribeFilter Identifier in a PUBLISH from the server,
//! may repeat) and the values the specification forbids (protocol error). User properties keep
//! their order. Structs are empty at 3.1.1, which has no properties.

use bytes::Bytes;

use super::error::{DecodeError, EncodeError};
use super::packet::{QoS, Utf8Bytes};
use super::wire::{put_binary, put_string, put_var_int, Counter, Out, Reader};

/// Payload Format Indicator (byte).
pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
/// Message Expiry Interval (four byte integer).
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
/// Content Type (UTF-8 string).
pub const CONTENT_TYPE: u8 = 0x03;
/// Response Topic (UTF-8 string).
pub const RESPONSE_TOPIC: u8 = 0x08;
/// Correlation Data (binary data).
pub const CORRELATION_DATA: u8 = 0x09;
/// SubscribeFilter Identifier (variable byte integer).
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
/// Session Expiry Interval (four byte integer).
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
/// Assigned Client Identifier (UTF-8 string).
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
/// Server Keep Alive (two byte integer).
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
/// Authentication Method (UTF-8 string).
pub const AUTHENTICATION_METHOD: u8 = 0x15;
/// Authentication Data (binary data).
pub const AUTHENTICATION_DATA: u8 = 0x16;
/// Request Problem Information (byte).
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
/// Will Delay Interval (four byte integer).
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
/// Request Response Information (byte).
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
/// Response Information (UTF-8 string).
pub const RESPONSE_INFORMATION: u8 = 0x1A;
/// Server Reference (UTF-8 string).
pub const SERVER_REFERENCE: u8 = 0x1C;
/// Reason String (UTF-8 string).
pub const REASON_STRING: u8 = 0x1F;
/// Receive Maximum (two byte integer).
pub const RECEIVE_MAXIMUM: u8 = 0x21;
/// Topic Alias Maximum (two byte integer).
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
/// Topic Alias (two byte integer).
pub const TOPIC_ALIAS: u8 = 0x23;
/// Maximum QoS (byte).
pub const MAXIMUM_QOS: u8 = 0x24;
/// Retain Available (byte).
pub const RETAIN_AVAILABLE: u8 = 0x25;
/// User Property (UTF-8 string pair).
pub const USER_PROPERTY: u8 = 0x26;
/// Maximum Packet Size (four byte integer).
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// Wildcard SubscribeFilter Available (byte).
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
/// SubscribeFilter Identifier Available (byte).
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
/// Shared SubscribeFilter Available (byte).
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A User Property: a name and a value, both UTF-8 strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// Name.
    pub name: Utf8Bytes,
    /// Value.
    pub value: Utf8Bytes,
}

/// The data type of each property identifier; `None` for identifiers the specification does
/// not define.
fn kind(id: u32) -> Option<Kind> {
    Some(match u8::try_from(id).ok()? {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => Kind::Byte,
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => Kind::Two,
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => Kind::Four,
        SUBSCRIPTION_IDENTIFIER => Kind::Var,
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Kind::Str,
        CORRELATION_DATA | AUTHENTICATION_DATA => Kind::Bin,
        USER_PROPERTY => Kind::Pair,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    Two,
    Four,
    Var,
    Str,
    Bin,
    Pair,
}

/// One decoded property value.
pub(crate) enum Value {
    Byte(u8),
    Two(u16),
    Four(u32),
    Var(u32),
    Str(Utf8Bytes),
    Bin(Bytes),
    Pair(UserProperty),
}

/// The bit of a property identifier in a set of identifiers.
const fn bit(id: u8) -> u64 {
    1 << id
}

/// A set of properties that one packet family may carry.
pub(crate) trait PropertySet: Default + PartialEq {
    /// Name of the packet, for errors.
    const PACKET: &'static str;
    /// The identifiers allowed.
    const ALLOWED: u64;
    /// Stores one value (its identifier is allowed and its type is the identifier's).
    fn set(&mut self, id: u8, value: Value) -> Result<(), DecodeError>;
    /// Checks rules between properties, once all are read.
    fn check(&self) -> Result<(), DecodeError> {
        Ok(())
    }
    /// Writes the properties (without the property length).
    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError>;

    /// Whether no property is set.
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reads a property block (property length, then the properties) of a packet family. `forbid`
/// removes identifiers the sender's side may not use; `repeat` adds identifiers that may repeat
/// (User Property always may).
pub(crate) fn read<T: PropertySet>(
    r: &mut Reader,
    forbid: u64,
    repeat: u64,
) -> Result<T, DecodeError> {
    let len = r.var_int()?;
    let mut block = r.take(len as usize)?;
    let allowed = T::ALLOWED & !forbid;
    let repeat = repeat | bit(USER_PROPERTY);
    let mut seen = 0u64;
    let mut props = T::default();
    while !block.is_empty() {
        let id = block.var_int()?;
        let kind = kind(id).ok_or(DecodeError::UnknownProperty(id))?;
        // `kind` only knows identifiers below 64.
        let id = id as u8;
        if allowed & bit(id) == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                id,
                packet: T::PACKET,
            });
        }
        if seen & bit(id) != 0 && repeat & bit(id) == 0 {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit(id);
        let value = match kind {
            Kind::Byte => Value::Byte(block.u8()?),
            Kind::Two => Value::Two(block.u16()?),
            Kind::Four => Value::Four(block.u32()?),
            Kind::Var => Value::Var(block.var_int()?),
            Kind::Str => Value::Str(block.string()?),
            Kind::Bin => Value::Bin(block.binary()?),
            Kind::Pair => Value::Pair(UserProperty {
                name: block.string()?,
                value: block.string()?,
            }),
        };
        props.set(id, value)?;
    }
    props.check()?;
    Ok(props)
}

/// Writes a property block: the property length, then the properties.
pub(crate) fn write<T: PropertySet, S: Out>(props: &T, s: &mut S) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    props.write(&mut counter)?;
    put_var_int(s, counter.len())?;
    props.write(s)
}

fn flag(id: u8, b: u8) -> Result<bool, DecodeError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::BadPropertyValue(id)),
    }
}

fn non_zero_u16(id: u8, v: u16) -> Result<u16, DecodeError> {
    if v == 0 {
        return Err(DecodeError::BadPropertyValue(id));
    }
    Ok(v)
}

fn non_zero_u32(id: u8, v: u32) -> Result<u32, DecodeError> {
    if v == 0 {
        return Err(DecodeError::BadPropertyValue(id));
    }
    Ok(v)
}

/// A Response Topic is a topic name: not empty, no wildcards ([MQTT-3.3.2-14]).
fn response_topic(t: Utf8Bytes) -> Result<Utf8Bytes, DecodeError> {
    super::wire::check_topic_name(&t, false)?;
    Ok(t)
}

/// Authentication Data without an Authentication Method is a protocol error (5.0, CONNECT,
/// CONNACK and AUTH properties).
fn check_auth(method: &Option<Utf8Bytes>, data: &Option<Bytes>) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(())
}

// Writers of one property each; `None` and empty lists write nothing.

fn w_byte<S: Out>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put(&[id, v]);
    }
}

fn w_flag<S: Out>(s: &mut S, id: u8, v: Option<bool>) {
    w_byte(s, id, v.map(u8::from));
}

fn w_u16<S: Out>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put(&[id]);
        s.put(&v.to_be_bytes());
    }
}

fn w_u32<S: Out>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put(&[id]);
        s.put(&v.to_be_bytes());
    }
}

fn w_str<S: Out>(s: &mut S, id: u8, v: &Option<Utf8Bytes>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put(&[id]);
        put_string(s, v.as_bytes())?;
    }
    Ok(())
}

fn w_bin<S: Out>(s: &mut S, id: u8, v: &Option<Bytes>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put(&[id]);
        put_binary(s, v)?;
    }
    Ok(())
}

fn w_user<S: Out>(s: &mut S, props: &[UserProperty]) -> Result<(), EncodeError> {
    for p in props {
        s.put(&[USER_PROPERTY]);
        put_string(s, p.name.as_bytes())?;
        put_string(s, p.value.as_bytes())?;
    }
    Ok(())
}

fn w_sub_ids<S: Out>(s: &mut S, ids: &[u32]) -> Result<(), EncodeError> {
    for &id in ids {
        s.put(&[SUBSCRIPTION_IDENTIFIER]);
        put_var_int(s, id as usize)?;
    }
    Ok(())
}

/// The value of a property whose identifier fixed its type. A mismatch cannot happen (the
/// reader picks the type from the identifier); it is reported as malformed rather than panicking.
macro_rules! value {
    ($v:expr, $variant:ident) => {
        match $v {
            Value::$variant(x) => x,
            _ => return Err(DecodeError::Malformed("property of the wrong type")),
        }
    };
}

/// CONNECT properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection (0 or absent: ends with it).
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1 and 2 publications the client processes at once (not 0).
    pub receive_maximum: Option<u16>,
    /// The largest packet the client accepts (not 0).
    pub maximum_packet_size: Option<u32>,
    /// The highest topic alias the client accepts from the server.
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client asks for Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send Reason String and User Properties on failures.
    pub request_problem_information: Option<bool>,
    /// Enhanced authentication method.
    pub authentication_method: Option<Utf8Bytes>,
    /// Enhanced authentication data (needs a method).
    pub authentication_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for ConnectProperties {
    const PACKET: &'static str = "CONNECT";
    const ALLOWED: u64 = bit(SESSION_EXPIRY_INTERVAL)
        | bit(RECEIVE_MAXIMUM)
        | bit(MAXIMUM_PACKET_SIZE)
        | bit(TOPIC_ALIAS_MAXIMUM)
        | bit(REQUEST_RESPONSE_INFORMATION)
        | bit(REQUEST_PROBLEM_INFORMATION)
        | bit(AUTHENTICATION_METHOD)
        | bit(AUTHENTICATION_DATA)
        | bit(USER_PROPERTY);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(value!(v, Four)),
            RECEIVE_MAXIMUM => self.receive_maximum = Some(non_zero_u16(id, value!(v, Two))?),
            MAXIMUM_PACKET_SIZE => {
                self.maximum_packet_size = Some(non_zero_u32(id, value!(v, Four))?)
            }
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(value!(v, Two)),
            REQUEST_RESPONSE_INFORMATION => {
                self.request_response_information = Some(flag(id, value!(v, Byte))?)
            }
            REQUEST_PROBLEM_INFORMATION => {
                self.request_problem_information = Some(flag(id, value!(v, Byte))?)
            }
            AUTHENTICATION_METHOD => self.authentication_method = Some(value!(v, Str)),
            AUTHENTICATION_DATA => self.authentication_data = Some(value!(v, Bin)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn check(&self) -> Result<(), DecodeError> {
        check_auth(&self.authentication_method, &self.authentication_data)
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        w_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        w_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w_flag(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        w_flag(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        w_str(s, AUTHENTICATION_METHOD, &self.authentication_method)?;
        w_bin(s, AUTHENTICATION_DATA, &self.authentication_data)?;
        w_user(s, &self.user_properties)
    }
}

/// Will properties (in the CONNECT payload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds to wait after the connection ends before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// Whether the will payload is UTF-8 (`true`) or unspecified bytes (`false`).
    pub payload_format_indicator: Option<bool>,
    /// Lifetime of the will message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content type of the will payload.
    pub content_type: Option<Utf8Bytes>,
    /// Response topic (a topic name).
    pub response_topic: Option<Utf8Bytes>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for WillProperties {
    const PACKET: &'static str = "will properties";
    const ALLOWED: u64 = bit(WILL_DELAY_INTERVAL)
        | bit(PAYLOAD_FORMAT_INDICATOR)
        | bit(MESSAGE_EXPIRY_INTERVAL)
        | bit(CONTENT_TYPE)
        | bit(RESPONSE_TOPIC)
        | bit(CORRELATION_DATA)
        | bit(USER_PROPERTY);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            WILL_DELAY_INTERVAL => self.will_delay_interval = Some(value!(v, Four)),
            PAYLOAD_FORMAT_INDICATOR => {
                self.payload_format_indicator = Some(flag(id, value!(v, Byte))?)
            }
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(value!(v, Four)),
            CONTENT_TYPE => self.content_type = Some(value!(v, Str)),
            RESPONSE_TOPIC => self.response_topic = Some(response_topic(value!(v, Str))?),
            CORRELATION_DATA => self.correlation_data = Some(value!(v, Bin)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_flag(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        w_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w_str(s, CONTENT_TYPE, &self.content_type)?;
        w_str(s, RESPONSE_TOPIC, &self.response_topic)?;
        w_bin(s, CORRELATION_DATA, &self.correlation_data)?;
        w_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        w_user(s, &self.user_properties)
    }
}

/// CONNACK properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// The session expiry interval the server uses, when it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1 and 2 publications the server processes at once (not 0).
    pub receive_maximum: Option<u16>,
    /// The highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Whether the server supports retained messages.
    pub retain_available: Option<bool>,
    /// The largest packet the server accepts (not 0).
    pub maximum_packet_size: Option<u32>,
    /// The client identifier the server assigned (when the client sent an empty one).
    pub assigned_client_identifier: Option<Utf8Bytes>,
    /// The highest topic alias the server accepts from the client.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable reason.
    pub reason_string: Option<Utf8Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Whether the server supports wildcard subscriptions.
    pub wildcard_subscription_available: Option<bool>,
    /// Whether the server supports subscription identifiers.
    pub subscription_identifiers_available: Option<bool>,
    /// Whether the server supports shared subscriptions.
    pub shared_subscription_available: Option<bool>,
    /// The keep alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics (when the client requested it).
    pub response_information: Option<Utf8Bytes>,
    /// Another server the client may use.
    pub server_reference: Option<Utf8Bytes>,
    /// Enhanced authentication method.
    pub authentication_method: Option<Utf8Bytes>,
    /// Enhanced authentication data (needs a method).
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnAckProperties {
    const PACKET: &'static str = "CONNACK";
    const ALLOWED: u64 = bit(SESSION_EXPIRY_INTERVAL)
        | bit(RECEIVE_MAXIMUM)
        | bit(MAXIMUM_QOS)
        | bit(RETAIN_AVAILABLE)
        | bit(MAXIMUM_PACKET_SIZE)
        | bit(ASSIGNED_CLIENT_IDENTIFIER)
        | bit(TOPIC_ALIAS_MAXIMUM)
        | bit(REASON_STRING)
        | bit(USER_PROPERTY)
        | bit(WILDCARD_SUBSCRIPTION_AVAILABLE)
        | bit(SUBSCRIPTION_IDENTIFIER_AVAILABLE)
        | bit(SHARED_SUBSCRIPTION_AVAILABLE)
        | bit(SERVER_KEEP_ALIVE)
        | bit(RESPONSE_INFORMATION)
        | bit(SERVER_REFERENCE)
        | bit(AUTHENTICATION_METHOD)
        | bit(AUTHENTICATION_DATA);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(value!(v, Four)),
            RECEIVE_MAXIMUM => self.receive_maximum = Some(non_zero_u16(id, value!(v, Two))?),
            MAXIMUM_QOS => {
                self.maximum_qos = Some(match value!(v, Byte) {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::BadPropertyValue(id)),
                })
            }
            RETAIN_AVAILABLE => self.retain_available = Some(flag(id, value!(v, Byte))?),
            MAXIMUM_PACKET_SIZE => {
                self.maximum_packet_size = Some(non_zero_u32(id, value!(v, Four))?)
            }
            ASSIGNED_CLIENT_IDENTIFIER => {
                self.assigned_client_identifier = Some(value!(v, Str));
            }
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(value!(v, Two)),
            REASON_STRING => self.reason_string = Some(value!(v, Str)),
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                self.wildcard_subscription_available = Some(flag(id, value!(v, Byte))?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                self.subscription_identifiers_available = Some(flag(id, value!(v, Byte))?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                self.shared_subscription_available = Some(flag(id, value!(v, Byte))?)
            }
            SERVER_KEEP_ALIVE => self.server_keep_alive = Some(value!(v, Two)),
            RESPONSE_INFORMATION => self.response_information = Some(value!(v, Str)),
            SERVER_REFERENCE => self.server_reference = Some(value!(v, Str)),
            AUTHENTICATION_METHOD => self.authentication_method = Some(value!(v, Str)),
            AUTHENTICATION_DATA => self.authentication_data = Some(value!(v, Bin)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn check(&self) -> Result<(), DecodeError> {
        check_auth(&self.authentication_method, &self.authentication_data)
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_str(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        w_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        w_str(s, AUTHENTICATION_METHOD, &self.authentication_method)?;
        w_bin(s, AUTHENTICATION_DATA, &self.authentication_data)?;
        w_str(s, RESPONSE_INFORMATION, &self.response_information)?;
        w_str(s, SERVER_REFERENCE, &self.server_reference)?;
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        w_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w_byte(s, MAXIMUM_QOS, self.maximum_qos.map(|q| q as u8));
        w_flag(s, RETAIN_AVAILABLE, self.retain_available);
        w_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        w_flag(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        w_flag(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        w_flag(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        w_user(s, &self.user_properties)
    }
}

/// PUBLISH properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Whether the payload is UTF-8 (`true`) or unspecified bytes (`false`).
    pub payload_format_indicator: Option<bool>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias (not 0); with an empty topic name, it stands for the topic.
    pub topic_alias: Option<u16>,
    /// Response topic (a topic name).
    pub response_topic: Option<Utf8Bytes>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Identifiers of the matching subscriptions (server to client only; may be several).
    pub subscription_identifiers: Vec<u32>,
    /// Content type of the payload.
    pub content_type: Option<Utf8Bytes>,
}

impl PropertySet for PublishProperties {
    const PACKET: &'static str = "PUBLISH";
    const ALLOWED: u64 = bit(PAYLOAD_FORMAT_INDICATOR)
        | bit(MESSAGE_EXPIRY_INTERVAL)
        | bit(TOPIC_ALIAS)
        | bit(RESPONSE_TOPIC)
        | bit(CORRELATION_DATA)
        | bit(USER_PROPERTY)
        | bit(SUBSCRIPTION_IDENTIFIER)
        | bit(CONTENT_TYPE);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            PAYLOAD_FORMAT_INDICATOR => {
                self.payload_format_indicator = Some(flag(id, value!(v, Byte))?)
            }
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(value!(v, Four)),
            TOPIC_ALIAS => self.topic_alias = Some(non_zero_u16(id, value!(v, Two))?),
            RESPONSE_TOPIC => self.response_topic = Some(response_topic(value!(v, Str))?),
            CORRELATION_DATA => self.correlation_data = Some(value!(v, Bin)),
            SUBSCRIPTION_IDENTIFIER => self
                .subscription_identifiers
                .push(non_zero_u32(id, value!(v, Var))?),
            CONTENT_TYPE => self.content_type = Some(value!(v, Str)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_flag(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        w_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w_str(s, CONTENT_TYPE, &self.content_type)?;
        w_str(s, RESPONSE_TOPIC, &self.response_topic)?;
        w_bin(s, CORRELATION_DATA, &self.correlation_data)?;
        w_sub_ids(s, &self.subscription_identifiers)?;
        w_u16(s, TOPIC_ALIAS, self.topic_alias);
        w_user(s, &self.user_properties)
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Human-readable reason.
    pub reason_string: Option<Utf8Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for AckProperties {
    const PACKET: &'static str = "acknowledgement";
    const ALLOWED: u64 = bit(REASON_STRING) | bit(USER_PROPERTY);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            REASON_STRING => self.reason_string = Some(value!(v, Str)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_user(s, &self.user_properties)
    }
}

/// SUBSCRIBE properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Identifier the server attaches to publications matching these subscriptions (not 0).
    pub subscription_identifier: Option<u32>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for SubscribeProperties {
    const PACKET: &'static str = "SUBSCRIBE";
    const ALLOWED: u64 = bit(SUBSCRIPTION_IDENTIFIER) | bit(USER_PROPERTY);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            SUBSCRIPTION_IDENTIFIER => {
                self.subscription_identifier = Some(non_zero_u32(id, value!(v, Var))?)
            }
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.subscription_identifier {
            w_sub_ids(s, &[id])?;
        }
        w_user(s, &self.user_properties)
    }
}

/// UNSUBSCRIBE properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for UnsubscribeProperties {
    const PACKET: &'static str = "UNSUBSCRIBE";
    const ALLOWED: u64 = bit(USER_PROPERTY);

    fn set(&mut self, _id: u8, v: Value) -> Result<(), DecodeError> {
        self.user_properties.push(value!(v, Pair));
        Ok(())
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_user(s, &self.user_properties)
    }
}

/// DISCONNECT properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// New session expiry interval (from the client only).
    pub session_expiry_interval: Option<u32>,
    /// Human-readable reason.
    pub reason_string: Option<Utf8Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Another server the client may use.
    pub server_reference: Option<Utf8Bytes>,
}

impl PropertySet for DisconnectProperties {
    const PACKET: &'static str = "DISCONNECT";
    const ALLOWED: u64 = bit(SESSION_EXPIRY_INTERVAL)
        | bit(REASON_STRING)
        | bit(USER_PROPERTY)
        | bit(SERVER_REFERENCE);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(value!(v, Four)),
            REASON_STRING => self.reason_string = Some(value!(v, Str)),
            SERVER_REFERENCE => self.server_reference = Some(value!(v, Str)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_str(s, SERVER_REFERENCE, &self.server_reference)?;
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_user(s, &self.user_properties)
    }
}

/// AUTH properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Enhanced authentication method.
    pub authentication_method: Option<Utf8Bytes>,
    /// Enhanced authentication data (needs a method).
    pub authentication_data: Option<Bytes>,
    /// Human-readable reason.
    pub reason_string: Option<Utf8Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for AuthProperties {
    const PACKET: &'static str = "AUTH";
    const ALLOWED: u64 = bit(AUTHENTICATION_METHOD)
        | bit(AUTHENTICATION_DATA)
        | bit(REASON_STRING)
        | bit(USER_PROPERTY);

    fn set(&mut self, id: u8, v: Value) -> Result<(), DecodeError> {
        match id {
            AUTHENTICATION_METHOD => self.authentication_method = Some(value!(v, Str)),
            AUTHENTICATION_DATA => self.authentication_data = Some(value!(v, Bin)),
            REASON_STRING => self.reason_string = Some(value!(v, Str)),
            _ => self.user_properties.push(value!(v, Pair)),
        }
        Ok(())
    }

    fn check(&self) -> Result<(), DecodeError> {
        check_auth(&self.authentication_method, &self.authentication_data)
    }

    fn write<S: Out>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_str(s, AUTHENTICATION_METHOD, &self.authentication_method)?;
        w_bin(s, AUTHENTICATION_DATA, &self.authentication_data)?;
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_user(s, &self.user_properties)
    }
}

/// The sets of identifiers a side may not send, and which may repeat, per packet family.
pub(crate) mod rules {
    use super::*;

    /// A client must not send a SubscribeFilter Identifier in PUBLISH ([MQTT-3.3.4-6]).
    pub const PUBLISH_FROM_CLIENT_FORBID: u64 = bit(SUBSCRIPTION_IDENTIFIER);
    /// A server may send several SubscribeFilter Identifiers in one PUBLISH.
    pub const PUBLISH_FROM_SERVER_REPEAT: u64 = bit(SUBSCRIPTION_IDENTIFIER);
    /// A server must not send a Session Expiry Interval in DISCONNECT ([MQTT-3.14.2-2]).
    pub const DISCONNECT_FROM_SERVER_FORBID: u64 = bit(SESSION_EXPIRY_INTERVAL);
}
