//! Target `inventory`: `fleet.yaml` text through `parse_fleet` (what `load_fleet` runs on
//! the file's text). A refusal names `fleet.yaml:line:column`; an accepted inventory
//! reads back unchanged from the YAML and the JSON it serializes to, and its batch size
//! is always usable as a chunk size.

use std::path::Path;

use hostctl_schemas::inventory::{parse_fleet, Fleet};

use super::{ensure, yaml_error_names_place, Verdict};

/// The file name the errors must name.
pub const ORIGIN: &str = "fleet.yaml";

/// Whether `parse_fleet` accepts the input.
pub fn accepts(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|text| parse_fleet(text, Path::new(ORIGIN)).is_ok())
}

pub fn check(data: &[u8]) -> Verdict {
    // `load_yaml` reads with `read_to_string`: text that is not UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else { return Ok(()) };
    match parse_fleet(text, Path::new(ORIGIN)) {
        Err(err) => yaml_error_names_place(&err, ORIGIN, text),
        Ok(fleet) => {
            round_trips(&fleet)?;
            batch_sizes(&fleet)?;
            for (name, host) in &fleet.hosts {
                let _ = host.configuration_attr(name);
                let _ = host.address.authority(fleet.defaults.port);
            }
            Ok(())
        }
    }
}

fn round_trips(fleet: &Fleet) -> Verdict {
    let yaml = serde_yaml::to_string(fleet).map_err(|e| format!("an accepted fleet does not serialize: {e}"))?;
    let again = parse_fleet(&yaml, Path::new(ORIGIN));
    ensure(again.as_ref().ok() == Some(fleet), || format!("YAML round trip changed the fleet:\n{yaml}\n{again:?}"))?;
    let json = serde_json::to_string(fleet).map_err(|e| format!("an accepted fleet does not serialize: {e}"))?;
    let again = parse_fleet(&json, Path::new(ORIGIN));
    ensure(again.as_ref().ok() == Some(fleet), || format!("JSON round trip changed the fleet:\n{json}\n{again:?}"))
}

fn batch_sizes(fleet: &Fleet) -> Verdict {
    for total in [0, 1, 2, 3, 7, 100, 10_000, usize::MAX] {
        let size = fleet.rollout.batch.size(total);
        ensure(size >= 1 && size <= total.max(1), || {
            format!("batch {:?} of {total} hosts is {size}", fleet.rollout.batch)
        })?;
    }
    Ok(())
}
