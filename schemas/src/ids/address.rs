//! Where a host's agent listens: an IP address or a DNS name.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::InvalidId;

/// An IPv4/IPv6 address or an RFC 1123 DNS name (labels of letters, digits and '-',
/// at most 63 chars each, 253 in total).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(String);

impl Address {
    /// The address as written in the inventory.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The IP address, when this is one rather than a DNS name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }

    /// `host:port` for URLs and sockets; IPv6 addresses get the required brackets.
    pub fn authority(&self, port: u16) -> String {
        match self.ip() {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{}:{port}", self.0),
        }
    }
}

fn check_dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("expected an IP address or a DNS name, got an empty string".into());
    }
    if s.len() > 253 {
        return Err(format!("a DNS name is at most 253 characters, this has {}", s.len()));
    }
    for label in s.split('.') {
        let valid = (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "expected an IP address or a DNS name; label `{label}` must be 1 to 63 \
                 letters, digits or '-', not starting or ending with '-'"
            ));
        }
    }
    // A name ending in an all-digit label is almost always a mistyped IPv4 address,
    // and no top-level domain is numeric.
    if s.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err("expected an IP address or a DNS name; this is not a valid IPv4 address".into());
    }
    Ok(())
}

/// `host:port` or `[v6]:port`: the host part, when `s` carries a port.
fn without_port(s: &str) -> Option<&str> {
    let (host, port) = s.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let plain = host.parse::<IpAddr>().is_ok() || (!host.contains(':') && check_dns_name(host).is_ok());
    plain.then_some(host)
}

impl FromStr for Address {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        if let Some(host) = without_port(s) {
            let reason = format!(
                "the port does not belong in the address; write `address: {host}` and set the port as `port` (this host) or `defaults.port` (every host)"
            );
            return Err(InvalidId::new("address", s, reason));
        }
        if s.parse::<IpAddr>().is_err() {
            check_dns_name(s).map_err(|reason| InvalidId::new("address", s, reason))?;
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Address {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        s.parse()
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.0
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

crate::ids::serde_via_str!(Address, "address");

impl schemars::JsonSchema for Address {
    fn schema_name() -> Cow<'static, str> {
        "Address".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An IP address (v4 or v6) or a DNS name.",
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"format": "hostname"}]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ips_and_names() {
        for ok in ["192.0.2.10", "::1", "2001:db8::1", "web1", "web1.example.com", "a-b.c"] {
            assert_eq!(ok.parse::<Address>().unwrap().as_str(), ok);
        }
        let name = "a".repeat(63);
        assert!(format!("{name}.{name}.{name}.{}", "a".repeat(61)).parse::<Address>().is_ok());
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "192.0.2.300",
            "1.2.3",
            "web 1",
            "-web.example.com",
            "web-.example.com",
            "a..b",
            "web1.",
            "http://web1",
            "web1:7420",
            "[::1]",
            &"a".repeat(64),
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert_eq!(err.what, "address", "{bad}");
        }
        let long = format!("{}.{}.{}.{}", "a".repeat(63), "a".repeat(63), "a".repeat(63), "a".repeat(63));
        let err = long.parse::<Address>().unwrap_err();
        assert!(err.reason.contains("253"), "{err}");
    }

    #[test]
    fn authority_brackets_ipv6() {
        let v6: Address = "2001:db8::1".parse().unwrap();
        assert_eq!(v6.authority(7420), "[2001:db8::1]:7420");
        let v4: Address = "192.0.2.10".parse().unwrap();
        assert_eq!(v4.authority(7420), "192.0.2.10:7420");
        assert_eq!(v4.ip(), Some("192.0.2.10".parse().unwrap()));
        let dns: Address = "web1.example.com".parse().unwrap();
        assert_eq!(dns.authority(1), "web1.example.com:1");
        assert_eq!(dns.ip(), None);
    }
}
