//! junction-jetstream: JetStream as a service on the bus.
//!
//! Streams capture what any protocol publishes through ordinary subscriptions: their sink
//! stores the message on the publisher's own task (see [`stream`]), so an MQTT QoS 1 PUBACK
//! waits for the stream's commit as it waits for its own records, and a NATS PubAck goes out
//! from the store once the commit is on the disk. Everything else (the `$JS.API` requests,
//! acknowledgements, consumers and their timers) runs on one task that owns the consumers,
//! fed through [`Shared::push`].
//!
//! Layout:
//! - [`config`]: stream and consumer configurations, their defaults and checks.
//! - [`errors`]: the API's error codes.
//! - [`stream`]: a stream's messages, limits and publication rules.
//! - [`consumer`]: consumers, acknowledgements, redelivery, pull requests.
//! - [`api`]: the `$JS.API` requests.
//! - [`persist`]: the records in the store and reading them back.
//! - [`service`]: the task, its inputs and the routing of what consumers send.
//! - `accounts`: which accounts have JetStream, and their limits.
//! - `advisories`: the `$JS.EVENT` advisories and metrics.
//! - `sinks`: the subscriptions' sinks (service subjects, stream capture, PubAck batches).
//! - `sources`: mirrors and sources between streams.
//! - [`harness`]: the task driven synchronously, for the fuzz target and tests.

mod accounts;
mod advisories;
pub mod api;
pub mod config;
pub mod consumer;
pub mod errors;
mod external;
pub mod harness;
pub mod headers;
mod inbox;
pub mod persist;
pub mod service;
mod sinks;
mod sources;
pub mod stream;
pub mod time;

pub use accounts::{AccountLimits, Tier};
pub use persist::{restore, Restored};
pub use service::{JetStream, Options};
pub use stream::HOT_BYTES;

/// A random token of 22 characters from `[A-Za-z0-9]` (unguessable reply subjects and names).
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 22];
    if getrandom::getrandom(&mut raw).is_err() {
        let t = stream::now_ns() as u64;
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (t >> (i % 8 * 8)) as u8 ^ i as u8;
        }
    }
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
