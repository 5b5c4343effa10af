//! The MQTT control packets, as decoded and as encoded.
//!
//! One struct per packet family; fields that only MQTT 5.0 has (reason codes of acknowledgements,
//! properties) hold their "absent" value (success, empty) at 3.1.1.

use bytes::Bytes;

use super::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};

/// The protocol level a connection speaks, as its CONNECT announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Quality of service of a publication or subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS of a 2-bit field; `None` for 3, which no packet may carry.
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// When the server sends retained messages for a new subscription (MQTT 5.0 subscription
/// options; 3.1.1 always behaves as [`RetainHandling::OnSubscribe`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// 1: send them only if the subscription did not exist before.
    OnNewSubscribe = 1,
    /// 2: do not send them.
    Never = 2,
}

/// A UTF-8 string of the wire format: a `Bytes` slice of the read buffer that was checked to be
/// valid UTF-8 without U+0000 (the code points the specifications only say SHOULD NOT be used,
/// controls and noncharacters, are accepted, as nats-server accepts them).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps a static string (tests, constants).
    ///
    /// # Panics
    /// If `s` contains U+0000.
    pub fn from_static(s: &'static str) -> Self {
        assert!(!s.contains('\0'), "MQTT strings cannot contain U+0000");
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// Checks `bytes` and wraps them without copying.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, StringError> {
        check_string(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }

    /// The string. (It is checked again, which is cheap; the codec never needs to.)
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("checked to be UTF-8 when built")
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The encoded bytes, for a subject or a header value.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// A copy in memory of its own (not a slice of a larger buffer it would keep alive).
    pub fn detached(&self) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(&self.0))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl TryFrom<String> for Utf8Bytes {
    type Error = StringError;
    fn try_from(s: String) -> Result<Self, StringError> {
        if s.contains('\0') {
            return Err(StringError::NullCharacter);
        }
        Ok(Utf8Bytes(Bytes::from(s)))
    }
}

impl TryFrom<&str> for Utf8Bytes {
    type Error = StringError;
    fn try_from(s: &str) -> Result<Self, StringError> {
        if s.contains('\0') {
            return Err(StringError::NullCharacter);
        }
        Ok(Utf8Bytes(Bytes::copy_from_slice(s.as_bytes())))
    }
}

/// Why bytes are not an MQTT UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StringError {
    /// Not valid UTF-8 (this includes encoded surrogates).
    #[error("invalid utf-8")]
    BadUtf8,
    /// The string contains U+0000.
    #[error("string contains u+0000")]
    NullCharacter,
}

/// Checks the rules of an MQTT UTF-8 string ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).
pub(crate) fn check_string(bytes: &[u8]) -> Result<(), StringError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(StringError::BadUtf8);
    }
    if memchr::memchr(0, bytes).is_some() {
        return Err(StringError::NullCharacter);
    }
    Ok(())
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client to server), boxed: rare and large.
    Connect(Box<Connect>),
    /// CONNACK (server to client), boxed: rare and large.
    ConnAck(Box<ConnAck>),
    /// PUBLISH (both ways).
    Publish(Publish),
    /// PUBACK (both ways).
    PubAck(PubResp),
    /// PUBREC (both ways).
    PubRec(PubResp),
    /// PUBREL (both ways).
    PubRel(PubResp),
    /// PUBCOMP (both ways).
    PubComp(PubResp),
    /// SUBSCRIBE (client to server).
    Subscribe(Subscribe),
    /// SUBACK (server to client).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client to server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server to client).
    UnsubAck(UnsubAck),
    /// PINGREQ (client to server).
    PingReq,
    /// PINGRESP (server to client).
    PingResp,
    /// DISCONNECT (client to server; both ways in 5.0).
    Disconnect(Disconnect),
    /// AUTH (both ways, 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The packet type's name, as the specifications write it.
    pub fn name(&self) -> &'static str {
        type_name(self.type_code())
    }

    /// The 4-bit packet type of the fixed header.
    pub fn type_code(&self) -> u8 {
        match self {
            Packet::Connect(_) => CONNECT,
            Packet::ConnAck(_) => CONNACK,
            Packet::Publish(_) => PUBLISH,
            Packet::PubAck(_) => PUBACK,
            Packet::PubRec(_) => PUBREC,
            Packet::PubRel(_) => PUBREL,
            Packet::PubComp(_) => PUBCOMP,
            Packet::Subscribe(_) => SUBSCRIBE,
            Packet::SubAck(_) => SUBACK,
            Packet::Unsubscribe(_) => UNSUBSCRIBE,
            Packet::UnsubAck(_) => UNSUBACK,
            Packet::PingReq => PINGREQ,
            Packet::PingResp => PINGRESP,
            Packet::Disconnect(_) => DISCONNECT,
            Packet::Auth(_) => AUTH,
        }
    }
}

pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;
pub(crate) const AUTH: u8 = 15;

/// The name of a packet type code.
pub(crate) fn type_name(code: u8) -> &'static str {
    match code {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        SUBSCRIBE => "SUBSCRIBE",
        SUBACK => "SUBACK",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        UNSUBACK => "UNSUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        DISCONNECT => "DISCONNECT",
        AUTH => "AUTH",
        _ => "reserved",
    }
}

/// CONNECT: the first packet of a connection. The protocol level is not a field: the decoder
/// reports it ([`super::Decoder::protocol`]) and the encoder takes it as a parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns keep alive off.
    pub keep_alive: u16,
    /// Client identifier; may be empty (3.1.1: only with clean session).
    pub client_id: Utf8Bytes,
    /// The will message, when the will flag is set.
    pub will: Option<Will>,
    /// User name, when the user name flag is set.
    pub username: Option<Utf8Bytes>,
    /// Password, when the password flag is set (binary data).
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: ConnectProperties,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Will {
    /// Will topic: a topic name (not empty, no wildcards).
    pub topic: Utf8Bytes,
    /// Will payload (binary data, at most 65,535 bytes).
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: WillProperties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server had a session for this client.
    pub session_present: bool,
    /// 5.0: the reason code (see [`super::reason`]). 3.1.1: the connect return code 0..=5; when
    /// encoding for 3.1.1, 5.0 codes are translated with [`super::reason::v311_connack_code`].
    pub code: u8,
    /// CONNACK properties (5.0).
    pub properties: ConnAckProperties,
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a redelivery (QoS 1 and 2 only).
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic name; empty only in 5.0 with a topic alias.
    pub topic: Utf8Bytes,
    /// Packet identifier: non-zero for QoS 1 and 2, 0 (absent) for QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (5.0).
    pub properties: PublishProperties,
    /// Application payload, a slice of the read buffer.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: the acknowledgements of QoS 1 and 2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubResp {
    /// The packet identifier acknowledged.
    pub packet_id: u16,
    /// 5.0 reason code; [`super::reason::SUCCESS`] at 3.1.1 (and not encoded there).
    pub reason: u8,
    /// Properties (5.0).
    pub properties: AckProperties,
}

/// SUBSCRIBE: one or more topic filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// The filters and their options, at least one.
    pub filters: Vec<SubscribeFilter>,
    /// SUBSCRIBE properties (5.0).
    pub properties: SubscribeProperties,
}

/// One topic filter of a SUBSCRIBE and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter (5.0: may be a shared subscription `$share/{group}/{filter}`).
    pub filter: Utf8Bytes,
    /// Maximum QoS the client wants.
    pub qos: QoS,
    /// No Local (5.0): do not send the client its own publications.
    pub no_local: bool,
    /// Retain As Published (5.0): keep the RETAIN flag on forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

/// SUBACK: one reason code per filter of the SUBSCRIBE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// Granted QoS (0, 1, 2) or a failure code (0x80 or above); when encoding for 3.1.1 every
    /// failure is written as 0x80, the only one 3.1.1 has.
    pub reason_codes: Vec<u8>,
    /// Properties (5.0).
    pub properties: AckProperties,
}

/// UNSUBSCRIBE: one or more topic filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// The filters, at least one.
    pub filters: Vec<Utf8Bytes>,
    /// UNSUBSCRIBE properties (5.0).
    pub properties: UnsubscribeProperties,
}

/// UNSUBACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// 5.0: one reason code per filter. 3.1.1: empty (and not encoded).
    pub reason_codes: Vec<u8>,
    /// Properties (5.0).
    pub properties: AckProperties,
}

/// DISCONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// 5.0 reason code; [`super::reason::NORMAL_DISCONNECTION`] at 3.1.1 (and not encoded there).
    pub reason: u8,
    /// DISCONNECT properties (5.0).
    pub properties: DisconnectProperties,
}

/// AUTH (5.0 only): a step of enhanced authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Success, continue authentication or re-authenticate.
    pub reason: u8,
    /// AUTH properties.
    pub properties: AuthProperties,
}
