//! The agent port of fleet.yaml: a TCP port a controller can connect to, 1 to 65535.

use std::fmt;

use serde::de::{Error, Unexpected, Visitor};
use serde::Deserializer;

/// What a port is, for messages.
const PORT_FORM: &str = "a port number from 1 to 65535";

/// Reads a port, refusing 0 (which no agent can be reached at) and numbers past
/// 65535 in the same words, where serde's `u16` says "expected u16".
pub(crate) fn deserialize_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    struct PortVisitor;

    impl Visitor<'_> for PortVisitor {
        type Value = u16;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(PORT_FORM)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u16, E> {
            u16::try_from(v)
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| E::custom(format_args!("port {v} is out of range: expected {PORT_FORM}")))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u16, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format_args!("port {v} is out of range: expected {PORT_FORM}"))),
            }
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<u16, E> {
            Err(E::invalid_type(Unexpected::Str(v), &self))
        }
    }

    d.deserialize_any(PortVisitor)
}

/// [`deserialize_port`] for an optional key (`hosts.<h>.port`).
pub(crate) fn deserialize_some_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    deserialize_port(d).map(Some)
}
