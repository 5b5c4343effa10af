//! junction-core: the bus. No sockets, no protocol syntax.
//!
//! Layout:
//! - [`message`]: the one message model ([`Message`]) every frontend translates into.
//! - [`subject`]: subject syntax and the naive matching rule.
//! - [`sublist`]: the subject index (a trie with match caches) and [`Subscription`].
//! - [`delivery`]: the [`Sink`] a frontend implements, and fan-out of one message.
//! - [`account`]: accounts as separate subject spaces, and the [`Bus`] that holds them.
//! - [`import`]: stream and service imports, the bridges between accounts.
//! - [`mapping`]: an account's subject mappings (nats-server's `mappings`).
//! - [`stats`]: server-wide counters.
//! - [`conns`]: the registry of open and recently closed connections, for monitoring.
//! - [`sync`]: locks that outlive a panic in another task.

pub mod account;
pub mod conns;
pub mod delivery;
pub mod import;
pub mod mapping;
pub mod message;
pub mod stats;
pub mod subject;
pub mod sublist;
pub mod sync;
pub mod time;
pub mod transform;

pub use account::{Account, Bus, InterestWatch, DEFAULT_ACCOUNT};
pub use conns::{ConnSnapshot, ConnView, Registry};
pub use delivery::{AckWait, Delivery, FlushBatch, Sink};
pub use message::{ConnId, DeliveryFacts, Extra, Message};
pub use stats::Stats;
pub use sublist::{MatchCache, MatchResult, Sublist, Subscription};

/// Errors of the core.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A subscription subject is not a valid subject.
    #[error("invalid subject")]
    InvalidSubject,
}
