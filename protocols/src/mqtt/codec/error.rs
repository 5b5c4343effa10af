//! Why bytes are not a packet ([`DecodeError`], with the reason code that says so), and why a
//! packet cannot be bytes ([`EncodeError`]).

use super::packet::StringError;
use super::reason;

/// Why the input is not a valid MQTT packet. Each error ends the connection; the MQTT 5.0 reason
/// code to send with it (CONNACK before the connection is accepted, DISCONNECT after) is
/// [`DecodeError::reason_code`]; a 3.1.1 server only answers a CONNECT that way, with the code of
/// [`reason::v311_connack_code`], and otherwise just closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining length announces a packet larger than the maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge {
        /// Size of the whole packet, fixed header included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A variable byte integer (remaining length, property length or identifier, subscription
    /// identifier) has more than 4 bytes or is not in its shortest form.
    #[error("malformed variable byte integer")]
    BadVarInt,
    /// Packet type 0, or 15 (AUTH) at protocol level 3.1.1, where it is reserved.
    #[error("invalid packet type {0}")]
    BadPacketType(u8),
    /// A packet this side must not receive, or not now: anything before CONNECT, a second
    /// CONNECT, or a packet only the other side sends.
    #[error("unexpected {0} packet")]
    UnexpectedPacket(&'static str),
    /// The flag bits of the fixed header are not those the packet type requires.
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    BadFlags {
        /// The packet type.
        packet: &'static str,
        /// The 4 flag bits.
        flags: u8,
    },
    /// QoS 3, in a PUBLISH or a will (a malformed packet).
    #[error("invalid qos 3")]
    BadQoS,
    /// Maximum QoS 3 in a subscription's options (a protocol error, MQTT 5 §3.8.3.1).
    #[error("invalid maximum qos 3 in a subscription")]
    BadSubscriptionQoS,
    /// The DUP flag on a QoS 0 PUBLISH.
    #[error("dup flag on a qos 0 publish")]
    DupWithQoS0,
    /// A field runs past the end of the packet or of its property block.
    #[error("packet ends inside a field")]
    UnexpectedEnd,
    /// Bytes after the last field of a packet.
    #[error("unexpected bytes after the last field")]
    TrailingBytes,
    /// A string is not valid UTF-8 (surrogates included).
    #[error("invalid utf-8 string")]
    BadUtf8,
    /// A string contains U+0000.
    #[error("string contains u+0000")]
    NullCharacter,
    /// A client identifier, user name, topic name or topic filter contains a control character
    /// (U+0001..U+001F or U+007F..U+009F): the specification lets a receiver treat that as a
    /// malformed packet, and Junction does, in every such field alike.
    #[error("control character in the {0}")]
    ControlCharacter(&'static str),
    /// A topic name (PUBLISH, will, response topic) contains `+` or `#`.
    #[error("wildcard in a topic name")]
    WildcardInTopicName,
    /// An empty topic name (allowed only in a 5.0 PUBLISH with a topic alias).
    #[error("empty topic name")]
    EmptyTopicName,
    /// A topic filter is empty, breaks the wildcard rules, or is a malformed 5.0 shared
    /// subscription.
    #[error("invalid topic filter")]
    BadTopicFilter,
    /// Packet identifier 0 where a packet identifier is required.
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters.
    #[error("no topic filters")]
    NoTopicFilters,
    /// A SUBACK, or a 5.0 UNSUBACK, without reason codes.
    #[error("no reason codes")]
    NoReasonCodes,
    /// The CONNECT protocol name is not "MQTT".
    #[error("invalid protocol name")]
    BadProtocolName,
    /// The CONNECT protocol level is not 4 (3.1.1) or 5 (5.0); 3 (3.1, "MQIsdp") is refused.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// Reserved bits are set: CONNECT flag bit 0, CONNACK flags, subscription options.
    #[error("reserved bits set in {0}")]
    ReservedBits(&'static str),
    /// Will QoS or will retain set without the will flag.
    #[error("will qos or will retain without a will")]
    WillFlags,
    /// A password without a user name (3.1.1 forbids it; 5.0 allows it).
    #[error("password without a user name")]
    PasswordWithoutUsername,
    /// An empty client identifier without clean session (3.1.1).
    #[error("empty client identifier without clean session")]
    ClientIdRejected,
    /// A property identifier the specification does not define.
    #[error("unknown property {0:#04x}")]
    UnknownProperty(u32),
    /// A property this packet may not carry (or the sender's side may not send).
    #[error("property {id:#04x} not allowed in {packet}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet (or "will properties").
        packet: &'static str,
    },
    /// A property given twice that may appear only once.
    #[error("duplicate property {0:#04x}")]
    DuplicateProperty(u8),
    /// A property value the specification forbids: 0 for Receive Maximum, Maximum Packet Size,
    /// Topic Alias or SubscribeFilter Identifier; anything but 0 or 1 for a flag or Maximum QoS.
    #[error("invalid value for property {0:#04x}")]
    BadPropertyValue(u8),
    /// Authentication Data without an Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// A reason code (or 3.1.1 return code) the packet type does not define.
    #[error("invalid reason code {code:#04x} in {packet}")]
    BadReasonCode {
        /// The packet type.
        packet: &'static str,
        /// The code.
        code: u8,
    },
    /// Retain Handling 3 in subscription options.
    #[error("invalid retain handling 3")]
    BadRetainHandling,
    /// No Local on a shared subscription.
    #[error("no local on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// Session Present in a CONNACK that refuses the connection.
    #[error("session present on a refused connection")]
    SessionPresentOnRefusal,
    /// Something else that cannot be parsed.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// The MQTT 5.0 reason code to send in the CONNACK or DISCONNECT that ends the connection:
    /// 0x81 malformed packet, 0x82 protocol error, 0x84 unsupported protocol version,
    /// 0x85 client identifier not valid, 0x8F topic filter invalid, 0x90 topic name invalid,
    /// 0x95 packet too large.
    pub fn reason_code(&self) -> u8 {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            BadProtocolName | UnsupportedProtocolLevel(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            ClientIdRejected => reason::CLIENT_IDENTIFIER_NOT_VALID,
            WildcardInTopicName => reason::TOPIC_NAME_INVALID,
            BadTopicFilter => reason::TOPIC_FILTER_INVALID,
            UnexpectedPacket(_)
            | EmptyTopicName
            | ZeroPacketId
            | NoTopicFilters
            | NoReasonCodes
            | DuplicateProperty(_)
            | BadPropertyValue(_)
            | AuthDataWithoutMethod
            | BadReasonCode { .. }
            | BadRetainHandling
            | BadSubscriptionQoS
            | NoLocalOnSharedSubscription
            | SessionPresentOnRefusal => reason::PROTOCOL_ERROR,
            BadVarInt
            | BadPacketType(_)
            | BadFlags { .. }
            | BadQoS
            | DupWithQoS0
            | UnexpectedEnd
            | TrailingBytes
            | BadUtf8
            | NullCharacter
            | ControlCharacter(_)
            | ReservedBits(_)
            | WillFlags
            | PasswordWithoutUsername
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | Malformed(_) => reason::MALFORMED_PACKET,
        }
    }
}

impl From<StringError> for DecodeError {
    fn from(e: StringError) -> Self {
        match e {
            StringError::BadUtf8 => DecodeError::BadUtf8,
            StringError::NullCharacter => DecodeError::NullCharacter,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field longer than 65535 bytes")]
    FieldTooLong,
    /// The packet, a property block or a subscription identifier is larger than a variable
    /// byte integer can express (268,435,455).
    #[error("value too large for a variable byte integer")]
    TooLarge,
    /// A packet identifier or flag that contradicts the packet: identifier 0 where one is
    /// required, an identifier or DUP on a QoS 0 PUBLISH.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Something MQTT 3.1.1 cannot carry: AUTH, a password without a user name, a CONNACK
    /// reason code without a 3.1.1 return code.
    #[error("{0} cannot be encoded for mqtt 3.1.1")]
    NotInV311(&'static str),
}
