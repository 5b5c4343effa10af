//! The `mappings` (or `maps`) blocks of the configuration, at the top level and in accounts,
//! read as nats-server reads them (see `junction_core::mapping`).

use anyhow::{anyhow, bail, Result};
use junction_auth::jwt::JwtMapDest;
use junction_config::{Item, Value};
use junction_core::mapping::MapDest;

use crate::auth_config::str_of;
use crate::settings::at;

/// A `mappings` block: `source: destination`, `source: { destination, weight }` or a list of
/// those, as nats-server reads it (weights are percentages, `50%` or `50`). Each mapping is
/// checked here, so a bad one stops the start with its place in the file.
pub(crate) fn mappings(item: &Item) -> Result<Vec<(String, Vec<MapDest>)>> {
    fn dest(item: &Item) -> Result<MapDest> {
        let m = item.as_map().ok_or_else(|| {
            anyhow!(
                "{}: expected an entry for the mapping destination",
                at(item)
            )
        })?;
        let mut subject = None;
        let mut weight = None;
        for (k, v) in m.iter() {
            match k.to_ascii_lowercase().as_str() {
                "dest" | "destination" => subject = Some(str_of(v, k)?.to_string()),
                "weight" => {
                    let n = match &v.value {
                        Value::String(s) => s.trim_end_matches('%').trim().parse::<i64>().map_err(
                            |_| anyhow!("{}: invalid weight {s:?} for mapping destination", at(v)),
                        )?,
                        Value::Integer(n) => *n,
                        _ => bail!("{}: unknown entry type for weight", at(v)),
                    };
                    if !(0..=100).contains(&n) {
                        bail!("{}: invalid weight {n} for mapping destination", at(v));
                    }
                    weight = Some(n as u8);
                }
                "cluster" => bail!(
                    "{}: cluster-scoped mapping destinations need a cluster (Junction joins one as a leaf node)",
                    at(v)
                ),
                _ => bail!("{}: unknown field {k:?} for mapping destination", at(v)),
            }
        }
        let subject = subject
            .ok_or_else(|| anyhow!("{}: a mapping destination needs 'destination'", at(item)))?;
        let weight = weight.ok_or_else(|| {
            anyhow!(
                "{}: missing weight for mapping destination {subject:?}",
                at(item)
            )
        })?;
        Ok(MapDest { subject, weight })
    }
    let mut out = Vec::new();
    let mut check = junction_core::mapping::Mappings::default();
    for (src, v) in item
        .as_map()
        .ok_or_else(|| anyhow!("{}: 'mappings' must be a block", at(item)))?
        .iter()
    {
        let dests = match &v.value {
            Value::String(d) => vec![MapDest {
                subject: d.clone(),
                weight: 100,
            }],
            Value::Array(list) => list.iter().map(dest).collect::<Result<_>>()?,
            Value::Map(_) => vec![dest(v)?],
            _ => bail!("{}: unknown type for mapping destination", at(v)),
        };
        check.add(src, &dests).map_err(|e| {
            let to: Vec<&str> = dests.iter().map(|d| d.subject.as_str()).collect();
            anyhow!("{}: error adding mapping for {src:?} to {to:?}: {e}", at(v))
        })?;
        out.push((src.to_string(), dests));
    }
    Ok(out)
}

/// The mappings of an account JWT (checked by [`junction_auth::jwt::Claims::mappings`]). As
/// nats-server does, one the server cannot make is logged and left out, and the account works
/// without it; a destination scoped to a cluster is left out too (Junction joins a cluster only
/// as a leaf node).
pub(crate) fn jwt_mappings(
    account: &str,
    claim: Vec<(String, Vec<JwtMapDest>)>,
) -> Vec<(String, Vec<MapDest>)> {
    let mut out = Vec::new();
    let mut check = junction_core::mapping::Mappings::default();
    for (src, dests) in claim {
        let mut list = Vec::with_capacity(dests.len());
        for d in dests {
            if d.cluster.is_some() {
                tracing::warn!(account, src = %src, dest = %d.subject, "a cluster-scoped mapping destination of an account JWT is left out (no cluster here)");
                continue;
            }
            list.push(MapDest {
                subject: d.subject,
                weight: d.weight,
            });
        }
        if list.is_empty() {
            continue;
        }
        match check.add(&src, &list) {
            Ok(()) => out.push((src, list)),
            Err(e) => {
                tracing::error!(account, src = %src, error = %e, "a mapping of an account JWT is left out")
            }
        }
    }
    out
}

/// The account's mappings, made.
pub(crate) fn made(list: &[(String, Vec<MapDest>)]) -> junction_core::mapping::Mappings {
    let mut m = junction_core::mapping::Mappings::default();
    for (src, dests) in list {
        // Checked when the file was read.
        let _ = m.add(src, dests);
    }
    m
}
