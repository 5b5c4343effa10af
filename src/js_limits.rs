//! JetStream limits of an account: from its `jetstream {}` block in the configuration, or
//! from its JWT in operator mode.

use anyhow::{anyhow, Result};
use junction_auth::jwt;
use junction_config::Item;

use crate::auth_config::map_of;
use crate::settings::at;

/// An account's `jetstream { max_mem, max_file, max_streams, max_consumers, max_ack_pending,
/// mem_max_stream_bytes, disk_max_stream_bytes, max_bytes_required }` (with nats-server's other
/// spellings of each). Sizes may be written `1GB`; -1 is no limit.
pub(crate) fn from_config(item: &Item) -> Result<junction_jetstream::AccountLimits> {
    let mut l = junction_jetstream::AccountLimits::default();
    for (k, v) in map_of(item, "jetstream")?.iter() {
        let n = || {
            v.as_i64()
                .ok_or_else(|| anyhow!("{}: 'jetstream.{k}' must be a number or a size", at(v)))
        };
        match k.to_ascii_lowercase().as_str() {
            "max_mem" | "max_memory" | "mem" | "memory" | "max_memory_store" => l.max_memory = n()?,
            "max_file" | "max_store" | "max_disk" | "store" | "disk" | "max_file_store" => {
                l.max_store = n()?
            }
            "max_streams" | "streams" => l.max_streams = n()?,
            "max_consumers" | "consumers" => l.max_consumers = n()?,
            "max_ack_pending" => l.max_ack_pending = n()?,
            "mem_max_stream_bytes" | "memory_max_stream_bytes" => l.memory_max_stream_bytes = n()?,
            "disk_max_stream_bytes" | "store_max_stream_bytes" => l.storage_max_stream_bytes = n()?,
            "max_bytes_required" | "max_stream_bytes" | "max_bytes" => {
                l.max_bytes_required = v
                    .as_bool()
                    .ok_or_else(|| anyhow!("{}: 'jetstream.{k}' must be true or false", at(v)))?
            }
            _ => {}
        }
    }
    Ok(l)
}

/// An account JWT's JetStream limits as nats-server applies them: the storage limits as they
/// are, the per-stream sizes and `max_ack_pending` as no limit unless positive.
pub(crate) fn from_jwt(js: jwt::JwtJetStream) -> (bool, junction_jetstream::AccountLimits) {
    use junction_jetstream::{AccountLimits, Tier};
    let from = |l: jwt::JwtJsLimits, tier| {
        let limit = |n: i64| if n > 0 { n } else { -1 };
        AccountLimits {
            max_memory: l.mem_storage,
            max_store: l.disk_storage,
            max_streams: l.streams,
            max_consumers: l.consumer,
            max_ack_pending: limit(l.max_ack_pending),
            memory_max_stream_bytes: limit(l.mem_max_stream_bytes),
            storage_max_stream_bytes: limit(l.disk_max_stream_bytes),
            max_bytes_required: l.max_bytes_required,
            tier,
        }
    };
    match js {
        jwt::JwtJetStream::Disabled => (false, AccountLimits::default()),
        jwt::JwtJetStream::Flat(l) => (true, from(l, Tier::Flat)),
        jwt::JwtJetStream::Tiered(Some(l)) => (true, from(l, Tier::R1)),
        jwt::JwtJetStream::Tiered(None) => (true, from(Default::default(), Tier::Missing)),
    }
}
